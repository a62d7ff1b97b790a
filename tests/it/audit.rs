//! `mfa-operator audit`, the real binary against the test bed's moto. The moto account is
//! shared with other tests, so every test selects only its own users, under a unique path.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};

use aws_sdk_iam::Client;
use common::fault_proxy::FaultProxy;
use common::iam::{add_to_group, create_user, enable_own_device, give_console_password, tag_user};
use serde_json::Value;

/// IAM's largest page for the listing calls the inventory makes.
const PAGE: usize = 1000;

/// Users of one test, all under `path`: `with_mfa` have an enabled virtual device.
struct Users {
    path: String,
    with_mfa: Vec<String>,
    without_mfa: Vec<String>,
}

impl Users {
    fn all(&self) -> BTreeSet<String> {
        self.with_mfa.iter().chain(&self.without_mfa).cloned().collect()
    }
}

async fn users(iam: &Client, test: &str, with_mfa: usize, without_mfa: usize) -> Users {
    let id = common::unique(test);
    let path = format!("/{id}/");
    let mut users = Users { path: path.clone(), with_mfa: Vec::new(), without_mfa: Vec::new() };
    for i in 0..with_mfa {
        let name = format!("{id}-mfa{i}");
        create_user(iam, &name, &path).await;
        enable_own_device(iam, &name).await;
        users.with_mfa.push(name);
    }
    for i in 0..without_mfa {
        let name = format!("{id}-none{i}");
        create_user(iam, &name, &path).await;
        users.without_mfa.push(name);
    }
    users
}

/// Runs `mfa-operator audit ARGS` with the test bed's AWS environment.
fn audit(args: &[&str]) -> Output {
    audit_env(args, &[])
}

/// Runs `mfa-operator audit ARGS` with the test bed's AWS environment and `env` over it.
fn audit_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    common::require_testbed();
    Command::new(env!("CARGO_BIN_EXE_mfa-operator"))
        .arg("audit")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("run mfa-operator audit: {e}"))
}

/// A request-counting proxy (no faults) between the audit and the test bed's IAM.
async fn proxy() -> FaultProxy {
    common::require_testbed();
    FaultProxy::start(&std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL")).await
}

/// Runs `mfa-operator audit ARGS` with IAM reached through `proxy`, on a blocking thread
/// so that the proxy keeps serving meanwhile.
async fn audit_through(proxy: &FaultProxy, args: &[&str]) -> Output {
    let url = proxy.url();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        audit_env(&args, &[("AWS_ENDPOINT_URL", &url)])
    })
    .await
    .expect("audit thread")
}

/// IAM requests per operation, counted at the proxy, which answered them all from IAM.
fn requests_at(proxy: &FaultProxy) -> BTreeMap<String, u64> {
    let counts = proxy.counts();
    let faulted: Vec<_> = counts.iter().filter(|((_, outcome), _)| outcome != "forwarded").collect();
    assert!(faulted.is_empty(), "the proxy injects no faults here, yet: {faulted:?}");
    proxy.calls_per_op()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn exit_code(out: &Output) -> i32 {
    out.status.code().unwrap_or_else(|| panic!("killed by a signal; stderr: {}", stderr(out)))
}

/// Runs `audit --output json ARGS`; returns the exit code and the parsed report.
fn audit_json(args: &[&str]) -> (i32, Value) {
    let out = audit(&[&["--output", "json"][..], args].concat());
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON on stdout ({e}): {}\nstderr: {}", stdout(&out), stderr(&out)));
    (exit_code(&out), report)
}

fn names(report: &Value) -> BTreeSet<String> {
    report["users"]
        .as_array()
        .unwrap_or_else(|| panic!("users array in {report}"))
        .iter()
        .map(|u| u["name"].as_str().unwrap_or_else(|| panic!("user name in {u}")).to_owned())
        .collect()
}

fn set(items: &[&String]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).clone()).collect()
}

