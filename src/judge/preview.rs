//! What the monitor would make of a license source at an instant, without running one.
//!
//! [`preview`] hands a fresh judge (the state machine the monitor's checker drives, with
//! every rule in it) what the checker would hand it: the source's text, read, split into
//! tokens and verified as the checker does, and one clock reading at `now`, on a host
//! whose clock is settled and without a state file. It then reads the verdict, each line's
//! fate and the events back, and lets time alone move on through the judge's own timers
//! to list what the monitor will report and when (alert bands, grace, the cut-off). No
//! rule is written here: the set, the customer, notices, revocations, supersession,
//! grace and alerts are the judge's, so a tool built on this (the `iosetu-license` CLI's
//! `verify`, `inspect` and `timeline`) cannot disagree with the service.
//!
//! What it cannot know is what a running service carries that the text does not: a state
//! file (a notice `seq` accepted earlier, revocations whose lines are gone, a grace
//! anchor, a clock mark), a clock set back or jumped, instance slots. It judges as a
//! service started afresh at `now` would.
//!
//! Two things the judge does show here, for sources of two customers. A first check can
//! judge the notices for the customer whose licenses it does not keep: the verdict then
//! settles at the next full check of the same text, an hour later in a service
//! ([`Preview::start`] and [`Preview::verdict`] tell both). And the judge's wake table
//! holds the instants of the set it chose only: the instant another customer's licenses
//! come to give the better verdict (a renamed renewal installed ahead starting while the
//! old license is in grace) is added to the schedule here, from the judge's own
//! evaluation of each customer; a monitor reaches it at its next wake, within a minute.
//!
//! ```
//! use std::time::{Duration, SystemTime, UNIX_EPOCH};
//! use iosetu_license::preview::{Keys, Standing, preview};
//! use iosetu_license::{Claims, LicenseSigner, LicenseState, LicenseVerifier};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let signer = LicenseSigner::from_seed([7; 32]);
//! let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
//! // An expired license, and its renewal issued under the customer's new name.
//! let old = signer.sign(&Claims::new("Acme Corp", 1_799_000_000));
//! let renewal = signer.sign(&Claims::new("Acme Inc", 1_830_000_000));
//! let verifier = LicenseVerifier::new(vec![signer.public_key()]);
//!
//! let seen = preview(
//!     &format!("{old}\n{renewal}\n"),
//!     Keys::Verify(&verifier),
//!     None,
//!     now,
//!     Duration::from_secs(24 * 3600),
//! );
//! assert_eq!(seen.verdict.state, LicenseState::Valid);
//! assert_eq!(seen.verdict.claims.as_ref().unwrap().customer, "Acme Inc");
//! let line1 = seen.licenses().next().unwrap();
//! assert!(matches!(&line1.standing, Standing::Refused(e) if e.reason() == "customer_mismatch"));
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::timers::Wake;
use super::{
    Judge, JudgeConfig, Line as ReadLine, NoticeLine as ReadNotice, Observation, Read, SlotWord,
};
use crate::clock::Reading;
use crate::event::LicenseEvent;
use crate::token::{self, Claims, LicenseError, LicenseVerifier, Notice, fingerprint};
use crate::verdict::{Verdict, evaluate};

/// How many full checks of the same text [`preview`] makes at most for the verdict to
/// stand (two or three suffice for any source the tests have found).
const MAX_CHECKS: usize = 8;

/// How many wakes [`Preview::schedule`] follows at most: far more than a source of
/// [`MAX_TOKENS`](crate::token::MAX_TOKENS) licenses needs (each brings a few alert bands,
/// a start and an end), so that no input can keep it going.
const MAX_STEPS: usize = 4_096;

/// How the tokens of a source are read.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Keys<'a> {
    /// Verified with this verifier, exactly as the monitor verifies them.
    Verify(&'a LicenseVerifier),
    /// Decoded **without** checking signatures (the claims read by the verifier's rules):
    /// what the tokens *say* they would do, for a timeline drawn up without the public
    /// key. Never a basis for trusting a token.
    Unverified,
}

