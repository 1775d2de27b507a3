//! The slot rules, as pure code: when a slot's Lease has expired and who may take it
//! over, how long a holder whose renewals fail still counts itself one, how long API
//! failures are tolerated, and what the fleet's overuse record says. Plain values in
//! (times, lease fields), decisions out: no I/O, no clock read here. The slot task
//! (`super::task`) does the API calls and reads the clocks, and asks these.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

use crate::clock::later;
use crate::judge::SlotWord;

/// How long a slot may go without a renewal, on its observer's clock, before another
/// replica may take it over.
pub const LEASE_DURATION: Duration = Duration::from_secs(60);
/// How often a holder renews its slot.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(20);
/// How long after its last renewal that went through a holder still counts itself one
/// while renewals fail; a third of [`LEASE_DURATION`] short of it, so that a holder cut
/// off from the API server stops counting before anyone may take its slot.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(40);
/// How often a replica without a slot lists the slots again.
pub const ACQUIRE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a Lease held by another process of this same pod (a restarted container: the
/// same pod name and UID, another instance nonce) must go unrenewed, on the observer's
/// clock, before this process takes it over: a little longer than a holder cut off from
/// the API server may still count itself one ([`RENEW_DEADLINE`] and a last
/// [`CALL_TIMEOUT`]), so two processes that share a pod never both hold, and shorter than
/// a stranger waits ([`LEASE_DURATION`]).
pub const SAME_POD_TAKEOVER: Duration = Duration::from_secs(55);
/// How soon a failed API call is tried again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// How long one API call may take before it counts as failed: a hung API server must
/// not keep the task from noticing its renew deadline (and a holder counts itself one
/// until at most `RENEW_DEADLINE + CALL_TIMEOUT`, still short of `LEASE_DURATION`).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How far apart two pods' wall clocks may be and the fleet's overuse record still be
/// read by the writer's own timestamps (see [`OVERUSE_SINCE`](super::OVERUSE_SINCE)).
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(30);

/// A holder identity: `<pod name>_<pod uid>_<nonce>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Identity {
    /// `<pod name>_<pod uid>`: what processes of one pod share.
    pub(super) pod: String,
    /// The whole identity, written as the Lease's `holderIdentity`.
    pub(super) full: String,
}

impl Identity {
    pub(super) fn new(pod: String, nonce: String) -> Self {
        let full = format!("{pod}_{nonce}");
        Self { pod, full }
    }

    /// Whether `holder` is another process of this same pod.
    pub(super) fn same_pod(&self, holder: &str) -> bool {
        holder != self.full
            && holder
                .rsplit_once('_')
                .is_some_and(|(pod, _)| pod == self.pod)
    }
}

// Expiry and takeover.

/// How long a slot held by `holder` must go unchanged, on `me`'s clock, before it has
/// expired for `me`: another process of this pod (a restarted container) waits less than
/// a stranger ([`SAME_POD_TAKEOVER`]), but still longer than a live holder's renewal
/// interval; anyone else waits [`LEASE_DURATION`].
pub(super) fn expiry(me: &Identity, holder: &str) -> Duration {
    if me.same_pod(holder) {
        SAME_POD_TAKEOVER
    } else {
        LEASE_DURATION
    }
}

/// Whether a listed slot may be claimed: released (no `holder`), this process's own
/// (its write, applied but not answered), or expired: its version seen unchanged for
/// [`expiry`] of this replica's own time (`unchanged_for`; `None`: not observed). A
/// process without an identity of its own (`me` is `None`) claims no held slot.
pub(super) fn may_take_over(
    holder: Option<&str>,
    me: Option<&Identity>,
    unchanged_for: Option<Duration>,
) -> bool {
    let Some(holder) = holder.filter(|h| !h.is_empty()) else {
        return true;
    };
    let Some(me) = me else {
        return false;
    };
    if holder == me.full {
        return true;
    }
    unchanged_for.is_some_and(|unchanged| unchanged >= expiry(me, holder))
}

/// Each listed slot's `resourceVersion`, and when this replica first saw it: a slot's
/// lease duration runs on the observer's monotonic clock from the first sight of its
/// current version (the holder's `renewTime` is never compared with our clock).
#[derive(Debug, Default)]
pub(super) struct Versions(HashMap<String, (String, Instant)>);

