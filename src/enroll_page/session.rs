//! Page sessions: one open setup per link, owned by the browser that pressed Start, with
//! the just-in-time device and its seed, which lives only here and only until the setup
//! ends (enabled, cancelled, too many wrong codes, or timed out and swept).
//!
//! The IAM side mirrors the Secret flow's care: a device is created only under the
//! caller's device path; a leftover *unassigned* device of the same name (a crash before)
//! is deleted and created again; an *assigned* one is never touched.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use jiff::Timestamp;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::DeviceSpec;
use super::csrf::{BrowserKey, Owner};
use super::outcome::Refusal;
use crate::aws::{IamApi, IamError, NewDevice, Seed};
use crate::inventory::{device_name_in_path, device_serial};
use crate::link::{LinkId, Purpose};

/// Wrong pairs of codes after which a setup ends and its device is deleted (as many as
/// the Secret flow allows before it replaces a device).
pub const MAX_GUESSES: u32 = 5;

/// Deletions retried by the sweep at most at once; beyond, the controller's orphan sweep
/// removes the device.
const MAX_LEFTOVERS: usize = 1024;

/// A device created for a setup and not enabled yet.
#[derive(Debug)]
pub struct Pending {
    pub serial: String,
    /// Shown to the person; never logged (its `Debug` is redacted).
    pub seed: Seed,
}

/// One setup.
pub struct Session<I> {
    pub purpose: Purpose,
    pub iam: Arc<I>,
    pub account_label: String,
    /// `None` until the device is created (and after the setup ended).
    pub device: Option<Pending>,
    /// Wrong pairs so far.
    pub guesses: u32,
    /// Over: nothing more may happen in it.
    pub ended: bool,
    pub expires_at: Timestamp,
}

impl<I> std::fmt::Debug for Session<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("purpose", &self.purpose)
            .field("device", &self.device)
            .field("guesses", &self.guesses)
            .field("ended", &self.ended)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

pub type Shared<I> = Arc<AsyncMutex<Session<I>>>;

struct Slot<I> {
    owner: Owner,
    expires_at: Timestamp,
    session: Shared<I>,
}

/// What pressing Start finds.
pub enum Begin<I> {
    /// A new setup, locked for its creator until the device exists.
    Fresh(OwnedMutexGuard<Session<I>>),
    /// This browser's own open setup (a reload, a second tab).
    Resume(Shared<I>),
    /// Another browser's open setup, until it times out.
    Other { expires_at: Timestamp },
    /// Too many setups are open.
    Busy,
}

/// The open setups, by link.
pub struct Sessions<I> {
    slots: Mutex<HashMap<LinkId, Slot<I>>>,
    /// Setups past their time, taken out of `slots`, whose devices the sweep deletes.
    abandoned: Mutex<Vec<Shared<I>>>,
    /// Devices whose deletion failed, retried by the sweep.
    leftovers: Mutex<Vec<(Arc<I>, String)>>,
    /// Serials of every device the page holds (open setups and leftovers).
    devices: Mutex<BTreeSet<String>>,
    max: usize,
    /// Counts the devices deleted.
    deleted: Counter,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<I> std::fmt::Debug for Sessions<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("open", &lock(&self.slots).len())
            .field("devices", &*lock(&self.devices))
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl<I: IamApi + 'static> Sessions<I> {
    pub fn new(max: usize, deleted: Counter) -> Self {
        Self {
            deleted,
            slots: Mutex::default(),
            abandoned: Mutex::default(),
            leftovers: Mutex::default(),
            devices: Mutex::default(),
            max: max.max(1),
        }
    }

    /// Takes out the setup of `link` if it is past its time (the sweep deletes its device).
    fn drop_expired(&self, slots: &mut HashMap<LinkId, Slot<I>>, link: &LinkId, now: Timestamp) -> bool {
        if slots.get(link).is_some_and(|slot| slot.expires_at <= now)
            && let Some(slot) = slots.remove(link)
        {
            lock(&self.abandoned).push(slot.session);
            return true;
        }
        false
    }

