//! An IAM account in memory behind [`IamApi`], for unit tests only: users, groups, virtual
//! MFA devices (with real random seeds, tags and RFC 6238 code checks on the account's own
//! clock) and the errors real IAM answers, plus faults on demand. It touches nothing
//! outside its own memory: no network, no AWS, no files.
//!
//! What the code under test did is kept in [`Account::calls`] (writes in
//! [`Account::writes`]); what a test does to the account by hand (`console_cleanup`,
//! `deactivate`, `remove_user`, the clock) is not a call. A call takes effect when the
//! method is called and its answer arrives after the future yields once, so concurrent
//! callers overlap ([`Account::max_in_flight`]).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use data_encoding::BASE32_NOPAD;
use jiff::{SignedDuration, Timestamp};

use super::{DeviceTags, IamApi, IamError, IamUser, MfaDevice, NewDevice, Seed, VirtualDevice};
use crate::totp;

/// The account id of [`Account::new`] (also the tests' usual `ACCOUNT`).
pub const ACCOUNT_ID: &str = "123456789012";

// The IAM operation each method stands for, as [`IamError::operation`] names it and as
// [`Account::denying`] and [`Account::fail_next`] expect it.
pub const LIST_USERS: &str = "GetAccountAuthorizationDetails";
pub const LIST_VIRTUAL_MFA_DEVICES: &str = "ListVirtualMFADevices";
pub const LIST_GROUPS: &str = "ListGroups";
pub const LIST_MFA_DEVICES: &str = "ListMFADevices";
pub const CREDENTIAL_REPORT: &str = "GetCredentialReport";
pub const ACCOUNT_SUMMARY: &str = "GetAccountSummary";
pub const CREATE_VIRTUAL_MFA_DEVICE: &str = "CreateVirtualMFADevice";
pub const DELETE_VIRTUAL_MFA_DEVICE: &str = "DeleteVirtualMFADevice";
pub const ENABLE_MFA_DEVICE: &str = "EnableMFADevice";

const OPERATIONS: [&str; 9] = [
    LIST_USERS,
    LIST_VIRTUAL_MFA_DEVICES,
    LIST_GROUPS,
    LIST_MFA_DEVICES,
    CREDENTIAL_REPORT,
    ACCOUNT_SUMMARY,
    CREATE_VIRTUAL_MFA_DEVICE,
    DELETE_VIRTUAL_MFA_DEVICE,
    ENABLE_MFA_DEVICE,
];
const WRITES: [&str; 3] = [CREATE_VIRTUAL_MFA_DEVICE, DELETE_VIRTUAL_MFA_DEVICE, ENABLE_MFA_DEVICE];

/// IAM's quota of MFA devices (of any kind) per user.
pub const MAX_MFA_DEVICES_PER_USER: usize = 8;
/// IAM's quota of tags per resource.
pub const MAX_TAGS: usize = 50;
/// Bytes of a seed: AWS's `Base32StringSeed` is 64 base32 characters.
const SEED_BYTES: usize = 40;

/// Throttling, as the SDK adapter reports it once its retries are spent.
pub fn throttled(operation: &'static str) -> IamError {
    IamError::from_code(operation, Some("Throttling"), Some("Rate exceeded"))
}

/// A 5xx answer (`ServiceFailure`): transient.
pub fn service_failure(operation: &'static str) -> IamError {
    IamError::from_code(operation, Some("ServiceFailure"), Some("the request processing has failed"))
}

/// No answer at all (connection reset, timeout): transient, and the call may have happened.
pub fn no_answer(operation: &'static str) -> IamError {
    IamError::from_code(operation, None, Some("dispatch failure: connection reset (fake)"))
}

/// `NoSuchEntity`, for example IAM's eventual consistency right after a create.
pub fn no_such_entity(operation: &'static str) -> IamError {
    IamError::from_code(operation, Some("NoSuchEntity"), Some("the entity cannot be found (fake)"))
}

/// `AccessDenied`, the answer to an operation the credentials may not call.
pub fn access_denied(operation: &'static str) -> IamError {
    IamError::from_code(operation, Some("AccessDenied"), Some("not authorized to perform this action"))
}

fn validation_error(operation: &'static str, message: &str) -> IamError {
    IamError::from_code(operation, Some("ValidationError"), Some(message))
}

