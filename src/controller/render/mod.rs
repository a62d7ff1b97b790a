//! The one place an enrollment's status is decided. From each user's predicted row (what
//! `decide` expects once its steps succeed), what running the steps produced (`act`'s
//! typed outcomes) and the status last written, [`render`] builds the status with every
//! rule in one place: a failed step's row, users waiting for other work, which blocker
//! outranks which, drift, the summary and the conditions ([`conditions`]). Pure.

mod conditions;

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

pub use conditions::{StatusInput, build, compliant_users, lost_mfa};

use super::decide::{Step, UserRow};
use super::outcome::{Finished, Outcome, StepFailure, stale_inventory};
use super::selection::Selection;
use super::vocabulary::{Blocker, ConditionReason};
use crate::crd::{MfaEnrollmentStatus, Mode, UserState};
use crate::inventory::{Inventory, MfaState};

/// Everything [`render`] reads.
pub struct RenderInput<'a> {
    pub mode: Mode,
    pub generation: Option<i64>,
    pub now: Timestamp,
    /// Each user's predicted row, and rows of names that do not exist.
    pub planned: Vec<UserRow>,
    /// The decisions that ran (or were stopped), in the order they finished.
    pub finished: &'a [Finished],
    /// Users whose steps wait for another reconcile, or whose MFA devices could not be
    /// listed: they keep the row last written for them.
    pub waiting: &'a [String],
    /// Each user's row as last written.
    pub before: &'a BTreeMap<String, UserRow>,
    /// A value in the spec a person must fix (a group that does not exist).
    pub spec_blocker: Option<Blocker>,
    pub root_mfa_enabled: Option<bool>,
    /// The status last written, progress reports included: conditions move on from it.
    pub previous: Option<&'a MfaEnrollmentStatus>,
    /// The users last seen Compliant (drift is a user who was and is not).
    pub compliant_before: &'a BTreeSet<String>,
}

/// A rendered status and what the reconcile does about it.
pub struct Rendered {
    pub status: MfaEnrollmentStatus,
    /// What kept this reconcile from finishing: retried unless it needs a person.
    pub blocker: Option<Blocker>,
    /// Some users wait for other work: look again shortly.
    pub waiting: bool,
    /// Users who lost their MFA since they were last seen Compliant.
    pub drifted: Vec<String>,
    /// The users Compliant now, when this reconcile saw the whole picture (else the last
    /// known set stays).
    pub compliant: Option<BTreeSet<String>>,
    /// The earliest expiry of a pending device.
    pub next_expiry: Option<Timestamp>,
}

/// The status once `finished` ran.
pub fn render(input: RenderInput<'_>) -> Rendered {
    let users = rows(input.planned, input.finished, input.waiting, input.before);
    let waiting = (!input.waiting.is_empty()).then(|| Blocker {
        reason: ConditionReason::Progressing,
        message: format!("{} selected users wait for other work in the account; retrying shortly", input.waiting.len()),
    });
    // A value a person must fix outranks a transient failure.
    let blocker = match (input.spec_blocker, step_blocker(input.finished)) {
        (_, Some(step)) if step.needs_person() => Some(step),
        (Some(spec), _) => Some(spec),
        (None, step) => step,
    };
    // Only a reconcile that saw the whole picture may say a user lost MFA.
    let clean = blocker.is_none() && !stale_inventory(input.finished) && waiting.is_none();
    let drifted = if clean { lost_mfa(input.compliant_before, &users) } else { Vec::new() };
    let compliant = clean.then(|| compliant_users(users.iter().map(|u| (u.name.as_str(), u.state))));
    let next_expiry = users.iter().filter_map(|u| u.expires_at).min();
    let status = build(StatusInput {
        mode: input.mode,
        generation: input.generation,
        now: input.now,
        users,
        blocker: blocker.clone().or(waiting.clone()),
        root_mfa_enabled: input.root_mfa_enabled,
        previous: input.previous,
    });
    Rendered { status, blocker, waiting: waiting.is_some(), drifted, compliant, next_expiry }
}

