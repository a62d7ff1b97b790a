//! `kubectl-mfa`: the kubectl plugin (`kubectl mfa status|qr|enroll|link`). Flags and the
//! terminal live here; everything else is in `mfa_operator::plugin`.

use std::io::{BufRead, ErrorKind, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use mfa_operator::plugin::cluster::{Cluster, Connection, SeedSecret};
use mfa_operator::plugin::outcome::{Before, Outcome};
use mfa_operator::plugin::terminal_qr::{self, Background};
use mfa_operator::plugin::{lookup, prompt, table};
use mfa_operator::totp::WhichCode;

/// Exit status when the operator refused the codes (and for every other error).
const EXIT_REFUSED: u8 = 1;
/// Exit status when the operator did not answer within --timeout.
const EXIT_TIMEOUT: u8 = 2;

const AFTER_HELP: &str = "\
Examples:
  kubectl mfa status -n platform              enrollments and users without MFA
  kubectl mfa status -A                       the same for every namespace
  kubectl mfa qr engineering bob              bob's QR code and secret key
  kubectl mfa enroll engineering bob          scan, type two codes, get the answer
  kubectl mfa enroll engineering bob --code1 123456 --code2 654321
  kubectl mfa link engineering carol --public-url https://mfa.example.com
                                              a one-time link for carol (delivery: Link)

Exit status: 0 success; 1 error or codes refused; 2 no answer from the operator in time.";

/// Finish and inspect MFA enrollments of mfa-operator: see who still needs MFA, show a
/// pending user's QR code, and submit the two codes from the authenticator app.
#[derive(Parser, Debug)]
#[command(name = "kubectl-mfa", bin_name = "kubectl mfa", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(flatten, next_help_heading = "Global options")]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// kubectl's connection flags.
#[derive(Args, Debug)]
struct Global {
    /// Namespace of the MfaEnrollments [default: the kubeconfig context's namespace, else "default"]
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Path to the kubeconfig file [default: $KUBECONFIG, else ~/.kube/config, else in-cluster]
    #[arg(long, global = true, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Name of the kubeconfig context to use [default: the current context]
    #[arg(long, global = true, value_name = "NAME")]
    context: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show MfaEnrollments and their users without MFA
    ///
    /// Lists the MfaEnrollments of the namespace (or the named one, or with -A those of every
    /// namespace): mode, selected, compliant, pending and missing users, the Ready condition
    /// and the Compliant condition's reason. Under the table, for each enrollment with users
    /// needing attention: their state, seed Secret, when the pending device expires, and the
    /// operator's message (why codes were refused, for example); and why an enrollment is
    /// Stalled.
    Status(StatusArgs),
    /// Show a pending user's QR code and secret key
    ///
    /// Draws the user's otpauth:// URI as a QR code in the terminal (Unicode half blocks, for
    /// a dark background unless --invert), then the secret key in groups of four (as the AWS
    /// console's "Show secret key") and the account label the authenticator app will show.
    /// This prints the MFA seed: it is meant for the person enrolling, on their terminal.
    Qr(QrArgs),
    /// Finish a pending user's enrollment with two codes
    ///
    /// Shows the QR code and secret key (as `qr`), reads two consecutive codes from the
    /// authenticator app, prompting with the seconds left in the current 30-second window
    /// (standard input may be a terminal or a pipe, one code per line), writes them into the
    /// user's seed Secret and waits for mfa-operator's answer. With --code1 and --code2 it
    /// neither prompts nor shows the QR code.
    ///
    /// Exits 0 when the device is enabled (the user is Compliant), 1 with the operator's
    /// exact reason when the codes are refused, 2 when the operator does not answer within
    /// --timeout.
    Enroll(EnrollArgs),
    /// Mint a one-time enrollment link for a user and print it (`delivery: Link`)
    ///
    /// For a person the operator cannot reach (no address tag, or `channel: Manual`). The
    /// link replaces the user's earlier one and works once: whoever opens it sets up that
    /// user's MFA, so hand it only to that person, over a channel you trust. Needs write
    /// access to Secrets in the operator's namespace, where link records live.
    Link(LinkArgs),
}

#[derive(Args, Debug)]
struct LinkArgs {
    /// The MfaEnrollment (with `delivery: Link`)
    #[arg(value_name = "ENROLLMENT")]
    enrollment: String,
    /// The IAM user, one the enrollment waits for
    #[arg(value_name = "USER")]
    user: String,
    /// The enrollment page's public URL, as the operator's --public-url
    #[arg(long, env = "MFA_OPERATOR_PUBLIC_URL")]
    public_url: String,
    /// The operator's namespace (where link records live)
    #[arg(long, env = "MFA_OPERATOR_NAMESPACE", default_value = "mfa-operator")]
    operator_namespace: String,
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// Only this MfaEnrollment
    #[arg(value_name = "ENROLLMENT", conflicts_with = "all_namespaces")]
    enrollment: Option<String>,
    /// List the MfaEnrollments of every namespace
    #[arg(short = 'A', long)]
    all_namespaces: bool,
}

#[derive(Args, Debug)]
struct QrArgs {
    /// The MfaEnrollment listing the user
    #[arg(value_name = "ENROLLMENT")]
    enrollment: String,
    /// The IAM user name, exactly as in IAM
    #[arg(value_name = "USER")]
    user: String,
    #[command(flatten)]
    display: Display,
}

#[derive(Args, Debug)]
struct Display {
    /// Print only the secret key and account, no QR code
    #[arg(long)]
    no_qr: bool,
    /// Draw the QR code for a terminal with a light background (default: dark background)
    #[arg(long)]
    invert: bool,
}

#[derive(Args, Debug)]
struct EnrollArgs {
    /// The MfaEnrollment listing the user
    #[arg(value_name = "ENROLLMENT")]
    enrollment: String,
    /// The IAM user name, exactly as in IAM
    #[arg(value_name = "USER")]
    user: String,
    /// First code, instead of prompting (no QR code is shown then)
    #[arg(long, value_name = "CODE", requires = "code2")]
    code1: Option<String>,
    /// Second code, the one after the first, instead of prompting
    #[arg(long, value_name = "CODE", requires = "code1")]
    code2: Option<String>,
    /// How long to wait for the operator's answer (e.g. 60s, 2m)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    timeout: Duration,
    #[command(flatten)]
    display: Display,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        // The reader went away (`kubectl mfa status -A | head`): nobody is left to tell, and
        // the command did not finish, like a program stopped by SIGPIPE.
        Err(error) if error.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == ErrorKind::BrokenPipe) => {
            ExitCode::from(EXIT_REFUSED)
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let connection =
        Connection { kubeconfig: cli.global.kubeconfig, context: cli.global.context, namespace: cli.global.namespace };
    // Codes given as flags are checked before anything else: fail fast on a typo.
    let flag_codes = match &cli.command {
        Command::Enroll(EnrollArgs { code1: Some(code1), code2: Some(code2), .. }) => {
            Some((prompt::check_code(code1, WhichCode::First)?, prompt::check_code(code2, WhichCode::Second)?))
        }
        _ => None,
    };
    let cluster = Cluster::connect(&connection).await?;
    match cli.command {
        Command::Status(args) => status(&cluster, &args).await,
        Command::Qr(args) => qr(&cluster, &args).await,
        Command::Enroll(args) => enroll(&cluster, &args, flag_codes).await,
        Command::Link(args) => link(&cluster, &args).await,
    }
}

async fn link(cluster: &Cluster, args: &LinkArgs) -> anyhow::Result<ExitCode> {
    let enrollment = cluster.enrollment(&args.enrollment).await?;
    let (url, sent) = cluster.mint_link(&enrollment, &args.user, &args.public_url, &args.operator_namespace).await?;
    eprintln!(
        "A one-time link for {user}, valid once until {expires}. Whoever opens it sets up {user}'s MFA: \
         give it only to {user}, over a channel you trust. It replaces any earlier link of {user}.",
        user = args.user,
        expires = sent.expires_at,
    );
    emit(&format!("{}\n", url.expose()))?;
    Ok(ExitCode::SUCCESS)
}

async fn status(cluster: &Cluster, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let enrollments = match &args.enrollment {
        Some(name) => vec![cluster.enrollment(name).await?],
        None => cluster.enrollments(args.all_namespaces).await?,
    };
    if enrollments.is_empty() {
        if args.all_namespaces {
            emit("No MfaEnrollments found in any namespace.\n")?;
        } else {
            emit(&format!("No MfaEnrollments found in namespace \"{}\".\n", cluster.namespace))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    emit(&table::render(&enrollments, args.all_namespaces, jiff::Timestamp::now()))?;
    Ok(ExitCode::SUCCESS)
}

async fn qr(cluster: &Cluster, args: &QrArgs) -> anyhow::Result<ExitCode> {
    let enrollment = cluster.enrollment(&args.enrollment).await?;
    let user = lookup::pending_user(&enrollment, &args.user)?;
    let secret = cluster.seed_secret(&user.seed_secret).await?;
    show(&secret, &args.display)?;
    eprintln!(
        "\nThen type two consecutive codes: kubectl mfa enroll {} {}{}",
        args.enrollment,
        args.user,
        namespace_flag(cluster)
    );
    Ok(ExitCode::SUCCESS)
}

async fn enroll(
    cluster: &Cluster,
    args: &EnrollArgs,
    flag_codes: Option<(String, String)>,
) -> anyhow::Result<ExitCode> {
    let enrollment = cluster.enrollment(&args.enrollment).await?;
    let user = lookup::pending_user(&enrollment, &args.user)?;
    let shown = cluster.seed_secret(&user.seed_secret).await?;
    let (code1, code2) = match flag_codes {
        Some(codes) => codes,
        None => {
            show(&shown, &args.display)?;
            eprintln!(
                "\nAdd the device to your authenticator app (scan the QR code or type the secret key), \
                 then type the code it shows and, once it changes, the next one."
            );
            let stdin = std::io::stdin();
            let interactive = stdin.is_terminal();
            read_codes(&mut stdin.lock(), interactive)?
        }
    };

    // What status said just before the write, to recognise the operator's new answer.
    let fresh = lookup::pending_user(&cluster.enrollment(&args.enrollment).await?, &args.user)?;
    let written_over = cluster.submit(&args.user, &shown, &code1, &code2).await?;
    let before = Before {
        message: fresh.message,
        pending_since: fresh.pending_since,
        last_rejection: written_over.last_rejection,
        secret_uid: written_over.uid,
    };
    let limit = format!("{}s", args.timeout.as_secs());
    eprintln!("Codes written to Secret {}; waiting for mfa-operator (up to {limit})...", shown.name);

    let again = format!("kubectl mfa enroll {} {}{}", args.enrollment, args.user, namespace_flag(cluster));
    match cluster.await_outcome(&args.enrollment, &args.user, &shown.name, &before, args.timeout).await? {
        Some(Outcome::Enabled) => {
            emit(&format!("MFA enabled for {}: the user is Compliant.\n", args.user))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Outcome::Refused(message)) => {
            eprintln!("{}: {message}", args.user);
            eprintln!("Run `{again}` again with two new consecutive codes.");
            Ok(ExitCode::from(EXIT_REFUSED))
        }
        Some(Outcome::Replaced) => {
            eprintln!(
                "{}: the operator replaced the MFA device with a new one and a new seed (after five refused \
                 submissions, or at pendingTTL): remove the old \
                 entry from the authenticator app, then run `{again}` and scan the new QR code.",
                args.user
            );
            Ok(ExitCode::from(EXIT_REFUSED))
        }
        Some(Outcome::Withdrawn) => {
            eprintln!(
                "{}: the codes were removed from Secret {} before the operator answered (was it edited?): \
                 run `{again}` again.",
                args.user, shown.name
            );
            Ok(ExitCode::from(EXIT_REFUSED))
        }
        None => {
            eprintln!(
                "{}: no answer from mfa-operator within {limit}: is it running and watching namespace \"{}\"? \
                 The codes stay in Secret {}; if the operator reads them later they may be too old, so run \
                 `{again}` again once it runs.",
                args.user, cluster.namespace, shown.name
            );
            Ok(ExitCode::from(EXIT_TIMEOUT))
        }
    }
}

/// Writes to standard output, returning (rather than panicking on) a closed pipe.
fn emit(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// The QR code (unless `--no-qr`), the grouped secret key and the account label.
fn show(secret: &SeedSecret, display: &Display) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if !display.no_qr {
        let background = if display.invert { Background::Light } else { Background::Dark };
        writeln!(out, "{}", terminal_qr::render(secret.uri(), background)?)?;
    }
    writeln!(out, "Secret key: {}", terminal_qr::grouped_key(secret.seed()))?;
    if let Some(label) = terminal_qr::label(secret.uri()) {
        writeln!(out, "Account:    {label}")?;
    }
    out.flush()?;
    Ok(())
}

/// Prompts for the two codes on standard error and reads them from standard input. On a
/// terminal a malformed code is asked again; from a pipe it ends the command.
fn read_codes(input: &mut impl BufRead, interactive: bool) -> anyhow::Result<(String, String)> {
    let code1 = read_code(input, interactive, WhichCode::First)?;
    let code2 = read_code(input, interactive, WhichCode::Second)?;
    Ok((code1, code2))
}

fn read_code(input: &mut impl BufRead, interactive: bool, which: WhichCode) -> anyhow::Result<String> {
    let (number, make_prompt): (u8, fn(u64) -> String) = match which {
        WhichCode::First => (1, prompt::first_prompt),
        WhichCode::Second => (2, prompt::second_prompt),
    };
    loop {
        eprint!("{}", make_prompt(unix_now()));
        std::io::stderr().flush().context("write the prompt")?;
        let mut line = String::new();
        let read = input.read_line(&mut line).context("read standard input")?;
        if !interactive {
            eprintln!(); // nothing echoed the input
        }
        if read == 0 {
            bail!("no code {number} on standard input (pass --code1 and --code2 to give the codes as flags)");
        }
        match prompt::check_code(&line, which) {
            Ok(code) => return Ok(code),
            Err(refused) if interactive => eprintln!("{refused}; try again."),
            Err(refused) => bail!(refused),
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// ` -n <namespace>`, to repeat in a suggested command.
fn namespace_flag(cluster: &Cluster) -> String {
    format!(" -n {}", cluster.namespace)
}

/// A Go-style duration (`90s`, `2m`, `1m30s`) or whole seconds, positive.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let parsed: kube::core::Duration =
                text.parse().map_err(|e| format!("expected a duration such as 60s or 2m: {e}"))?;
            if parsed.is_negative() {
                return Err("the timeout cannot be negative".into());
            }
            parsed.into()
        }
    };
    if duration.is_zero() {
        return Err("the timeout must be longer than zero".into());
    }
    Ok(duration)
}
