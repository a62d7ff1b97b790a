//! `mfa-operator`: the operator's command line.

use clap::{Parser, Subcommand, ValueEnum};
use kube::CustomResourceExt;
use mfa_operator::controller;
use mfa_operator::crd::MfaEnrollment;
use tracing_subscriber::EnvFilter;

/// Enrols AWS IAM users in virtual MFA, driven by MfaEnrollment resources.
///
/// AWS is reached through the standard AWS configuration: credentials from the default
/// chain (IRSA, EKS Pod Identity, environment), AWS_REGION, and AWS_ENDPOINT_URL or
/// AWS_ENDPOINT_URL_IAM when IAM is not at its usual endpoint.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    /// Log format.
    #[arg(long, env = "MFA_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    /// Log filter, in RUST_LOG syntax (for example `info` or `mfa_operator=debug`).
    #[arg(long, env = "MFA_OPERATOR_LOG", default_value = "info", global = true)]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller: watch MfaEnrollments and their seed Secrets until SIGTERM.
    Run {
        /// Only watch this namespace (default: every namespace).
        #[arg(long, short = 'n', env = "MFA_OPERATOR_NAMESPACE")]
        namespace: Option<String>,
    },
    /// Print the MfaEnrollment CustomResourceDefinition YAML (same as `crdgen`).
    Crd,
}

fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print!("{}", serde_yaml::to_string(&MfaEnrollment::crd())?),
        Command::Run { namespace } => {
            init_logging(cli.log_format, &cli.log)?;
            let client = kube::Client::try_default().await?;
            controller::run(client, controller::Config { namespace, reporter: "mfa-operator".into() }).await?;
        }
    }
    Ok(())
}
