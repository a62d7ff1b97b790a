//! What a reconcile gathers before it decides: the shared inventory (refreshed when
//! stale), who owns which user and what this enrollment selects, its seed Secrets, and
//! what the status last written says about refusals, and its one-time links. Reads only: the one write here is
//! the refreshed inventory in the account's shared view.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::{Resource, ResourceExt};

use super::accounts::{Account, View};
use super::context::{Context, Error, LinkService, Result};
use super::decide::{Claims, EnrollmentId, REFUSAL_PREFIX, Refusals, owners};
use super::reach::{Reach, grant_of};
use super::seed_secret::{self, SeedSecret, Untrusted};
use super::selection::{Selection, select};
use super::vocabulary::{Blocker, ConditionReason};
use crate::aws::IamError;
use crate::crd::{MfaAccountBinding, MfaEnrollment, MfaEnrollmentSpec, MfaEnrollmentStatus, Mode};
use crate::inventory::Inventory;

/// Every granted enrollment of an account with its binding (see `reach::peers`).
pub type Peers = [(std::sync::Arc<MfaEnrollment>, std::sync::Arc<MfaAccountBinding>)];

/// An enrollment's identity.
pub fn id_of(enrollment: &MfaEnrollment) -> EnrollmentId {
    EnrollmentId { namespace: enrollment.namespace().unwrap_or_default(), name: enrollment.name_any() }
}

/// Refreshes the account's shared inventory when it is older than this enrollment's
/// resync interval, or than this generation of the spec when it names users the
/// inventory does not know, or lacks the console users a peer needs. A refresh another
/// reconcile finished meanwhile counts.
pub async fn refresh_if_stale(
    enrollment: &MfaEnrollment,
    ctx: &Context,
    account: &Account,
    peers: &Peers,
) -> Result<(), IamError> {
    let now = ctx.now();
    let needs_console =
        enrollment.spec.users.console_access_only || peers.iter().any(|(p, _)| p.spec.users.console_access_only);
    let max_age = max_inventory_age(enrollment);
    let generation_seen = ctx.generation_seen(enrollment);
    let stale = |view: &View| {
        view.inventory.as_ref().is_none_or(|inv| {
            now.duration_since(inv.fetched_at) >= max_age
                || (inv.fetched_at < generation_seen && names_unknown(&enrollment.spec, inv))
                || (needs_console && inv.console_users.is_none())
        })
    };
    if !stale(&account.view()) {
        return Ok(());
    }
    let load = async {
        let inventory = Inventory::load(&account.iam, needs_console, ctx.now()).await?;
        tracing::debug!(
            users = inventory.users.len(),
            devices = inventory.virtual_device_count(),
            "inventory refreshed"
        );
        let claims = load_claims(ctx).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot list seed Secrets");
            IamError::Transport { operation: "ListSecrets", message: e.to_string() }
        })?;
        Ok((inventory, claims))
    };
    account.refresh(stale, load).await
}

/// Who this enrollment may act for, from the inventory.
pub struct Scope {
    pub selection: Selection,
    /// The owner of each selected user among every Enroll-mode peer (oldest first).
    pub owners: BTreeMap<String, EnrollmentId>,
    /// A value in the spec a person must fix.
    pub spec_blocker: Option<Blocker>,
    /// Selected users whose MFA devices are still to be listed.
    pub unresolved: Vec<String>,
}

/// What this enrollment selects within its grant, and who owns those users: every
/// Enroll-mode peer's granted selection, oldest first. `Err` when the enrollment selects
/// beyond its grant (the refusal's message).
pub fn scope(enrollment: &MfaEnrollment, reach: &Reach, peers: &Peers, inventory: &Inventory) -> Result<Scope, String> {
    let selected = |spec: &MfaEnrollmentSpec, binding: &MfaAccountBinding| {
        let selection = select(&spec.users, &inventory.users, inventory.console_users.as_ref());
        grant_of(binding).narrow(spec, selection, &inventory.users)
    };
    let selections: Vec<(EnrollmentId, Option<Timestamp>, Selection)> = peers
        .iter()
        .filter(|(p, _)| p.spec.mode == Mode::Enroll)
        .map(|(p, binding)| {
            let created = p.meta().creation_timestamp.as_ref().map(|t| t.0);
            // A peer that selects beyond its grant owns nobody.
            (id_of(p), created, selected(&p.spec, binding).unwrap_or_default())
        })
        .collect();
    let selection = selected(&enrollment.spec, &reach.binding)?;
    // Of this enrollment's users only: the map lives as long as the reconcile.
    let owners = owners(selections.iter().map(|(id, created, s)| (id, *created, s)), Some(&selection.users));
    let spec_blocker = unknown_groups(&selection, &inventory.groups);
    let unresolved = inventory.unresolved(&selection.users);
    Ok(Scope { selection, owners, spec_blocker, unresolved })
}