impl Versions {
    /// Takes in slot `name` listed at `version` at `seen`: a version not seen before
    /// starts its lease duration now.
    pub(super) fn see(&mut self, name: &str, version: String, seen: Instant) {
        match self.0.get_mut(name) {
            Some((known, since)) if *known != version => {
                *known = version;
                *since = seen;
            }
            Some(_) => {}
            None => {
                self.0.insert(name.to_owned(), (version, seen));
            }
        }
    }

    /// Forgets the slots `listed` says are no longer listed.
    pub(super) fn keep(&mut self, mut listed: impl FnMut(&str) -> bool) {
        self.0.retain(|name, _| listed(name));
    }

    /// How long slot `name` has been seen at its current version, as of `now`.
    pub(super) fn unchanged_for(&self, name: &str, now: Instant) -> Option<Duration> {
        self.0
            .get(name)
            .map(|(_, since)| now.saturating_duration_since(*since))
    }
}

// Holding: renewals and the renew deadline.

/// When a holder whose last renewal that went through was sent at `renewed` renews next.
pub(super) fn renewal_due(renewed: Instant) -> Instant {
    renewed + RENEW_INTERVAL
}

/// Until when a holder counts itself one: [`RENEW_DEADLINE`] after its last renewal that
/// went through (even while a later one is in flight).
pub(super) fn holds_until(renewed: Instant) -> Instant {
    renewed + RENEW_DEADLINE
}

/// Whether a holder whose renewals have failed since `renewed` still counts itself one
/// at `now`.
pub(super) fn still_holds(renewed: Instant, now: Instant) -> bool {
    now < holds_until(renewed)
}

/// Whether a holder waits before renewing at `now`, and until when: not after a failed
/// renewal (`retry`: it retries at once), else until the renewal is due.
pub(super) fn renew_after(renewed: Instant, retry: bool, now: Instant) -> Option<Instant> {
    let due = renewal_due(renewed);
    (!retry && now < due).then_some(due)
}

// Failure grace.

/// API failures in a row: since when calls have failed (none went through since), and
/// whether this replica keeps its standing meanwhile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Failures {
    since: Option<Instant>,
    /// When the failures began, this replica held a slot or had not been told it has
    /// none: it keeps counting as holding one for a grace period.
    standing_ok: bool,
}

impl Failures {
    /// A call failed at `now`. The failures start if they have not, keeping this
    /// replica's standing if `standing_ok` (it holds a slot, or was never told it has
    /// none).
    pub(super) fn failed(&mut self, now: Instant, standing_ok: bool) {
        if self.since.is_none() {
            self.since = Some(now);
            self.standing_ok = standing_ok;
        }
    }

    /// A call went through (or none is made any more): the failures are over.
    pub(super) fn over(&mut self) {
        self.since = None;
    }

    /// Whether calls are failing.
    pub(super) fn failing(&self) -> bool {
        self.since.is_some()
    }

    /// Until when the failures are tolerated, for a replica that keeps its standing: a
    /// `grace` period after they began. `None`: no failures, or no standing to keep.
    pub(super) fn tolerated_until(&self, grace: Duration) -> Option<Instant> {
        self.since
            .filter(|_| self.standing_ok)
            .map(|since| later(since, grace))
    }
}

/// What this replica's standing is, as the slot task knows it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Standing<'a> {
    /// A limit is in force.
    pub(super) limited: bool,
    /// It holds a slot (within the renew deadline).
    pub(super) holds: bool,
    /// It has an identity of its own (without one it never holds a slot).
    pub(super) has_identity: bool,
    /// The last round completed and found no free slot.
    pub(super) settled_without: bool,
    /// The API failures, if any.
    pub(super) failures: &'a Failures,
}

/// Whether this replica counts as without a slot at `now`: under a limit, holding none,
/// and either told so by a completed round, or without an identity, or failing calls
/// past the tolerated `grace` (at once, if it had no standing to keep).
pub(super) fn without_slot(standing: Standing<'_>, grace: Duration, now: Instant) -> bool {
    if !standing.limited || standing.holds {
        return false;
    }
    if !standing.has_identity {
        return true;
    }
    if !standing.failures.failing() {
        return standing.settled_without;
    }
    standing
        .failures
        .tolerated_until(grace)
        .is_none_or(|until| now >= until)
}

// The fleet's overuse record.

/// `a - b` in whole seconds.
fn signed_secs(a: Timestamp, b: Timestamp) -> i64 {
    a.as_second().saturating_sub(b.as_second())
}

