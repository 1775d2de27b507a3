//! Alerts and transition events: what the change from one verdict to the next tells an
//! operator (grace entered and left, the cut-off, entitlements, expiry bands), and a wall
//! clock behind a vendor floor. Repeats are limited by [`Throttle`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::throttle::Throttle;
use super::time::TrustedTime;
use super::{Events, JudgeConfig};
use crate::event::{DriftKind, LicenseEvent};
use crate::token::IAT_TOLERANCE_SECS;
use crate::verdict::{LicenseState, Verdict};

/// When alerts were last repeated.
#[derive(Debug, Default)]
pub(super) struct Alerts {
    /// The expiry alert: repeated at most once per check interval.
    alerted_at: Throttle,
    /// A wall clock behind a vendor floor: reported at most once per check interval.
    floor_reported_at: Throttle,
    /// Further steps back of a wall already reported as set back: at most once per check
    /// interval (a clock crept back every few seconds is one story, not thousands).
    pub(super) stepped_back: Throttle,
}

impl Alerts {
    /// The events for the change from the last evaluation to `new`.
    /// The events for the change from `previous` (the verdict published last) to
    /// `verdict`, published at `mono` by a check that was `full` (a full check repeats a
    /// due alert).
    pub(super) fn transition_events(
        &mut self,
        previous: Option<&Verdict>,
        verdict: &Verdict,
        full: bool,
        mono: Duration,
        config: &JudgeConfig,
        events: &mut Events,
    ) {
        let was = previous.map(|v| v.state);
        if let Some(previous) = previous {
            if let Some(changed) = entitlements_changed(previous, verdict) {
                events.push_back(changed);
            }
            // A new end of coverage (a renewal, a license dropped) starts its own alert
            // schedule.
            if previous.expires_at != verdict.expires_at {
                self.alerted_at.reset();
            }
        }
        match (was, verdict.state) {
            (Some(LicenseState::Grace | LicenseState::GraceExpired), LicenseState::Valid) => {
                if let (Some(claims), Some(expires_at)) = (&verdict.claims, verdict.expires_at) {
                    events.push_back(LicenseEvent::GraceModeExited {
                        customer: claims.customer.clone(),
                        expires_at,
                    });
                }
            }
            (
                None | Some(LicenseState::Valid),
                LicenseState::Grace | LicenseState::GraceExpired,
            ) => {
                events.push_back(grace_entered(verdict, config.grace_period));
                if verdict.state == LicenseState::GraceExpired {
                    events.push_back(grace_expired(verdict));
                }
            }
            (Some(LicenseState::Grace), LicenseState::GraceExpired) => {
                events.push_back(grace_expired(verdict));
            }
            _ => {}
        }
        // An alert band fires when entered (only the innermost one when several are
        // crossed at once), and repeats at a full check while in it, but at most once per
        // check interval whatever woke the checker: a SIGHUP storm is not an alert storm.
        if let (Some(band), Some(claims), Some(expires_at)) =
            (verdict.band, &verdict.claims, verdict.expires_at)
        {
            let entered = previous.is_none_or(|p| p.band != Some(band) || !p.is_valid());
            if entered || (full && self.alerted_at.is_due(mono, config.check_interval)) {
                self.alerted_at.mark(mono);
                events.push_back(LicenseEvent::Expiring {
                    band,
                    days_remaining: verdict.days_remaining().unwrap_or(0),
                    expires_at,
                    customer: claims.customer.clone(),
                });
            }
        }
    }

