//! The page's HTML, written by hand: one small layout, an inline style sheet and one
//! inline script (the countdown), both allowed by their hashes in the Content Security
//! Policy. Everything that comes from outside (user names, account labels, messages) goes
//! through [`escape`].

use std::fmt::Write as _;
use std::sync::LazyLock;

use sha2::{Digest, Sha256};

use super::outcome::Refusal;

/// The style sheet, inline (no asset from anywhere).
pub const STYLE: &str = "\
body{font-family:system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1a1a1a;line-height:1.5}\
main{max-width:36rem;margin:2rem auto;padding:1.5rem;background:#fff;border:1px solid #8a8f98;border-radius:8px}\
h1{font-size:1.5rem;margin-top:0}h2{font-size:1.15rem}\
.qr{display:block;margin:1rem auto;max-width:100%;height:auto;image-rendering:pixelated}\
.secret{display:block;font-size:1.1rem;word-break:break-word;background:#f4f5f7;padding:.5rem;border-radius:4px}\
label{display:block;font-weight:600;margin-top:1rem}\
input{font:inherit;font-size:1.25rem;padding:.4rem;width:8ch;border:2px solid #4a4f57;border-radius:4px}\
button{font:inherit;padding:.6rem 1.2rem;margin-top:1rem;background:#0b57d0;color:#fff;border:2px solid #0b57d0;border-radius:4px;cursor:pointer}\
button.secondary{background:#fff;color:#0b57d0}\
:focus-visible{outline:3px solid #b35c00;outline-offset:2px}\
.alert{border-left:4px solid #b3261e;background:#fdecea;padding:.75rem}\
.done{border-left:4px solid #146c2e;background:#e6f4ea;padding:.75rem}";

/// The only script: counts down the 30-second window of the codes. The page works
/// without it.
pub const SCRIPT: &str = "\
(function(){var e=document.getElementById(\"countdown\");if(!e)return;\
function t(){var s=30-Math.floor(Date.now()/1000)%30;\
e.textContent=\"The code in your app changes in \"+s+(s===1?\" second.\":\" seconds.\");}\
t();setInterval(t,1000);})();";

/// The Content Security Policy of every response: nothing from the network, images only
/// from `data:` (the QR code), the style sheet and script only as written here, forms
/// only to the page itself, never in a frame.
pub static CSP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; img-src data:; style-src '{}'; script-src '{}'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
        hash_source(STYLE),
        hash_source(SCRIPT)
    )
});

/// A CSP hash source: `sha256-<base64>`.
fn hash_source(text: &str) -> String {
    format!("sha256-{}", data_encoding::BASE64.encode(&Sha256::digest(text.as_bytes())))
}

/// Escapes text for HTML element content and double- or single-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// Who is enrolling, as the page shows it.
#[derive(Clone, Debug)]
pub struct Who<'a> {
    pub user: &'a str,
    /// The account's alias, or its id.
    pub account: &'a str,
}

impl Who<'_> {
    fn paragraph(&self) -> String {
        format!(
            "<p>IAM user <strong>{}</strong> in AWS account <strong>{}</strong></p>",
            escape(self.user),
            escape(self.account)
        )
    }
}

fn layout(title: &str, body: &str, script: bool) -> String {
    let script = if script { format!("<script>{SCRIPT}</script>") } else { String::new() };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex, nofollow\">\
         <title>{} - MFA setup</title><style>{STYLE}</style></head>\
         <body><main>{body}</main>{script}</body></html>\n",
        escape(title)
    )
}

fn hidden_csrf(csrf: &str) -> String {
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", escape(csrf))
}

/// The page a link opens: says who is enrolling and what happens; creates nothing.
pub fn start(who: &Who<'_>, start_action: &str, csrf: &str, minutes: i64) -> String {
    let body = format!(
        "<h1>Set up multi-factor authentication</h1>{}\
         <p>You need an authenticator app on your phone (for example Google Authenticator, Microsoft \
         Authenticator or 1Password). When you press Start, a new MFA device is created for you and its QR code \
         is shown once. Scan it, then enter two codes from the app.</p>\
         <p>If you do not finish within {minutes} minutes, the device is deleted and you can start again with \
         this link.</p>\
         <form method=\"post\" action=\"{}\">{}<button type=\"submit\">Start</button></form>",
        who.paragraph(),
        escape(start_action),
        hidden_csrf(csrf)
    );
    layout("Set up MFA", &body, false)
}

/// What the setup page shows besides who: the QR code, the key and where the forms go.
pub struct Setup<'a> {
    /// The QR code PNG, as a `data:` URI (absent if it could not be rendered).
    pub qr_data_uri: Option<&'a str>,
    /// The secret key, in groups of four.
    pub secret_key: &'a str,
    pub codes_action: &'a str,
    pub cancel_action: &'a str,
    pub csrf: &'a str,
    /// When the setup times out, for people ("14:05 UTC").
    pub expires: &'a str,
}

