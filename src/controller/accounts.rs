//! One state per AWS account the operator manages, keyed by the account's id: its shared
//! inventory, the claims of its pending devices, and which users' work is in flight. Each
//! way of reaching an account (a binding's role, or the operator's own credentials) has
//! its own IAM client, checked once against the account id the binding declares.
//!
//! No lock is held across an IAM call. The inventory and claims sit behind a short lock
//! (read, plan, record a result); a user's work is serialised by a reservation taken when
//! the work is planned, so a code submission never waits behind another enrollment's
//! bulk work, and two reconciles never race into a second device for one user. One
//! refresh of the inventory runs at a time; writes that land while it reads the account
//! are replayed onto the fresh inventory (the journal), so a refresh never forgets one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use aws_config::SdkConfig;
use jiff::Timestamp;

use super::decide::{Claims, EnrollmentId};
use crate::aws::{
    CallCounter, DeviceTags, IamApi, IamError, IamUser, MfaDevice, NewDevice, SdkIam, VirtualDevice, caller_account,
    load_sdk_config,
};
use crate::inventory::{Inventory, Resolved};

/// Which credentials reach an account: the operator's own (no role), or a role to assume.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountKey {
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub region: Option<String>,
}

/// Never prints the ExternalId: the platform team keeps it from tenants.
impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountKey")
            .field("role_arn", &self.role_arn)
            .field("external_id", &self.external_id.as_ref().map(|_| "<redacted>"))
            .field("region", &self.region)
            .finish()
    }
}

/// What a piece of work touches: no two reconciles work on the same user or device at
/// once.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    User(String),
    Device(String),
}

/// A change the operator made in the account, recorded in the inventory and claims.
#[derive(Clone, Debug)]
pub enum Record {
    Created {
        serial: String,
    },
    Enabled {
        user: String,
        serial: String,
        at: Timestamp,
    },
    Deleted {
        serial: String,
    },
    /// An enrollment's seed Secret for the device now exists.
    Claimed {
        serial: String,
        holder: EnrollmentId,
    },
    /// An enrollment's seed Secret for the device is gone.
    Released {
        serial: String,
        holder: EnrollmentId,
    },
    /// `ListMFADevices` answers.
    Resolved {
        answers: Vec<Resolved>,
    },
}

/// The account's in-memory view, behind [`Account::view`]'s short lock.
#[derive(Default)]
pub struct View {
    pub inventory: Option<Inventory>,
    /// Seed Secrets of every watched namespace by device serial; refreshed together with
    /// the inventory and kept current by the operator's own writes.
    pub claims: Claims,
    /// Subjects whose work is in flight, and for which enrollment.
    busy: BTreeMap<Subject, EnrollmentId>,
    /// Records made while a refresh reads the account (`Some` only then).
    journal: Option<Vec<Record>>,
}

impl View {
    /// Applies a record to the inventory and claims (and the journal of a running refresh).
    pub fn record(&mut self, record: Record) {
        apply_record(self.inventory.as_mut(), &mut self.claims, &record);
        if let Some(journal) = self.journal.as_mut() {
            journal.push(record);
        }
    }

    /// The holder of a subject's reservation, if some work on it is in flight.
    pub fn busy_with(&self, subject: &Subject) -> Option<&EnrollmentId> {
        self.busy.get(subject)
    }

    /// Reserves `subjects` for `holder` when none is reserved by someone else.
    pub fn reserve(&mut self, holder: &EnrollmentId, subjects: &[Subject]) -> bool {
        if subjects.iter().any(|s| self.busy.get(s).is_some_and(|h| h != holder)) {
            return false;
        }
        for subject in subjects {
            self.busy.insert(subject.clone(), holder.clone());
        }
        true
    }

    pub fn release(&mut self, holder: &EnrollmentId, subjects: &[Subject]) {
        for subject in subjects {
            if self.busy.get(subject) == Some(holder) {
                self.busy.remove(subject);
            }
        }
    }
}

fn apply_record(inventory: Option<&mut Inventory>, claims: &mut Claims, record: &Record) {
    match (record, inventory) {
        (Record::Created { serial }, Some(inv)) => inv.record_created(serial),
        (Record::Enabled { user, serial, at }, Some(inv)) => inv.record_enabled(user, serial, *at),
        (Record::Deleted { serial }, Some(inv)) => inv.record_deleted(serial),
        (Record::Claimed { serial, holder }, _) => {
            let holders = claims.entry(serial.clone()).or_default();
            if !holders.contains(holder) {
                holders.push(holder.clone());
            }
        }
        (Record::Released { serial, holder }, _) => {
            if let Some(holders) = claims.get_mut(serial) {
                holders.retain(|h| h != holder);
                if holders.is_empty() {
                    claims.remove(serial);
                }
            }
        }
        (Record::Resolved { answers }, Some(inv)) => inv.record_resolved(answers.iter().cloned()),
        (_, None) => {}
    }
}

