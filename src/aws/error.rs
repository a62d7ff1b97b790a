//! IAM errors in the operator's terms, and the sanitiser that keeps request ids and
//! credentials out of anything a person or a log might see.

use std::sync::LazyLock;

use regex::Regex;

/// An IAM call failed. Every message is already sanitised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IamError {
    /// IAM throttled the call (after the SDK's own retries).
    #[error("{operation}: throttled by IAM")]
    Throttled { operation: &'static str },
    /// The operator's credentials lack a permission: a person must fix the IAM policy.
    #[error("{operation}: access denied: {message}")]
    AccessDenied { operation: &'static str, message: String },
    /// The user, device or group does not exist (or is not visible yet: IAM is eventually
    /// consistent).
    #[error("{operation}: no such entity: {message}")]
    NoSuchEntity { operation: &'static str, message: String },
    /// The entity exists already (for example a device name under our path).
    #[error("{operation}: already exists: {message}")]
    EntityAlreadyExists { operation: &'static str, message: String },
    /// The entity is in use (for example a device still assigned to a user).
    #[error("{operation}: conflict: {message}")]
    DeleteConflict { operation: &'static str, message: String },
    /// AWS refused the two codes.
    #[error("{operation}: AWS refused the authentication codes")]
    InvalidAuthenticationCode { operation: &'static str },
    /// An account limit was reached (for example 8 MFA devices per user).
    #[error("{operation}: limit exceeded: {message}")]
    LimitExceeded { operation: &'static str, message: String },
    /// Any other error answered by IAM.
    #[error("{operation}: {code}: {message}")]
    Service { operation: &'static str, code: String, message: String },
    /// The call never got an answer from IAM (connection, timeout, credentials chain).
    #[error("{operation}: {message}")]
    Transport { operation: &'static str, message: String },
    /// A write not sent: this replica cannot confirm it still holds the leader lease.
    #[error("{operation}: not sent: this replica no longer holds the leader lease")]
    NotLeader { operation: &'static str },
}

impl IamError {
    /// Builds the error from IAM's error code and message, sanitising the message.
    pub fn from_code(operation: &'static str, code: Option<&str>, message: Option<&str>) -> Self {
        let message = sanitize(message.unwrap_or_default());
        match code.unwrap_or_default() {
            "Throttling" | "ThrottlingException" | "RequestLimitExceeded" | "TooManyRequestsException" => {
                Self::Throttled { operation }
            }
            "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" => {
                Self::AccessDenied { operation, message }
            }
            "NoSuchEntity" => Self::NoSuchEntity { operation, message },
            "EntityAlreadyExists" => Self::EntityAlreadyExists { operation, message },
            "DeleteConflict" => Self::DeleteConflict { operation, message },
            "InvalidAuthenticationCode" => Self::InvalidAuthenticationCode { operation },
            "LimitExceeded" => Self::LimitExceeded { operation, message },
            "" => Self::Transport { operation, message },
            other => Self::Service { operation, code: sanitize(other), message },
        }
    }

    /// The IAM operation that failed.
    pub fn operation(&self) -> &'static str {
        match self {
            Self::Throttled { operation }
            | Self::AccessDenied { operation, .. }
            | Self::NoSuchEntity { operation, .. }
            | Self::EntityAlreadyExists { operation, .. }
            | Self::DeleteConflict { operation, .. }
            | Self::InvalidAuthenticationCode { operation }
            | Self::NotLeader { operation }
            | Self::LimitExceeded { operation, .. }
            | Self::Service { operation, .. }
            | Self::Transport { operation, .. } => operation,
        }
    }

    /// Whether retrying later can succeed without a person changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Throttled { .. } | Self::Transport { .. } | Self::NoSuchEntity { .. } | Self::NotLeader { .. }
        ) || matches!(
            self,
            Self::Service { code, .. }
                if code.starts_with("ServiceFailure")
                    || code == "ServiceUnavailable"
                    || code == "InternalFailure"
                    // The credential report is still being generated.
                    || code == "ReportInProgress"
        )
    }
}

/// Longest sanitised message; AWS messages are short, anything longer is noise.
const MAX_MESSAGE_LEN: usize = 512;

static REDACTIONS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        // Request ids (UUIDs) and the "RequestId: ..." phrasing around them.
        (r"(?i)\b(request[ _-]?id|x-amzn-requestid|x-amz-request-id)\s*[:=]?\s*[0-9A-Za-z-]+", "$1: <redacted>"),
        (r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", "<redacted>"),
        // Access key ids (long-term AKIA, temporary ASIA and the rest of the family).
        (r"\b(AKIA|ASIA|AROA|AIDA|ANPA|ANVA|APKA)[A-Z0-9]{12,}\b", "<redacted-key-id>"),
        // Signatures, session tokens and secrets in any key=value or key: value form.
        (
            r"(?i)\b(signature|x-amz-signature|x-amz-security-token|security[_-]?token|session[_-]?token|secret[_-]?access[_-]?key|credential)\s*[=:]\s*[^\s,;&]+",
            "$1=<redacted>",
        ),
    ]
    .into_iter()
    .map(|(pattern, replacement)| (Regex::new(pattern).expect("static sanitiser pattern compiles"), replacement))
    .collect()
});

/// Removes request ids, access key ids, signatures and tokens from an AWS error message,
/// collapses whitespace and bounds its length.
pub fn sanitize(message: &str) -> String {
    let mut text = message.split_whitespace().collect::<Vec<_>>().join(" ");
    for (pattern, replacement) in REDACTIONS.iter() {
        text = pattern.replace_all(&text, *replacement).into_owned();
    }
    if text.len() > MAX_MESSAGE_LEN {
        let mut end = MAX_MESSAGE_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_removes_request_ids_and_credentials() {
        let raw = "User: arn:aws:sts::123456789012:assumed-role/op/s is not authorized to perform: \
                   iam:CreateVirtualMFADevice (Service: Iam, Status Code: 403, Request ID: \
                   3f2a9c1e-1b2c-4d5e-8f90-0123456789ab) key AKIAIOSFODNN7EXAMPLE \
                   X-Amz-Security-Token=FQoGZXIvYXdzEJr//////////wEaDM Signature=abcdef0123";
        let clean = sanitize(raw);
        assert!(clean.contains("iam:CreateVirtualMFADevice"), "{clean}");
        for secret in ["3f2a9c1e", "AKIAIOSFODNN7EXAMPLE", "FQoGZXIvYXdz", "abcdef0123"] {
            assert!(!clean.contains(secret), "{secret} survived: {clean}");
        }
    }

    #[test]
    fn sanitize_bounds_length_on_char_boundary() {
        let long = "é".repeat(1000);
        let clean = sanitize(&long);
        assert!(clean.len() <= MAX_MESSAGE_LEN + '…'.len_utf8());
        assert!(clean.ends_with('…'));
    }

    #[test]
    fn codes_map_to_variants() {
        let op = "EnableMFADevice";
        assert_eq!(
            IamError::from_code(op, Some("Throttling"), Some("Rate exceeded")),
            IamError::Throttled { operation: op }
        );
        assert!(matches!(IamError::from_code(op, Some("AccessDenied"), Some("no")), IamError::AccessDenied { .. }));
        assert!(matches!(IamError::from_code(op, Some("DeleteConflict"), None), IamError::DeleteConflict { .. }));
        assert_eq!(
            IamError::from_code(op, Some("InvalidAuthenticationCode"), Some("codes 123456 654321")),
            IamError::InvalidAuthenticationCode { operation: op },
            "the codes in AWS's message must not be kept"
        );
        assert!(IamError::from_code(op, Some("Throttling"), None).is_transient());
        assert!(!IamError::from_code(op, Some("AccessDenied"), None).is_transient());
    }
}
