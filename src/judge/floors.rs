//! Signed instants as floors, each for the token that carries it.
//!
//! A license's signed `iat` says real time is at least that (less five minutes for the
//! vendor's clock), and a revocation's `iat` says real time is at least the revocation.
//! Each lifts time *for judging the license it concerns* and nothing else: an add-on
//! signed by a vendor whose clock is days fast never ends the main license early, and a
//! revocation notice left in the source keeps the license it revokes revoked when the
//! clock is set back before it, with or without a state file. A floor never raises the
//! mark, is never persisted and never causes manipulation-grace.
//!
//! A floor moves on with monotonic time from when it was first seen (real time is at
//! least the floor then, so at least the floor plus what has elapsed since): a license
//! judged at its floor is shifted by a constant, so its instants stay put and the judge
//! is never woken again and again for a frame that stands still.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::token::{Claims, IAT_TOLERANCE_SECS};
use crate::verdict::Verdict;

use super::set::Member;

/// The floors seen, by the fingerprint of the license they concern.
#[derive(Debug, Default)]
pub(crate) struct Floors {
    /// The floor (trusted seconds) and the monotonic reading it was first seen at.
    seen: HashMap<String, (i64, Duration)>,
}

/// The floor a license's own signed instants put under the time it is judged at: its
/// `iat` (less the tolerance for the vendor's clock) and its revocation (`revoked`: a
/// notice's signed `iat`, or a superseding license's start once it has started; never a
/// successor's start still ahead).
fn own_floor(claims: &Claims, revoked: Option<i64>) -> Option<i64> {
    let iat = claims.iat.map(|iat| iat.saturating_sub(IAT_TOLERANCE_SECS));
    match (iat, revoked) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl Floors {
    /// Records the floors of `set` as of monotonic reading `mono` (a new floor starts
    /// moving from now), and forgets those of licenses no longer in it. `revoked` holds
    /// the revocations learned (by `jti`).
    pub(crate) fn update<'a>(
        &mut self,
        members: impl Iterator<Item = &'a Member> + Clone,
        revoked: &BTreeMap<String, i64>,
        mono: Duration,
    ) {
        self.seen
            .retain(|print, _| members.clone().any(|m| m.print == *print));
        for member in members {
            let at = member
                .claims
                .jti
                .as_ref()
                .and_then(|j| revoked.get(j))
                .copied();
            // (A floor that changed, a revocation learned or withdrawn, starts anew.)
            match own_floor(&member.claims, at) {
                None => {
                    self.seen.remove(&member.print);
                }
                Some(floor)
                    if self
                        .seen
                        .get(&member.print)
                        .is_some_and(|(f, _)| *f == floor) => {}
                Some(floor) => {
                    self.seen.insert(member.print.clone(), (floor, mono));
                }
            }
        }
    }

    /// The floor of the license `print` at monotonic reading `mono`.
    fn floor(&self, print: &str, mono: Duration) -> Option<i64> {
        let (floor, seen) = self.seen.get(print)?;
        let elapsed = i64::try_from(mono.saturating_sub(*seen).as_secs()).unwrap_or(i64::MAX);
        Some(floor.saturating_add(elapsed))
    }

    /// The licenses of `set` as judged at trusted second `at`: each whose floor is later
    /// is moved back by the difference, so that judging it at `at` is judging it at its
    /// floor. (Licenses without such a floor are the same `Arc`.)
    pub(crate) fn judged(&self, set: &[Member], at: i64, mono: Duration) -> Vec<Arc<Claims>> {
        set.iter().map(|m| self.judged_one(m, at, mono)).collect()
    }

    /// One license as judged at trusted second `at` (see [`judged`](Self::judged)).
    pub(crate) fn judged_one(&self, member: &Member, at: i64, mono: Duration) -> Arc<Claims> {
        match self.floor(&member.print, mono) {
            Some(floor) if floor > at => shifted(&member.claims, floor.saturating_sub(at)),
            _ => Arc::clone(&member.claims),
        }
    }

    /// The highest `iat` floor of `set` now (for reporting a wall clock behind it).
    pub(crate) fn issue_floor(set: &[Member]) -> Option<i64> {
        set.iter()
            .filter_map(|m| m.claims.iat)
            .max()
            .map(|iat| iat.saturating_sub(IAT_TOLERANCE_SECS))
    }
}