/// What the monitor would make of a source at an instant. See the [module docs](self).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Preview {
    /// The verdict the monitor reaches and keeps: its state, the license in force that
    /// ends last (`claims`), the licenses in force and held for later, the end of
    /// coverage, the grace bounds and reason, the alert band, the notice `seq` and
    /// revocations.
    pub verdict: Verdict,
    /// The verdict of the monitor's first check, which a service shows until its next
    /// full check (an hour later by default). The same as `verdict`, unless the judge
    /// needs more than one check of the same text to settle: a source of two customers
    /// whose notices the first check judged for the customer it did not keep.
    pub start: Verdict,
    /// The read's problem, as the monitor reports it: why the source could not be read
    /// or holds no license, or the refusal that stands for its refused lines (while other
    /// lines may still count). `None` when every line counted.
    pub problem: Option<LicenseError>,
    /// Why the notice source added no notices, when one was given and could not be used
    /// (it costs the license source nothing).
    pub notice_source_problem: Option<LicenseError>,
    /// Each token of the source, then of the notice source (numbered after the source's
    /// lines, as the monitor numbers them), in line order.
    pub lines: Vec<Line>,
    /// The events the monitor emits at start (its first check, and its next full checks
    /// of the same text until the verdict stands, each reporting every refusal again),
    /// in order.
    pub events: Vec<LicenseEvent>,
    /// What the monitor reports afterwards as time alone moves on, each event with the
    /// trusted instant it is emitted at: alert bands, licenses coming into force or
    /// ending, grace entered and the cut-off, until the judge has no decision left (or a
    /// bound on the number of wakes is reached).
    pub schedule: Vec<Scheduled>,
}

/// One token of a source.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Line {
    /// A license (the header does not say it is a notice).
    License(LicenseLine),
    /// A vendor notice (the header says it is one; every token of a notice source).
    Notice(NoticeLine),
}

impl Line {
    /// The 1-based line number.
    pub fn number(&self) -> usize {
        match self {
            Line::License(l) => l.line,
            Line::Notice(n) => n.line,
        }
    }
}

/// A license line and what the monitor makes of it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LicenseLine {
    /// The 1-based line number.
    pub line: usize,
    /// The claims, when the token verified (or, with [`Keys::Unverified`], decoded): as
    /// signed, with the revocation the monitor applies ([`Claims::revoked_at`]). A line
    /// refused for another customer keeps its claims; one refused for its signature or
    /// shape has none.
    pub claims: Option<Arc<Claims>>,
    /// Where it stands.
    pub standing: Standing,
}

/// Where a license line stands at the instant of the preview.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Standing {
    /// In the set and in force.
    InForce,
    /// In the set, held for later: it comes into force at its `nbf`.
    Held,
    /// In the set and over: expired or revoked (the error says which, and since when).
    Ended(LicenseError),
    /// Not part of the set: refused (its signature, its shape, or another customer's).
    Refused(LicenseError),
}

/// A vendor notice line and what the monitor makes of it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NoticeLine {
    /// The 1-based line number.
    pub line: usize,
    /// The notice, when it verified (or, with [`Keys::Unverified`], decoded).
    pub notice: Option<Arc<Notice>>,
    /// Whether the monitor accepts it.
    pub standing: NoticeStanding,
}

/// Whether the monitor accepts a notice.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum NoticeStanding {
    /// Accepted: the newest for the set's customer (its revocations apply, its
    /// attestation re-based trusted time).
    Accepted,
    /// Refused, with the reason the monitor reports (`license.notice_rejected`). An older
    /// notice of the set's customer is refused as `stale_seq`, and one of another customer
    /// with a license in the source as `customer_mismatch`, but the revocations of both
    /// stand.
    Refused(LicenseError),
    /// Not judged: the source holds no license to judge it for.
    NotJudged,
}

