//! Where the page finds links: the [`LinkStore`] trait (the operator implements it over
//! state it owns) and [`MemoryLinkStore`], an in-memory implementation for tests and
//! single-process use.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};

use jiff::Timestamp;

use crate::link::{LinkId, Record};

/// The store could not answer. The message is for logs and must hold no token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("link store unavailable: {0}")]
pub struct StoreError(pub String);

/// Why a link could not be marked used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MarkError {
    /// Someone marked it first (another window, another replica).
    #[error("the link was used already")]
    AlreadyUsed,
    /// The record is gone (revoked meanwhile).
    #[error("no such link")]
    Missing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The links the page may open, keyed by [`LinkId`].
pub trait LinkStore: Send + Sync + 'static {
    /// The record of `id`, if there is one (revoked links have none).
    fn get(&self, id: &LinkId) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// Marks `id` used at `at`, compare-and-set: fails with [`MarkError::AlreadyUsed`]
    /// when it was used already, so a link enrols one device at most.
    fn mark_used(&self, id: &LinkId, at: Timestamp) -> impl Future<Output = Result<(), MarkError>> + Send;
}

/// Records in memory.
#[derive(Debug, Default)]
pub struct MemoryLinkStore {
    records: Mutex<BTreeMap<LinkId, Record>>,
}

impl MemoryLinkStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, BTreeMap<LinkId, Record>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds (or replaces) a record.
    pub fn insert(&self, id: LinkId, record: Record) {
        self.records().insert(id, record);
    }

    /// Revokes a link.
    pub fn remove(&self, id: &LinkId) -> Option<Record> {
        self.records().remove(id)
    }

    /// The record as it stands (not through the trait).
    pub fn record(&self, id: &LinkId) -> Option<Record> {
        self.records().get(id).cloned()
    }
}

impl LinkStore for MemoryLinkStore {
    fn get(&self, id: &LinkId) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        std::future::ready(Ok(self.record(id)))
    }

    fn mark_used(&self, id: &LinkId, at: Timestamp) -> impl Future<Output = Result<(), MarkError>> + Send {
        let mut records = self.records();
        let result = match records.get_mut(id) {
            None => Err(MarkError::Missing),
            Some(record) if record.used_at.is_some() => Err(MarkError::AlreadyUsed),
            Some(record) => {
                record.used_at = Some(at);
                Ok(())
            }
        };
        std::future::ready(result)
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;
    use crate::link::{DEFAULT_TTL, LINK_ID_BYTES, Purpose, TOKEN_BYTES, mint};

    #[test]
    fn mark_used_is_compare_and_set() {
        let store = MemoryLinkStore::new();
        let id = LinkId::new([1; LINK_ID_BYTES]);
        let purpose = Purpose { account: "123456789012".into(), user: "alice".into(), enrollment_uid: "u".into() };
        let (_, record) = mint(purpose, [2; TOKEN_BYTES], Timestamp::UNIX_EPOCH, DEFAULT_TTL);
        assert_eq!(block_on(store.mark_used(&id, Timestamp::UNIX_EPOCH)), Err(MarkError::Missing));
        store.insert(id.clone(), record.clone());
        assert_eq!(block_on(store.get(&id)), Ok(Some(record)));
        let at = Timestamp::from_second(60).expect("valid");
        assert_eq!(block_on(store.mark_used(&id, at)), Ok(()));
        assert_eq!(block_on(store.mark_used(&id, at)), Err(MarkError::AlreadyUsed));
        assert_eq!(store.record(&id).and_then(|r| r.used_at), Some(at), "the first use stands");
        assert!(store.remove(&id).is_some());
        assert_eq!(block_on(store.get(&id)), Ok(None));
    }
}
