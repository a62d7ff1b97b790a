//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager), so several
//! replicas can run safely: one reconciles, the others wait and take over within the
//! lease duration when it stops.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
