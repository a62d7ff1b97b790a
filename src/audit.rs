//! `mfa-operator audit`: a one-shot compliance report for one AWS account, without
//! Kubernetes.
//!
//! It runs the controller's own code: [`Inventory::load`] sweeps the account,
//! [`select`] evaluates the same selector as `spec.users`, and [`Inventory::resolve`]
//! asks `ListMFADevices` only for selected users no assigned virtual device covers. An
//! audit therefore costs what one inventory refresh costs: O(pages + uncovered users)
//! IAM requests, never one per user.
//!
//! - [`AuditArgs`]: the flags, checked with the CRD's own rules (IAM name syntax and
//!   lengths, path prefix, tag keys), so a value the apiserver would refuse in
//!   `spec.users` is refused here too.
//! - [`build`]: pure: an inventory and a selection give a [`Report`].
//! - [`audit`]: gathers the inventory over any [`IamApi`] and builds the report.
//! - [`run`]: the binary's thin runner: AWS configuration, output, [`Exit`] status.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::LazyLock;

use clap::{Args, ValueEnum};
use jiff::Timestamp;
use regex::{Regex, RegexBuilder};
use serde::Serialize;

use crate::aws::{IamApi, IamError, SdkIam};
use crate::controller::accounts::{AccountKey, sdk_config};
use crate::controller::selection::{Selection, select};
// The CRD's own bounds: flags are checked against exactly what the schema enforces.
use crate::crd::limits::*;
use crate::crd::{Summary, UserSelector, UserState};
use crate::inventory::{Inventory, MfaState};

fn ascii_regex(pattern: &str) -> Regex {
    RegexBuilder::new(pattern).unicode(false).build().expect("static CRD pattern compiles")
}

static IAM_NAME: LazyLock<Regex> = LazyLock::new(|| ascii_regex(IAM_NAME_PATTERN));
static PATH_PREFIX: LazyLock<Regex> = LazyLock::new(|| ascii_regex(PATH_PREFIX_PATTERN));
static TAG_KEY: LazyLock<Regex> = LazyLock::new(|| Regex::new(TAG_KEY_PATTERN).expect("static CRD pattern compiles"));
static REGION: LazyLock<Regex> = LazyLock::new(|| ascii_regex(REGION_PATTERN));
static ROLE_ARN: LazyLock<Regex> = LazyLock::new(|| ascii_regex(ROLE_ARN_PATTERN));
static EXTERNAL_ID: LazyLock<Regex> = LazyLock::new(|| ascii_regex(EXTERNAL_ID_PATTERN));

/// IAM permissions an audit uses, for the hint after `AccessDenied`.
const PERMISSIONS: &str = "iam:GetAccountAuthorizationDetails, iam:ListVirtualMFADevices, iam:ListGroups, \
    iam:GetAccountSummary, iam:ListMFADevices (and iam:GenerateCredentialReport, \
    iam:GetCredentialReport with --console-access-only)";

const AFTER_HELP: &str = "\
With no selector flag (--names, --path-prefix, --groups, --tag) every user of the account
is audited, as with --path-prefix /; --exclude and --console-access-only narrow either.

Exit status:
  0  every selected user has an active MFA device
  1  at least one selected user has no active MFA device
  2  usage error: a flag value spec.users would refuse, or a group that does not exist
  3  AWS error (the message is stripped of request ids and credentials)";

/// How `mfa-operator audit` ends; [`Exit::code`] is the process exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Every selected user has an active MFA device.
    Compliant,
    /// At least one selected user has no active MFA device.
    UsersWithoutMfa,
    /// A flag value was refused (same status as clap's own usage errors).
    Usage,
    /// IAM or STS failed, or the report could not be written.
    AwsError,
}

impl Exit {
    pub fn code(self) -> i32 {
        match self {
            Self::Compliant => 0,
            Self::UsersWithoutMfa => 1,
            Self::Usage => 2,
            Self::AwsError => 3,
        }
    }
}

/// Output format of the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Users without MFA as a table, a summary line, and IAM requests on stderr.
    #[default]
    Table,
    /// The whole report as one JSON object (stable field names).
    Json,
}

/// Names from one `--names`, `--groups` or `--exclude` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameList(pub Vec<String>);

