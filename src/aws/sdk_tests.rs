//! The adapter over mocked SDK responses: paging, the error mapping for answers moto never
//! gives (throttling, AccessDenied, DeleteConflict, wrong codes, limits), the credential
//! report and the seed. Errors are served as IAM's XML error documents so they go through
//! the SDK's real deserialiser and retry classifier; no network.

use std::time::Duration;

use aws_sdk_iam::Client;
use aws_sdk_iam::config::retry::RetryConfig;
use aws_sdk_iam::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_iam::operation::create_virtual_mfa_device::CreateVirtualMfaDeviceOutput;
use aws_sdk_iam::operation::delete_virtual_mfa_device::DeleteVirtualMfaDeviceOutput;
use aws_sdk_iam::operation::enable_mfa_device::EnableMfaDeviceOutput;
use aws_sdk_iam::operation::generate_credential_report::GenerateCredentialReportOutput;
use aws_sdk_iam::operation::get_account_authorization_details::GetAccountAuthorizationDetailsOutput;
use aws_sdk_iam::operation::get_account_summary::GetAccountSummaryOutput;
use aws_sdk_iam::operation::get_credential_report::GetCredentialReportOutput;
use aws_sdk_iam::operation::list_mfa_devices::ListMfaDevicesOutput;
use aws_sdk_iam::operation::list_virtual_mfa_devices::ListVirtualMfaDevicesOutput;
use aws_sdk_iam::types::{
    AssignmentStatusType, EntityType, ReportFormatType, ReportStateType, SummaryKeyType, Tag, User, UserDetail,
    VirtualMfaDevice,
};
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};
use aws_smithy_types::{Blob, DateTime};

use super::*;

/// Attempts the mocked client makes per call (the SDK default is also 3), with backoffs
/// of a few milliseconds so retry tests stay fast.
const MAX_ATTEMPTS: u32 = 3;
const REQUEST_ID: &str = "3f2a9c1e-1b2c-4d5e-8f90-0123456789ab";
const ACCOUNT: &str = "123456789012";
/// A real-looking base32 seed (64 characters, as IAM hands out).
const SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

fn mocked(mode: RuleMode, rules: &[&Rule]) -> SdkIam {
    let interceptor = rules.iter().fold(MockResponseInterceptor::new().rule_mode(mode), |i, rule| i.with_rule(rule));
    let config = aws_sdk_iam::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDMOCKED", "mocked", None, None, "test"))
        .http_client(create_mock_http_client())
        .interceptor(interceptor)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(1))
                .with_max_backoff(Duration::from_millis(5)),
        )
        .build();
    SdkIam {
        report_poll: ReportPoll {
            attempts: 4,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        },
        ..SdkIam::from_client(Client::from_conf(config))
    }
}

/// IAM's XML error document (awsQuery protocol), with a request id in the envelope.
fn iam_error(code: &str, message: &str) -> String {
    format!(
        r#"<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>{REQUEST_ID}</RequestId></ErrorResponse>"#
    )
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build().unwrap()
}

fn user_detail(name: &str, groups: &[&str], tags: &[(&str, &str)]) -> UserDetail {
    let mut detail = UserDetail::builder()
        .user_name(name)
        .path("/staff/")
        .arn(format!("arn:aws:iam::{ACCOUNT}:user/staff/{name}"))
        .user_id(format!("AIDA{}", name.to_uppercase()));
    for group in groups {
        detail = detail.group_list(*group);
    }
    for (key, value) in tags {
        detail = detail.tags(tag(key, value));
    }
    detail.build()
}

fn gaad_page(users: Vec<UserDetail>, marker: Option<&str>) -> GetAccountAuthorizationDetailsOutput {
    GetAccountAuthorizationDetailsOutput::builder()
        .set_user_detail_list(Some(users))
        .is_truncated(marker.is_some())
        .set_marker(marker.map(str::to_owned))
        .build()
}

