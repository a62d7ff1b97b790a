//! One reconcile of one `MfaEnrollment`, the orchestrator of the controller's one path:
//! reach its account through its binding, gather (`gather.rs`), decide (`decide.rs`,
//! pure), act (`act.rs`), render (`render/`, pure), write (`publish.rs`). The finalizer is
//! the only top-level action; cleanup removes the enrollment's pending devices and seed
//! Secrets and nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};

use super::accounts::{Account, Record, Subject, View};
use super::act::{self, Reservation, Reserved, act, delete_seed_secret, subjects};
use super::context::{Context, Error, FINALIZER, LinkService, Result};
use super::decide::{Claims, DecideInput, UserRow, decide, release_on_deletion};
use super::gather::{self, Scope, Seeds, id_of, list_seed_secrets, load_claims};
use super::outcome::{self, Finished, Outcome, StepFailure};
use super::publish::{publish, write_status};
use super::reach::{self, Reach, Refusal};
use super::render::{self, Frame, RenderInput, StatusInput};
use super::seed_secret::SeedSecret;
use super::vocabulary::{Blocker, ConditionReason, EventReason};
use crate::aws::{IamApi, IamError};
use crate::crd::{MfaEnrollment, MfaEnrollmentStatus};
use crate::inventory::{Inventory, MfaState};

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

