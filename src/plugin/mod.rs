//! The `kubectl-mfa` plugin (`kubectl mfa status|qr|enroll`): what the person finishing an
//! enrollment, and the platform team watching it, run from a terminal.
//!
//! - [`table`]: the `status` tables (pure).
//! - [`lookup`]: finding a user's pending device in an enrollment's status (pure).
//! - [`terminal_qr`]: the QR code drawn with Unicode half blocks, the grouped secret key
//!   and the account label (pure).
//! - [`prompt`]: the seconds left in the current 30 s window and the local code check
//!   (pure).
//! - [`outcome`]: judging the operator's answer to a code submission (pure).
//! - [`cluster`]: the few Kubernetes calls: connecting like kubectl, reading enrollments
//!   and seed Secrets, submitting codes, watching for the answer.
//!
//! The binary `src/bin/kubectl-mfa.rs` parses flags and talks to the terminal.
//!
//! Only `qr` and interactive `enroll` print a seed, to the person enrolling: that is their
//! purpose. Nothing else here prints, logs or puts a seed or a code in an error message.

pub mod cluster;
pub mod lookup;
pub mod outcome;
pub mod prompt;
pub mod table;
pub mod terminal_qr;

use crate::crd::UserState;

/// Why a plugin command failed. Each message is one line, meant for the person at the
/// terminal, and never contains a seed or a code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable kubeconfig (or in-cluster configuration).
    #[error("cannot load the Kubernetes configuration: {0}")]
    Config(String),
    /// The `MfaEnrollment` resource type is unknown to the apiserver.
    #[error(
        "the MfaEnrollment API (mfaenrollments.iam.mfa-operator.dev) is not installed in this cluster: \
         install mfa-operator or apply crds/mfaenrollments.iam.mfa-operator.dev.yaml"
    )]
    CrdMissing,
    /// No enrollment of that name in the namespace.
    #[error("MfaEnrollment \"{name}\" not found in namespace \"{namespace}\"")]
    EnrollmentNotFound { namespace: String, name: String },
    /// The enrollment has no status yet: the operator has not reconciled it.
    #[error("MfaEnrollment \"{name}\" has no status yet: is mfa-operator running and watching its namespace?")]
    NoStatus { name: String },
    /// The user is not listed in the enrollment's status.
    #[error("user \"{user}\" is not listed in MfaEnrollment \"{enrollment}\"{hint}; {pending}")]
    UserNotFound {
        enrollment: String,
        user: String,
        /// A close match or a note on the status bound, starting with a space or empty.
        hint: String,
        /// Which users are waiting for codes, as a sentence fragment.
        pending: String,
    },
    /// The user is listed but has no pending device to enrol.
    #[error("user \"{user}\" {why}")]
    NotPending { user: String, state: UserState, why: String },
    /// The seed Secret named in status is not there (yet, or any more).
    #[error(
        "seed Secret \"{name}\" not found in namespace \"{namespace}\": the operator may be replacing it; \
         try again in a few seconds"
    )]
    SecretMissing { namespace: String, name: String },
    /// The seed Secret lacks a key the plugin needs.
    #[error("seed Secret \"{name}\" has no \"{key}\" key: is it a seed Secret of mfa-operator?")]
    SecretKeyMissing { name: String, key: &'static str },
    /// The seed changed between showing it and submitting codes for it.
    #[error(
        "the operator replaced the MFA device of \"{user}\" (new seed) while the codes were typed: \
         run the command again and scan the new QR code"
    )]
    SeedChanged { user: String },
    /// A Kubernetes call failed.
    #[error("{action}: {message}")]
    Api { action: String, message: String },
    /// The URI could not be drawn as a QR code.
    #[error("cannot draw the QR code: {0}")]
    Qr(#[from] crate::qr::QrError),
    /// What was asked cannot be done for this enrollment or user.
    #[error("{0}")]
    Refused(String),
}

impl Error {
    /// Maps a Kubernetes client error to a one-line message: the apiserver's own message
    /// when there is one (for example "secrets \"x\" is forbidden: ..."), the client's
    /// otherwise.
    pub fn api(action: impl Into<String>, error: &kube::Error) -> Self {
        let message = match error {
            kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
            other => other.to_string(),
        };
        Self::Api { action: action.into(), message: one_line(&message) }
    }
}

/// Collapses whitespace runs (newlines included) to single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
