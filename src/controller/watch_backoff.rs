//! How soon the controller re-opens its watches after they fail (apiserver restart or
//! outage). kube-runtime's default doubles from 0.8 s up to 30 s, so an operator that saw
//! a 10 s apiserver restart came back 16-19 s after the apiserver did; code submissions
//! waited that long. Capping the delay at a few seconds costs one LIST+WATCH attempt per
//! watch every few seconds during a long outage, which an apiserver does not notice.

use std::time::Duration;

use kube::runtime::utils::{Backoff, ResetTimerBackoff};

/// First delay after a failure.
const FIRST: Duration = Duration::from_millis(250);
/// Longest delay between two attempts.
const CAP: Duration = Duration::from_secs(3);
/// After this long without a failure the next one starts again from `FIRST`.
const RESET_AFTER: Duration = Duration::from_secs(60);

/// Delays of 0.25 s doubling to 3 s, started afresh after a minute without failures.
pub fn watch_backoff() -> impl Backoff + 'static {
    ResetTimerBackoff::new(Capped::default(), RESET_AFTER)
}

/// Doubling delays from `FIRST`, capped at `CAP`, never ending.
#[derive(Debug, Default)]
struct Capped {
    failures: u32,
}

impl Iterator for Capped {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = FIRST.saturating_mul(1 << self.failures.min(16)).min(CAP);
        self.failures = self.failures.saturating_add(1);
        Some(delay)
    }
}

impl Backoff for Capped {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_a_quarter_second_to_a_three_second_cap_and_never_gives_up() {
        let mut backoff = Capped::default();
        let first: Vec<u64> = backoff.by_ref().take(6).map(|d| d.as_millis() as u64).collect();
        assert_eq!(first, [250, 500, 1000, 2000, 3000, 3000]);
        assert_eq!(backoff.nth(10_000), Some(CAP), "no overflow, no end after many failures");
    }

    #[test]
    fn reset_starts_again_from_the_first_delay() {
        let mut backoff = Capped::default();
        backoff.by_ref().take(5).for_each(drop);
        backoff.reset();
        assert_eq!(backoff.next(), Some(FIRST));
    }

    #[test]
    fn an_outage_of_ten_seconds_is_noticed_within_the_cap() {
        // Attempts at the cumulative delays: the first one after the apiserver is back
        // (at 10 s) comes at most CAP later.
        let mut at = Duration::ZERO;
        let mut backoff = Capped::default();
        while at < Duration::from_secs(10) {
            at += backoff.next().expect("endless");
        }
        assert!(at - Duration::from_secs(10) <= CAP, "first attempt after recovery at {at:?}");
    }
}
