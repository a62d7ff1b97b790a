//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager), so several
//! replicas can run safely: one reconciles, the others wait and take over within the
//! lease duration when it stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::aws::IamError;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per replica (the pod name).
    pub identity: String,
    /// Seconds a lease stays valid after its last renewal; a standby takes over after it.
    pub duration_secs: u64,
    /// Seconds before expiry at which the holder renews.
    pub grace_secs: u64,
}

/// This replica's hold on the lease.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
}

impl Leadership {
    /// Waits until this replica holds the lease.
    pub async fn acquire(client: Client, config: &LeaseConfig) -> anyhow::Result<Self> {
        let manager = LeaseManagerBuilder::new(client, &config.name)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            .with_duration(config.duration_secs)
            .with_grace(config.grace_secs)
            .with_field_manager(format!("mfa-operator-{}", config.identity))
            .build()
            .await?;
        let (mut state, task) = manager.watch().await;
        tracing::info!(lease = %config.name, namespace = %config.namespace, identity = %config.identity, "waiting for leadership");
        while !*state.borrow_and_update() {
            state.changed().await.map_err(|_| anyhow::anyhow!("the lease manager stopped"))?;
        }
        tracing::info!(identity = %config.identity, "became the leader");
        Ok(Self { state, task })
    }

    /// Resolves when this replica loses the lease (or the lease manager stops).
    pub async fn lost(&mut self) {
        loop {
            if self.state.changed().await.is_err() || !*self.state.borrow_and_update() {
                return;
            }
        }
    }

    /// Gives the lease up so a standby takes over at once rather than after expiry.
    pub async fn release(self) {
        drop(self.state);
        match self.task.await {
            Ok(Ok(_)) => tracing::info!("released the lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release the lease; it expires on its own"),
            Err(e) => tracing::warn!(error = %e, "lease manager task failed"),
        }
    }
}

/// Whether this process may write to IAM now. With leader election a process may only
/// until the lease it last saw itself hold expires (its own renew time plus the lease
/// duration, less a margin): a leader that was paused past its lease (a stopped process,
/// a frozen node) never finishes a write after a standby may have taken over. Checked
/// before every IAM write; without leader election it is always open.
#[derive(Default)]
pub struct Fence {
    armed: AtomicBool,
    held_until: Mutex<Option<Timestamp>>,
}

/// How long before the lease's expiry this process stops writing.
const FENCE_MARGIN: SignedDuration = SignedDuration::from_secs(1);

impl Fence {
    /// Writes need a confirmed lease from now on (none is confirmed yet).
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// This process renewed the lease at `renewed` for `duration`.
    pub fn renewed(&self, renewed: Timestamp, duration: SignedDuration) {
        let until = renewed.checked_add(duration - FENCE_MARGIN).ok();
        *self.held_until.lock().unwrap_or_else(|p| p.into_inner()) = until;
    }

    /// The lease is someone else's (or gone).
    pub fn revoke(&self) {
        *self.held_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// `Err` when a write by `operation` must not be sent now.
    pub fn check(&self, operation: &'static str) -> Result<(), IamError> {
        self.check_at(operation, Timestamp::now())
    }

    fn check_at(&self, operation: &'static str, now: Timestamp) -> Result<(), IamError> {
        if !self.armed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let until = *self.held_until.lock().unwrap_or_else(|p| p.into_inner());
        match until {
            Some(until) if now < until => Ok(()),
            _ => {
                tracing::warn!(
                    operation,
                    "write not sent: this replica cannot confirm it still holds the leader lease"
                );
                Err(IamError::NotLeader { operation })
            }
        }
    }
}

/// The process's fence (one lease per process).
pub fn fence() -> &'static Fence {
    static FENCE: LazyLock<Fence> = LazyLock::new(Fence::default);
    &FENCE
}

/// Arms the fence and keeps it current from a watch on the Lease: each renewal by this
/// replica extends it, anything else closes it.
pub fn keep_fence(client: Client, config: &LeaseConfig) -> JoinHandle<()> {
    fence().arm();
    let leases: Api<Lease> = Api::namespaced(client, &config.namespace);
    let filter = watcher::Config::default().fields(&format!("metadata.name={}", config.name));
    let identity = config.identity.clone();
    tokio::spawn(async move {
        let events = watcher(leases, filter).default_backoff().touched_objects();
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            let Ok(lease) = event else {
                fence().revoke();
                continue;
            };
            let spec = lease.spec.unwrap_or_default();
            let ours = spec.holder_identity.as_deref() == Some(identity.as_str())
                && lease.metadata.deletion_timestamp.is_none();
            match (ours, spec.renew_time, spec.lease_duration_seconds) {
                (true, Some(renewed), Some(secs)) => fence().renewed(renewed.0, SignedDuration::from_secs(secs.into())),
                _ => fence().revoke(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_is_open_until_armed_then_only_within_the_last_renewal() {
        let fence = Fence::default();
        let t0 = Timestamp::UNIX_EPOCH;
        assert_eq!(fence.check_at("op", t0), Ok(()), "no leader election: always open");
        fence.arm();
        assert_eq!(fence.check_at("op", t0), Err(IamError::NotLeader { operation: "op" }), "no renewal seen yet");
        fence.renewed(t0, SignedDuration::from_secs(15));
        assert_eq!(fence.check_at("op", t0 + SignedDuration::from_secs(13)), Ok(()));
        let paused = t0 + SignedDuration::from_secs(14);
        assert_eq!(fence.check_at("op", paused), Err(IamError::NotLeader { operation: "op" }), "margin before expiry");
        fence.renewed(paused, SignedDuration::from_secs(15));
        assert_eq!(fence.check_at("op", paused + SignedDuration::from_secs(1)), Ok(()));
        fence.revoke();
        assert_eq!(
            fence.check_at("op", paused + SignedDuration::from_secs(1)),
            Err(IamError::NotLeader { operation: "op" })
        );
    }
}
