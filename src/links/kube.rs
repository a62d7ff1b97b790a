//! [`KubeLinks`]: the production [`Links`] (what the controller calls) and
//! [`LinkStore`] (what the enrollment page opens), one value serving both.
//!
//! ## Where records live
//!
//! In Secrets the operator owns **in its own namespace**, one per enrollment:
//! `mfa-links-<enrollment uid>`, type `iam.mfa-operator.dev/links`, labelled
//! `app.kubernetes.io/managed-by: mfa-operator` and `iam.mfa-operator.dev/links: "true"`,
//! with one key, `records.json`: link id -> `{digest, purpose, mintedAt, expiresAt,
//! usedAt}`. Never in a tenant namespace: a tenant who may write Secrets there could plant
//! a record (a digest of a token they chose, for any user) or clear `usedAt`. No token
//! is ever stored or logged: a record holds a SHA-256 digest bound to its purpose
//! ([`crate::link`]).
//!
//! Writes are read-modify-write under optimistic concurrency: a replace carries the
//! resourceVersion it read, and a conflict (409) reads again, up to [`ATTEMPTS`] times.
//! [`LinkStore::mark_used`] is therefore a compare-and-set: of two windows (or two
//! replicas) marking one link, the second reads `usedAt` set and gets
//! [`MarkError::AlreadyUsed`].
//!
//! ## Finding a record by link id
//!
//! The page knows only the link id, not the enrollment. Listing every link Secret per
//! request would let anyone with a browser make the operator list Secrets, so an index
//! maps link id -> Secret name, kept three ways:
//! - every write this process makes updates it at once (the leader's sends are visible to
//!   its own page before the apiserver's watch event arrives);
//! - [`KubeLinks::run_index`] watches the labelled Secrets of the operator's namespace
//!   (a kube-runtime watcher: an initial list, then changes, re-listing after a broken
//!   watch), so a replica that wrote nothing (the page on a standby, or any replica after
//!   a restart) learns every link within the watch's delay;
//! - a miss falls back to listing the link Secrets once more, at most once per
//!   [`RELIST_EVERY`] whatever the request rate (misses meanwhile share that listing), so a
//!   record written a moment ago by another replica is still found, and a flood of made-up
//!   ids costs one LIST per interval.
//!
//! The index says only *where* a record is: the record itself is read from the apiserver
//! (one GET of one Secret) on every lookup, so a revocation or a use by another replica
//! counts at once, not after a watch event.
//!
//! ## Replicas
//!
//! Only the leader runs the controller, so only the leader sends and revokes; the page
//! may run on every replica and reads the same Secrets. Device creation happens only
//! where the page can reach the account (see `page_accounts.rs`), and
//! [`Links::held_devices`] answers with the page sessions of this process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt};
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use serde::{Deserialize, Serialize};

use super::{Channel, LABEL_ENROLLMENT_NAME, LABEL_ENROLLMENT_NAMESPACE, Links, Outgoing, SendError, Sent};
use crate::delivery::{Delivery, LinkUrl, Recipient, address_from_tags};
use crate::enroll_page::{LinkStore, MarkError, StoreError};
use crate::link::{self, LINK_ID_BYTES, LinkId, Purpose, Record, TOKEN_BYTES};

/// Prefix of a link Secret's name; the enrollment's uid follows.
pub const SECRET_PREFIX: &str = "mfa-links-";
/// Type of the link Secrets.
pub const SECRET_TYPE: &str = "iam.mfa-operator.dev/links";
/// Label every link Secret carries (value `"true"`); the index watches by it.
pub use super::LABEL_LINKS;
/// Label of everything the operator manages.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Annotation naming the enrollment (`namespace/name`), for people reading the Secret.
pub const ANNOTATION_ENROLLMENT: &str = "iam.mfa-operator.dev/enrollment";
/// Annotation on a link Secret: when one of its links was last used (the controller's
/// watch reconciles the enrollment when it changes, and on nothing else).
pub const ANNOTATION_LAST_USED: &str = "iam.mfa-operator.dev/last-used";
/// The Secret's one data key.
pub const RECORDS_KEY: &str = "records.json";
/// How often a write is tried when others write the same Secret meanwhile.
pub const ATTEMPTS: usize = 5;
/// Least time between two listings after index misses.
pub const RELIST_EVERY: Duration = Duration::from_secs(2);

/// The label selector of the link Secrets.
pub fn selector() -> String {
    format!("{LABEL_LINKS}=true,{LABEL_MANAGED_BY}=mfa-operator")
}

/// The Secret holding the links of the enrollment `uid`, if `uid` can name one (a
/// Kubernetes uid always can: lower-case hex and dashes).
pub fn secret_name(uid: &str) -> Option<String> {
    let fits = !uid.is_empty()
        && uid.len() <= 253 - SECRET_PREFIX.len()
        && uid.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !uid.ends_with('-');
    fits.then(|| format!("{SECRET_PREFIX}{uid}"))
}

