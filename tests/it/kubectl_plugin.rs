//! The kubectl plugin end to end: the real `kubectl-mfa` binary against the real
//! kube-apiserver, with the real `mfa-operator` answering its code submissions from moto.
//! Each test has its own namespace, operator, IAM users and device path, like
//! `tests/it/controller.rs`.

use crate::common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bed::{Bed, data, user_status};
use common::iam;
use common::operator::Operator;
use mfa_operator::crd::{MfaEnrollment, UserState};

/// Upper bound for one plugin run (its own `--timeout` is shorter).
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// The plugin tests enroll users and run the plugin in the test's namespace.
impl Bed {
    /// Applies an Enroll-mode enrollment of `users` under this test's device path and waits
    /// until every one of them is Pending with a seed Secret.
    async fn enroll(&self, name: &str, users: &[String]) -> MfaEnrollment {
        self.apply(name, serde_json::json!({ "mode": "Enroll", "users": { "names": users } })).await;
        let users = users.to_vec();
        self.wait(name, "every user Pending with a seed Secret", move |e| {
            users
                .iter()
                .all(|u| user_status(e, u).is_some_and(|s| s.state == UserState::Pending && s.seed_secret.is_some()))
        })
        .await
    }

    /// Runs the plugin in this test's namespace.
    async fn plugin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        kubectl_mfa(&all, stdin, &[]).await
    }
}

/// What one run of the plugin did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn succeeded(&self, what: &str) -> &Self {
        assert_eq!(self.code, Some(0), "{what} failed: {self:#?}");
        self
    }
}

/// Runs the real `kubectl-mfa` binary with the test bed's KUBECONFIG (unless `env`
/// overrides it), optional piped standard input, and a hard time limit.
async fn kubectl_mfa(args: &[&str], stdin: Option<&str>, env: &[(&str, Option<&str>)]) -> Run {
    common::require_testbed();
    let mut command = Command::new(env!("CARGO_BIN_EXE_kubectl-mfa"));
    command.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(kubeconfig) = std::env::var_os("KUBECONFIG") {
        command.env("KUBECONFIG", kubeconfig);
    }
    for (key, value) in env {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let mut child = command.spawn().expect("start kubectl-mfa");
    let mut input = child.stdin.take().expect("stdin pipe");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input); // end of input
    // Drain both pipes while the plugin runs, or a long output would block it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                pipe.read_to_string(&mut text).expect("read output");
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for kubectl-mfa") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kubectl-mfa {args:?} still running after {RUN_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    Run { code: status.code(), stdout, stderr }
}

/// Lines drawn only with the half-block characters of a terminal QR code.
fn qr_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| {
            l.chars().count() >= 21 && l.chars().all(|c| matches!(c, ' ' | '\u{2580}' | '\u{2584}' | '\u{2588}'))
        })
        .collect()
}

/// The value printed after `label` on its own line.
fn printed<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(label)).map(str::trim)
}

