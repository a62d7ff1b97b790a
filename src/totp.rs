//! RFC 6238 time-based one-time passwords, exactly as AWS virtual MFA devices and phone
//! authenticator apps compute them: HMAC-SHA-1, 6 digits, 30-second steps counted from the
//! Unix epoch (T0 = 0).
//!
//! The controller calls [`verify_pair`] on the two codes a human submits before it calls
//! `EnableMFADevice`. AWS wants two *consecutive* codes and, when they arrive late, still
//! associates the device but leaves it out of sync; checking locally first turns every
//! common mistake (a typo, the same code twice, codes typed minutes ago, the wrong app entry)
//! into a clear message instead of a broken device.
//!
//! Secrets stay out of sight: no type here stores a code or a seed, and no message or `Debug`
//! output contains one.

use std::fmt;

use data_encoding::{BASE32_NOPAD, DecodeKind};
use hmac::digest::Key;
use hmac::{Hmac, KeyInit, Mac};
use sha1::{Digest, Sha1};
use subtle::{Choice, ConstantTimeEq};

/// Number of digits in a code.
pub const DIGITS: usize = 6;

/// Length of a time step, in seconds.
pub const STEP_SECS: u64 = 30;

/// How far back (in steps of the second code) [`verify_pair`] recognises a pair, to report
/// it as [`CodeRejection::Stale`] rather than as a mismatch: 20 steps, 10 minutes.
pub const MAX_AGE_STEPS: u64 = 20;

/// How far ahead (in steps of the second code) [`verify_pair`] recognises a pair, to report
/// it as [`CodeRejection::ClockAhead`]: 10 steps, 5 minutes.
pub const MAX_AHEAD_STEPS: u64 = 10;

/// `10^DIGITS`: a code is the truncated HMAC modulo this.
const MODULUS: u32 = 1_000_000;

type HmacSha1 = Hmac<Sha1>;

/// Why a base32 seed could not be decoded. The messages never contain the seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    /// Nothing left after removing spaces and padding.
    #[error("the secret key is empty")]
    Empty,
    /// A character outside the base32 alphabet (or one that cannot end a key of this length).
    #[error("the secret key contains a character that is not valid base32 (A-Z and 2-7)")]
    InvalidCharacter,
    /// The number of characters cannot be the base32 form of whole bytes (a truncated copy).
    #[error("the secret key has an impossible length for base32: was it copied completely?")]
    InvalidLength,
}

/// Decodes a base32 seed such as AWS's `Base32StringSeed` (RFC 4648 base32, uppercase, no
/// padding) into the raw HMAC key.
///
/// People type seeds, so lowercase letters, whitespace anywhere and trailing `=` padding are
/// accepted. Non-zero trailing bits in the last character are refused: they cannot come from
/// an encoder, only from a typo.
pub fn decode_seed(base32: &str) -> Result<Vec<u8>, TotpError> {
    let mut normalised: String =
        base32.chars().filter(|c| !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();
    let unpadded_len = normalised.trim_end_matches('=').len();
    normalised.truncate(unpadded_len);
    if normalised.is_empty() {
        return Err(TotpError::Empty);
    }
    // A stray character is the likelier typo to report, whatever the length.
    if !normalised.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)) {
        return Err(TotpError::InvalidCharacter);
    }
    BASE32_NOPAD.decode(normalised.as_bytes()).map_err(|error| match error.kind {
        DecodeKind::Length => TotpError::InvalidLength,
        DecodeKind::Symbol | DecodeKind::Trailing | DecodeKind::Padding => TotpError::InvalidCharacter,
    })
}

/// The time step that contains `unix_secs` (times before the epoch count as step 0).
pub fn step_of(unix_secs: i64) -> u64 {
    u64::try_from(unix_secs).map_or(0, |secs| secs / STEP_SECS)
}

/// The 6-digit code of one step (RFC 4226 HOTP with the step as counter), zero-padded.
pub fn code_at(secret: &[u8], step: u64) -> String {
    format!("{:0width$}", hotp(secret, step), width = DIGITS)
}

