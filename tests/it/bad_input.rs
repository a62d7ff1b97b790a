//! Fault matrix item 5 (issue 5): a generated corpus of invalid and hostile input.
//!
//! - Over 800 MfaEnrollment specs, generated deterministically (a seeded xorshift PRNG)
//!   by mutating valid specs (each names a binding in `spec.accountRef`) and specs in the
//!   retired form (`spec.aws`, `spec.device`), are sent to the real apiserver. A model of the apiserver
//!   (pruning, null handling and defaulting by the committed CRD's schema, then
//!   `check_valid`, every rule of the CRD written out by hand) predicts each answer, and
//!   the apiserver must give exactly that: 400 naming every unknown or duplicate field
//!   under fieldValidation=Strict; 422 naming every field that breaks a rule, each with
//!   what its rule says (a CEL rule is named by the field carrying it, with its message;
//!   the apiserver skips CEL rules when an OpenAPI error blocks them, and says so); 400
//!   "max depth" for JSON nested past the decoder's limit, the one refusal that cannot
//!   name a field; or acceptance, with the stored spec (read back as raw JSON) equal to
//!   the prediction, free of fields the schema does not know, valid for `check_valid`,
//!   and deserializing into `MfaEnrollment`.
//! - Over 200 hostile code submissions are written into the seed Secrets of a running
//!   operator, several Secrets at once. Each is refused (by the apiserver or by the
//!   operator, with the codes cleared and the reason in status); the device is replaced
//!   after every fifth counted refusal; nobody turns Compliant with wrong codes. Meanwhile
//!   a second enrollment created mid-way converges and completes, the operator never
//!   panics, and it still accepts valid codes at the end.

use crate::common;

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use common::bed::{data, state, user_status};
use common::iam;
use common::operator::Operator;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use mfa_operator::crd::{MfaEnrollment, UserState};
use serde_json::{Value, json};

/// Seed of every PRNG in this file: the corpus is the same on every run.
const CORPUS_SEED: u64 = 0x5eed_2026_0bad_1a9e;

/// xorshift64: deterministic, dependency-free randomness for the corpus.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // splitmix64 scrambles related seeds; xorshift needs a non-zero state.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// Between `min` and `max` random ASCII digits.
    fn digits_between(&mut self, min: usize, max: usize) -> String {
        let n = min + self.below(max - min + 1);
        self.digits(n)
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
    }
}

fn enrollment_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("iam.mfa-operator.dev", "v1alpha1", "MfaEnrollment"))
}

// ---------------------------------------------------------------------------------------
// Part 1: the spec corpus.
// ---------------------------------------------------------------------------------------

/// The binding every generated enrollment names (unless its mutation is about
/// `spec.accountRef`): valid, and never created, so that no operator could act on an
/// accepted mutation even if one were running for the namespace.
const NO_BINDING: &str = "bad-input-no-binding";

/// Valid starting points. Report mode over names that do not exist, through a binding
/// that does not exist, so that an accepted mutation can never make any operator write to
/// AWS (accepted objects are also deleted at once).
fn base_specs() -> Vec<Value> {
    vec![
        json!({ "accountRef": { "name": NO_BINDING }, "mode": "Report", "users": { "names": ["bad-input-nobody-1"] } }),
        json!({
            "accountRef": { "name": NO_BINDING },
            "mode": "Report",
            "users": { "names": ["bad-input-nobody-1", "bad-input-nobody-2"], "exclude": ["bad-input-nobody-3"] },
            "pendingTTL": "1h", "resyncInterval": "5m",
        }),
        json!({
            "accountRef": { "name": NO_BINDING },
            "mode": "Report",
            "users": { "pathPrefix": "/bad-input-nowhere/", "tags": { "team": "none" }, "consoleAccessOnly": true },
        }),
        json!({
            "accountRef": { "name": "bad-input.no-binding.example" },
            "mode": "Report",
            "users": { "names": ["bad-input-nobody-4"], "groups": ["bad-input-no-group"] },
        }),
    ]
}

/// Starting points in the retired form: what valid specs said before `spec.aws` and
/// `spec.device` moved to the binding (with a binding named, as the migration leaves
/// them). Refused as they are; their mutations exercise the old fields' rules, which the
/// schema still carries next to the rules that refuse the fields.
fn retired_specs() -> Vec<Value> {
    vec![
        json!({
            "accountRef": { "name": NO_BINDING },
            "mode": "Report",
            "users": { "names": ["bad-input-nobody-1", "bad-input-nobody-2"], "exclude": ["bad-input-nobody-3"] },
            "device": { "path": "/bad-input/" }, "pendingTTL": "1h", "resyncInterval": "5m",
        }),
        json!({
            "accountRef": { "name": NO_BINDING },
            "mode": "Report",
            "users": { "names": ["bad-input-nobody-4"], "groups": ["bad-input-no-group"] },
            "aws": { "region": "eu-west-1", "roleArn": "arn:aws:iam::111122223333:role/bad-input", "externalId": "ext-1" },
        }),
        json!({
            "accountRef": { "name": NO_BINDING },
            "mode": "Report",
            "users": { "pathPrefix": "/bad-input-nowhere/" },
            "device": {},
            "aws": { "roleArn": "arn:aws:iam::111122223333:role/bad-input" },
        }),
    ]
}

/// Every string field of the spec (list items as `.0`).
const STRING_FIELDS: &[&str] = &[
    "mode",
    "users.names.0",
    "users.exclude.0",
    "users.groups.0",
    "users.pathPrefix",
    "users.tags.team",
    "device.path",
    "pendingTTL",
    "resyncInterval",
    "aws.region",
    "aws.roleArn",
    "aws.externalId",
    "accountRef.name",
];

/// Every field of the spec, containers included.
const ALL_FIELDS: &[&str] = &[
    "mode",
    "users",
    "users.names",
    "users.names.0",
    "users.exclude",
    "users.exclude.0",
    "users.groups",
    "users.groups.0",
    "users.pathPrefix",
    "users.tags",
    "users.tags.team",
    "users.consoleAccessOnly",
    "device",
    "device.path",
    "pendingTTL",
    "resyncInterval",
    "aws",
    "aws.region",
    "aws.roleArn",
    "aws.externalId",
    "accountRef",
    "accountRef.name",
];

/// Sets (or with `None` removes) the value at a dotted path, creating what is missing.
/// Numeric segments index lists (an index past the end appends).
fn set(root: &mut Value, path: &str, value: Option<Value>) {
    let parts: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        *root = value.unwrap_or(Value::Null);
        return;
    }
    let mut current = root;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if let Ok(index) = part.parse::<usize>() {
            if !current.is_array() {
                *current = Value::Array(Vec::new());
            }
            let list = current.as_array_mut().expect("made a list");
            let index = index.min(list.len());
            if last {
                match value {
                    Some(v) if index == list.len() => list.push(v),
                    Some(v) => list[index] = v,
                    None if index < list.len() => {
                        list.remove(index);
                    }
                    None => {}
                }
                return;
            }
            if index == list.len() {
                list.push(json!({}));
            }
            current = &mut list[index];
        } else {
            if !current.is_object() {
                *current = json!({});
            }
            let object = current.as_object_mut().expect("made an object");
            if last {
                match value {
                    Some(v) => {
                        object.insert((*part).to_owned(), v);
                    }
                    None => {
                        object.remove(*part);
                    }
                }
                return;
            }
            current = object.entry((*part).to_owned()).or_insert_with(|| json!({}));
        }
    }
}

/// One change to a valid spec.
struct Mutation {
    path: String,
    value: Option<Value>,
    what: String,
}

impl Mutation {
    fn new(path: &str, value: Value, what: impl Into<String>) -> Self {
        Self { path: path.to_owned(), value: Some(value), what: what.into() }
    }

    fn remove(path: &str, what: impl Into<String>) -> Self {
        Self { path: path.to_owned(), value: None, what: what.into() }
    }
}

