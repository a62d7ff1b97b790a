//! The enrollment controller: a kube-runtime `Controller` for `MfaEnrollment` that also
//! watches the seed Secrets it creates, so a code submission triggers a reconcile at once.
//!
//! A reconcile ([`reconcile`]) takes one path: gather (inventory, Secrets, peers) ->
//! [`decide`] (pure: the steps per user, and the row each user gets once they succeed) ->
//! [`act`] (the effects layer: runs the steps, submissions first, and returns typed
//! [`outcome`]s) -> [`render`] (pure: the one place status is decided) -> [`publish`]
//! (the status write and Events).
//!
//! - [`selection`]: which users a selector picks; [`grant`]: what an `MfaAccountBinding`
//!   lets an enrollment do (pure); [`reach`]: an enrollment's binding, credentials and
//!   account; [`accounts`]: per-account IAM client, shared inventory, reservations
//! - [`seed_secret`]: the seed Secret's name, shape, parsing and verification;
//!   [`integrity`]: the operator's key and the tag that proves a seed Secret is its own
//! - [`vocabulary`]: condition and Event reasons, and what blocks a reconcile

pub mod accounts;
mod act;
pub mod decide;
mod gather;
pub mod grant;
pub mod integrity;
mod last_written;
mod outcome;
mod publish;
mod reach;
mod received;
mod reconcile;
pub mod render;
pub mod seed_secret;
pub mod selection;
pub mod vocabulary;
mod watch_backoff;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{Controller, Predicate, PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Client, ResourceExt};

use crate::aws::{CallCounter, IamError};
use crate::crd::{MfaAccountBinding, MfaEnrollment, MfaEnrollmentStatus};
use crate::health::Health;
use crate::metrics::Metrics;

pub use accounts::{AccountKey, Accounts};
pub use reach::{PageReach, for_link};

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
    caches: tokio::sync::watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
    pub clock: fn() -> Timestamp,
    /// Asks the controller to reconcile every enrollment (after a write that other
    /// enrollments of the same account should see).
    reconcile_all: futures::channel::mpsc::UnboundedSender<()>,
    failures: std::sync::Mutex<HashMap<ObjectRef<MfaEnrollment>, u32>>,
    /// Users each enrollment last saw Compliant, beyond the bounded status list, so drift
    /// is noticed for every user (falls back to the status list after a restart).
    compliant: std::sync::Mutex<HashMap<decide::EnrollmentId, BTreeSet<String>>>,
    /// The status last written for each enrollment (see `last_written.rs`).
    statuses: last_written::LastWritten,
    /// When each seed Secret version was first seen (see `received.rs`).
    received: Arc<received::Received>,
    /// When each enrollment's current generation was first reconciled: a new or changed
    /// spec is decided from an inventory read after it appeared (an IAM user created
    /// just before the enrollment naming it is seen at once, not after a resync).
    generations: std::sync::Mutex<HashMap<ObjectRef<MfaEnrollment>, (i64, Timestamp)>>,
    /// Bindings (by name, at a resourceVersion) that failed to reach their account as
    /// declared: their enrollments own no user, so they cannot keep a user from others.
    unreachable: std::sync::Mutex<HashMap<String, String>>,
    /// The `Ready` each binding's status was last written with.
    binding_statuses: std::sync::Mutex<HashMap<String, BindingReady>>,
}

