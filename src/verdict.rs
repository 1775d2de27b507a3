//! The pure core: from a license, a trusted "now" and the grace anchor to a [`Verdict`].
//!
//! Nothing here reads a clock or a file. `evaluate` is called by the checker task at
//! every wake and by the tests, and besides the verdict it returns the next instant at
//! which its answer can change, so the checker can sleep exactly until then.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::clock::from_unix_seconds;
use crate::token::{Claims, LicenseError};

/// The license state requests are judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LicenseState {
    /// A valid license is in force.
    Valid,
    /// No valid license (expired, missing, refused, or the clock was tampered with), but
    /// the grace period has not run out: requests are still served.
    Grace,
    /// The grace period is over: new requests are refused with 503.
    GraceExpired,
}

impl LicenseState {
    /// `valid`, `grace` or `grace_expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseState::Valid => "valid",
            LicenseState::Grace => "grace",
            LicenseState::GraceExpired => "grace_expired",
        }
    }

    /// Whether new requests are admitted in this state: in every one but
    /// [`LicenseState::GraceExpired`]. (The judge builds a verdict's settling from it
    /// before the verdict exists.)
    pub(crate) fn admits(self) -> bool {
        self != LicenseState::GraceExpired
    }
}

/// Why the service is in grace.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GraceReason {
    /// The license in force has expired.
    Expired,
    /// No license was found (unset variable, absent or empty file).
    Missing,
    /// The license was refused; the error says why.
    Invalid(LicenseError),
    /// The wall clock was set back: trusted time cannot be established from it.
    ClockManipulation,
    /// The license limits how many replicas may serve at once (`max_instances`) and
    /// this replica holds no instance slot (see `instance_slots`, feature `kubernetes`):
    /// the others hold them all, or the Kubernetes API has not answered for a grace
    /// period.
    InstanceLimit,
    /// A vendor notice revoked the license in force (or a newer license superseded it):
    /// its own grace runs from the revocation.
    Revoked,
}

impl GraceReason {
    /// A stable snake_case code: `expired`, `missing`, `clock_manipulation`, or the
    /// refusal's own reason code (`bad_signature`, …).
    pub fn code(&self) -> &'static str {
        match self {
            GraceReason::Expired => "expired",
            GraceReason::Missing => "missing",
            GraceReason::Invalid(e) => e.reason(),
            GraceReason::ClockManipulation => "clock_manipulation",
            GraceReason::InstanceLimit => "instance_limit",
            GraceReason::Revoked => "revoked",
        }
    }
}

/// The alert bands by time left before `exp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ExpiryBand {
    /// Less than 30 days left.
    Days30,
    /// Less than 7 days left.
    Days7,
    /// Less than 24 hours left.
    Hours24,
    /// Less than 1 hour left.
    Hour1,
}

impl ExpiryBand {
    /// Every band, outermost first.
    pub const ALL: [ExpiryBand; 4] = [
        ExpiryBand::Days30,
        ExpiryBand::Days7,
        ExpiryBand::Hours24,
        ExpiryBand::Hour1,
    ];

    /// The band's width: the band is entered when less than this is left.
    pub fn threshold(self) -> Duration {
        Duration::from_secs(self.threshold_secs() as u64)
    }

    fn threshold_secs(self) -> i64 {
        match self {
            ExpiryBand::Days30 => 30 * 86_400,
            ExpiryBand::Days7 => 7 * 86_400,
            ExpiryBand::Hours24 => 86_400,
            ExpiryBand::Hour1 => 3_600,
        }
    }

    /// The innermost band `remaining_secs` falls into, if any.
    pub(crate) fn for_remaining(remaining_secs: i64) -> Option<Self> {
        Self::ALL
            .iter()
            .rev()
            .copied()
            .find(|band| remaining_secs < band.threshold_secs())
    }
}

/// The monitor's judgement at one instant. Stored whole, so every reader sees one
/// consistent verdict.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Verdict {
    /// Valid, grace, or grace expired.
    pub state: LicenseState,
    /// The license in force that ends last (also while in grace after the set expired);
    /// `None` when there is none. A refused token's claims never appear here. With one
    /// license per source, simply that license.
    pub claims: Option<Arc<Claims>>,
    /// The licenses in force now: those whose `[nbf, exp)` window holds trusted now (in
    /// grace after expiry, the ones in force at the last covered second). Their features
    /// and limits are the service's ([`features`](Verdict::features),
    /// [`limit`](Verdict::limit)) until the cut-off.
    pub licenses: Vec<Arc<Claims>>,
    /// Licenses held for later: verified, with an `nbf` still ahead. Each comes into force
    /// at its exact `nbf` second, no check needed.
    pub upcoming: Vec<Arc<Claims>>,
    /// The end of coverage: the union of the licenses' windows that touch now ends here
    /// (a renewal that starts before the current license ends extends it). Alerts count
    /// down to it and grace starts there.
    pub expires_at: Option<SystemTime>,
    /// When the current grace period began (`None` while valid).
    pub grace_started_at: Option<SystemTime>,
    /// When the current grace period ends (`None` while valid).
    pub grace_ends_at: Option<SystemTime>,
    /// Why the service is in grace (`None` while valid).
    pub reason: Option<GraceReason>,
    /// The innermost expiry alert band the coverage is in, while valid.
    pub band: Option<ExpiryBand>,
    /// The trusted time this verdict was reached at.
    pub evaluated_at: SystemTime,
    /// While a replica new to the fleet waits for an instance slot without one (see
    /// `instances`, feature `kubernetes`): when its quiet settling ends and
    /// instance-limit grace starts, unless it gets a slot first. Admitted meanwhile, with
    /// `/health` healthy and no error event; `None` otherwise.
    pub instance_settling_until: Option<SystemTime>,
    /// The highest vendor notice `seq` accepted for the set's customer (see
    /// [`Notice`](crate::Notice)); `None` before any.
    pub notice_seq: Option<u64>,
    /// How many license `jti`s vendor notices (or superseding licenses) have revoked.
    pub revocations: usize,
    /// The highest `seq` of a vendor usage receipt accepted (a notice with
    /// [`receipt`](crate::Notice::receipt)); the usage journal notes each.
    pub receipt_seq: Option<u64>,
    /// The clock's monotonic reading when the verdict was reached, so that readers (the
    /// metrics) can tell trusted time since then without the wall clock.
    pub(crate) evaluated_mono: Duration,
}