/// RFC 4226 section 5.3: HMAC-SHA-1 of the big-endian counter, dynamic truncation, modulo
/// `10^DIGITS`.
fn hotp(secret: &[u8], counter: u64) -> u32 {
    let mut mac = keyed_hmac(secret);
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[digest.len() - 1] & 0x0f);
    let binary =
        u32::from_be_bytes([digest[offset], digest[offset + 1], digest[offset + 2], digest[offset + 3]]) & 0x7fff_ffff;
    binary % MODULUS
}

/// An HMAC-SHA-1 instance keyed with `secret`, of any length.
///
/// RFC 2104 section 2 hashes a key longer than the hash block and zero-pads shorter ones to
/// the block size; doing that here gives the block-sized key the infallible constructor takes
/// (the slice constructor returns a `Result` that HMAC can never fail, which would otherwise
/// need an `expect`).
fn keyed_hmac(secret: &[u8]) -> HmacSha1 {
    let mut key = Key::<HmacSha1>::default();
    if secret.len() > key.len() {
        let hashed = Sha1::digest(secret);
        key[..hashed.len()].copy_from_slice(&hashed);
    } else {
        key[..secret.len()].copy_from_slice(secret);
    }
    <HmacSha1 as KeyInit>::new(&key)
}

/// Which of the two submitted codes a rejection is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WhichCode {
    First,
    Second,
}

impl WhichCode {
    fn as_str(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::Second => "second",
        }
    }
}

impl fmt::Display for WhichCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Two codes that form a fresh consecutive pair: the first code belongs to
/// [`first_step`](Self::first_step), the second to [`second_step`](Self::second_step).
///
/// To refuse a replayed pair, remember the last accepted `second_step` and refuse any pair
/// whose `first_step` is not after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Verified {
    first_step: u64,
}

impl Verified {
    /// The step of the first code.
    pub fn first_step(self) -> u64 {
        self.first_step
    }

    /// The step of the second code (`first_step() + 1`).
    pub fn second_step(self) -> u64 {
        self.first_step + 1
    }
}

/// Why [`verify_pair`] refused two codes. The messages ([`Display`](fmt::Display)) are meant
/// for the human who typed the codes; they never contain the codes or the seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CodeRejection {
    /// Not exactly 6 ASCII digits (after trimming surrounding whitespace).
    Malformed { which: WhichCode },
    /// Both codes are the same (and are not, by a one-in-a-million chance, a real pair).
    SameCodeTwice,
    /// Both codes are valid for this device, but not for two consecutive steps.
    NotConsecutive,
    /// A consecutive pair, but too old: AWS would enable the device out of sync.
    /// `age_secs` is how long ago the second code appeared on the device.
    Stale { age_secs: u64 },
    /// A consecutive pair from the future: the authenticator's clock runs ahead.
    /// `ahead_secs` is how far ahead, at least.
    ClockAhead { ahead_secs: u64 },
    /// Neither code is valid for this device around now: a different authenticator entry,
    /// or codes much older than [`MAX_AGE_STEPS`].
    Mismatch,
}

impl CodeRejection {
    /// A short, stable, CamelCase reason for Event reasons and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "MalformedCode",
            Self::SameCodeTwice => "SameCodeTwice",
            Self::NotConsecutive => "CodesNotConsecutive",
            Self::Stale { .. } => "CodesTooOld",
            Self::ClockAhead { .. } => "AuthenticatorClockAhead",
            Self::Mismatch => "CodesDoNotMatchDevice",
        }
    }
}

impl fmt::Display for CodeRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed { which } => write!(
                f,
                "the {which} code must be exactly {DIGITS} digits (0-9), as the authenticator \
                 app shows it"
            ),
            Self::SameCodeTwice => f.write_str(
                "the two codes are the same: enter the code the authenticator app shows, wait \
                 for the next one to appear (up to 30 seconds), then enter that one",
            ),
            Self::NotConsecutive => f.write_str(
                "the two codes must be consecutive: enter one code, wait for the next one to \
                 appear, enter it",
            ),
            Self::Stale { age_secs } => write!(
                f,
                "the codes are {} old and AWS would enable the device out of sync: enter two \
                 new consecutive codes and submit them right away",
                HumanDuration(*age_secs)
            ),
            Self::ClockAhead { ahead_secs } => write!(
                f,
                "the codes are from {} in the future: the authenticator device's clock is \
                 ahead; set it to automatic time, then enter two new consecutive codes",
                HumanDuration(*ahead_secs)
            ),
            Self::Mismatch => f.write_str(
                "the codes do not match this MFA device: use the authenticator entry created \
                 from this device's QR code or secret key, and enter two current consecutive \
                 codes",
            ),
        }
    }
}

