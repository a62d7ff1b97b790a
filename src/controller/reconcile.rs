//! One reconcile of one `MfaEnrollment`: gather (inventory, Secrets, peers), plan (pure),
//! apply, write status. The finalizer is the only top-level action; cleanup removes the
//! enrollment's pending devices and seed Secrets and nothing else.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};

use super::accounts::{AccountKey, AccountState};
use super::apply::{Applied, apply, delete_seed_secret};
use super::plan::{Claims, EnrollmentId, PlanInput, REFUSAL_PREFIX, Refusals, owners, plan};
use super::seed_secret::{self, SeedSecret, Untrusted};
use super::selection::{Selection, select};
use super::status::{Issue, StatusInput, build, compliant_users, lost_mfa};
use super::vocabulary::{ConditionReason, EventReason};
use super::{Context, Error, FIELD_MANAGER, FINALIZER, Result};
use crate::aws::{IamApi, IamError};
use crate::crd::{MfaEnrollment, MfaEnrollmentStatus, Mode};
use crate::inventory::Inventory;

/// Entry point called by the controller runtime.
pub async fn reconcile(enrollment: Arc<MfaEnrollment>, ctx: Arc<Context>) -> Result<Requeue> {
    let namespace = enrollment.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<MfaEnrollment> = ctx.api(&namespace);
    let started = std::time::Instant::now();
    let result = finalizer(&api, FINALIZER, enrollment.clone(), |event| async {
        match event {
            Finalizer::Apply(e) => reconcile_apply(&e, &ctx).await,
            Finalizer::Cleanup(e) => cleanup(&e, &ctx).await,
        }
    })
    .await;
    let result = match result {
        // A second cleanup read a cached object that still had the finalizer the first
        // one removed: the object is gone, which is what cleanup is for.
        Err(kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(status))) if status.code == 404 => {
            Ok(Requeue::await_change())
        }
        other => other.map_err(|e| Error::Finalizer(Box::new(e))),
    };
    ctx.metrics.observe_reconcile(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.reset_backoff(&enrollment);
    }
    result
}

/// Per-enrollment exponential backoff; the status already says what went wrong.
pub fn error_policy(enrollment: Arc<MfaEnrollment>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.count_error(error.category());
    let delay = ctx.backoff(&enrollment);
    tracing::warn!(enrollment = %enrollment.name_any(), category = error.category(), error = %error, retry_in = ?delay, "reconcile failed");
    Requeue::requeue(delay)
}

fn id_of(enrollment: &MfaEnrollment) -> EnrollmentId {
    EnrollmentId { namespace: enrollment.namespace().unwrap_or_default(), name: enrollment.name_any() }
}

/// How old an inventory may be before this enrollment refreshes it.
fn max_inventory_age(enrollment: &MfaEnrollment) -> jiff::SignedDuration {
    let resync: Duration = enrollment.spec.resync_interval.into();
    jiff::SignedDuration::try_from(resync).unwrap_or(jiff::SignedDuration::from_mins(10))
}

