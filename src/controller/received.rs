//! When the operator first saw each version of a seed Secret (from its watch), so a
//! refusal of codes that were fresh on arrival and went stale while the operator was busy
//! is told, and counted, as the operator's delay rather than the person's.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::Timestamp;

/// Entries kept before old ones are dropped (a version older than the oldest age a
/// refusal reports is of no use).
const PRUNE_ABOVE: usize = 4096;
const KEEP_FOR: jiff::SignedDuration = jiff::SignedDuration::from_mins(15);

/// (namespace, name) -> (resourceVersion, first seen).
#[derive(Default)]
pub struct Received(Mutex<HashMap<(String, String), (String, Timestamp)>>);

impl Received {
    /// Notes a version of a Secret as seen at `now` (an already noted version keeps its
    /// first time).
    pub fn note(&self, namespace: &str, name: &str, version: &str, now: Timestamp) {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > PRUNE_ABOVE {
            seen.retain(|_, (_, at)| now.duration_since(*at) < KEEP_FOR);
        }
        let entry = seen.entry((namespace.to_owned(), name.to_owned())).or_insert_with(|| (version.to_owned(), now));
        if entry.0 != version {
            *entry = (version.to_owned(), now);
        }
    }

    /// When `version` of the Secret was first seen, if it was.
    pub fn at(&self, namespace: &str, name: &str, version: &str) -> Option<Timestamp> {
        let seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&(namespace.to_owned(), name.to_owned())).filter(|(v, _)| v == version).map(|(_, at)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_sighting_of_a_version_counts() {
        let received = Received::default();
        let t = |s| Timestamp::from_second(s).expect("time");
        received.note("ns", "s", "1", t(10));
        received.note("ns", "s", "1", t(20));
        assert_eq!(received.at("ns", "s", "1"), Some(t(10)));
        received.note("ns", "s", "2", t(30));
        assert_eq!(received.at("ns", "s", "1"), None, "another version");
        assert_eq!(received.at("ns", "s", "2"), Some(t(30)));
        assert_eq!(received.at("other", "s", "2"), None);
    }
}
