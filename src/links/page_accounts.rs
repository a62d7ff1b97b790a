//! The enrollment page's [`Accounts`] in the real operator: a link opens only while the
//! controller still grants it, and the page creates the device the Secret flow would
//! have created (the binding's device path, the user's name, the same tags).
//!
//! What a link is granted is the controller's to say (its caches of enrollments,
//! bindings and namespaces, its IAM clients), so the page asks through [`Grants`], which
//! the controller implements over its `Context`. The controller exists only on the
//! leader and only while it runs: the page reaches it through a [`GrantSlot`] that the
//! controller fills when it starts and empties when it stops. While the slot is empty (a
//! standby replica, or the leader before its caches are built) the page answers "try
//! again in a moment" and creates nothing, so every device a page session holds is on
//! the replica whose controller knows it ([`super::Links::held_devices`]).

use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;

use crate::aws::DeviceTags;
use crate::controller::accounts::AccountIam;
use crate::delivery::address_from_tags;
use crate::enroll_page::{Accounts, DeviceSpec, ReachError, Reached};
use crate::link::Purpose;

/// Tag naming the enrollment (`namespace/name`) on a device the operator creates; the
/// same key as the Secret flow's devices.
pub const TAG_ENROLLMENT: &str = "iam.mfa-operator.dev/enrollment";
/// Tag naming the IAM user on a device the operator creates.
pub const TAG_USER: &str = "iam.mfa-operator.dev/user";

/// What the controller grants a link now.
#[derive(Clone)]
pub struct Grant {
    /// IAM of the link's account, as the enrollment's binding reaches it.
    pub iam: AccountIam,
    /// Shown to the person: the account alias, or the account id.
    pub account_label: String,
    /// The binding's device path (`spec.device.path`).
    pub device_path: String,
    /// The enrollment, `namespace/name` (the device's enrollment tag).
    pub enrollment: String,
    /// The user's IAM tags, as the controller's inventory last read them.
    pub user_tags: std::collections::BTreeMap<String, String>,
}

/// The controller's answer to "does this link still grant an enrollment?".
///
/// Implementations answer [`ReachError::Revoked`] when the enrollment with
/// `purpose.enrollment_uid` is gone (or is being deleted), is no longer in `Link`
/// delivery, no longer selects `purpose.user`, or its binding no longer reaches
/// `purpose.account`; [`ReachError::Unavailable`] when the account cannot be reached now.
pub trait Grants: Send + Sync {
    fn grant<'a>(&'a self, purpose: &'a Purpose) -> BoxFuture<'a, Result<Grant, ReachError>>;
}

/// Where the page finds the running controller's [`Grants`]. Cloning shares the slot.
#[derive(Clone, Default)]
pub struct GrantSlot(Arc<RwLock<Option<Arc<dyn Grants>>>>);

impl GrantSlot {
    /// The controller started: links are answered by `grants` from now on.
    pub fn set(&self, grants: Arc<dyn Grants>) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(grants);
    }

    /// The controller stopped: links are answered "try later" again.
    pub fn clear(&self) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    fn current(&self) -> Option<Arc<dyn Grants>> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl std::fmt::Debug for GrantSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("GrantSlot").field(&self.current().is_some()).finish()
    }
}

/// The device a link's setup creates: as the Secret flow's `create_pending` names and
/// tags it (`src/controller/act.rs`): the user's name under the binding's device path,
/// tagged with the enrollment (`namespace/name`) and the user.
pub fn device_spec(device_path: &str, enrollment: &str, user: &str) -> DeviceSpec {
    DeviceSpec {
        path: device_path.to_owned(),
        name: user.to_owned(),
        tags: DeviceTags::from([
            (TAG_ENROLLMENT.to_owned(), enrollment.to_owned()),
            (TAG_USER.to_owned(), user.to_owned()),
        ]),
    }
}

/// [`Grants`] of the running controller: [`crate::controller::for_link`] over its
/// context. The controller puts one into the page's [`GrantSlot`] when it starts.
pub struct ControllerGrants(pub Arc<crate::controller::Context>);

