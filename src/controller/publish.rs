//! The operator's two writes about an enrollment itself: its status (server-side apply,
//! only when it changed) and Events. Shared by reconcile and the effects layer.

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use super::vocabulary::EventReason;
use super::{Context, Error, FIELD_MANAGER, Result};
use crate::crd::{MfaEnrollment, MfaEnrollmentStatus};

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
