//! Tests of the reconcile glue in `cargo test --lib`: `reconcile::reconcile` runs against
//! an in-memory IAM account (`crate::aws::fake`) and a kube client whose requests a small
//! fake apiserver answers from memory (tower-test's mock service), so a code submission's
//! whole path (Secret → one `EnableMFADevice` → Secret deleted → status) runs in
//! milliseconds, with no test bed.
//!
//! The fake apiserver keeps objects as JSON, answers the requests a reconcile makes
//! (lists by label and field selector, whole or metadata only; create; JSON, merge and
//! server-side apply patches, status included; delete; Events) and records each request.
//! Anything else gets a 404 naming what was asked, and is noted so a test fails on it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use http::{HeaderMap, Method, Request, Response, StatusCode};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::client::Body;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde_json::{Value, json};

use super::integrity::IntegrityKey;
use super::vocabulary::{ConditionReason, ConditionType, EventReason};
use super::{AccountKey, Accounts, Config, Context, Error, FINALIZER, reconcile, seed_secret};
use crate::aws::fake::{self, ACCOUNT_ID};
use crate::aws::{IamApi, IamUser, VirtualDevice};
use crate::crd::{MfaEnrollment, MfaEnrollmentStatus, UserState};
use crate::totp;

/// The clock of every reconcile here, and of the IAM account.
const NOW: Timestamp = Timestamp::constant(1_767_225_600, 0);
const NAMESPACE: &str = "team-a";
const ENROLLMENT: &str = "engineering";
const ENROLLMENT_UID: &str = "0b3e5c1a-enrollment";
const BINDING: &str = "team-a";
const DEVICE_PATH: &str = "/mfa-operator/";
const CRD_API: &str = "/apis/iam.mfa-operator.dev/v1alpha1";

