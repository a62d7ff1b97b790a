//! mfa-operator: a Kubernetes operator that closes the loop on AWS IAM users without MFA.
//!
//! - [`crd`]: the `MfaEnrollment` API types (the only source of `crds/`).
//! - [`aws`]: the domain-level IAM interface and its `aws-sdk-iam` implementation.

pub mod aws;
pub mod crd;
