//! Benchmark of mfa-operator on the local test bed (kube-apiserver + etcd + moto). Not a
//! timed test: it measures and prints a report (markdown) on stdout; progress goes to
//! stderr.
//!
//! Part 1, inventory cost: N IAM users, 90% with an enabled virtual MFA device. The
//! operator's inventory (`Inventory::load` + `select` + `resolve`, exactly what a
//! reconcile does) against the per-user loop an admin scripts by hand (`ListUsers`, then
//! `ListMFADevices` for every user): wall time and IAM requests, repeated R times.
//! **Resets the test bed's moto first** (after waiting for concurrent test runs to end).
//!
//! Part 2, human-step latency: the real `mfa-operator` binary enrolls S users; for each,
//! the time from writing two TOTP codes into its seed Secret until a watch on the
//! `MfaEnrollment` shows the user `Compliant`.
//!
//! ```sh
//! tests/testbed/testbed up && eval "$(tests/testbed/testbed env)"
//! cargo bench --bench enrollment -- --users 2000 --runs 5 --latency-samples 50
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use aws_config::SdkConfig;
use aws_sdk_iam::error::DisplayErrorContext;
use aws_sdk_iam::types::AssignmentStatusType;
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::watcher::Event;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use mfa_operator::aws::{CallCounter, SdkIam, load_sdk_config};
use mfa_operator::controller::selection::select;
use mfa_operator::crd::{MfaEnrollment, UserSelector, UserState};
use mfa_operator::inventory::{Inventory, MfaState};

const HOW_TO_START: &str = "the test bed is not running or its environment is not loaded.\n\
    Start it and load its environment, then run the benchmark again in that shell:\n    \
    tests/testbed/testbed up && eval \"$(tests/testbed/testbed env)\"\n    \
    cargo bench --bench enrollment";

/// Field manager of everything the benchmark writes to Kubernetes.
const MANAGER: &str = "mfa-operator-bench";
/// Upper bound for one user to turn `Compliant` after its codes are written (the goal is
/// under a second; anything near this bound is a failure, not a sample).
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for the CRD to be served and for enrollments to be deleted.
const SHORT_WAIT: Duration = Duration::from_secs(60);
/// How often and how long to wait for concurrent test runs before resetting moto.
const QUIET_POLL: Duration = Duration::from_secs(10);
const QUIET_MAX_POLLS: u32 = 60;

/// Benchmark of the inventory cost and of the human step's latency on the local test bed.
#[derive(Parser, Debug)]
#[command(name = "enrollment")]
struct Args {
    /// IAM users in the inventory benchmark; 90% get an enabled virtual MFA device.
    #[arg(long, default_value_t = 2000)]
    users: usize,
    /// Repetitions of each inventory approach.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Users enrolled one after another in the latency benchmark (at most 200: the
    /// status lists at most 200 users, and their seed Secrets are read from it).
    #[arg(long, default_value_t = 50)]
    latency_samples: usize,
    /// Extra pending users (a second enrollment in the same namespace) waiting while the
    /// latency is measured.
    #[arg(long, default_value_t = 0)]
    background_pending: usize,
    /// IAM requests in flight while setting up and cleaning up moto.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds to wait for the operator to make the enrollments Ready.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
    /// Skip part 1 (and with it the moto reset).
    #[arg(long)]
    skip_inventory: bool,
    /// Skip part 2.
    #[arg(long)]
    skip_latency: bool,
    /// Appended by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.users >= 1 && args.runs >= 1, "--users and --runs must be at least 1");
    ensure!(
        (1..=200).contains(&args.latency_samples),
        "--latency-samples must be between 1 and 200 (the status lists at most 200 users)"
    );
    ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    require_testbed()?;

    let mut report = String::new();
    let sdk_config = load_sdk_config(None).await;
    let iam = aws_sdk_iam::Client::new(&sdk_config);
    let kube = Client::try_default()
        .await
        .map_err(|e| anyhow!("cannot build a Kubernetes client from KUBECONFIG: {e}\n{HOW_TO_START}"))?;
    header(&mut report, &args, &kube).await?;

    if !args.skip_inventory {
        inventory_benchmark(&mut report, &args, &sdk_config, &iam).await?;
    }
    if !args.skip_latency {
        latency_benchmark(&mut report, &args, &iam, &kube).await?;
    }
    print!("{report}");
    Ok(())
}

