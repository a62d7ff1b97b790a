//! The `MfaAccountBinding` API: what a platform team grants tenants. Cluster-scoped, so
//! only whoever may write cluster-scoped objects (the platform team) decides which
//! namespaces reach which AWS account, through which role, for which users, and whether
//! the operator may write there. An enrollment only names a binding (`spec.accountRef`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::DeviceSpec;
use super::limits::*;

/// IAM user tag that keeps a user out of every enrollment, whatever selects them
/// (break-glass and automation users). `deploy/iam-policy.json` denies enabling a device
/// for such users too, so AWS enforces what the operator honours.
pub const EXCLUDE_TAG_KEY: &str = "iam.mfa-operator.dev/exclude";
/// The value of [`EXCLUDE_TAG_KEY`] that excludes a user.
pub const EXCLUDE_TAG_VALUE: &str = "true";

/// Grants the enrollments of some namespaces the use of one AWS account.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "iam.mfa-operator.dev",
    version = "v1alpha1",
    kind = "MfaAccountBinding",
    shortname = "mfab",
    category = "mfa-operator",
    doc = "MfaAccountBinding is created by the platform team: it grants the MfaEnrollments of some namespaces the use of one AWS account, through one role, for some IAM users, and says whether the operator may write there.",
    status = "MfaAccountBindingStatus",
    printcolumn(name = "Account", type_ = "string", json_path = ".spec.accountId"),
    printcolumn(name = "Enroll", type_ = "boolean", json_path = ".spec.allowEnroll"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.roleArn) || self.roleArn.split(':')[4] == self.accountId").message("roleArn must be a role in accountId"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.externalIdSecretRef) || has(self.roleArn)").message("externalIdSecretRef is only used together with roleArn"))]
pub struct MfaAccountBindingSpec {
    /// The 12-digit id of the AWS account. The operator checks it against what its
    /// credentials reach (STS `GetCallerIdentity`) before anything else, and keys its
    /// per-account state by it: one account reached two ways is one account.
    #[schemars(regex(pattern = ACCOUNT_ID_PATTERN))]
    pub account_id: String,

    /// IAM role in the account to assume (through STS). Omitted: the operator's own
    /// credentials (IRSA, EKS Pod Identity, environment), which must reach `accountId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = ROLE_ARN_PATTERN), length(max = MAX_ROLE_ARN))]
    pub role_arn: Option<String>,

    /// The ExternalId the role's trust policy requires, read from a Secret in the
    /// operator's own namespace: tenants never see or choose it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id_secret_ref: Option<SecretKeyRef>,

    /// AWS region for STS (IAM is global). Omitted: the operator's configured region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = REGION_PATTERN), length(max = MAX_REGION))]
    pub region: Option<String>,

    /// Which namespaces' enrollments may use this binding.
    pub namespaces: NamespaceGrant,

    /// Which IAM users those enrollments may select.
    pub users: UserGrant,

    /// Where the operator creates virtual MFA devices for enrollments of this binding.
    #[serde(default)]
    pub device: DeviceSpec,

    /// Whether enrollments may use `mode: Enroll` (create devices, enable them). Without
    /// it the binding only grants reporting.
    #[serde(default)]
    pub allow_enroll: bool,

    /// How one-time links (`delivery: Link`) may reach people in enrollments under this
    /// binding: `Email` (to the user's own address tag) and `Manual` when absent. List
    /// `Webhook` only when the chat channel it posts to is one every reader of which may
    /// enrol any granted user: the link is the only credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 3))]
    pub link_channels: Option<Vec<crate::crd::LinkChannel>>,
}

impl MfaAccountBindingSpec {
    /// Whether enrollments under this binding may send links through `channel`.
    pub fn allows_channel(&self, channel: crate::crd::LinkChannel) -> bool {
        use crate::crd::LinkChannel::{Email, Manual};
        match &self.link_channels {
            Some(channels) => channels.contains(&channel),
            None => matches!(channel, Email | Manual),
        }
    }
}

