//! The per-test harness of the tests that drive the real operator: a fresh namespace,
//! the IAM client, a unique tag for user names and the device path, and helpers to
//! apply enrollments, wait for them, read seed Secrets and submit codes. A module may add
//! methods in an `impl Bed` block of its own; all modules are one binary, so a name two of
//! them need belongs here.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use mfa_operator::crd::{MfaEnrollment, UserState, UserStatus};
use serde_json::{Value, json};

use super::iam;

pub struct Bed {
    pub client: Client,
    pub ns: String,
    pub iam: aws_sdk_iam::Client,
    /// Unique per test: prefix of user names and the device path's middle.
    pub tag: String,
    pub device_path: String,
    pub enrollments: Api<MfaEnrollment>,
    pub secrets: Api<Secret>,
}

impl Bed {
    /// Reasons of the Events about `enrollment` in this test's namespace.
    pub async fn event_reasons(&self, enrollment: &str) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let list = events.list(&ListParams::default()).await.expect("list events");
        list.items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(enrollment))
            .filter_map(|e| e.reason)
            .collect()
    }

    /// Every Event of this test's namespace as JSON (to search for what must not be there).
    pub async fn events_text(&self) -> String {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        serde_json::to_string(&events.list(&ListParams::default()).await.expect("list events").items).expect("json")
    }

    /// A fresh namespace with the CRD installed; the device path is `/<tag>/`.
    pub async fn new(test: &str) -> Self {
        let client = super::client().await;
        super::install_crd(&client).await;
        let ns = super::namespace(&client, test).await;
        let tag = super::unique(test);
        Self {
            iam: iam::client().await,
            device_path: format!("/{tag}/"),
            enrollments: Api::namespaced(client.clone(), &ns),
            secrets: Api::namespaced(client.clone(), &ns),
            client,
            ns,
            tag,
        }
    }

    /// The enrollments exactly as the API serves them, for readers of raw objects.
    pub fn raw_enrollments(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &ApiResource::erase::<MfaEnrollment>(&()))
    }

    /// The IAM name of this test's user `name`.
    pub fn user(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    /// Creates users under `/<tag>/` and returns their names.
    pub async fn users(&self, names: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for name in names {
            let user = self.user(name);
            iam::create_user(&self.iam, &user, &format!("/{}/", self.tag)).await;
            out.push(user);
        }
        out
    }

    /// Applies an enrollment. A `spec` that names no binding gets one for this test's
    /// namespace and device path (see [`super::bind`]).
    pub async fn apply(&self, name: &str, spec: Value) -> MfaEnrollment {
        if spec.get("accountRef").is_some() {
            return super::apply_enrollment(&self.enrollments, name, spec).await;
        }
        let mut full = json!({ "device": { "path": self.device_path } });
        merge(&mut full, spec);
        super::apply_enrollment(&self.enrollments, name, full).await
    }

    /// Applies the binding `name` (made unique per test) with `spec` over a default that
    /// serves this test's namespace in the test bed's account with this test's device
    /// path; returns the binding's name.
    pub async fn binding(&self, name: &str, spec: Value) -> String {
        let name = format!("{}-{name}", self.tag);
        let mut full = json!({
            "accountId": super::ACCOUNT,
            "namespaces": { "names": [&self.ns] },
            "device": { "path": self.device_path },
        });
        merge(&mut full, spec);
        super::apply_binding(&self.client, &name, full).await;
        name
    }

    /// Waits up to twice [`super::WAIT`] until the enrollment `name` passes `check`.
    pub async fn wait(&self, name: &str, what: &str, check: impl Fn(&MfaEnrollment) -> bool) -> MfaEnrollment {
        self.wait_long(name, what, super::WAIT * 2, check).await
    }

    /// Like [`Bed::wait`], with a longer `timeout`.
    pub async fn wait_long(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&MfaEnrollment) -> bool,
    ) -> MfaEnrollment {
        super::wait_until(&self.enrollments, name, timeout, what, move |o: Option<&MfaEnrollment>| {
            o.is_some_and(&check)
        })
        .await
    }

    /// The seed Secret that `enrollment`'s status names for `user`.
    pub async fn seed_secret(&self, enrollment: &MfaEnrollment, user: &str) -> Secret {
        let name = user_status(enrollment, user)
            .and_then(|u| u.seed_secret.clone())
            .unwrap_or_else(|| panic!("{user} has no seed Secret in status: {:#?}", enrollment.status));
        self.secrets.get(&name).await.unwrap_or_else(|e| panic!("get Secret {name}: {e}"))
    }

    /// The seed in `user`'s seed Secret.
    pub async fn seed(&self, enrollment: &MfaEnrollment, user: &str) -> String {
        let secret = self.seed_secret(enrollment, user).await;
        data(&secret, "seed")
            .unwrap_or_else(|| panic!("Secret {} has no seed", secret.metadata.name.as_deref().unwrap_or("?")))
    }

    /// Writes `code1` and `code2` into the seed Secret `secret`.
    pub async fn submit(&self, secret: &str, code1: &str, code2: &str) {
        let patch = json!({ "stringData": { "code1": code1, "code2": code2 } });
        self.secrets
            .patch(secret, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("submit codes to {secret}: {e}"));
    }
}

/// Merges `over` into `base`: objects key by key, anything else replaced.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

pub fn user_status<'a>(e: &'a MfaEnrollment, user: &str) -> Option<&'a UserStatus> {
    e.status.as_ref()?.users.iter().find(|u| u.name == user)
}

pub fn state(e: &MfaEnrollment, user: &str) -> Option<UserState> {
    user_status(e, user).map(|u| u.state)
}

/// Status, reason and message of the condition `kind`.
pub fn condition(e: &MfaEnrollment, kind: &str) -> Option<(String, String, String)> {
    let c = e.status.as_ref()?.conditions.iter().find(|c| c.type_ == kind)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Whether the condition `kind` is True in a status written for the current generation.
pub fn is_true(e: &MfaEnrollment, kind: &str) -> bool {
    condition(e, kind).is_some_and(|(s, _, _)| s == "True") && current(e)
}

/// Whether the status was written for the current generation.
pub fn current(e: &MfaEnrollment) -> bool {
    e.status.as_ref().and_then(|s| s.observed_generation) == e.metadata.generation
}

/// The Secret's `key`, decoded.
pub fn data(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).map(|v| String::from_utf8_lossy(&v.0).into_owned())
}
