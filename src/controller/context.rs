//! What every reconcile shares: the [`Context`] (clients, caches, the operator's memory of
//! what it wrote), its [`Config`], and the controller's [`Error`]. A leaf of the
//! controller: it imports none of the modules that use it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use super::accounts::Accounts;
use super::decide::EnrollmentId;
use super::integrity::{self, IntegrityKey};
use super::last_written::LastWritten;
use super::received::Received;
use super::seed_secret;
use crate::aws::IamError;
use crate::crd::{MfaAccountBinding, MfaEnrollment, MfaEnrollmentStatus};
use crate::metrics::Metrics;

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "mfa-operator";
/// Finalizer that lets the operator remove pending devices before an enrollment goes.
pub const FINALIZER: &str = "iam.mfa-operator.dev/cleanup";

/// Errors of one reconcile. Each carries what failed; [`Error::category`] is a short,
/// bounded label for metrics and Event reasons.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes {action}: {source}")]
    Kube {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("AWS IAM {0}")]
    Iam(#[from] IamError),
    #[error("the IAM inventory changed under the operator ({0}); retrying with a fresh inventory")]
    StaleInventory(String),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("some work did not finish: {0}")]
    WorkFailed(String),
    #[error("MfaEnrollment has no namespace")]
    NoNamespace,
    #[error("integrity key: {0}")]
    Integrity(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn kube(action: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Self::Kube { action, source }
    }

    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "kubernetes",
            Self::Iam(IamError::AccessDenied { .. }) => "aws_access_denied",
            Self::Iam(IamError::Throttled { .. }) => "aws_throttled",
            Self::Iam(_) => "aws",
            Self::StaleInventory(_) => "stale_inventory",
            Self::WorkFailed(_) => "work_failed",
            Self::Finalizer(_) => "finalizer",
            Self::NoNamespace => "invalid_object",
            Self::Integrity(_) => "integrity_key",
        }
    }
}

/// How the operator runs.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Namespaces to watch; empty watches every namespace.
    pub namespaces: Vec<String>,
    /// Name reported on Events (`reportingController`).
    pub reporter: String,
    /// Where the integrity key lives: a Secret in the operator's own namespace.
    pub key_namespace: String,
    pub key_secret: String,
    /// One-time links (`delivery: Link`): set when the enrollment page is served.
    pub links: Option<LinkService>,
    /// Where the enrollment page asks whether a link still grants an enrollment: filled
    /// while this replica's controller runs (the page on a standby answers "try again").
    pub page_grants: Option<PageGrants>,
}

/// The page's grant slot (see `crate::links::page_accounts`).
#[derive(Clone)]
pub struct PageGrants(pub crate::links::GrantSlot);

impl std::fmt::Debug for PageGrants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageGrants")
    }
}

/// The link service the controller uses (see `crate::links`).
#[derive(Clone)]
pub struct LinkService(pub Arc<dyn crate::links::Links>);

impl std::fmt::Debug for LinkService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkService")
    }
}

