//! `KubeLinks` on the real apiserver: link records in Secrets of the operator's own
//! namespace, found by the page by link id (also from a second replica that wrote
//! nothing), used at most once, replaced and revoked; never a token at rest; a record a
//! tenant plants in their own namespace is never seen.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use mfa_operator::delivery::{self, Delivery, DeliveryError, FailureKind, LinkUrl, Recipient};
use mfa_operator::enroll_page::{LinkStore, MarkError};
use mfa_operator::link::{self, LinkId, Purpose, TOKEN_BYTES};
use mfa_operator::links::kube::{LABEL_LINKS, LABEL_MANAGED_BY, RECORDS_KEY, SECRET_TYPE, secret_name};
use mfa_operator::links::{
    Channel, KubeLinks, LABEL_ENROLLMENT_NAME, LABEL_ENROLLMENT_NAMESPACE, Links, LinksConfig, Outgoing, SendError,
};

use crate::common;

/// Delivery that keeps what it was given (the test reads the link from it), or fails.
#[derive(Default)]
struct Captured {
    sent: Mutex<Vec<(String, Recipient)>>,
    fail: bool,
}

impl Captured {
    fn last(&self) -> (String, Recipient) {
        self.sent.lock().expect("lock").last().cloned().expect("something was delivered")
    }
}

impl Delivery for Captured {
    fn channel(&self) -> delivery::Channel {
        delivery::Channel::Smtp
    }

    fn deliver<'a>(&'a self, link: &'a LinkUrl, recipient: &'a Recipient) -> BoxFuture<'a, Result<(), DeliveryError>> {
        let result = if self.fail {
            Err(DeliveryError::Smtp { kind: FailureKind::Connect, detail: "connection refused".into() })
        } else {
            self.sent.lock().expect("lock").push((link.expose().to_owned(), recipient.clone()));
            Ok(())
        };
        futures::future::ready(result).boxed()
    }
}

const PUBLIC_URL: &str = "https://mfa.example.test/mfa";
const ACCOUNT: &str = "123456789012";

fn links(client: &kube::Client, namespace: &str, email: Arc<Captured>) -> KubeLinks {
    let links = KubeLinks::new(
        client.clone(),
        LinksConfig {
            namespace: namespace.to_owned(),
            public_url: PUBLIC_URL.into(),
            address_tag: "email".into(),
            email: Some(email),
            webhook: None,
        },
    );
    tokio::spawn(links.clone().run_index());
    links
}

/// A uid of the form Kubernetes gives, unique per run.
fn uid() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("random");
    let hex = data_encoding::HEXLOWER.encode(&bytes);
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

fn outgoing(uid: &str, user: &str, channel: Channel) -> Outgoing {
    Outgoing {
        purpose: Purpose { account: ACCOUNT.into(), user: user.into(), enrollment_uid: uid.into() },
        enrollment: "team-a/everyone".into(),
        ttl: SignedDuration::from_hours(1),
        channel,
        tags: BTreeMap::from([("email".to_owned(), format!("{user}@example.com"))]),
        account_alias: Some("payments".into()),
        at: Timestamp::now(),
    }
}

/// The link id and token of a delivered URL.
fn parts(url: &str) -> (LinkId, String) {
    let path = url.strip_prefix(PUBLIC_URL).expect("the link is under the public URL");
    let rest = path.strip_prefix(link::PATH_PREFIX).expect("the link's path");
    let (id, token) = rest.split_once('/').expect("id/token");
    (LinkId::parse(id).expect("a link id"), token.to_owned())
}

