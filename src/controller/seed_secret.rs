//! The per-user seed Secret: the only place a pending device's seed ever lives, and the
//! place where a person finishes enrollment by writing `code1` and `code2`.
//!
//! One Secret per pending user, in the enrollment's namespace. Its name is derived from
//! the exact IAM user name (IAM allows capitals and `+=,.@_-`, Secret names do not), its
//! labels and ownerReference tie it to the enrollment, and its annotations record the
//! exact user, the device serial, when it was created and an integrity tag over all of
//! that and the seed (see `integrity.rs`). People write `code1`/`code2` into it;
//! everything else in it is trusted only when the tag verifies.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sha2::{Digest, Sha256};

use super::integrity::{IntegrityKey, Tagged};
use crate::aws::Seed;

/// Secret type of seed Secrets, so they stand out from other Secrets.
pub const SECRET_TYPE: &str = "iam.mfa-operator.dev/mfa-seed";

/// `app.kubernetes.io/managed-by` value on everything the operator creates.
pub const MANAGED_BY: &str = "mfa-operator";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label naming the `MfaEnrollment` (same namespace) a seed Secret belongs to.
pub const LABEL_ENROLLMENT: &str = "iam.mfa-operator.dev/enrollment";
/// Exact IAM user name (labels cannot hold every IAM name).
pub const ANNOTATION_USER: &str = "iam.mfa-operator.dev/user-name";
/// Serial number (ARN) of the pending device whose seed the Secret holds.
pub const ANNOTATION_SERIAL: &str = "iam.mfa-operator.dev/serial-number";
/// When the pending device was created (RFC 3339), shown as `pendingSince`.
pub const ANNOTATION_CREATED_AT: &str = "iam.mfa-operator.dev/created-at";
/// Why the last submission was refused (no codes in it), for people and the plugin. Only
/// informative: the operator keeps its own record in status.
pub const ANNOTATION_LAST_REJECTION: &str = "iam.mfa-operator.dev/last-rejection";
/// SHA-256 over the seed, the URI and the QR code, so metadata alone carries the tag.
pub const ANNOTATION_CONTENT_DIGEST: &str = "iam.mfa-operator.dev/content-digest";
/// HMAC over namespace, name, enrollment uid, user, serial, created-at and content digest.
pub const ANNOTATION_INTEGRITY: &str = "iam.mfa-operator.dev/integrity";

/// Keys of the Secret's data.
pub const KEY_SEED: &str = "seed";
pub const KEY_URI: &str = "otpauth-uri";
pub const KEY_QR: &str = "qr.png";
pub const KEY_CODE1: &str = "code1";
pub const KEY_CODE2: &str = "code2";

/// Label selector matching every seed Secret of the operator (the enrollment label sets
/// them apart from the operator's other Secrets, such as the integrity key).
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_ENROLLMENT}")
}

/// Label selector matching the seed Secrets of one enrollment.
pub fn enrollment_selector(enrollment: &str) -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_ENROLLMENT}={}", enrollment_label(enrollment))
}

/// The enrollment label's value: the name, or for a name too long for a label value (63
/// characters; admission refuses such names, but objects may predate that rule) a prefix
/// and a hash, so selectors and the finalizer work for every name.
pub fn enrollment_label(enrollment: &str) -> String {
    const MAX: usize = 63;
    if enrollment.len() <= MAX {
        return enrollment.to_owned();
    }
    let hash = short_hash(enrollment);
    let prefix: String = enrollment.chars().take(MAX - hash.len() - 1).collect();
    format!("{}-{hash}", prefix.trim_end_matches(['-', '.']))
}

/// Longest slug of the user name kept in the Secret name.
const SLUG_MAX: usize = 36;