fn now() -> Timestamp {
    NOW
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------
// The fake apiserver

/// Resources the fake apiserver serves (group/version/plural); anything else is a 404.
const SERVED: [&str; 4] = [
    "v1/secrets",
    "events.k8s.io/v1/events",
    "iam.mfa-operator.dev/v1alpha1/mfaenrollments",
    "iam.mfa-operator.dev/v1alpha1/mfaaccountbindings",
];

/// One request as the apiserver received it. Secret data in the body is redacted (a seed
/// or a code must never reach an assertion message); `null`s are kept, so a patch that
/// removes the codes still shows it.
#[derive(Clone, Debug)]
struct Sent {
    method: Method,
    path: String,
    content_type: String,
    query: BTreeMap<String, String>,
    body: Value,
}

/// What a request addresses: `resource` is group/version/plural.
struct Target {
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn target(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group_version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ((*version).to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => (Some((*namespace).to_owned()), rest),
        _ => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [resource] => (resource, None, None),
        [resource, name] => (resource, Some((*name).to_owned()), None),
        [resource, name, sub] => (resource, Some((*name).to_owned()), Some((*sub).to_owned())),
        _ => return None,
    };
    Some(Target { resource: format!("{group_version}/{resource}"), namespace, name, subresource })
}

/// Objects by (resource, namespace or "" when cluster-scoped, name).
type Key = (String, String, String);

/// The apiserver's memory: objects, every request, and the requests it had no route for.
#[derive(Default)]
struct Cluster {
    objects: BTreeMap<Key, Value>,
    sent: Vec<Sent>,
    unrouted: Vec<String>,
    version: u64,
}

/// An answer: HTTP status and JSON body.
type Answer = (StatusCode, Value);

fn status(code: StatusCode, reason: &str, message: String) -> Answer {
    let body = json!({
        "apiVersion": "v1", "kind": "Status", "metadata": {},
        "status": if code.is_success() { "Success" } else { "Failure" },
        "reason": reason, "message": message, "code": code.as_u16(),
    });
    (code, body)
}

impl Cluster {
    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    /// Stores `object` as if someone had created it (not a request).
    fn put(&mut self, resource: &str, object: Value) {
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
        let name = object["metadata"]["name"].as_str().expect("a named object").to_owned();
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!(self.next_version());
        self.objects.insert((resource.to_owned(), namespace, name), object);
    }

    fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(resource.to_owned(), namespace.to_owned(), name.to_owned()))
    }

    fn all(&self, resource: &str) -> Vec<&Value> {
        self.objects.iter().filter(|((r, _, _), _)| r == resource).map(|(_, o)| o).collect()
    }

    fn answer(&mut self, method: &Method, uri: &http::Uri, headers: &HeaderMap, body: &[u8]) -> Answer {
        let path = uri.path().to_owned();
        let query = parse_query(uri.query().unwrap_or_default());
        let body: Value =
            if body.is_empty() { Value::Null } else { serde_json::from_slice(body).unwrap_or(Value::Null) };
        let header = |name: http::header::HeaderName| {
            headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
        };
        self.sent.push(Sent {
            method: method.clone(),
            path: path.clone(),
            content_type: header(http::header::CONTENT_TYPE),
            query: query.clone(),
            body: redacted(&body),
        });
        let routed = target(&path).filter(|t| {
            SERVED.contains(&t.resource.as_str())
                && t.subresource.as_deref().is_none_or(|s| s == "status")
                && !query.contains_key("watch")
        });
        let answer = match (method, routed) {
            (&Method::GET, Some(t)) if t.name.is_none() => {
                let metadata_only = header(http::header::ACCEPT).contains("as=PartialObjectMetadataList");
                self.list(&t, &query, metadata_only)
            }
            (&Method::GET, Some(t)) if t.subresource.is_none() => self.read(&t),
            (&Method::POST, Some(t)) if t.name.is_none() => self.create(&t, body),
            (&Method::PATCH, Some(t)) if t.name.is_some() => self.patch(&t, &header(http::header::CONTENT_TYPE), &body),
            (&Method::DELETE, Some(t)) if t.name.is_some() && t.subresource.is_none() => self.delete(&t),
            _ => None,
        };
        answer.unwrap_or_else(|| {
            let asked = format!("{method} {uri}");
            self.unrouted.push(asked.clone());
            status(StatusCode::NOT_FOUND, "NotFound", format!("the fake apiserver has no route for {asked}"))
        })
    }

    fn key(t: &Target, name: &str) -> Key {
        (t.resource.clone(), t.namespace.clone().unwrap_or_default(), name.to_owned())
    }

    fn not_found(t: &Target, name: &str) -> Answer {
        status(StatusCode::NOT_FOUND, "NotFound", format!("{} \"{name}\" not found", t.resource))
    }

    fn read(&self, t: &Target) -> Option<Answer> {
        let name = t.name.as_deref()?;
        Some(match self.objects.get(&Self::key(t, name)) {
            Some(object) => (StatusCode::OK, object.clone()),
            None => Self::not_found(t, name),
        })
    }

    /// A list by label and field selector, paged by `limit`/`continue`, whole objects or
    /// metadata only. `None` (no route) for a field selector it does not know.
    fn list(&self, t: &Target, query: &BTreeMap<String, String>, metadata_only: bool) -> Option<Answer> {
        let labels = query.get("labelSelector").map(String::as_str).unwrap_or_default();
        let mut fields = Vec::new();
        for term in query.get("fieldSelector").map(String::as_str).unwrap_or_default().split(',') {
            match term.split_once('=') {
                Some((field @ ("metadata.name" | "metadata.namespace"), value)) => fields.push((field, value)),
                None if term.is_empty() => {}
                _ => return None,
            }
        }
        let matching: Vec<&Value> = self
            .objects
            .iter()
            .filter(|((resource, namespace, _), _)| {
                resource == &t.resource && t.namespace.as_ref().is_none_or(|ns| ns == namespace)
            })
            .map(|(_, object)| object)
            .filter(|object| selects(labels, &object["metadata"]["labels"]))
            .filter(|object| {
                fields.iter().all(|(field, value)| {
                    let actual = &object["metadata"][field.trim_start_matches("metadata.")];
                    actual.as_str() == Some(*value)
                })
            })
            .collect();
        let start: usize = query.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
        let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
        let end = start.saturating_add(limit).min(matching.len());
        let page = matching.get(start..end).unwrap_or_default();
        let items: Vec<Value> = page
            .iter()
            .map(|object| {
                if metadata_only {
                    json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": object["metadata"] })
                } else {
                    (*object).clone()
                }
            })
            .collect();
        let mut metadata = json!({ "resourceVersion": self.version.to_string() });
        if end < matching.len() {
            metadata["continue"] = json!(end.to_string());
        }
        let (api_version, kind) = if metadata_only {
            ("meta.k8s.io/v1".to_owned(), "PartialObjectMetadataList".to_owned())
        } else {
            let (group_version, _) = t.resource.rsplit_once('/').unwrap_or_default();
            (group_version.to_owned(), "List".to_owned())
        };
        Some((StatusCode::OK, json!({ "apiVersion": api_version, "kind": kind, "metadata": metadata, "items": items })))
    }

    fn create(&mut self, t: &Target, mut object: Value) -> Option<Answer> {
        let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
            return Some(status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "metadata.name: Required value".into()));
        };
        let key = Self::key(t, &name);
        if self.objects.contains_key(&key) {
            let message = format!("{} \"{name}\" already exists", t.resource);
            return Some(status(StatusCode::CONFLICT, "AlreadyExists", message));
        }
        let version = self.next_version();
        let metadata = &mut object["metadata"];
        if let Some(namespace) = &t.namespace {
            metadata["namespace"] = json!(namespace);
        }
        metadata["uid"] = json!(format!("uid-{version}"));
        metadata["resourceVersion"] = json!(version);
        metadata["creationTimestamp"] = json!(NOW.to_string());
        self.objects.insert(key, object.clone());
        Some((StatusCode::CREATED, object))
    }

    fn patch(&mut self, t: &Target, content_type: &str, patch: &Value) -> Option<Answer> {
        let name = t.name.clone()?;
        let key = Self::key(t, &name);
        let Some(mut object) = self.objects.get(&key).cloned() else { return Some(Self::not_found(t, &name)) };
        let status_only = t.subresource.is_some();
        match content_type {
            "application/json-patch+json" if !status_only => {
                if let Err(why) = json_patch(&mut object, patch) {
                    return Some(status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", why));
                }
            }
            "application/merge-patch+json" if !status_only => {
                let expected = patch["metadata"]["resourceVersion"].as_str();
                if expected.is_some_and(|v| Some(v) != object["metadata"]["resourceVersion"].as_str()) {
                    let message = format!("Operation cannot be fulfilled on {name}: the object has been modified");
                    return Some(status(StatusCode::CONFLICT, "Conflict", message));
                }
                merge_patch(&mut object, patch);
            }
            // Server-side apply of the status: the operator owns all of it.
            "application/apply-patch+yaml" if status_only => object["status"] = patch["status"].clone(),
            _ => return None,
        }
        object["metadata"]["resourceVersion"] = json!(self.next_version());
        let deleting = !object["metadata"]["deletionTimestamp"].is_null();
        let finalized = object["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty);
        if deleting && finalized {
            // The last finalizer went: the object goes.
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, object.clone());
        }
        Some((StatusCode::OK, object))
    }

    fn delete(&mut self, t: &Target) -> Option<Answer> {
        let name = t.name.clone()?;
        let key = Self::key(t, &name);
        let Some(object) = self.objects.get_mut(&key) else { return Some(Self::not_found(t, &name)) };
        if object["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty()) {
            object["metadata"]["deletionTimestamp"] = json!(NOW.to_string());
            return Some((StatusCode::OK, object.clone()));
        }
        self.objects.remove(&key);
        Some(status(StatusCode::OK, "", String::new()))
    }
}

