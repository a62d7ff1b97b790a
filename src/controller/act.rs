//! The effects layer: runs decided steps against IAM and Kubernetes and returns how each
//! decision ended (`outcome.rs`); it never edits a prediction. Every step is idempotent
//! (deleting what is gone succeeds, creating what exists makes the next reconcile decide
//! again from a fresh inventory) and ordered so a crash between two steps leaves a state
//! the next decision repairs: device first, Secret at once after; enable first, Secret
//! deletion after.
//!
//! Decisions run concurrently: code submissions at once, bulk writes (creating and
//! removing devices) a bounded number at a time per account. Each holds the reservation
//! of the users and devices it touches (see `accounts.rs`) until it ends.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};

use super::accounts::{Account, Record, Subject};
use super::context::{Context, FIELD_MANAGER, LinkService};
use super::decide::{Decision, EnrollmentId, RefusalCause, Step};
use super::outcome::{Finished, Outcome, StepFailure};
use super::publish::publish;
use super::reach::Reach;
use super::seed_secret::{self, ANNOTATION_LAST_REJECTION, KEY_CODE1, KEY_CODE2, SeedSecret};
use super::vocabulary::EventReason;
use crate::aws::{DeviceTags, IamApi, IamError};
use crate::crd::{LinkChannel, MfaEnrollment};
use crate::failpoint;
use crate::inventory::device_serial;
use crate::link::Purpose;
use crate::links::{Channel, Outgoing, SendError};
use crate::qr;

/// Why `delivery: Link` cannot work in this operator.
pub const NO_PAGE: &str = "delivery: Link needs the operator's enrollment page (--enrollment-address and --public-url)";

/// Issuer shown by authenticator apps, as AWS's own QR codes name it.
const ISSUER: &str = "Amazon Web Services";

/// Tag keys on the devices the operator creates (the page creates them with the same).
use crate::links::page_accounts::{TAG_ENROLLMENT, TAG_USER};

/// Decision items of one plan in flight at once (bulk ones also wait for the account's
/// write permits).
const DECISIONS_IN_FLIGHT: usize = 64;

/// How often a long apply writes the status it has reached so far.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// One decision with the reservation it runs under.
pub struct Reserved {
    pub decision: Decision,
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

/// The users and devices a decision touches. `account` is the account id, for the
/// serial of a device still to be created.
pub fn subjects(decision: &Decision, account: Option<&str>, device_path: &str) -> Vec<Subject> {
    let mut subjects: Vec<Subject> = decision.user.iter().map(|u| Subject::User(u.clone())).collect();
    for step in &decision.steps {
        match step {
            Step::CreatePending { user, .. } => {
                subjects.push(Subject::User(user.clone()));
                subjects.extend(account.map(|a| Subject::Device(device_serial(a, device_path, user))));
            }
            Step::DeleteDevice { serial } => subjects.push(Subject::Device(serial.clone())),
            Step::Enable { user, serial, .. } => {
                subjects.push(Subject::User(user.clone()));
                subjects.push(Subject::Device(serial.clone()));
            }
            Step::SendLink { user, .. } => subjects.push(Subject::User(user.clone())),
            Step::DeleteSecret { .. } | Step::RejectCodes { .. } | Step::RevokeLinks { .. } => {}
        }
    }
    subjects.sort();
    subjects.dedup();
    subjects
}

/// Whether a decision is a person's code submission (never queued behind bulk work).
fn is_submission(decision: &Decision) -> bool {
    decision.steps.iter().all(|a| matches!(a, Step::Enable { .. } | Step::RejectCodes { .. }))
}

/// Whether a decision creates a pending device (shown as in progress until it ends).
fn creates(decision: &Decision) -> bool {
    decision.steps.iter().any(|a| matches!(a, Step::CreatePending { .. }))
}

struct Effects<'a> {
    enrollment: &'a MfaEnrollment,
    ctx: &'a Context,
    id: EnrollmentId,
    account: &'a Account,
    /// Where this enrollment's devices live (its binding's `device.path`).
    device_path: &'a str,
    /// The account's id, as the binding declares it (and STS confirmed).
    account_id: &'a str,
    secrets: BTreeMap<&'a str, &'a SeedSecret>,
    api: Api<Secret>,
    /// Set by a failure that every later step would meet too; items waiting for a
    /// permit give up at once.
    stop: tokio::sync::watch::Sender<bool>,
}

