//! The status object from its rows: the summary, the bounded users list and the kstatus
//! conditions. Pure; the condition helper keeps `lastTransitionTime` unless a condition
//! actually flips, so an unchanged world produces an identical status and no patch.

use std::collections::BTreeSet;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::controller::decide::UserRow;
use crate::controller::vocabulary::{Blocker, ConditionReason, ConditionType};
use crate::crd::{MfaEnrollmentStatus, Mode, Summary, UserState, UserStatus, status::MAX_STATUS_USERS};

/// Inputs of [`build`].
pub struct StatusInput<'a> {
    pub mode: Mode,
    pub generation: Option<i64>,
    pub now: Timestamp,
    pub users: Vec<UserRow>,
    pub blocker: Option<Blocker>,
    pub root_mfa_enabled: Option<bool>,
    pub previous: Option<&'a MfaEnrollmentStatus>,
}

/// Builds the whole status.
pub fn build(input: StatusInput<'_>) -> MfaEnrollmentStatus {
    let mut users = input.users;
    // Users with refused submissions first: their count lives only in this list, so the
    // bound must not drop it (it would take over 200 people guessing at once).
    users.sort_by(|a, b| {
        (std::cmp::Reverse(a.failed_attempts), a.state.attention_rank(), &a.name).cmp(&(
            std::cmp::Reverse(b.failed_attempts),
            b.state.attention_rank(),
            &b.name,
        ))
    });

    let mut summary = Summary::default();
    for user in &users {
        let counter = match user.state {
            UserState::Compliant => &mut summary.compliant,
            UserState::Pending => &mut summary.pending,
            UserState::Missing => &mut summary.missing,
            UserState::Failed => &mut summary.failed,
            UserState::NotFound => &mut summary.not_found,
        };
        *counter += 1;
        if user.state != UserState::NotFound {
            summary.selected += 1;
        }
    }

    let without_mfa = summary.selected - summary.compliant;
    let unfinished = input.mode == Mode::Enroll && (summary.missing > 0 || summary.failed > 0);
    let mut conditions = input.previous.map(|p| p.conditions.clone()).unwrap_or_default();
    let mut set = |kind: ConditionType, status: bool, reason: ConditionReason, message: String| {
        set_condition(&mut conditions, kind, status, reason, message, input.generation, input.now);
    };

    match &input.blocker {
        Some(blocker) if blocker.needs_person() => {
            set(ConditionType::Ready, false, blocker.reason, blocker.message.clone());
            set(ConditionType::Reconciling, false, ConditionReason::AsExpected, String::new());
            set(ConditionType::Stalled, true, blocker.reason, blocker.message.clone());
        }
        Some(blocker) => {
            set(ConditionType::Ready, false, blocker.reason, blocker.message.clone());
            set(ConditionType::Reconciling, true, blocker.reason, blocker.message.clone());
            set(ConditionType::Stalled, false, ConditionReason::AsExpected, String::new());
        }
        None if unfinished => {
            let message = format!("{} selected users still need a pending device", summary.missing + summary.failed);
            set(ConditionType::Ready, false, ConditionReason::Progressing, message.clone());
            set(ConditionType::Reconciling, true, ConditionReason::Progressing, message);
            set(ConditionType::Stalled, false, ConditionReason::AsExpected, String::new());
        }
        None => {
            let message = match input.mode {
                Mode::Report => {
                    format!("inventory complete: {} of {} selected users have MFA", summary.compliant, summary.selected)
                }
                Mode::Enroll => format!(
                    "every selected user has MFA or a pending device ({} compliant, {} pending)",
                    summary.compliant, summary.pending
                ),
            };
            set(ConditionType::Ready, true, ConditionReason::Reconciled, message);
            set(ConditionType::Reconciling, false, ConditionReason::AsExpected, String::new());
            set(ConditionType::Stalled, false, ConditionReason::AsExpected, String::new());
        }
    }
    if without_mfa == 0 {
        set(
            ConditionType::Compliant,
            true,
            ConditionReason::AllUsersHaveMfa,
            format!("all {} selected users have an active MFA device", summary.selected),
        );
    } else {
        let (reason, message) = match input.mode {
            Mode::Enroll => (
                ConditionReason::AwaitingCodes,
                format!(
                    "{without_mfa} of {} selected users have no active MFA device ({} pending codes, {} missing, {} failed)",
                    summary.selected, summary.pending, summary.missing, summary.failed
                ),
            ),
            Mode::Report => (
                ConditionReason::UsersWithoutMfa,
                format!("{without_mfa} of {} selected users have no active MFA device", summary.selected),
            ),
        };
        set(ConditionType::Compliant, false, reason, message);
    }

    let total = users.len();
    let listed: Vec<UserStatus> = users.into_iter().take(MAX_STATUS_USERS).map(user_status).collect();
    MfaEnrollmentStatus {
        observed_generation: input.generation,
        conditions,
        summary: Some(summary),
        root_account_mfa_enabled: input
            .root_mfa_enabled
            .or_else(|| input.previous.and_then(|p| p.root_account_mfa_enabled)),
        users_omitted: u32::try_from(total - listed.len()).unwrap_or(u32::MAX),
        users: listed,
    }
}

fn user_status(user: UserRow) -> UserStatus {
    UserStatus {
        name: user.name,
        state: user.state,
        serial_number: user.serial,
        seed_secret: user.secret,
        pending_since: user.pending_since.map(Time),
        expires_at: user.expires_at.map(Time),
        message: user.message.map(bounded_message),
        failed_attempts: (user.failed_attempts > 0).then_some(user.failed_attempts),
        link_sent_at: user.link_sent_at.map(Time),
        link_expires_at: user.link_expires_at.map(Time),
    }
}

/// A message within the schema's 1024 characters (longer ones would fail the whole
/// status write), cut at a character boundary.
fn bounded_message(message: String) -> String {
    const MAX: usize = 1024;
    if message.len() <= MAX {
        return message;
    }
    let mut end = MAX - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// Sets one condition, keeping its `lastTransitionTime` unless its status flips.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    kind: ConditionType,
    status: bool,
    reason: ConditionReason,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    let existing = conditions.iter_mut().find(|c| c.type_ == kind.as_str());
    let last_transition_time = match &existing {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: kind.as_str().to_owned(),
        status,
        reason: reason.as_str().to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    };
    match existing {
        Some(c) => *c = condition,
        None => conditions.push(condition),
    }
    conditions.sort_by_key(|c| order(&c.type_));
}

fn order(kind: &str) -> u8 {
    [ConditionType::Ready, ConditionType::Reconciling, ConditionType::Stalled, ConditionType::Compliant]
        .iter()
        .position(|k| k.as_str() == kind)
        .map_or(u8::MAX, |p| p as u8)
}

/// The users a status or plan shows as Compliant.
pub fn compliant_users<'a>(users: impl IntoIterator<Item = (&'a str, UserState)>) -> BTreeSet<String> {
    users.into_iter().filter(|(_, state)| *state == UserState::Compliant).map(|(name, _)| name.to_owned()).collect()
}

/// Users who were Compliant and now exist without an active MFA device: they lost their
/// MFA (deactivated out of band). A user who no longer exists did not lose MFA.
pub fn lost_mfa(compliant_before: &BTreeSet<String>, users: &[UserRow]) -> Vec<String> {
    users
        .iter()
        .filter(|u| matches!(u.state, UserState::Pending | UserState::Missing | UserState::Failed))
        .filter(|u| compliant_before.contains(&u.name))
        .map(|u| u.name.clone())
        .collect()
}

#[cfg(test)]
#[path = "conditions_tests.rs"]
mod tests;
