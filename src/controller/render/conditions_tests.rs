//! Exact, synchronous tests of the status builder: summary, ordering and bound of the
//! users list, kstatus conditions, the condition helper, and drift detection.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::*;

/// The first reconcile's clock.
const T0: Timestamp = Timestamp::constant(1_750_000_000, 0);
/// A later reconcile's clock.
const T1: Timestamp = Timestamp::constant(1_750_000_600, 0);
const GENERATION: i64 = 3;

fn user(name: &str, state: UserState) -> UserRow {
    UserRow {
        name: name.into(),
        state,
        serial: None,
        secret: None,
        pending_since: None,
        expires_at: None,
        message: None,
        failed_attempts: 0,
        link_sent_at: None,
        link_expires_at: None,
    }
}

fn users(list: &[(&str, UserState)]) -> Vec<UserRow> {
    list.iter().map(|(name, state)| user(name, *state)).collect()
}

fn input<'a>(
    mode: Mode,
    users: Vec<UserRow>,
    issue: Option<Blocker>,
    now: Timestamp,
    previous: Option<&'a MfaEnrollmentStatus>,
) -> StatusInput<'a> {
    StatusInput {
        mode,
        generation: Some(GENERATION),
        now,
        users,
        blocker: issue,
        root_mfa_enabled: Some(true),
        previous,
    }
}

fn condition(kind: &str, status: &str, reason: &str, message: &str, generation: i64, at: Timestamp) -> Condition {
    Condition {
        type_: kind.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(generation),
        last_transition_time: Time(at),
    }
}

/// The three progress conditions of a fully reconciled generation, set at `T0`.
fn ready(message: &str) -> [Condition; 3] {
    [
        condition("Ready", "True", "Reconciled", message, GENERATION, T0),
        condition("Reconciling", "False", "AsExpected", "", GENERATION, T0),
        condition("Stalled", "False", "AsExpected", "", GENERATION, T0),
    ]
}

fn conditions(progress: [Condition; 3], compliant: Condition) -> Vec<Condition> {
    let mut all = progress.to_vec();
    all.push(compliant);
    all
}

fn names(status: &MfaEnrollmentStatus) -> Vec<&str> {
    status.users.iter().map(|u| u.name.as_str()).collect()
}

use UserState::{Compliant, Failed, Missing, NotFound, Pending};

// ---------------------------------------------------------------------------------------
// Summary, ordering, bound

#[test]
fn summary_counts_every_user_and_names_not_found_are_not_selected() {
    let status = build(input(
        Mode::Enroll,
        users(&[
            ("c1", Compliant),
            ("p1", Pending),
            ("nf1", NotFound),
            ("m1", Missing),
            ("p2", Pending),
            ("f1", Failed),
            ("c2", Compliant),
            ("p3", Pending),
            ("nf2", NotFound),
        ]),
        None,
        T0,
        None,
    ));
    assert_eq!(
        status.summary,
        Some(Summary { selected: 7, compliant: 2, pending: 3, missing: 1, failed: 1, not_found: 2 })
    );
    assert_eq!(status.users_omitted, 0);
    assert_eq!(status.users.len(), 9);
}

#[test]
fn users_are_listed_failed_missing_pending_not_found_compliant_then_by_name() {
    let status = build(input(
        Mode::Enroll,
        users(&[
            ("zed", Compliant),
            ("carl", Compliant),
            ("nora", NotFound),
            ("pia", Pending),
            ("bea", Pending),
            ("mia", Missing),
            ("ada", Missing),
            ("fay", Failed),
            ("Zoe", Missing),
        ]),
        None,
        T0,
        None,
    ));
    // Names compare byte-wise within a state: capitals first.
    assert_eq!(names(&status), ["fay", "Zoe", "ada", "mia", "bea", "pia", "nora", "carl", "zed"]);
}

