//! The Helm chart as the apiserver would get it: `helm template` with the test bed's helm.

use std::process::Command;

use serde::Deserialize;

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/mfa-operator");

/// `helm template` of the chart, as JSON objects.
pub fn render(release: &str, namespace: &str, sets: &[(&str, &str)]) -> Vec<serde_json::Value> {
    super::require_testbed();
    let helm = std::env::var("MFA_TESTBED_HELM").unwrap_or_else(|_| {
        panic!(
            "MFA_TESTBED_HELM is not set: run `tests/testbed/testbed build` (it builds helm) and \
             eval \"$(tests/testbed/testbed env)\" again"
        )
    });
    let mut command = Command::new(&helm);
    command.args(["template", release, CHART, "--namespace", namespace]);
    for (key, value) in sets {
        command.arg("--set").arg(format!("{key}={value}"));
    }
    let output = command.output().unwrap_or_else(|e| panic!("run {helm}: {e}"));
    assert!(output.status.success(), "helm template failed: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).expect("helm prints UTF-8");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("helm renders YAML"))
        .filter(|doc| !doc.is_null())
        .map(|doc| serde_json::to_value(doc).expect("YAML object as JSON"))
        .collect()
}

pub fn kind(object: &serde_json::Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}