/// `a=b&c=d`, percent- and plus-decoded.
fn parse_query(query: &str) -> BTreeMap<String, String> {
    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(byte) => {
                            out.push(byte);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                byte => out.push(byte),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// Whether `labels` match a label selector of `k=v`, `k==v`, `k!=v`, `k` and `!k` terms.
fn selects(selector: &str, labels: &Value) -> bool {
    selector.split(',').filter(|term| !term.is_empty()).all(|term| {
        if let Some((key, value)) = term.split_once("!=") {
            labels[key].as_str() != Some(value)
        } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            labels[key].as_str() == Some(value)
        } else if let Some(key) = term.strip_prefix('!') {
            labels.get(key).is_none()
        } else {
            labels.get(term).is_some()
        }
    })
}

/// RFC 7386: objects merge, `null` removes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let object = target.as_object_mut().expect("an object");
    for (key, value) in patch {
        if value.is_null() {
            object.remove(key);
        } else {
            merge_patch(object.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// RFC 6902's `test`, `add` and `remove`, as the apiserver applies them (a `test` of
/// `null` passes on a missing path).
fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    for op in patch.as_array().ok_or("a JSON patch is an array")? {
        let path = op["path"].as_str().ok_or("an operation without a path")?;
        let (parent, last) = path.rsplit_once('/').ok_or("a path must start with /")?;
        match op["op"].as_str() {
            Some("test") => {
                let actual = target.pointer(path).unwrap_or(&Value::Null);
                if actual != &op["value"] {
                    return Err(format!("the test of {path} failed"));
                }
            }
            Some("add") => match target.pointer_mut(parent).ok_or(format!("no {parent}"))? {
                Value::Array(items) if last == "-" => items.push(op["value"].clone()),
                Value::Array(items) => {
                    let index: usize = last.parse().map_err(|_| format!("bad index in {path}"))?;
                    if index > items.len() {
                        return Err(format!("index out of range in {path}"));
                    }
                    items.insert(index, op["value"].clone());
                }
                Value::Object(fields) => {
                    fields.insert(last.to_owned(), op["value"].clone());
                }
                _ => return Err(format!("cannot add under {parent}")),
            },
            Some("remove") => match target.pointer_mut(parent).ok_or(format!("no {parent}"))? {
                Value::Array(items) => {
                    let index: usize = last.parse().map_err(|_| format!("bad index in {path}"))?;
                    if index >= items.len() {
                        return Err(format!("nothing to remove at {path}"));
                    }
                    items.remove(index);
                }
                Value::Object(fields) => {
                    fields.remove(last).ok_or(format!("nothing to remove at {path}"))?;
                }
                _ => return Err(format!("cannot remove under {parent}")),
            },
            other => return Err(format!("the fake apiserver does not apply JSON patch op {other:?}")),
        }
    }
    Ok(())
}

/// `value` with the strings under every `data`/`stringData` replaced.
fn redacted(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, value)| {
                    let value = match value {
                        Value::Object(data) if key == "data" || key == "stringData" => Value::Object(
                            data.iter()
                                .map(|(k, v)| (k.clone(), if v.is_string() { json!("<redacted>") } else { v.clone() }))
                                .collect(),
                        ),
                        other => redacted(other),
                    };
                    (key.clone(), value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redacted).collect()),
        other => other.clone(),
    }
}

/// A kube client whose every request `cluster` answers.
fn serve(cluster: Arc<Mutex<Cluster>>) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let body = body.collect_bytes().await.expect("a request body");
            let (code, answer) = lock(&cluster).answer(&parts.method, &parts.uri, &parts.headers, &body);
            let response = Response::builder()
                .status(code)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&answer).expect("JSON")))
                .expect("a response");
            respond.send_response(response);
        }
    });
    Client::new(service, "default")
}

// ---------------------------------------------------------------------------------------
// One test's world: an IAM account, a cluster, and the operator's context over both

fn iam_user(name: &str) -> IamUser {
    IamUser {
        name: name.into(),
        path: "/".into(),
        arn: format!("arn:aws:iam::{ACCOUNT_ID}:user/{name}"),
        ..IamUser::default()
    }
}