fn serial(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:mfa/mfa-operator/{name}")
}

fn iam_user_entity(name: &str) -> User {
    User::builder()
        .user_name(name)
        .path("/")
        .user_id(format!("AIDA{}", name.to_uppercase()))
        .arn(format!("arn:aws:iam::{ACCOUNT}:user/{name}"))
        .create_date(DateTime::from_secs(1_600_000_000))
        .build()
        .unwrap()
}

// ---- paging ----------------------------------------------------------------------------

#[tokio::test]
async fn list_users_follows_markers_over_three_pages_with_groups_and_tags() {
    let wants_users =
        |req: &aws_sdk_iam::operation::get_account_authorization_details::GetAccountAuthorizationDetailsInput| {
            req.filter() == [EntityType::User] && req.max_items() == Some(MAX_ITEMS)
        };
    let page1 = mock!(Client::get_account_authorization_details)
        .match_requests(move |req| wants_users(req) && req.marker().is_none())
        .then_output(|| {
            gaad_page(
                vec![
                    user_detail("alice", &["admins", "developers"], &[("team", "platform")]),
                    user_detail("bob", &[], &[]),
                ],
                Some("m1"),
            )
        });
    let page2 = mock!(Client::get_account_authorization_details)
        .match_requests(move |req| wants_users(req) && req.marker() == Some("m1"))
        .then_output(|| gaad_page(vec![user_detail("carol", &["developers"], &[])], Some("m2")));
    let page3 = mock!(Client::get_account_authorization_details)
        .match_requests(move |req| wants_users(req) && req.marker() == Some("m2"))
        .then_output(|| gaad_page(vec![user_detail("dave", &[], &[("mfa-exempt", "true"), ("team", "data")])], None));
    let iam = mocked(RuleMode::MatchAny, &[&page1, &page2, &page3]);

    let users = iam.list_users().await.unwrap();

    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob", "carol", "dave"]);
    assert_eq!(
        users[0],
        IamUser {
            name: "alice".into(),
            path: "/staff/".into(),
            arn: format!("arn:aws:iam::{ACCOUNT}:user/staff/alice"),
            groups: vec!["admins".into(), "developers".into()],
            tags: [("team".to_owned(), "platform".to_owned())].into(),
        }
    );
    assert!(users[1].groups.is_empty() && users[1].tags.is_empty());
    assert_eq!(users[3].tags.get("mfa-exempt").map(String::as_str), Some("true"));
    // One call per page, no more.
    assert_eq!([page1.num_calls(), page2.num_calls(), page3.num_calls()], [1, 1, 1]);
    // The client's own request counter sees the same three requests.
    assert_eq!(iam.calls().snapshot(), [("GetAccountAuthorizationDetails".to_owned(), 3)].into());
}

#[tokio::test]
async fn list_users_rejects_a_user_without_a_name() {
    let page = mock!(Client::get_account_authorization_details)
        .then_output(|| gaad_page(vec![UserDetail::builder().path("/").build()], None));
    let err = mocked(RuleMode::Sequential, &[&page]).list_users().await.unwrap_err();
    assert!(
        matches!(&err, IamError::Service { operation: "GetAccountAuthorizationDetails", code, .. } if code == "InvalidResponse"),
        "{err:?}"
    );
}