/// Each user's row once `finished` ran: predicted rows stand for decisions that are done,
/// a failed step leaves the user as they were (or Failed when it is permanent), codes AWS
/// refused show the refusal `decide` prepared, and `waiting` users keep their last row.
pub fn rows(
    mut planned: Vec<UserRow>,
    finished: &[Finished],
    waiting: &[String],
    before: &BTreeMap<String, UserRow>,
) -> Vec<UserRow> {
    for name in waiting {
        let Some(row) = planned.iter_mut().find(|p| p.name == *name) else { continue };
        match before.get(name) {
            Some(previous) => *row = previous.clone(),
            None => void(row, UserState::Missing, "waiting for other work on this user to finish".into(), &[]),
        }
    }
    let stopped_by = finished.iter().find_map(|f| match &f.outcome {
        Outcome::Failed { failure, .. } if failure.stops_everything() => Some(failure),
        _ => None,
    });
    for finished in finished {
        let Some(user) = &finished.decision.user else { continue };
        let Some(row) = planned.iter_mut().find(|p| &p.name == user) else { continue };
        let steps = &finished.decision.steps;
        match &finished.outcome {
            Outcome::Done => {}
            Outcome::NotRun => {
                if let Some(failure) = stopped_by {
                    void(row, failure.failed_state(), failure.message(), &[]);
                }
            }
            Outcome::Failed { index, failure: StepFailure::CodesRefused } => {
                if let Some(Step::Enable { if_refused, .. }) = steps.get(*index) {
                    *row = if_refused.row.clone();
                }
            }
            Outcome::Failed { index, failure } => {
                if row_is_void(failure, &steps[*index..]) {
                    void(row, failure.failed_state(), failure.message(), finished.ran());
                }
            }
        }
    }
    planned
}

/// The most important step failure: the first that needs a person, else the first.
fn step_blocker(finished: &[Finished]) -> Option<Blocker> {
    let mut blocker: Option<Blocker> = None;
    for finished in finished {
        let Outcome::Failed { failure, .. } = &finished.outcome else { continue };
        // A refusal and a missing address are one user's, shown in their row.
        if matches!(failure, StepFailure::CodesRefused | StepFailure::NoAddress(_)) {
            continue;
        }
        let new = failure.blocker();
        if blocker.as_ref().is_none_or(|b| !b.needs_person() && new.needs_person()) {
            blocker = Some(new);
        }
    }
    blocker
}

/// Whether a failed step voids the user's predicted row. A stale inventory is re-read at
/// once and usually leaves the prediction true (an enable that another replica already
/// did), except when a pending device and Secret that never came to be (`unrun`: the
/// failed step and those after it) would be shown. A refusal whose codes could not be
/// cleared still counted: its predicted row (with the count) stands.
fn row_is_void(failure: &StepFailure, unrun: &[Step]) -> bool {
    if matches!(unrun.first(), Some(Step::RejectCodes { .. })) {
        return false;
    }
    !matches!(failure, StepFailure::StaleInventory(_)) || unrun.iter().any(|a| matches!(a, Step::CreatePending { .. }))
}

/// Voids a user's predicted row after their steps did not (all) happen; `ran` is the part
/// that did. The refusal count and the device it belongs to survive unless the steps that
/// ran already removed that device or its Secret: a failure, or steps that never started,
/// must never reset the guess limit.
fn void(row: &mut UserRow, state: UserState, message: String, ran: &[Step]) {
    let replaced = ran
        .iter()
        .any(|a| matches!(a, Step::CreatePending { .. } | Step::DeleteDevice { .. } | Step::DeleteSecret { .. }));
    row.state = state;
    row.message = Some(message);
    row.serial = None;
    row.secret = None;
    row.expires_at = None;
    // A link that was not sent (or whose sending is unfinished) has no times to show.
    row.link_sent_at = None;
    row.link_expires_at = None;
    if replaced {
        row.pending_since = None;
        row.failed_attempts = 0;
    }
}

