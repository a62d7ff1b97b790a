//! GitOps health of `MfaEnrollment`, read by the real readers:
//!
//! - the Argo CD health check `deploy/argocd/health.lua`, run in real Lua (5.1 as Argo CD's
//!   gopher-lua speaks it, LuaJIT and 5.4, through lupa in the test bed's venv) by
//!   `tests/testbed/argocd_health.py`, in Argo CD's sandbox;
//! - kstatus (`sigs.k8s.io/cli-utils/pkg/kstatus/status`, what Flux and kpt compute),
//!   through the small Go program in `tests/testbed/kstatus`, built here on first use;
//! - `kubectl wait --for=condition=Ready` with the test bed's kubectl.
//!
//! First over a table of sample objects, then over real objects that the real operator
//! drives through their life on the test bed.

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::bed::{Bed, condition as find_condition, data, is_true, state};
use common::iam;
use common::operator::Operator;
use mfa_operator::crd::UserState;
use serde_json::{Value, json};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// What a GitOps tool shows for an object: a status word and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Health {
    status: String,
    message: String,
}

impl Health {
    fn parse(tool: &str, output: &Output) -> Self {
        let text = String::from_utf8_lossy(&output.stdout);
        let value: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{tool} printed no JSON ({e}): {text:?}"));
        let field =
            |name: &str| value[name].as_str().unwrap_or_else(|| panic!("{tool}: no {name} in {value}")).to_owned();
        Self { status: field("status"), message: field("message") }
    }
}

// ------------------------------------------------------------------ Argo CD (Lua)

/// Runs `deploy/argocd/health.lua` over `object` as Argo CD does.
fn argo_health(object: &Value) -> Health {
    let python = std::env::var_os("MFA_TESTBED_PYTHON").unwrap_or_else(|| {
        panic!(
            "MFA_TESTBED_PYTHON is not set: it names the test bed venv's Python, which has lupa (real Lua). \
             Run the suite with `tests/run`, or: tests/testbed/testbed up && eval \"$(tests/testbed/testbed env)\""
        )
    });
    let output = run_with_stdin(
        Command::new(&python)
            .arg(Path::new(REPO).join("tests/testbed/argocd_health.py"))
            .arg(Path::new(REPO).join("deploy/argocd/health.lua")),
        object,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => Health::parse("argocd_health.py", &output),
        Some(3) => panic!(
            "MFA_TESTBED_PYTHON ({}) has no lupa: the test bed's venv is older than lupa in \
             tests/testbed/requirements.txt. Run `tests/testbed/testbed build`, then restart the test bed \
             (`tests/testbed/testbed down && tests/testbed/testbed up`) and `eval \"$(tests/testbed/testbed env)\"` \
             so that MFA_TESTBED_PYTHON names the new venv.\n{stderr}",
            python.to_string_lossy()
        ),
        _ => panic!("the Argo CD health check failed on {object}: {}\n{stderr}", output.status),
    }
}

// ------------------------------------------------------------------ kstatus (Go)

/// The cli-utils version pinned in `tests/testbed/kstatus/go.mod`; part of the cached
/// binary's directory name, so bumping the pin builds a new one.
fn cli_utils_version() -> String {
    let path = Path::new(REPO).join("tests/testbed/kstatus/go.mod");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("sigs.k8s.io/cli-utils "))
        .map(|rest| rest.split_whitespace().next().unwrap_or_default().to_owned())
        .next()
        .unwrap_or_else(|| panic!("{} does not require sigs.k8s.io/cli-utils", path.display()))
}