/// Flags of `mfa-operator audit`. The selector flags mean what `spec.users` means.
#[derive(Args, Clone, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct AuditArgs {
    /// IAM user names, comma-separated or repeated (`\,` for a comma inside a name);
    /// names that do not exist are reported as not found.
    #[arg(long, value_name = "NAME,...", value_parser = user_names, help_heading = "Selection (spec.users)")]
    pub names: Vec<NameList>,

    /// Every user whose IAM path starts with this prefix, for example /engineering/.
    #[arg(long, value_name = "PREFIX", value_parser = path_prefix, help_heading = "Selection (spec.users)")]
    pub path_prefix: Option<String>,

    /// Every member of these IAM groups, comma-separated or repeated.
    #[arg(long, value_name = "GROUP,...", value_parser = group_names, help_heading = "Selection (spec.users)")]
    pub groups: Vec<NameList>,

    /// Users carrying this tag with exactly this value; repeat for more (all must match).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = tag, help_heading = "Selection (spec.users)")]
    pub tags: Vec<(String, String)>,

    /// IAM user names never audited, comma-separated or repeated.
    #[arg(long, value_name = "NAME,...", value_parser = user_names, help_heading = "Selection (spec.users)")]
    pub exclude: Vec<NameList>,

    /// Only users with a console password (from the IAM credential report).
    #[arg(long, help_heading = "Selection (spec.users)")]
    pub console_access_only: bool,

    /// AWS region for IAM and STS (default: the standard AWS configuration).
    #[arg(long, value_name = "REGION", value_parser = region, help_heading = "AWS (spec.aws)")]
    pub region: Option<String>,

    /// IAM role to assume through STS to audit another account.
    #[arg(long, value_name = "ARN", value_parser = role_arn, help_heading = "AWS (spec.aws)")]
    pub role_arn: Option<String>,

    /// External ID the role's trust policy requires.
    #[arg(long, value_name = "ID", requires = "role_arn", value_parser = external_id, help_heading = "AWS (spec.aws)")]
    pub external_id: Option<String>,

    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// List compliant users too (table and JSON).
    #[arg(long)]
    pub show_compliant: bool,
}

impl AuditArgs {
    /// The selector the flags describe, with the CRD's rules across flags: bounded lists,
    /// no duplicates, no name both selected and excluded. No selector flag means every
    /// user (`pathPrefix: /`).
    pub fn selector(&self) -> Result<UserSelector, String> {
        let flat = |lists: &[NameList]| lists.iter().flat_map(|l| l.0.iter().cloned()).collect::<Vec<String>>();
        let names = flat(&self.names);
        let groups = flat(&self.groups);
        let exclude = flat(&self.exclude);
        bounded_set("--names", &names, MAX_NAMES)?;
        bounded_set("--groups", &groups, MAX_GROUPS)?;
        bounded_set("--exclude", &exclude, MAX_EXCLUDE)?;
        let keys: Vec<String> = self.tags.iter().map(|(k, _)| k.clone()).collect();
        bounded_set("--tag", &keys, MAX_TAGS)?;
        if let Some(both) = names.iter().find(|n| exclude.contains(n)) {
            return Err(format!("{both} is in both --names and --exclude"));
        }
        let no_selector = names.is_empty() && self.path_prefix.is_none() && groups.is_empty() && keys.is_empty();
        let some = |v: Vec<String>| (!v.is_empty()).then_some(v);
        Ok(UserSelector {
            names: some(names),
            path_prefix: if no_selector { Some("/".to_owned()) } else { self.path_prefix.clone() },
            groups: some(groups),
            tags: (!self.tags.is_empty()).then(|| self.tags.iter().cloned().collect()),
            exclude: some(exclude),
            console_access_only: self.console_access_only,
        })
    }

    /// Which credentials reach the account, exactly as for an enrollment's `spec.aws`.
    pub fn account_key(&self) -> AccountKey {
        AccountKey {
            role_arn: self.role_arn.clone(),
            external_id: self.external_id.clone(),
            region: self.region.clone(),
        }
    }
}

/// At most `max` values, each once (the CRD's lists are sets).
fn bounded_set(flag: &str, values: &[String], max: usize) -> Result<(), String> {
    if values.len() > max {
        return Err(format!("{flag}: at most {max} values, got {}", values.len()));
    }
    let mut seen = BTreeSet::new();
    match values.iter().find(|v| !seen.insert(v.as_str())) {
        Some(twice) => Err(format!("{flag}: {twice} is given twice")),
        None => Ok(()),
    }
}

/// Splits at commas not escaped as `\,`.
fn split_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                current.push(',');
                chars.next();
            }
            ',' => items.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    items.push(current);
    items
}

fn name_list(value: &str, what: &str, max: usize) -> Result<NameList, String> {
    let names = split_list(value);
    for name in &names {
        if name.is_empty() {
            return Err(format!("an empty {what} (a doubled or trailing comma?)"));
        }
        let len = name.chars().count();
        if len > max {
            return Err(format!("{what} {name:?} has {len} characters; IAM allows at most {max}"));
        }
        if !IAM_NAME.is_match(name) {
            return Err(format!(
                "{name:?} is not a valid {what}: only ASCII letters, digits and + = , . @ _ - are allowed"
            ));
        }
    }
    Ok(NameList(names))
}

fn user_names(value: &str) -> Result<NameList, String> {
    name_list(value, "IAM user name", MAX_USER_NAME)
}

fn group_names(value: &str) -> Result<NameList, String> {
    name_list(value, "IAM group name", MAX_GROUP_NAME)
}

fn path_prefix(value: &str) -> Result<String, String> {
    if !value.starts_with('/') {
        return Err("an IAM path prefix starts with '/', for example /engineering/".into());
    }
    if value.len() > MAX_PATH_PREFIX {
        return Err(format!("at most {MAX_PATH_PREFIX} characters"));
    }
    if !PATH_PREFIX.is_match(value) {
        return Err("only printable ASCII characters without spaces are allowed in an IAM path".into());
    }
    Ok(value.to_owned())
}

