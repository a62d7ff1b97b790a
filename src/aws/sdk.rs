//! [`IamApi`] on `aws-sdk-iam`, configured only through the standard AWS configuration
//! chain (credentials, `AWS_REGION`, `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_IAM`): the
//! product has no test-only code path, the test bed just points the chain at moto.
//!
//! Throttling and 5xx answers are retried by the SDK's standard retry strategy (jittered
//! exponential backoff); the only loop here is the bounded wait for the credential report.
//! Seeds and authentication codes never reach a log line or an error message.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_iam::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_iam::types::{
    AssignmentStatusType, EntityType, ReportFormatType, ReportStateType, SummaryKeyType, Tag, UserDetail,
};
use aws_smithy_types::DateTime;
use jiff::Timestamp;
use tracing::debug;

use super::calls::CallCounter;
use super::{DeviceTags, IamApi, IamError, IamUser, MfaDevice, NewDevice, Seed, VirtualDevice, sanitize};

/// Largest page IAM serves for the listing calls used here (fewer calls per sweep).
const MAX_ITEMS: i32 = 1000;

/// Code of the error returned when the credential report is still not ready after
/// [`ReportPoll::attempts`] tries (IAM's own code for that state).
const REPORT_IN_PROGRESS: &str = "ReportInProgress";

/// Code of the errors for answers IAM should never give (missing required data).
const INVALID_RESPONSE: &str = "InvalidResponse";

/// Loads the shared AWS configuration from the standard chain, with an optional region
/// override (an `MfaEnrollment`'s `spec.aws.region`).
pub async fn load_sdk_config(region: Option<&str>) -> SdkConfig {
    // The SDK's defaults bound only the connect (3.1 s): a connection that never answers
    // would hold a reconcile, and the account's lock, for as long as it stays open. Every
    // IAM request (one page at most) finishes in well under a second when IAM is healthy.
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_millis(3100))
        .operation_attempt_timeout(IAM_ATTEMPT_TIMEOUT)
        .operation_timeout(IAM_OPERATION_TIMEOUT)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    loader.load().await
}

/// Longest wait for one IAM request (one attempt; the SDK retries a timed-out attempt).
pub const IAM_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one IAM call with all its retries.
pub const IAM_OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// How long to wait for IAM to finish generating the credential report: `attempts` calls
/// of `GenerateCredentialReport`, sleeping between them from `first_delay`, doubling up
/// to `max_delay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ReportPoll {
    attempts: u32,
    first_delay: Duration,
    max_delay: Duration,
}

impl Default for ReportPoll {
    /// Ten tries over about 14 s (0.25 + 0.5 + 1 + 2 × 6 s of sleep). IAM usually
    /// finishes within seconds; a report generated in the last four hours is reused.
    fn default() -> Self {
        Self { attempts: 10, first_delay: Duration::from_millis(250), max_delay: Duration::from_secs(2) }
    }
}

/// IAM through the AWS SDK.
#[derive(Clone)]
pub struct SdkIam {
    client: aws_sdk_iam::Client,
    report_poll: ReportPoll,
    calls: CallCounter,
}

/// Never prints the client: its configuration holds credential providers (an AssumeRole
/// provider carries the binding's ExternalId).
impl std::fmt::Debug for SdkIam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdkIam").field("calls", &self.calls).finish_non_exhaustive()
    }
}

impl SdkIam {
    pub fn new(config: &SdkConfig) -> Self {
        Self::from_client(aws_sdk_iam::Client::new(config))
    }

    /// Like [`SdkIam::new`], counting requests into a shared counter (one per operator,
    /// whatever the number of accounts).
    pub fn with_counter(config: &SdkConfig, calls: CallCounter) -> Self {
        Self::wrap(aws_sdk_iam::Client::new(config), calls)
    }

    /// Wraps an existing client (tests build one over mocked responses), adding a request
    /// counter of its own.
    pub fn from_client(client: aws_sdk_iam::Client) -> Self {
        Self::wrap(client, CallCounter::default())
    }

    fn wrap(client: aws_sdk_iam::Client, calls: CallCounter) -> Self {
        let config = client.config().to_builder().interceptor(calls.clone()).interceptor(FenceEveryAttempt).build();
        Self { client: aws_sdk_iam::Client::from_conf(config), report_poll: ReportPoll::default(), calls }
    }

    /// Requests this client has sent, by operation (retries included).
    pub fn calls(&self) -> &CallCounter {
        &self.calls
    }