/// A fingerprint of the helper's sources (FNV-1a over go.mod, go.sum and main.go), kept
/// beside the binary so that an edited helper is rebuilt even at the same cli-utils pin.
fn kstatus_sources_fingerprint(source: &Path) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in ["go.mod", "go.sum", "main.go"] {
        let path = source.join(file);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        for byte in file.as_bytes().iter().chain(&bytes) {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// The kstatus helper, built on first use into the test bed's cache, where the test bed's
/// other Go tools live: `$MFA_TESTBED_CACHE/kstatus-<cli-utils version>/kstatus`.
fn kstatus_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let cache = std::env::var_os("MFA_TESTBED_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME or MFA_TESTBED_CACHE is set"))
                .join(".cache/mfa-operator-testbed")
        });
        let source = Path::new(REPO).join("tests/testbed/kstatus");
        let fingerprint = kstatus_sources_fingerprint(&source);
        let dir = cache.join(format!("kstatus-{}", cli_utils_version()));
        let binary = dir.join("kstatus");
        let stamp = dir.join("kstatus.sources");
        let built = || binary.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == fingerprint);
        if built() {
            return binary;
        }
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        // One build at a time across test processes; whoever waited finds it built.
        let lock_path = cache.join(".kstatus-build.lock");
        let lock = std::fs::File::create(&lock_path).unwrap_or_else(|e| panic!("open {}: {e}", lock_path.display()));
        lock.lock().unwrap_or_else(|e| panic!("lock {}: {e}", lock_path.display()));
        if built() {
            return binary;
        }
        // Into a temporary name first, then renamed: no reader ever sees half a binary.
        let partial = dir.join(format!(".kstatus.partial-{}", std::process::id()));
        eprintln!("building the kstatus helper from {} (cold: about a minute)", source.display());
        let started = Instant::now();
        let output = Command::new("go")
            .args(["build", "-trimpath", "-o"])
            .arg(&partial)
            .arg(".")
            .current_dir(&source)
            // Like the test bed's other Go tools: the installed Go only, no cgo.
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", "0")
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `go` ({e}): Go is needed to build the kstatus helper in {} \
                     (the test bed builds its control plane with it too); install Go and run again",
                    source.display()
                )
            });
        if !output.status.success() {
            let _ = std::fs::remove_file(&partial);
            panic!(
                "building the kstatus helper failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::fs::rename(&partial, &binary)
            .unwrap_or_else(|e| panic!("move {} to {}: {e}", partial.display(), binary.display()));
        std::fs::write(&stamp, format!("{fingerprint}\n")).unwrap_or_else(|e| panic!("write {}: {e}", stamp.display()));
        eprintln!("built {} in {:.1?}", binary.display(), started.elapsed());
        binary
    })
}

/// kstatus' verdict on `object`, as Flux computes it.
fn kstatus(object: &Value) -> Health {
    let output = run_with_stdin(&mut Command::new(kstatus_binary()), object);
    assert!(
        output.status.success(),
        "kstatus failed on {object}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Health::parse("kstatus", &output)
}

fn run_with_stdin(command: &mut Command, input: &Value) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.to_string().as_bytes()).expect("write the object to stdin");
    drop(stdin);
    child.wait_with_output().unwrap_or_else(|e| panic!("wait for {command:?}: {e}"))
}

// ------------------------------------------------------------------ sample objects

fn condition(kind: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": kind, "status": status, "reason": reason, "message": message,
        "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z",
    })
}

