//! Cross-site request forgery protection for the page's forms.
//!
//! The page gives each browser a random key in a cookie (`HttpOnly`, `SameSite=Strict`,
//! `Secure` and `__Host-` when the page is served over HTTPS) and puts into every form
//! an HMAC of that key and the link id, under a key drawn when the process starts. A POST
//! must carry both, and they must agree: another site can neither read the cookie nor
//! compute the field. A POST whose `Origin` is not the page's own, or that the browser
//! marks as cross-site (`Sec-Fetch-Site`), is refused before that.
//!
//! The browser key also names who owns a page session: a second browser on the same
//! link has another key.

use axum::http::{HeaderMap, HeaderValue, header};
use hmac::digest::Key;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::link::LinkId;

type HmacSha256 = Hmac<Sha256>;

/// Random bytes in a browser key and in the process's CSRF key.
pub const KEY_BYTES: usize = 32;

/// The process's key for form tokens. Never printed.
pub struct CsrfKey([u8; KEY_BYTES]);

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey(<redacted>)")
    }
}

/// A browser's key, from its cookie. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct BrowserKey(String);

impl std::fmt::Debug for BrowserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrowserKey(<redacted>)")
    }
}

/// What a page session keeps of its owner's browser key: a digest, compared in constant
/// time.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Owner([u8; 32]);

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Owner(<redacted>)")
    }
}

impl Owner {
    pub fn is(&self, browser: &BrowserKey) -> bool {
        bool::from(self.0.ct_eq(&browser.owner().0))
    }
}

impl BrowserKey {
    pub fn new(random: [u8; KEY_BYTES]) -> Self {
        Self(data_encoding::BASE64URL_NOPAD.encode(&random))
    }

    /// The key in a cookie value, if it has the form [`Self::new`] gives.
    fn parse(value: &str) -> Option<Self> {
        let bytes = data_encoding::BASE64URL_NOPAD.decode(value.as_bytes()).ok()?;
        (bytes.len() == KEY_BYTES).then(|| Self(value.to_owned()))
    }

    pub fn owner(&self) -> Owner {
        Owner(Sha256::digest(self.0.as_bytes()).into())
    }

    /// The browser's key from the request's cookies.
    pub fn from_headers(headers: &HeaderMap, secure: bool) -> Option<Self> {
        let name = cookie_name(secure);
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|cookies| cookies.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .and_then(|(_, value)| Self::parse(value.trim()))
    }

    /// The `Set-Cookie` value that gives the browser this key.
    pub fn set_cookie(&self, secure: bool) -> HeaderValue {
        let secure_attribute = if secure { "; Secure" } else { "" };
        let cookie = format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE_SECS}{secure_attribute}",
            cookie_name(secure),
            self.0
        );
        // Base64url and fixed ASCII: always a valid header value.
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
    }
}

/// How long a browser keeps its key: a day, longer than any page session.
const COOKIE_MAX_AGE_SECS: u32 = 24 * 3600;

/// The cookie's name: with the `__Host-` prefix (no Domain, Path `/`, Secure) over HTTPS.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure { "__Host-mfa-enroll" } else { "mfa-enroll" }
}

impl CsrfKey {
    pub fn new(random: [u8; KEY_BYTES]) -> Self {
        Self(random)
    }

