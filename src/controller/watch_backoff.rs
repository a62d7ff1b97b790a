//! How soon the controller re-opens its watches after they fail (apiserver restart or
//! outage). kube-runtime's default doubles from 0.8 s up to 30 s, so an operator that saw
//! a 10 s apiserver restart came back 16-19 s after the apiserver did; code submissions
//! waited that long. kube-runtime applies this one backoff to the merged stream of both
//! watches (MfaEnrollments, seed Secrets) and polls neither while it sleeps, so in an
//! outage each watch retries about every two delays: a 1.5 s cap brings both back within
//! about 3 s. That costs one LIST+WATCH attempt per watch every few seconds during a long
//! outage, which an apiserver does not notice. No jitter: one leader per installation
//! watches, there is no herd to spread.

use std::time::Duration;

use kube::runtime::utils::{Backoff, ResetTimerBackoff};

/// First delay after a failure.
const FIRST: Duration = Duration::from_millis(250);
/// Longest delay between two attempts.
const CAP: Duration = Duration::from_millis(1500);
/// After this long without a failure the next one starts again from `FIRST`.
const RESET_AFTER: Duration = Duration::from_secs(60);

/// Delays of 0.25 s doubling to 1.5 s, started afresh after a minute without failures.
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
    fn doubles_from_a_quarter_second_to_a_cap_and_never_gives_up() {
        let mut backoff = Capped::default();
        let first: Vec<u64> = backoff.by_ref().take(5).map(|d| d.as_millis() as u64).collect();
        assert_eq!(first, [250, 500, 1000, 1500, 1500]);
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
    fn both_watches_retry_within_three_seconds_of_an_outage_ending() {
        // Both watches fail on every attempt, one after the other, through the one
        // backoff; each watch's first attempt after the apiserver is back (at 10 s) comes
        // at most two delays later.
        let back = Duration::from_secs(10);
        let attempts: Vec<Duration> = Capped::default()
            .scan(Duration::ZERO, |at, delay| {
                *at += delay;
                Some(*at)
            })
            .take(100)
            .collect();
        for watch in 0..2 {
            let first_after = attempts.iter().skip(watch).step_by(2).find(|at| **at >= back).expect("endless");
            assert!(*first_after - back <= Duration::from_secs(3), "watch {watch} retried at {first_after:?}");
        }
    }
}
