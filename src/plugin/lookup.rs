//! Finding a user's pending device in an enrollment's status, with messages that say what
//! to do instead when there is none. Pure.

use jiff::Timestamp;
use kube::ResourceExt;

use super::Error;
use crate::crd::{MfaEnrollment, UserState, UserStatus};

/// How many names an error message lists before "and N more".
const NAMES_SHOWN: usize = 10;

/// A user whose pending virtual device waits for two codes.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingUser {
    /// Exact IAM user name.
    pub name: String,
    /// The seed Secret, in the enrollment's namespace.
    pub seed_secret: String,
    /// Serial number (ARN) of the pending device.
    pub serial_number: Option<String>,
    /// When the pending device was created: a new value means a new device and seed.
    pub pending_since: Option<Timestamp>,
    /// The operator's message for the user.
    pub message: Option<String>,
}

impl PendingUser {
    fn from_status(user: &UserStatus, seed_secret: &str) -> Self {
        Self {
            name: user.name.clone(),
            seed_secret: seed_secret.to_owned(),
            serial_number: user.serial_number.clone(),
            pending_since: user.pending_since.as_ref().map(|t| t.0),
            message: user.message.clone(),
        }
    }
}

/// The user of `enrollment` named exactly `user`, if a pending device with a seed Secret
/// waits for them.
pub fn pending_user(enrollment: &MfaEnrollment, user: &str) -> Result<PendingUser, Error> {
    let Some(status) = enrollment.status.as_ref() else {
        return Err(Error::NoStatus { name: enrollment.name_any() });
    };
    let Some(found) = status.users.iter().find(|u| u.name == user) else {
        let similar = status.users.iter().find(|u| u.name.eq_ignore_ascii_case(user));
        let hint = match similar {
            Some(u) => format!(" (did you mean \"{}\"? user names are matched exactly)", u.name),
            None if status.users_omitted > 0 => {
                format!(" (its status lists users needing attention first and leaves {} out)", status.users_omitted)
            }
            None => String::new(),
        };
        return Err(Error::UserNotFound {
            enrollment: enrollment.name_any(),
            user: user.to_owned(),
            hint,
            pending: waiting_sentence(&pending_names(enrollment)),
        });
    };
    match (found.state, found.seed_secret.as_deref()) {
        (UserState::Pending, Some(secret)) => Ok(PendingUser::from_status(found, secret)),
        (state, _) => Err(Error::NotPending { user: user.to_owned(), state, why: not_pending_why(found) }),
    }
}

/// Names of the users of `enrollment` whose pending device waits for codes, in status order.
pub fn pending_names(enrollment: &MfaEnrollment) -> Vec<String> {
    let users = enrollment.status.as_ref().map(|s| s.users.as_slice()).unwrap_or_default();
    users.iter().filter(|u| u.state == UserState::Pending && u.seed_secret.is_some()).map(|u| u.name.clone()).collect()
}

/// "users waiting for codes: a, b" / "no user is waiting for codes".
fn waiting_sentence(names: &[String]) -> String {
    if names.is_empty() {
        return "no user is waiting for codes".to_owned();
    }
    let mut shown = names.iter().take(NAMES_SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > NAMES_SHOWN {
        shown.push_str(&format!(" and {} more", names.len() - NAMES_SHOWN));
    }
    format!("users waiting for codes: {shown}")
}

fn not_pending_why(user: &UserStatus) -> String {
    let detail = user.message.as_deref().map(|m| format!(" ({})", super::one_line(m))).unwrap_or_default();
    match user.state {
        UserState::Compliant => "already has an active MFA device: nothing to enroll".to_owned(),
        UserState::Pending => {
            format!("is Pending but has no seed Secret yet{detail}: try again in a few seconds")
        }
        UserState::Missing => {
            format!("has no pending MFA device{detail}: only enrollments in Enroll mode create one")
        }
        UserState::Failed => format!("cannot be enrolled right now{detail}"),
        UserState::NotFound => "does not exist in the AWS account".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{MfaEnrollmentSpec, MfaEnrollmentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn user(name: &str, state: UserState, secret: Option<&str>) -> UserStatus {
        UserStatus {
            name: name.to_owned(),
            state,
            serial_number: secret.map(|_| format!("arn:aws:iam::123456789012:mfa/mfa-operator/{name}")),
            seed_secret: secret.map(str::to_owned),
            pending_since: secret.map(|_| Time("2025-06-01T12:00:00Z".parse().expect("time"))),
            expires_at: None,
            message: Some("scan the QR code".to_owned()),
            failed_attempts: None,
            link_sent_at: None,
            link_expires_at: None,
        }
    }

    fn enrollment(users: Vec<UserStatus>) -> MfaEnrollment {
        let spec: MfaEnrollmentSpec =
            serde_json::from_value(serde_json::json!({ "mode": "Enroll", "users": { "pathPrefix": "/" } }))
                .expect("spec");
        let mut e = MfaEnrollment::new("eng", spec);
        e.status = Some(MfaEnrollmentStatus { users, ..MfaEnrollmentStatus::default() });
        e
    }

    fn people() -> MfaEnrollment {
        enrollment(vec![
            user("Bob", UserState::Pending, Some("mfa-seed-bob-1")),
            user("carol", UserState::Pending, Some("mfa-seed-carol-2")),
            user("dave", UserState::Missing, None),
            user("erin", UserState::Compliant, None),
        ])
    }

    #[test]
    fn finds_a_pending_user_by_exact_name() {
        let found = pending_user(&people(), "carol").expect("pending");
        assert_eq!(found.seed_secret, "mfa-seed-carol-2");
        assert_eq!(found.name, "carol");
        assert!(found.pending_since.is_some());
    }

    #[test]
    fn an_unknown_user_names_the_pending_ones() {
        let error = pending_user(&people(), "zoe").expect_err("unknown").to_string();
        assert_eq!(error, "user \"zoe\" is not listed in MfaEnrollment \"eng\"; users waiting for codes: Bob, carol");
    }

    #[test]
    fn names_match_exactly_with_a_hint_on_case() {
        let error = pending_user(&people(), "bob").expect_err("case differs").to_string();
        assert!(error.contains("did you mean \"Bob\"?"), "{error}");
        assert!(error.ends_with("users waiting for codes: Bob, carol"), "{error}");
    }

    #[test]
    fn users_without_a_pending_device_are_explained() {
        let compliant = pending_user(&people(), "erin").expect_err("compliant").to_string();
        assert_eq!(compliant, "user \"erin\" already has an active MFA device: nothing to enroll");
        let missing = pending_user(&people(), "dave").expect_err("missing").to_string();
        assert!(missing.contains("no pending MFA device (scan the QR code)"), "{missing}");
        let nobody = pending_user(&enrollment(vec![]), "x").expect_err("nobody").to_string();
        assert!(nobody.ends_with("no user is waiting for codes"), "{nobody}");
        let mut unreconciled = enrollment(vec![]);
        unreconciled.status = None;
        assert!(matches!(pending_user(&unreconciled, "x"), Err(Error::NoStatus { .. })));
    }

    #[test]
    fn long_lists_are_cut() {
        let many = (0..13).map(|i| user(&format!("u{i}"), UserState::Pending, Some("s"))).collect();
        let error = pending_user(&enrollment(many), "x").expect_err("unknown").to_string();
        assert!(error.ends_with("u8, u9 and 3 more"), "{error}");
    }
}
