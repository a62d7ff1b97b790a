//! The words the operator says to the world: condition types and reasons, and Event
//! reasons. One place, so dashboards, alerts and docs can rely on them.

/// Something that kept this reconcile from finishing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    /// `AccessDenied` and `InvalidSpec` need a person (Stalled); anything else is retried.
    pub reason: ConditionReason,
    pub message: String,
}

impl Blocker {
    pub fn needs_person(&self) -> bool {
        matches!(
            self.reason,
            ConditionReason::AccessDenied
                | ConditionReason::InvalidSpec
                | ConditionReason::NotGranted
                | ConditionReason::DeliveryNotConfigured
        )
    }
}

/// Condition types of an `MfaEnrollment`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// The current generation is fully reconciled: inventory done and, in Enroll mode,
    /// every non-compliant user owned by this enrollment has a pending device and seed
    /// Secret. Waiting for people does not make it False.
    Ready,
    /// kstatus abnormal-true: the operator is still working towards Ready.
    Reconciling,
    /// kstatus abnormal-true: progress needs a person (missing permission, bad value).
    Stalled,
    /// Every selected user has an active MFA device. What compliance dashboards read.
    Compliant,
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Reconciling => "Reconciling",
            Self::Stalled => "Stalled",
            Self::Compliant => "Compliant",
        }
    }
}

/// Reasons of the conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionReason {
    /// Ready: the generation is fully reconciled.
    Reconciled,
    /// Ready False / Reconciling True: work in progress (creating devices, retrying).
    Progressing,
    /// Reconciling False / Stalled False: nothing abnormal.
    AsExpected,
    /// Stalled: AWS refused a call for lack of permission.
    AccessDenied,
    /// Stalled: the spec names something that does not exist (for example a group).
    InvalidSpec,
    /// Stalled: the MfaAccountBinding is missing, misconfigured, or does not grant what
    /// the enrollment asks (namespace, mode, users).
    NotGranted,
    /// Reconciling: a transient AWS or Kubernetes error; retried with backoff.
    TransientError,
    /// Stalled: `delivery: Link` asks for something this operator is not set up for (no
    /// enrollment page, no SMTP server, no webhook).
    DeliveryNotConfigured,
    /// Compliant True.
    AllUsersHaveMfa,
    /// Compliant False in Enroll mode: pending devices wait for people's codes.
    AwaitingCodes,
    /// Compliant False in Report mode.
    UsersWithoutMfa,
}

impl ConditionReason {
    /// The reason an IAM failure is shown with: refused access needs a person (Stalled);
    /// anything else is retried.
    pub fn of_iam(error: &crate::aws::IamError) -> Self {
        match error {
            crate::aws::IamError::AccessDenied { .. } => Self::AccessDenied,
            _ => Self::TransientError,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reconciled => "Reconciled",
            Self::Progressing => "Progressing",
            Self::AsExpected => "AsExpected",
            Self::AccessDenied => "AccessDenied",
            Self::InvalidSpec => "InvalidSpec",
            Self::NotGranted => "NotGranted",
            Self::DeliveryNotConfigured => "DeliveryNotConfigured",
            Self::TransientError => "TransientError",
            Self::AllUsersHaveMfa => "AllUsersHaveMfa",
            Self::AwaitingCodes => "AwaitingCodes",
            Self::UsersWithoutMfa => "UsersWithoutMfa",
        }
    }
}

/// Reasons of the Events the operator publishes (only on transitions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventReason {
    /// A pending virtual device and its seed Secret were created.
    DeviceCreated,
    /// The two codes were accepted and the device enabled.
    MfaEnabled,
    /// A code submission was refused (format, freshness, mismatch, or by AWS).
    CodesRejected,
    /// A pending device was replaced by a new one with a fresh seed.
    SeedRotated,
    /// An unassigned device under the operator's path that nothing claims was deleted.
    OrphanDeviceDeleted,
    /// A pending device and seed Secret no longer needed were removed.
    PendingDeviceRemoved,
    /// A user who had MFA no longer has an active device.
    MfaDeactivated,
    /// An AWS or Kubernetes call failed.
    ReconcileFailed,
    /// The enrollment's binding does not grant what it asks (or is missing).
    NotGranted,
    /// A seed Secret was changed by someone other than the operator, or a look-alike
    /// was found: it was deleted (and the user's device replaced), never obeyed.
    SeedSecretTampered,
    /// A one-time enrollment link was sent to a user (never the link itself).
    LinkSent,
    /// A user has no usable address for their link: a person must add one.
    NoDeliveryAddress,
}

impl EventReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeviceCreated => "DeviceCreated",
            Self::MfaEnabled => "MfaEnabled",
            Self::CodesRejected => "CodesRejected",
            Self::SeedRotated => "SeedRotated",
            Self::OrphanDeviceDeleted => "OrphanDeviceDeleted",
            Self::PendingDeviceRemoved => "PendingDeviceRemoved",
            Self::MfaDeactivated => "MfaDeactivated",
            Self::ReconcileFailed => "ReconcileFailed",
            Self::NotGranted => "NotGranted",
            Self::SeedSecretTampered => "SeedSecretTampered",
            Self::LinkSent => "LinkSent",
            Self::NoDeliveryAddress => "NoDeliveryAddress",
        }
    }

    /// Whether the Event is a Warning (something needs attention) rather than Normal.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Self::CodesRejected
                | Self::MfaDeactivated
                | Self::ReconcileFailed
                | Self::NotGranted
                | Self::SeedSecretTampered
                | Self::NoDeliveryAddress
        )
    }
}
