//! `mfa-operator`: the operator's command line.

use clap::{Parser, Subcommand, ValueEnum};
use mfa_operator::controller;
use mfa_operator::health::Health;
use mfa_operator::leader::{Leadership, LeaseConfig};
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
    Run(RunArgs),
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
    let metrics = Metrics::new();
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
            run(args).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    #[test]
    fn request_bodies_are_never_logged_whatever_the_filter() {
        assert!(!super::may_log(&Level::TRACE, "aws_smithy_runtime::client::orchestrator"));
        assert!(!super::may_log(&Level::TRACE, "hyper_util::client::legacy::pool"));
        assert!(super::may_log(&Level::DEBUG, "aws_smithy_runtime::client::orchestrator"));
        assert!(super::may_log(&Level::TRACE, "mfa_operator::controller"));
    }
}
