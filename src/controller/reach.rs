//! How an enrollment reaches its AWS account: the `MfaAccountBinding` it names, the
//! checks of what the binding grants, the binding's credentials (its ExternalId read from
//! the operator's own namespace, never from a tenant), and the account's shared state.
//! Reads the binding and namespace caches and the ExternalId Secret; writes only the
//! binding's `Ready` condition (through `publish`).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Resource, ResourceExt};

use super::accounts::{Account, AccountKey, Unreached};
use super::context::{Context, Error};
use super::grant::Grant;
use crate::aws::IamError;
use crate::crd::{MfaAccountBinding, MfaEnrollment};

/// What an enrollment may use: its binding and the account as the binding reaches it.
pub struct Reach {
    pub binding: Arc<MfaAccountBinding>,
    pub account: Account,
}

impl Reach {
    pub fn device_path(&self) -> &str {
        &self.binding.spec.device.path
    }
}

/// Why an enrollment cannot reach its account.
#[derive(Debug)]
pub enum Refusal {
    /// A person must change the enrollment or the binding: Stalled with this message.
    NotGranted(String),
    /// IAM or STS failed (AccessDenied needs a person, anything else is retried).
    Iam(IamError),
    Kube(Error),
}

fn binding_name(binding: &MfaAccountBinding) -> &str {
    binding.meta().name.as_deref().unwrap_or_default()
}

/// What `binding` grants.
pub fn grant_of(binding: &MfaAccountBinding) -> Grant<'_> {
    Grant { name: binding_name(binding), spec: &binding.spec }
}

/// Every live enrollment whose binding grants it account `account_id` (and has not failed
/// to reach it as declared), with its binding.
pub fn peers(ctx: &Context, account_id: &str) -> Vec<(Arc<MfaEnrollment>, Arc<MfaAccountBinding>)> {
    ctx.store
        .state()
        .into_iter()
        .filter(|e| e.meta().deletion_timestamp.is_none())
        .filter_map(|e| {
            let binding = granted_binding(ctx, &e).ok()?;
            (binding.spec.account_id == account_id && !ctx.is_unreachable(&binding)).then_some((e, binding))
        })
        .collect()
}

/// The binding `enrollment` names, if it exists and grants what the spec declares.
pub fn granted_binding(ctx: &Context, enrollment: &MfaEnrollment) -> Result<Arc<MfaAccountBinding>, String> {
    let binding = named_binding(ctx, enrollment)?;
    let namespace = enrollment.namespace().unwrap_or_default();
    // Fail closed: a selector such as `NotIn` must never match a namespace not yet seen.
    let labels = namespace_labels(ctx, &namespace).ok_or_else(|| format!("namespace {namespace} is not known yet"))?;
    grant_of(&binding).check_spec(&enrollment.spec, &namespace, &labels)?;
    Ok(binding)
}

/// The binding `enrollment` names, whatever it grants.
pub fn named_binding(ctx: &Context, enrollment: &MfaEnrollment) -> Result<Arc<MfaAccountBinding>, String> {
    let spec = &enrollment.spec;
    // Objects stored before bindings existed keep their old fields until edited.
    if spec.aws.is_some() || spec.device.is_some() {
        return Err("spec.aws and spec.device moved to the MfaAccountBinding that spec.accountRef names: \
                    remove them and name a binding (docs/tenancy.md#migrating)"
            .into());
    }
    let Some(reference) = &spec.account_ref else {
        return Err("spec.accountRef is required: name the MfaAccountBinding your platform team created \
                    for this namespace (docs/tenancy.md)"
            .into());
    };
    ctx.bindings
        .get(&kube::runtime::reflector::ObjectRef::new(&reference.name))
        .ok_or_else(|| format!("MfaAccountBinding {} does not exist", reference.name))
}

fn namespace_labels(ctx: &Context, namespace: &str) -> Option<BTreeMap<String, String>> {
    ctx.namespaces.get(&kube::runtime::reflector::ObjectRef::new(namespace)).map(|ns| ns.labels().clone())
}

/// The binding and account of `enrollment`, every grant check passed.
pub async fn reach(ctx: &Context, enrollment: &MfaEnrollment) -> Result<Reach, Refusal> {
    let namespace = enrollment.namespace().unwrap_or_default();
    if namespace_labels(ctx, &namespace).is_none() {
        // Created a moment ago: its watch event (which reconciles us again) is on its way.
        return Err(Refusal::Kube(Error::WorkFailed(format!("namespace {namespace} is not in the cache yet"))));
    }
    let binding = granted_binding(ctx, enrollment).map_err(Refusal::NotGranted)?;
    let account = account_of(ctx, &binding).await?;
    Ok(Reach { binding, account })
}

/// The account as `binding` reaches it (cleanup uses it without the grant checks: a
/// namespace whose grant was withdrawn still removes its own pending devices).
pub async fn account_of(ctx: &Context, binding: &MfaAccountBinding) -> Result<Account, Refusal> {
    let reached = reach_account(ctx, binding).await;
    // A binding that cannot reach its account as declared owns no user (until it
    // changes), and says so in its status; a transient failure changes neither.
    let verdict = match &reached {
        Ok(_) => Some(Ok(())),
        Err(Refusal::NotGranted(message)) => Some(Err(message.clone())),
        Err(Refusal::Iam(error)) if !error.is_transient() => Some(Err(error.to_string())),
        Err(_) => None,
    };
    if let Some(verdict) = verdict {
        ctx.note_unreachable(binding, verdict.is_err());
        super::publish::write_binding_status(ctx, binding, verdict).await;
    }
    reached
}

async fn reach_account(ctx: &Context, binding: &MfaAccountBinding) -> Result<Account, Refusal> {
    let key = AccountKey {
        role_arn: binding.spec.role_arn.clone(),
        external_id: external_id(ctx, binding).await?,
        region: binding.spec.region.clone(),
    };
    let name = binding_name(binding);
    ctx.accounts.get(&key, &binding.spec.account_id).await.map_err(|e| match e {
        Unreached::WrongAccount { .. } => Refusal::NotGranted(format!("MfaAccountBinding {name}: {e}")),
        Unreached::Identity(iam) => Refusal::Iam(iam),
    })
}

/// The binding's ExternalId, from a Secret in the operator's own namespace.
async fn external_id(ctx: &Context, binding: &MfaAccountBinding) -> Result<Option<String>, Refusal> {
    let Some(reference) = &binding.spec.external_id_secret_ref else { return Ok(None) };
    let name = binding_name(binding);
    let namespace = &ctx.config.key_namespace;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let missing = |what: &str| {
        Refusal::NotGranted(format!(
            "MfaAccountBinding {name}: externalIdSecretRef {what} (Secret {}/{}, key {})",
            namespace, reference.name, reference.key
        ))
    };
    let secret = match secrets.get_opt(&reference.name).await {
        Ok(secret) => secret.ok_or_else(|| missing("names a Secret that does not exist"))?,
        // The chart grants `get` only on the Secrets listed in `externalIdSecrets`.
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Err(missing("names a Secret the operator may not read (list it in the chart's externalIdSecrets)"));
        }
        Err(e) => return Err(Refusal::Kube(Error::kube("read ExternalId")(e))),
    };
    let value =
        secret.data.as_ref().and_then(|d| d.get(&reference.key)).ok_or_else(|| missing("names a missing key"))?;
    let value = String::from_utf8(value.0.clone()).map_err(|_| missing("holds a value that is not UTF-8"))?;
    Ok(Some(value.trim().to_owned()))
}