#[tokio::test]
async fn status_lists_the_enrollment_and_its_pending_users() {
    let bed = Bed::new("plugin-status").await;
    let users = bed.users(&["alice", "bob"]).await;
    let _operator = Operator::start(&bed.ns);
    let pending = bed.enroll("team", &users).await;

    let run = bed.plugin(&["status"], None).await;
    run.succeeded("status");
    let out = &run.stdout;
    assert!(out.starts_with("NAME "), "a table with a header: {out}");
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("team "))
        .unwrap_or_else(|| panic!("no row for the enrollment: {out}"))
        .split_whitespace()
        .collect();
    assert_eq!(row, ["team", "Enroll", "2", "0", "2", "0", "True", "AwaitingCodes"], "{out}");
    for user in &users {
        let secret = user_status(&pending, user).and_then(|u| u.seed_secret.clone()).expect("seed Secret");
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{user} ")))
            .unwrap_or_else(|| panic!("{user} missing: {out}"));
        assert!(line.contains("Pending") && line.contains(&secret), "{line}");
        assert!(line.contains("scan the QR code"), "the operator's message: {line}");
    }
    let seeds = [bed.seed(&pending, &users[0]).await, bed.seed(&pending, &users[1]).await];
    assert!(seeds.iter().all(|s| !out.contains(s.as_str())), "status never prints a seed");

    // One enrollment by name; every namespace with a NAMESPACE column; --kubeconfig instead
    // of the environment.
    let named = bed.plugin(&["status", "team"], None).await;
    assert!(named.succeeded("status team").stdout.contains(&users[1]), "{named:#?}");
    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG");
    let everywhere = kubectl_mfa(&["status", "-A", "--kubeconfig", &kubeconfig], None, &[("KUBECONFIG", None)]).await;
    everywhere.succeeded("status -A --kubeconfig");
    assert!(everywhere.stdout.starts_with("NAMESPACE "), "{everywhere:#?}");
    assert!(
        everywhere.stdout.lines().any(|l| l.split_whitespace().take(3).eq([bed.ns.as_str(), "team", "Enroll"])),
        "{everywhere:#?}"
    );

    // Errors are one line: no permission, a context that does not exist.
    let user_kubeconfig = std::env::var("MFA_TESTBED_USER_KUBECONFIG").expect("MFA_TESTBED_USER_KUBECONFIG");
    let forbidden = kubectl_mfa(&["status", "-n", &bed.ns], None, &[("KUBECONFIG", Some(&user_kubeconfig))]).await;
    assert_eq!(forbidden.code, Some(1), "{forbidden:#?}");
    assert_eq!(forbidden.stderr.lines().count(), 1, "{forbidden:#?}");
    assert!(
        forbidden.stderr.starts_with("error: cannot list MfaEnrollments: ") && forbidden.stderr.contains("forbidden")
    );
    let no_context = bed.plugin(&["status", "--context", "no-such-context"], None).await;
    assert_eq!(no_context.code, Some(1), "{no_context:#?}");
    assert_eq!(no_context.stderr.lines().count(), 1, "{no_context:#?}");
    assert!(no_context.stderr.contains("no-such-context"), "{no_context:#?}");

    // Nothing there, and a name that does not exist.
    let empty = kubectl_mfa(&["status", "-n", &format!("{}-none", bed.ns)], None, &[]).await;
    assert!(empty.succeeded("status of an empty namespace").stdout.contains("No MfaEnrollments found"), "{empty:#?}");
    let missing = bed.plugin(&["status", "nope"], None).await;
    assert_eq!(missing.code, Some(1), "{missing:#?}");
    assert_eq!(missing.stderr.trim(), format!("error: MfaEnrollment \"nope\" not found in namespace \"{}\"", bed.ns));
}

#[tokio::test]
async fn qr_prints_the_code_and_the_secret_key_of_the_seed() {
    let bed = Bed::new("plugin-qr").await;
    let users = bed.users(&["Dana.Smith+ops"]).await;
    let user = &users[0];
    let _operator = Operator::start(&bed.ns);
    let pending = bed.enroll("qr", &users).await;
    let seed = bed.seed(&pending, user).await;

    let run = bed.plugin(&["qr", "qr", user], None).await;
    run.succeeded("qr");
    let block = qr_lines(&run.stdout);
    assert!(block.len() >= 15, "a QR code drawn with half blocks: {}", run.stdout);
    let width = block[0].chars().count();
    assert!(block.iter().all(|l| l.chars().count() == width), "a square block of even lines");
    assert!(block[0].chars().all(|c| c == '\u{2588}'), "a light quiet zone on top, for dark terminals");
    let key = printed(&run.stdout, "Secret key:").unwrap_or_else(|| panic!("no secret key: {}", run.stdout));
    assert!(key.split(' ').all(|group| group.len() <= 4), "grouped by four: {key}");
    assert_eq!(key.replace(' ', ""), seed, "the printed key is the Secret's seed");
    let account = printed(&run.stdout, "Account:").unwrap_or_default();
    assert!(account.starts_with(&format!("{user}@")), "the account label: {account}");

    let key_only = bed.plugin(&["qr", "qr", user, "--no-qr"], None).await;
    key_only.succeeded("qr --no-qr");
    assert!(qr_lines(&key_only.stdout).is_empty(), "{}", key_only.stdout);
    assert_eq!(printed(&key_only.stdout, "Secret key:").map(|k| k.replace(' ', "")), Some(seed));
}

