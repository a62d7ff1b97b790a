//! Counts the HTTP requests the IAM client really sends, by operation, including the
//! SDK's retries: the figure that IAM's throttling buckets see. An SDK interceptor, so
//! nothing in the adapter can forget to count.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_iam::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_iam::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;

/// Requests sent, by IAM operation name. Cheap to clone; clones share the counts.
#[derive(Clone, Debug, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl CallCounter {
    /// A copy of the counts so far.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Total requests so far.
    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg.load::<Metadata>().map_or("unknown", |m| m.name()).to_owned();
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()).entry(operation).or_default() += 1;
        Ok(())
    }
}