/// The rows while the steps of `unfinished` users (with whether they create a device)
/// still run: those show the row last written for them (or, new users, Missing), never a
/// prediction.
pub fn in_progress(
    rows: Vec<UserRow>,
    unfinished: &BTreeMap<String, bool>,
    before: &BTreeMap<String, UserRow>,
) -> Vec<UserRow> {
    rows.into_iter()
        .map(|mut row| match (unfinished.get(&row.name), before.get(&row.name)) {
            (None, _) => row,
            (Some(_), Some(previous)) => previous.clone(),
            (Some(creates), None) => {
                let message = if *creates { "a pending device is being created" } else { "work in progress" };
                void(&mut row, UserState::Missing, message.into(), &[]);
                row
            }
        })
        .collect()
}

/// The rows a status shows, as rows: what a reconcile that could not look at AWS keeps.
pub fn rows_of(status: &MfaEnrollmentStatus) -> Vec<UserRow> {
    status
        .users
        .iter()
        .map(|u| UserRow {
            name: u.name.clone(),
            state: u.state,
            serial: u.serial_number.clone(),
            secret: u.seed_secret.clone(),
            pending_since: u.pending_since.as_ref().map(|t| t.0),
            expires_at: u.expires_at.as_ref().map(|t| t.0),
            message: u.message.clone(),
            failed_attempts: u.failed_attempts.unwrap_or(0),
            link_sent_at: u.link_sent_at.as_ref().map(|t| t.0),
            link_expires_at: u.link_expires_at.as_ref().map(|t| t.0),
        })
        .collect()
}

/// Which enrollment generation a status is rendered for, and when.
#[derive(Clone, Copy)]
pub struct Frame {
    pub mode: Mode,
    pub generation: Option<i64>,
    pub now: Timestamp,
}

/// The status when `blocker` kept a reconcile from looking at the account: the last known
/// rows and counts, and the blocker.
pub fn blocked(frame: Frame, previous: &MfaEnrollmentStatus, blocker: Blocker) -> MfaEnrollmentStatus {
    let status = build(StatusInput {
        mode: frame.mode,
        generation: frame.generation,
        now: frame.now,
        users: rows_of(previous),
        blocker: Some(blocker),
        root_mfa_enabled: previous.root_account_mfa_enabled,
        previous: Some(previous),
    });
    // The users list is bounded; the counts are not: keep the last known ones.
    MfaEnrollmentStatus {
        summary: previous.summary.clone().or(status.summary),
        users_omitted: previous.users_omitted,
        ..status
    }
}

