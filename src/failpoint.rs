//! Failpoints for fault tests.
//!
//! When the environment variable `MFA_OPERATOR_FAILPOINT` names a step, the process
//! aborts the moment it reaches that step ([`hit`]): no destructors, no graceful shutdown,
//! as if it had been killed with SIGKILL. The fault tests (`tests/it/faults.rs`) use it to
//! stop the operator between two writes and check that a restarted operator repairs the
//! state. A [`wedge`] point blocks its thread forever instead, as a deadlock would (the
//! liveness probe's test). Unset (as in production), a failpoint costs one string compare.

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
