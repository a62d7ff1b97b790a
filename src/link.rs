//! One-time enrollment links (issue 11, not wired yet): the token a person receives, and
//! the record the operator keeps of it. Pure: minting takes the random bytes and the
//! time; nothing here does I/O.
//!
//! A token is 256 random bits. The operator keeps only a SHA-256 digest of it, taken
//! together with what the link is for (account, user, enrollment uid), so a record copied
//! onto another user, enrollment or account never accepts the token, and a leaked record
//! gives nothing to present. A record is single use and expires.
//!
//! A link also has a [`LinkId`]: random, not secret, it finds the record (the operator
//! keeps records by id); the token, checked in constant time, opens it. The link is
//! `{public_url}/enroll/{id}/{token}` ([`url`]).

use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Random bytes in a token.
pub const TOKEN_BYTES: usize = 32;
/// Random bytes in a link id.
pub const LINK_ID_BYTES: usize = 16;
/// Where links live under the page's public URL.
pub const PATH_PREFIX: &str = "/enroll/";
/// Default lifetime of a link (`spec.link.ttl`).
pub const DEFAULT_TTL: SignedDuration = SignedDuration::from_hours(72);
/// Longest lifetime a link may be given.
pub const MAX_TTL: SignedDuration = SignedDuration::from_hours(30 * 24);

/// What a link lets its holder do: enrol `user` of `account` for one enrollment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purpose {
    pub account: String,
    pub user: String,
    pub enrollment_uid: String,
}

/// The token as the person receives it (in the link's path). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// The text that goes into the link (URL-safe base64, no padding).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Names a link (and its record): random and not secret, so it may appear in logs and
/// in the operator's state; it opens nothing without the token.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(String);

impl LinkId {
    /// A link id from random bytes (the caller draws them from the OS).
    pub fn new(random: [u8; LINK_ID_BYTES]) -> Self {
        Self(data_encoding::BASE64URL_NOPAD.encode(&random))
    }

    /// The id in `text` if it has exactly the form [`Self::new`] gives (22 characters of
    /// URL-safe base64 for 16 bytes); anything else is no id.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = data_encoding::BASE64URL_NOPAD.decode(text.as_bytes()).ok()?;
        // The canonical form only: no two texts name the same id.
        (bytes.len() == LINK_ID_BYTES && data_encoding::BASE64URL_NOPAD.encode(&bytes) == text)
            .then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for LinkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The path of a link: `/enroll/{id}/{token}`.
pub fn path(id: &LinkId, token: &Token) -> String {
    format!("{PATH_PREFIX}{id}/{}", token.expose())
}

/// The link a person receives: the page's public URL (scheme, host and any prefix) and
/// [`path`]. Secret: never log it.
pub fn url(public_url: &str, id: &LinkId, token: &Token) -> String {
    format!("{}{}", public_url.trim_end_matches('/'), path(id, token))
}

/// What the operator keeps of a link: no token, only a digest bound to its purpose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// SHA-256 over the token and the purpose, hex.
    pub digest: String,
    pub purpose: Purpose,
    pub minted_at: Timestamp,
    pub expires_at: Timestamp,
    /// When the link was used; a used link is refused.
    pub used_at: Option<Timestamp>,
}

/// Why a presented token is refused. The page says which in plain words; none of them
/// tells an attacker whether some other token exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not this record's token (or not a token at all).
    Unknown,
    Expired,
    Used,
}

/// Mints a link for `purpose` from `random` (the caller draws it from the OS), valid for
/// `ttl` (bounded by [`MAX_TTL`]) from `now`.
pub fn mint(purpose: Purpose, random: [u8; TOKEN_BYTES], now: Timestamp, ttl: SignedDuration) -> (Token, Record) {
    let token = Token(data_encoding::BASE64URL_NOPAD.encode(&random));
    let ttl = ttl.clamp(SignedDuration::ZERO, MAX_TTL);
    let record = Record {
        digest: digest(token.expose(), &purpose),
        purpose,
        minted_at: now,
        expires_at: now.checked_add(ttl).unwrap_or(now),
        used_at: None,
    };
    (token, record)
}