async fn reconcile_apply(enrollment: &MfaEnrollment, ctx: &Context) -> Result<Requeue> {
    let id = id_of(enrollment);
    let key = AccountKey::of(&enrollment.spec);
    let account = ctx.accounts.get(&key).await;
    let mut account = account.lock().await;
    let now = ctx.now();

    // Ownership needs every enrollment: never decide from a store still being filled.
    if ctx.store.wait_until_ready().await.is_err() {
        return Err(Error::WorkFailed("the enrollment cache is shutting down".into()));
    }
    let peers: Vec<Arc<MfaEnrollment>> = ctx
        .store
        .state()
        .into_iter()
        .filter(|p| p.meta().deletion_timestamp.is_none() && AccountKey::of(&p.spec) == key)
        .collect();
    let needs_console =
        enrollment.spec.users.console_access_only || peers.iter().any(|p| p.spec.users.console_access_only);

    // Gather: the shared inventory (refreshed when older than our resync interval).
    let stale = account.inventory.as_ref().is_none_or(|inv| {
        now.duration_since(inv.fetched_at) >= max_inventory_age(enrollment)
            || (needs_console && inv.console_users.is_none())
    });
    if stale && let Err(e) = refresh(&mut account, ctx, needs_console).await {
        return report_iam_failure(enrollment, ctx, e).await;
    }
    let Some(inventory) = account.inventory.as_mut() else {
        return Err(Error::StaleInventory("inventory missing after refresh".into()));
    };

    // Who owns which user: every Enroll-mode peer's selection, oldest first.
    let selections: Vec<(EnrollmentId, Option<jiff::Timestamp>, Selection)> = peers
        .iter()
        .filter(|p| p.spec.mode == Mode::Enroll)
        .map(|p| {
            let created = p.meta().creation_timestamp.as_ref().map(|t| t.0);
            (id_of(p), created, select(&p.spec.users, &inventory.users, inventory.console_users.as_ref()))
        })
        .collect();
    let owners = owners(selections.iter().map(|(id, created, s)| (id, *created, s)));
    let selection = select(&enrollment.spec.users, &inventory.users, inventory.console_users.as_ref());
    let spec_issue = unknown_groups(&selection, &inventory.groups);

    // Only selected users without an assigned virtual device cost a ListMFADevices call.
    let unresolved = inventory.unresolved(&selection.users);
    if !unresolved.is_empty() {
        let iam = account.iam.clone();
        let inventory = account.inventory.as_mut().ok_or_else(|| Error::StaleInventory("inventory vanished".into()))?;
        if let Err(e) = inventory.resolve(&iam, unresolved).await {
            return report_iam_failure(enrollment, ctx, e).await;
        }
    }

    let (secrets, untrusted) = list_seed_secrets(ctx, enrollment).await?;
    let last = ctx.last_status(enrollment);
    let refusals = refusals(last.as_ref());
    let AccountState { iam, inventory, claims } = &mut *account;
    let Some(inventory) = inventory.as_mut() else {
        return Err(Error::StaleInventory("inventory vanished".into()));
    };
    let planned = plan(&PlanInput {
        id: &id,
        spec: &enrollment.spec,
        now,
        inventory,
        selection: &selection,
        owners: &owners,
        secrets: &secrets,
        untrusted: &untrusted,
        refusals: &refusals,
        claims,
    });
    let root_mfa = inventory.root_mfa_enabled;

    let Applied { users, issue, stale_inventory, changed_account } =
        apply(enrollment, ctx, iam, inventory, claims, &secrets, planned).await;
    if stale_inventory {
        account.inventory = None;
    }
    if changed_account && peers.len() > 1 {
        // Other enrollments of this account count the same users: refresh their status
        // from the (already updated) shared inventory.
        ctx.reconcile_all();
    }

    // A value a person must fix outranks a transient failure.
    let issue = match (spec_issue, issue) {
        (_, Some(applied)) if applied.needs_person() => Some(applied),
        (Some(spec), _) => Some(spec),
        (None, applied) => applied,
    };
    let previous = last.as_ref();
    // Only a reconcile that saw the whole picture may say a user lost MFA.
    let clean = issue.is_none() && !stale_inventory;
    let before = ctx.remembered_compliant(&id).unwrap_or_else(|| {
        compliant_users(previous.iter().flat_map(|p| p.users.iter().map(|u| (u.name.as_str(), u.state))))
    });
    let drifted = if clean { lost_mfa(&before, &users) } else { Vec::new() };
    if clean {
        ctx.remember_compliant(&id, compliant_users(users.iter().map(|u| (u.name.as_str(), u.state))));
    }
    for user in drifted {
        publish(ctx, enrollment, EventReason::MfaDeactivated, format!("{user} no longer has an active MFA device"))
            .await;
    }
    let next_expiry = users.iter().filter_map(|u| u.expires_at).min();
    let status = build(StatusInput {
        mode: enrollment.spec.mode,
        generation: enrollment.meta().generation,
        now,
        users,
        issue: issue.clone(),
        root_mfa_enabled: Some(root_mfa),
        previous,
    });
    if let Some(summary) = &status.summary {
        ctx.metrics.set_users(&id.namespace, &id.name, summary);
    }
    write_status(enrollment, ctx, previous, status).await?;

    match issue {
        Some(issue) if !issue.needs_person() => Err(Error::WorkFailed(issue.message)),
        _ => {
            let resync: Duration = enrollment.spec.resync_interval.into();
            let until_expiry = next_expiry
                .map(|t| t.duration_since(now))
                .and_then(|d| Duration::try_from(d).ok())
                .map(|d| d + Duration::from_secs(1));
            Ok(Requeue::requeue(until_expiry.map_or(resync, |d| d.min(resync))))
        }
    }
}