impl Context {
    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Next delay of the per-enrollment exponential backoff (1 s doubling to 5 min).
    fn backoff(&self, object: &MfaEnrollment) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(ObjectRef::from(object)).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs((1u64 << (*n - 1).min(9)).min(300))
    }

    /// Waits until the binding and namespace caches have synced (the enrollment cache has:
    /// the controller starts no reconcile before).
    async fn caches_ready(&self) -> Result<()> {
        let mut caches = self.caches.clone();
        match caches.wait_for(|ready| *ready).await {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::WorkFailed("the caches are shutting down".into())),
        }
    }

    fn reconcile_all(&self) {
        // Only fails when the controller is shutting down.
        let _ = self.reconcile_all.unbounded_send(());
    }

    fn remembered_compliant(&self, id: &decide::EnrollmentId) -> Option<BTreeSet<String>> {
        self.compliant.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    fn remember_compliant(&self, id: &decide::EnrollmentId, users: BTreeSet<String>) {
        self.compliant.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), users);
    }

    fn forget_compliant(&self, id: &decide::EnrollmentId) {
        self.compliant.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// The status this operator last wrote for `object`, else the one the cache holds.
    fn last_status(&self, object: &MfaEnrollment) -> Option<MfaEnrollmentStatus> {
        self.statuses.last(object)
    }

    fn remember_status(&self, object: &MfaEnrollment, status: MfaEnrollmentStatus) {
        self.statuses.remember(object, status);
    }

    fn forget_status(&self, object: &MfaEnrollment) {
        self.statuses.forget(object);
    }

    /// When this operator first reconciled `object`'s current generation.
    fn generation_seen(&self, object: &MfaEnrollment) -> Timestamp {
        let generation = object.metadata.generation.unwrap_or_default();
        let mut seen = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.now();
        let entry = seen.entry(ObjectRef::from(object)).or_insert((generation, now));
        if entry.0 != generation {
            *entry = (generation, now);
        }
        entry.1
    }

    fn forget_generation(&self, object: &MfaEnrollment) {
        self.generations.lock().unwrap_or_else(|p| p.into_inner()).remove(&ObjectRef::from(object));
    }

    /// Whether this operator already wrote exactly this `Ready` for the binding.
    fn binding_written(&self, name: &str, generation: Option<i64>, ready: bool, message: &str) -> bool {
        let written = self.binding_statuses.lock().unwrap_or_else(|p| p.into_inner());
        written.get(name).is_some_and(|(g, r, m)| *g == generation && *r == ready && m == message)
    }

    fn remember_binding(&self, name: &str, generation: Option<i64>, ready: bool, message: &str) {
        let mut written = self.binding_statuses.lock().unwrap_or_else(|p| p.into_inner());
        written.insert(name.to_owned(), (generation, ready, message.to_owned()));
    }

    fn note_unreachable(&self, binding: &MfaAccountBinding, failed: bool) {
        let mut unreachable = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        let name = binding.name_any();
        if failed {
            unreachable.insert(name, binding.resource_version().unwrap_or_default());
        } else {
            unreachable.remove(&name);
        }
    }

    /// Whether `binding`, as it is now, failed to reach its account.
    fn is_unreachable(&self, binding: &MfaAccountBinding) -> bool {
        let unreachable = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        unreachable.get(&binding.name_any()).is_some_and(|v| Some(v) == binding.resource_version().as_ref())
    }

    fn reset_backoff(&self, object: &MfaEnrollment) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&ObjectRef::from(object));
    }
}

/// What a reconcile trigger must change: anything but the status.
fn not_status_only() -> impl Predicate<MfaEnrollment> {
    let deletion = |e: &MfaEnrollment| Some(u64::from(e.metadata.deletion_timestamp.is_some()));
    predicates::generation
        .combine(predicates::finalizers)
        .combine(predicates::labels)
        .combine(predicates::annotations)
        .combine(deletion)
}

/// Seed Secrets' metadata in each watched namespace, or in every namespace.
pub(crate) fn secret_apis(client: &Client, namespaces: &[String]) -> Vec<Api<PartialObjectMeta<Secret>>> {
    if namespaces.is_empty() {
        return vec![Api::all(client.clone())];
    }
    namespaces.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect()
}

