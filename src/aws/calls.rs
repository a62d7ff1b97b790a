//! Counts the HTTP requests the IAM client really sends, by operation and outcome,
//! including the SDK's retries: the figure that IAM's throttling buckets see. An SDK
//! interceptor, so nothing in the adapter can forget to count.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_iam::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_iam::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    Success,
    /// IAM refused the request for rate (`Throttling`); the SDK backs off and retries.
    Throttled,
    /// Any other 4xx answer (AccessDenied, NoSuchEntity, ...).
    ClientError,
    /// A 5xx answer.
    ServerError,
    /// No answer at all (connection refused or reset, timeout).
    TransportError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Throttled => "throttled",
            Self::ClientError => "client_error",
            Self::ServerError => "server_error",
            Self::TransportError => "transport_error",
        }
    }
}

/// Called for every request with its operation and outcome (the metrics hook).
pub type Observer = Arc<dyn Fn(&str, Outcome) + Send + Sync>;

/// Requests sent, by IAM operation name. Cheap to clone; clones share the counts.
#[derive(Clone, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    outcomes: Arc<Mutex<BTreeMap<(String, Outcome), u64>>>,
    /// When IAM last pushed back (throttled, 5xx, or no answer).
    trouble: Arc<Mutex<Option<Instant>>>,
    observer: Option<Observer>,
}

impl fmt::Debug for CallCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallCounter").field("counts", &self.snapshot()).finish_non_exhaustive()
    }
}

impl CallCounter {
    /// A counter that also reports every request to `observer`.
    pub fn observed(observer: Observer) -> Self {
        Self { observer: Some(observer), ..Self::default() }
    }

    /// Requests so far, by operation.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Requests so far, by operation and outcome.
    pub fn outcomes(&self) -> BTreeMap<(String, Outcome), u64> {
        self.outcomes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether IAM has answered every request normally for at least `period`.
    pub fn calm_for(&self, period: Duration) -> bool {
        self.trouble.lock().unwrap_or_else(|p| p.into_inner()).is_none_or(|at| at.elapsed() >= period)
    }

    /// Total requests so far.
    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    fn record(&self, operation: &str, outcome: Outcome) {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()).entry(operation.to_owned()).or_default() += 1;
        *self.outcomes.lock().unwrap_or_else(|p| p.into_inner()).entry((operation.to_owned(), outcome)).or_default() +=
            1;
        if matches!(outcome, Outcome::Throttled | Outcome::ServerError | Outcome::TransportError) {
            *self.trouble.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
        if let Some(observer) = &self.observer {
            observer(operation, outcome);
        }
    }
}

/// IAM answers throttling with HTTP 400 and this error code in the body.
const THROTTLING_CODES: [&[u8]; 2] = [b"<Code>Throttling</Code>", b"<Code>RequestLimitExceeded</Code>"];

fn classify(status: Option<u16>, body: Option<&[u8]>) -> Outcome {
    match status {
        None => Outcome::TransportError,
        Some(200..=299) => Outcome::Success,
        Some(429) => Outcome::Throttled,
        Some(400..=499)
            if body.is_some_and(|b| THROTTLING_CODES.iter().any(|code| b.windows(code.len()).any(|w| w == *code))) =>
        {
            Outcome::Throttled
        }
        Some(400..=499) => Outcome::ClientError,
        Some(_) => Outcome::ServerError,
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    // Once per attempt, retries included, whether or not an answer came.
    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg.load::<Metadata>().map_or("unknown", |m| m.name());
        let response = context.response();
        let outcome = classify(response.map(|r| r.status().as_u16()), response.and_then(|r| r.body().bytes()));
        self.record(operation, outcome);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calm_until_iam_pushes_back() {
        let counter = CallCounter::default();
        assert!(counter.calm_for(Duration::from_secs(60)), "no request yet");
        counter.record("ListMFADevices", Outcome::Success);
        counter.record("ListMFADevices", Outcome::ClientError);
        assert!(counter.calm_for(Duration::from_secs(60)), "answers, even refusals, are calm");
        for trouble in [Outcome::Throttled, Outcome::ServerError, Outcome::TransportError] {
            let counter = CallCounter::default();
            counter.record("ListMFADevices", trouble);
            assert!(!counter.calm_for(Duration::from_secs(60)), "{trouble:?}");
            assert!(counter.calm_for(Duration::ZERO), "calm again once the period passed");
            let clone = counter.clone();
            assert!(!clone.calm_for(Duration::from_secs(60)), "clones share what they saw");
        }
    }

    #[test]
    fn outcomes_follow_status_and_error_code() {
        assert_eq!(classify(Some(200), None), Outcome::Success);
        assert_eq!(classify(Some(400), Some(b"<Error><Code>Throttling</Code></Error>")), Outcome::Throttled);
        assert_eq!(classify(Some(400), Some(b"<Error><Code>AccessDenied</Code></Error>")), Outcome::ClientError);
        assert_eq!(classify(Some(403), None), Outcome::ClientError);
        assert_eq!(classify(Some(429), None), Outcome::Throttled);
        assert_eq!(classify(Some(503), None), Outcome::ServerError);
        assert_eq!(classify(None, None), Outcome::TransportError);
    }

    #[test]
    fn observer_sees_every_request() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let counter = CallCounter::observed(Arc::new(move |op: &str, outcome| {
            sink.lock().expect("lock").push((op.to_owned(), outcome));
        }));
        counter.record("ListUsers", Outcome::Success);
        counter.record("ListUsers", Outcome::Throttled);
        assert_eq!(counter.total(), 2);
        assert_eq!(counter.outcomes().get(&("ListUsers".to_owned(), Outcome::Throttled)), Some(&1));
        assert_eq!(seen.lock().expect("lock").len(), 2);
    }
}
