//! The state file's mark: what an earlier run leaves for the next, and how the next takes
//! it up.

use std::time::Duration;

use super::{
    CONFIRM_AFTER, ClockAnomaly, NANOS, THRESHOLD_NANOS, TrustedTime, round_secs, secs_floor,
    tenths,
};

impl TrustedTime {
    /// Applies the mark stored by an earlier run. Reports a manipulation when the wall
    /// clock is more than the threshold behind it (a clock set back while the service was
    /// down), unless the reading is provisional.
    ///
    /// `budget_age` and `spent` are the drift budget's age and what corrections spent of
    /// it in earlier runs on this host boot (the shell passes zero for an earlier boot): a
    /// wall behind the stored mark by no more than what is left is a correction (the
    /// stored mark re-bases), as a clock that ran fast before the restart and was
    /// corrected since looks exactly so. Downtime earns nothing where the clock cannot
    /// tell the boot's age: nobody saw the clock meanwhile.
    ///
    /// `since_write`: how long ago the state was written, where the host's boot age tells
    /// it (the same boot, and the clock knows its boot age). The stored mark is then
    /// carried on exactly, so the first reading needs no confirmation: a wall ahead of it
    /// is a forward jump (unconfirmed for 15 minutes, as while running), not downtime, and
    /// a wall set back by the downtime is behind it.
    pub(crate) fn restore_mark(
        &mut self,
        stored_secs: i64,
        budget_age: Duration,
        spent: Duration,
        since_write: Option<Duration>,
    ) -> Option<ClockAnomaly> {
        self.budget_carried = self.budget_carried.max(budget_age);
        self.spent = self.spent.max(spent.as_nanos() as i128);
        let elapsed = since_write.map_or(0, |d| d.as_nanos() as i128);
        let stored = stored_secs as i128 * NANOS + elapsed;
        self.stored = Some(self.stored.map_or(stored, |s| s.max(stored)));
        if since_write.is_some() {
            if !self.provisional && self.wall > stored + THRESHOLD_NANOS {
                self.mark = Some(stored);
                self.ahead_since = Some((self.last_mono, self.wall - stored));
                return Some(ClockAnomaly::ForwardDrift {
                    seconds: tenths(self.wall - stored),
                });
            }
        } else if self.mark.is_some() {
            self.soften(self.last_mono.saturating_add(CONFIRM_AFTER));
        }
        if self.provisional || self.wall >= stored - THRESHOLD_NANOS {
            return None;
        }
        if let Some(corrected) = self.correct_within_budget(stored) {
            return Some(corrected);
        }
        self.behind = true;
        Some(ClockAnomaly::BackwardJump {
            seconds: round_secs(self.wall - stored),
        })
    }

    /// The mark to persist, in whole seconds (floored): hard evidence only, never a
    /// provisional or unconfirmed reading. `None` while there is none.
    pub(crate) fn persistable_mark(&self) -> Option<i64> {
        self.hard().map(secs_floor)
    }
}