impl Verdict {
    /// Whether new requests are admitted: false only in [`LicenseState::GraceExpired`].
    #[inline]
    pub fn admits(&self) -> bool {
        self.state.admits()
    }

    /// Whether a valid license is in force.
    pub fn is_valid(&self) -> bool {
        self.state == LicenseState::Valid
    }

    /// Whole days left before the end of coverage at `evaluated_at` (negative once
    /// expired).
    pub fn days_remaining(&self) -> Option<i64> {
        let end = crate::clock::unix_seconds(self.expires_at?);
        let now = crate::clock::unix_seconds(self.evaluated_at);
        Some((end - now).div_euclid(86_400))
    }

    /// The features of the licenses in force, sorted and without repeats: valid or in
    /// grace, never after the cut-off.
    pub fn features(&self) -> Vec<&str> {
        if !self.admits() {
            return Vec::new();
        }
        let mut features: Vec<&str> = self
            .licenses
            .iter()
            .flat_map(|c| c.features.iter().map(String::as_str))
            .collect();
        features.sort_unstable();
        features.dedup();
        features
    }

    /// Whether a license in force grants `feature` (valid or in grace, never after the
    /// cut-off).
    pub fn has_feature(&self, feature: &str) -> bool {
        self.admits() && self.licenses.iter().any(|c| c.has_feature(feature))
    }

    /// How many replicas may serve at once: the largest `max_instances` among the
    /// licenses in force (valid or in grace). `None` when any of them sets none (a
    /// license without a limit is the largest), when none is in force, and after the
    /// cut-off.
    pub fn max_instances(&self) -> Option<u64> {
        if !self.admits() {
            return None;
        }
        instance_limit(&self.licenses)
    }

    /// The limit `name`: the largest value among the licenses in force (valid or in
    /// grace); `None` if none sets it, and after the cut-off.
    pub fn limit(&self, name: &str) -> Option<u64> {
        if !self.admits() {
            return None;
        }
        self.licenses.iter().filter_map(|c| c.limit(name)).max()
    }

    /// When `feature` stops being granted, if it is granted now: the end of the coverage
    /// of the licenses (in force and held for later) that grant it. Earlier than
    /// [`expires_at`](Verdict::expires_at) when a renewal installed ahead does not carry
    /// the feature.
    pub fn feature_ends_at(&self, feature: &str) -> Option<SystemTime> {
        if !self.has_feature(feature) {
            return None;
        }
        let granting: Vec<Arc<Claims>> = self
            .licenses
            .iter()
            .chain(&self.upcoming)
            .filter(|c| c.has_feature(feature))
            .cloned()
            .collect();
        let now = crate::clock::unix_seconds(self.evaluated_at);
        match coverage_end(&granting, now) {
            Some(end) => Some(from_unix_seconds(end)),
            // In grace after expiry: it went with the licenses, and goes at the cut-off.
            None => self.grace_ends_at,
        }
    }

    /// Every limit in force, by name (the largest value of each), as [`limit`](Verdict::limit)
    /// reads them.
    pub fn limits(&self) -> std::collections::BTreeMap<&str, u64> {
        let mut limits = std::collections::BTreeMap::new();
        if self.admits() {
            for (name, value) in self.licenses.iter().flat_map(|c| c.limits.iter()) {
                let entry = limits.entry(name.as_str()).or_insert(*value);
                *entry = (*entry).max(*value);
            }
        }
        limits
    }
}

