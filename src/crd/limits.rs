//! The bounds of `spec.users`, `spec.device`, `spec.aws` and the binding's fields, in one place: the CRD's
//! schema is generated from them and `mfa-operator audit` checks its flags against them.
//! The apiserver evaluates patterns with Go's RE2, where `\w` is ASCII only. The tag rule
//! is CEL text in `crd/mod.rs` (a unit test in `audit.rs` checks it carries these values).

pub const IAM_NAME_PATTERN: &str = r"^[\w+=,.@-]+$";
pub const PATH_PREFIX_PATTERN: &str = r"^/[\x21-\x7E]*$";
pub const DEVICE_PATH_PATTERN: &str = r"^/([\x21-\x7E]+/)?$";
pub const TAG_KEY_PATTERN: &str = r"^[\p{L}\p{Z}\p{N}_.:/=+\-@]+$";
pub const REGION_PATTERN: &str = r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$";
pub const ROLE_ARN_PATTERN: &str = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$";
pub const EXTERNAL_ID_PATTERN: &str = r"^[\w+=,.@:/-]+$";
pub const ACCOUNT_ID_PATTERN: &str = r"^[0-9]{12}$";
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
pub const DNS_SUBDOMAIN_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
pub const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";

pub const MAX_USER_NAME: usize = 64;
pub const MAX_GROUP_NAME: usize = 128;
pub const MAX_PATH_PREFIX: usize = 512;
pub const MAX_TAG_KEY: usize = 128;
pub const MAX_TAG_VALUE: usize = 256;
pub const MAX_NAMES: usize = 1000;
pub const MAX_GROUPS: usize = 300;
pub const MAX_EXCLUDE: usize = 500;
pub const MAX_TAGS: usize = 50;
pub const MAX_REGION: usize = 32;
pub const MAX_ROLE_ARN: usize = 2048;
pub const MIN_EXTERNAL_ID: usize = 2;
pub const MAX_EXTERNAL_ID: usize = 1224;
pub const MAX_NAMESPACES: usize = 1000;
