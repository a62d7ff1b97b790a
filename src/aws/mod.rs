//! AWS IAM behind a small, domain-level interface.
//!
//! No SDK type crosses [`IamApi`]: the controller and inventory speak in IAM users and
//! MFA devices, and every SDK error is mapped to an [`IamError`] whose text has been
//! sanitised (no request ids, no credentials) before it can reach status, Events or logs.

mod error;
mod sdk;

use std::future::Future;

pub use error::{IamError, sanitize};
pub use sdk::{SdkIam, load_sdk_config};

/// An IAM user as the operator needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IamUser {
    pub name: String,
    pub path: String,
    pub arn: String,
}

/// The IAM operations the operator uses. Implemented by [`SdkIam`] for real AWS (and any
/// endpoint the standard AWS configuration points at, such as the moto test bed).
pub trait IamApi: Send + Sync {
    /// Every IAM user of the account, all pages.
    fn list_users(&self) -> impl Future<Output = Result<Vec<IamUser>, IamError>> + Send;
}