#[tokio::test]
async fn list_virtual_mfa_devices_reads_both_pages_with_assignment_any() {
    let page1 = mock!(Client::list_virtual_mfa_devices)
        .match_requests(|req| req.assignment_status() == Some(&AssignmentStatusType::Any) && req.marker().is_none())
        .then_output(|| {
            ListVirtualMfaDevicesOutput::builder()
                .virtual_mfa_devices(
                    VirtualMfaDevice::builder()
                        .serial_number(serial("alice"))
                        .user(iam_user_entity("alice"))
                        .enable_date(DateTime::from_secs_and_nanos(1_700_000_000, 250_000_000))
                        .build()
                        .unwrap(),
                )
                .is_truncated(true)
                .marker("1")
                .build()
                .unwrap()
        });
    let page2 = mock!(Client::list_virtual_mfa_devices)
        .match_requests(|req| req.assignment_status() == Some(&AssignmentStatusType::Any) && req.marker() == Some("1"))
        .then_output(|| {
            ListVirtualMfaDevicesOutput::builder()
                .virtual_mfa_devices(VirtualMfaDevice::builder().serial_number(serial("bob")).build().unwrap())
                .is_truncated(false)
                .build()
                .unwrap()
        });
    let iam = mocked(RuleMode::MatchAny, &[&page1, &page2]);

    let devices = iam.list_virtual_mfa_devices().await.unwrap();

    assert_eq!(
        devices,
        [
            VirtualDevice {
                serial: serial("alice"),
                user: Some("alice".into()),
                enabled_at: Some(Timestamp::new(1_700_000_000, 250_000_000).unwrap()),
            },
            VirtualDevice { serial: serial("bob"), user: None, enabled_at: None },
        ]
    );
    assert_eq!([page1.num_calls(), page2.num_calls()], [1, 1]);
}

#[tokio::test]
async fn list_mfa_devices_reads_both_pages_of_one_user() {
    let device = |serial: &str, secs: i64| {
        aws_sdk_iam::types::MfaDevice::builder()
            .user_name("alice")
            .serial_number(serial)
            .enable_date(DateTime::from_secs(secs))
            .build()
            .unwrap()
    };
    let page1 = mock!(Client::list_mfa_devices)
        .match_requests(|req| req.user_name() == Some("alice") && req.marker().is_none())
        .then_output(move || {
            ListMfaDevicesOutput::builder()
                .mfa_devices(device("arn:aws:iam::123456789012:mfa/alice-phone", 1_700_000_000))
                .is_truncated(true)
                .marker("next")
                .build()
                .unwrap()
        });
    let page2 = mock!(Client::list_mfa_devices)
        .match_requests(|req| req.user_name() == Some("alice") && req.marker() == Some("next"))
        .then_output(move || {
            ListMfaDevicesOutput::builder()
                .mfa_devices(device("arn:aws:iam::123456789012:u2f/user/alice/key", 1_700_000_100))
                .is_truncated(false)
                .build()
                .unwrap()
        });
    let iam = mocked(RuleMode::MatchAny, &[&page1, &page2]);

    let devices = iam.list_mfa_devices("alice").await.unwrap();

    assert_eq!(
        devices,
        [
            MfaDevice {
                serial: "arn:aws:iam::123456789012:mfa/alice-phone".into(),
                enabled_at: Some(Timestamp::from_second(1_700_000_000).unwrap()),
            },
            MfaDevice {
                serial: "arn:aws:iam::123456789012:u2f/user/alice/key".into(),
                enabled_at: Some(Timestamp::from_second(1_700_000_100).unwrap()),
            },
        ]
    );
    assert_eq!([page1.num_calls(), page2.num_calls()], [1, 1]);
}

// ---- errors moto never gives -----------------------------------------------------------

#[tokio::test]
async fn throttling_is_retried_by_the_sdk_then_reported_as_throttled() {
    let rule = mock!(Client::list_mfa_devices)
        .sequence()
        .http_status(400, Some(iam_error("Throttling", "Rate exceeded")))
        .times(MAX_ATTEMPTS as usize)
        .build();
    let iam = mocked(RuleMode::Sequential, &[&rule]);

    let err = iam.list_mfa_devices("alice").await.unwrap_err();

    assert_eq!(err, IamError::Throttled { operation: "ListMFADevices" });
    assert!(err.is_transient());
    assert_eq!(rule.num_calls(), MAX_ATTEMPTS as usize, "the SDK retried");
    assert_eq!(
        iam.calls().total(),
        u64::from(MAX_ATTEMPTS),
        "every retry is a request IAM counts against its throttle"
    );
    assert_eq!(
        iam.calls().outcomes(),
        [(("ListMFADevices".to_owned(), crate::aws::Outcome::Throttled), u64::from(MAX_ATTEMPTS))].into(),
        "the throttles are told apart from other errors"
    );
}