#[tokio::test]
async fn links_live_in_the_operators_secrets_and_open_once() {
    let client = common::client().await;
    let own = common::namespace(&client, "links-own").await;
    let email = Arc::new(Captured::default());
    let leader = links(&client, &own, email.clone());
    // Another replica: it writes nothing, its page only reads.
    let standby = links(&client, &own, Arc::new(Captured::default()));
    let uid = uid();

    let sent = leader.send(outgoing(&uid, "alice", Channel::Email)).await.expect("sent");
    assert_eq!(sent.expires_at, sent.sent_at + SignedDuration::from_hours(1));
    let (url, recipient) = email.last();
    assert_eq!(recipient.address.map(|a| a.to_string()).as_deref(), Some("alice@example.com"));
    assert_eq!((recipient.user.as_str(), recipient.account_alias.as_deref()), ("alice", Some("payments")));
    let (id, token) = parts(&url);

    // The Secret: in the operator's namespace, typed and labelled, with no token in it.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &own);
    let name = secret_name(&uid).expect("a uid names a Secret");
    let secret = secrets.get(&name).await.expect("the link Secret");
    assert_eq!(secret.type_.as_deref(), Some(SECRET_TYPE));
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get(LABEL_LINKS).map(String::as_str), Some("true"));
    assert_eq!(labels.get(LABEL_MANAGED_BY).map(String::as_str), Some("mfa-operator"));
    assert_eq!(labels.get(LABEL_ENROLLMENT_NAMESPACE).map(String::as_str), Some("team-a"));
    assert_eq!(labels.get(LABEL_ENROLLMENT_NAME).map(String::as_str), Some("everyone"));
    let data = secret.data.clone().unwrap_or_default();
    assert_eq!(data.keys().collect::<Vec<_>>(), vec![RECORDS_KEY]);
    let stored = String::from_utf8(data[RECORDS_KEY].0.clone()).expect("utf-8");
    assert!(!stored.contains(&token), "the token is not at rest: {stored}");
    assert!(stored.contains(id.as_str()), "records are kept by link id: {stored}");

    // The page finds it by id, on the replica that wrote it and on one that did not.
    for (who, store) in [("leader", &leader), ("standby", &standby)] {
        let record = store.get(&id).await.expect("the store answers").unwrap_or_else(|| panic!("{who}: found"));
        assert_eq!(link::check(&record, &token, Timestamp::now()), Ok(()), "{who}");
    }
    let records = leader.records(&uid).await.expect("records");
    assert_eq!(records.keys().collect::<Vec<_>>(), vec!["alice"]);
    assert_eq!(records["alice"].expires_at, sent.expires_at);

    // Used once: the second mark (another window, another replica) fails.
    let at = Timestamp::now();
    assert_eq!(standby.mark_used(&id, at).await, Ok(()));
    assert_eq!(leader.mark_used(&id, at).await, Err(MarkError::AlreadyUsed));
    let record = leader.get(&id).await.expect("get").expect("still there");
    assert_eq!(link::check(&record, &token, Timestamp::now()), Err(link::Refusal::Used));
    assert_eq!(leader.mark_used(&LinkId::new([9; 16]), at).await, Err(MarkError::Missing));

    // A new send for alice replaces her link; bob's is kept beside it.
    leader.send(outgoing(&uid, "alice", Channel::Email)).await.expect("sent again");
    let (second_url, _) = email.last();
    let (second, second_token) = parts(&second_url);
    assert_ne!(second, id);
    leader.send(outgoing(&uid, "bob", Channel::Manual)).await.expect("stored for bob");
    assert_eq!(email.sent.lock().expect("lock").len(), 2, "a Manual link is stored, not delivered");
    assert_eq!(standby.get(&id).await.expect("get"), None, "the replaced link is gone");
    let record = standby.get(&second).await.expect("get").expect("the new link");
    assert_eq!(link::check(&record, &second_token, Timestamp::now()), Ok(()));
    let users = leader.records(&uid).await.expect("records");
    assert_eq!(users.keys().collect::<Vec<_>>(), vec!["alice", "bob"]);

    // Revoking alice keeps bob; revoking everything deletes the Secret.
    leader.revoke(&uid, Some(&BTreeSet::from(["alice".to_owned()]))).await.expect("revoked alice");
    assert_eq!(standby.get(&second).await.expect("get"), None);
    assert_eq!(leader.records(&uid).await.expect("records").keys().collect::<Vec<_>>(), vec!["bob"]);
    leader.revoke(&uid, None).await.expect("revoked all");
    assert!(secrets.get_opt(&name).await.expect("read").is_none(), "the Secret is deleted");
    assert!(leader.records(&uid).await.expect("records").is_empty());
    leader.revoke(&uid, None).await.expect("revoking nothing is fine");
}