/// An event the monitor emits as time moves on, and when.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Scheduled {
    /// The trusted instant it is emitted at (whole seconds).
    pub at: SystemTime,
    /// The event.
    pub event: LicenseEvent,
}

impl Preview {
    /// The license lines, in line order.
    pub fn licenses(&self) -> impl Iterator<Item = &LicenseLine> {
        self.lines.iter().filter_map(|l| match l {
            Line::License(l) => Some(l),
            Line::Notice(_) => None,
        })
    }

    /// The notice lines, in line order.
    pub fn notices(&self) -> impl Iterator<Item = &NoticeLine> {
        self.lines.iter().filter_map(|l| match l {
            Line::Notice(n) => Some(n),
            Line::License(_) => None,
        })
    }
}

/// What the monitor would make of `source` (a license source's text: one token per line)
/// and `notices` (a separate notice source's text, if the service has one) at `now`,
/// with `grace` the service's grace period: the same judge the monitor runs, started
/// afresh at `now` on a settled clock, without a state file. See the [module docs](self).
///
/// Never panics, whatever the text or the instant.
pub fn preview(
    source: &str,
    keys: Keys<'_>,
    notices: Option<&str>,
    now: SystemTime,
    grace: Duration,
) -> Preview {
    let (read, notice_source_problem) = read(source, notices, keys);
    let first = reading(now, Duration::ZERO);
    let mut judge = Judge::new(config(grace), first);
    // The first check, then the next periodic ones of the same text (at the same instant:
    // time does not matter to them) until the verdict stands: an older notice is refused
    // as stale from the second on, and a set whose customer the first check chose only
    // after judging the notices for another settles later.
    let check = |judge: &mut Judge| {
        let verdict =
            judge.handle_check(first, Observation::Full(read.clone()), SlotWord::default());
        (verdict, drain(judge))
    };
    let (start, events) = check(&mut judge);
    let mut checks = vec![events];
    let mut verdict = Arc::clone(&start);
    for _ in 1..MAX_CHECKS {
        let (next, events) = check(&mut judge);
        checks.push(events);
        let settled = next == verdict;
        verdict = next;
        if settled {
            break;
        }
    }
    let lines = judged_lines(&judge, &read, checks.last().map_or(&[][..], Vec::as_slice));
    let problem = judge.reads.problem().cloned();
    let events = checks.into_iter().flatten().collect();
    let schedule = schedule(&mut judge, now);
    Preview {
        verdict: Verdict::clone(&verdict),
        start: Verdict::clone(&start),
        problem,
        notice_source_problem,
        lines,
        events,
        schedule,
    }
}

/// The judge's settings for a service started with the builder's defaults and `grace`,
/// without a state file, instance slots or a build time.
fn config(grace: Duration) -> JudgeConfig {
    JudgeConfig {
        grace_period: grace,
        drain_period: crate::DEFAULT_DRAIN_PERIOD,
        // Every check reports every refusal again (the monitor does once an interval has
        // passed): the last check tells each line's fate. It only paces reports.
        check_interval: Duration::ZERO,
        fail_closed: false,
        built_at: None,
        source: "preview".into(),
        state_file: false,
        instance_settling: crate::DEFAULT_INSTANCE_SETTLING,
        boot_id: None,
    }
}

/// A settled clock's reading `mono` after a start at wall time `start`.
fn reading(start: SystemTime, mono: Duration) -> Reading {
    Reading {
        wall: start.checked_add(mono).unwrap_or(start),
        mono,
        provisional: false,
        boot_age: None,
    }
}

/// The events the judge has queued.
fn drain(judge: &mut Judge) -> Vec<LicenseEvent> {
    std::iter::from_fn(|| judge.poll_event()).collect()
}