/// 64 bits of SHA-256 as hex: enough that nobody finds a second name with the same hash.
fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The seed Secret name of an IAM user in an enrollment: `mfa-seed-<slug>-<hash>`, where
/// the slug is a readable DNS-1123 form of the user name and the hash (of the enrollment
/// name and the exact user name) keeps apart names that differ only in case or
/// punctuation, and the same user name in two accounts enrolled from one namespace. At
/// most 62 characters.
pub fn secret_name(enrollment: &str, user: &str) -> String {
    let mut slug = String::with_capacity(SLUG_MAX);
    for c in user.chars() {
        let c = c.to_ascii_lowercase();
        let keep = if c.is_ascii_alphanumeric() { c } else { '-' };
        if keep == '-' && (slug.is_empty() || slug.ends_with('-')) {
            continue;
        }
        if slug.len() == SLUG_MAX {
            break;
        }
        slug.push(keep);
    }
    let slug = slug.trim_end_matches('-');
    let hash = short_hash(&format!("{enrollment}\0{user}"));
    if slug.is_empty() { format!("mfa-seed-{hash}") } else { format!("mfa-seed-{slug}-{hash}") }
}

/// Everything needed to write a new seed Secret.
pub struct NewSeedSecret<'a> {
    pub namespace: &'a str,
    pub enrollment: &'a str,
    /// The enrollment (controller ownerReference); its uid is part of the tag.
    pub owner: OwnerReference,
    pub user: &'a str,
    pub serial: &'a str,
    pub seed: &'a Seed,
    pub otpauth_uri: &'a str,
    pub qr_png: Vec<u8>,
    pub created_at: jiff::Timestamp,
}

/// SHA-256 (hex) over the seed, the URI and the QR code, each framed by its length.
fn content_digest(seed: &[u8], uri: &[u8], qr: &[u8]) -> String {
    let mut hasher = Sha256::new();
    for part in [seed, uri, qr] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds a seed Secret, tagged with `key`.
pub fn build(new: NewSeedSecret<'_>, key: &IntegrityKey) -> Secret {
    let name = secret_name(new.enrollment, new.user);
    let created_at = new.created_at.to_string();
    let digest = content_digest(new.seed.expose().as_bytes(), new.otpauth_uri.as_bytes(), &new.qr_png);
    let tag = key.tag(&Tagged {
        namespace: new.namespace,
        secret: &name,
        enrollment_uid: &new.owner.uid,
        user: new.user,
        serial: new.serial,
        created_at: &created_at,
        content_digest: &digest,
    });
    let labels = BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_ENROLLMENT.to_owned(), enrollment_label(new.enrollment)),
    ]);
    let annotations = BTreeMap::from([
        (ANNOTATION_USER.to_owned(), new.user.to_owned()),
        (ANNOTATION_SERIAL.to_owned(), new.serial.to_owned()),
        (ANNOTATION_CREATED_AT.to_owned(), created_at),
        (ANNOTATION_CONTENT_DIGEST.to_owned(), digest),
        (ANNOTATION_INTEGRITY.to_owned(), tag),
    ]);
    let data = BTreeMap::from([
        (KEY_SEED.to_owned(), ByteString(new.seed.expose().as_bytes().to_vec())),
        (KEY_URI.to_owned(), ByteString(new.otpauth_uri.as_bytes().to_vec())),
        (KEY_QR.to_owned(), ByteString(new.qr_png)),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(new.namespace.to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![new.owner]),
            ..ObjectMeta::default()
        },
        type_: Some(SECRET_TYPE.to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// A seed Secret whose tag verified: everything in it but the codes is what the operator
/// wrote. `Debug` is hand-written so the seed and codes never reach a log line.
#[derive(Clone, PartialEq)]
pub struct SeedSecret {
    pub name: String,
    pub user: String,
    /// The serial the operator recorded when it created the device.
    pub serial: String,
    pub seed: Seed,
    /// `(code1, code2)` when the person wrote both (as written: untrusted input).
    pub codes: Option<(String, String)>,
    /// Whether only one of the two code keys is present (an incomplete submission).
    pub partial_codes: bool,
    /// When the pending device was created (shown as `pendingSince`; starts the TTL).
    pub created: jiff::Timestamp,
    /// Version that was read, so a refusal never wipes a newer submission.
    pub resource_version: Option<String>,
}

impl std::fmt::Debug for SeedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedSecret")
            .field("name", &self.name)
            .field("user", &self.user)
            .field("serial", &self.serial)
            .field("codes", &self.codes.as_ref().map(|_| "<submitted>"))
            .finish_non_exhaustive()
    }
}

