//! The per-user seed Secret: the only place a pending device's seed ever lives, and the
//! place where a person finishes enrollment by writing `code1` and `code2`.
//!
//! One Secret per pending user, in the enrollment's namespace. Its name is derived from
//! the exact IAM user name (IAM allows capitals and `+=,.@_-`, Secret names do not), its
//! labels tie it to the enrollment, and its annotations record the exact user, the
//! device serial and the failed submissions.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sha2::{Digest, Sha256};

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
/// Number of refused code submissions for this device.
pub const ANNOTATION_FAILED_ATTEMPTS: &str = "iam.mfa-operator.dev/failed-attempts";
/// Why the last submission was refused (no codes in it), for people and the plugin.
pub const ANNOTATION_LAST_REJECTION: &str = "iam.mfa-operator.dev/last-rejection";

/// Keys of the Secret's data.
pub const KEY_SEED: &str = "seed";
pub const KEY_URI: &str = "otpauth-uri";
pub const KEY_QR: &str = "qr.png";
pub const KEY_CODE1: &str = "code1";
pub const KEY_CODE2: &str = "code2";

/// Label selector matching every seed Secret of the operator.
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY}")
}

/// Label selector matching the seed Secrets of one enrollment.
pub fn enrollment_selector(enrollment: &str) -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_ENROLLMENT}={enrollment}")
}

/// Longest slug of the user name kept in the Secret name.
const SLUG_MAX: usize = 40;

/// The seed Secret name of an IAM user in an enrollment: `mfa-seed-<slug>-<hash>`, where
/// the slug is a readable DNS-1123 form of the user name and the hash (of the enrollment
/// name and the exact user name) keeps apart names that differ only in case or
/// punctuation, and the same user name in two accounts enrolled from one namespace. At
/// most 58 characters.
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
    let digest = Sha256::digest(format!("{enrollment}\0{user}").as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    if slug.is_empty() { format!("mfa-seed-{hash}") } else { format!("mfa-seed-{slug}-{hash}") }
}

/// Everything needed to write a new seed Secret.
pub struct NewSeedSecret<'a> {
    pub namespace: &'a str,
    pub enrollment: &'a str,
    pub owner: Option<OwnerReference>,
    pub user: &'a str,
    pub serial: &'a str,
    pub seed: &'a Seed,
    pub otpauth_uri: &'a str,
    pub qr_png: Vec<u8>,
    pub created_at: jiff::Timestamp,
}