#[tokio::test]
async fn undeliverable_links_leave_no_record() {
    let client = common::client().await;
    let own = common::namespace(&client, "links-fail").await;
    let failing = Arc::new(Captured { fail: true, ..Captured::default() });
    let links = links(&client, &own, failing);
    let uid = uid();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &own);
    let name = secret_name(&uid).expect("a uid names a Secret");

    let mut no_tag = outgoing(&uid, "alice", Channel::Email);
    no_tag.tags.clear();
    let refused = links.send(no_tag).await.expect_err("no address");
    assert_eq!(refused, SendError::NoAddress("the user has no `email` tag".into()));
    let refused = links.send(outgoing(&uid, "alice", Channel::Webhook)).await.expect_err("no webhook");
    assert!(matches!(refused, SendError::NotConfigured(_)), "{refused:?}");
    assert!(secrets.get_opt(&name).await.expect("read").is_none(), "nothing stored");

    let failed = links.send(outgoing(&uid, "alice", Channel::Email)).await.expect_err("delivery fails");
    assert!(matches!(&failed, SendError::Failed(m) if m.contains("connect")), "{failed:?}");
    assert!(links.records(&uid).await.expect("records").is_empty(), "an undelivered link does not count as sent");
}

#[tokio::test]
async fn a_record_planted_in_a_tenant_namespace_is_never_seen() {
    let client = common::client().await;
    let own = common::namespace(&client, "links-own2").await;
    let tenant = common::namespace(&client, "links-tenant").await;
    let links = links(&client, &own, Arc::new(Captured::default()));
    let uid = uid();

    // The tenant mints a token of their own and plants its record exactly as the
    // operator would store it, under the name the operator would use.
    let purpose = Purpose { account: ACCOUNT.into(), user: "admin".into(), enrollment_uid: uid.clone() };
    let (token, record) = link::mint(purpose, [42; TOKEN_BYTES], Timestamp::now(), SignedDuration::from_hours(1));
    let id = LinkId::new([42; 16]);
    let json = serde_json::json!({ id.as_str(): {
        "digest": record.digest,
        "purpose": { "account": ACCOUNT, "user": "admin", "enrollmentUid": uid },
        "mintedAt": record.minted_at.to_string(),
        "expiresAt": record.expires_at.to_string(),
    }});
    let planted: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": secret_name(&uid).expect("name"),
            "labels": { LABEL_LINKS: "true", LABEL_MANAGED_BY: "mfa-operator" },
        },
        "type": SECRET_TYPE,
        "stringData": { RECORDS_KEY: json.to_string() },
    }))
    .expect("secret literal");
    Api::<Secret>::namespaced(client.clone(), &tenant)
        .create(&PostParams::default(), &planted)
        .await
        .expect("the tenant writes a Secret in their namespace");

    assert_eq!(links.get(&id).await.expect("the store answers"), None, "never seen by the page");
    assert_eq!(links.mark_used(&id, Timestamp::now()).await, Err(MarkError::Missing));
    assert!(links.records(&uid).await.expect("records").is_empty(), "never seen by the controller");
    // The same record in the operator's namespace would open: only the place differs.
    assert_eq!(link::check(&record, token.expose(), Timestamp::now()), Ok(()));
}

#[tokio::test]
async fn concurrent_sends_all_land_and_concurrent_marks_let_one_through() {
    let client = common::client().await;
    let own = common::namespace(&client, "links-many").await;
    let email = Arc::new(Captured::default());
    let leader = links(&client, &own, email.clone());
    let other = links(&client, &own, Arc::new(Captured::default()));
    let uid = uid();
    let users: Vec<String> = (0..12).map(|i| format!("user{i:02}")).collect();

    // The controller sends the links of many users of one enrollment at once.
    let sends = users.iter().map(|user| leader.send(outgoing(&uid, user, Channel::Email)));
    for sent in futures::future::join_all(sends).await {
        sent.expect("every send lands");
    }
    let records = leader.records(&uid).await.expect("records");
    assert_eq!(records.keys().cloned().collect::<Vec<_>>(), users);

    // Two replicas mark one link at the same moment: one wins.
    let (url, _) = email.last();
    let (id, _) = parts(&url);
    let at = Timestamp::now();
    let (a, b) = futures::future::join(leader.mark_used(&id, at), other.mark_used(&id, at)).await;
    let mut outcomes = [a, b];
    outcomes.sort_by_key(|o| o.is_err());
    assert_eq!(outcomes, [Ok(()), Err(MarkError::AlreadyUsed)]);
}
