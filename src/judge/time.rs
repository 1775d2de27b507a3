//! Trusted time: the judge's clock evidence. Pure: fed readings, never reads a clock.
//!
//! See [`crate::clock`] for the rules in prose, and "Honest drift budget" in the README.

use std::time::{Duration, SystemTime};

use crate::clock::{BOOT_WINDOW, JUMP_THRESHOLD, Reading, unix_nanos};

/// What one sample of the clocks found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ClockAnomaly {
    /// The wall clock is more than the threshold behind our own evidence: it was set back
    /// (in one step, or creeping back in small ones).
    BackwardJump {
        /// How far the wall clock is behind trusted time, in seconds (negative).
        seconds: i64,
    },
    /// The wall clock ran ahead of monotonic time by more than the threshold.
    ForwardDrift {
        /// By how much, in seconds.
        seconds: f64,
    },
    /// A backward step corrected a provisional reading: the mark was re-based.
    Corrected {
        /// How far the mark moved back, in seconds (negative).
        seconds: f64,
    },
}

/// Trusted time. Pure: fed readings, never reads a clock itself.
///
/// Evidence comes in three strengths. The *stored* mark (an earlier run's, projected by
/// monotonic time since) is hard. This run's *mark* (readings that were not provisional,
/// advanced by monotonic time, absorbing small forward drift) is hard too, except for a
/// while after its first reading when a stored mark exists or the run began in a boot
/// window: that first reading may be a clock still wrong after boot, or real time gone
/// by while the service was down, and nothing offline tells the two apart, so until it
/// is confirmed a step back that lands at or above the stored mark is a correction.
/// Provisional readings are no evidence.
/// Manipulation is the wall more than the threshold behind hard evidence.
#[derive(Debug, Clone)]
pub(crate) struct TrustedTime {
    last_wall: i128,
    last_mono: Duration,
    wall: i128,
    provisional: bool,
    /// This run's high-water mark, from readings that were not provisional.
    mark: Option<i128>,
    /// The stored mark, projected by monotonic time since it was restored.
    stored: Option<i128>,
    /// `mark` is not confirmed (see above) until a firm reading at or after this monotonic
    /// reading agrees with it: confirmation needs a reading, not only time, so a
    /// correction seen late (the checker slept, the machine was suspended) still counts.
    soft_until: Option<Duration>,
    /// The wall clock is behind hard evidence: a manipulation already reported.
    behind: bool,
    /// The vendor's build time.
    build_floor: Option<i128>,
    /// The honest drift budget's age where the clock cannot tell the host's boot age: the
    /// monotonic reading this run started at, and the age an earlier run on the same
    /// boot had reached (restored from the state file).
    budget_since: Duration,
    budget_carried: Duration,
    /// The host's boot age at the last reading, where the clock tells it.
    boot_age: Option<Duration>,
    /// What this boot's corrections spent of the budget so far (nanoseconds): one budget
    /// per host boot, spent cumulatively, so that creeping the clock back a little at a
    /// time cannot earn a fresh allowance with each step.
    spent: i128,
    /// The wall ran more than the threshold ahead of our own evidence from this monotonic
    /// reading on: unconfirmed until it has held for [`CONFIRM_FORWARD`], and meanwhile
    /// no evidence (licenses are judged at the mark, `nbf`s too).
    ahead_since: Option<Duration>,
    /// The latest real time a vendor attested (a notice's `time`), with the monotonic
    /// reading it was first seen at: real time is at least that much later now.
    attested: Option<(i128, Duration)>,
}

/// How far a vendor's clock may be ahead when it attests the time: an hour. A support
/// engineer's laptop may be minutes fast, and a customer may install the notice late:
/// a right wall within this below the attested time is taken as right.
pub(crate) const ATTESTATION_TOLERANCE_SECS: i64 = 3_600;

/// The budget's age counts at most this much: 5 s + 500 ppm of 30 days = 1,301 s.
const MAX_BUDGET_AGE: Duration = Duration::from_secs(30 * 86_400);

/// How long a wall clock that jumped ahead of our evidence must hold there before it is
/// believed (as readings in a boot window are not before it closes).
pub(crate) const CONFIRM_FORWARD: Duration = BOOT_WINDOW;