/// An IAM-invalid (or borderline) name; `max` is the field's maximum length.
fn bad_name(rng: &mut Rng, max: usize) -> (String, &'static str) {
    let base = *rng.pick(&["alice", "bob.smith", "ci+bot", "x", "Deploy_2"]);
    let (insert, what): (String, &'static str) = match rng.below(14) {
        0 => (" ".into(), "space"),
        1 => ("/".into(), "slash"),
        2 => ((*rng.pick(&["é", "ß", "用户", "Ж", "ا", "ñ", "Ω"])).into(), "unicode letter"),
        3 => ((*rng.pick(&["٣", "१", "５", "𝟙", "໓", "߂"])).into(), "unicode digit"),
        4 => ((*rng.pick(&["\u{200F}", "\u{202E}", "\u{061C}", "\u{200E}"])).into(), "RTL/LTR mark"),
        5 => ("\0".into(), "NUL"),
        6 => return ("a".repeat(max + 1 + rng.below(100)), "too long"),
        7 => return (String::new(), "empty"),
        8 => ((*rng.pick(&["\n", "\t", "\r", "\u{7f}", "\u{1b}[31m"])).into(), "control character"),
        9 => ((*rng.pick(&["\u{200B}", "\u{FEFF}", "\u{00A0}"])).into(), "invisible character"),
        10 => ("🔐".into(), "emoji"),
        11 => (
            (*rng.pick(&["*", "?", ":", "#", "!", "$", "(", "'", "\"", "\\", "%", ";", "&", "|", "<", "~", "`", "{"]))
                .into(),
            "punctuation IAM refuses",
        ),
        12 => return ("\u{0430}lice".into(), "cyrillic homoglyph"),
        _ => return (format!(" {base}"), "leading space"),
    };
    let at = rng.below(base.len() + 1);
    (format!("{}{insert}{}", &base[..at], &base[at..]), what)
}

/// A bad (or borderline) Go duration.
fn bad_duration(rng: &mut Rng) -> String {
    const FIXED: &[&str] = &[
        "-5m",
        "1.5h",
        "1d",
        "1w",
        "99999999h",
        "",
        "1h30",
        "h",
        "10",
        "1H",
        "1 h",
        "1µs",
        "1ns",
        "1ms",
        "0s",
        "+1h",
        "0x10s",
        "1e3s",
        "１h",
        "1h\n",
        "P1D",
        "1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s",
        "1000000h",
        "999999h",
        "8761h",
        "24h1s",
        "9s",
        "-0s",
        "∞",
        "NaN",
        "1h-1m",
    ];
    if rng.one_in(2) {
        return (*rng.pick(FIXED)).to_owned();
    }
    let sign = *rng.pick(&["", "", "-", "+"]);
    let number = rng.digits_between(1, 10);
    let fraction = if rng.one_in(4) { format!(".{}", rng.digits_between(1, 3)) } else { String::new() };
    let unit = *rng.pick(&["h", "m", "s", "d", "w", "ms", "us", "µs", "ns", "H", "M", "y", ""]);
    format!("{sign}{number}{fraction}{unit}")
}

/// A random nested JSON value of bounded depth.
fn garbage(rng: &mut Rng, depth: usize) -> Value {
    match if depth == 0 { rng.below(5) } else { rng.below(7) } {
        0 => Value::Null,
        1 => json!(rng.next() % 1000),
        2 => json!(rng.one_in(2)),
        3 => json!(format!("g{}", rng.digits(3))),
        4 => json!(-3.25),
        5 => Value::Array((0..1 + rng.below(3)).map(|_| garbage(rng, depth - 1)).collect()),
        _ => Value::Object((0..1 + rng.below(3)).map(|i| (format!("k{i}"), garbage(rng, depth - 1))).collect()),
    }
}

const CATEGORIES: &[&str] = &[
    "wrong type",
    "bad user/group name",
    "huge list",
    "huge string",
    "bad path",
    "bad duration",
    "unknown enum value",
    "unknown field",
    "nested garbage",
    "CEL cross-field",
    "null in odd places",
    "account reference",
];