#[tokio::test]
async fn enroll_with_code_flags_makes_the_user_compliant() {
    let bed = Bed::new("plugin-flags").await;
    let users = bed.users(&["erin"]).await;
    let user = &users[0];
    let _operator = Operator::start(&bed.ns);
    let pending = bed.enroll("flags", &users).await;
    let seed = bed.seed(&pending, user).await;

    let (code1, code2) = iam::codes_now(&seed);
    let run =
        bed.plugin(&["enroll", "flags", user, "--code1", &code1, "--code2", &code2, "--timeout", "45s"], None).await;
    run.succeeded("enroll with flags");
    assert!(run.stdout.contains(&format!("MFA enabled for {user}")), "{run:#?}");
    assert!(!run.stdout.contains(&seed) && qr_lines(&run.stdout).is_empty(), "no seed or QR code with --code1/--code2");

    let done = bed.enrollments.get("flags").await.expect("get enrollment");
    assert_eq!(user_status(&done, user).map(|u| u.state), Some(UserState::Compliant));
    let status = bed.plugin(&["status"], None).await;
    let row: Vec<&str> = status
        .stdout
        .lines()
        .find(|l| l.starts_with("flags "))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(row, ["flags", "Enroll", "1", "1", "0", "0", "True", "AllUsersHaveMfa"], "{status:#?}");
}

#[tokio::test]
async fn enroll_reads_codes_from_piped_stdin_and_reports_the_operators_reason() {
    let bed = Bed::new("plugin-stdin").await;
    let users = bed.users(&["frank", "grace"]).await;
    let (frank, grace) = (&users[0], &users[1]);
    let _operator = Operator::start(&bed.ns);
    let pending = bed.enroll("piped", &users).await;

    // Wrong codes: the operator refuses them and the plugin prints its exact reason.
    let refused = bed.plugin(&["enroll", "piped", frank, "--timeout", "45s"], Some("000000\n111111\n")).await;
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(qr_lines(&refused.stdout).len() >= 15, "the QR code comes first: {refused:#?}");
    assert!(
        refused.stderr.contains("Code 1 (") && refused.stderr.contains(" s left in this window): "),
        "{refused:#?}"
    );
    assert!(refused.stderr.contains("Code 2 ("), "{refused:#?}");
    let after = bed
        .wait("piped", "the refusal in status", {
            let frank = frank.clone();
            move |e| user_status(e, &frank).and_then(|u| u.message.as_deref()).is_some_and(|m| m.contains("refused"))
        })
        .await;
    let reason = user_status(&after, frank).and_then(|u| u.message.clone()).expect("message");
    assert!(reason.starts_with("codes refused: "), "{reason}");
    assert!(
        refused.stderr.contains(&format!("{frank}: {reason}")),
        "the operator's exact reason {reason:?}: {refused:#?}"
    );
    assert_eq!(user_status(&after, frank).map(|u| u.state), Some(UserState::Pending));

    // Correct codes for another user, piped the same way.
    let seed = bed.seed(&pending, grace).await;
    let (code1, code2) = iam::codes_now(&seed);
    let accepted =
        bed.plugin(&["enroll", "piped", grace, "--timeout", "45s"], Some(&format!("{code1}\n {code2} \n"))).await;
    accepted.succeeded("enroll with piped codes");
    assert!(accepted.stdout.contains(&format!("MFA enabled for {grace}")), "{accepted:#?}");
    let done = bed.enrollments.get("piped").await.expect("get enrollment");
    assert_eq!(user_status(&done, grace).map(|u| u.state), Some(UserState::Compliant));
}

#[tokio::test]
async fn unknown_users_malformed_codes_and_a_missing_operator_are_explained() {
    let bed = Bed::new("plugin-errors").await;
    let users = bed.users(&["heidi", "ivan"]).await;
    let operator = Operator::start(&bed.ns);
    let pending = bed.enroll("errs", &users).await;

    let unknown: [&[&str]; 2] =
        [&["qr", "errs", "nobody"], &["enroll", "errs", "nobody", "--code1", "123456", "--code2", "654321"]];
    for args in unknown {
        let run = bed.plugin(args, None).await;
        assert_eq!(run.code, Some(1), "{args:?}: {run:#?}");
        let message = run.stderr.trim();
        assert_eq!(message.lines().count(), 1, "one line: {message}");
        assert!(message.contains("\"nobody\" is not listed in MfaEnrollment \"errs\""), "{message}");
        assert!(message.contains(&users[0]) && message.contains(&users[1]), "names the pending users: {message}");
    }

    // Six digits are checked before anything is written.
    let malformed = bed.plugin(&["enroll", "errs", &users[0], "--code1", "12ab56", "--code2", "123456"], None).await;
    assert_eq!(malformed.code, Some(1), "{malformed:#?}");
    assert_eq!(
        malformed.stderr.trim(),
        "error: the first code must be exactly 6 digits (0-9), as the authenticator app shows it"
    );
    let piped = bed.plugin(&["enroll", "errs", &users[0], "--no-qr"], Some("123456\n12345\n")).await;
    assert_eq!(piped.code, Some(1), "{piped:#?}");
    assert!(piped.stderr.contains("the second code must be exactly 6 digits"), "{piped:#?}");
    let secret_name = user_status(&pending, &users[0]).and_then(|u| u.seed_secret.clone()).expect("seed Secret");
    let secret = bed.secrets.get(&secret_name).await.expect("Secret");
    assert!(data(&secret, "code1").is_none() && data(&secret, "code2").is_none(), "nothing was written");

    // No operator: the plugin stops waiting and says what to check.
    let _logs = operator.kill();
    let seed = bed.seed(&pending, &users[1]).await;
    let (code1, code2) = iam::codes_now(&seed);
    let unanswered =
        bed.plugin(&["enroll", "errs", &users[1], "--code1", &code1, "--code2", &code2, "--timeout", "3s"], None).await;
    assert_eq!(unanswered.code, Some(2), "{unanswered:#?}");
    assert!(unanswered.stderr.contains("no answer from mfa-operator within 3s: is it running"), "{unanswered:#?}");
}