#[test]
fn user_status_carries_every_planned_field() {
    let pending = UserRow {
        name: "bob".into(),
        state: Pending,
        serial: Some("arn:aws:iam::123456789012:mfa/mfa-operator/bob".into()),
        secret: Some("mfa-seed-bob-1a2b3c4d".into()),
        pending_since: Some(T0),
        expires_at: Some(T0 + SignedDuration::from_hours(168)),
        message: Some("scan the QR code".into()),
        failed_attempts: 2,
        link_sent_at: None,
        link_expires_at: None,
    };
    let status = build(input(Mode::Enroll, vec![pending], None, T0, None));
    assert_eq!(
        status.users,
        [UserStatus {
            name: "bob".into(),
            state: Pending,
            serial_number: Some("arn:aws:iam::123456789012:mfa/mfa-operator/bob".into()),
            seed_secret: Some("mfa-seed-bob-1a2b3c4d".into()),
            pending_since: Some(Time(T0)),
            expires_at: Some(Time(Timestamp::constant(1_750_000_000 + 168 * 3600, 0))),
            message: Some("scan the QR code".into()),
            failed_attempts: Some(2),
            link_sent_at: None,
            link_expires_at: None,
        }]
    );
}

#[test]
fn users_list_is_bounded_to_200_and_counts_the_omitted() {
    let mut planned: Vec<UserRow> = (0..220).map(|i| user(&format!("c{i:03}"), Compliant)).collect();
    planned.extend((0..30).map(|i| user(&format!("m{i:03}"), Missing)));
    let status = build(input(Mode::Report, planned, None, T0, None));
    assert_eq!(MAX_STATUS_USERS, 200);
    assert_eq!(status.users.len(), 200);
    assert_eq!(status.users_omitted, 50);
    assert_eq!(
        status.summary,
        Some(Summary { selected: 250, compliant: 220, pending: 0, missing: 30, failed: 0, not_found: 0 })
    );
    // Every user needing attention is listed, first; the compliant ones fill the rest.
    let expected: Vec<String> =
        (0..30).map(|i| format!("m{i:03}")).chain((0..170).map(|i| format!("c{i:03}"))).collect();
    assert_eq!(names(&status), expected);

    // Exactly at the bound nothing is omitted.
    let planned: Vec<UserRow> = (0..200).map(|i| user(&format!("u{i:03}"), Pending)).collect();
    let status = build(input(Mode::Enroll, planned, None, T0, None));
    assert_eq!((status.users.len(), status.users_omitted), (200, 0));
}

// ---------------------------------------------------------------------------------------
// Conditions

#[test]
fn report_mode_is_ready_once_inventoried_and_not_compliant_with_users_without_mfa() {
    let status = build(input(
        Mode::Report,
        users(&[("alice", Compliant), ("bob", Missing), ("carol", Missing)]),
        None,
        T0,
        None,
    ));
    assert_eq!(status.observed_generation, Some(GENERATION));
    assert_eq!(
        status.conditions,
        conditions(
            ready("inventory complete: 1 of 3 selected users have MFA"),
            condition(
                "Compliant",
                "False",
                "UsersWithoutMfa",
                "2 of 3 selected users have no active MFA device",
                GENERATION,
                T0
            ),
        )
    );
}

#[test]
fn enroll_mode_with_every_user_pending_or_compliant_is_ready_and_awaiting_codes() {
    let status = build(input(
        Mode::Enroll,
        users(&[("alice", Compliant), ("bob", Pending), ("carol", Pending), ("ghost", NotFound)]),
        None,
        T0,
        None,
    ));
    assert_eq!(
        status.conditions,
        conditions(
            ready("every selected user has MFA or a pending device (1 compliant, 2 pending)"),
            condition(
                "Compliant",
                "False",
                "AwaitingCodes",
                "2 of 3 selected users have no active MFA device (2 pending codes, 0 missing, 0 failed)",
                GENERATION,
                T0
            ),
        )
    );
}

