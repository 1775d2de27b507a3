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

mod faults;
pub(crate) mod set;
#[cfg(test)]
mod simulation;
pub(crate) mod time;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::clock::{MIN_RFC3339, Reading};
use crate::event::{DriftKind, LicenseEvent};
use crate::state::{MAX_NOTICE_CUSTOMERS, MAX_REVOKED, PersistedState, StateProblem};
use crate::token::{Claims, IAT_TOLERANCE_SECS, LicenseError, Notice};
use crate::verdict::{Evaluation, Input, LicenseState, Verdict, evaluate, instance_limit};

pub(crate) use set::{Line, Member};
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

/// The instance-slot task's word (see `crate::instances`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SlotWord {
    /// This replica holds no slot while a limit is in force.
    pub(crate) without: bool,
    /// It has held one since it started: losing it starts grace at once, with no
    /// settling (a replica new to the fleet settles first: a rollout's surge pod).
    pub(crate) ever_held: bool,
    /// How long the fleet had run more replicas than slots (some replica has waited
    /// without one ever since), by a live overuse record in the cluster, as of a reading
    /// of the judge's monotonic clock: `(age, at)`. Settling is counted from the fleet's
    /// first waiter, so that restarting or replacing pods buys no time. (An age, not an
    /// instant: the overuse may have begun before this process's clock started.)
    pub(crate) fleet_waited: Option<(Duration, Duration)>,
    /// Waiting replicas have been getting slots (within a lease duration): the fleet is
    /// turning over, as in a rollout, and a replica new to it settles on its own clock.
    pub(crate) fleet_turning_over: bool,
}

