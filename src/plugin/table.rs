//! The `kubectl mfa status` output: one table of enrollments, then, for each enrollment
//! with users needing attention, a table of those users. Pure: the clock is a parameter.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

use crate::crd::{MfaEnrollment, Mode, UserState, UserStatus};

/// Space between two columns, as kubectl prints it.
const GAP: &str = "   ";
/// Indentation of the per-enrollment user tables.
const INDENT: &str = "  ";
/// What a cell shows when the value is unknown (no status yet).
const NONE: &str = "-";

/// Renders the enrollments (sorted by namespace and name) and their users without MFA.
/// `all_namespaces` adds a NAMESPACE column. Empty input renders as an empty string.
pub fn render(enrollments: &[MfaEnrollment], all_namespaces: bool, now: Timestamp) -> String {
    let mut sorted: Vec<&MfaEnrollment> = enrollments.iter().collect();
    sorted.sort_by_key(|e| (e.namespace(), e.name_any()));
    if sorted.is_empty() {
        return String::new();
    }

    let mut header = vec!["NAME", "MODE", "SELECTED", "COMPLIANT", "PENDING", "MISSING", "READY", "REASON"];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let mut rows = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    rows.extend(sorted.iter().map(|e| enrollment_row(e, all_namespaces)));
    let mut out = columns(&rows, "");

    for enrollment in sorted {
        out.push_str(&attention(enrollment, all_namespaces, now));
    }
    out
}

/// One row of the enrollment table.
fn enrollment_row(enrollment: &MfaEnrollment, all_namespaces: bool) -> Vec<String> {
    let status = enrollment.status.as_ref();
    let summary = status.and_then(|s| s.summary.as_ref());
    let count =
        |pick: fn(&crate::crd::Summary) -> u32| summary.map_or_else(|| NONE.to_owned(), |s| pick(s).to_string());
    let mut row = vec![
        enrollment.name_any(),
        mode(enrollment.spec.mode).to_owned(),
        count(|s| s.selected),
        count(|s| s.compliant),
        count(|s| s.pending),
        count(|s| s.missing),
        condition(enrollment, "Ready").map_or_else(|| NONE.to_owned(), |c| c.status.clone()),
        condition(enrollment, "Compliant").map_or_else(|| NONE.to_owned(), |c| c.reason.clone()),
    ];
    if all_namespaces {
        row.insert(0, enrollment.namespace().unwrap_or_default());
    }
    row
}

/// The block under the tables for one enrollment: why it is stalled, and its users without
/// MFA. Empty when nothing needs attention.
fn attention(enrollment: &MfaEnrollment, all_namespaces: bool, now: Timestamp) -> String {
    let Some(status) = enrollment.status.as_ref() else {
        return String::new();
    };
    let stalled = condition(enrollment, "Stalled").filter(|c| c.status == "True");
    let users: Vec<&UserStatus> = status.users.iter().filter(|u| u.state != UserState::Compliant).collect();
    if stalled.is_none() && users.is_empty() {
        return String::new();
    }

    let name = if all_namespaces {
        format!("{}/{}", enrollment.namespace().unwrap_or_default(), enrollment.name_any())
    } else {
        enrollment.name_any()
    };
    let mut out = format!("\n{name}:\n");
    if let Some(stalled) = stalled {
        out.push_str(&format!("{INDENT}Stalled ({}): {}\n", stalled.reason, one_line(&stalled.message)));
    }
    if !users.is_empty() {
        out.push_str(&format!("{INDENT}{} without MFA:\n", plural(users.len(), "user")));
        let mut rows = vec![["NAME", "STATE", "SECRET", "EXPIRES", "MESSAGE"].map(str::to_owned).to_vec()];
        rows.extend(users.iter().map(|u| {
            vec![
                u.name.clone(),
                state(u.state).to_owned(),
                u.seed_secret.clone().unwrap_or_else(|| NONE.to_owned()),
                expires(u, now),
                u.message.as_deref().map_or_else(|| NONE.to_owned(), one_line),
            ]
        }));
        out.push_str(&columns(&rows, INDENT));
    }
    if status.users_omitted > 0 {
        let omitted = status.users_omitted;
        let users = if omitted == 1 { "user" } else { "users" };
        out.push_str(&format!(
            "{INDENT}({omitted} more {users} not listed: status lists at most {} users, those needing attention first)\n",
            crate::crd::status::MAX_STATUS_USERS
        ));
    }
    out
}

