//! Instance-limit grace: when a replica without an instance slot settles, and where its
//! grace runs from, by the instance-slot task's word (see `crate::instances`).

use std::time::Duration;

/// The instance-slot task's word (see `crate::instances`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SlotWord {
    /// This replica holds no slot while a limit is in force.
    pub(crate) without: bool,
    /// It has held one since it started: losing it starts grace at once, with no
    /// settling (a replica new to the fleet settles first: a rollout's surge pod).
    pub(crate) ever_held: bool,
    /// How long the fleet had run more replicas than slots (some replica has waited
    /// without one ever since), by a live overuse record in the cluster, as of a reading
    /// of the judge's monotonic clock: `(age, at)`. Settling is counted from the fleet's
    /// first waiter, so that restarting or replacing pods buys no time. (An age, not an
    /// instant: the overuse may have begun before this process's clock started.)
    pub(crate) fleet_waited: Option<(Duration, Duration)>,
    /// Waiting replicas have been getting slots (within a lease duration): the fleet is
    /// turning over, as in a rollout, and a replica new to it settles on its own clock.
    pub(crate) fleet_turning_over: bool,
}

impl From<bool> for SlotWord {
    /// The word of a replica that held a slot: `without` it now, or not.
    fn from(without: bool) -> Self {
        SlotWord {
            without,
            ever_held: true,
            fleet_waited: None,
            fleet_turning_over: false,
        }
    }
}

/// This replica's standing without a slot, in trusted seconds.
#[derive(Debug, Default)]
pub(super) struct Instance {
    /// Since when this replica has held no instance slot.
    without_slot_since: Option<i64>,
    /// Until when a replica new to the fleet settles without a slot.
    pub(super) settling_until: Option<i64>,
    /// Where instance-limit grace runs from, once settled.
    pub(super) anchor: Option<i64>,
}

impl Instance {
    /// Takes the slot task's word at trusted `now` (monotonic `mono`; `settling` is the
    /// configured settling time). A replica without a slot that never held one first
    /// settles: admitted, quiet, for `settling` (a rollout's surge pod gets its slot when
    /// an old pod goes); grace then runs from the end of settling. One that lost its slot
    /// starts grace at once. A live record of the fleet's overuse counts settling from
    /// when the fleet's first waiter began (unless waiters have been getting slots, as in
    /// a rollout) and grace from the end of that, so a restarted or replaced pod buys
    /// nothing.
    pub(super) fn judge_slot(
        &mut self,
        slot: SlotWord,
        now: i64,
        mono: Duration,
        settling: Duration,
    ) {
        if !slot.without {
            *self = Self::default();
            return;
        }
        let since = self.without_slot_since.map_or(now, |s| s.min(now));
        self.without_slot_since = Some(since);
        let fleet = slot.fleet_waited.map(|(age, at)| {
            let ago = mono.saturating_sub(at).saturating_add(age).as_secs();
            now.saturating_sub(i64::try_from(ago).unwrap_or(i64::MAX))
        });
        let settle = i64::try_from(settling.as_secs()).unwrap_or(i64::MAX);
        // The fleet gets one settling, counted from its first waiter, unless waiters have
        // been getting slots (a rollout): then each new replica settles on its own.
        let fleet_end = fleet.map(|f| f.saturating_add(settle));
        let own_end = since.saturating_add(settle);
        let window_end = match fleet_end {
            Some(end) if !slot.fleet_turning_over => end.min(own_end),
            _ => own_end,
        };
        // Settling is had once per episode: a settled replica that later sees no record
        // does not settle again.
        if !slot.ever_held && self.anchor.is_none() && now < window_end {
            self.settling_until = Some(window_end);
            return;
        }
        let own = match self.settling_until.take() {
            Some(until) => until.min(now),
            None if slot.ever_held => since,
            None => window_end.min(now),
        };
        let anchor = self.anchor.map_or(own, |a| a.min(own));
        self.anchor = Some(fleet_end.map_or(anchor, |f| f.min(anchor)));
    }

    /// Trusted time moved back `moved` seconds (an attestation found the mark ahead):
    /// what was anchored at it was anchored that much too late, and moves back with it.
    pub(super) fn moved_back(&mut self, moved: i64) {
        if moved < 0 {
            for t in [
                &mut self.without_slot_since,
                &mut self.anchor,
                &mut self.settling_until,
            ] {
                *t = t.map(|t| t.saturating_add(moved));
            }
        }
    }
}
