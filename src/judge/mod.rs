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
//!
//! As quinn-proto's `Connection` groups its fields, the judge is a few sub-states, each
//! owning its rules, and [`Judge::handle_check`] only sequences them: `reads` (the reads
//! of the source, the set chosen from them, failures and `license.loaded`), `notices`
//! (vendor notices accepted and refused, revocations), `episode` (the episode without a
//! license: grace anchor, floor, cap, manipulation, what a restart carried over),
//! `instance` (settling and instance-limit grace, by the slot task's [`SlotWord`]),
//! `drain` (the drain after a cut-off, and of features taken away), `alerts` (transition
//! events, expiry alerts, floor reports), `persist` (what the state file gets, and when),
//! with [`TrustedTime`] in `time`. `throttle` is the one "at most once per interval" rule
//! (also the usage task's), and `timers` the wake table whose earliest entry is
//! [`Judge::poll_timeout`]. What one sub-state does to another (an attestation moving the
//! anchors back) goes through the judge.

mod alerts;
mod choice;
mod drain;
mod episode;
mod faults;
mod floors;
mod instance;
mod notices;
mod persist;
pub mod preview;
mod reads;
pub(crate) mod set;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod simulation;
#[cfg(test)]
mod tests;
pub(crate) mod throttle;
pub(crate) mod time;
mod timers;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::clock::{MIN_RFC3339, Reading};
use crate::event::{DriftKind, LicenseEvent};
use crate::state::{PersistedState, StateProblem};
use crate::token::{Claims, LicenseError, Notice};
use crate::verdict::{Evaluation, Input, LicenseState, Verdict, evaluate, instance_limit};

use alerts::Alerts;
use drain::Drain;
use episode::Episode;
use instance::Instance;
pub(crate) use instance::SlotWord;
use notices::Notices;
use persist::{Persist, Sources};
use reads::Reads;
pub(crate) use set::{Line, Member};
use time::{ClockAnomaly, TrustedTime};
use timers::{Timers, Wake};

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
    /// The host's boot identity, if the clock knows it: a state file written on another
    /// boot carries no drift budget spent.
    pub(crate) boot_id: Option<String>,
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

/// The events queued for [`Judge::poll_event`], in the order they happened.
type Events = VecDeque<LicenseEvent>;

/// What the rules of a read (in `reads` and `notices`) need of the judge around them.
struct Cx<'a> {
    time: &'a mut TrustedTime,
    events: &'a mut Events,
    /// The monotonic reading of this check.
    mono: Duration,
    config: &'a JudgeConfig,
    /// What an accepted attestation's move of trusted time (seconds, and whether the wall
    /// then agrees) does to the anchors of the other sub-states: the judge applies it.
    /// Returns whether manipulation cleared.
    attested: &'a mut dyn FnMut(i64, bool) -> bool,
}

