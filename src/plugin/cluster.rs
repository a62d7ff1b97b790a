//! The plugin's Kubernetes calls: connecting the way kubectl does, reading enrollments and
//! seed Secrets, writing the two codes, and watching for the operator's answer.

use std::path::PathBuf;
use std::pin::pin;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, ListSemantic};
use kube::{Client, Config, ResourceExt};

use super::Error;
use super::outcome::{self, Before, Outcome, SecretSeen, UserSeen};
use crate::controller::seed_secret::{ANNOTATION_LAST_REJECTION, KEY_CODE1, KEY_CODE2, KEY_SEED, KEY_URI};
use crate::crd::MfaEnrollment;

/// Field manager of the plugin's writes (the codes).
pub const FIELD_MANAGER: &str = "kubectl-mfa";

/// How many times a code submission is retried when the Secret changed under it (the
/// operator annotating it) but still holds the same seed.
const SUBMIT_ATTEMPTS: usize = 3;

/// Where to connect, as kubectl's global flags say.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    /// `--kubeconfig`: this file instead of `KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`: this kubeconfig context instead of the current one.
    pub context: Option<String>,
    /// `--namespace`: this namespace instead of the context's (or `default`).
    pub namespace: Option<String>,
}

/// A connected client and the namespace the commands act in.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    /// The namespace: `--namespace`, else the context's, else `default`.
    pub namespace: String,
}

/// A seed Secret's content. Holds the seed, so its `Debug` leaves it out.
#[derive(Clone)]
pub struct SeedSecret {
    pub name: String,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// Why the operator refused the last submission, if it did.
    pub last_rejection: Option<String>,
    seed: String,
    uri: String,
}

impl SeedSecret {
    /// The base32 seed.
    pub fn seed(&self) -> &str {
        &self.seed
    }

    /// The `otpauth://` URI that authenticator apps import.
    pub fn uri(&self) -> &str {
        &self.uri
    }
}

