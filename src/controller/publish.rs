//! The operator's writes about its own objects: an enrollment's status (server-side
//! apply, only when it changed) and Events, and whether a binding reaches its account.
//! Shared by reconcile, the effects layer and `reach`.

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use super::context::{Context, Error, FIELD_MANAGER, Result};
use super::vocabulary::EventReason;
use crate::crd::{MfaAccountBinding, MfaAccountBindingStatus, MfaEnrollment, MfaEnrollmentStatus};

/// Writes `status` unless it equals the status last written (see
/// [`Context::last_status`]), and remembers it.
pub async fn write_status(enrollment: &MfaEnrollment, ctx: &Context, status: MfaEnrollmentStatus) -> Result<()> {
    if ctx.last_status(enrollment).as_ref() == Some(&status) {
        return Ok(());
    }
    // A replica that lost the lease leaves the status to the new leader.
    if crate::leader::fence().check("status").is_err() {
        return Ok(());
    }
    let namespace = enrollment.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<MfaEnrollment> = ctx.api(&namespace);
    let patch = serde_json::json!({
        "apiVersion": "iam.mfa-operator.dev/v1alpha1",
        "kind": "MfaEnrollment",
        "status": status,
    });
    api.patch_status(&enrollment.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(Error::kube("patch MfaEnrollment status"))?;
    ctx.remember_status(enrollment, status);
    Ok(())
}

/// Publishes an Event on the enrollment; failures are logged, never fatal.
pub async fn publish(ctx: &Context, enrollment: &MfaEnrollment, reason: EventReason, note: String) {
    let event = Event {
        type_: if reason.is_warning() { EventType::Warning } else { EventType::Normal },
        reason: reason.as_str().to_owned(),
        note: Some(note),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &enrollment.object_ref(&())).await {
        tracing::warn!(error = %e, reason = reason.as_str(), "cannot publish Event");
    }
}

/// Sets the binding's `Ready` condition to whether its credentials reach the account it
/// declares (`Err` holds why not), when that changed. Failures are logged, never fatal.
pub async fn write_binding_status(ctx: &Context, binding: &MfaAccountBinding, reached: Result<(), String>) {
    let name = binding.name_any();
    let generation = binding.meta().generation;
    let (ready, message) = match &reached {
        Ok(()) => (true, format!("the credentials reach account {}", binding.spec.account_id)),
        Err(why) => (false, why.clone()),
    };
    let current = binding.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let unchanged = current.is_some_and(|c| (c.status == "True") == ready && c.message == message)
        && binding.status.as_ref().and_then(|s| s.observed_generation) == generation;
    if unchanged
        || ctx.binding_written(&name, generation, ready, &message)
        || crate::leader::fence().check("status").is_err()
    {
        return;
    }
    let condition = k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        type_: "Ready".into(),
        status: if ready { "True" } else { "False" }.into(),
        reason: if ready { "Reached" } else { "NotReached" }.into(),
        message,
        observed_generation: generation,
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ctx.now()),
    };
    let status = MfaAccountBindingStatus { observed_generation: generation, conditions: vec![condition] };
    let patch = serde_json::json!({
        "apiVersion": "iam.mfa-operator.dev/v1alpha1",
        "kind": "MfaAccountBinding",
        "status": status,
    });
    let api: Api<MfaAccountBinding> = Api::all(ctx.client.clone());
    match api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await {
        Ok(_) => ctx.remember_binding(&name, generation, ready, &status.conditions[0].message),
        Err(e) => tracing::warn!(binding = %name, error = %e, "cannot write the binding's status"),
    }
}