/// The judge. See the module docs.
#[derive(Debug)]
pub(crate) struct Judge {
    /// The builder's settings.
    config: JudgeConfig,
    /// Trusted time, its marks and floors, and its drift budget.
    time: TrustedTime,
    /// The monotonic reading of the last check.
    mono: Duration,
    /// The reads of the source and the license set chosen from them.
    reads: Reads,
    /// The episode without a license: its anchor, floor, cap and manipulation.
    episode: Episode,
    /// The last check's evaluation, its verdict as published.
    last: Option<Evaluation>,
    /// When alerts and floor reports were last repeated.
    alerts: Alerts,
    /// The drain periods running (after a cut-off, or a feature taken away).
    drain: Drain,
    /// This replica's standing without an instance slot.
    instance: Instance,
    /// The vendor notices accepted and refused, and the revocations known.
    notices: Notices,
    /// What was last written to the state file, and when.
    persist: Persist,
    /// A notice source that cannot be read, a state file that cannot be written.
    faults: faults::Faults,
    /// The events not yet polled.
    events: Events,
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
            reads: Reads::default(),
            episode: Episode::default(),
            last: None,
            alerts: Alerts::default(),
            drain: Drain::default(),
            instance: Instance::default(),
            notices: Notices::default(),
            persist: Persist::new(first.mono),
            faults: faults::Faults::default(),
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
        self.reads.problem().map(LicenseError::reason)
    }

    // ---- handlers ----

    /// The state file as read before the first check: the stored mark is our own
    /// evidence (a wall clock more than the drift budget below it was set back across the
    /// restart), and a stored grace anchor and floor stand.
    pub(crate) fn handle_restored(&mut self, restored: Result<PersistedState, StateProblem>) {
        match restored {
            Ok(state) => {
                self.persist.restored(state.clone());
                // Accepted notices stay accepted: an older one (a replayed attestation)
                // is refused after a restart, and a revocation stays when its line goes.
                self.episode.restore(&state);
                // A state file of another boot carries no budget: a new boot starts one.
                let same_boot = match (&self.config.boot_id, &state.boot_id) {
                    (Some(now), Some(then)) => now == then,
                    _ => true,
                };
                let (age, spent) = if same_boot {
                    (
                        Duration::from_secs(state.budget_age),
                        Duration::from_millis(state.budget_spent_ms),
                    )
                } else {
                    (Duration::ZERO, Duration::ZERO)
                };
                // On the same boot, the host's boot age tells how long ago the state was
                // written (it was written with the boot age then): downtime is known.
                let since_write = match (&self.config.boot_id, &state.boot_id) {
                    (Some(now), Some(then)) if now == then && state.settled => self
                        .time
                        .boot_age()
                        .and_then(|age| age.checked_sub(Duration::from_secs(state.budget_age))),
                    _ => None,
                };
                let high_water = state.high_water;
                self.notices.seq = state.notice_seq;
                self.notices.revoked = state.revoked;
                let restored = self.time.restore_mark(high_water, age, spent, since_write);
                if let Some(anomaly) = restored {
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
        self.persist.written(state, self.mono);
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
        // A successor's supersession comes into force with time alone, and the set's
        // customer can change with it (a renamed renewal starts). A license's signed
        // `iat`, and a revocation's, are floors for judging that license only (real time
        // is at least that, give or take the vendor's clock): they never raise the mark,
        // nor the instant any other license is judged at.
        let now = self.time.now_secs();
        let hard_now = self.time.hard_now_secs();
        self.reads
            .supersessions(now, hard_now, &mut self.notices, &mut self.events);
        self.reads.update_floors(self.mono, &self.notices);
        // The episode as the verdict will see it, then the set chosen by it (the set is
        // empty exactly when no license at all was read).
        let grace = self.grace_secs();
        self.episode
            .apply_restored(self.reads.no_candidates(), grace);
        self.episode.not_after(now, grace);
        let fresh_anchor = self
            .episode
            .fresh(self.last.as_ref().and_then(|e| e.cut_off));
        let chosen = self.best_set(now);
        self.reads.set_chosen(&chosen);
        let issue_floor = self.reads.issue_floor();
        self.alerts.report_floors(
            &self.time,
            issue_floor,
            self.mono,
            self.config.check_interval,
            &mut self.events,
        );
        let judged = self.reads.judged(now, self.mono);
        self.episode
            .clear_manipulation(self.time.wall_is_consistent(), || {
                judged
                    .iter()
                    .any(|c| c.nbf.is_none_or(|nbf| nbf <= now) && now < c.ends())
            });
        self.instance
            .judge_slot(slot, now, self.mono, self.config.instance_settling);
        let evaluation = self.decide(now, judged);
        self.reads.announce(&evaluation.verdict, &mut self.events);
        self.alerts.transition_events(
            self.last.as_ref().map(|e| &e.verdict),
            &evaluation.verdict,
            full || reloaded,
            self.mono,
            &self.config,
            &mut self.events,
        );
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
        let verdict = Arc::new(evaluation.verdict.clone());
        self.last = Some(evaluation);
        verdict
    }

    /// The evaluation of this check at trusted `now` of the set's licenses as `judged`
    /// (each at its own floor), with its verdict built whole, here and only here: nothing
    /// patches it afterwards.
    fn decide(&self, now: i64, judged: Vec<Arc<Claims>>) -> Evaluation {
        let mut raw = evaluate(&self.input(&judged, now));
        // The claims a verdict shows are the signed ones (its instants stay as judged).
        floors::restore(&mut raw.verdict, &judged, &self.reads.set);
        // Provisional readings alone never cut a service off: hold as grace unless our
        // firm evidence (or the vendor's floors) cuts it off too. The checker samples
        // again within a minute, and judges for real once readings are firm.
        let held = raw.verdict.state == LicenseState::GraceExpired && self.time.provisional() && {
            // Without firm evidence, time could be as early as any clock can read; and
            // the set is the one that would be chosen then.
            let firm = self.time.firm_now_secs().unwrap_or(MIN_RFC3339);
            let licenses: Vec<Arc<Claims>> =
                self.best_set(firm).into_iter().map(|m| m.claims).collect();
            evaluate(&self.input(&licenses, firm)).verdict.state != LicenseState::GraceExpired
        };
        let state = if held {
            LicenseState::Grace
        } else {
            raw.verdict.state
        };
        Evaluation {
            next_change: raw.next_change.filter(|_| !held),
            verdict: Verdict {
                state,
                evaluated_mono: self.time.last_mono(),
                // Settling is shown while it admits; a cut-off for another reason hides it.
                instance_settling_until: self
                    .instance
                    .settling_until
                    .filter(|_| state.admits())
                    .map(crate::clock::from_unix_seconds),
                notice_seq: (self.reads.customer())
                    .and_then(|c| self.notices.seq.get(c))
                    .copied(),
                revocations: self.notices.revoked.len(),
                receipt_seq: self.notices.receipt_seq,
                ..raw.verdict
            },
            ..raw
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
        self.persist.poll(self.state_to_persist()?, self.mono)
    }

    /// The state as it would be written now (with a state file, once there is firm
    /// evidence to write).
    pub(crate) fn state_to_persist(&self) -> Option<PersistedState> {
        if !self.config.state_file {
            return None;
        }
        self.persist.state(Sources {
            time: &self.time,
            episode: &self.episode,
            last: self.last.as_ref(),
            notices: &self.notices,
            boot_id: self.config.boot_id.as_deref(),
        })
    }

    /// The monotonic reading at which the judge wants the next check: the next instant
    /// the verdict changes, the end of the drain, the next state-file write, and never
    /// more than [`MAX_SLEEP`] from now.
    pub(crate) fn poll_timeout(&self) -> Duration {
        let cap = self.mono.saturating_add(MAX_SLEEP);
        let earliest = self.timers().earliest(&Wake::ALL);
        earliest.map_or(cap, |at| at.min(cap))
    }

    /// The monotonic reading at which a decision is due: the verdict changes, or the
    /// drain ends. (The simulations wake the judge there and at their own steps; the
    /// shell also wakes it for the state file and at least once a minute.)
    #[cfg_attr(
        not(any(test, feature = "fuzzing")),
        expect(
            dead_code,
            reason = "only the simulations wake the judge at decisions alone"
        )
    )]
    pub(crate) fn decision_timeout(&self) -> Option<Duration> {
        self.timers().earliest(&Wake::DECISIONS)
    }

    /// The wake table, made from the sub-states when asked (so it is never stale): each
    /// instant the judge wants a check at, by name.
    fn timers(&self) -> Timers {
        let at_trusted = |secs: i64| self.mono.saturating_add(self.time.until(secs));
        let mut timers = Timers::default();
        let change = self.last.as_ref().and_then(|e| e.next_change);
        timers.set(Wake::Change, change.map(at_trusted));
        timers.set(Wake::Drain, self.drain.wake());
        timers.set(Wake::FeatureDrain, self.drain.feature_wake(self.mono));
        let settled = self.instance.settling_until.map(at_trusted);
        timers.set(Wake::Settled, settled);
        let persist = self.config.state_file.then(|| self.persist.wake(self.mono));
        timers.set(Wake::Persist, persist);
        timers
    }

    // ---- the rules ----

    fn grace_secs(&self) -> i64 {
        i64::try_from(self.config.grace_period.as_secs()).unwrap_or(i64::MAX)
    }

    fn input<'a>(&'a self, licenses: &'a [Arc<Claims>], now: i64) -> Input<'a> {
        Input {
            licenses,
            problem: self.reads.problem(),
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
                let already = self.episode.manipulated_at.is_some();
                self.episode.manipulated(at);
                // The first report at once; further steps back of a wall already reported
                // at most once per check interval.
                let every = self.config.check_interval;
                let report = if already {
                    self.alerts.stepped_back.ready(self.mono, every)
                } else {
                    self.alerts.stepped_back.mark(self.mono);
                    true
                };
                if report {
                    self.events
                        .push_back(LicenseEvent::TimeManipulationDetected {
                            wall_clock_jump_seconds: seconds,
                        });
                }
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
        let (episode, instance) = (&mut self.episode, &mut self.instance);
        // An accepted attestation that moved trusted time moves what was anchored at it.
        let mut attested = |moved, wall_consistent| {
            instance.moved_back(moved);
            episode.attested(moved, wall_consistent)
        };
        let mut cx = Cx {
            time: &mut self.time,
            events: &mut self.events,
            mono: self.mono,
            config: &self.config,
            attested: &mut attested,
        };
        self.reads.judge(read, &mut self.notices, &mut cx)
    }
}