#[tokio::test]
async fn throttling_then_success_is_invisible_to_the_caller() {
    let rule = mock!(Client::get_account_summary)
        .sequence()
        .http_status(400, Some(iam_error("Throttling", "Rate exceeded")))
        .http_status(503, Some(iam_error("ServiceUnavailable", "try again")))
        .output(|| GetAccountSummaryOutput::builder().summary_map(SummaryKeyType::AccountMfaEnabled, 1).build())
        .build();
    let iam = mocked(RuleMode::Sequential, &[&rule]);

    assert!(iam.root_account_mfa_enabled().await.unwrap());
    assert_eq!(rule.num_calls(), 3);
}

#[tokio::test]
async fn server_failure_after_retries_is_a_transient_service_error() {
    let rule = mock!(Client::delete_virtual_mfa_device)
        .sequence()
        .http_status(500, Some(iam_error("ServiceFailure", "internal error")))
        .times(MAX_ATTEMPTS as usize)
        .build();
    let iam = mocked(RuleMode::Sequential, &[&rule]);

    let err = iam.delete_virtual_mfa_device(&serial("alice")).await.unwrap_err();

    assert!(
        matches!(&err, IamError::Service { operation: "DeleteVirtualMFADevice", code, .. } if code == "ServiceFailure"),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(rule.num_calls(), MAX_ATTEMPTS as usize);
}

#[tokio::test]
async fn access_denied_keeps_the_action_and_drops_the_request_id() {
    let message = format!(
        "User: arn:aws:sts::{ACCOUNT}:assumed-role/mfa-operator/session is not authorized to \
         perform: iam:CreateVirtualMFADevice on resource: arn:aws:iam::{ACCOUNT}:mfa/mfa-operator/alice \
         (Request ID: {REQUEST_ID})"
    );
    let rule = mock!(Client::create_virtual_mfa_device)
        .sequence()
        .http_status(403, Some(iam_error("AccessDenied", &message)))
        .build();
    let iam = mocked(RuleMode::Sequential, &[&rule]);

    let err = iam.create_virtual_mfa_device("/mfa-operator/", "alice", &DeviceTags::new()).await.unwrap_err();

    let IamError::AccessDenied { operation, message } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*operation, "CreateVirtualMFADevice");
    assert!(message.contains("iam:CreateVirtualMFADevice"), "{message}");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(REQUEST_ID), "{text}");
        assert!(!text.contains("3f2a9c1e"), "{text}");
    }
    assert!(!err.is_transient());
    assert_eq!(rule.num_calls(), 1, "AccessDenied is not retried");
}

#[tokio::test]
async fn delete_of_an_assigned_device_is_a_delete_conflict() {
    let rule = mock!(Client::delete_virtual_mfa_device)
        .match_requests(|req| req.serial_number() == Some(serial("alice").as_str()))
        .sequence()
        .http_status(
            409,
            Some(iam_error("DeleteConflict", "MFA Device is still in use by arn:aws:iam::123456789012:user/alice")),
        )
        .build();
    let iam = mocked(RuleMode::Sequential, &[&rule]);

    let err = iam.delete_virtual_mfa_device(&serial("alice")).await.unwrap_err();

    assert!(
        matches!(&err, IamError::DeleteConflict { operation: "DeleteVirtualMFADevice", message } if message.contains("still in use")),
        "{err:?}"
    );
}

