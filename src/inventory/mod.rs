//! Per-account inventory of IAM users and MFA devices, shared by every `MfaEnrollment`
//! that targets the account.
//!
//! Cost of a refresh is O(pages): one `GetAccountAuthorizationDetails` sweep (users,
//! groups, tags), one `ListVirtualMFADevices` sweep, `GetAccountSummary`, and the
//! credential report only when some enrollment needs console access. `ListMFADevices`
//! is called only for selected users that no assigned virtual device covers (hardware
//! and FIDO devices), once per refresh. Between refreshes the controller updates the
//! inventory in place after its own writes, so reconciles triggered by a code
//! submission make no listing call at all.
//!
//! The sweeps run concurrently, and `ListMFADevices` calls a few at a time while IAM is
//! healthy (one at a time for a while after it throttled or failed, see
//! [`IamApi::read_concurrency`]): against AWS every call is a network round trip.

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;

use crate::aws::{IamApi, IamError, IamUser, VirtualDevice};

/// What the inventory knows about one user's MFA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MfaState {
    /// At least one active device (any kind); the serials.
    Active(Vec<String>),
    /// No active device.
    None,
    /// Not known yet: the user has no assigned virtual device and `ListMFADevices` has
    /// not been asked (see [`Inventory::resolve`]).
    Unknown,
}

/// One user's `ListMFADevices` answer: the serials of their active devices.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub user: String,
    pub active: Vec<String>,
}

/// One account's users and devices at a point in time.
#[derive(Clone, Debug)]
pub struct Inventory {
    pub fetched_at: Timestamp,
    /// Users by exact name.
    pub users: BTreeMap<String, IamUser>,
    /// Every virtual device by serial (private: `assigned` is derived from it and kept in
    /// step by the `record_*` methods).
    virtual_devices: BTreeMap<String, VirtualDevice>,
    /// Serials of the virtual devices assigned to each user: the index that keeps
    /// [`Inventory::mfa_state`] O(log n) for every selected user on every reconcile.
    assigned: BTreeMap<String, Vec<String>>,
    /// `ListMFADevices` answers for users no assigned virtual device covers.
    other_devices: BTreeMap<String, Vec<String>>,
    /// Names of every group of the account.
    pub groups: BTreeSet<String>,
    /// Users with a console password; `None` when not fetched.
    pub console_users: Option<BTreeSet<String>>,
    pub root_mfa_enabled: bool,
}

impl Inventory {
    /// Sweeps the account. `with_console` fetches the credential report too.
    pub async fn load(iam: &impl IamApi, with_console: bool, now: Timestamp) -> Result<Self, IamError> {
        // Independent sweeps: a refresh takes as long as the longest, not their sum. All
        // finish before any error is reported, so the error named is always the first in
        // this order, whichever failed first on the wire.
        let console = async { if with_console { iam.console_users().await.map(Some) } else { Ok(None) } };
        let (users, devices, groups, root_mfa_enabled, console_users) = futures::join!(
            iam.list_users(),
            iam.list_virtual_mfa_devices(),
            iam.list_groups(),
            iam.root_account_mfa_enabled(),
            console,
        );
        let (users, devices, groups, root_mfa_enabled, console_users) =
            (users?, devices?, groups?, root_mfa_enabled?, console_users?);
        let mut inventory = Self::from_parts(now, users, devices, console_users);
        inventory.groups = groups;
        inventory.root_mfa_enabled = root_mfa_enabled;
        Ok(inventory)
    }

    /// An inventory built from known parts (tests and the audit command's fixtures).
    pub fn from_parts(
        now: Timestamp,
        users: Vec<IamUser>,
        virtual_devices: Vec<VirtualDevice>,
        console_users: Option<BTreeSet<String>>,
    ) -> Self {
        let mut inventory = Self {
            fetched_at: now,
            groups: users.iter().flat_map(|u| u.groups.iter().cloned()).collect(),
            users: users.into_iter().map(|u| (u.name.clone(), u)).collect(),
            virtual_devices: BTreeMap::new(),
            assigned: BTreeMap::new(),
            other_devices: BTreeMap::new(),
            console_users,
            root_mfa_enabled: false,
        };
        for device in virtual_devices {
            inventory.put_device(device);
        }
        inventory
    }

    /// Adds or replaces a device, keeping the per-user index in step.
    fn put_device(&mut self, device: VirtualDevice) {
        self.remove_device(&device.serial);
        if let Some(user) = &device.user {
            self.assigned.entry(user.clone()).or_default().push(device.serial.clone());
        }
        self.virtual_devices.insert(device.serial.clone(), device);
    }

    fn remove_device(&mut self, serial: &str) {
        let Some(old) = self.virtual_devices.remove(serial) else { return };
        if let Some(user) = old.user
            && let Some(serials) = self.assigned.get_mut(&user)
        {
            serials.retain(|s| s != serial);
            if serials.is_empty() {
                self.assigned.remove(&user);
            }
        }
    }

