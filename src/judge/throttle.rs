//! "At most once per interval", once: the rule behind every repeat the monitor limits
//! (expiry alerts, failure and floor reports, refused notices, the state file's mark,
//! `license.limit_exceeded`), so that none of them can drift from the others.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// Whether `every` has passed since `since` at `now` (monotonic readings). A monotonic
/// clock that went back (a restored checkpoint) makes it due: re-baselined, not stuck.
fn due(since: Option<Duration>, now: Duration, every: Duration) -> bool {
    since.is_none_or(|at| now < at || now >= at.saturating_add(every))
}

/// When something last happened, so that it happens again only once an interval has
/// passed. Never happened: due at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Throttle {
    last: Option<Duration>,
}

impl Throttle {
    /// A throttle that last fired at `at` (a write made at start, say).
    pub(crate) fn since(at: Duration) -> Self {
        Self { last: Some(at) }
    }

    /// Whether `every` has passed since it last fired, at `now` (or the monotonic clock
    /// went back: then it is due, re-baselined rather than stuck).
    pub(crate) fn is_due(&self, now: Duration, every: Duration) -> bool {
        due(self.last, now, every)
    }

    /// Records that it fired at `now`.
    pub(crate) fn mark(&mut self, now: Duration) {
        self.last = Some(now);
    }

    /// Whether it is due at `now`; if so, it fires (is marked) now.
    pub(crate) fn ready(&mut self, now: Duration, every: Duration) -> bool {
        let due = self.is_due(now, every);
        if due {
            self.mark(now);
        }
        due
    }

    /// The monotonic reading at which it is next due: an interval after it last fired,
    /// or, when that is not ahead of `now` (it is due already, or never fired), an
    /// interval from `now`: a wake that retries, never a busy loop.
    pub(crate) fn next_due(&self, now: Duration, every: Duration) -> Duration {
        match self.last.map(|at| at.saturating_add(every)) {
            Some(at) if at > now => at,
            _ => now.saturating_add(every),
        }
    }
    /// Forgets when it last fired: the next one is due at once (news again).
    pub(crate) fn reset(&mut self) {
        self.last = None;
    }
}

/// A [`Throttle`] per key (a notice's fingerprint, a metric's name): each key is limited
/// on its own.
#[derive(Debug, Clone)]
pub(crate) struct Keyed<K> {
    at: HashMap<K, Throttle>,
}

impl<K> Default for Keyed<K> {
    fn default() -> Self {
        Self { at: HashMap::new() }
    }
}

impl<K: Hash + Eq> Keyed<K> {
    /// Whether `key` is due at `now` (a key never seen is); if so, it fires now.
    pub(crate) fn ready(&mut self, key: K, now: Duration, every: Duration) -> bool {
        self.at.entry(key).or_default().ready(now, every)
    }

    /// Forgets the keys `keep` refuses: their next one is news again.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.at.retain(|key, _| keep(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn it_fires_at_once_then_at_most_once_per_interval() {
        let mut t = Throttle::default();
        assert!(t.ready(secs(10), MINUTE));
        assert!(!t.ready(secs(69), MINUTE));
        assert!(t.ready(secs(70), MINUTE));
        assert_eq!(t, Throttle::since(secs(70)));
        assert_eq!(t.next_due(secs(70), MINUTE), secs(130));
        assert_eq!(t.next_due(secs(130), MINUTE), secs(190));
        t.reset();
        assert!(t.ready(secs(71), MINUTE));
    }

    #[test]
    fn a_monotonic_clock_that_went_back_makes_it_due() {
        let t = Throttle::since(secs(100));
        assert!(!t.is_due(secs(100), MINUTE));
        assert!(t.is_due(secs(99), MINUTE));
        // (Checking does not fire it.)
        assert!(t.is_due(secs(99), MINUTE));
    }

    #[test]
    fn each_key_is_limited_on_its_own_and_a_forgotten_key_is_news() {
        let mut k = Keyed::default();
        assert!(k.ready("a", secs(0), MINUTE));
        assert!(k.ready("b", secs(1), MINUTE));
        assert!(!k.ready("a", secs(59), MINUTE));
        k.retain(|key| *key != "a");
        assert!(k.ready("a", secs(59), MINUTE));
        assert!(!k.ready("b", secs(60), MINUTE));
        assert!(k.ready("b", secs(61), MINUTE));
    }
}
