//! The reads of the source and the license set chosen from them: what was read, what is
//! in force, what has been announced, and how failures are reported.

use std::collections::HashSet;
use std::sync::Arc;

use super::notices::Notices;
use super::set::{self, Line, Member};
use super::throttle::Throttle;
use super::{Cx, Events, Read};
use crate::event::LicenseEvent;
use crate::token::{Claims, IAT_TOLERANCE_SECS, LicenseError};
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
}

impl Reads {
    /// The last read's problem, if it had one.
    pub(super) fn problem(&self) -> Option<&LicenseError> {
        self.problem.as_ref()
    }

    /// The licenses of the set.
    pub(super) fn licenses(&self) -> Vec<Arc<Claims>> {
        self.set.iter().map(|m| Arc::clone(&m.claims)).collect()
    }

    /// The set's customer, if there is a set.
    pub(super) fn customer(&self) -> Option<&str> {
        self.set.first().map(|m| m.claims.customer.as_str())
    }

    /// Whether a license of the set is in force at `now`.
    pub(super) fn in_force(&self, now: i64) -> bool {
        self.set
            .iter()
            .any(|m| m.claims.nbf.is_none_or(|nbf| nbf <= now) && now < m.claims.ends())
    }

    /// Whether the candidates or the set hold the license `jti`.
    pub(super) fn holds(&self, jti: &str) -> bool {
        self.candidates
            .iter()
            .map(|(_, m)| m)
            .chain(self.set.iter())
            .any(|m| m.claims.jti.as_deref() == Some(jti))
    }

    /// Chooses the set from the candidates at trusted `now`: the set's customer can
    /// change with time alone (a renamed renewal starts).
    pub(super) fn choose(&mut self, now: i64) {
        (self.set, _) = set::choose(&self.candidates, now);
    }

    /// The floor the set's signed `iat`s put under trusted time, if any.
    pub(super) fn issue_floor(&self) -> Option<i64> {
        self.set
            .iter()
            .filter_map(|m| m.claims.iat)
            .max()
            .map(|iat| iat.saturating_sub(IAT_TOLERANCE_SECS))
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
        // Licenses that supersede others revoke them from when they start; then every
        // revocation known applies to the lines, before the set is chosen from them.
        for line in &lines {
            if let Ok(claims) = &line.verified {
                let at = claims.nbf.or(claims.iat).unwrap_or(now);
                for jti in &claims.supersedes {
                    if claims.jti.as_ref() != Some(jti) {
                        notices.learn_revocation(jti, at, None, self, cx.events);
                    }
                }
            }
        }
        let lines: Vec<Line> = lines
            .into_iter()
            .map(|mut line| {
                if let Ok(claims) = &line.verified {
                    line.verified = Ok(notices.revoked_claims(claims));
                }
                line
            })
            .collect();
        let selection = set::select(&lines, &self.set, now);
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
        // one in force. (With no license at all they wait for one.)
        let customer = selection
            .members
            .first()
            .or(self.set.first())
            .map(|m| m.claims.customer.clone());
        notices.judge(&notice_lines, customer.as_deref(), self, cx);
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
        changed
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