    /// Calls `GenerateCredentialReport` until the report is complete, then fetches it.
    /// Bounded by [`ReportPoll`]; `ReportInProgress`, `ReportNotPresent` and
    /// `ReportExpired` from `GetCredentialReport` (a report replaced or expiring between
    /// the two calls) count as "not ready yet".
    async fn complete_credential_report(&self) -> Result<Vec<u8>, IamError> {
        const GENERATE: &str = "GenerateCredentialReport";
        const GET: &str = "GetCredentialReport";
        let poll = self.report_poll;
        let mut delay = poll.first_delay;
        for attempt in 1..=poll.attempts {
            let state = self.client.generate_credential_report().send().await.map_err(|e| map_err(GENERATE, e))?.state;
            debug!(operation = GENERATE, attempt, state = ?state, "credential report state");
            if state == Some(ReportStateType::Complete) {
                match self.client.get_credential_report().send().await {
                    Ok(report) => return report_csv(report),
                    Err(e) if is_report_not_ready(e.code()) => {
                        debug!(operation = GET, attempt, code = ?e.code(), "credential report not ready");
                    }
                    Err(e) => return Err(map_err(GET, e)),
                }
            }
            if attempt < poll.attempts {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(poll.max_delay);
            }
        }
        Err(IamError::Service {
            operation: GENERATE,
            code: REPORT_IN_PROGRESS.to_owned(),
            message: format!("the credential report was not ready after {} tries; try again later", poll.attempts),
        })
    }
}

/// The id of the AWS account `config`'s credentials reach (STS `GetCallerIdentity`,
/// which needs no permission).
pub async fn caller_account(config: &SdkConfig) -> Result<String, IamError> {
    let answer = aws_sdk_sts::Client::new(config)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| map_err("GetCallerIdentity", e))?;
    answer.account.ok_or_else(|| IamError::Transport {
        operation: "GetCallerIdentity",
        message: "STS answered without an account id".into(),
    })
}

/// The IAM writes fenced by the leader lease.
const FENCED_WRITES: [&str; 3] = ["CreateVirtualMFADevice", "DeleteVirtualMFADevice", "EnableMFADevice"];

/// Checks the lease fence before every attempt of a write, the SDK's retries included (a
/// call may retry for up to [`IAM_OPERATION_TIMEOUT`]), not only before the call.
#[derive(Debug)]
struct FenceEveryAttempt;

impl aws_sdk_iam::config::Intercept for FenceEveryAttempt {
    fn name(&self) -> &'static str {
        "FenceEveryAttempt"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_sdk_iam::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_sdk_iam::config::RuntimeComponents,
        cfg: &mut aws_sdk_iam::config::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let operation = cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>().map(|m| m.name());
        match operation.and_then(|op| FENCED_WRITES.iter().find(|w| **w == op)) {
            Some(write) => crate::leader::fence().check(write).map_err(Into::into),
            None => Ok(()),
        }
    }
}

fn is_report_not_ready(code: Option<&str>) -> bool {
    matches!(code, Some("ReportInProgress" | "ReportNotPresent" | "ReportExpired"))
}

/// Maps any SDK error to an [`IamError`] with a sanitised message.
fn map_err<E>(operation: &'static str, err: SdkError<E>) -> IamError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    map_err_redacting(operation, err, &[])
}

/// Like [`map_err`], and also removes every occurrence of `secrets` from the message
/// (AWS echoes rejected parameter values in some validation messages).
fn map_err_redacting<E>(operation: &'static str, err: SdkError<E>, secrets: &[&str]) -> IamError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let redact = |text: &str| {
        secrets
            .iter()
            .filter(|secret| !secret.is_empty())
            .fold(text.to_owned(), |text, secret| text.replace(secret, "<redacted>"))
    };
    match err.code() {
        Some(code) => {
            let message = err.message().map(redact);
            IamError::from_code(operation, Some(code), message.as_deref())
        }
        // No answer from IAM: keep the whole chain of causes, sanitised.
        None => IamError::from_code(operation, None, Some(&redact(&DisplayErrorContext(&err).to_string()))),
    }
}

/// An answer IAM should never give (a required member missing or malformed).
fn invalid_response(operation: &'static str, message: impl Into<String>) -> IamError {
    IamError::Service { operation, code: INVALID_RESPONSE.to_owned(), message: message.into() }
}

/// The SDK's date-time as a [`Timestamp`]; `None` only outside jiff's range (years
/// -9999..=9999), which IAM never returns.
fn timestamp(date: &DateTime) -> Option<Timestamp> {
    Timestamp::new(date.secs(), i32::try_from(date.subsec_nanos()).ok()?).ok()
}

