//! One reconcile of one `MfaEnrollment`: reach its account through its binding, gather
//! (inventory, Secrets, peers), plan (pure), apply, write status. The finalizer is the
//! only top-level action; cleanup removes the enrollment's pending devices and seed
//! Secrets and nothing else.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};

use super::accounts::{Account, Record, Subject, View};
use super::act::{Reservation, Reserved, act, delete_seed_secret, subjects};
use super::decide::{Claims, DecideInput, Decision, EnrollmentId, REFUSAL_PREFIX, Refusals, UserRow, decide, owners};
use super::outcome::{self, Finished};
use super::publish::{publish, write_status};
use super::reach::{self, Refusal, grant_of};
use super::render::{self, Frame, RenderInput, StatusInput};
use super::seed_secret::{self, SeedSecret, Untrusted};
use super::selection::{Selection, select};
use super::vocabulary::{Blocker, ConditionReason, EventReason};
use super::{Context, Error, FINALIZER, Result};
use crate::aws::{IamApi, IamError};
use crate::crd::{MfaAccountBinding, MfaEnrollment, MfaEnrollmentStatus, Mode};
use crate::inventory::Inventory;

/// Entry point called by the controller runtime.
pub async fn reconcile(enrollment: Arc<MfaEnrollment>, ctx: Arc<Context>) -> Result<Action> {
    crate::failpoint::wedge("reconcile-wedge");
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
            Ok(Action::await_change())
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
pub fn error_policy(enrollment: Arc<MfaEnrollment>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.count_error(error.category());
    let delay = ctx.backoff(&enrollment);
    tracing::warn!(enrollment = %enrollment.name_any(), category = error.category(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn id_of(enrollment: &MfaEnrollment) -> EnrollmentId {
    EnrollmentId { namespace: enrollment.namespace().unwrap_or_default(), name: enrollment.name_any() }
}

/// How old an inventory may be before this enrollment refreshes it.
fn max_inventory_age(enrollment: &MfaEnrollment) -> jiff::SignedDuration {
    let resync: Duration = enrollment.spec.resync_interval.into();
    jiff::SignedDuration::try_from(resync).unwrap_or(jiff::SignedDuration::from_mins(10))
}

async fn reconcile_apply(enrollment: &MfaEnrollment, ctx: &Context) -> Result<Action> {
    let id = id_of(enrollment);
    let now = ctx.now();

    // Grants and ownership need every enrollment, binding and namespace: never decide
    // from a cache still being filled.
    ctx.caches_ready().await?;
    let reach = match reach::reach(ctx, enrollment).await {
        Ok(reach) => reach,
        Err(Refusal::NotGranted(message)) => return report_refusal(enrollment, ctx, message).await,
        Err(Refusal::Iam(error)) => return report_iam_failure(enrollment, ctx, error).await,
        Err(Refusal::Kube(error)) => return Err(error),
    };
    let account = &reach.account;
    // Every granted enrollment of the same account (by id, however it is reached).
    let peers = reach::peers(ctx, &reach.binding.spec.account_id);
    let needs_console =
        enrollment.spec.users.console_access_only || peers.iter().any(|(p, _)| p.spec.users.console_access_only);

    // Gather: the shared inventory (refreshed when older than our resync interval, or than
    // this generation of the spec when it names users the inventory does not know; a
    // refresh another reconcile finished meanwhile counts).
    let max_age = max_inventory_age(enrollment);
    let generation_seen = ctx.generation_seen(enrollment);
    let stale = |view: &View| {
        view.inventory.as_ref().is_none_or(|inv| {
            now.duration_since(inv.fetched_at) >= max_age
                || (inv.fetched_at < generation_seen && names_unknown(&enrollment.spec, inv))
                || (needs_console && inv.console_users.is_none())
        })
    };
    if stale(&account.view()) {
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
        if let Err(e) = account.refresh(stale, load).await {
            return report_iam_failure(enrollment, ctx, e).await;
        }
    }

    // Who owns which user (every Enroll-mode peer's granted selection, oldest first), what
    // this enrollment selects, and whose MFA devices are still to be listed.
    let decided = {
        let view = account.view();
        let Some(inventory) = view.inventory.as_ref() else {
            return Err(Error::StaleInventory("inventory missing after refresh".into()));
        };
        let selected = |spec: &crate::crd::MfaEnrollmentSpec, binding: &MfaAccountBinding| {
            let selection = select(&spec.users, &inventory.users, inventory.console_users.as_ref());
            grant_of(binding).narrow(spec, selection, &inventory.users)
        };
        let selections: Vec<(EnrollmentId, Option<jiff::Timestamp>, Selection)> = peers
            .iter()
            .filter(|(p, _)| p.spec.mode == Mode::Enroll)
            .map(|(p, binding)| {
                let created = p.meta().creation_timestamp.as_ref().map(|t| t.0);
                // A peer that selects beyond its grant owns nobody.
                (id_of(p), created, selected(&p.spec, binding).unwrap_or_default())
            })
            .collect();
        selected(&enrollment.spec, &reach.binding).map(|selection| {
            // Of this enrollment's users only: the map lives as long as the reconcile.
            let owners = owners(selections.iter().map(|(id, created, s)| (id, *created, s)), Some(&selection.users));
            let spec_blocker = unknown_groups(&selection, &inventory.groups);
            let unresolved = inventory.unresolved(&selection.users);
            (selection, owners, spec_blocker, unresolved)
        })
    };
    let (selection, owners, spec_blocker, unresolved) = match decided {
        Ok(decided) => decided,
        Err(message) => return report_refusal(enrollment, ctx, message).await,
    };

    let last = ctx.last_status(enrollment);
    // The status last written for each user: what a user whose work waits keeps showing.
    let before: BTreeMap<String, UserRow> =
        last.as_ref().map(render::rows_of).unwrap_or_default().into_iter().map(|u| (u.name.clone(), u)).collect();
    // Only selected users without an assigned virtual device cost a ListMFADevices call,
    // asked with no lock held. Many of them take a while: a new generation says so first.
    if unresolved.len() >= EARLY_STATUS_AFTER
        && last.as_ref().and_then(|s| s.observed_generation) != enrollment.meta().generation
    {
        write_listing_status(enrollment, ctx, account, &selection, &before, unresolved.len(), last.as_ref()).await;
    }
    let (secrets, untrusted) = list_seed_secrets(ctx, enrollment).await?;
    let refusals = refusals(last.as_ref());
    let received: BTreeMap<String, jiff::Timestamp> = secrets
        .iter()
        .filter_map(|s| {
            let at = ctx.received.at(&id.namespace, &s.name, s.resource_version.as_deref()?)?;
            Some((s.name.clone(), at))
        })
        .collect();

    // Decide, and reserve the users and devices of each work item, in one critical
    // section: what another reconcile is working on waits for the next round. A refresh
    // that lands between asking and planning drops the answers' users back to unknown:
    // ask again (they are few by then).
    let (mut reserved, mut skipped) = (Vec::new(), Vec::new());
    let mut unresolved = unresolved;
    let mut asks = 0;
    let (users, root_mfa) = loop {
        if !unresolved.is_empty() && asks < MAX_ASKS {
            asks += 1;
            let mut answers = Vec::new();
            let asked = Inventory::ask(&account.iam, std::mem::take(&mut unresolved), &mut answers).await;
            account.record(Record::Resolved { answers });
            if let Err(e) = asked {
                return report_iam_failure(enrollment, ctx, e).await;
            }
        }
        let mut view = account.view();
        let Some(inventory) = view.inventory.as_ref() else {
            return Err(Error::StaleInventory("inventory vanished".into()));
        };
        unresolved = inventory.unresolved(&selection.users);
        if !unresolved.is_empty() && asks < MAX_ASKS {
            continue;
        }
        let planned = decide(&DecideInput {
            id: &id,
            spec: &enrollment.spec,
            device_path: reach.device_path(),
            now,
            inventory,
            selection: &selection,
            owners: &owners,
            secrets: &secrets,
            untrusted: &untrusted,
            refusals: &refusals,
            received: &received,
            claims: &view.claims,
        });
        let account_id = inventory.account_id().map(str::to_owned);
        let root_mfa = inventory.root_mfa_enabled;
        for decision in planned.decisions {
            let subjects = subjects(&decision, account_id.as_deref(), reach.device_path());
            match Reservation::take(account, &mut view, &id, subjects) {
                Some(reservation) => reserved.push(Reserved { decision, reservation }),
                None => skipped.push(decision),
            }
        }
        break (planned.users, root_mfa);
    };
    // A user whose decision waits for another reconcile, or whose MFA devices could not
    // be listed, keeps the row last written for them (see `render::rows`).
    let waiting: Vec<String> =
        skipped.iter().filter_map(|d: &Decision| d.user.clone()).chain(unresolved.iter().cloned()).collect();

    let progress = |finished: &[Finished], unfinished: &BTreeMap<String, bool>| {
        let rows = render::rows(users.clone(), finished, &waiting, &before);
        let status = render::build(StatusInput {
            mode: enrollment.spec.mode,
            generation: enrollment.meta().generation,
            now: ctx.now(),
            users: render::in_progress(rows, unfinished, &before),
            blocker: None,
            root_mfa_enabled: Some(root_mfa),
            previous: last.as_ref(),
        });
        async move {
            if let Err(e) = write_status(enrollment, ctx, status).await {
                tracing::debug!(error = %e, "cannot write a progress status");
            }
        }
    };
    let finished = act(enrollment, ctx, &reach, &secrets, reserved, progress).await;
    if outcome::stale_inventory(&finished) {
        account.view().inventory = None;
    }
    if outcome::changed_account(&finished) && peers.len() > 1 {
        // Other enrollments of this account count the same users: refresh their status
        // from the (already updated) shared inventory.
        ctx.reconcile_all();
    }

    let compliant_before = ctx.remembered_compliant(&id).unwrap_or_else(|| {
        render::compliant_users(last.iter().flat_map(|p| p.users.iter().map(|u| (u.name.as_str(), u.state))))
    });
    // Conditions move on from the status last written, progress reports included.
    let written = ctx.last_status(enrollment);
    let rendered = render::render(RenderInput {
        mode: enrollment.spec.mode,
        generation: enrollment.meta().generation,
        now,
        planned: users,
        finished: &finished,
        waiting: &waiting,
        before: &before,
        spec_blocker,
        root_mfa_enabled: Some(root_mfa),
        previous: written.as_ref(),
        compliant_before: &compliant_before,
    });
    if let Some(compliant) = rendered.compliant {
        ctx.remember_compliant(&id, compliant);
    }
    for user in rendered.drifted {
        publish(ctx, enrollment, EventReason::MfaDeactivated, format!("{user} no longer has an active MFA device"))
            .await;
    }
    if let Some(summary) = &rendered.status.summary {
        ctx.metrics.set_users(&id.namespace, &id.name, summary);
    }
    write_status(enrollment, ctx, rendered.status).await?;

    match rendered.blocker {
        Some(blocker) if !blocker.needs_person() => Err(Error::WorkFailed(blocker.message)),
        _ => {
            let resync: Duration = enrollment.spec.resync_interval.into();
            let until_expiry = rendered
                .next_expiry
                .map(|t| t.duration_since(now))
                .and_then(|d| Duration::try_from(d).ok())
                .map(|d| d + Duration::from_secs(1));
            let mut next = until_expiry.map_or(resync, |d| d.min(resync));
            if rendered.waiting {
                // Another reconcile held some of these users: try again shortly.
                next = next.min(RETRY_SKIPPED);
            }
            Ok(Action::requeue(next))
        }
    }
}

/// Whether `spec` names a user the inventory does not know: a new or changed spec that
/// does is decided from a fresh inventory (the user may have been created just before),
/// one that does not shares the inventory as it is.
fn names_unknown(spec: &crate::crd::MfaEnrollmentSpec, inventory: &Inventory) -> bool {
    let Some(names) = &spec.users.names else { return false };
    let known: std::collections::BTreeSet<String> = inventory.users.keys().map(|n| n.to_lowercase()).collect();
    names.iter().any(|n| !known.contains(&n.to_lowercase()))
}

/// Unresolved users from which a new generation's status says "listing" before asking
/// IAM (at 100 ms a call, eight at a time, about half a second of calls).
const EARLY_STATUS_AFTER: usize = 40;
/// Rounds of `ListMFADevices` one reconcile asks before it plans with what it has.
const MAX_ASKS: u32 = 3;
/// When to look again at users whose work another reconcile held.
const RETRY_SKIPPED: Duration = Duration::from_secs(2);

/// Writes the status of a new generation while the MFA devices of `unresolved` users
/// are being listed (see `render::listing`).
async fn write_listing_status(
    enrollment: &MfaEnrollment,
    ctx: &Context,
    account: &Account,
    selection: &Selection,
    before: &BTreeMap<String, UserRow>,
    unresolved: usize,
    previous: Option<&MfaEnrollmentStatus>,
) {
    let status = {
        let view = account.view();
        let Some(inventory) = view.inventory.as_ref() else { return };
        render::listing(frame(enrollment, ctx.now()), selection, inventory, before, unresolved, previous)
    };
    if let Err(e) = write_status(enrollment, ctx, status).await {
        tracing::debug!(error = %e, "cannot write a progress status");
    }
}

/// The frame of every status this reconcile renders.
fn frame(enrollment: &MfaEnrollment, now: jiff::Timestamp) -> Frame {
    Frame { mode: enrollment.spec.mode, generation: enrollment.meta().generation, now }
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
async fn load_claims(ctx: &Context) -> Result<Claims> {
    let enrollments: BTreeMap<String, EnrollmentId> =
        ctx.store.state().iter().filter_map(|e| Some((e.uid()?, id_of(e)))).collect();
    let mut claims = Claims::new();
    for api in super::secret_apis(&ctx.client, &ctx.config.namespaces) {
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
async fn report_iam_failure(enrollment: &MfaEnrollment, ctx: &Context, error: IamError) -> Result<Action> {
    let blocker = Blocker { reason: ConditionReason::of_iam(&error), message: error.to_string() };
    let needs_person = blocker.needs_person();
    let requeue = report_blocker(enrollment, ctx, blocker, EventReason::ReconcileFailed).await?;
    if needs_person { Ok(requeue) } else { Err(Error::Iam(error)) }
}

/// The binding does not grant what the enrollment asks: Stalled until the enrollment,
/// the binding or the namespace changes (each of which triggers a reconcile).
async fn report_refusal(enrollment: &MfaEnrollment, ctx: &Context, message: String) -> Result<Action> {
    tracing::info!(enrollment = %id_of(enrollment), %message, "not granted");
    let blocker = Blocker { reason: ConditionReason::NotGranted, message };
    report_blocker(enrollment, ctx, blocker, EventReason::NotGranted).await
}

/// Writes `blocker` into status over the last known users, and publishes it as `event`.
async fn report_blocker(
    enrollment: &MfaEnrollment,
    ctx: &Context,
    blocker: Blocker,
    event: EventReason,
) -> Result<Action> {
    let previous = ctx.last_status(enrollment).unwrap_or_default();
    let status = render::blocked(frame(enrollment, ctx.now()), &previous, blocker.clone());
    write_status(enrollment, ctx, status).await?;
    publish(ctx, enrollment, event, blocker.message).await;
    Ok(Action::requeue(enrollment.spec.resync_interval.into()))
}

/// Removes this enrollment's pending devices and seed Secrets, and nothing else: enabled
/// devices stay, devices of other enrollments stay. An account that cannot be reached
/// any more (binding deleted, credentials reach another account, access denied) never
/// blocks the deletion: the seed Secrets go, the devices stay unassigned in IAM, and a
/// Warning says so.
async fn cleanup(enrollment: &MfaEnrollment, ctx: &Context) -> Result<Action> {
    let id = id_of(enrollment);
    ctx.caches_ready().await?;
    let (secrets, untrusted) = list_seed_secrets(ctx, enrollment).await?;
    let api: Api<Secret> = ctx.api(&id.namespace);
    // Look-alikes go with the enrollment; their devices are not ours to judge here.
    for secret in &untrusted {
        delete_seed_secret(&api, &secret.name).await.map_err(Error::kube("delete seed Secret"))?;
    }
    if !secrets.is_empty() {
        let unreachable = match reach::named_binding(ctx, enrollment) {
            Err(message) => Some(message),
            // The binding named now may reach another account than the devices are in.
            Ok(binding) if secrets.iter().any(|s| serial_account(&s.serial) != Some(&binding.spec.account_id)) => {
                Some(format!("MfaAccountBinding {} reaches another account than its devices", binding.name_any()))
            }
            Ok(binding) => match reach::account_of(ctx, &binding).await {
                Ok(account) => match remove_pending(ctx, &account, &id, &secrets).await {
                    Ok(()) => None,
                    Err(Error::Iam(error)) if !error.is_transient() => Some(error.to_string()),
                    Err(error) => return Err(error),
                },
                Err(Refusal::NotGranted(message)) => Some(message),
                Err(Refusal::Iam(error)) if error.is_transient() => return Err(error.into()),
                Err(Refusal::Iam(error)) => Some(error.to_string()),
                Err(Refusal::Kube(error)) => Some(error.to_string()),
            },
        };
        if let Some(message) = unreachable {
            for secret in &secrets {
                delete_seed_secret(&api, &secret.name).await.map_err(Error::kube("delete seed Secret"))?;
            }
            let left = secrets.len();
            let message =
                format!("{left} pending devices stay unassigned in IAM (their seed Secrets are deleted): {message}");
            tracing::warn!(enrollment = %id, %message, "cleanup could not reach the account");
            publish(ctx, enrollment, EventReason::NotGranted, message).await;
        }
        // Another enrollment may own these users now: let it create their devices.
        ctx.reconcile_all();
    }
    ctx.forget_compliant(&id);
    ctx.forget_generation(enrollment);
    ctx.forget_status(enrollment);
    ctx.metrics.forget_enrollment(&id.namespace, &id.name);
    Ok(Action::await_change())
}

/// The account id in a device serial (`arn:aws:iam::<account>:mfa/...`).
fn serial_account(serial: &str) -> Option<&str> {
    serial.split(':').nth(4)
}

/// Deletes the unassigned devices of `secrets` that no other enrollment holds, and the
/// seed Secrets.
async fn remove_pending(ctx: &Context, account: &Account, id: &EnrollmentId, secrets: &[SeedSecret]) -> Result<()> {
    let api: Api<Secret> = ctx.api(&id.namespace);
    let subjects = secrets.iter().map(|s| Subject::Device(s.serial.clone())).collect();
    let Some(_reservation) = Reservation::take(account, &mut account.view(), id, subjects) else {
        return Err(Error::WorkFailed("another reconcile is working on this enrollment's devices".into()));
    };
    // Decide from a fresh device list: only unassigned devices are ever deleted. Claims
    // of other enrollments come from the view, or fresh when this process has not read
    // the account yet (just restarted).
    let unread = account.view().inventory.is_none();
    let fresh_claims = if unread { Some(load_claims(ctx).await?) } else { None };
    let devices = account.iam.list_virtual_mfa_devices().await?;
    let unassigned: BTreeMap<&str, bool> = devices.iter().map(|d| (d.serial.as_str(), d.user.is_none())).collect();
    for secret in secrets {
        let held = |claims: &Claims| claims.get(&secret.serial).is_some_and(|h| h.iter().any(|h| h != id));
        let held_elsewhere = fresh_claims.as_ref().map_or_else(|| held(&account.view().claims), held);
        if unassigned.get(secret.serial.as_str()) == Some(&true) && !held_elsewhere {
            match account.iam.delete_virtual_mfa_device(&secret.serial).await {
                Ok(()) | Err(IamError::NoSuchEntity { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            account.record(Record::Deleted { serial: secret.serial.clone() });
        }
        delete_seed_secret(&api, &secret.name).await.map_err(Error::kube("delete seed Secret"))?;
        account.record(Record::Released { serial: secret.serial.clone(), holder: id.clone() });
    }
    tracing::info!(enrollment = %id, removed = secrets.len(), "removed pending devices and seed Secrets");
    Ok(())
}