/// Fails with instructions unless the test bed's environment is present.
fn require_testbed() -> Result<()> {
    let missing: Vec<_> = ["MFA_TESTBED", "KUBECONFIG", "AWS_ENDPOINT_URL", "AWS_REGION"]
        .into_iter()
        .filter(|var| std::env::var_os(var).is_none())
        .collect();
    ensure!(missing.is_empty(), "missing {missing:?}: {HOW_TO_START}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Report header: machine, versions, parameters, command.
// ---------------------------------------------------------------------------------------

async fn header(r: &mut String, args: &Args, kube: &Client) -> Result<()> {
    let apiserver = kube
        .apiserver_version()
        .await
        .map_err(|e| anyhow!("cannot reach the kube-apiserver: {e}\n{HOW_TO_START}"))?
        .git_version;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let kib: u64 =
                text.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let rustc = command_output("rustc", &["--version"]).unwrap_or_else(|| "unknown".into());

    writeln!(r, "# mfa-operator benchmark: inventory cost and human-step latency\n")?;
    writeln!(r, "Started: {:.0}\n", jiff::Timestamp::now())?;
    writeln!(r, "Command (with the test bed up and its environment loaded):\n")?;
    writeln!(r, "```sh\n{}\n```\n", command_line())?;
    writeln!(r, "## Machine and versions\n")?;
    writeln!(r, "- CPU: {cpu}, nproc {cores}; memory {memory}; Linux {}", kernel.trim())?;
    writeln!(
        r,
        "- mfa-operator {} built with the `{}` profile; {rustc}",
        env!("CARGO_PKG_VERSION"),
        if cfg!(debug_assertions) {
            "debug (NOT optimised: figures are not representative)"
        } else {
            "bench (release)"
        }
    )?;
    writeln!(r, "- aws-sdk-iam {}, kube {} (Cargo.lock)", locked_version("aws-sdk-iam"), locked_version("kube"))?;
    writeln!(r, "- kube-apiserver {apiserver} (test bed; etcd v3.6.16)")?;
    writeln!(r, "- moto {} (test bed, one local server process)", moto_version())?;
    writeln!(r, "\n## Parameters\n")?;
    writeln!(
        r,
        "- inventory: {} users (90% with an enabled virtual MFA device), {} runs per approach{}",
        args.users,
        args.runs,
        if args.skip_inventory { " (skipped)" } else { "" }
    )?;
    writeln!(
        r,
        "- latency: {} enrollments, {} other pending users in the namespace{}",
        args.latency_samples,
        args.background_pending,
        if args.skip_latency { " (skipped)" } else { "" }
    )?;
    writeln!(
        r,
        "- set-up concurrency: {} IAM requests in flight; Ready timeout {} s\n",
        args.concurrency, args.timeout
    )?;
    Ok(())
}

/// The command that reproduces this run (`cargo bench` appends `--bench` itself).
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.is_empty() {
        "cargo bench --bench enrollment".into()
    } else {
        format!("cargo bench --bench enrollment -- {}", args.join(" "))
    }
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).stderr(Stdio::null()).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A package's version as Cargo.lock pins it (what this binary was built with).
fn locked_version(package: &str) -> String {
    let lock = include_str!("../Cargo.lock");
    let needle = format!("name = \"{package}\"\nversion = \"");
    lock.find(&needle).and_then(|at| lock[at + needle.len()..].split('"').next()).unwrap_or("unknown").to_owned()
}

/// moto's version from the test bed's own virtualenv, falling back to the pin.
fn moto_version() -> String {
    if let Ok(python) = std::env::var("MFA_TESTBED_PYTHON")
        && let Some(version) =
            command_output(&python, &["-c", "import importlib.metadata as m; print(m.version('moto'))"])
    {
        return version;
    }
    let pins = include_str!("../tests/testbed/requirements.txt");
    pins.lines()
        .find_map(|line| line.strip_prefix("moto[server]=="))
        .map_or_else(|| "unknown".into(), |pin| format!("{pin} (pinned)"))
}

// ---------------------------------------------------------------------------------------
// Part 1: inventory cost.
// ---------------------------------------------------------------------------------------

/// One timed run: wall time and the HTTP requests sent, by IAM operation.
struct Run {
    wall: Duration,
    calls: BTreeMap<String, u64>,
}

/// What one approach found: every user, and the users without an active MFA device.
struct Found {
    users: BTreeSet<String>,
    without_mfa: BTreeSet<String>,
}

async fn inventory_benchmark(
    r: &mut String,
    args: &Args,
    sdk_config: &SdkConfig,
    iam: &aws_sdk_iam::Client,
) -> Result<()> {
    // A reset wipes every IAM object, including those of integration tests running now
    // against the same moto: wait until none runs.
    let waited = wait_for_quiet_testbed().await?;
    let endpoint = std::env::var("AWS_ENDPOINT_URL").context("AWS_ENDPOINT_URL")?;
    eprintln!("resetting the test bed's moto at {endpoint} (all IAM state is cleared)");
    reset_moto(&endpoint)?;

    eprintln!("creating {} users under /bench/ ({} in flight)", args.users, args.concurrency);
    let started = Instant::now();
    let users: Vec<(String, bool)> = (0..args.users).map(|i| (format!("bench-user-{i:05}"), i % 10 != 0)).collect();
    stream::iter(&users)
        .map(|(name, with_mfa)| async move {
            create_user(iam, name, "/bench/").await?;
            if *with_mfa {
                enable_own_device(iam, name).await?;
            }
            anyhow::Ok(())
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    let setup = started.elapsed();
    let expected_all: BTreeSet<String> = users.iter().map(|(name, _)| name.clone()).collect();
    let expected_without: BTreeSet<String> =
        users.iter().filter(|(_, with_mfa)| !with_mfa).map(|(name, _)| name.clone()).collect();
    eprintln!("set-up took {:.1} s", setup.as_secs_f64());

    let measured = measure_inventory(args.runs, sdk_config, iam, &expected_all, &expected_without).await;
    // Leave the shared test bed as small as we found it (after the reset), whatever
    // happened: other runs' inventories sweep the whole account.
    eprintln!("deleting the {} benchmark users", args.users);
    let names: Vec<String> = expected_all.into_iter().collect();
    delete_users(iam, &names, args.concurrency).await?;
    let (operator_runs, naive_runs, concurrent) = measured?;

    writeln!(r, "## Part 1: inventory of {} users, {} without MFA\n", args.users, expected_without.len())?;
    writeln!(
        r,
        "Set-up: the benchmark **reset the test bed's moto** (`POST /moto-api/reset`{}), then created {} users \
         under `/bench/` and gave {} of them an enabled virtual MFA device (own name, path `/`, enabled with \
         two TOTP codes) in {:.1} s ({} requests in flight).\n",
        if waited.is_zero() {
            String::new()
        } else {
            format!(", after waiting {:.0} s for concurrent test runs to end", waited.as_secs_f64())
        },
        args.users,
        args.users - expected_without.len(),
        setup.as_secs_f64(),
        args.concurrency,
    )?;
    writeln!(
        r,
        "Each run uses a fresh client and counts the HTTP requests it really sends (SDK interceptor, retries \
         included). Runs alternate between the two approaches; the operator sends up to 8 `ListMFADevices` at once (as against a calm IAM), the loop one request at a time.\n"
    )?;
    writeln!(
        r,
        "- **operator**: `Inventory::load` (no credential report) + `select(pathPrefix: /)` + \
         `resolve(unresolved)`, i.e. one operator inventory refresh."
    )?;
    writeln!(
        r,
        "- **per-user loop**: `ListUsers` (all pages), then `ListMFADevices` for every user, what an admin \
         scripts with the AWS CLI.\n"
    )?;
    writeln!(r, "| approach | wall min | wall median | wall max | IAM requests per run | by operation |")?;
    writeln!(r, "| --- | ---: | ---: | ---: | ---: | --- |")?;
    for (name, runs) in [("operator", &operator_runs), ("per-user loop", &naive_runs)] {
        let walls = sorted(runs.iter().map(|run| run.wall));
        writeln!(
            r,
            "| {name} | {} | {} | {} | {} | {} |",
            secs(walls[0]),
            secs(median(&walls)),
            secs(walls[walls.len() - 1]),
            request_totals(runs),
            by_operation(runs),
        )?;
    }
    let operator_median = median(&sorted(operator_runs.iter().map(|run| run.wall)));
    let naive_median = median(&sorted(naive_runs.iter().map(|run| run.wall)));
    let operator_calls = median_total(&operator_runs);
    let naive_calls = median_total(&naive_runs);
    writeln!(
        r,
        "| ratio per-user / operator | | {:.1}x | | {:.1}x | |\n",
        naive_median.as_secs_f64() / operator_median.as_secs_f64(),
        naive_calls as f64 / operator_calls.max(1) as f64,
    )?;
    for (name, runs) in [("operator", &operator_runs), ("per-user loop", &naive_runs)] {
        let walls: Vec<String> = runs.iter().map(|run| format!("{:.3}", run.wall.as_secs_f64())).collect();
        writeln!(r, "- {name}, wall time of each run (s): {}", walls.join(", "))?;
    }
    writeln!(
        r,
        "- Check: in every run both approaches found exactly the {} users created and exactly the {} users \
         created without MFA.",
        args.users,
        expected_without.len()
    )?;
    writeln!(r, "- {}", concurrent.summary())?;
    writeln!(
        r,
        "- moto answers `ListUsers` and `GetAccountAuthorizationDetails` in one page whatever the page size; \
         on real AWS the sweeps take a few more pages (1,000 users per page for the operator, 100 by default \
         for `ListUsers`), and each request costs a network round trip, so the request count is the better \
         predictor of wall time there.\n"
    )?;
    Ok(())
}

/// Times both approaches `runs` times each, checking what each found. Interleaved
/// (operator, per-user, operator, ...) so that any drift of the machine or of moto over
/// the run affects both alike.
async fn measure_inventory(
    runs: usize,
    sdk_config: &SdkConfig,
    iam: &aws_sdk_iam::Client,
    expected_all: &BTreeSet<String>,
    expected_without: &BTreeSet<String>,
) -> Result<(Vec<Run>, Vec<Run>, Sightings)> {
    let mut operator_runs = Vec::new();
    let mut naive_runs = Vec::new();
    let mut concurrent = Sightings::default();
    for run in 1..=runs {
        eprintln!("inventory run {run}/{runs}");
        concurrent.look(None);
        let (timing, found) = operator_inventory(sdk_config).await?;
        check_found("the operator's inventory", &found, expected_all, expected_without)?;
        operator_runs.push(timing);
        concurrent.look(None);
        let (timing, found) = naive_inventory(iam).await?;
        check_found("the per-user loop", &found, expected_all, expected_without)?;
        naive_runs.push(timing);
    }
    concurrent.look(None);
    Ok((operator_runs, naive_runs, concurrent))
}

/// The operator's inventory, as a reconcile does it, with a fresh client.
async fn operator_inventory(sdk_config: &SdkConfig) -> Result<(Run, Found)> {
    let iam = SdkIam::new(sdk_config);
    let started = Instant::now();
    let mut inventory =
        Inventory::load(&iam, false, jiff::Timestamp::now()).await.context("the operator's inventory sweep")?;
    let everyone = UserSelector { path_prefix: Some("/".into()), ..UserSelector::default() };
    let selection = select(&everyone, &inventory.users, inventory.console_users.as_ref());
    let unresolved = inventory.unresolved(&selection.users);
    inventory.resolve(&iam, unresolved).await.context("the operator's ListMFADevices calls")?;
    let wall = started.elapsed();
    let without_mfa =
        selection.users.iter().filter(|user| inventory.mfa_state(user) == MfaState::None).cloned().collect();
    Ok((Run { wall, calls: iam.calls().snapshot() }, Found { users: selection.users, without_mfa }))
}

/// `ListUsers`, then `ListMFADevices` for every user, with a fresh counting client.
async fn naive_inventory(iam: &aws_sdk_iam::Client) -> Result<(Run, Found)> {
    let counter = CallCounter::default();
    let client = aws_sdk_iam::Client::from_conf(iam.config().to_builder().interceptor(counter.clone()).build());
    let started = Instant::now();
    let users = client
        .list_users()
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| anyhow!("ListUsers: {}", DisplayErrorContext(e)))?;
    let mut without_mfa = BTreeSet::new();
    for user in &users {
        let devices = client
            .list_mfa_devices()
            .user_name(&user.user_name)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| anyhow!("ListMFADevices {}: {}", user.user_name, DisplayErrorContext(e)))?;
        // ListMFADevices lists assigned devices only, and an assigned device is enabled.
        if devices.is_empty() {
            without_mfa.insert(user.user_name.clone());
        }
    }
    let wall = started.elapsed();
    let users = users.into_iter().map(|user| user.user_name).collect();
    Ok((Run { wall, calls: counter.snapshot() }, Found { users, without_mfa }))
}

fn check_found(
    approach: &str,
    found: &Found,
    expected_all: &BTreeSet<String>,
    expected_without: &BTreeSet<String>,
) -> Result<()> {
    ensure!(
        found.users == *expected_all,
        "{approach} saw {} users, expected exactly the {} this benchmark created ({} unexpected, {} missing): \
         something else wrote to moto during the run (an integration test?); the figures would not be trustworthy",
        found.users.len(),
        expected_all.len(),
        found.users.difference(expected_all).count(),
        expected_all.difference(&found.users).count(),
    );
    ensure!(
        found.without_mfa == *expected_without,
        "{approach} found {} users without MFA, expected exactly the {} created without a device \
         (first differences: {:?} / {:?})",
        found.without_mfa.len(),
        expected_without.len(),
        found.without_mfa.difference(expected_without).take(5).collect::<Vec<_>>(),
        expected_without.difference(&found.without_mfa).take(5).collect::<Vec<_>>(),
    );
    Ok(())
}

/// Total requests per run: one figure when every run made the same requests.
fn request_totals(runs: &[Run]) -> String {
    let totals = sorted(runs.iter().map(|run| run.calls.values().sum::<u64>()));
    if totals[0] == totals[totals.len() - 1] {
        totals[0].to_string()
    } else {
        format!("{}-{} (varied)", totals[0], totals[totals.len() - 1])
    }
}

fn median_total(runs: &[Run]) -> u64 {
    let totals = sorted(runs.iter().map(|run| run.calls.values().sum::<u64>()));
    totals[totals.len() / 2]
}

/// Requests by operation of the first run (with a note when a later run differed).
fn by_operation(runs: &[Run]) -> String {
    let first = &runs[0].calls;
    let text: Vec<String> = first.iter().map(|(operation, count)| format!("{operation} {count}")).collect();
    let mut text = text.join(", ");
    if runs.iter().any(|run| run.calls != *first) {
        text.push_str(" (first run; later runs differed)");
    }
    text
}

/// Waits until no `cargo test` and no integration-test binary runs on this machine:
/// a moto reset would wipe their IAM state mid-test. Returns how long it waited.
async fn wait_for_quiet_testbed() -> Result<Duration> {
    let started = Instant::now();
    for poll in 0..=QUIET_MAX_POLLS {
        let running = running_tests();
        if running.is_empty() {
            return Ok(started.elapsed());
        }
        if poll == QUIET_MAX_POLLS {
            break;
        }
        eprintln!(
            "waiting for test runs to end before resetting moto (poll {}/{QUIET_MAX_POLLS}): {}",
            poll + 1,
            running.join(", ")
        );
        tokio::time::sleep(QUIET_POLL).await;
    }
    bail!(
        "test runs were still using the test bed after {:.0} s; not resetting moto under them. \
         Run the benchmark again when they are done (or with --skip-inventory)",
        started.elapsed().as_secs_f64()
    )
}

/// Processes that use the test bed's moto in a way a reset would break: `cargo test` and
/// test binaries.
fn running_tests() -> Vec<String> {
    neighbours(None).tests
}

/// What else on this machine uses the test bed, described by pid and program name only
/// (other processes' arguments may hold tokens).
#[derive(Default)]
struct Neighbours {
    /// `cargo test` and test binaries.
    tests: Vec<String>,
    /// `mfa-operator run` processes other than `own_operator` (their resyncs sweep the
    /// same moto account).
    operators: Vec<String>,
}

fn neighbours(own_operator: Option<u32>) -> Neighbours {
    let me = std::process::id();
    let mut found = Neighbours::default();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || Some(pid) == own_operator {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|byte| *byte == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        let Some(program) = args.first() else {
            continue;
        };
        let name = program.rsplit('/').next().unwrap_or(program);
        let subcommand = args.iter().skip(1).find(|arg| !arg.starts_with('-') && !arg.starts_with('+'));
        let subcommand = subcommand.map(String::as_str);
        let cargo_test = name == "cargo" && matches!(subcommand, Some("test" | "nextest"));
        // Integration and unit test binaries live in target/<profile>/deps (rustc and
        // build scripts have other program names).
        let test_binary = program.contains("/target/debug/deps/") || program.contains("/target/release/deps/");
        if cargo_test || test_binary {
            found.tests.push(format!("pid {pid} ({})", if cargo_test { "cargo test" } else { name }));
        } else if name == "mfa-operator" && subcommand == Some("run") {
            found.operators.push(format!("pid {pid}"));
        }
    }
    found
}

/// Test runs and other operators seen on this machine at the checks between timed
/// steps: they share the CPU and the test bed with the benchmark, so the report says
/// whether any ran.
#[derive(Default)]
struct Sightings {
    checks: u32,
    tests: BTreeSet<String>,
    operators: BTreeSet<String>,
}

impl Sightings {
    fn look(&mut self, own_operator: Option<u32>) {
        let found = neighbours(own_operator);
        self.checks += 1;
        self.tests.extend(found.tests);
        self.operators.extend(found.operators);
    }

    fn summary(&self) -> String {
        let tests = if self.tests.is_empty() {
            format!("No test run was seen on this machine at the {} checks between timed steps", self.checks)
        } else {
            format!(
                "Test runs seen on this machine at the {} checks between timed steps (they share CPU and the \
                 test bed, so the figures may be inflated): {}",
                self.checks,
                self.tests.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        };
        let operators = if self.operators.is_empty() {
            "no other mfa-operator was running".to_owned()
        } else {
            format!(
                "other mfa-operator processes running (idle between their resyncs unless their enrollments \
                 change): {}",
                self.operators.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        };
        format!("{tests}; {operators}.")
    }
}

/// `POST /moto-api/reset` over plain HTTP (the test bed's moto listens on loopback).
fn reset_moto(endpoint: &str) -> Result<()> {
    let authority = endpoint
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|authority| !authority.contains('/'))
        .with_context(|| format!("AWS_ENDPOINT_URL={endpoint} is not the test bed's plain-HTTP moto"))?;
    let mut stream =
        std::net::TcpStream::connect(authority).with_context(|| format!("connect to moto at {authority}"))?;
    stream.set_read_timeout(Some(SHORT_WAIT))?;
    write!(
        stream,
        "POST /moto-api/reset HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).context("read moto's answer to the reset")?;
    let response = String::from_utf8_lossy(&response);
    let status = response.lines().next().unwrap_or_default();
    ensure!(status.split_whitespace().nth(1) == Some("200"), "moto answered the reset with {status:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Part 2: human-step latency.
// ---------------------------------------------------------------------------------------

async fn latency_benchmark(r: &mut String, args: &Args, iam: &aws_sdk_iam::Client, kube: &Client) -> Result<()> {
    install_crd(kube).await?;
    let tag = unique_tag();
    let namespace = format!("mfa-bench-{tag}");
    Api::<Namespace>::all(kube.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({ "metadata": { "name": namespace } }))?,
        )
        .await
        .with_context(|| format!("create namespace {namespace}"))?;
    eprintln!("latency benchmark in namespace {namespace}");
    let mut operator = OperatorProcess::start(&namespace)?;

    let main = Group::new(
        "latency",
        format!("bl-{tag}"),
        format!("/bench-latency-{tag}/"),
        format!("/bench-{tag}/"),
        args.latency_samples,
    );
    let background = Group::new(
        "background",
        format!("bg-{tag}"),
        format!("/bench-latency-{tag}-bg/"),
        format!("/bench-{tag}-bg/"),
        args.background_pending,
    );
    let groups: Vec<&Group> = [&main, &background].into_iter().filter(|group| !group.users.is_empty()).collect();

    let outcome = measure_latency(args, iam, kube, &namespace, &mut operator, &main, &groups).await;

    // Clean up whatever happened: the operator removes its pending devices and Secrets
    // when the enrollments are deleted; the users and their enabled devices are ours.
    let enrollments: Api<MfaEnrollment> = Api::namespaced(kube.clone(), &namespace);
    for group in &groups {
        if let Err(e) = delete_enrollment(&enrollments, &group.enrollment).await {
            eprintln!("warning: {e}");
        }
    }
    let operator_log = operator.stop();
    for group in &groups {
        if let Err(e) = delete_users(iam, &group.users, args.concurrency).await {
            eprintln!("warning: cleaning up the users of {}: {e}", group.enrollment);
        }
        if let Err(e) = delete_unassigned_devices(iam, &group.device_path).await {
            eprintln!("warning: cleaning up devices under {}: {e}", group.device_path);
        }
    }
    let result = outcome.map_err(|e| anyhow!("{e:#}\noperator log (warn level), last lines:\n{operator_log}"))?;

    let sorted_latencies = sorted(result.latencies.iter().copied());
    let writes = sorted(result.writes.iter().copied());
    let n = sorted_latencies.len();
    let p99 = percentile(&sorted_latencies, 99.0);
    writeln!(r, "## Part 2: human-step latency, {n} enrollments, {} other pending users\n", args.background_pending)?;
    writeln!(
        r,
        "The real `mfa-operator run --namespace {namespace} --log warn --metrics-address 127.0.0.1:0` (bench profile) enrolled {n} users \
         (`mode: Enroll`, users selected by `pathPrefix`){}; every seed Secret was in place and \
         every enrollment Ready {:.1} s after they were applied. Then, one user at a time: read the seed from the user's Secret, \
         compute the previous and the current 30 s code with `totp-rs` (as a phone app does), and measure from \
         just before the merge-patch writing `code1`/`code2` into the Secret until a watch on the \
         `MfaEnrollment` (one long-lived stream, no polling) shows the user `Compliant`.\n",
        if args.background_pending > 0 {
            format!(
                ", with a second enrollment in the same namespace holding {} pending users",
                args.background_pending
            )
        } else {
            String::new()
        },
        result.ready.as_secs_f64(),
    )?;
    writeln!(r, "| samples | min | p50 | p90 | p99 | max | mean |")?;
    writeln!(r, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")?;
    writeln!(
        r,
        "| {n} | {} | {} | {} | {} | {} | {} |\n",
        millis(sorted_latencies[0]),
        millis(percentile(&sorted_latencies, 50.0)),
        millis(percentile(&sorted_latencies, 90.0)),
        millis(p99),
        millis(sorted_latencies[n - 1]),
        millis(sorted_latencies.iter().sum::<Duration>() / n as u32),
    )?;
    writeln!(
        r,
        "- Percentiles are nearest-rank{}.",
        if n < 100 { "; with fewer than 100 samples p99 is the maximum" } else { "" }
    )?;
    writeln!(
        r,
        "- Of this, the merge-patch request itself took p50 {} / max {} (kube-apiserver round trip).",
        millis(percentile(&writes, 50.0)),
        millis(writes[writes.len() - 1])
    )?;
    writeln!(
        r,
        "- Checked in IAM after the run (`ListMFADevices` per user): each of the {n} users holds exactly one \
         assigned device, the operator's under `{}`.",
        main.device_path
    )?;
    writeln!(r, "- {}", result.concurrent.summary())?;
    writeln!(
        r,
        "- Goal (issue 3): p99 under 1 s: **{}**.\n",
        if p99 < Duration::from_secs(1) { "met" } else { "not met" }
    )?;
    Ok(())
}

/// The IAM users of one `MfaEnrollment` in the latency benchmark.
struct Group {
    enrollment: String,
    user_path: String,
    device_path: String,
    users: Vec<String>,
}

impl Group {
    fn new(enrollment: &str, prefix: String, user_path: String, device_path: String, count: usize) -> Self {
        Self {
            enrollment: enrollment.into(),
            user_path,
            device_path,
            users: (0..count).map(|i| format!("{prefix}-{i:04}")).collect(),
        }
    }
}

struct Latencies {
    /// Time from applying the enrollments until every user was pending and Ready.
    ready: Duration,
    /// Codes written -> user seen `Compliant`, one per user.
    latencies: Vec<Duration>,
    /// Duration of the merge-patch request alone, one per user.
    writes: Vec<Duration>,
    concurrent: Sightings,
}

async fn measure_latency(
    args: &Args,
    iam: &aws_sdk_iam::Client,
    kube: &Client,
    namespace: &str,
    operator: &mut OperatorProcess,
    main: &Group,
    groups: &[&Group],
) -> Result<Latencies> {
    let enrollments: Api<MfaEnrollment> = Api::namespaced(kube.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), namespace);

    let all_users: Vec<(&String, &str)> =
        groups.iter().flat_map(|group| group.users.iter().map(|user| (user, group.user_path.as_str()))).collect();
    eprintln!("creating {} users without MFA", all_users.len());
    stream::iter(all_users)
        .map(|(user, path)| create_user(iam, user, path))
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<()>>()
        .await?;

    // What the platform team grants each group: this namespace, its users, its device path.
    for group in groups {
        let binding = serde_json::json!({
            "apiVersion": "iam.mfa-operator.dev/v1alpha1",
            "kind": "MfaAccountBinding",
            "metadata": { "name": format!("{namespace}-{}", group.enrollment) },
            "spec": {
                "accountId": MOTO_ACCOUNT,
                "namespaces": { "names": [namespace] },
                "users": { "pathPrefixes": [group.user_path] },
                "device": { "path": group.device_path },
                "allowEnroll": true,
            },
        });
        let name = format!("{namespace}-{}", group.enrollment);
        Api::<mfa_operator::crd::MfaAccountBinding>::all(kube.clone())
            .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&binding))
            .await
            .with_context(|| format!("apply MfaAccountBinding {name}"))?;
    }
    let started = Instant::now();
    for group in groups {
        let object = serde_json::json!({
            "apiVersion": "iam.mfa-operator.dev/v1alpha1",
            "kind": "MfaEnrollment",
            "metadata": { "name": group.enrollment },
            "spec": {
                "accountRef": { "name": format!("{namespace}-{}", group.enrollment) },
                "mode": "Enroll",
                "users": { "pathPrefix": group.user_path },
            },
        });
        enrollments
            .patch(&group.enrollment, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&object))
            .await
            .with_context(|| format!("apply MfaEnrollment {}", group.enrollment))?;
    }
    let timeout = Duration::from_secs(args.timeout);
    for group in groups {
        let expected = group.users.len() as u32;
        let ready = move |e: Option<&MfaEnrollment>| {
            e.is_some_and(|e| {
                is_ready(e) && e.status.as_ref().and_then(|s| s.summary.as_ref()).is_some_and(|s| s.pending == expected)
            })
        };
        let waited = tokio::select! {
            waited = tokio::time::timeout(timeout, await_condition(enrollments.clone(), &group.enrollment, ready)) => waited,
            status = operator.exited() => bail!("the operator exited ({status}) before {} was Ready", group.enrollment),
        };
        if !matches!(waited, Ok(Ok(Some(_)))) {
            let last = enrollments.get_opt(&group.enrollment).await.ok().flatten();
            bail!(
                "{} was not Ready with {expected} pending users within {timeout:?} (operator {}); last status: {}",
                group.enrollment,
                operator.state(),
                describe_status(last.as_ref())
            );
        }
    }
    let ready = started.elapsed();
    eprintln!("enrollments Ready after {:.1} s", ready.as_secs_f64());

    // Read every seed before measuring: the reads are not part of the human step.
    let enrollment = enrollments.get(&main.enrollment).await.context("get the enrollment")?;
    let status_users = enrollment.status.map(|s| s.users).unwrap_or_default();
    let mut seeds = Vec::new();
    for user in &main.users {
        let secret_name = status_users
            .iter()
            .find(|u| &u.name == user)
            .and_then(|u| u.seed_secret.clone())
            .with_context(|| format!("{user} has no seed Secret in the enrollment's status"))?;
        let secret = secrets.get(&secret_name).await.with_context(|| format!("get Secret {secret_name}"))?;
        let seed = secret
            .data
            .as_ref()
            .and_then(|data| data.get("seed"))
            .map(|seed| String::from_utf8_lossy(&seed.0).into_owned())
            .with_context(|| format!("Secret {secret_name} has no seed"))?;
        seeds.push((user, secret_name, seed));
    }

    // One watch over the whole measurement; it must have listed the object before the
    // first write, so that every later change arrives as an event.
    let mut events =
        watcher(enrollments.clone(), watcher::Config::default().fields(&format!("metadata.name={}", main.enrollment)))
            .default_backoff()
            .boxed();
    tokio::time::timeout(SHORT_WAIT, async {
        while let Some(event) = events.next().await {
            if matches!(event, Ok(Event::InitDone)) {
                return Ok(());
            }
        }
        bail!("the watch on {} ended before its initial list", main.enrollment)
    })
    .await
    .context("the watch on the enrollment did not start")??;

    let mut latencies = Vec::new();
    let mut writes = Vec::new();
    let mut concurrent = Sightings::default();
    for (i, (user, secret_name, seed)) in seeds.iter().enumerate() {
        concurrent.look(Some(operator.id()));
        let (code1, code2) = phone_codes(seed)?;
        let patch = serde_json::json!({ "stringData": { "code1": code1, "code2": code2 } });
        let started = Instant::now();
        secrets
            .patch(secret_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("write the codes into Secret {secret_name}"))?;
        writes.push(started.elapsed());
        let deadline = tokio::time::Instant::now() + SAMPLE_TIMEOUT;
        let mut last = None;
        let compliant_at = loop {
            let Ok(event) = tokio::time::timeout_at(deadline, events.next()).await else {
                bail!(
                    "{user} not Compliant {SAMPLE_TIMEOUT:?} after its codes were written (operator {}); \
                     its last status: {}",
                    operator.state(),
                    last.unwrap_or_else(|| "no change seen".into())
                );
            };
            match event {
                Some(Ok(Event::Apply(e) | Event::InitApply(e))) => {
                    let status = e.status.as_ref().and_then(|s| s.users.iter().find(|u| &u.name == *user));
                    if status.is_some_and(|u| u.state == UserState::Compliant) {
                        break Instant::now();
                    }
                    last = status.map(|u| format!("{:?}: {}", u.state, u.message.as_deref().unwrap_or("")));
                }
                Some(Ok(_)) => {}
                // The watcher re-lists with backoff on its own; the deadline bounds it.
                Some(Err(e)) => eprintln!("watch error (the watcher retries): {e}"),
                None => bail!("the watch on {} ended", main.enrollment),
            }
        };
        latencies.push(compliant_at - started);
        eprintln!("sample {}/{}: {}", i + 1, seeds.len(), millis(compliant_at - started));
    }
    concurrent.look(Some(operator.id()));
    check_enabled_in_iam(iam, main).await?;
    Ok(Latencies { ready, latencies, writes, concurrent })
}

/// The clock stops on the operator's own status; IAM is the ground truth. Every sampled
/// user must hold exactly one assigned MFA device, the operator's (under its path).
async fn check_enabled_in_iam(iam: &aws_sdk_iam::Client, group: &Group) -> Result<()> {
    let expected = format!(":mfa{}", group.device_path);
    for user in &group.users {
        let devices = iam
            .list_mfa_devices()
            .user_name(user)
            .send()
            .await
            .map_err(|e| anyhow!("list the devices of {user}: {}", DisplayErrorContext(e)))?
            .mfa_devices;
        let serials: Vec<&str> = devices.iter().map(|d| d.serial_number.as_str()).collect();
        if serials.len() != 1 || !serials[0].contains(&expected) {
            bail!("{user} was reported Compliant, but IAM lists its assigned devices as {serials:?}");
        }
    }
    Ok(())
}

fn is_ready(e: &MfaEnrollment) -> bool {
    let Some(status) = e.status.as_ref() else {
        return false;
    };
    status.observed_generation == e.metadata.generation
        && status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The parts of a status that explain a timeout (status never holds seeds or codes).
fn describe_status(e: Option<&MfaEnrollment>) -> String {
    let Some(status) = e.and_then(|e| e.status.as_ref()) else {
        return "none".into();
    };
    let conditions: Vec<String> =
        status.conditions.iter().map(|c| format!("{}={} ({}: {})", c.type_, c.status, c.reason, c.message)).collect();
    format!("summary {:?}; conditions {}", status.summary, conditions.join("; "))
}

/// Applies the committed CRD (server-side, idempotent) and waits until it is served.
async fn install_crd(kube: &Client) -> Result<()> {
    for text in [
        include_str!("../crds/mfaaccountbindings.iam.mfa-operator.dev.yaml"),
        include_str!("../crds/mfaenrollments.iam.mfa-operator.dev.yaml"),
    ] {
        install_one_crd(kube, text).await?;
    }
    Ok(())
}

async fn install_one_crd(kube: &Client, text: &str) -> Result<()> {
    let crd: CustomResourceDefinition = serde_yaml::from_str(text).context("parse the committed CRD")?;
    let name = crd.name_any();
    let api = Api::<CustomResourceDefinition>::all(kube.clone());
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&crd))
        .await
        .with_context(|| format!("apply CRD {name}"))?;
    tokio::time::timeout(SHORT_WAIT, await_condition(api, &name, conditions::is_crd_established()))
        .await
        .with_context(|| format!("CRD {name} not Established within {SHORT_WAIT:?}"))?
        .with_context(|| format!("watch CRD {name}"))?
        .with_context(|| format!("CRD {name} disappeared"))?;
    Ok(())
}

