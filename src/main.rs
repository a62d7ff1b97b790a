//! `mfa-operator`: the operator's command line.

use clap::{Parser, Subcommand};

/// Enrols AWS IAM users in virtual MFA, driven by MfaEnrollment resources.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the MfaEnrollment CustomResourceDefinition YAML (same as `crdgen`).
    Crd,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            use kube::CustomResourceExt;
            print!(
                "{}",
                serde_yaml::to_string(&mfa_operator::crd::MfaEnrollment::crd())?
            );
        }
    }
    Ok(())
}