/// What one version of the fleet's overuse record says, on its writer's clock.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Stamps {
    /// Its `renewTime`.
    pub(super) renewed: Option<Timestamp>,
    /// Its [`OVERUSE_SINCE`](super::OVERUSE_SINCE).
    pub(super) since: Option<Timestamp>,
    /// Its [`SLOT_TAKEN_AT`](super::SLOT_TAKEN_AT).
    pub(super) taken: Option<Timestamp>,
}

/// The fleet's overuse record as this replica reads it: plain times, on this replica's
/// clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Overuse {
    /// When this replica first listed the record (any version).
    pub(super) first_seen: Instant,
    /// When this replica first saw the current version (on the task's and the judge's
    /// monotonic clocks).
    pub(super) version_seen: Instant,
    pub(super) version_seen_mono: Duration,
    /// The overuse's age when this replica first saw that version: its `renewTime` minus
    /// its `overuse-since` (both on the writer's clock), plus the time since the write by
    /// this replica's clock when the two agree within [`CLOCK_TOLERANCE`].
    pub(super) age_at_write: Duration,
    /// How long before this replica first saw that version a waiting replica last got a
    /// slot (`slot-taken-at`, on the writer's clock, as `age_at_write`).
    pub(super) taken_ago_at_write: Option<Duration>,
    /// The writer's `renewTime` was within a lease duration (and the clock tolerance) of
    /// this replica's wall clock when the version was first seen.
    pub(super) recent_by_clocks: bool,
}

impl Overuse {
    /// Reads a version of the record first seen at `seen` (`seen_mono` on the judge's
    /// clock) with this replica's wall clock at `wall`; `first_seen`: when an earlier
    /// version was first seen, if one was.
    pub(super) fn read(
        stamps: Stamps,
        wall: Timestamp,
        seen: Instant,
        seen_mono: Duration,
        first_seen: Option<Instant>,
    ) -> Self {
        let Stamps {
            renewed,
            since,
            taken,
        } = stamps;
        // A record without its timestamps (written by hand, say) counts as just begun.
        let age_at_write = match (renewed, since) {
            (Some(renewed), Some(since)) => signed_secs(renewed, since).max(0),
            _ => 0,
        };
        let window = (LEASE_DURATION + CLOCK_TOLERANCE).as_secs() as i64;
        // (A renewal stamped ahead of our clock is recent: a clock set back must not make
        // the fleet's record look old.)
        let since_write = renewed.map(|r| signed_secs(wall, r));
        let recent_by_clocks = since_write.is_some_and(|d| d <= window);
        // The time between the write and this sight, by the clocks, where they can say
        // (bounded by the window: a live record was renewed within it); nothing else.
        let since_write = since_write.filter(|_| recent_by_clocks).unwrap_or(0).max(0);
        Self {
            first_seen: first_seen.unwrap_or(seen),
            version_seen: seen,
            version_seen_mono: seen_mono,
            age_at_write: Duration::from_secs(age_at_write.unsigned_abs())
                .saturating_add(Duration::from_secs(since_write.unsigned_abs())),
            taken_ago_at_write: match (renewed, taken) {
                (Some(renewed), Some(taken)) => Some(Duration::from_secs(
                    (signed_secs(renewed, taken).max(0) + since_write).unsigned_abs(),
                )),
                _ => None,
            },
            recent_by_clocks,
        }
    }

    /// Whether the record shows a fleet over its limit now: renewed within a lease
    /// duration, by this replica's own observation when it has watched the record for
    /// that long (a version that changed meanwhile, or did not), else by the writer's
    /// timestamp. A record left behind when the fleet came within its limit again goes
    /// stale a lease duration after its last renewal.
    pub(super) fn live(&self, now: Instant) -> bool {
        let changed_while_watched = self.version_seen > self.first_seen;
        if now.saturating_duration_since(self.version_seen) < LEASE_DURATION
            && changed_while_watched
        {
            return true;
        }
        now.saturating_duration_since(self.first_seen) < LEASE_DURATION && self.recent_by_clocks
    }

    /// How long ago a waiting replica last got a slot, as of `now`, if the record says.
    pub(super) fn taken_ago(&self, now: Instant) -> Option<Duration> {
        self.taken_ago_at_write
            .map(|ago| ago.saturating_add(now.saturating_duration_since(self.version_seen)))
    }