fn mutation(rng: &mut Rng, category: &str) -> Mutation {
    match category {
        "wrong type" => {
            let path = *rng.pick(ALL_FIELDS);
            let values = [
                json!(42),
                json!(-1),
                json!(3.5),
                json!(true),
                json!(false),
                json!([]),
                json!(["x"]),
                json!({}),
                json!({ "a": 1 }),
                json!("text"),
                json!(1e300),
                json!([[["deep"]]]),
                json!(""),
                json!(0),
            ];
            let value = rng.pick(&values).clone();
            Mutation::new(path, value.clone(), format!("{path} = {value}"))
        }
        "bad user/group name" => {
            let (list, max) = *rng.pick(&[("users.names", 64), ("users.exclude", 64), ("users.groups", 128)]);
            let (name, what) = bad_name(rng, max);
            let index = rng.below(3);
            Mutation::new(&format!("{list}.{index}"), json!(name), format!("{list}[{index}]: {what}"))
        }
        "huge list" => {
            let (path, count, what) = *rng.pick(&[
                ("users.names", 1001, "1,001 names"),
                ("users.names", 5000, "5,000 names"),
                ("users.exclude", 501, "501 excluded names"),
                ("users.groups", 301, "301 groups"),
                ("users.tags", 51, "51 tags"),
            ]);
            let prefix = format!("n{}", rng.digits(3));
            let value = if path == "users.tags" {
                Value::Object((0..count).map(|i| (format!("k{i}"), json!("v"))).collect())
            } else {
                Value::Array((0..count).map(|i| json!(format!("{prefix}-{i}"))).collect())
            };
            Mutation::new(path, value, what)
        }
        "huge string" => {
            let path = *rng.pick(STRING_FIELDS);
            let alphabet = ['a', 'Z', '9', '/', '.', 'é', ' '];
            let fill = *rng.pick(&alphabet);
            let mut text: String = std::iter::repeat_n(fill, 100 * 1024 / fill.len_utf8()).collect();
            if path.ends_with("path") || path.ends_with("pathPrefix") {
                text.insert(0, '/');
                text.push('/');
            }
            Mutation::new(path, json!(text), format!("{path} = 100 KB of {fill:?}"))
        }
        "bad path" => {
            let path = *rng.pick(&["users.pathPrefix", "device.path"]);
            let values = [
                "",
                "eng/",
                "/eng",
                "/a b/",
                "/ü/",
                "\\eng\\",
                "/eng\n/",
                "/\0/",
                "//",
                "///",
                "/",
                "/../",
                "/./",
                "eng",
                " /eng/",
                "/eng/ ",
                "/\u{202E}gne/",
                "/%2F/",
            ];
            let value = if rng.one_in(6) {
                format!("/{}/", "p".repeat(511 + rng.below(40)))
            } else {
                (*rng.pick(&values)).to_owned()
            };
            Mutation::new(path, json!(value), format!("{path} = {:?}", truncate(&value)))
        }
        "bad duration" => {
            let path = *rng.pick(&["pendingTTL", "resyncInterval"]);
            let value = bad_duration(rng);
            Mutation::new(path, json!(value), format!("{path} = {value:?}"))
        }
        "unknown enum value" => {
            let values =
                ["enroll", "ENROLL", "Audit", "", "Enroll ", "Report\0", "Reporting", "Enrol", "Ｅnroll", "null", "*"];
            let value = if rng.one_in(3) {
                let word = *rng.pick(&["Enroll", "Report"]);
                word.chars()
                    .map(|c| if rng.one_in(2) { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
                    .collect::<String>()
            } else {
                (*rng.pick(&values)).to_owned()
            };
            // A random case flip may land on a valid value; the check below proves it.
            Mutation::new("mode", json!(value), format!("mode = {value:?}"))
        }
        "unknown field" => {
            let at = *rng.pick(&["", "users.", "device.", "aws.", "accountRef."]);
            let key = *rng.pick(&[
                "foo",
                "Mode",
                "user",
                "pathprefix",
                "consoleaccessonly",
                "x-kubernetes-preserve",
                "$ref",
                "__proto__",
                "status",
                "namesx",
            ]);
            let value = garbage(rng, 2);
            Mutation::new(&format!("{at}{key}"), value, format!("unknown field {at}{key}"))
        }
        "nested garbage" => {
            let path = *rng.pick(ALL_FIELDS);
            let value = Value::Object((0..2).map(|i| (format!("k{i}"), garbage(rng, 5))).collect());
            Mutation::new(path, value, format!("{path} = nested object"))
        }
        "CEL cross-field" => cel_violation(rng),
        "account reference" => account_ref_mutation(rng),
        "null in odd places" => {
            let path = *rng.pick(ALL_FIELDS);
            Mutation::new(path, Value::Null, format!("{path} = null"))
        }
        other => panic!("unknown category {other}"),
    }
}

fn cel_violation(rng: &mut Rng) -> Mutation {
    let name = format!("u{}", rng.digits(4));
    match rng.below(12) {
        0 => Mutation::new("users", json!({ "names": [name], "exclude": [name] }), "name both selected and excluded"),
        1 => Mutation::new("users", json!({ "exclude": [name] }), "exclude without a selector"),
        2 => Mutation::new("users", json!({}), "empty selector"),
        3 => Mutation::new("users", json!({ "consoleAccessOnly": true }), "consoleAccessOnly alone"),
        4 => Mutation::new("aws", json!({ "externalId": "ext-id" }), "externalId without roleArn"),
        5 => Mutation::new("device.path", json!("/"), "device path at the root"),
        6 => {
            let key = format!("aws:{}", *rng.pick(&["", "team", "cloudformation:stack-name"]));
            Mutation::new("users.tags", json!({ key.clone(): "x" }), format!("reserved tag key {key:?}"))
        }
        7 => {
            let key = (*rng.pick(&["a*b", "", "tab\tkey", "x#y", "q?", "semi;colon", "\u{0}"])).to_owned();
            Mutation::new("users.tags", json!({ key.clone(): "x" }), format!("tag key {key:?}"))
        }
        8 => Mutation::new("users.tags", json!({ "team": "v".repeat(257 + rng.below(500)) }), "tag value too long"),
        9 => Mutation::new("users.tags", json!({ "k".repeat(129 + rng.below(100)): "v" }), "tag key too long"),
        10 => {
            let value =
                if rng.one_in(2) { format!("{}s", rng.below(30)) } else { format!("{}h", 8761 + rng.below(990_000)) };
            Mutation::new("pendingTTL", json!(value), format!("pendingTTL out of range {value:?}"))
        }
        _ => {
            let value = if rng.one_in(2) {
                format!("{}s", rng.below(10))
            } else {
                format!("{}m", 24 * 60 + 1 + rng.below(990_000))
            };
            Mutation::new("resyncInterval", json!(value), format!("resyncInterval out of range {value:?}"))
        }
    }
}

/// A change to `spec.accountRef`: gone, null, without a name, or a name that is not (or
/// is, for the ones the checks prove valid) the name of a cluster-scoped object.
fn account_ref_mutation(rng: &mut Rng) -> Mutation {
    match rng.below(8) {
        0 => Mutation::remove("accountRef", "no accountRef"),
        1 => Mutation::new("accountRef", Value::Null, "accountRef = null"),
        2 => Mutation::remove("accountRef.name", "accountRef without a name"),
        3 => {
            let key = *rng.pick(&["namespace", "kind", "Name"]);
            Mutation::new(&format!("accountRef.{key}"), json!("x"), format!("accountRef with unknown field {key}"))
        }
        4 => {
            // Past the 253 characters of an object name, or exactly at them (valid).
            let length = 253 + rng.below(3);
            Mutation::new(
                "accountRef.name",
                json!("b".repeat(length)),
                format!("accountRef.name of {length} characters"),
            )
        }
        _ => {
            let name = *rng.pick(&[
                "Team-A",
                "team_a",
                "-team",
                "team-",
                "team..a",
                ".team",
                "team.",
                "team a",
                "team/a",
                "team:a",
                "tëam",
                "team\n",
                "\u{202E}team",
                "",
                " ",
                "*",
                "team-a.example.com",
                "0",
                "a-b.c-d",
                "123456789012",
            ]);
            Mutation::new("accountRef.name", json!(name), format!("accountRef.name = {name:?}"))
        }
    }
}

/// The first line of an apiserver message, at most 200 characters.
fn truncate_line(text: &str) -> String {
    let line: String = text.lines().map(str::trim).collect::<Vec<_>>().join(" ");
    if line.chars().count() > 200 { format!("{}...", line.chars().take(200).collect::<String>()) } else { line }
}

fn truncate(text: &str) -> String {
    if text.chars().count() > 40 {
        format!("{}... ({} bytes)", text.chars().take(20).collect::<String>(), text.len())
    } else {
        text.to_owned()
    }
}

/// One corpus entry: a whole object body, sent as bytes.
struct Case {
    category: &'static str,
    what: String,
    /// The spec's JSON text (raw, so that duplicate keys and deep nesting survive).
    spec: String,
    /// `fieldValidation=Strict` (kubectl's default) or the API's default (`Warn`).
    strict: bool,
    /// What the apiserver must answer.
    judge: Judge,
}

/// How a case's expected answer is found.
enum Judge {
    /// The model of the apiserver below decides, from this parsed spec (for deep nesting,
    /// a shallow stand-in of the same shape, which the apiserver treats the same way).
    Model(Value),
    /// Refused while decoding, before the model's steps apply: the status and the message
    /// fragment are given with the case.
    Fixed { status: u16, says: String },
}

fn corpus() -> Vec<Case> {
    let mut rng = Rng::new(CORPUS_SEED);
    let bases = base_specs();
    let retired = retired_specs();
    let starts: Vec<Value> = bases.iter().chain(&retired).cloned().collect();
    let mut cases = Vec::new();

    // The retired form as it is: refused, saying where the fields went, also without
    // strict field validation (the fields are in the schema, so never silently pruned).
    for strict in [true, false] {
        for (i, spec) in retired.iter().enumerate() {
            cases.push(Case {
                category: "retired form",
                what: format!("retired spec {i} unchanged (strict: {strict})"),
                spec: serde_json::to_string(spec).expect("spec serializes"),
                strict,
                judge: Judge::Model(spec.clone()),
            });
        }
    }

    // Generated mutations, every category in turn, a quarter with a second mutation; one
    // in three or so starts from the retired form.
    for i in 0..960 {
        let category = CATEGORIES[i % CATEGORIES.len()];
        let mut spec = rng.pick(&starts).clone();
        let mut mutations = vec![mutation(&mut rng, category)];
        if rng.one_in(4) {
            let second = *rng.pick(CATEGORIES);
            mutations.push(mutation(&mut rng, second));
        }
        let what = mutations.iter().map(|m| m.what.as_str()).collect::<Vec<_>>().join(" + ");
        for m in mutations {
            set(&mut spec, &m.path, m.value);
        }
        cases.push(Case {
            category,
            what,
            spec: serde_json::to_string(&spec).expect("spec serializes"),
            strict: true,
            judge: Judge::Model(spec),
        });
    }

    // Unknown fields once more without strict field validation: pruned, so accepted.
    for i in 0..24 {
        let mut spec = bases[i % bases.len()].clone();
        let m = mutation(&mut rng, "unknown field");
        let what = format!("{} (fieldValidation=Warn)", m.what);
        set(&mut spec, &m.path, m.value);
        cases.push(Case {
            category: "unknown field (pruned)",
            what,
            spec: serde_json::to_string(&spec).expect("spec serializes"),
            strict: false,
            judge: Judge::Model(spec),
        });
    }

    // Duplicate keys (only raw JSON can carry them). Strict: a 400 naming the key; Warn: the
    // last one wins, as when serde_json parses the text, and the model decides.
    let duplicates = [
        (
            r#"{"accountRef":{"name":"bad-input-no-binding"},"mode":"Report","mode":"Enroll","users":{"names":["bad-input-dup"]}}"#,
            "spec.mode",
        ),
        (
            r#"{"accountRef":{"name":"bad-input-no-binding"},"mode":"Report","users":{"names":["bad-input-a"],"names":["bad-input-b"]}}"#,
            "spec.users.names",
        ),
        (
            r#"{"accountRef":{"name":"bad-input-no-binding"},"mode":"Report","users":{"names":["bad-input-a"]},"users":{"pathPrefix":"/"}}"#,
            "spec.users",
        ),
        (
            r#"{"accountRef":{"name":"bad-input-no-binding"},"mode":"Report","users":{"names":["bad-input-a"]},"device":{"path":"/a/","path":"/"}}"#,
            "spec.device.path",
        ),
        (
            r#"{"accountRef":{"name":"bad-input-no-binding"},"mode":"Report","users":{"names":["bad-input-a"]},"accountRef":{"name":"Other"}}"#,
            "spec.accountRef",
        ),
        (
            r#"{"accountRef":{"name":"bad-input-no-binding","name":"bad-input.no-binding"},"mode":"Report","users":{"names":["bad-input-a"]}}"#,
            "spec.accountRef.name",
        ),
    ];
    for strict in [true, false] {
        for (spec, field) in duplicates {
            cases.push(Case {
                category: "duplicate keys",
                what: format!("duplicate {field} (strict: {strict})"),
                spec: spec.to_owned(),
                strict,
                judge: if strict {
                    Judge::Fixed { status: 400, says: format!("duplicate field \"{field}\"") }
                } else {
                    Judge::Model(serde_json::from_str(spec).expect("duplicate-key literal parses"))
                },
            });
        }
    }

    // Deeply nested JSON at several places, up to and beyond the decoder's limit (10,000).
    for depth in [16, 64, 129, 512, 2048, 8000, 9990, 10_001, 50_000, 200_000] {
        for path in ["users.tags.team", "device", "users.names.0", "accountRef", "foo"] {
            let mut spec = bases[0].clone();
            set(&mut spec, path, Some(json!("@@DEEP@@")));
            let mut nested = String::with_capacity(depth * 6);
            for level in 0..depth {
                nested.push_str(if level % 2 == 0 { "{\"a\":" } else { "[" });
            }
            nested.push('1');
            for level in (0..depth).rev() {
                nested.push(if level % 2 == 0 { '}' } else { ']' });
            }
            let text = serde_json::to_string(&spec).expect("spec serializes").replace("\"@@DEEP@@\"", &nested);
            let judge = if depth > 10_000 {
                // The one refusal that cannot name a field: past the JSON decoder's depth
                // limit the body never becomes an object, so there is no field to name.
                Judge::Fixed { status: 400, says: "max depth".to_owned() }
            } else {
                // What the apiserver looks at is the top of the nesting: an object whose
                // only key is `a`, holding a list.
                set(&mut spec, path, Some(json!({ "a": [1] })));
                Judge::Model(spec)
            };
            cases.push(Case {
                category: "deeply nested JSON",
                what: format!("{path} nested {depth} levels"),
                spec: text,
                strict: path != "foo",
                judge,
            });
        }
    }
    cases
}

// ---------------------------------------------------------------------------------------
// The validity oracle: every rule of the CRD (crds/mfaenrollments.iam.mfa-operator.dev.yaml),
// written out by hand from the schema and docs/api.md (section Validation), so that a rule
// lost or loosened in src/crd/mod.rs shows up as an accepted object the oracle calls invalid.
// ---------------------------------------------------------------------------------------

/// One rule an object breaks, where the apiserver reports it and what it says there.
#[derive(Debug)]
struct Violation {
    /// The field as the apiserver names it (`spec.users.names[0]`).
    at: String,
    /// A fragment of the apiserver's message for this rule.
    says: &'static str,
    /// An OpenAPI error that keeps the apiserver from running the CEL rules (wrong type,
    /// unsupported enum value, required, too long, too many).
    blocking: bool,
    /// A CEL rule (x-kubernetes-validations).
    cel: bool,
}

/// The CEL rules of the CRD: where each is reported and its message. They name the field
/// that carries the rule (a parent of what was mutated, for cross-field rules); the
/// message fragment says which rule it is.
const CEL_NO_SELECTOR: (&str, &str) = ("spec.users", "at least one selector");
const CEL_SELECTED_AND_EXCLUDED: (&str, &str) = ("spec.users", "cannot be in both names and exclude");
const CEL_TAGS: (&str, &str) = ("spec.users.tags", "keys must be 1-128 IAM tag characters");
const CEL_DEVICE_ROOT: (&str, &str) = ("spec.device.path", "must be a path dedicated to the operator");
const CEL_PENDING_TTL: (&str, &str) = ("spec.pendingTTL", "pendingTTL must be between 30s and 8760h");
const CEL_RESYNC: (&str, &str) = ("spec.resyncInterval", "resyncInterval must be between 10s and 24h");
const CEL_EXTERNAL_ID: (&str, &str) = ("spec.aws", "only used together with aws.roleArn");
/// The rules on `spec` itself: a binding is named, the retired fields are absent. As the
/// apiserver shows: a field holding null counts as absent for `has()`, so `aws: null` and
/// `device: null` pass (and are stored as null: both are nullable); the old rules inside
/// `spec.aws` and `spec.device` still apply, and a pattern error there is reported next to
/// the "moved" refusal; like every CEL rule, these are skipped (CEL_SKIPPED) behind an
/// error that blocks the CEL rules, such as an `aws.roleArn` over 2048 characters.
const CEL_NO_ACCOUNT_REF: (&str, &str) = ("spec", "spec.accountRef: name the MfaAccountBinding");
const CEL_AWS_MOVED: (&str, &str) = ("spec", "spec.aws moved to the MfaAccountBinding that spec.accountRef names");
const CEL_DEVICE_MOVED: (&str, &str) =
    ("spec", "spec.device moved to the MfaAccountBinding that spec.accountRef names");
/// When an OpenAPI error blocks the CEL rules, the apiserver says so instead.
const CEL_SKIPPED: &str = "some validation rules were not checked";

fn regex(pattern: &str) -> regex::Regex {
    regex::Regex::new(pattern).expect("oracle pattern")
}

/// IAM user and group names (Go's `\w` is ASCII only).
static IAM_NAME: LazyLock<regex::Regex> = LazyLock::new(|| regex(r"^[0-9A-Za-z_+=,.@-]+$"));
static PATH_PREFIX: LazyLock<regex::Regex> = LazyLock::new(|| regex(r"^/[\x21-\x7E]*$"));
static DEVICE_PATH: LazyLock<regex::Regex> = LazyLock::new(|| regex(r"^/([\x21-\x7E]+/)?$"));
static DURATION: LazyLock<regex::Regex> = LazyLock::new(|| regex(r"^([0-9]{1,6}(h|m|s))+$"));
static DURATION_PART: LazyLock<regex::Regex> = LazyLock::new(|| regex(r"([0-9]{1,6})(h|m|s)"));
static REGION: LazyLock<regex::Regex> = LazyLock::new(|| regex(r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$"));
static ROLE_ARN: LazyLock<regex::Regex> =
    LazyLock::new(|| regex(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[0-9A-Za-z_+=,.@/-]{1,512}$"));
static EXTERNAL_ID: LazyLock<regex::Regex> = LazyLock::new(|| regex(r"^[0-9A-Za-z_+=,.@:/-]+$"));
/// The name of a cluster-scoped object (a DNS subdomain).
static OBJECT_NAME: LazyLock<regex::Regex> =
    LazyLock::new(|| regex(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"));
/// IAM tag keys: letters, separators, numbers (any script) and `_.:/=+-@`.
static TAG_KEY: LazyLock<regex::Regex> = LazyLock::new(|| regex(r"^[\p{L}\p{Z}\p{N}_.:/=+\-@]+$"));

#[derive(Default)]
struct Rules(Vec<Violation>);

impl Rules {
    fn schema(&mut self, at: &str, says: &'static str, blocking: bool) {
        self.0.push(Violation { at: at.to_owned(), says, blocking, cel: false });
    }

    fn cel(&mut self, (at, says): (&str, &'static str)) {
        self.0.push(Violation { at: at.to_owned(), says, blocking: false, cel: true });
    }

    fn object<'a>(&mut self, value: &'a Value, at: &str) -> Option<&'a serde_json::Map<String, Value>> {
        let object = value.as_object();
        if object.is_none() {
            self.schema(at, "must be of type object", true);
        }
        object
    }

    /// A string with lengths in characters (as the apiserver counts them) and a pattern.
    fn string<'a>(
        &mut self,
        value: &'a Value,
        at: &str,
        (min, max): (usize, usize),
        pattern: &regex::Regex,
    ) -> Option<&'a str> {
        let Some(text) = value.as_str() else {
            self.schema(at, "must be of type string", true);
            return None;
        };
        // The apiserver reports a string's length or, when that is right, its pattern.
        let length = text.chars().count();
        if length < min {
            self.schema(at, "should be at least", false);
        } else if length > max {
            self.schema(at, "Too long", true);
        } else if !pattern.is_match(text) {
            self.schema(at, "should match", false);
        }
        Some(text)
    }

    /// A nullable list of IAM names with set semantics.
    fn names<'a>(&mut self, value: Option<&'a Value>, at: &str, most: usize, longest: usize) -> Vec<&'a str> {
        let Some(value) = value.filter(|v| !v.is_null()) else { return Vec::new() };
        let Some(list) = value.as_array() else {
            self.schema(at, "must be of type array", true);
            return Vec::new();
        };
        if list.is_empty() {
            self.schema(at, "should have at least 1 items", false);
        }
        if list.len() > most {
            self.schema(at, "Too many", true);
        }
        let mut seen = Vec::new();
        for (i, item) in list.iter().enumerate() {
            let item_at = format!("{at}[{i}]");
            if let Some(name) = self.string(item, &item_at, (1, longest), &IAM_NAME) {
                if seen.contains(&name) {
                    self.schema(&item_at, "Duplicate value", false);
                }
                seen.push(name);
            }
        }
        seen
    }

    /// A Go duration within bounds (pattern, then a CEL rule on its value).
    fn duration(&mut self, value: Option<&Value>, at: &str, (least, most): (u64, u64), rule: (&str, &'static str)) {
        let Some(value) = value else { return self.schema(at, "Required value", true) };
        let Some(text) = self.string(value, at, (0, 32), &DURATION) else { return };
        if !DURATION.is_match(text) {
            return;
        }
        let seconds: u128 = DURATION_PART
            .captures_iter(text)
            .map(|c| {
                let n: u128 = c[1].parse().expect("digits");
                n * match &c[2] {
                    "h" => 3600,
                    "m" => 60,
                    _ => 1,
                }
            })
            .sum();
        if seconds < u128::from(least) || seconds > u128::from(most) {
            self.cel(rule);
        }
    }
}

/// Every rule of the CRD, checked on a spec as the apiserver validates it (after its
/// pruning and defaulting). `Err` lists every rule broken, where the apiserver reports it.
fn check_valid(spec: &Value) -> Result<(), Vec<Violation>> {
    let mut rules = Rules::default();
    let Some(spec) = rules.object(spec, "spec") else { return Err(rules.0) };

    // mode: required, one of two values.
    match spec.get("mode") {
        None => rules.schema("spec.mode", "Required value", true),
        Some(mode) => match mode.as_str() {
            None => rules.schema("spec.mode", "must be of type string", true),
            Some("Enroll" | "Report") => {}
            Some(_) => rules.schema("spec.mode", "Unsupported value", true),
        },
    }

    // users: required; lists of IAM names (sets), a path prefix, tags, a boolean.
    match spec.get("users") {
        None => rules.schema("spec.users", "Required value", true),
        Some(users) => {
            if let Some(users) = rules.object(users, "spec.users") {
                let names = rules.names(users.get("names"), "spec.users.names", 1000, 64);
                let exclude = rules.names(users.get("exclude"), "spec.users.exclude", 500, 64);
                rules.names(users.get("groups"), "spec.users.groups", 300, 128);
                if let Some(prefix) = users.get("pathPrefix").filter(|v| !v.is_null()) {
                    rules.string(prefix, "spec.users.pathPrefix", (1, 512), &PATH_PREFIX);
                }
                let mut tags_given = false;
                if let Some(tags) = users.get("tags").filter(|v| !v.is_null()) {
                    tags_given = true;
                    if let Some(tags) = rules.object(tags, "spec.users.tags") {
                        if tags.is_empty() {
                            rules.schema("spec.users.tags", "should have at least 1 properties", false);
                        }
                        if tags.len() > 50 {
                            rules.schema("spec.users.tags", "Too many", true);
                        }
                        let mut tags_ok = true;
                        for (key, value) in tags {
                            match value.as_str() {
                                None => rules.schema(&format!("spec.users.tags.{key}"), "must be of type string", true),
                                Some(value) => {
                                    tags_ok &= key.chars().count() <= 128
                                        && TAG_KEY.is_match(key)
                                        && !key.starts_with("aws:")
                                        && value.chars().count() <= 256;
                                }
                            }
                        }
                        if !tags_ok {
                            rules.cel(CEL_TAGS);
                        }
                    }
                }
                match users.get("consoleAccessOnly") {
                    None => rules.schema("spec.users.consoleAccessOnly", "Required value", true),
                    Some(Value::Bool(_)) => {}
                    Some(_) => rules.schema("spec.users.consoleAccessOnly", "must be of type boolean", true),
                }
                // The documented promise: at least one selector that selects something;
                // a selector set to null selects nothing.
                let given = |key: &str| users.get(key).is_some_and(|v| !v.is_null());
                if !(given("names") || given("pathPrefix") || given("groups") || tags_given) {
                    rules.cel(CEL_NO_SELECTOR);
                }
                if names.iter().any(|n| exclude.contains(n)) {
                    rules.cel(CEL_SELECTED_AND_EXCLUDED);
                }
            }
        }
    }

    // accountRef: required (a CEL rule on spec, as a null one counts as absent), an object
    // with the name of a cluster-scoped object.
    match spec.get("accountRef").filter(|v| !v.is_null()) {
        None => rules.cel(CEL_NO_ACCOUNT_REF),
        Some(account_ref) => {
            if let Some(account_ref) = rules.object(account_ref, "spec.accountRef") {
                match account_ref.get("name") {
                    None => rules.schema("spec.accountRef.name", "Required value", true),
                    Some(name) => {
                        rules.string(name, "spec.accountRef.name", (1, 253), &OBJECT_NAME);
                    }
                }
            }
        }
    }

    // device (retired): refused whatever it holds, and what it holds is still checked
    // against its old rules: an IAM path ending in `/`, not `/` itself (defaulted inside
    // `device: {}`).
    if let Some(device) = spec.get("device").filter(|v| !v.is_null()) {
        rules.cel(CEL_DEVICE_MOVED);
        if let Some(device) = rules.object(device, "spec.device") {
            match device.get("path") {
                None => rules.schema("spec.device.path", "Required value", true),
                Some(path) => {
                    if rules.string(path, "spec.device.path", (1, 512), &DEVICE_PATH) == Some("/") {
                        rules.cel(CEL_DEVICE_ROOT);
                    }
                }
            }
        }
    }

    rules.duration(spec.get("pendingTTL"), "spec.pendingTTL", (30, 8760 * 3600), CEL_PENDING_TTL);
    rules.duration(spec.get("resyncInterval"), "spec.resyncInterval", (10, 24 * 3600), CEL_RESYNC);

    // aws (retired): refused whatever it holds, and still checked against its old rules:
    // region, role ARN and external ID patterns and lengths; externalId needs roleArn.
    if spec.get("aws").is_some_and(|v| !v.is_null()) {
        rules.cel(CEL_AWS_MOVED);
    }
    if let Some(aws) = spec.get("aws").filter(|v| !v.is_null())
        && let Some(aws) = rules.object(aws, "spec.aws")
    {
        let given = |key: &str| aws.get(key).is_some_and(|v| !v.is_null());
        if given("region") {
            rules.string(&aws["region"], "spec.aws.region", (0, 32), &REGION);
        }
        if given("roleArn") {
            rules.string(&aws["roleArn"], "spec.aws.roleArn", (0, 2048), &ROLE_ARN);
        }
        if given("externalId") {
            rules.string(&aws["externalId"], "spec.aws.externalId", (2, 1224), &EXTERNAL_ID);
            if !given("roleArn") {
                rules.cel(CEL_EXTERNAL_ID);
            }
        }
    }

    if rules.0.is_empty() { Ok(()) } else { Err(rules.0) }
}

// ---------------------------------------------------------------------------------------
// The model of what the apiserver does before validating: it prunes the fields the schema
// does not know (refusing them under fieldValidation=Strict), drops nulls of non-nullable
// fields without a default, and fills in defaults. These follow the committed CRD's schema.
// ---------------------------------------------------------------------------------------

/// The schema of `spec`, from the committed CRD.
fn spec_schema() -> JSONSchemaProps {
    let crd = common::committed_crd();
    let version = crd.spec.versions.into_iter().next().expect("one version");
    let root = version.schema.and_then(|s| s.open_api_v3_schema).expect("a schema");
    root.properties.and_then(|mut p| p.remove("spec")).expect("a spec schema")
}

fn property<'a>(schema: &'a JSONSchemaProps, key: &str) -> Option<&'a JSONSchemaProps> {
    if let Some(property) = schema.properties.as_ref().and_then(|p| p.get(key)) {
        return Some(property);
    }
    match &schema.additional_properties {
        Some(JSONSchemaPropsOrBool::Schema(s)) => Some(s),
        _ => None,
    }
}

fn items(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match &schema.items {
        Some(JSONSchemaPropsOrArray::Schema(s)) => Some(s),
        _ => None,
    }
}

/// Removes the fields the schema does not know and returns where they were, as the
/// apiserver names them.
fn prune(value: &mut Value, schema: Option<&JSONSchemaProps>, at: &str, pruned: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                match schema.and_then(|s| property(s, &key)) {
                    Some(child) => prune(map.get_mut(&key).expect("key"), Some(child), &format!("{at}.{key}"), pruned),
                    None => {
                        map.remove(&key);
                        pruned.push(format!("{at}.{key}"));
                    }
                }
            }
        }
        Value::Array(list) => {
            let item_schema = schema.and_then(items);
            for (i, item) in list.iter_mut().enumerate() {
                let item_at = if item_schema.is_some() { format!("{at}[{i}]") } else { at.to_owned() };
                prune(item, item_schema, &item_at, pruned);
            }
        }
        _ => {}
    }
}