/// The IAM client of one way of reaching an account: the AWS SDK's in production; in unit
/// tests also an in-memory account, so the reconcile glue runs without AWS.
#[derive(Clone)]
pub enum AccountIam {
    Sdk(SdkIam),
    #[cfg(test)]
    Fake(Arc<crate::aws::fake::Account>),
}

/// Each call goes to the client the account was reached with, unchanged.
impl IamApi for AccountIam {
    fn read_concurrency(&self) -> usize {
        match self {
            Self::Sdk(iam) => iam.read_concurrency(),
            #[cfg(test)]
            Self::Fake(iam) => iam.read_concurrency(),
        }
    }

    async fn list_users(&self) -> Result<Vec<IamUser>, IamError> {
        match self {
            Self::Sdk(iam) => iam.list_users().await,
            #[cfg(test)]
            Self::Fake(iam) => iam.list_users().await,
        }
    }

    async fn list_virtual_mfa_devices(&self) -> Result<Vec<VirtualDevice>, IamError> {
        match self {
            Self::Sdk(iam) => iam.list_virtual_mfa_devices().await,
            #[cfg(test)]
            Self::Fake(iam) => iam.list_virtual_mfa_devices().await,
        }
    }

    async fn list_groups(&self) -> Result<BTreeSet<String>, IamError> {
        match self {
            Self::Sdk(iam) => iam.list_groups().await,
            #[cfg(test)]
            Self::Fake(iam) => iam.list_groups().await,
        }
    }

    async fn list_mfa_devices(&self, user: &str) -> Result<Vec<MfaDevice>, IamError> {
        match self {
            Self::Sdk(iam) => iam.list_mfa_devices(user).await,
            #[cfg(test)]
            Self::Fake(iam) => iam.list_mfa_devices(user).await,
        }
    }

    async fn console_users(&self) -> Result<BTreeSet<String>, IamError> {
        match self {
            Self::Sdk(iam) => iam.console_users().await,
            #[cfg(test)]
            Self::Fake(iam) => iam.console_users().await,
        }
    }

    async fn root_account_mfa_enabled(&self) -> Result<bool, IamError> {
        match self {
            Self::Sdk(iam) => iam.root_account_mfa_enabled().await,
            #[cfg(test)]
            Self::Fake(iam) => iam.root_account_mfa_enabled().await,
        }
    }

    async fn create_virtual_mfa_device(
        &self,
        path: &str,
        name: &str,
        tags: &DeviceTags,
    ) -> Result<NewDevice, IamError> {
        match self {
            Self::Sdk(iam) => iam.create_virtual_mfa_device(path, name, tags).await,
            #[cfg(test)]
            Self::Fake(iam) => iam.create_virtual_mfa_device(path, name, tags).await,
        }
    }

    async fn delete_virtual_mfa_device(&self, serial: &str) -> Result<(), IamError> {
        match self {
            Self::Sdk(iam) => iam.delete_virtual_mfa_device(serial).await,
            #[cfg(test)]
            Self::Fake(iam) => iam.delete_virtual_mfa_device(serial).await,
        }
    }

    async fn enable_mfa_device(&self, user: &str, serial: &str, code1: &str, code2: &str) -> Result<(), IamError> {
        match self {
            Self::Sdk(iam) => iam.enable_mfa_device(user, serial, code1, code2).await,
            #[cfg(test)]
            Self::Fake(iam) => iam.enable_mfa_device(user, serial, code1, code2).await,
        }
    }
}

/// One account as one way of reaching it sees it: that way's IAM client and the
/// account's shared state.
#[derive(Clone)]
pub struct Account {
    pub iam: AccountIam,
    shared: Arc<Shared>,
}

impl std::ops::Deref for Account {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Account {
    pub fn new(iam: AccountIam) -> Self {
        Self { iam, shared: Arc::default() }
    }
}

/// What every way of reaching one account shares.
pub struct Shared {
    view: Mutex<View>,
    /// One refresh at a time; the others wait for it and use its result.
    refreshing: tokio::sync::Mutex<()>,
    /// Permits for bulk writes (device creation and removal): IAM's request limits are
    /// shared by everyone in the account. Code submissions do not take one.
    writes: tokio::sync::Semaphore,
}

/// Bulk writes in flight per account while IAM is calm (one at a time when it is not).
pub const WRITE_CONCURRENCY: u32 = 8;

impl Default for Shared {
    fn default() -> Self {
        Self {
            view: Mutex::default(),
            refreshing: tokio::sync::Mutex::new(()),
            writes: tokio::sync::Semaphore::new(WRITE_CONCURRENCY as usize),
        }
    }
}

impl Shared {
    /// The view, for a short critical section: never hold it across an await.
    pub fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, record: Record) {
        self.view().record(record);
    }

