//! The drain: how long responses admitted before a cut-off, or before a feature was taken
//! away, may still run (monotonic readings, so that no wall clock can stretch it).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::verdict::{LicenseState, Verdict};

/// The drain periods running, of the whole service and of single features.
#[derive(Debug, Default)]
pub(super) struct Drain {
    /// While cut off: when the drain period ends.
    ends: Option<Duration>,
    /// Whether it has ended.
    drained: bool,
    /// Features that a renewal (or the end of the license that granted them) took away
    /// while the service stayed licensed: when the drain period of their routes' open
    /// responses ends.
    features: BTreeMap<String, Duration>,
}

impl Drain {
    /// Whether the drain period after a cut-off is over.
    pub(super) fn drained(&self) -> bool {
        self.drained
    }

    /// Whether the open responses of `feature`'s routes must end at `mono`: a drain period
    /// has passed since the feature was taken away (or since the cut-off).
    pub(super) fn feature_drained(&self, feature: &str, mono: Duration) -> bool {
        self.drained || self.features.get(feature).is_some_and(|ends| mono >= *ends)
    }

    /// Takes the verdict published at `mono` (`before`, the one published last).
    /// Responses admitted before a cut-off get the drain period (`period`), counted from
    /// the check that published the cut-off (at the end of grace's exact second, or when
    /// an expired license was loaded), then end; a valid license or grace again stops it.
    /// A feature that goes while the service stays licensed gets the drain period for the
    /// responses its routes admitted; a feature that comes back stops it. (After the
    /// cut-off, the cut-off's drain covers every route.)
    pub(super) fn track(
        &mut self,
        verdict: &Verdict,
        before: Option<&Verdict>,
        mono: Duration,
        period: Duration,
    ) {
        self.ends = match (verdict.state, self.ends) {
            // (Never further off than a full period: a monotonic clock that went back
            // must not postpone it.)
            (LicenseState::GraceExpired, Some(ends)) => Some(ends.min(mono.saturating_add(period))),
            (LicenseState::GraceExpired, None) => Some(mono.saturating_add(period)),
            _ => None,
        };
        self.drained = self.ends.is_some_and(|ends| mono >= ends);
        if !verdict.admits() {
            return;
        }
        let now = verdict.features();
        self.features
            .retain(|feature, _| !now.contains(&feature.as_str()));
        if let Some(before) = before.map(Verdict::features) {
            let ends = mono.saturating_add(period);
            for gone in before.into_iter().filter(|f| !now.contains(f)) {
                self.features.entry(gone.to_owned()).or_insert(ends);
            }
        }
    }

    /// When the cut-off's drain ends, while it has not.
    pub(super) fn wake(&self) -> Option<Duration> {
        self.ends.filter(|_| !self.drained)
    }

    /// When the next feature's drain ends, after `mono`.
    pub(super) fn feature_wake(&self, mono: Duration) -> Option<Duration> {
        self.features
            .values()
            .copied()
            .filter(|ends| *ends > mono)
            .min()
    }
}