impl From<bool> for SlotWord {
    /// The word of a replica that held a slot: `without` it now, or not.
    fn from(without: bool) -> Self {
        SlotWord {
            without,
            ever_held: true,
            fleet_waited: None,
            fleet_turning_over: false,
        }
    }
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

/// Whether `every` has passed since `since` at `now` (monotonic readings). A monotonic
/// clock that went back (a restored checkpoint) makes it due: re-baselined, not stuck.
fn due(since: Option<Duration>, now: Duration, every: Duration) -> bool {
    since.is_none_or(|at| now < at || now >= at.saturating_add(every))
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
    /// Since when no license at all has been seen in the current episode.
    grace_anchor: Option<i64>,
    /// The grace anchor was set while trusted now rested on an unconfirmed reading.
    anchor_soft: bool,
    /// The latest cut-off an earlier episode without a license earned.
    grace_floor: Option<i64>,
    /// Since when the last run was in grace, from the state file: it anchors this run's
    /// grace when the first check finds no license at all or a clock set back, so that
    /// deleting an expired license, or setting the clock back, and restarting buys no
    /// fresh grace. (With a license present, its signed `exp` anchors anew.)
    restored_since: Option<i64>,
    /// Where the last run's grace was to end, from the state file.
    restored_cut: Option<i64>,
    /// The latest the current episode without a license may end (see `grace_cap` in
    /// `verdict::Input`).
    grace_cap: Option<i64>,
    manipulated_at: Option<i64>,
    ever_valid: bool,
    last: Option<Evaluation>,
    /// When the expiry alert last fired, to repeat it at most once per check interval.
    alerted_at: Option<Duration>,
    /// The last failure reported (what was read, and when), so that an unchanged bad
    /// source is reported at most once per check interval, whatever storm of
    /// `check_now` or SIGHUP comes in between.
    failure_reported: Option<(String, Duration)>,
    /// When a wall clock behind a vendor floor was last reported.
    floor_reported_at: Option<Duration>,
    /// While cut off: when the drain period ends, and whether it has.
    drain_ends: Option<Duration>,
    drained: bool,
    /// Features that a renewal (or the end of the license that granted them) took away
    /// while the service stayed licensed: when the drain period of their routes' open
    /// responses ends.
    feature_drains: BTreeMap<String, Duration>,
    /// Since when (trusted seconds) this replica has held no instance slot.
    without_slot_since: Option<i64>,
    /// Until when (trusted seconds) a replica new to the fleet settles without a slot.
    settling_until: Option<i64>,
    /// Where instance-limit grace runs from (trusted seconds), once settled.
    instance_anchor: Option<i64>,
    /// The highest vendor notice `seq` accepted, by customer (kept in the state file).
    notice_seq: BTreeMap<String, u64>,
    /// Revoked license `jti`s, and from when (trusted seconds; kept in the state file).
    revoked: BTreeMap<String, i64>,
    /// Refused notices reported (by fingerprint), and when: each at most once per check
    /// interval.
    notices_reported: HashMap<String, Duration>,
    /// What was last written to the state file, and when.
    persisted: Option<PersistedState>,
    persisted_at: Duration,
    /// A notice source that cannot be read, a state file that cannot be written.
    faults: faults::Faults,
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
            grace_anchor: None,
            anchor_soft: false,
            grace_floor: None,
            restored_since: None,
            restored_cut: None,
            grace_cap: None,
            manipulated_at: None,
            ever_valid: false,
            last: None,
            alerted_at: None,
            failure_reported: None,
            floor_reported_at: None,
            drain_ends: None,
            drained: false,
            feature_drains: BTreeMap::new(),
            without_slot_since: None,
            settling_until: None,
            instance_anchor: None,
            notice_seq: BTreeMap::new(),
            revoked: BTreeMap::new(),
            notices_reported: HashMap::new(),
            persisted: None,
            persisted_at: first.mono,
            faults: faults::Faults::default(),
            events: VecDeque::new(),
        }
    }

    // ---- getters ----

    /// Whether the drain period after a cut-off is over.
    pub(crate) fn drained(&self) -> bool {
        self.drained
    }

    /// Whether the open responses of `feature`'s routes must end: a drain period has
    /// passed since the feature was taken away (or since the cut-off).
    pub(crate) fn feature_drained(&self, feature: &str) -> bool {
        self.drained
            || self
                .feature_drains
                .get(feature)
                .is_some_and(|ends| self.mono >= *ends)
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
                self.notice_seq = state.notice_seq;
                self.revoked = state.revoked;
                if state.version < 2 {
                    // Version 1 kept one anchor, of any kind.
                    self.restored_since = state.grace_anchor;
                } else {
                    self.grace_anchor = state.grace_anchor;
                    // An episode carried over never ends later than the run before would
                    // have ended it.
                    self.grace_cap = state.grace_anchor.and(state.cut_off);
                    self.grace_floor = state.grace_floor;
                    self.restored_since = state.not_valid_since;
                    self.restored_cut = state.cut_off;
                }
                let age = Duration::from_secs(state.budget_age);
                if let Some(anomaly) = self.time.restore_mark(state.high_water, age) {
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
        self.persisted_at = self.mono;
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
        // The first check after a restart: no license at all continues the grace the last
        // run was in, and never ends later than the last run's cut-off (the end of its
        // grace, or of the licenses it had: deleting a license and restarting buys
        // nothing); a clock found set back anchors at the last run's grace too.
        let restored_cut = self.restored_cut.take();
        let restored_since = self.restored_since.take();
        if self.set.is_empty() {
            if let Some(since) = restored_since {
                self.grace_anchor = Some(self.grace_anchor.map_or(since, |a| a.min(since)));
            }
            if let Some(cut) = restored_cut {
                self.grace_cap = Some(self.grace_cap.map_or(cut, |c| c.min(cut)));
            }
        }
        if let Some(since) = restored_since {
            self.manipulated_at = self.manipulated_at.map(|m| m.min(since));
        }
        // A license's signed `iat` is a floor for judging that license (real time is at
        // least that, give or take the vendor's clock): it never raises the mark.
        let issue_floor = self.issue_floor();
        let now = issue_floor.map_or(self.time.now_secs(), |f| f.max(self.time.now_secs()));
        self.report_floors(issue_floor);
        // Anchors never lie ahead of trusted time: a reading far ahead (provisional, or
        // set ahead and corrected) must not leave a grace period that ends later.
        let grace = self.grace_secs();
        self.grace_anchor = self.grace_anchor.map(|a| a.min(now));
        self.grace_floor = self.grace_floor.map(|f| f.min(now.saturating_add(grace)));
        self.manipulated_at = self.manipulated_at.map(|m| m.min(now));
        // A grace period that starts now, while trusted now rests on a reading not yet
        // confirmed (provisional, or the first after a restart), is marked: if that reading
        // turns out to be ahead, the correction moves the anchor back with it (see
        // `on_clock_anomaly`), so a clock set ahead cannot stretch grace.
        let fresh_anchor = self.grace_anchor.is_none();
        if fresh_anchor {
            // An episode without a license that starts now never ends later than the
            // coverage before it would have (a renewal revoked before it started, and the
            // license it replaced gone at its end, buy no fresh grace), as after a
            // restart (`restored_cut`).
            if let Some(cut) = self.last.as_ref().and_then(|e| e.cut_off) {
                self.grace_cap = Some(self.grace_cap.map_or(cut, |c| c.min(cut)));
            }
        }
        // Manipulation-grace clears once the wall clock agrees with trusted time again and
        // a valid license is in force.
        if self.manipulated_at.is_some()
            && self.time.wall_is_consistent()
            && self
                .set
                .iter()
                .any(|m| m.claims.nbf.is_none_or(|nbf| nbf <= now) && now < m.claims.ends())
        {
            self.manipulated_at = None;
        }
        self.judge_slot(slot, now);
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
        // Responses admitted before a cut-off get the drain period, counted from the check
        // that published the cut-off (at the end of grace's exact second, or when an
        // expired license was loaded), then end; a valid license or grace again stops it.
        self.drain_ends = match (evaluation.verdict.state, self.drain_ends) {
            // (Never further off than a full period: a monotonic clock that went back
            // must not postpone it.)
            (LicenseState::GraceExpired, Some(ends)) => {
                Some(ends.min(self.mono.saturating_add(self.config.drain_period)))
            }
            (LicenseState::GraceExpired, None) => {
                Some(self.mono.saturating_add(self.config.drain_period))
            }
            _ => None,
        };
        self.drained = self.drain_ends.is_some_and(|ends| self.mono >= ends);
        if fresh_anchor && evaluation.grace_anchor.is_some() {
            // (Only an anchor taken from the reading itself.)
            self.anchor_soft = self.time.unconfirmed() && evaluation.grace_anchor == Some(now);
        } else if !self.time.unconfirmed() || evaluation.grace_anchor.is_none() {
            self.anchor_soft = false;
        }
        if let (Some(anchor), None) = (self.grace_anchor, evaluation.grace_anchor) {
            // The episode without a license ended (a license came in): the cut-off it had
            // earned stays, so that license can never bring the cut-off earlier.
            let earned = anchor.saturating_add(grace);
            let earned = self.grace_cap.map_or(earned, |cap| earned.min(cap));
            self.grace_floor = Some(self.grace_floor.map_or(earned, |f| f.max(earned)));
        }
        self.grace_anchor = evaluation.grace_anchor;
        if self.grace_anchor.is_none() {
            self.grace_cap = None;
        }
        self.track_feature_drains(&evaluation.verdict);
        self.ever_valid |= evaluation.verdict.is_valid();
        let mut verdict = evaluation.verdict.clone();
        verdict.evaluated_mono = self.time.last_mono();
        verdict.instance_settling_until = self
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

    /// Where instance-limit grace runs from. A replica without a slot that never held
    /// one first settles: admitted, quiet, for `instance_settling` (a rollout's surge pod
    /// gets its slot when an old pod goes); grace then runs from the end of settling. One
    /// that lost its slot starts grace at once. A live record of the fleet's overuse
    /// counts settling from when the fleet's first waiter began (unless waiters have been
    /// getting slots, as in a rollout) and grace from the end of that, so a restarted or
    /// replaced pod buys nothing.
    fn judge_slot(&mut self, slot: SlotWord, now: i64) {
        if !slot.without {
            self.without_slot_since = None;
            self.settling_until = None;
            self.instance_anchor = None;
            return;
        }
        let since = self.without_slot_since.map_or(now, |s| s.min(now));
        self.without_slot_since = Some(since);
        let fleet = slot.fleet_waited.map(|(age, at)| {
            let ago = self.mono.saturating_sub(at).saturating_add(age).as_secs();
            now.saturating_sub(i64::try_from(ago).unwrap_or(i64::MAX))
        });
        let settle = i64::try_from(self.config.instance_settling.as_secs()).unwrap_or(i64::MAX);
        // The fleet gets one settling, counted from its first waiter, unless waiters have
        // been getting slots (a rollout): then each new replica settles on its own.
        let fleet_end = fleet.map(|f| f.saturating_add(settle));
        let own_end = since.saturating_add(settle);
        let window_end = match fleet_end {
            Some(end) if !slot.fleet_turning_over => end.min(own_end),
            _ => own_end,
        };
        // Settling is had once per episode: a settled replica that later sees no record
        // does not settle again.
        if !slot.ever_held && self.instance_anchor.is_none() && now < window_end {
            self.settling_until = Some(window_end);
            return;
        }
        let own = match self.settling_until.take() {
            Some(until) => until.min(now),
            None if slot.ever_held => since,
            None => window_end.min(now),
        };
        let anchor = self.instance_anchor.map_or(own, |a| a.min(own));
        self.instance_anchor = Some(fleet_end.map_or(anchor, |f| f.min(anchor)));
    }

    /// A feature that goes while the service stays licensed gets the drain period for
    /// the responses its routes admitted, as the whole service gets one at the cut-off;
    /// a feature that comes back stops it. (After the cut-off, the cut-off's drain covers
    /// every route.)
    fn track_feature_drains(&mut self, verdict: &Verdict) {
        if !verdict.admits() {
            return;
        }
        let now = verdict.features();
        self.feature_drains
            .retain(|feature, _| !now.contains(&feature.as_str()));
        if let Some(before) = self.last.as_ref().map(|e| e.verdict.features()) {
            let ends = self.mono.saturating_add(self.config.drain_period);
            for gone in before.into_iter().filter(|f| !now.contains(f)) {
                self.feature_drains.entry(gone.to_owned()).or_insert(ends);
            }
        }
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
                        && due(Some(self.persisted_at), self.mono, PERSIST_INTERVAL))
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
        let anchor = match self.grace_anchor {
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
        state.grace_floor = self.grace_floor;
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
        let persist = self.config.state_file.then(|| {
            let at = self.persisted_at.saturating_add(PERSIST_INTERVAL);
            if at > self.mono {
                at
            } else {
                self.mono.saturating_add(PERSIST_INTERVAL)
            }
        });
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
        let drain = self.drain_ends.filter(|_| !self.drained);
        let features = self
            .feature_drains
            .values()
            .copied()
            .filter(|ends| *ends > self.mono)
            .min();
        let settled = self
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
            grace_anchor: self.grace_anchor,
            grace_floor: self.grace_floor,
            grace_cap: self.grace_cap,
            manipulated_at: self.manipulated_at,
            grace_period: self.grace_secs(),
            no_grace: self.config.fail_closed && !self.ever_valid,
            without_slot_since: self.instance_anchor,
        }
    }

    fn on_clock_anomaly(&mut self, anomaly: ClockAnomaly) {
        match anomaly {
            ClockAnomaly::BackwardJump { seconds } => {
                let now = self.time.now_secs();
                let at = self.time.hard_now_secs().map_or(now, |h| h.min(now));
                self.manipulated_at.get_or_insert(at);
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
                if self.anchor_soft {
                    // The anchor was taken from the reading just corrected: move it back
                    // with it (never forward).
                    let back = (seconds.min(0.0) as i64).max(i64::MIN / 2);
                    self.grace_anchor = self.grace_anchor.map(|a| a.saturating_add(back));
                }
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
        self.notices_reported
            .retain(|print, _| seen.contains(print));
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
        if moved < 0 {
            // Trusted time was ahead (the wrong mark): what was anchored at it (the start
            // of an episode without a license, its cut-off, instance grace) was anchored
            // that much too late, and moves back with it.
            let back = |t: &mut Option<i64>| *t = t.map(|t| t.saturating_add(moved));
            back(&mut self.grace_anchor);
            back(&mut self.grace_floor);
            back(&mut self.grace_cap);
            back(&mut self.without_slot_since);
            back(&mut self.instance_anchor);
            back(&mut self.settling_until);
        }
        // Grace for a clock set back ends when the clock agrees with the attested time:
        // a wall still behind it is wrong, and stays reported until it is put right (the
        // usual rule then ends the grace).
        let cleared = self.time.wall_is_consistent() && self.manipulated_at.take().is_some();
        // The episode the wrong mark started ends with it; an earlier run's grace that
        // the mark carried over does too.
        if cleared {
            self.restored_since = None;
        }
        self.events.push_back(LicenseEvent::ClockAttested {
            seq: notice.seq,
            attested_time: crate::clock::from_unix_seconds(time),
            wall_offset_seconds: wall.saturating_sub(time),
            trusted_time_moved_seconds: moved,
            cleared_manipulation: cleared,
        });
    }

    fn reject_notice(&mut self, line: &NoticeLine, error: LicenseError, seq: Option<u64>) {
        let due = match self.notices_reported.get(&line.print) {
            Some(at) => due(Some(*at), self.mono, self.config.check_interval),
            None => true,
        };
        if !due {
            return;
        }
        self.notices_reported.insert(line.print.clone(), self.mono);
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
        let report = match &self.failure_reported {
            Some((last, at)) if *last == what => {
                due(Some(*at), self.mono, self.config.check_interval)
            }
            _ => true,
        };
        if report {
            self.failure_reported = Some((what, self.mono));
        }
        report
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
                self.alerted_at = None;
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
            if entered || (full && due(self.alerted_at, self.mono, self.config.check_interval)) {
                self.alerted_at = Some(self.mono);
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
        if due(
            self.floor_reported_at,
            self.mono,
            self.config.check_interval,
        ) {
            self.floor_reported_at = Some(self.mono);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_unix_seconds;
    use crate::verdict::GraceReason;

    const T0: i64 = 1_800_000_000;
    const HOUR: u64 = 3_600;

    fn config() -> JudgeConfig {
        JudgeConfig {
            grace_period: Duration::from_secs(HOUR),
            drain_period: Duration::from_secs(60),
            check_interval: Duration::from_secs(HOUR),
            fail_closed: false,
            built_at: None,
            source: "file:/test/license.key".into(),
            instance_settling: Duration::from_secs(120),
            state_file: true,
        }
    }

    /// A reading `secs` into the run, with a wall clock that agrees.
    fn at(secs: u64) -> Reading {
        Reading {
            wall: from_unix_seconds(T0 + secs as i64),
            mono: Duration::from_secs(secs),
            provisional: false,
        }
    }

    fn read(licenses: &[Claims]) -> Read {
        Read::Lines(
            licenses
                .iter()
                .enumerate()
                .map(|(i, c)| Line {
                    line: i + 1,
                    print: format!("{}-{}", c.customer, c.exp),
                    verified: Ok(Arc::new(c.clone())),
                })
                .collect(),
            Vec::new(),
        )
    }

    fn full(licenses: &[Claims]) -> Observation {
        Observation::Full(read(licenses))
    }

    fn names(judge: &mut Judge) -> Vec<&'static str> {
        std::iter::from_fn(|| judge.poll_event())
            .map(|e| e.name())
            .collect()
    }

    fn license(exp_in: u64) -> Claims {
        Claims::new("Acme", T0 + exp_in as i64)
    }

    fn with_notices(licenses: &[Claims], notices: &[Notice]) -> Observation {
        let Read::Lines(lines, _) = read(licenses) else {
            unreachable!("read() always gives lines")
        };
        let notices = notices
            .iter()
            .enumerate()
            .map(|(i, n)| NoticeLine {
                line: licenses.len() + i + 1,
                print: format!("notice-{}-{}-{}", n.customer, n.seq, n.iat),
                verified: Ok(Arc::new(n.clone())),
            })
            .collect();
        Observation::Full(Read::Lines(lines, notices))
    }

    fn revoke(seq: u64, iat_in: u64, jtis: &[&str]) -> Notice {
        let mut n = Notice::new("Acme", T0 + iat_in as i64, seq);
        n.revoke = jtis.iter().map(|j| (*j).to_owned()).collect();
        n
    }

    fn attest(seq: u64, time: i64) -> Notice {
        let mut n = Notice::new("Acme", time, seq);
        n.time = Some(time);
        n.exp = Some(time + 86_400);
        n
    }

    fn with_jti(exp_in: u64, jti: &str) -> Claims {
        let mut c = license(exp_in);
        c.jti = Some(jti.into());
        c
    }

    fn restarted(judge: &Judge, reading: Reading) -> Judge {
        let mut next = Judge::new(config(), reading);
        next.handle_restored(Ok(judge.state_to_persist().expect("a firm mark")));
        next
    }

    #[test]
    fn a_revocation_applies_from_the_notice_iat_with_the_license_own_grace() {
        let lic = [with_jti(300 * 24 * HOUR, "lic-1")];
        let mut judge = Judge::new(config(), at(0));
        assert!(judge.handle_check(at(0), full(&lic), false).is_valid());
        names(&mut judge);
        // Signed 10 minutes ago, installed now: in grace from its iat.
        let v = judge.handle_check(
            at(1200),
            with_notices(&lic, &[revoke(1, 600, &["lic-1"])]),
            false,
        );
        assert_eq!(v.state, LicenseState::Grace);
        assert_eq!(v.reason, Some(GraceReason::Revoked));
        assert_eq!(v.grace_started_at, Some(from_unix_seconds(T0 + 600)));
        assert_eq!(
            v.grace_ends_at,
            Some(from_unix_seconds(T0 + 600 + HOUR as i64))
        );
        assert_eq!((v.notice_seq, v.revocations), (Some(1), 1));
        assert_eq!(
            names(&mut judge),
            ["license.revoked", "license.grace_mode_entered"]
        );
        let cut = judge.handle_check(at(600 + HOUR), Observation::Transition, false);
        assert!(!cut.admits());
        assert_eq!(cut.reason.as_ref().map(GraceReason::code), Some("revoked"));
        // The same notice read again changes nothing and reports nothing.
        judge.handle_check(
            at(700 + HOUR),
            with_notices(&lic, &[revoke(1, 600, &["lic-1"])]),
            false,
        );
        assert!(names(&mut judge).iter().all(|n| *n != "license.revoked"));
    }

    #[test]
    fn a_deleted_notice_line_keeps_its_revocations_through_the_state_file() {
        let lic = [
            with_jti(300 * 24 * HOUR, "lic-1"),
            with_jti(200 * 24 * HOUR, "lic-2"),
        ];
        let mut judge = Judge::new(config(), at(0));
        judge.handle_check(
            at(0),
            with_notices(&lic, &[revoke(1, 0, &["lic-1", "lic-2"])]),
            false,
        );
        let later = at(2 * HOUR);
        let mut next = restarted(&judge, later);
        let v = next.handle_check(later, full(&lic), false);
        assert!(
            !v.admits(),
            "the notice's line is gone, its revocations are not"
        );
        assert_eq!(v.reason, Some(GraceReason::Revoked));
        // Without a state file a restart forgets: the vendor's notice must stay in place.
        let mut fresh = Judge::new(config(), later);
        assert!(fresh.handle_check(later, full(&lic), false).is_valid());
    }

    #[test]
    fn a_renewal_keeps_a_customer_whose_old_license_was_revoked() {
        let old = with_jti(30 * 24 * HOUR, "lic-1");
        let mut judge = Judge::new(config(), at(0));
        let v = judge.handle_check(
            at(60),
            with_notices(std::slice::from_ref(&old), &[revoke(1, 0, &["lic-1"])]),
            false,
        );
        assert_eq!(v.reason, Some(GraceReason::Revoked));
        // The vendor issues a replacement: valid again, the revoked one never comes back.
        let renewal = with_jti(300 * 24 * HOUR, "lic-2");
        let v = judge.handle_check(at(120), full(&[old.clone(), renewal.clone()]), false);
        assert!(v.is_valid());
        assert_eq!(v.licenses.len(), 1);
        assert_eq!(v.licenses[0].jti.as_deref(), Some("lic-2"));
    }

    #[test]
    fn a_superseding_license_revokes_from_when_it_starts() {
        let old = with_jti(300 * 24 * HOUR, "lic-1");
        let mut new = with_jti(400 * 24 * HOUR, "lic-2");
        new.nbf = Some(T0 + 2 * HOUR as i64);
        new.supersedes = vec!["lic-1".into()];
        new.features = vec!["new".into()];
        let mut judge = Judge::new(config(), at(0));
        let v = judge.handle_check(at(0), full(&[old.clone(), new.clone()]), false);
        assert!(
            v.is_valid(),
            "the old one is in force until the new one starts"
        );
        assert_eq!(v.licenses[0].jti.as_deref(), Some("lic-1"));
        let v = judge.handle_check(at(2 * HOUR), Observation::Transition, false);
        assert!(v.is_valid());
        assert_eq!(v.licenses.len(), 1);
        assert_eq!(v.licenses[0].jti.as_deref(), Some("lic-2"));
        // Dropping the new license does not bring the old one back.
        let v = judge.handle_check(at(3 * HOUR), full(&[old]), false);
        assert_eq!(v.reason, Some(GraceReason::Revoked));
    }

    #[test]
    fn a_license_revoked_before_it_started_anchors_grace_at_the_revocation() {
        // Found by the simulation: a clock set ahead put a held renewal in force early,
        // and its revocation (before its nbf) then gave a fresh grace from "now".
        let mut held = with_jti(20 * HOUR, "renewal");
        held.nbf = Some(T0 + 2 * HOUR as i64);
        let ahead = Reading {
            wall: from_unix_seconds(T0 + 2 * HOUR as i64),
            ..at(60)
        };
        let mut judge = Judge::new(config(), at(0));
        assert!(
            judge
                .handle_check(ahead, full(std::slice::from_ref(&held)), false)
                .is_valid()
        );
        let v = judge.handle_check(
            ahead,
            with_notices(std::slice::from_ref(&held), &[revoke(1, 0, &["renewal"])]),
            false,
        );
        assert_eq!(v.reason, Some(GraceReason::Revoked));
        assert_eq!(v.grace_started_at, Some(from_unix_seconds(T0)));
        let v = judge.handle_check(at(HOUR + 1), Observation::Transition, false);
        assert!(!v.admits(), "{v:?}");
    }

    #[test]
    fn older_and_foreign_notices_are_refused_and_reported_once_per_interval() {
        let lic = [with_jti(300 * 24 * HOUR, "lic-1")];
        let mut judge = Judge::new(config(), at(0));
        judge.handle_check(at(0), with_notices(&lic, &[revoke(5, 0, &[])]), false);
        names(&mut judge);
        let mut foreign = revoke(9, 0, &["lic-1"]);
        foreign.customer = "Other".into();
        let stale = attest(4, T0);
        let notices = [revoke(5, 0, &[]), stale, foreign];
        let v = judge.handle_check(at(10), with_notices(&lic, &notices), false);
        assert!(v.is_valid(), "neither refused notice revokes anything");
        let events: Vec<LicenseEvent> = std::iter::from_fn(|| judge.poll_event()).collect();
        let reasons: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                LicenseEvent::NoticeRejected { error, .. } => Some(error.reason()),
                _ => None,
            })
            .collect();
        assert_eq!(reasons, ["stale_seq", "customer_mismatch"]);
        judge.handle_check(at(20), with_notices(&lic, &notices), false);
        assert!(names(&mut judge).is_empty());
        judge.handle_check(at(20 + HOUR), with_notices(&lic, &notices), false);
        assert_eq!(names(&mut judge), ["license.notice_rejected"; 2]);
    }

    #[test]
    fn an_attestation_ends_manipulation_grace_and_rebases_the_stored_mark() {
        // The clock was set a year ahead for a day (a mark persisted there), then put right.
        let year = 365 * 24 * HOUR as i64;
        let lic = [with_jti(300 * 24 * HOUR, "lic-1")];
        let ahead = Reading {
            wall: from_unix_seconds(T0 + year),
            ..at(0)
        };
        let mut judge = Judge::new(config(), ahead);
        judge.handle_check(ahead, full(&lic), false);
        let mut next = restarted(&judge, at(60));
        let v = next.handle_check(at(60), full(&lic), false);
        assert!(!v.is_valid(), "the right clock now reads as set back");
        assert!(names(&mut next).contains(&"license.time_manipulation_detected"));
        // The vendor attests the time: valid at once, and the mark is re-based for good.
        let fix = [attest(1, T0 + 30)];
        let v = next.handle_check(at(90), with_notices(&lic, &fix), false);
        assert!(v.is_valid(), "{v:?}");
        let events: Vec<LicenseEvent> = std::iter::from_fn(|| next.poll_event()).collect();
        assert!(events.iter().any(|e| matches!(
            e,
            LicenseEvent::ClockAttested { seq: 1, cleared_manipulation: true, trusted_time_moved_seconds, .. }
                if *trusted_time_moved_seconds < -(year - 100)
        )), "{events:?}");
        let stored = next.poll_persist().expect("written at once");
        assert!(stored.high_water <= T0 + 90 && stored.notice_seq["Acme"] == 1);
        next.handle_persisted(stored);
        // A restart with the notice still in place: the same attestation is not used
        // again, and nothing is wrong.
        let mut third = restarted(&next, at(200));
        assert!(
            third
                .handle_check(at(200), with_notices(&lic, &fix), false)
                .is_valid()
        );
        assert!(!names(&mut third).contains(&"license.clock_attested"));
    }

    #[test]
    fn a_replayed_attestation_is_refused() {
        // A customer used attestation 1 in January; in June, after expiry, the clock is
        // set back to January and the old notice put back: it gains nothing.
        let lic = [with_jti(30 * 24 * HOUR, "lic-1")];
        let mut judge = Judge::new(config(), at(0));
        judge.handle_check(at(0), with_notices(&lic, &[attest(1, T0)]), false);
        names(&mut judge);
        let june = at(150 * 24 * HOUR);
        judge.handle_check(june, full(&lic), false);
        let mut next = restarted(&judge, june);
        let set_back = Reading {
            wall: from_unix_seconds(T0 + 60),
            ..at(150 * 24 * HOUR + 60)
        };
        let v = next.handle_check(set_back, with_notices(&lic, &[attest(1, T0)]), false);
        assert!(!v.admits(), "{v:?}");
        assert!(!names(&mut next).contains(&"license.clock_attested"));
        // Once a later notice was installed, the old one is refused outright.
        judge.handle_check(june, with_notices(&lic, &[revoke(2, 0, &[])]), false);
        let mut second = restarted(&judge, set_back);
        let v = second.handle_check(set_back, with_notices(&lic, &[attest(1, T0)]), false);
        assert!(!v.admits());
        let events: Vec<LicenseEvent> = std::iter::from_fn(|| second.poll_event()).collect();
        assert!(
            events.iter().any(|e| matches!(
                e,
                LicenseEvent::NoticeRejected {
                    error: LicenseError::StaleSequence { seq: 1, highest: 2 },
                    ..
                }
            )),
            "{events:?}"
        );
    }

    #[test]
    fn an_attestation_from_a_vendor_minutes_fast_never_makes_a_right_clock_look_set_back() {
        let lic = [with_jti(300 * 24 * HOUR, "lic-1")];
        let mut judge = Judge::new(config(), at(0));
        let fast = attest(1, T0 + 60 + 240);
        assert!(
            judge
                .handle_check(at(60), with_notices(&lic, &[fast]), false)
                .is_valid()
        );
        for s in (120..HOUR).step_by(60) {
            assert!(
                judge
                    .handle_check(at(s), Observation::Transition, false)
                    .is_valid()
            );
        }
        let names = names(&mut judge);
        assert!(names.contains(&"license.clock_attested"), "{names:?}");
        assert!(
            !names.contains(&"license.time_manipulation_detected"),
            "{names:?}"
        );
    }

    #[test]
    fn an_expired_attestation_is_refused() {
        let lic = [with_jti(300 * 24 * HOUR, "lic-1")];
        let mut judge = Judge::new(config(), at(0));
        let old = attest(1, T0 - 8 * 86_400);
        judge.handle_check(at(0), with_notices(&lic, &[old]), false);
        let events: Vec<LicenseEvent> = std::iter::from_fn(|| judge.poll_event()).collect();
        assert!(events.iter().any(|e| matches!(
            e,
            LicenseEvent::NoticeRejected {
                error: LicenseError::Expired { .. },
                ..
            }
        )));
        assert!(judge.notice_seq.is_empty());
    }

    #[test]
    fn an_alert_repeats_at_most_once_per_check_interval_whatever_wakes_the_judge() {
        let lic = [license(10 * 24 * HOUR)];
        let mut judge = Judge::new(config(), at(0));
        judge.handle_check(at(0), full(&lic), false);
        assert!(names(&mut judge).contains(&"license.expiring_30d"));
        // A storm of full checks (SIGHUP, check_now) within the hour: nothing more.
        for s in 1..200 {
            judge.handle_check(at(s), full(&lic), false);
            assert!(names(&mut judge).is_empty(), "at +{s} s");
        }
        judge.handle_check(at(HOUR), Observation::Transition, false);
        assert!(
            names(&mut judge).is_empty(),
            "only a full check repeats an alert"
        );
        judge.handle_check(at(HOUR), full(&lic), false);
        assert_eq!(names(&mut judge), ["license.expiring_30d"]);
    }

    #[test]
    fn an_unchanged_bad_source_is_reported_at_most_once_per_check_interval() {
        let bad = || Observation::Full(Read::Failed(LicenseError::BadSignature));
        let mut judge = Judge::new(config(), at(0));
        judge.handle_check(at(0), bad(), false);
        assert!(names(&mut judge).contains(&"license.verification_failed"));
        for s in 1..100 {
            judge.handle_check(at(s), bad(), false);
            assert!(!names(&mut judge).contains(&"license.verification_failed"));
        }
        // A different problem is news at once.
        judge.handle_check(
            at(100),
            Observation::Changed(Read::Failed(LicenseError::Missing {
                detail: "gone".into(),
            })),
            false,
        );
        assert!(names(&mut judge).contains(&"license.missing"));
        judge.handle_check(at(100 + HOUR), bad(), false);
        assert!(names(&mut judge).contains(&"license.verification_failed"));
        assert_eq!(judge.problem(), Some("bad_signature"));
    }

    #[test]
    fn the_drain_ends_a_drain_period_after_the_cut_off_and_a_renewal_stops_it() {
        let mut trial = license(HOUR);
        trial.grace_period_seconds = Some(0);
        let mut judge = Judge::new(config(), at(0));
        assert!(
            judge
                .handle_check(at(0), full(&[trial.clone()]), false)
                .is_valid()
        );
        let cut = judge.handle_check(at(HOUR), Observation::Transition, false);
        assert!(!cut.admits());
        assert!(!judge.drained());
        assert_eq!(
            judge.decision_timeout(),
            Some(Duration::from_secs(HOUR + 60))
        );
        judge.handle_check(at(HOUR + 59), Observation::Transition, false);
        assert!(!judge.drained());
        judge.handle_check(at(HOUR + 60), Observation::Transition, false);
        assert!(judge.drained());

        // Renewed during the drain: nothing is cut.
        let mut judge = Judge::new(config(), at(0));
        judge.handle_check(at(0), full(&[trial.clone()]), false);
        judge.handle_check(at(HOUR), Observation::Transition, false);
        let renewal = license(400 * 24 * HOUR);
        let v = judge.handle_check(at(HOUR + 30), full(&[trial, renewal]), false);
        assert!(v.is_valid());
        judge.handle_check(at(HOUR + 90), Observation::Transition, false);
        assert!(!judge.drained());
    }

    #[test]
    fn a_feature_a_renewal_takes_away_drains_its_routes_and_coming_back_stops_it() {
        let mut with_sso = license(400 * 24 * HOUR);
        with_sso.features = vec!["sso".into(), "audit".into()];
        let mut without = license(400 * 24 * HOUR);
        without.features = vec!["audit".into()];
        let mut judge = Judge::new(config(), at(0));
        judge.handle_check(at(0), full(std::slice::from_ref(&with_sso)), false);
        assert!(!judge.feature_drained("sso"));

        // The renewal without "sso": its routes' open responses get the drain period.
        let v = judge.handle_check(at(HOUR), full(std::slice::from_ref(&without)), false);
        assert!(v.is_valid() && !v.has_feature("sso"));
        assert!(!judge.feature_drained("sso") && !judge.feature_drained("audit"));
        assert_eq!(
            judge.decision_timeout(),
            Some(Duration::from_secs(HOUR + 60))
        );
        judge.handle_check(at(HOUR + 59), Observation::Transition, false);
        assert!(!judge.feature_drained("sso"));
        judge.handle_check(at(HOUR + 60), Observation::Transition, false);
        assert!(judge.feature_drained("sso"));
        assert!(!judge.feature_drained("audit") && !judge.drained());
        assert!(judge.decision_timeout() > Some(Duration::from_secs(HOUR + 60)));

        // Back in a later renewal: its routes are open again, and nothing is drained.
        judge.handle_check(at(2 * HOUR), full(std::slice::from_ref(&with_sso)), false);
        assert!(!judge.feature_drained("sso"));

        // Taken away and given back within the drain period: nothing is cut.
        judge.handle_check(at(3 * HOUR), full(std::slice::from_ref(&without)), false);
        judge.handle_check(
            at(3 * HOUR + 30),
            full(std::slice::from_ref(&with_sso)),
            false,
        );
        judge.handle_check(at(3 * HOUR + 90), Observation::Transition, false);
        assert!(!judge.feature_drained("sso"));
    }

    #[test]
    fn without_an_instance_slot_grace_runs_from_when_it_was_lost_then_cuts_off() {
        let mut limited = license(400 * 24 * HOUR);
        limited.max_instances = Some(2);
        let mut judge = Judge::new(config(), at(0));
        assert!(
            judge
                .handle_check(at(0), full(&[limited]), false)
                .is_valid()
        );
        assert_eq!(judge.instance_limit(), Some(2));
        let v = judge.handle_check(at(10), Observation::Transition, true);
        assert_eq!(v.reason, Some(crate::GraceReason::InstanceLimit));
        assert_eq!(v.grace_started_at, Some(from_unix_seconds(T0 + 10)));
        assert!(
            judge
                .handle_check(at(10 + HOUR - 1), Observation::Transition, true)
                .admits()
        );
        assert!(
            !judge
                .handle_check(at(10 + HOUR), Observation::Transition, true)
                .admits()
        );
        // A slot again: valid at once.
        assert!(
            judge
                .handle_check(at(20 + HOUR), Observation::Transition, false)
                .is_valid()
        );
    }

    /// A replica new to the fleet, without a slot.
    fn new_without(fleet_waited: Option<(Duration, Duration)>) -> SlotWord {
        SlotWord {
            without: true,
            ever_held: false,
            fleet_waited,
            fleet_turning_over: false,
        }
    }

    #[test]
    fn a_replica_new_to_the_fleet_settles_quietly_before_instance_grace() {
        let mut limited = license(400 * 24 * HOUR);
        limited.max_instances = Some(1);
        let mut judge = Judge::new(config(), at(0));
        judge.handle_check(at(0), full(&[limited]), SlotWord::default());
        while judge.poll_event().is_some() {}
        // Without a slot from 10 s: valid, settling until 130 s, and a wake then.
        let v = judge.handle_check(at(10), Observation::Transition, new_without(None));
        assert!(v.is_valid());
        assert_eq!(v.instance_settling_until, Some(from_unix_seconds(T0 + 130)));
        assert_eq!(judge.decision_timeout(), Some(Duration::from_secs(130)));
        assert!(judge.poll_event().is_none(), "settling is quiet");
        let v = judge.handle_check(at(129), Observation::Transition, new_without(None));
        assert!(v.is_valid());
        // Settled: grace from the end of settling, with its events.
        let v = judge.handle_check(at(130), Observation::Transition, new_without(None));
        assert_eq!(v.reason, Some(crate::GraceReason::InstanceLimit));
        assert_eq!(v.grace_started_at, Some(from_unix_seconds(T0 + 130)));
        assert_eq!(v.instance_settling_until, None);
        let mut names = Vec::new();
        while let Some(e) = judge.poll_event() {
            names.push(e.name());
        }
        assert!(names.contains(&"license.grace_mode_entered"), "{names:?}");
        // Settling is had once: a slot, then none again, starts grace at once.
        judge.handle_check(at(200), Observation::Transition, SlotWord::default());
        // (The word of a replica that held a slot and lost it.)
        let v = judge.handle_check(at(210), Observation::Transition, true);
        assert_eq!(v.grace_started_at, Some(from_unix_seconds(T0 + 210)));
    }

    #[test]
    fn a_surge_replica_that_gets_a_slot_while_settling_never_enters_grace() {
        let mut limited = license(400 * 24 * HOUR);
        limited.max_instances = Some(1);
        let mut judge = Judge::new(config(), at(0));
        judge.handle_check(at(0), full(&[limited]), new_without(None));
        for s in (10..100).step_by(10) {
            assert!(
                judge
                    .handle_check(at(s), Observation::Transition, new_without(None))
                    .is_valid()
            );
        }
        // (The word of a replica that holds a slot.)
        let v = judge.handle_check(at(100), Observation::Transition, false);
        assert!(v.is_valid() && v.instance_settling_until.is_none());
        while let Some(e) = judge.poll_event() {
            assert!(
                e.level() != tracing::Level::ERROR,
                "an error event in a rollout: {e:?}"
            );
        }
    }

    #[test]
    fn the_fleets_overuse_record_anchors_grace_and_ends_settling() {
        let mut limited = license(400 * 24 * HOUR);
        limited.max_instances = Some(1);
        let mut judge = Judge::new(config(), at(0));
        judge.handle_check(at(0), full(&[limited]), SlotWord::default());
        let v = judge.handle_check(at(1000), Observation::Transition, new_without(None));
        assert!(v.instance_settling_until.is_some());
        // The cluster records the fleet as over its limit since the judge's monotonic
        // clock read 0 (at T0), with no waiter getting a slot since: the fleet's settling
        // ended at T0 + 120, and grace runs from then.
        let record = new_without(Some((Duration::ZERO, Duration::ZERO)));
        let v = judge.handle_check(at(1010), Observation::Transition, record);
        assert_eq!(v.reason, Some(crate::GraceReason::InstanceLimit));
        assert_eq!(v.grace_started_at, Some(from_unix_seconds(T0 + 120)));
        // A grace period (an hour) after that: cut off, though this replica is only
        // minutes old.
        assert!(
            judge
                .handle_check(at(HOUR + 119), Observation::Transition, record)
                .admits()
        );
        assert!(
            !judge
                .handle_check(at(HOUR + 120), Observation::Transition, record)
                .admits()
        );
        // The record gone stale does not give the time back.
        assert!(
            !judge
                .handle_check(at(HOUR + 200), Observation::Transition, new_without(None))
                .admits()
        );
    }

    #[test]
    fn in_a_fleet_that_is_turning_over_a_new_replica_settles_on_its_own_clock() {
        let mut limited = license(400 * 24 * HOUR);
        limited.max_instances = Some(1);
        let mut judge = Judge::new(config(), at(0));
        judge.handle_check(at(0), full(&[limited]), SlotWord::default());
        // A rollout that began at T0: waiters have been getting slots.
        let rollout = SlotWord {
            without: true,
            ever_held: false,
            fleet_waited: Some((Duration::ZERO, Duration::ZERO)),
            fleet_turning_over: true,
        };
        let v = judge.handle_check(at(1000), Observation::Transition, rollout);
        assert!(v.is_valid());
        assert_eq!(
            v.instance_settling_until,
            Some(from_unix_seconds(T0 + 1120))
        );
    }

    #[test]
    fn manipulation_clears_once_the_clock_is_right_and_a_license_is_in_force() {
        let lic = [license(400 * 24 * HOUR)];
        let mut judge = Judge::new(config(), at(0));
        judge.handle_check(at(0), full(&lic), false);
        let mut back = at(60);
        back.wall = from_unix_seconds(T0 + 60 - 3_600);
        let v = judge.handle_check(back, Observation::Transition, false);
        assert_eq!(v.reason, Some(crate::GraceReason::ClockManipulation));
        assert!(names(&mut judge).contains(&"license.time_manipulation_detected"));
        assert!(
            judge
                .handle_check(at(120), Observation::Transition, false)
                .is_valid()
        );
        assert!(names(&mut judge).contains(&"license.grace_mode_exited"));
    }

    #[test]
    fn the_state_is_written_when_the_anchor_changes_and_the_mark_once_a_minute() {
        let mut judge = Judge::new(config(), at(0));
        judge.handle_check(
            at(0),
            Observation::Full(Read::Failed(LicenseError::BadSignature)),
            false,
        );
        let first = judge.poll_persist().expect("the first state");
        assert_eq!(first.grace_anchor, Some(T0));
        assert_eq!(first.high_water, T0);
        judge.handle_persisted(first);
        judge.handle_check(at(30), Observation::Transition, false);
        assert_eq!(
            judge.poll_persist(),
            None,
            "the mark moved, a minute has not"
        );
        judge.handle_check(at(60), Observation::Transition, false);
        let later = judge.poll_persist().expect("a minute on");
        assert_eq!((later.high_water, later.budget_age), (T0 + 60, 60));
        judge.handle_persisted(later);
        // A license: the anchor changes, written at once.
        judge.handle_check(at(61), full(&[license(400 * 24 * HOUR)]), false);
        assert_eq!(judge.poll_persist().map(|s| s.grace_anchor), Some(None));
    }

    #[test]
    fn the_judge_is_woken_at_least_once_a_minute_and_at_each_change() {
        let lic = [license(10 * 24 * HOUR)];
        let mut judge = Judge::new(
            JudgeConfig {
                state_file: false,
                ..config()
            },
            at(0),
        );
        judge.handle_check(at(0), full(&lic), false);
        assert_eq!(judge.poll_timeout(), Duration::from_secs(60));
        // Seven days before the end: the next band edge, to the second.
        let near = 10 * 24 * HOUR - 7 * 24 * HOUR - 5;
        judge.handle_check(at(near), Observation::Transition, false);
        assert_eq!(
            judge.decision_timeout(),
            Some(Duration::from_secs(near + 6))
        );
        assert_eq!(judge.poll_timeout(), Duration::from_secs(near + 6));
    }
}