/// `claims` with every instant moved back by `by` seconds.
fn shifted(claims: &Claims, by: i64) -> Arc<Claims> {
    let mut moved = claims.clone();
    moved.exp = moved.exp.saturating_sub(by);
    moved.nbf = moved.nbf.map(|t| t.saturating_sub(by));
    moved.iat = moved.iat.map(|t| t.saturating_sub(by));
    moved.revoked_at = moved.revoked_at.map(|t| t.saturating_sub(by));
    Arc::new(moved)
}

/// Puts the licenses of `set` back in `verdict` where it holds their judged copies, so
/// that the claims a verdict shows are the signed ones (its instants, `expires_at` and
/// the grace bounds, stay as judged).
pub(crate) fn restore(verdict: &mut Verdict, judged: &[Arc<Claims>], set: &[Member]) {
    let original = |claims: &Arc<Claims>| {
        judged
            .iter()
            .position(|j| Arc::ptr_eq(j, claims))
            .and_then(|i| set.get(i))
            .map_or_else(|| Arc::clone(claims), |m| Arc::clone(&m.claims))
    };
    for claims in verdict
        .licenses
        .iter_mut()
        .chain(verdict.upcoming.iter_mut())
        .chain(verdict.claims.iter_mut())
    {
        *claims = original(claims);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(print: &str, claims: Claims) -> Member {
        Member {
            claims: Arc::new(claims),
            print: print.into(),
        }
    }

    #[test]
    fn a_floor_lifts_only_its_own_license_and_moves_on_with_monotonic_time() {
        let mut addon = Claims::new("Acme", 10_000_000);
        addon.iat = Some(1_000_000);
        let main = Claims::new("Acme", 600_000);
        let set = [member("main", main), member("addon", addon)];
        let mut floors = Floors::default();
        floors.update(set.iter(), &BTreeMap::new(), Duration::from_secs(100));
        let judged = floors.judged(&set, 500_000, Duration::from_secs(100));
        assert!(
            Arc::ptr_eq(&judged[0], &set[0].claims),
            "the main license as it is"
        );
        let by = 1_000_000 - IAT_TOLERANCE_SECS - 500_000;
        assert_eq!(judged[1].exp, 10_000_000 - by);
        // An hour later, trusted time and the floor have both moved on: the same shift.
        let later = floors.judged(&set, 503_600, Duration::from_secs(3_700));
        assert_eq!(later[1].exp, 10_000_000 - by);
        // Once trusted time is past the floor, nothing is shifted.
        let past = floors.judged(&set, 2_000_000, Duration::from_secs(3_700));
        assert!(Arc::ptr_eq(&past[1], &set[1].claims));
    }

    #[test]
    fn a_revocation_is_a_floor_for_the_license_it_revokes() {
        let mut revoked = Claims::new("Acme", 10_000_000);
        revoked.jti = Some("lic-1".into());
        revoked.revoked_at = Some(1_000_000);
        let set = [member("revoked", revoked)];
        let mut floors = Floors::default();
        // A successor's start still ahead is no floor.
        floors.update(set.iter(), &BTreeMap::new(), Duration::ZERO);
        assert!(Arc::ptr_eq(
            &floors.judged(&set, 900_000, Duration::ZERO)[0],
            &set[0].claims
        ));
        let learned = BTreeMap::from([("lic-1".to_owned(), 1_000_000)]);
        floors.update(set.iter(), &learned, Duration::ZERO);
        // The clock set back three days before the revocation: judged at it, revoked.
        let judged = floors.judged(&set, 1_000_000 - 3 * 86_400, Duration::ZERO);
        assert!(judged[0].revoked());
        assert_eq!(judged[0].ends(), 1_000_000 - 3 * 86_400);
    }
}
