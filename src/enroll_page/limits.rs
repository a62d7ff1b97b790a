//! Rate limits: small token buckets in memory, one per key (a link id, a client
//! address), with a bounded number of buckets so a flood of distinct keys cannot grow
//! memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};

use jiff::Timestamp;

/// How many requests a key may make: `burst` at once, then `per_minute`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub per_minute: u32,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Timestamp,
}

impl Bucket {
    /// The bucket refilled up to `now`.
    fn refilled(self, rate: Rate, now: Timestamp) -> Self {
        let elapsed = now.duration_since(self.at).as_secs_f64().max(0.0);
        let tokens = (self.tokens + elapsed * f64::from(rate.per_minute) / 60.0).min(f64::from(rate.burst));
        Self { tokens, at: now.max(self.at) }
    }
}

/// Token buckets for keys of type `K`, at most `capacity` of them.
#[derive(Debug)]
pub struct Limiter<K> {
    rate: Rate,
    capacity: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(rate: Rate, capacity: usize) -> Self {
        Self { rate, capacity: capacity.max(1), buckets: Mutex::default() }
    }

    /// Takes a token for one request by `key` at `now`; when none is left, the seconds
    /// until the next one.
    pub fn take(&self, key: &K, now: Timestamp) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let full = Bucket { tokens: f64::from(self.rate.burst), at: now };
        let bucket = match buckets.get(key) {
            Some(bucket) => bucket.refilled(self.rate, now),
            None => {
                if buckets.len() >= self.capacity {
                    self.make_room(&mut buckets, now);
                }
                full
            }
        };
        let (bucket, answer) = if bucket.tokens >= 1.0 {
            (Bucket { tokens: bucket.tokens - 1.0, ..bucket }, Ok(()))
        } else if self.rate.per_minute == 0 {
            (bucket, Err(u64::MAX))
        } else {
            let wait = (1.0 - bucket.tokens) * 60.0 / f64::from(self.rate.per_minute);
            (bucket, Err(wait.ceil().max(1.0) as u64))
        };
        buckets.insert(key.clone(), bucket);
        answer
    }

    /// Drops every bucket that has refilled (its key is idle); if none has, the one
    /// touched longest ago.
    fn make_room(&self, buckets: &mut HashMap<K, Bucket>, now: Timestamp) {
        let burst = f64::from(self.rate.burst);
        buckets.retain(|_, bucket| bucket.refilled(self.rate, now).tokens < burst);
        if buckets.len() >= self.capacity
            && let Some(oldest) = buckets.iter().min_by_key(|(_, bucket)| bucket.at).map(|(key, _)| key.clone())
        {
            buckets.remove(&oldest);
        }
    }

    /// Buckets held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;

    const T0: Timestamp = Timestamp::constant(1_750_000_000, 0);

    #[test]
    fn a_key_gets_its_burst_then_waits_for_the_refill() {
        let limiter = Limiter::new(Rate { burst: 3, per_minute: 6 }, 10);
        for _ in 0..3 {
            assert_eq!(limiter.take(&"a", T0), Ok(()));
        }
        assert_eq!(limiter.take(&"a", T0), Err(10), "one token every 10 seconds");
        assert_eq!(limiter.take(&"b", T0), Ok(()), "keys are independent");
        assert_eq!(limiter.take(&"a", T0 + SignedDuration::from_secs(9)), Err(1));
        assert_eq!(limiter.take(&"a", T0 + SignedDuration::from_secs(10)), Ok(()));
        assert!(limiter.take(&"a", T0 + SignedDuration::from_secs(10)).is_err());
        // A long pause refills to the burst, not beyond.
        let later = T0 + SignedDuration::from_hours(1);
        for _ in 0..3 {
            assert_eq!(limiter.take(&"a", later), Ok(()));
        }
        assert!(limiter.take(&"a", later).is_err());
    }

    #[test]
    fn memory_is_bounded_and_busy_keys_stay_limited() {
        let limiter = Limiter::new(Rate { burst: 2, per_minute: 1 }, 100);
        assert_eq!(limiter.take(&u32::MAX, T0), Ok(()));
        assert_eq!(limiter.take(&u32::MAX, T0), Ok(()));
        // A flood of other keys, each using one token: the map never grows past its bound.
        for key in 0..10_000 {
            assert_eq!(limiter.take(&key, T0 + SignedDuration::from_millis(i64::from(key))), Ok(()));
            assert!(limiter.len() <= 100);
        }
        // Idle keys are dropped first: a key that drained its bucket and kept quiet
        // refills before anyone forgets it.
        let limiter = Limiter::new(Rate { burst: 2, per_minute: 6 }, 2);
        limiter.take(&"idle", T0).expect("idle once");
        let later = T0 + SignedDuration::from_secs(20);
        limiter.take(&"busy", later).expect("first");
        limiter.take(&"busy", later).expect("second");
        limiter.take(&"new", later).expect("room made");
        assert_eq!(limiter.len(), 2);
        assert_eq!(limiter.take(&"busy", later), Err(10), "the drained bucket was kept, the idle one dropped");
    }
}
