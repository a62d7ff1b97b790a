//! An in-memory [`Links`] for unit tests: records by enrollment and user, the tokens it
//! "delivered" (so a test can open the page with one), and failures on demand.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use futures::future::{BoxFuture, FutureExt};
use jiff::Timestamp;

use super::{Channel, Links, Outgoing, SendError, Sent};
use crate::link::{self, Record, TOKEN_BYTES};

#[derive(Default)]
pub struct MemoryLinks {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// enrollment uid -> user -> record
    records: BTreeMap<String, BTreeMap<String, Record>>,
    /// Everything sent, in order: (user, channel).
    sent: Vec<(String, Channel)>,
    held: BTreeSet<String>,
    now: Option<Timestamp>,
}

impl MemoryLinks {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The users links were sent to, in order.
    pub fn sent(&self) -> Vec<(String, Channel)> {
        self.state().sent.clone()
    }

    pub fn hold(&self, serial: &str) {
        self.state().held.insert(serial.to_owned());
    }

    /// Marks `user`'s link of `enrollment_uid` used.
    pub fn use_link(&self, enrollment_uid: &str, user: &str, at: Timestamp) {
        if let Some(record) = self.state().records.get_mut(enrollment_uid).and_then(|r| r.get_mut(user)) {
            record.used_at = Some(at);
        }
    }

    /// The clock minting uses (default: the record's purpose is minted at the epoch).
    pub fn set_now(&self, now: Timestamp) {
        self.state().now = Some(now);
    }
}

impl Links for MemoryLinks {
    fn send(&self, link: Outgoing) -> BoxFuture<'_, Result<Sent, SendError>> {
        let result = (|| {
            if link.channel == Channel::Email {
                crate::delivery::address_from_tags(&link.tags, crate::delivery::DEFAULT_ADDRESS_TAG)
                    .map_err(|e| SendError::NoAddress(e.to_string()))?;
            }
            let mut state = self.state();
            let now = state.now.unwrap_or(link.at);
            let user = link.purpose.user.clone();
            let uid = link.purpose.enrollment_uid.clone();
            let (_, record) = link::mint(link.purpose, [7; TOKEN_BYTES], now, link.ttl);
            let sent = Sent { sent_at: record.minted_at, expires_at: record.expires_at };
            state.records.entry(uid).or_default().insert(user.clone(), record);
            state.sent.push((user, link.channel));
            Ok(sent)
        })();
        futures::future::ready(result).boxed()
    }

    fn records(&self, enrollment_uid: &str) -> BoxFuture<'_, Result<BTreeMap<String, Record>, SendError>> {
        let records = self.state().records.get(enrollment_uid).cloned().unwrap_or_default();
        futures::future::ready(Ok(records)).boxed()
    }

    fn revoke<'a>(
        &'a self,
        enrollment_uid: &'a str,
        users: Option<&'a BTreeSet<String>>,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        let mut state = self.state();
        match users {
            None => {
                state.records.remove(enrollment_uid);
            }
            Some(users) => {
                if let Some(records) = state.records.get_mut(enrollment_uid) {
                    records.retain(|user, _| !users.contains(user));
                }
            }
        }
        futures::future::ready(Ok(())).boxed()
    }

    fn held_devices(&self) -> BTreeSet<String> {
        self.state().held.clone()
    }
}