/// Drops nulls of non-nullable fields (replacing them with the default if there is one)
/// and fills in missing defaults.
fn default(value: &mut Value, schema: &JSONSchemaProps) {
    let nullable = |s: &JSONSchemaProps| s.nullable == Some(true);
    match value {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if let Some(child) = property(schema, &key)
                    && map[&key].is_null()
                    && !nullable(child)
                {
                    match &child.default {
                        Some(d) => {
                            map.insert(key, d.0.clone());
                        }
                        None => {
                            map.remove(&key);
                        }
                    }
                }
            }
            for (key, child) in schema.properties.iter().flatten() {
                if let Some(d) = &child.default
                    && !map.contains_key(key)
                {
                    map.insert(key.clone(), d.0.clone());
                }
            }
            for (key, child_value) in map.iter_mut() {
                if let Some(child) = property(schema, key) {
                    default(child_value, child);
                }
            }
        }
        Value::Array(list) => {
            if let Some(item_schema) = items(schema) {
                list.iter_mut().for_each(|item| default(item, item_schema));
            }
        }
        _ => {}
    }
}

/// What the apiserver must answer to a create.
#[derive(Debug)]
enum Expected {
    /// Accepted, stored with exactly this spec.
    Stored(Value),
    /// Refused with this status; the message contains every fragment.
    Refused { status: u16, says: Vec<String> },
}