/// Whether `value` may be a label value: at most 63 characters, alphanumerics, `-`, `_`
/// and `.`, starting and ending with an alphanumeric (an enrollment's name may be longer).
fn is_label_value(value: &str) -> bool {
    let edges = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    value.len() <= 63
        && edges(value.chars().next())
        && edges(value.chars().last())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

// ---------------------------------------------------------------------------------------
// The stored form (a mirror of `link::Record`, kept here so the record type stays free of
// serde and the stored shape changes only on purpose).

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredPurpose {
    account: String,
    user: String,
    enrollment_uid: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredRecord {
    digest: String,
    purpose: StoredPurpose,
    minted_at: Timestamp,
    expires_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    used_at: Option<Timestamp>,
}

impl From<&Record> for StoredRecord {
    fn from(r: &Record) -> Self {
        Self {
            digest: r.digest.clone(),
            purpose: StoredPurpose {
                account: r.purpose.account.clone(),
                user: r.purpose.user.clone(),
                enrollment_uid: r.purpose.enrollment_uid.clone(),
            },
            minted_at: r.minted_at,
            expires_at: r.expires_at,
            used_at: r.used_at,
        }
    }
}

impl From<StoredRecord> for Record {
    fn from(r: StoredRecord) -> Self {
        Self {
            digest: r.digest,
            purpose: Purpose {
                account: r.purpose.account,
                user: r.purpose.user,
                enrollment_uid: r.purpose.enrollment_uid,
            },
            minted_at: r.minted_at,
            expires_at: r.expires_at,
            used_at: r.used_at,
        }
    }
}

/// The records of one enrollment's Secret, by link id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records(BTreeMap<LinkId, Record>);

impl Records {
    /// Parses `records.json`. Entries whose id is not a link id, or that name another
    /// enrollment than `uid` (the Secret's), are dropped: a record counts only in the
    /// Secret of its own enrollment.
    pub fn decode(json: &[u8], uid: &str) -> Result<Self, String> {
        let stored: BTreeMap<String, StoredRecord> =
            serde_json::from_slice(json).map_err(|e| format!("{RECORDS_KEY} does not parse: {e}"))?;
        let records = stored
            .into_iter()
            .filter_map(|(id, record)| Some((LinkId::parse(&id)?, Record::from(record))))
            .filter(|(_, record)| record.purpose.enrollment_uid == uid)
            .collect();
        Ok(Self(records))
    }

    /// `records.json`.
    pub fn encode(&self) -> Vec<u8> {
        let stored: BTreeMap<&str, StoredRecord> =
            self.0.iter().map(|(id, record)| (id.as_str(), StoredRecord::from(record))).collect();
        serde_json::to_vec(&stored).expect("records serialise")
    }

    /// The records of `secret` (none when it has no `records.json`).
    fn of(secret: &Secret, uid: &str) -> Result<Self, String> {
        match secret.data.as_ref().and_then(|d| d.get(RECORDS_KEY)) {
            Some(bytes) => Self::decode(&bytes.0, uid),
            None => Ok(Self::default()),
        }
    }

    pub fn get(&self, id: &LinkId) -> Option<&Record> {
        self.0.get(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &LinkId> {
        self.0.keys()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `record` under `id`, dropping every earlier record of the same user: one live
    /// link per user per enrollment.
    pub fn replace(&mut self, id: LinkId, record: Record) {
        self.0.retain(|_, r| r.purpose.user != record.purpose.user);
        self.0.insert(id, record);
    }

    /// Marks `id` used at `at` unless it is used already.
    pub fn mark_used(&mut self, id: &LinkId, at: Timestamp) -> Result<(), MarkError> {
        match self.0.get_mut(id) {
            None => Err(MarkError::Missing),
            Some(record) if record.used_at.is_some() => Err(MarkError::AlreadyUsed),
            Some(record) => {
                record.used_at = Some(at);
                Ok(())
            }
        }
    }

    /// Drops the records of `users`; whether any was dropped.
    /// When a link of these records was last used.
    pub fn last_used(&self) -> Option<Timestamp> {
        self.0.values().filter_map(|r| r.used_at).max()
    }

    pub fn remove_users(&mut self, users: &BTreeSet<String>) -> bool {
        let before = self.0.len();
        self.0.retain(|_, r| !users.contains(&r.purpose.user));
        self.0.len() != before
    }

    /// Drops `id` if its record still has `digest` (nobody replaced it meanwhile).
    pub fn remove_if(&mut self, id: &LinkId, digest: &str) -> bool {
        if self.0.get(id).is_some_and(|r| r.digest == digest) {
            self.0.remove(id);
            return true;
        }
        false
    }

    /// By user: the newest record of each.
    pub fn by_user(&self) -> BTreeMap<String, Record> {
        let mut users: BTreeMap<String, Record> = BTreeMap::new();
        for record in self.0.values() {
            let newer = users.get(&record.purpose.user).is_none_or(|r| r.minted_at <= record.minted_at);
            if newer {
                users.insert(record.purpose.user.clone(), record.clone());
            }
        }
        users
    }
}

// ---------------------------------------------------------------------------------------
// The index: link id -> Secret name.

#[derive(Debug, Default)]
struct Index {
    by_id: HashMap<LinkId, String>,
    by_secret: HashMap<String, BTreeSet<LinkId>>,
    /// Built from a whole listing (the watch's or a relist): a Secret it lacks does not
    /// exist, give or take the watch's lag.
    listed: bool,
}

impl Index {
    fn set(&mut self, secret: &str, ids: BTreeSet<LinkId>) {
        if let Some(old) = self.by_secret.remove(secret) {
            for id in old {
                if self.by_id.get(&id).is_some_and(|s| s == secret) {
                    self.by_id.remove(&id);
                }
            }
        }
        for id in &ids {
            self.by_id.insert(id.clone(), secret.to_owned());
        }
        if !ids.is_empty() {
            self.by_secret.insert(secret.to_owned(), ids);
        }
    }

    fn remove_secret(&mut self, secret: &str) {
        self.set(secret, BTreeSet::new());
    }

    /// Whether the Secret `name` surely holds no link (the index is listed and lacks it).
    fn knows_none(&self, secret: &str) -> bool {
        self.listed && !self.by_secret.contains_key(secret)
    }

    fn from_secrets<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        let mut index = Self { listed: true, ..Self::default() };
        for secret in secrets {
            if let Some((name, ids)) = ids_of(secret) {
                index.set(&name, ids);
            }
        }
        index
    }
}

/// The name of a link Secret and its link ids (`None` for any other Secret).
fn ids_of(secret: &Secret) -> Option<(String, BTreeSet<LinkId>)> {
    let name = secret.metadata.name.clone()?;
    let uid = name.strip_prefix(SECRET_PREFIX)?;
    let ids = Records::of(secret, uid).map(|r| r.ids().cloned().collect()).unwrap_or_default();
    Some((name, ids))
}

// ---------------------------------------------------------------------------------------

/// Where [`Links::held_devices`] asks: the page's open setups.
pub trait PendingDevices: Send + Sync {
    fn pending_devices(&self) -> Vec<String>;
}

impl<A: crate::enroll_page::Accounts, S: LinkStore> PendingDevices for crate::enroll_page::EnrollPage<A, S> {
    fn pending_devices(&self) -> Vec<String> {
        crate::enroll_page::EnrollPage::pending_devices(self)
    }
}

/// How [`KubeLinks`] delivers and what it puts in links.
#[derive(Clone)]
pub struct LinksConfig {
    /// The operator's own namespace: where the link Secrets live.
    pub namespace: String,
    /// The page's public URL (`https://mfa.example.com`).
    pub public_url: String,
    /// The IAM user tag with the person's e-mail address.
    pub address_tag: String,
    /// E-mail delivery, when configured (`SmtpDelivery`).
    pub email: Option<Arc<dyn Delivery>>,
    /// Webhook delivery, when configured (`WebhookDelivery`).
    pub webhook: Option<Arc<dyn Delivery>>,
}

impl std::fmt::Debug for LinksConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinksConfig")
            .field("namespace", &self.namespace)
            .field("public_url", &self.public_url)
            .field("address_tag", &self.address_tag)
            .field("email", &self.email.is_some())
            .field("webhook", &self.webhook.is_some())
            .finish()
    }
}

/// Links kept in the operator's own Secrets, delivered by e-mail or webhook. Cloning
/// shares everything (the controller's `Arc<dyn Links>` and the page's store are clones).
#[derive(Clone)]
pub struct KubeLinks {
    inner: Arc<Inner>,
}

struct Inner {
    api: Api<Secret>,
    config: LinksConfig,
    index: RwLock<Index>,
    /// When a miss last listed the Secrets; held across the listing so misses share it.
    relisted: tokio::sync::Mutex<Option<Instant>>,
    page: OnceLock<Weak<dyn PendingDevices>>,
    /// One write at a time per Secret in this process: the controller sends the links of
    /// many users of one enrollment at once, and without this they would mostly conflict
    /// with each other. Conflicts with other replicas (a page marking a link used) are
    /// left to the resourceVersion check.
    writing: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The last read of each Secret the page looked up (see [`KubeLinks::recent`]).
    reads: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<RecentRead>>>>,
}

/// The last read of a link Secret for the page: when it started, and its records
/// (`Some(None)`: no such Secret).
#[derive(Default)]
struct RecentRead {
    started: Option<Instant>,
    records: Option<Option<Arc<Records>>>,
}

impl std::fmt::Debug for KubeLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeLinks").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

fn store_error(action: &str) -> impl FnOnce(kube::Error) -> String + '_ {
    move |e| format!("{action} link Secret: {e}")
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == code)
}