/// `(name, path, state)` rows of the table on stdout (up to the blank line).
fn table_rows(text: &str) -> Vec<(String, String, String)> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "PATH", "STATE"], "table header in:\n{text}");
    lines
        .take_while(|l| !l.is_empty())
        .map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [name, path, state] => (name.to_owned(), path.to_owned(), state.to_owned()),
            _ => panic!("row {l:?} in:\n{text}"),
        })
        .collect()
}

#[tokio::test]
async fn table_lists_exactly_the_users_without_mfa_and_exits_1() {
    let iam = common::iam::client().await;
    let users = users(&iam, "audit-table", 2, 3).await;

    let proxy = proxy().await;
    let out = audit_through(&proxy, &["--path-prefix", &users.path]).await;
    assert_eq!(exit_code(&out), 1, "some users lack MFA; stderr: {}", stderr(&out));
    let text = stdout(&out);
    let rows = table_rows(&text);
    let listed: BTreeSet<String> = rows.iter().map(|(name, _, _)| name.clone()).collect();
    assert_eq!(listed, users.without_mfa.iter().cloned().collect(), "{text}");
    for (name, path, state) in &rows {
        assert_eq!((path.as_str(), state.as_str()), (users.path.as_str(), "Missing"), "{name}");
    }
    assert!(text.contains(": 5 selected, 2 compliant, 3 without MFA, 0 not found\n"), "{text}");
    assert!(text.contains("\nroot account MFA: "), "{text}");
    let err = stderr(&out);
    assert!(err.contains("IAM requests: ") && err.contains("ListMFADevices 3"), "{err}");
    // Counted on the wire: one ListMFADevices per user without MFA, none for the others.
    assert_eq!(requests_at(&proxy).get("ListMFADevices"), Some(&3), "{err}");

    let out = audit(&["--path-prefix", &users.path, "--show-compliant"]);
    let rows = table_rows(&stdout(&out));
    let listed: BTreeSet<String> = rows.iter().map(|(name, _, _)| name.clone()).collect();
    assert_eq!(listed, users.all());
    let compliant: BTreeSet<String> =
        rows.iter().filter(|(_, _, state)| state == "Compliant").map(|(name, _, _)| name.clone()).collect();
    assert_eq!(compliant, users.with_mfa.iter().cloned().collect());
}

