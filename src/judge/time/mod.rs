//! Trusted time: the judge's clock evidence. Pure: fed readings, never reads a clock.
//!
//! See [`crate::clock`] for the rules in prose, and "Honest drift budget" in `docs/trusted-time.md` (`crate::guide::trusted_time`).

use std::time::Duration;

use crate::clock::{BOOT_WINDOW, JUMP_THRESHOLD, Reading, unix_nanos};

mod budget;
mod restore;
mod vendor;

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
    /// reading on, by at least this much (nanoseconds) at every sample since: unconfirmed
    /// until it has held for [`CONFIRM_FORWARD`], and meanwhile no evidence (licenses are
    /// judged at the mark, `nbf`s too). What held is what is believed: a wall that went
    /// further ahead meanwhile starts a period of its own for the rest.
    ahead_since: Option<(Duration, i128)>,
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
        // A run that starts within the boot window and the 15 minutes after it (by the
        // host's boot age) takes its first firm reading as unconfirmed, as a run that
        // began inside the window does: NTP may still step a clock that booted wrong.
        let settling = BOOT_WINDOW.saturating_add(CONFIRM_AFTER);
        let soft_until = reading
            .boot_age
            .filter(|age| !reading.provisional && *age < settling)
            .map(|age| reading.mono.saturating_add(settling - age));
        Self {
            last_wall: wall,
            last_mono: reading.mono,
            wall,
            provisional: reading.provisional,
            mark: (!reading.provisional).then_some(wall),
            stored: None,
            soft_until,
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

    /// Makes this run's mark unconfirmed until `until` at least (a soft period begins, or
    /// goes on).
    fn soften(&mut self, until: Duration) {
        self.soft_until = Some(self.soft_until.map_or(until, |s| s.max(until)));
    }

    /// Hard evidence: the stored mark, and this run's mark once confirmed.
    pub(super) fn hard(&self) -> Option<i128> {
        let confirmed = match self.soft_until {
            Some(_) => None,
            None => self.mark,
        };
        max_opt(self.stored, confirmed)
    }

    /// All of our own evidence.
    pub(super) fn evidence(&self) -> Option<i128> {
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
            // Real time went on while the checkpoint was shelved, by anything from nothing
            // to the wall's lead: a wall a little ahead of our mark is taken at once, one
            // further ahead is a forward jump, believed once it has held for
            // `CONFIRM_FORWARD` (taken at once, it would bring a held license's `nbf`
            // into force by a wall set ahead).
            self.ahead_since = None;
            if let Some(mark) = self.mark {
                if wall > mark + THRESHOLD_NANOS {
                    self.ahead_since = Some((reading.mono, wall - mark));
                } else if wall > mark {
                    self.mark = Some(wall);
                }
            }
            // A wall reported behind that is no longer behind our evidence clears (the
            // judge ends manipulation grace once the wall agrees): the next step behind
            // is then a first one again, judged against what is left of the budget.
            // Left set, a wall creeping back from here would never be reported again.
            if self.hard().is_none_or(|h| wall >= h - THRESHOLD_NANOS) {
                self.behind = false;
            }
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
            self.soften(reading.mono.saturating_add(CONFIRM_AFTER));
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
                let (since, least) = self.ahead_since.get_or_insert((reading.mono, wall - mark));
                *least = (*least).min(wall - mark);
                if reading.mono.saturating_sub(*since) >= CONFIRM_FORWARD {
                    let believed = mark + *least;
                    self.mark = Some(believed);
                    self.ahead_since = (wall - believed > THRESHOLD_NANOS)
                        .then_some((reading.mono, wall - believed));
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

    /// Whether trusted now may rest on a reading not yet confirmed (provisional, or a
    /// run's first firm reading within its confirmation period).
    pub(crate) fn unconfirmed(&self) -> bool {
        self.provisional || self.soft_until.is_some()
    }

    /// The host's boot age at the last reading, where the clock tells it.
    pub(crate) fn boot_age(&self) -> Option<Duration> {
        self.boot_age
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
    pub(super) fn now_nanos(&self) -> i128 {
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
mod tests;