/// watch -> gather -> decide -> act -> render -> write, for an enrollment that exists.
async fn reconcile_apply(enrollment: &MfaEnrollment, ctx: &Context) -> Result<Action> {
    // Grants and ownership need every enrollment, binding and namespace: never decide
    // from a cache still being filled.
    ctx.caches_ready().await?;
    let reach = match reach::reach(ctx, enrollment).await {
        Ok(reach) => reach,
        Err(Refusal::NotGranted(message)) => return report_refusal(enrollment, ctx, message).await,
        Err(Refusal::Iam(error)) => return report_iam_failure(enrollment, ctx, error).await,
        Err(Refusal::Kube(error)) => return Err(error),
    };
    if enrollment.spec.links() && ctx.config.links.is_none() {
        let blocker = Blocker { reason: ConditionReason::DeliveryNotConfigured, message: act::NO_PAGE.into() };
        return report_blocker(enrollment, ctx, blocker, EventReason::ReconcileFailed).await;
    }
    // Every granted enrollment of the same account (by id, however it is reached).
    let peers = reach::peers(ctx, &reach.binding.spec.account_id);
    if let Err(e) = gather::refresh_if_stale(enrollment, ctx, &reach.account, &peers).await {
        return report_iam_failure(enrollment, ctx, e).await;
    }
    let scope = gather::scope(enrollment, &reach, &peers, inventory(&reach.account.view())?);
    let scope = match scope {
        Ok(scope) => scope,
        Err(message) => return report_refusal(enrollment, ctx, message).await,
    };
    let last = ctx.last_status(enrollment);
    // The status last written for each user: what a user whose work waits keeps showing.
    let before: BTreeMap<String, UserRow> =
        last.as_ref().map(render::rows_of).unwrap_or_default().into_iter().map(|u| (u.name.clone(), u)).collect();
    // Only selected users without an assigned virtual device cost a ListMFADevices call,
    // asked with no lock held. Many of them take a while: a new generation says so first.
    if scope.unresolved.len() >= EARLY_STATUS_AFTER
        && last.as_ref().and_then(|s| s.observed_generation) != enrollment.meta().generation
    {
        write_listing_status(enrollment, ctx, &reach.account, &scope, &before, last.as_ref()).await;
    }
    let seeds = gather::seeds(ctx, enrollment, last.as_ref()).await?;
    let decided = match decide_and_reserve(enrollment, ctx, &reach, &scope, &seeds).await {
        Ok(decided) => decided,
        Err(DecideError::Iam(e)) => return report_iam_failure(enrollment, ctx, e).await,
        Err(DecideError::Other(e)) => return Err(e),
    };
    let Decided { rows, root_mfa, reserved, waiting } = decided;

    let progress = |finished: &[Finished], unfinished: &BTreeMap<String, bool>| {
        let rows = render::rows(rows.clone(), finished, &waiting, &before);
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
    let finished = act(enrollment, ctx, &reach, &seeds.secrets, reserved, progress).await;
    if outcome::stale_inventory(&finished) {
        reach.account.view().inventory = None;
    }
    if outcome::changed_account(&finished) && peers.len() > 1 {
        // Other enrollments of this account count the same users: refresh their status
        // from the (already updated) shared inventory.
        ctx.reconcile_all();
    }
    let compliant_before = ctx.remembered_compliant(&id_of(enrollment)).unwrap_or_else(|| {
        render::compliant_users(last.iter().flat_map(|p| p.users.iter().map(|u| (u.name.as_str(), u.state))))
    });
    // Conditions move on from the status last written, progress reports included.
    let written = ctx.last_status(enrollment);
    let rendered = render::render(RenderInput {
        mode: enrollment.spec.mode,
        generation: enrollment.meta().generation,
        now: ctx.now(),
        planned: rows,
        finished: &finished,
        waiting: &waiting,
        before: &before,
        spec_blocker: scope.spec_blocker,
        root_mfa_enabled: Some(root_mfa),
        previous: written.as_ref(),
        compliant_before: &compliant_before,
    });
    write_rendered(enrollment, ctx, rendered).await
}

/// The account's inventory, which a concurrent reconcile may have dropped (it found the
/// inventory out of date): then this reconcile is retried with a fresh one.
fn inventory(view: &View) -> Result<&Inventory> {
    view.inventory.as_ref().ok_or_else(|| Error::StaleInventory("another reconcile dropped the inventory".into()))
}

/// What `decide` chose, with the reservations taken for it.
struct Decided {
    /// Each user's predicted row.
    rows: Vec<UserRow>,
    root_mfa: bool,
    reserved: Vec<Reserved>,
    /// Users whose decision waits for another reconcile, or whose MFA devices could not be
    /// listed: they keep the row last written for them (see `render::rows`).
    waiting: Vec<String>,
}

enum DecideError {
    /// Listing a user's MFA devices failed: reported like any IAM failure.
    Iam(IamError),
    Other(Error),
}

/// Lists the MFA devices of unresolved users, then decides and reserves the users and
/// devices of each decision in one critical section: what another reconcile is working
/// on waits for the next round. A refresh that lands between asking and deciding drops
/// the answers' users back to unknown: ask again (they are few by then).
async fn decide_and_reserve(
    enrollment: &MfaEnrollment,
    ctx: &Context,
    reach: &Reach,
    scope: &Scope,
    seeds: &Seeds,
) -> Result<Decided, DecideError> {
    let (id, account) = (id_of(enrollment), &reach.account);
    let mut unresolved = scope.unresolved.clone();
    // A used link means the page enabled a device the inventory may not show yet: ask.
    {
        let view = account.view();
        let inventory = inventory(&view).map_err(DecideError::Other)?;
        let enabled_by_page = seeds.links.iter().filter(|(user, record)| {
            record.used_at.is_some()
                && scope.selection.users.contains(*user)
                && !matches!(inventory.mfa_state(user), MfaState::Active(_))
        });
        unresolved.extend(enabled_by_page.map(|(user, _)| user.clone()));
    }
    let mut asks = 0;
    loop {
        if !unresolved.is_empty() && asks < MAX_ASKS {
            asks += 1;
            let mut answers = Vec::new();
            let asked = Inventory::ask(&account.iam, std::mem::take(&mut unresolved), &mut answers).await;
            account.record(Record::Resolved { answers });
            asked.map_err(DecideError::Iam)?;
        }
        let mut view = account.view();
        let inventory = inventory(&view).map_err(DecideError::Other)?;
        unresolved = inventory.unresolved(&scope.selection.users);
        if !unresolved.is_empty() && asks < MAX_ASKS {
            continue;
        }
        let plan = decide(&DecideInput {
            id: &id,
            spec: &enrollment.spec,
            device_path: reach.device_path(),
            now: ctx.now(),
            inventory,
            selection: &scope.selection,
            owners: &scope.owners,
            secrets: &seeds.secrets,
            untrusted: &seeds.untrusted,
            refusals: &seeds.refusals,
            received: &seeds.received,
            claims: &view.claims,
            links: &seeds.links,
            held: &seeds.held,
        });
        let account_id = inventory.account_id().map(str::to_owned);
        let root_mfa = inventory.root_mfa_enabled;
        let (mut reserved, mut waiting) = (Vec::new(), unresolved);
        for decision in plan.decisions {
            let subjects = subjects(&decision, account_id.as_deref(), reach.device_path());
            match Reservation::take(account, &mut view, &id, subjects) {
                Some(reservation) => reserved.push(Reserved { decision, reservation }),
                None => waiting.extend(decision.user),
            }
        }
        return Ok(Decided { rows: plan.users, root_mfa, reserved, waiting });
    }
}

/// Publishes drift, writes the rendered status, and says when to look again: soon when
/// users wait for other work, at the next pending device's expiry, else at the resync
/// interval; a transient blocker is returned as an error (the backoff retries it).
async fn write_rendered(enrollment: &MfaEnrollment, ctx: &Context, rendered: render::Rendered) -> Result<Action> {
    let id = id_of(enrollment);
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
    if let Some(blocker) = rendered.blocker.filter(|b| !b.needs_person()) {
        return Err(Error::WorkFailed(blocker.message));
    }
    let resync: Duration = enrollment.spec.resync_interval.into();
    let until_expiry = rendered
        .next_expiry
        .map(|t| t.duration_since(ctx.now()))
        .and_then(|d| Duration::try_from(d).ok())
        .map(|d| d + Duration::from_secs(1));
    let mut next = until_expiry.map_or(resync, |d| d.min(resync));
    if rendered.waiting {
        // Another reconcile held some of these users: try again shortly.
        next = next.min(RETRY_SKIPPED);
    }
    Ok(Action::requeue(next))
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
    scope: &Scope,
    before: &BTreeMap<String, UserRow>,
    previous: Option<&MfaEnrollmentStatus>,
) {
    let status = {
        let view = account.view();
        let Some(inventory) = view.inventory.as_ref() else { return };
        let frame = frame(enrollment, ctx.now());
        render::listing(frame, &scope.selection, inventory, before, scope.unresolved.len(), previous)
    };
    if let Err(e) = write_status(enrollment, ctx, status).await {
        tracing::debug!(error = %e, "cannot write a progress status");
    }
}

/// The frame of every status this reconcile renders.
fn frame(enrollment: &MfaEnrollment, now: jiff::Timestamp) -> Frame {
    Frame { mode: enrollment.spec.mode, generation: enrollment.meta().generation, now }
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
                Ok(account) => match remove_pending(enrollment, ctx, Reach { binding, account }, &secrets).await {
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
    if let Some(LinkService(links)) = &ctx.config.links {
        let uid = enrollment.uid().unwrap_or_default();
        links.revoke(&uid, None).await.map_err(|e| Error::WorkFailed(e.to_string()))?;
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
/// seed Secrets: decided by `decide::release_on_deletion` from a fresh device list, run
/// by `act` like any other decision. A permanent IAM refusal is returned as
/// `Error::Iam` (the caller then deletes the Secrets and says the devices stay).
async fn remove_pending(enrollment: &MfaEnrollment, ctx: &Context, reach: Reach, secrets: &[SeedSecret]) -> Result<()> {
    let (id, account) = (id_of(enrollment), &reach.account);
    // Held from before the listing until every decision ran: no other reconcile creates
    // or removes these devices meanwhile.
    let devices = secrets.iter().map(|s| Subject::Device(s.serial.clone())).collect();
    let Some(_devices) = Reservation::take(account, &mut account.view(), &id, devices) else {
        return Err(Error::WorkFailed("another reconcile is working on this enrollment's devices".into()));
    };
    // Decide from a fresh device list: only unassigned devices are ever deleted. Claims
    // of other enrollments come from the view, or fresh when this process has not read
    // the account yet (just restarted).
    let unread = account.view().inventory.is_none();
    let claims = if unread { Some(load_claims(ctx).await?) } else { None };
    let devices = account.iam.list_virtual_mfa_devices().await?;
    let unassigned: BTreeSet<String> = devices.into_iter().filter(|d| d.user.is_none()).map(|d| d.serial).collect();
    let reserved = {
        let mut view = account.view();
        let held = |claims: &Claims, serial: &str| claims.get(serial).is_some_and(|h| h.iter().any(|h| *h != id));
        let held_elsewhere: BTreeSet<&str> = secrets
            .iter()
            .map(|s| s.serial.as_str())
            .filter(|serial| held(claims.as_ref().unwrap_or(&view.claims), serial))
            .collect();
        let mut reserved = Vec::new();
        for decision in release_on_deletion(secrets, &unassigned, &held_elsewhere) {
            let subjects = subjects(&decision, None, reach.device_path());
            let Some(reservation) = Reservation::take(account, &mut view, &id, subjects) else {
                return Err(Error::WorkFailed("another reconcile is working on this enrollment's devices".into()));
            };
            reserved.push(Reserved { decision, reservation });
        }
        reserved
    };
    let finished =
        act(enrollment, ctx, &reach, secrets, reserved, |_: &[Finished], _: &BTreeMap<String, bool>| async {}).await;
    for finished in &finished {
        match &finished.outcome {
            Outcome::Done => {}
            Outcome::Failed { failure: StepFailure::Iam(error), .. } if !error.is_transient() => {
                return Err(Error::Iam(error.clone()));
            }
            Outcome::Failed { failure: StepFailure::Foreign(serial), .. } => {
                return Err(Error::Iam(IamError::AccessDenied {
                    operation: "DeleteVirtualMFADevice",
                    message: format!("{serial} is not the operator's"),
                }));
            }
            Outcome::Failed { failure, .. } => return Err(Error::WorkFailed(failure.message())),
            Outcome::NotRun => return Err(Error::WorkFailed("stopped by an earlier failure".into())),
        }
    }
    tracing::info!(enrollment = %id, removed = secrets.len(), "removed pending devices and seed Secrets");
    Ok(())
}
