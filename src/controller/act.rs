//! Runs planned work against IAM and Kubernetes. Every step is idempotent (deleting what
//! is gone succeeds, creating what exists makes the next reconcile re-plan from a fresh
//! inventory) and ordered so a crash between two steps leaves a state the planner
//! repairs: device first, Secret at once after; enable first, Secret deletion after.
//!
//! Decision items run concurrently: code submissions at once, bulk writes (creating and
//! removing devices) a bounded number at a time per account. Each item holds the
//! reservation of the users and devices it touches (see `accounts.rs`) until it ends.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};

use super::accounts::{Account, Record, Subject};
use super::decide::{Decision, EnrollmentId, MAX_FAILED_ATTEMPTS, REFUSAL_PREFIX, Step, UserRow};
use super::publish::publish;
use super::reach::Reach;
use super::seed_secret::{self, ANNOTATION_LAST_REJECTION, KEY_CODE1, KEY_CODE2, SeedSecret};
use super::status::Blocker;
use super::vocabulary::{ConditionReason, EventReason};
use super::{Context, FIELD_MANAGER};
use crate::aws::{DeviceTags, IamApi, IamError};
use crate::crd::{MfaEnrollment, UserState};
use crate::failpoint;
use crate::inventory::device_serial;
use crate::qr;

/// What running a plan produced.
pub struct Acted {
    /// Every user's status, adjusted for work that failed.
    pub users: Vec<UserRow>,
    /// The most important failure, if any.
    pub issue: Option<Blocker>,
    /// The inventory no longer matches AWS (a create met an existing device).
    pub stale_inventory: bool,
    /// Some write changed the account (devices created, enabled or deleted), so other
    /// enrollments of the account may need a new status.
    pub changed_account: bool,
}

/// Issuer shown by authenticator apps, as AWS's own QR codes name it.
const ISSUER: &str = "Amazon Web Services";

/// Tag keys on the devices the operator creates.
const TAG_ENROLLMENT: &str = "iam.mfa-operator.dev/enrollment";
const TAG_USER: &str = "iam.mfa-operator.dev/user";

/// Decision items of one plan in flight at once (bulk ones also wait for the account's
/// write permits).
const ITEMS_IN_FLIGHT: usize = 64;

/// How often a long apply writes the status it has reached so far.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Why one step failed.
enum StepError {
    Iam(IamError),
    Kube(&'static str, kube::Error),
    /// AWS refused the codes: recorded on the Secret like a local refusal.
    CodesRefused,
    StaleInventory(String),
    /// The enrollment cannot own what the step would create (it has no uid yet).
    NoOwner,
    /// A Secret the operator did not write holds the seed Secret's name.
    NameTaken(String),
    /// IAM refused to delete a device under the operator's path: the policy lets the
    /// operator delete only devices carrying its tag, so someone else made this one.
    Foreign(String),
}

impl StepError {
    fn message(&self) -> String {
        match self {
            Self::Iam(e) => e.to_string(),
            Self::Kube(what, e) => format!("Kubernetes {what}: {e}"),
            Self::CodesRefused => "AWS refused the codes".into(),
            Self::StaleInventory(m) => m.clone(),
            Self::NoOwner => "the MfaEnrollment has no uid to own a seed Secret".into(),
            Self::NameTaken(name) => format!(
                "a Secret named {name} that the operator did not write is in the way of the seed Secret: delete it"
            ),
            Self::Foreign(serial) => format!(
                "IAM refused to delete {serial}, a device under the operator's path that it did not create \
                 (no iam.mfa-operator.dev tags): delete it, or check the IAM policy"
            ),
        }
    }

    fn issue(&self) -> Blocker {
        let reason = match self {
            Self::Iam(error) => ConditionReason::of_iam(error),
            Self::Foreign(_) => ConditionReason::AccessDenied,
            _ => ConditionReason::TransientError,
        };
        Blocker { reason, message: self.message() }
    }