/// How fast an unsynchronized clock may drift, as the kernel's own error bound grows:
/// 500 ppm, one nanosecond in 2,000.
const DRIFT_DIVISOR: i128 = 2_000;

const THRESHOLD_NANOS: i128 = JUMP_THRESHOLD.as_nanos() as i128;
const NANOS: i128 = 1_000_000_000;
/// How long the first reading of a run stays unconfirmed when a stored mark exists.
const CONFIRM_AFTER: Duration = BOOT_WINDOW;

fn max_opt(a: Option<i128>, b: Option<i128>) -> Option<i128> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl TrustedTime {
    /// Starts tracking at the first reading.
    pub(crate) fn new(reading: Reading) -> Self {
        let wall = unix_nanos(reading.wall);
        Self {
            last_wall: wall,
            last_mono: reading.mono,
            wall,
            provisional: reading.provisional,
            mark: (!reading.provisional).then_some(wall),
            stored: None,
            soft_until: None,
            behind: false,
            build_floor: None,
            budget_since: reading.mono,
            budget_carried: Duration::ZERO,
            boot_age: reading.boot_age,
            spent: 0,
            ahead_since: None,
            attested: None,
        }
    }

    /// A vendor's attestation of real time (a notice's `time`, never accepted twice): the
    /// remedy for a mark that is wrong (a clock once set far ahead, then corrected, left
    /// it in the future, and the wall reads as set back). Our own evidence, this run's and
    /// the stored one, comes down to the wall where the wall is not behind the attested
    /// time (less five minutes), else to that time, and the drift budget starts again. A
    /// wall behind that is then behind our evidence, as after any step back. Returns how
    /// far trusted now moved, in seconds.
    pub(crate) fn attest(&mut self, time_secs: i64) -> i64 {
        let before = self.now_nanos();
        // The attested time counts less the vendor's tolerance: its clock may be minutes
        // fast, as for `iat`, and a customer's right clock must not read as set back.
        // Our evidence comes down to the wall where the wall agrees with the attested time
        // (less the tolerance), never below that time, and never up: a wall ahead by a
        // fault, not yet corrected, must not become evidence (and a customer installing
        // the notice days after it was signed keeps the evidence it has).
        let floor = time_secs.saturating_sub(ATTESTATION_TOLERANCE_SECS) as i128 * NANOS;
        let at = if self.provisional {
            floor
        } else {
            self.wall.max(floor)
        };
        // (While readings are provisional, the attested time less the tolerance is our
        // hard evidence, as a stored mark is: a wall below it later is behind it, and the
        // first firm reading starts a new mark of this run, unconfirmed as after a boot.)
        if self.provisional {
            self.mark = None;
            self.stored = Some(self.evidence().map_or(at, |e| e.min(at)));
        } else {
            self.mark = Some(self.evidence().map_or(at, |e| e.min(at)));
            self.stored = None;
        }
        self.soft_until = None;
        self.behind = false;
        self.ahead_since = None;
        // (What corrections spent stays spent: an attestation gives no budget back.)
        // (An earlier attestation's floor, carried on by monotonic time, stays if it is
        // later: it is real time too.)
        self.attest_floor(time_secs);
        round_secs(self.now_nanos() - before)
    }

    /// Real time is at least `time_secs` (a vendor attested it; less five minutes, for
    /// the vendor's clock): a floor, like the build time, that moves on with monotonic
    /// time from when it was first seen.
    pub(crate) fn attest_floor(&mut self, time_secs: i64) {
        let t = time_secs.saturating_sub(ATTESTATION_TOLERANCE_SECS) as i128 * NANOS;
        if self.attested_floor().is_none_or(|floor| floor < t) {
            self.attested = Some((t, self.last_mono));
        }
    }

    /// The attested floor now.
    fn attested_floor(&self) -> Option<i128> {
        self.attested
            .map(|(t, at)| t + self.last_mono.saturating_sub(at).as_nanos() as i128)
    }

    /// The vendor's floors under trusted time: the build time and an attested time.
    fn floor(&self) -> Option<i128> {
        max_opt(self.build_floor, self.attested_floor())
    }

    /// The vendor's floors now (build time, attested time), in whole seconds.
    pub(crate) fn vendor_floor_secs(&self) -> Option<i64> {
        self.floor().map(secs_floor)
    }

    /// How far the wall clock is behind an attested time, in seconds, if it is by more
    /// than the threshold.
    pub(crate) fn behind_attested_floor(&self) -> Option<f64> {
        let floor = self.attested_floor()?;
        (self.wall < floor - THRESHOLD_NANOS).then(|| tenths(self.wall - floor))
    }

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
    fn budget_nanos(&self) -> i128 {
        THRESHOLD_NANOS + self.budget_age().min(MAX_BUDGET_AGE).as_nanos() as i128 / DRIFT_DIVISOR
    }

    /// What is left of this boot's budget.
    fn budget_left(&self) -> i128 {
        self.budget_nanos() - self.spent
    }

    /// A wall behind `evidence` by no more than what is left of the honest drift budget
    /// is a correction: our evidence re-bases at the wall, and the step is spent.
    fn correct_within_budget(&mut self, evidence: i128) -> Option<ClockAnomaly> {
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
    fn rebase(&mut self, wall: i128) {
        self.mark = self.mark.map(|m| m.min(wall));
        self.stored = self.stored.map(|s| s.min(wall));
        self.behind = false;
        self.ahead_since = None;
    }

    /// Sets the vendor's build time as a floor under trusted time.
    pub(crate) fn set_build_floor(&mut self, built_at: SystemTime) {
        self.build_floor = Some(unix_nanos(built_at));
    }

    /// Hard evidence: the stored mark, and this run's mark once confirmed.
    fn hard(&self) -> Option<i128> {
        let confirmed = match self.soft_until {
            Some(_) => None,
            None => self.mark,
        };
        max_opt(self.stored, confirmed)
    }

    /// All of our own evidence.
    fn evidence(&self) -> Option<i128> {
        max_opt(self.mark, self.stored)
    }

    /// Takes a sample of both clocks and reports what it found, if anything.
    pub(crate) fn sample(&mut self, reading: Reading) -> Option<ClockAnomaly> {
        let wall = unix_nanos(reading.wall);
        let was_provisional = self.provisional;
        self.provisional = reading.provisional;
        self.boot_age = reading.boot_age;
        // A monotonic clock that went backwards (a restored checkpoint, C6) gives no
        // information: re-baseline without judging.
        let Some(elapsed) = reading.mono.checked_sub(self.last_mono) else {
            self.budget_carried = self.budget_age();
            self.budget_since = reading.mono;
            self.last_wall = wall;
            self.last_mono = reading.mono;
            self.wall = wall;
            self.soft_until = None;
            self.ahead_since = None;
            // (Real time went on while the checkpoint was shelved: a wall ahead of our
            // mark is believed, which only brings licenses' ends closer.)
            self.mark = self.mark.map(|m| m.max(wall));
            return None;
        };
        let elapsed = elapsed.as_nanos() as i128;
        let skew = (wall - self.last_wall) - elapsed;
        self.last_wall = wall;
        self.last_mono = reading.mono;
        self.wall = wall;
        for evidence in [&mut self.mark, &mut self.stored].into_iter().flatten() {
            *evidence += elapsed;
        }
        let hard_behind = self.hard().is_some_and(|h| wall < h - THRESHOLD_NANOS);
        let corrected = || ClockAnomaly::Corrected {
            seconds: tenths(skew),
        };
        if reading.provisional {
            // No evidence either way: judged against hard evidence once readings are
            // firm. A step back meanwhile is NTP correcting a clock that booted wrong.
            return (!hard_behind && skew < -THRESHOLD_NANOS).then(corrected);
        }
        let Some(mark) = self.mark else {
            // The first firm reading of this run, after provisional ones: the clock may
            // still be wrong after boot, so it is confirmed only later.
            self.mark = Some(wall);
            self.soft_until = Some(reading.mono.saturating_add(CONFIRM_AFTER));
            return self
                .judge_behind(hard_behind, skew)
                .or_else(|| (was_provisional && skew < -THRESHOLD_NANOS).then(corrected));
        };
        if wall >= mark - THRESHOLD_NANOS {
            // Small forward differences (NTP slew, timer jitter) are absorbed so the mark
            // stays close to real time; large ones are not, so a clock set far ahead and
            // then corrected does not leave trusted time in the future. A wall far ahead
            // is believed once it has held there for `CONFIRM_FORWARD`: until then it is
            // no evidence, so a clock set ahead to reach a held license's `nbf` buys
            // nothing, and an honest wall a year ahead for a minute refuses nobody.
            if wall > mark && wall - mark <= THRESHOLD_NANOS {
                self.mark = Some(wall);
                self.ahead_since = None;
            } else if wall > mark {
                let since = *self.ahead_since.get_or_insert(reading.mono);
                if reading.mono.saturating_sub(since) >= CONFIRM_FORWARD {
                    self.mark = Some(wall);
                    self.ahead_since = None;
                }
            } else {
                self.ahead_since = None;
            }
            if self.soft_until.is_some_and(|until| reading.mono >= until) {
                self.soft_until = None;
            }
            if !hard_behind {
                self.behind = false;
            }
            // (A forward step that lands back on trusted time is a correction, not drift.)
            if skew > THRESHOLD_NANOS && wall > mark + THRESHOLD_NANOS {
                return Some(ClockAnomaly::ForwardDrift {
                    seconds: tenths(skew),
                });
            }
            return self.judge_behind(hard_behind, skew);
        }
        self.ahead_since = None;
        if !hard_behind {
            // Only unconfirmed evidence said time was further on: this step corrects it.
            let rebased = self.hard().map_or(wall, |h| h.max(wall));
            self.mark = Some(rebased);
            self.behind = false;
            return Some(ClockAnomaly::Corrected {
                seconds: tenths(rebased - mark),
            });
        }
        self.judge_behind(true, skew)
    }

    /// Reports the wall behind hard evidence: once when it first falls behind (in one
    /// step, or the last of many small ones), and again for each further step back.
    ///
    /// A first step behind that is no larger than the honest drift budget is NTP
    /// correcting a clock that ran fast: the mark (and the stored one) re-base at the
    /// corrected wall, and it is a correction, not manipulation. The mark ran as fast as
    /// the wall (one oscillator drives both), so only such a step shows the drift.
    fn judge_behind(&mut self, hard_behind: bool, skew: i128) -> Option<ClockAnomaly> {
        if !hard_behind {
            self.behind = false;
            return None;
        }
        let first = !self.behind;
        if first
            && let Some(corrected) = self.correct_within_budget(self.hard().unwrap_or(self.wall))
        {
            return Some(corrected);
        }
        self.behind = true;
        (first || skew < -THRESHOLD_NANOS).then(|| ClockAnomaly::BackwardJump {
            seconds: round_secs(self.wall - self.now_nanos()),
        })
    }

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
    pub(crate) fn restore_mark(
        &mut self,
        stored_secs: i64,
        budget_age: Duration,
        spent: Duration,
    ) -> Option<ClockAnomaly> {
        self.budget_carried = self.budget_carried.max(budget_age);
        self.spent = self.spent.max(spent.as_nanos() as i128);
        let stored = stored_secs as i128 * NANOS;
        self.stored = Some(self.stored.map_or(stored, |s| s.max(stored)));
        if self.mark.is_some() {
            self.soft_until = Some(self.last_mono.saturating_add(CONFIRM_AFTER));
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

    /// Whether trusted now may rest on a reading not yet confirmed (provisional, or a
    /// run's first firm reading within its confirmation period).
    pub(crate) fn unconfirmed(&self) -> bool {
        self.provisional || self.soft_until.is_some()
    }

    /// Whether the last reading was provisional.
    pub(crate) fn provisional(&self) -> bool {
        self.provisional
    }

    /// The monotonic reading of the last sample.
    pub(crate) fn last_mono(&self) -> Duration {
        self.last_mono
    }

    /// The wall clock of the last sample, in whole seconds.
    pub(crate) fn wall_secs(&self) -> i64 {
        secs_floor(self.wall)
    }

    /// Trusted now, in nanoseconds since the epoch: max(wall, our evidence, build floor),
    /// leaving out a wall that jumped ahead and is not yet confirmed.
    fn now_nanos(&self) -> i128 {
        let wall = match (self.ahead_since, self.evidence()) {
            (Some(_), Some(evidence)) => evidence,
            _ => self.wall,
        };
        let now = max_opt(Some(wall), self.evidence()).unwrap_or(wall);
        self.floor().map_or(now, |floor| now.max(floor))
    }

    /// Trusted now, in whole seconds since the epoch (floored).
    pub(crate) fn now_secs(&self) -> i64 {
        secs_floor(self.now_nanos())
    }

    /// Trusted now from evidence that is not provisional (our marks and the build floor),
    /// if there is any.
    pub(crate) fn firm_now_secs(&self) -> Option<i64> {
        max_opt(self.evidence(), self.floor()).map(secs_floor)
    }

    /// Trusted now from hard evidence alone (the stored mark, this run's mark once
    /// confirmed, the build floor), if there is any.
    pub(crate) fn hard_now_secs(&self) -> Option<i64> {
        max_opt(self.hard(), self.floor()).map(secs_floor)
    }

    /// How far the wall clock is behind the build floor, in seconds, if it is.
    pub(crate) fn behind_build_floor(&self) -> Option<f64> {
        let floor = self.build_floor?;
        (self.wall < floor).then(|| tenths(self.wall - floor))
    }

    /// Whether the wall clock agrees with our own evidence and with an attested time
    /// (within the threshold).
    pub(crate) fn wall_is_consistent(&self) -> bool {
        max_opt(self.evidence(), self.attested_floor())
            .is_none_or(|e| self.wall >= e - THRESHOLD_NANOS)
    }

    /// How long until trusted time reaches `secs`.
    pub(crate) fn until(&self, secs: i64) -> Duration {
        let delta = secs as i128 * NANOS - self.now_nanos();
        if delta <= 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(u64::try_from(delta).unwrap_or(u64::MAX))
        }
    }
}

fn secs_floor(nanos: i128) -> i64 {
    let secs = nanos.div_euclid(NANOS);
    i64::try_from(secs).unwrap_or(if secs < 0 { i64::MIN } else { i64::MAX })
}

fn round_secs(nanos: i128) -> i64 {
    let rounded = (nanos + nanos.signum() * NANOS / 2) / NANOS;
    i64::try_from(rounded).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX })
}