    /// Start pressed on `link` by `browser`: a new setup (made by `new`), this browser's
    /// open one, or a refusal.
    pub fn begin(
        &self,
        link: &LinkId,
        browser: &BrowserKey,
        now: Timestamp,
        new: impl FnOnce() -> Session<I>,
    ) -> Begin<I> {
        let mut slots = lock(&self.slots);
        self.drop_expired(&mut slots, link, now);
        if let Some(slot) = slots.get(link) {
            return if slot.owner.is(browser) {
                Begin::Resume(slot.session.clone())
            } else {
                Begin::Other { expires_at: slot.expires_at }
            };
        }
        if slots.len() >= self.max {
            return Begin::Busy;
        }
        let session = new();
        let expires_at = session.expires_at;
        let shared = Arc::new(AsyncMutex::new(session));
        let Ok(guard) = shared.clone().try_lock_owned() else {
            // A mutex nobody else has seen yet is free.
            return Begin::Busy;
        };
        slots.insert(link.clone(), Slot { owner: browser.owner(), expires_at, session: shared });
        Begin::Fresh(guard)
    }

    /// `browser`'s open setup of `link`, for codes or cancel.
    pub fn find(&self, link: &LinkId, browser: &BrowserKey, now: Timestamp) -> Result<Shared<I>, Refusal> {
        let mut slots = lock(&self.slots);
        let owned = slots.get(link).is_some_and(|slot| slot.owner.is(browser));
        if !owned {
            return Err(Refusal::NoSession);
        }
        if self.drop_expired(&mut slots, link, now) {
            return Err(Refusal::SessionExpired);
        }
        slots.get(link).map(|slot| slot.session.clone()).ok_or(Refusal::NoSession)
    }

    /// Forgets `session` as the open setup of `link` (if it still is).
    pub fn close(&self, link: &LinkId, session: &Shared<I>) {
        let mut slots = lock(&self.slots);
        if slots.get(link).is_some_and(|slot| Arc::ptr_eq(&slot.session, session)) {
            slots.remove(link);
        }
    }

    /// Records a device the page now holds.
    pub fn hold(&self, serial: &str) {
        lock(&self.devices).insert(serial.to_owned());
    }

    /// Holds `serial` for a device about to be created, unless another setup holds it
    /// (a replaced link's setup still open for the same user): `false` then.
    pub fn hold_new(&self, serial: &str) -> bool {
        lock(&self.devices).insert(serial.to_owned())
    }

    /// The device is enabled or gone: the page no longer holds it.
    pub fn release(&self, serial: &str) {
        lock(&self.devices).remove(serial);
    }

    /// Serials of the devices the page holds: pending devices of open setups and
    /// deletions still to retry. A sweep of unassigned devices must leave these alone.
    pub fn pending_devices(&self) -> Vec<String> {
        lock(&self.devices).iter().cloned().collect()
    }

    /// Setups open now.
    pub fn open(&self) -> usize {
        lock(&self.slots).len()
    }

    /// Ends `session` and deletes its device; a deletion that failed is retried by the
    /// sweep. Whether a device was deleted.
    pub async fn discard(&self, session: &mut Session<I>) -> bool {
        session.ended = true;
        let Some(device) = session.device.take() else { return false };
        self.delete(&session.iam, &device.serial).await
    }

    async fn delete(&self, iam: &Arc<I>, serial: &str) -> bool {
        match iam.delete_virtual_mfa_device(serial).await {
            Ok(()) | Err(IamError::NoSuchEntity { .. }) => {
                self.release(serial);
                self.deleted.inc();
                true
            }
            // Assigned meanwhile (never by the page), or not the operator's to delete:
            // leave it.
            Err(e @ (IamError::DeleteConflict { .. } | IamError::AccessDenied { .. })) => {
                tracing::warn!(serial, error = %e, "left a page session's device in place");
                self.release(serial);
                false
            }
            Err(e) => {
                let mut leftovers = lock(&self.leftovers);
                if leftovers.len() < MAX_LEFTOVERS {
                    tracing::info!(serial, error = %e, "deleting a page session's device failed; the sweep retries");
                    leftovers.push((iam.clone(), serial.to_owned()));
                } else {
                    tracing::warn!(serial, error = %e, "deleting a page session's device failed; left to the orphan sweep");
                    drop(leftovers);
                    self.release(serial);
                }
                false
            }
        }
    }