/// When a pending device expires, relative to `now`: `6d23h`, `5h3m`, `12m`, `40s`,
/// `expired`; `-` when the user has no pending device.
pub fn expires(user: &UserStatus, now: Timestamp) -> String {
    match (user.state, &user.expires_at) {
        (UserState::Pending, Some(at)) => {
            let secs = at.0.as_second().saturating_sub(now.as_second());
            if secs <= 0 { "expired".to_owned() } else { short_duration(secs.unsigned_abs()) }
        }
        _ => NONE.to_owned(),
    }
}

/// A duration as kubectl's AGE column writes it, two units at most.
pub fn short_duration(secs: u64) -> String {
    let (days, hours, minutes) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{minutes}m"),
        3600..86_400 if minutes == 0 => format!("{hours}h"),
        3600..86_400 => format!("{hours}h{minutes}m"),
        _ if hours == 0 => format!("{days}d"),
        _ => format!("{days}d{hours}h"),
    }
}

/// Left-aligned columns separated by [`GAP`], each line prefixed with `indent`, without
/// trailing spaces.
fn columns(rows: &[Vec<String>], indent: &str) -> String {
    let count = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..count)
        .map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = indent.to_owned();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str(GAP);
            }
            line.push_str(cell);
            let width = widths.get(i).copied().unwrap_or(0);
            line.extend(std::iter::repeat_n(' ', width.saturating_sub(cell.chars().count())));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn condition<'a>(enrollment: &'a MfaEnrollment, kind: &str) -> Option<&'a Condition> {
    enrollment.status.as_ref()?.conditions.iter().find(|c| c.type_ == kind)
}

fn mode(mode: Mode) -> &'static str {
    match mode {
        Mode::Enroll => "Enroll",
        Mode::Report => "Report",
    }
}