/// Deletes an enrollment and waits (bounded) until the operator has let it go.
async fn delete_enrollment(api: &Api<MfaEnrollment>, name: &str) -> Result<()> {
    let Some(existing) = api.get_opt(name).await.with_context(|| format!("get {name}"))? else {
        return Ok(());
    };
    let uid = existing.uid().unwrap_or_default();
    api.delete(name, &DeleteParams::default()).await.with_context(|| format!("delete {name}"))?;
    tokio::time::timeout(SHORT_WAIT, await_condition(api.clone(), name, conditions::is_deleted(&uid)))
        .await
        .with_context(|| format!("{name} still present {SHORT_WAIT:?} after its deletion"))?
        .with_context(|| format!("watch {name}"))?;
    Ok(())
}

/// The account moto answers for with the test bed's credentials.
const MOTO_ACCOUNT: &str = "123456789012";

/// A unique, DNS- and IAM-safe suffix for this run's names.
fn unique_tag() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_nanos();
    format!("{:x}", nanos % 0xffff_ffff_ffff)
}

/// The operator binary of this build, watching one namespace; killed when dropped.
struct OperatorProcess {
    child: Child,
    log: PathBuf,
}

impl OperatorProcess {
    fn start(namespace: &str) -> Result<Self> {
        let log = std::env::temp_dir().join(format!("mfa-operator-bench-{namespace}.log"));
        let file = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = Command::new(env!("CARGO_BIN_EXE_mfa-operator"))
            // An ephemeral metrics port: other operators may run on this machine.
            .args(["run", "--namespace", namespace, "--log", "warn", "--metrics-address", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .context("start mfa-operator")?;
        eprintln!("operator pid {} logging to {}", child.id(), log.display());
        Ok(Self { child, log })
    }

    /// Whether it still runs (for error messages).
    fn id(&self) -> u32 {
        self.child.id()
    }

    fn state(&mut self) -> String {
        match self.child.try_wait() {
            Ok(None) => "running".into(),
            Ok(Some(status)) => format!("exited: {status}"),
            Err(e) => format!("unknown: {e}"),
        }
    }

    /// Resolves when it exits, so that a crash fails the benchmark at once instead of
    /// after the whole timeout (std has no async child wait; a short poll is enough).
    async fn exited(&mut self) -> std::process::ExitStatus {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Kills it and returns the last lines of its log.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// IAM set-up through the plain SDK, and TOTP codes as a phone computes them.
// ---------------------------------------------------------------------------------------

async fn create_user(iam: &aws_sdk_iam::Client, name: &str, path: &str) -> Result<()> {
    iam.create_user()
        .user_name(name)
        .path(path)
        .send()
        .await
        .map_err(|e| anyhow!("create user {name}: {}", DisplayErrorContext(e)))?;
    Ok(())
}

/// Gives `user` an enabled virtual device named after it at path `/`, outside any
/// operator path, as a person who set up MFA in the console would have.
async fn enable_own_device(iam: &aws_sdk_iam::Client, user: &str) -> Result<()> {
    let created = iam
        .create_virtual_mfa_device()
        .virtual_mfa_device_name(format!("bench-own-{user}"))
        .send()
        .await
        .map_err(|e| anyhow!("create a device for {user}: {}", DisplayErrorContext(e)))?;
    let device = created.virtual_mfa_device.with_context(|| format!("no device in the answer for {user}"))?;
    let seed = device
        .base32_string_seed
        .map(|blob| String::from_utf8_lossy(blob.as_ref()).into_owned())
        .with_context(|| format!("no seed in the answer for {user}"))?;
    let (code1, code2) = phone_codes(&seed)?;
    iam.enable_mfa_device()
        .user_name(user)
        .serial_number(&device.serial_number)
        .authentication_code1(code1)
        .authentication_code2(code2)
        .send()
        .await
        .map_err(|e| anyhow!("enable the device of {user}: {}", DisplayErrorContext(e)))?;
    Ok(())
}

/// Deactivates and deletes each user's MFA devices, then the user.
async fn delete_users(iam: &aws_sdk_iam::Client, users: &[String], concurrency: usize) -> Result<()> {
    stream::iter(users)
        .map(|user| async move {
            let devices = iam
                .list_mfa_devices()
                .user_name(user)
                .send()
                .await
                .map_err(|e| anyhow!("list the devices of {user}: {}", DisplayErrorContext(e)))?
                .mfa_devices;
            for device in devices {
                let serial = &device.serial_number;
                iam.deactivate_mfa_device()
                    .user_name(user)
                    .serial_number(serial)
                    .send()
                    .await
                    .map_err(|e| anyhow!("deactivate {serial}: {}", DisplayErrorContext(e)))?;
                iam.delete_virtual_mfa_device()
                    .serial_number(serial)
                    .send()
                    .await
                    .map_err(|e| anyhow!("delete {serial}: {}", DisplayErrorContext(e)))?;
            }
            iam.delete_user()
                .user_name(user)
                .send()
                .await
                .map_err(|e| anyhow!("delete user {user}: {}", DisplayErrorContext(e)))?;
            anyhow::Ok(())
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Deletes unassigned devices left under `path` (should the operator not have).
async fn delete_unassigned_devices(iam: &aws_sdk_iam::Client, path: &str) -> Result<()> {
    let marker = format!(":mfa{path}");
    let devices = iam
        .list_virtual_mfa_devices()
        .assignment_status(AssignmentStatusType::Unassigned)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| anyhow!("list virtual devices: {}", DisplayErrorContext(e)))?;
    for device in devices.iter().filter(|d| d.serial_number.contains(&marker)) {
        iam.delete_virtual_mfa_device()
            .serial_number(&device.serial_number)
            .send()
            .await
            .map_err(|e| anyhow!("delete {}: {}", device.serial_number, DisplayErrorContext(e)))?;
    }
    Ok(())
}

/// The previous and the current code of a seed (RFC 6238: SHA-1, 6 digits, 30 s), as a
/// person reads two consecutive codes off a phone. Uses `totp-rs`, not the product's TOTP.
fn phone_codes(seed_base32: &str) -> Result<(String, String)> {
    // The error would not print the seed, but say nothing about it anyway.
    let secret =
        totp_rs::Secret::try_from_base32(seed_base32.trim()).map_err(|_| anyhow!("a seed is not valid base32"))?;
    let totp = totp_rs::Builder::new().with_secret(secret).build().map_err(|e| anyhow!("TOTP parameters: {e}"))?;
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).context("clock before 1970")?.as_secs();
    Ok((totp.generate(now - 30).to_string(), totp.generate(now).to_string()))
}

// ---------------------------------------------------------------------------------------
// Statistics and formatting.
// ---------------------------------------------------------------------------------------

fn sorted<T: Ord>(values: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut values: Vec<T> = values.into_iter().collect();
    values.sort();
    values
}

fn median(sorted: &[Duration]) -> Duration {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2 }
}

/// Nearest-rank percentile: the smallest sample with at least `p`% of the samples at or
/// below it.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