/// The read the checker would hand the judge: the source read as a static source is
/// (trimmed, size-checked), split into tokens, each routed by its header and verified;
/// the notice source's tokens verified as notices and numbered after the source's lines.
/// Also the notice source's fault, if it has one.
fn read(source: &str, notices: Option<&str>, keys: Keys<'_>) -> (Read, Option<LicenseError>) {
    let (notices, fault) =
        match notices.map(|text| token::source_text(text, "the notice text").map(str::to_owned)) {
            None | Some(Err(LicenseError::Missing { .. })) => (Vec::new(), None),
            Some(Err(error)) => (Vec::new(), Some(error)),
            Some(Ok(text)) => match token::tokens(&text) {
                Ok(tokens) => (
                    tokens
                        .into_iter()
                        .map(|(line, token)| notice_line(line, token, keys))
                        .collect(),
                    None,
                ),
                Err(LicenseError::Missing { .. }) => (Vec::new(), None),
                Err(error) => (Vec::new(), Some(error)),
            },
        };
    let text = match token::source_text(source, "the license text").map(str::to_owned) {
        Ok(text) => text,
        Err(error) => return (Read::Failed(error), fault),
    };
    let offset = text.lines().count();
    let tokens = match token::tokens(&text) {
        Ok(tokens) => tokens,
        Err(error) => return (Read::Failed(error), fault),
    };
    let mut lines = Vec::new();
    let mut own = Vec::new();
    for (line, token) in tokens {
        if token::is_notice(token) {
            own.push(notice_line(line, token, keys));
        } else {
            let verified = match keys {
                Keys::Verify(verifier) => verifier.verify(token),
                Keys::Unverified => token::decode_unverified(token).and_then(|u| u.parse_claims()),
            };
            lines.push(ReadLine {
                line,
                print: fingerprint(token),
                verified: verified.map(Arc::new),
            });
        }
    }
    own.extend(notices.into_iter().map(|mut n| {
        n.line = n.line.saturating_add(offset);
        n
    }));
    (Read::Lines(lines, own), fault)
}

/// A notice token, verified (or decoded) as a notice.
fn notice_line(line: usize, token: &str, keys: Keys<'_>) -> ReadNotice {
    let verified = match keys {
        Keys::Verify(verifier) => verifier.verify_notice(token),
        Keys::Unverified => token::decode_unverified(token).and_then(|u| {
            if u.is_notice() {
                u.parse_notice()
            } else {
                Err(LicenseError::WrongType { expected: "notice" })
            }
        }),
    };
    ReadNotice {
        line,
        print: fingerprint(token),
        verified: verified.map(Arc::new),
    }
}