fn serial_of(user: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT_ID}:mfa{DEVICE_PATH}{user}")
}

/// The platform team's binding: this account, the operator's own credentials, namespace
/// `team-a`, every user, Enroll allowed.
fn binding() -> Value {
    json!({
        "apiVersion": "iam.mfa-operator.dev/v1alpha1", "kind": "MfaAccountBinding",
        "metadata": { "name": BINDING, "uid": "uid-binding", "generation": 1 },
        "spec": {
            "accountId": ACCOUNT_ID,
            "namespaces": { "names": [NAMESPACE] },
            "users": { "pathPrefixes": ["/"] },
            "device": { "path": DEVICE_PATH },
            "allowEnroll": true,
        },
    })
}

/// An Enroll enrollment of `users`, as created (no finalizer yet).
fn enrollment(users: &[&str]) -> Value {
    json!({
        "apiVersion": "iam.mfa-operator.dev/v1alpha1", "kind": "MfaEnrollment",
        "metadata": {
            "name": ENROLLMENT, "namespace": NAMESPACE, "uid": ENROLLMENT_UID, "generation": 1,
            "creationTimestamp": "2025-12-01T00:00:00Z",
        },
        "spec": { "accountRef": { "name": BINDING }, "mode": "Enroll", "users": { "names": users } },
    })
}

fn namespace() -> PartialObjectMeta<Namespace> {
    serde_json::from_value(json!({
        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": { "name": NAMESPACE, "labels": { "kubernetes.io/metadata.name": NAMESPACE } },
    }))
    .expect("namespace literal")
}

/// A cache that listed `objects`.
fn filled<K>(objects: Vec<K>) -> Store<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    store
}

struct World {
    ctx: Arc<Context>,
    iam: Arc<fake::Account>,
    cluster: Arc<Mutex<Cluster>>,
    key: IntegrityKey,
}

impl World {
    /// An account whose `users` have no MFA, reached through the binding; the binding,
    /// namespace and a new Enroll enrollment of them in the cluster and the caches.
    fn new(users: &[&str]) -> Self {
        Self::build(users, None)
    }

    /// As [`World::new`], with `delivery: Link` and `links` as the operator's link service.
    fn by_link(users: &[&str], links: Arc<crate::links::memory::MemoryLinks>) -> Self {
        Self::build(users, Some(links))
    }

    fn build(users: &[&str], links: Option<Arc<crate::links::memory::MemoryLinks>>) -> Self {
        let iam_users = users.iter().map(|u| {
            // Every user but bob has an e-mail address tag.
            let tags = (*u != "bob").then(|| BTreeMap::from([("email".to_owned(), format!("{u}@example.com"))]));
            IamUser { tags: tags.unwrap_or_default(), ..iam_user(u) }
        });
        let iam = Arc::new(fake::Account::new().at(NOW).with_users(iam_users));
        let mut enrollment = enrollment(users);
        if links.is_some() {
            enrollment["spec"]["delivery"] = json!("Link");
        }
        let accounts = Accounts::default();
        // The binding names no role, ExternalId or region: the operator's own credentials.
        accounts.reach_fake(AccountKey { role_arn: None, external_id: None, region: None }, iam.clone());
        let cluster = Arc::new(Mutex::new(Cluster::default()));
        lock(&cluster).put(SERVED[3], binding());
        lock(&cluster).put(SERVED[2], enrollment.clone());
        let caches = (
            filled(vec![serde_json::from_value(enrollment).expect("enrollment literal")]),
            filled(vec![serde_json::from_value(binding()).expect("binding literal")]),
            filled(vec![namespace()]),
        );
        let config = Config {
            namespaces: Vec::new(),
            reporter: "mfa-operator".into(),
            key_namespace: "mfa-operator".into(),
            key_secret: "mfa-operator-integrity-key".into(),
            links: links.map(|l| super::LinkService(l as Arc<dyn crate::links::Links>)),
            page_grants: None,
        };
        let key = IntegrityKey::from_bytes(&[7; 32]).expect("32 bytes");
        let ctx = Context::for_tests(serve(cluster.clone()), config, caches, key.clone(), accounts, now);
        Self { ctx: Arc::new(ctx), iam, cluster, key }
    }

    /// As [`World::new`], after the reconciles that added the finalizer and created every
    /// user's pending device and seed Secret; the requests so far are forgotten.
    async fn enrolled(users: &[&str]) -> Self {
        let world = Self::new(users);
        world.reconcile().await.expect("the finalizer");
        world.reconcile().await.expect("pending devices");
        assert_eq!(world.secrets().len(), users.len(), "a seed Secret per user");
        world.assert_all_routed();
        lock(&world.cluster).sent.clear();
        world
    }

    /// The enrollment as the cluster has it now.
    fn enrollment(&self) -> Option<MfaEnrollment> {
        let object = lock(&self.cluster).get(SERVED[2], NAMESPACE, ENROLLMENT).cloned()?;
        Some(serde_json::from_value(object).expect("an MfaEnrollment"))
    }

    async fn reconcile(&self) -> Result<kube::runtime::controller::Action, Error> {
        let enrollment = self.enrollment().expect("the enrollment exists");
        reconcile::reconcile(Arc::new(enrollment), self.ctx.clone()).await
    }