    fn mac(&self, link: &LinkId, browser: &BrowserKey) -> [u8; 32] {
        let mut key = Key::<HmacSha256>::default();
        key[..KEY_BYTES].copy_from_slice(&self.0);
        let mut mac = <HmacSha256 as KeyInit>::new(&key);
        mac.update(b"mfa-operator csrf v1\0");
        mac.update(link.as_str().as_bytes());
        mac.update(b"\0");
        mac.update(browser.0.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The hidden form field for `browser` on `link`.
    pub fn form_token(&self, link: &LinkId, browser: &BrowserKey) -> String {
        data_encoding::BASE64URL_NOPAD.encode(&self.mac(link, browser))
    }

    /// Whether `presented` is the form token for `browser` on `link` (constant time).
    pub fn verify(&self, link: &LinkId, browser: &BrowserKey, presented: &str) -> bool {
        let expected = self.form_token(link, browser);
        bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// `scheme://host[:port]` of a URL, lowercased: what browsers send as `Origin`.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next().filter(|h| !h.is_empty())?;
    Some(format!("{}://{}", scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

/// Whether a POST may come from the page itself: no `Origin` or the page's own, and not
/// marked cross-site or same-site (another subdomain) by the browser.
pub fn same_origin(headers: &HeaderMap, origin: &str) -> bool {
    let origin_ok = match headers.get(header::ORIGIN) {
        None => true,
        // `null` is what browsers send for a form posted from a page with
        // `Referrer-Policy: no-referrer` (Fetch spec), as this page's own forms are: accepted
        // only when the browser also says the request is same-origin.
        Some(value) => value.to_str().is_ok_and(|value| {
            value.eq_ignore_ascii_case(origin)
                || (value == "null" && headers.get("sec-fetch-site").is_some_and(|site| site == "same-origin"))
        }),
    };
    let site_ok = match headers.get("sec-fetch-site") {
        None => true,
        Some(value) => matches!(value.to_str(), Ok("same-origin" | "none")),
    };
    origin_ok && site_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::LINK_ID_BYTES;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("valid"));
        }
        map
    }

    #[test]
    fn a_form_token_belongs_to_one_browser_one_link_and_one_process() {
        let key = CsrfKey::new([1; KEY_BYTES]);
        let link = LinkId::new([2; LINK_ID_BYTES]);
        let browser = BrowserKey::new([3; KEY_BYTES]);
        let token = key.form_token(&link, &browser);
        assert!(key.verify(&link, &browser, &token));
        assert!(!key.verify(&link, &BrowserKey::new([4; KEY_BYTES]), &token), "another browser");
        assert!(!key.verify(&LinkId::new([5; LINK_ID_BYTES]), &browser, &token), "another link");
        assert!(!CsrfKey::new([6; KEY_BYTES]).verify(&link, &browser, &token), "another process");
        assert!(!key.verify(&link, &browser, ""));
        assert!(!key.verify(&link, &browser, &token[1..]));
        assert_eq!(format!("{key:?}{browser:?}{:?}", browser.owner()).matches("<redacted>").count(), 3);
    }

    #[test]
    fn the_cookie_round_trips_and_is_strict() {
        let browser = BrowserKey::new([3; KEY_BYTES]);
        for secure in [true, false] {
            let set = browser.set_cookie(secure);
            let set = set.to_str().expect("ascii");
            assert!(set.contains("HttpOnly; SameSite=Strict"), "{set}");
            assert_eq!(set.contains("; Secure") && set.starts_with("__Host-"), secure, "{set}");
            let pair = set.split(';').next().expect("name=value");
            let request = headers(&[("cookie", &format!("other=1; {pair}; x=y"))]);
            assert_eq!(BrowserKey::from_headers(&request, secure), Some(browser.clone()));
            assert_eq!(BrowserKey::from_headers(&request, !secure), None, "the other name");
        }
        let forged = headers(&[("cookie", "mfa-enroll=not-a-key")]);
        assert_eq!(BrowserKey::from_headers(&forged, false), None);
        assert!(browser.owner().is(&browser));
        assert!(!browser.owner().is(&BrowserKey::new([4; KEY_BYTES])));
    }

    #[test]
    fn only_the_pages_own_origin_may_post() {
        let origin = origin_of("https://MFA.example.com:8443/prefix/").expect("origin");
        assert_eq!(origin, "https://mfa.example.com:8443");
        assert!(same_origin(&headers(&[]), &origin), "no Origin: the cookie and the field still decide");
        assert!(same_origin(&headers(&[("origin", "https://mfa.example.com:8443")]), &origin));
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")]), &origin));
        for refused in [
            headers(&[("origin", "https://evil.example")]),
            headers(&[("origin", "null")]),
            headers(&[("origin", "http://mfa.example.com:8443")]),
            headers(&[("sec-fetch-site", "cross-site")]),
            headers(&[("sec-fetch-site", "same-site")]),
        ] {
            assert!(!same_origin(&refused, &origin), "{refused:?}");
        }
        assert_eq!(origin_of("no scheme"), None);
    }
}