    /// Waits for the right to run one bulk write: one permit while IAM is calm, all of
    /// them (so one write at a time) after it pushed back.
    pub async fn bulk_write_permit(&self, calm: bool) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let wanted = if calm { 1 } else { WRITE_CONCURRENCY };
        self.writes.acquire_many(wanted).await.ok()
    }

    /// Replaces the inventory and claims by what `load` reads, unless `still_stale` says a
    /// refresh that finished while this one waited made it unnecessary. Writes recorded
    /// while `load` runs are replayed onto what it read.
    pub async fn refresh<F, E>(&self, still_stale: impl Fn(&View) -> bool, load: F) -> Result<(), E>
    where
        F: Future<Output = Result<(Inventory, Claims), E>>,
    {
        let _one = self.refreshing.lock().await;
        {
            let mut view = self.view();
            if !still_stale(&view) {
                return Ok(());
            }
            view.journal = Some(Vec::new());
        }
        // A refresh dropped half-way (its reconcile cancelled) closes the journal too.
        let _journal_open = JournalOpen(self);
        let loaded = load.await;
        let mut view = self.view();
        let journal = view.journal.take().unwrap_or_default();
        let (mut inventory, mut claims) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                view.inventory = None;
                return Err(e);
            }
        };
        // Writes made while it ran; replaying one the listing shows changes nothing.
        for record in &journal {
            apply_record(Some(&mut inventory), &mut claims, record);
        }
        view.inventory = Some(inventory);
        view.claims = claims;
        Ok(())
    }
}

/// Closes a refresh's journal when the refresh ends, however it ends.
struct JournalOpen<'a>(&'a Shared);

impl Drop for JournalOpen<'_> {
    fn drop(&mut self) {
        // Dropped after `refresh` released the view (declared before it) and before it
        // releases `refreshing`: the journal closed is always this refresh's own.
        self.0.view().journal = None;
    }
}

/// Every account's state, created on first use.
#[derive(Default)]
pub struct Accounts {
    /// Each way of reaching an account, once its account id is known.
    reached: Mutex<HashMap<AccountKey, Reached>>,
    /// Each account's shared state, by account id.
    shared: Mutex<HashMap<String, Arc<Shared>>>,
    /// One request counter for every account's IAM client (feeds the metrics).
    calls: CallCounter,
}

#[derive(Clone)]
struct Reached {
    iam: AccountIam,
    account_id: String,
}

/// Why an account could not be reached as a binding declares it.
#[derive(Debug, thiserror::Error)]
pub enum Unreached {
    #[error("cannot learn which AWS account the credentials reach: {0}")]
    Identity(#[source] IamError),
    #[error("the binding declares account {declared}, but its credentials reach account {reached}")]
    WrongAccount { declared: String, reached: String },
}

impl Accounts {
    pub fn new(calls: CallCounter) -> Self {
        Self { calls, ..Self::default() }
    }