/// What a Secret's metadata alone proves (from a metadata-only list): which enrollment
/// (uid) holds which device for which user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedMeta {
    pub enrollment_uid: String,
    pub user: String,
    pub serial: String,
    pub created: jiff::Timestamp,
    content_digest: String,
}

/// A Secret that carries the operator's labels but is not (or no longer) what the
/// operator wrote: never obeyed; replaced when it stands where the operator's would.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Secret {name} {why}")]
pub struct Untrusted {
    pub name: String,
    pub why: &'static str,
}

/// Checks the tag over `meta` (owner, annotations). Says nothing about the data.
pub fn verify_meta(meta: &ObjectMeta, key: &IntegrityKey) -> Result<VerifiedMeta, Untrusted> {
    let name = meta.name.clone().unwrap_or_default();
    let untrusted = |why| Untrusted { name: name.clone(), why };
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == "MfaEnrollment")
        .ok_or_else(|| untrusted("has no MfaEnrollment owner"))?;
    let annotations = meta.annotations.as_ref().ok_or_else(|| untrusted("has no annotations"))?;
    let get = |key: &str| annotations.get(key).ok_or_else(|| untrusted("lacks the operator's annotations"));
    let (user, serial, created_at) = (get(ANNOTATION_USER)?, get(ANNOTATION_SERIAL)?, get(ANNOTATION_CREATED_AT)?);
    let (digest, tag) = (get(ANNOTATION_CONTENT_DIGEST)?, get(ANNOTATION_INTEGRITY)?);
    let fields = Tagged {
        namespace: meta.namespace.as_deref().unwrap_or_default(),
        secret: &name,
        enrollment_uid: &owner.uid,
        user,
        serial,
        created_at,
        content_digest: digest,
    };
    if !key.verify(&fields, tag) {
        return Err(untrusted("was changed by someone other than the operator (integrity tag does not match)"));
    }
    let created = created_at.parse().map_err(|_| untrusted("has an unreadable created-at"))?;
    Ok(VerifiedMeta {
        enrollment_uid: owner.uid.clone(),
        user: user.clone(),
        serial: serial.clone(),
        created,
        content_digest: digest.clone(),
    })
}

