//! Link delivery as the controller sees it (issue 11): the [`Links`] service mints a
//! one-time link for a user, keeps only its record (in state the operator owns), delivers
//! it to the person, lists an enrollment's live links and revokes them. The controller
//! decides when; this layer does it. The page (`enroll_page`) opens the same records.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::BoxFuture;
use jiff::{SignedDuration, Timestamp};

use crate::link::{Purpose, Record};

/// Label on every Secret that keeps link records (in the operator's own namespace).
pub const LABEL_LINKS: &str = "iam.mfa-operator.dev/links";
/// Labels naming the enrollment a link-record Secret belongs to: the controller watches
/// these Secrets and reconciles that enrollment when one changes (a link was used).
pub const LABEL_ENROLLMENT_NAMESPACE: &str = "iam.mfa-operator.dev/enrollment-namespace";
pub const LABEL_ENROLLMENT_NAME: &str = "iam.mfa-operator.dev/enrollment-name";

/// How a link reaches its person.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// To the address in the user's IAM tag (`--address-tag`, default `email`).
    Email,
    /// To the operator's chat webhook.
    Webhook,
    /// Nowhere: an admin asks for one with `kubectl mfa link`.
    Manual,
}

/// A link to send.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub purpose: Purpose,
    /// The enrollment, for the record's labels and the message (`namespace/name`).
    pub enrollment: String,
    pub ttl: SignedDuration,
    pub channel: Channel,
    /// The user's IAM tags (the address is read from them; never logged).
    pub tags: BTreeMap<String, String>,
    /// The account's alias, if the operator knows it (else the id is shown).
    pub account_alias: Option<String>,
    /// When the link is minted (the controller's clock, so status shows exactly the
    /// record's times).
    pub at: Timestamp,
}

/// A link that went out: what status shows (never the link).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub sent_at: Timestamp,
    pub expires_at: Timestamp,
}

/// Why a link could not be sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The user has no usable address for the channel: a person must add one
    /// (`NoDeliveryAddress`). The message says which tag and why, never its value.
    #[error("{0}")]
    NoAddress(String),
    /// The channel is not configured in this operator (no SMTP server, no webhook).
    #[error("{0}")]
    NotConfigured(String),
    /// Delivery or the record store failed; retried. Holds no token.
    #[error("{0}")]
    Failed(String),
}

/// Mints, keeps, delivers and revokes links. Implemented over the operator's own Secrets
/// and the configured SMTP server or webhook; in tests, in memory.
pub trait Links: Send + Sync {
    /// Mints a link for `link.purpose`, stores its record (replacing any earlier link of
    /// the same purpose) and delivers it.
    fn send(&self, link: Outgoing) -> BoxFuture<'_, Result<Sent, SendError>>;

    /// The live records of one enrollment (by uid), by user: not revoked (used and
    /// expired ones included, so status can say so).
    fn records(&self, enrollment_uid: &str) -> BoxFuture<'_, Result<BTreeMap<String, Record>, SendError>>;

    /// Revokes the links of `users` of one enrollment (all of them when `None`).
    fn revoke<'a>(
        &'a self,
        enrollment_uid: &'a str,
        users: Option<&'a BTreeSet<String>>,
    ) -> BoxFuture<'a, Result<(), SendError>>;

    /// Whether the enrollment may have link records: `false` only when the service knows
    /// it has none (so a reconcile of an enrollment without links reads nothing).
    fn may_have_records(&self, _enrollment_uid: &str) -> bool {
        true
    }

    /// Serials of the pending devices that open page sessions hold right now: the orphan
    /// sweep leaves them alone.
    fn held_devices(&self) -> BTreeSet<String>;
}

pub mod kube;
#[cfg(test)]
pub mod memory;
pub mod page_accounts;

pub use self::kube::{KubeLinks, LinksConfig};
pub use page_accounts::{Grant, GrantSlot, Grants, PageAccounts};