/// Seconds, rounded to a tenth.
fn tenths(nanos: i128) -> f64 {
    (nanos as f64 / NANOS as f64 * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_unix_seconds;
    use std::time::UNIX_EPOCH;

    fn at(secs: i64) -> SystemTime {
        from_unix_seconds(secs)
    }
    fn read(wall: i64, mono: u64) -> Reading {
        Reading {
            wall: at(wall),
            mono: Duration::from_secs(mono),
            provisional: false,
            boot_age: None,
        }
    }
    fn early(wall: i64, mono: u64) -> Reading {
        Reading {
            provisional: true,
            ..read(wall, mono)
        }
    }

    #[test]
    fn steady_clocks_report_nothing() {
        let mut t = TrustedTime::new(read(1000, 0));
        assert_eq!(t.sample(read(1100, 100)), None);
        assert_eq!(t.now_secs(), 1100);
        // Small NTP corrections either way are tolerated (catalog C1).
        assert_eq!(t.sample(read(1198, 200)), None);
        assert_eq!(t.now_secs(), 1200);
        assert_eq!(t.sample(read(1304, 300)), None);
        assert_eq!(t.now_secs(), 1304);
    }

    #[test]
    fn backward_jump_is_detected_and_does_not_move_trusted_time() {
        let mut t = TrustedTime::new(read(10_000, 0));
        let anomaly = t.sample(read(10_060 - 7200, 60));
        assert_eq!(anomaly, Some(ClockAnomaly::BackwardJump { seconds: -7200 }));
        assert_eq!(t.now_secs(), 10_060);
        assert!(!t.wall_is_consistent());
        // Later samples: trusted time keeps advancing with the monotonic clock, and the
        // same manipulation is not reported again.
        assert_eq!(t.sample(read(10_120 - 7200, 120)), None);
        assert_eq!(t.now_secs(), 10_120);
        // A further step back is.
        assert_eq!(
            t.sample(read(10_180 - 9000, 180)),
            Some(ClockAnomaly::BackwardJump { seconds: -9000 })
        );
        // The clock is corrected: a step back to the truth is neither drift nor a jump.
        assert_eq!(t.sample(read(10_240, 240)), None);
        assert!(t.wall_is_consistent());
        assert_eq!(t.now_secs(), 10_240);
    }

    #[test]
    fn a_creeping_rollback_is_reported_once_it_passes_the_threshold() {
        // Finding 5: 4 s back every 2 s never makes one step larger than 5 s.
        let mut t = TrustedTime::new(read(10_000, 0));
        let mut found = Vec::new();
        for i in 1..=1000u64 {
            let wall = 10_000 + 2 * i as i64 - 4 * i as i64;
            if let Some(a) = t.sample(read(wall, 2 * i)) {
                found.push((i, a));
            }
        }
        assert_eq!(
            found,
            vec![(2, ClockAnomaly::BackwardJump { seconds: -8 })],
            "reported once, when 8 s behind"
        );
        assert_eq!(t.now_secs(), 12_000, "trusted time never went back");
    }

    #[test]
    fn forward_jump_is_drift_and_recovers_after_correction() {
        let mut t = TrustedTime::new(read(10_000, 0));
        let year = 365 * 86_400;
        let anomaly = t.sample(read(10_010 + year, 10));
        assert_eq!(
            anomaly,
            Some(ClockAnomaly::ForwardDrift {
                seconds: year as f64
            })
        );
        // Unconfirmed: judged at the mark, not at the wall a year ahead.
        assert_eq!(t.now_secs(), 10_010);
        // Corrected back to the truth: not manipulation (catalog C4), and trusted time is
        // real time.
        assert_eq!(t.sample(read(10_020, 20)), None);
        assert_eq!(t.now_secs(), 10_020);
        assert_eq!(t.persistable_mark(), Some(10_020));
    }

    #[test]
    fn drift_of_ten_seconds_is_reported_with_its_size() {
        let mut t = TrustedTime::new(read(0, 0));
        assert_eq!(
            t.sample(read(70, 60)),
            Some(ClockAnomaly::ForwardDrift { seconds: 10.0 })
        );
    }

    #[test]
    fn monotonic_going_backwards_rebaselines() {
        let mut t = TrustedTime::new(read(1000, 500));
        assert_eq!(t.sample(read(1010, 3)), None);
        assert_eq!(t.sample(read(1020, 13)), None);
        assert_eq!(t.now_secs(), 1020);
    }

    #[test]
    fn suspend_moves_both_clocks_and_is_nothing() {
        // Catalog C5: BOOTTIME counts through the suspend, so wall and mono agree.
        let mut t = TrustedTime::new(read(1000, 0));
        assert_eq!(t.sample(read(1000 + 8 * 3600, 8 * 3600)), None);
        assert_eq!(t.now_secs(), 1000 + 8 * 3600);
    }

    #[test]
    fn a_clock_ahead_at_boot_corrected_by_ntp_is_a_correction() {
        // Finding 3: started a year ahead while provisional, then corrected.
        let year = 365 * 86_400;
        let mut t = TrustedTime::new(early(10_000 + year, 30));
        assert_eq!(
            t.persistable_mark(),
            None,
            "provisional marks are not persisted"
        );
        assert_eq!(t.sample(early(10_060 + year, 90)), None);
        assert_eq!(
            t.sample(early(10_120, 150)),
            Some(ClockAnomaly::Corrected {
                seconds: -(year as f64)
            })
        );
        assert_eq!(t.now_secs(), 10_120);
        assert!(t.wall_is_consistent());
        // The window closes: the first firm reading is confirmed by one 15 min later.
        assert_eq!(t.sample(read(11_000, 1030)), None);
        assert_eq!(t.persistable_mark(), None);
        assert_eq!(t.sample(read(12_000, 2030)), None);
        assert_eq!(t.persistable_mark(), Some(12_000));
        // An RTC kept in local time (5 h 30 min ahead), corrected once not provisional:
        // still a correction, as no firm reading ever saw the wrong time.
        let mut t = TrustedTime::new(early(10_000 + 19_800, 10));
        assert!(matches!(
            t.sample(read(10_100, 110)),
            Some(ClockAnomaly::Corrected { .. })
        ));
        assert_eq!(t.sample(read(11_100, 1110)), None);
        assert_eq!(t.persistable_mark(), Some(11_100));
    }

    #[test]
    fn a_provisional_step_back_below_firm_evidence_is_held_then_judged() {
        let mut t = TrustedTime::new(early(10_000, 10));
        assert_eq!(t.restore_mark(10_000, Duration::ZERO, Duration::ZERO), None);
        // Set back 30 days in the boot window: trusted time holds the stored mark.
        assert_eq!(t.sample(early(10_060 - 30 * 86_400, 70)), None);
        assert_eq!(t.now_secs(), 10_060);
        // The window closes with the wall still behind: manipulation.
        assert_eq!(
            t.sample(read(11_000 - 30 * 86_400, 1010)),
            Some(ClockAnomaly::BackwardJump {
                seconds: -30 * 86_400
            })
        );
        assert_eq!(t.now_secs(), 11_000);
    }

    #[test]
    fn a_first_reading_still_ahead_is_unconfirmed_for_a_while() {
        // The boot window closes with the clock still 10 s ahead; NTP fixes it minutes
        // later. With a stored mark, that first firm reading is not yet hard evidence.
        let mut t = TrustedTime::new(early(10_000, 10));
        assert_eq!(t.restore_mark(10_000, Duration::ZERO, Duration::ZERO), None);
        assert_eq!(t.sample(read(10_910, 900)), None);
        assert_eq!(
            t.persistable_mark(),
            Some(10_890),
            "the stored mark, not the wall"
        );
        assert_eq!(
            t.sample(read(11_000, 1000)),
            Some(ClockAnomaly::Corrected { seconds: -10.0 })
        );
        assert!(t.wall_is_consistent());
        // Confirmed after 15 minutes: from then on, a step back is manipulation.
        assert_eq!(t.sample(read(12_000, 2000)), None);
        assert_eq!(t.persistable_mark(), Some(12_000));
        assert_eq!(
            t.sample(read(12_050, 2060)),
            Some(ClockAnomaly::BackwardJump { seconds: -10 })
        );
        // But never below the stored mark, confirmed or not.
        let mut t = TrustedTime::new(read(9_000, 0));
        assert!(
            t.restore_mark(10_000, Duration::ZERO, Duration::ZERO)
                .is_some()
        );
        assert_eq!(t.now_secs(), 10_000);
    }

    #[test]
    fn a_stored_mark_ahead_of_the_wall_at_start_is_manipulation() {
        let mut t = TrustedTime::new(read(5_000, 0));
        assert_eq!(
            t.restore_mark(9_000, Duration::ZERO, Duration::ZERO),
            Some(ClockAnomaly::BackwardJump { seconds: -4000 })
        );
        assert_eq!(t.now_secs(), 9_000);
        let mut ok = TrustedTime::new(read(9_003, 0));
        assert_eq!(ok.restore_mark(9_000, Duration::ZERO, Duration::ZERO), None);
    }

    #[test]
    fn the_build_floor_is_trusted_now_but_never_the_mark() {
        let mut t = TrustedTime::new(read(1_000, 0));
        t.set_build_floor(at(5_000));
        assert_eq!(t.now_secs(), 5_000);
        assert_eq!(t.behind_build_floor(), Some(-4000.0));
        assert_eq!(t.persistable_mark(), Some(1_000));
        assert_eq!(t.sample(read(1_060, 60)), None, "not manipulation");
        assert!(t.wall_is_consistent());
        assert_eq!(t.firm_now_secs(), Some(5_000));
    }

    #[test]
    fn pre_epoch_clock_does_not_panic() {
        let mut t = TrustedTime::new(Reading {
            wall: UNIX_EPOCH - Duration::from_secs(86_400),
            mono: Duration::ZERO,
            provisional: false,
            boot_age: None,
        });
        assert!(t.now_secs() < 0);
        t.sample(read(-86_000, 400));
        assert_eq!(t.until(10), Duration::from_secs(86_010));
        // A stored mark at the limit of i64 is no reason to panic either.
        let _ = t.restore_mark(i64::MAX, Duration::MAX, Duration::MAX);
        let _ = t.restore_mark(i64::MIN, Duration::ZERO, Duration::ZERO);
        let _ = t.until(i64::MIN);
        let _ = t.until(i64::MAX);
    }
}
