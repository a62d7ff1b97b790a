//! Runs the real `mfa-operator` binary against the test bed, one process per test,
//! watching only the test's namespace, with its debug logs captured to a file.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// What the operator logs before anything else (`http::bind`).
pub const FIRST_LINE: &str = "serving /metrics, /healthz, /readyz";

/// Reads an operator's log; panics if it cannot.
pub fn read_log(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read the operator's log {}: {e}", path.display()))
}

/// A running operator; killed when dropped.
pub struct Operator {
    child: Child,
    pub log: PathBuf,
}

impl Operator {
    /// Starts `mfa-operator run -n <namespace>` with the test bed's environment.
    pub fn start(namespace: &str) -> Self {
        Self::start_with(namespace, &[])
    }

    pub fn start_with(namespace: &str, env: &[(&str, &str)]) -> Self {
        Self::start_args(namespace, &["--metrics-address", "127.0.0.1:0"], env)
    }

    /// Starts one replica with leader election: the Lease in `namespace`, held as
    /// `identity`, with a short lease (6 s, renewed 2 s before expiry) so take-overs are quick.
    pub fn start_replica(namespace: &str, identity: &str, env: &[(&str, &str)]) -> Self {
        let args = ["--metrics-address", "127.0.0.1:0", "--leader-election", "--lease-namespace", namespace];
        let lease = ["--identity", identity, "--lease-duration-seconds", "6", "--lease-grace-seconds", "2"];
        Self::start_args(namespace, &[&args[..], &lease[..]].concat(), env)
    }

    /// Starts `mfa-operator run -n <namespace> <args>`.
    pub fn start_args(namespace: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        super::require_testbed();
        let dir = std::env::temp_dir().join("mfa-operator-test-logs");
        std::fs::create_dir_all(&dir).expect("create log dir");
        let log = dir.join(format!("{namespace}-{}.log", args.join("_").replace(['/', ':', '.'], "-")));
        let file = std::fs::File::create(&log).expect("create operator log");
        // MFA_OPERATOR_TEST_BINARY runs the tests against another build (for example an
        // older commit, to see a test fail where the behaviour it names is missing).
        let binary =
            std::env::var("MFA_OPERATOR_TEST_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_mfa-operator").into());
        let child = Command::new(binary)
            .args(["run", "--namespace", namespace, "--log", "debug"])
            .args(args)
            // Apart from the tests' namespaces, whose Secrets some tests count.
            .env("MFA_OPERATOR_INTEGRITY_KEY_NAMESPACE", super::KEY_NAMESPACE)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(file)
            .spawn()
            .expect("start mfa-operator");
        Self { child, log }
    }

    /// Everything the operator logged so far; an unreadable log fails the test.
    pub fn logs(&self) -> String {
        read_log(&self.log)
    }

    /// The log, for scans that look for the absence of something ("no panic", "no IAM
    /// write"): fails unless the operator's first line is in it, so an empty or missing
    /// log cannot pass such a scan.
    pub fn logs_to_scan(&self) -> String {
        let logs = self.logs();
        assert!(
            logs.contains(FIRST_LINE),
            "the operator's log {} lacks its first line {FIRST_LINE:?}",
            self.log.display()
        );
        logs
    }

    /// Polls the log (every 100 ms, bounded by `timeout`) until it contains `needle`;
    /// returns how long that took. The log is a file: there is nothing to watch.
    pub async fn wait_for_log(&self, needle: &str, timeout: std::time::Duration) -> std::time::Duration {
        let started = std::time::Instant::now();
        while !self.logs().contains(needle) {
            assert!(
                started.elapsed() < timeout,
                "the operator did not log {needle:?} within {timeout:?}; its log:\n{}",
                self.logs()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        started.elapsed()
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the operator, as `kill -<signal>` would.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.child.id());
    }

    /// Whether the process has exited (and reaps it).
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().expect("wait for the operator").is_some()
    }

    /// Stops the operator with SIGKILL (no graceful shutdown), as a crash would.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.logs()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