/// What the core needs to know; everything is a plain value.
#[derive(Debug, Clone)]
pub(crate) struct Input<'a> {
    /// The license set: every token of the last good read that verified (in force, held
    /// for later, or expired), in a canonical order (see `crate::judge::set`).
    pub(crate) licenses: &'a [Arc<Claims>],
    /// The last problem reading the source, if the last read did not verify.
    pub(crate) problem: Option<&'a LicenseError>,
    /// Trusted now, in whole seconds since the epoch.
    pub(crate) now: i64,
    /// Since when no license at all has been seen (missing, refused, or only held for
    /// later) in the current episode, as carried over from the last evaluation; an expired
    /// license does not start one (its own `exp` anchors its grace).
    pub(crate) grace_anchor: Option<i64>,
    /// The latest cut-off an earlier episode without a license earned (its anchor plus
    /// the builder's grace): a license that came in meanwhile never makes it earlier.
    pub(crate) grace_floor: Option<i64>,
    /// The latest the episode without a license may end (a restart that found no license
    /// at all continues the grace of the run before, never past where it was to end).
    pub(crate) grace_cap: Option<i64>,
    /// When clock manipulation was detected, while it has not cleared.
    pub(crate) manipulated_at: Option<i64>,
    /// The builder's grace period, in seconds.
    pub(crate) grace_period: i64,
    /// No grace at all (fail-closed mode and no valid license since start).
    pub(crate) no_grace: bool,
    /// Since when this replica has held no instance slot while the licenses limit
    /// instances (see `crate::instances`); `None` while it holds one, or is not limited.
    pub(crate) without_slot_since: Option<i64>,
}

/// The core's answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Evaluation {
    pub(crate) verdict: Verdict,
    /// The anchor of the episode without a license to carry into the next evaluation
    /// (`None` while valid, or while only an expired set is the reason for grace).
    pub(crate) grace_anchor: Option<i64>,
    /// The first second at which this evaluation's outcome can differ; `None` if only new
    /// input can change it.
    pub(crate) next_change: Option<i64>,
    /// Where the service is cut off if nothing new comes in: the end of grace, or while
    /// licensed, the cut-off of the coverage in force (its latest `exp` + grace).
    pub(crate) cut_off: Option<i64>,
}

/// What the monitor would decide at `at` for a license set, were trusted time `at` and
/// the clock honest: coverage, alert band, grace (`default_grace` where a license signs
/// none) and the cut-off. For tools that preview a set (the CLI's `timeline` and
/// `verify`); the monitor itself also weighs its clock evidence and the grace it carried.
pub fn judge(licenses: &[Arc<Claims>], at: SystemTime, default_grace: Duration) -> Verdict {
    evaluate(&Input {
        licenses,
        problem: None,
        now: crate::clock::unix_seconds(at),
        grace_anchor: None,
        grace_floor: None,
        grace_cap: None,
        manipulated_at: None,
        grace_period: i64::try_from(default_grace.as_secs()).unwrap_or(i64::MAX),
        no_grace: false,
        without_slot_since: None,
    })
    .verdict
}

/// A held license whose `nbf` falls before the cut-off of the coverage before it continues
/// that coverage; the cut-off counts as at least this long after the coverage's end, so a
/// license with no grace followed by one that starts a second later is one coverage.
pub(crate) const CONTINUATION_SECS: i64 = 60;

/// A license's window `[start, end)`: from `nbf` (or the beginning of time) to `exp`, or
/// to its revocation (a revoked license ends there, as if it expired).
fn window(c: &Claims) -> (i64, i64) {
    (c.nbf.unwrap_or(i64::MIN), c.ends())
}

fn in_force_at(c: &Claims, t: i64) -> bool {
    let (start, end) = window(c);
    start <= t && t < end
}

/// A license's own grace: the vendor's signed one, else the builder's.
fn grace_of(c: &Claims, default_grace: i64) -> i64 {
    c.grace_period_seconds
        .map_or(default_grace, |g| i64::try_from(g).unwrap_or(i64::MAX))
}

/// One continued coverage: licenses whose windows overlap, touch, or follow each other
/// with a gap that starts before the cut-off of what came before.
#[derive(Debug)]
struct Chain {
    /// The first second covered.
    start: i64,
    /// The end of the continued coverage (the latest `exp`).
    end: i64,
    /// The latest `exp` + grace among its licenses: where the service is cut off once the
    /// coverage has ended.
    cut: i64,
    /// Indices into the set, by start.
    members: Vec<usize>,
}

/// The set's coverages, earliest first. Order-free: the set's order does not matter, and a
/// license repeated changes nothing.
fn chains(set: &[Arc<Claims>], default_grace: i64) -> Vec<Chain> {
    let mut order: Vec<usize> = (0..set.len())
        .filter(|&i| window(&set[i]).0 < set[i].ends())
        .collect();
    order.sort_by_key(|&i| window(&set[i]));
    let mut chains: Vec<Chain> = Vec::new();
    for i in order {
        let (start, end) = window(&set[i]);
        let cut = end.saturating_add(grace_of(&set[i], default_grace));
        match chains.last_mut() {
            Some(chain) if start < chain.cut.max(chain.end.saturating_add(CONTINUATION_SECS)) => {
                chain.end = chain.end.max(end);
                chain.cut = chain.cut.max(cut);
                chain.members.push(i);
            }
            _ => chains.push(Chain {
                start,
                end,
                cut,
                members: vec![i],
            }),
        }
    }
    chains
}

