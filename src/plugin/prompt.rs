//! The two code prompts of `kubectl mfa enroll`: how many seconds are left in the current
//! 30-second TOTP window (from the local clock, so people know whether to type now or wait
//! for the next code), and the one check made locally before the operator sees the codes:
//! six digits. Everything else (consecutive, fresh, matching the seed) is the operator's.
//! Pure: the clock is a parameter.

use crate::totp::{CodeRejection, DIGITS, STEP_SECS, WhichCode};

/// Seconds until the authenticator shows the next code, 1 to 30.
pub fn seconds_left(unix_secs: u64) -> u64 {
    STEP_SECS - unix_secs % STEP_SECS
}

/// The prompt for the first code.
pub fn first_prompt(unix_secs: u64) -> String {
    format!("Code 1 ({} s left in this window): ", seconds_left(unix_secs))
}

/// The prompt for the second code.
pub fn second_prompt(unix_secs: u64) -> String {
    format!("Code 2 ({} s left): ", seconds_left(unix_secs))
}

/// A code as typed, trimmed, if it is exactly six ASCII digits; otherwise the operator's
/// own wording for a malformed code.
pub fn check_code(typed: &str, which: WhichCode) -> Result<String, CodeRejection> {
    let code = typed.trim();
    if code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(code.to_owned())
    } else {
        Err(CodeRejection::Malformed { which })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_left_count_down_within_each_window() {
        assert_eq!(seconds_left(0), 30);
        assert_eq!(seconds_left(1), 29);
        assert_eq!(seconds_left(29), 1);
        assert_eq!(seconds_left(30), 30);
        assert_eq!(seconds_left(1_699_999_997), 13);
    }

    #[test]
    fn prompts_show_the_countdown() {
        assert_eq!(first_prompt(1_699_999_997), "Code 1 (13 s left in this window): ");
        assert_eq!(second_prompt(1_699_999_990), "Code 2 (20 s left): ");
    }

    #[test]
    fn six_digits_pass_trimmed_anything_else_is_refused_in_the_operators_words() {
        assert_eq!(check_code(" 012345\n", WhichCode::First), Ok("012345".to_owned()));
        for bad in ["", "12345", "1234567", "12a456", "12 456", "１２３４５６"] {
            let refused = check_code(bad, WhichCode::Second).expect_err(bad);
            assert_eq!(refused, CodeRejection::Malformed { which: WhichCode::Second });
        }
        let message = check_code("abc", WhichCode::First).expect_err("letters").to_string();
        assert_eq!(message, "the first code must be exactly 6 digits (0-9), as the authenticator app shows it");
    }
}
