//! Status of an `MfaEnrollment`: the public contract that compliance dashboards, GitOps
//! health checks and the kubectl plugin read. Field names are stable.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Most users listed one by one in status; the summary always counts every user.
pub const MAX_STATUS_USERS: usize = 200;

/// Observed state of an `MfaEnrollment`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MfaEnrollmentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// kstatus conditions: `Ready`, `Reconciling` and `Stalled` describe the operator's
    /// progress; `Compliant` is True only when every selected user has an active MFA
    /// device.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Counts over every selected user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,

    /// Whether the AWS account's root user has MFA (from GetAccountSummary). The root
    /// user cannot be enrolled through the API; this is reported for audits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_account_mfa_enabled: Option<bool>,

    /// Per-user detail, users needing attention first, at most 200 entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_STATUS_USERS))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub users: Vec<UserStatus>,

    /// How many users the summary counts but `users` leaves out because of its bound.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub users_omitted: u32,
}

/// Counts over every selected user of an enrollment.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Users the selectors cover that exist in the account.
    pub selected: u32,
    /// Selected users with at least one active MFA device.
    pub compliant: u32,
    /// Selected users with a pending virtual device waiting for their two codes.
    pub pending: u32,
    /// Selected users without any MFA device and without a pending device.
    pub missing: u32,
    /// Selected users whose enrollment failed and needs attention.
    pub failed: u32,
    /// Names listed in `spec.users.names` that do not exist in the account.
    #[serde(default)]
    pub not_found: u32,
}

/// Where one IAM user stands.
#[derive(schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UserState {
    /// No active MFA device and no pending device (Report mode, or not yet created).
    Missing,
    /// A pending virtual device waits for two codes in its seed Secret.
    Pending,
    /// Enrollment failed and needs a person (see message).
    Failed,
    /// Named in `spec.users.names` but no such IAM user exists.
    NotFound,
    /// At least one active MFA device.
    Compliant,
}

impl UserState {
    /// Order of the bounded `users` lists and reports: users needing attention first.
    pub fn attention_rank(self) -> u8 {
        match self {
            Self::Failed => 0,
            Self::Missing => 1,
            Self::Pending => 2,
            Self::NotFound => 3,
            Self::Compliant => 4,
        }
    }
}

/// Detail for one IAM user.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    /// IAM user name.
    #[schemars(length(max = 64))]
    pub name: String,
    /// Where the user stands.
    pub state: UserState,
    /// Serial number (ARN) of the user's pending virtual device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub serial_number: Option<String>,
    /// Name of the Secret (in this namespace) holding the pending device's seed, where
    /// the user writes `code1` and `code2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub seed_secret: Option<String>,
    /// When the pending device was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_since: Option<Time>,
    /// When the pending device expires and its seed is rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// Human-readable detail (never contains seeds or codes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
    /// Code submissions refused for the pending device (wrong codes, by the operator's
    /// check or by AWS); at 5 the device is replaced. Kept here, in status, because people
    /// who write codes cannot write status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1000))]
    pub failed_attempts: Option<u32>,
    /// When the user's one-time link was sent (`delivery: Link`; never the link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_sent_at: Option<Time>,
    /// When that link stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_expires_at: Option<Time>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