/// The state as status writes it.
pub fn state(state: UserState) -> &'static str {
    match state {
        UserState::Missing => "Missing",
        UserState::Pending => "Pending",
        UserState::Failed => "Failed",
        UserState::NotFound => "NotFound",
        UserState::Compliant => "Compliant",
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

fn one_line(text: &str) -> String {
    super::one_line(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{MfaEnrollmentSpec, MfaEnrollmentStatus, Summary};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const NOW: &str = "2025-06-01T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().expect("timestamp")
    }

    fn enrollment(namespace: &str, name: &str, mode: &str, status: Option<MfaEnrollmentStatus>) -> MfaEnrollment {
        let spec: MfaEnrollmentSpec =
            serde_json::from_value(serde_json::json!({ "mode": mode, "users": { "pathPrefix": "/" } })).expect("spec");
        let mut e = MfaEnrollment::new(name, spec);
        e.metadata.namespace = Some(namespace.to_owned());
        e.status = status;
        e
    }

    fn condition(kind: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: kind.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_transition_time: Time(now()),
            observed_generation: Some(1),
        }
    }

    fn user(name: &str, state: UserState, secret: Option<&str>, expires_in: Option<i64>, message: &str) -> UserStatus {
        UserStatus {
            name: name.to_owned(),
            state,
            serial_number: None,
            seed_secret: secret.map(str::to_owned),
            pending_since: None,
            expires_at: expires_in.map(|s| Time(now() + jiff::SignedDuration::from_secs(s))),
            message: (!message.is_empty()).then(|| message.to_owned()),
            failed_attempts: None,
            link_sent_at: None,
            link_expires_at: None,
        }
    }

    fn status(summary: (u32, u32, u32, u32), users: Vec<UserStatus>, compliant: &str) -> MfaEnrollmentStatus {
        let (selected, compliant_users, pending, missing) = summary;
        MfaEnrollmentStatus {
            observed_generation: Some(1),
            conditions: vec![
                condition("Ready", "True", "Reconciled", ""),
                condition("Compliant", if compliant == "AllUsersHaveMfa" { "True" } else { "False" }, compliant, ""),
            ],
            summary: Some(Summary { selected, compliant: compliant_users, pending, missing, failed: 0, not_found: 0 }),
            root_account_mfa_enabled: Some(false),
            users,
            users_omitted: 0,
        }
    }

    #[test]
    fn enrollments_then_their_users_without_mfa() {
        let engineering = enrollment(
            "team",
            "engineering",
            "Enroll",
            Some(status(
                (3, 1, 2, 0),
                vec![
                    user("bob", UserState::Pending, Some("mfa-seed-bob-1a2b3c4d"), Some(7 * 86_400 - 3600), "scan it"),
                    user("carol", UserState::Pending, Some("mfa-seed-carol-5e6f7a8b"), Some(-5), "codes refused:\nold"),
                    user("alice", UserState::Compliant, None, None, ""),
                ],
                "AwaitingCodes",
            )),
        );
        let audit = enrollment(
            "team",
            "audit",
            "Report",
            Some(status((1, 1, 0, 0), vec![user("alice", UserState::Compliant, None, None, "")], "AllUsersHaveMfa")),
        );
        let fresh = enrollment("team", "fresh", "Enroll", None);

        let expected = "\
NAME          MODE     SELECTED   COMPLIANT   PENDING   MISSING   READY   REASON
audit         Report   1          1           0         0         True    AllUsersHaveMfa
engineering   Enroll   3          1           2         0         True    AwaitingCodes
fresh         Enroll   -          -           -         -         -       -

engineering:
  2 users without MFA:
  NAME    STATE     SECRET                    EXPIRES   MESSAGE
  bob     Pending   mfa-seed-bob-1a2b3c4d     6d23h     scan it
  carol   Pending   mfa-seed-carol-5e6f7a8b   expired   codes refused: old
";
        assert_eq!(render(&[engineering, audit, fresh], false, now()), expected);
    }

    #[test]
    fn all_namespaces_adds_a_column_and_qualifies_names() {
        let mut stalled =
            status((1, 0, 0, 1), vec![user("dave", UserState::Missing, None, None, "no device yet")], "AwaitingCodes");
        stalled.conditions.push(condition("Stalled", "True", "InvalidSpec", "group \"ops\" does not exist"));
        stalled.users_omitted = 3;
        let text =
            render(&[enrollment("b", "x", "Enroll", Some(stalled)), enrollment("a", "y", "Report", None)], true, now());
        let expected = "\
NAMESPACE   NAME   MODE     SELECTED   COMPLIANT   PENDING   MISSING   READY   REASON
a           y      Report   -          -           -         -         -       -
b           x      Enroll   1          0           0         1         True    AwaitingCodes

b/x:
  Stalled (InvalidSpec): group \"ops\" does not exist
  1 user without MFA:
  NAME   STATE     SECRET   EXPIRES   MESSAGE
  dave   Missing   -        -         no device yet
  (3 more users not listed: status lists at most 200 users, those needing attention first)
";
        assert_eq!(text, expected);
    }

    #[test]
    fn nothing_renders_as_nothing() {
        assert_eq!(render(&[], false, now()), "");
    }

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(short_duration(0), "0s");
        assert_eq!(short_duration(59), "59s");
        assert_eq!(short_duration(60), "1m");
        assert_eq!(short_duration(3599), "59m");
        assert_eq!(short_duration(3600), "1h");
        assert_eq!(short_duration(3660), "1h1m");
        assert_eq!(short_duration(86_400), "1d");
        assert_eq!(short_duration(7 * 86_400 - 1), "6d23h");
    }
}