    /// Ends every setup past its time at `now` and deletes its device, and retries
    /// deletions that failed. A setup busy at this moment (creating its device, enabling
    /// it) is left for the next sweep. Returns how many devices were deleted.
    pub async fn sweep(&self, now: Timestamp) -> usize {
        // Deletions that failed before this sweep: retried once each below.
        let leftovers = std::mem::take(&mut *lock(&self.leftovers));
        let mut candidates = std::mem::take(&mut *lock(&self.abandoned));
        {
            let mut slots = lock(&self.slots);
            let expired: Vec<LinkId> =
                slots.iter().filter(|(_, slot)| slot.expires_at <= now).map(|(link, _)| link.clone()).collect();
            candidates.extend(expired.iter().filter_map(|link| slots.remove(link)).map(|slot| slot.session));
        }
        let mut deleted = 0;
        for shared in candidates {
            let Ok(mut session) = shared.clone().try_lock_owned() else {
                lock(&self.abandoned).push(shared);
                continue;
            };
            deleted += usize::from(self.discard(&mut session).await);
        }
        for (iam, serial) in leftovers {
            deleted += usize::from(self.delete(&iam, &serial).await);
        }
        deleted
    }
}

/// Creates the device for `purpose` as `spec` says. Refuses when the user has MFA
/// already; a leftover unassigned device of the same name is deleted and created again;
/// an assigned one is never touched.
pub async fn create_device<I: IamApi>(iam: &I, purpose: &Purpose, spec: &DeviceSpec) -> Result<NewDevice, Refusal> {
    let unavailable = |e: IamError| {
        tracing::warn!(user = %purpose.user, error = %e, "the enrollment page could not create a device");
        Refusal::TryLater
    };
    match iam.list_mfa_devices(&purpose.user).await {
        Ok(devices) if !devices.is_empty() => return Err(Refusal::AlreadyHasMfa),
        Ok(_) => {}
        Err(e) => return Err(unavailable(e)),
    }
    let serial = device_serial(&purpose.account, &spec.path, &spec.name);
    if device_name_in_path(&serial, &spec.path) != Some(spec.name.as_str()) {
        tracing::warn!(user = %purpose.user, path = %spec.path, "the device name or path is not one IAM allows");
        return Err(Refusal::TryLater);
    }
    match iam.create_virtual_mfa_device(&spec.path, &spec.name, &spec.tags).await {
        Ok(device) => return Ok(device),
        Err(IamError::EntityAlreadyExists { .. }) => {}
        Err(e) => return Err(unavailable(e)),
    }
    // A device of this name exists: left by a setup that crashed, or someone else's.
    let devices = iam.list_virtual_mfa_devices().await.map_err(unavailable)?;
    match devices.iter().find(|d| d.serial == serial) {
        Some(device) if device.user.is_some() => return Err(Refusal::DeviceInUse),
        Some(_) => match iam.delete_virtual_mfa_device(&serial).await {
            Ok(()) | Err(IamError::NoSuchEntity { .. }) => {
                tracing::info!(serial, "deleted a leftover unassigned device before creating it again");
            }
            Err(IamError::DeleteConflict { .. }) => return Err(Refusal::DeviceInUse),
            Err(e) => return Err(unavailable(e)),
        },
        // Gone since: create it now.
        None => {}
    }
    iam.create_virtual_mfa_device(&spec.path, &spec.name, &spec.tags).await.map_err(unavailable)
}

/// Enables `serial` for `user` with two codes the local check accepted. A lost answer
/// (the device is the user's already) counts as enabled.
pub async fn enable_device<I: IamApi>(
    iam: &I,
    user: &str,
    serial: &str,
    (code1, code2): (&str, &str),
) -> Result<(), Refusal> {
    match iam.enable_mfa_device(user, serial, code1, code2).await {
        Ok(()) => Ok(()),
        Err(IamError::InvalidAuthenticationCode { .. }) => Err(Refusal::AwsRefused),
        Err(IamError::Service { code, .. }) if code == "ValidationError" => Err(Refusal::AwsRefused),
        Err(e @ IamError::EntityAlreadyExists { .. }) => match iam.list_mfa_devices(user).await {
            Ok(devices) if devices.iter().any(|d| d.serial == serial) => {
                tracing::info!(user, error = %e, "the device is enabled for the user already");
                Ok(())
            }
            Ok(_) => Err(Refusal::DeviceInUse),
            Err(_) => Err(Refusal::TryLater),
        },
        Err(IamError::NoSuchEntity { .. }) => Err(Refusal::DeviceGone),
        Err(IamError::LimitExceeded { .. }) => Err(Refusal::DeviceLimit),
        Err(e) => {
            tracing::warn!(user, error = %e, "the enrollment page could not enable a device");
            Err(Refusal::TryLater)
        }
    }
}