/// Groups named in the selector that do not exist in the account: a value a person must
/// fix (Stalled), as opposed to an existing group without members.
fn unknown_groups(selection: &Selection, groups: &std::collections::BTreeSet<String>) -> Option<Issue> {
    let known: std::collections::BTreeSet<String> = groups.iter().map(|g| g.to_lowercase()).collect();
    let unknown: Vec<&str> =
        selection.empty_groups.iter().filter(|g| !known.contains(&g.to_lowercase())).map(String::as_str).collect();
    (!unknown.is_empty()).then(|| Issue {
        reason: ConditionReason::InvalidSpec,
        message: format!("spec.users.groups: no IAM group named {} in the account", unknown.join(", ")),
    })
}

/// Sweeps the account and reloads the claims of every seed Secret.
async fn refresh(account: &mut AccountState, ctx: &Context, with_console: bool) -> Result<(), IamError> {
    let inventory = Inventory::load(&account.iam, with_console, ctx.now()).await?;
    tracing::debug!(users = inventory.users.len(), devices = inventory.virtual_device_count(), "inventory refreshed");
    account.inventory = Some(inventory);
    match load_claims(ctx).await {
        Ok(claims) => account.claims = claims,
        Err(e) => {
            account.inventory = None;
            tracing::warn!(error = %e, "cannot list seed Secrets");
            return Err(IamError::Transport { operation: "ListSecrets", message: e.to_string() });
        }
    }
    Ok(())
}

/// Device serial -> enrollments holding a seed Secret for it, across watched namespaces.
/// Only Secrets whose integrity tag verifies and whose owner is a live enrollment count:
/// a look-alike Secret claims nothing. Read as metadata, page by page, so a tenant who
/// creates thousands of labelled Secrets costs a page of memory, not their contents.
async fn load_claims(ctx: &Context) -> Result<Claims> {
    let api: Api<PartialObjectMeta<Secret>> = match &ctx.config.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let enrollments: BTreeMap<String, EnrollmentId> =
        ctx.store.state().iter().filter_map(|e| Some((e.uid()?, id_of(e)))).collect();
    let mut claims = Claims::new();
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
            None => return Ok(claims),
        }
    }
}

/// Secrets per page when listing claims (metadata only).
const CLAIMS_PAGE: u32 = 500;
/// Seed Secrets per page when listing an enrollment's (whole objects).
const SECRETS_PAGE: u32 = 100;

