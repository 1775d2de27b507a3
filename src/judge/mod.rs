//! The judge: every decision the monitor makes, as one synchronous state machine.
//!
//! In the manner of quinn-proto's `Connection`, the judge does no I/O, reads no clock and
//! knows no runtime. The checker task (`crate::checker`) feeds it what happened, with
//! the clock reading it happened at ([`Judge::handle_check`], [`Judge::handle_restored`],
//! [`Judge::handle_persisted`]), and drains what to do next: the verdict to publish
//! ([`Judge::verdict`], [`Judge::drained`]), the events to emit ([`Judge::poll_event`]),
//! the state to persist ([`Judge::poll_persist`]) and when to be woken
//! ([`Judge::poll_timeout`]). Everything that decides (trusted time and its drift budget,
//! the set rules, grace anchors and floors, manipulation and its clearing, the drain's
//! timing, alert and failure rate limits, instance grace) lives here, in
//! [`verdict::evaluate`](crate::verdict) and in [`TrustedTime`], so the simulations drive
//! it directly at hundreds of thousands of schedules, without a runtime.
//!
//! Instants are the clock's monotonic readings ([`Reading::mono`]), never a runtime's:
//! the shell turns a wake-up reading into a timer.

mod drain;
mod episode;
mod instance;
pub(crate) mod set;
#[cfg(test)]
mod simulation;
#[cfg(test)]
mod tests;
pub(crate) mod throttle;
pub(crate) mod time;

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::clock::{MIN_RFC3339, Reading};
use crate::event::{DriftKind, LicenseEvent};
use crate::state::{MAX_NOTICE_CUSTOMERS, MAX_REVOKED, PersistedState, StateProblem};
use crate::token::{Claims, IAT_TOLERANCE_SECS, LicenseError, Notice};
use crate::verdict::{Evaluation, Input, LicenseState, Verdict, evaluate, instance_limit};

use drain::Drain;
use episode::Episode;
use instance::Instance;
pub(crate) use instance::SlotWord;
pub(crate) use set::{Line, Member};
use throttle::{Keyed, Throttle};
use time::{ClockAnomaly, TrustedTime};

/// How often the state file's mark is brought up to date.
pub(crate) const PERSIST_INTERVAL: Duration = Duration::from_secs(60);
/// The longest the judge lets the clocks go unsampled. Runtime timers stop while the
/// machine is suspended and trusted time does not, so this bounds how long a verdict can
/// lag behind after a resume (a sample costs microseconds).
pub(crate) const MAX_SLEEP: Duration = Duration::from_secs(60);

/// What the judge is configured with: settings from the builder, nothing it decides.
#[derive(Debug, Clone)]
pub(crate) struct JudgeConfig {
    pub(crate) grace_period: Duration,
    pub(crate) drain_period: Duration,
    pub(crate) check_interval: Duration,
    pub(crate) fail_closed: bool,
    pub(crate) built_at: Option<SystemTime>,
    /// The source's description, for events.
    pub(crate) source: String,
    /// Whether a state file is kept (then [`Judge::poll_persist`] says what to write).
    pub(crate) state_file: bool,
    /// How long a replica that has not yet held an instance slot waits, quietly, before
    /// instance-limit grace starts (see [`SlotWord`]).
    pub(crate) instance_settling: Duration,
}

/// One vendor notice of a read (a line whose header says it is one), verified by the
/// shell.
#[derive(Debug, Clone)]
pub(crate) struct NoticeLine {
    /// 1-based line number in the source.
    pub(crate) line: usize,
    /// The token's fingerprint.
    pub(crate) print: String,
    /// The verified notice, or why it was refused.
    pub(crate) verified: Result<Arc<Notice>, LicenseError>,
}

/// One read of the source.
#[derive(Debug, Clone)]
pub(crate) enum Read {
    /// The source could not be read, or holds no token (or too many).
    Failed(LicenseError),
    /// Its tokens, each verified: the licenses, and the vendor notices.
    Lines(Vec<Line>, Vec<NoticeLine>),
}

/// What a wake brought besides a clock reading.
#[derive(Debug, Clone)]
pub(crate) enum Observation {
    /// Only time moved.
    Transition,
    /// A periodic (or requested) check: this fresh read is judged, and a due alert
    /// repeats.
    Full(Read),
    /// The source changed since it was last judged: this read is judged.
    Changed(Read),
}