impl KubeLinks {
    /// Links over `client`'s Secrets in `config.namespace`. Start [`Self::run_index`]
    /// beside it.
    pub fn new(client: kube::Client, config: LinksConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                api: Api::namespaced(client, &config.namespace),
                config,
                index: RwLock::default(),
                relisted: tokio::sync::Mutex::new(None),
                page: OnceLock::new(),
                writing: std::sync::Mutex::default(),
                reads: std::sync::Mutex::default(),
            }),
        }
    }

    /// Answers [`Links::held_devices`] from `page`'s open setups. The page holds these
    /// links as its store, so only a weak reference is kept here. Only the first call counts.
    pub fn hold_devices_of<P: PendingDevices + 'static>(&self, page: &Arc<P>) {
        let weak: Weak<dyn PendingDevices> = Arc::downgrade(page) as Weak<dyn PendingDevices>;
        let _ = self.inner.page.set(weak);
    }

    fn index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.inner.index.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn indexed(&self, id: &LinkId) -> Option<String> {
        self.inner.index.read().unwrap_or_else(std::sync::PoisonError::into_inner).by_id.get(id).cloned()
    }

    /// Keeps the index in step with the link Secrets until dropped (spawn it; it never
    /// returns while the process runs, retrying a broken watch with backoff).
    pub async fn run_index(self) {
        let config = watcher::Config::default().labels(&selector());
        let mut events = std::pin::pin!(watcher(self.inner.api.clone(), config).default_backoff());
        let mut listing: Option<Vec<Secret>> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => listing = Some(Vec::new()),
                Ok(watcher::Event::InitApply(secret)) => listing.get_or_insert_with(Vec::new).push(secret),
                Ok(watcher::Event::InitDone) => {
                    let fresh = Index::from_secrets(listing.take().unwrap_or_default().iter());
                    *self.index() = fresh;
                }
                Ok(watcher::Event::Apply(secret)) => {
                    if let Some((name, ids)) = ids_of(&secret) {
                        self.index().set(&name, ids);
                    }
                }
                Ok(watcher::Event::Delete(secret)) => {
                    if let Some(name) = secret.metadata.name.as_deref() {
                        self.index().remove_secret(name);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watching the link Secrets failed; retrying"),
            }
        }
    }

    /// Lists the link Secrets into the index, at most once per [`RELIST_EVERY`]: a miss
    /// waits for the next window, and the misses meanwhile share that listing.
    async fn relist(&self) -> Result<(), StoreError> {
        let missed = Instant::now();
        let mut last = self.inner.relisted.lock().await;
        match *last {
            // A listing that started after this miss saw what the miss looks for.
            Some(at) if at >= missed => return Ok(()),
            // One listing per RELIST_EVERY: wait for the window rather than answer "no
            // such link" for a link minted a moment ago on another replica. The misses
            // queued behind this one share the listing it makes.
            Some(at) => tokio::time::sleep(RELIST_EVERY.saturating_sub(at.elapsed())).await,
            None => {}
        }
        *last = Some(Instant::now());
        let listed = self
            .inner
            .api
            .list(&ListParams::default().labels(&selector()))
            .await
            .map_err(|e| StoreError(store_error("list")(e)))?;
        *self.index() = Index::from_secrets(listed.items.iter());
        Ok(())
    }

    /// The Secret `name` and its records (`None`: no such Secret).
    async fn read(&self, name: &str, uid: &str) -> Result<Option<(Secret, Records)>, String> {
        let Some(secret) = self.inner.api.get_opt(name).await.map_err(store_error("read"))? else {
            return Ok(None);
        };
        let records = Records::of(&secret, uid)?;
        Ok(Some((secret, records)))
    }

    /// Applies `change` to the records of enrollment `uid`, creating the Secret when
    /// `create` is set (as `enrollment` for its annotation), deleting it when no record
    /// is left; retried on conflicts. `change` returns `Ok(false)` for "nothing to write".
    async fn update<T>(
        &self,
        uid: &str,
        create: Option<&str>,
        mut change: impl FnMut(&mut Records) -> Result<(bool, T), T>,
    ) -> Result<T, UpdateError<T>> {
        let name = secret_name(uid).ok_or_else(|| UpdateError::Store(format!("{uid:?} is not an enrollment uid")))?;
        let lock = {
            let mut writing = self.inner.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Locks nobody holds or waits for are dropped, so the map stays as small as
            // the writes in flight.
            writing.retain(|_, lock| Arc::strong_count(lock) > 1);
            writing.entry(name.clone()).or_default().clone()
        };
        let _writing = lock.lock().await;
        for _ in 0..ATTEMPTS {
            let read = self.read(&name, uid).await.map_err(UpdateError::Store)?;
            let (secret, mut records) = match read {
                Some(found) => found,
                None if create.is_some() => (self.blank(&name, create.unwrap_or_default()), Records::default()),
                None => {
                    let mut none = Records::default();
                    return match change(&mut none) {
                        Ok((_, value)) => Ok(value),
                        Err(refused) => Err(UpdateError::Refused(refused)),
                    };
                }
            };
            let value = match change(&mut records) {
                Ok((false, value)) => return Ok(value),
                Ok((true, value)) => value,
                Err(refused) => return Err(UpdateError::Refused(refused)),
            };
            let written = if records.is_empty() && secret.metadata.resource_version.is_some() {
                let preconditions =
                    Preconditions { resource_version: secret.metadata.resource_version.clone(), uid: None };
                let params = DeleteParams { preconditions: Some(preconditions), ..DeleteParams::default() };
                match self.inner.api.delete(&name, &params).await {
                    Ok(_) => Ok(()),
                    Err(e) if is_status(&e, 404) => Ok(()),
                    Err(e) => Err(e),
                }
            } else if records.is_empty() {
                Ok(())
            } else {
                let mut secret = secret;
                secret.data = Some(BTreeMap::from([(RECORDS_KEY.to_owned(), ByteString(records.encode()))]));
                // What the controller's watch reacts to: a link used on the page (and not
                // every write: an undelivered link's record comes and goes at once, and a
                // reconcile for each would retry the delivery in a loop).
                let annotations = secret.metadata.annotations.get_or_insert_with(BTreeMap::new);
                match records.last_used() {
                    Some(at) => annotations.insert(ANNOTATION_LAST_USED.to_owned(), at.to_string()),
                    None => annotations.remove(ANNOTATION_LAST_USED),
                };
                if secret.metadata.resource_version.is_some() {
                    self.inner.api.replace(&name, &PostParams::default(), &secret).await.map(|_| ())
                } else {
                    self.inner.api.create(&PostParams::default(), &secret).await.map(|_| ())
                }
            };
            match written {
                Ok(()) => {
                    self.index().set(&name, records.ids().cloned().collect());
                    return Ok(value);
                }
                // Someone wrote meanwhile (409), or created it first (409 on create):
                // read again.
                Err(e) if is_status(&e, 409) => continue,
                Err(e) => return Err(UpdateError::Store(store_error("write")(e))),
            }
        }
        Err(UpdateError::Store(format!("link Secret {name} kept changing; gave up after {ATTEMPTS} attempts")))
    }

    /// A new link Secret for `enrollment` (`namespace/name`): labelled with the
    /// enrollment's namespace and name (the controller maps a change back to it) when
    /// they fit in a label value, annotated with `namespace/name` always.
    fn blank(&self, name: &str, enrollment: &str) -> Secret {
        let mut labels = BTreeMap::from([
            (LABEL_LINKS.to_owned(), "true".to_owned()),
            (LABEL_MANAGED_BY.to_owned(), "mfa-operator".to_owned()),
        ]);
        if let Some((namespace, enrollment_name)) = enrollment.split_once('/') {
            for (key, value) in [(LABEL_ENROLLMENT_NAMESPACE, namespace), (LABEL_ENROLLMENT_NAME, enrollment_name)] {
                if is_label_value(value) {
                    labels.insert(key.to_owned(), value.to_owned());
                }
            }
        }
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(self.inner.config.namespace.clone()),
                labels: Some(labels),
                annotations: Some(BTreeMap::from([(ANNOTATION_ENROLLMENT.to_owned(), enrollment.to_owned())])),
                ..ObjectMeta::default()
            },
            type_: Some(SECRET_TYPE.to_owned()),
            ..Secret::default()
        }
    }

    async fn deliver(&self, outgoing: &Outgoing, url: &LinkUrl, expires_at: Timestamp) -> Result<(), SendError> {
        let config = &self.inner.config;
        let (delivery, address) = match outgoing.channel {
            Channel::Manual => return Ok(()),
            Channel::Email => {
                let delivery = config.email.as_ref().ok_or_else(|| {
                    SendError::NotConfigured("e-mail delivery is not configured (no --smtp-host)".into())
                })?;
                let address = address_from_tags(&outgoing.tags, &config.address_tag)
                    .map_err(|e| SendError::NoAddress(e.to_string()))?;
                (delivery, Some(address))
            }
            Channel::Webhook => {
                let delivery = config.webhook.as_ref().ok_or_else(|| {
                    SendError::NotConfigured("webhook delivery is not configured (no --webhook-url-file)".into())
                })?;
                (delivery, None)
            }
        };
        let recipient = Recipient {
            user: outgoing.purpose.user.clone(),
            account_id: outgoing.purpose.account.clone(),
            account_alias: outgoing.account_alias.clone(),
            expires_at,
            address,
        };
        delivery.deliver(url, &recipient).await.map_err(|e| match e {
            crate::delivery::DeliveryError::NoAddress(e) => SendError::NoAddress(e.to_string()),
            // The error holds no link (delivery scrubs it).
            e => SendError::Failed(e.to_string()),
        })
    }

    /// Mints a link for `outgoing.purpose` and stores its record (replacing the user's
    /// earlier link): the link, its id, what status shows, and the record's digest.
    async fn store_new(&self, outgoing: &Outgoing) -> Result<(LinkId, LinkUrl, Sent, String), SendError> {
        let mut token_bytes = [0; TOKEN_BYTES];
        let mut id_bytes = [0; LINK_ID_BYTES];
        getrandom::fill(&mut token_bytes)
            .and_then(|()| getrandom::fill(&mut id_bytes))
            .map_err(|e| SendError::Failed(format!("no randomness from the operating system: {e}")))?;
        let id = LinkId::new(id_bytes);
        let (token, record) = link::mint(outgoing.purpose.clone(), token_bytes, outgoing.at, outgoing.ttl);
        let sent = Sent { sent_at: record.minted_at, expires_at: record.expires_at };
        let uid = outgoing.purpose.enrollment_uid.clone();
        let digest = record.digest.clone();
        let stored = self
            .update(&uid, Some(&outgoing.enrollment), |records| {
                records.replace(id.clone(), record.clone());
                Ok::<_, ()>((true, ()))
            })
            .await;
        stored.map_err(|e| SendError::Failed(e.message()))?;
        let url = LinkUrl::new(link::url(&self.inner.config.public_url, &id, &token));
        Ok((id, url, sent, digest))
    }

    /// Mints a link and hands it to the caller instead of delivering it (`kubectl mfa
    /// link`: an administrator gives it to a person without an address).
    pub async fn mint_for_admin(&self, outgoing: Outgoing) -> Result<(LinkUrl, Sent), SendError> {
        let (id, url, sent, _) = self.store_new(&outgoing).await?;
        tracing::info!(link = %id, user = %outgoing.purpose.user, enrollment = %outgoing.enrollment, "minted an enrollment link for an administrator");
        Ok((url, sent))
    }

    async fn send_link(&self, outgoing: Outgoing) -> Result<Sent, SendError> {
        // What needs no I/O first: an unconfigured channel or a missing address stores
        // nothing.
        match outgoing.channel {
            Channel::Email if self.inner.config.email.is_none() => {
                return Err(SendError::NotConfigured("e-mail delivery is not configured (no --smtp-host)".into()));
            }
            Channel::Email => {
                address_from_tags(&outgoing.tags, &self.inner.config.address_tag)
                    .map_err(|e| SendError::NoAddress(e.to_string()))?;
            }
            Channel::Webhook if self.inner.config.webhook.is_none() => {
                return Err(SendError::NotConfigured(
                    "webhook delivery is not configured (no --webhook-url-file)".into(),
                ));
            }
            Channel::Webhook | Channel::Manual => {}
        }
        let (id, url, sent, digest) = self.store_new(&outgoing).await?;
        let uid = outgoing.purpose.enrollment_uid.clone();
        match self.deliver(&outgoing, &url, sent.expires_at).await {
            Ok(()) => {
                tracing::info!(link = %id, user = %outgoing.purpose.user, enrollment = %outgoing.enrollment, channel = ?outgoing.channel, "sent an enrollment link");
                Ok(sent)
            }
            Err(e) => {
                // Nobody received the token: drop the record so the link does not count
                // as sent (the next send mints a new one).
                let dropped =
                    self.update(&uid, None, |records| Ok::<_, ()>((records.remove_if(&id, &digest), ()))).await;
                if let Err(dropped) = dropped {
                    tracing::warn!(link = %id, error = %dropped.message(), "could not drop the record of an undelivered link");
                }
                Err(e)
            }
        }
    }

    /// Whether enrollment `uid` may have link records: `false` only when the listed index
    /// has no Secret of it.
    fn may_have(&self, uid: &str) -> bool {
        let index = self.inner.index.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        secret_name(uid).is_none_or(|name| !index.knows_none(&name))
    }

    async fn records_of(&self, uid: &str) -> Result<BTreeMap<String, Record>, SendError> {
        let name = secret_name(uid).ok_or_else(|| SendError::Failed(format!("{uid:?} is not an enrollment uid")))?;
        match self.read(&name, uid).await.map_err(SendError::Failed)? {
            Some((_, records)) => Ok(records.by_user()),
            None => Ok(BTreeMap::new()),
        }
    }

    async fn revoke_links(&self, uid: &str, users: Option<&BTreeSet<String>>) -> Result<(), SendError> {
        let name = secret_name(uid).ok_or_else(|| SendError::Failed(format!("{uid:?} is not an enrollment uid")))?;
        match users {
            None => match self.inner.api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    self.index().remove_secret(&name);
                    Ok(())
                }
                Err(e) if is_status(&e, 404) => {
                    self.index().remove_secret(&name);
                    Ok(())
                }
                Err(e) => Err(SendError::Failed(store_error("delete")(e))),
            },
            Some(users) => self
                .update(uid, None, |records| Ok::<_, ()>((records.remove_users(users), ())))
                .await
                .map_err(|e| SendError::Failed(e.message())),
        }
    }

    /// The Secret name of `id`: from the index, else from a fresh listing.
    async fn locate(&self, id: &LinkId) -> Result<Option<String>, StoreError> {
        if let Some(name) = self.indexed(id) {
            return Ok(Some(name));
        }
        self.relist().await?;
        Ok(self.indexed(id))
    }

    async fn get_record(&self, id: &LinkId) -> Result<Option<Record>, StoreError> {
        let Some(name) = self.locate(id).await? else { return Ok(None) };
        let records = self.recent(&name).await?;
        Ok(records.and_then(|records| records.get(id).cloned()))
    }

    /// The records of Secret `name`, from a read that started after this call did. Many
    /// people open links of one enrollment at once (a rollout's mail goes out together):
    /// the requests that arrive while a read is on its way share the next one, instead of
    /// each holding a copy of every record (1,000 openings of a 1,000-link enrollment
    /// held 1,000 copies, +138 MiB). Never older than the request: a use or a revocation
    /// on another replica is seen at once.
    async fn recent(&self, name: &str) -> Result<Option<Arc<Records>>, StoreError> {
        let arrived = Instant::now();
        let slot = {
            let mut reads = self.inner.reads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Slots nobody holds or waits for are dropped: the map stays as small as the
            // lookups in flight.
            reads.retain(|_, slot| Arc::strong_count(slot) > 1);
            reads.entry(name.to_owned()).or_default().clone()
        };
        let mut read = slot.lock().await;
        if let (Some(started), Some(records)) = (read.started, &read.records)
            && started >= arrived
        {
            return Ok(records.clone());
        }
        let started = Instant::now();
        let uid = name.strip_prefix(SECRET_PREFIX).unwrap_or_default();
        let records = self.read(name, uid).await.map_err(StoreError)?.map(|(_, records)| Arc::new(records));
        *read = RecentRead { started: Some(started), records: Some(records.clone()) };
        Ok(records)
    }

    async fn mark(&self, id: &LinkId, at: Timestamp) -> Result<(), MarkError> {
        let Some(name) = self.locate(id).await? else { return Err(MarkError::Missing) };
        let uid = name.strip_prefix(SECRET_PREFIX).unwrap_or_default().to_owned();
        let marked = self
            .update(&uid, None, |records| match records.mark_used(id, at) {
                Ok(()) => Ok((true, None)),
                Err(e) => Err(Some(e)),
            })
            .await;
        match marked {
            Ok(_) => Ok(()),
            Err(UpdateError::Refused(Some(e))) => Err(e),
            Err(UpdateError::Refused(None)) => Err(MarkError::Missing),
            Err(UpdateError::Store(message)) => Err(MarkError::Store(StoreError(message))),
        }
    }
}

