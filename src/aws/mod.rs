//! AWS IAM behind a small, domain-level interface.
//!
//! No SDK type crosses [`IamApi`]: the inventory and the controller speak in IAM users and
//! MFA devices, and every SDK error is mapped to an [`IamError`] whose text has been
//! sanitised (no request ids, no credentials) before it can reach status, Events or logs.

mod calls;
mod error;
#[cfg(test)]
pub mod fake;
mod sdk;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;

use jiff::Timestamp;

pub use calls::{CallCounter, Observer, Outcome};
pub use error::{IamError, sanitize};
pub use sdk::{IAM_ATTEMPT_TIMEOUT, IAM_OPERATION_TIMEOUT, SdkIam, caller_account, load_sdk_config};

/// Per-user read calls (`ListMFADevices`) in flight at once while IAM is healthy: against
/// AWS every call is a network round trip.
pub const READ_CONCURRENCY: usize = 8;
/// After IAM pushed back (throttling, 5xx, no answer), reads go one at a time for this
/// long: IAM's rate limits are per account, shared with every person and tool in it.
pub const CALM_BEFORE_CONCURRENCY: std::time::Duration = std::time::Duration::from_secs(60);

/// An IAM user with what selection needs: path, group memberships and tags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IamUser {
    pub name: String,
    pub path: String,
    pub arn: String,
    /// Names of the groups the user belongs to.
    pub groups: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// A virtual MFA device as `ListVirtualMFADevices` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualDevice {
    /// Serial number: `arn:aws:iam::<account>:mfa<path><name>`.
    pub serial: String,
    /// The user the device is assigned to; `None` for an unassigned (pending) device.
    pub user: Option<String>,
    /// When the device was enabled (assigned); `None` while unassigned.
    pub enabled_at: Option<Timestamp>,
}

/// Any MFA device of one user, as `ListMFADevices` reports it (virtual, hardware TOTP,
/// FIDO security keys and passkeys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MfaDevice {
    pub serial: String,
    pub enabled_at: Option<Timestamp>,
}

/// A base32 TOTP seed. Its `Debug` never prints the value, so it cannot leak through
/// logs or error chains by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Seed(String);

impl Seed {
    pub fn new(base32: impl Into<String>) -> Self {
        Self(base32.into())
    }

    /// The base32 text (for the seed Secret and TOTP checks only).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Seed(<redacted>)")
    }
}

/// A just-created virtual device: the only moment AWS ever hands out the seed.
#[derive(Clone, Debug)]
pub struct NewDevice {
    pub serial: String,
    pub seed: Seed,
}

/// Tags the operator puts on the devices it creates (real AWS keeps them; moto drops
/// them). They name the enrollment and the user, for people reading the account.
pub type DeviceTags = BTreeMap<String, String>;

/// The IAM operations the operator uses. Implemented by [`SdkIam`] for real AWS (and any
/// endpoint the standard AWS configuration points at, such as the moto test bed).
///
/// Listing methods return every page. Costs are per call of these methods: the
/// inventory calls the sweeps once per refresh and `list_mfa_devices` only for selected
/// users not covered by an assigned virtual device.
pub trait IamApi: Send + Sync {
    /// How many `list_mfa_devices` calls to have in flight at once right now.
    fn read_concurrency(&self) -> usize {
        1
    }

    /// Every IAM user of the account, with group memberships and tags
    /// (`GetAccountAuthorizationDetails` with `Filter=User`, all pages).
    fn list_users(&self) -> impl Future<Output = Result<Vec<IamUser>, IamError>> + Send;

    /// Every virtual MFA device of the account, assigned or not
    /// (`ListVirtualMFADevices` with `AssignmentStatus=Any`, all pages).
    fn list_virtual_mfa_devices(&self) -> impl Future<Output = Result<Vec<VirtualDevice>, IamError>> + Send;

    /// Names of every IAM group of the account (`ListGroups`, all pages), so that a group
    /// named in a selector that does not exist can be told from an empty one.
    fn list_groups(&self) -> impl Future<Output = Result<BTreeSet<String>, IamError>> + Send;

    /// Every MFA device of one user (`ListMFADevices`, all pages).
    fn list_mfa_devices(&self, user: &str) -> impl Future<Output = Result<Vec<MfaDevice>, IamError>> + Send;

    /// Names of the users with a console password, from the credential report
    /// (`GenerateCredentialReport` until complete, then `GetCredentialReport`): two or
    /// three calls for the whole account instead of one `GetLoginProfile` per user. The
    /// report may be up to four hours old, which is fine for console access.
    fn console_users(&self) -> impl Future<Output = Result<BTreeSet<String>, IamError>> + Send;

    /// Whether the account's root user has MFA (`GetAccountSummary`, `AccountMFAEnabled`).
    fn root_account_mfa_enabled(&self) -> impl Future<Output = Result<bool, IamError>> + Send;

    /// Creates a virtual MFA device `path` + `name` (`CreateVirtualMFADevice`).
    fn create_virtual_mfa_device(
        &self,
        path: &str,
        name: &str,
        tags: &DeviceTags,
    ) -> impl Future<Output = Result<NewDevice, IamError>> + Send;

    /// Deletes an (unassigned) virtual MFA device (`DeleteVirtualMFADevice`). The operator
    /// never deactivates a device: on real AWS deleting an assigned device fails with
    /// `DeleteConflict`.
    fn delete_virtual_mfa_device(&self, serial: &str) -> impl Future<Output = Result<(), IamError>> + Send;

    /// Assigns and enables a device for a user with two consecutive codes
    /// (`EnableMFADevice`).
    fn enable_mfa_device(
        &self,
        user: &str,
        serial: &str,
        code1: &str,
        code2: &str,
    ) -> impl Future<Output = Result<(), IamError>> + Send;
}