impl std::fmt::Debug for SeedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedSecret")
            .field("name", &self.name)
            .field("uid", &self.uid)
            .field("resource_version", &self.resource_version)
            .field("last_rejection", &self.last_rejection)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Loads the configuration like kubectl: `--kubeconfig`, else `KUBECONFIG` or
    /// `~/.kube/config`, else the in-cluster service account; `--context` picks the context.
    pub async fn connect(connection: &Connection) -> Result<Self, Error> {
        let options = KubeConfigOptions { context: connection.context.clone(), ..KubeConfigOptions::default() };
        let config = match (&connection.kubeconfig, &connection.context) {
            (Some(path), _) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| config_error(&e))?;
                Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| config_error(&e))?
            }
            (None, Some(_)) => Config::from_kubeconfig(&options).await.map_err(|e| config_error(&e))?,
            (None, None) => Config::infer().await.map_err(|e| config_error(&e))?,
        };
        let namespace = connection.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| Error::api("cannot create the Kubernetes client", &e))?;
        Ok(Self { client, namespace })
    }

    fn enrollment_api(&self) -> Api<MfaEnrollment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn secret_api(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Every enrollment of the namespace, or of every namespace.
    pub async fn enrollments(&self, all_namespaces: bool) -> Result<Vec<MfaEnrollment>, Error> {
        let api = if all_namespaces { Api::all(self.client.clone()) } else { self.enrollment_api() };
        match api.list(&ListParams::default()).await {
            Ok(list) => Ok(list.items),
            Err(kube::Error::Api(status)) if status.code == 404 => Err(Error::CrdMissing),
            Err(e) => Err(Error::api("cannot list MfaEnrollments", &e)),
        }
    }

    /// Mints a one-time link for `user` of `enrollment` and stores its record beside the
    /// operator's (in `operator_namespace`), for an administrator to hand over. Refused
    /// unless the enrollment uses `delivery: Link` and its status shows `user` without MFA.
    pub async fn mint_link(
        &self,
        enrollment: &MfaEnrollment,
        user: &str,
        public_url: &str,
        operator_namespace: &str,
    ) -> Result<(crate::delivery::LinkUrl, crate::links::Sent), Error> {
        let name = enrollment.metadata.name.clone().unwrap_or_default();
        if !enrollment.spec.links() {
            return Err(Error::Refused(format!("MfaEnrollment \"{name}\" does not use delivery: Link")));
        }
        let waiting = enrollment.status.iter().flat_map(|s| &s.users).any(|u| {
            u.name == user && u.state != crate::crd::UserState::Compliant && u.state != crate::crd::UserState::NotFound
        });
        if !waiting {
            return Err(Error::Refused(format!(
                "MfaEnrollment \"{name}\" does not wait for \"{user}\" (its status lists no such user without MFA)"
            )));
        }
        let binding_name = enrollment.spec.account_ref.as_ref().map(|r| r.name.clone()).unwrap_or_default();
        let bindings: Api<crate::crd::MfaAccountBinding> = Api::all(self.client.clone());
        let binding = bindings
            .get(&binding_name)
            .await
            .map_err(|e| Error::api(format!("cannot read MfaAccountBinding \"{binding_name}\""), &e))?;
        let purpose = crate::link::Purpose {
            account: binding.spec.account_id.clone(),
            user: user.to_owned(),
            enrollment_uid: enrollment.metadata.uid.clone().unwrap_or_default(),
        };
        let now = jiff::Timestamp::now();
        let outgoing = crate::links::Outgoing {
            purpose,
            enrollment: format!("{}/{name}", self.namespace),
            ttl: enrollment.spec.link_ttl(),
            channel: crate::links::Channel::Manual,
            tags: std::collections::BTreeMap::new(),
            account_alias: None,
            at: jiff::Timestamp::from_second(now.as_second()).unwrap_or(now),
        };
        let config = crate::links::LinksConfig {
            namespace: operator_namespace.to_owned(),
            public_url: public_url.to_owned(),
            address_tag: crate::delivery::DEFAULT_ADDRESS_TAG.to_owned(),
            email: None,
            webhook: None,
        };
        let links = crate::links::KubeLinks::new(self.client.clone(), config);
        links.mint_for_admin(outgoing).await.map_err(|e| Error::Refused(format!("cannot mint the link: {e}")))
    }

    /// One enrollment of the namespace.
    pub async fn enrollment(&self, name: &str) -> Result<MfaEnrollment, Error> {
        match self.enrollment_api().get(name).await {
            Ok(enrollment) => Ok(enrollment),
            Err(kube::Error::Api(status)) if status.code == 404 => Err(not_found(&status, &self.namespace, name)),
            Err(e) => Err(Error::api(format!("cannot read MfaEnrollment \"{name}\""), &e)),
        }
    }

    /// A seed Secret of the namespace, with its seed and URI.
    pub async fn seed_secret(&self, name: &str) -> Result<SeedSecret, Error> {
        let secret = self
            .secret_api()
            .get_opt(name)
            .await
            .map_err(|e| Error::api(format!("cannot read seed Secret \"{name}\""), &e))?
            .ok_or_else(|| Error::SecretMissing { namespace: self.namespace.clone(), name: name.to_owned() })?;
        let text = |key: &'static str| {
            data_text(&secret, key).ok_or_else(|| Error::SecretKeyMissing { name: name.to_owned(), key })
        };
        Ok(SeedSecret {
            seed: text(KEY_SEED)?,
            uri: text(KEY_URI)?,
            name: name.to_owned(),
            uid: secret.metadata.uid.clone(),
            resource_version: secret.metadata.resource_version.clone(),
            last_rejection: secret.annotations().get(ANNOTATION_LAST_REJECTION).cloned(),
        })
    }

    /// Writes the two codes into the seed Secret of `user`, provided it still holds the
    /// seed that was shown (`shown`). Returns the Secret as it was just before the write,
    /// to tell the operator's answer from older ones.
    pub async fn submit(&self, user: &str, shown: &SeedSecret, code1: &str, code2: &str) -> Result<SeedSecret, Error> {
        let mut last_error = None;
        for _ in 0..SUBMIT_ATTEMPTS {
            let current = self.seed_secret(&shown.name).await?;
            if current.seed != shown.seed {
                return Err(Error::SeedChanged { user: user.to_owned() });
            }
            // The resource version makes the write conditional: the codes only land next to
            // the seed they were computed from.
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": current.resource_version },
                "stringData": { KEY_CODE1: code1, KEY_CODE2: code2 },
            });
            let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
            match self.secret_api().patch(&shown.name, &params, &Patch::Merge(&patch)).await {
                Ok(_) => return Ok(current),
                Err(kube::Error::Api(status)) if status.code == 409 => last_error = Some(kube::Error::Api(status)),
                Err(e) => return Err(Error::api(format!("cannot write the codes into Secret \"{}\"", shown.name), &e)),
            }
        }
        let action = format!("cannot write the codes into Secret \"{}\"", shown.name);
        Err(last_error.map_or_else(
            || Error::Api { action: action.clone(), message: "it kept changing".into() },
            |e| Error::api(action.clone(), &e),
        ))
    }

    /// Watches the enrollment and the seed Secret until [`outcome::judge`] sees the
    /// operator's answer, or `timeout` passes (`Ok(None)`).
    pub async fn await_outcome(
        &self,
        enrollment: &str,
        user: &str,
        secret: &str,
        before: &Before,
        timeout: Duration,
    ) -> Result<Option<Outcome>, Error> {
        let config = |name: &str| {
            watcher::Config::default().fields(&format!("metadata.name={name}")).list_semantic(ListSemantic::MostRecent)
        };
        let enrollments = watcher::watcher(self.enrollment_api(), config(enrollment))
            .default_backoff()
            .map(|event| enrollment_change(user, event));
        let secrets = watcher::watcher(self.secret_api(), config(secret)).default_backoff().map(secret_change);
        let mut changes = pin!(futures::stream::select(enrollments, secrets));

        let watch = async {
            let mut user_seen: Option<UserSeen> = None;
            let mut secret_seen: Option<SecretSeen> = None;
            let mut secret_listed = false;
            while let Some(change) = changes.next().await {
                match change {
                    Seen::User(seen) => user_seen = seen,
                    Seen::EnrollmentDeleted => {
                        return Err(Error::EnrollmentNotFound {
                            namespace: self.namespace.clone(),
                            name: enrollment.to_owned(),
                        });
                    }
                    Seen::SecretRelisting => secret_listed = false,
                    Seen::Secret(seen) => {
                        secret_listed = true;
                        secret_seen = Some(seen);
                    }
                    Seen::SecretGone => secret_seen = Some(SecretSeen::Absent),
                    // A fresh list without the Secret: it is gone.
                    Seen::SecretListed if !secret_listed => secret_seen = Some(SecretSeen::Absent),
                    Seen::SecretListed | Seen::Nothing => {}
                    Seen::Failed(error) => match fatal(&error) {
                        Some(fatal) => return Err(fatal),
                        // Transient: the watcher retries with backoff.
                        None => continue,
                    },
                }
                if let Some(answer) = outcome::judge(before, user_seen.as_ref(), secret_seen.as_ref()) {
                    return Ok(Some(answer));
                }
            }
            Ok(None)
        };
        tokio::time::timeout(timeout, watch).await.unwrap_or(Ok(None))
    }
}

