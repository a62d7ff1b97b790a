//! The words a person receives with their link, the same in every channel: who the link
//! is for, that it works once and until when, what it does, and what to do when the
//! message was not expected.
//!
//! The composed text contains the link, so [`Composed`] prints redacted like the link.

use std::fmt;

use super::{LinkUrl, Recipient};

/// Who signs the messages.
pub const SENDER_NAME: &str = "mfa-operator";

/// A message ready to send: a subject, the plain text, and an HTML alternative.
#[derive(Clone, PartialEq, Eq)]
pub struct Composed {
    pub subject: String,
    /// Plain text; holds the link.
    pub text: String,
    /// The same words as HTML (no script, no remote asset); holds the link.
    pub html: String,
}

impl fmt::Debug for Composed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Composed")
            .field("subject", &self.subject)
            .field("text", &"<redacted>")
            .field("html", &"<redacted>")
            .finish()
    }
}

/// The expiry as people read it: `2026-12-10 15:30 UTC`.
pub fn expiry(recipient: &Recipient) -> String {
    recipient.expires_at.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

/// The subject line (no link in it).
pub fn subject(recipient: &Recipient) -> String {
    format!("Set up MFA for AWS user {} in account {}", recipient.user, recipient.account_label())
}

/// The message for `recipient` with `link` in it.
pub fn compose(link: &LinkUrl, recipient: &Recipient) -> Composed {
    let url = link.expose();
    let user = &recipient.user;
    let account = recipient.account_label();
    let expiry = expiry(recipient);
    let text = format!(
        "Hello,\n\
         \n\
         This is your link to set up multi-factor authentication (MFA) for the AWS IAM user \
         {user} in account {account}:\n\
         \n\
         {url}\n\
         \n\
         Have your authenticator app at hand. The page shows a QR code to scan and asks \
         for two codes from the app.\n\
         \n\
         The link works once and only until {expiry}. Do not forward it: whoever opens it \
         first sets up the MFA device for {user}.\n\
         \n\
         If you did not expect this message, do not open the link, and tell your AWS \
         administrator or security team.\n\
         \n\
         -- {SENDER_NAME}\n"
    );
    let (user_h, account_h, url_h, expiry_h) = (escape(user), escape(&account), escape(url), escape(&expiry));
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{subject}</title></head><body>\n\
         <p>Hello,</p>\n\
         <p>This is your link to set up multi-factor authentication (MFA) for the AWS IAM user \
         <strong>{user_h}</strong> in account <strong>{account_h}</strong>:</p>\n\
         <p><a href=\"{url_h}\">{url_h}</a></p>\n\
         <p>Have your authenticator app at hand. The page shows a QR code to scan and asks for \
         two codes from the app.</p>\n\
         <p>The link works <strong>once</strong> and only until <strong>{expiry_h}</strong>. Do \
         not forward it: whoever opens it first sets up the MFA device for {user_h}.</p>\n\
         <p>If you did not expect this message, do not open the link, and tell your AWS \
         administrator or security team.</p>\n\
         <p>-- {SENDER_NAME}</p>\n</body></html>\n",
        subject = escape(&subject(recipient)),
    );
    Composed { subject: subject(recipient), text, html }
}

/// The one-paragraph form for chat (a webhook's `text`): Slack, Mattermost and Teams show
/// it as it is and make the URL clickable. Nothing needs Slack's escaping of `<`, `>` and
/// `&`: IAM user names and account aliases cannot contain them, and the link is the
/// operator's public URL and a URL-safe id and token.
pub fn chat_text(link: &LinkUrl, recipient: &Recipient) -> String {
    format!(
        "MFA setup link for AWS IAM user {user} in account {account}: {url}\n\
         It works once and only until {expiry}; have your authenticator app at hand. If you did \
         not expect this, do not open it and tell your AWS administrator or security team.",
        user = recipient.user,
        account = recipient.account_label(),
        url = link.expose(),
        expiry = expiry(recipient),
    )
}

/// `text` safe inside HTML text and double-quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "q8Zr4kXH2n0mYb7VwT1sLp9cDf3GjE5uAi6oRt8yWzQ";

    fn recipient() -> Recipient {
        Recipient {
            user: "alice.smith+ops@corp".into(),
            account_id: "123456789012".into(),
            account_alias: Some("payments-prod".into()),
            expires_at: "2026-12-10T15:30:59Z".parse().unwrap(),
            address: None,
        }
    }

    fn link() -> LinkUrl {
        LinkUrl::new(format!("https://mfa.example.com/enroll/{TOKEN}"))
    }

    #[test]
    fn the_text_says_who_until_when_once_and_what_if_unexpected() {
        let message = compose(&link(), &recipient());
        assert_eq!(
            message.subject,
            "Set up MFA for AWS user alice.smith+ops@corp in account payments-prod (123456789012)"
        );
        let text = &message.text;
        assert!(text.contains("AWS IAM user alice.smith+ops@corp in account payments-prod (123456789012):"), "{text}");
        assert!(
            text.contains(&format!("\n\nhttps://mfa.example.com/enroll/{TOKEN}\n\n")),
            "the link on a line of its own: {text}"
        );
        assert!(text.contains("works once and only until 2026-12-10 15:30 UTC"), "{text}");
        assert!(text.contains("If you did not expect this message, do not open the link"), "{text}");
        assert!(text.contains("QR code") && text.contains("two codes"), "{text}");
        assert!(text.lines().all(|l| l.len() < 200), "{text}");
    }

    #[test]
    fn the_html_says_the_same_and_is_escaped() {
        let mut recipient = recipient();
        recipient.account_alias = Some("a<b>&\"c".into());
        let link = LinkUrl::new("https://mfa.example.com/enroll/x?a=1&b=\"2\"");
        let html = compose(&link, &recipient).html;
        assert!(html.contains("<a href=\"https://mfa.example.com/enroll/x?a=1&amp;b=&quot;2&quot;\">"), "{html}");
        assert!(html.contains("a&lt;b&gt;&amp;&quot;c (123456789012)"), "{html}");
        assert!(!html.contains("<script") && !html.contains("src="), "{html}");
        assert!(html.contains("until <strong>2026-12-10 15:30 UTC</strong>"), "{html}");
    }

    #[test]
    fn chat_text_is_one_message_with_the_link() {
        let text = chat_text(&link(), &recipient());
        assert!(text.starts_with("MFA setup link for AWS IAM user alice.smith+ops@corp in account payments-prod (123456789012): https://mfa.example.com/enroll/"), "{text}");
        assert!(text.contains(TOKEN) && text.contains("once") && text.contains("2026-12-10 15:30 UTC"), "{text}");
    }

    #[test]
    fn a_composed_message_prints_redacted() {
        let printed = format!("{:?}", compose(&link(), &recipient()));
        assert!(!printed.contains(TOKEN), "{printed}");
        assert!(printed.contains("Set up MFA for AWS user"), "{printed}");
    }

    #[test]
    fn no_alias_names_the_account_id() {
        let mut recipient = recipient();
        recipient.account_alias = None;
        assert_eq!(subject(&recipient), "Set up MFA for AWS user alice.smith+ops@corp in account 123456789012");
    }
}