fn iam_user(operation: &'static str, detail: UserDetail) -> Result<IamUser, IamError> {
    let UserDetail { user_name, path, arn, group_list, tags, .. } = detail;
    let name = user_name
        .filter(|name| !name.is_empty())
        .ok_or_else(|| invalid_response(operation, "a user without UserName"))?;
    Ok(IamUser {
        name,
        path: path.unwrap_or_default(),
        arn: arn.unwrap_or_default(),
        groups: group_list.unwrap_or_default(),
        tags: tags.unwrap_or_default().into_iter().map(|tag| (tag.key, tag.value)).collect(),
    })
}

/// The CSV bytes of a credential report.
fn report_csv(
    report: aws_sdk_iam::operation::get_credential_report::GetCredentialReportOutput,
) -> Result<Vec<u8>, IamError> {
    const OP: &str = "GetCredentialReport";
    if let Some(format) = &report.report_format
        && *format != ReportFormatType::TextCsv
    {
        return Err(invalid_response(OP, format!("unexpected report format {}", sanitize(format.as_str()))));
    }
    report.content.map(|content| content.into_inner()).ok_or_else(|| invalid_response(OP, "the report has no Content"))
}

/// Users with a console password in a credential report: the rows whose
/// `password_enabled` column is `true`, the `<root_account>` row excluded. Columns are
/// found by name in the header row.
fn console_users_in_report(csv: &[u8]) -> Result<BTreeSet<String>, IamError> {
    const OP: &str = "GetCredentialReport";
    let malformed =
        |e: csv::Error| invalid_response(OP, format!("malformed credential report: {}", sanitize(&e.to_string())));
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(csv);
    let headers = reader.headers().map_err(malformed)?;
    let column = |name: &str| {
        headers
            .iter()
            .position(|header| header.trim() == name)
            .ok_or_else(|| invalid_response(OP, format!("the credential report has no {name} column")))
    };
    let (user_col, password_col) = (column("user")?, column("password_enabled")?);
    let mut users = BTreeSet::new();
    for record in reader.records() {
        let record = record.map_err(malformed)?;
        let (Some(user), Some(password)) = (record.get(user_col), record.get(password_col)) else {
            continue;
        };
        if user != "<root_account>" && password.trim().eq_ignore_ascii_case("true") {
            users.insert(user.to_owned());
        }
    }
    Ok(users)
}

/// The base32 seed of a just-created device. Never echoes the bytes in an error.
fn seed_from_blob(operation: &'static str, blob: Option<aws_smithy_types::Blob>) -> Result<Seed, IamError> {
    let bytes = blob
        .map(|blob| blob.into_inner())
        .ok_or_else(|| invalid_response(operation, "the device has no Base32StringSeed"))?;
    let text = String::from_utf8(bytes).map_err(|_| invalid_response(operation, "Base32StringSeed is not text"))?;
    let text = text.trim_end_matches(['\r', '\n']);
    if text.is_empty() {
        return Err(invalid_response(operation, "Base32StringSeed is empty"));
    }
    if !text.bytes().all(|b| matches!(b, b'A'..=b'Z' | b'a'..=b'z' | b'2'..=b'7' | b'=')) {
        return Err(invalid_response(operation, "Base32StringSeed is not base32"));
    }
    Ok(Seed::new(text))
}

impl IamApi for SdkIam {
    fn read_concurrency(&self) -> usize {
        if self.calls.calm_for(super::CALM_BEFORE_CONCURRENCY) { super::READ_CONCURRENCY } else { 1 }
    }