/// `KEY=VALUE`, split at the first `=` (tag values may contain `=`).
fn tag(value: &str) -> Result<(String, String), String> {
    let Some((key, value)) = value.split_once('=') else {
        return Err("expected KEY=VALUE".into());
    };
    if key.chars().count() > MAX_TAG_KEY {
        return Err(format!("tag key {key:?} is longer than {MAX_TAG_KEY} characters"));
    }
    if !TAG_KEY.is_match(key) {
        return Err(format!(
            "tag key {key:?} is not valid: 1-{MAX_TAG_KEY} letters, digits, spaces and _ . : / = + - @"
        ));
    }
    if key.starts_with("aws:") {
        return Err(format!("tag key {key:?}: keys starting with aws: are reserved by AWS"));
    }
    if value.chars().count() > MAX_TAG_VALUE {
        return Err(format!("tag value of {key:?} is longer than {MAX_TAG_VALUE} characters"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

fn region(value: &str) -> Result<String, String> {
    if value.len() > MAX_REGION || !REGION.is_match(value) {
        return Err("not an AWS region name such as eu-west-1".into());
    }
    Ok(value.to_owned())
}

fn role_arn(value: &str) -> Result<String, String> {
    if value.len() > MAX_ROLE_ARN || !ROLE_ARN.is_match(value) {
        return Err("not an IAM role ARN such as arn:aws:iam::111122223333:role/mfa-operator".into());
    }
    Ok(value.to_owned())
}

fn external_id(value: &str) -> Result<String, String> {
    let (min, max) = (MIN_EXTERNAL_ID, MAX_EXTERNAL_ID);
    if !(min..=max).contains(&value.len()) || !EXTERNAL_ID.is_match(value) {
        return Err(format!("an external ID has {min}-{max} characters from letters, digits and + = , . @ : / _ -"));
    }
    Ok(value.to_owned())
}

/// One selected user in the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserEntry {
    pub name: String,
    pub path: String,
    /// `Compliant`, `Missing` (no active MFA device) or `Failed` (the MFA state could not
    /// be determined; [`audit`] always determines it).
    pub state: UserState,
}

/// The audit's result. Serialised as the `--output json` document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The account id, read from the users' ARNs; `None` for an account without users.
    pub account: Option<String>,
    pub root_account_mfa_enabled: bool,
    /// Same fields as an enrollment's `status.summary`; `pending` is always 0 (pending
    /// devices belong to enrollments).
    pub summary: Summary,
    /// Every selected user, those without MFA first, then by name.
    pub users: Vec<UserEntry>,
    /// Names from `--names` with no such user.
    pub not_found: Vec<String>,
    /// IAM requests by operation (retries included); filled in by the runner.
    pub iam_requests: BTreeMap<String, u64>,
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The report for `selection` over `inventory`. Pure. A user whose state is still
/// [`MfaState::Unknown`] is never counted compliant: it is `Failed`, so a bug can make
/// an audit fail but never pass.
pub fn build(inventory: &Inventory, selection: &Selection) -> Report {
    let mut summary = Summary::default();
    let mut users: Vec<UserEntry> = selection
        .users
        .iter()
        .map(|name| {
            let state = match inventory.mfa_state(name) {
                MfaState::Active(_) => UserState::Compliant,
                MfaState::None => UserState::Missing,
                MfaState::Unknown => UserState::Failed,
            };
            let counter = match state {
                UserState::Compliant => &mut summary.compliant,
                UserState::Missing => &mut summary.missing,
                _ => &mut summary.failed,
            };
            *counter += 1;
            let path = inventory.users.get(name).map(|u| u.path.clone()).unwrap_or_default();
            UserEntry { name: name.clone(), path, state }
        })
        .collect();
    users.sort_by(|a, b| (a.state.attention_rank(), &a.name).cmp(&(b.state.attention_rank(), &b.name)));
    summary.selected = count(users.len());
    summary.not_found = count(selection.not_found.len());
    Report {
        account: inventory.account_id().map(str::to_owned),
        root_account_mfa_enabled: inventory.root_mfa_enabled,
        summary,
        users,
        not_found: selection.not_found.iter().cloned().collect(),
        iam_requests: BTreeMap::new(),
    }
}

impl Report {
    /// `Compliant` when every selected user has an active MFA device (names that do not
    /// exist do not count, as for the `Compliant` condition).
    pub fn exit(&self) -> Exit {
        if self.summary.compliant == self.summary.selected { Exit::Compliant } else { Exit::UsersWithoutMfa }
    }

    fn listed(&self, show_compliant: bool) -> impl Iterator<Item = &UserEntry> {
        self.users.iter().filter(move |u| show_compliant || u.state != UserState::Compliant)
    }

    /// The `--output json` document: the report, without compliant users unless
    /// `show_compliant`. Serialise it directly to keep the documented key order.
    pub fn for_json(&self, show_compliant: bool) -> Report {
        Report { users: self.listed(show_compliant).cloned().collect(), ..self.clone() }
    }

    /// The `--output table` text: the users, a blank line, the summary and the root
    /// account's MFA.
    pub fn to_table(&self, show_compliant: bool) -> String {
        let rows: Vec<&UserEntry> = self.listed(show_compliant).collect();
        let mut out = String::new();
        if rows.is_empty() {
            let line = if self.summary.selected == 0 {
                "no IAM user matches the selection"
            } else {
                "every selected user has an active MFA device"
            };
            out.push_str(line);
            out.push('\n');
        } else {
            let name_width = rows.iter().map(|u| u.name.chars().count()).max().unwrap_or(0).max("NAME".len());
            let path_width = rows.iter().map(|u| u.path.chars().count()).max().unwrap_or(0).max("PATH".len());
            let _ = writeln!(out, "{:name_width$}  {:path_width$}  STATE", "NAME", "PATH");
            for user in rows {
                let _ = writeln!(out, "{:name_width$}  {:path_width$}  {:?}", user.name, user.path, user.state);
            }
        }
        let s = &self.summary;
        let account = self.account.as_deref().unwrap_or("unknown");
        let _ = write!(
            out,
            "\naccount {account}: {} selected, {} compliant, {} without MFA, {} not found",
            s.selected,
            s.compliant,
            s.selected.saturating_sub(s.compliant),
            s.not_found
        );
        if !self.not_found.is_empty() {
            let _ = write!(out, " ({})", self.not_found.join(", "));
        }
        let root = if self.root_account_mfa_enabled { "enabled" } else { "NOT enabled" };
        let _ = writeln!(out, "\nroot account MFA: {root}");
        out
    }
}

/// The IAM requests line printed to stderr in table mode.
pub fn requests_line(requests: &BTreeMap<String, u64>) -> String {
    let total: u64 = requests.values().sum();
    let each: Vec<String> = requests.iter().map(|(op, n)| format!("{op} {n}")).collect();
    format!("IAM requests: {total} ({})", each.join(", "))
}

/// Why an audit produced no report.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// `--groups` names a group the account does not have (a value a person must fix,
    /// as opposed to an existing group without members).
    #[error("--groups: no IAM group named {} in the account", .0.join(", "))]
    UnknownGroups(Vec<String>),
    #[error(transparent)]
    Iam(#[from] IamError),
}

impl AuditError {
    pub fn exit(&self) -> Exit {
        match self {
            Self::UnknownGroups(_) => Exit::Usage,
            Self::Iam(_) => Exit::AwsError,
        }
    }

    /// What the person running the audit reads.
    pub fn explain(&self) -> String {
        match self {
            Self::Iam(IamError::AccessDenied { operation, message }) => {
                format!("access denied to iam:{operation}: {message}\nThe audit needs {PERMISSIONS}.")
            }
            Self::Iam(e) => format!("AWS IAM {e}"),
            Self::UnknownGroups(_) => self.to_string(),
        }
    }
}

/// Sweeps the account, selects, and asks `ListMFADevices` only for the selected users no
/// assigned virtual device covers: the controller's inventory refresh, once.
pub async fn audit(iam: &impl IamApi, selector: &UserSelector, now: Timestamp) -> Result<Report, AuditError> {
    let mut inventory = Inventory::load(iam, selector.console_access_only, now).await?;
    let selection = select(selector, &inventory.users, inventory.console_users.as_ref());
    let unknown = selection.unknown_groups(&inventory.groups);
    if !unknown.is_empty() {
        return Err(AuditError::UnknownGroups(unknown));
    }
    let unresolved = inventory.unresolved(&selection.users);
    inventory.resolve(iam, unresolved).await?;
    Ok(build(&inventory, &selection))
}

/// Runs `mfa-operator audit`: prints the report (stdout) and, in table mode, the IAM
/// requests (stderr); errors go to stderr.
pub async fn run(args: AuditArgs) -> Exit {
    let selector = match args.selector() {
        Ok(selector) => selector,
        Err(message) => {
            eprintln!("error: {message}\n\nFor more information, try '--help'.");
            return Exit::Usage;
        }
    };
    let iam = SdkIam::new(&sdk_config(&args.account_key()).await);
    let result = audit(&iam, &selector, Timestamp::now()).await;
    let requests = iam.calls().snapshot();
    let report = match result {
        Ok(report) => Report { iam_requests: requests, ..report },
        Err(e) => {
            eprintln!("error: {}", e.explain());
            return e.exit();
        }
    };
    let text = match args.output {
        OutputFormat::Table => report.to_table(args.show_compliant),
        OutputFormat::Json => match serde_json::to_string_pretty(&report.for_json(args.show_compliant)) {
            Ok(json) => json + "\n",
            Err(e) => {
                eprintln!("error: cannot serialise the report: {e}");
                return Exit::AwsError;
            }
        },
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        eprintln!("error: cannot write the report: {e}");
        return Exit::AwsError;
    }
    if args.output == OutputFormat::Table {
        eprintln!("{}", requests_line(&report.iam_requests));
    }
    report.exit()
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::Parser;
    use kube::CustomResourceExt;
    use serde_json::json;

    use crate::aws::fake::{Account, LIST_VIRTUAL_MFA_DEVICES};
    use crate::aws::{IamUser, MfaDevice, VirtualDevice};
    use crate::crd::MfaEnrollment;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: AuditArgs,
    }

    fn parse(argv: &[&str]) -> Result<AuditArgs, String> {
        let argv = std::iter::once("audit").chain(argv.iter().copied());
        Cli::try_parse_from(argv).map(|c| c.args).map_err(|e| e.to_string())
    }

    fn selector(argv: &[&str]) -> Result<UserSelector, String> {
        parse(argv)?.selector()
    }

    fn strings(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn no_selector_flag_audits_every_user() {
        let s = selector(&[]).expect("valid");
        assert_eq!(s, UserSelector { path_prefix: Some("/".into()), ..UserSelector::default() });
        let s = selector(&["--exclude", "break-glass", "--console-access-only"]).expect("valid");
        assert_eq!(s.path_prefix.as_deref(), Some("/"), "exclude alone narrows every user");
        assert_eq!(s.exclude, strings(&["break-glass"]));
        assert!(s.console_access_only);
    }

    #[test]
    fn flags_map_to_the_spec_selector() {
        let s = selector(&[
            "--names",
            "alice,bob",
            "--names",
            "a\\,b",
            "--path-prefix",
            "/engineering/",
            "--groups",
            "Developers",
            "--tag",
            "team=payments",
            "--tag",
            "expr=a=b",
            "--exclude",
            "ci-bot",
        ])
        .expect("valid");
        assert_eq!(s.names, strings(&["alice", "bob", "a,b"]));
        assert_eq!(s.path_prefix.as_deref(), Some("/engineering/"));
        assert_eq!(s.groups, strings(&["Developers"]));
        let tags = BTreeMap::from([("team".into(), "payments".into()), ("expr".into(), "a=b".into())]);
        assert_eq!(s.tags, Some(tags));
        assert_eq!(s.exclude, strings(&["ci-bot"]));
        assert!(!s.console_access_only);
    }

    #[test]
    fn values_the_crd_refuses_are_refused_with_the_reason() {
        let cases: &[(&[&str], &str)] = &[
            (&["--names", "bad name"], "not a valid IAM user name"),
            (&["--names", "al\u{e9}x"], "not a valid IAM user name"),
            (&["--names", "alice,,bob"], "empty IAM user name"),
            (&["--names", "alice,"], "empty IAM user name"),
            (&["--exclude", &"x".repeat(65)], "at most 64"),
            (&["--groups", "dev ops"], "not a valid IAM group name"),
            (&["--groups", &"g".repeat(129)], "at most 128"),
            (&["--path-prefix", "engineering/"], "starts with '/'"),
            (&["--path-prefix", "/with space/"], "printable ASCII"),
            (&["--path-prefix", &format!("/{}", "p".repeat(512))], "at most 512"),
            (&["--tag", "team"], "KEY=VALUE"),
            (&["--tag", "=x"], "tag key \"\" is not valid"),
            (&["--tag", "aws:cloudformation=x"], "reserved by AWS"),
            (&["--tag", "bad*key=x"], "is not valid"),
            (&["--tag", &format!("{}=x", "k".repeat(129))], "longer than 128"),
            (&["--tag", &format!("k={}", "v".repeat(257))], "longer than 256"),
            (&["--region", "Europe"], "AWS region"),
            (&["--role-arn", "arn:aws:iam::1:user/x"], "IAM role ARN"),
            (&["--external-id", "abc"], "--role-arn"),
            (&["--role-arn", "arn:aws:iam::111122223333:role/x", "--external-id", "a"], "external ID"),
            (&["--output", "yaml"], "invalid value"),
        ];
        for (argv, expected) in cases {
            let err = parse(argv).expect_err(&format!("{argv:?} must be refused"));
            assert!(err.contains(expected), "{argv:?}: {err}");
        }
    }

    #[test]
    fn rules_across_flags_are_the_crds() {
        let cases: &[(&[&str], &str)] = &[
            (&["--names", "alice,alice"], "--names: alice is given twice"),
            (&["--groups", "a", "--groups", "a"], "--groups: a is given twice"),
            (&["--tag", "team=a", "--tag", "team=b"], "--tag: team is given twice"),
            (&["--names", "alice", "--exclude", "alice"], "alice is in both --names and --exclude"),
        ];
        for (argv, expected) in cases {
            let err = selector(argv).expect_err(&format!("{argv:?} must be refused"));
            assert_eq!(&err, expected, "{argv:?}");
        }
        let many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
        let err = selector(&["--names", &many.join(",")]).expect_err("too many names");
        assert_eq!(err, "--names: at most 1000 values, got 1001");
        let ok = selector(&["--names", "Alice", "--exclude", "alice"]).expect("the CRD compares exact strings");
        assert_eq!(ok.names, strings(&["Alice"]));
    }

    #[test]
    fn patterns_and_bounds_are_the_crds() {
        let crd = serde_json::to_value(MfaEnrollment::crd()).expect("CRD serialises");
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        let users = &spec["users"]["properties"];
        for (field, max_len, max_items) in [
            ("names", MAX_USER_NAME, MAX_NAMES),
            ("groups", MAX_GROUP_NAME, MAX_GROUPS),
            ("exclude", MAX_USER_NAME, MAX_EXCLUDE),
        ] {
            assert_eq!(users[field]["items"]["pattern"], IAM_NAME_PATTERN, "{field}");
            assert_eq!(users[field]["items"]["maxLength"], max_len, "{field}");
            assert_eq!(users[field]["maxItems"], max_items, "{field}");
        }
        assert_eq!(users["pathPrefix"]["pattern"], PATH_PREFIX_PATTERN);
        assert_eq!(users["pathPrefix"]["maxLength"], MAX_PATH_PREFIX);
        assert_eq!(users["tags"]["maxProperties"], MAX_TAGS);
        let rule = users["tags"]["x-kubernetes-validations"][0]["rule"].as_str().expect("tags rule");
        assert!(rule.contains(&TAG_KEY_PATTERN.replace('\\', "\\\\")), "{rule}");
        assert!(rule.contains(&format!("size(k) <= {MAX_TAG_KEY}")), "{rule}");
        assert!(rule.contains(&format!("size(self[k]) <= {MAX_TAG_VALUE}")), "{rule}");
        assert!(rule.contains("!k.startsWith('aws:')"), "{rule}");
        let aws = &spec["aws"]["properties"];
        assert_eq!(aws["region"]["pattern"], REGION_PATTERN);
        assert_eq!(aws["region"]["maxLength"], MAX_REGION);
        assert_eq!(aws["roleArn"]["pattern"], ROLE_ARN_PATTERN);
        assert_eq!(aws["roleArn"]["maxLength"], MAX_ROLE_ARN);
        assert_eq!(aws["externalId"]["pattern"], EXTERNAL_ID_PATTERN);
        assert_eq!(aws["externalId"]["minLength"], MIN_EXTERNAL_ID);
        assert_eq!(aws["externalId"]["maxLength"], MAX_EXTERNAL_ID);
    }

    #[test]
    fn names_are_ascii_as_in_go_re2() {
        assert!(IAM_NAME.is_match("a+b=c,d.e@f_g-H9"));
        assert!(!IAM_NAME.is_match("\u{e9}"), "Go's \\w is ASCII only");
        assert!(TAG_KEY.is_match("\u{e9}quipe 1"), "tag keys allow Unicode letters and spaces");
    }

    #[test]
    fn aws_flags_make_the_account_key() {
        let args = parse(&[
            "--region",
            "eu-west-1",
            "--role-arn",
            "arn:aws:iam::111122223333:role/audit",
            "--external-id",
            "example",
        ])
        .expect("valid");
        assert_eq!(
            args.account_key(),
            AccountKey {
                role_arn: Some("arn:aws:iam::111122223333:role/audit".into()),
                external_id: Some("example".into()),
                region: Some("eu-west-1".into()),
            }
        );
        assert_eq!(
            parse(&[]).expect("valid").account_key(),
            AccountKey { role_arn: None, external_id: None, region: None }
        );
    }

    const ACCOUNT: &str = "123456789012";

    fn user(name: &str, path: &str) -> IamUser {
        IamUser {
            name: name.into(),
            path: path.into(),
            arn: format!("arn:aws:iam::{ACCOUNT}:user{path}{name}"),
            ..Default::default()
        }
    }

    fn assigned(user: &str) -> VirtualDevice {
        VirtualDevice {
            serial: format!("arn:aws:iam::{ACCOUNT}:mfa/{user}"),
            user: Some(user.into()),
            enabled_at: Some(Timestamp::UNIX_EPOCH),
        }
    }

    /// An account: alice has a virtual device, bob a hardware key (only `ListMFADevices`
    /// knows), carol and dave nothing; erin has a pending (unassigned) device. Read-only:
    /// nothing that reads may write.
    fn account() -> Account {
        Account::new()
            .with_users([
                user("alice", "/engineering/"),
                user("bob", "/engineering/"),
                user("carol", "/engineering/backend/"),
                user("dave", "/finance/"),
                user("erin", "/engineering/"),
            ])
            .with_devices([
                assigned("alice"),
                VirtualDevice {
                    serial: format!("arn:aws:iam::{ACCOUNT}:mfa/mfa-operator/erin"),
                    user: None,
                    enabled_at: None,
                },
            ])
            .with_listed(
                "bob",
                vec![MfaDevice { serial: "GAHT12345678".into(), enabled_at: Some(Timestamp::UNIX_EPOCH) }],
            )
            .with_groups(["developers".into()])
            .with_console_users(["carol".into()])
            .with_root_mfa(true)
            .read_only()
    }

    fn inventory_and_selection(iam: &Account, selector: &UserSelector) -> (Inventory, Selection) {
        let inventory = Inventory::from_parts(Timestamp::UNIX_EPOCH, iam.users(), iam.virtual_devices(), None);
        let selection = select(selector, &inventory.users, None);
        (inventory, selection)
    }

    #[tokio::test]
    async fn report_counts_like_status_summary_and_lists_missing_first() {
        let iam = account();
        let selector = UserSelector {
            path_prefix: Some("/engineering/".into()),
            names: strings(&["dave", "zoe"]),
            ..UserSelector::default()
        };
        let (mut inventory, selection) = inventory_and_selection(&iam, &selector);
        inventory.root_mfa_enabled = true;
        let unresolved = inventory.unresolved(&selection.users);
        inventory.resolve(&iam, unresolved).await.expect("fake answers");
        let report = build(&inventory, &selection);
        let states: Vec<(&str, &str, UserState)> =
            report.users.iter().map(|u| (u.name.as_str(), u.path.as_str(), u.state)).collect();
        assert_eq!(
            states,
            [
                ("carol", "/engineering/backend/", UserState::Missing),
                ("dave", "/finance/", UserState::Missing),
                ("erin", "/engineering/", UserState::Missing),
                ("alice", "/engineering/", UserState::Compliant),
                ("bob", "/engineering/", UserState::Compliant),
            ],
            "a pending device is not MFA; a hardware key is"
        );
        assert_eq!(
            report.summary,
            Summary { selected: 5, compliant: 2, pending: 0, missing: 3, failed: 0, not_found: 1 }
        );
        assert_eq!(report.not_found, ["zoe"]);
        assert_eq!(report.account.as_deref(), Some(ACCOUNT));
        assert!(report.root_account_mfa_enabled);
        assert_eq!(report.exit(), Exit::UsersWithoutMfa);
    }

    #[test]
    fn unresolved_users_are_never_compliant() {
        let iam = account();
        let selector = UserSelector { names: strings(&["alice", "bob"]), ..UserSelector::default() };
        let (inventory, selection) = inventory_and_selection(&iam, &selector);
        let report = build(&inventory, &selection);
        assert_eq!(
            report.users[0],
            UserEntry { name: "bob".into(), path: "/engineering/".into(), state: UserState::Failed }
        );
        assert_eq!(report.summary.failed, 1);
        assert_eq!(report.exit(), Exit::UsersWithoutMfa);
    }

    #[test]
    fn exit_is_compliant_when_every_selected_user_has_mfa_even_with_names_not_found() {
        let iam = account();
        let selector = UserSelector { names: strings(&["alice", "ghost"]), ..UserSelector::default() };
        let (inventory, selection) = inventory_and_selection(&iam, &selector);
        let report = build(&inventory, &selection);
        assert_eq!(report.summary.compliant, 1);
        assert_eq!(report.exit(), Exit::Compliant);

        let nobody = UserSelector { path_prefix: Some("/nobody/".into()), ..UserSelector::default() };
        let (inventory, selection) = inventory_and_selection(&iam, &nobody);
        let empty = build(&inventory, &selection);
        assert_eq!(empty.exit(), Exit::Compliant, "nothing selected, nothing missing");
        assert!(empty.to_table(false).starts_with("no IAM user matches the selection\n"));
    }

    fn sample() -> Report {
        Report {
            account: Some(ACCOUNT.into()),
            root_account_mfa_enabled: false,
            summary: Summary { selected: 3, compliant: 1, pending: 0, missing: 2, failed: 0, not_found: 1 },
            users: vec![
                UserEntry { name: "bob".into(), path: "/engineering/backend/".into(), state: UserState::Missing },
                UserEntry { name: "carol-the-long".into(), path: "/".into(), state: UserState::Missing },
                UserEntry { name: "alice".into(), path: "/engineering/".into(), state: UserState::Compliant },
            ],
            not_found: vec!["zoe".into()],
            iam_requests: BTreeMap::from([
                ("GetAccountAuthorizationDetails".into(), 1),
                ("GetAccountSummary".into(), 1),
                ("ListGroups".into(), 1),
                ("ListMFADevices".into(), 2),
                ("ListVirtualMFADevices".into(), 1),
            ]),
        }
    }

    #[test]
    fn json_shape_is_stable() {
        let expected = json!({
            "account": ACCOUNT,
            "rootAccountMfaEnabled": false,
            "summary": {"selected": 3, "compliant": 1, "pending": 0, "missing": 2, "failed": 0, "notFound": 1},
            "users": [
                {"name": "bob", "path": "/engineering/backend/", "state": "Missing"},
                {"name": "carol-the-long", "path": "/", "state": "Missing"},
            ],
            "notFound": ["zoe"],
            "iamRequests": {
                "GetAccountAuthorizationDetails": 1,
                "GetAccountSummary": 1,
                "ListGroups": 1,
                "ListMFADevices": 2,
                "ListVirtualMFADevices": 1,
            },
        });
        let json = |report: Report| serde_json::to_value(report).expect("report serialises");
        assert_eq!(json(sample().for_json(false)), expected);
        let all = json(sample().for_json(true));
        assert_eq!(all["users"][2], json!({"name": "alice", "path": "/engineering/", "state": "Compliant"}));
        let no_account = json(Report { account: None, ..sample() }.for_json(false));
        assert_eq!(no_account["account"], serde_json::Value::Null, "the key is always there");

        let text = serde_json::to_string(&sample().for_json(false)).expect("report serialises");
        assert_eq!(
            text,
            r#"{"account":"123456789012","rootAccountMfaEnabled":false,"#.to_owned()
                + r#""summary":{"selected":3,"compliant":1,"pending":0,"missing":2,"failed":0,"notFound":1},"#
                + r#""users":[{"name":"bob","path":"/engineering/backend/","state":"Missing"},"#
                + r#"{"name":"carol-the-long","path":"/","state":"Missing"}],"notFound":["zoe"],"#
                + r#""iamRequests":{"GetAccountAuthorizationDetails":1,"GetAccountSummary":1,"ListGroups":1,"#
                + r#""ListMFADevices":2,"ListVirtualMFADevices":1}}"#,
            "the documented key order"
        );
    }

    #[test]
    fn table_lists_users_without_mfa_and_a_summary() {
        let expected = "\
NAME            PATH                   STATE
bob             /engineering/backend/  Missing
carol-the-long  /                      Missing

account 123456789012: 3 selected, 1 compliant, 2 without MFA, 1 not found (zoe)
root account MFA: NOT enabled
";
        assert_eq!(sample().to_table(false), expected);
        assert!(sample().to_table(true).contains("\nalice           /engineering/          Compliant\n"));

        let compliant = Report {
            summary: Summary { selected: 1, compliant: 1, ..Summary::default() },
            users: vec![sample().users[2].clone()],
            not_found: Vec::new(),
            root_account_mfa_enabled: true,
            ..sample()
        };
        assert_eq!(
            compliant.to_table(false),
            "every selected user has an active MFA device\n\n\
             account 123456789012: 1 selected, 1 compliant, 0 without MFA, 0 not found\n\
             root account MFA: enabled\n"
        );
        assert_eq!(
            requests_line(&sample().iam_requests),
            "IAM requests: 6 (GetAccountAuthorizationDetails 1, GetAccountSummary 1, ListGroups 1, \
             ListMFADevices 2, ListVirtualMFADevices 1)"
        );
    }

    #[test]
    fn split_list_honours_escaped_commas() {
        assert_eq!(split_list("a,b"), ["a", "b"]);
        assert_eq!(split_list("a\\,b,c"), ["a,b", "c"]);
        assert_eq!(split_list(""), [""]);
        assert_eq!(split_list("a\\b"), ["a\\b"], "a backslash before anything else stays (and fails the pattern)");
    }

    #[tokio::test]
    async fn audit_asks_list_mfa_devices_only_for_uncovered_selected_users() {
        let iam = account();
        let selector = UserSelector { path_prefix: Some("/engineering/".into()), ..UserSelector::default() };
        let report = audit(&iam, &selector, Timestamp::UNIX_EPOCH).await.expect("audit");
        assert_eq!(report.summary.selected, 4);
        assert_eq!(report.summary.compliant, 2);
        assert!(report.root_account_mfa_enabled);
        assert_eq!(
            iam.calls(),
            [
                "ListUsers",
                "ListVirtualMFADevices",
                "ListGroups",
                "GetAccountSummary",
                "ListMFADevices bob",
                "ListMFADevices carol",
                "ListMFADevices erin",
            ],
            "alice is covered by her virtual device; dave is not selected; no credential report"
        );
    }

    #[tokio::test]
    async fn console_access_only_fetches_the_credential_report() {
        let iam = account();
        let selector =
            UserSelector { path_prefix: Some("/".into()), console_access_only: true, ..UserSelector::default() };
        let report = audit(&iam, &selector, Timestamp::UNIX_EPOCH).await.expect("audit");
        assert_eq!(report.users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["carol"]);
        assert!(iam.calls().contains(&"CredentialReport".to_owned()));
        assert!(iam.calls().contains(&"ListMFADevices carol".to_owned()));
    }

    #[tokio::test]
    async fn unknown_groups_are_a_usage_error_before_any_list_mfa_devices() {
        let iam = account();
        let selector = UserSelector { groups: strings(&["Developers", "nope"]), ..UserSelector::default() };
        let err = audit(&iam, &selector, Timestamp::UNIX_EPOCH).await.expect_err("nope does not exist");
        assert_eq!(err.to_string(), "--groups: no IAM group named nope in the account");
        assert_eq!(err.exit(), Exit::Usage);
        assert!(!iam.calls().iter().any(|c| c.starts_with("ListMFADevices")));
    }

    #[tokio::test]
    async fn iam_errors_exit_3_and_access_denied_names_the_action() {
        let iam = account().denying(LIST_VIRTUAL_MFA_DEVICES);
        let selector = UserSelector { path_prefix: Some("/".into()), ..UserSelector::default() };
        let err = audit(&iam, &selector, Timestamp::UNIX_EPOCH).await.expect_err("denied");
        assert_eq!(err.exit(), Exit::AwsError);
        let text = err.explain();
        assert!(text.starts_with("access denied to iam:ListVirtualMFADevices: not authorized"), "{text}");
        assert!(text.contains("iam:GetAccountAuthorizationDetails"), "the hint lists the permissions: {text}");

        let throttled = AuditError::Iam(IamError::Throttled { operation: "ListGroups" });
        assert_eq!(throttled.explain(), "AWS IAM ListGroups: throttled by IAM");
        assert_eq!(throttled.exit(), Exit::AwsError);
    }
}
