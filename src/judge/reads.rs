//! The reads of the source and the license set chosen from them: what was read, what is
//! in force, what has been announced, and how failures are reported.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::floors::Floors;
use super::notices::Notices;
use super::set::{self, Line, Member};
use super::throttle::Throttle;
use super::{Cx, Events, Read};
use crate::event::LicenseEvent;
use crate::token::{Claims, LicenseError};
use crate::verdict::Verdict;

/// The reads judged so far and the set they give.
#[derive(Debug, Default)]
pub(super) struct Reads {
    /// What the last good read brought: the set is chosen from these at every check.
    candidates: set::Candidates,
    /// The license set: the licenses of the set's customer among the candidates (in
    /// force, held for later, or expired), in canonical order.
    pub(super) set: Vec<Member>,
    /// Tokens `license.loaded` has announced (by fingerprint), so that each is announced
    /// once, when it comes into force.
    announced: HashSet<String>,
    /// The last read's problem, while the source does not hold the license in force.
    problem: Option<LicenseError>,
    /// How many reads in a row had a problem (for `license.recovered`).
    failed_reads: u64,
    /// The last failure reported (what was read), so that an unchanged bad source is
    /// reported at most once per check interval, whatever storm of `check_now` or SIGHUP
    /// comes in between.
    failure_reported: Option<(String, Throttle)>,
    /// Signed instants as floors, each for judging the license it concerns.
    floors: Floors,
}

impl Reads {
    /// The last read's problem, if it had one.
    pub(super) fn problem(&self) -> Option<&LicenseError> {
        self.problem.as_ref()
    }

    /// The set's customer, if there is a set.
    pub(super) fn customer(&self) -> Option<&str> {
        self.set.first().map(|m| m.claims.customer.as_str())
    }

    /// Whether the candidates or the set hold the license `jti`.
    pub(super) fn holds(&self, jti: &str) -> bool {
        self.candidates
            .iter()
            .map(|(_, m)| m)
            .chain(self.set.iter())
            .any(|m| m.claims.jti.as_deref() == Some(jti))
    }

    /// The candidates as judged at trusted second `at`: each at its own floor.
    fn judged_candidates(&self, at: i64, mono: Duration) -> set::Candidates {
        self.candidates
            .iter()
            .map(|(line, m)| {
                let claims = self.floors.judged_one(m, at, mono);
                let print = m.print.clone();
                (*line, Member { claims, print })
            })
            .collect()
    }

    /// Brings the floors up to date at monotonic reading `mono` (`notices`: the
    /// revocations learned).
    pub(super) fn update_floors(&mut self, mono: Duration, notices: &Notices) {
        self.floors.update(
            self.candidates
                .iter()
                .map(|(_, m)| m)
                .chain(self.set.iter()),
            &notices.revoked,
            mono,
        );
    }

    /// The candidates of each customer as judged at trusted second `at` (each license at
    /// its own floor: a license signed days ahead counts by what it gives there), by
    /// customer name, in canonical order: what the set is chosen from.
    pub(super) fn by_customer(&self, at: i64, mono: Duration) -> Vec<(String, Vec<Member>)> {
        let judged = self.judged_candidates(at, mono);
        let mut customers: Vec<String> = judged
            .iter()
            .map(|(_, m)| m.claims.customer.clone())
            .collect();
        customers.sort_unstable();
        customers.dedup();
        customers
            .into_iter()
            .map(|customer| {
                let mut members: Vec<Member> = judged
                    .iter()
                    .filter(|(_, m)| m.claims.customer == customer)
                    .map(|(_, m)| m.clone())
                    .collect();
                set::canonical(&mut members);
                (customer, members)
            })
            .collect()
    }

    /// Whether no license at all was read (the set is then empty).
    pub(super) fn no_candidates(&self) -> bool {
        self.candidates.is_empty()
    }

    /// Makes the licenses of `chosen` (judged copies) the set, as signed.
    pub(super) fn set_chosen(&mut self, chosen: &[Member]) {
        self.set = self.originals(chosen);
    }

    /// The candidates whose fingerprints `chosen` holds, as signed (in `chosen`'s order).
    fn originals(&self, chosen: &[Member]) -> Vec<Member> {
        chosen
            .iter()
            .filter_map(|c| {
                self.candidates
                    .iter()
                    .find(|(_, m)| m.print == c.print)
                    .map(|(_, m)| m.clone())
            })
            .collect()
    }

    /// The set's licenses as judged at trusted `now` (each at its own floor): what the
    /// verdict is evaluated from.
    pub(super) fn judged(&self, now: i64, mono: Duration) -> Vec<Arc<Claims>> {
        self.floors.judged(&self.set, now, mono)
    }

