//! The `MfaEnrollment` API (group `iam.mfa-operator.dev`, version `v1alpha1`).
//!
//! These types are the only source of the CRD YAML in `crds/` (printed by the `crdgen`
//! binary). The schema is strict on purpose: whatever the apiserver can reject at
//! admission (IAM name and path syntax, durations, selectors that select nothing) never
//! reaches the controller.

pub mod binding;
pub mod limits;
pub mod status;

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use binding::{
    AccountRef, MfaAccountBinding, MfaAccountBindingSpec, MfaAccountBindingStatus, NamespaceGrant, UserGrant,
};
use limits::*;
pub use status::{MfaEnrollmentStatus, Summary, UserState, UserStatus};

/// API group of every type this operator defines.
pub const GROUP: &str = "iam.mfa-operator.dev";

/// Default IAM path of the virtual MFA devices the operator creates.
pub const DEFAULT_DEVICE_PATH: &str = "/mfa-operator/";
/// Default lifetime of a pending (not yet enabled) device before its seed is rotated.
pub const DEFAULT_PENDING_TTL: &str = "168h";
/// Default interval between two full syncs of an enrollment when nothing changes.
pub const DEFAULT_RESYNC_INTERVAL: &str = "10m";

/// Regular expression of an IAM user name, as IAM defines it (`[\w+=,.@-]+`).
/// The apiserver evaluates it with Go's RE2, where `\w` is `[0-9A-Za-z_]`.
/// Go `time.ParseDuration` syntax restricted to whole hours, minutes and seconds.
const DURATION_PATTERN: &str = r"^([0-9]{1,6}(h|m|s))+$";

/// Declares which IAM users of one AWS account must have MFA, and whether the operator
/// only reports them or also enrols them.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
// Each printcolumn(...) repeats the same keys, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "iam.mfa-operator.dev",
    version = "v1alpha1",
    kind = "MfaEnrollment",
    namespaced,
    status = "MfaEnrollmentStatus",
    shortname = "mfae",
    category = "mfa-operator",
    doc = "MfaEnrollment declares which IAM users of an AWS account must have an MFA device; in Enroll mode the operator creates pending virtual MFA devices and delivers their seeds through Secrets.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Selected", type_ = "integer", json_path = ".status.summary.selected"),
    printcolumn(name = "Compliant", type_ = "integer", json_path = ".status.summary.compliant"),
    printcolumn(name = "Pending", type_ = "integer", json_path = ".status.summary.pending"),
    printcolumn(name = "Missing", type_ = "integer", json_path = ".status.summary.missing"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // The name is a label value on the seed Secrets (and in their selectors).
    validation = kube::core::Rule::new("size(self.metadata.name) <= 63").message("metadata.name: an MfaEnrollment name must be at most 63 characters (it is used as a label value)")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.accountRef)").message("spec.accountRef: name the MfaAccountBinding your platform team created for this namespace (kubectl get mfaaccountbindings)"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.aws)").message("spec.aws moved to the MfaAccountBinding that spec.accountRef names: the platform team chooses the account, role and ExternalId (docs/tenancy.md#migrating)"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.device)").message("spec.device moved to the MfaAccountBinding that spec.accountRef names (docs/tenancy.md#migrating)"))]
pub struct MfaEnrollmentSpec {
    /// The `MfaAccountBinding` that grants this namespace an AWS account: which account,
    /// through which role, which users may be selected, and whether Enroll is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_ref: Option<AccountRef>,

    /// What the operator does for selected users without an active MFA device.
    /// `Report` only lists them in status (no writes to AWS); `Enroll` also creates a
    /// pending virtual MFA device for each and delivers its seed through a Secret.
    pub mode: Mode,

    /// Which IAM users this enrollment covers.
    pub users: UserSelector,

    /// Retired: the device path is the binding's `device.path`. Refused at admission;
    /// kept in the schema so that the refusal can say where it went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceSpec>,

    /// How long a pending device may wait for its two codes before it is deleted and
    /// re-created with a fresh seed. Go duration of whole hours, minutes and seconds
    /// (for example `168h`, `90m`); at least 30s, at most 8760h.
    #[serde(rename = "pendingTTL", default = "default_pending_ttl")]
    #[schemars(extend("default" = DEFAULT_PENDING_TTL))]
    #[x_kube(validation = kube::core::Rule::new("!self.matches('^([0-9]{1,6}(h|m|s))+$') || (duration(self) >= duration('30s') && duration(self) <= duration('8760h'))").message("pendingTTL must be between 30s and 8760h"))]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub pending_ttl: kube::core::Duration,

    /// Retired: the account, role and region are the binding's. Refused at admission;
    /// kept in the schema so that the refusal can say where they went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsSpec>,

    /// How often the enrollment is re-checked against AWS when nothing else triggers it
    /// (drift detection). Go duration of whole hours, minutes and seconds; at least 10s,
    /// at most 24h.
    #[serde(default = "default_resync_interval")]
    #[schemars(extend("default" = DEFAULT_RESYNC_INTERVAL))]
    #[x_kube(validation = kube::core::Rule::new("!self.matches('^([0-9]{1,6}(h|m|s))+$') || (duration(self) >= duration('10s') && duration(self) <= duration('24h'))").message("resyncInterval must be between 10s and 24h"))]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub resync_interval: kube::core::Duration,

    /// How a person receives what they need to enrol (Enroll mode). `Secret` (when
    /// absent): the pending device's seed in a Secret in this namespace, where the person
    /// writes two codes. `Link`: a one-time link to the operator's enrollment page; the
    /// device is created when the person opens it, and no seed is ever stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,

    /// Settings of `delivery: Link`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkSpec>,
}

/// How a person receives what they need to enrol.
#[derive(schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Delivery {
    /// The seed in a Secret in the enrollment's namespace.
    #[default]
    Secret,
    /// A one-time link to the operator's enrollment page.
    Link,
}

