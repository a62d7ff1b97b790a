//! The operator's integrity key and the tag that proves a seed Secret is the operator's
//! own: an HMAC-SHA-256 over everything the operator wrote into the Secret, keyed by a
//! random key that lives in a Secret in the operator's own namespace (created on first
//! start). People who may write codes into a seed Secret cannot forge or move a tag, so a
//! Secret whose tag does not verify is replaced and reported, never obeyed.
//!
//! Pure: `context::load_integrity_key` reads or creates the key Secret.

use hmac::digest::Key;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Data key of the key Secret.
pub(super) const KEY_FIELD: &str = "hmac-sha256-key";
/// Length of the key in bytes.
pub(super) const KEY_LEN: usize = 32;

/// The key. `Debug` never prints it.
#[derive(Clone)]
pub struct IntegrityKey([u8; KEY_LEN]);

impl std::fmt::Debug for IntegrityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IntegrityKey(<redacted>)")
    }
}

/// Everything a seed Secret's tag covers. Fields are framed by their lengths, so no two
/// different field lists hash alike.
pub struct Tagged<'a> {
    pub namespace: &'a str,
    pub secret: &'a str,
    pub enrollment_uid: &'a str,
    pub user: &'a str,
    pub serial: &'a str,
    pub created_at: &'a str,
    pub content_digest: &'a str,
}

impl Tagged<'_> {
    fn feed(&self, mac: &mut HmacSha256) {
        mac.update(b"mfa-operator seed Secret v1");
        for field in [
            self.namespace,
            self.secret,
            self.enrollment_uid,
            self.user,
            self.serial,
            self.created_at,
            self.content_digest,
        ] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field.as_bytes());
        }
    }
}

impl IntegrityKey {
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; KEY_LEN]>::try_from(bytes).ok().map(Self)
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, String> {
        let mut key = [0u8; KEY_LEN];
        getrandom::fill(&mut key).map_err(|e| format!("no randomness for the integrity key: {e}"))?;
        Ok(Self(key))
    }

    /// The key's bytes, to store it in its Secret.
    pub(super) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC zero-pads a key shorter than the hash block; doing it here gives the
        // infallible constructor its block-sized key.
        let mut key = Key::<HmacSha256>::default();
        key[..KEY_LEN].copy_from_slice(&self.0);
        <HmacSha256 as KeyInit>::new(&key)
    }

    /// The tag of `fields`, as unpadded base64url.
    pub fn tag(&self, fields: &Tagged<'_>) -> String {
        let mut mac = self.mac();
        fields.feed(&mut mac);
        data_encoding::BASE64URL_NOPAD.encode(&mac.finalize().into_bytes())
    }

    /// Whether `tag` is the tag of `fields` (compared in constant time).
    pub fn verify(&self, fields: &Tagged<'_>, tag: &str) -> bool {
        let Ok(tag) = data_encoding::BASE64URL_NOPAD.decode(tag.as_bytes()) else { return false };
        let mut mac = self.mac();
        fields.feed(&mut mac);
        mac.verify_slice(&tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(user: &'a str, serial: &'a str) -> Tagged<'a> {
        Tagged {
            namespace: "team",
            secret: "mfa-seed-alice-1234abcd",
            enrollment_uid: "0b3e",
            user,
            serial,
            created_at: "2026-12-02T10:00:00Z",
            content_digest: "abc",
        }
    }

    #[test]
    fn a_tag_verifies_only_for_the_same_fields_and_key() {
        let key = IntegrityKey::from_bytes(&[7; KEY_LEN]).expect("32 bytes");
        let serial = "arn:aws:iam::123456789012:mfa/p/alice";
        let tag = key.tag(&fields("alice", serial));
        assert!(key.verify(&fields("alice", serial), &tag));
        assert!(!key.verify(&fields("mallory", serial), &tag), "another user");
        assert!(!key.verify(&fields("alice", "arn:aws:iam::123456789012:mfa/p/mallory"), &tag), "another serial");
        let other = IntegrityKey::from_bytes(&[8; KEY_LEN]).expect("32 bytes");
        assert!(!other.verify(&fields("alice", serial), &tag), "another key");
        assert!(!key.verify(&fields("alice", serial), "not base64!"), "garbage");
        assert!(!key.verify(&fields("alice", serial), ""), "empty");
        // Length framing: moving a character between two fields changes the tag.
        let a = Tagged { user: "ab", serial: "c", ..fields("", "") };
        let b = Tagged { user: "a", serial: "bc", ..fields("", "") };
        assert_ne!(key.tag(&a), key.tag(&b));
    }

    #[test]
    fn debug_hides_the_key_and_keys_must_be_32_bytes() {
        let key = IntegrityKey::from_bytes(&[0xAB; KEY_LEN]).expect("32 bytes");
        assert_eq!(format!("{key:?}"), "IntegrityKey(<redacted>)");
        assert!(IntegrityKey::from_bytes(&[1; 16]).is_none());
        assert!(IntegrityKey::generate().is_ok());
    }
}
