//! `kubectl-mfa`: the kubectl plugin (`kubectl mfa ...`). Its commands (`status`, `qr`,
//! `enroll`) arrive with the shipping issue; the binary name is stable already.

use clap::Parser;

/// Finish and inspect MFA enrollments from the command line.
#[derive(Parser, Debug)]
#[command(name = "kubectl-mfa", version, about)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    eprintln!("kubectl-mfa: no commands yet; see `kubectl get mfaenrollments`");
    std::process::exit(2);
}