    /// Licenses that supersede others revoke them from when they start: for good once
    /// started by hard evidence (`hard_now`: never by a provisional or unconfirmed
    /// reading, so a clock ahead at boot leaves nothing permanent behind), and meanwhile
    /// as pending (the license in force ends at its successor's start). A license revoked
    /// before it starts supersedes nothing, so a renewal withdrawn before it began leaves
    /// the license it was to replace in force. Worked out again at every check (a
    /// successor starts with time alone). Returns whether the revocations changed.
    pub(super) fn supersessions(
        &mut self,
        now: i64,
        hard_now: Option<i64>,
        notices: &mut Notices,
        events: &mut Events,
    ) -> bool {
        let mut pending: BTreeMap<String, i64> = BTreeMap::new();
        let mut started = Vec::new();
        let before = notices.revoked.clone();
        for member in self
            .candidates
            .iter()
            .map(|(_, m)| m)
            .chain(self.set.iter())
        {
            let claims = &member.claims;
            if claims.supersedes.is_empty() {
                continue;
            }
            // (A successor with no start of its own starts when it is first seen.)
            let (at, started_at) = match claims.nbf.or(claims.iat) {
                Some(at) => (at, hard_now.unwrap_or(i64::MIN)),
                None => (now, now),
            };
            let own = claims.jti.as_ref().and_then(|jti| notices.revoked.get(jti));
            if own.is_some_and(|&revoked| revoked <= at) {
                continue;
            }
            for jti in &claims.supersedes {
                if claims.jti.as_ref() == Some(jti) {
                    continue;
                }
                if at <= started_at {
                    started.push((jti.clone(), at));
                    continue;
                }
                if notices.revoked.get(jti) == Some(&at) {
                    // Learned for good while evidence said the successor had started,
                    // which evidence no longer says (a vendor's attestation showed the
                    // mark wrong): pending again, until the successor really starts.
                    notices.revoked.remove(jti);
                }
                let entry = pending.entry(jti.clone()).or_insert(at);
                *entry = (*entry).min(at);
            }
        }
        for (jti, at) in started {
            notices.learn_revocation(&jti, at, None, self, events);
        }
        let changed = notices.revoked != before || notices.superseded != pending;
        notices.superseded = pending;
        if changed {
            self.apply_revocations(notices);
        }
        changed
    }

    /// The highest floor the set's signed `iat`s put under real time, if any (for
    /// reporting a wall behind it, and judging an attestation's expiry).
    pub(super) fn issue_floor(&self) -> Option<i64> {
        Floors::issue_floor(&self.set)
    }

    /// Judges one read of the source (its notices by `notices`). Returns whether the set
    /// changed.
    pub(super) fn judge(&mut self, read: Read, notices: &mut Notices, cx: &mut Cx<'_>) -> bool {
        let before = self.problem.as_ref().map(LicenseError::reason);
        let first = cx.events.len();
        let changed = self.judge_read(read, notices, cx);
        let after = self.problem.as_ref().map(LicenseError::reason);
        match (before, after) {
            (Some(previous_reason), None) => {
                // Before the read's own events: the fix, then what it brought in.
                cx.events.insert(
                    first,
                    LicenseEvent::Recovered {
                        previous_reason,
                        failed_checks: self.failed_reads,
                        source: cx.config.source.clone(),
                    },
                );
                self.failed_reads = 0;
            }
            (_, Some(_)) => self.failed_reads = self.failed_reads.saturating_add(1),
            (None, None) => {}
        }
        if after.is_none() {
            // A failure after a good read is news, whatever it reads.
            self.failure_reported = None;
        }
        changed
    }