#[test]
fn enroll_mode_with_missing_or_failed_users_is_still_reconciling() {
    let status = build(input(
        Mode::Enroll,
        users(&[("alice", Compliant), ("bob", Pending), ("carol", Missing), ("dave", Failed)]),
        None,
        T0,
        None,
    ));
    let message = "2 selected users still need a pending device";
    assert_eq!(
        status.conditions,
        [
            condition("Ready", "False", "Progressing", message, GENERATION, T0),
            condition("Reconciling", "True", "Progressing", message, GENERATION, T0),
            condition("Stalled", "False", "AsExpected", "", GENERATION, T0),
            condition(
                "Compliant",
                "False",
                "AwaitingCodes",
                "3 of 4 selected users have no active MFA device (1 pending codes, 1 missing, 1 failed)",
                GENERATION,
                T0
            ),
        ]
    );

    // Only Failed users count as unfinished too.
    let status = build(input(Mode::Enroll, users(&[("dave", Failed)]), None, T0, None));
    assert_eq!(
        status.conditions[0],
        condition("Ready", "False", "Progressing", "1 selected users still need a pending device", GENERATION, T0)
    );
}

#[test]
fn every_user_compliant_is_compliant_in_both_modes() {
    for (mode, ready_message) in [
        (Mode::Report, "inventory complete: 2 of 2 selected users have MFA"),
        (Mode::Enroll, "every selected user has MFA or a pending device (2 compliant, 0 pending)"),
    ] {
        let status =
            build(input(mode, users(&[("alice", Compliant), ("bob", Compliant), ("gone", NotFound)]), None, T0, None));
        assert_eq!(
            status.conditions,
            conditions(
                ready(ready_message),
                condition(
                    "Compliant",
                    "True",
                    "AllUsersHaveMfa",
                    "all 2 selected users have an active MFA device",
                    GENERATION,
                    T0
                ),
            ),
            "{mode:?}"
        );
    }
}

#[test]
fn transient_issue_is_reconciling_not_stalled() {
    let message = "ListUsers: throttled by IAM";
    let issue = Blocker { reason: ConditionReason::TransientError, message: message.into() };
    assert!(!issue.needs_person());
    let status = build(input(Mode::Enroll, users(&[("alice", Pending)]), Some(issue), T0, None));
    assert_eq!(
        status.conditions,
        [
            condition("Ready", "False", "TransientError", message, GENERATION, T0),
            condition("Reconciling", "True", "TransientError", message, GENERATION, T0),
            condition("Stalled", "False", "AsExpected", "", GENERATION, T0),
            condition(
                "Compliant",
                "False",
                "AwaitingCodes",
                "1 of 1 selected users have no active MFA device (1 pending codes, 0 missing, 0 failed)",
                GENERATION,
                T0
            ),
        ]
    );
}

#[test]
fn issues_that_need_a_person_stall() {
    for (reason, reason_text, message) in [
        (ConditionReason::AccessDenied, "AccessDenied", "ListUsers: access denied: iam:ListUsers"),
        (ConditionReason::InvalidSpec, "InvalidSpec", "group nope does not exist"),
    ] {
        let issue = Blocker { reason, message: message.into() };
        assert!(issue.needs_person());
        let status = build(input(Mode::Report, users(&[("alice", Compliant)]), Some(issue), T0, None));
        assert_eq!(
            status.conditions,
            [
                condition("Ready", "False", reason_text, message, GENERATION, T0),
                condition("Reconciling", "False", "AsExpected", "", GENERATION, T0),
                condition("Stalled", "True", reason_text, message, GENERATION, T0),
                condition(
                    "Compliant",
                    "True",
                    "AllUsersHaveMfa",
                    "all 1 selected users have an active MFA device",
                    GENERATION,
                    T0
                ),
            ],
            "{reason:?}"
        );
    }
}

#[test]
fn only_access_denied_and_invalid_spec_need_a_person() {
    let needs = |reason| Blocker { reason, message: String::new() }.needs_person();
    assert!(needs(ConditionReason::AccessDenied));
    assert!(needs(ConditionReason::InvalidSpec));
    for reason in [
        ConditionReason::TransientError,
        ConditionReason::Progressing,
        ConditionReason::Reconciled,
        ConditionReason::AsExpected,
    ] {
        assert!(!needs(reason), "{reason:?}");
    }
}