    /// Whether the rest of the plan should stop (everything else would fail the same way).
    fn stops_everything(&self) -> bool {
        matches!(self, Self::Iam(IamError::AccessDenied { .. } | IamError::Throttled { .. }))
    }

    /// The state a user is left in when their work failed: permanent refusals are
    /// Failed, anything else stays as it was before the work (Missing when nothing was
    /// pending).
    fn failed_state(&self) -> UserState {
        match self {
            Self::Iam(IamError::LimitExceeded { .. } | IamError::EntityAlreadyExists { .. })
            | Self::NameTaken(_)
            | Self::Foreign(_) => UserState::Failed,
            _ => UserState::Missing,
        }
    }
}

/// Whether a failed step voids the user's planned status entry. A stale inventory is
/// re-read at once and usually leaves the plan true (an enable that another replica
/// already did), except when a pending device and Secret that never came to be
/// (`unrun`: the failed action and those after it) would be shown.
/// A refusal whose codes could not be cleared still counted: its planned status (with
/// the count) stands.
fn planned_status_is_void(error: &StepError, unrun: &[Step]) -> bool {
    if matches!(unrun.first(), Some(Step::RejectCodes { .. })) {
        return false;
    }
    !matches!(error, StepError::StaleInventory(_)) || unrun.iter().any(|a| matches!(a, Step::CreatePending { .. }))
}

/// Voids a user's planned status after their work did not (all) happen; `ran` is the
/// part that did. The refusal count and the device it belongs to survive unless the work
/// that ran already removed that device or its Secret: a failure, or work that never
/// started, must never reset the guess limit.
pub fn void(status: &mut UserRow, state: UserState, message: String, ran: &[Step]) {
    let replaced = ran
        .iter()
        .any(|a| matches!(a, Step::CreatePending { .. } | Step::DeleteDevice { .. } | Step::DeleteSecret { .. }));
    status.state = state;
    status.message = Some(message);
    status.serial = None;
    status.secret = None;
    status.expires_at = None;
    if replaced {
        status.pending_since = None;
        status.failed_attempts = 0;
    }
}

/// How one work item ended.
enum Outcome {
    Done,
    /// Step `index` failed; those after it did not run.
    Failed {
        index: usize,
        error: StepError,
    },
    /// Not started: an earlier failure stopped the plan.
    NotRun,
}

/// One planned work item with the reservation it runs under.
pub struct Reserved {
    pub work: Decision,
    pub reservation: Reservation,
}

/// Subjects reserved for one enrollment; released when dropped (also when a reconcile is
/// cancelled mid-way).
pub struct Reservation {
    account: Account,
    holder: EnrollmentId,
    subjects: Vec<Subject>,
}

impl Reservation {
    /// Reserves `subjects` in `view` (the caller holds the account's view lock).
    pub fn take(
        account: &Account,
        view: &mut super::accounts::View,
        holder: &EnrollmentId,
        subjects: Vec<Subject>,
    ) -> Option<Self> {
        view.reserve(holder, &subjects).then(|| Self { account: account.clone(), holder: holder.clone(), subjects })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.account.view().release(&self.holder, &self.subjects);
    }
}

/// The users and devices a work item touches. `account` is the account id, for the
/// serial of a device still to be created.
pub fn subjects(work: &Decision, account: Option<&str>, device_path: &str) -> Vec<Subject> {
    let mut subjects: Vec<Subject> = work.user.iter().map(|u| Subject::User(u.clone())).collect();
    for action in &work.steps {
        match action {
            Step::CreatePending { user, .. } => {
                subjects.push(Subject::User(user.clone()));
                subjects.extend(account.map(|a| Subject::Device(device_serial(a, device_path, user))));
            }
            Step::DeleteDevice { serial } => subjects.push(Subject::Device(serial.clone())),
            Step::Enable { user, serial, .. } => {
                subjects.push(Subject::User(user.clone()));
                subjects.push(Subject::Device(serial.clone()));
            }
            Step::DeleteSecret { .. } | Step::RejectCodes { .. } => {}
        }
    }
    subjects.sort();
    subjects.dedup();
    subjects
}

/// Whether a work item is a person's code submission (never queued behind bulk work).
fn is_submission(work: &Decision) -> bool {
    work.steps.iter().all(|a| matches!(a, Step::Enable { .. } | Step::RejectCodes { .. }))
}

/// Whether a work item creates a pending device (shown as in progress until it ends).
fn creates(work: &Decision) -> bool {
    work.steps.iter().any(|a| matches!(a, Step::CreatePending { .. }))
}

struct Effects<'a> {
    enrollment: &'a MfaEnrollment,
    ctx: &'a Context,
    id: EnrollmentId,
    account: &'a Account,
    /// Where this enrollment's devices live (its binding's `device.path`).
    device_path: &'a str,
    secrets: BTreeMap<&'a str, &'a SeedSecret>,
    api: Api<Secret>,
    /// Set by a failure that every later step would meet too; items waiting for a
    /// permit give up at once.
    stop: tokio::sync::watch::Sender<bool>,
}

