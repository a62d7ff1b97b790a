//! `deploy/iam-policy.json` grants exactly the IAM actions the code calls: nothing
//! missing (the operator would stall on AccessDenied), nothing unused (least privilege).

use std::collections::BTreeSet;

/// IAM actions the adapter calls, read from its source: every `.client.<operation>(`.
fn actions_in_code() -> BTreeSet<String> {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/aws/sdk.rs")).expect("read sdk.rs");
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

fn policy() -> serde_json::Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/iam-policy.json")).expect("read policy");
    serde_json::from_str(&text).expect("policy is JSON")
}

fn statements() -> Vec<serde_json::Value> {
    policy()["Statement"].as_array().expect("statements").clone()
}

fn actions_of(statement: &serde_json::Value) -> Vec<String> {
    statement["Action"]
        .as_array()
        .expect("Action list")
        .iter()
        .map(|a| a.as_str().expect("string").to_owned())
        .collect()
}

#[test]
fn policy_grants_exactly_the_actions_the_code_calls() {
    let code = actions_in_code();
    assert!(code.len() >= 10, "the scan found the adapter's calls: {code:?}");
    let granted: BTreeSet<String> = statements().iter().flat_map(actions_of).collect();
    let missing: Vec<_> = code.difference(&granted).collect();
    let unused: Vec<_> = granted.difference(&code).collect();
    assert!(missing.is_empty(), "deploy/iam-policy.json lacks {missing:?}");
    assert!(unused.is_empty(), "deploy/iam-policy.json grants unused {unused:?}");
}

#[test]
fn device_writes_are_scoped_to_the_operator_path_and_nothing_is_a_wildcard_action() {
    for statement in statements() {
        assert_eq!(statement["Effect"], "Allow");
        let actions = actions_of(&statement);
        assert!(actions.iter().all(|a| !a.contains('*')), "no wildcard actions: {actions:?}");
        let writes_devices = actions.iter().any(|a| a.ends_with("VirtualMFADevice") || a == "iam:TagMFADevice");
        if writes_devices {
            assert_eq!(statement["Resource"], "arn:aws:iam::*:mfa/mfa-operator/*", "{statement}");
        }
        if statement["Resource"] == "*" {
            assert!(
                actions.iter().all(|a| a.contains(":List") || a.contains(":Get") || a.contains(":Generate")),
                "only reads on every resource: {actions:?}"
            );
        }
    }
}