/// The in-memory account. Build it with the `with_*` methods, then share it by reference.
#[derive(Debug)]
pub struct Account {
    id: String,
    state: Mutex<State>,
    /// `None`: the system clock.
    clock: Mutex<Option<Timestamp>>,
    read_only: bool,
    denied: BTreeSet<&'static str>,
    faults: Mutex<Vec<Fault>>,
    calls: Mutex<Vec<String>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

#[derive(Debug, Default)]
struct State {
    users: Vec<IamUser>,
    devices: Vec<Device>,
    /// Devices only `ListMFADevices` knows (hardware keys, passkeys), per user.
    listed: BTreeMap<String, Vec<MfaDevice>>,
    groups: BTreeSet<String>,
    console: BTreeSet<String>,
    root_mfa: bool,
}

/// A virtual MFA device. `seed` is `None` for a device a test added without one: no pair
/// of codes enables it.
#[derive(Debug)]
struct Device {
    serial: String,
    user: Option<String>,
    enabled_at: Option<Timestamp>,
    seed: Option<Seed>,
    tags: DeviceTags,
}

impl Device {
    fn view(&self) -> VirtualDevice {
        VirtualDevice { serial: self.serial.clone(), user: self.user.clone(), enabled_at: self.enabled_at }
    }
}

/// The next `remaining` calls of `operation` fail with `error`, before the call takes
/// effect or (`after_effect`) after it did, as when IAM's answer is lost.
#[derive(Debug)]
struct Fault {
    operation: &'static str,
    remaining: usize,
    error: IamError,
    after_effect: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding a lock must not hide its own message.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn known(operation: &str) -> &'static str {
    OPERATIONS
        .into_iter()
        .find(|op| *op == operation)
        .unwrap_or_else(|| panic!("{operation} is not an operation of the fake account: one of {OPERATIONS:?}"))
}

impl Default for Account {
    fn default() -> Self {
        Self::new()
    }
}

impl Account {
    /// An empty account [`ACCOUNT_ID`] on the system clock, that answers every call.
    pub fn new() -> Self {
        Self {
            id: ACCOUNT_ID.to_owned(),
            state: Mutex::default(),
            clock: Mutex::default(),
            read_only: false,
            denied: BTreeSet::new(),
            faults: Mutex::default(),
            calls: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    fn state_mut(&mut self) -> &mut State {
        self.state.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    /// The account id in the serials of the devices it creates.
    pub fn with_account_id(mut self, id: &str) -> Self {
        id.clone_into(&mut self.id);
        self
    }

    /// The account id (what STS would say the account's credentials reach).
    pub fn account_id(&self) -> &str {
        &self.id
    }

    /// Stops the account's clock at `now` (see [`Self::set_now`]).
    pub fn at(self, now: Timestamp) -> Self {
        self.set_now(now);
        self
    }

    pub fn with_users(mut self, users: impl IntoIterator<Item = IamUser>) -> Self {
        self.state_mut().users.extend(users);
        self
    }

    /// Virtual devices that exist already, without a seed (no codes enable them; see
    /// [`Self::with_seed`]) and without tags.
    pub fn with_devices(mut self, devices: impl IntoIterator<Item = VirtualDevice>) -> Self {
        let state = self.state_mut();
        for VirtualDevice { serial, user, enabled_at } in devices {
            assert!(!state.devices.iter().any(|d| d.serial == serial), "two devices {serial}");
            state.devices.push(Device { serial, user, enabled_at, seed: None, tags: DeviceTags::new() });
        }
        self
    }

    /// Gives an existing device its seed (as if it had been created with it).
    pub fn with_seed(mut self, serial: &str, seed: Seed) -> Self {
        let device = self.state_mut().devices.iter_mut().find(|d| d.serial == serial);
        device.unwrap_or_else(|| panic!("no device {serial} to seed")).seed = Some(seed);
        self
    }

    /// Devices of `user` that only `ListMFADevices` reports (hardware keys, passkeys, or
    /// anything a test wants it to say): it answers these, then the user's assigned
    /// virtual devices. The user must be one of the account's, as in IAM.
    pub fn with_listed(mut self, user: &str, devices: Vec<MfaDevice>) -> Self {
        self.state_mut().listed.insert(user.to_owned(), devices);
        self
    }

    pub fn with_groups(mut self, groups: impl IntoIterator<Item = String>) -> Self {
        self.state_mut().groups.extend(groups);
        self
    }

    /// Users with a console password, as the credential report says.
    pub fn with_console_users(mut self, users: impl IntoIterator<Item = String>) -> Self {
        self.state_mut().console.extend(users);
        self
    }

    pub fn with_root_mfa(mut self, enabled: bool) -> Self {
        self.state_mut().root_mfa = enabled;
        self
    }

    /// Refuses every call of `operation` (see the constants) with AccessDenied.
    pub fn denying(mut self, operation: &str) -> Self {
        self.denied.insert(known(operation));
        self
    }

    /// Refuses every write with AccessDenied, as read-only credentials would; the attempt
    /// is still recorded. For code that reads and must never write.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Every call in order: the method's short name, with the user name for
    /// `ListMFADevices`, the path and name for a create, the user and serial for an
    /// enable and the serial for a delete (never codes).
    pub fn calls(&self) -> Vec<String> {
        lock(&self.calls).clone()
    }

    /// The calls to write operations, refused ones included.
    pub fn writes(&self) -> Vec<String> {
        self.calls().into_iter().filter(|call| WRITES.iter().any(|op| call.starts_with(op))).collect()
    }

    /// The most calls that were in flight at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// The account's users now (not a call).
    pub fn users(&self) -> Vec<IamUser> {
        lock(&self.state).users.clone()
    }

    /// The account's virtual devices now, as `ListVirtualMFADevices` would list them (not a
    /// call).
    pub fn virtual_devices(&self) -> Vec<VirtualDevice> {
        lock(&self.state).devices.iter().map(Device::view).collect()
    }

    /// The seed of a device the account created or was given.
    pub fn seed(&self, serial: &str) -> Option<Seed> {
        lock(&self.state).devices.iter().find(|d| d.serial == serial)?.seed.clone()
    }

    /// The tags of a device.
    pub fn tags(&self, serial: &str) -> Option<DeviceTags> {
        Some(lock(&self.state).devices.iter().find(|d| d.serial == serial)?.tags.clone())
    }

    /// Two consecutive codes of a seeded device that `EnableMFADevice` accepts now: those
    /// of the previous and the current step of the account's clock.
    pub fn codes(&self, serial: &str) -> Option<(String, String)> {
        let secret = totp::decode_seed(self.seed(serial)?.expose()).ok()?;
        let step = totp::step_of(self.now().as_second());
        Some((totp::code_at(&secret, step.saturating_sub(1)), totp::code_at(&secret, step)))
    }

    /// The account's clock: `EnableMFADevice` checks codes and dates devices with it.
    pub fn now(&self) -> Timestamp {
        lock(&self.clock).unwrap_or_else(Timestamp::now)
    }

    /// Stops the account's clock at `now`.
    pub fn set_now(&self, now: Timestamp) {
        *lock(&self.clock) = Some(now);
    }

    /// Moves the account's clock (stopped at its current time if it was the system's).
    pub fn advance(&self, by: SignedDuration) {
        let now = self.now();
        self.set_now(now + by);
    }

    /// The next `times` calls of `error`'s operation fail with `error`, before they take
    /// effect. Faults of one operation are used in the order they were added.
    pub fn fail_next(&self, times: usize, error: IamError) {
        self.add_fault(times, error, false);
    }

    /// The next `times` calls of `error`'s operation take effect, then answer `error`
    /// (an answer lost on the way back, such as [`no_answer`]).
    pub fn apply_then_fail_next(&self, times: usize, error: IamError) {
        self.add_fault(times, error, true);
    }

    fn add_fault(&self, times: usize, error: IamError, after_effect: bool) {
        let operation = known(error.operation());
        if times > 0 {
            lock(&self.faults).push(Fault { operation, remaining: times, error, after_effect });
        }
    }

    fn take_fault(&self, operation: &str, after_effect: bool) -> Option<IamError> {
        let mut faults = lock(&self.faults);
        let index = faults.iter().position(|f| f.operation == operation && f.after_effect == after_effect)?;
        let fault = &mut faults[index];
        fault.remaining -= 1;
        let error = fault.error.clone();
        if fault.remaining == 0 {
            faults.remove(index);
        }
        Some(error)
    }

    /// What AWS does when someone adds a virtual device in the console: every unassigned
    /// virtual device is deleted. Returns their serials. Not a call.
    pub fn console_cleanup(&self) -> Vec<String> {
        let mut state = lock(&self.state);
        let (gone, kept): (Vec<Device>, Vec<Device>) =
            std::mem::take(&mut state.devices).into_iter().partition(|d| d.user.is_none());
        state.devices = kept;
        gone.into_iter().map(|d| d.serial).collect()
    }

    /// `DeactivateMFADevice` by someone else (a person in the console): the device stays,
    /// unassigned, with its seed. NoSuchEntity unless `serial` is assigned to `user`.
    /// Not a call.
    pub fn deactivate(&self, user: &str, serial: &str) -> Result<(), IamError> {
        const OP: &str = "DeactivateMFADevice";
        let mut state = lock(&self.state);
        if !state.has_user(user) {
            return Err(user_not_found(OP, user));
        }
        let device = state.devices.iter_mut().find(|d| d.serial == serial && d.user.as_deref() == Some(user));
        let device = device.ok_or_else(|| device_not_found(OP, serial))?;
        device.user = None;
        device.enabled_at = None;
        Ok(())
    }

    /// Adds a user (someone created it). Not a call.
    pub fn add_user(&self, user: IamUser) {
        lock(&self.state).users.push(user);
    }

    /// Deletes a user the way the console does: its virtual devices are deactivated first
    /// (they stay, unassigned) and its other devices go. Returns whether it existed. Not a
    /// call.
    pub fn remove_user(&self, name: &str) -> bool {
        let mut state = lock(&self.state);
        let before = state.users.len();
        state.users.retain(|u| u.name != name);
        state.listed.remove(name);
        for device in state.devices.iter_mut().filter(|d| d.user.as_deref() == Some(name)) {
            device.user = None;
            device.enabled_at = None;
        }
        state.users.len() < before
    }

    /// Records the call and decides its answer now; the answer arrives after one yield.
    fn call<T: Send>(
        &self,
        call: String,
        operation: &'static str,
        effect: impl FnOnce(&mut State, &CallContext<'_>) -> Result<T, IamError>,
    ) -> impl Future<Output = Result<T, IamError>> + Send {
        lock(&self.calls).push(call);
        let result = self.outcome(operation, effect);
        async move {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            YieldOnce(false).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            result
        }
    }

    fn outcome<T>(
        &self,
        operation: &'static str,
        effect: impl FnOnce(&mut State, &CallContext<'_>) -> Result<T, IamError>,
    ) -> Result<T, IamError> {
        if self.denied.contains(operation) {
            return Err(access_denied(operation));
        }
        if let Some(error) = self.take_fault(operation, false) {
            return Err(error);
        }
        if self.read_only && WRITES.contains(&operation) {
            return Err(IamError::from_code(operation, Some("AccessDenied"), Some("the fake account is read-only")));
        }
        let context = CallContext { account: &self.id, now: self.now() };
        let result = effect(&mut lock(&self.state), &context)?;
        match self.take_fault(operation, true) {
            Some(error) => Err(error),
            None => Ok(result),
        }
    }
}

/// What a call's effect may read besides the state.
struct CallContext<'a> {
    account: &'a str,
    now: Timestamp,
}

impl State {
    fn has_user(&self, name: &str) -> bool {
        self.users.iter().any(|u| u.name == name)
    }

    fn list_mfa_devices(&self, user: &str) -> Result<Vec<MfaDevice>, IamError> {
        if !self.has_user(user) {
            return Err(user_not_found(LIST_MFA_DEVICES, user));
        }
        let mut devices = self.listed.get(user).cloned().unwrap_or_default();
        for device in self.devices.iter().filter(|d| d.user.as_deref() == Some(user)) {
            if !devices.iter().any(|d| d.serial == device.serial) {
                devices.push(MfaDevice { serial: device.serial.clone(), enabled_at: device.enabled_at });
            }
        }
        Ok(devices)
    }

    fn create(
        &mut self,
        path: &str,
        name: &str,
        tags: &DeviceTags,
        ctx: &CallContext<'_>,
    ) -> Result<NewDevice, IamError> {
        const OP: &str = CREATE_VIRTUAL_MFA_DEVICE;
        check_name(OP, "virtualMFADeviceName", name, 226)?;
        check_path(OP, path)?;
        check_tags(OP, tags)?;
        let serial = format!("arn:aws:iam::{}:mfa{path}{name}", ctx.account);
        if self.devices.iter().any(|d| d.serial == serial) {
            let message = format!("MFADevice entity at the same path and name already exists: {serial}");
            return Err(IamError::from_code(OP, Some("EntityAlreadyExists"), Some(&message)));
        }
        let seed = random_seed();
        let device = Device {
            serial: serial.clone(),
            user: None,
            enabled_at: None,
            seed: Some(seed.clone()),
            tags: tags.clone(),
        };
        self.devices.push(device);
        Ok(NewDevice { serial, seed })
    }

    fn delete(&mut self, serial: &str) -> Result<(), IamError> {
        const OP: &str = DELETE_VIRTUAL_MFA_DEVICE;
        check_serial(OP, serial)?;
        let index = self.devices.iter().position(|d| d.serial == serial).ok_or_else(|| device_not_found(OP, serial))?;
        if self.devices[index].user.is_some() {
            return Err(IamError::from_code(OP, Some("DeleteConflict"), Some("MFA Device is in use.")));
        }
        self.devices.remove(index);
        Ok(())
    }

    fn enable(&mut self, user: &str, serial: &str, codes: [&str; 2], ctx: &CallContext<'_>) -> Result<(), IamError> {
        const OP: &str = ENABLE_MFA_DEVICE;
        check_name(OP, "userName", user, 128)?;
        check_serial(OP, serial)?;
        for (code, member) in codes.into_iter().zip(["authenticationCode1", "authenticationCode2"]) {
            if code.len() != totp::DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
                let message = format!(
                    "Value at '{member}' failed to satisfy constraint: Member must be 6 digits (value not shown)"
                );
                return Err(validation_error(OP, &message));
            }
        }
        if !self.has_user(user) {
            return Err(user_not_found(OP, user));
        }
        let held = self.list_mfa_devices(user)?.len();
        let device =
            self.devices.iter_mut().find(|d| d.serial == serial).ok_or_else(|| device_not_found(OP, serial))?;
        if device.user.is_some() {
            let message = format!("MFA device {serial} is already in use");
            return Err(IamError::from_code(OP, Some("EntityAlreadyExists"), Some(&message)));
        }
        if held >= MAX_MFA_DEVICES_PER_USER {
            let message = format!("Cannot exceed quota for MFADevicesPerUser: {MAX_MFA_DEVICES_PER_USER}");
            return Err(IamError::from_code(OP, Some("LimitExceeded"), Some(&message)));
        }
        let secret = device.seed.as_ref().and_then(|seed| totp::decode_seed(seed.expose()).ok());
        let accepted =
            secret.is_some_and(|secret| totp::verify_pair(&secret, codes[0], codes[1], ctx.now.as_second()).is_ok());
        if !accepted {
            return Err(IamError::InvalidAuthenticationCode { operation: OP });
        }
        device.user = Some(user.to_owned());
        // IAM dates to the second.
        device.enabled_at = Some(Timestamp::from_second(ctx.now.as_second()).unwrap_or(ctx.now));
        Ok(())
    }
}

fn user_not_found(operation: &'static str, user: &str) -> IamError {
    let message = format!("The user with name {user} cannot be found.");
    IamError::from_code(operation, Some("NoSuchEntity"), Some(&message))
}

fn device_not_found(operation: &'static str, serial: &str) -> IamError {
    let message = format!("VirtualMFADevice with serial {serial} doesn't exist.");
    IamError::from_code(operation, Some("NoSuchEntity"), Some(&message))
}

/// IAM's names: `[\w+=,.@-]+`, 1 to `max` characters.
fn check_name(operation: &'static str, member: &str, name: &str, max: usize) -> Result<(), IamError> {
    let valid =
        (1..=max).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(validation_error(operation, &format!("Value at '{member}' failed to satisfy constraint")))
    }
}

/// IAM's paths: `/`, or `/` + printable ASCII + `/`, at most 512 characters.
fn check_path(operation: &'static str, path: &str) -> Result<(), IamError> {
    let valid = path == "/"
        || (path.len() > 2
            && path.len() <= 512
            && path.starts_with('/')
            && path.ends_with('/')
            && path.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    if valid { Ok(()) } else { Err(validation_error(operation, "Value at 'path' failed to satisfy constraint")) }
}

/// IAM's serial numbers: `[\w+=/:,.@-]+`, 9 to 256 characters.
fn check_serial(operation: &'static str, serial: &str) -> Result<(), IamError> {
    let valid = (9..=256).contains(&serial.len())
        && serial.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=/:,.@-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(validation_error(operation, "Value at 'serialNumber' failed to satisfy constraint"))
    }
}

/// At most [`MAX_TAGS`]; keys of 1 to 128 characters not starting with `aws:`, values of at
/// most 256.
fn check_tags(operation: &'static str, tags: &DeviceTags) -> Result<(), IamError> {
    if tags.len() > MAX_TAGS {
        let message = format!("Cannot exceed quota for TagsPerResource: {MAX_TAGS}");
        return Err(IamError::from_code(operation, Some("LimitExceeded"), Some(&message)));
    }
    for (key, value) in tags {
        if key.is_empty() || key.chars().count() > 128 || value.chars().count() > 256 {
            return Err(validation_error(operation, "Value at 'tags' failed to satisfy constraint"));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(IamError::from_code(operation, Some("InvalidInput"), Some("tag keys may not start with aws:")));
        }
    }
    Ok(())
}

fn random_seed() -> Seed {
    let mut bytes = [0_u8; SEED_BYTES];
    getrandom::fill(&mut bytes).expect("the fake account needs randomness for its seeds");
    Seed::new(BASE32_NOPAD.encode(&bytes))
}

/// Pending once, then ready: lets every other ready future of the caller start first.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl IamApi for Account {
    fn read_concurrency(&self) -> usize {
        super::READ_CONCURRENCY
    }

    fn list_users(&self) -> impl Future<Output = Result<Vec<IamUser>, IamError>> + Send {
        self.call("ListUsers".into(), LIST_USERS, |state, _| Ok(state.users.clone()))
    }

    fn list_virtual_mfa_devices(&self) -> impl Future<Output = Result<Vec<VirtualDevice>, IamError>> + Send {
        self.call("ListVirtualMFADevices".into(), LIST_VIRTUAL_MFA_DEVICES, |state, _| {
            Ok(state.devices.iter().map(Device::view).collect())
        })
    }

    fn list_groups(&self) -> impl Future<Output = Result<BTreeSet<String>, IamError>> + Send {
        self.call("ListGroups".into(), LIST_GROUPS, |state, _| Ok(state.groups.clone()))
    }

    fn list_mfa_devices(&self, user: &str) -> impl Future<Output = Result<Vec<MfaDevice>, IamError>> + Send {
        self.call(format!("ListMFADevices {user}"), LIST_MFA_DEVICES, |state, _| state.list_mfa_devices(user))
    }

    fn console_users(&self) -> impl Future<Output = Result<BTreeSet<String>, IamError>> + Send {
        self.call("CredentialReport".into(), CREDENTIAL_REPORT, |state, _| Ok(state.console.clone()))
    }

    fn root_account_mfa_enabled(&self) -> impl Future<Output = Result<bool, IamError>> + Send {
        self.call("GetAccountSummary".into(), ACCOUNT_SUMMARY, |state, _| Ok(state.root_mfa))
    }

    fn create_virtual_mfa_device(
        &self,
        path: &str,
        name: &str,
        tags: &DeviceTags,
    ) -> impl Future<Output = Result<NewDevice, IamError>> + Send {
        let call = format!("CreateVirtualMFADevice {path}{name}");
        self.call(call, CREATE_VIRTUAL_MFA_DEVICE, |state, ctx| state.create(path, name, tags, ctx))
    }

    fn delete_virtual_mfa_device(&self, serial: &str) -> impl Future<Output = Result<(), IamError>> + Send {
        self.call(format!("DeleteVirtualMFADevice {serial}"), DELETE_VIRTUAL_MFA_DEVICE, |state, _| {
            state.delete(serial)
        })
    }

    fn enable_mfa_device(
        &self,
        user: &str,
        serial: &str,
        code1: &str,
        code2: &str,
    ) -> impl Future<Output = Result<(), IamError>> + Send {
        let call = format!("EnableMFADevice {user} {serial}");
        self.call(call, ENABLE_MFA_DEVICE, |state, ctx| state.enable(user, serial, [code1, code2], ctx))
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;

    /// The account's clock in the tests: 10 seconds into a 30-second step.
    const NOW: Timestamp = Timestamp::constant(1_750_000_000, 0);
    const PATH: &str = "/mfa-operator/";

    fn user(name: &str) -> IamUser {
        IamUser {
            name: name.into(),
            path: "/".into(),
            arn: format!("arn:aws:iam::{ACCOUNT_ID}:user/{name}"),
            ..IamUser::default()
        }
    }

    fn account() -> Account {
        Account::new().at(NOW).with_users([user("alice"), user("bob")])
    }

    fn create(iam: &Account, name: &str) -> String {
        block_on(iam.create_virtual_mfa_device(PATH, name, &DeviceTags::new())).expect("create").serial
    }

    fn enable(iam: &Account, user: &str, serial: &str, codes: (&str, &str)) -> Result<(), IamError> {
        block_on(iam.enable_mfa_device(user, serial, codes.0, codes.1))
    }

    /// The code of `serial`'s device `offset` steps from the account's current step.
    fn code(iam: &Account, serial: &str, offset: i64) -> String {
        let secret = totp::decode_seed(iam.seed(serial).expect("seeded").expose()).expect("base32");
        let step = totp::step_of(iam.now().as_second()).checked_add_signed(offset).expect("step in range");
        totp::code_at(&secret, step)
    }

    /// The IAM error code of a `Service` error, or the variant's name.
    fn kind(error: &IamError) -> String {
        match error {
            IamError::Service { code, .. } => code.clone(),
            other => format!("{other:?}").split([' ', '{']).next().unwrap_or_default().to_owned(),
        }
    }

    fn assigned(iam: &Account, serial: &str) -> Option<String> {
        iam.virtual_devices().into_iter().find(|d| d.serial == serial).and_then(|d| d.user)
    }

    #[test]
    fn create_returns_the_serial_a_random_seed_and_keeps_the_tags() {
        let iam = account();
        let tags = DeviceTags::from([("mfa-operator/user".to_owned(), "alice".to_owned())]);
        let device = block_on(iam.create_virtual_mfa_device(PATH, "alice", &tags)).expect("create");
        assert_eq!(device.serial, format!("arn:aws:iam::{ACCOUNT_ID}:mfa/mfa-operator/alice"));
        let seed = device.seed.expose();
        assert_eq!(seed.len(), 64, "AWS's Base32StringSeed is 64 characters");
        assert_eq!(totp::decode_seed(seed).map(|bytes| bytes.len()), Ok(SEED_BYTES));
        assert_eq!(iam.seed(&device.serial), Some(device.seed.clone()));
        assert_eq!(iam.tags(&device.serial), Some(tags));

        let other = block_on(iam.create_virtual_mfa_device("/", "bob", &DeviceTags::new())).expect("create");
        assert_eq!(other.serial, format!("arn:aws:iam::{ACCOUNT_ID}:mfa/bob"));
        assert!(other.seed != device.seed, "every device has a seed of its own");
        assert_eq!(
            block_on(iam.list_virtual_mfa_devices()).expect("list"),
            [
                VirtualDevice { serial: device.serial.clone(), user: None, enabled_at: None },
                VirtualDevice { serial: other.serial.clone(), user: None, enabled_at: None },
            ]
        );
        assert_eq!(
            iam.calls(),
            ["CreateVirtualMFADevice /mfa-operator/alice", "CreateVirtualMFADevice /bob", "ListVirtualMFADevices"]
        );
        assert_eq!(iam.writes().len(), 2);

        let elsewhere = Account::new().with_account_id("210987654321");
        let serial = create(&elsewhere, "carol");
        assert_eq!(serial, "arn:aws:iam::210987654321:mfa/mfa-operator/carol");
    }

    #[test]
    fn create_refuses_an_existing_path_and_name_only() {
        let iam = account();
        create(&iam, "alice");
        let again = block_on(iam.create_virtual_mfa_device(PATH, "alice", &DeviceTags::new()));
        assert!(matches!(again, Err(IamError::EntityAlreadyExists { operation: CREATE_VIRTUAL_MFA_DEVICE, .. })));
        create(&iam, "alice-2");
        block_on(iam.create_virtual_mfa_device("/other/", "alice", &DeviceTags::new())).expect("another path");
        assert_eq!(iam.virtual_devices().len(), 3);
    }

    #[test]
    fn create_refuses_invalid_names_paths_and_tags() {
        let iam = account();
        let none = DeviceTags::new();
        for (path, name) in [(PATH, ""), (PATH, "a/b"), (PATH, "a b"), ("mfa/", "x"), ("/mfa", "x"), ("//", "x")] {
            let err = block_on(iam.create_virtual_mfa_device(path, name, &none)).expect_err(name);
            assert_eq!(kind(&err), "ValidationError", "{path}{name}");
        }
        let too_many: DeviceTags = (0..=MAX_TAGS).map(|i| (format!("k{i}"), String::new())).collect();
        let err = block_on(iam.create_virtual_mfa_device(PATH, "x", &too_many)).expect_err("51 tags");
        assert!(matches!(err, IamError::LimitExceeded { .. }), "{err}");
        let reserved = DeviceTags::from([("aws:x".to_owned(), "y".to_owned())]);
        let err = block_on(iam.create_virtual_mfa_device(PATH, "x", &reserved)).expect_err("aws: prefix");
        assert_eq!(kind(&err), "InvalidInput");
        let long_key = DeviceTags::from([("k".repeat(129), String::new())]);
        let err = block_on(iam.create_virtual_mfa_device(PATH, "x", &long_key)).expect_err("long key");
        assert_eq!(kind(&err), "ValidationError");
        assert!(iam.virtual_devices().is_empty(), "nothing refused was created");
    }

    #[test]
    fn enable_accepts_two_consecutive_codes_at_the_accounts_clock() {
        let iam = account();
        let serial = create(&iam, "alice");
        let (first, second) = iam.codes(&serial).expect("seeded");
        assert_eq!((first.clone(), second.clone()), (code(&iam, &serial, -1), code(&iam, &serial, 0)));
        enable(&iam, "alice", &serial, (&first, &second)).expect("a fresh consecutive pair");
        let listed = block_on(iam.list_virtual_mfa_devices()).expect("list");
        assert_eq!(
            listed,
            [VirtualDevice { serial: serial.clone(), user: Some("alice".into()), enabled_at: Some(NOW) }]
        );
        let mfa = block_on(iam.list_mfa_devices("alice")).expect("list");
        assert_eq!(mfa, [MfaDevice { serial: serial.clone(), enabled_at: Some(NOW) }]);
        assert_eq!(block_on(iam.list_mfa_devices("bob")).expect("list"), []);
        assert_eq!(
            iam.writes(),
            ["CreateVirtualMFADevice /mfa-operator/alice".to_owned(), format!("EnableMFADevice alice {serial}")]
        );
        assert!(!iam.calls().concat().contains(&first), "codes are not recorded");

        // One step of skew either way, as RFC 6238 recommends.
        let ahead = create(&iam, "bob");
        enable(&iam, "bob", &ahead, (&code(&iam, &ahead, 0), &code(&iam, &ahead, 1))).expect("one step ahead");
    }

    #[test]
    fn enable_refuses_codes_that_are_not_a_fresh_consecutive_pair() {
        let iam = account();
        let serial = create(&iam, "alice");
        let at = |offset| code(&iam, &serial, offset);
        let other_seed = totp::decode_seed("JBSWY3DPEHPK3PXP").expect("base32");
        let step = totp::step_of(NOW.as_second());
        let foreign = (totp::code_at(&other_seed, step - 1), totp::code_at(&other_seed, step));
        let refused = [
            ("the same code twice", (at(0), at(0))),
            ("reversed", (at(0), at(-1))),
            ("a step apart", (at(-1), at(1))),
            ("too old", (at(-3), at(-2))),
            ("too far ahead", (at(1), at(2))),
            ("another seed", foreign),
        ];
        for (why, (first, second)) in &refused {
            let err = enable(&iam, "alice", &serial, (first, second)).expect_err(why);
            assert_eq!(err, IamError::InvalidAuthenticationCode { operation: ENABLE_MFA_DEVICE }, "{why}");
        }
        assert_eq!(assigned(&iam, &serial), None, "a refusal assigns nothing");

        // A good pair, submitted two minutes late.
        let late = iam.codes(&serial).expect("seeded");
        iam.advance(SignedDuration::from_mins(2));
        let err = enable(&iam, "alice", &serial, (&late.0, &late.1)).expect_err("stale");
        assert!(matches!(err, IamError::InvalidAuthenticationCode { .. }));
        let (first, second) = iam.codes(&serial).expect("seeded");
        enable(&iam, "alice", &serial, (&first, &second)).expect("current codes");
        assert_eq!(assigned(&iam, &serial).as_deref(), Some("alice"));
        assert_eq!(iam.virtual_devices()[0].enabled_at, Some(NOW + SignedDuration::from_mins(2)));
    }

    #[test]
    fn a_device_without_a_known_seed_takes_no_codes() {
        let serial = format!("arn:aws:iam::{ACCOUNT_ID}:mfa/mfa-operator/alice");
        let iam = account().with_devices([VirtualDevice { serial: serial.clone(), user: None, enabled_at: None }]);
        assert_eq!(iam.codes(&serial), None);
        let err = enable(&iam, "alice", &serial, ("123456", "654321")).expect_err("no seed");
        assert!(matches!(err, IamError::InvalidAuthenticationCode { .. }));

        let seeded = account()
            .with_devices([VirtualDevice { serial: serial.clone(), user: None, enabled_at: None }])
            .with_seed(&serial, Seed::new("JBSWY3DPEHPK3PXP"));
        let (first, second) = seeded.codes(&serial).expect("seeded");
        enable(&seeded, "alice", &serial, (&first, &second)).expect("the given seed");
    }

    #[test]
    fn enable_refuses_malformed_codes_with_a_validation_error() {
        let iam = account();
        let serial = create(&iam, "alice");
        let (good, _) = iam.codes(&serial).expect("seeded");
        for bad in ["12345", "1234567", " 123456", "123456 ", "12345a", "", "１２３４５６"] {
            for codes in [(bad, good.as_str()), (good.as_str(), bad)] {
                let err = enable(&iam, "alice", &serial, codes).expect_err(bad);
                assert_eq!(kind(&err), "ValidationError", "{codes:?}");
                assert!(!err.is_transient());
                let text = err.to_string();
                assert!(bad.trim().is_empty() || !text.contains(bad.trim()), "no code in {text}");
                assert!(!text.contains(&good), "no code in {text}");
            }
        }
        assert_eq!(assigned(&iam, &serial), None);
    }

    #[test]
    fn enable_refuses_unknown_users_and_devices_and_devices_in_use() {
        let iam = account();
        let serial = create(&iam, "alice");
        let (first, second) = iam.codes(&serial).expect("seeded");
        let err = enable(&iam, "zoe", &serial, (&first, &second)).expect_err("no such user");
        assert!(matches!(err, IamError::NoSuchEntity { operation: ENABLE_MFA_DEVICE, .. }), "{err}");
        let gone = format!("arn:aws:iam::{ACCOUNT_ID}:mfa/mfa-operator/gone");
        let err = enable(&iam, "alice", &gone, (&first, &second)).expect_err("no such device");
        assert!(matches!(err, IamError::NoSuchEntity { .. }), "{err}");

        enable(&iam, "bob", &serial, (&first, &second)).expect("bob typed alice's codes");
        for user in ["alice", "bob"] {
            let err = enable(&iam, user, &serial, (&first, &second)).expect_err("in use");
            assert!(matches!(err, IamError::EntityAlreadyExists { .. }), "{user}: {err}");
        }
        assert_eq!(assigned(&iam, &serial).as_deref(), Some("bob"));
    }

    #[test]
    fn enable_refuses_a_device_beyond_the_quota() {
        let keys = (0..MAX_MFA_DEVICES_PER_USER)
            .map(|i| MfaDevice { serial: format!("GAHT0000000{i}"), enabled_at: Some(NOW) })
            .collect();
        let iam = account().with_listed("alice", keys);
        let serial = create(&iam, "alice");
        let (first, second) = iam.codes(&serial).expect("seeded");
        let err = enable(&iam, "alice", &serial, (&first, &second)).expect_err("ninth device");
        assert!(matches!(err, IamError::LimitExceeded { .. }), "{err}");
        enable(&iam, "bob", &serial, (&first, &second)).expect("bob has none");
    }

    #[test]
    fn delete_refuses_an_assigned_device_and_a_missing_one() {
        let iam = account();
        let serial = create(&iam, "alice");
        let (first, second) = iam.codes(&serial).expect("seeded");
        enable(&iam, "alice", &serial, (&first, &second)).expect("enable");
        let err = block_on(iam.delete_virtual_mfa_device(&serial)).expect_err("assigned");
        assert!(matches!(err, IamError::DeleteConflict { operation: DELETE_VIRTUAL_MFA_DEVICE, .. }), "{err}");

        iam.deactivate("alice", &serial).expect("deactivate");
        assert_eq!(block_on(iam.list_mfa_devices("alice")).expect("list"), []);
        block_on(iam.delete_virtual_mfa_device(&serial)).expect("unassigned");
        assert!(iam.virtual_devices().is_empty());
        assert_eq!(iam.tags(&serial), None);
        let err = block_on(iam.delete_virtual_mfa_device(&serial)).expect_err("gone");
        assert!(matches!(err, IamError::NoSuchEntity { .. }), "{err}");
        let err = block_on(iam.delete_virtual_mfa_device("not a serial")).expect_err("malformed");
        assert_eq!(kind(&err), "ValidationError");
    }

    #[test]
    fn list_mfa_devices_adds_assigned_virtual_devices_and_refuses_unknown_users() {
        let key = MfaDevice { serial: "GAHT12345678".into(), enabled_at: Some(Timestamp::UNIX_EPOCH) };
        let iam = account().with_listed("alice", vec![key.clone()]);
        assert_eq!(block_on(iam.list_mfa_devices("alice")).expect("list"), std::slice::from_ref(&key));
        let err = block_on(iam.list_mfa_devices("zoe")).expect_err("no such user");
        assert!(matches!(err, IamError::NoSuchEntity { operation: LIST_MFA_DEVICES, .. }), "{err}");

        let serial = create(&iam, "alice");
        let (first, second) = iam.codes(&serial).expect("seeded");
        enable(&iam, "alice", &serial, (&first, &second)).expect("enable");
        let virtual_device = MfaDevice { serial: serial.clone(), enabled_at: Some(NOW) };
        assert_eq!(block_on(iam.list_mfa_devices("alice")).expect("list"), [key, virtual_device]);

        assert!(iam.remove_user("alice"));
        assert!(!iam.remove_user("alice"));
        assert!(matches!(block_on(iam.list_mfa_devices("alice")), Err(IamError::NoSuchEntity { .. })));
        assert_eq!(assigned(&iam, &serial), None, "deleting a user deactivates its devices");
        iam.add_user(user("alice"));
        assert_eq!(block_on(iam.list_mfa_devices("alice")).expect("list"), []);
        let err = iam.deactivate("alice", &serial).expect_err("not assigned");
        assert!(matches!(err, IamError::NoSuchEntity { .. }));
    }

    #[test]
    fn reads_answer_from_the_account() {
        let iam = Account::new()
            .with_users([user("alice")])
            .with_groups(["developers".to_owned()])
            .with_console_users(["alice".to_owned()])
            .with_root_mfa(true);
        assert_eq!(block_on(iam.list_users()).expect("users"), [user("alice")]);
        assert_eq!(block_on(iam.list_groups()).expect("groups"), BTreeSet::from(["developers".to_owned()]));
        assert_eq!(block_on(iam.console_users()).expect("report"), BTreeSet::from(["alice".to_owned()]));
        assert!(block_on(iam.root_account_mfa_enabled()).expect("summary"));
        assert_eq!(iam.calls(), ["ListUsers", "ListGroups", "CredentialReport", "GetAccountSummary"]);
        assert!(iam.writes().is_empty());
    }

    #[test]
    fn a_read_only_account_refuses_every_write_and_changes_nothing() {
        let serial = format!("arn:aws:iam::{ACCOUNT_ID}:mfa/mfa-operator/alice");
        let iam = account()
            .with_devices([VirtualDevice { serial: serial.clone(), user: None, enabled_at: None }])
            .with_seed(&serial, Seed::new("JBSWY3DPEHPK3PXP"))
            .read_only();
        let (first, second) = iam.codes(&serial).expect("seeded");
        let results = [
            block_on(iam.create_virtual_mfa_device(PATH, "bob", &DeviceTags::new())).map(drop),
            block_on(iam.enable_mfa_device("alice", &serial, &first, &second)),
            block_on(iam.delete_virtual_mfa_device(&serial)),
        ];
        for result in results {
            assert!(matches!(result, Err(IamError::AccessDenied { .. })), "{result:?}");
        }
        assert_eq!(iam.virtual_devices(), [VirtualDevice { serial: serial.clone(), user: None, enabled_at: None }]);
        assert_eq!(iam.writes().len(), 3, "attempts are recorded");
        block_on(iam.list_mfa_devices("alice")).expect("reads still answer");
    }

    #[test]
    fn injected_faults_fail_the_next_calls_of_one_operation_then_stop() {
        let iam = account();
        iam.fail_next(2, throttled(LIST_MFA_DEVICES));
        iam.fail_next(1, service_failure(LIST_MFA_DEVICES));
        iam.fail_next(1, no_such_entity(CREATE_VIRTUAL_MFA_DEVICE));
        block_on(iam.list_users()).expect("another operation");
        let answers: Vec<_> = (0..5).map(|_| block_on(iam.list_mfa_devices("alice")).map_err(|e| kind(&e))).collect();
        assert_eq!(
            answers,
            [Err("Throttled".into()), Err("Throttled".into()), Err("ServiceFailure".into()), Ok(vec![]), Ok(vec![])]
        );
        for error in
            [throttled(LIST_USERS), service_failure(LIST_USERS), no_answer(LIST_USERS), no_such_entity(LIST_USERS)]
        {
            assert!(error.is_transient(), "{error}");
        }
        assert!(!access_denied(LIST_USERS).is_transient());

        let err = block_on(iam.create_virtual_mfa_device(PATH, "alice", &DeviceTags::new())).expect_err("injected");
        assert!(matches!(err, IamError::NoSuchEntity { .. }));
        assert!(iam.virtual_devices().is_empty(), "a fault before the effect changes nothing");
        create(&iam, "alice");
    }

    #[test]
    fn an_answer_lost_after_the_effect_leaves_the_write_done() {
        let iam = account();
        iam.apply_then_fail_next(1, no_answer(CREATE_VIRTUAL_MFA_DEVICE));
        let err = block_on(iam.create_virtual_mfa_device(PATH, "alice", &DeviceTags::new())).expect_err("lost");
        assert!(matches!(err, IamError::Transport { .. }));
        let serial = format!("arn:aws:iam::{ACCOUNT_ID}:mfa/mfa-operator/alice");
        assert_eq!(iam.virtual_devices().len(), 1, "IAM created it");
        let again = block_on(iam.create_virtual_mfa_device(PATH, "alice", &DeviceTags::new()));
        assert!(matches!(again, Err(IamError::EntityAlreadyExists { .. })), "the retry finds it");

        iam.apply_then_fail_next(1, no_answer(ENABLE_MFA_DEVICE));
        let (first, second) = iam.codes(&serial).expect("seeded");
        enable(&iam, "alice", &serial, (&first, &second)).expect_err("lost");
        assert_eq!(assigned(&iam, &serial).as_deref(), Some("alice"));
    }

    #[test]
    fn a_denied_operation_is_refused_every_time() {
        let iam = account().denying(LIST_VIRTUAL_MFA_DEVICES);
        for _ in 0..2 {
            let err = block_on(iam.list_virtual_mfa_devices()).expect_err("denied");
            assert!(matches!(err, IamError::AccessDenied { operation: LIST_VIRTUAL_MFA_DEVICES, .. }));
        }
        block_on(iam.list_users()).expect("others answer");
        assert_eq!(iam.calls().len(), 3, "refused calls are recorded");
    }

    #[test]
    #[should_panic(expected = "is not an operation of the fake account")]
    fn a_misspelt_operation_is_a_test_bug() {
        account().fail_next(1, throttled("ListMfaDevices"));
    }

    #[test]
    fn console_cleanup_deletes_every_unassigned_device_and_is_not_a_call() {
        let iam = account();
        let alice = create(&iam, "alice");
        let bob = create(&iam, "bob");
        let (first, second) = iam.codes(&alice).expect("seeded");
        enable(&iam, "alice", &alice, (&first, &second)).expect("enable");
        let calls = iam.calls();
        assert_eq!(iam.console_cleanup(), std::slice::from_ref(&bob));
        assert_eq!(iam.virtual_devices().into_iter().map(|d| d.serial).collect::<Vec<_>>(), [alice]);
        assert_eq!(iam.calls(), calls);
        assert_eq!(iam.seed(&bob), None);
    }

    #[test]
    fn concurrent_calls_overlap() {
        let iam = account();
        let (users, devices, groups) =
            block_on(async { futures::join!(iam.list_users(), iam.list_virtual_mfa_devices(), iam.list_groups()) });
        assert!(users.is_ok() && devices.is_ok() && groups.is_ok());
        assert_eq!(iam.max_in_flight(), 3);
        block_on(iam.list_users()).expect("users");
        assert_eq!(iam.max_in_flight(), 3, "the most at once, not the last");
    }

    #[test]
    fn debug_never_shows_a_seed() {
        let iam = account();
        let serial = create(&iam, "alice");
        let seed = iam.seed(&serial).expect("seeded");
        let debug = format!("{iam:?}");
        assert!(debug.contains(&serial));
        assert!(!debug.contains(seed.expose()), "the seed is redacted");
    }
}