    fn judge_read(&mut self, read: Read, notices: &mut Notices, cx: &mut Cx<'_>) -> bool {
        let source = cx.config.source.clone();
        let kept_previous = !self.set.is_empty();
        let (lines, notice_lines) = match read {
            Read::Lines(lines, notice_lines) if lines.is_empty() && !notice_lines.is_empty() => {
                // Notices alone are no license (and need one to be judged for).
                let detail = format!("{source} holds vendor notices but no license");
                let missing = Read::Failed(LicenseError::Missing { detail });
                return self.judge_read(missing, notices, cx);
            }
            Read::Lines(lines, notice_lines) => (lines, notice_lines),
            Read::Failed(error) => {
                if self.report_failure(error.to_string(), cx) {
                    cx.events.push_back(match error {
                        LicenseError::Missing { .. } => LicenseEvent::Missing {
                            error: error.clone(),
                            source,
                            kept_previous,
                        },
                        _ => LicenseEvent::VerificationFailed {
                            error: error.clone(),
                            source,
                            kept_previous,
                            line: None,
                            fingerprint: None,
                        },
                    });
                }
                self.problem = Some(error);
                return false;
            }
        };
        let now = cx.time.now_secs();
        let revoked_before = notices.revoked.clone();
        // Every revocation known applies to the lines, before the set is chosen from them.
        // (What the read's licenses supersede is worked out once its notices are judged.)
        let lines: Vec<Line> = lines
            .into_iter()
            .map(|mut line| {
                if let Ok(claims) = &line.verified {
                    line.verified = Ok(notices.revoked_claims(claims));
                }
                line
            })
            .collect();
        let grace = i64::try_from(cx.config.grace_period.as_secs()).unwrap_or(i64::MAX);
        let selection = set::select(&lines, &self.set, now, grace);
        let counts = !selection.members.is_empty() || kept_previous;
        if !selection.refused.is_empty() {
            // What was read, to tell an unchanged bad source from a new one.
            let key: Vec<&str> = lines.iter().map(|l| l.print.as_str()).collect();
            if self.report_failure(key.join(","), cx) {
                for (line, print, error) in &selection.refused {
                    cx.events.push_back(LicenseEvent::VerificationFailed {
                        error: error.clone(),
                        source: source.clone(),
                        kept_previous: counts,
                        line: Some(*line),
                        fingerprint: Some(print.clone()),
                    });
                }
            }
        }
        self.problem = selection.problem();
        // Notices are judged for the set's customer: the one this read brings, else the
        // one in force. (With no license at all they wait for one.) The other customers
        // with a license in the read may still be chosen at this very check
        // (`Judge::best_set` judges each with its revocations): what their notices revoke
        // must be known by then.
        let customer = selection
            .members
            .first()
            .or(self.set.first())
            .map(|m| m.claims.customer.clone());
        let mut others: Vec<&str> = Vec::new();
        for (_, member) in &selection.candidates {
            let name = member.claims.customer.as_str();
            if Some(name) != customer.as_deref() && !others.contains(&name) {
                others.push(name);
            }
        }
        notices.judge(&notice_lines, customer.as_deref(), &others, self, cx);
        let learned = notices.revoked != revoked_before;
        if selection.members.is_empty() {
            // Wholly bad: the last good set stays (with what the notices revoked).
            let before = self.set.clone();
            if learned {
                self.apply_revocations(notices);
            }
            return self.set != before;
        }
        let changed = selection.members != self.set || learned;
        self.set = selection.members;
        self.candidates = selection.candidates;
        if learned {
            self.apply_revocations(notices);
        }
        let set = &self.set;
        self.announced.retain(|p| set.iter().any(|m| m.print == *p));
        self.supersessions(now, cx.time.hard_now_secs(), notices, cx.events) || changed
    }

    /// Applies the revocations `notices` knows to the candidates and the set.
    fn apply_revocations(&mut self, notices: &Notices) {
        let revoked = |m: &Member| Member {
            claims: notices.revoked_claims(&m.claims),
            print: m.print.clone(),
        };
        let candidates = std::mem::take(&mut self.candidates);
        self.candidates = candidates
            .into_iter()
            .map(|(line, m)| (line, revoked(&m)))
            .collect();
        self.set = self.set.iter().map(revoked).collect();
    }

    /// Whether a failure reading `what` is to be reported now: a new one, or one last
    /// reported a check interval ago or more.
    fn report_failure(&mut self, what: String, cx: &Cx<'_>) -> bool {
        let every = cx.config.check_interval;
        match &mut self.failure_reported {
            Some((last, throttle)) if *last == what => throttle.ready(cx.mono, every),
            _ => {
                self.failure_reported = Some((what, Throttle::since(cx.mono)));
                true
            }
        }
    }

    /// `license.loaded` for each license that is in force now and has not been
    /// announced: a new one read now, or a held one whose `nbf` has come.
    pub(super) fn announce(&mut self, verdict: &Verdict, events: &mut Events) {
        for claims in &verdict.licenses {
            let Some(member) = self.set.iter().find(|m| Arc::ptr_eq(&m.claims, claims)) else {
                continue;
            };
            if self.announced.insert(member.print.clone()) {
                events.push_back(LicenseEvent::Loaded {
                    customer: claims.customer.clone(),
                    expires_at: claims.expires_at(),
                    jti: claims.jti.clone(),
                    fingerprint: member.print.clone(),
                });
            }
        }
    }
}