/// The end of the coverage that holds `t`: the union of windows, chained where one
/// starts at or before the end of another, from the one holding `t`. `None` if no window
/// holds `t`.
fn coverage_end(licenses: &[Arc<Claims>], t: i64) -> Option<i64> {
    let mut end = licenses
        .iter()
        .filter(|c| in_force_at(c, t))
        .map(|c| c.ends())
        .max()?;
    // Each pass extends by every window that starts within the coverage so far; at most
    // one pass per license.
    loop {
        let next = licenses
            .iter()
            .map(|c| window(c))
            .filter(|&(start, e)| start <= end && e > end)
            .map(|(_, e)| e)
            .max();
        match next {
            Some(e) => end = e,
            None => return Some(end),
        }
    }
}

/// The instance limit of these licenses: the largest `max_instances`, `None` if any sets
/// none (or there are none).
pub(crate) fn instance_limit(licenses: &[Arc<Claims>]) -> Option<u64> {
    licenses
        .iter()
        .map(|c| c.max_instances)
        .try_fold(0, |most, n| n.map(|n| most.max(n)))
        .filter(|&n| n > 0)
}

/// The license in force that ends last (the first such in set order).
fn ends_last(licenses: &[Arc<Claims>]) -> Option<Arc<Claims>> {
    licenses
        .iter()
        .fold(None::<&Arc<Claims>>, |best, c| match best {
            Some(b) if b.ends() >= c.ends() => Some(b),
            _ => Some(c),
        })
        .cloned()
}

/// Where the set stands at an instant.
enum Standing {
    /// Licenses are in force; the coverage they belong to ends at `end`.
    Covered { end: i64 },
    /// The coverage ended at `expired_at` (or paused there, for a gap that a held license
    /// closes); its grace runs to `cut`.
    Expired { expired_at: i64, cut: i64 },
    /// No license has been in force in this coverage: none at all, or only held ones.
    Unlicensed,
}