/// Why [`KubeLinks::update`] wrote nothing.
enum UpdateError<T> {
    /// The change refused, with its reason.
    Refused(T),
    /// The apiserver failed (holds no token: none is ever sent there).
    Store(String),
}

impl<T> UpdateError<T> {
    fn message(&self) -> String {
        match self {
            UpdateError::Refused(_) => "the change was refused".into(),
            UpdateError::Store(message) => message.clone(),
        }
    }
}

impl Links for KubeLinks {
    fn send(&self, link: Outgoing) -> BoxFuture<'_, Result<Sent, SendError>> {
        self.send_link(link).boxed()
    }

    fn records(&self, enrollment_uid: &str) -> BoxFuture<'_, Result<BTreeMap<String, Record>, SendError>> {
        let uid = enrollment_uid.to_owned();
        async move { self.records_of(&uid).await }.boxed()
    }

    fn revoke<'a>(
        &'a self,
        enrollment_uid: &'a str,
        users: Option<&'a BTreeSet<String>>,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        self.revoke_links(enrollment_uid, users).boxed()
    }

    fn may_have_records(&self, enrollment_uid: &str) -> bool {
        self.may_have(enrollment_uid)
    }

    fn held_devices(&self) -> BTreeSet<String> {
        let page = self.inner.page.get().and_then(Weak::upgrade);
        page.map(|page| page.pending_devices().into_iter().collect()).unwrap_or_default()
    }
}