/// This enrollment's seed Secrets, read fresh (never from a cache: a stale view could
/// make the operator replace a device whose Secret exists), split into those the
/// operator wrote and look-alikes.
async fn list_seed_secrets(ctx: &Context, enrollment: &MfaEnrollment) -> Result<(Vec<SeedSecret>, Vec<Untrusted>)> {
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

/// An IAM failure before planning: status says what is wrong (Stalled when a person must
/// act, Reconciling otherwise), then permanent errors wait for the resync interval and
/// transient ones back off.
async fn report_iam_failure(enrollment: &MfaEnrollment, ctx: &Context, error: IamError) -> Result<Requeue> {
    let reason = match error {
        IamError::AccessDenied { .. } => ConditionReason::AccessDenied,
        _ => ConditionReason::TransientError,
    };
    let issue = Issue { reason, message: error.to_string() };
    let previous = ctx.last_status(enrollment).unwrap_or_default();
    let status = build(StatusInput {
        mode: enrollment.spec.mode,
        generation: enrollment.meta().generation,
        now: ctx.now(),
        users: previous_users(&previous),
        issue: Some(issue.clone()),
        root_mfa_enabled: previous.root_account_mfa_enabled,
        previous: Some(&previous),
    });
    // The users list is bounded; the counts are not: keep the last known ones.
    let status = MfaEnrollmentStatus {
        summary: previous.summary.clone().or(status.summary),
        users_omitted: previous.users_omitted,
        ..status
    };
    write_status(enrollment, ctx, Some(&previous), status).await?;
    publish(ctx, enrollment, EventReason::ReconcileFailed, issue.message.clone()).await;
    if issue.needs_person() {
        Ok(Requeue::requeue(enrollment.spec.resync_interval.into()))
    } else {
        Err(Error::Iam(error))
    }
}

/// Keeps the last known users when a reconcile could not look at AWS.
fn previous_users(previous: &MfaEnrollmentStatus) -> Vec<super::plan::UserPlan> {
    previous
        .users
        .iter()
        .map(|u| super::plan::UserPlan {
            name: u.name.clone(),
            state: u.state,
            serial: u.serial_number.clone(),
            secret: u.seed_secret.clone(),
            pending_since: u.pending_since.as_ref().map(|t| t.0),
            expires_at: u.expires_at.as_ref().map(|t| t.0),
            message: u.message.clone(),
            failed_attempts: u.failed_attempts.unwrap_or(0),
        })
        .collect()
}

/// Writes the status with server-side apply, only when it changed.
/// Writes `status` unless it equals `previous` (the status last written, see
/// [`Context::last_status`]).
async fn write_status(
    enrollment: &MfaEnrollment,
    ctx: &Context,
    previous: Option<&MfaEnrollmentStatus>,
    status: MfaEnrollmentStatus,
) -> Result<()> {
    if previous == Some(&status) {
        return Ok(());
    }
    let namespace = enrollment.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<MfaEnrollment> = ctx.api(&namespace);
    let patch = serde_json::json!({
        "apiVersion": "iam.mfa-operator.dev/v1alpha1",
        "kind": "MfaEnrollment",
        "status": status,
    });
    api.patch_status(&enrollment.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(Error::kube("patch MfaEnrollment status"))?;
    ctx.remember_status(enrollment, status);
    Ok(())
}

/// Publishes an Event on the enrollment; failures are logged, never fatal.
pub(super) async fn publish(ctx: &Context, enrollment: &MfaEnrollment, reason: EventReason, note: String) {
    let event = Event {
        type_: if reason.is_warning() { EventType::Warning } else { EventType::Normal },
        reason: reason.as_str().to_owned(),
        note: Some(note),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &enrollment.object_ref(&())).await {
        tracing::warn!(error = %e, reason = reason.as_str(), "cannot publish Event");
    }
}

/// Removes this enrollment's pending devices and seed Secrets, and nothing else: enabled
/// devices stay, devices of other enrollments stay.
async fn cleanup(enrollment: &MfaEnrollment, ctx: &Context) -> Result<Requeue> {
    let id = id_of(enrollment);
    let account = ctx.accounts.get(&AccountKey::of(&enrollment.spec)).await;
    let mut account = account.lock().await;
    let (secrets, untrusted) = list_seed_secrets(ctx, enrollment).await?;
    let api: Api<Secret> = ctx.api(&id.namespace);
    // Look-alikes go with the enrollment; their devices are not ours to judge here.
    for secret in &untrusted {
        delete_seed_secret(&api, &secret.name).await.map_err(Error::kube("delete seed Secret"))?;
    }
    if secrets.is_empty() {
        ctx.forget_compliant(&id);
        ctx.forget_status(enrollment);
        ctx.metrics.forget_enrollment(&id.namespace, &id.name);
        return Ok(Requeue::await_change());
    }
    // Decide from a fresh device list: only unassigned devices are ever deleted.
    let devices = account.iam.list_virtual_mfa_devices().await?;
    let unassigned: BTreeMap<&str, bool> = devices.iter().map(|d| (d.serial.as_str(), d.user.is_none())).collect();
    for secret in &secrets {
        let held_elsewhere = account.claims.get(&secret.serial).is_some_and(|holders| holders.iter().any(|h| *h != id));
        if unassigned.get(secret.serial.as_str()) == Some(&true) && !held_elsewhere {
            match account.iam.delete_virtual_mfa_device(&secret.serial).await {
                Ok(()) | Err(IamError::NoSuchEntity { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(inventory) = account.inventory.as_mut() {
                inventory.record_deleted(&secret.serial);
            }
        }
        delete_seed_secret(&api, &secret.name).await.map_err(Error::kube("delete seed Secret"))?;
        if let Some(holders) = account.claims.get_mut(&secret.serial) {
            holders.retain(|h| *h != id);
        }
    }
    ctx.forget_compliant(&id);
    ctx.forget_status(enrollment);
    ctx.metrics.forget_enrollment(&id.namespace, &id.name);
    tracing::info!(enrollment = %id, removed = secrets.len(), "removed pending devices and seed Secrets");
    Ok(Requeue::await_change())
}