/// The objects a watch saw change after its initial listing.
fn changes<K: Send + 'static>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static {
    events.filter_map(|event| {
        futures::future::ready(match event {
            Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) => Some(Ok(object)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
    })
}

/// Bindings whose spec changed, or that were deleted, after the initial listing (the
/// operator's own status writes on them trigger nothing).
fn spec_changes(
    events: impl futures::Stream<Item = Result<watcher::Event<MfaAccountBinding>, watcher::Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<MfaAccountBinding, watcher::Error>> + Send + 'static {
    let mut generations: HashMap<String, Option<i64>> = HashMap::new();
    events.filter_map(move |event| {
        let change = match event {
            Ok(watcher::Event::InitApply(binding)) => {
                generations.insert(binding.name_any(), binding.metadata.generation);
                None
            }
            Ok(watcher::Event::Apply(binding)) => {
                let previous = generations.insert(binding.name_any(), binding.metadata.generation);
                (previous != Some(binding.metadata.generation)).then_some(Ok(binding))
            }
            Ok(watcher::Event::Delete(binding)) => {
                generations.remove(&binding.name_any());
                Some(Ok(binding))
            }
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(change)
    })
}

/// Aborts the task when dropped (the controller stopped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the controller until `shutdown` resolves (SIGTERM, or leadership lost), telling
/// `health` where it is.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    // A new leader is no longer a standby: not ready until its cache has synced.
    health.starting();
    // One namespace: watched there. Several: watched cluster-wide (reading MfaEnrollments
    // is not sensitive) and kept only when in one of them.
    let enrollments: Api<MfaEnrollment> = match config.namespaces.as_slice() {
        [one] => Api::namespaced(client.clone(), one),
        _ => Api::all(client.clone()),
    };
    let served = config.namespaces.clone();
    let enrollment_events = watcher(enrollments, watcher::Config::default().any_semantic()).filter(move |event| {
        let keep = match event {
            Ok(watcher::Event::Apply(e) | watcher::Event::Delete(e) | watcher::Event::InitApply(e)) => {
                served.is_empty() || e.namespace().is_some_and(|ns| served.contains(&ns))
            }
            _ => true,
        };
        futures::future::ready(keep)
    });
    let received = Arc::new(received::Received::default());
    let noted = received.clone();
    // The cache sees every change; reconciles are triggered only by changes a person or
    // the apiserver makes to the object (spec, metadata, deletion), never by the
    // operator's own status writes: a failure written into status would otherwise start
    // the next reconcile at once and defeat the backoff (a hot loop under IAM faults).
    let (store, writer) = reflector::store();
    let triggers = reflector(writer, enrollment_events)
        .applied_objects()
        .predicate_filter(not_status_only(), PredicateConfig::default());
    // Bindings and namespace labels decide what an enrollment may do: a change to either
    // (after the initial listing; every enrollment is reconciled at start anyway)
    // reconciles the enrollments it concerns.
    let (bindings, binding_writer) = reflector::store();
    let binding_changes = spec_changes(reflector(
        binding_writer,
        watcher(Api::<MfaAccountBinding>::all(client.clone()), watcher::Config::default().any_semantic()),
    ));
    let (namespaces, namespace_writer) = reflector::store();
    let namespace_changes = changes(reflector(
        namespace_writer,
        watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), watcher::Config::default().any_semantic()),
    ))
    .predicate_filter(predicates::labels, PredicateConfig::default());
    // kube's Store::wait_until_ready wakes only the last of several concurrent waiters
    // (a oneshot channel underneath): one task waits for the grant caches, and reconciles
    // wait on a watch channel, which wakes them all.
    let (caches_tx, caches) = tokio::sync::watch::channel(false);
    let grant_caches = (bindings.clone(), namespaces.clone());
    let caches_task = tokio::spawn(async move {
        if futures::future::try_join(grant_caches.0.wait_until_ready(), grant_caches.1.wait_until_ready()).await.is_ok()
        {
            let _ = caches_tx.send(true);
        }
        // Keep the sender: dropping it would read as "shutting down" to the waiters.
        caches_tx.closed().await;
    });
    let _stop_caches_task = AbortOnDrop(caches_task);
    let (by_binding, by_namespace) = (store.clone(), store.clone());
    let mut controller = Controller::for_stream(triggers, store)
        .watches_stream(binding_changes, move |binding: MfaAccountBinding| {
            let name = binding.name_any();
            by_binding
                .state()
                .iter()
                .filter(|e| e.spec.account_ref.as_ref().is_some_and(|r| r.name == name))
                .map(|e| ObjectRef::from(e.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(namespace_changes, move |namespace: PartialObjectMeta<Namespace>| {
            let name = namespace.name_any();
            by_namespace
                .state()
                .iter()
                .filter(|e| e.namespace().as_deref() == Some(name.as_str()))
                .map(|e| ObjectRef::from(e.as_ref()))
                .collect::<Vec<_>>()
        });
    // Seed Secrets are watched as metadata only, in the watched namespaces (never
    // cluster-wide when namespaces are given): a code submission changes the object, which
    // is all the trigger needs, and no seed sits in the operator's memory.
    for secrets in secret_apis(&client, &config.namespaces) {
        let noted = noted.clone();
        controller = controller.watches(
            secrets,
            watcher::Config::default().labels(&seed_secret::managed_selector()),
            move |secret| {
                // The owner names the enrollment even when its name is too long for a label.
                let namespace = secret.namespace()?;
                if let Some(version) = secret.resource_version() {
                    noted.note(&namespace, &secret.name_any(), &version, Timestamp::now());
                }
                let owner =
                    secret.owner_references().iter().find(|o| o.kind == "MfaEnrollment").map(|o| o.name.clone());
                let enrollment = owner.or_else(|| secret.labels().get(seed_secret::LABEL_ENROLLMENT).cloned())?;
                Some(ObjectRef::new(&enrollment).within(&namespace))
            },
        );
    }
    // With one-time links, the records live in the operator's own namespace: a link used
    // on the page changes its record, and the enrollment reconciles at once (the user is
    // Compliant without waiting for a resync).
    if config.links.is_some() {
        let records: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), &config.key_namespace);
        let selector = format!("{}=true", crate::links::LABEL_LINKS);
        controller = controller.watches(records, watcher::Config::default().labels(&selector), |secret| {
            let labels = secret.labels();
            let namespace = labels.get(crate::links::LABEL_ENROLLMENT_NAMESPACE)?;
            let name = labels.get(crate::links::LABEL_ENROLLMENT_NAME)?;
            Some(ObjectRef::new(name).within(namespace))
        });
    }
    let (reconcile_all, reconcile_all_requests) = futures::channel::mpsc::unbounded();
    let controller =
        controller.reconcile_all_on(reconcile_all_requests).trigger_backoff(watch_backoff::watch_backoff());
    let reporter = Reporter { controller: config.reporter.clone(), instance: std::env::var("POD_NAME").ok() };
    let integrity = integrity::load_or_create(client.clone(), &config.key_namespace, &config.key_secret).await?;
    let context = Arc::new(Context {
        integrity,
        recorder: Recorder::new(client.clone(), reporter),
        store: controller.store(),
        bindings,
        namespaces,
        caches,
        client,
        config,
        accounts: Accounts::new(CallCounter::observed(metrics.iam_observer())),
        metrics,
        clock: Timestamp::now,
        reconcile_all,
        failures: std::sync::Mutex::default(),
        compliant: std::sync::Mutex::default(),
        statuses: last_written::LastWritten::default(),
        received,
        generations: std::sync::Mutex::default(),
        unreachable: std::sync::Mutex::default(),
        binding_statuses: std::sync::Mutex::default(),
    });
    tracing::info!(namespaces = ?context.config.namespaces, "controller starting");
    health.syncing();
    let store = context.store.clone();
    let watcher = health.clone();
    let reconcile = move |object, ctx| watcher.watch(reconcile::reconcile(object, ctx));
    let drive = controller.graceful_shutdown_on(shutdown).run(reconcile, reconcile::error_policy, context).for_each(
        |result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(enrollment = %object, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile did not finish"),
            }
        },
    );
    // The loop's beat: silenced when the task driving the controller's streams is blocked
    // (reconciles are tasks of their own, watched by `Health::watch`).
    let beat = async {
        // Beats from the start, so a loop blocked while the cache syncs is noticed too.
        let mut ticks = tokio::time::interval(crate::health::BEAT);
        let mut synced = std::pin::pin!(store.wait_until_ready());
        let mut syncing = true;
        loop {
            tokio::select! {
                ready = &mut synced, if syncing => {
                    syncing = false;
                    if ready.is_ok() {
                        tracing::info!("enrollment cache synced");
                        health.running();
                    }
                }
                _ = ticks.tick() => health.beat(),
            }
        }
    };
    futures::pin_mut!(drive, beat);
    futures::future::select(drive, beat).await;
    health.stopped();
    tracing::info!("controller stopped");
    Ok(())
}

