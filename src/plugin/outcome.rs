//! Judging the operator's answer to a code submission from what the plugin sees of the
//! enrollment's status and of the seed Secret after writing the codes. Pure.
//!
//! The operator answers in one of these ways (docs/design.md, "How enrollment works"):
//! - accepted: it enables the device, deletes the Secret and lists the user `Compliant`;
//! - refused: it removes the code keys from the Secret, records the reason in the
//!   Secret's `iam.mfa-operator.dev/last-rejection` annotation and sets the user's status
//!   message to `codes refused: <reason>`;
//! - replaced: after too many refusals (or at `pendingTTL`) it deletes the device and the
//!   Secret and creates new ones with a fresh seed (a new `pendingSince`).
//!
//! The plugin watches both objects; [`judge`] looks at the latest of each after every
//! change and says whether the answer is in.

use jiff::Timestamp;

use crate::crd::UserState;

/// How every status message about refused codes starts.
pub const REFUSED_PREFIX: &str = "codes refused";

/// What was known just before the codes were written, to tell a new answer from an old one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Before {
    /// The user's status message.
    pub message: Option<String>,
    /// The pending device's creation time.
    pub pending_since: Option<Timestamp>,
    /// The seed Secret's last-rejection annotation.
    pub last_rejection: Option<String>,
    /// The seed Secret's uid: a new Secret (same name) means a new seed.
    pub secret_uid: Option<String>,
}

/// The user's entry in the enrollment's status, as last seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSeen {
    pub state: UserState,
    pub message: Option<String>,
    pub pending_since: Option<Timestamp>,
}

/// The seed Secret as last seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSeen {
    /// Deleted (accepted codes, or a device being replaced).
    Absent,
    /// There; `codes` tells whether a code key is still in it.
    Present { uid: Option<String>, codes: bool, last_rejection: Option<String> },
}

/// The operator's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The device is enabled: the user is `Compliant`.
    Enabled,
    /// The codes were refused; the operator's message, as status shows it
    /// (`codes refused: ...`).
    Refused(String),
    /// The device was replaced with a new one and a fresh seed.
    Replaced,
    /// The code keys disappeared from the Secret without a refusal recorded (someone
    /// edited the Secret).
    Withdrawn,
}

/// The answer, once the latest observations show one; `None` while still waiting.
///
/// Only observations made after the codes were written count: `secret` is `Present`
/// with code keys until the operator has looked at them, and status messages equal to the
/// ones from before (or restating the previous refusal) are not news. A Secret with a new
/// uid, or a new `pendingSince`, means a new device and seed: the codes were for the old one.
pub fn judge(before: &Before, user: Option<&UserSeen>, secret: Option<&SecretSeen>) -> Option<Outcome> {
    if let Some(user) = user {
        if user.state == UserState::Compliant {
            return Some(Outcome::Enabled);
        }
        if let Some(message) = user.message.as_deref().filter(|m| is_new_refusal(before, m)) {
            return Some(Outcome::Refused(message.to_owned()));
        }
    }
    if let Some(SecretSeen::Present { uid, codes, last_rejection }) = secret {
        if before.secret_uid.is_some() && *uid != before.secret_uid {
            return Some(Outcome::Replaced);
        }
        if let (false, Some(reason)) = (codes, last_rejection) {
            return Some(Outcome::Refused(format!("{REFUSED_PREFIX}: {reason}")));
        }
    }
    if let Some(user) = user
        && user.state == UserState::Pending
        && user.pending_since.is_some()
        && user.pending_since != before.pending_since
    {
        return Some(Outcome::Replaced);
    }
    match secret {
        Some(SecretSeen::Present { codes: false, last_rejection: None, .. }) => Some(Outcome::Withdrawn),
        _ => None,
    }
}