/// This enrollment's seed Secrets and what the operator knows about them.
pub struct Seeds {
    /// Those whose integrity tag verified.
    pub secrets: Vec<SeedSecret>,
    /// Look-alikes with this enrollment's labels.
    pub untrusted: Vec<Untrusted>,
    /// Each user's refused submissions, from the status last written.
    pub refusals: BTreeMap<String, Refusals>,
    /// When the operator first saw the current version of each seed Secret (by name).
    pub received: BTreeMap<String, Timestamp>,
    /// This enrollment's one-time link records, by user.
    pub links: BTreeMap<String, crate::link::Record>,
    /// Pending devices that open enrollment-page sessions hold.
    pub held: BTreeSet<String>,
}

/// Reads this enrollment's seed Secrets fresh, with what `last` (the status last
/// written) recorded about refusals.
pub async fn seeds(ctx: &Context, enrollment: &MfaEnrollment, last: Option<&MfaEnrollmentStatus>) -> Result<Seeds> {
    let namespace = enrollment.namespace().ok_or(Error::NoNamespace)?;
    let (secrets, untrusted) = list_seed_secrets(ctx, enrollment).await?;
    let received = secrets
        .iter()
        .filter_map(|s| {
            let at = ctx.received.at(&namespace, &s.name, s.resource_version.as_deref()?)?;
            Some((s.name.clone(), at))
        })
        .collect();
    let (links, held) = match &ctx.config.links {
        Some(LinkService(links)) => {
            let uid = enrollment.uid().unwrap_or_default();
            // An enrollment without Link delivery reads its records only to revoke links
            // left from when it had it: not on every reconcile when there are none.
            let records = if enrollment.spec.links() || links.may_have_records(&uid) {
                links.records(&uid).await.map_err(|e| Error::WorkFailed(e.to_string()))?
            } else {
                BTreeMap::new()
            };
            (records, links.held_devices())
        }
        None => Default::default(),
    };
    Ok(Seeds { secrets, untrusted, refusals: refusals(last), received, links, held })
}

/// How old an inventory may be before this enrollment refreshes it.
fn max_inventory_age(enrollment: &MfaEnrollment) -> jiff::SignedDuration {
    let resync: Duration = enrollment.spec.resync_interval.into();
    jiff::SignedDuration::try_from(resync).unwrap_or(jiff::SignedDuration::from_mins(10))
}

/// Whether `spec` names a user the inventory does not know: a new or changed spec that
/// does is decided from a fresh inventory (the user may have been created just before),
/// one that does not shares the inventory as it is.
fn names_unknown(spec: &crate::crd::MfaEnrollmentSpec, inventory: &Inventory) -> bool {
    let Some(names) = &spec.users.names else { return false };
    let known: std::collections::BTreeSet<String> = inventory.users.keys().map(|n| n.to_lowercase()).collect();
    names.iter().any(|n| !known.contains(&n.to_lowercase()))
}

/// Groups named in the selector that do not exist in the account: Stalled until fixed.
fn unknown_groups(selection: &Selection, groups: &std::collections::BTreeSet<String>) -> Option<Blocker> {
    let unknown = selection.unknown_groups(groups);
    (!unknown.is_empty()).then(|| Blocker {
        reason: ConditionReason::InvalidSpec,
        message: format!("spec.users.groups: no IAM group named {} in the account", unknown.join(", ")),
    })
}