    async fn list_users(&self) -> Result<Vec<IamUser>, IamError> {
        const OP: &str = "GetAccountAuthorizationDetails";
        let mut pages = self
            .client
            .get_account_authorization_details()
            .filter(EntityType::User)
            .into_paginator()
            .page_size(MAX_ITEMS)
            .send();
        let mut users = Vec::new();
        let mut page_count = 0_u32;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_err(OP, e))?;
            page_count += 1;
            for detail in page.user_detail_list.unwrap_or_default() {
                users.push(iam_user(OP, detail)?);
            }
        }
        debug!(operation = OP, pages = page_count, users = users.len(), "listed users");
        Ok(users)
    }

    async fn list_virtual_mfa_devices(&self) -> Result<Vec<VirtualDevice>, IamError> {
        const OP: &str = "ListVirtualMFADevices";
        let devices = self
            .client
            .list_virtual_mfa_devices()
            .assignment_status(AssignmentStatusType::Any)
            .into_paginator()
            .page_size(MAX_ITEMS)
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| map_err(OP, e))?;
        debug!(operation = OP, devices = devices.len(), "listed virtual MFA devices");
        Ok(devices
            .into_iter()
            .map(|device| VirtualDevice {
                serial: device.serial_number,
                user: device.user.map(|user| user.user_name),
                enabled_at: device.enable_date.as_ref().and_then(timestamp),
            })
            .collect())
    }

    async fn list_groups(&self) -> Result<BTreeSet<String>, IamError> {
        const OP: &str = "ListGroups";
        let groups = self
            .client
            .list_groups()
            .into_paginator()
            .page_size(MAX_ITEMS)
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| map_err(OP, e))?;
        debug!(operation = OP, groups = groups.len(), "listed groups");
        Ok(groups.into_iter().map(|g| g.group_name).collect())
    }

    async fn list_mfa_devices(&self, user: &str) -> Result<Vec<MfaDevice>, IamError> {
        const OP: &str = "ListMFADevices";
        let devices = self
            .client
            .list_mfa_devices()
            .user_name(user)
            .into_paginator()
            .page_size(MAX_ITEMS)
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| map_err(OP, e))?;
        debug!(operation = OP, devices = devices.len(), "listed MFA devices of a user");
        Ok(devices
            .into_iter()
            .map(|device| MfaDevice { enabled_at: timestamp(&device.enable_date), serial: device.serial_number })
            .collect())
    }

    async fn console_users(&self) -> Result<BTreeSet<String>, IamError> {
        let csv = self.complete_credential_report().await?;
        let users = console_users_in_report(&csv)?;
        debug!(operation = "GetCredentialReport", console_users = users.len(), "read credential report");
        Ok(users)
    }

    async fn root_account_mfa_enabled(&self) -> Result<bool, IamError> {
        const OP: &str = "GetAccountSummary";
        let summary = self.client.get_account_summary().send().await.map_err(|e| map_err(OP, e))?;
        Ok(summary.summary_map.as_ref().and_then(|map| map.get(&SummaryKeyType::AccountMfaEnabled)) == Some(&1))
    }

    async fn create_virtual_mfa_device(
        &self,
        path: &str,
        name: &str,
        tags: &DeviceTags,
    ) -> Result<NewDevice, IamError> {
        const OP: &str = "CreateVirtualMFADevice";
        crate::leader::fence().check(OP)?;
        let tags = tags
            .iter()
            .map(|(key, value)| {
                Tag::builder().key(key).value(value).build().map_err(|e| IamError::Service {
                    operation: OP,
                    code: "InvalidInput".to_owned(),
                    message: sanitize(&e.to_string()),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = self
            .client
            .create_virtual_mfa_device()
            .path(path)
            .virtual_mfa_device_name(name)
            .set_tags((!tags.is_empty()).then_some(tags))
            .send()
            .await
            .map_err(|e| map_err(OP, e))?;
        let device =
            output.virtual_mfa_device.ok_or_else(|| invalid_response(OP, "no VirtualMFADevice in the answer"))?;
        let seed = seed_from_blob(OP, device.base32_string_seed)?;
        debug!(operation = OP, serial = %device.serial_number, "created virtual MFA device");
        Ok(NewDevice { serial: device.serial_number, seed })
    }

    async fn delete_virtual_mfa_device(&self, serial: &str) -> Result<(), IamError> {
        const OP: &str = "DeleteVirtualMFADevice";
        crate::leader::fence().check(OP)?;
        self.client.delete_virtual_mfa_device().serial_number(serial).send().await.map_err(|e| map_err(OP, e))?;
        debug!(operation = OP, serial, "deleted virtual MFA device");
        Ok(())
    }

    async fn enable_mfa_device(&self, user: &str, serial: &str, code1: &str, code2: &str) -> Result<(), IamError> {
        const OP: &str = "EnableMFADevice";
        crate::leader::fence().check(OP)?;
        self.client
            .enable_mfa_device()
            .user_name(user)
            .serial_number(serial)
            .authentication_code1(code1)
            .authentication_code2(code2)
            .send()
            .await
            .map_err(|e| map_err_redacting(OP, e, &[code1, code2]))?;
        debug!(operation = OP, user, serial, "enabled MFA device");
        Ok(())
    }
}

#[cfg(test)]
#[path = "sdk_tests.rs"]
mod tests;