#[tokio::test]
async fn wrong_codes_are_invalid_authentication_code_without_the_codes() {
    let (code1, code2) = ("493107", "825114");
    let rule = mock!(Client::enable_mfa_device)
        .match_requests(move |req| {
            req.authentication_code1() == Some(code1) && req.authentication_code2() == Some(code2)
        })
        .sequence()
        .http_status(
            403,
            Some(iam_error(
                "InvalidAuthenticationCode",
                &format!("Authentication codes {code1} and {code2} are not valid."),
            )),
        )
        .build();
    let iam = mocked(RuleMode::Sequential, &[&rule]);

    let err = iam.enable_mfa_device("alice", &serial("alice"), code1, code2).await.unwrap_err();

    assert_eq!(err, IamError::InvalidAuthenticationCode { operation: "EnableMFADevice" });
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(code1) && !text.contains(code2), "{text}");
    }
}

#[tokio::test]
async fn codes_echoed_by_other_errors_are_redacted() {
    // AWS validation messages quote the rejected value.
    let (code1, code2) = ("49310", "825114");
    let rule = mock!(Client::enable_mfa_device)
        .sequence()
        .http_status(
            400,
            Some(iam_error(
                "ValidationError",
                &format!(
                    "2 validation errors detected: Value '{code1}' at 'authenticationCode1' failed to \
                     satisfy constraint: Member must have length greater than or equal to 6; Value \
                     '{code2}' at 'authenticationCode2' failed to satisfy constraint"
                ),
            )),
        )
        .build();
    let iam = mocked(RuleMode::Sequential, &[&rule]);

    let err = iam.enable_mfa_device("alice", &serial("alice"), code1, code2).await.unwrap_err();

    assert!(
        matches!(&err, IamError::Service { code, message, .. } if code == "ValidationError" && message.contains("authenticationCode1")),
        "{err:?}"
    );
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(code1) && !text.contains(code2), "{text}");
    }
}

#[tokio::test]
async fn create_of_an_existing_name_is_entity_already_exists() {
    let rule = mock!(Client::create_virtual_mfa_device)
        .sequence()
        .http_status(
            409,
            Some(iam_error("EntityAlreadyExists", "MFADevice entity at the same path and name already exists.")),
        )
        .build();
    let err = mocked(RuleMode::Sequential, &[&rule])
        .create_virtual_mfa_device("/mfa-operator/", "alice", &DeviceTags::new())
        .await
        .unwrap_err();
    assert!(matches!(&err, IamError::EntityAlreadyExists { operation: "CreateVirtualMFADevice", .. }), "{err:?}");
}

#[tokio::test]
async fn unknown_user_is_no_such_entity() {
    let rule = mock!(Client::list_mfa_devices)
        .sequence()
        .http_status(404, Some(iam_error("NoSuchEntity", "The user with name ghost cannot be found.")))
        .build();
    let err = mocked(RuleMode::Sequential, &[&rule]).list_mfa_devices("ghost").await.unwrap_err();
    assert_eq!(
        err,
        IamError::NoSuchEntity {
            operation: "ListMFADevices",
            message: "The user with name ghost cannot be found.".into(),
        }
    );
}

#[tokio::test]
async fn too_many_devices_is_limit_exceeded() {
    let rule = mock!(Client::enable_mfa_device)
        .sequence()
        .http_status(409, Some(iam_error("LimitExceeded", "Cannot exceed quota for MfaDevicesPerUser: 8")))
        .build();
    let err = mocked(RuleMode::Sequential, &[&rule])
        .enable_mfa_device("alice", &serial("alice"), "123456", "654321")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, IamError::LimitExceeded { operation: "EnableMFADevice", message } if message.contains("MfaDevicesPerUser")),
        "{err:?}"
    );
    assert!(!err.is_transient());
}

// ---- credential report -----------------------------------------------------------------

const REPORT_HEADER: &str = "user,arn,user_creation_time,password_enabled,password_last_used,\
password_last_changed,password_next_rotation,mfa_active,access_key_1_active,\
access_key_1_last_rotated,access_key_1_last_used_date,access_key_1_last_used_region,\
access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,\
access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,\
cert_1_active,cert_1_last_rotated,cert_2_active,cert_2_last_rotated";