/// The QR code and key, the two code fields, and a refusal if the last codes were not
/// accepted.
pub fn setup(who: &Who<'_>, setup: &Setup<'_>, refusal: Option<&Refusal>) -> String {
    let mut body = String::from("<h1>Scan the QR code</h1>");
    body.push_str(&who.paragraph());
    if let Some(refusal) = refusal {
        let _ = write!(
            body,
            "<div class=\"alert\" role=\"alert\"><h2>{}</h2><p>{}</p></div>",
            escape(refusal.title()),
            escape(&refusal.message())
        );
    }
    body.push_str("<ol><li>In your authenticator app, add an account and scan this QR code.");
    if let Some(uri) = setup.qr_data_uri {
        let _ = write!(
            body,
            "<img class=\"qr\" src=\"{}\" alt=\"QR code of the new MFA device; if you cannot scan it, type the \
             secret key below\">",
            escape(uri)
        );
    }
    let _ = write!(
        body,
        "<p>Cannot scan it? Choose to enter a key in the app and type this secret key (time-based):</p>\
         <code class=\"secret\" id=\"secret-key\">{}</code></li>\
         <li>Enter two codes from the app: the one it shows now, then wait for it to change and enter the next \
         one.<p id=\"countdown\">Codes change every 30 seconds.</p></li></ol>\
         <form method=\"post\" action=\"{}\">{}\
         <label for=\"code1\">First code</label>\
         <input id=\"code1\" name=\"code1\" inputmode=\"numeric\" autocomplete=\"one-time-code\" maxlength=\"8\" \
         required aria-describedby=\"countdown\">\
         <label for=\"code2\">Second code (the next one)</label>\
         <input id=\"code2\" name=\"code2\" inputmode=\"numeric\" autocomplete=\"one-time-code\" maxlength=\"8\" \
         required>\
         <div><button type=\"submit\">Enable MFA</button></div></form>\
         <p>This setup stays open until {}. If you leave, the device is deleted.</p>\
         <form method=\"post\" action=\"{}\">{}<button type=\"submit\" class=\"secondary\">Cancel setup</button></form>",
        escape(setup.secret_key),
        escape(setup.codes_action),
        hidden_csrf(setup.csrf),
        escape(setup.expires),
        escape(setup.cancel_action),
        hidden_csrf(setup.csrf)
    );
    layout("Scan the QR code", &body, true)
}

/// MFA is enabled.
pub fn enrolled(who: &Who<'_>) -> String {
    let body = format!(
        "<h1>MFA is set up</h1>{}<div class=\"done\" role=\"status\"><p>Your MFA device is enabled. From now on, \
         AWS asks for a code from your authenticator app when you sign in.</p></div>\
         <p>This link no longer works. You can close this page.</p>",
        who.paragraph()
    );
    layout("MFA is set up", &body, false)
}

/// The setup was cancelled at the person's request.
pub fn cancelled() -> String {
    let body = "<h1>Setup cancelled</h1><p>The MFA device was deleted. Remove its entry from your authenticator app \
                if you added one. Open the link again to start over.</p>";
    layout("Setup cancelled", body, false)
}

/// Any refusal that ends or prevents a setup.
pub fn refused(refusal: &Refusal) -> String {
    let body = format!(
        "<h1>{}</h1><div class=\"alert\" role=\"alert\"><p>{}</p></div>",
        escape(refusal.title()),
        escape(&refusal.message())
    );
    layout(refusal.title(), &body, false)
}

/// The secret key in groups of four characters, for reading and typing.
pub fn grouped(key: &str) -> String {
    key.as_bytes().chunks(4).map(|chunk| String::from_utf8_lossy(chunk).into_owned()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup_in_names() {
        let hostile = r#"x"><script>alert('1')</script>&amp;"#;
        let escaped = escape(hostile);
        assert_eq!(escaped, "x&quot;&gt;&lt;script&gt;alert(&#39;1&#39;)&lt;/script&gt;&amp;amp;");
        for bad in ['<', '>', '"', '\''] {
            assert!(!escaped.contains(bad), "{bad} in {escaped}");
        }
        let page = start(&Who { user: hostile, account: "<b>acct</b>" }, "/enroll/a/b/start", "t\"x", 10);
        assert!(!page.contains("<script>"), "no script tag on the start page at all");
        assert!(page.contains("&lt;b&gt;acct&lt;/b&gt;"));
        assert!(page.contains("value=\"t&quot;x\""));
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_style_and_script() {
        let page = setup(
            &Who { user: "alice", account: "123456789012" },
            &Setup {
                qr_data_uri: Some("data:image/png;base64,AAAA"),
                secret_key: "ABCD EFGH",
                codes_action: "/c",
                cancel_action: "/x",
                csrf: "t",
                expires: "12:00 UTC",
            },
            None,
        );
        let between = |open: &str, close: &str| {
            let start = page.find(open).expect("open") + open.len();
            page[start..].split(close).next().expect("close").to_owned()
        };
        assert_eq!(between("<style>", "</style>"), STYLE);
        assert_eq!(between("<script>", "</script>"), SCRIPT);
        assert_eq!(page.matches("<script").count(), 1);
        assert!(CSP.contains(&format!("style-src '{}'", hash_source(&between("<style>", "</style>")))));
        assert!(CSP.contains(&format!("script-src '{}'", hash_source(&between("<script>", "</script>")))));
        assert!(!page.contains(" style=\""), "no inline style attribute: the policy would block it");
        assert!(page.contains("<html lang=\"en\">"));
        assert!(page.contains("<label for=\"code1\">") && page.contains("id=\"code1\""));
        assert_eq!(grouped("ABCDEFGHIJ"), "ABCD EFGH IJ");
    }
}