impl std::error::Error for CodeRejection {}

/// Seconds for humans: "45 seconds", "about 3 minutes".
struct HumanDuration(u64);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            1 => f.write_str("1 second"),
            secs @ 0..120 => write!(f, "{secs} seconds"),
            secs => write!(f, "about {} minutes", (secs + 30) / 60),
        }
    }
}

/// Checks two codes the way the controller must before calling `EnableMFADevice`.
///
/// - Each code must be exactly 6 ASCII digits once surrounding whitespace is trimmed.
/// - The codes must belong to consecutive steps `t` and `t + 1`, with `t + 1` within one
///   step of now (`n - 1 ..= n + 1` where `n = step_of(now_unix_secs)`): one step of clock
///   skew either way.
/// - An older pair (up to [`MAX_AGE_STEPS`]) is [`Stale`](CodeRejection::Stale), a pair from
///   up to [`MAX_AHEAD_STEPS`] ahead is [`ClockAhead`](CodeRejection::ClockAhead); anything
///   else is classified so the message can tell the human what went wrong.
///
/// The comparisons run in constant time and every code of the window is compared, and a
/// refusal never says which of the two codes matched: a guesser learns nothing about one
/// code from the answer or its timing.
pub fn verify_pair(secret: &[u8], code1: &str, code2: &str, now_unix_secs: i64) -> Result<Verified, CodeRejection> {
    let first = parse_code(code1).ok_or(CodeRejection::Malformed { which: WhichCode::First })?;
    let second = parse_code(code2).ok_or(CodeRejection::Malformed { which: WhichCode::Second })?;

    let now_step = step_of(now_unix_secs);
    // Steps that may hold the first code: from the step before the oldest second code
    // recognised, to the step before the furthest second code recognised.
    let lowest = now_step.saturating_sub(MAX_AGE_STEPS + 1);
    let highest = now_step.saturating_add(MAX_AHEAD_STEPS);
    let window: Vec<(u64, u32)> = (lowest..=highest).map(|step| (step, hotp(secret, step))).collect();

    // Steps of the second code of every consecutive pair in the window, oldest first.
    let pair_ends: Vec<u64> = window
        .windows(2)
        .filter(|adjacent| bool::from(adjacent[0].1.ct_eq(&first) & adjacent[1].1.ct_eq(&second)))
        .map(|adjacent| adjacent[1].0)
        .collect();

    let fresh = now_step.saturating_sub(1)..=now_step.saturating_add(1);
    if let Some(&end) = pair_ends.iter().find(|end| fresh.contains(end)) {
        return Ok(Verified { first_step: end - 1 });
    }
    // The youngest old pair: the most generous age to report.
    if let Some(&end) = pair_ends.iter().rev().find(|&&end| end < *fresh.start()) {
        let now = u64::try_from(now_unix_secs).unwrap_or(0);
        return Err(CodeRejection::Stale { age_secs: now.saturating_sub(end.saturating_mul(STEP_SECS)) });
    }
    if let Some(&end) = pair_ends.iter().find(|&&end| end > *fresh.end()) {
        // Before the epoch every step is 0, so no pair can be ahead: `now` is not negative.
        let now = u64::try_from(now_unix_secs).unwrap_or(0);
        return Err(CodeRejection::ClockAhead { ahead_secs: end.saturating_mul(STEP_SECS).saturating_sub(now) });
    }

    if first == second {
        return Err(CodeRejection::SameCodeTwice);
    }
    let known = |code: u32| bool::from(window.iter().fold(Choice::from(0), |seen, &(_, c)| seen | c.ct_eq(&code)));
    Err(match (known(first), known(second)) {
        (true, true) => CodeRejection::NotConsecutive,
        // One matching code must not be told apart from none: it would let a guesser
        // find each code on its own.
        _ => CodeRejection::Mismatch,
    })
}