/// Where and how long a one-time link goes out.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LinkSpec {
    /// How long a link stays valid. Go duration of whole hours, minutes and seconds; at
    /// least 1h (each expiry sends a new mail), at most 720h (30 days); 72h when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("!self.matches('^([0-9]{1,6}(h|m|s))+$') || (duration(self) >= duration('1h') && duration(self) <= duration('720h'))").message("link.ttl must be between 1h and 720h"))]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub ttl: Option<kube::core::Duration>,

    /// How the link reaches its person: `Email` (when absent) to the address in the IAM
    /// user's tag (the operator's `--address-tag`, `email` by default), `Webhook` to the
    /// operator's chat webhook, `Manual` nowhere (an admin hands it over, `kubectl mfa
    /// link`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<LinkChannel>,
}

/// How a link reaches its person.
#[derive(schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LinkChannel {
    #[default]
    Email,
    Webhook,
    Manual,
}

impl MfaEnrollmentSpec {
    /// Whether this enrollment enrols through one-time links.
    pub fn links(&self) -> bool {
        self.mode == Mode::Enroll && self.delivery == Some(Delivery::Link)
    }

    /// How long its links live.
    pub fn link_ttl(&self) -> jiff::SignedDuration {
        let ttl = self.link.as_ref().and_then(|l| l.ttl).map(std::time::Duration::from);
        ttl.and_then(|t| jiff::SignedDuration::try_from(t).ok()).unwrap_or(crate::link::DEFAULT_TTL)
    }
}

/// What the operator does for selected users without an active MFA device.
#[derive(schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Create a pending virtual MFA device per user and deliver its seed through a Secret
    /// (only where the binding allows it).
    Enroll,
    /// Only report users without MFA; never write to AWS.
    Report,
}

/// Which IAM users an enrollment covers: the union of `names`, `pathPrefix`, `groups` and
/// `tags`, minus `exclude`, optionally narrowed to users with a console password.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.names) || has(self.pathPrefix) || has(self.groups) || has(self.tags)").message("users: at least one selector (names, pathPrefix, groups or tags) must be given"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.exclude) || !has(self.names) || !self.names.exists(n, n in self.exclude)").message("users: a user name cannot be in both names and exclude"))]
pub struct UserSelector {
    /// IAM user names, exactly as in IAM (case-sensitive). Names that do not exist in the
    /// account are reported in status as `NotFound`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_NAMES), inner(regex(pattern = IAM_NAME_PATTERN), length(min = 1, max = MAX_USER_NAME)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub names: Option<Vec<String>>,

    /// Every user whose IAM path starts with this prefix, for example `/engineering/`.
    /// `/` selects every user of the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = PATH_PREFIX_PATTERN), length(min = 1, max = MAX_PATH_PREFIX))]
    pub path_prefix: Option<String>,

    /// Every member of these IAM groups (group names, case-insensitive in IAM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_GROUPS), inner(regex(pattern = IAM_NAME_PATTERN), length(min = 1, max = MAX_GROUP_NAME)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub groups: Option<Vec<String>>,

    /// Every user carrying all of these IAM tags with exactly these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minProperties" = 1, "maxProperties" = MAX_TAGS))]
    #[x_kube(validation = kube::core::Rule::new(r"self.all(k, size(k) <= 128 && k.matches('^[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]+$') && !k.startsWith('aws:') && size(self[k]) <= 256)").message("users.tags: keys must be 1-128 IAM tag characters (letters, digits, spaces, _.:/=+-@) not starting with aws:, values at most 256 characters"))]
    pub tags: Option<BTreeMap<String, String>>,