    /// Whether waiting replicas have been getting slots (within a lease duration and the
    /// clock tolerance): the fleet is turning over, as in a rollout, and a replica new to
    /// it may settle.
    pub(super) fn turning_over(&self, now: Instant) -> bool {
        self.taken_ago(now)
            .is_some_and(|ago| ago < LEASE_DURATION + CLOCK_TOLERANCE)
    }

    /// The overuse's age now.
    pub(super) fn age(&self, now: Instant) -> Duration {
        self.age_at_write
            .saturating_add(now.saturating_duration_since(self.version_seen))
    }
}

/// What a waiting replica writes into the fleet's overuse record at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OveruseWrite {
    /// The overuse's age (written as `overuse-since`, that long before the writer's
    /// `renewTime`).
    pub(super) age: Duration,
    /// How long ago a waiting replica last got a slot, if one did (written as
    /// `slot-taken-at`).
    pub(super) taken_ago: Option<Duration>,
}

/// What this replica, waiting since `waiting_since`, writes into the fleet's overuse
/// record at `now`: it carries on the record if it is `live` (the older of its age and
/// this replica's own wait), or starts one. `taken`: this replica, which waited, has just
/// got a slot (the last time one did is now).
pub(super) fn overuse_write(
    record: Option<&Overuse>,
    waiting_since: Instant,
    taken: bool,
    now: Instant,
) -> OveruseWrite {
    let own_age = now.saturating_duration_since(waiting_since);
    let live = record.filter(|r| r.live(now));
    OveruseWrite {
        age: live.map_or(own_age, |r| r.age(now).max(own_age)),
        taken_ago: if taken {
            Some(Duration::ZERO)
        } else {
            live.and_then(|r| r.taken_ago(now))
        },
    }
}

