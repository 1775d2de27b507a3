//! The episode without a license, and what grace it has earned or may not exceed.
//!
//! An episode starts when no license at all is seen (missing, refused, or only held for
//! later) and ends when one comes in. Its anchor, the floor an earlier episode earned,
//! the cap a restart or the coverage before it puts on it, and clock manipulation all
//! move only by the rules here, so that no restart, clock set ahead or back, or
//! revocation buys fresh grace.

use crate::state::PersistedState;
use crate::verdict::Evaluation;

/// The grace bookkeeping of the current episode without a license.
#[derive(Debug, Default)]
pub(super) struct Episode {
    /// Since when no license at all has been seen in the current episode.
    pub(super) grace_anchor: Option<i64>,
    /// The grace anchor was set while trusted now rested on an unconfirmed reading.
    anchor_soft: bool,
    /// The latest cut-off an earlier episode without a license earned.
    pub(super) grace_floor: Option<i64>,
    /// Since when the last run was in grace, from the state file: it anchors this run's
    /// grace when the first check finds no license at all or a clock set back, so that
    /// deleting an expired license, or setting the clock back, and restarting buys no
    /// fresh grace. (With a license present, its signed `exp` anchors anew.)
    restored_since: Option<i64>,
    /// Where the last run's grace was to end, from the state file.
    restored_cut: Option<i64>,
    /// The latest the current episode without a license may end (see `grace_cap` in
    /// `verdict::Input`).
    pub(super) grace_cap: Option<i64>,
    /// When clock manipulation was detected, while it has not cleared.
    pub(super) manipulated_at: Option<i64>,
    /// A valid license has been in force since start (fail-closed mode gives no grace
    /// before that).
    pub(super) ever_valid: bool,
}

impl Episode {
    /// Takes the anchors of the state file read before the first check: a stored grace
    /// anchor and floor stand.
    pub(super) fn restore(&mut self, state: &PersistedState) {
        if state.version < 2 {
            // Version 1 kept one anchor, of any kind.
            self.restored_since = state.grace_anchor;
        } else {
            self.grace_anchor = state.grace_anchor;
            // An episode carried over never ends later than the run before would have
            // ended it.
            self.grace_cap = state.grace_anchor.and(state.cut_off);
            self.grace_floor = state.grace_floor;
            self.restored_since = state.not_valid_since;
            self.restored_cut = state.cut_off;
        }
    }

    /// The first check after a restart: no license at all (`no_license`) continues the
    /// grace the last run was in, and never ends later than the last run's cut-off (the
    /// end of its grace, or of the licenses it had: deleting a license and restarting buys
    /// nothing); a clock found set back anchors at the last run's grace too. (Later checks:
    /// nothing is left to apply.)
    pub(super) fn apply_restored(&mut self, no_license: bool, grace: i64) {
        let restored_cut = self.restored_cut.take();
        let restored_since = self.restored_since.take();
        if no_license {
            if let Some(since) = restored_since {
                self.grace_anchor = Some(self.grace_anchor.map_or(since, |a| a.min(since)));
            }
            if let Some(cut) = restored_cut {
                self.cap(cut);
            }
        }
        // A clock found set back never ends later than the last run would have: its
        // grace is anchored so that it ends by the last run's cut-off (or, without one on
        // record, at the last run's grace's start).
        let anchor = match (restored_cut, restored_since) {
            (Some(cut), Some(_)) => Some(cut.saturating_sub(grace)),
            (_, since) => since,
        };
        if let Some(anchor) = anchor {
            self.manipulated_at = self.manipulated_at.map(|m| m.min(anchor));
        }
    }

    /// Anchors never lie ahead of trusted `now`: a reading far ahead (provisional, or set
    /// ahead and corrected) must not leave a grace period that ends later.
    pub(super) fn not_after(&mut self, now: i64, grace: i64) {
        self.grace_anchor = self.grace_anchor.map(|a| a.min(now));
        self.grace_floor = self.grace_floor.map(|f| f.min(now.saturating_add(grace)));
        self.manipulated_at = self.manipulated_at.map(|m| m.min(now));
    }

