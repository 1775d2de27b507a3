//! The wake table: each instant the judge wants to be woken at, by name, in the manner of
//! quinn-proto's `TimerTable`; the earliest entry is the timeout.

use std::time::Duration;

/// Why the judge wants to be woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    /// The verdict changes with time alone (an alert band, grace's end, a license's start).
    Change,
    /// The drain after a cut-off ends.
    Drain,
    /// The drain of a feature taken away ends.
    FeatureDrain,
    /// A replica new to the fleet ends settling without an instance slot.
    Settled,
    /// The state file's mark is to be brought up to date.
    Persist,
}

impl Wake {
    /// The wakes at which a decision is due (every one but the state file's).
    pub(super) const DECISIONS: [Wake; 4] =
        [Wake::Change, Wake::Drain, Wake::FeatureDrain, Wake::Settled];
    /// Every wake.
    pub(super) const ALL: [Wake; 5] = [
        Wake::Change,
        Wake::Drain,
        Wake::FeatureDrain,
        Wake::Settled,
        Wake::Persist,
    ];
}

/// The monotonic readings to wake at, one per [`Wake`] (`None`: not wanted).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timers {
    at: [Option<Duration>; 5],
}

impl Timers {
    /// Sets when to wake for `wake`.
    pub(super) fn set(&mut self, wake: Wake, at: Option<Duration>) {
        self.at[wake as usize] = at;
    }

    /// The earliest of the wakes `of` (the timeout, with [`Wake::ALL`]).
    pub(super) fn earliest(&self, of: &[Wake]) -> Option<Duration> {
        of.iter().filter_map(|wake| self.at[*wake as usize]).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_entry_is_the_timeout_and_persist_is_no_decision() {
        let mut t = Timers::default();
        let decision = |t: &Timers| t.earliest(&Wake::DECISIONS);
        assert_eq!((t.earliest(&Wake::ALL), decision(&t)), (None, None));
        t.set(Wake::Persist, Some(Duration::from_secs(5)));
        t.set(Wake::Drain, Some(Duration::from_secs(9)));
        t.set(Wake::Settled, Some(Duration::from_secs(7)));
        assert_eq!(t.earliest(&Wake::ALL), Some(Duration::from_secs(5)));
        assert_eq!(decision(&t), Some(Duration::from_secs(7)));
        t.set(Wake::Settled, None);
        assert_eq!(decision(&t), Some(Duration::from_secs(9)));
    }
}
