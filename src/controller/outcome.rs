//! What running a decision produced: the typed outcomes the effects layer (`act`) returns
//! and the status rules (`render`) read. Shared vocabulary only; nothing here does I/O.

use super::decide::{Decision, Step};
use super::vocabulary::{Blocker, ConditionReason};
use crate::aws::IamError;
use crate::crd::UserState;

/// How one decision ended.
#[derive(Debug)]
pub enum Outcome {
    Done,
    /// Step `index` failed; those after it did not run.
    Failed {
        index: usize,
        failure: StepFailure,
    },
    /// Not started: an earlier failure stopped everything (see
    /// [`StepFailure::stops_everything`]).
    NotRun,
}

/// A decision and its outcome, in the order they finished.
#[derive(Debug)]
pub struct Finished {
    pub decision: Decision,
    pub outcome: Outcome,
}

impl Finished {
    /// The steps that ran to completion.
    pub fn ran(&self) -> &[Step] {
        let ran = match &self.outcome {
            Outcome::Done => self.decision.steps.len(),
            Outcome::Failed { index, .. } => *index,
            Outcome::NotRun => 0,
        };
        &self.decision.steps[..ran]
    }
}

/// Why one step failed.
#[derive(Debug)]
pub enum StepFailure {
    Iam(IamError),
    Kube(&'static str, String),
    /// AWS refused the codes: recorded on the Secret like a local refusal.
    CodesRefused,
    StaleInventory(String),
    /// The enrollment cannot own what the step would create (it has no uid yet).
    NoOwner,
    /// A Secret the operator did not write holds the seed Secret's name.
    NameTaken(String),
    /// IAM refused to delete a device under the operator's path: the policy lets the
    /// operator delete only devices carrying its tag, so someone else made this one.
    Foreign(String),
    /// The user has no usable address for their link (says which tag and why).
    NoAddress(String),
    /// `delivery: Link` asks for something the operator is not set up for.
    DeliveryNotConfigured(String),
    /// Sending a link or keeping its record failed; retried.
    Delivery(String),
}

impl StepFailure {
    pub fn kube(what: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |error| Self::Kube(what, error.to_string())
    }

    pub fn message(&self) -> String {
        match self {
            Self::Iam(e) => e.to_string(),
            Self::Kube(what, e) => format!("Kubernetes {what}: {e}"),
            Self::CodesRefused => "AWS refused the codes".into(),
            Self::StaleInventory(m) => m.clone(),
            Self::NoOwner => "the MfaEnrollment has no uid to own a seed Secret".into(),
            Self::NameTaken(name) => format!(
                "a Secret named {name} that the operator did not write is in the way of the seed Secret: delete it"
            ),
            Self::NoAddress(why) => format!("NoDeliveryAddress: {why}; add it in IAM to receive a one-time link"),
            Self::DeliveryNotConfigured(why) => why.clone(),
            Self::Delivery(why) => format!("sending the one-time link failed: {why}"),
            Self::Foreign(serial) => format!(
                "IAM refused to delete {serial}, a device under the operator's path that it did not create \
                 (no iam.mfa-operator.dev tags): delete it, or check the IAM policy"
            ),
        }
    }

    pub fn blocker(&self) -> Blocker {
        let reason = match self {
            Self::Iam(error) => ConditionReason::of_iam(error),
            Self::Foreign(_) => ConditionReason::AccessDenied,
            Self::DeliveryNotConfigured(_) => ConditionReason::DeliveryNotConfigured,
            _ => ConditionReason::TransientError,
        };
        Blocker { reason, message: self.message() }
    }

    /// Whether the rest of the decisions should stop (everything else would fail the
    /// same way).
    pub fn stops_everything(&self) -> bool {
        matches!(self, Self::Iam(IamError::AccessDenied { .. } | IamError::Throttled { .. }))
    }

    /// The state a user is left in when their steps failed: permanent refusals are
    /// Failed, anything else stays as it was before (Missing when nothing was pending).
    pub fn failed_state(&self) -> UserState {
        match self {
            Self::Iam(IamError::LimitExceeded { .. } | IamError::EntityAlreadyExists { .. })
            | Self::NameTaken(_)
            | Self::Foreign(_)
            | Self::NoAddress(_) => UserState::Failed,
            _ => UserState::Missing,
        }
    }
}

/// Whether some step found the inventory out of date with AWS (a create met an existing
/// device, an enable met one in use): the account is re-read.
pub fn stale_inventory(finished: &[Finished]) -> bool {
    finished.iter().any(|f| matches!(f.outcome, Outcome::Failed { failure: StepFailure::StaleInventory(_), .. }))
}

/// Whether some step changed the account (devices created, enabled or deleted), so other
/// enrollments of the account may need a new status.
pub fn changed_account(finished: &[Finished]) -> bool {
    finished.iter().any(|f| {
        f.ran().iter().any(|s| {
            !matches!(
                s,
                Step::DeleteSecret { .. } | Step::RejectCodes { .. } | Step::SendLink { .. } | Step::RevokeLinks { .. }
            )
        })
    })
}
