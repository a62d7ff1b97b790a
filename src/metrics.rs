//! Prometheus metrics. Every label is bounded: enrollments (namespace/name), user states,
//! IAM operations and outcomes, error categories. No user name is ever a label value.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::aws::{Observer, Outcome};
use crate::crd::{Summary, UserState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UserLabels {
    pub namespace: String,
    pub enrollment: String,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IamLabels {
    pub operation: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabels {
    pub event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub category: &'static str,
}

/// The operator's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    users: Family<UserLabels, Gauge>,
    enrollment_duration: Histogram,
    iam_requests: Family<IamLabels, Counter>,
    reconcile_duration: Histogram,
    reconcile_errors: Family<ErrorLabels, Counter>,
    code_refusals: Family<RefusalLabels, Counter>,
    links: Family<LinkLabels, Counter>,
    /// Reconciles finished (what [`crate::memory`] watches to tell when a burst ended).
    reconciles: std::sync::atomic::AtomicU64,
}

const STATES: [(UserState, &str); 5] = [
    (UserState::Compliant, "Compliant"),
    (UserState::Pending, "Pending"),
    (UserState::Missing, "Missing"),
    (UserState::Failed, "Failed"),
    (UserState::NotFound, "NotFound"),
];

impl Metrics {
    pub fn new() -> Arc<Self> {
        Self::with_more(|_| {})
    }

    /// The operator's metrics, and whatever `register` adds to the registry (prefixed
    /// `mfa_operator`), e.g. the enrollment page's counters
    /// ([`crate::enroll_page::PageMetrics::register`]).
    pub fn with_more(register: impl FnOnce(&mut Registry)) -> Arc<Self> {
        let mut registry = Registry::with_prefix("mfa_operator");
        register(&mut registry);
        let users = Family::<UserLabels, Gauge>::default();
        registry.register("users", "Selected IAM users by state, per MfaEnrollment", users.clone());
        // From a pending device's creation to its enabling: minutes to days (people).
        let enrollment_duration =
            Histogram::new([60.0, 300.0, 900.0, 3600.0, 4.0 * 3600.0, 86400.0, 3.0 * 86400.0, 7.0 * 86400.0]);
        registry.register(
            "enrollment_duration_seconds",
            "Time from a pending device's creation to its enabling",
            enrollment_duration.clone(),
        );
        let iam_requests = Family::<IamLabels, Counter>::default();
        registry.register(
            "iam_requests",
            "IAM requests sent, by operation and outcome (success, throttled, client_error, server_error, transport_error), retries included",
            iam_requests.clone(),
        );
        let reconcile_duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]);
        registry.register("reconcile_duration_seconds", "Duration of one reconcile", reconcile_duration.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register("reconcile_errors", "Reconciles that failed, by error category", reconcile_errors.clone());
        let code_refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "code_refusals",
            "Code submissions refused, by cause (guess, timing, operator_delay: codes current on arrival that \
             went stale while the operator was busy; aws: refused by AWS after the local check)",
            code_refusals.clone(),
        );
        let links = Family::<LinkLabels, Counter>::default();
        registry.register(
            "links",
            "One-time enrollment links (delivery: Link), by event: sent, expired (replaced by a new one), revoked, \
             no_address (a user without a usable address)",
            links.clone(),
        );
        Arc::new(Self {
            registry,
            users,
            enrollment_duration,
            iam_requests,
            reconcile_duration,
            reconcile_errors,
            code_refusals,
            links,
            reconciles: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The hook the IAM clients' request counter calls for every request.
    pub fn iam_observer(self: &Arc<Self>) -> Observer {
        let metrics = Arc::clone(self);
        Arc::new(move |operation: &str, outcome: Outcome| {
            metrics
                .iam_requests
                .get_or_create(&IamLabels { operation: operation.to_owned(), outcome: outcome.as_str() })
                .inc();
        })
    }

    /// Sets the user counts of one enrollment from its status summary.
    pub fn set_users(&self, namespace: &str, enrollment: &str, summary: &Summary) {
        for (state, label) in STATES {
            let count = match state {
                UserState::Compliant => summary.compliant,
                UserState::Pending => summary.pending,
                UserState::Missing => summary.missing,
                UserState::Failed => summary.failed,
                UserState::NotFound => summary.not_found,
            };
            self.users.get_or_create(&user_labels(namespace, enrollment, label)).set(i64::from(count));
        }
    }

    /// Drops the series of a deleted enrollment.
    pub fn forget_enrollment(&self, namespace: &str, enrollment: &str) {
        for (_, label) in STATES {
            self.users.remove(&user_labels(namespace, enrollment, label));
        }
    }

    pub fn observe_enrollment(&self, seconds: f64) {
        self.enrollment_duration.observe(seconds);
    }

    pub fn observe_reconcile(&self, seconds: f64) {
        self.reconcile_duration.observe(seconds);
        self.reconciles.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Reconciles finished since start.
    pub fn reconciles(&self) -> u64 {
        self.reconciles.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One link event: `sent`, `expired`, `revoked` or `no_address`.
    pub fn count_link(&self, event: &'static str, n: u64) {
        self.links.get_or_create(&LinkLabels { event }).inc_by(n);
    }

    pub fn count_refusal(&self, cause: &'static str) {
        self.code_refusals.get_or_create(&RefusalLabels { cause }).inc();
    }

    pub fn count_error(&self, category: &'static str) {
        self.reconcile_errors.get_or_create(&ErrorLabels { category }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

fn user_labels(namespace: &str, enrollment: &str, state: &'static str) -> UserLabels {
    UserLabels { namespace: namespace.to_owned(), enrollment: enrollment.to_owned(), state }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_bounded_labels_and_every_family() {
        let metrics = Metrics::new();
        let summary = Summary { selected: 3, compliant: 1, pending: 1, missing: 1, ..Summary::default() };
        metrics.set_users("team", "engineering", &summary);
        (metrics.iam_observer())("ListVirtualMFADevices", Outcome::Throttled);
        metrics.observe_enrollment(120.0);
        metrics.observe_reconcile(0.2);
        metrics.count_error("aws_throttled");
        let text = metrics.encode();
        for expected in [
            r#"mfa_operator_users{namespace="team",enrollment="engineering",state="Pending"} 1"#,
            r#"mfa_operator_iam_requests_total{operation="ListVirtualMFADevices",outcome="throttled"} 1"#,
            "mfa_operator_enrollment_duration_seconds_count 1",
            "mfa_operator_reconcile_duration_seconds_count 1",
            r#"mfa_operator_reconcile_errors_total{category="aws_throttled"} 1"#,
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
        metrics.forget_enrollment("team", "engineering");
        assert!(!metrics.encode().contains("enrollment=\"engineering\""));
    }

    #[test]
    fn the_enrollment_page_counts_into_the_operators_registry() {
        let page = crate::enroll_page::PageMetrics::default();
        let metrics = Metrics::with_more(|registry| page.register(registry));
        page.enrolled.inc();
        page.count_refusal("link_used");
        let text = metrics.encode();
        for expected in [
            "mfa_operator_enrollment_page_enrolled_total 1",
            r#"mfa_operator_enrollment_page_refused_total{cause="link_used"} 1"#,
            "mfa_operator_reconcile_duration_seconds_count 0",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
    }
}