    /// The account `key` reaches, which must be `declared`; builds the IAM client and
    /// asks STS which account it reaches on first use of `key`.
    pub async fn get(&self, key: &AccountKey, declared: &str) -> Result<Account, Unreached> {
        let known = lock(&self.reached).get(key).cloned();
        let reached = match known {
            Some(reached) => reached,
            None => {
                let config = sdk_config(key).await;
                let account_id = caller_account(&config).await.map_err(Unreached::Identity)?;
                let iam = AccountIam::Sdk(SdkIam::with_counter(&config, self.calls.clone()));
                let reached = Reached { iam, account_id };
                lock(&self.reached).entry(key.clone()).or_insert(reached).clone()
            }
        };
        if reached.account_id != declared {
            return Err(Unreached::WrongAccount { declared: declared.to_owned(), reached: reached.account_id });
        }
        let shared = lock(&self.shared).entry(reached.account_id).or_default().clone();
        Ok(Account { iam: reached.iam, shared })
    }
}

#[cfg(test)]
impl Accounts {
    /// Makes `key` reach `iam`, an in-memory account, as if STS had answered with its
    /// account id: [`Accounts::get`] returns it without asking anyone.
    pub fn reach_fake(&self, key: AccountKey, iam: Arc<crate::aws::fake::Account>) {
        let account_id = iam.account_id().to_owned();
        lock(&self.reached).insert(key, Reached { iam: AccountIam::Fake(iam), account_id });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The standard AWS configuration, with the enrollment's region and, for another
/// account, credentials from assuming its role through STS.
pub(crate) async fn sdk_config(key: &AccountKey) -> SdkConfig {
    let base = load_sdk_config(key.region.as_deref()).await;
    let Some(role_arn) = &key.role_arn else {
        return base;
    };
    let mut provider =
        aws_config::sts::AssumeRoleProvider::builder(role_arn).session_name("mfa-operator").configure(&base);
    if let Some(external_id) = &key.external_id {
        provider = provider.external_id(external_id);
    }
    let credentials = aws_sdk_iam::config::SharedCredentialsProvider::new(provider.build().await);
    base.into_builder().credentials_provider(credentials).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An account whose client is never called.
    fn account() -> Account {
        let config = SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
        Account::new(AccountIam::Sdk(SdkIam::new(&config)))
    }

    fn id(name: &str) -> EnrollmentId {
        EnrollmentId { namespace: "ns".into(), name: name.into() }
    }

    #[test]
    fn a_subject_is_reserved_by_one_enrollment_at_a_time() {
        let mut view = View::default();
        let alice = [Subject::User("alice".into())];
        assert!(view.reserve(&id("a"), &alice));
        assert!(view.reserve(&id("a"), &alice), "the holder may reserve again");
        assert!(!view.reserve(&id("b"), &[Subject::Device("d".into()), alice[0].clone()]), "all or nothing");
        assert_eq!(view.busy_with(&Subject::Device("d".into())), None);
        view.release(&id("b"), &alice);
        assert_eq!(view.busy_with(&alice[0]), Some(&id("a")), "only the holder releases");
        view.release(&id("a"), &alice);
        assert!(view.reserve(&id("b"), &alice));
    }

    #[tokio::test]
    async fn writes_made_while_a_refresh_reads_are_replayed_onto_its_result() {
        let account = account();
        let serial = "arn:aws:iam::123456789012:mfa/p/alice";
        let load = async {
            // A create lands after the sweep read the devices, before the refresh ends.
            account.record(Record::Created { serial: serial.into() });
            account.record(Record::Claimed { serial: serial.into(), holder: id("a") });
            Ok::<_, ()>((Inventory::from_parts(Timestamp::UNIX_EPOCH, Vec::new(), Vec::new(), None), Claims::new()))
        };
        account.refresh(|_| true, load).await.expect("refresh");
        let view = account.view();
        let inventory = view.inventory.as_ref().expect("inventory");
        assert!(inventory.virtual_device(serial).is_some(), "the create survived the refresh");
        assert_eq!(view.claims.get(serial), Some(&vec![id("a")]));
        assert!(view.journal.is_none(), "the journal ends with the refresh");
    }

    #[tokio::test]
    async fn a_refresh_shows_what_iam_lists_and_answers_recorded_after_it_count() {
        let account = account();
        // Writes before the refresh began are IAM's to list: a device deleted since (by
        // the console's clean-up) or deactivated must show as gone.
        let serial = "arn:aws:iam::123456789012:mfa/p/bob";
        account.record(Record::Created { serial: serial.into() });
        let enabled = "arn:aws:iam::123456789012:mfa/p/dave";
        account.record(Record::Enabled { user: "dave".into(), serial: enabled.into(), at: Timestamp::UNIX_EPOCH });
        let listing = async {
            Ok::<_, ()>((Inventory::from_parts(Timestamp::UNIX_EPOCH, Vec::new(), Vec::new(), None), Claims::new()))
        };
        account.refresh(|_| true, listing).await.expect("refresh");
        account.record(Record::Resolved { answers: vec![Resolved { user: "carol".into(), active: Vec::new() }] });
        let view = account.view();
        let inventory = view.inventory.as_ref().expect("inventory");
        assert!(inventory.virtual_device(serial).is_none());
        assert_eq!(inventory.mfa_state("dave"), crate::inventory::MfaState::Unknown, "drift stays visible");
        assert_eq!(inventory.mfa_state("carol"), crate::inventory::MfaState::None, "answers are recorded too");
    }

    #[tokio::test]
    async fn a_refresh_that_became_unnecessary_while_waiting_reads_nothing() {
        let account = account();
        let loaded = std::sync::atomic::AtomicBool::new(false);
        let load = async {
            loaded.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, ()>((Inventory::from_parts(Timestamp::UNIX_EPOCH, Vec::new(), Vec::new(), None), Claims::new()))
        };
        account.refresh(|_| false, load).await.expect("skipped");
        assert!(!loaded.load(std::sync::atomic::Ordering::SeqCst));
        assert!(account.view().inventory.is_none());
    }
}