    /// IAM user names never covered by this enrollment, even when another selector
    /// matches them (break-glass and automation users). Only meaningful together with
    /// another selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_EXCLUDE), inner(regex(pattern = IAM_NAME_PATTERN), length(min = 1, max = MAX_USER_NAME)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub exclude: Option<Vec<String>>,

    /// Only cover users who can sign in to the AWS console (users with a login profile).
    #[serde(default)]
    pub console_access_only: bool,
}

/// Where the operator creates virtual MFA devices.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceSpec {
    /// IAM path of the virtual MFA devices the operator creates. The operator only ever
    /// deletes unassigned devices under this path, so it must be dedicated to the
    /// operator: it starts and ends with `/` and cannot be `/` itself.
    #[serde(default = "default_device_path")]
    #[schemars(regex(pattern = DEVICE_PATH_PATTERN), length(min = 1, max = MAX_PATH_PREFIX))]
    #[x_kube(validation = kube::core::Rule::new("self != '/'").message("device.path must be a path dedicated to the operator such as /mfa-operator/, not /: the operator deletes unassigned devices under it"))]
    pub path: String,
}

impl Default for DeviceSpec {
    fn default() -> Self {
        Self { path: default_device_path() }
    }
}

/// Which AWS account and region an enrollment manages.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.externalId) || has(self.roleArn)").message("aws.externalId is only used together with aws.roleArn"))]
pub struct AwsSpec {
    /// AWS region for IAM and STS calls (IAM is global; the region picks the STS
    /// endpoint and signing region). Omitted: the operator's configured region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = REGION_PATTERN), length(max = MAX_REGION))]
    pub region: Option<String>,

    /// IAM role to assume (through STS) to manage another AWS account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = ROLE_ARN_PATTERN), length(max = MAX_ROLE_ARN))]
    pub role_arn: Option<String>,

    /// External ID the role's trust policy requires, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = EXTERNAL_ID_PATTERN), length(min = MIN_EXTERNAL_ID, max = MAX_EXTERNAL_ID))]
    pub external_id: Option<String>,
}

/// Every CustomResourceDefinition this operator installs.
pub fn crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    use kube::CustomResourceExt;
    vec![crd(), MfaAccountBinding::crd()]
}

/// The MfaEnrollment CustomResourceDefinition as installed: the derived one, plus a schema default for
/// `status` (`observedGeneration: 0`), so that an enrollment the operator has not
/// reconciled yet reads as in progress to kstatus (Flux) rather than as current.
pub fn crd() -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = MfaEnrollment::crd();
    for version in &mut crd.spec.versions {
        let status = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|root| root.properties.as_mut())
            .and_then(|properties| properties.get_mut("status"));
        if let Some(status) = status {
            status.default = Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON(
                serde_json::json!({ "observedGeneration": 0 }),
            ));
        }
    }
    crd
}

fn default_device_path() -> String {
    DEFAULT_DEVICE_PATH.to_owned()
}

fn default_pending_ttl() -> kube::core::Duration {
    parse_default(DEFAULT_PENDING_TTL)
}

fn default_resync_interval() -> kube::core::Duration {
    parse_default(DEFAULT_RESYNC_INTERVAL)
}

fn parse_default(text: &str) -> kube::core::Duration {
    // The defaults are constants checked by a unit test; a failure here is a programming error.
    text.parse().unwrap_or_else(|e| panic!("default duration {text:?} does not parse: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        assert_eq!(default_pending_ttl(), std::time::Duration::from_secs(168 * 3600));
        assert_eq!(default_resync_interval(), std::time::Duration::from_secs(600));
        assert_eq!(DeviceSpec::default().path, "/mfa-operator/");
    }

    #[test]
    fn crd_has_status_subresource_short_name_and_columns() {
        let crd = crd();
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.names.short_names.as_deref(), Some(&["mfae".to_owned()][..]));
        let version = &crd.spec.versions[0];
        assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        let columns: Vec<_> = version.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
        assert_eq!(columns, ["Mode", "Selected", "Compliant", "Pending", "Missing", "Ready", "Age"]);
        let status = &version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|r| r.properties.as_ref())
            .expect("properties")["status"];
        assert_eq!(status.default.as_ref().map(|d| &d.0), Some(&serde_json::json!({ "observedGeneration": 0 })));
    }

    #[test]
    fn spec_round_trips_with_defaults() {
        let spec: MfaEnrollmentSpec =
            serde_yaml::from_str("mode: Report\nusers:\n  pathPrefix: /\n").expect("minimal spec parses");
        assert_eq!(spec.mode, Mode::Report);
        assert_eq!(spec.device, None);
        assert_eq!(spec.account_ref, None);
        assert_eq!(spec.pending_ttl, std::time::Duration::from_secs(168 * 3600));
        assert!(!spec.users.console_access_only);
    }
}