/// The slot task's word to the judge at `now`: `without` a slot or not, whether it
/// `ever_held` one, and, for a replica without one, the fleet's overuse `record` if it
/// is live.
pub(super) fn slot_word(
    without: bool,
    ever_held: bool,
    record: Option<&Overuse>,
    now: Instant,
) -> SlotWord {
    let live = record.filter(|r| without && r.live(now));
    SlotWord {
        without,
        ever_held,
        fleet_waited: live.map(|r| (r.age_at_write, r.version_seen_mono)),
        fleet_turning_over: live.is_some_and(|r| r.turning_over(now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn me() -> Identity {
        Identity::new("web-1_uid-1".into(), "0123456789abcdef".into())
    }

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    #[test]
    fn a_released_slot_or_our_own_may_be_taken_at_once() {
        let me = me();
        for holder in [None, Some("")] {
            assert!(may_take_over(holder, Some(&me), None));
            assert!(
                may_take_over(holder, None, None),
                "even without an identity"
            );
        }
        assert!(may_take_over(Some(&me.full), Some(&me), None));
        assert!(may_take_over(
            Some(&me.full),
            Some(&me),
            Some(Duration::ZERO)
        ));
    }

    #[test]
    fn a_held_slot_expires_after_a_lease_duration_of_our_own_time() {
        let me = me();
        let holder = "web-2_uid-2_fedcba9876543210";
        let stranger = Some(holder);
        assert_eq!(expiry(&me, holder), LEASE_DURATION);
        assert!(!may_take_over(stranger, Some(&me), None), "never observed");
        assert!(!may_take_over(
            stranger,
            Some(&me),
            Some(LEASE_DURATION - S)
        ));
        assert!(may_take_over(stranger, Some(&me), Some(LEASE_DURATION)));
        assert!(
            !may_take_over(stranger, None, Some(LEASE_DURATION * 10)),
            "without an identity a held slot is never ours to take"
        );
    }

    #[test]
    fn another_process_of_this_pod_is_taken_over_sooner_than_a_stranger() {
        let me = me();
        let sibling = "web-1_uid-1_fedcba9876543210";
        assert_eq!(expiry(&me, sibling), SAME_POD_TAKEOVER);
        assert!(!may_take_over(
            Some(sibling),
            Some(&me),
            Some(SAME_POD_TAKEOVER - S)
        ));
        assert!(may_take_over(
            Some(sibling),
            Some(&me),
            Some(SAME_POD_TAKEOVER)
        ));
        // Longer than a holder cut off from the API server may count itself one.
        assert!(SAME_POD_TAKEOVER > RENEW_DEADLINE + CALL_TIMEOUT);
        assert!(SAME_POD_TAKEOVER < LEASE_DURATION);
        assert!(RENEW_DEADLINE + CALL_TIMEOUT < LEASE_DURATION);
    }

    #[test]
    fn a_lease_duration_runs_from_the_first_sight_of_a_version() {
        let t0 = Instant::now();
        let mut versions = Versions::default();
        assert_eq!(versions.unchanged_for("a-slot-0", t0), None);
        versions.see("a-slot-0", "1".into(), t0);
        versions.see("a-slot-0", "1".into(), t0 + 30 * S);
        assert_eq!(
            versions.unchanged_for("a-slot-0", t0 + 60 * S),
            Some(60 * S)
        );
        versions.see("a-slot-0", "2".into(), t0 + 61 * S);
        assert_eq!(versions.unchanged_for("a-slot-0", t0 + 70 * S), Some(9 * S));
        // (Never negative: an observation later than `now` is unchanged for no time.)
        assert_eq!(versions.unchanged_for("a-slot-0", t0), Some(Duration::ZERO));
        versions.see("a-slot-1", "7".into(), t0);
        versions.keep(|name| name == "a-slot-1");
        assert_eq!(versions.unchanged_for("a-slot-0", t0), None);
        assert!(versions.unchanged_for("a-slot-1", t0).is_some());
    }

    #[test]
    fn a_holder_renews_on_schedule_and_counts_until_the_deadline() {
        let renewed = Instant::now();
        assert_eq!(renewal_due(renewed), renewed + RENEW_INTERVAL);
        assert_eq!(
            renew_after(renewed, false, renewed + S),
            Some(renewed + RENEW_INTERVAL)
        );
        assert_eq!(renew_after(renewed, false, renewed + RENEW_INTERVAL), None);
        assert_eq!(renew_after(renewed, true, renewed + S), None, "a retry");
        assert_eq!(holds_until(renewed), renewed + RENEW_DEADLINE);
        assert!(still_holds(renewed, renewed + RENEW_DEADLINE - S));
        assert!(!still_holds(renewed, renewed + RENEW_DEADLINE));
    }

    #[test]
    fn failures_are_tolerated_for_a_grace_period_from_the_first() {
        let t0 = Instant::now();
        let grace = 600 * S;
        let mut failures = Failures::default();
        assert!(!failures.failing());
        assert_eq!(failures.tolerated_until(grace), None);
        failures.failed(t0, true);
        failures.failed(t0 + 100 * S, false); // a later failure changes nothing
        assert!(failures.failing());
        assert_eq!(failures.tolerated_until(grace), Some(t0 + grace));
        assert!(
            failures.tolerated_until(Duration::MAX).is_some(),
            "no overflow"
        );
        failures.over();
        assert!(!failures.failing());
        assert_eq!(failures.tolerated_until(grace), None);
        failures.failed(t0, false);
        assert_eq!(failures.tolerated_until(grace), None, "no standing to keep");
    }

    #[test]
    fn who_counts_as_without_a_slot() {
        let t0 = Instant::now();
        let grace = 600 * S;
        let none = Failures::default();
        let mut kept = Failures::default();
        kept.failed(t0, true);
        let mut lost = Failures::default();
        lost.failed(t0, false);
        let standing = |limited, holds, has_identity, settled_without, failures| Standing {
            limited,
            holds,
            has_identity,
            settled_without,
            failures,
        };
        let at = |s, now| without_slot(s, grace, now);
        // No limit, or a slot held: never without.
        assert!(!at(standing(false, false, false, true, &lost), t0));
        assert!(!at(standing(true, true, false, true, &lost), t0));
        // Without an identity: always without.
        assert!(at(standing(true, false, false, false, &none), t0));
        // Calls going through: as the last round found.
        assert!(!at(standing(true, false, true, false, &none), t0));
        assert!(at(standing(true, false, true, true, &none), t0));
        // Calls failing: a grace period for a replica with standing, none for another.
        assert!(!at(
            standing(true, false, true, true, &kept),
            t0 + grace - S
        ));
        assert!(at(standing(true, false, true, false, &kept), t0 + grace));
        assert!(at(standing(true, false, true, false, &lost), t0));
    }

    #[test]
    fn the_overuse_record_is_read_by_the_writers_own_clock() {
        let t0 = Instant::now();
        let stamps = Stamps {
            renewed: Some(ts(100)),
            since: Some(ts(10)),
            taken: Some(ts(95)),
        };
        // Read 5 s after the write by our clock: 90 s old then, plus those 5 s.
        let read = Overuse::read(stamps, ts(105), t0, 7 * S, None);
        assert_eq!(read.age_at_write, 95 * S);
        assert_eq!(read.taken_ago_at_write, Some(10 * S));
        assert!(read.recent_by_clocks);
        assert_eq!((read.first_seen, read.version_seen_mono), (t0, 7 * S));
        assert_eq!(read.age(t0 + 10 * S), 105 * S);
        // A reader behind the writer counts the time since the write as none.
        let behind = Overuse::read(stamps, ts(50), t0, 7 * S, Some(t0 - S));
        assert_eq!(behind.age_at_write, 90 * S);
        assert_eq!(behind.first_seen, t0 - S);
        // One far ahead finds it old: it counts none of that either.
        let ahead = Overuse::read(stamps, ts(100 + 91), t0, 7 * S, None);
        assert!(!ahead.recent_by_clocks);
        assert_eq!(ahead.age_at_write, 90 * S);
        // A record without its timestamps counts as just begun.
        let bare = Overuse::read(Stamps::default(), ts(0), t0, 7 * S, None);
        assert_eq!(
            (bare.age_at_write, bare.taken_ago_at_write),
            (Duration::ZERO, None)
        );
        assert!(!bare.recent_by_clocks && !bare.live(t0));
    }

    #[test]
    fn the_overuse_record_goes_stale_a_lease_duration_after_its_last_renewal() {
        let t0 = Instant::now();
        let stamps = Stamps {
            renewed: Some(ts(0)),
            since: Some(ts(0)),
            taken: None,
        };
        let first = Overuse::read(stamps, ts(0), t0, Duration::ZERO, None);
        assert!(first.live(t0 + LEASE_DURATION - S));
        assert!(!first.live(t0 + LEASE_DURATION));
        // A version that changed while watched is live a lease duration from its sight.
        let next = Overuse::read(stamps, ts(0), t0 + 50 * S, Duration::ZERO, Some(t0));
        assert!(next.live(t0 + 50 * S + LEASE_DURATION - S));
        assert!(!next.live(t0 + 50 * S + LEASE_DURATION));
    }

    #[test]
    fn a_waiter_writes_the_older_age_and_when_a_slot_was_last_taken() {
        let t0 = Instant::now();
        let stamps = Stamps {
            renewed: Some(ts(0)),
            since: Some(ts(-100)),
            taken: Some(ts(-20)),
        };
        let record = Overuse::read(stamps, ts(0), t0, Duration::ZERO, None);
        let now = t0 + 10 * S;
        assert_eq!(
            overuse_write(Some(&record), now - 5 * S, false, now),
            OveruseWrite {
                age: 110 * S,
                taken_ago: Some(30 * S)
            }
        );
        assert_eq!(
            overuse_write(Some(&record), t0 - 300 * S, true, now),
            OveruseWrite {
                age: 310 * S,
                taken_ago: Some(Duration::ZERO)
            }
        );
        // A stale record is not carried on.
        let late = t0 + LEASE_DURATION;
        assert_eq!(
            overuse_write(Some(&record), late - 5 * S, false, late),
            OveruseWrite {
                age: 5 * S,
                taken_ago: None
            }
        );
        assert_eq!(overuse_write(None, now, false, now).age, Duration::ZERO);
    }

    #[test]
    fn the_judge_hears_of_a_live_record_only_while_without_a_slot() {
        let t0 = Instant::now();
        let stamps = Stamps {
            renewed: Some(ts(0)),
            since: Some(ts(-30)),
            taken: Some(ts(-10)),
        };
        let record = Overuse::read(stamps, ts(0), t0, 3 * S, None);
        let word = slot_word(true, false, Some(&record), t0 + S);
        assert_eq!(word.fleet_waited, Some((30 * S, 3 * S)));
        assert!(word.fleet_turning_over);
        let later_on = t0 + (LEASE_DURATION + CLOCK_TOLERANCE) - 10 * S;
        assert!(!record.turning_over(later_on));
        assert_eq!(
            slot_word(false, true, Some(&record), t0),
            SlotWord::from(false)
        );
        assert_eq!(slot_word(true, true, None, t0), SlotWord::from(true));
        let stale = slot_word(true, false, Some(&record), t0 + LEASE_DURATION);
        assert_eq!(
            (stale.fleet_waited, stale.fleet_turning_over),
            (None, false)
        );
    }
}