/// Each line of `read` as the judge left it after its last check, whose `events` report
/// every refusal: a license by the set the judge holds (a line refused by the read but
/// chosen with its customer at the check counts as in the set), a notice by its refusal.
fn judged_lines(judge: &Judge, read: &Read, events: &[LicenseEvent]) -> Vec<Line> {
    let Read::Lines(licenses, notices) = read else {
        return Vec::new();
    };
    let mut refused_lines: HashMap<usize, LicenseError> = HashMap::new();
    let mut refused_notices: HashMap<usize, LicenseError> = HashMap::new();
    let mut refused_prints: HashMap<String, LicenseError> = HashMap::new();
    for event in events {
        match event {
            LicenseEvent::VerificationFailed {
                error,
                line: Some(line),
                ..
            } => {
                refused_lines.insert(*line, error.clone());
            }
            LicenseEvent::NoticeRejected {
                error,
                line,
                fingerprint,
                ..
            } => {
                refused_notices.insert(*line, error.clone());
                refused_prints.insert(fingerprint.clone(), error.clone());
            }
            _ => {}
        }
    }
    let now = judge.time.now_secs();
    let judged = judge.reads.judged(now, judge.mono);
    let customer = judge.reads.customer();
    let mut out: Vec<Line> = Vec::new();
    for line in licenses {
        let member = judge.reads.set.iter().position(|m| m.print == line.print);
        let (claims, standing) = match (&line.verified, member) {
            (Err(error), _) => (None, Standing::Refused(error.clone())),
            (Ok(_), Some(i)) => {
                let claims = Arc::clone(&judge.reads.set[i].claims);
                // Judged as the judge judges it (at its own floor), shown as signed.
                let at = judged.get(i).unwrap_or(&claims);
                let standing = match at.check_at(crate::clock::from_unix_seconds(now)) {
                    Ok(()) => Standing::InForce,
                    Err(LicenseError::NotYetValid { .. }) => Standing::Held,
                    Err(error) => Standing::Ended(error),
                };
                (Some(claims), standing)
            }
            (Ok(claims), None) => {
                let error = refused_lines.get(&line.line).cloned().unwrap_or_else(|| {
                    LicenseError::CustomerMismatch {
                        expected: customer.unwrap_or_default().to_owned(),
                        found: claims.customer.clone(),
                    }
                });
                (Some(Arc::clone(claims)), Standing::Refused(error))
            }
        };
        out.push(Line::License(LicenseLine {
            line: line.line,
            claims,
            standing,
        }));
    }
    for notice in notices {
        let standing = match &notice.verified {
            Err(error) => NoticeStanding::Refused(error.clone()),
            Ok(_) if customer.is_none() => NoticeStanding::NotJudged,
            Ok(_) => match refused_notices
                .get(&notice.line)
                .or_else(|| refused_prints.get(&notice.print))
            {
                Some(error) => NoticeStanding::Refused(error.clone()),
                None => NoticeStanding::Accepted,
            },
        };
        out.push(Line::Notice(NoticeLine {
            line: notice.line,
            notice: notice.verified.as_ref().ok().map(Arc::clone),
            standing,
        }));
    }
    out.sort_by_key(Line::number);
    out
}

/// Lets time alone move on from the judge's last check (made at `start`), waking it at
/// each instant a decision is due by its own timers, and collects what it emits.
fn schedule(judge: &mut Judge, start: SystemTime) -> Vec<Scheduled> {
    let mut schedule = Vec::new();
    let mut mono = judge.mono;
    for _ in 0..MAX_STEPS {
        let decision = judge.timers().earliest(&Wake::DECISIONS);
        let Some(next) = [decision, next_choice(judge)]
            .into_iter()
            .flatten()
            .filter(|&at| at > mono)
            .min()
        else {
            break;
        };
        if start.checked_add(next).is_none() {
            break;
        }
        mono = next;
        let verdict = judge.handle_check(
            reading(start, next),
            Observation::Transition,
            SlotWord::default(),
        );
        for event in drain(judge) {
            schedule.push(Scheduled {
                at: verdict.evaluated_at,
                event,
            });
        }
    }
    schedule
}

/// The next monotonic reading at which the licenses of a customer outside the set could
/// come to give the better verdict: the earliest instant any customer's licenses change
/// standing, evaluated as the judge evaluates them when it chooses the set at every check
/// (`Judge::best_set`). The judge's wake table holds the set's own instants only; a
/// monitor notices another customer's (a renamed renewal installed ahead, while the
/// expired license is in grace) at its next wake, within the judge's longest sleep.
fn next_choice(judge: &Judge) -> Option<Duration> {
    let now = judge.time.now_secs();
    let customers = judge.reads.by_customer(now, judge.mono);
    if customers.len() < 2 {
        return None;
    }
    customers
        .iter()
        .filter_map(|(_, members)| {
            let licenses: Vec<Arc<Claims>> =
                members.iter().map(|m| Arc::clone(&m.claims)).collect();
            evaluate(&judge.input(&licenses, now)).next_change
        })
        .min()
        .map(|secs| judge.mono.saturating_add(judge.time.until(secs)))
}