/// Runs the reserved decisions: submissions at once, bulk work a few at a time, each
/// decision stopped at its first failed step, and returns how each ended, in the order
/// they finished. While they run, `progress` is called with those finished so far and
/// the users whose decisions still run (with whether they create a device) every
/// [`PROGRESS_EVERY`], and at once when a code submission finished, so a person's
/// outcome never waits for bulk work. Events are published here, beside the steps.
pub async fn act<P, F>(
    enrollment: &MfaEnrollment,
    ctx: &Context,
    reach: &Reach,
    secrets: &[SeedSecret],
    decisions: Vec<Reserved>,
    progress: P,
) -> Vec<Finished>
where
    P: Fn(&[Finished], &BTreeMap<String, bool>) -> F,
    F: Future<Output = ()>,
{
    let effects = Effects::new(enrollment, ctx, reach, secrets);
    // Users whose decisions have not finished, with whether they create a device.
    let mut unfinished: BTreeMap<String, bool> =
        decisions.iter().filter_map(|r| Some((r.decision.user.clone()?, creates(&r.decision)))).collect();
    let mut decisions = decisions;
    // Submissions first: they also skip the write permits.
    decisions.sort_by_key(|r| !is_submission(&r.decision));
    let mut running = futures::stream::iter(decisions)
        .map(|reserved| {
            let effects = &effects;
            async move {
                let outcome = effects.run_decision(&reserved.decision).await;
                // The reservation ends with the decision.
                drop(reserved.reservation);
                Finished { decision: reserved.decision, outcome }
            }
        })
        .buffer_unordered(DECISIONS_IN_FLIGHT);
    // Events and progress statuses are written beside the steps, never between them;
    // Events one at a time (see `Notes`).
    let mut notes = Notes::default();
    let mut event: Option<std::pin::Pin<Box<_>>> = None;
    let mut report: Option<std::pin::Pin<Box<F>>> = None;
    let mut report_due = false;
    let mut finished: Vec<Finished> = Vec::new();
    let mut last_report = Instant::now();
    loop {
        if event.is_none()
            && let Some((reason, note)) = notes.next()
        {
            event = Some(Box::pin(publish(ctx, enrollment, reason, note)));
        }
        let done = tokio::select! {
            done = running.next() => match done {
                Some(done) => done,
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
        if let Some(user) = &done.decision.user {
            unfinished.remove(user);
        }
        notes.note(&done, &effects.id);
        report_due |= is_submission(&done.decision) || last_report.elapsed() >= PROGRESS_EVERY;
        finished.push(done);
        if report_due && report.is_none() && !unfinished.is_empty() {
            report = Some(Box::pin(progress(&finished, &unfinished)));
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
    notes.publish_rest(ctx, enrollment).await;
    finished
}

impl Notes {
    /// Publishes what is still queued, one Event after the other.
    async fn publish_rest(mut self, ctx: &Context, enrollment: &MfaEnrollment) {
        while let Some((reason, note)) = self.next() {
            publish(ctx, enrollment, reason, note).await;
        }
    }

    /// Queues the Event a finished decision calls for: its note when it is done, the
    /// prepared refusal when AWS refused the codes, `NoDeliveryAddress` for a user without
    /// an address, `ReconcileFailed` for any other failure.
    fn note(&mut self, done: &Finished, enrollment: &EnrollmentId) {
        match &done.outcome {
            Outcome::Done => {
                if let Some(note) = &done.decision.note {
                    self.push(note.reason, note.message.clone());
                }
            }
            Outcome::NotRun => {}
            Outcome::Failed { index, failure: StepFailure::CodesRefused } => {
                if let Some(Step::Enable { if_refused, .. }) = done.decision.steps.get(*index) {
                    self.push(if_refused.note.reason, if_refused.note.message.clone());
                }
            }
            Outcome::Failed { failure: failure @ StepFailure::NoAddress(_), .. } => {
                self.push(EventReason::NoDeliveryAddress, failure.message());
            }
            Outcome::Failed { failure, .. } => {
                let user = done.decision.user.as_deref().unwrap_or("-");
                tracing::warn!(%enrollment, user, error = %failure.message(), "work failed");
                self.push(EventReason::ReconcileFailed, failure.message());
            }
        }
    }
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

impl<'a> Effects<'a> {
    fn new(enrollment: &'a MfaEnrollment, ctx: &'a Context, reach: &'a Reach, secrets: &'a [SeedSecret]) -> Self {
        let id = EnrollmentId { namespace: enrollment.namespace().unwrap_or_default(), name: enrollment.name_any() };
        Self {
            enrollment,
            ctx,
            api: ctx.api(&id.namespace),
            id,
            account: &reach.account,
            device_path: reach.device_path(),
            account_id: &reach.binding.spec.account_id,
            secrets: secrets.iter().map(|s| (s.name.as_str(), s)).collect(),
            stop: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Runs one decision's steps in order, stopping at the first failure. Bulk decisions
    /// wait for a write permit first; nothing starts once everything was stopped.
    async fn run_decision(&self, decision: &Decision) -> Outcome {
        let mut stopped = self.stop.subscribe();
        if *stopped.borrow() {
            return Outcome::NotRun;
        }
        let _permit = if is_submission(decision) {
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
        for (index, step) in decision.steps.iter().enumerate() {
            if let Err(failure) = self.run(step).await {
                if failure.stops_everything() {
                    self.stop.send_replace(true);
                }
                return Outcome::Failed { index, failure };
            }
        }
        Outcome::Done
    }

    async fn run(&self, step: &Step) -> Result<(), StepFailure> {
        match step {
            Step::CreatePending { user, at } => self.create_pending(user, *at).await,
            Step::DeleteDevice { serial } => self.delete_device(serial).await,
            Step::DeleteSecret { name } => self.delete_secret(name).await,
            Step::Enable { user, serial, secret, codes, if_refused } => {
                match self.account.iam.enable_mfa_device(user, serial, &codes.code1, &codes.code2).await {
                    Ok(()) => {}
                    // "In use" after a retried call whose first attempt did enable it (the
                    // answer was lost): one look at the user's devices says so, instead of
                    // re-reading the whole account.
                    Err(e @ IamError::EntityAlreadyExists { .. }) if self.enabled_for(user, serial).await? => {
                        tracing::info!(user, error = %e, "the device is enabled for the user already");
                    }
                    // AWS refused the codes (or their form): a refusal like a local one
                    // (`decide` prepared what follows), never a step to retry.
                    Err(e) if codes_refused(&e) => {
                        self.reject(secret, &if_refused.message).await?;
                        self.ctx.metrics.count_refusal(RefusalCause::Aws.as_str());
                        return Err(StepFailure::CodesRefused);
                    }
                    // Already enabled (by another replica, or by hand) or the device is
                    // gone: re-read the account rather than guess.
                    Err(e @ (IamError::EntityAlreadyExists { .. } | IamError::NoSuchEntity { .. })) => {
                        return Err(StepFailure::StaleInventory(e.to_string()));
                    }
                    Err(e) => return Err(StepFailure::Iam(e)),
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
            Step::SendLink { user, channel, tags, replaces_expired } => {
                if *replaces_expired {
                    self.ctx.metrics.count_link("expired", 1);
                }
                let sent = self.send_link(user, *channel, tags).await;
                match &sent {
                    Ok(()) => self.ctx.metrics.count_link("sent", 1),
                    Err(StepFailure::NoAddress(_)) => self.ctx.metrics.count_link("no_address", 1),
                    Err(_) => {}
                }
                sent
            }
            Step::RevokeLinks { users } => {
                let Some(LinkService(links)) = &self.ctx.config.links else { return Ok(()) };
                let uid = self.enrollment.uid().unwrap_or_default();
                links.revoke(&uid, Some(users)).await.map_err(|e| StepFailure::Delivery(e.to_string()))?;
                self.ctx.metrics.count_link("revoked", users.len() as u64);
                Ok(())
            }
        }
    }

    /// Mints and sends a one-time link for `user`; nothing is written to AWS.
    async fn send_link(
        &self,
        user: &str,
        channel: LinkChannel,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), StepFailure> {
        let Some(LinkService(links)) = &self.ctx.config.links else {
            return Err(StepFailure::DeliveryNotConfigured(NO_PAGE.into()));
        };
        let Some(enrollment_uid) = self.enrollment.uid() else { return Err(StepFailure::NoOwner) };
        let purpose = Purpose { account: self.account_id.to_owned(), user: user.to_owned(), enrollment_uid };
        let channel = match channel {
            LinkChannel::Email => Channel::Email,
            LinkChannel::Webhook => Channel::Webhook,
            LinkChannel::Manual => Channel::Manual,
        };
        let now = self.ctx.now();
        let outgoing = Outgoing {
            purpose,
            enrollment: self.id.to_string(),
            ttl: self.enrollment.spec.link_ttl(),
            channel,
            tags: tags.clone(),
            account_alias: None,
            at: jiff::Timestamp::from_second(now.as_second()).unwrap_or(now),
        };
        match links.send(outgoing).await {
            Ok(_) => Ok(()),
            Err(SendError::NoAddress(why)) => Err(StepFailure::NoAddress(why)),
            Err(SendError::NotConfigured(why)) => Err(StepFailure::DeliveryNotConfigured(why)),
            Err(SendError::Failed(why)) => Err(StepFailure::Delivery(why)),
        }
    }

    /// Whether IAM lists `serial` among `user`'s MFA devices (assigned, so enabled).
    async fn enabled_for(&self, user: &str, serial: &str) -> Result<bool, StepFailure> {
        let devices = self.account.iam.list_mfa_devices(user).await.map_err(StepFailure::Iam)?;
        Ok(devices.iter().any(|d| d.serial == serial))
    }

    async fn create_pending(&self, user: &str, at: jiff::Timestamp) -> Result<(), StepFailure> {
        // A Secret squatting the name would make the device useless: check first, so a
        // squatter costs a read, not IAM writes.
        // (A LIST by name: the operator's RBAC has no `get` on Secrets.)
        let name = seed_secret::secret_name(&self.id.name, user);
        let by_name = ListParams::default().fields(&format!("metadata.name={name}"));
        match self.api.list_metadata(&by_name).await {
            Ok(found) if found.items.is_empty() => {}
            Ok(_) => return Err(StepFailure::NameTaken(name)),
            Err(e) => return Err(StepFailure::kube("read seed Secret")(e)),
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
                return Err(StepFailure::StaleInventory(format!(
                    "a virtual MFA device named {user} already exists under {path}; re-reading the account"
                )));
            }
            Err(e) => return Err(StepFailure::Iam(e)),
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
            return Err(StepFailure::NoOwner);
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
            return Err(StepFailure::kube("create seed Secret")(e));
        }
        self.account.record(Record::Claimed { serial: device.serial, holder: self.id.clone() });
        failpoint::hit("after-secret-created");
        Ok(())
    }

    async fn delete_device(&self, serial: &str) -> Result<(), StepFailure> {
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
                return Err(StepFailure::StaleInventory(format!("device {serial} is in use; re-reading the account")));
            }
            // Only this device: the rest of the plan goes on (see `StepFailure::Foreign`).
            Err(IamError::AccessDenied { .. }) => return Err(StepFailure::Foreign(serial.to_owned())),
            Err(e) => return Err(StepFailure::Iam(e)),
        }
        self.account.record(Record::Deleted { serial: serial.to_owned() });
        Ok(())
    }

    async fn delete_secret(&self, name: &str) -> Result<(), StepFailure> {
        delete_seed_secret(&self.api, name).await.map_err(StepFailure::kube("delete seed Secret"))?;
        if let Some(secret) = self.secrets.get(name) {
            self.account.record(Record::Released { serial: secret.serial.clone(), holder: self.id.clone() });
        }
        Ok(())
    }

    /// Clears the code keys and records the refusal, only if the Secret is still the
    /// version that was checked (a newer submission is checked on the next reconcile).
    /// The count of refusals is the operator's, in status; the annotation only tells the
    /// person (and the plugin) why.
    async fn reject(&self, name: &str, message: &str) -> Result<(), StepFailure> {
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
            .map_err(StepFailure::kube("clear refused codes"))?;
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
}