#[tokio::test]
async fn json_has_the_summary_and_costs_o_pages_plus_uncovered_users() {
    let iam = common::iam::client().await;
    let (n, k) = (6, 2);
    let users = users(&iam, "audit-json", k, n - k).await;
    let ghost = common::unique("audit-ghost");

    let proxy = proxy().await;
    let out = audit_through(&proxy, &["--output", "json", "--path-prefix", &users.path, "--names", &ghost]).await;
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON on stdout ({e}): {}\nstderr: {}", stdout(&out), stderr(&out)));
    let code = exit_code(&out);

    assert_eq!(code, 1, "{report:#}");
    assert_eq!(
        report["summary"],
        serde_json::json!({"selected": n, "compliant": k, "pending": 0, "missing": n - k, "failed": 0, "notFound": 1}),
        "{report:#}"
    );
    assert_eq!(names(&report), users.without_mfa.iter().cloned().collect(), "only users without MFA by default");
    for user in report["users"].as_array().into_iter().flatten() {
        assert_eq!(user["path"], users.path.as_str(), "{user}");
        assert_eq!(user["state"], "Missing", "{user}");
    }
    assert_eq!(report["notFound"], serde_json::json!([ghost]));
    let account = report["account"].as_str().unwrap_or_else(|| panic!("account in {report:#}"));
    assert!(account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()), "{account}");
    assert!(report["rootAccountMfaEnabled"].is_boolean(), "{report:#}");

    // O(pages + uncovered users), counted at the proxy the audit's IAM requests went
    // through: the sweeps page at most by 1000 over the whole shared account, one sweep
    // each; ListMFADevices is asked only for the N - K users no virtual device covers.
    let at_proxy = requests_at(&proxy);
    let first_pages = proxy.first_pages();
    println!("IAM requests at the proxy: {at_proxy:?} (first pages: {first_pages:?})");
    let account_users = iam.list_users().into_paginator().items().send().collect::<Result<Vec<_>, _>>().await;
    let account_users = account_users.expect("list users").len();
    let devices = common::iam::virtual_devices(&iam).await.len();
    let groups = iam.list_groups().into_paginator().items().send().collect::<Result<Vec<_>, _>>().await;
    let groups = groups.expect("list groups").len();
    let pages = |items: usize| (items / PAGE + 1) as u64;
    let count = |op: &str| at_proxy.get(op).copied().unwrap_or(0);
    let operations: BTreeSet<&str> = at_proxy.keys().map(String::as_str).collect();
    assert_eq!(
        operations,
        BTreeSet::from([
            "GetAccountAuthorizationDetails",
            "GetAccountSummary",
            "ListGroups",
            "ListMFADevices",
            "ListVirtualMFADevices"
        ]),
        "{at_proxy:?}"
    );
    assert!((1..=pages(account_users)).contains(&count("GetAccountAuthorizationDetails")), "{at_proxy:?}");
    assert!((1..=pages(devices)).contains(&count("ListVirtualMFADevices")), "{at_proxy:?}");
    assert!((1..=pages(groups)).contains(&count("ListGroups")), "{at_proxy:?}");
    for sweep in ["GetAccountAuthorizationDetails", "ListVirtualMFADevices", "ListGroups"] {
        assert_eq!(first_pages.get(sweep), Some(&1), "one {sweep} sweep: {first_pages:?}");
    }
    assert_eq!(count("GetAccountSummary"), 1, "{at_proxy:?}");
    assert_eq!(count("ListMFADevices"), (n - k) as u64, "{at_proxy:?}");
    // The report's own count is what went over the wire.
    let reported: BTreeMap<String, u64> = report["iamRequests"]
        .as_object()
        .unwrap_or_else(|| panic!("iamRequests in {report:#}"))
        .iter()
        .map(|(op, n)| (op.clone(), n.as_u64().unwrap_or_else(|| panic!("count of {op} in {report:#}"))))
        .collect();
    assert_eq!(reported, at_proxy, "iamRequests in the report against the proxy's count");

    let (_, all) = audit_json(&["--path-prefix", &users.path, "--show-compliant"]);
    assert_eq!(names(&all), users.all());
}

