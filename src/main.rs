//! `mfa-operator`: the operator's command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use mfa_operator::controller;
use mfa_operator::delivery::{
    Delivery, SmtpCredentials, SmtpDelivery, SmtpSecurity, SmtpSettings, WebhookDelivery, WebhookSettings, WebhookUrl,
};
use mfa_operator::enroll_page::{EnrollPage, PageConfig, PageMetrics};
use mfa_operator::health::Health;
use mfa_operator::leader::{Leadership, LeaseConfig};
use mfa_operator::links::{GrantSlot, KubeLinks, Links, LinksConfig, PageAccounts};
use mfa_operator::metrics::Metrics;
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
    Run(Box<RunArgs>),
    /// Print the MfaEnrollment CustomResourceDefinition YAML (same as `crdgen`).
    Crd,
    /// One-shot MFA compliance report for an AWS account, without Kubernetes.
    ///
    /// Uses the controller's own inventory and selection, with the same selector as
    /// spec.users; costs O(pages + users without a virtual device) IAM requests.
    Audit(mfa_operator::audit::AuditArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Only watch these namespaces (repeat the flag or separate with commas; default:
    /// every namespace). With several, MfaEnrollments are watched cluster-wide and
    /// filtered, Secrets only in these namespaces.
    #[arg(long, short = 'n', env = "MFA_OPERATOR_NAMESPACE", value_delimiter = ',')]
    namespace: Vec<String>,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "MFA_OPERATOR_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    metrics_address: std::net::SocketAddr,

    /// Elect one leader among replicas through a Lease; the others wait and take over.
    #[arg(long, env = "MFA_OPERATOR_LEADER_ELECTION")]
    leader_election: bool,

    /// Name of the Lease used for leader election.
    #[arg(long, env = "MFA_OPERATOR_LEASE_NAME", default_value = "mfa-operator")]
    lease_name: String,

    /// Namespace of the Lease (default: the pod's namespace from POD_NAMESPACE, else the
    /// first watched namespace, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,

    /// Seconds a lease stays valid after its last renewal: how long a standby waits
    /// before taking over from a leader that stopped without releasing it.
    #[arg(long, env = "MFA_OPERATOR_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(5..=300))]
    lease_duration_seconds: u64,

    /// Seconds before expiry at which the leader renews the lease.
    #[arg(long, env = "MFA_OPERATOR_LEASE_GRACE_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    lease_grace_seconds: u64,

    /// Identity of this replica in the Lease (default: POD_NAME, else host name and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// Secret holding the key that signs seed Secrets, in the operator's namespace (the
    /// Lease's); created with a random key on first start.
    #[arg(long, env = "MFA_OPERATOR_INTEGRITY_KEY_SECRET", default_value = "mfa-operator-integrity-key")]
    integrity_key_secret: String,

    /// Namespace of that Secret (default: the operator's own, as for the Lease). Never a
    /// namespace whose Secrets tenants may read.
    #[arg(long, env = "MFA_OPERATOR_INTEGRITY_KEY_NAMESPACE")]
    integrity_key_namespace: Option<String>,

    /// Seconds the controller loop may go without running before /healthz and /readyz
    /// fail (a wedged loop: a blocked thread, a deadlock); slow IAM calls do not count.
    #[arg(long, env = "MFA_OPERATOR_LIVENESS_TIMEOUT_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=3600))]
    liveness_timeout_seconds: u64,

    #[command(flatten)]
    link: LinkArgs,
}

/// `Link` delivery (issue 11): the self-service enrollment page and how links reach
/// people. Off unless --enrollment-address is given; without it, enrollments in `Link`
/// delivery are reported as not served.
#[derive(clap::Args, Debug)]
struct LinkArgs {
    /// Address of the self-service enrollment page (e.g. 0.0.0.0:8443). Unset: no page,
    /// and no `Link` delivery.
    #[arg(long, env = "MFA_OPERATOR_ENROLLMENT_ADDRESS")]
    enrollment_address: Option<std::net::SocketAddr>,

    /// Where people reach the page (https://mfa.example.com, with any path prefix the
    /// Ingress adds); links point there. Required with --enrollment-address.
    #[arg(long, env = "MFA_OPERATOR_PUBLIC_URL")]
    public_url: Option<String>,

    /// A header whose last address is the client's, set by the proxy in front of the page
    /// (`X-Forwarded-For` behind an Ingress): the page's per-client rate limits use it.
    /// Unset: the peer address. Set it only behind a proxy that overwrites the header.
    #[arg(long, env = "MFA_OPERATOR_ENROLLMENT_CLIENT_ADDRESS_HEADER")]
    enrollment_client_address_header: Option<String>,

    /// A header an authenticating proxy in front of the page (oauth2-proxy, Pomerium, an
    /// Ingress auth annotation) sets to the signed-in person's e-mail address, for example
    /// X-Auth-Request-Email: a link then opens only for the person whose address tag it
    /// names. Only safe when the page is reachable through that proxy alone.
    #[arg(long, env = "MFA_OPERATOR_TRUSTED_IDENTITY_HEADER", requires = "enrollment_address")]
    trusted_identity_header: Option<String>,

    /// The IAM user tag holding a person's e-mail address.
    #[arg(long, env = "MFA_OPERATOR_ADDRESS_TAG", default_value = mfa_operator::delivery::DEFAULT_ADDRESS_TAG)]
    address_tag: String,

    /// SMTP server for e-mailed links. Unset: no e-mail delivery.
    #[arg(long, env = "MFA_OPERATOR_SMTP_HOST")]
    smtp_host: Option<String>,

    /// SMTP port (default: 587 for starttls, 465 for tls, 25 for plain).
    #[arg(long, env = "MFA_OPERATOR_SMTP_PORT")]
    smtp_port: Option<u16>,

    /// How the SMTP connection is secured: STARTTLS (required), implicit TLS, or plain
    /// (only to a loopback host).
    #[arg(long, env = "MFA_OPERATOR_SMTP_SECURITY", value_enum, default_value_t = SmtpSecurityArg::Starttls)]
    smtp_security: SmtpSecurityArg,

    /// Sender of link mails, e.g. `MFA enrollment <mfa@example.com>`. Required with
    /// --smtp-host.
    #[arg(long, env = "MFA_OPERATOR_SMTP_FROM")]
    smtp_from: Option<String>,

    /// File with the SMTP user name on its first line and the password on its second
    /// (mounted from a Secret). Unset: no SMTP AUTH.
    #[arg(long, env = "MFA_OPERATOR_SMTP_CREDENTIALS_FILE")]
    smtp_credentials_file: Option<PathBuf>,

    /// PEM file of extra root certificates for the SMTP server (a company CA); the
    /// system's roots are trusted too.
    #[arg(long, env = "MFA_OPERATOR_SMTP_CA_FILE")]
    smtp_ca_file: Option<PathBuf>,

    /// File holding the chat webhook's URL (mounted from a Secret: the URL is a
    /// credential). Unset: no webhook delivery.
    #[arg(long, env = "MFA_OPERATOR_WEBHOOK_URL_FILE")]
    webhook_url_file: Option<PathBuf>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum SmtpSecurityArg {
    Starttls,
    Tls,
    Plain,
}

impl From<SmtpSecurityArg> for SmtpSecurity {
    fn from(arg: SmtpSecurityArg) -> Self {
        match arg {
            SmtpSecurityArg::Starttls => SmtpSecurity::StartTls,
            SmtpSecurityArg::Tls => SmtpSecurity::ImplicitTls,
            SmtpSecurityArg::Plain => SmtpSecurity::Plain,
        }
    }
}

/// A file's contents, or an error naming the flag (never the contents).
fn read_secret_file(path: &Path, flag: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {flag} {}: {e}", path.display()))
}

/// The SMTP user name and password of a credentials file: the first two lines.
fn parse_smtp_credentials(text: &str) -> Option<SmtpCredentials> {
    let mut lines = text.lines();
    let username = lines.next()?.trim();
    let password = lines.next()?.trim_end_matches('\r');
    (!username.is_empty() && !password.is_empty()).then(|| SmtpCredentials::new(username, password))
}

impl LinkArgs {
    /// E-mail delivery as configured (`None`: no --smtp-host).
    fn email(&self) -> anyhow::Result<Option<Arc<dyn Delivery>>> {
        let Some(host) = self.smtp_host.as_deref().filter(|h| !h.trim().is_empty()) else {
            anyhow::ensure!(
                self.smtp_credentials_file.is_none() && self.smtp_from.is_none(),
                "--smtp-from and --smtp-credentials-file need --smtp-host"
            );
            return Ok(None);
        };
        let from = self.smtp_from.as_deref().ok_or_else(|| anyhow::anyhow!("--smtp-host needs --smtp-from"))?;
        let from = from.parse().map_err(|e| anyhow::anyhow!("--smtp-from {from:?} is not a mailbox: {e}"))?;
        let mut settings = SmtpSettings::new(host, self.smtp_security.into(), from);
        settings.port = self.smtp_port;
        if let Some(path) = &self.smtp_credentials_file {
            let text = read_secret_file(path, "--smtp-credentials-file")?;
            settings.credentials = Some(parse_smtp_credentials(&text).ok_or_else(|| {
                anyhow::anyhow!(
                    "--smtp-credentials-file {} must hold the user name on its first line and the password on its second",
                    path.display()
                )
            })?);
        }
        if let Some(path) = &self.smtp_ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read --smtp-ca-file {}: {e}", path.display()))?;
            settings.root_certificates_pem.push(pem);
        }
        let delivery = SmtpDelivery::new(settings).map_err(|e| anyhow::anyhow!("SMTP settings: {e}"))?;
        Ok(Some(Arc::new(delivery)))
    }

    /// Webhook delivery as configured (`None`: no --webhook-url-file).
    fn webhook(&self) -> anyhow::Result<Option<Arc<dyn Delivery>>> {
        let Some(path) = &self.webhook_url_file else { return Ok(None) };
        let text = read_secret_file(path, "--webhook-url-file")?;
        // The error never holds the URL: it is a credential.
        let url = WebhookUrl::parse(text.trim())
            .map_err(|e| anyhow::anyhow!("--webhook-url-file {}: {e}", path.display()))?;
        let delivery =
            WebhookDelivery::new(WebhookSettings::new(url)).map_err(|e| anyhow::anyhow!("webhook settings: {e}"))?;
        Ok(Some(Arc::new(delivery)))
    }
}

/// What `Link` delivery hands the controller.
struct LinkWiring {
    /// Mints, keeps, delivers and revokes links.
    links: Arc<dyn Links>,
    /// The page's way to the running controller's grants: filled by the controller.
    grants: GrantSlot,
}

/// Builds the link store and the page, starts the store's index and serves the page on
/// its own listener. The page serves on every replica; only the leader's controller
/// fills `grants` (see src/links/page_accounts.rs).
async fn start_link_delivery(
    client: &kube::Client,
    args: &LinkArgs,
    namespace: &str,
    page_metrics: PageMetrics,
) -> anyhow::Result<Option<LinkWiring>> {
    let Some(address) = args.enrollment_address else {
        anyhow::ensure!(args.public_url.is_none(), "--public-url needs --enrollment-address");
        return Ok(None);
    };
    let public_url =
        args.public_url.clone().ok_or_else(|| anyhow::anyhow!("--enrollment-address needs --public-url"))?;
    let (email, webhook) = (args.email()?, args.webhook()?);
    if email.is_none() && webhook.is_none() {
        tracing::warn!(
            "the enrollment page is on but neither SMTP nor a webhook is configured: only Manual links can be sent"
        );
    }
    let links = KubeLinks::new(
        client.clone(),
        LinksConfig {
            namespace: namespace.to_owned(),
            public_url: public_url.clone(),
            address_tag: args.address_tag.clone(),
            email,
            webhook,
        },
    );
    let grants = GrantSlot::default();
    let mut config = PageConfig::new(public_url);
    if let Some(header) = &args.enrollment_client_address_header {
        config.client_address_header =
            Some(header.parse().map_err(|e| anyhow::anyhow!("--enrollment-client-address-header {header:?}: {e}"))?);
    }
    if let Some(header) = &args.trusted_identity_header {
        config.trusted_identity_header =
            Some(header.parse().map_err(|e| anyhow::anyhow!("--trusted-identity-header {header:?}: {e}"))?);
    }
    let accounts = PageAccounts::new(grants.clone(), args.address_tag.clone());
    let page = EnrollPage::new(accounts, links.clone(), config)
        .map_err(|e| anyhow::anyhow!("enrollment page: {e}"))?
        .with_metrics(page_metrics);
    let page = Arc::new(page);
    links.hold_devices_of(&page);
    tokio::spawn(links.clone().run_index());
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {address} for the enrollment page: {e}"))?;
    tracing::info!(%address, "enrollment page listening");
    tokio::spawn(async move {
        if let Err(e) = page.serve(listener).await {
            tracing::error!(error = %e, "the enrollment page stopped");
        }
    });
    Ok(Some(LinkWiring { links: Arc::new(links), grants }))
}

/// Resolves on SIGTERM or SIGINT.
async fn termination() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await?;
    let page_metrics = PageMetrics::default();
    let metrics = if args.link.enrollment_address.is_some() {
        Metrics::with_more(|registry| page_metrics.register(registry))
    } else {
        Metrics::new()
    };
    let health = Health::new(std::time::Duration::from_secs(args.liveness_timeout_seconds));
    let listener = mfa_operator::http::bind(args.metrics_address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} for metrics and probes: {e}", args.metrics_address))?;
    let server = tokio::spawn(mfa_operator::http::serve(listener, metrics.clone(), health.clone()));
    mfa_operator::memory::tune();
    // Ends with the process (a standby runs no reconcile, so it never trims).
    tokio::spawn(mfa_operator::memory::trim_after_bursts(metrics.clone()));
    // The operator's own namespace: where its Lease and integrity key live.
    let own_namespace =
        args.lease_namespace.clone().or(args.namespace.first().cloned()).unwrap_or_else(|| "default".into());
    let config = controller::Config {
        namespaces: args.namespace.clone(),
        reporter: "mfa-operator".into(),
        key_namespace: args.integrity_key_namespace.clone().unwrap_or_else(|| own_namespace.clone()),
        key_secret: args.integrity_key_secret.clone(),
        links: None,
        page_grants: None,
    };
    // The page serves on every replica, standbys included (a standby's page answers
    // "try again" until its controller runs). Link records live beside the integrity
    // key, in the operator's own namespace, where the controller watches them.
    let wiring = start_link_delivery(&client, &args.link, &config.key_namespace, page_metrics).await?;
    let config = match wiring {
        Some(LinkWiring { links, grants }) => controller::Config {
            links: Some(controller::LinkService(links)),
            page_grants: Some(controller::PageGrants(grants)),
            ..config
        },
        None => config,
    };
    if !args.leader_election {
        let result = controller::run(client, config, metrics, health, termination()).await;
        server.abort();
        return result;
    }

    let lease = LeaseConfig {
        namespace: own_namespace,
        name: args.lease_name,
        identity: args.identity.unwrap_or_else(default_identity),
        duration_secs: args.lease_duration_seconds,
        grace_secs: args.lease_grace_seconds.min(args.lease_duration_seconds - 1),
    };
    // A standby is healthy and ready: it is doing its job, which is to wait.
    health.standby();
    let mut leadership = tokio::select! {
        leadership = Leadership::acquire(client.clone(), &lease) => leadership?,
        _ = termination() => return Ok(()),
    };
    // From here on every IAM write first checks that this replica still holds the lease.
    let fence = mfa_operator::leader::keep_fence(client.clone(), &lease);
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        tokio::select! {
            _ = termination() => {}
            _ = lost_rx => {}
        }
    };
    let watch_lease = async {
        leadership.lost().await;
        let _ = lost_tx.send(());
    };
    let (result, lost) = tokio::select! {
        result = controller::run(client, config, metrics, health, shutdown) => (result, false),
        _ = watch_lease => (Ok(()), true),
    };
    if lost {
        // Stop acting at once; the process exits so the pod restarts as a standby.
        anyhow::bail!("lost the leader lease {}/{}; exiting", lease.namespace, lease.name);
    }
    fence.abort();
    leadership.release().await;
    server.abort();
    result
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "mfa-operator".into());
    format!("{}-{}", host.trim(), std::process::id())
}

fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    use tracing_subscriber::layer::{Layer, SubscriberExt};
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_new(filter)?;
    // Whatever the filter says: the AWS SDK's orchestrator logs whole requests at TRACE,
    // bodies included (an AssumeRole's ExternalId, an EnableMFADevice's two codes).
    let no_bodies = tracing_subscriber::filter::filter_fn(|meta| may_log(meta.level(), meta.target()));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match format {
        LogFormat::Text => layer.with_filter(filter).with_filter(no_bodies).boxed(),
        LogFormat::Json => layer.json().flatten_event(true).with_filter(filter).with_filter(no_bodies).boxed(),
    };
    tracing_subscriber::registry().with(layer).init();
    Ok(())
}

/// Whether an event may be logged at all: never the HTTP layers' TRACE events, which
/// print request bodies.
fn may_log(level: &tracing::Level, target: &str) -> bool {
    *level != tracing::Level::TRACE || !(target.starts_with("aws_smithy") || target.starts_with("hyper"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            let yaml: Vec<String> =
                mfa_operator::crd::crds().iter().map(serde_yaml::to_string).collect::<Result<_, _>>()?;
            print!("{}", yaml.join("---\n"));
        }
        Command::Audit(args) => {
            init_logging(cli.log_format, &cli.log)?;
            std::process::exit(mfa_operator::audit::run(args).await.code());
        }
        Command::Run(args) => {
            init_logging(cli.log_format, &cli.log)?;
            run(*args).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    #[test]
    fn smtp_credentials_are_two_lines() {
        let parsed = super::parse_smtp_credentials("mailer\ns3cret: with spaces \n");
        assert_eq!(parsed, Some(mfa_operator::delivery::SmtpCredentials::new("mailer", "s3cret: with spaces ")));
        assert_eq!(
            super::parse_smtp_credentials("mailer\r\npw\r\n"),
            Some(mfa_operator::delivery::SmtpCredentials::new("mailer", "pw"))
        );
        for bad in ["", "mailer", "mailer\n", "\npw"] {
            assert_eq!(super::parse_smtp_credentials(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn request_bodies_are_never_logged_whatever_the_filter() {
        assert!(!super::may_log(&Level::TRACE, "aws_smithy_runtime::client::orchestrator"));
        assert!(!super::may_log(&Level::TRACE, "hyper_util::client::legacy::pool"));
        assert!(super::may_log(&Level::DEBUG, "aws_smithy_runtime::client::orchestrator"));
        assert!(super::may_log(&Level::TRACE, "mfa_operator::controller"));
    }
}