    /// The virtual device with this serial, if the account has it.
    pub fn virtual_device(&self, serial: &str) -> Option<&VirtualDevice> {
        self.virtual_devices.get(serial)
    }

    /// How many virtual devices the account has.
    pub fn virtual_device_count(&self) -> usize {
        self.virtual_devices.len()
    }

    /// Where `user` stands.
    pub fn mfa_state(&self, user: &str) -> MfaState {
        if let Some(serials) = self.assigned.get(user) {
            return MfaState::Active(serials.clone());
        }
        match self.other_devices.get(user) {
            Some(serials) if !serials.is_empty() => MfaState::Active(serials.clone()),
            Some(_) => MfaState::None,
            None => MfaState::Unknown,
        }
    }

    /// Users among `users` whose state is still [`MfaState::Unknown`].
    pub fn unresolved<'a>(&self, users: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        users.into_iter().filter(|u| self.mfa_state(u) == MfaState::Unknown).cloned().collect()
    }

    /// Asks `ListMFADevices` for each of `users` (callers pass [`Self::unresolved`]),
    /// [`IamApi::read_concurrency`] at a time.
    pub async fn resolve(&mut self, iam: &impl IamApi, users: Vec<String>) -> Result<(), IamError> {
        let mut answers = Vec::new();
        let result = Self::ask(iam, users, &mut answers).await;
        self.record_resolved(answers);
        result
    }

    /// The `ListMFADevices` part of [`Self::resolve`], without the inventory: the
    /// controller asks with no lock held and records the answers after. On an error the
    /// answers already in are kept in `answers`; the rest are asked again next time.
    pub async fn ask(iam: &impl IamApi, users: Vec<String>, answers: &mut Vec<Resolved>) -> Result<(), IamError> {
        let mut stream = futures::stream::iter(users)
            .map(|user| async move {
                let devices = match iam.list_mfa_devices(&user).await {
                    Ok(devices) => devices,
                    // Deleted since the sweep: it has no device, and selection drops it next refresh.
                    Err(IamError::NoSuchEntity { .. }) => Vec::new(),
                    Err(e) => return Err(e),
                };
                Ok((user, devices))
            })
            .buffer_unordered(iam.read_concurrency().max(1));
        while let Some((user, devices)) = stream.try_next().await? {
            let active = devices.into_iter().filter(|d| d.enabled_at.is_some()).map(|d| d.serial).collect();
            answers.push(Resolved { user, active });
        }
        Ok(())
    }

    /// Records `ListMFADevices` answers.
    pub fn record_resolved(&mut self, answers: impl IntoIterator<Item = Resolved>) {
        for Resolved { user, active } in answers {
            self.other_devices.insert(user, active);
        }
    }

    /// Records a device the operator just created (unassigned).
    pub fn record_created(&mut self, serial: &str) {
        self.put_device(VirtualDevice { serial: serial.to_owned(), user: None, enabled_at: None });
    }

    /// Records a device the operator just enabled for `user`.
    pub fn record_enabled(&mut self, user: &str, serial: &str, now: Timestamp) {
        self.put_device(VirtualDevice {
            serial: serial.to_owned(),
            user: Some(user.to_owned()),
            enabled_at: Some(now),
        });
    }

    /// Records a device the operator just deleted.
    pub fn record_deleted(&mut self, serial: &str) {
        self.remove_device(serial);
    }

    /// The unassigned virtual devices whose serial lies directly under `device_path`.
    pub fn pending_under<'a>(&'a self, device_path: &'a str) -> impl Iterator<Item = &'a VirtualDevice> + 'a {
        self.virtual_devices
            .values()
            .filter(move |d| d.user.is_none() && device_name_in_path(&d.serial, device_path).is_some())
    }

    /// The account id, read from any user ARN or device serial.
    pub fn account_id(&self) -> Option<&str> {
        let arn = self.users.values().map(|u| u.arn.as_str()).chain(self.virtual_devices.keys().map(String::as_str));
        arn.filter_map(|a| a.split(':').nth(4)).find(|id| !id.is_empty())
    }
}

/// The device name when `serial` (`arn:aws:iam::<account>:mfa<path><name>`) lies directly
/// under `device_path`; `None` for any other serial (other paths, hardware serials, FIDO).
pub fn device_name_in_path<'a>(serial: &'a str, device_path: &str) -> Option<&'a str> {
    let (_, path_and_name) = serial.split_once(":mfa/")?;
    let rest = format!("/{path_and_name}");
    let name = rest.strip_prefix(device_path)?;
    (!name.is_empty() && !name.contains('/')).then(|| &path_and_name[path_and_name.len() - name.len()..])
}

