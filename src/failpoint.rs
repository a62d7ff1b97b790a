//! Failpoints for fault tests.
//!
//! When the environment variable `MFA_OPERATOR_FAILPOINT` names a step, the process
//! aborts the moment it reaches that step ([`hit`]): no destructors, no graceful shutdown,
//! as if it had been killed with SIGKILL. The fault tests (`tests/it/faults.rs`) use it to
//! stop the operator between two writes and check that a restarted operator repairs the
//! state. A [`wedge`] point blocks its thread forever instead, as a deadlock would (the
//! liveness probe's test). A [`stall`] point waits `MFA_OPERATOR_FAILPOINT_SECONDS` (as a
//! slow step would) and goes on (the lease fencing test). Unset (as in production), a
//! failpoint costs one string compare.

use std::sync::LazyLock;

/// The environment variable naming the step at which to abort.
pub const ENV: &str = "MFA_OPERATOR_FAILPOINT";

/// The failpoint named in [`ENV`], read once.
static ARMED: LazyLock<Option<String>> = LazyLock::new(|| std::env::var(ENV).ok());

/// Aborts the process if [`ENV`] names `name`.
pub fn hit(name: &'static str) {
    if ARMED.as_deref() == Some(name) {
        tracing::error!("failpoint {name}: aborting");
        std::process::abort();
    }
}

/// Blocks the calling thread forever if [`ENV`] names `name`.
pub fn wedge(name: &'static str) {
    if ARMED.as_deref() == Some(name) {
        tracing::error!("failpoint {name}: blocking this thread forever");
        loop {
            std::thread::park();
        }
    }
}

/// Waits `MFA_OPERATOR_FAILPOINT_SECONDS` (default 10) if [`ENV`] names `name`.
pub async fn stall(name: &'static str) {
    if ARMED.as_deref() == Some(name) {
        let secs = std::env::var("MFA_OPERATOR_FAILPOINT_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
        tracing::warn!(seconds = secs, "failpoint {name}: stalling");
        tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
        tracing::warn!("failpoint {name}: going on");
    }
}