/// The judge. See the module docs.
#[derive(Debug)]
pub(crate) struct Judge {
    config: JudgeConfig,
    time: TrustedTime,
    /// The monotonic reading of the last check.
    mono: Duration,
    /// What the last good read brought: the set is chosen from these at every check.
    candidates: set::Candidates,
    /// The license set: the licenses of the set's customer among the candidates (in
    /// force, held for later, or expired), in canonical order.
    set: Vec<Member>,
    /// Tokens `license.loaded` has announced (by fingerprint), so that each is announced
    /// once, when it comes into force.
    announced: HashSet<String>,
    /// The last read's problem, while the source does not hold the license in force.
    problem: Option<LicenseError>,
    /// How many reads in a row had a problem (for `license.recovered`).
    failed_reads: u64,
    /// The episode without a license: its anchor, floor, cap and manipulation.
    episode: Episode,
    last: Option<Evaluation>,
    /// When the expiry alert last fired, to repeat it at most once per check interval.
    alerted_at: Throttle,
    /// The last failure reported (what was read, and when), so that an unchanged bad
    /// source is reported at most once per check interval, whatever storm of
    /// `check_now` or SIGHUP comes in between.
    failure_reported: Option<(String, Throttle)>,
    /// When a wall clock behind a vendor floor was last reported.
    floor_reported_at: Throttle,
    /// The drain periods running (after a cut-off, or a feature taken away).
    drain: Drain,
    /// This replica's standing without an instance slot.
    instance: Instance,
    /// The highest vendor notice `seq` accepted, by customer (kept in the state file).
    notice_seq: BTreeMap<String, u64>,
    /// Revoked license `jti`s, and from when (trusted seconds; kept in the state file).
    revoked: BTreeMap<String, i64>,
    /// Refused notices reported (by fingerprint), and when: each at most once per check
    /// interval.
    notices_reported: Keyed<String>,
    /// What was last written to the state file, and when.
    persisted: Option<PersistedState>,
    persisted_at: Throttle,
    events: VecDeque<LicenseEvent>,
}

impl Judge {
    /// A judge whose trusted time starts at `first`.
    pub(crate) fn new(config: JudgeConfig, first: Reading) -> Self {
        let mut time = TrustedTime::new(first);
        if let Some(built_at) = config.built_at {
            time.set_build_floor(built_at);
        }
        Self {
            config,
            time,
            mono: first.mono,
            candidates: Vec::new(),
            set: Vec::new(),
            announced: HashSet::new(),
            problem: None,
            failed_reads: 0,
            episode: Episode::default(),
            last: None,
            alerted_at: Throttle::default(),
            failure_reported: None,
            floor_reported_at: Throttle::default(),
            drain: Drain::default(),
            instance: Instance::default(),
            notice_seq: BTreeMap::new(),
            revoked: BTreeMap::new(),
            notices_reported: Keyed::default(),
            persisted: None,
            persisted_at: Throttle::since(first.mono),
            events: VecDeque::new(),
        }
    }

    // ---- getters ----

    /// Whether the drain period after a cut-off is over.
    pub(crate) fn drained(&self) -> bool {
        self.drain.drained()
    }

    /// Whether the open responses of `feature`'s routes must end: a drain period has
    /// passed since the feature was taken away (or since the cut-off).
    pub(crate) fn feature_drained(&self, feature: &str) -> bool {
        self.drain.feature_drained(feature, self.mono)
    }

    /// The instance limit of the licenses that apply now (also after a cut-off: a replica
    /// cut off for want of a slot keeps trying for one).
    pub(crate) fn instance_limit(&self) -> Option<u64> {
        self.last
            .as_ref()
            .and_then(|e| instance_limit(&e.verdict.licenses))
    }