/// Reads a seed Secret of the enrollment with uid `enrollment_uid`, verifying that the
/// operator wrote everything but the codes. Codes are read from `data` (the apiserver
/// folds `stringData` into `data`); values that are not UTF-8 are kept as replacement
/// characters so that the format check rejects them with a clear message.
pub fn parse(secret: &Secret, key: &IntegrityKey, enrollment_uid: &str) -> Result<SeedSecret, Untrusted> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let untrusted = |why| Untrusted { name: name.clone(), why };
    if secret.metadata.deletion_timestamp.is_some() {
        // Lingering on someone else's finalizer: deleted again, and its finalizers go.
        return Err(untrusted("is being deleted"));
    }
    let meta = verify_meta(&secret.metadata, key)?;
    if meta.enrollment_uid != enrollment_uid {
        return Err(untrusted("belongs to another MfaEnrollment (owner uid)"));
    }
    if secret.type_.as_deref() != Some(SECRET_TYPE) {
        return Err(untrusted("is not of the seed Secret type"));
    }
    let data = secret.data.as_ref();
    let bytes = |key: &str| data.and_then(|d| d.get(key)).map(|v| v.0.as_slice());
    let (seed, uri, qr) =
        (bytes(KEY_SEED).unwrap_or_default(), bytes(KEY_URI).unwrap_or_default(), bytes(KEY_QR).unwrap_or_default());
    if content_digest(seed, uri, qr) != meta.content_digest {
        return Err(untrusted("holds a seed, URI or QR code the operator did not write"));
    }
    let seed = std::str::from_utf8(seed).map_err(|_| untrusted("holds a seed that is not text"))?;
    let text = |key: &str| bytes(key).map(|v| String::from_utf8_lossy(v).into_owned());
    let (code1, code2) = (text(KEY_CODE1), text(KEY_CODE2));
    Ok(SeedSecret {
        name,
        partial_codes: code1.is_some() != code2.is_some(),
        codes: code1.zip(code2),
        user: meta.user,
        serial: meta.serial,
        seed: Seed::new(seed),
        created: meta.created,
        resource_version: secret.metadata.resource_version.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn is_dns1123_subdomain(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 253
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric())
    }

    #[test]
    fn secret_names_are_valid_for_every_iam_character() {
        for user in ["alice", "Alice", "a+b=c,d.e@f_g-h", "___", "@", "UPPER.Case", &"x".repeat(64), "-lead", "trail-"]
        {
            let name = secret_name("team", user);
            assert!(is_dns1123_subdomain(&name), "{user:?} -> {name:?}");
            assert!(name.len() <= 63, "{user:?} -> {name:?} is too long for a label value");
        }
        assert!(secret_name("team", "bob.smith@example").starts_with("mfa-seed-bob-smith-example-"));
        assert_ne!(secret_name("home", "sam"), secret_name("away", "sam"), "one user name, two enrollments");
    }

    #[test]
    fn secret_names_do_not_collide_when_names_differ_only_in_case_or_punctuation() {
        let users = ["alice", "Alice", "ALICE", "a.lice", "a-lice", "a_lice", "a+lice", "a=lice", "a,lice", "a@lice"];
        let names: HashSet<_> = users.iter().map(|u| secret_name("team", u)).collect();
        assert_eq!(names.len(), users.len(), "{names:?}");
        assert_eq!(secret_name("team", "alice"), secret_name("team", "alice"), "deterministic");
    }

    const UID: &str = "5f1e0c2a-enrollment-uid";

    fn key() -> IntegrityKey {
        IntegrityKey::from_bytes(&[42; 32]).expect("32 bytes")
    }

    fn owner(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "iam.mfa-operator.dev/v1alpha1".into(),
            kind: "MfaEnrollment".into(),
            name: "team".into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: None,
        }
    }

    fn sample(seed: &Seed) -> Secret {
        build(
            NewSeedSecret {
                namespace: "ns",
                enrollment: "team",
                owner: owner(UID),
                user: "Bob+1",
                serial: "arn:aws:iam::123456789012:mfa/mfa-operator/Bob+1",
                seed,
                otpauth_uri: "otpauth://totp/x",
                qr_png: vec![1, 2, 3],
                created_at: jiff::Timestamp::UNIX_EPOCH,
            },
            &key(),
        )
    }

    #[test]
    fn build_then_parse_round_trips_and_debug_hides_secrets() {
        let seed = Seed::new("JBSWY3DPEHPK3PXP");
        let mut secret = sample(&seed);
        assert_eq!(secret.type_.as_deref(), Some(SECRET_TYPE));
        let labels = secret.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(LABEL_ENROLLMENT).map(String::as_str), Some("team"));
        let parsed = parse(&secret, &key(), UID).expect("parses");
        assert_eq!(parsed.user, "Bob+1");
        assert_eq!(parsed.seed, seed);
        assert_eq!(parsed.codes, None);
        assert_eq!(parsed.created, jiff::Timestamp::UNIX_EPOCH);

        let data = secret.data.get_or_insert_default();
        data.insert(KEY_CODE1.into(), ByteString(b"271828".to_vec()));
        data.insert(KEY_CODE2.into(), ByteString(b"314159".to_vec()));
        let parsed = parse(&secret, &key(), UID).expect("codes are the one thing people may write");
        assert_eq!(parsed.codes, Some(("271828".into(), "314159".into())));
        let debug = format!("{parsed:?}");
        for secret_text in ["JBSWY3DPEHPK3PXP", "271828", "314159"] {
            assert!(!debug.contains(secret_text), "{debug}");
        }
    }

    #[test]
    fn partial_submission_is_reported() {
        let mut secret = sample(&Seed::new("JBSWY3DPEHPK3PXP"));
        secret.data.get_or_insert_default().insert(KEY_CODE1.into(), ByteString(b"123456".to_vec()));
        let parsed = parse(&secret, &key(), UID).expect("parses");
        assert!(parsed.partial_codes);
        assert_eq!(parsed.codes, None);
    }

    /// Every edit a person with `patch` on the Secret could make, except the codes.
    #[test]
    fn any_change_but_the_codes_makes_the_secret_untrusted() {
        let original = sample(&Seed::new("JBSWY3DPEHPK3PXP"));
        let annotate = |key: &'static str, value: &'static str| {
            move |s: &mut Secret| {
                s.metadata.annotations.get_or_insert_default().insert(key.into(), value.into());
            }
        };
        let set_data = |key: &'static str, value: &'static [u8]| {
            move |s: &mut Secret| {
                s.data.get_or_insert_default().insert(key.into(), ByteString(value.to_vec()));
            }
        };
        type Edit = Box<dyn Fn(&mut Secret)>;
        let edits: Vec<(&str, Edit)> = vec![
            ("serial", Box::new(annotate(ANNOTATION_SERIAL, "arn:aws:iam::123456789012:mfa/mallory"))),
            ("user", Box::new(annotate(ANNOTATION_USER, "alice"))),
            ("created-at", Box::new(annotate(ANNOTATION_CREATED_AT, "2099-01-01T00:00:00Z"))),
            ("digest", Box::new(annotate(ANNOTATION_CONTENT_DIGEST, "00"))),
            ("tag", Box::new(annotate(ANNOTATION_INTEGRITY, "AAAA"))),
            ("seed", Box::new(set_data(KEY_SEED, b"GEZDGNBVGY3TQOJQ"))),
            ("uri", Box::new(set_data(KEY_URI, b"otpauth://totp/mallory"))),
            ("qr", Box::new(set_data(KEY_QR, b"\x89PNG"))),
            ("type", Box::new(|s: &mut Secret| s.type_ = Some("Opaque".into()))),
            ("owner", Box::new(|s: &mut Secret| s.metadata.owner_references = Some(vec![owner("other-uid")]))),
            ("no owner", Box::new(|s: &mut Secret| s.metadata.owner_references = None)),
            ("moved", Box::new(|s: &mut Secret| s.metadata.namespace = Some("elsewhere".into()))),
            ("renamed", Box::new(|s: &mut Secret| s.metadata.name = Some("mfa-seed-other".into()))),
            ("no annotations", Box::new(|s: &mut Secret| s.metadata.annotations = None)),
        ];
        for (what, edit) in edits {
            let mut secret = original.clone();
            edit(&mut secret);
            assert!(parse(&secret, &key(), UID).is_err(), "{what}: a tampered Secret must not be trusted");
        }
        assert!(parse(&original, &key(), "another-enrollment").is_err(), "another enrollment's Secret");
        let other_key = IntegrityKey::from_bytes(&[1; 32]).expect("32 bytes");
        assert!(parse(&original, &other_key, UID).is_err(), "a tag made with another key");
    }

    #[test]
    fn long_enrollment_names_get_a_bounded_label_value() {
        assert_eq!(enrollment_label("team"), "team");
        let long = "a".repeat(70);
        let label = enrollment_label(&long);
        assert!(label.len() <= 63, "{label}");
        assert_ne!(label, enrollment_label(&format!("{}b", "a".repeat(69))), "distinct names, distinct labels");
        assert_eq!(label, enrollment_label(&long), "deterministic");
    }
}