/// What a 404 on reading an enrollment means: a missing object names itself in the
/// details; a resource type the apiserver does not serve (no CRD) does not, and its body
/// may not even be a `Status` ("404 page not found").
fn not_found(status: &kube::core::Status, namespace: &str, name: &str) -> Error {
    if status.details.as_ref().is_some_and(|d| !d.name.is_empty()) {
        Error::EnrollmentNotFound { namespace: namespace.to_owned(), name: name.to_owned() }
    } else {
        Error::CrdMissing
    }
}

/// One change from either watch, reduced to what [`outcome::judge`] looks at.
enum Seen {
    /// The enrollment changed; the user's entry, if listed.
    User(Option<UserSeen>),
    EnrollmentDeleted,
    /// The Secret watch starts listing again.
    SecretRelisting,
    /// The Secret exists (listed or changed).
    Secret(SecretSeen),
    /// The Secret was deleted.
    SecretGone,
    /// The Secret watch finished listing.
    SecretListed,
    /// Nothing to look at.
    Nothing,
    Failed(Box<watcher::Error>),
}

fn enrollment_change(user: &str, event: Result<Event<MfaEnrollment>, watcher::Error>) -> Seen {
    match event {
        Ok(Event::Apply(e) | Event::InitApply(e)) => {
            let entry = e.status.as_ref().and_then(|s| s.users.iter().find(|u| u.name == user));
            Seen::User(entry.map(|u| UserSeen {
                state: u.state,
                message: u.message.clone(),
                pending_since: u.pending_since.as_ref().map(|t| t.0),
            }))
        }
        Ok(Event::Delete(_)) => Seen::EnrollmentDeleted,
        Ok(Event::Init | Event::InitDone) => Seen::Nothing,
        Err(e) => Seen::Failed(Box::new(e)),
    }
}

