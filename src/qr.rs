//! What the seed Secret holds besides the base32 seed: the `otpauth://` key URI that
//! authenticator apps import, and that URI as a QR code PNG to scan.
//!
//! Both are pure and deterministic: the same input always gives the same bytes, so the
//! controller can compare a Secret's content with what it would write.

use std::io::Cursor;

use qrcode::types::QrError as EncodeError;
use qrcode::{Color, EcLevel, QrCode};

use crate::totp::{DIGITS, STEP_SECS};

/// Width of the light border around the code, in modules (the QR specification's minimum).
pub const QUIET_ZONE_MODULES: usize = 4;

/// Size of one module in the PNG, in pixels.
pub const PIXELS_PER_MODULE: usize = 8;

/// Why a QR code PNG could not be made. The messages never contain the text (it holds the
/// seed).
#[derive(Debug, thiserror::Error)]
pub enum QrError {
    /// The text does not fit in the largest QR code at error correction level M.
    #[error("the text is too long for a QR code ({len} bytes)")]
    TooLong { len: usize },
    /// Any other refusal of the QR encoder.
    #[error("cannot encode the QR code: {0}")]
    Encode(EncodeError),
    /// The PNG encoder failed (writing to memory: not expected to happen).
    #[error("cannot write the QR code PNG")]
    Png(#[from] png::EncodingError),
}

/// The key URI of a TOTP seed in the Google Authenticator format that every authenticator
/// app imports:
/// `otpauth://totp/<issuer>:<label>?secret=<SEED>&issuer=<issuer>&algorithm=SHA1&digits=6&period=30`.
///
/// `issuer` and `account_label` (typically `user@account`; IAM names may contain `+=,.@_-`)
/// are percent-encoded byte by byte, everything but RFC 3986 unreserved characters: `+`
/// becomes `%2B` (never a space), `@` becomes `%40`, a space `%20`. The seed is normalised to
/// uppercase base32 without spaces or padding. An empty issuer is left out entirely.
///
/// The format forbids a colon in the issuer or the label (it separates them); IAM names
/// cannot contain one, and one in the issuer is encoded as `%3A`, which some apps would split
/// on: keep colons out of the issuer.
pub fn otpauth_uri(issuer: &str, account_label: &str, seed_base32: &str) -> String {
    let secret: String =
        seed_base32.chars().filter(|c| !c.is_whitespace() && *c != '=').map(|c| c.to_ascii_uppercase()).collect();
    let secret = percent_encode(&secret);
    let label = percent_encode(account_label);
    let parameters = format!("algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}");
    if issuer.is_empty() {
        format!("otpauth://totp/{label}?secret={secret}&{parameters}")
    } else {
        let issuer = percent_encode(issuer);
        format!("otpauth://totp/{issuer}:{label}?secret={secret}&issuer={issuer}&{parameters}")
    }
}

/// Percent-encodes every byte of the UTF-8 text except RFC 3986 unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`), with uppercase hex digits.
fn percent_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push('%');
            encoded.push(char::from(HEX[usize::from(byte >> 4)]));
            encoded.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    encoded
}

/// Renders `text` as a QR code (error correction level M) in a PNG: black modules on white,
/// a [`QUIET_ZONE_MODULES`]-module quiet zone, [`PIXELS_PER_MODULE`] pixels per module, 1-bit
/// grayscale. The image is `(modules + 2 * 4) * 8` pixels square; the output is deterministic.
pub fn qr_png(text: &str) -> Result<Vec<u8>, QrError> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).map_err(|error| match error {
        EncodeError::DataTooLong => QrError::TooLong { len: text.len() },
        other => QrError::Encode(other),
    })?;
    let modules = code.width();
    let colors = code.to_colors();
    let side_modules = modules + 2 * QUIET_ZONE_MODULES;
    let side_px = side_modules * PIXELS_PER_MODULE;
    let too_long = || QrError::TooLong { len: text.len() };
    let side = u32::try_from(side_px).map_err(|_| too_long())?;

    // 1-bit grayscale: 0 is black, 1 is white; pixels packed most significant bit first,
    // each row padded to a whole byte.
    let row_bytes = side_px.div_ceil(8);
    let mut pixels = Vec::with_capacity(row_bytes * side_px);
    for module_y in 0..side_modules {
        let mut row = vec![0u8; row_bytes];
        for x in 0..side_px {
            if !is_dark(&colors, modules, x / PIXELS_PER_MODULE, module_y) {
                row[x / 8] |= 0x80 >> (x % 8);
            }
        }
        for _ in 0..PIXELS_PER_MODULE {
            pixels.extend_from_slice(&row);
        }
    }

    let mut png_bytes = Vec::new();
    let mut encoder = png::Encoder::new(Cursor::new(&mut png_bytes), side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::One);
    encoder.set_compression(png::Compression::High);
    // The PNG specification's advice for images under 8 bits per pixel; fixed, like every
    // other setting, so the bytes depend on the text only.
    encoder.set_filter(png::Filter::NoFilter);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(png_bytes)
}