fn report_row(user: &str, password_enabled: &str) -> String {
    let quoted = if user.contains(',') { format!("\"{user}\"") } else { user.to_owned() };
    let arn = if user == "<root_account>" {
        format!("arn:aws:iam::{ACCOUNT}:root")
    } else {
        format!("\"arn:aws:iam::{ACCOUNT}:user/{user}\"")
    };
    format!(
        "{quoted},{arn},2024-01-02T03:04:05+00:00,{password_enabled},N/A,N/A,N/A,false,false,\
         N/A,N/A,N/A,N/A,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A"
    )
}

fn report() -> String {
    [
        REPORT_HEADER.to_owned(),
        report_row("<root_account>", "not_supported"),
        report_row("alice", "true"),
        report_row("ops,admin", "true"),
        report_row("bob", "false"),
        report_row("robot", "N/A"),
    ]
    .join("\n")
}

fn report_output() -> GetCredentialReportOutput {
    GetCredentialReportOutput::builder()
        .content(Blob::new(report()))
        .report_format(ReportFormatType::TextCsv)
        .generated_time(DateTime::from_secs(1_700_000_000))
        .build()
}

fn generated(state: ReportStateType) -> GenerateCredentialReportOutput {
    GenerateCredentialReportOutput::builder().state(state).build()
}

fn expected_console_users() -> BTreeSet<String> {
    ["alice".to_owned(), "ops,admin".to_owned()].into()
}

#[test]
fn report_parsing_keeps_password_users_only() {
    assert_eq!(console_users_in_report(report().as_bytes()).unwrap(), expected_console_users());
}

#[test]
fn report_parsing_finds_columns_by_name_and_accepts_crlf() {
    let csv = "arn,password_enabled,user\r\narn:x,true,\"a,b\"\r\narn:y,false,c\r\n";
    assert_eq!(console_users_in_report(csv.as_bytes()).unwrap(), ["a,b".to_owned()].into());
}

#[test]
fn report_without_the_password_column_is_an_error() {
    let err = console_users_in_report(b"user,arn\nalice,arn:x\n").unwrap_err();
    assert!(
        matches!(&err, IamError::Service { code, message, .. } if code == "InvalidResponse" && message.contains("password_enabled")),
        "{err:?}"
    );
}

#[test]
fn report_with_a_short_row_is_an_error() {
    let csv = format!("{REPORT_HEADER}\nalice,true\n");
    assert!(console_users_in_report(csv.as_bytes()).is_err());
}

#[tokio::test]
async fn console_users_waits_for_the_report_to_complete() {
    let generate = mock!(Client::generate_credential_report)
        .sequence()
        .output(|| generated(ReportStateType::Started))
        .output(|| generated(ReportStateType::Inprogress))
        .output(|| generated(ReportStateType::Complete))
        .build();
    let get = mock!(Client::get_credential_report).then_output(report_output);
    let iam = mocked(RuleMode::MatchAny, &[&generate, &get]);

    assert_eq!(iam.console_users().await.unwrap(), expected_console_users());
    assert_eq!([generate.num_calls(), get.num_calls()], [3, 1]);
}

#[tokio::test]
async fn console_users_takes_two_calls_when_the_report_is_fresh() {
    let generate = mock!(Client::generate_credential_report).then_output(|| generated(ReportStateType::Complete));
    let get = mock!(Client::get_credential_report).then_output(report_output);
    let iam = mocked(RuleMode::MatchAny, &[&generate, &get]);

    assert_eq!(iam.console_users().await.unwrap(), expected_console_users());
    assert_eq!([generate.num_calls(), get.num_calls()], [1, 1]);
}