impl LinkStore for KubeLinks {
    fn get(&self, id: &LinkId) -> impl std::future::Future<Output = Result<Option<Record>, StoreError>> + Send {
        self.get_record(id)
    }

    fn mark_used(&self, id: &LinkId, at: Timestamp) -> impl std::future::Future<Output = Result<(), MarkError>> + Send {
        self.mark(id, at)
    }
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;
    use crate::link::DEFAULT_TTL;

    const UID: &str = "0d9c7f5e-1b2a-4c3d-8e9f-0a1b2c3d4e5f";

    fn minted(user: &str, seed: u8, at: i64) -> (LinkId, crate::link::Token, Record) {
        let purpose = Purpose { account: "123456789012".into(), user: user.into(), enrollment_uid: UID.into() };
        let at = Timestamp::from_second(at).expect("valid");
        let (token, record) = link::mint(purpose, [seed; TOKEN_BYTES], at, DEFAULT_TTL);
        (LinkId::new([seed; LINK_ID_BYTES]), token, record)
    }

    #[test]
    fn records_round_trip_and_hold_no_token() {
        let mut records = Records::default();
        let (id, token, mut record) = minted("alice", 1, 1_700_000_000);
        record.used_at = Some(Timestamp::from_second(1_700_000_100).expect("valid"));
        records.replace(id.clone(), record.clone());
        let (bob, bob_token, bob_record) = minted("bob", 2, 1_700_000_000);
        records.replace(bob.clone(), bob_record);
        let json = records.encode();
        let text = String::from_utf8(json.clone()).expect("utf-8");
        assert!(!text.contains(token.expose()) && !text.contains(bob_token.expose()), "{text}");
        assert!(text.contains(&format!("\"{id}\"")) && text.contains("\"usedAt\":\"2023-11-14T22:15:00Z\""), "{text}");
        assert!(text.contains("\"enrollmentUid\""), "{text}");
        let back = Records::decode(&json, UID).expect("parses");
        assert_eq!(back, records);
        assert_eq!(
            link::check(back.get(&id).expect("alice"), token.expose(), record.minted_at),
            Err(link::Refusal::Used)
        );
        assert_eq!(back.get(&bob).map(|r| r.used_at), Some(None));
    }