/// Whether the module at (`x`, `y`), counted in the image including the quiet zone, is dark.
fn is_dark(colors: &[Color], modules: usize, x: usize, y: usize) -> bool {
    let inside = |coordinate: usize| coordinate.checked_sub(QUIET_ZONE_MODULES).filter(|&c| c < modules);
    match (inside(x), inside(y)) {
        (Some(x), Some(y)) => colors.get(y * modules + x) == Some(&Color::Dark),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

    /// Decodes a percent-encoded string (test helper: strict, panics on bad input).
    fn percent_decode(encoded: &str) -> String {
        let bytes = encoded.as_bytes();
        let mut decoded = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                decoded.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(decoded).unwrap()
    }

    /// Decoded image: width, height and one byte per pixel (0 black, 255 white).
    fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let mut decoder = png::Decoder::new(Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info().unwrap();
        let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
        let frame = reader.next_frame(&mut buffer).unwrap();
        assert_eq!((frame.color_type, frame.bit_depth), (png::ColorType::Grayscale, png::BitDepth::Eight));
        buffer.truncate(frame.buffer_size());
        (frame.width, frame.height, buffer)
    }

    fn modules_of(text: &str) -> usize {
        QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).unwrap().width()
    }

    #[test]
    fn percent_encode_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(percent_encode("a+b=c,d.e@f_g-h"), "a%2Bb%3Dc%2Cd.e%40f_g-h");
        assert_eq!(percent_encode("ACME Co"), "ACME%20Co");
        assert_eq!(percent_encode(":/?#[]!$&'()*;%"), "%3A%2F%3F%23%5B%5D%21%24%26%27%28%29%2A%3B%25");
        assert_eq!(percent_encode("é"), "%C3%A9");
        assert_eq!(percent_encode(""), "");
    }

    #[test]
    fn otpauth_uri_encodes_tricky_iam_names() {
        assert_eq!(
            otpauth_uri("mfa-operator", "a+b=c,d.e@f_g-h", SEED),
            format!(
                "otpauth://totp/mfa-operator:a%2Bb%3Dc%2Cd.e%40f_g-h?secret={SEED}\
                 &issuer=mfa-operator&algorithm=SHA1&digits=6&period=30"
            )
        );
    }

    #[test]
    fn otpauth_uri_keeps_capitals_and_encodes_spaces_in_the_issuer() {
        assert_eq!(
            otpauth_uri("ACME Co (Prod)", "Alice.Smith@123456789012", SEED),
            format!(
                "otpauth://totp/ACME%20Co%20%28Prod%29:Alice.Smith%40123456789012?secret={SEED}\
                 &issuer=ACME%20Co%20%28Prod%29&algorithm=SHA1&digits=6&period=30"
            )
        );
    }

    #[test]
    fn otpauth_uri_normalises_the_seed() {
        let typed = "jbsw y3dp ehpk 3pxp====";
        assert_eq!(
            otpauth_uri("AWS", "bob", typed),
            "otpauth://totp/AWS:bob?secret=JBSWY3DPEHPK3PXP&issuer=AWS&algorithm=SHA1\
             &digits=6&period=30"
        );
    }

    #[test]
    fn otpauth_uri_without_issuer_has_no_issuer_prefix_or_parameter() {
        assert_eq!(
            otpauth_uri("", "bob@prod", "JBSWY3DPEHPK3PXP"),
            "otpauth://totp/bob%40prod?secret=JBSWY3DPEHPK3PXP&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn otpauth_uri_round_trips_through_percent_decoding() {
        for (issuer, label) in
            [("mfa-operator", "a+b=c,d.e@f_g-h"), ("Example Corp", "CI_Bot-1@111122223333"), ("Zürich & Co", "x=y,z")]
        {
            let uri = otpauth_uri(issuer, label, SEED);
            let rest = uri.strip_prefix("otpauth://totp/").unwrap();
            let (path, query) = rest.split_once('?').unwrap();
            // Neither part contains a character with a meaning in the URI.
            for reserved in ['@', '+', '=', ',', ' ', '&', '?', '/', '#'] {
                assert!(!path.contains(reserved), "{path}");
            }
            let (encoded_issuer, encoded_label) = path.split_once(':').unwrap();
            assert_eq!(percent_decode(encoded_issuer), issuer);
            assert_eq!(percent_decode(encoded_label), label);
            let parameters: Vec<(&str, String)> = query
                .split('&')
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap();
                    (key, percent_decode(value))
                })
                .collect();
            assert_eq!(
                parameters,
                [
                    ("secret", SEED.to_string()),
                    ("issuer", issuer.to_string()),
                    ("algorithm", "SHA1".to_string()),
                    ("digits", "6".to_string()),
                    ("period", "30".to_string()),
                ]
            );
        }
    }

    #[test]
    fn qr_png_starts_with_the_png_signature() {
        let png = qr_png("otpauth://totp/AWS:bob?secret=JBSWY3DPEHPK3PXP").unwrap();
        assert_eq!(png[..8], PNG_SIGNATURE);
    }

    #[test]
    fn qr_png_has_the_expected_dimensions() {
        for text in [
            "x",
            "otpauth://totp/AWS:bob?secret=JBSWY3DPEHPK3PXP",
            &otpauth_uri("mfa-operator", "a+b=c,d.e@f_g-h@123456789012", SEED),
        ] {
            let modules = modules_of(text);
            let (width, height, pixels) = decode_png(&qr_png(text).unwrap());
            let expected = ((modules + 8) * 8) as u32;
            assert_eq!((width, height), (expected, expected), "{text}");
            assert_eq!(pixels.len(), (expected * expected) as usize);
        }
    }

    #[test]
    fn qr_png_pixels_match_the_modules() {
        let text = otpauth_uri("mfa-operator", "alice@123456789012", SEED);
        let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).unwrap();
        let modules = code.width();
        let colors = code.to_colors();
        let (width, _, pixels) = decode_png(&qr_png(&text).unwrap());
        let width = width as usize;
        let side_modules = modules + 8;
        for module_y in 0..side_modules {
            for module_x in 0..side_modules {
                let expected = if (4..4 + modules).contains(&module_x)
                    && (4..4 + modules).contains(&module_y)
                    && colors[(module_y - 4) * modules + (module_x - 4)] == Color::Dark
                {
                    0
                } else {
                    255
                };
                // Every pixel of the 8x8 block has the module's colour.
                for dy in 0..8 {
                    for dx in 0..8 {
                        let (x, y) = (module_x * 8 + dx, module_y * 8 + dy);
                        assert_eq!(pixels[y * width + x], expected, "pixel ({x}, {y})");
                    }
                }
            }
        }
    }

    #[test]
    fn qr_png_finder_patterns_are_black_in_a_white_quiet_zone() {
        let text = otpauth_uri("mfa-operator", "bob@123456789012", SEED);
        let modules = modules_of(&text);
        let (width, _, pixels) = decode_png(&qr_png(&text).unwrap());
        let width = width as usize;
        // The colour at the centre of a module, with module coordinates inside the code.
        let module = |x: usize, y: usize| pixels[((y + 4) * 8 + 4) * width + (x + 4) * 8 + 4];
        let far = modules - 1;
        // The outer corner of each finder pattern is black, its light ring white, its 3x3
        // centre black.
        for (corner_x, corner_y, step_x, step_y) in [(0, 0, 1, 1), (far, 0, -1, 1), (0, far, 1, -1)] {
            let at = |offset: isize| {
                let x = corner_x as isize + step_x * offset;
                let y = corner_y as isize + step_y * offset;
                module(x as usize, y as usize)
            };
            assert_eq!(at(0), 0, "outer corner of finder at ({corner_x}, {corner_y})");
            assert_eq!(at(1), 255, "light ring of finder at ({corner_x}, {corner_y})");
            assert_eq!(at(3), 0, "centre of finder at ({corner_x}, {corner_y})");
        }
        // The quiet zone: the whole first and last 32 pixel rows and columns are white.
        let side = width;
        for i in 0..side {
            for border in 0..32 {
                assert_eq!(pixels[border * side + i], 255);
                assert_eq!(pixels[(side - 1 - border) * side + i], 255);
                assert_eq!(pixels[i * side + border], 255);
                assert_eq!(pixels[i * side + side - 1 - border], 255);
            }
        }
    }

    #[test]
    fn qr_png_is_deterministic() {
        let text = otpauth_uri("mfa-operator", "alice@123456789012", SEED);
        let first = qr_png(&text).unwrap();
        assert_eq!(first, qr_png(&text).unwrap());
        assert_ne!(first, qr_png(&otpauth_uri("mfa-operator", "bob@123456789012", SEED)).unwrap());
    }

    #[test]
    fn qr_png_of_a_seed_uri_is_small() {
        // It lives in a Secret next to the seed and the URI (Secrets are limited to 1 MiB).
        let text =
            otpauth_uri("mfa-operator", "a-very-long.iam_user+name=with,every@allowed-character@123456789012", SEED);
        let png = qr_png(&text).unwrap();
        assert!(png.len() < 16 * 1024, "{} bytes", png.len());
    }

    #[test]
    fn qr_png_refuses_text_too_long_for_a_qr_code() {
        let text = "x".repeat(4000);
        let error = qr_png(&text).unwrap_err();
        assert!(matches!(error, QrError::TooLong { len: 4000 }), "{error:?}");
        assert!(!error.to_string().contains("xxxx"));
    }
}