/// The numeric value of a code that is exactly [`DIGITS`] ASCII digits after trimming.
/// A code as the person wrote it, without surrounding whitespace, if it is then exactly
/// six ASCII digits: what is checked, and all that is ever sent to AWS.
pub fn normalize_code(code: &str) -> Option<&str> {
    let code = code.trim();
    (code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

fn parse_code(code: &str) -> Option<u32> {
    normalize_code(code)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 4226 / RFC 6238 (SHA-1) test secret.
    const RFC_SECRET: &[u8] = b"12345678901234567890";
    /// `RFC_SECRET` in base32.
    const RFC_SECRET_BASE32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    /// A fixed "now" in the middle of a step, far from the epoch.
    const NOW: i64 = 1_700_000_025;

    fn n() -> u64 {
        step_of(NOW)
    }

    fn code(step: u64) -> String {
        code_at(RFC_SECRET, step)
    }

    /// A pair whose second code belongs to `second_step`.
    fn pair_ending_at(second_step: u64) -> (String, String) {
        (code(second_step - 1), code(second_step))
    }

    /// Some code that no step in the search window around `NOW` produces.
    fn code_not_in_window() -> String {
        let window: Vec<String> = (n() - MAX_AGE_STEPS - 1..=n() + MAX_AHEAD_STEPS).map(code).collect();
        (0..MODULUS).map(|value| format!("{value:06}")).find(|candidate| !window.contains(candidate)).unwrap()
    }

    #[test]
    fn rfc6238_appendix_b_sha1_vectors() {
        // (time, 8-digit TOTP from the RFC); 6-digit codes are the last 6 digits.
        let vectors: [(i64, &str); 6] = [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        for (time, eight_digits) in vectors {
            assert_eq!(code_at(RFC_SECRET, step_of(time)), eight_digits[2..], "time {time}");
        }
    }

    #[test]
    fn rfc6238_appendix_b_steps() {
        assert_eq!(step_of(59), 1);
        assert_eq!(step_of(1_111_111_109), 0x023523EC);
        assert_eq!(step_of(1_111_111_111), 0x023523ED);
        assert_eq!(step_of(1_234_567_890), 0x0273EF07);
        assert_eq!(step_of(2_000_000_000), 0x03F940AA);
        assert_eq!(step_of(20_000_000_000), 0x27BC86AA);
    }

    #[test]
    fn rfc4226_appendix_d_hotp_values() {
        let expected =
            ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"];
        for (counter, value) in expected.iter().enumerate() {
            assert_eq!(code_at(RFC_SECRET, counter as u64), *value, "counter {counter}");
        }
    }

    #[test]
    fn codes_are_zero_padded_to_six_digits() {
        // RFC 6238 vector for T = 1234567890: 89005924 -> 005924.
        assert_eq!(code_at(RFC_SECRET, step_of(1_234_567_890)), "005924");
        for step in 0..200 {
            let code = code(step);
            assert_eq!(code.len(), 6);
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn step_of_handles_boundaries_and_times_before_the_epoch() {
        assert_eq!(step_of(0), 0);
        assert_eq!(step_of(29), 0);
        assert_eq!(step_of(30), 1);
        assert_eq!(step_of(59), 1);
        assert_eq!(step_of(60), 2);
        assert_eq!(step_of(-1), 0);
        assert_eq!(step_of(i64::MIN), 0);
        assert_eq!(step_of(i64::MAX), i64::MAX as u64 / 30);
    }

    #[test]
    fn keys_longer_than_a_hash_block_are_hashed_first() {
        // RFC 2104: a key longer than 64 bytes is replaced by its SHA-1 digest.
        let long_key: Vec<u8> = (0..100u8).collect();
        let hashed = Sha1::digest(&long_key).to_vec();
        for step in [0, 1, 56_666_667] {
            assert_eq!(code_at(&long_key, step), code_at(&hashed, step));
        }
        // A 64-byte key (exactly one block) is used as is, not hashed.
        let block_key = [7u8; 64];
        assert_ne!(code_at(&block_key, 1), code_at(&Sha1::digest(block_key), 1));
    }

    #[test]
    fn decode_seed_accepts_aws_style_base32() {
        assert_eq!(decode_seed(RFC_SECRET_BASE32).unwrap(), RFC_SECRET);
        // AWS seeds are 64 characters: 40 bytes.
        let aws_like = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
        let decoded = decode_seed(aws_like).unwrap();
        assert_eq!(decoded.len(), 40);
        assert_eq!(&decoded[..10], b"Hello!\xde\xad\xbe\xef");
    }

    #[test]
    fn decode_seed_accepts_what_people_type() {
        let expected = RFC_SECRET.to_vec();
        for typed in [
            "gezdgnbvgy3tqojqgezdgnbvgy3tqojq",
            "GezdGNBVgy3tqojqGEZDGNBVGY3TQOJQ",
            "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ",
            "gezd gnbv gy3t qojq gezd gnbv gy3t qojq",
            "  GEZDGNBVGY3TQOJQ\tGEZDGNBVGY3TQOJQ\n",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ========",
        ] {
            assert_eq!(decode_seed(typed).unwrap(), expected, "{typed:?}");
        }
        // Padding where the length needs it, with or without it.
        assert_eq!(decode_seed("MZXW6===").unwrap(), b"foo");
        assert_eq!(decode_seed("MZXW6").unwrap(), b"foo");
        assert_eq!(decode_seed("mzxw6=").unwrap(), b"foo");
        assert_eq!(decode_seed("MZXW6YQ=").unwrap(), b"foob");
        assert_eq!(decode_seed("MZXW6YTB").unwrap(), b"fooba");
    }

    #[test]
    fn decode_seed_refuses_what_is_not_base32() {
        assert_eq!(decode_seed(""), Err(TotpError::Empty));
        assert_eq!(decode_seed("   \n"), Err(TotpError::Empty));
        assert_eq!(decode_seed("===="), Err(TotpError::Empty));
        // 0, 1, 8 and 9 are not in the base32 alphabet (people confuse O/0, I/1).
        for bad in ["GEZDGNBV0Y3TQOJQ", "GEZDGNBV1Y3TQOJQ", "GEZDGNBV8Y3TQOJQ"] {
            assert_eq!(decode_seed(bad), Err(TotpError::InvalidCharacter), "{bad}");
        }
        assert_eq!(decode_seed("GEZD-GNBV-GY3T-QOJQ"), Err(TotpError::InvalidCharacter));
        assert_eq!(decode_seed("GEZDGNBVÉY3TQOJQ"), Err(TotpError::InvalidCharacter));
        // Padding in the middle.
        assert_eq!(decode_seed("MZ=XW6"), Err(TotpError::InvalidCharacter));
        // Non-zero trailing bits: "MZXW7" cannot come from an encoder.
        assert_eq!(decode_seed("MZXW7"), Err(TotpError::InvalidCharacter));
        // 1, 3 and 6 characters (mod 8) cannot encode whole bytes.
        for bad in ["G", "GEZ", "GEZDGN", "GEZDGNBVG"] {
            assert_eq!(decode_seed(bad), Err(TotpError::InvalidLength), "{bad}");
        }
    }

    #[test]
    fn decode_seed_errors_do_not_echo_the_seed() {
        let seed = "GEZDGNBV0Y3TQOJQ";
        let error = decode_seed(seed).unwrap_err();
        assert!(!error.to_string().contains(seed));
        assert!(!format!("{error:?}").contains(seed));
    }

    #[test]
    fn verify_pair_accepts_a_pair_ending_in_the_previous_step() {
        let (c1, c2) = pair_ending_at(n() - 1);
        let verified = verify_pair(RFC_SECRET, &c1, &c2, NOW).unwrap();
        assert_eq!(verified.first_step(), n() - 2);
        assert_eq!(verified.second_step(), n() - 1);
    }

    #[test]
    fn verify_pair_accepts_a_pair_ending_in_the_current_step() {
        let (c1, c2) = pair_ending_at(n());
        let verified = verify_pair(RFC_SECRET, &c1, &c2, NOW).unwrap();
        assert_eq!(verified.first_step(), n() - 1);
        assert_eq!(verified.second_step(), n());
    }

    #[test]
    fn verify_pair_accepts_a_pair_ending_in_the_next_step() {
        let (c1, c2) = pair_ending_at(n() + 1);
        let verified = verify_pair(RFC_SECRET, &c1, &c2, NOW).unwrap();
        assert_eq!(verified.first_step(), n());
        assert_eq!(verified.second_step(), n() + 1);
    }

    #[test]
    fn verify_pair_window_follows_step_boundaries() {
        let (c1, c2) = pair_ending_at(n());
        let step_start = (n() * STEP_SECS) as i64;
        // Valid from the first second of step n - 1 to the last second of step n + 1.
        for now in [step_start - 30, step_start, step_start + 29, step_start + 59] {
            assert!(verify_pair(RFC_SECRET, &c1, &c2, now).is_ok(), "now {now}");
        }
        assert_eq!(verify_pair(RFC_SECRET, &c1, &c2, step_start + 60), Err(CodeRejection::Stale { age_secs: 60 }));
        assert_eq!(
            verify_pair(RFC_SECRET, &c1, &c2, step_start - 31),
            Err(CodeRejection::ClockAhead { ahead_secs: 31 })
        );
    }

    #[test]
    fn verify_pair_trims_surrounding_whitespace() {
        let (c1, c2) = pair_ending_at(n());
        let verified = verify_pair(RFC_SECRET, &format!(" {c1}\n"), &format!("\t{c2} "), NOW);
        assert_eq!(verified.unwrap().second_step(), n());
    }

    #[test]
    fn verify_pair_reports_a_pair_two_steps_old_as_stale() {
        let (c1, c2) = pair_ending_at(n() - 2);
        // NOW is 15 s into step n: the second code appeared 2 steps + 15 s ago.
        assert_eq!(verify_pair(RFC_SECRET, &c1, &c2, NOW), Err(CodeRejection::Stale { age_secs: 75 }));
    }

    #[test]
    fn verify_pair_reports_stale_pairs_up_to_ten_minutes_old() {
        let (c1, c2) = pair_ending_at(n() - MAX_AGE_STEPS);
        assert_eq!(
            verify_pair(RFC_SECRET, &c1, &c2, NOW),
            Err(CodeRejection::Stale { age_secs: MAX_AGE_STEPS * STEP_SECS + 15 })
        );
        // Older than that, the codes are no longer recognised at all.
        let (c1, c2) = pair_ending_at(n() - MAX_AGE_STEPS - 2);
        assert_eq!(verify_pair(RFC_SECRET, &c1, &c2, NOW), Err(CodeRejection::Mismatch));
    }

    #[test]
    fn verify_pair_reports_a_pair_from_the_future_as_clock_ahead() {
        let (c1, c2) = pair_ending_at(n() + 2);
        // The second code's step starts 2 steps - 15 s after NOW.
        assert_eq!(verify_pair(RFC_SECRET, &c1, &c2, NOW), Err(CodeRejection::ClockAhead { ahead_secs: 45 }));
        let (c1, c2) = pair_ending_at(n() + MAX_AHEAD_STEPS);
        assert_eq!(
            verify_pair(RFC_SECRET, &c1, &c2, NOW),
            Err(CodeRejection::ClockAhead { ahead_secs: MAX_AHEAD_STEPS * STEP_SECS - 15 })
        );
    }

    #[test]
    fn verify_pair_reports_codes_of_another_seed_as_mismatch() {
        let other_seed = b"another seed, another device";
        let c1 = code_at(other_seed, n() - 1);
        let c2 = code_at(other_seed, n());
        assert_eq!(verify_pair(RFC_SECRET, &c1, &c2, NOW), Err(CodeRejection::Mismatch));
    }

    #[test]
    fn verify_pair_never_says_which_code_matched() {
        let wrong = code_not_in_window();
        let (c1, c2) = pair_ending_at(n());
        // One right code answers exactly as none: no oracle for guessing codes one by one.
        assert_eq!(verify_pair(RFC_SECRET, &c1, &wrong, NOW), Err(CodeRejection::Mismatch));
        assert_eq!(verify_pair(RFC_SECRET, &wrong, &c2, NOW), Err(CodeRejection::Mismatch));
        assert_eq!(
            verify_pair(RFC_SECRET, &c1, &wrong, NOW).map_err(|e| e.to_string()),
            verify_pair(RFC_SECRET, &wrong, &c2, NOW).map_err(|e| e.to_string())
        );
    }

    #[test]
    fn normalize_code_keeps_exactly_six_digits() {
        assert_eq!(normalize_code("123456\n"), Some("123456"));
        assert_eq!(normalize_code(" 012345 "), Some("012345"));
        for bad in ["12345", "1234567", "12 456", "abcdef", "１２３４５６", ""] {
            assert_eq!(normalize_code(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn verify_pair_reports_valid_codes_that_are_not_consecutive() {
        // A code, then one from two steps later (the human waited too long between them).
        let gap = verify_pair(RFC_SECRET, &code(n() - 2), &code(n()), NOW);
        assert_eq!(gap, Err(CodeRejection::NotConsecutive));
        // The right codes in the wrong order.
        let swapped = verify_pair(RFC_SECRET, &code(n()), &code(n() - 1), NOW);
        assert_eq!(swapped, Err(CodeRejection::NotConsecutive));
        // An old code and a current one.
        let mixed = verify_pair(RFC_SECRET, &code(n() - 12), &code(n()), NOW);
        assert_eq!(mixed, Err(CodeRejection::NotConsecutive));
    }

    #[test]
    fn verify_pair_reports_the_same_code_twice() {
        let current = code(n());
        assert_eq!(verify_pair(RFC_SECRET, &current, &current, NOW), Err(CodeRejection::SameCodeTwice));
        let unknown = code_not_in_window();
        assert_eq!(verify_pair(RFC_SECRET, &unknown, &unknown, NOW), Err(CodeRejection::SameCodeTwice));
    }

    #[test]
    fn verify_pair_accepts_equal_codes_that_really_are_consecutive() {
        // With the RFC secret, steps 910737 and 910738 both give 911617 (found offline;
        // a one-in-a-million event that must not lock the human out).
        assert_eq!(code(910_737), "911617");
        assert_eq!(code(910_738), "911617");
        let now = (910_738 * STEP_SECS + 10) as i64;
        let verified = verify_pair(RFC_SECRET, "911617", "911617", now).unwrap();
        assert_eq!(verified.second_step(), 910_738);
    }

    #[test]
    fn verify_pair_refuses_malformed_codes() {
        let (c1, c2) = pair_ending_at(n());
        let first = Err(CodeRejection::Malformed { which: WhichCode::First });
        let second = Err(CodeRejection::Malformed { which: WhichCode::Second });
        for bad in [
            "12345",        // 5 digits
            "1234567",      // 7 digits
            "",             // empty
            "      ",       // only whitespace
            "12a456",       // a letter
            "abcdef",       // letters
            "١٢٣٤٥٦",       // Arabic-Indic digits
            "１２３４５６", // full-width digits
            "123 456",      // a space inside
            "+12345",       // a sign
            "-12345",       // a sign
            "12345\u{0}",   // a control character
        ] {
            assert_eq!(verify_pair(RFC_SECRET, bad, &c2, NOW), first, "{bad:?}");
            assert_eq!(verify_pair(RFC_SECRET, &c1, bad, NOW), second, "{bad:?}");
        }
        // The first code is checked first.
        assert_eq!(verify_pair(RFC_SECRET, "1", "2", NOW), first);
    }

    #[test]
    fn verify_pair_near_the_epoch_does_not_underflow() {
        let (c1, c2) = (code(0), code(1));
        assert_eq!(verify_pair(RFC_SECRET, &c1, &c2, 0).unwrap().second_step(), 1);
        assert_eq!(verify_pair(RFC_SECRET, &c1, &c2, -5).unwrap().second_step(), 1);
        assert!(verify_pair(RFC_SECRET, &c1, &c2, 15).is_ok());
        assert_eq!(verify_pair(RFC_SECRET, &c1, &c2, 90), Err(CodeRejection::Stale { age_secs: 60 }));
    }

    #[test]
    fn rejection_messages_never_contain_codes_or_seed() {
        let (c1, c2) = pair_ending_at(n());
        let (old1, old2) = pair_ending_at(n() - 5);
        let (ahead1, ahead2) = pair_ending_at(n() + 5);
        let wrong = code_not_in_window();
        let other1 = code_at(b"other", n() - 1);
        let other2 = code_at(b"other", n());
        let cases: [(&str, &str); 9] = [
            ("12345", &c2),
            (&c1, "abcdef"),
            (&c1, &c1),
            (&code(n() - 3), &c2),
            (&old1, &old2),
            (&ahead1, &ahead2),
            (&c1, &wrong),
            (&wrong, &c2),
            (&other1, &other2),
        ];
        let mut reasons = std::collections::BTreeSet::new();
        for (code1, code2) in cases {
            let rejection = verify_pair(RFC_SECRET, code1, code2, NOW).unwrap_err();
            reasons.insert(rejection.reason());
            for shown in [rejection.to_string(), format!("{rejection:?}")] {
                for secret in [code1, code2, RFC_SECRET_BASE32, "1234567890"] {
                    if !secret.is_empty() {
                        assert!(!shown.contains(secret), "{shown:?} shows a secret");
                    }
                }
            }
        }
        // Every variant was produced, each with its own reason.
        assert_eq!(reasons.len(), 6);
    }

    #[test]
    fn rejection_messages_read_well() {
        assert_eq!(
            CodeRejection::NotConsecutive.to_string(),
            "the two codes must be consecutive: enter one code, wait for the next one to \
             appear, enter it"
        );
        assert!(
            CodeRejection::Malformed { which: WhichCode::Second }
                .to_string()
                .starts_with("the second code must be exactly 6 digits")
        );
        assert!(CodeRejection::Stale { age_secs: 75 }.to_string().starts_with("the codes are 75 seconds old"));
        assert!(CodeRejection::Stale { age_secs: 615 }.to_string().starts_with("the codes are about 10 minutes old"));
        assert!(
            CodeRejection::ClockAhead { ahead_secs: 1 }
                .to_string()
                .starts_with("the codes are from 1 second in the future")
        );
    }

    /// A small deterministic generator for "random-ish" seeds and times.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn totp_rs_for(secret: &[u8]) -> totp_rs::Totp {
        totp_rs::Builder::new().with_secret(secret.to_vec()).build_noncompliant()
    }

    #[test]
    fn codes_agree_with_totp_rs() {
        let mut state = 0x9E37_79B9_7F4A_7C15;
        for seed_len in [10, 16, 20, 32, 40, 64, 65, 100] {
            let secret: Vec<u8> = (0..seed_len).map(|_| xorshift(&mut state) as u8).collect();
            let reference = totp_rs_for(&secret);
            for _ in 0..25 {
                let time = xorshift(&mut state) % 4_000_000_000;
                assert_eq!(
                    code_at(&secret, step_of(time as i64)),
                    reference.generate(time).to_string(),
                    "seed length {seed_len}, time {time}"
                );
            }
        }
    }

    #[test]
    fn decoded_seed_codes_agree_with_totp_rs_base32() {
        let base32 = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
        let ours = decode_seed(&base32.to_lowercase()).unwrap();
        let theirs = totp_rs::Secret::try_from_base32(base32).unwrap();
        let reference = totp_rs::Builder::new().with_secret(theirs).build().unwrap();
        for time in [0u64, 59, 1_111_111_109, 1_700_000_000, 2_000_000_000] {
            assert_eq!(code_at(&ours, step_of(time as i64)), reference.generate(time).to_string());
        }
    }

    #[test]
    fn verify_pair_accepts_codes_from_an_authenticator_app() {
        // totp-rs plays the phone: the human reads a code, waits 30 s, reads the next one,
        // and the controller checks a few seconds later.
        let mut state = 0xD1B5_4A32_D192_ED03;
        for _ in 0..20 {
            let secret: Vec<u8> = (0..40).map(|_| xorshift(&mut state) as u8).collect();
            let phone = totp_rs_for(&secret);
            let read_at = 1_500_000_000 + xorshift(&mut state) % 1_000_000_000;
            let code1 = phone.generate(read_at).to_string();
            let code2 = phone.generate(read_at + STEP_SECS).to_string();
            let checked_at = (read_at + STEP_SECS + xorshift(&mut state) % 20) as i64;
            let verified = verify_pair(&secret, &code1, &code2, checked_at).unwrap();
            assert_eq!(verified.first_step(), read_at / STEP_SECS);
        }
    }
}