    #[test]
    fn records_of_another_enrollment_or_with_bad_ids_do_not_count() {
        let (id, _, record) = minted("alice", 1, 0);
        let mut records = Records::default();
        records.replace(id.clone(), record);
        let json = records.encode();
        assert!(Records::decode(&json, "another-uid").expect("parses").is_empty(), "planted from elsewhere");
        let text = String::from_utf8(json).expect("utf-8").replace(id.as_str(), "not-an-id");
        assert!(Records::decode(text.as_bytes(), UID).expect("parses").is_empty());
        assert!(Records::decode(b"[]", UID).is_err());
    }

    #[test]
    fn a_send_replaces_the_users_earlier_link_only() {
        let mut records = Records::default();
        let (first, _, alice1) = minted("alice", 1, 0);
        let (bob, _, bob_record) = minted("bob", 2, 0);
        records.replace(first.clone(), alice1);
        records.replace(bob.clone(), bob_record.clone());
        let (second, _, alice2) = minted("alice", 3, 60);
        records.replace(second.clone(), alice2.clone());
        assert_eq!(records.get(&first), None, "one live link per user");
        assert_eq!(records.get(&second), Some(&alice2));
        assert_eq!(records.by_user(), BTreeMap::from([("alice".into(), alice2), ("bob".into(), bob_record)]));
        assert!(records.remove_users(&BTreeSet::from(["bob".to_owned()])));
        assert!(!records.remove_users(&BTreeSet::from(["bob".to_owned()])));
        assert_eq!(records.ids().collect::<Vec<_>>(), vec![&second]);
    }