impl Grants for ControllerGrants {
    fn grant<'a>(&'a self, purpose: &'a Purpose) -> BoxFuture<'a, Result<Grant, ReachError>> {
        Box::pin(async move {
            match crate::controller::for_link(&self.0, purpose).await {
                Ok(Some(reach)) => Ok(Grant {
                    iam: reach.account.iam.clone(),
                    // The controller knows no alias here: the page shows the account id.
                    account_label: purpose.account.clone(),
                    device_path: reach.device_path,
                    enrollment: reach.enrollment,
                    user_tags: reach.user_tags,
                }),
                Ok(None) => Err(ReachError::Revoked),
                Err(message) => Err(ReachError::Unavailable(message)),
            }
        })
    }
}

/// The page's accounts: whatever the running controller grants.
#[derive(Clone, Debug, Default)]
pub struct PageAccounts {
    grants: GrantSlot,
    /// The IAM user tag with the person's address: who a link is for.
    address_tag: String,
}

impl PageAccounts {
    pub fn new(grants: GrantSlot, address_tag: impl Into<String>) -> Self {
        Self { grants, address_tag: address_tag.into() }
    }
}

impl Accounts for PageAccounts {
    type Iam = AccountIam;

    async fn reach(&self, purpose: &Purpose) -> Result<Reached<AccountIam>, ReachError> {
        let grants = self.grants.current().ok_or_else(|| {
            ReachError::Unavailable("the controller is not running on this replica (a standby, or starting)".into())
        })?;
        let grant = grants.grant(purpose).await?;
        Ok(Reached {
            device: device_spec(&grant.device_path, &grant.enrollment, &purpose.user),
            iam: Arc::new(grant.iam),
            account_label: grant.account_label,
            identity: address_from_tags(&grant.user_tags, &self.address_tag).ok().map(|a| a.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    struct Fixed(Result<(), ReachError>);

    impl Grants for Fixed {
        fn grant<'a>(&'a self, _: &'a Purpose) -> BoxFuture<'a, Result<Grant, ReachError>> {
            let fake = Arc::new(crate::aws::fake::Account::new());
            let result = self.0.clone().map(|()| Grant {
                iam: AccountIam::Fake(fake),
                account_label: "payments-prod".into(),
                device_path: "/mfa-operator/".into(),
                enrollment: "team-a/everyone".into(),
                user_tags: std::collections::BTreeMap::from([("Email".into(), "alice@example.com".into())]),
            });
            futures::future::ready(result).boxed()
        }
    }

    fn purpose() -> Purpose {
        Purpose { account: "123456789012".into(), user: "alice".into(), enrollment_uid: "u".into() }
    }

    #[tokio::test]
    async fn a_link_reaches_what_the_running_controller_grants() {
        let slot = GrantSlot::default();
        let accounts = PageAccounts::new(slot.clone(), "email");
        let refused = accounts.reach(&purpose()).await.err();
        assert!(matches!(refused, Some(ReachError::Unavailable(_))), "no controller here: try later");
        slot.set(Arc::new(Fixed(Ok(()))));
        let reached = accounts.reach(&purpose()).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reached.account_label, "payments-prod");
        assert_eq!(
            reached.device,
            DeviceSpec {
                path: "/mfa-operator/".into(),
                name: "alice".into(),
                tags: DeviceTags::from([
                    ("iam.mfa-operator.dev/enrollment".into(), "team-a/everyone".into()),
                    ("iam.mfa-operator.dev/user".into(), "alice".into()),
                ]),
            }
        );
        slot.set(Arc::new(Fixed(Err(ReachError::Revoked))));
        assert_eq!(accounts.reach(&purpose()).await.err(), Some(ReachError::Revoked));
        slot.clear();
        assert!(matches!(accounts.reach(&purpose()).await.err(), Some(ReachError::Unavailable(_))));
    }
}
