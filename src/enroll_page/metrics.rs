//! The page's counters, for the operator's Prometheus registry. Labels are bounded: the
//! refusal cause is one of [`super::Refusal::cause`]'s values; no user, link or account.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    pub cause: &'static str,
}

/// Counters of what the page did. Cloning shares the counters.
#[derive(Clone, Debug, Default)]
pub struct PageMetrics {
    /// A valid link's start page was shown.
    pub links_opened: Counter,
    /// A pending device was created for a page session.
    pub devices_created: Counter,
    /// A device was enabled: a person enrolled.
    pub enrolled: Counter,
    /// A pending device of a page session was deleted (abandoned, cancelled, too many
    /// wrong codes).
    pub devices_deleted: Counter,
    /// Requests refused, by cause.
    pub refused: Family<CauseLabels, Counter>,
}

impl PageMetrics {
    /// Registers every counter under `enrollment_page_` in `registry` (the operator's,
    /// prefixed `mfa_operator`).
    pub fn register(&self, registry: &mut Registry) {
        let page = registry.sub_registry_with_prefix("enrollment_page");
        page.register("links_opened", "Enrollment links whose start page was shown", self.links_opened.clone());
        page.register(
            "devices_created",
            "Pending virtual MFA devices created for enrollment page sessions",
            self.devices_created.clone(),
        );
        page.register("enrolled", "Virtual MFA devices enabled through the enrollment page", self.enrolled.clone());
        page.register(
            "devices_deleted",
            "Pending devices of enrollment page sessions deleted (abandoned, cancelled, too many wrong codes)",
            self.devices_deleted.clone(),
        );
        page.register("refused", "Enrollment page requests refused, by cause", self.refused.clone());
    }

    pub fn count_refusal(&self, cause: &'static str) {
        self.refused.get_or_create(&CauseLabels { cause }).inc();
    }

    /// Refusals of `cause` so far.
    pub fn refusals(&self, cause: &'static str) -> u64 {
        self.refused.get_or_create(&CauseLabels { cause }).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_in_the_exposition() {
        let metrics = PageMetrics::default();
        let mut registry = Registry::with_prefix("mfa_operator");
        metrics.register(&mut registry);
        metrics.links_opened.inc();
        metrics.count_refusal("link_used");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for expected in [
            "mfa_operator_enrollment_page_links_opened_total 1",
            r#"mfa_operator_enrollment_page_refused_total{cause="link_used"} 1"#,
            "mfa_operator_enrollment_page_enrolled_total 0",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
        assert_eq!(metrics.refusals("link_used"), 1);
    }
}