/// A context for unit tests of the reconcile glue (`glue_tests.rs`): `client` talks to a
/// mocked apiserver, the caches hold what the test filled them with and count as synced,
/// the clock stands still, and no controller runs (a request to reconcile every
/// enrollment goes nowhere).
#[cfg(test)]
impl Context {
    pub(crate) fn for_tests(
        client: Client,
        config: Config,
        caches: (Store<MfaEnrollment>, Store<MfaAccountBinding>, Store<PartialObjectMeta<Namespace>>),
        integrity: integrity::IntegrityKey,
        accounts: Accounts,
        clock: fn() -> Timestamp,
    ) -> Self {
        let (store, bindings, namespaces) = caches;
        let reporter = Reporter { controller: config.reporter.clone(), instance: None };
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

#[cfg(test)]
mod glue_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(generation: i64) -> MfaAccountBinding {
        let mut binding: MfaAccountBinding = serde_json::from_value(serde_json::json!({
            "apiVersion": "iam.mfa-operator.dev/v1alpha1", "kind": "MfaAccountBinding",
            "metadata": { "name": "team-a" },
            "spec": { "accountId": "123456789012", "namespaces": { "names": ["a"] }, "users": { "pathPrefixes": ["/"] } },
        }))
        .expect("binding literal");
        binding.metadata.generation = Some(generation);
        binding
    }

    #[test]
    fn a_binding_triggers_on_spec_changes_and_deletion_not_on_status_writes() {
        let events = futures::stream::iter([
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(binding(1))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(binding(1))), // the operator wrote its status
            Ok(watcher::Event::Apply(binding(2))), // the platform team changed the spec
            Ok(watcher::Event::Delete(binding(2))),
        ]);
        let triggered: Vec<Option<i64>> = futures::executor::block_on(
            spec_changes(events).map(|b| b.expect("no error").metadata.generation).collect(),
        );
        assert_eq!(triggered, [Some(2), Some(2)], "the change, then the deletion");
    }
}