/// The status of a new generation while the MFA devices of `unresolved` users are being
/// listed: what the inventory already knows, and that the rest is coming. Users the last
/// status shows keep their row (and their refusal count).
pub fn listing(
    frame: Frame,
    selection: &Selection,
    inventory: &Inventory,
    before: &BTreeMap<String, UserRow>,
    unresolved: usize,
    previous: Option<&MfaEnrollmentStatus>,
) -> MfaEnrollmentStatus {
    let users = selection
        .users
        .iter()
        .map(|name| {
            if let Some(previous) = before.get(name) {
                return previous.clone();
            }
            let (state, message) = match inventory.mfa_state(name) {
                MfaState::Active(_) => (UserState::Compliant, None),
                _ => (UserState::Missing, Some("MFA devices not listed yet")),
            };
            UserRow { message: message.map(str::to_owned), ..UserRow::new(name, state) }
        })
        .chain(selection.not_found.iter().map(|name| UserRow::new(name, UserState::NotFound)))
        .collect();
    build(StatusInput {
        mode: frame.mode,
        generation: frame.generation,
        now: frame.now,
        users,
        blocker: Some(Blocker {
            reason: ConditionReason::Progressing,
            message: format!("listing the MFA devices of {unresolved} selected users"),
        }),
        root_mfa_enabled: Some(inventory.root_mfa_enabled),
        previous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::IamError;
    use crate::controller::decide::{Codes, Decision, IfRefused, RefusalCause};
    use crate::controller::vocabulary::EventReason;

    const SERIAL: &str = "arn:aws:iam::123456789012:mfa/p/alice";

    fn pending(attempts: u32) -> UserRow {
        UserRow {
            name: "alice".into(),
            state: UserState::Pending,
            serial: Some(SERIAL.into()),
            secret: Some("mfa-seed-alice".into()),
            pending_since: Some(Timestamp::UNIX_EPOCH),
            expires_at: None,
            message: None,
            failed_attempts: attempts,
            link_sent_at: None,
            link_expires_at: None,
        }
    }

    fn enable(if_refused: UserRow) -> Step {
        Step::Enable {
            user: "alice".into(),
            serial: SERIAL.into(),
            secret: "mfa-seed-alice".into(),
            codes: Codes { code1: "123456".into(), code2: "654321".into() },
            if_refused: Box::new(IfRefused {
                message: "refused".into(),
                row: if_refused,
                note: crate::controller::decide::EventNote { reason: EventReason::CodesRejected, message: "m".into() },
            }),
        }
    }

    fn finished(steps: Vec<Step>, outcome: Outcome) -> Finished {
        Finished { decision: Decision { user: Some("alice".into()), steps, note: None }, outcome }
    }

    fn throttled() -> StepFailure {
        StepFailure::Iam(IamError::Throttled { operation: "EnableMFADevice" })
    }

    #[test]
    fn a_stale_inventory_voids_the_prediction_only_when_a_promised_device_was_not_created() {
        let stale = StepFailure::StaleInventory("re-reading the account".into());
        let create = Step::CreatePending { user: "alice".into(), at: Timestamp::UNIX_EPOCH };
        let delete = Step::DeleteDevice { serial: SERIAL.into() };
        // The create itself or a delete before it (rotation) failed: no new device exists.
        assert!(row_is_void(&stale, std::slice::from_ref(&create)));
        assert!(row_is_void(&stale, &[delete.clone(), create]));
        // Nothing promised is missing: keep the prediction, the re-read corrects the rest.
        assert!(!row_is_void(&stale, std::slice::from_ref(&delete)));
        // Any other failure always voids it.
        assert!(row_is_void(&throttled(), std::slice::from_ref(&delete)));
        // A refusal whose codes could not be cleared was still counted.
        let reject =
            Step::RejectCodes { secret: "s".into(), attempts: 3, message: "m".into(), cause: RefusalCause::Guess };
        assert!(!row_is_void(&throttled(), &[reject]));
    }

    #[test]
    fn a_failure_never_resets_the_refusal_count_unless_the_device_was_being_replaced() {
        let predicted = UserRow { state: UserState::Compliant, ..pending(3) };
        let failed = |steps: Vec<Step>, index| {
            rows(
                vec![predicted.clone()],
                &[finished(steps, Outcome::Failed { index, failure: throttled() })],
                &[],
                &BTreeMap::new(),
            )
            .remove(0)
        };
        // The enable did not happen: the count and the device it belongs to stay.
        let row = failed(vec![enable(pending(4))], 0);
        assert_eq!(
            (row.state, row.failed_attempts, row.pending_since),
            (UserState::Missing, 3, predicted.pending_since)
        );
        // A rotation that already removed the old device starts over with the new one.
        let delete = Step::DeleteDevice { serial: SERIAL.into() };
        let create = Step::CreatePending { user: "alice".into(), at: Timestamp::UNIX_EPOCH };
        let row = failed(vec![delete, create], 1);
        assert_eq!((row.failed_attempts, row.pending_since), (0, None), "a new device starts over");
    }

    #[test]
    fn codes_aws_refused_show_the_refusal_decide_prepared() {
        let predicted = UserRow { state: UserState::Compliant, ..pending(1) };
        let refused = UserRow { message: Some("codes refused: by AWS".into()), ..pending(2) };
        let out = rows(
            vec![predicted],
            &[finished(
                vec![enable(refused.clone())],
                Outcome::Failed { index: 0, failure: StepFailure::CodesRefused },
            )],
            &[],
            &BTreeMap::new(),
        );
        assert_eq!(out, vec![refused]);
    }

    #[test]
    fn steps_stopped_by_another_failure_show_that_failure_whatever_order_they_finished_in() {
        let predicted = vec![
            UserRow { state: UserState::Compliant, ..pending(0) },
            UserRow { name: "bob".into(), state: UserState::Pending, ..UserRow::new("bob", UserState::Pending) },
        ];
        let bob = Finished {
            decision: Decision {
                user: Some("bob".into()),
                steps: vec![Step::CreatePending { user: "bob".into(), at: Timestamp::UNIX_EPOCH }],
                note: None,
            },
            outcome: Outcome::NotRun,
        };
        let denied = StepFailure::Iam(IamError::AccessDenied { operation: "EnableMFADevice", message: "no".into() });
        // bob's NotRun is seen before the failure that stopped it.
        let all = [bob, finished(vec![enable(pending(1))], Outcome::Failed { index: 0, failure: denied })];
        let out = rows(predicted, &all, &[], &BTreeMap::new());
        assert_eq!(out[1].state, UserState::Missing);
        assert!(out[1].message.as_deref().is_some_and(|m| m.contains("no")), "{:?}", out[1].message);
        let Rendered { blocker, compliant, drifted, .. } = render(RenderInput {
            mode: Mode::Enroll,
            generation: Some(1),
            now: Timestamp::UNIX_EPOCH,
            planned: vec![UserRow { state: UserState::Compliant, ..pending(0) }],
            finished: &all,
            waiting: &[],
            before: &BTreeMap::new(),
            spec_blocker: None,
            root_mfa_enabled: None,
            previous: None,
            compliant_before: &BTreeSet::from(["alice".to_owned()]),
        });
        assert_eq!(blocker.map(|b| b.reason), Some(ConditionReason::AccessDenied));
        assert_eq!((compliant, drifted), (None, Vec::<String>::new()), "no drift is judged from a partial picture");
    }

    #[test]
    fn waiting_users_keep_their_last_row_and_the_status_says_why() {
        let before = BTreeMap::from([("alice".to_owned(), pending(2))]);
        let planned =
            vec![UserRow { state: UserState::Compliant, ..pending(0) }, UserRow::new("carol", UserState::Pending)];
        let rendered = render(RenderInput {
            mode: Mode::Enroll,
            generation: Some(1),
            now: Timestamp::UNIX_EPOCH,
            planned,
            finished: &[],
            waiting: &["alice".to_owned(), "carol".to_owned()],
            before: &before,
            spec_blocker: None,
            root_mfa_enabled: None,
            previous: None,
            compliant_before: &BTreeSet::new(),
        });
        assert!(rendered.waiting);
        let users = &rendered.status.users;
        let alice = users.iter().find(|u| u.name == "alice").expect("alice");
        assert_eq!((alice.state, alice.failed_attempts), (UserState::Pending, Some(2)));
        let carol = users.iter().find(|u| u.name == "carol").expect("carol");
        assert_eq!(carol.state, UserState::Missing);
        let ready = rendered.status.conditions.iter().find(|c| c.type_ == "Ready").expect("Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "Progressing"));
    }

    #[test]
    fn a_spec_blocker_outranks_a_transient_failure_but_not_one_that_needs_a_person() {
        let spec = Blocker { reason: ConditionReason::InvalidSpec, message: "no group".into() };
        let render_with = |failure: StepFailure| {
            let all = [finished(vec![enable(pending(1))], Outcome::Failed { index: 0, failure })];
            render(RenderInput {
                mode: Mode::Enroll,
                generation: Some(1),
                now: Timestamp::UNIX_EPOCH,
                planned: vec![UserRow { state: UserState::Compliant, ..pending(0) }],
                finished: &all,
                waiting: &[],
                before: &BTreeMap::new(),
                spec_blocker: Some(spec.clone()),
                root_mfa_enabled: None,
                previous: None,
                compliant_before: &BTreeSet::new(),
            })
            .blocker
            .map(|b| b.reason)
        };
        assert_eq!(render_with(throttled()), Some(ConditionReason::InvalidSpec));
        let denied = StepFailure::Iam(IamError::AccessDenied { operation: "EnableMFADevice", message: "no".into() });
        assert_eq!(render_with(denied), Some(ConditionReason::AccessDenied));
    }
}