#[tokio::test]
async fn link_mints_a_one_time_link_for_a_waiting_user_and_keeps_only_its_digest() {
    use kube::api::{Patch, PatchParams};
    use mfa_operator::enroll_page::LinkStore;
    use mfa_operator::link::{self, LinkId};
    use mfa_operator::links::{KubeLinks, LinksConfig};

    let bed = Bed::new("plugin-link").await;
    let own = common::namespace(&bed.client, "plugin-link-own").await;
    // No operator runs: the status the operator would write says carol waits for a link.
    let binding =
        bed.binding("team", serde_json::json!({ "allowEnroll": true, "users": { "pathPrefixes": ["/"] } })).await;
    let spec = serde_json::json!({
        "accountRef": { "name": binding }, "mode": "Enroll", "delivery": "Link",
        "users": { "names": ["carol"] },
    });
    let enrollment = bed.apply("links", spec).await;
    let status = serde_json::json!({ "status": { "users": [
        { "name": "carol", "state": "Failed", "message": "NoDeliveryAddress: the user has no `email` tag" },
    ] } });
    bed.enrollments
        .patch_status("links", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("the status an operator would write");
    let public = "https://mfa.example.test/mfa";
    let args = ["link", "links", "carol", "--public-url", public, "--operator-namespace", own.as_str()];
    let run = bed.plugin(&args, None).await;
    run.succeeded("kubectl mfa link");
    let url = run.stdout.trim();
    assert!(run.stderr.contains("give it only to carol"), "the admin is warned: {run:#?}");
    let (id, token) = url
        .strip_prefix(&format!("{public}{}", link::PATH_PREFIX))
        .and_then(|rest| rest.split_once('/'))
        .expect("a link under the public URL");

    // Only the digest is at rest, beside the operator's records; the link opens it once.
    let uid = enrollment.metadata.uid.clone().expect("uid");
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(bed.client.clone(), &own);
    let name = mfa_operator::links::kube::secret_name(&uid).expect("a Secret name");
    let stored = secrets.get(&name).await.expect("the link record Secret");
    let records = data(&stored, mfa_operator::links::kube::RECORDS_KEY).expect("records");
    assert!(!records.contains(token), "no token at rest");
    let store = KubeLinks::new(
        bed.client.clone(),
        LinksConfig {
            namespace: own.clone(),
            public_url: public.into(),
            address_tag: "email".into(),
            email: None,
            webhook: None,
        },
    );
    let record = store.get(&LinkId::parse(id).expect("an id")).await.expect("read").expect("the record");
    assert_eq!((record.purpose.user.as_str(), record.purpose.enrollment_uid.as_str()), ("carol", uid.as_str()));
    assert_eq!(link::check(&record, token, jiff::Timestamp::now()), Ok(()));

    // Refused: a user the enrollment does not wait for, an enrollment without links.
    let run =
        bed.plugin(&["link", "links", "mallory", "--public-url", public, "--operator-namespace", &own], None).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("does not wait for \"mallory\""), "{run:#?}");
    let spec =
        serde_json::json!({ "accountRef": { "name": binding }, "mode": "Enroll", "users": { "names": ["carol"] } });
    bed.apply("seeds", spec).await;
    let run = bed.plugin(&["link", "seeds", "carol", "--public-url", public, "--operator-namespace", &own], None).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("does not use delivery: Link"), "{run:#?}");
}