/// The users' statuses an apply starts from.
pub struct Statuses<'a> {
    /// As planned: what each user's status is once their work succeeds.
    pub planned: Vec<UserRow>,
    /// As last written: what a user whose work is unfinished keeps showing.
    pub before: &'a BTreeMap<String, UserRow>,
}

/// Runs the reserved work: submissions at once, bulk work a few at a time, each item
/// stopped at its first failure. While work runs, `progress` is called with the users'
/// status as it stands (finished items as planned, unfinished ones as they were in
/// `before`, the status last written) every [`PROGRESS_EVERY`], and at once when a code
/// submission finished, so a person's outcome never waits for bulk work.
pub async fn act<P, F>(
    enrollment: &MfaEnrollment,
    ctx: &Context,
    reach: &Reach,
    secrets: &[SeedSecret],
    work: Vec<Reserved>,
    statuses: Statuses<'_>,
    progress: P,
) -> Acted
where
    P: Fn(Vec<UserRow>) -> F,
    F: Future<Output = ()>,
{
    let Statuses { planned: mut users, before } = statuses;
    let id = EnrollmentId { namespace: enrollment.namespace().unwrap_or_default(), name: enrollment.name_any() };
    let runner = Effects {
        enrollment,
        ctx,
        api: ctx.api(&id.namespace),
        id,
        account: &reach.account,
        device_path: reach.device_path(),
        secrets: secrets.iter().map(|s| (s.name.as_str(), s)).collect(),
        stop: tokio::sync::watch::Sender::new(false),
    };
    let ttl = jiff::SignedDuration::try_from(std::time::Duration::from(enrollment.spec.pending_ttl))
        .unwrap_or(jiff::SignedDuration::MAX);
    // Users whose work has not finished, with whether it creates a device.
    let mut unfinished: BTreeMap<String, bool> =
        work.iter().filter_map(|r| Some((r.work.user.clone()?, creates(&r.work)))).collect();
    let mut work = work;
    // Submissions first: they also skip the write permits.
    work.sort_by_key(|r| !is_submission(&r.work));
    let mut running = futures::stream::iter(work)
        .map(|reserved| {
            let runner = &runner;
            async move {
                let outcome = runner.run_item(&reserved.work).await;
                // The reservation ends with the item.
                drop(reserved.reservation);
                (reserved.work, outcome)
            }
        })
        .buffer_unordered(ITEMS_IN_FLIGHT);
    // Events and progress statuses are written beside the work, never between its steps;
    // Events one at a time (see `Notes`).
    let mut notes = Notes::default();
    let mut event: Option<std::pin::Pin<Box<_>>> = None;
    let mut report: Option<std::pin::Pin<Box<F>>> = None;
    let mut report_due = false;

    let mut issue: Option<Blocker> = None;
    let mut stale_inventory = false;
    let mut changed_account = false;
    let mut stopped_by: Option<(UserState, String)> = None;
    let mut last_report = Instant::now();
    loop {
        if event.is_none()
            && let Some((reason, note)) = notes.next()
        {
            event = Some(Box::pin(publish(ctx, enrollment, reason, note)));
        }
        let finished = tokio::select! {
            finished = running.next() => match finished {
                Some(finished) => finished,
                None => break,
            },
            () = async { event.as_mut().expect("guarded").await }, if event.is_some() => {
                event = None;
                continue;
            }
            () = async { report.as_mut().expect("guarded").await }, if report.is_some() => {
                report = None;
                continue;
            }
        };
        let (Decision { user, steps, note }, outcome) = finished;
        let submission = is_submission(&Decision { user: None, steps: steps.clone(), note: None });
        if let Some(user) = &user {
            unfinished.remove(user);
        }
        let ran = match &outcome {
            Outcome::Done => steps.len(),
            Outcome::Failed { index, .. } => *index,
            Outcome::NotRun => 0,
        };
        changed_account |=
            steps[..ran].iter().any(|a| !matches!(a, Step::DeleteSecret { .. } | Step::RejectCodes { .. }));
        let status = user.as_ref().and_then(|u| users.iter_mut().find(|p| &p.name == u));
        match outcome {
            Outcome::Done => {
                if let Some(note) = note {
                    notes.push(note.reason, note.message);
                }
            }
            Outcome::NotRun => {
                if let (Some(status), Some((state, message))) = (status, &stopped_by) {
                    void(status, *state, message.clone(), &[]);
                }
            }
            Outcome::Failed { index, error: StepError::CodesRefused } => {
                // Recorded on the Secret by `run`; the user stays Pending with the reason.
                // A refusal by AWS counts like a refusal by the local check.
                if let (Some(status), Step::Enable { secret, .. }) = (status, &steps[index])
                    && let Some(seed) = runner.secrets.get(secret.as_str())
                {
                    let attempts = status.failed_attempts + 1;
                    *status = UserRow {
                        state: UserState::Pending,
                        serial: Some(seed.serial.clone()),
                        secret: Some(seed.name.clone()),
                        pending_since: Some(seed.created),
                        expires_at: seed.created.checked_add(ttl).ok(),
                        message: Some(format!(
                            "{REFUSAL_PREFIX} by AWS: {REFUSED_BY_AWS} (refused submission {attempts} of {MAX_FAILED_ATTEMPTS})"
                        )),
                        failed_attempts: attempts,
                        ..status.clone()
                    };
                }
            }
            Outcome::Failed { index, error } => {
                stale_inventory |= matches!(error, StepError::StaleInventory(_));
                tracing::warn!(enrollment = %runner.id, user = user.as_deref().unwrap_or("-"), error = %error.message(), "work failed");
                notes.push(EventReason::ReconcileFailed, error.message());
                if let (Some(status), true) = (status, planned_status_is_void(&error, &steps[index..])) {
                    void(status, error.failed_state(), error.message(), &steps[..index]);
                }
                let new_issue = error.issue();
                if error.stops_everything() && stopped_by.is_none() {
                    stopped_by = Some((error.failed_state(), error.message()));
                }
                if issue.as_ref().is_none_or(|i| !i.needs_person() && new_issue.needs_person()) {
                    issue = Some(new_issue);
                }
            }
        }
        report_due |= submission || last_report.elapsed() >= PROGRESS_EVERY;
        if report_due && report.is_none() && !unfinished.is_empty() {
            report = Some(Box::pin(progress(in_progress(&users, &unfinished, before))));
            last_report = Instant::now();
            report_due = false;
        }
    }
    // The final status is written after this returns: no progress write may land after it.
    if let Some(report) = report {
        report.await;
    }
    if let Some(event) = event {
        event.await;
    }
    while let Some((reason, note)) = notes.next() {
        publish(ctx, enrollment, reason, note).await;
    }
    Acted { users, issue, stale_inventory, changed_account }
}