    fn sent(&self) -> Vec<Sent> {
        lock(&self.cluster).sent.clone()
    }

    fn sent_to(&self, method: &Method, path: &str) -> Vec<Sent> {
        self.sent().into_iter().filter(|s| s.method == *method && s.path == path).collect()
    }

    fn assert_all_routed(&self) {
        let unrouted = lock(&self.cluster).unrouted.clone();
        assert!(unrouted.is_empty(), "requests the fake apiserver has no route for: {unrouted:?}");
    }

    fn secret_path(user: &str) -> String {
        format!("/api/v1/namespaces/{NAMESPACE}/secrets/{}", seed_secret::secret_name(ENROLLMENT, user))
    }

    fn secret(&self, user: &str) -> Option<Secret> {
        let name = seed_secret::secret_name(ENROLLMENT, user);
        let object = lock(&self.cluster).get(SERVED[0], NAMESPACE, &name).cloned()?;
        Some(serde_json::from_value(object).expect("a Secret"))
    }

    fn secrets(&self) -> Vec<String> {
        let cluster = lock(&self.cluster);
        cluster.all(SERVED[0]).iter().filter_map(|s| s["metadata"]["name"].as_str().map(str::to_owned)).collect()
    }

    fn status(&self) -> MfaEnrollmentStatus {
        let enrollment = self.enrollment().expect("the enrollment exists");
        enrollment.status.expect("a status was written")
    }

    /// The reasons of the Events published (created or repeated), in order.
    fn event_reasons(&self) -> Vec<String> {
        let events = format!("/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events");
        self.sent()
            .into_iter()
            .filter(|s| s.path.starts_with(&events))
            .filter_map(|s| s.body["reason"].as_str().map(str::to_owned))
            .collect()
    }

    /// The TOTP secret of `user`'s seed Secret, as an authenticator app reads it.
    fn totp_secret(&self, user: &str) -> Vec<u8> {
        let secret = self.secret(user).expect("a seed Secret");
        let seed = secret.data.as_ref().and_then(|d| d.get(seed_secret::KEY_SEED)).expect("a seed");
        totp::decode_seed(std::str::from_utf8(&seed.0).expect("base32 text")).expect("a base32 seed")
    }

    /// Two consecutive codes of `user`'s seed that are current at [`NOW`].
    fn current_codes(&self, user: &str) -> (String, String) {
        let secret = self.totp_secret(user);
        let step = totp::step_of(NOW.as_second());
        (totp::code_at(&secret, step - 1), totp::code_at(&secret, step))
    }

    /// Two consecutive numbers that are no code of `user`'s seed within an hour of [`NOW`].
    fn wrong_codes(&self, user: &str) -> (String, String) {
        let secret = self.totp_secret(user);
        let step = totp::step_of(NOW.as_second());
        let near: std::collections::BTreeSet<String> =
            (step - 120..=step + 120).map(|s| totp::code_at(&secret, s)).collect();
        (100_000..)
            .map(|n: u32| (n.to_string(), (n + 1).to_string()))
            .find(|(a, b)| !near.contains(a) && !near.contains(b))
            .expect("a pair that matches nothing")
    }

    /// What `kubectl patch --type merge -p '{"stringData":{"code1":..,"code2":..}}'` does.
    fn submit_codes(&self, user: &str, code1: &str, code2: &str) {
        let name = seed_secret::secret_name(ENROLLMENT, user);
        let mut cluster = lock(&self.cluster);
        let version = cluster.next_version();
        let key = (SERVED[0].to_owned(), NAMESPACE.to_owned(), name);
        let secret = cluster.objects.get_mut(&key).expect("the seed Secret");
        let encode = |code: &str| data_encoding::BASE64.encode(code.as_bytes());
        secret["data"][seed_secret::KEY_CODE1] = json!(encode(code1));
        secret["data"][seed_secret::KEY_CODE2] = json!(encode(code2));
        secret["metadata"]["resourceVersion"] = json!(version);
    }

    /// Calls made to IAM from now on: `calls()[mark..]`.
    fn iam_mark(&self) -> usize {
        self.iam.calls().len()
    }

    fn iam_calls_since(&self, mark: usize) -> Vec<String> {
        self.iam.calls()[mark..].to_vec()
    }

    fn assigned(&self, serial: &str) -> Option<String> {
        self.iam.virtual_devices().into_iter().find(|d| d.serial == serial).and_then(|d| d.user)
    }
}

fn condition(status: &MfaEnrollmentStatus, kind: ConditionType) -> (&str, &str) {
    let condition = status.conditions.iter().find(|c| c.type_ == kind.as_str()).expect("the condition is set");
    (condition.status.as_str(), condition.reason.as_str())
}

fn user<'a>(status: &'a MfaEnrollmentStatus, name: &str) -> &'a crate::crd::UserStatus {
    status.users.iter().find(|u| u.name == name).expect("the user is in status")
}

// ---------------------------------------------------------------------------------------
// The tests