    /// Whether an episode without a license would start now (none is running). If so, it
    /// never ends later than the coverage before it would have (`last_cut`, the cut-off of
    /// the last evaluation): a renewal revoked before it started, and the license it
    /// replaced gone at its end, buy no fresh grace, as after a restart.
    pub(super) fn fresh(&mut self, last_cut: Option<i64>) -> bool {
        let fresh = self.grace_anchor.is_none();
        if let (true, Some(cut)) = (fresh, last_cut) {
            self.cap(cut);
        }
        fresh
    }

    /// Manipulation-grace clears once the wall clock agrees with trusted time again
    /// (`wall_consistent`) and a valid license is in force (`licensed`).
    pub(super) fn clear_manipulation(
        &mut self,
        wall_consistent: bool,
        licensed: impl FnOnce() -> bool,
    ) {
        if self.manipulated_at.is_some() && wall_consistent && licensed() {
            self.manipulated_at = None;
        }
    }

    /// Takes what the evaluation at `now` decided. `fresh` is [`Episode::fresh`]'s
    /// answer for this check; `unconfirmed`, whether trusted now rests on a reading not
    /// yet confirmed (provisional, or the first after a restart): an anchor taken from it
    /// is marked soft, so that if the reading turns out to be ahead the correction moves
    /// the anchor back with it (see [`Episode::corrected`]), and a clock set ahead cannot
    /// stretch grace. An episode that ends keeps the cut-off it earned as a floor.
    pub(super) fn evaluated(
        &mut self,
        evaluation: &Evaluation,
        fresh: bool,
        unconfirmed: bool,
        now: i64,
        grace: i64,
    ) {
        if fresh && evaluation.grace_anchor.is_some() {
            // (Only an anchor taken from the reading itself.)
            self.anchor_soft = unconfirmed && evaluation.grace_anchor == Some(now);
        } else if !unconfirmed || evaluation.grace_anchor.is_none() {
            self.anchor_soft = false;
        }
        if let (Some(anchor), None) = (self.grace_anchor, evaluation.grace_anchor) {
            // The episode without a license ended (a license came in): the cut-off it had
            // earned stays, so that license can never bring the cut-off earlier.
            let earned = anchor.saturating_add(grace);
            let earned = self.grace_cap.map_or(earned, |cap| earned.min(cap));
            self.grace_floor = Some(self.grace_floor.map_or(earned, |f| f.max(earned)));
        }
        self.grace_anchor = evaluation.grace_anchor;
        if self.grace_anchor.is_none() {
            self.grace_cap = None;
        }
        self.ever_valid |= evaluation.verdict.is_valid();
    }

    /// The wall clock jumped back: manipulation from `at` (an earlier detection stands).
    pub(super) fn manipulated(&mut self, at: i64) {
        self.manipulated_at.get_or_insert(at);
    }

    /// Trusted time was corrected by `seconds`: an anchor taken from the reading just
    /// corrected moves back with it (never forward).
    pub(super) fn corrected(&mut self, seconds: f64) {
        if self.anchor_soft {
            let back = (seconds.min(0.0) as i64).max(i64::MIN / 2);
            self.grace_anchor = self.grace_anchor.map(|a| a.saturating_add(back));
        }
    }

    /// A vendor's attestation moved trusted time by `moved` seconds. Moved back (the mark
    /// was ahead), what was anchored at it (the episode's start, its floor and cap) was
    /// anchored that much too late, and moves back with it. Grace for a clock set back
    /// ends when the wall agrees with the attested time (`wall_consistent`): a wall still
    /// behind it is wrong, and stays reported until it is put right. Returns whether
    /// manipulation cleared.
    pub(super) fn attested(&mut self, moved: i64, wall_consistent: bool) -> bool {
        if moved < 0 {
            for t in [
                &mut self.grace_anchor,
                &mut self.grace_floor,
                &mut self.grace_cap,
            ] {
                *t = t.map(|t| t.saturating_add(moved));
            }
        }
        let cleared = wall_consistent && self.manipulated_at.take().is_some();
        // The episode the wrong mark started ends with it; an earlier run's grace that
        // the mark carried over does too.
        if cleared {
            self.restored_since = None;
        }
        cleared
    }

    /// Lowers the cap of the episode to `cut` (a cap never rises).
    fn cap(&mut self, cut: i64) {
        self.grace_cap = Some(self.grace_cap.map_or(cut, |c| c.min(cut)));
    }
}