/// The Events an apply still has to publish, in the order their reasons first came.
///
/// They are published one at a time, and the notes of one reason queued meanwhile become
/// one Event. kube's recorder keeps one Event per reason and enrollment and patches it
/// for each repeat (a series; the last note wins), so a bulk enrollment's 500
/// "pending device created" notes were 500 patches of one object; sent all at once they
/// contended in the apiserver for that object: 1.9 s a patch on average, and the apply
/// waited for the last (a new 5,000-user enrollment took 26 s instead of 8 s at 0 ms).
#[derive(Default)]
struct Notes(Vec<(EventReason, Vec<String>)>);

impl Notes {
    fn push(&mut self, reason: EventReason, note: String) {
        match self.0.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, notes)) => notes.push(note),
            None => self.0.push((reason, vec![note])),
        }
    }

    /// The next Event: the first note of its reason, and how many more there were.
    fn next(&mut self) -> Option<(EventReason, String)> {
        if self.0.is_empty() {
            return None;
        }
        let (reason, mut notes) = self.0.remove(0);
        let more = notes.len() - 1;
        let first = notes.swap_remove(0);
        Some((
            reason,
            if more == 0 { first } else { format!("{first} (and {more} more {} meanwhile)", reason.as_str()) },
        ))
    }
}

/// The users as they stand while the work of `unfinished` users still runs: those show
/// the status last written for them (or, new ones, Missing), never a prediction.
fn in_progress(
    users: &[UserRow],
    unfinished: &BTreeMap<String, bool>,
    before: &BTreeMap<String, UserRow>,
) -> Vec<UserRow> {
    users
        .iter()
        .map(|u| match (unfinished.get(&u.name), before.get(&u.name)) {
            (None, _) => u.clone(),
            (Some(_), Some(previous)) => previous.clone(),
            (Some(creates), None) => {
                let mut shown = u.clone();
                let message = if *creates { "a pending device is being created" } else { "work in progress" };
                void(&mut shown, UserState::Missing, message.into(), &[]);
                shown
            }
        })
        .collect()
}

