//! Every way a page request can be refused, in plain words for the person, with the HTTP
//! status and the bounded metric label of each.

use axum::http::StatusCode;

/// Why the page said no. The messages name no token, seed or code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such link, or not its token (told apart from neither).
    UnknownLink,
    LinkExpired,
    LinkUsed,
    /// A setup for this link is open in another browser.
    OtherWindow {
        until: String,
    },
    /// The form did not come from this page in this browser (CSRF check failed).
    Forbidden,
    /// The authenticating proxy's identity is not the person the link is for
    /// (`--trusted-identity-header`).
    NotYourLink,
    RateLimited {
        retry_after_secs: u64,
    },
    /// Codes or cancel for a setup that is not open (any more) in this browser.
    NoSession,
    /// The setup was left open past its time; its device is deleted.
    SessionExpired,
    /// The local check refused the codes; the setup stays open.
    Codes {
        message: String,
        timing: bool,
    },
    /// AWS refused codes the local check accepted; the setup stays open.
    AwsRefused,
    /// Too many wrong pairs: the setup ended and its device is deleted.
    TooManyGuesses,
    /// The pending device disappeared (console clean-up of unassigned devices).
    DeviceGone,
    /// A device with this name is assigned: nothing the page may touch.
    DeviceInUse,
    /// The user has an MFA device already.
    AlreadyHasMfa,
    /// IAM's limit of MFA devices per user.
    DeviceLimit,
    /// Too many setups are open at once on this operator.
    Busy,
    /// IAM or the operator's state did not answer: nothing changed.
    TryLater,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownLink => StatusCode::NOT_FOUND,
            Self::LinkExpired | Self::LinkUsed | Self::SessionExpired => StatusCode::GONE,
            Self::Forbidden | Self::NotYourLink => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Codes { .. } | Self::AwsRefused | Self::TooManyGuesses => StatusCode::UNPROCESSABLE_ENTITY,
            Self::OtherWindow { .. }
            | Self::NoSession
            | Self::DeviceGone
            | Self::DeviceInUse
            | Self::AlreadyHasMfa
            | Self::DeviceLimit => StatusCode::CONFLICT,
            Self::Busy | Self::TryLater => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The metric label (a bounded set).
    pub fn cause(&self) -> &'static str {
        match self {
            Self::UnknownLink => "unknown_link",
            Self::LinkExpired => "link_expired",
            Self::LinkUsed => "link_used",
            Self::OtherWindow { .. } => "other_window",
            Self::Forbidden => "forbidden",
            Self::NotYourLink => "not_your_link",
            Self::RateLimited { .. } => "rate_limited",
            Self::NoSession => "no_session",
            Self::SessionExpired => "session_expired",
            Self::Codes { timing: false, .. } => "wrong_codes",
            Self::Codes { timing: true, .. } => "stale_codes",
            Self::AwsRefused => "aws_refused",
            Self::TooManyGuesses => "too_many_guesses",
            Self::DeviceGone => "device_gone",
            Self::DeviceInUse => "device_in_use",
            Self::AlreadyHasMfa => "already_has_mfa",
            Self::DeviceLimit => "device_limit",
            Self::Busy => "busy",
            Self::TryLater => "try_later",
        }
    }

    /// Whether a setup stays open after this refusal of its codes (the page shows the QR
    /// code and the form again).
    pub fn keeps_session(&self) -> bool {
        matches!(self, Self::Codes { .. } | Self::AwsRefused | Self::TryLater)
    }

    pub fn title(&self) -> &'static str {
        match self {
            Self::UnknownLink => "This link does not work",
            Self::LinkExpired => "This link has expired",
            Self::LinkUsed => "This link was used already",
            Self::OtherWindow { .. } => "This link is open in another window",
            Self::Forbidden => "This form cannot be accepted",
            Self::NotYourLink => "This link is for someone else",
            Self::RateLimited { .. } => "Too many attempts",
            Self::NoSession => "This setup is not open",
            Self::SessionExpired => "This setup timed out",
            Self::Codes { .. } | Self::AwsRefused => "The codes were not accepted",
            Self::TooManyGuesses => "Too many wrong codes",
            Self::DeviceGone => "The MFA device was removed",
            Self::DeviceInUse | Self::AlreadyHasMfa => "MFA is already set up",
            Self::DeviceLimit => "Too many MFA devices",
            Self::Busy | Self::TryLater => "Please try again in a few minutes",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::UnknownLink => "The link is not valid: it may be incomplete (copy the whole link), or a newer \
                                  link replaced it. Ask your administrator for a new link."
                .into(),
            Self::LinkExpired => {
                "Enrollment links work for a limited time. Ask your administrator for a new link.".into()
            }
            Self::LinkUsed => "Each enrollment link works once, and this one has set up an MFA device already. If \
                               that was not you, tell your administrator now."
                .into(),
            Self::OtherWindow { until } => format!(
                "A setup for this link is open in another window or browser. Finish it there. If you closed that \
                 window, you can start again here after {until}, when the other setup times out."
            ),
            Self::Forbidden => "The form did not come from this page in this browser, or your browser blocks the \
                                page's cookie. Allow cookies for this site, then open the link again."
                .into(),
            Self::NotYourLink => "This link was sent to another person. Sign in as the person it was sent to, \
                                  or ask your administrator for a link of your own."
                .into(),
            Self::RateLimited { retry_after_secs } => {
                format!("Wait {retry_after_secs} seconds, then try again.")
            }
            Self::NoSession => "This setup was finished, cancelled or timed out, or it was started in another \
                                browser. Open the link again to start over."
                .into(),
            Self::SessionExpired => "The setup was open too long, so its MFA device was deleted. Open the link \
                                     again to start over with a new QR code, and remove the old entry from your \
                                     authenticator app."
                .into(),
            Self::Codes { message, .. } => format!("{}.", capitalised(message)),
            Self::AwsRefused => "AWS refused the codes. Wait for a new code to appear, then enter two fresh \
                                 consecutive codes and submit them right away."
                .into(),
            Self::TooManyGuesses => "Too many wrong codes were entered, so this MFA device was deleted. Open the \
                                     link again to start over with a new QR code, and remove the old entry from \
                                     your authenticator app."
                .into(),
            Self::DeviceGone => "The pending MFA device was removed from AWS before it was enabled (for example by \
                                 someone adding a device in the AWS console), so its codes cannot work. This was \
                                 not your mistake: remove the entry from your authenticator app and open the link \
                                 again to start over."
                .into(),
            Self::DeviceInUse => "An MFA device with this name is already assigned in AWS, so there is nothing to \
                                  set up here. If you did not set it up, tell your administrator."
                .into(),
            Self::AlreadyHasMfa => "This IAM user already has an MFA device, so there is nothing to set up. If you \
                                    lost it, ask your administrator."
                .into(),
            Self::DeviceLimit => "This IAM user has as many MFA devices as AWS allows. Ask your administrator to \
                                  remove one you no longer use."
                .into(),
            Self::Busy => "Many setups are open at the moment. Nothing was created; try again in a few minutes.".into(),
            Self::TryLater => {
                "AWS or the operator did not answer. Nothing was changed; try again in a few minutes.".into()
            }
        }
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_refusals_read_as_sentences() {
        let rejection = crate::totp::CodeRejection::SameCodeTwice;
        let refusal = Refusal::Codes { message: rejection.to_string(), timing: false };
        let text = refusal.message();
        assert!(text.starts_with("The two codes are the same") && text.ends_with("one."), "{text}");
        assert_eq!(refusal.cause(), "wrong_codes");
        assert!(refusal.keeps_session());
        assert!(!Refusal::TooManyGuesses.keeps_session());
    }
}