fn expected(case: &Case, schema: &JSONSchemaProps) -> Expected {
    let submitted = match &case.judge {
        Judge::Fixed { status, says } => return Expected::Refused { status: *status, says: vec![says.clone()] },
        Judge::Model(spec) => spec,
    };
    let mut spec = submitted.clone();
    let mut unknown = Vec::new();
    prune(&mut spec, Some(schema), "spec", &mut unknown);
    if case.strict && !unknown.is_empty() {
        // fieldValidation=Strict: a 400 naming every unknown field, before any validation.
        return Expected::Refused {
            status: 400,
            says: unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect(),
        };
    }
    default(&mut spec, schema);
    match check_valid(&spec) {
        Ok(()) => Expected::Stored(spec),
        Err(violations) => {
            // 422, naming every field that breaks a rule, with what the rule says; CEL rules
            // only when no OpenAPI error blocked them.
            let blocked = violations.iter().any(|v| v.blocking);
            let mut says = Vec::new();
            for v in violations.iter().filter(|v| !(blocked && v.cel)) {
                says.push(format!("{}: ", v.at));
                says.push(v.says.to_owned());
            }
            if blocked && violations.iter().any(|v| v.cel) {
                says.push(CEL_SKIPPED.to_owned());
            }
            says.dedup();
            Expected::Refused { status: 422, says }
        }
    }
}

