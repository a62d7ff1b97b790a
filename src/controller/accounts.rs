//! One state per AWS account the operator manages: its IAM client, its shared inventory
//! and the claims of its pending devices. Reconciles of enrollments that target the same
//! account take the account's lock, so they see one consistent inventory and never race
//! each other into a second device for one user.

use std::collections::HashMap;
use std::sync::Arc;

use aws_config::SdkConfig;
use tokio::sync::Mutex;

use super::plan::Claims;
use crate::aws::{CallCounter, SdkIam, load_sdk_config};
use crate::crd::MfaEnrollmentSpec;
use crate::inventory::Inventory;

/// Which credentials reach an account: the operator's own (no role), or a role to assume.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountKey {
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub region: Option<String>,
}

impl AccountKey {
    pub fn of(spec: &MfaEnrollmentSpec) -> Self {
        let aws = spec.aws.clone().unwrap_or_default();
        Self { role_arn: aws.role_arn, external_id: aws.external_id, region: aws.region }
    }
}

/// The mutable state of one account, behind its lock.
pub struct AccountState {
    pub iam: SdkIam,
    pub inventory: Option<Inventory>,
    /// Seed Secrets of every watched namespace by device serial; refreshed together with
    /// the inventory and kept current by the operator's own writes.
    pub claims: Claims,
}

/// Every account's state, created on first use.
#[derive(Default)]
pub struct Accounts {
    entries: std::sync::Mutex<HashMap<AccountKey, Arc<Mutex<AccountState>>>>,
    /// One request counter for every account's IAM client (feeds the metrics).
    calls: CallCounter,
}

impl Accounts {
    pub fn new(calls: CallCounter) -> Self {
        Self { entries: std::sync::Mutex::default(), calls }
    }

    /// The account's state, building its IAM client on first use.
    pub async fn get(&self, key: &AccountKey) -> Arc<Mutex<AccountState>> {
        if let Some(existing) = self.lookup(key) {
            return existing;
        }
        let config = sdk_config(key).await;
        let fresh = Arc::new(Mutex::new(AccountState {
            iam: SdkIam::with_counter(&config, self.calls.clone()),
            inventory: None,
            claims: Claims::new(),
        }));
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.entry(key.clone()).or_insert(fresh).clone()
    }

    fn lookup(&self, key: &AccountKey) -> Option<Arc<Mutex<AccountState>>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(key).cloned()
    }

    /// Every account state (for cleanup paths that need all of them).
    pub fn all(&self) -> Vec<Arc<Mutex<AccountState>>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).values().cloned().collect()
    }
}

/// The standard AWS configuration, with the enrollment's region and, for another
/// account, credentials from assuming its role through STS.
pub(crate) async fn sdk_config(key: &AccountKey) -> SdkConfig {
    let base = load_sdk_config(key.region.as_deref()).await;
    let Some(role_arn) = &key.role_arn else {
        return base;
    };
    let mut provider =
        aws_config::sts::AssumeRoleProvider::builder(role_arn).session_name("mfa-operator").configure(&base);
    if let Some(external_id) = &key.external_id {
        provider = provider.external_id(external_id);
    }
    let credentials = aws_sdk_iam::config::SharedCredentialsProvider::new(provider.build().await);
    base.into_builder().credentials_provider(credentials).build()
}