#[tokio::test]
async fn exit_0_when_every_selected_user_has_mfa() {
    let iam = common::iam::client().await;
    let users = users(&iam, "audit-ok", 2, 1).await;

    let out = audit(&["--names", &users.with_mfa.join(",")]);
    assert_eq!(exit_code(&out), 0, "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("every selected user has an active MFA device\n"), "{text}");
    assert!(text.contains(": 2 selected, 2 compliant, 0 without MFA, 0 not found\n"), "{text}");

    let (code, report) = audit_json(&["--path-prefix", &users.path, "--exclude", &users.without_mfa[0]]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["summary"]["selected"], 2);
    assert_eq!(report["users"], serde_json::json!([]));
}

#[tokio::test]
async fn groups_tags_and_console_access_select_like_the_spec() {
    let iam = common::iam::client().await;
    let users = users(&iam, "audit-sel", 1, 3).await;
    let (with_mfa, grouped, tagged, console) =
        (&users.with_mfa[0], &users.without_mfa[0], &users.without_mfa[1], &users.without_mfa[2]);
    let group = common::unique("audit-group");
    let team = common::unique("team");
    add_to_group(&iam, with_mfa, &group).await;
    add_to_group(&iam, grouped, &group).await;
    tag_user(&iam, tagged, "team", &team).await;
    tag_user(&iam, console, "team", &team).await;
    tag_user(&iam, console, "env", "prod").await;
    give_console_password(&iam, console).await;

    let (code, report) = audit_json(&["--groups", &group, "--show-compliant"]);
    assert_eq!((code, names(&report)), (1, set(&[with_mfa, grouped])), "{report:#}");

    let (code, report) = audit_json(&["--groups", &group, "--exclude", grouped]);
    assert_eq!((code, report["summary"]["selected"].as_u64()), (0, Some(1)), "{report:#}");

    let team_tag = format!("team={team}");
    let (_, report) = audit_json(&["--tag", &team_tag]);
    assert_eq!(names(&report), set(&[tagged, console]), "{report:#}");

    let (_, report) = audit_json(&["--tag", &team_tag, "--tag", "env=prod"]);
    assert_eq!(names(&report), set(&[console]), "every tag must match: {report:#}");

    let (_, report) = audit_json(&["--path-prefix", &users.path, "--console-access-only"]);
    assert_eq!(names(&report), set(&[console]), "{report:#}");
    assert!(report["iamRequests"]["GetCredentialReport"].as_u64() >= Some(1), "{report:#}");
}

#[tokio::test]
async fn usage_errors_exit_2_with_a_clear_message() {
    let out = audit(&["--names", "bad name"]);
    assert_eq!(exit_code(&out), 2);
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(err.contains("\"bad name\" is not a valid IAM user name"), "{err}");

    let out = audit(&["--path-prefix", "engineering/"]);
    assert_eq!(exit_code(&out), 2);
    assert!(stderr(&out).contains("an IAM path prefix starts with '/'"), "{}", stderr(&out));

    let out = audit(&["--names", "alice", "--exclude", "alice"]);
    assert_eq!(exit_code(&out), 2);
    assert!(stderr(&out).contains("alice is in both --names and --exclude"), "{}", stderr(&out));

    let group = common::unique("audit-nogroup");
    let out = audit(&["--groups", &group]);
    assert_eq!(exit_code(&out), 2, "stderr: {}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains(&format!("--groups: no IAM group named {group} in the account")), "{}", stderr(&out));
}

#[tokio::test]
async fn aws_errors_exit_3() {
    common::require_testbed();
    let out = Command::new(env!("CARGO_BIN_EXE_mfa-operator"))
        .args(["audit", "--output", "json"])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_MAX_ATTEMPTS", "1")
        .output()
        .unwrap_or_else(|e| panic!("run mfa-operator audit: {e}"));
    assert_eq!(exit_code(&out), 3, "stderr: {}", stderr(&out));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(err.starts_with("error: AWS IAM GetAccountAuthorizationDetails: "), "{err}");
    let key_id = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default();
    assert!(key_id.is_empty() || !err.contains(&key_id), "{err}");
}

#[tokio::test]
async fn role_arn_audits_the_other_account_through_sts() {
    common::require_testbed();
    let other = "111122223333";
    let role_arn = format!("arn:aws:iam::{other}:role/mfa-audit");
    // moto maps credentials issued for a role to the role's account.
    let base = mfa_operator::aws::load_sdk_config(None).await;
    let provider = aws_config::sts::AssumeRoleProvider::builder(&role_arn)
        .session_name("audit-test")
        .external_id("audit-ext")
        .configure(&base)
        .build()
        .await;
    let config =
        base.into_builder().credentials_provider(aws_sdk_iam::config::SharedCredentialsProvider::new(provider)).build();
    let there = Client::new(&config);
    let name = common::unique("audit-other");
    create_user(&there, &name, "/").await;

    let (code, report) = audit_json(&["--role-arn", &role_arn, "--external-id", "audit-ext", "--names", &name]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["account"], other, "{report:#}");
    assert_eq!(names(&report), BTreeSet::from([name.clone()]));

    let (_, here) = audit_json(&["--names", &name]);
    assert_eq!(here["notFound"], serde_json::json!([name]), "the user exists only in the other account");
}