/// A binding's `Ready` as last written: (generation, ready, message).
type BindingReady = (Option<i64>, bool, String);

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub config: Config,
    /// Signs and verifies the seed Secrets the operator writes.
    pub integrity: integrity::IntegrityKey,
    pub accounts: Accounts,
    pub recorder: Recorder,
    pub store: Store<MfaEnrollment>,
    /// Every `MfaAccountBinding` (cluster-scoped, written by the platform team).
    pub bindings: Store<MfaAccountBinding>,
    /// Every namespace's metadata: a binding may serve namespaces by label.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// True once the binding and namespace caches have synced.
    pub(super) caches: tokio::sync::watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
    pub clock: fn() -> Timestamp,
    /// Asks the controller to reconcile every enrollment (after a write that other
    /// enrollments of the same account should see).
    pub(super) reconcile_all: futures::channel::mpsc::UnboundedSender<()>,
    pub(super) failures: std::sync::Mutex<HashMap<ObjectRef<MfaEnrollment>, u32>>,
    /// Users each enrollment last saw Compliant, beyond the bounded status list, so drift
    /// is noticed for every user (falls back to the status list after a restart).
    pub(super) compliant: std::sync::Mutex<HashMap<EnrollmentId, BTreeSet<String>>>,
    /// The status last written for each enrollment (see `last_written.rs`).
    pub(super) statuses: LastWritten,
    /// When each seed Secret version was first seen (see `received.rs`).
    pub(super) received: Arc<Received>,
    /// When each enrollment's current generation was first reconciled: a new or changed
    /// spec is decided from an inventory read after it appeared (an IAM user created
    /// just before the enrollment naming it is seen at once, not after a resync).
    pub(super) generations: std::sync::Mutex<HashMap<ObjectRef<MfaEnrollment>, (i64, Timestamp)>>,
    /// Bindings (by name, at a resourceVersion) that failed to reach their account as
    /// declared: their enrollments own no user, so they cannot keep a user from others.
    pub(super) unreachable: std::sync::Mutex<HashMap<String, String>>,
    /// The `Ready` each binding's status was last written with.
    pub(super) binding_statuses: std::sync::Mutex<HashMap<String, BindingReady>>,
}

impl Context {
    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    pub(super) fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Next delay of the per-enrollment exponential backoff (1 s doubling to 5 min).
    pub(super) fn backoff(&self, object: &MfaEnrollment) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(ObjectRef::from(object)).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs((1u64 << (*n - 1).min(9)).min(300))
    }

    /// Waits until the binding and namespace caches have synced (the enrollment cache has:
    /// the controller starts no reconcile before).
    pub(super) async fn caches_ready(&self) -> Result<()> {
        let mut caches = self.caches.clone();
        match caches.wait_for(|ready| *ready).await {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::WorkFailed("the caches are shutting down".into())),
        }
    }

    pub(super) fn reconcile_all(&self) {
        // Only fails when the controller is shutting down.
        let _ = self.reconcile_all.unbounded_send(());
    }

    pub(super) fn remembered_compliant(&self, id: &EnrollmentId) -> Option<BTreeSet<String>> {
        self.compliant.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    pub(super) fn remember_compliant(&self, id: &EnrollmentId, users: BTreeSet<String>) {
        self.compliant.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), users);
    }

    pub(super) fn forget_compliant(&self, id: &EnrollmentId) {
        self.compliant.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// The status this operator last wrote for `object`, else the one the cache holds.
    pub(super) fn last_status(&self, object: &MfaEnrollment) -> Option<MfaEnrollmentStatus> {
        self.statuses.last(object)
    }

    pub(super) fn remember_status(&self, object: &MfaEnrollment, status: MfaEnrollmentStatus) {
        self.statuses.remember(object, status);
    }

    pub(super) fn forget_status(&self, object: &MfaEnrollment) {
        self.statuses.forget(object);
    }

    /// When this operator first reconciled `object`'s current generation.
    pub(super) fn generation_seen(&self, object: &MfaEnrollment) -> Timestamp {
        let generation = object.metadata.generation.unwrap_or_default();
        let mut seen = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.now();
        let entry = seen.entry(ObjectRef::from(object)).or_insert((generation, now));
        if entry.0 != generation {
            *entry = (generation, now);
        }
        entry.1
    }

    pub(super) fn forget_generation(&self, object: &MfaEnrollment) {
        self.generations.lock().unwrap_or_else(|p| p.into_inner()).remove(&ObjectRef::from(object));
    }

    /// Whether this operator already wrote exactly this `Ready` for the binding.
    pub(super) fn binding_written(&self, name: &str, generation: Option<i64>, ready: bool, message: &str) -> bool {
        let written = self.binding_statuses.lock().unwrap_or_else(|p| p.into_inner());
        written.get(name).is_some_and(|(g, r, m)| *g == generation && *r == ready && m == message)
    }

    pub(super) fn remember_binding(&self, name: &str, generation: Option<i64>, ready: bool, message: &str) {
        let mut written = self.binding_statuses.lock().unwrap_or_else(|p| p.into_inner());
        written.insert(name.to_owned(), (generation, ready, message.to_owned()));
    }

    pub(super) fn note_unreachable(&self, binding: &MfaAccountBinding, failed: bool) {
        let mut unreachable = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        let name = binding.name_any();
        if failed {
            unreachable.insert(name, binding.resource_version().unwrap_or_default());
        } else {
            unreachable.remove(&name);
        }
    }

    /// Whether `binding`, as it is now, failed to reach its account.
    pub(super) fn is_unreachable(&self, binding: &MfaAccountBinding) -> bool {
        let unreachable = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        unreachable.get(&binding.name_any()).is_some_and(|v| Some(v) == binding.resource_version().as_ref())
    }

    pub(super) fn reset_backoff(&self, object: &MfaEnrollment) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&ObjectRef::from(object));
    }
}