    /// The reason code of the last read's problem, if it had one.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        self.problem.as_ref().map(LicenseError::reason)
    }

    // ---- handlers ----

    /// The state file as read before the first check: the stored mark is our own
    /// evidence (a wall clock more than the drift budget below it was set back across the
    /// restart), and a stored grace anchor and floor stand.
    pub(crate) fn handle_restored(&mut self, restored: Result<PersistedState, StateProblem>) {
        match restored {
            Ok(state) => {
                self.persisted = Some(state.clone());
                // Accepted notices stay accepted: an older one (a replayed attestation)
                // is refused after a restart, and a revocation stays when its line goes.
                self.episode.restore(&state);
                let age = Duration::from_secs(state.budget_age);
                let high_water = state.high_water;
                self.notice_seq = state.notice_seq;
                self.revoked = state.revoked;
                if let Some(anomaly) = self.time.restore_mark(high_water, age) {
                    self.on_clock_anomaly(anomaly);
                }
            }
            Err(problem) => self.events.push_back(LicenseEvent::StateInvalid {
                reason: problem.reason,
                detail: problem.detail,
            }),
        }
    }

    /// A successful write of `state` to the state file.
    pub(crate) fn handle_persisted(&mut self, state: PersistedState) {
        self.persisted = Some(state);
        self.persisted_at.mark(self.mono);
    }

    /// One wake: sample the clocks at `reading`, judge what was observed, take the
    /// instance-slot task's word (`without_slot`: this replica holds no slot), evaluate,
    /// and queue the events for what changed. Returns the verdict to publish.
    pub(crate) fn handle_check(
        &mut self,
        reading: Reading,
        observation: Observation,
        slot: impl Into<SlotWord>,
    ) -> Arc<Verdict> {
        let slot = slot.into();
        self.mono = reading.mono;
        if let Some(anomaly) = self.time.sample(reading) {
            self.on_clock_anomaly(anomaly);
        }
        let (full, reloaded) = match observation {
            Observation::Transition => (false, false),
            Observation::Full(read) => (true, self.judge(read)),
            Observation::Changed(read) => (false, self.judge(read)),
        };
        // The set's customer can change with time alone (a renamed renewal starts).
        let (chosen, _) = set::choose(&self.candidates, self.time.now_secs());
        self.set = chosen;
        self.episode.apply_restored(self.set.is_empty());
        // A license's signed `iat` is a floor for judging that license (real time is at
        // least that, give or take the vendor's clock): it never raises the mark.
        let issue_floor = self.issue_floor();
        let now = issue_floor.map_or(self.time.now_secs(), |f| f.max(self.time.now_secs()));
        self.report_floors(issue_floor);
        let grace = self.grace_secs();
        self.episode.not_after(now, grace);
        let fresh_anchor = self
            .episode
            .fresh(self.last.as_ref().and_then(|e| e.cut_off));
        let set = &self.set;
        self.episode
            .clear_manipulation(self.time.wall_is_consistent(), || {
                set.iter()
                    .any(|m| m.claims.nbf.is_none_or(|nbf| nbf <= now) && now < m.claims.ends())
            });
        self.instance
            .judge_slot(slot, now, self.mono, self.config.instance_settling);
        let licenses: Vec<Arc<Claims>> = self.set.iter().map(|m| Arc::clone(&m.claims)).collect();
        let mut evaluation = evaluate(&self.input(&licenses, now));
        if evaluation.verdict.state == LicenseState::GraceExpired && self.time.provisional() {
            // Provisional readings alone never cut a service off: hold as grace unless our
            // firm evidence (or the vendor's floors) cuts it off too. The checker samples
            // again within a minute, and judges for real once readings are firm.
            // Without firm evidence, time could be as early as any clock can read.
            let firm = self.time.firm_now_secs().unwrap_or(MIN_RFC3339);
            let firm = issue_floor.map_or(firm, |f| f.max(firm));
            let firm_cut =
                evaluate(&self.input(&licenses, firm)).verdict.state == LicenseState::GraceExpired;
            if !firm_cut {
                evaluation.verdict.state = LicenseState::Grace;
                evaluation.next_change = None;
            }
        }
        self.announce(&evaluation.verdict);
        self.transition_events(&evaluation, full || reloaded);
        self.drain.track(
            &evaluation.verdict,
            self.last.as_ref().map(|e| &e.verdict),
            self.mono,
            self.config.drain_period,
        );
        self.episode.evaluated(
            &evaluation,
            fresh_anchor,
            self.time.unconfirmed(),
            now,
            grace,
        );
        let mut verdict = evaluation.verdict.clone();
        verdict.evaluated_mono = self.time.last_mono();
        verdict.instance_settling_until = self
            .instance
            .settling_until
            .filter(|_| verdict.admits())
            .map(crate::clock::from_unix_seconds);
        verdict.notice_seq = self
            .set
            .first()
            .and_then(|m| self.notice_seq.get(&m.claims.customer))
            .copied();
        verdict.revocations = self.revoked.len();
        self.last = Some(evaluation);
        Arc::new(verdict)
    }

    // ---- polls ----

    /// The next event to emit, in the order they happened.
    pub(crate) fn poll_event(&mut self) -> Option<LicenseEvent> {
        self.events.pop_front()
    }

    /// The state to write to the state file now, if a write is due: when the anchor
    /// changed, or the mark moved and a minute has passed since the last write. Only firm
    /// evidence is written: the mark never holds a provisional reading, and while
    /// readings are provisional an anchor is written only if firm evidence backs it (an
    /// expired license's own `exp`, say), so a clock that may be wrong leaves nothing for
    /// later that a restart could gain from.
    pub(crate) fn poll_persist(&self) -> Option<PersistedState> {
        let state = self.state_to_persist()?;
        let due = match &self.persisted {
            None => true,
            Some(last) => {
                last.version != state.version
                    || last.grace_anchor != state.grace_anchor
                    || last.grace_floor != state.grace_floor
                    || last.not_valid_since != state.not_valid_since
                    || last.cut_off != state.cut_off
                    || last.notice_seq != state.notice_seq
                    || last.revoked != state.revoked
                    || ((last.high_water != state.high_water
                        || last.budget_age != state.budget_age)
                        && self.persisted_at.is_due(self.mono, PERSIST_INTERVAL))
            }
        };
        due.then_some(state)
    }

    /// The state as it would be written now (with a state file, once there is firm
    /// evidence to write).
    pub(crate) fn state_to_persist(&self) -> Option<PersistedState> {
        if !self.config.state_file {
            return None;
        }
        let mark = self.time.persistable_mark()?;
        let backed = |at: i64| {
            !self.time.provisional() || self.time.firm_now_secs().is_some_and(|firm| at <= firm)
        };
        let anchor = match self.episode.grace_anchor {
            Some(anchor) if !backed(anchor) => self.persisted.as_ref().and_then(|p| p.grace_anchor),
            anchor => anchor,
        };
        // Since when the service has been in grace or cut off (`None` while valid), and
        // where it is cut off if nothing new comes in.
        let last = self.last.as_ref();
        let not_valid_since = last
            .and_then(|e| e.verdict.grace_started_at)
            .map(crate::clock::unix_seconds);
        let (since, cut_off) = match not_valid_since {
            Some(since) if !backed(since) => self
                .persisted
                .as_ref()
                .map_or((None, None), |p| (p.not_valid_since, p.cut_off)),
            since => (since, last.and_then(|e| e.cut_off)),
        };
        let mut state = PersistedState::new(mark, anchor);
        state.grace_floor = self.episode.grace_floor;
        state.not_valid_since = since;
        state.cut_off = cut_off;
        state.budget_age = self.time.budget_age().as_secs();
        state.notice_seq = self.notice_seq.clone();
        state.revoked = self.revoked.clone();
        Some(state)
    }

    /// The monotonic reading at which the judge wants the next check: the next instant
    /// the verdict changes, the end of the drain, the next state-file write, and never
    /// more than [`MAX_SLEEP`] from now.
    pub(crate) fn poll_timeout(&self) -> Duration {
        let decision = self.decision_timeout();
        // With a state file, wake a minute after each write to keep its mark current: a
        // restart then finds a mark at most a minute old. Nothing written (no firm mark
        // yet, or the disk failed): retry in a minute, never in a busy loop.
        let persist = self
            .config
            .state_file
            .then(|| self.persisted_at.next_due(self.mono, PERSIST_INTERVAL));
        let cap = self.mono.saturating_add(MAX_SLEEP);
        [decision, persist]
            .into_iter()
            .flatten()
            .fold(cap, Duration::min)
    }

    /// The monotonic reading at which a decision is due: the verdict changes, or the
    /// drain ends. (The simulations wake the judge there and at their own steps; the
    /// shell also wakes it for the state file and at least once a minute.)
    pub(crate) fn decision_timeout(&self) -> Option<Duration> {
        let change = self
            .last
            .as_ref()
            .and_then(|e| e.next_change)
            .map(|at| self.mono.saturating_add(self.time.until(at)));
        let drain = self.drain.wake();
        let features = self.drain.feature_wake(self.mono);
        let settled = self
            .instance
            .settling_until
            .map(|at| self.mono.saturating_add(self.time.until(at)));
        change
            .into_iter()
            .chain(drain)
            .chain(features)
            .chain(settled)
            .min()
    }

    // ---- the rules ----

    fn grace_secs(&self) -> i64 {
        i64::try_from(self.config.grace_period.as_secs()).unwrap_or(i64::MAX)
    }

    fn input<'a>(&'a self, licenses: &'a [Arc<Claims>], now: i64) -> Input<'a> {
        Input {
            licenses,
            problem: self.problem.as_ref(),
            now,
            grace_anchor: self.episode.grace_anchor,
            grace_floor: self.episode.grace_floor,
            grace_cap: self.episode.grace_cap,
            manipulated_at: self.episode.manipulated_at,
            grace_period: self.grace_secs(),
            no_grace: self.config.fail_closed && !self.episode.ever_valid,
            without_slot_since: self.instance.anchor,
        }
    }

    fn on_clock_anomaly(&mut self, anomaly: ClockAnomaly) {
        match anomaly {
            ClockAnomaly::BackwardJump { seconds } => {
                let now = self.time.now_secs();
                let at = self.time.hard_now_secs().map_or(now, |h| h.min(now));
                self.episode.manipulated(at);
                self.events
                    .push_back(LicenseEvent::TimeManipulationDetected {
                        wall_clock_jump_seconds: seconds,
                    });
            }
            ClockAnomaly::ForwardDrift { seconds } => {
                self.events.push_back(LicenseEvent::TimeDriftDetected {
                    drift_seconds: seconds,
                    kind: DriftKind::ForwardJump,
                });
            }
            ClockAnomaly::Corrected { seconds } => {
                self.episode.corrected(seconds);
                self.events.push_back(LicenseEvent::TimeDriftDetected {
                    drift_seconds: seconds,
                    kind: DriftKind::ClockCorrected,
                });
            }
        }
    }

    /// Judges one read of the source. Returns whether the set changed.
    fn judge(&mut self, read: Read) -> bool {
        let before = self.problem.as_ref().map(LicenseError::reason);
        let first = self.events.len();
        let changed = self.judge_read(read);
        let after = self.problem.as_ref().map(LicenseError::reason);
        match (before, after) {
            (Some(previous_reason), None) => {
                // Before the read's own events: the fix, then what it brought in.
                self.events.insert(
                    first,
                    LicenseEvent::Recovered {
                        previous_reason,
                        failed_checks: self.failed_reads,
                        source: self.config.source.clone(),
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

    fn judge_read(&mut self, read: Read) -> bool {
        let source = self.config.source.clone();
        let kept_previous = !self.set.is_empty();
        let (lines, notices) = match read {
            Read::Lines(lines, notices) if lines.is_empty() && !notices.is_empty() => {
                // Notices alone are no license (and need one to be judged for).
                let detail = format!("{source} holds vendor notices but no license");
                return self.judge_read(Read::Failed(LicenseError::Missing { detail }));
            }
            Read::Lines(lines, notices) => (lines, notices),
            Read::Failed(error) => {
                if self.report_failure(error.to_string()) {
                    self.events.push_back(match error {
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
        let now = self.time.now_secs();
        let revoked_before = self.revoked.clone();
        // Licenses that supersede others revoke them from when they start; then every
        // revocation known applies to the lines, before the set is chosen from them.
        for line in &lines {
            if let Ok(claims) = &line.verified {
                let at = claims.nbf.or(claims.iat).unwrap_or(now);
                for jti in &claims.supersedes {
                    if claims.jti.as_ref() != Some(jti) {
                        self.learn_revocation(jti, at, None);
                    }
                }
            }
        }
        let lines: Vec<Line> = lines
            .into_iter()
            .map(|mut line| {
                if let Ok(claims) = &line.verified {
                    line.verified = Ok(self.revoked_claims(claims));
                }
                line
            })
            .collect();
        let selection = set::select(&lines, &self.set, now);
        let counts = !selection.members.is_empty() || kept_previous;
        if !selection.refused.is_empty() {
            // What was read, to tell an unchanged bad source from a new one.
            let key: Vec<&str> = lines.iter().map(|l| l.print.as_str()).collect();
            if self.report_failure(key.join(",")) {
                for (line, print, error) in &selection.refused {
                    self.events.push_back(LicenseEvent::VerificationFailed {
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
        self.judge_notices(&notices, customer.as_deref());
        let learned = self.revoked != revoked_before;
        if selection.members.is_empty() {
            // Wholly bad: the last good set stays (with what the notices revoked).
            let before = self.set.clone();
            if learned {
                self.apply_revocations();
            }
            return self.set != before;
        }
        let changed = selection.members != self.set || learned;
        self.set = selection.members;
        self.candidates = selection.candidates;
        if learned {
            self.apply_revocations();
        }
        let set = &self.set;
        self.announced.retain(|p| set.iter().any(|m| m.print == *p));
        changed
    }

    // ---- vendor notices ----

    /// `claims` with its revocation, if one is known (the same `Arc` if nothing changes).
    fn revoked_claims(&self, claims: &Arc<Claims>) -> Arc<Claims> {
        let at = claims
            .jti
            .as_ref()
            .and_then(|jti| self.revoked.get(jti))
            .copied();
        if at == claims.revoked_at {
            return Arc::clone(claims);
        }
        let mut revoked = Claims::clone(claims);
        revoked.revoked_at = at;
        Arc::new(revoked)
    }

    fn revoked_member(&self, member: &Member) -> Member {
        Member {
            claims: self.revoked_claims(&member.claims),
            print: member.print.clone(),
        }
    }

    /// Applies the revocations known to the candidates and the set.
    fn apply_revocations(&mut self) {
        let candidates = std::mem::take(&mut self.candidates);
        self.candidates = candidates
            .into_iter()
            .map(|(line, m)| (line, self.revoked_member(&m)))
            .collect();
        let set = std::mem::take(&mut self.set);
        self.set = set.iter().map(|m| self.revoked_member(m)).collect();
    }

    /// Records that `jti` is revoked from `at` (an earlier revocation stands), by notice
    /// `seq` (or by a superseding license), and reports it when it is news.
    fn learn_revocation(&mut self, jti: &str, at: i64, seq: Option<u64>) {
        if self.revoked.get(jti).is_some_and(|&known| known <= at) {
            return;
        }
        self.revoked.insert(jti.to_owned(), at);
        if self.revoked.len() > MAX_REVOKED {
            // The oldest revocation goes: its license has most likely expired by now.
            if let Some(oldest) = self
                .revoked
                .iter()
                .min_by_key(|(jti, at)| (**at, (*jti).clone()))
                .map(|(jti, _)| jti.clone())
            {
                self.revoked.remove(&oldest);
            }
        }
        let in_set = self
            .candidates
            .iter()
            .map(|(_, m)| m)
            .chain(self.set.iter())
            .any(|m| m.claims.jti.as_deref() == Some(jti));
        self.events.push_back(LicenseEvent::Revoked {
            jti: jti.to_owned(),
            revoked_at: crate::clock::from_unix_seconds(at),
            seq,
            in_set,
        });
    }

    /// Judges a read's vendor notices for `customer` (the set's), oldest `seq` first. One
    /// of another customer, or an attestation past its `exp`, is refused as a whole; one
    /// older than the highest accepted (`seq`) is refused too, but what it revokes stays
    /// revoked (a revocation never ends). Refusals are reported, each at most once per
    /// check interval. The highest accepted notice is read again at every check without
    /// effect but its revocations; only a newer one's attestation re-bases trusted time,
    /// so no attestation is ever used twice.
    fn judge_notices(&mut self, notices: &[NoticeLine], customer: Option<&str>) {
        let Some(customer) = customer else {
            return;
        };
        let mut order: Vec<&NoticeLine> = notices.iter().collect();
        order.sort_by_key(|n| {
            (
                n.verified.as_ref().map_or(0, |notice| notice.seq),
                n.print.clone(),
            )
        });
        let mut seen = HashSet::new();
        for line in order {
            seen.insert(line.print.clone());
            let notice = match &line.verified {
                Ok(notice) => Arc::clone(notice),
                Err(error) => {
                    self.reject_notice(line, error.clone(), None);
                    continue;
                }
            };
            if notice.customer != customer {
                let error = LicenseError::CustomerMismatch {
                    expected: customer.to_owned(),
                    found: notice.customer.clone(),
                };
                self.reject_notice(line, error, Some(notice.seq));
                continue;
            }
            let highest = self.notice_seq.get(customer).copied().unwrap_or(0);
            if notice.seq < highest {
                // Its attestation is never used. What it revokes stays revoked, though: a
                // revoked license never comes back, and its revocations were in force
                // when it was the newest (or the newer notice lists them again).
                for jti in &notice.revoke {
                    self.learn_revocation(jti, notice.iat, Some(notice.seq));
                }
                let error = LicenseError::StaleSequence {
                    seq: notice.seq,
                    highest,
                };
                self.reject_notice(line, error, Some(notice.seq));
                continue;
            }
            if notice.seq == highest {
                // Accepted before (this run or an earlier one): what it revoked stays
                // revoked, and what it attested is still a floor under real time.
                for jti in &notice.revoke {
                    self.learn_revocation(jti, notice.iat, Some(notice.seq));
                }
                if let Some(time) = notice.time {
                    self.time.attest_floor(time);
                }
                continue;
            }
            if let (Some(_), Some(exp)) = (notice.time, notice.exp) {
                // Judged by the wall and the vendor's floors, not by our own marks: the
                // attestation is there to correct them.
                let floors = [self.time.vendor_floor_secs(), self.issue_floor()]
                    .into_iter()
                    .flatten()
                    .fold(self.time.wall_secs(), i64::max);
                if floors >= exp {
                    self.reject_notice(
                        line,
                        LicenseError::Expired { expired_at: exp },
                        Some(notice.seq),
                    );
                    continue;
                }
            }
            self.accept_notice(customer, &notice);
        }
        self.notices_reported.retain(|print| seen.contains(print));
    }

    fn accept_notice(&mut self, customer: &str, notice: &Notice) {
        if !self.notice_seq.contains_key(customer) && self.notice_seq.len() >= MAX_NOTICE_CUSTOMERS
        {
            // (Only a renamed customer's history goes: its notices no longer apply.)
            if let Some(other) = self.notice_seq.keys().find(|c| *c != customer).cloned() {
                self.notice_seq.remove(&other);
            }
        }
        self.notice_seq.insert(customer.to_owned(), notice.seq);
        for jti in &notice.revoke {
            self.learn_revocation(jti, notice.iat, Some(notice.seq));
        }
        let Some(time) = notice.time else {
            return;
        };
        let wall = self.time.wall_secs();
        let moved = self.time.attest(time);
        // Trusted time was ahead (the wrong mark): what was anchored at it moves back
        // with it; an attestation the wall agrees with ends grace for a clock set back.
        self.instance.moved_back(moved);
        let cleared = self.episode.attested(moved, self.time.wall_is_consistent());
        self.events.push_back(LicenseEvent::ClockAttested {
            seq: notice.seq,
            attested_time: crate::clock::from_unix_seconds(time),
            wall_offset_seconds: wall.saturating_sub(time),
            trusted_time_moved_seconds: moved,
            cleared_manipulation: cleared,
        });
    }

    fn reject_notice(&mut self, line: &NoticeLine, error: LicenseError, seq: Option<u64>) {
        if !self
            .notices_reported
            .ready(line.print.clone(), self.mono, self.config.check_interval)
        {
            return;
        }
        self.events.push_back(LicenseEvent::NoticeRejected {
            error,
            line: line.line,
            fingerprint: line.print.clone(),
            seq,
        });
    }

    /// The floor a license set's signed `iat`s put under trusted time, if any.
    fn issue_floor(&self) -> Option<i64> {
        self.set
            .iter()
            .filter_map(|m| m.claims.iat)
            .max()
            .map(|iat| iat.saturating_sub(IAT_TOLERANCE_SECS))
    }

    /// Whether a failure reading `what` is to be reported now: a new one, or one last
    /// reported a check interval ago or more.
    fn report_failure(&mut self, what: String) -> bool {
        match &mut self.failure_reported {
            Some((last, throttle)) if *last == what => {
                throttle.ready(self.mono, self.config.check_interval)
            }
            _ => {
                self.failure_reported = Some((what, Throttle::since(self.mono)));
                true
            }
        }
    }

    /// `license.loaded` for each license that is in force now and has not been
    /// announced: a new one read now, or a held one whose `nbf` has come.
    fn announce(&mut self, verdict: &Verdict) {
        for claims in &verdict.licenses {
            let Some(member) = self.set.iter().find(|m| Arc::ptr_eq(&m.claims, claims)) else {
                continue;
            };
            if self.announced.insert(member.print.clone()) {
                self.events.push_back(LicenseEvent::Loaded {
                    customer: claims.customer.clone(),
                    expires_at: claims.expires_at(),
                    jti: claims.jti.clone(),
                    fingerprint: member.print.clone(),
                });
            }
        }
    }

    /// The events for the change from the last evaluation to `new`.
    fn transition_events(&mut self, new: &Evaluation, full: bool) {
        let verdict = &new.verdict;
        let previous = self.last.as_ref().map(|e| &e.verdict);
        let was = previous.map(|v| v.state);
        if let Some(previous) = previous {
            if let Some(changed) = entitlements_changed(previous, verdict) {
                self.events.push_back(changed);
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
                    self.events.push_back(LicenseEvent::GraceModeExited {
                        customer: claims.customer.clone(),
                        expires_at,
                    });
                }
            }
            (
                None | Some(LicenseState::Valid),
                LicenseState::Grace | LicenseState::GraceExpired,
            ) => {
                self.events.push_back(self.grace_entered(verdict));
                if verdict.state == LicenseState::GraceExpired {
                    self.events.push_back(grace_expired(verdict));
                }
            }
            (Some(LicenseState::Grace), LicenseState::GraceExpired) => {
                self.events.push_back(grace_expired(verdict));
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
            if entered
                || (full
                    && self
                        .alerted_at
                        .is_due(self.mono, self.config.check_interval))
            {
                self.alerted_at.mark(self.mono);
                self.events.push_back(LicenseEvent::Expiring {
                    band,
                    days_remaining: verdict.days_remaining().unwrap_or(0),
                    expires_at,
                    customer: claims.customer.clone(),
                });
            }
        }
    }

    fn grace_entered(&self, verdict: &Verdict) -> LicenseEvent {
        LicenseEvent::GraceModeEntered {
            reason: verdict
                .reason
                .clone()
                .unwrap_or(crate::GraceReason::Missing),
            // The period this grace really has: the vendor's signed one for an expired
            // license that carries it, else the builder's.
            grace_period_seconds: match (verdict.grace_started_at, verdict.grace_ends_at) {
                (Some(start), Some(end)) => end.duration_since(start).map_or(0, |d| d.as_secs()),
                _ => self.config.grace_period.as_secs(),
            },
            grace_started_at: verdict.grace_started_at.unwrap_or(verdict.evaluated_at),
            grace_ends_at: verdict.grace_ends_at.unwrap_or(verdict.evaluated_at),
        }
    }

    /// Reports a wall clock behind a vendor floor (the build time, the license's `iat`),
    /// at most once per check interval: drift, never manipulation, as the vendor's clock
    /// may be the wrong one, and judging at the floor already takes away any gain.
    fn report_floors(&mut self, issue_floor: Option<i64>) {
        let wall = self.time.wall_secs();
        let finding = match (
            self.time.behind_build_floor(),
            self.time.behind_attested_floor(),
        ) {
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
        if self
            .floor_reported_at
            .ready(self.mono, self.config.check_interval)
        {
            self.events.push_back(LicenseEvent::TimeDriftDetected {
                drift_seconds,
                kind,
            });
        }
    }
}

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
