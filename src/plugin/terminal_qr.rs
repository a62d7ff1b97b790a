//! What the person enrolling sees in the terminal: the `otpauth://` URI as a QR code drawn
//! with Unicode half blocks (two modules per character cell, so modules stay square), the
//! secret key in groups of four as the AWS console's "Show secret key" shows it, and the
//! account label an authenticator app will display. Pure.

use qrcode::render::unicode::Dense1x2;
use qrcode::types::QrError as EncodeError;
use qrcode::{EcLevel, QrCode};

use crate::qr::QrError;

/// The terminal's background, which decides how modules are drawn. Phone scanners
/// expect dark modules on a light background, quiet zone included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Background {
    /// Light text on a dark background (most terminals): light modules and the quiet
    /// zone are drawn as blocks, dark modules are left blank.
    #[default]
    Dark,
    /// Dark text on a light background: dark modules are drawn as blocks.
    Light,
}

/// Upper half block: in a cell, the top module is drawn and the bottom one is not.
const UPPER_HALF: char = '\u{2580}';
/// Full block.
const FULL: char = '\u{2588}';

/// `text` as a QR code (error correction level M, like the seed Secret's PNG) with a
/// four-module quiet zone, one line per two rows of modules, lines joined by `\n` without
/// a trailing newline.
pub fn render(text: &str, background: Background) -> Result<String, QrError> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).map_err(|error| match error {
        EncodeError::DataTooLong => QrError::TooLong { len: text.len() },
        other => QrError::Encode(other),
    })?;
    let mut renderer = code.render::<Dense1x2>();
    renderer.quiet_zone(true);
    match background {
        // Blocks are drawn in the (light) text colour: draw the light modules.
        Background::Dark => renderer.dark_color(Dense1x2::Light).light_color(Dense1x2::Dark),
        Background::Light => renderer.dark_color(Dense1x2::Dark).light_color(Dense1x2::Light),
    };
    let mut drawn = renderer.build();
    if background == Background::Dark {
        // The side is odd, so the last line holds one row of (light) quiet zone in its top
        // half; fill the bottom half too, or the terminal's dark background would eat into
        // the quiet zone.
        if let Some(start) = drawn.rfind('\n').map(|i| i + 1) {
            let last: String = drawn[start..].chars().map(|c| if c == UPPER_HALF { FULL } else { c }).collect();
            drawn.replace_range(start.., &last);
        }
    }
    Ok(drawn)
}

/// The secret key as people type it: uppercase base32 without padding, in groups of four
/// separated by spaces (`JBSW Y3DP EHPK 3PXP`).
pub fn grouped_key(seed: &str) -> String {
    let clean: Vec<char> =
        seed.chars().filter(|c| !c.is_whitespace() && *c != '=').map(|c| c.to_ascii_uppercase()).collect();
    clean.chunks(4).map(|group| group.iter().collect::<String>()).collect::<Vec<_>>().join(" ")
}

/// The issuer and account an authenticator app shows for an `otpauth://totp/` URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    /// `mfa-operator` (from the label's `issuer:` prefix), if any.
    pub issuer: Option<String>,
    /// `user@account`.
    pub account: String,
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.issuer {
            Some(issuer) => write!(f, "{} (issuer {issuer})", self.account),
            None => f.write_str(&self.account),
        }
    }
}

/// The label of an `otpauth://totp/<issuer>:<account>?...` URI, percent-decoded; `None`
/// when the text is not such a URI.
pub fn label(uri: &str) -> Option<Label> {
    let rest = uri.strip_prefix("otpauth://totp/")?;
    let path = rest.split('?').next().unwrap_or_default();
    let decoded = percent_decode(path)?;
    let (issuer, account) = match decoded.split_once(':') {
        Some((issuer, account)) => (Some(issuer.trim().to_owned()), account.trim().to_owned()),
        None => (None, decoded.trim().to_owned()),
    };
    (!account.is_empty()).then_some(Label { issuer: issuer.filter(|i| !i.is_empty()), account })
}