/// Reads the key from the Secret `namespace/name`, creating it with a random key when it
/// does not exist (two replicas racing both end up reading the one that won).
pub async fn load_integrity_key(client: kube::Client, namespace: &str, name: &str) -> Result<IntegrityKey> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    for _ in 0..3 {
        if let Some(secret) = api.get_opt(name).await.map_err(Error::kube("read the integrity key Secret"))? {
            let bytes = secret
                .data
                .as_ref()
                .and_then(|d| d.get(integrity::KEY_FIELD))
                .map(|b| b.0.as_slice())
                .unwrap_or_default();
            return IntegrityKey::from_bytes(bytes).ok_or_else(|| {
                Error::Integrity(format!(
                    "Secret {namespace}/{name} has no {}-byte `{}`: delete it and the operator \
                     creates a new key (pending seed Secrets are then replaced once)",
                    integrity::KEY_LEN,
                    integrity::KEY_FIELD
                ))
            });
        }
        let key = IntegrityKey::generate().map_err(Error::Integrity)?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some([(seed_secret::LABEL_MANAGED_BY.to_owned(), seed_secret::MANAGED_BY.to_owned())].into()),
                ..ObjectMeta::default()
            },
            immutable: Some(true),
            data: Some([(integrity::KEY_FIELD.to_owned(), ByteString(key.bytes().to_vec()))].into()),
            ..Secret::default()
        };
        let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() };
        match api.create(&params, &secret).await {
            Ok(_) => {
                tracing::info!(secret = %format!("{namespace}/{name}"), "created the integrity key");
                return Ok(key);
            }
            // Another replica created it first: read theirs.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(Error::kube("create the integrity key Secret")(e)),
        }
    }
    Err(Error::Integrity(format!("cannot read or create the integrity key Secret {namespace}/{name}")))
}

#[cfg(test)]
impl Context {
    /// A context for unit tests of the reconcile glue (`glue_tests.rs`): `client` talks to a
    /// mocked apiserver, the caches hold what the test filled them with and count as synced,
    /// the clock stands still, and no controller runs (a request to reconcile every
    /// enrollment goes nowhere).
    pub(crate) fn for_tests(
        client: Client,
        config: Config,
        caches: (Store<MfaEnrollment>, Store<MfaAccountBinding>, Store<PartialObjectMeta<Namespace>>),
        integrity: integrity::IntegrityKey,
        accounts: Accounts,
        clock: fn() -> Timestamp,
    ) -> Self {
        let (store, bindings, namespaces) = caches;
        let reporter = kube::runtime::events::Reporter { controller: config.reporter.clone(), instance: None };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            integrity,
            accounts,
            store,
            bindings,
            namespaces,
            // Synced: a waiter sees `true` before it could notice the sender is gone.
            caches: tokio::sync::watch::channel(true).1,
            metrics: Metrics::new(),
            clock,
            reconcile_all: futures::channel::mpsc::unbounded().0,
            failures: Default::default(),
            compliant: Default::default(),
            statuses: Default::default(),
            received: Default::default(),
            generations: Default::default(),
            unreachable: Default::default(),
            binding_statuses: Default::default(),
        }
    }
}