    /// Reports a wall clock behind a vendor floor (the build time, the license's `iat`),
    /// at most once per check interval: drift, never manipulation, as the vendor's clock
    /// may be the wrong one, and judging at the floor already takes away any gain.
    /// (`issue_floor`: the set's; `every`: the check interval.)
    pub(super) fn report_floors(
        &mut self,
        time: &TrustedTime,
        issue_floor: Option<i64>,
        mono: Duration,
        every: Duration,
        events: &mut Events,
    ) {
        let wall = time.wall_secs();
        let finding = match (time.behind_build_floor(), time.behind_attested_floor()) {
            (Some(seconds), _) => Some((DriftKind::BehindBuildTime, seconds)),
            (None, Some(seconds)) => Some((DriftKind::BehindAttestedTime, seconds)),
            (None, None) => issue_floor.filter(|&floor| wall < floor).map(|floor| {
                let iat = floor.saturating_add(IAT_TOLERANCE_SECS);
                (DriftKind::BehindIssueTime, wall.saturating_sub(iat) as f64)
            }),
        };
        let Some((kind, drift_seconds)) = finding else {
            return;
        };
        if self.floor_reported_at.ready(mono, every) {
            events.push_back(LicenseEvent::TimeDriftDetected {
                drift_seconds,
                kind,
            });
        }
    }
}

/// `license.grace_mode_entered` for `verdict` (`grace_period`, the builder's).
fn grace_entered(verdict: &Verdict, grace_period: Duration) -> LicenseEvent {
    LicenseEvent::GraceModeEntered {
        reason: verdict
            .reason
            .clone()
            .unwrap_or(crate::GraceReason::Missing),
        // The period this grace really has: the vendor's signed one for an expired
        // license that carries it, else the builder's.
        grace_period_seconds: match (verdict.grace_started_at, verdict.grace_ends_at) {
            (Some(start), Some(end)) => end.duration_since(start).map_or(0, |d| d.as_secs()),
            _ => grace_period.as_secs(),
        },
        grace_started_at: verdict.grace_started_at.unwrap_or(verdict.evaluated_at),
        grace_ends_at: verdict.grace_ends_at.unwrap_or(verdict.evaluated_at),
    }
}

/// `license.grace_period_expired` for `verdict`.
fn grace_expired(verdict: &Verdict) -> LicenseEvent {
    LicenseEvent::GracePeriodExpired {
        reason: verdict
            .reason
            .clone()
            .unwrap_or(crate::GraceReason::Missing),
        grace_ends_at: verdict.grace_ends_at.unwrap_or(verdict.evaluated_at),
    }
}

/// `license.entitlements_changed` between two verdicts, if the features or limits of the
/// licenses in force differ (whatever the state: the cut-off itself changes nothing here).
fn entitlements_changed(before: &Verdict, after: &Verdict) -> Option<LicenseEvent> {
    fn of(v: &Verdict) -> (BTreeSet<&str>, BTreeMap<&str, u64>) {
        let features = v
            .licenses
            .iter()
            .flat_map(|c| c.features.iter().map(String::as_str))
            .collect();
        let mut limits = BTreeMap::new();
        for (name, value) in v.licenses.iter().flat_map(|c| c.limits.iter()) {
            let entry = limits.entry(name.as_str()).or_insert(*value);
            *entry = (*entry).max(*value);
        }
        (features, limits)
    }
    let (old_features, old_limits) = of(before);
    let (new_features, new_limits) = of(after);
    let added: Vec<String> = new_features
        .difference(&old_features)
        .map(|f| (*f).to_owned())
        .collect();
    let removed: Vec<String> = old_features
        .difference(&new_features)
        .map(|f| (*f).to_owned())
        .collect();
    let names: BTreeSet<&str> = old_limits
        .keys()
        .chain(new_limits.keys())
        .copied()
        .collect();
    let limits: Vec<(String, Option<u64>, Option<u64>)> = names
        .into_iter()
        .map(|name| {
            (
                name,
                old_limits.get(name).copied(),
                new_limits.get(name).copied(),
            )
        })
        .filter(|(_, before, after)| before != after)
        .map(|(name, before, after)| (name.to_owned(), before, after))
        .collect();
    (!added.is_empty() || !removed.is_empty() || !limits.is_empty()).then_some(
        LicenseEvent::EntitlementsChanged {
            added,
            removed,
            limits,
        },
    )
}
