//! A read-only account in memory for unit tests of code that reads IAM through
//! [`IamApi`] (the audit, the inventory's resolve step): it answers from its fields,
//! records every call and the most calls it had in flight at once (each answer yields
//! once, so concurrent callers overlap), can refuse one operation with AccessDenied, and
//! refuses every write (nothing that reads may write).

use std::collections::{BTreeMap, BTreeSet};
use std::future::{Future, ready};
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use super::{DeviceTags, IamApi, IamError, IamUser, MfaDevice, NewDevice, VirtualDevice};

#[derive(Debug, Default)]
pub struct ReadOnlyAccount {
    pub users: Vec<IamUser>,
    pub devices: Vec<VirtualDevice>,
    /// What `ListMFADevices` answers per user (empty when absent).
    pub listed: BTreeMap<String, Vec<MfaDevice>>,
    pub groups: BTreeSet<String>,
    /// Users with a console password (the credential report).
    pub console: BTreeSet<String>,
    pub root_mfa: bool,
    /// Every call in order: the operation, with the user name for `ListMFADevices`.
    pub calls: Mutex<Vec<String>>,
    /// The IAM operation to refuse with AccessDenied.
    pub deny: Option<&'static str>,
    /// Calls in flight now, and the most at once (see [`Self::max_in_flight`]).
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

impl ReadOnlyAccount {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("calls lock").clone()
    }

    /// The most calls that were in flight at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    fn answer<T: Send>(
        &self,
        call: String,
        operation: &'static str,
        value: T,
    ) -> impl Future<Output = Result<T, IamError>> + Send {
        self.calls.lock().expect("calls lock").push(call);
        let denied = self.deny == Some(operation);
        async move {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            YieldOnce(false).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if denied {
                let message = "not authorized to perform this action".to_owned();
                return Err(IamError::AccessDenied { operation, message });
            }
            Ok(value)
        }
    }
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

fn refused(operation: &'static str) -> IamError {
    IamError::Transport { operation, message: "a read-only fake account refuses writes".into() }
}

impl IamApi for ReadOnlyAccount {
    fn read_concurrency(&self) -> usize {
        super::READ_CONCURRENCY
    }

    fn list_users(&self) -> impl Future<Output = Result<Vec<IamUser>, IamError>> + Send {
        self.answer("ListUsers".into(), "GetAccountAuthorizationDetails", self.users.clone())
    }

    fn list_virtual_mfa_devices(&self) -> impl Future<Output = Result<Vec<VirtualDevice>, IamError>> + Send {
        self.answer("ListVirtualMFADevices".into(), "ListVirtualMFADevices", self.devices.clone())
    }

    fn list_groups(&self) -> impl Future<Output = Result<BTreeSet<String>, IamError>> + Send {
        self.answer("ListGroups".into(), "ListGroups", self.groups.clone())
    }

    fn list_mfa_devices(&self, user: &str) -> impl Future<Output = Result<Vec<MfaDevice>, IamError>> + Send {
        let devices = self.listed.get(user).cloned().unwrap_or_default();
        self.answer(format!("ListMFADevices {user}"), "ListMFADevices", devices)
    }

    fn console_users(&self) -> impl Future<Output = Result<BTreeSet<String>, IamError>> + Send {
        self.answer("CredentialReport".into(), "GetCredentialReport", self.console.clone())
    }

    fn root_account_mfa_enabled(&self) -> impl Future<Output = Result<bool, IamError>> + Send {
        self.answer("GetAccountSummary".into(), "GetAccountSummary", self.root_mfa)
    }

    fn create_virtual_mfa_device(
        &self,
        _path: &str,
        _name: &str,
        _tags: &DeviceTags,
    ) -> impl Future<Output = Result<NewDevice, IamError>> + Send {
        ready(Err(refused("CreateVirtualMFADevice")))
    }

    fn delete_virtual_mfa_device(&self, _serial: &str) -> impl Future<Output = Result<(), IamError>> + Send {
        ready(Err(refused("DeleteVirtualMFADevice")))
    }

    fn enable_mfa_device(
        &self,
        _user: &str,
        _serial: &str,
        _code1: &str,
        _code2: &str,
    ) -> impl Future<Output = Result<(), IamError>> + Send {
        ready(Err(refused("EnableMFADevice")))
    }
}