#[tokio::test]
async fn a_new_enrollment_gets_its_finalizer_then_one_pending_device_and_a_tagged_seed_secret() {
    let world = World::new(&["alice"]);
    let path = format!("{CRD_API}/namespaces/{NAMESPACE}/mfaenrollments/{ENROLLMENT}");

    // First the finalizer, and nothing else: no device before deletion can clean it up.
    world.reconcile().await.expect("the finalizer is added");
    assert_eq!(world.iam.calls(), Vec::<String>::new(), "IAM is not asked before the finalizer is on");
    let patches = world.sent_to(&Method::PATCH, &path);
    assert_eq!(patches.len(), 1, "{:?}", world.sent());
    assert_eq!(patches[0].content_type, "application/json-patch+json");
    assert_eq!(world.enrollment().expect("enrollment").metadata.finalizers, Some(vec![FINALIZER.to_owned()]));

    world.reconcile().await.expect("the pending device is created");
    world.assert_all_routed();
    let serial = serial_of("alice");
    assert_eq!(world.iam.writes(), [format!("CreateVirtualMFADevice {DEVICE_PATH}alice")], "one device");
    let tags = world.iam.tags(&serial).expect("the device exists");
    assert_eq!(tags.get("iam.mfa-operator.dev/user").map(String::as_str), Some("alice"));

    // The seed Secret: the operator's tag verifies, and it holds the seed IAM returned.
    assert_eq!(world.secrets(), [seed_secret::secret_name(ENROLLMENT, "alice")]);
    let secret = world.secret("alice").expect("the seed Secret");
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    assert!(annotations.contains_key(seed_secret::ANNOTATION_INTEGRITY), "tagged: {annotations:?}");
    let parsed = seed_secret::parse(&secret, &world.key, ENROLLMENT_UID).expect("the integrity tag verifies");
    assert_eq!(parsed.serial, serial);
    assert!(parsed.seed == world.iam.seed(&serial).expect("seeded"), "the Secret holds the seed IAM returned");
    let created = world.sent_to(&Method::POST, &format!("/api/v1/namespaces/{NAMESPACE}/secrets"));
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].body["data"][seed_secret::KEY_SEED], "<redacted>", "recordings hold no seed");

    // Status, written by server-side apply on the status subresource.
    let writes = world.sent_to(&Method::PATCH, &format!("{path}/status"));
    assert!(!writes.is_empty(), "{:?}", world.sent());
    assert!(writes.iter().all(|w| w.content_type == "application/apply-patch+yaml"));
    assert_eq!(writes[0].query.get("fieldManager").map(String::as_str), Some(super::FIELD_MANAGER));
    let status = world.status();
    let alice = user(&status, "alice");
    assert_eq!(alice.state, UserState::Pending);
    assert_eq!(alice.serial_number.as_deref(), Some(serial.as_str()));
    assert_eq!(alice.seed_secret, Some(seed_secret::secret_name(ENROLLMENT, "alice")));
    assert_eq!(condition(&status, ConditionType::Compliant), ("False", ConditionReason::AwaitingCodes.as_str()));
    assert_eq!(condition(&status, ConditionType::Ready), ("True", ConditionReason::Reconciled.as_str()));
    assert!(world.event_reasons().contains(&EventReason::DeviceCreated.as_str().to_owned()));
    // The binding says it reached its account.
    let binding = world.sent_to(&Method::PATCH, &format!("{CRD_API}/mfaaccountbindings/{BINDING}/status"));
    assert_eq!(binding.len(), 1);
    assert_eq!(binding[0].body["status"]["conditions"][0]["status"], "True");
}

/// The headline: a person writes two codes; one reconcile, one IAM call.
#[tokio::test]
async fn a_code_submission_is_one_enable_then_the_secret_is_deleted_and_status_says_compliant() {
    let world = World::enrolled(&["alice"]).await;
    let serial = serial_of("alice");
    let (code1, code2) = world.current_codes("alice");
    world.submit_codes("alice", &code1, &code2);
    let mark = world.iam_mark();

    world.reconcile().await.expect("the submission is accepted");
    world.assert_all_routed();
    assert_eq!(world.iam_calls_since(mark), [format!("EnableMFADevice alice {serial}")], "one call, no listing");
    assert_eq!(world.assigned(&serial).as_deref(), Some("alice"), "IAM enabled the device for alice");
    assert!(world.secret("alice").is_none(), "the seed Secret is gone");

    // The Secret goes before the status says Compliant.
    let sent = world.sent();
    let status_path = format!("{CRD_API}/namespaces/{NAMESPACE}/mfaenrollments/{ENROLLMENT}/status");
    let deleted = sent.iter().position(|s| s.method == Method::DELETE && s.path == World::secret_path("alice"));
    let written = sent.iter().rposition(|s| s.method == Method::PATCH && s.path == status_path);
    assert!(deleted.is_some() && written.is_some() && deleted < written, "{sent:?}");

    let status = world.status();
    let alice = user(&status, "alice");
    assert_eq!(alice.state, UserState::Compliant);
    assert_eq!(alice.seed_secret, None);
    assert_eq!(condition(&status, ConditionType::Compliant), ("True", ConditionReason::AllUsersHaveMfa.as_str()));
    assert_eq!(status.summary.as_ref().map(|s| (s.selected, s.compliant)), Some((1, 1)));
    assert!(world.event_reasons().contains(&EventReason::MfaEnabled.as_str().to_owned()));
}