/// Serial of the device `name` under `device_path` in `account`.
pub fn device_serial(account: &str, device_path: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:mfa{device_path}{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_only_directly_under_the_path() {
        let path = "/mfa-operator/";
        assert_eq!(device_name_in_path("arn:aws:iam::123456789012:mfa/mfa-operator/alice", path), Some("alice"));
        assert_eq!(device_name_in_path("arn:aws:iam::123456789012:mfa/mfa-operator/sub/alice", path), None);
        assert_eq!(device_name_in_path("arn:aws:iam::123456789012:mfa/alice", path), None);
        assert_eq!(device_name_in_path("arn:aws:iam::123456789012:mfa/mfa-operator-x/alice", path), None);
        assert_eq!(device_name_in_path("arn:aws:iam::123456789012:u2f/user/alice/key", path), None);
        assert_eq!(device_name_in_path("GAHT12345678", path), None);
        assert_eq!(device_serial("123456789012", path, "a+b"), "arn:aws:iam::123456789012:mfa/mfa-operator/a+b");
    }

    #[tokio::test]
    async fn resolve_asks_a_bounded_number_of_users_at_once_and_keeps_every_answer() {
        use crate::aws::MfaDevice;
        use crate::aws::fake::Account;
        let users: Vec<String> = (0..50).map(|i| format!("user-{i:02}")).collect();
        let hardware = MfaDevice { serial: "GAHT12345678".into(), enabled_at: Some(Timestamp::UNIX_EPOCH) };
        let iam = Account::new()
            .with_users(users.iter().map(|name| IamUser { name: name.clone(), ..IamUser::default() }))
            .with_listed("user-07", vec![hardware.clone()])
            .read_only();
        let mut inv = Inventory::from_parts(Timestamp::UNIX_EPOCH, Vec::new(), Vec::new(), None);
        inv.resolve(&iam, users.clone()).await.expect("resolve");
        assert_eq!(iam.calls().len(), 50, "one call per user");
        assert_eq!(iam.max_in_flight(), crate::aws::READ_CONCURRENCY);
        assert_eq!(inv.mfa_state("user-07"), MfaState::Active(vec![hardware.serial]));
        assert!(users.iter().filter(|u| *u != "user-07").all(|u| inv.mfa_state(u) == MfaState::None));
    }

    #[tokio::test]
    async fn the_sweeps_of_a_refresh_run_at_once() {
        use crate::aws::fake::Account;
        let iam = Account::new().read_only();
        Inventory::load(&iam, true, Timestamp::UNIX_EPOCH).await.expect("load");
        assert_eq!(iam.calls().len(), 5);
        assert_eq!(iam.max_in_flight(), 5, "users, virtual devices, groups, summary and credential report together");
    }

    #[test]
    fn the_per_user_index_follows_every_recorded_write() {
        let now = Timestamp::UNIX_EPOCH;
        let serial = "arn:aws:iam::123456789012:mfa/mfa-operator/x";
        let mut inv = Inventory::from_parts(
            now,
            Vec::new(),
            vec![VirtualDevice { serial: serial.into(), user: Some("alice".into()), enabled_at: Some(now) }],
            None,
        );
        assert_eq!(inv.mfa_state("alice"), MfaState::Active(vec![serial.into()]));
        // The same serial now recorded for bob: alice loses it.
        inv.record_enabled("bob", serial, now);
        assert_eq!(inv.mfa_state("alice"), MfaState::Unknown);
        assert_eq!(inv.mfa_state("bob"), MfaState::Active(vec![serial.into()]));
        inv.record_deleted(serial);
        assert_eq!(inv.mfa_state("bob"), MfaState::Unknown);
        assert_eq!(inv.virtual_device_count(), 0);
        inv.record_created(serial);
        assert_eq!(inv.mfa_state("bob"), MfaState::Unknown, "an unassigned device covers nobody");
        assert_eq!(inv.pending_under("/mfa-operator/").count(), 1);
    }

    #[test]
    fn state_comes_from_assigned_virtual_devices_then_list_mfa_devices() {
        let now = Timestamp::UNIX_EPOCH;
        let users = ["alice", "bob", "carol"].map(|n| IamUser {
            name: n.into(),
            arn: format!("arn:aws:iam::123456789012:user/{n}"),
            ..Default::default()
        });
        let mut inv = Inventory::from_parts(
            now,
            users.to_vec(),
            vec![
                VirtualDevice {
                    serial: "arn:aws:iam::123456789012:mfa/alice".into(),
                    user: Some("alice".into()),
                    enabled_at: Some(now),
                },
                VirtualDevice {
                    serial: "arn:aws:iam::123456789012:mfa/mfa-operator/bob".into(),
                    user: None,
                    enabled_at: None,
                },
            ],
            None,
        );
        assert!(matches!(inv.mfa_state("alice"), MfaState::Active(_)));
        assert_eq!(inv.mfa_state("bob"), MfaState::Unknown);
        let names: Vec<String> = users.iter().map(|u| u.name.clone()).collect();
        assert_eq!(inv.unresolved(&names), ["bob", "carol"]);
        assert_eq!(inv.pending_under("/mfa-operator/").count(), 1);
        assert_eq!(inv.account_id(), Some("123456789012"));

        inv.record_enabled("bob", "arn:aws:iam::123456789012:mfa/mfa-operator/bob", now);
        assert!(matches!(inv.mfa_state("bob"), MfaState::Active(_)));
        assert_eq!(inv.pending_under("/mfa-operator/").count(), 0);
    }
}