/// Builds a seed Secret.
pub fn build(new: NewSeedSecret<'_>) -> Secret {
    let labels = BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_ENROLLMENT.to_owned(), new.enrollment.to_owned()),
    ]);
    let annotations = BTreeMap::from([
        (ANNOTATION_USER.to_owned(), new.user.to_owned()),
        (ANNOTATION_SERIAL.to_owned(), new.serial.to_owned()),
        (ANNOTATION_CREATED_AT.to_owned(), new.created_at.to_string()),
    ]);
    let data = BTreeMap::from([
        (KEY_SEED.to_owned(), ByteString(new.seed.expose().as_bytes().to_vec())),
        (KEY_URI.to_owned(), ByteString(new.otpauth_uri.as_bytes().to_vec())),
        (KEY_QR.to_owned(), ByteString(new.qr_png)),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(new.enrollment, new.user)),
            namespace: Some(new.namespace.to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: new.owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some(SECRET_TYPE.to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// What the controller reads back from a seed Secret. `Debug` is hand-written so the seed
/// and codes never reach a log line.
#[derive(Clone, PartialEq)]
pub struct SeedSecret {
    pub name: String,
    pub user: String,
    pub serial: String,
    pub seed: Seed,
    /// `(code1, code2)` when the person wrote both.
    pub codes: Option<(String, String)>,
    /// Whether only one of the two code keys is present (an incomplete submission).
    pub partial_codes: bool,
    pub failed_attempts: u32,
    pub last_rejection: Option<String>,
    pub created: Option<jiff::Timestamp>,
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
            .field("failed_attempts", &self.failed_attempts)
            .finish_non_exhaustive()
    }
}

/// Why a Secret carrying our labels cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("Secret {0} lacks the {1} annotation")]
    MissingAnnotation(String, &'static str),
    #[error("Secret {0} lacks a usable seed")]
    MissingSeed(String),
}

/// Reads a seed Secret. Codes are read from `data` (the apiserver folds `stringData`
/// into `data`); values that are not UTF-8 are kept as replacement characters so that the
/// format check rejects them with a clear message.
pub fn parse(secret: &Secret) -> Result<SeedSecret, ParseError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let annotation = |key: &'static str| {
        secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .cloned()
            .ok_or_else(|| ParseError::MissingAnnotation(name.clone(), key))
    };
    let user = annotation(ANNOTATION_USER)?;
    let serial = annotation(ANNOTATION_SERIAL)?;
    let data = secret.data.as_ref();
    let text = |key: &str| data.and_then(|d| d.get(key)).map(|v| String::from_utf8_lossy(&v.0).into_owned());
    let seed = text(KEY_SEED).filter(|s| !s.trim().is_empty()).ok_or_else(|| ParseError::MissingSeed(name.clone()))?;
    let (code1, code2) = (text(KEY_CODE1), text(KEY_CODE2));
    let partial_codes = code1.is_some() != code2.is_some();
    let codes = code1.zip(code2);
    let annotations = secret.metadata.annotations.as_ref();
    let failed_attempts =
        annotations.and_then(|a| a.get(ANNOTATION_FAILED_ATTEMPTS)).and_then(|v| v.parse().ok()).unwrap_or(0);
    let last_rejection = annotations.and_then(|a| a.get(ANNOTATION_LAST_REJECTION)).cloned();
    Ok(SeedSecret {
        name,
        user,
        serial,
        seed: Seed::new(seed),
        codes,
        partial_codes,
        failed_attempts,
        last_rejection,
        created: annotations
            .and_then(|a| a.get(ANNOTATION_CREATED_AT))
            .and_then(|t| t.parse().ok())
            .or_else(|| secret.metadata.creation_timestamp.as_ref().map(|t| t.0)),
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

    #[test]
    fn build_then_parse_round_trips_and_debug_hides_secrets() {
        let seed = Seed::new("JBSWY3DPEHPK3PXP");
        let mut secret = build(NewSeedSecret {
            namespace: "ns",
            enrollment: "team",
            owner: None,
            user: "Bob+1",
            serial: "arn:aws:iam::123456789012:mfa/mfa-operator/Bob+1",
            seed: &seed,
            otpauth_uri: "otpauth://totp/x",
            qr_png: vec![1, 2, 3],
            created_at: jiff::Timestamp::UNIX_EPOCH,
        });
        assert_eq!(secret.type_.as_deref(), Some(SECRET_TYPE));
        let labels = secret.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(LABEL_ENROLLMENT).map(String::as_str), Some("team"));
        let parsed = parse(&secret).expect("parses");
        assert_eq!(parsed.user, "Bob+1");
        assert_eq!(parsed.seed, seed);
        assert_eq!(parsed.codes, None);

        let data = secret.data.get_or_insert_default();
        data.insert(KEY_CODE1.into(), ByteString(b"271828".to_vec()));
        data.insert(KEY_CODE2.into(), ByteString(b"314159".to_vec()));
        let parsed = parse(&secret).expect("parses");
        assert_eq!(parsed.codes, Some(("271828".into(), "314159".into())));
        let debug = format!("{parsed:?}");
        for secret_text in ["JBSWY3DPEHPK3PXP", "271828", "314159"] {
            assert!(!debug.contains(secret_text), "{debug}");
        }
    }

    #[test]
    fn partial_submission_and_missing_annotations_are_reported() {
        let seed = Seed::new("JBSWY3DPEHPK3PXP");
        let mut secret = build(NewSeedSecret {
            namespace: "ns",
            enrollment: "team",
            owner: None,
            user: "bob",
            serial: "arn:x",
            seed: &seed,
            otpauth_uri: "u",
            qr_png: vec![],
            created_at: jiff::Timestamp::UNIX_EPOCH,
        });
        secret.data.get_or_insert_default().insert(KEY_CODE1.into(), ByteString(b"123456".to_vec()));
        let parsed = parse(&secret).expect("parses");
        assert!(parsed.partial_codes);
        assert_eq!(parsed.codes, None);

        secret.metadata.annotations.get_or_insert_default().remove(ANNOTATION_SERIAL);
        assert!(matches!(parse(&secret), Err(ParseError::MissingAnnotation(_, ANNOTATION_SERIAL))));
    }
}