#[derive(Default)]
struct Tally {
    refused: BTreeMap<u16, usize>,
    accepted: usize,
    /// The first refusal seen, to show what people read.
    sample: Option<String>,
}

#[tokio::test]
async fn generated_invalid_specs_are_refused_with_the_field_named_or_proven_valid() {
    let client = common::client().await;
    common::install_crd(&client).await;
    let ns = common::namespace(&client, "bad-specs").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &enrollment_resource());
    let schema = spec_schema();

    // The starting points themselves are valid, for the apiserver and for the oracle.
    for (i, base) in base_specs().into_iter().enumerate() {
        let name = format!("base-{i}");
        let object = json!({
            "apiVersion": "iam.mfa-operator.dev/v1alpha1", "kind": "MfaEnrollment",
            "metadata": { "name": name }, "spec": base,
        });
        let stored = api
            .patch(&name, &PatchParams::apply(common::TEST_MANAGER), &Patch::Apply(&object))
            .await
            .unwrap_or_else(|e| panic!("base spec {i} refused: {e}"));
        if let Err(why) = check_valid(&stored.data["spec"]) {
            panic!("base spec {i}: the oracle calls it invalid: {why:?}");
        }
        api.delete(&name, &DeleteParams::default()).await.expect("delete base spec");
    }
    // The retired form breaks nothing but the rules that refuse it (the corpus sends it).
    for (i, spec) in retired_specs().iter().enumerate() {
        let mut defaulted = spec.clone();
        default(&mut defaulted, &schema);
        let broken: Vec<(String, &str)> =
            check_valid(&defaulted).err().unwrap_or_default().into_iter().map(|v| (v.at, v.says)).collect();
        let mut moved = Vec::new();
        for (field, rule) in [("device", CEL_DEVICE_MOVED), ("aws", CEL_AWS_MOVED)] {
            if spec.get(field).is_some() {
                moved.push((rule.0.to_owned(), rule.1));
            }
        }
        assert_eq!(broken, moved, "retired spec {i}: the oracle must refuse it for its retired fields only");
    }

    let cases = corpus();
    assert!(cases.len() >= 800, "only {} cases", cases.len());
    let started = Instant::now();
    let url = api.resource_url().to_owned();
    let outcomes: Vec<(usize, Result<Value, kube::Error>)> = futures::stream::iter(cases.iter().enumerate())
        .map(|(i, case)| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let body = format!(
                    r#"{{"apiVersion":"iam.mfa-operator.dev/v1alpha1","kind":"MfaEnrollment","metadata":{{"name":"bad-{i}"}},"spec":{}}}"#,
                    case.spec
                );
                let mut request = kube::core::Request::new(url)
                    .create(&kube::api::PostParams::default(), body.into_bytes())
                    .expect("build create request");
                let validation = if case.strict { "Strict" } else { "Warn" };
                let uri = format!("{}&fieldValidation={validation}", request.uri());
                *request.uri_mut() = uri.parse().expect("valid URI");
                let result = client.request_text(request).await.and_then(|text| {
                    serde_json::from_str::<Value>(&text).map_err(kube::Error::SerdeError)
                });
                (i, result)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let elapsed = started.elapsed();

    let mut tally: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, result) in outcomes {
        let case = &cases[i];
        let entry = tally.entry(case.category).or_default();
        let expected = expected(case, &schema);
        let label = format!("[{}] {}", case.category, case.what);
        match (result, &expected) {
            (Err(kube::Error::Api(status)), Expected::Refused { status: code, says }) => {
                *entry.refused.entry(status.code).or_default() += 1;
                let message = &status.message;
                entry
                    .sample
                    .get_or_insert_with(|| format!("{} -> {}: {}", case.what, status.code, truncate_line(message)));
                let missing: Vec<&String> = says.iter().filter(|s| !message.contains(s.as_str())).collect();
                if status.code != *code || !missing.is_empty() {
                    failures.push(format!(
                        "{label}: expected {code} with {says:?}, got {} without {missing:?}: {}",
                        status.code,
                        truncate_line(message)
                    ));
                }
            }
            (Err(kube::Error::Api(status)), Expected::Stored(_)) => {
                *entry.refused.entry(status.code).or_default() += 1;
                failures.push(format!(
                    "{label}: refused ({}), but the oracle calls it valid: {}",
                    status.code,
                    truncate_line(&status.message)
                ));
            }
            (Err(other), _) => failures.push(format!("{label}: {other}")),
            (Ok(_), expected) => {
                entry.accepted += 1;
                let name = format!("bad-{i}");
                // Read back what is stored, as raw JSON.
                match api.get(&name).await {
                    Err(e) => failures.push(format!("{label}: accepted but cannot be read back: {e}")),
                    Ok(stored) => {
                        let spec = &stored.data["spec"];
                        match expected {
                            Expected::Refused { status, says } => failures.push(format!(
                                "{label}: accepted, expected {status} with {says:?}; the oracle: {:?}",
                                check_valid(spec).err()
                            )),
                            Expected::Stored(predicted) if predicted != spec => failures.push(format!(
                                "{label}: stored spec {} differs from the pruned and defaulted {}",
                                truncate(&spec.to_string()),
                                truncate(&predicted.to_string())
                            )),
                            Expected::Stored(_) => {}
                        }
                        let mut unknown = Vec::new();
                        prune(&mut spec.clone(), Some(&schema), "spec", &mut unknown);
                        if !unknown.is_empty() {
                            failures.push(format!("{label}: stored with fields the schema does not know: {unknown:?}"));
                        }
                        if let Err(why) = check_valid(spec) {
                            failures.push(format!("{label}: accepted but invalid: {why:?}"));
                        }
                        let raw = serde_json::to_value(&stored).expect("stored object serializes");
                        if let Err(e) = serde_json::from_value::<MfaEnrollment>(raw) {
                            failures
                                .push(format!("{label}: accepted but does not deserialize into MfaEnrollment: {e}"));
                        }
                    }
                }
                // Nothing accepted stays around for an operator to act on.
                let _ = api.delete(&name, &DeleteParams::default()).await;
            }
        }
    }

    println!("{} specs sent in {elapsed:.1?}:", cases.len());
    println!("{:<26} {:>8} {:>8} {:>8}", "category", "400", "422", "accepted");
    for (category, t) in &tally {
        let count = |code| t.refused.get(&code).copied().unwrap_or(0);
        println!("{category:<26} {:>8} {:>8} {:>8}", count(400), count(422), t.accepted);
    }
    let refused: usize = tally.values().flat_map(|t| t.refused.values()).sum();
    let accepted: usize = tally.values().map(|t| t.accepted).sum();
    println!("{:<26} {refused:>17} {accepted:>8}", "total");
    println!("one refusal per category:");
    for (category, t) in &tally {
        println!("  [{category}] {}", t.sample.as_deref().unwrap_or("(none refused)"));
    }
    assert!(failures.is_empty(), "{} of {} specs misbehaved:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Part 2: hostile code submissions against a running operator.
// ---------------------------------------------------------------------------------------

/// Hostile users of the attacked enrollment, driven concurrently.
const HOSTILE_USERS: usize = 8;
/// Rounds of one submission per hostile user each (8 x 28 = 224 submissions).
const ROUNDS: usize = 28;
/// Upper bound for the operator's reaction to one submission.
const REACTION: Duration = Duration::from_secs(20);
const MAX_FAILED_ATTEMPTS: u32 = 5;

struct Bed {
    ns: String,
    secrets: Api<Secret>,
    enrollments: Api<MfaEnrollment>,
}

impl Bed {
    async fn apply(&self, name: &str, spec: Value) {
        common::apply_enrollment(&self.enrollments, name, spec).await;
    }

    async fn wait(&self, name: &str, what: &str, check: impl Fn(&MfaEnrollment) -> bool) -> MfaEnrollment {
        common::wait_until(&self.enrollments, name, REACTION, what, move |o: Option<&MfaEnrollment>| {
            o.is_some_and(&check)
        })
        .await
    }

    async fn wait_secret(&self, name: &str, what: &str, check: impl Fn(&Secret) -> bool) -> Secret {
        common::wait_until(&self.secrets, name, REACTION, what, move |o: Option<&Secret>| o.is_some_and(&check)).await
    }

    async fn patch_secret(&self, name: &str, patch: &Value) -> Result<Secret, kube::Error> {
        self.secrets.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await
    }
}

fn message(e: &MfaEnrollment, user: &str) -> String {
    user_status(e, user).and_then(|u| u.message.clone()).unwrap_or_default()
}

fn is_ready(e: &MfaEnrollment) -> bool {
    let status = e.status.as_ref();
    status.and_then(|s| s.observed_generation) == e.metadata.generation
        && status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn has_codes(secret: &Secret) -> bool {
    secret.data.as_ref().is_some_and(|d| d.contains_key("code1") || d.contains_key("code2"))
}

fn last_rejection(secret: &Secret) -> String {
    secret.annotations().get("iam.mfa-operator.dev/last-rejection").cloned().unwrap_or_default()
}

/// One hostile user: its Secret, current seed and the refusals counted on its device.
struct Target {
    user: String,
    secret: String,
    seed: String,
    counted: u32,
    rotations: u32,
    last_refused: Option<(String, String)>,
    /// A single code key is still in the Secret (a partial submission left it there).
    partial_left: bool,
}

/// How a submission must end.
enum Expect {
    /// Refused and counted towards the device's replacement.
    Counted,
    /// Refused, not counted (late or early codes prove the seed is held); the message
    /// contains this text.
    Timing(&'static str),
    /// Only one code: the operator asks for both and keeps waiting.
    Partial,
    /// The apiserver refuses the write itself.
    ApiRefused,
}

struct Submission {
    category: &'static str,
    patch: Value,
    expect: Expect,
}

fn strings(code1: &str, code2: &str) -> Value {
    json!({ "stringData": { "code1": code1, "code2": code2 } })
}

fn hostile_submission(rng: &mut Rng, target: &Target, other_seed: &str) -> Submission {
    let b64 = |bytes: &[u8]| data_encoding::BASE64.encode(bytes);
    let kind = rng.below(14);
    let (category, patch, expect) = match kind {
        0 => {
            let code = (*rng.pick(&["", "1", "12345", "1234567", "0000000000", "00000"])).to_owned();
            ("wrong length", strings(&code, &rng.digits(6)), Expect::Counted)
        }
        1 => {
            let code = *rng.pick(&[
                "12ab56",
                "abcdef",
                "ABCDEF",
                "12345a",
                "12 456",
                "-12345",
                "1e+05",
                "0x1234",
                "${jndi:ldap://x/a}",
                "'; DROP TABLE users;--",
                "123456\0",
                "\u{202E}123456",
                "\t135790\n",
                "１２３４５６",
            ]);
            ("letters and symbols", strings(&rng.digits(6), code), Expect::Counted)
        }
        2 => {
            let code = *rng.pick(&["٠١٢٣٤٥", "१२३४५६", "１２３４５６", "𝟙𝟚𝟛𝟜𝟝𝟞", "໑໒໓໔໕໖", "12345٦"]);
            ("unicode digits", strings(code, &rng.digits(6)), Expect::Counted)
        }
        3 if rng.one_in(3) => ("1 MB string", strings(&"7".repeat(1_000_000), &rng.digits(6)), Expect::Counted),
        4 if rng.one_in(3) => {
            ("over 1 MiB (apiserver)", strings(&"8".repeat(1_100_000), &rng.digits(6)), Expect::ApiRefused)
        }
        5 | 6 => {
            let mut bytes: Vec<u8> = (0..1 + rng.below(64)).map(|_| rng.next() as u8).collect();
            bytes.push(0xff); // never six ASCII digits
            let other: Vec<u8> = (0..6).map(|_| rng.next() as u8 | 0x80).collect();
            ("binary bytes", json!({ "data": { "code1": b64(&bytes), "code2": b64(&other) } }), Expect::Counted)
        }
        7 => (
            "not base64 (apiserver)",
            json!({ "data": { "code1": "%%%not base64%%%", "code2": "!!" } }),
            Expect::ApiRefused,
        ),
        8 if target.last_refused.is_some() => {
            let (code1, code2) = target.last_refused.clone().expect("checked");
            ("replayed refused pair", strings(&code1, &code2), Expect::Counted)
        }
        9 => {
            let (code1, code2) = iam::codes_now(other_seed);
            ("another user's seed", strings(&code1, &code2), Expect::Counted)
        }
        10 if !target.partial_left => {
            let key = *rng.pick(&["code1", "code2"]);
            ("only one code", json!({ "stringData": { key: rng.digits(6) } }), Expect::Partial)
        }
        11 if rng.one_in(2) => {
            let (code1, code2) = iam::codes_at(&target.seed, iam::now_secs() - 300);
            ("stale own codes (not counted)", strings(&code1, &code2), Expect::Timing("old"))
        }
        12 if rng.one_in(2) => {
            let (code1, code2) = iam::codes_at(&target.seed, iam::now_secs() + 180);
            ("early own codes (not counted)", strings(&code1, &code2), Expect::Timing("future"))
        }
        _ => ("random digits", strings(&rng.digits(6), &rng.digits(6)), Expect::Counted),
    };
    Submission { category, patch, expect }
}

/// Writes one hostile submission and waits until the operator has reacted to it.
/// Returns the category and whether the apiserver (true) or the operator refused it.
async fn attack(bed: &Bed, enrollment: &str, target: &mut Target, submission: Submission) -> (&'static str, bool) {
    let Submission { category, patch, expect } = submission;
    let user = target.user.clone();
    let result = bed.patch_secret(&target.secret, &patch).await;
    if let Expect::ApiRefused = expect {
        match result {
            Err(kube::Error::Api(s)) if (400..500).contains(&s.code) && !s.message.is_empty() => {}
            other => {
                panic!("{category} for {user}: expected a 4xx from the apiserver, got {:?}", other.map(|_| "accepted"))
            }
        }
        return (category, true);
    }
    if let Err(e) = result {
        panic!("{category} for {user}: the apiserver refused the submission: {e}");
    }
    let six_digits = |v: &Value, key: &str| {
        v["stringData"][key]
            .as_str()
            .filter(|c| c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned)
    };
    match expect {
        Expect::Counted => {
            let attempts = target.counted + 1;
            if attempts < MAX_FAILED_ATTEMPTS {
                let marker = format!("refused submission {attempts} of {MAX_FAILED_ATTEMPTS}");
                bed.wait_secret(&target.secret, &format!("{category}: codes cleared, refusal {attempts}"), |s| {
                    !has_codes(s) && last_rejection(s).contains(&marker)
                })
                .await;
                let seen = bed
                    .wait(enrollment, &format!("{category}: {user} {marker}"), |e| {
                        state(e, &user) == Some(UserState::Compliant)
                            || (message(e, &user).contains("codes refused") && message(e, &user).contains(&marker))
                    })
                    .await;
                assert_eq!(state(&seen, &user), Some(UserState::Pending), "{category}: {user} with wrong codes");
                target.counted = attempts;
            } else {
                // The fifth counted refusal replaces the device: a new seed in the Secret.
                let old_seed = target.seed.clone();
                let secret = bed
                    .wait_secret(&target.secret, &format!("{category}: device replaced after 5 refusals"), |s| {
                        data(s, "seed").is_some_and(|seed| seed != old_seed) && !has_codes(s)
                    })
                    .await;
                let seen = bed
                    .wait(enrollment, &format!("{category}: {user} waits for codes on the new device"), |e| {
                        state(e, &user) == Some(UserState::Compliant)
                            || (state(e, &user) == Some(UserState::Pending)
                                && message(e, &user).contains("scan the QR code"))
                    })
                    .await;
                assert_eq!(state(&seen, &user), Some(UserState::Pending), "{category}: {user} with wrong codes");
                target.seed = data(&secret, "seed").expect("new seed");
                target.counted = 0;
                target.rotations += 1;
            }
            if let (Some(code1), Some(code2)) = (six_digits(&patch, "code1"), six_digits(&patch, "code2")) {
                target.last_refused = Some((code1, code2));
            }
            target.partial_left = false;
        }
        Expect::Timing(marker) => {
            bed.wait_secret(&target.secret, &format!("{category}: codes cleared, not counted"), |s| {
                !has_codes(s) && last_rejection(s).contains(marker)
            })
            .await;
            let seen = bed
                .wait(enrollment, &format!("{category}: {user} told the codes are {marker}"), |e| {
                    state(e, &user) == Some(UserState::Compliant) || message(e, &user).contains(marker)
                })
                .await;
            assert_eq!(state(&seen, &user), Some(UserState::Pending), "{category}: {user} with untimely codes");
            let recorded = user_status(&seen, &user).and_then(|u| u.failed_attempts).unwrap_or(0);
            assert_eq!(recorded, target.counted, "{category}: untimely codes are not counted");
            target.partial_left = false;
        }
        Expect::Partial => {
            let seen = bed
                .wait(enrollment, &format!("{category}: {user} asked for both codes"), |e| {
                    state(e, &user) == Some(UserState::Compliant)
                        || message(e, &user).contains("write both code1 and code2")
                })
                .await;
            assert_eq!(state(&seen, &user), Some(UserState::Pending), "{category}: {user} with one code");
            target.partial_left = true;
        }
        Expect::ApiRefused => unreachable!("handled above"),
    }
    (category, false)
}

#[tokio::test]
async fn hostile_code_submissions_are_refused_while_other_enrollments_converge() {
    let client = common::client().await;
    common::install_crd(&client).await;
    let ns = common::namespace(&client, "bad-codes").await;
    let iam_client = iam::client().await;
    let tag = common::unique("badcodes");
    let path = format!("/{tag}/");
    let device_path = format!("/{tag}-devices/");
    let bed = Bed {
        secrets: Api::namespaced(client.clone(), &ns),
        enrollments: Api::namespaced(client.clone(), &ns),
        ns: ns.clone(),
    };
    let mut hostile_users = Vec::new();
    for i in 0..HOSTILE_USERS {
        let user = format!("{tag}-h{i}");
        iam::create_user(&iam_client, &user, &path).await;
        hostile_users.push(user);
    }
    let mut bystanders = Vec::new();
    for i in 0..3 {
        let user = format!("{tag}-b{i}");
        iam::create_user(&iam_client, &user, &path).await;
        bystanders.push(user);
    }
    let operator = Operator::start(&bed.ns);

    bed.apply(
        "hostile",
        json!({ "mode": "Enroll", "users": { "names": hostile_users }, "device": { "path": device_path } }),
    )
    .await;
    let ready = bed
        .wait("hostile", "hostile enrollment Ready, every user Pending", |e| {
            is_ready(e) && hostile_users.iter().all(|u| state(e, u) == Some(UserState::Pending))
        })
        .await;
    let mut targets = Vec::new();
    for user in &hostile_users {
        let secret = user_status(&ready, user).and_then(|u| u.seed_secret.clone()).expect("seed Secret in status");
        let seed = data(&bed.secrets.get(&secret).await.expect("seed Secret"), "seed").expect("seed");
        targets.push(Target {
            user: user.clone(),
            secret,
            seed,
            counted: 0,
            rotations: 0,
            last_refused: None,
            partial_left: false,
        });
    }

    let (midway_tx, midway_rx) = futures::channel::oneshot::channel::<()>();
    let started = Instant::now();
    let attacks = async {
        let mut midway = Some(midway_tx);
        let mut tally: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
        for round in 0..ROUNDS {
            if round == ROUNDS / 2
                && let Some(tx) = midway.take()
            {
                let _ = tx.send(());
            }
            let seeds: Vec<String> = targets.iter().map(|t| t.seed.clone()).collect();
            // Every hostile user at once: concurrent submissions to several Secrets.
            let outcomes = futures::future::join_all(targets.iter_mut().enumerate().map(|(u, target)| {
                let mut rng = Rng::new(CORPUS_SEED ^ ((round * HOSTILE_USERS + u) as u64).wrapping_mul(0x2545_f491));
                let other_seed = &seeds[(u + 1) % seeds.len()];
                let submission = hostile_submission(&mut rng, target, other_seed);
                attack(&bed, "hostile", target, submission)
            }))
            .await;
            for (category, by_apiserver) in outcomes {
                let entry = tally.entry(category).or_default();
                if by_apiserver {
                    entry.1 += 1;
                } else {
                    entry.0 += 1;
                }
            }
        }
        tally
    };
    let bystander = async {
        midway_rx.await.expect("the attack reaches its middle");
        let created = Instant::now();
        bed.apply(
            "bystanders",
            json!({ "mode": "Enroll", "users": { "names": bystanders }, "device": { "path": device_path } }),
        )
        .await;
        let ready = bed
            .wait("bystanders", "bystanders Ready with every user Pending", |e| {
                is_ready(e) && bystanders.iter().all(|u| state(e, u) == Some(UserState::Pending))
            })
            .await;
        let to_ready = created.elapsed();
        let user = &bystanders[0];
        let secret = user_status(&ready, user).and_then(|u| u.seed_secret.clone()).expect("seed Secret in status");
        let seed = data(&bed.secrets.get(&secret).await.expect("seed Secret"), "seed").expect("seed");
        let (code1, code2) = iam::codes_now(&seed);
        let submitted = Instant::now();
        bed.patch_secret(&secret, &strings(&code1, &code2)).await.expect("submit valid codes");
        bed.wait("bystanders", "bystander Compliant", |e| state(e, user) == Some(UserState::Compliant)).await;
        (to_ready, submitted.elapsed())
    };
    let (tally, (bystander_ready, bystander_compliant)) = tokio::join!(attacks, bystander);
    let attack_time = started.elapsed();

    // Still responsive: valid codes on a hostile user's current device are accepted (the
    // wait is bounded by REACTION; how long it took is a figure, printed below, not a pass
    // condition).
    let target = &targets[0];
    let (code1, code2) = iam::codes_now(&target.seed);
    let submitted = Instant::now();
    bed.patch_secret(&target.secret, &strings(&code1, &code2)).await.expect("submit valid codes");
    bed.wait("hostile", "final valid submission accepted", |e| state(e, &target.user) == Some(UserState::Compliant))
        .await;
    let final_latency = submitted.elapsed();

    // Nobody else turned Compliant; exactly one device per user, enabled only where valid
    // codes were given.
    let done = bed.enrollments.get("hostile").await.expect("get hostile");
    for t in &targets[1..] {
        assert_eq!(state(&done, &t.user), Some(UserState::Pending), "{} after hostile codes only", t.user);
    }
    let devices = iam::devices_under(&iam_client, &device_path).await;
    for user in hostile_users.iter().chain(&bystanders) {
        let mine: Vec<_> =
            devices.iter().filter(|(serial, _)| serial.ends_with(&format!("{device_path}{user}"))).collect();
        assert_eq!(mine.len(), 1, "{user}: {mine:?}");
        let enabled = mine[0].1.is_some();
        assert_eq!(enabled, *user == target.user || *user == bystanders[0], "{user} enabled: {enabled}");
    }
    let logs = operator.logs_to_scan();
    assert!(!logs.contains("panicked"), "the operator panicked:\n{logs}");

    let (by_operator, by_apiserver): (usize, usize) = tally.values().fold((0, 0), |(o, a), t| (o + t.0, a + t.1));
    println!(
        "{} hostile submissions in {attack_time:.1?} ({HOSTILE_USERS} Secrets at once):",
        by_operator + by_apiserver
    );
    println!("{:<32} {:>18} {:>19}", "category", "refused (operator)", "refused (apiserver)");
    for (category, (o, a)) in &tally {
        println!("{category:<32} {o:>18} {a:>19}");
    }
    println!("{:<32} {by_operator:>18} {by_apiserver:>19}", "total (accepted: 0)");
    let rotations: u32 = targets.iter().map(|t| t.rotations).sum();
    println!("devices replaced after 5 counted refusals: {rotations}");
    println!(
        "bystander enrollment created mid-attack: Ready in {bystander_ready:.1?}, Compliant {bystander_compliant:.1?} after its codes"
    );
    println!("final valid submission accepted in {final_latency:.1?}; no panic in {} log bytes", logs.len());
    assert!(by_operator + by_apiserver >= 200, "only {} submissions", by_operator + by_apiserver);
    assert!(rotations > 0, "no device was replaced");
}