/// Device serial -> enrollments holding a seed Secret for it, across watched namespaces.
/// Only Secrets whose integrity tag verifies and whose owner is a live enrollment count:
/// a look-alike Secret claims nothing. Read as metadata, page by page, so a tenant who
/// creates thousands of labelled Secrets costs a page of memory, not their contents.
pub async fn load_claims(ctx: &Context) -> Result<Claims> {
    let enrollments: BTreeMap<String, EnrollmentId> =
        ctx.store.state().iter().filter_map(|e| Some((e.uid()?, id_of(e)))).collect();
    let mut claims = Claims::new();
    for api in secret_apis(&ctx.client, &ctx.config.namespaces) {
        let mut params = ListParams::default().labels(&seed_secret::managed_selector()).limit(CLAIMS_PAGE);
        loop {
            let page = api.list_metadata(&params).await.map_err(Error::kube("list seed Secrets"))?;
            for secret in &page.items {
                let Ok(verified) = seed_secret::verify_meta(&secret.metadata, &ctx.integrity) else { continue };
                // The labels are not under the tag: they must agree with the owner it names.
                let label = secret.labels().get(seed_secret::LABEL_ENROLLMENT);
                if let Some(holder) = enrollments.get(&verified.enrollment_uid)
                    && secret.namespace().as_deref() == Some(holder.namespace.as_str())
                    && label == Some(&seed_secret::enrollment_label(&holder.name))
                {
                    claims.entry(verified.serial).or_default().push(holder.clone());
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
    }
    Ok(claims)
}

/// Secrets per page when listing claims (metadata only).
const CLAIMS_PAGE: u32 = 500;
/// Seed Secrets per page when listing an enrollment's (whole objects).
const SECRETS_PAGE: u32 = 100;

/// This enrollment's seed Secrets, read fresh (never from a cache: a stale view could
/// make the operator replace a device whose Secret exists), split into those the
/// operator wrote and look-alikes.
pub async fn list_seed_secrets(ctx: &Context, enrollment: &MfaEnrollment) -> Result<(Vec<SeedSecret>, Vec<Untrusted>)> {
    let namespace = enrollment.namespace().ok_or(Error::NoNamespace)?;
    let uid = enrollment.uid().unwrap_or_default();
    let api: Api<Secret> = ctx.api(&namespace);
    // Paged, and only the parsed form kept: look-alikes a tenant piles up cost a page of
    // memory at a time, not all of them at once.
    let mut params =
        ListParams::default().labels(&seed_secret::enrollment_selector(&enrollment.name_any())).limit(SECRETS_PAGE);
    let (mut trusted, mut untrusted) = (Vec::new(), Vec::new());
    loop {
        let page = api.list(&params).await.map_err(Error::kube("list seed Secrets"))?;
        for secret in &page.items {
            match seed_secret::parse(secret, &ctx.integrity, &uid) {
                Ok(parsed) => trusted.push(parsed),
                // Only what looks like a seed Secret is the operator's to remove; any other
                // Secret that merely carries the labels is ignored (and claims nothing).
                Err(e) if secret.type_.as_deref() == Some(seed_secret::SECRET_TYPE) => {
                    tracing::warn!(error = %e, "seed Secret not trusted");
                    untrusted.push(e);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a Secret with the operator's labels that is not a seed Secret")
                }
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    Ok((trusted, untrusted))
}

/// Each user's refused submissions as the operator last recorded them in status.
fn refusals(status: Option<&MfaEnrollmentStatus>) -> BTreeMap<String, Refusals> {
    status
        .into_iter()
        .flat_map(|s| &s.users)
        .map(|u| {
            let refusals = Refusals {
                pending_since: u.pending_since.as_ref().map(|t| t.0),
                failed_attempts: u.failed_attempts.unwrap_or(0),
                last: u.message.clone().filter(|m| m.starts_with(REFUSAL_PREFIX)),
            };
            (u.name.clone(), refusals)
        })
        .collect()
}

/// Seed Secrets' metadata in each watched namespace, or in every namespace.
pub(crate) fn secret_apis(client: &Client, namespaces: &[String]) -> Vec<Api<PartialObjectMeta<Secret>>> {
    if namespaces.is_empty() {
        return vec![Api::all(client.clone())];
    }
    namespaces.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect()
}
