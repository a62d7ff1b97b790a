//! What the enrollment page may do for a link (`delivery: Link`): the controller's answer
//! to "does this link still grant an enrollment?", from the same caches, grants and
//! ownership a reconcile decides from. Reads only.

use super::accounts::Account;
use super::context::Context;
use super::gather::{self, id_of};
use super::reach::{self, Refusal};
use kube::ResourceExt;

/// What the enrollment page needs to act for a link's purpose: the account (the same
/// shared state and IAM client the controller uses), the device path, and the
/// enrollment (`namespace/name`) for the device's tags. `None` when the link no longer
/// grants anything: its enrollment is gone, left `delivery: Link`, its binding no longer
/// reaches that account, or the enrollment no longer selects (within its grant) or owns
/// the user.
pub async fn for_link(ctx: &Context, purpose: &crate::link::Purpose) -> Result<Option<PageReach>, String> {
    let enrollment =
        ctx.store.state().into_iter().find(|e| e.uid().as_deref() == Some(purpose.enrollment_uid.as_str()));
    let Some(enrollment) = enrollment.filter(|e| e.spec.links() && e.metadata.deletion_timestamp.is_none()) else {
        return Ok(None);
    };
    match reach::reach(ctx, &enrollment).await {
        Ok(reach) if reach.binding.spec.account_id == purpose.account => {
            // Selected within the grant and owned by this enrollment, as a reconcile would
            // decide now: a link of a user since excluded or moved to another owner opens
            // nothing, even before the reconcile that revokes it.
            let peers = reach::peers(ctx, &reach.binding.spec.account_id);
            let user_tags = {
                let view = reach.account.view();
                let Some(inventory) = view.inventory.as_ref() else { return Err("the account is not read yet".into()) };
                let Ok(scope) = gather::scope(&enrollment, &reach, &peers, inventory) else { return Ok(None) };
                let owned = scope.owners.get(&purpose.user).is_none_or(|owner| *owner == id_of(&enrollment));
                if !scope.selection.users.contains(&purpose.user) || !owned {
                    return Ok(None);
                }
                inventory.users.get(&purpose.user).map(|u| u.tags.clone()).unwrap_or_default()
            };
            Ok(Some(PageReach {
                device_path: reach.device_path().to_owned(),
                account: reach.account,
                enrollment: format!("{}/{}", enrollment.namespace().unwrap_or_default(), enrollment.name_any()),
                user_tags,
            }))
        }
        Ok(_) | Err(Refusal::NotGranted(_)) => Ok(None),
        Err(Refusal::Iam(e)) => Err(e.to_string()),
        Err(Refusal::Kube(e)) => Err(e.to_string()),
    }
}

/// See [`for_link`].
pub struct PageReach {
    pub account: Account,
    pub device_path: String,
    pub enrollment: String,
    /// The user's IAM tags as the inventory last read them (who the link is for).
    pub user_tags: std::collections::BTreeMap<String, String>,
}