#[test]
fn root_account_mfa_and_generation_come_from_the_inputs() {
    let status = build(input(Mode::Report, Vec::new(), None, T0, None));
    assert_eq!(status.root_account_mfa_enabled, Some(true));

    // Unknown this time: the previous answer stays.
    let previous = MfaEnrollmentStatus { root_account_mfa_enabled: Some(false), ..MfaEnrollmentStatus::default() };
    let status = build(StatusInput {
        root_mfa_enabled: None,
        generation: None,
        ..input(Mode::Report, Vec::new(), None, T0, Some(&previous))
    });
    assert_eq!(status.root_account_mfa_enabled, Some(false));
    assert_eq!(status.observed_generation, None);
    assert!(status.conditions.iter().all(|c| c.observed_generation.is_none()));

    let status = build(StatusInput { root_mfa_enabled: None, ..input(Mode::Report, Vec::new(), None, T0, None) });
    assert_eq!(status.root_account_mfa_enabled, None);
}

// ---------------------------------------------------------------------------------------
// The condition helper and stability across reconciles

#[test]
fn set_condition_adds_a_missing_condition_at_now() {
    let mut list = Vec::new();
    set_condition(&mut list, ConditionType::Compliant, true, ConditionReason::AllUsersHaveMfa, "m".into(), Some(1), T0);
    assert_eq!(list, [condition("Compliant", "True", "AllUsersHaveMfa", "m", 1, T0)]);
}

#[test]
fn set_condition_keeps_the_transition_time_while_the_status_holds() {
    let mut list = vec![condition("Ready", "False", "Progressing", "2 users", 1, T0)];
    set_condition(&mut list, ConditionType::Ready, false, ConditionReason::TransientError, "oops".into(), Some(2), T1);
    // Reason, message and observedGeneration follow; lastTransitionTime stays.
    assert_eq!(list, [condition("Ready", "False", "TransientError", "oops", 2, T0)]);
}

#[test]
fn set_condition_moves_the_transition_time_when_the_status_flips() {
    let mut list = vec![condition("Ready", "False", "Progressing", "2 users", 1, T0)];
    set_condition(&mut list, ConditionType::Ready, true, ConditionReason::Reconciled, "done".into(), Some(1), T1);
    assert_eq!(list, [condition("Ready", "True", "Reconciled", "done", 1, T1)]);
}

#[test]
fn set_condition_keeps_the_kstatus_order_and_foreign_conditions_last() {
    let mut list = vec![
        condition("Foreign", "True", "Else", "", 1, T0),
        condition("Compliant", "False", "AwaitingCodes", "", 1, T0),
    ];
    let reason = ConditionReason::AsExpected;
    set_condition(&mut list, ConditionType::Stalled, false, reason, String::new(), Some(1), T0);
    set_condition(&mut list, ConditionType::Ready, true, ConditionReason::Reconciled, String::new(), Some(1), T0);
    set_condition(&mut list, ConditionType::Reconciling, false, reason, String::new(), Some(1), T0);
    let kinds: Vec<&str> = list.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(kinds, ["Ready", "Reconciling", "Stalled", "Compliant", "Foreign"]);

    // A foreign condition survives a whole build.
    let previous = MfaEnrollmentStatus { conditions: list, ..MfaEnrollmentStatus::default() };
    let status = build(input(Mode::Report, Vec::new(), None, T1, Some(&previous)));
    let kinds: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(kinds, ["Ready", "Reconciling", "Stalled", "Compliant", "Foreign"]);
}

/// One reconcile's inputs, re-usable with another clock and previous status.
#[derive(Clone)]
struct Scenario {
    mode: Mode,
    users: Vec<UserRow>,
    issue: Option<Blocker>,
}