/// Deletes a seed Secret for good (one already gone is deleted). Finalizers someone else
/// added would keep the seed readable and block the next Secret of that name: removed.
pub(super) async fn delete_seed_secret(api: &Api<Secret>, name: &str) -> Result<(), kube::Error> {
    let lingering = match api.delete(name, &DeleteParams::default()).await {
        Ok(deleted) => deleted.left().filter(|secret| !secret.finalizers().is_empty()),
        Err(kube::Error::Api(status)) if status.code == 404 => None,
        Err(e) => return Err(e),
    };
    if lingering.is_some() {
        tracing::warn!(secret = name, "removing finalizers the operator did not add from a seed Secret");
        let patch = serde_json::json!({ "metadata": { "finalizers": null } });
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
        match api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// IAM's answers that mean "these codes are not accepted": the person's to fix with new
/// codes, not a step to retry.
fn codes_refused(error: &IamError) -> bool {
    match error {
        IamError::InvalidAuthenticationCode { .. } => true,
        IamError::Service { code, .. } => code == "ValidationError",
        _ => false,
    }
}

/// What people read when AWS refuses codes the local check accepted.
const REFUSED_BY_AWS: &str =
    "wait for a new code, then submit two fresh consecutive codes (AWS may consider these too old)";

impl Effects<'_> {
    /// Runs one item's steps in order, stopping at the first failure. Bulk items wait
    /// for a write permit first; nothing starts once the plan was stopped.
    async fn run_item(&self, work: &Decision) -> Outcome {
        let mut stopped = self.stop.subscribe();
        if *stopped.borrow() {
            return Outcome::NotRun;
        }
        let _permit = if is_submission(work) {
            None
        } else {
            let calm = self.account.iam.read_concurrency() > 1;
            tokio::select! {
                permit = self.account.bulk_write_permit(calm) => permit,
                _ = stopped.wait_for(|stop| *stop) => return Outcome::NotRun,
            }
        };
        if *stopped.borrow() {
            return Outcome::NotRun;
        }
        for (index, action) in work.steps.iter().enumerate() {
            if let Err(error) = self.run(action).await {
                if error.stops_everything() {
                    self.stop.send_replace(true);
                }
                return Outcome::Failed { index, error };
            }
        }
        Outcome::Done
    }

    async fn run(&self, action: &Step) -> Result<(), StepError> {
        match action {
            Step::CreatePending { user, at } => self.create_pending(user, *at).await,
            Step::DeleteDevice { serial } => self.delete_device(serial).await,
            Step::DeleteSecret { name } => self.delete_secret(name).await,
            Step::Enable { user, serial, secret, codes } => {
                match self.account.iam.enable_mfa_device(user, serial, &codes.code1, &codes.code2).await {
                    Ok(()) => {}
                    // "In use" after a retried call whose first attempt did enable it (the
                    // answer was lost): one look at the user's devices says so, instead of
                    // re-reading the whole account.
                    Err(e @ IamError::EntityAlreadyExists { .. }) if self.enabled_for(user, serial).await? => {
                        tracing::info!(user, error = %e, "the device is enabled for the user already");
                    }
                    // AWS refused the codes (or their form): a rejection like a local
                    // one, never a step to retry with backoff.
                    Err(e) if codes_refused(&e) => {
                        self.reject(secret, REFUSED_BY_AWS).await?;
                        publish(
                            self.ctx,
                            self.enrollment,
                            EventReason::CodesRejected,
                            format!("AWS refused the codes for {user}: {REFUSED_BY_AWS}"),
                        )
                        .await;
                        return Err(StepError::CodesRefused);
                    }
                    // Already enabled (by another replica, or by hand) or the device is
                    // gone: re-read the account rather than guess.
                    Err(e @ (IamError::EntityAlreadyExists { .. } | IamError::NoSuchEntity { .. })) => {
                        return Err(StepError::StaleInventory(e.to_string()));
                    }
                    Err(e) => return Err(StepError::Iam(e)),
                }
                failpoint::hit("after-mfa-enabled");
                let now = self.ctx.now();
                self.account.record(Record::Enabled { user: user.clone(), serial: serial.clone(), at: now });
                if let Some(seed) = self.secrets.get(secret.as_str()) {
                    self.ctx.metrics.observe_enrollment(now.duration_since(seed.created).as_secs_f64());
                }
                self.delete_secret(secret).await
            }
            Step::RejectCodes { secret, message, cause, .. } => {
                self.reject(secret, message).await?;
                self.ctx.metrics.count_refusal(cause.as_str());
                Ok(())
            }
        }
    }

    /// Whether IAM lists `serial` among `user`'s MFA devices (assigned, so enabled).
    async fn enabled_for(&self, user: &str, serial: &str) -> Result<bool, StepError> {
        let devices = self.account.iam.list_mfa_devices(user).await.map_err(StepError::Iam)?;
        Ok(devices.iter().any(|d| d.serial == serial))
    }

    async fn create_pending(&self, user: &str, at: jiff::Timestamp) -> Result<(), StepError> {
        // A Secret squatting the name would make the device useless: check first, so a
        // squatter costs a read, not IAM writes.
        // (A LIST by name: the operator's RBAC has no `get` on Secrets.)
        let name = seed_secret::secret_name(&self.id.name, user);
        let by_name = ListParams::default().fields(&format!("metadata.name={name}"));
        match self.api.list_metadata(&by_name).await {
            Ok(found) if found.items.is_empty() => {}
            Ok(_) => return Err(StepError::NameTaken(name)),
            Err(e) => return Err(StepError::Kube("read seed Secret", e)),
        }
        let path = self.device_path;
        let tags = DeviceTags::from([
            (TAG_ENROLLMENT.to_owned(), self.id.to_string()),
            (TAG_USER.to_owned(), user.to_owned()),
        ]);
        failpoint::stall("before-device-created").await;
        let device = match self.account.iam.create_virtual_mfa_device(path, user, &tags).await {
            Ok(device) => device,
            Err(IamError::EntityAlreadyExists { .. }) => {
                return Err(StepError::StaleInventory(format!(
                    "a virtual MFA device named {user} already exists under {path}; re-reading the account"
                )));
            }
            Err(e) => return Err(StepError::Iam(e)),
        };
        failpoint::hit("after-device-created");
        self.account.record(Record::Created { serial: device.serial.clone() });
        // The seed exists only in this response: store it at once.
        let account = device.serial.split(':').nth(4).filter(|a| !a.is_empty()).unwrap_or("aws").to_owned();
        let uri = qr::otpauth_uri(ISSUER, &format!("{user}@{account}"), device.seed.expose());
        let png = match qr::qr_png(&uri) {
            Ok(png) => png,
            Err(e) => {
                tracing::warn!(error = %e, "cannot render the QR code; the Secret carries the seed and URI only");
                Vec::new()
            }
        };
        let Some(owner) = self.enrollment.controller_owner_ref(&()) else {
            if self.account.iam.delete_virtual_mfa_device(&device.serial).await.is_ok() {
                self.account.record(Record::Deleted { serial: device.serial.clone() });
            }
            return Err(StepError::NoOwner);
        };
        let secret = seed_secret::build(
            seed_secret::NewSeedSecret {
                namespace: &self.id.namespace,
                enrollment: &self.id.name,
                owner,
                user,
                serial: &device.serial,
                seed: &device.seed,
                otpauth_uri: &uri,
                qr_png: png,
                created_at: at,
            },
            &self.ctx.integrity,
        );
        let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() };
        if let Err(e) = self.api.create(&params, &secret).await {
            // Without its Secret the device is useless: remove it now rather than leave
            // an orphan (the next reconcile would remove it too).
            if self.account.iam.delete_virtual_mfa_device(&device.serial).await.is_ok() {
                self.account.record(Record::Deleted { serial: device.serial.clone() });
            }
            return Err(StepError::Kube("create seed Secret", e));
        }
        self.account.record(Record::Claimed { serial: device.serial, holder: self.id.clone() });
        failpoint::hit("after-secret-created");
        Ok(())
    }

    async fn delete_device(&self, serial: &str) -> Result<(), StepError> {
        // Never touch a device the inventory says is assigned: the operator never
        // deactivates anyone's MFA (moto would even delete an assigned device).
        let assigned = self
            .account
            .view()
            .inventory
            .as_ref()
            .is_some_and(|inv| inv.virtual_device(serial).is_some_and(|d| d.user.is_some()));
        if assigned {
            return Ok(());
        }
        match self.account.iam.delete_virtual_mfa_device(serial).await {
            Ok(()) | Err(IamError::NoSuchEntity { .. }) => {}
            // Assigned since the inventory was read: leave it alone.
            Err(IamError::DeleteConflict { .. }) => {
                return Err(StepError::StaleInventory(format!("device {serial} is in use; re-reading the account")));
            }
            // Only this device: the rest of the plan goes on (see `StepError::Foreign`).
            Err(IamError::AccessDenied { .. }) => return Err(StepError::Foreign(serial.to_owned())),
            Err(e) => return Err(StepError::Iam(e)),
        }
        self.account.record(Record::Deleted { serial: serial.to_owned() });
        Ok(())
    }

    async fn delete_secret(&self, name: &str) -> Result<(), StepError> {
        delete_seed_secret(&self.api, name).await.map_err(|e| StepError::Kube("delete seed Secret", e))?;
        if let Some(secret) = self.secrets.get(name) {
            self.account.record(Record::Released { serial: secret.serial.clone(), holder: self.id.clone() });
        }
        Ok(())
    }

    /// Clears the code keys and records the refusal, only if the Secret is still the
    /// version that was checked (a newer submission is checked on the next reconcile).
    /// The count of refusals is the operator's, in status; the annotation only tells the
    /// person (and the plugin) why.
    async fn reject(&self, name: &str, message: &str) -> Result<(), StepError> {
        let resource_version = self.secrets.get(name).and_then(|s| s.resource_version.clone());
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": resource_version,
                "annotations": { ANNOTATION_LAST_REJECTION: message },
            },
            "data": { KEY_CODE1: null, KEY_CODE2: null },
        });
        self.api
            .patch(
                name,
                &PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() },
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| StepError::Kube("clear refused codes", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_queued_meanwhile_are_one_per_reason_in_order() {
        let mut notes = Notes::default();
        notes.push(EventReason::DeviceCreated, "pending device created for alice".into());
        notes.push(EventReason::MfaEnabled, "MFA enabled for bob".into());
        notes.push(EventReason::DeviceCreated, "pending device created for carol".into());
        notes.push(EventReason::DeviceCreated, "pending device created for dave".into());
        assert_eq!(
            notes.next(),
            Some((
                EventReason::DeviceCreated,
                "pending device created for alice (and 2 more DeviceCreated meanwhile)".into()
            ))
        );
        assert_eq!(notes.next(), Some((EventReason::MfaEnabled, "MFA enabled for bob".into())));
        assert_eq!(notes.next(), None);
    }

    #[test]
    fn a_stale_inventory_voids_the_plan_only_when_a_promised_device_was_not_created() {
        let stale = StepError::StaleInventory("re-reading the account".into());
        let create = Step::CreatePending { user: "alice".into(), at: jiff::Timestamp::UNIX_EPOCH };
        let delete = Step::DeleteDevice { serial: "arn:aws:iam::123456789012:mfa/p/alice".into() };
        // The create itself or a delete before it (rotation) failed: no new device exists.
        assert!(planned_status_is_void(&stale, std::slice::from_ref(&create)));
        assert!(planned_status_is_void(&stale, &[delete.clone(), create]));
        // Nothing promised is missing: keep the plan, the re-read corrects the rest.
        assert!(!planned_status_is_void(&stale, std::slice::from_ref(&delete)));
        // Any other failure always voids it.
        let throttled = StepError::Iam(IamError::Throttled { operation: "CreateVirtualMFADevice" });
        assert!(planned_status_is_void(&throttled, std::slice::from_ref(&delete)));
        // A refusal whose codes could not be cleared was still counted.
        let reject = Step::RejectCodes {
            secret: "s".into(),
            attempts: 3,
            message: "m".into(),
            cause: super::super::decide::RefusalCause::Guess,
        };
        assert!(!planned_status_is_void(&throttled, &[reject]));
    }

    #[test]
    fn a_failure_never_resets_the_refusal_count_unless_the_device_was_being_replaced() {
        let planned = UserRow {
            name: "alice".into(),
            state: UserState::Compliant,
            serial: Some("arn:aws:iam::123456789012:mfa/p/alice".into()),
            secret: Some("mfa-seed-alice".into()),
            pending_since: Some(jiff::Timestamp::UNIX_EPOCH),
            expires_at: None,
            message: None,
            failed_attempts: 3,
        };
        let error = StepError::Iam(IamError::Throttled { operation: "EnableMFADevice" });
        let enable = Step::Enable {
            user: "alice".into(),
            serial: "arn:aws:iam::123456789012:mfa/p/alice".into(),
            secret: "mfa-seed-alice".into(),
            codes: super::super::decide::Codes { code1: "123456".into(), code2: "654321".into() },
        };
        let mut status = planned.clone();
        void(&mut status, error.failed_state(), error.message(), &[]);
        assert_eq!(
            (status.state, status.failed_attempts, status.pending_since),
            (UserState::Missing, 3, planned.pending_since),
            "the enable did not happen: {enable:?}"
        );
        // A rotation that failed at its first step left the old device and Secret.
        let mut status = planned.clone();
        void(&mut status, error.failed_state(), error.message(), &[]);
        assert_eq!(status.failed_attempts, 3);
        // One that already removed the old device starts over with the new one.
        let delete = Step::DeleteDevice { serial: "arn:aws:iam::123456789012:mfa/p/alice".into() };
        let mut status = planned.clone();
        void(&mut status, error.failed_state(), error.message(), &[delete]);
        assert_eq!((status.failed_attempts, status.pending_since), (0, None), "a new device starts over");
    }
}
