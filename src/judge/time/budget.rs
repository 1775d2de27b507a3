//! The honest drift budget: one per host boot, 5 s + 500 ppm of the boot's age (at most
//! 30 days of it), spent by every correction it allows.

use std::time::Duration;

use super::{ClockAnomaly, DRIFT_DIVISOR, MAX_BUDGET_AGE, THRESHOLD_NANOS, TrustedTime, tenths};

impl TrustedTime {
    /// How long the drift budget has been accruing: the host's boot age where the clock
    /// tells it, else the monotonic time of this run plus what an earlier run on the same
    /// boot had reached.
    pub(crate) fn budget_age(&self) -> Duration {
        self.boot_age.unwrap_or_else(|| {
            self.budget_carried
                .saturating_add(self.last_mono.saturating_sub(self.budget_since))
        })
    }

    /// What corrections have spent of this boot's budget so far.
    pub(crate) fn budget_spent(&self) -> Duration {
        Duration::from_nanos(u64::try_from(self.spent.max(0)).unwrap_or(u64::MAX))
    }

    /// The whole budget of this boot: the threshold, granted once, plus 500 ppm of the
    /// boot's age (at most 30 days of it).
    pub(super) fn budget_nanos(&self) -> i128 {
        THRESHOLD_NANOS + self.budget_age().min(MAX_BUDGET_AGE).as_nanos() as i128 / DRIFT_DIVISOR
    }

    /// What is left of this boot's budget.
    pub(super) fn budget_left(&self) -> i128 {
        self.budget_nanos() - self.spent
    }

    /// A wall behind `evidence` by no more than what is left of the honest drift budget
    /// is a correction: our evidence re-bases at the wall, and the step is spent.
    pub(super) fn correct_within_budget(&mut self, evidence: i128) -> Option<ClockAnomaly> {
        let wall = self.wall;
        let step = evidence - wall;
        if step > self.budget_left() {
            return None;
        }
        self.spent += step.max(0);
        self.rebase(wall);
        Some(ClockAnomaly::Corrected {
            seconds: tenths(-step),
        })
    }

    /// Re-bases all of our own evidence at `wall` after a correction within the budget.
    /// (The budget is not restarted: re-basing never gives budget back.)
    pub(super) fn rebase(&mut self, wall: i128) {
        self.mark = self.mark.map(|m| m.min(wall));
        self.stored = self.stored.map(|s| s.min(wall));
        self.behind = false;
        self.ahead_since = None;
    }
}
