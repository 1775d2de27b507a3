//! The vendor's evidence of time: the build time, and attested times (a notice's
//! `time`), floors under trusted time that our own marks are judged against.

use std::time::SystemTime;

use super::{
    ATTESTATION_TOLERANCE_SECS, NANOS, THRESHOLD_NANOS, TrustedTime, max_opt, round_secs,
    secs_floor, tenths,
};
use crate::clock::unix_nanos;

impl TrustedTime {
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
            // (While this run's mark is still unconfirmed, the attested time less the
            // tolerance stands as hard evidence, as a stored mark does: a wall set back
            // below it meanwhile is behind it.)
            self.stored = self.soft_until.is_some().then_some(floor);
        }
        // (A run still confirming its first reading after boot stays so: the wall it
        // came down to may be corrected yet.)
        self.behind = false;
        // A wall ahead of our evidence keeps counting towards being believed, by its lead
        // over the evidence as it now stands.
        self.ahead_since = match (self.ahead_since, self.mark) {
            (Some((since, _)), Some(mark)) if self.wall - mark > THRESHOLD_NANOS => {
                Some((since, self.wall - mark))
            }
            _ => None,
        };
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
    pub(super) fn attested_floor(&self) -> Option<i128> {
        self.attested
            .map(|(t, at)| t + self.last_mono.saturating_sub(at).as_nanos() as i128)
    }

    /// The vendor's floors under trusted time: the build time and an attested time.
    pub(super) fn floor(&self) -> Option<i128> {
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

    /// Sets the vendor's build time as a floor under trusted time.
    pub(crate) fn set_build_floor(&mut self, built_at: SystemTime) {
        self.build_floor = Some(unix_nanos(built_at));
    }

    /// How far the wall clock is behind the build floor, in seconds, if it is.
    pub(crate) fn behind_build_floor(&self) -> Option<f64> {
        let floor = self.build_floor?;
        (self.wall < floor).then(|| tenths(self.wall - floor))
    }
}