fn sample(generation: i64, status: Option<Value>) -> Value {
    let mut object = json!({
        "apiVersion": "iam.mfa-operator.dev/v1alpha1",
        "kind": "MfaEnrollment",
        "metadata": { "name": "engineering", "namespace": "platform", "generation": generation },
        "spec": { "mode": "Enroll", "users": { "pathPrefix": "/engineering/" } },
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    object
}

/// A sample whose status describes its current generation.
fn reconciled(conditions: Vec<Value>) -> Value {
    sample(1, observed(1, conditions))
}

fn observed(generation: i64, conditions: Vec<Value>) -> Option<Value> {
    Some(json!({
        "observedGeneration": generation,
        "conditions": conditions,
        "summary": { "selected": 3, "compliant": 1, "pending": 2, "missing": 0, "failed": 0, "notFound": 0 },
    }))
}

const AWAITING: &str = "2 of 3 selected users have no active MFA device (2 pending codes, 0 missing, 0 failed)";
const WITHOUT_MFA: &str = "2 of 3 selected users have no active MFA device";
const ALL_MFA: &str = "all 3 selected users have an active MFA device";
const DENIED: &str =
    "ListUsers: access denied: User: arn:aws:iam::123456789012:user/op is not authorized to perform: iam:ListUsers";
const NO_GROUP: &str = "spec.users.groups: no IAM group named developers in the account";
const STILL_CREATING: &str = "2 selected users still need a pending device";
const WAITING: &str = "Waiting for the operator to reconcile this enrollment";
const STALE: &str = "Waiting for the operator to reconcile the latest spec";

/// One sample: (what, object, Argo CD health, kstatus verdict).
type Case = (&'static str, Value, (&'static str, &'static str), (&'static str, &'static str));

fn samples() -> Vec<Case> {
    let ready = |message: &str| condition("Ready", "True", "Reconciled", message);
    let not_reconciling = condition("Reconciling", "False", "AsExpected", "");
    let not_stalled = condition("Stalled", "False", "AsExpected", "");
    let awaiting = condition("Compliant", "False", "AwaitingCodes", AWAITING);
    let compliant = condition("Compliant", "True", "AllUsersHaveMfa", ALL_MFA);
    vec![
        (
            "no status: the operator has not seen it",
            sample(1, None),
            ("Progressing", WAITING),
            // kstatus' rule for a resource without status.observedGeneration or conditions.
            ("Current", "Resource is current"),
        ),
        ("an empty status", sample(1, Some(json!({}))), ("Progressing", WAITING), ("Current", "Resource is current")),
        (
            "a stale observedGeneration (the spec changed since)",
            sample(3, observed(2, vec![ready("ok"), not_reconciling.clone(), not_stalled.clone(), compliant.clone()])),
            ("Progressing", STALE),
            ("InProgress", "MfaEnrollment generation is 3, but latest observed generation is 2"),
        ),
        (
            "Stalled on AccessDenied",
            reconciled(vec![
                condition("Ready", "False", "AccessDenied", DENIED),
                not_reconciling.clone(),
                condition("Stalled", "True", "AccessDenied", DENIED),
                awaiting.clone(),
            ]),
            ("Degraded", DENIED),
            ("Failed", DENIED),
        ),
        (
            "Stalled on a group that does not exist",
            reconciled(vec![
                condition("Ready", "False", "InvalidSpec", NO_GROUP),
                not_reconciling.clone(),
                condition("Stalled", "True", "InvalidSpec", NO_GROUP),
                awaiting.clone(),
            ]),
            ("Degraded", NO_GROUP),
            ("Failed", NO_GROUP),
        ),
        (
            "Stalled without a message: the reason is shown",
            reconciled(vec![condition("Stalled", "True", "AccessDenied", "")]),
            ("Degraded", "AccessDenied"),
            ("Failed", ""),
        ),
        (
            "Reconciling while devices are being created",
            reconciled(vec![
                condition("Ready", "False", "Progressing", STILL_CREATING),
                condition("Reconciling", "True", "Progressing", STILL_CREATING),
                not_stalled.clone(),
                condition("Compliant", "False", "AwaitingCodes", AWAITING),
            ]),
            ("Progressing", STILL_CREATING),
            ("InProgress", STILL_CREATING),
        ),
        (
            "Ready and Compliant",
            reconciled(vec![
                ready("every selected user has MFA or a pending device (3 compliant, 0 pending)"),
                not_reconciling.clone(),
                not_stalled.clone(),
                compliant.clone(),
            ]),
            ("Healthy", ALL_MFA),
            ("Current", "Resource is Ready"),
        ),
        (
            "Ready, users awaiting codes (Enroll)",
            reconciled(vec![
                ready("every selected user has MFA or a pending device (1 compliant, 2 pending)"),
                not_reconciling.clone(),
                not_stalled.clone(),
                awaiting.clone(),
            ]),
            ("Suspended", AWAITING),
            ("Current", "Resource is Ready"),
        ),
        (
            "Ready, users without MFA (Report)",
            reconciled(vec![
                ready("inventory complete: 1 of 3 selected users have MFA"),
                not_reconciling.clone(),
                not_stalled.clone(),
                condition("Compliant", "False", "UsersWithoutMfa", WITHOUT_MFA),
            ]),
            ("Suspended", WITHOUT_MFA),
            ("Current", "Resource is Ready"),
        ),
        (
            "Ready without a Compliant condition",
            reconciled(vec![ready("ok")]),
            ("Suspended", "Waiting for users to finish their MFA enrollment"),
            ("Current", "Resource is Ready"),
        ),
        (
            "Ready False with nothing abnormal",
            reconciled(vec![
                condition("Ready", "False", "Progressing", STILL_CREATING),
                not_reconciling.clone(),
                not_stalled.clone(),
            ]),
            ("Progressing", STILL_CREATING),
            ("InProgress", STILL_CREATING),
        ),
        (
            "conditions in another order: Stalled last",
            reconciled(vec![
                awaiting.clone(),
                condition("Ready", "False", "InvalidSpec", NO_GROUP),
                not_reconciling.clone(),
                condition("Stalled", "True", "InvalidSpec", NO_GROUP),
            ]),
            ("Degraded", NO_GROUP),
            ("Failed", NO_GROUP),
        ),
        (
            "conditions in another order: Compliant first, Ready last",
            reconciled(vec![compliant, not_stalled.clone(), not_reconciling.clone(), ready("ok")]),
            ("Healthy", ALL_MFA),
            ("Current", "Resource is Ready"),
        ),
        (
            "conditions in another order: Reconciling after Ready",
            reconciled(vec![
                awaiting,
                condition("Ready", "False", "TransientError", "ListUsers: throttled"),
                not_stalled,
                condition("Reconciling", "True", "TransientError", "ListUsers: throttled"),
            ]),
            ("Progressing", "ListUsers: throttled"),
            ("InProgress", "ListUsers: throttled"),
        ),
    ]
}

fn health(pair: (&str, &str)) -> Health {
    Health { status: pair.0.to_owned(), message: pair.1.to_owned() }
}

#[test]
fn argo_cd_health_check_maps_sample_statuses() {
    let cases = samples();
    assert!(cases.len() >= 8);
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(what, object, expected, _)| {
            let got = argo_health(object);
            (got != health(*expected)).then(|| format!("{what}: expected {expected:?}, got {got:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "Argo CD health:\n{}", failures.join("\n"));
}

#[test]
fn kstatus_reads_sample_statuses_as_flux_does() {
    let failures: Vec<String> = samples()
        .iter()
        .filter_map(|(what, object, _, expected)| {
            let got = kstatus(object);
            (got != health(*expected)).then(|| format!("{what}: expected {expected:?}, got {got:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "kstatus:\n{}", failures.join("\n"));
}

#[test]
fn the_argocd_cm_patch_carries_health_lua_verbatim() {
    let script = std::fs::read_to_string(Path::new(REPO).join("deploy/argocd/health.lua")).expect("read health.lua");
    let patch: Value = serde_yaml::from_str(
        &std::fs::read_to_string(Path::new(REPO).join("deploy/argocd/argocd-cm-patch.yaml"))
            .expect("read argocd-cm-patch.yaml"),
    )
    .expect("argocd-cm-patch.yaml is YAML");
    assert_eq!((patch["kind"].as_str(), patch["metadata"]["name"].as_str()), (Some("ConfigMap"), Some("argocd-cm")));
    let key = "resource.customizations.health.iam.mfa-operator.dev_MfaEnrollment";
    assert_eq!(
        patch["data"][key].as_str(),
        Some(script.as_str()),
        "{key} in deploy/argocd/argocd-cm-patch.yaml differs from deploy/argocd/health.lua"
    );
}

// ------------------------------------------------------------------ the real thing

/// What the GitOps readers see: raw objects and `kubectl wait`.
impl Bed {
    /// The object as a GitOps tool reads it from the API.
    async fn object(&self, name: &str) -> Value {
        let object = self.raw_enrollments().get(name).await.unwrap_or_else(|e| panic!("get enrollment {name}: {e}"));
        serde_json::to_value(object).expect("object as JSON")
    }

    /// `kubectl wait --for=condition=Ready mfae/<name>` with the test bed's kubectl;
    /// returns whether it succeeded, its output and how long it took.
    async fn kubectl_wait_ready(&self, name: &str, timeout: &str) -> (bool, String, Duration) {
        let kubectl = std::env::var_os("MFA_TESTBED_KUBECTL")
            .unwrap_or_else(|| panic!("MFA_TESTBED_KUBECTL is not set: eval \"$(tests/testbed/testbed env)\""));
        let args = [
            "wait".to_owned(),
            "--for=condition=Ready".to_owned(),
            format!("mfae/{name}"),
            "--namespace".to_owned(),
            self.ns.clone(),
            format!("--timeout={timeout}"),
        ];
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let output = Command::new(&kubectl).args(&args).output().expect("run kubectl wait");
            let text =
                format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            (output.status.success(), text, started.elapsed())
        })
        .await
        .expect("kubectl wait thread")
    }
}

fn message_of(object: &Value, kind: &str) -> String {
    object["status"]["conditions"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["type"] == kind))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_else(|| panic!("no {kind} condition in {}", object["status"]))
        .to_owned()
}

#[tokio::test]
async fn kubectl_wait_for_ready_returns_while_users_still_owe_their_codes() {
    let bed = Bed::new("gitops-wait").await;
    let users = bed.users(&["ann", "ben"]).await;
    bed.apply("team", json!({ "mode": "Enroll", "users": { "pathPrefix": format!("/{}/", bed.tag) } })).await;

    // Nobody reconciles yet: kubectl really waits for the condition.
    let (ok, text, _) = bed.kubectl_wait_ready("team", "2s").await;
    assert!(!ok, "kubectl wait succeeded without an operator: {text}");

    let _operator = Operator::start(&bed.ns);
    let (ok, text, took) = bed.kubectl_wait_ready("team", "60s").await;
    assert!(ok, "kubectl wait --for=condition=Ready failed after {took:?}: {text}");
    println!("kubectl wait --for=condition=Ready returned after {took:?}: {}", text.trim());

    // It returned with the devices pending and the people yet to act.
    let team = bed.enrollments.get("team").await.expect("get enrollment");
    assert!(is_true(&team, "Ready"), "{:#?}", team.status);
    let (compliant, reason, _) = find_condition(&team, "Compliant").expect("Compliant condition");
    assert_eq!((compliant.as_str(), reason.as_str()), ("False", "AwaitingCodes"));
    for user in &users {
        assert_eq!(state(&team, user), Some(UserState::Pending), "{user}");
    }
    let devices = iam::devices_under(&bed.iam, &bed.device_path).await;
    assert_eq!(devices.len(), users.len(), "{devices:?}");
    assert!(devices.iter().all(|(_, user)| user.is_none()), "devices pending, not enabled: {devices:?}");
}

#[tokio::test]
async fn kstatus_and_argo_cd_follow_an_enrollment_through_its_life() {
    let bed = Bed::new("gitops-life").await;
    let users = bed.users(&["cat"]).await;
    let user = &users[0];
    let spec = json!({ "mode": "Enroll", "users": { "names": [user] } });
    bed.apply("life", spec.clone()).await;

    // Created, no operator yet: the CRD's status default (observedGeneration 0) makes the
    // new object read as not yet reconciled, for kstatus as for Argo CD.
    let fresh = bed.object("life").await;
    assert_eq!(fresh["status"], json!({ "observedGeneration": 0 }), "{fresh}");
    assert_eq!(argo_health(&fresh).status, "Progressing");
    assert_eq!(
        kstatus(&fresh),
        health(("InProgress", "MfaEnrollment generation is 1, but latest observed generation is 0"))
    );

    // Ready with a pending device: Current for Flux, Suspended (waiting for people) for Argo CD.
    let operator = Operator::start(&bed.ns);
    bed.wait("life", "Ready with the user pending", |e| {
        is_true(e, "Ready") && state(e, user) == Some(UserState::Pending)
    })
    .await;
    let pending = bed.object("life").await;
    assert_eq!(kstatus(&pending), health(("Current", "Resource is Ready")));
    let awaiting = message_of(&pending, "Compliant");
    assert!(awaiting.contains("1 pending codes"), "{awaiting}");
    assert_eq!(argo_health(&pending), Health { status: "Suspended".into(), message: awaiting });

    // A group that does not exist: Stalled, so Failed and Degraded, saying which group.
    let missing_group = format!("{}-nope", bed.tag);
    bed.apply("typo", json!({ "mode": "Report", "users": { "groups": [&missing_group] } })).await;
    bed.wait("typo", "Stalled", |e| is_true(e, "Stalled")).await;
    let stalled = bed.object("typo").await;
    let why = message_of(&stalled, "Stalled");
    assert!(why.contains(&missing_group), "{why}");
    assert_eq!(kstatus(&stalled), Health { status: "Failed".into(), message: why.clone() });
    assert_eq!(argo_health(&stalled), Health { status: "Degraded".into(), message: why });

    // Report mode over the same user: Ready, Compliant False (UsersWithoutMfa).
    bed.apply("report", json!({ "mode": "Report", "users": { "names": [user] } })).await;
    bed.wait("report", "Ready", |e| is_true(e, "Ready")).await;
    let report = bed.object("report").await;
    assert_eq!(kstatus(&report), health(("Current", "Resource is Ready")));
    let without = message_of(&report, "Compliant");
    assert_eq!(argo_health(&report), Health { status: "Suspended".into(), message: without });

    // The spec changes while the operator is down: the status describes an older
    // generation, and both readers wait for the operator.
    let _ = operator.kill();
    let mut changed = spec.clone();
    changed["resyncInterval"] = json!("5m");
    bed.apply("life", changed).await;
    let stale = bed.object("life").await;
    assert_eq!(
        (stale["metadata"]["generation"].as_i64(), stale["status"]["observedGeneration"].as_i64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        kstatus(&stale),
        health(("InProgress", "MfaEnrollment generation is 2, but latest observed generation is 1"))
    );
    assert_eq!(argo_health(&stale), health(("Progressing", STALE)));

    // The operator is back; the user submits two codes and becomes compliant.
    let _operator = Operator::start(&bed.ns);
    let ready = bed.wait("life", "Ready for generation 2", |e| is_true(e, "Ready")).await;
    assert_eq!(kstatus(&bed.object("life").await), health(("Current", "Resource is Ready")));
    let secret = bed.seed_secret(&ready, user).await;
    let seed = data(&secret, "seed").expect("seed in the Secret");
    let (code1, code2) = iam::codes_now(&seed);
    bed.submit(secret.metadata.name.as_deref().expect("Secret name"), &code1, &code2).await;
    bed.wait("life", "Compliant", |e| is_true(e, "Compliant") && is_true(e, "Ready")).await;
    let done = bed.object("life").await;
    assert_eq!(kstatus(&done), health(("Current", "Resource is Ready")));
    let all = message_of(&done, "Compliant");
    assert_eq!(all, "all 1 selected users have an active MFA device");
    assert_eq!(argo_health(&done), Health { status: "Healthy".into(), message: all });
}