/// Judges the input. Pure: the same input always gives the same output.
pub(crate) fn evaluate(input: &Input<'_>) -> Evaluation {
    let now = input.now;
    let evaluated_at = from_unix_seconds(now);
    let set = input.licenses;
    let upcoming: Vec<Arc<Claims>> = set
        .iter()
        .filter(|c| window(c).0 > now && window(c).0 < c.ends())
        .cloned()
        .collect();
    // A held license coming into force changes the licenses (and maybe the features) in
    // force, and ends grace.
    let next_start = upcoming.iter().filter_map(|c| c.nbf).min();
    let in_force: Vec<Arc<Claims>> = set
        .iter()
        .filter(|c| in_force_at(c, now))
        .cloned()
        .collect();
    let chains = chains(set, input.grace_period);
    let current = chains.iter().rev().find(|c| c.start <= now);
    let standing = match current {
        Some(chain) if !in_force.is_empty() => Standing::Covered { end: chain.end },
        Some(chain) if now < chain.end => {
            // A gap inside a continued coverage: grace, never a cut-off, until the next
            // license comes in (its `nbf` is before the cut-off of what came before).
            let before = chain
                .members
                .iter()
                .map(|&i| &set[i])
                .filter(|c| c.ends() <= now);
            let expired_at = before.clone().map(|c| c.ends()).max().unwrap_or(now);
            let cut = before
                .map(|c| c.ends().saturating_add(grace_of(c, input.grace_period)))
                .chain(next_start)
                .max()
                .unwrap_or(now);
            Standing::Expired { expired_at, cut }
        }
        Some(chain) => Standing::Expired {
            expired_at: chain.end,
            cut: chain.cut,
        },
        None => Standing::Unlicensed,
    };
    // The licenses whose features and limits apply: those in force, or in grace after
    // expiry those in force at the last covered second.
    let applying: Vec<Arc<Claims>> = match standing {
        Standing::Covered { .. } => in_force.clone(),
        Standing::Expired { expired_at, .. } => set
            .iter()
            .filter(|c| in_force_at(c, expired_at.saturating_sub(1)))
            .cloned()
            .collect(),
        Standing::Unlicensed => Vec::new(),
    };
    // Outcomes change when a license in force ends or a held one starts.
    let set_changes = || {
        in_force
            .iter()
            .map(|c| c.ends())
            .chain(next_start)
            .filter(|&edge| edge > now)
    };
    let instance_cut = |period: i64| {
        input
            .without_slot_since
            .filter(|_| instance_limit(&applying).is_some())
            .map(|since| since.min(now).saturating_add(period))
    };
    let own_grace = if input.no_grace {
        0
    } else {
        input.grace_period
    };

    if let (Standing::Covered { end }, None) = (&standing, input.manipulated_at) {
        let end = *end;
        let claims = ends_last(&in_force);
        if let Some(ends) = instance_cut(own_grace) {
            // Licensed, but another replica holds every slot: grace from when this one
            // found itself without, the builder's period (the vendor's signed grace is for
            // expiry), then the cut-off. Getting a slot ends it (new input).
            let since = input.without_slot_since.map_or(now, |s| s.min(now));
            let next_change = set_changes()
                .chain([end])
                .chain((ends > now).then_some(ends))
                .filter(|&edge| edge > now)
                .min();
            return Evaluation {
                verdict: Verdict {
                    state: if now >= ends {
                        LicenseState::GraceExpired
                    } else {
                        LicenseState::Grace
                    },
                    claims,
                    licenses: in_force,
                    upcoming,
                    expires_at: Some(from_unix_seconds(end)),
                    grace_started_at: Some(from_unix_seconds(since)),
                    grace_ends_at: Some(from_unix_seconds(ends)),
                    reason: Some(GraceReason::InstanceLimit),
                    band: None,
                    evaluated_at,
                    evaluated_mono: Duration::ZERO,
                    instance_settling_until: None,
                    notice_seq: None,
                    revocations: 0,
                    receipt_seq: None,
                },
                grace_anchor: None,
                next_change,
                cut_off: current.map(|c| c.cut),
            };
        }
        let remaining = end - now;
        // The next band edge still ahead; `remaining < threshold` first holds at
        // end - threshold + 1. After the last band, the next change is the end itself.
        let next_change = ExpiryBand::ALL
            .iter()
            .map(|b| end - b.threshold_secs() + 1)
            .chain(set_changes())
            .filter(|&edge| edge > now)
            .min()
            .unwrap_or(end);
        return Evaluation {
            verdict: Verdict {
                state: LicenseState::Valid,
                claims,
                licenses: in_force,
                upcoming,
                expires_at: Some(from_unix_seconds(end)),
                grace_started_at: None,
                grace_ends_at: None,
                reason: None,
                band: ExpiryBand::for_remaining(remaining),
                evaluated_at,
                evaluated_mono: Duration::ZERO,
                instance_settling_until: None,
                notice_seq: None,
                revocations: 0,
                receipt_seq: None,
            },
            grace_anchor: None,
            next_change: Some(next_change),
            cut_off: current.map(|c| c.cut),
        };
    }

    // In grace, or cut off. Each reason brings its own start and cut-off:
    // * the coverage that ended: from its end to the latest `exp` + grace of its
    //   licenses (each with its own signed grace or the builder's), so adding a license
    //   never brings the cut-off earlier;
    // * an episode with no license at all: from its first sight, the builder's grace; it
    //   goes on counting when an expired set is loaded, and a cut-off it earned stays
    //   (`grace_floor`) once a license came in;
    // * clock manipulation: from its detection, the builder's grace, and it cuts off
    //   whatever else would have run longer.
    let anchor = match standing {
        // A license revoked before it started counts as ended at its revocation, as a
        // revoked license in force does: the episode runs from there at the latest.
        Standing::Unlicensed => {
            let revoked = set
                .iter()
                .filter(|c| c.revoked())
                .filter_map(|c| c.revoked_at);
            Some(revoked.chain(input.grace_anchor).fold(now, i64::min))
        }
        _ => input.grace_anchor.map(|a| a.min(now)),
    };
    let (expired_at, set_cut) = match standing {
        Standing::Covered { .. } => (None, None),
        Standing::Expired { expired_at, cut } => (Some(expired_at), Some(cut)),
        Standing::Unlicensed => (None, None),
    };
    let covered_end = match standing {
        Standing::Covered { end } => Some(end),
        _ => None,
    };
    let reason = if input.manipulated_at.is_some() {
        GraceReason::ClockManipulation
    } else if let Some(at) = expired_at {
        // A coverage ended by a vendor's revocation says so.
        if set.iter().any(|c| c.revoked() && c.ends() == at) {
            GraceReason::Revoked
        } else {
            GraceReason::Expired
        }
    } else if matches!(standing, Standing::Unlicensed) && set.iter().any(|c| c.revoked()) {
        // Only licenses revoked before they started.
        GraceReason::Revoked
    } else {
        match (input.problem, next_start) {
            (Some(LicenseError::Missing { .. }) | None, Some(not_before)) => {
                // Only licenses held for later: in grace until the first comes into force.
                GraceReason::Invalid(LicenseError::NotYetValid { not_before })
            }
            (Some(LicenseError::Missing { .. }) | None, None) => GraceReason::Missing,
            (Some(other), _) => GraceReason::Invalid(other.clone()),
        }
    };
    let started = [expired_at, anchor, input.manipulated_at]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now);
    // While covered (manipulation only), the coverage's own cut-off stands behind it.
    let covered_cut = covered_end.and_then(|_| current.map(|c| c.cut));
    let episode_cut = anchor.map(|a| {
        let cut = a.saturating_add(input.grace_period);
        input.grace_cap.map_or(cut, |cap| cut.min(cap))
    });
    let mut ends = [set_cut, covered_cut, episode_cut, input.grace_floor]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(now);
    if let Some(at) = input.manipulated_at {
        ends = ends.min(at.saturating_add(input.grace_period));
    }
    if input.no_grace {
        ends = started;
    }
    if let Some(cut) = instance_cut(own_grace) {
        // In grace for the license and without an instance slot: whichever grace ends
        // first cuts off.
        ends = ends.min(cut);
    }
    // (Under manipulation, the coverage's own end changes nothing: its cut-off already
    // stood behind the grace, and the licenses at its last second are those in force.)
    let changes = set_changes().filter(|&edge| Some(edge) != covered_end);
    let (state, next_change) = if now >= ends {
        (LicenseState::GraceExpired, changes.min())
    } else {
        (LicenseState::Grace, changes.chain([ends]).min())
    };
    let expires_at = covered_end.or(expired_at).map(from_unix_seconds);
    Evaluation {
        verdict: Verdict {
            state,
            claims: ends_last(&applying),
            licenses: applying,
            upcoming,
            expires_at,
            grace_started_at: Some(from_unix_seconds(started)),
            grace_ends_at: Some(from_unix_seconds(ends)),
            reason: Some(reason),
            band: None,
            evaluated_at,
            evaluated_mono: Duration::ZERO,
            instance_settling_until: None,
            notice_seq: None,
            revocations: 0,
            receipt_seq: None,
        },
        grace_anchor: anchor,
        next_change,
        cut_off: Some(ends),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: i64 = 86_400;
    const HOUR: i64 = 3_600;
    const GRACE: i64 = DAY;
    const EXP: i64 = 2_000_000_000;

    fn claims(exp: i64) -> Arc<Claims> {
        Arc::new(Claims::new("acme", exp))
    }

    fn input<'a>(licenses: &'a [Arc<Claims>], now: i64) -> Input<'a> {
        Input {
            licenses,
            problem: None,
            now,
            grace_anchor: None,
            grace_floor: None,
            grace_cap: None,
            manipulated_at: None,
            grace_period: GRACE,
            no_grace: false,
            without_slot_since: None,
        }
    }

    fn at(license: &Arc<Claims>, now: i64) -> Evaluation {
        evaluate(&input(std::slice::from_ref(license), now))
    }

    fn limited(exp: i64, max: Option<u64>) -> Arc<Claims> {
        let mut c = Claims::new("acme", exp);
        c.max_instances = max;
        Arc::new(c)
    }

    #[test]
    fn max_instances_is_the_largest_in_force_and_no_limit_wins() {
        let judge_now =
            |set: &[Arc<Claims>]| judge(set, from_unix_seconds(EXP - DAY), Duration::ZERO);
        assert_eq!(judge_now(&[limited(EXP, Some(3))]).max_instances(), Some(3));
        assert_eq!(
            judge_now(&[limited(EXP, Some(3)), limited(EXP + DAY, Some(5))]).max_instances(),
            Some(5)
        );
        assert_eq!(
            judge_now(&[limited(EXP, Some(3)), limited(EXP, None)]).max_instances(),
            None,
            "a license without a limit in force means no limit"
        );
        // A held renewal's limit is not in force yet; an expired one's is gone.
        let mut held = Claims::new("acme", EXP + 90 * DAY);
        held.nbf = Some(EXP);
        held.max_instances = Some(10);
        let set = [limited(EXP, Some(3)), Arc::new(held)];
        assert_eq!(judge_now(&set).max_instances(), Some(3));
        assert_eq!(
            judge(&set, from_unix_seconds(EXP), Duration::ZERO).max_instances(),
            Some(10)
        );
        // After the cut-off, nothing.
        assert_eq!(
            judge(
                &[limited(EXP, Some(3))],
                from_unix_seconds(EXP + 1),
                Duration::ZERO
            )
            .max_instances(),
            None
        );
    }

    #[test]
    fn without_a_slot_a_licensed_replica_is_in_grace_then_cut_off() {
        let set = [limited(EXP, Some(2))];
        let since = EXP - 10 * DAY;
        let without = |now| {
            evaluate(&Input {
                without_slot_since: Some(since),
                ..input(&set, now)
            })
        };
        let e = without(since);
        assert_eq!(e.verdict.state, LicenseState::Grace);
        assert_eq!(e.verdict.reason, Some(GraceReason::InstanceLimit));
        assert_eq!(
            e.verdict.reason.as_ref().map(GraceReason::code),
            Some("instance_limit")
        );
        assert_eq!(e.verdict.grace_started_at, Some(from_unix_seconds(since)));
        assert_eq!(
            e.verdict.grace_ends_at,
            Some(from_unix_seconds(since + GRACE))
        );
        assert_eq!(e.next_change, Some(since + GRACE), "wakes at the cut-off");
        assert_eq!(
            e.grace_anchor, None,
            "the license's own grace is not started"
        );
        assert_eq!(e.verdict.expires_at, Some(from_unix_seconds(EXP)));
        assert_eq!(
            without(since + GRACE - 1).verdict.state,
            LicenseState::Grace
        );
        assert_eq!(
            without(since + GRACE).verdict.state,
            LicenseState::GraceExpired
        );
        assert!(!without(since + GRACE).verdict.admits());
        // Holding a slot again (no `without_slot_since`) is valid at once.
        assert_eq!(
            at(&set[0], since + GRACE).verdict.state,
            LicenseState::Valid
        );
        // A license without `max_instances` is never limited, whatever the slot says.
        let unlimited = [limited(EXP, None)];
        let e = evaluate(&Input {
            without_slot_since: Some(since),
            ..input(&unlimited, since + 2 * GRACE)
        });
        assert_eq!(e.verdict.state, LicenseState::Valid);
    }

    #[test]
    fn without_a_slot_in_license_grace_the_earlier_grace_end_cuts_off() {
        let set = [limited(EXP, Some(2))];
        // Without a slot since half a grace before expiry: cut off half a grace after it.
        let since = EXP - GRACE / 2;
        let e = evaluate(&Input {
            without_slot_since: Some(since),
            ..input(&set, EXP)
        });
        assert_eq!(e.verdict.state, LicenseState::Grace);
        assert_eq!(e.verdict.reason, Some(GraceReason::Expired));
        assert_eq!(
            e.verdict.grace_ends_at,
            Some(from_unix_seconds(since + GRACE))
        );
        assert_eq!(e.next_change, Some(since + GRACE));
        // Without a slot only since long after expiry: the license's grace ends first.
        let e = evaluate(&Input {
            without_slot_since: Some(EXP + GRACE / 2),
            ..input(&set, EXP + GRACE - 1)
        });
        assert_eq!(
            e.verdict.grace_ends_at,
            Some(from_unix_seconds(EXP + GRACE))
        );
    }

    #[test]
    fn bands_change_exactly_at_their_edges() {
        let lic = claims(EXP);
        let cases = [
            (30 * DAY, None, Some(ExpiryBand::Days30)),
            (7 * DAY, Some(ExpiryBand::Days30), Some(ExpiryBand::Days7)),
            (DAY, Some(ExpiryBand::Days7), Some(ExpiryBand::Hours24)),
            (HOUR, Some(ExpiryBand::Hours24), Some(ExpiryBand::Hour1)),
        ];
        for (threshold, before, after) in cases {
            // Exactly `threshold` left is not "less than" it yet.
            let edge = EXP - threshold;
            let e = at(&lic, edge);
            assert_eq!(e.verdict.band, before, "at the edge of {threshold}");
            assert_eq!(e.next_change, Some(edge + 1));
            assert_eq!(at(&lic, edge - 1).verdict.band, before);
            assert_eq!(at(&lic, edge + 1).verdict.band, after);
            assert_eq!(at(&lic, edge + 1).verdict.state, LicenseState::Valid);
        }
    }

    #[test]
    fn expiry_starts_grace_at_exp_and_grace_ends_a_period_later() {
        let lic = claims(EXP);
        let before = at(&lic, EXP - 1);
        assert_eq!(before.verdict.state, LicenseState::Valid);
        assert_eq!(before.verdict.band, Some(ExpiryBand::Hour1));
        assert_eq!(before.next_change, Some(EXP));

        let grace = at(&lic, EXP);
        assert_eq!(grace.verdict.state, LicenseState::Grace);
        assert_eq!(grace.verdict.reason, Some(GraceReason::Expired));
        assert_eq!(grace.verdict.grace_started_at, Some(from_unix_seconds(EXP)));
        assert_eq!(
            grace.verdict.grace_ends_at,
            Some(from_unix_seconds(EXP + GRACE))
        );
        assert_eq!(grace.next_change, Some(EXP + GRACE));
        assert!(grace.verdict.admits());
        assert_eq!(grace.verdict.claims.as_deref(), Some(&*lic));

        assert_eq!(at(&lic, EXP + GRACE - 1).verdict.state, LicenseState::Grace);
        let cut = at(&lic, EXP + GRACE);
        assert_eq!(cut.verdict.state, LicenseState::GraceExpired);
        assert!(!cut.verdict.admits());
        assert_eq!(cut.next_change, None);
    }

    #[test]
    fn restart_long_after_expiry_is_cut_off_at_once() {
        // Catalog R1: grace is computed from the signed exp, not from when we looked.
        let lic = claims(EXP);
        assert_eq!(
            at(&lic, EXP + 15 * DAY).verdict.state,
            LicenseState::GraceExpired
        );
        let e = at(&lic, EXP + HOUR);
        assert_eq!(
            e.verdict.grace_ends_at,
            Some(from_unix_seconds(EXP + GRACE))
        );
    }

    #[test]
    fn missing_license_anchors_at_first_sight_and_keeps_the_anchor() {
        let first = evaluate(&input(&[], 1_000));
        assert_eq!(first.verdict.state, LicenseState::Grace);
        assert_eq!(first.verdict.reason, Some(GraceReason::Missing));
        assert_eq!(first.grace_anchor, Some(1_000));
        assert!(first.verdict.claims.is_none());

        let err = LicenseError::BadSignature;
        let later = evaluate(&Input {
            problem: Some(&err),
            grace_anchor: first.grace_anchor,
            ..input(&[], 5_000)
        });
        assert_eq!(
            later.grace_anchor,
            Some(1_000),
            "garbage must not restart grace"
        );
        assert_eq!(
            later.verdict.reason,
            Some(GraceReason::Invalid(err.clone()))
        );
        assert_eq!(
            later.verdict.reason.as_ref().map(GraceReason::code),
            Some("bad_signature")
        );
    }

    #[test]
    fn an_expired_license_loaded_later_does_not_move_an_earlier_anchor() {
        let lic = claims(EXP);
        let e = evaluate(&Input {
            grace_anchor: Some(EXP - 100),
            ..input(std::slice::from_ref(&lic), EXP + 10)
        });
        assert_eq!(e.grace_anchor, Some(EXP - 100));
    }

    #[test]
    fn manipulation_means_grace_even_with_a_valid_license() {
        let lic = claims(EXP);
        let e = evaluate(&Input {
            manipulated_at: Some(EXP - 10 * DAY),
            ..input(std::slice::from_ref(&lic), EXP - 10 * DAY + 5)
        });
        assert_eq!(e.verdict.state, LicenseState::Grace);
        assert_eq!(e.verdict.reason, Some(GraceReason::ClockManipulation));
        assert_eq!(
            e.verdict.grace_started_at,
            Some(from_unix_seconds(EXP - 10 * DAY))
        );
        // A license is in force: no episode without one has started.
        assert_eq!(e.grace_anchor, None);
        assert_eq!(e.next_change, Some(EXP - 9 * DAY));
    }

    #[test]
    fn no_grace_cuts_off_at_once() {
        let e = evaluate(&Input {
            no_grace: true,
            without_slot_since: None,
            ..input(&[], 1_000)
        });
        assert_eq!(e.verdict.state, LicenseState::GraceExpired);
    }

    #[test]
    fn days_remaining_is_whole_days() {
        let lic = claims(EXP);
        assert_eq!(
            at(&lic, EXP - 25 * DAY - 5).verdict.days_remaining(),
            Some(25)
        );
        assert_eq!(at(&lic, EXP - 1).verdict.days_remaining(), Some(0));
        assert_eq!(at(&lic, EXP + 1).verdict.days_remaining(), Some(-1));
    }

    fn rank(state: LicenseState) -> u8 {
        match state {
            LicenseState::Valid => 0,
            LicenseState::Grace => 1,
            LicenseState::GraceExpired => 2,
        }
    }

    fn band_rank(band: Option<ExpiryBand>) -> u8 {
        band.map_or(0, |b| b as u8 + 1)
    }

    /// Everything about an outcome except the instant it was reached at.
    fn outcome(e: &Evaluation) -> Verdict {
        Verdict {
            evaluated_at: SystemTime::UNIX_EPOCH,
            ..e.verdict.clone()
        }
    }

    fn arb_input()
    -> impl Strategy<Value = (Option<i64>, i64, Option<i64>, Option<i64>, i64, bool, bool)> {
        (
            proptest::option::of(1_000_000i64..1_100_000),
            1_000_000i64..1_100_000,
            proptest::option::of(900_000i64..1_100_000),
            proptest::option::of(900_000i64..1_100_000),
            0i64..200_000,
            any::<bool>(),
            any::<bool>(),
        )
    }

    proptest! {
        #[test]
        fn later_time_is_never_better(
            (exp, now, anchor, manip, grace, no_grace, problem) in arb_input(),
            without in proptest::option::of(900_000i64..1_100_000),
            later in 0i64..5_000_000,
        ) {
            // Licenses limit instances; the replica may be without a slot.
            let lic = exp.map(|exp| limited(exp, Some(2)));
            let err = LicenseError::BadSignature;
            let base = Input {
                licenses: lic.as_slice(),
                problem: problem.then_some(&err),
                now,
                grace_anchor: anchor.map(|a| a.min(now)),
                grace_floor: None,
                grace_cap: None,
                manipulated_at: manip.map(|m| m.min(now)),
                grace_period: grace,
                no_grace,
                without_slot_since: without.map(|w| w.min(now)),
            };
            let a = evaluate(&base);
            let b = evaluate(&Input { now: now + later, ..base.clone() });
            prop_assert!(rank(b.verdict.state) >= rank(a.verdict.state));
            if a.verdict.state == LicenseState::Valid && b.verdict.state == LicenseState::Valid {
                prop_assert!(band_rank(b.verdict.band) >= band_rank(a.verdict.band));
            }
        }

        #[test]
        fn next_change_is_exactly_where_the_outcome_changes(
            (exp, now, anchor, manip, grace, no_grace, problem) in arb_input(),
            without in proptest::option::of(900_000i64..1_100_000),
            probe in 0.0f64..1.0,
        ) {
            // Licenses limit instances; the replica may be without a slot.
            let lic = exp.map(|exp| limited(exp, Some(2)));
            let err = LicenseError::BadSignature;
            let base = Input {
                licenses: lic.as_slice(),
                problem: problem.then_some(&err),
                now,
                grace_anchor: anchor.map(|a| a.min(now)),
                grace_floor: None,
                grace_cap: None,
                manipulated_at: manip.map(|m| m.min(now)),
                grace_period: grace,
                no_grace,
                without_slot_since: without.map(|w| w.min(now)),
            };
            let first = evaluate(&base);
            // The checker carries the anchor forward; so does the probe.
            let carried = Input { grace_anchor: first.grace_anchor, ..base.clone() };
            match first.next_change {
                Some(next) => {
                    prop_assert!(next > now);
                    let just_before = evaluate(&Input { now: next - 1, ..carried.clone() });
                    prop_assert_eq!(outcome(&just_before), outcome(&first));
                    let inside = now + ((next - 1 - now) as f64 * probe) as i64;
                    let mid = evaluate(&Input { now: inside, ..carried.clone() });
                    prop_assert_eq!(outcome(&mid), outcome(&first));
                    let at_next = evaluate(&Input { now: next, ..carried });
                    prop_assert_ne!(outcome(&at_next), outcome(&first));
                }
                None => {
                    let much_later = evaluate(&Input { now: now + 10_000_000, ..carried });
                    prop_assert_eq!(outcome(&much_later), outcome(&first));
                }
            }
        }
    }
}
