//! The status this operator last wrote for each enrollment. Right after a status write
//! the controller's cached object can still be the older version; a reconcile that built
//! on it would reset every condition's `lastTransitionTime` and write the status again
//! (seen as status churn at 5,000 users). The leader is the only writer of status, so
//! what it wrote is the truth until the object is re-created (a new uid) or forgotten.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::crd::{MfaEnrollment, MfaEnrollmentStatus};

/// A status as written, with the uid of the object it was written to.
type Written = (Option<String>, MfaEnrollmentStatus);

#[derive(Default)]
pub struct LastWritten(Mutex<HashMap<ObjectRef<MfaEnrollment>, Written>>);

impl LastWritten {
    /// The status last written for `object`, else the one the object carries.
    pub fn last(&self, object: &MfaEnrollment) -> Option<MfaEnrollmentStatus> {
        let written = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match written.get(&ObjectRef::from(object)) {
            Some((uid, status)) if *uid == object.uid() => Some(status.clone()),
            _ => object.status.clone(),
        }
    }

    pub fn remember(&self, object: &MfaEnrollment, status: MfaEnrollmentStatus) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(ObjectRef::from(object), (object.uid(), status));
    }

    pub fn forget(&self, object: &MfaEnrollment) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&ObjectRef::from(object));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrollment(uid: &str, observed: i64) -> MfaEnrollment {
        let mut e: MfaEnrollment = serde_json::from_value(serde_json::json!({
            "apiVersion": "iam.mfa-operator.dev/v1alpha1", "kind": "MfaEnrollment",
            "metadata": { "name": "team", "namespace": "ns", "uid": uid },
            "spec": { "mode": "Report", "users": { "names": ["alice"] } },
        }))
        .expect("enrollment");
        e.status = Some(MfaEnrollmentStatus { observed_generation: Some(observed), ..MfaEnrollmentStatus::default() });
        e
    }

    fn observed(status: Option<MfaEnrollmentStatus>) -> Option<i64> {
        status.and_then(|s| s.observed_generation)
    }

    #[test]
    fn what_was_written_wins_over_an_older_cached_object() {
        let written = LastWritten::default();
        let cached = enrollment("uid-1", 1);
        assert_eq!(observed(written.last(&cached)), Some(1), "nothing written yet: the object's status");
        let mut newer = cached.status.clone().expect("status");
        newer.observed_generation = Some(2);
        written.remember(&cached, newer);
        assert_eq!(observed(written.last(&cached)), Some(2), "the cache still has the old one");
    }

    #[test]
    fn a_recreated_object_or_a_forgotten_one_uses_its_own_status() {
        let written = LastWritten::default();
        let first = enrollment("uid-1", 1);
        written.remember(&first, MfaEnrollmentStatus { observed_generation: Some(7), ..Default::default() });
        assert_eq!(observed(written.last(&enrollment("uid-2", 1))), Some(1), "same name, new uid");
        written.forget(&first);
        assert_eq!(observed(written.last(&first)), Some(1));
    }
}
