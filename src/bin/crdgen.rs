//! Prints the CustomResourceDefinition YAML of every type this operator defines.
//! `crds/` holds its output; CI fails when the two differ.

use kube::CustomResourceExt;
use mfa_operator::crd::MfaEnrollment;

fn main() -> anyhow::Result<()> {
    print!("{}", serde_yaml::to_string(&MfaEnrollment::crd())?);
    Ok(())
}