/// Whether `presented` opens `record` at `now`. The digest is compared in constant time.
pub fn check(record: &Record, presented: &str, now: Timestamp) -> Result<(), Refusal> {
    let presented = digest(presented, &record.purpose);
    if !bool::from(presented.as_bytes().ct_eq(record.digest.as_bytes())) {
        return Err(Refusal::Unknown);
    }
    if record.used_at.is_some() {
        return Err(Refusal::Used);
    }
    if now >= record.expires_at {
        return Err(Refusal::Expired);
    }
    Ok(())
}

/// SHA-256 of the token and its purpose, each length-prefixed so no two different inputs
/// share a digest.
fn digest(token: &str, purpose: &Purpose) -> String {
    let mut hash = Sha256::new();
    hash.update(b"mfa-operator link v1");
    for part in [token, &purpose.account, &purpose.user, &purpose.enrollment_uid] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    data_encoding::HEXLOWER.encode(&hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purpose(user: &str) -> Purpose {
        Purpose { account: "123456789012".into(), user: user.into(), enrollment_uid: "uid-1".into() }
    }

    const T0: Timestamp = Timestamp::UNIX_EPOCH;

    #[test]
    fn a_minted_token_opens_its_record_once_and_until_it_expires() {
        let (token, mut record) = mint(purpose("alice"), [7; TOKEN_BYTES], T0, DEFAULT_TTL);
        assert_eq!(token.expose().len(), 43, "256 bits in URL-safe base64");
        assert_eq!(check(&record, token.expose(), T0), Ok(()));
        assert_eq!(record.expires_at, T0 + DEFAULT_TTL);
        assert_eq!(check(&record, token.expose(), record.expires_at), Err(Refusal::Expired));
        record.used_at = Some(T0);
        assert_eq!(check(&record, token.expose(), T0), Err(Refusal::Used));
    }

    #[test]
    fn the_record_keeps_no_token_and_is_bound_to_its_purpose() {
        let (token, record) = mint(purpose("alice"), [7; TOKEN_BYTES], T0, DEFAULT_TTL);
        assert!(!format!("{record:?}{token:?}").contains(token.expose()), "neither record nor Debug holds the token");
        // A record copied onto another user (or a digest forged for one) refuses the token.
        let moved = Record { purpose: purpose("mallory"), ..record.clone() };
        assert_eq!(check(&moved, token.expose(), T0), Err(Refusal::Unknown));
        let (other, _) = mint(purpose("alice"), [8; TOKEN_BYTES], T0, DEFAULT_TTL);
        assert_eq!(check(&record, other.expose(), T0), Err(Refusal::Unknown));
        assert_eq!(check(&record, "", T0), Err(Refusal::Unknown));
    }

    #[test]
    fn a_link_id_round_trips_only_in_its_canonical_form() {
        let id = LinkId::new([0xfb; LINK_ID_BYTES]);
        assert_eq!(id.as_str().len(), 22);
        assert_eq!(LinkId::parse(id.as_str()), Some(id.clone()));
        let (token, _) = mint(purpose("alice"), [7; TOKEN_BYTES], T0, DEFAULT_TTL);
        for bad in ["", "short", token.expose(), &format!("{id}="), &format!("{id}A"), "a/b", "++++++++++++++++++++++"]
        {
            assert_eq!(LinkId::parse(bad), None, "{bad}");
        }
        // The last character carries 4 spare bits: a non-canonical spelling of the same bytes.
        let mut other = id.as_str().to_owned();
        other.pop();
        other.push('x');
        assert_eq!(LinkId::parse(&other), None, "{other}");
        assert_eq!(path(&id, &token), format!("/enroll/{id}/{}", token.expose()));
        assert_eq!(
            url("https://mfa.example.com/", &id, &token),
            format!("https://mfa.example.com/enroll/{id}/{}", token.expose())
        );
    }

    #[test]
    fn the_lifetime_is_bounded() {
        let (_, record) = mint(purpose("alice"), [7; TOKEN_BYTES], T0, SignedDuration::from_hours(100 * 24));
        assert_eq!(record.expires_at, T0 + MAX_TTL);
        let (token, record) = mint(purpose("alice"), [7; TOKEN_BYTES], T0, -SignedDuration::from_hours(1));
        assert_eq!(check(&record, token.expose(), T0), Err(Refusal::Expired), "a negative lifetime is expired");
    }
}
