//! Writes the CustomResourceDefinition YAML of every type this operator defines into a
//! directory (`crds/` holds its output), or with `--check` says which files there differ
//! from what the types give (CI fails on any).
//!
//!     cargo run --bin crdgen -- crds            # write
//!     cargo run --bin crdgen -- --check crds    # check

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.first().is_some_and(|a| a == "--check");
    if check {
        args.remove(0);
    }
    let [dir] = args.as_slice() else {
        anyhow::bail!("usage: crdgen [--check] DIR");
    };
    let mut stale = Vec::new();
    for crd in mfa_operator::crd::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let path = PathBuf::from(dir).join(format!("{name}.yaml"));
        let yaml = serde_yaml::to_string(&crd)?;
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
                stale.push(path.display().to_string());
            }
        } else {
            std::fs::write(&path, yaml)?;
        }
    }
    if !stale.is_empty() {
        anyhow::bail!("stale: {}; run 'cargo run --bin crdgen -- {dir}'", stale.join(", "));
    }
    Ok(())
}