    #[test]
    fn mark_used_is_compare_and_set() {
        let mut records = Records::default();
        let (id, _, record) = minted("alice", 1, 0);
        assert_eq!(records.mark_used(&id, Timestamp::UNIX_EPOCH), Err(MarkError::Missing));
        records.replace(id.clone(), record);
        let at = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(5);
        assert_eq!(records.mark_used(&id, at), Ok(()));
        assert_eq!(records.mark_used(&id, at + SignedDuration::from_secs(1)), Err(MarkError::AlreadyUsed));
        assert_eq!(records.get(&id).and_then(|r| r.used_at), Some(at), "the first use stands");
    }

    #[test]
    fn an_undelivered_link_is_dropped_only_if_not_replaced() {
        let mut records = Records::default();
        let (id, _, record) = minted("alice", 1, 0);
        records.replace(id.clone(), record.clone());
        assert!(!records.remove_if(&id, "another digest"));
        assert!(records.remove_if(&id, &record.digest));
        assert!(records.is_empty());
    }

    #[test]
    fn secret_names_come_only_from_uids() {
        assert_eq!(secret_name(UID).as_deref(), Some("mfa-links-0d9c7f5e-1b2a-4c3d-8e9f-0a1b2c3d4e5f"));
        for bad in ["", "../x", "UPPER", "a/b", "a.b", "x-"] {
            assert_eq!(secret_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn enrollment_labels_only_when_they_fit() {
        assert!(is_label_value("team-a") && is_label_value("everyone.v2"));
        for bad in ["", "-a", "a-", &"x".repeat(64), "a/b"] {
            assert!(!is_label_value(bad), "{bad}");
        }
    }

    #[test]
    fn the_index_follows_secrets() {
        let mut index = Index::default();
        let (a, b, c) = (LinkId::new([1; 16]), LinkId::new([2; 16]), LinkId::new([3; 16]));
        index.set("s1", BTreeSet::from([a.clone(), b.clone()]));
        index.set("s2", BTreeSet::from([c.clone()]));
        assert_eq!(index.by_id.get(&b).map(String::as_str), Some("s1"));
        index.set("s1", BTreeSet::from([a.clone()]));
        assert_eq!(index.by_id.get(&b), None, "a replaced link is gone");
        index.remove_secret("s1");
        assert_eq!(index.by_id.get(&a), None);
        assert_eq!(index.by_id.get(&c).map(String::as_str), Some("s2"));
        assert!(!index.knows_none("s1"), "not listed yet: nothing is known");
        let listed = Index::from_secrets(std::iter::empty());
        assert!(listed.knows_none("s1"), "listed, and no such Secret");
    }
}