fn secret_change(event: Result<Event<Secret>, watcher::Error>) -> Seen {
    match event {
        Ok(Event::Apply(s) | Event::InitApply(s)) => Seen::Secret(SecretSeen::Present {
            uid: s.metadata.uid.clone(),
            codes: data_text(&s, KEY_CODE1).is_some() || data_text(&s, KEY_CODE2).is_some(),
            last_rejection: s.annotations().get(ANNOTATION_LAST_REJECTION).cloned(),
        }),
        Ok(Event::Delete(_)) => Seen::SecretGone,
        Ok(Event::Init) => Seen::SecretRelisting,
        Ok(Event::InitDone) => Seen::SecretListed,
        Err(e) => Seen::Failed(Box::new(e)),
    }
}

/// A watch error that retrying cannot fix (no permission, unknown resource).
fn fatal(error: &watcher::Error) -> Option<Error> {
    let client_error = match error {
        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) => e,
        _ => return None,
    };
    match client_error {
        kube::Error::Api(status) if matches!(status.code, 401 | 403 | 404) => {
            Some(Error::api("cannot watch for the operator's answer", client_error))
        }
        _ => None,
    }
}

/// The UTF-8 text of a Secret data key.
fn data_text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = &secret.data.as_ref()?.get(key)?.0;
    String::from_utf8(bytes.clone()).ok()
}

/// A configuration error with its causes, on one line.
fn config_error(error: &dyn std::error::Error) -> Error {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    Error::Config(super::one_line(&message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_404_names_the_missing_enrollment_or_the_missing_api() {
        let missing: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "reason": "NotFound", "code": 404,
            "message": "mfaenrollments.iam.mfa-operator.dev \"eng\" not found",
            "details": { "name": "eng", "group": "iam.mfa-operator.dev", "kind": "mfaenrollments" },
        }))
        .expect("status");
        assert_eq!(
            not_found(&missing, "team", "eng").to_string(),
            "MfaEnrollment \"eng\" not found in namespace \"team\""
        );
        // What kube makes of the apiserver's plain-text "404 page not found".
        let no_api = kube::core::Status::failure("404 page not found", "Failed to parse error data").with_code(404);
        assert!(matches!(not_found(&no_api, "team", "eng"), Error::CrdMissing));
        assert!(Error::CrdMissing.to_string().contains("is not installed in this cluster"));
    }

    #[test]
    fn seed_secrets_keep_the_seed_out_of_debug_output() {
        let secret = SeedSecret {
            name: "mfa-seed-bob-1".into(),
            uid: None,
            resource_version: None,
            last_rejection: None,
            seed: "JBSWY3DPEHPK3PXP".into(),
            uri: "otpauth://totp/x:bob?secret=JBSWY3DPEHPK3PXP".into(),
        };
        let debug = format!("{secret:?}");
        assert!(debug.contains("mfa-seed-bob-1") && !debug.contains("JBSWY3DP"), "{debug}");
    }
}