fn scenarios() -> Vec<Scenario> {
    let mut pending = user("bob", Pending);
    pending.serial = Some("arn:aws:iam::123456789012:mfa/mfa-operator/bob".into());
    pending.secret = Some("mfa-seed-bob-0a0b0c0d".into());
    pending.pending_since = Some(T0);
    pending.expires_at = Some(T0 + SignedDuration::from_hours(168));
    pending.message = Some("scan the QR code".into());
    let mixed = vec![user("alice", Compliant), pending, user("carol", Missing), user("ghost", NotFound)];
    let many: Vec<UserRow> =
        (0..260).map(|i| user(&format!("u{i:03}"), if i % 3 == 0 { Compliant } else { Pending })).collect();
    vec![
        Scenario { mode: Mode::Report, users: mixed.clone(), issue: None },
        Scenario { mode: Mode::Enroll, users: mixed.clone(), issue: None },
        Scenario { mode: Mode::Enroll, users: users(&[("alice", Compliant), ("bob", Pending)]), issue: None },
        Scenario { mode: Mode::Enroll, users: users(&[("alice", Compliant)]), issue: None },
        Scenario {
            mode: Mode::Enroll,
            users: mixed.clone(),
            issue: Some(Blocker { reason: ConditionReason::TransientError, message: "throttled".into() }),
        },
        Scenario {
            mode: Mode::Report,
            users: mixed,
            issue: Some(Blocker { reason: ConditionReason::AccessDenied, message: "denied".into() }),
        },
        Scenario { mode: Mode::Enroll, users: many, issue: None },
        Scenario { mode: Mode::Report, users: Vec::new(), issue: None },
    ]
}

#[test]
fn rebuilding_from_the_same_inputs_gives_an_identical_status() {
    for (i, scenario) in scenarios().into_iter().enumerate() {
        let first = build(input(scenario.mode, scenario.users.clone(), scenario.issue.clone(), T0, None));
        // Same world, later clock, the first result as the previous status: nothing to patch.
        let second = build(input(scenario.mode, scenario.users.clone(), scenario.issue.clone(), T1, Some(&first)));
        assert_eq!(second, first, "scenario {i}");
        // The planner's user order does not matter either.
        let mut reversed = scenario.users.clone();
        reversed.reverse();
        let third = build(input(scenario.mode, reversed, scenario.issue, T1, Some(&second)));
        assert_eq!(third, first, "scenario {i}, users reversed");
    }
}

#[test]
fn only_the_conditions_that_flip_get_a_new_transition_time() {
    // T0: carol still needs a device. T1: every user has MFA or a pending device.
    let first = build(input(
        Mode::Enroll,
        users(&[("alice", Compliant), ("bob", Pending), ("carol", Missing)]),
        None,
        T0,
        None,
    ));
    let second = build(input(
        Mode::Enroll,
        users(&[("alice", Compliant), ("bob", Pending), ("carol", Pending)]),
        None,
        T1,
        Some(&first),
    ));
    assert_eq!(
        second.conditions,
        [
            condition(
                "Ready",
                "True",
                "Reconciled",
                "every selected user has MFA or a pending device (1 compliant, 2 pending)",
                GENERATION,
                T1
            ),
            condition("Reconciling", "False", "AsExpected", "", GENERATION, T1),
            // Was False, stays False: its time stays.
            condition("Stalled", "False", "AsExpected", "", GENERATION, T0),
            // Still False with a new message: its time stays.
            condition(
                "Compliant",
                "False",
                "AwaitingCodes",
                "2 of 3 selected users have no active MFA device (2 pending codes, 0 missing, 0 failed)",
                GENERATION,
                T0
            ),
        ]
    );

    // A new generation with the same outcome only moves observedGeneration.
    let third = build(StatusInput {
        generation: Some(GENERATION + 1),
        ..input(
            Mode::Enroll,
            users(&[("alice", Compliant), ("bob", Pending), ("carol", Pending)]),
            None,
            T1 + SignedDuration::from_mins(5),
            Some(&second),
        )
    });
    assert_eq!(third.observed_generation, Some(GENERATION + 1));
    let expected: Vec<Condition> = second
        .conditions
        .iter()
        .cloned()
        .map(|c| Condition { observed_generation: Some(GENERATION + 1), ..c })
        .collect();
    assert_eq!(third.conditions, expected);
}