#[tokio::test]
async fn report_in_progress_or_not_present_on_get_polls_again() {
    let generate = mock!(Client::generate_credential_report)
        .sequence()
        .output(|| generated(ReportStateType::Complete))
        .repeatedly()
        .build();
    let get = mock!(Client::get_credential_report)
        .sequence()
        .http_status(404, Some(iam_error("ReportInProgress", "Report is being generated")))
        .http_status(410, Some(iam_error("ReportNotPresent", "Credential report not present")))
        .output(report_output)
        .build();
    let iam = mocked(RuleMode::MatchAny, &[&generate, &get]);

    assert_eq!(iam.console_users().await.unwrap(), expected_console_users());
    assert_eq!([generate.num_calls(), get.num_calls()], [3, 3]);
}

#[tokio::test]
async fn a_report_that_never_completes_is_a_bounded_transient_error() {
    let generate = mock!(Client::generate_credential_report)
        .sequence()
        .output(|| generated(ReportStateType::Inprogress))
        .repeatedly()
        .build();
    let get = mock!(Client::get_credential_report).then_output(report_output);
    let iam = mocked(RuleMode::MatchAny, &[&generate, &get]);

    let err = iam.console_users().await.unwrap_err();

    assert!(
        matches!(&err, IamError::Service { operation: "GenerateCredentialReport", code, message } if code == "ReportInProgress" && message.contains("not ready")),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!([generate.num_calls(), get.num_calls()], [4, 0]);
}

#[tokio::test]
async fn access_denied_on_the_report_is_reported_at_once() {
    let generate = mock!(Client::generate_credential_report).then_output(|| generated(ReportStateType::Complete));
    let get = mock!(Client::get_credential_report)
        .sequence()
        .http_status(403, Some(iam_error("AccessDenied", "User is not authorized to perform: iam:GetCredentialReport")))
        .build();
    let iam = mocked(RuleMode::MatchAny, &[&generate, &get]);

    let err = iam.console_users().await.unwrap_err();

    assert!(matches!(&err, IamError::AccessDenied { operation: "GetCredentialReport", .. }), "{err:?}");
    assert_eq!([generate.num_calls(), get.num_calls()], [1, 1]);
}

// ---- create, delete, enable ------------------------------------------------------------

#[tokio::test]
async fn create_sends_path_name_and_tags_and_returns_serial_and_seed() {
    let rule = mock!(Client::create_virtual_mfa_device)
        .match_requests(|req| {
            req.path() == Some("/mfa-operator/")
                && req.virtual_mfa_device_name() == Some("alice")
                && req.tags() == [tag("mfa-operator/enrollment", "default/staff"), tag("mfa-operator/user", "alice")]
        })
        .then_output(|| {
            CreateVirtualMfaDeviceOutput::builder()
                .virtual_mfa_device(
                    VirtualMfaDevice::builder()
                        .serial_number(serial("alice"))
                        .base32_string_seed(Blob::new(SEED))
                        .qr_code_png(Blob::new(vec![0x89, b'P', b'N', b'G']))
                        .build()
                        .unwrap(),
                )
                .build()
        });
    let iam = mocked(RuleMode::Sequential, &[&rule]);
    let tags: DeviceTags = [
        ("mfa-operator/user".to_owned(), "alice".to_owned()),
        ("mfa-operator/enrollment".to_owned(), "default/staff".to_owned()),
    ]
    .into();

    let device = iam.create_virtual_mfa_device("/mfa-operator/", "alice", &tags).await.unwrap();

    assert_eq!(device.serial, serial("alice"));
    assert_eq!(device.seed.expose(), SEED);
    let debug = format!("{device:?}");
    assert!(!debug.contains(SEED) && !debug.contains(&SEED[..16]), "{debug}");
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn create_without_tags_sends_no_tag_list() {
    let rule = mock!(Client::create_virtual_mfa_device).match_requests(|req| req.tags.is_none()).then_output(|| {
        CreateVirtualMfaDeviceOutput::builder()
            .virtual_mfa_device(
                VirtualMfaDevice::builder()
                    .serial_number(serial("bob"))
                    .base32_string_seed(Blob::new(SEED))
                    .build()
                    .unwrap(),
            )
            .build()
    });
    let device = mocked(RuleMode::Sequential, &[&rule])
        .create_virtual_mfa_device("/mfa-operator/", "bob", &DeviceTags::new())
        .await
        .unwrap();
    assert_eq!(device.serial, serial("bob"));
}

#[tokio::test]
async fn create_rejects_a_seed_that_is_not_base32_text_without_echoing_it() {
    let cases: [(Option<Vec<u8>>, &str); 4] = [
        (None, "no Base32StringSeed"),
        (Some(Vec::new()), "empty"),
        (Some(vec![0xff, 0xfe, b'S', b'E', b'C']), "not text"),
        (Some(b"SECRET-seed-1!".to_vec()), "not base32"),
    ];
    for (seed, expected) in cases {
        let rule = mock!(Client::create_virtual_mfa_device).then_output(move || {
            CreateVirtualMfaDeviceOutput::builder()
                .virtual_mfa_device(
                    VirtualMfaDevice::builder()
                        .serial_number(serial("alice"))
                        .set_base32_string_seed(seed.clone().map(Blob::new))
                        .build()
                        .unwrap(),
                )
                .build()
        });
        let err = mocked(RuleMode::Sequential, &[&rule])
            .create_virtual_mfa_device("/mfa-operator/", "alice", &DeviceTags::new())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, IamError::Service { code, message, .. } if code == "InvalidResponse" && message.contains(expected)),
            "{expected}: {err:?}"
        );
        assert!(!format!("{err} {err:?}").contains("SEC"), "{err:?}");
    }
}