/// Decodes `%XX` escapes; `None` on a malformed escape or invalid UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use qrcode::Color;

    const URI: &str = "otpauth://totp/mfa-operator:Dana.Smith%2Bops%40123456789012?secret=JBSWY3DPEHPK3PXP&issuer=mfa-operator&algorithm=SHA1&digits=6&period=30";

    /// Reads the drawing back into rows of "is this module drawn" (a block's half).
    fn drawn_modules(text: &str) -> Vec<Vec<bool>> {
        let mut rows = Vec::new();
        for line in text.split('\n') {
            let (mut top, mut bottom) = (Vec::new(), Vec::new());
            for c in line.chars() {
                let (t, b) = match c {
                    ' ' => (false, false),
                    '\u{2580}' => (true, false),
                    '\u{2584}' => (false, true),
                    '\u{2588}' => (true, true),
                    other => panic!("unexpected character {other:?}"),
                };
                top.push(t);
                bottom.push(b);
            }
            rows.push(top);
            rows.push(bottom);
        }
        rows
    }

    /// The code's modules with a 4-module quiet zone: `true` for dark.
    fn expected_dark(text: &str) -> Vec<Vec<bool>> {
        let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).expect("encode");
        let (width, colors) = (code.width(), code.to_colors());
        let side = width + 8;
        (0..side)
            .map(|y| {
                (0..side)
                    .map(|x| {
                        let inside = |c: usize| c.checked_sub(4).filter(|&c| c < width);
                        matches!((inside(x), inside(y)), (Some(x), Some(y)) if colors[y * width + x] == Color::Dark)
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn dark_background_draws_light_modules_and_a_full_quiet_zone() {
        let text = render(URI, Background::Dark).expect("render");
        let expected = expected_dark(URI);
        let side = expected.len();
        assert_eq!(side % 2, 1, "QR sides are odd");
        let drawn = drawn_modules(&text);
        assert_eq!(drawn.len(), side + 1, "one line per two rows");
        for (y, row) in expected.iter().enumerate() {
            let light: Vec<bool> = row.iter().map(|dark| !dark).collect();
            assert_eq!(drawn[y], light, "row {y}");
        }
        // The padding half row below the code is drawn light too: the quiet zone is whole.
        assert!(drawn[side].iter().all(|&d| d), "bottom padding is light");
        assert!(text.lines().all(|l| l.chars().count() == side), "every line is the code's width");
        assert!(!text.ends_with('\n'));
    }

    #[test]
    fn light_background_draws_dark_modules() {
        let text = render(URI, Background::Light).expect("render");
        let expected = expected_dark(URI);
        let drawn = drawn_modules(&text);
        for (y, row) in expected.iter().enumerate() {
            assert_eq!(&drawn[y], row, "row {y}");
        }
        assert!(drawn[expected.len()].iter().all(|&d| !d), "nothing drawn below the code");
    }

    #[test]
    fn text_too_long_for_a_qr_code_is_an_error_without_the_text() {
        let long = "A".repeat(5000);
        let error = render(&long, Background::Dark).expect_err("too long");
        assert!(matches!(error, QrError::TooLong { len: 5000 }));
        assert!(!error.to_string().contains("AAAA"));
    }

    #[test]
    fn key_in_groups_of_four() {
        assert_eq!(grouped_key("JBSWY3DPEHPK3PXP"), "JBSW Y3DP EHPK 3PXP");
        assert_eq!(grouped_key("jbswy3dpe=="), "JBSW Y3DP E");
        assert_eq!(grouped_key(" AB CD\nEF "), "ABCD EF");
        assert_eq!(grouped_key(""), "");
    }

    #[test]
    fn label_is_decoded_from_the_uri() {
        let label = label(URI).expect("label");
        assert_eq!(label.issuer.as_deref(), Some("mfa-operator"));
        assert_eq!(label.account, "Dana.Smith+ops@123456789012");
        assert_eq!(label.to_string(), "Dana.Smith+ops@123456789012 (issuer mfa-operator)");
        let plain = super::label("otpauth://totp/bob%40111?secret=X").expect("label");
        assert_eq!((plain.issuer, plain.account.as_str()), (None, "bob@111"));
        assert_eq!(super::label("https://example.com/"), None);
        assert_eq!(super::label("otpauth://totp/bad%zz?secret=X"), None);
    }
}