/// What the operator last found when it reached the account through the binding.
#[derive(schemars::JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MfaAccountBindingStatus {
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`: True when the binding's credentials reach the account it declares
    /// (reason `Reached`), False with the reason (`NotReached`) when they do not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
}

/// A key of a Secret in the operator's own namespace.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretKeyRef {
    #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub name: String,
    #[schemars(regex(pattern = SECRET_KEY_PATTERN), length(min = 1, max = 253))]
    pub key: String,
}

/// Namespaces a binding serves: those named, and those the selector matches.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = kube::core::Rule::new("has(self.names) || has(self.selector)").message("namespaces: give names, a selector, or both"))]
pub struct NamespaceGrant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_NAMESPACES), inner(regex(pattern = DNS_LABEL_PATTERN), length(min = 1, max = 63)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub names: Option<Vec<String>>,

    /// A label selector over Namespaces; `{}` matches every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// IAM users a binding's enrollments may select: those under one of the path prefixes or
/// in one of the groups, never those in `exclude` or tagged
/// `iam.mfa-operator.dev/exclude: "true"`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.pathPrefixes) || has(self.groups)").message("users: give pathPrefixes, groups, or both (pathPrefixes: [/] grants every user)"))]
pub struct UserGrant {
    /// IAM path prefixes, each ending in `/` (`/team-a` would also grant `/team-ab/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_GROUPS), inner(regex(pattern = PATH_PREFIX_PATTERN), length(min = 1, max = MAX_PATH_PREFIX)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = kube::core::Rule::new("self.all(p, p.endsWith('/'))").message("users.pathPrefixes: each prefix ends in / (IAM paths do; /team-a would also grant /team-ab/)"))]
    pub path_prefixes: Option<Vec<String>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_GROUPS), inner(regex(pattern = IAM_NAME_PATTERN), length(min = 1, max = MAX_GROUP_NAME)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub groups: Option<Vec<String>>,

    /// IAM user names no enrollment of this binding ever covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_EXCLUDE), inner(regex(pattern = IAM_NAME_PATTERN), length(min = 1, max = MAX_USER_NAME)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub exclude: Option<Vec<String>>,
}

/// Names the binding an enrollment uses.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct AccountRef {
    /// Name of a cluster-scoped `MfaAccountBinding`.
    #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub name: String,
}

/// Whether `labels` of a namespace named `name` are served by `grant`.
pub fn serves_namespace(grant: &NamespaceGrant, name: &str, labels: &BTreeMap<String, String>) -> bool {
    use kube::core::SelectorExt;
    if grant.names.iter().flatten().any(|n| n == name) {
        return true;
    }
    // A selector the apiserver accepted always converts; one that does not matches nothing.
    grant
        .selector
        .clone()
        .and_then(|s| kube::core::Selector::try_from(s).ok())
        .is_some_and(|selector| selector.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(yaml: &str) -> NamespaceGrant {
        serde_yaml::from_str(yaml).expect("grant parses")
    }

    #[test]
    fn namespaces_are_served_by_name_or_by_selector() {
        let labels = BTreeMap::from([("team".to_owned(), "a".to_owned())]);
        let none = BTreeMap::new();
        assert!(serves_namespace(&grant("names: [team-a]"), "team-a", &none));
        assert!(!serves_namespace(&grant("names: [team-a]"), "team-b", &labels));
        assert!(serves_namespace(&grant("selector: {matchLabels: {team: a}}"), "x", &labels));
        assert!(!serves_namespace(&grant("selector: {matchLabels: {team: a}}"), "x", &none));
        assert!(serves_namespace(&grant("selector: {}"), "any", &none), "{{}} matches every namespace");
        let expression = "selector: {matchExpressions: [{key: team, operator: In, values: [a, b]}]}";
        assert!(serves_namespace(&grant(expression), "x", &labels));
        assert!(!serves_namespace(&grant(expression), "x", &none));
    }
}
