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
mod context;
pub mod decide;
mod gather;
pub mod grant;
pub mod integrity;
mod last_written;
mod outcome;
mod page_grant;
mod publish;
mod reach;
mod received;
mod reconcile;
pub mod render;
pub mod seed_secret;
pub mod selection;
pub mod vocabulary;
mod watch_backoff;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, reflector};
use kube::runtime::{Controller, Predicate, PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Client, ResourceExt};

use crate::aws::CallCounter;
use crate::crd::{MfaAccountBinding, MfaEnrollment};
use crate::health::Health;
use crate::metrics::Metrics;

pub use accounts::{AccountKey, Accounts};
pub use context::{Config, Context, Error, FIELD_MANAGER, FINALIZER, LinkService, PageGrants, Result};
pub(crate) use gather::secret_apis;
pub use page_grant::{PageReach, for_link};

/// What a reconcile trigger must change: anything but the status.
fn not_status_only() -> impl Predicate<MfaEnrollment> {
    let deletion = |e: &MfaEnrollment| Some(u64::from(e.metadata.deletion_timestamp.is_some()));
    predicates::generation
        .combine(predicates::finalizers)
        .combine(predicates::labels)
        .combine(predicates::annotations)
        .combine(deletion)
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
/// Empties the page's grant slot when the controller stops (also when its future is
/// dropped): the Context it holds goes with it.
struct ClearOnDrop(Option<PageGrants>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        if let Some(PageGrants(slot)) = &self.0 {
            slot.clear();
        }
    }
}

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
        // Only a link used on the page triggers: every other write to a record Secret is
        // the controller's own (an undelivered link's record comes and goes at once, and
        // a reconcile for each would retry the delivery without pause).
        let used = |secret: &PartialObjectMeta<Secret>| {
            let last_used = secret.annotations().get(crate::links::kube::ANNOTATION_LAST_USED)?;
            let mut hasher = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(last_used, &mut hasher);
            Some(std::hash::Hasher::finish(&hasher))
        };
        let records = watcher(records, watcher::Config::default().labels(&selector))
            .default_backoff()
            .touched_objects()
            .predicate_filter(used, PredicateConfig::default());
        controller = controller.watches_stream(records, |secret| {
            let labels = secret.labels();
            if let (Some(namespace), Some(name)) =
                (labels.get(crate::links::LABEL_ENROLLMENT_NAMESPACE), labels.get(crate::links::LABEL_ENROLLMENT_NAME))
            {
                return Some(ObjectRef::new(name).within(namespace));
            }
            // Names too long for a label are in the annotation, `namespace/name`.
            let (namespace, name) =
                secret.annotations().get(crate::links::kube::ANNOTATION_ENROLLMENT)?.split_once('/')?;
            Some(ObjectRef::new(name).within(namespace))
        });
    }
    let (reconcile_all, reconcile_all_requests) = futures::channel::mpsc::unbounded();
    let controller =
        controller.reconcile_all_on(reconcile_all_requests).trigger_backoff(watch_backoff::watch_backoff());
    let reporter = Reporter { controller: config.reporter.clone(), instance: std::env::var("POD_NAME").ok() };
    let integrity = context::load_integrity_key(client.clone(), &config.key_namespace, &config.key_secret).await?;
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
    // The page acts for links through this controller while it runs (and not after).
    let page_grants = context.config.page_grants.clone();
    if let Some(PageGrants(slot)) = &page_grants {
        slot.set(Arc::new(crate::links::page_accounts::ControllerGrants(context.clone())));
    }
    let _clear_grants = ClearOnDrop(page_grants);
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