// ---------------------------------------------------------------------------------------
// Drift

fn compliant_of(plans: &[UserRow]) -> BTreeSet<String> {
    compliant_users(plans.iter().map(|u| (u.name.as_str(), u.state)))
}

#[test]
fn lost_mfa_reports_users_who_went_from_compliant_to_pending_missing_or_failed() {
    let before = users(&[
        ("alice", Compliant),
        ("bob", Compliant),
        ("carol", Pending),
        ("dave", Compliant),
        ("erin", Missing),
        ("gus", Compliant),
    ]);
    let now = users(&[
        ("alice", Pending),
        ("bob", Missing),
        ("carol", Missing),
        ("dave", Compliant),
        ("erin", Pending),
        ("frank", Missing),
        ("gus", Failed),
    ]);
    assert_eq!(lost_mfa(&compliant_of(&before), &now), ["alice", "bob", "gus"]);
    // Order follows the planned users.
    let mut reversed = now.clone();
    reversed.reverse();
    assert_eq!(lost_mfa(&compliant_of(&before), &reversed), ["gus", "bob", "alice"]);
    // Nothing known before (first reconcile): nobody lost anything.
    assert_eq!(lost_mfa(&BTreeSet::new(), &now), Vec::<String>::new());
    // Users no longer selected are not reported.
    assert_eq!(lost_mfa(&compliant_of(&before), &users(&[("dave", Compliant)])), Vec::<String>::new());
}

#[test]
fn lost_mfa_ignores_users_that_no_longer_exist() {
    // alice was named in spec.users.names and compliant; her IAM user was deleted, so she
    // is NotFound now. That is not an MFA deactivation: a Warning `MfaDeactivated` Event
    // would send people hunting for drift.
    let before = users(&[("alice", Compliant)]);
    assert_eq!(lost_mfa(&compliant_of(&before), &users(&[("alice", NotFound)])), Vec::<String>::new());
}

#[test]
fn lost_mfa_sees_compliant_users_beyond_the_status_bound() {
    // Compliant users rank last, so in an enrollment of more than 200 users most of them
    // are left out of `status.users`. Drift is judged against every user the previous
    // reconcile planned (the controller remembers them), not the bounded list.
    let mut before: Vec<UserRow> = (0..200).map(|i| user(&format!("m{i:03}"), Missing)).collect();
    before.push(user("alice", Compliant));
    let previous = build(input(Mode::Report, before.clone(), None, T0, None));
    assert_eq!(previous.users_omitted, 1, "alice is past the bound");
    assert!(!compliant_users(previous.users.iter().map(|u| (u.name.as_str(), u.state))).contains("alice"));

    let mut after = before.clone();
    after.pop();
    after.push(user("alice", Missing));
    assert_eq!(lost_mfa(&compliant_of(&before), &after), ["alice"]);
}

#[test]
fn users_with_refused_submissions_are_listed_first_and_messages_stay_within_the_schema() {
    let mut list = users(&[("a-missing", UserState::Missing), ("b-failed", UserState::Failed)]);
    let mut guesser = user("z-pending", Pending);
    guesser.failed_attempts = 2;
    guesser.message = Some("x".repeat(5000));
    list.push(guesser);
    let status = build(input(Mode::Enroll, list, None, T0, None));
    assert_eq!(status.users[0].name, "z-pending", "the count must survive the 200-entry bound");
    assert_eq!(status.users[0].failed_attempts, Some(2));
    let message = status.users[0].message.clone().unwrap_or_default();
    assert!(message.len() <= 1024 && message.ends_with('…'), "{}", message.len());
}