/// A refusal message that was not there before the submission.
fn is_new_refusal(before: &Before, message: &str) -> bool {
    let restates_previous =
        before.last_rejection.as_deref().is_some_and(|r| message == format!("{REFUSED_PREFIX}: {r}"));
    message.starts_with(REFUSED_PREFIX) && before.message.as_deref() != Some(message) && !restates_previous
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Option<Timestamp> {
        Some(text.parse().expect("timestamp"))
    }

    fn before() -> Before {
        Before {
            message: Some("scan the QR code in Secret s and write two consecutive codes as code1 and code2".into()),
            pending_since: at("2025-06-01T12:00:00Z"),
            last_rejection: None,
            secret_uid: Some("uid-1".into()),
        }
    }

    fn pending(message: &str) -> UserSeen {
        UserSeen { state: UserState::Pending, message: Some(message.into()), pending_since: at("2025-06-01T12:00:00Z") }
    }

    fn present(codes: bool, last_rejection: Option<&str>) -> SecretSeen {
        SecretSeen::Present { uid: Some("uid-1".into()), codes, last_rejection: last_rejection.map(str::to_owned) }
    }

    fn waiting() -> SecretSeen {
        present(true, None)
    }

    #[test]
    fn nothing_new_is_no_answer() {
        let unchanged = pending(before().message.as_deref().unwrap_or_default());
        assert_eq!(judge(&before(), Some(&unchanged), Some(&waiting())), None);
        assert_eq!(judge(&before(), None, None), None);
        // Deleted Secret, status not updated yet: accepted or being replaced, wait.
        assert_eq!(judge(&before(), Some(&unchanged), Some(&SecretSeen::Absent)), None);
    }

    #[test]
    fn compliant_is_success() {
        let done = UserSeen { state: UserState::Compliant, message: None, pending_since: None };
        assert_eq!(judge(&before(), Some(&done), Some(&SecretSeen::Absent)), Some(Outcome::Enabled));
        assert_eq!(judge(&before(), Some(&done), None), Some(Outcome::Enabled));
    }

    #[test]
    fn a_new_refusal_in_status_is_reported_verbatim() {
        let refused = pending("codes refused: the codes do not match this MFA device (refused submission 1 of 5)");
        assert_eq!(
            judge(&before(), Some(&refused), Some(&waiting())),
            Some(Outcome::Refused(
                "codes refused: the codes do not match this MFA device (refused submission 1 of 5)".into()
            ))
        );
    }

    #[test]
    fn a_refusal_from_before_the_submission_is_not_news() {
        let old = "codes refused: the two codes are the same (refused submission 2 of 5)";
        let mut earlier = before();
        earlier.message = Some(old.into());
        assert_eq!(judge(&earlier, Some(&pending(old)), Some(&waiting())), None);
        // A status catching up with a refusal already recorded on the Secret before.
        let mut recorded = before();
        recorded.last_rejection = Some("the two codes are the same (refused submission 2 of 5)".into());
        assert_eq!(judge(&recorded, Some(&pending(old)), Some(&waiting())), None);
    }

    #[test]
    fn the_secret_answers_first_when_the_status_lags() {
        let reason = "the codes are about 3 minutes old and AWS would enable the device out of sync";
        let cleared = present(false, Some(reason));
        let unchanged = pending(before().message.as_deref().unwrap_or_default());
        assert_eq!(
            judge(&before(), Some(&unchanged), Some(&cleared)),
            Some(Outcome::Refused(format!("codes refused: {reason}")))
        );
        // Even when the same reason was recorded before: the codes were looked at again.
        let mut again = before();
        again.last_rejection = Some(reason.into());
        assert!(matches!(judge(&again, None, Some(&cleared)), Some(Outcome::Refused(_))));
    }

    #[test]
    fn a_new_pending_device_is_a_replacement() {
        let new = UserSeen {
            state: UserState::Pending,
            message: Some("scan the QR code ...".into()),
            pending_since: at("2025-06-01T12:05:00Z"),
        };
        assert_eq!(judge(&before(), Some(&new), Some(&SecretSeen::Absent)), Some(Outcome::Replaced));
    }

    #[test]
    fn a_new_secret_is_a_replacement_even_before_the_status_says_so() {
        let new = SecretSeen::Present { uid: Some("uid-2".into()), codes: false, last_rejection: None };
        let unchanged = pending(before().message.as_deref().unwrap_or_default());
        assert_eq!(judge(&before(), Some(&unchanged), Some(&new)), Some(Outcome::Replaced));
    }

    #[test]
    fn codes_removed_without_a_verdict_are_withdrawn() {
        let emptied = present(false, None);
        assert_eq!(judge(&before(), None, Some(&emptied)), Some(Outcome::Withdrawn));
    }
}