#[tokio::test]
async fn wrong_codes_enable_nothing_clear_the_codes_and_count_one_refusal() {
    let world = World::enrolled(&["alice"]).await;
    let serial = serial_of("alice");
    let (code1, code2) = world.wrong_codes("alice");
    world.submit_codes("alice", &code1, &code2);
    let mark = world.iam_mark();

    world.reconcile().await.expect("a refusal is no failure");
    world.assert_all_routed();
    assert_eq!(world.iam_calls_since(mark), Vec::<String>::new(), "refused locally: IAM is not asked");
    assert_eq!(world.assigned(&serial), None);

    // The code keys are removed by a merge patch on the version that was checked.
    let patches = world.sent_to(&Method::PATCH, &World::secret_path("alice"));
    assert_eq!(patches.len(), 1, "{:?}", world.sent());
    assert_eq!(patches[0].content_type, "application/merge-patch+json");
    assert_eq!(patches[0].body["data"], json!({ "code1": null, "code2": null }));
    assert!(patches[0].body["metadata"]["resourceVersion"].is_string(), "guarded by the version read");
    let secret = world.secret("alice").expect("the seed Secret stays");
    let data = secret.data.unwrap_or_default();
    assert!(!data.contains_key(seed_secret::KEY_CODE1) && !data.contains_key(seed_secret::KEY_CODE2));
    assert!(data.contains_key(seed_secret::KEY_SEED), "the seed stays");
    let annotations = secret.metadata.annotations.unwrap_or_default();
    assert!(annotations.contains_key(seed_secret::ANNOTATION_LAST_REJECTION), "the person is told why");

    let status = world.status();
    let alice = user(&status, "alice");
    assert_eq!(alice.state, UserState::Pending);
    assert_eq!(alice.failed_attempts, Some(1));
    assert!(alice.message.as_deref().is_some_and(|m| m.starts_with("codes refused")), "{:?}", alice.message);
    assert_eq!(condition(&status, ConditionType::Compliant).0, "False");
    assert!(world.event_reasons().contains(&EventReason::CodesRejected.as_str().to_owned()));
}

#[tokio::test]
async fn an_iam_fault_on_enable_keeps_the_secret_says_reconciling_and_the_retry_enables() {
    let world = World::enrolled(&["alice"]).await;
    let serial = serial_of("alice");
    let (code1, code2) = world.current_codes("alice");
    world.submit_codes("alice", &code1, &code2);
    world.iam.fail_next(1, fake::throttled(fake::ENABLE_MFA_DEVICE));
    let mark = world.iam_mark();

    let failed = world.reconcile().await;
    assert!(failed.is_err(), "a transient failure is retried with backoff: {failed:?}");
    world.assert_all_routed();
    assert_eq!(world.iam_calls_since(mark), [format!("EnableMFADevice alice {serial}")]);
    assert_eq!(world.assigned(&serial), None);
    assert!(world.sent_to(&Method::DELETE, &World::secret_path("alice")).is_empty(), "the Secret is kept");
    let data = world.secret("alice").expect("the seed Secret").data.unwrap_or_default();
    assert!(data.contains_key(seed_secret::KEY_CODE1), "the codes stay for the retry");
    let status = world.status();
    assert_eq!(condition(&status, ConditionType::Reconciling), ("True", ConditionReason::TransientError.as_str()));
    assert_ne!(user(&status, "alice").state, UserState::Compliant);
    assert_ne!(condition(&status, ConditionType::Compliant).0, "True");
    assert!(world.event_reasons().contains(&EventReason::ReconcileFailed.as_str().to_owned()));

    // IAM answers again: the same codes (still current) enable the device.
    world.reconcile().await.expect("the retry");
    assert_eq!(world.assigned(&serial).as_deref(), Some("alice"));
    assert!(world.secret("alice").is_none());
    let status = world.status();
    assert_eq!(user(&status, "alice").state, UserState::Compliant);
    assert_eq!(condition(&status, ConditionType::Reconciling).0, "False");
}

#[tokio::test]
async fn cleanup_deletes_pending_devices_and_seed_secrets_and_never_an_enabled_device() {
    let world = World::enrolled(&["alice", "bob"]).await;
    let (alice, bob) = (serial_of("alice"), serial_of("bob"));
    // Bob's device was enabled, but the operator stopped before deleting his Secret.
    let (code1, code2) = world.iam.codes(&bob).expect("seeded");
    world.iam.enable_mfa_device("bob", &bob, &code1, &code2).await.expect("enabled");
    // The enrollment is deleted: the finalizer holds it.
    {
        let mut cluster = lock(&world.cluster);
        let key = (SERVED[2].to_owned(), NAMESPACE.to_owned(), ENROLLMENT.to_owned());
        cluster.objects.get_mut(&key).expect("enrollment")["metadata"]["deletionTimestamp"] = json!(NOW.to_string());
    }
    let mark = world.iam_mark();

    world.reconcile().await.expect("cleanup");
    world.assert_all_routed();
    let writes: Vec<String> =
        world.iam_calls_since(mark).into_iter().filter(|c| !c.starts_with("ListVirtualMFADevices")).collect();
    assert_eq!(writes, [format!("DeleteVirtualMFADevice {alice}")], "only the pending device");
    let devices = world.iam.virtual_devices();
    assert_eq!(devices, [VirtualDevice { serial: bob.clone(), user: Some("bob".into()), enabled_at: Some(NOW) }]);
    assert_eq!(world.secrets(), Vec::<String>::new(), "both seed Secrets are gone");
    assert_eq!(world.sent_to(&Method::DELETE, &World::secret_path("bob")).len(), 1);
    // The finalizer went last, and with it the enrollment.
    let finalizer = world.sent().into_iter().rposition(|s| s.method == Method::PATCH && s.body[1]["op"] == "remove");
    assert_eq!(finalizer, Some(world.sent().len() - 1), "{:?}", world.sent());
    assert!(world.enrollment().is_none(), "the enrollment is gone");
    // Bob's device is his MFA now: still listed for him.
    let listed = world.iam.list_mfa_devices("bob").await.expect("bob's devices");
    assert_eq!(listed.len(), 1);
}

