//! mfa-operator: a Kubernetes operator that closes the loop on AWS IAM users without MFA.
//!
//! - [`crd`]: the `MfaEnrollment` API types (the only source of `crds/`).
//! - [`aws`]: the domain-level IAM interface and its `aws-sdk-iam` implementation.
//! - [`inventory`]: the per-account inventory of users and MFA devices.
//! - [`controller`]: the enrollment controller (planning, apply, status).
//! - [`totp`]: RFC 6238 codes, for checking the two codes locally before AWS sees them.
//! - [`failpoint`]: crash points for fault tests (`MFA_OPERATOR_FAILPOINT`).
//! - [`health`]: what `/readyz` and `/healthz` answer.
//! - [`qr`]: the `otpauth://` URI and its QR code PNG for the seed Secret.
//! - [`link`]: one-time enrollment links: the token and the digest the operator keeps.
//! - [`links`]: link delivery as the controller sees it: mint, keep, deliver, revoke.
//! - [`enroll_page`]: the self-service enrollment page a link opens (not wired yet).
//! - [`delivery`]: sending a link to its person: e-mail over SMTP, a chat webhook.
//! - [`memory`]: keeps the allocator from holding memory the operator no longer uses.

pub mod audit;
pub mod aws;
pub mod controller;
pub mod crd;
pub mod delivery;
pub mod enroll_page;
pub mod failpoint;
pub mod health;
pub mod http;
pub mod inventory;
pub mod leader;
pub mod link;
pub mod links;
pub mod memory;
pub mod metrics;
pub mod plugin;
pub mod qr;
pub mod totp;
