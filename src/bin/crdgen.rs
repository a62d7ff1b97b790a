//! Prints the CustomResourceDefinition YAML of every type this operator defines.
//! `crds/` holds its output; CI fails when the two differ.

fn main() -> anyhow::Result<()> {
    print!("{}", serde_yaml::to_string(&mfa_operator::crd::crd())?);
    Ok(())
}