#[tokio::test]
async fn delete_and_enable_send_what_they_are_given() {
    let delete = mock!(Client::delete_virtual_mfa_device)
        .match_requests(|req| req.serial_number() == Some(serial("bob").as_str()))
        .then_output(|| DeleteVirtualMfaDeviceOutput::builder().build());
    let enable = mock!(Client::enable_mfa_device)
        .match_requests(|req| {
            req.user_name() == Some("alice")
                && req.serial_number() == Some(serial("alice").as_str())
                && req.authentication_code1() == Some("123456")
                && req.authentication_code2() == Some("654321")
        })
        .then_output(|| EnableMfaDeviceOutput::builder().build());
    let iam = mocked(RuleMode::MatchAny, &[&delete, &enable]);

    iam.delete_virtual_mfa_device(&serial("bob")).await.unwrap();
    iam.enable_mfa_device("alice", &serial("alice"), "123456", "654321").await.unwrap();
    assert_eq!([delete.num_calls(), enable.num_calls()], [1, 1]);
}

// ---- account summary -------------------------------------------------------------------

#[tokio::test]
async fn root_mfa_follows_account_mfa_enabled() {
    for (summary, expected) in [
        (
            GetAccountSummaryOutput::builder()
                .summary_map(SummaryKeyType::AccountMfaEnabled, 1)
                .summary_map(SummaryKeyType::Users, 12)
                .build(),
            true,
        ),
        (GetAccountSummaryOutput::builder().summary_map(SummaryKeyType::AccountMfaEnabled, 0).build(), false),
        (GetAccountSummaryOutput::builder().summary_map(SummaryKeyType::Users, 12).build(), false),
        (GetAccountSummaryOutput::builder().build(), false),
    ] {
        let rule = mock!(Client::get_account_summary).then_output(move || summary.clone());
        let iam = mocked(RuleMode::Sequential, &[&rule]);
        assert_eq!(iam.root_account_mfa_enabled().await.unwrap(), expected);
    }
}

#[test]
fn timestamps_keep_nanoseconds() {
    assert_eq!(
        timestamp(&DateTime::from_secs_and_nanos(1_700_000_000, 123_456_789)),
        Some(Timestamp::new(1_700_000_000, 123_456_789).unwrap())
    );
}