#[tokio::test]
async fn by_link_a_user_gets_a_link_and_no_device_or_secret_and_is_compliant_once_the_page_enabled_one() {
    let links = Arc::new(crate::links::memory::MemoryLinks::default());
    let world = World::by_link(&["alice", "bob"], links.clone());
    world.reconcile().await.expect("the finalizer");
    let mark = world.iam_mark();
    world.reconcile().await.expect("links sent");
    world.assert_all_routed();
    // alice's link went by e-mail; bob has no address tag: reported, not guessed.
    assert_eq!(links.sent(), [("alice".to_owned(), crate::links::Channel::Email)]);
    assert!(world.iam_calls_since(mark).iter().all(|c| !c.starts_with("CreateVirtualMFADevice")), "no device yet");
    assert!(world.secrets().is_empty(), "no seed Secret in Link mode");
    let status = world.status();
    let alice = user(&status, "alice");
    assert_eq!((alice.state, alice.link_sent_at.as_ref().map(|t| t.0)), (UserState::Pending, Some(NOW)));
    assert_eq!(alice.link_expires_at.as_ref().map(|t| t.0), Some(NOW + crate::link::DEFAULT_TTL));
    let bob = user(&status, "bob");
    assert_eq!(bob.state, UserState::Failed);
    assert_eq!((bob.link_sent_at.as_ref(), bob.link_expires_at.as_ref()), (None, None), "nothing was sent to bob");
    assert!(bob.message.as_deref().is_some_and(|m| m.starts_with("NoDeliveryAddress: ")), "{:?}", bob.message);
    assert!(world.event_reasons().contains(&EventReason::NoDeliveryAddress.as_str().to_owned()));

    // The person opens the link; the page creates and enables a device (here: directly).
    let device =
        world.iam.create_virtual_mfa_device(DEVICE_PATH, "alice", &BTreeMap::new()).await.expect("the page's device");
    let seed = totp::decode_seed(device.seed.expose()).expect("base32");
    let step = totp::step_of(NOW.as_second());
    let (code1, code2) = (totp::code_at(&seed, step - 1), totp::code_at(&seed, step));
    world.iam.enable_mfa_device("alice", &device.serial, &code1, &code2).await.expect("enabled");
    links.use_link(ENROLLMENT_UID, "alice", NOW);
    // Reconciled at once (the record's Secret changed): IAM is asked, alice is Compliant
    // and her link revoked, without waiting for a refresh of the account.
    world.reconcile().await.expect("after the page");
    assert_eq!(user(&world.status(), "alice").state, UserState::Compliant);
    // Her used link stays until it expires (a reload reads "used"), and opens nothing.
    let records = crate::links::Links::records(links.as_ref(), ENROLLMENT_UID).await.expect("records");
    assert!(records.get("alice").is_some_and(|r| r.used_at.is_some()), "{records:?}");
    assert_eq!(world.assigned(&device.serial).as_deref(), Some("alice"));
    let metrics = world.ctx.metrics.encode();
    for line in [
        "mfa_operator_links_total{event=\"sent\"} 1",
        // bob is tried again at each reconcile: someone may have added his address.
        "mfa_operator_links_total{event=\"no_address\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[tokio::test]
async fn the_page_may_act_only_for_a_user_its_links_enrollment_selects_in_its_own_account() {
    let links = Arc::new(crate::links::memory::MemoryLinks::default());
    let world = World::by_link(&["alice"], links);
    // mallory exists in the account, but the enrollment does not select her.
    world.iam.add_user(iam_user("mallory"));
    world.reconcile().await.expect("the finalizer");
    world.reconcile().await.expect("links sent");
    let purpose = |account: &str, user: &str, uid: &str| crate::link::Purpose {
        account: account.into(),
        user: user.into(),
        enrollment_uid: uid.into(),
    };
    let reach = super::for_link(&world.ctx, &purpose(ACCOUNT_ID, "alice", ENROLLMENT_UID)).await.expect("answer");
    let reach = reach.expect("alice's link grants her enrollment");
    assert_eq!((reach.device_path.as_str(), reach.enrollment.as_str()), (DEVICE_PATH, "team-a/engineering"));
    assert_eq!(reach.user_tags.get("email").map(String::as_str), Some("alice@example.com"));
    // A record naming another user, another account or another enrollment grants nothing.
    for (account, user, uid) in [
        (ACCOUNT_ID, "mallory", ENROLLMENT_UID),
        ("111122223333", "alice", ENROLLMENT_UID),
        (ACCOUNT_ID, "alice", "other-uid"),
    ] {
        let answer = super::for_link(&world.ctx, &purpose(account, user, uid)).await.expect("answer");
        assert!(answer.is_none(), "{account} {user} {uid}");
    }
}
