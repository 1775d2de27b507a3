//! The checker task: the only writer of the verdict. It reads the source (off the async
//! workers), samples the clocks, evaluates with the pure core, publishes, and reports what
//! changed.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::Clock;
use crate::clock::{ClockAnomaly, MIN_RFC3339, Reading, TrustedTime, escape_control};
use crate::event::{DriftKind, LicenseEvent, Reporter};
use crate::reload::{MAX_SETTLE_ROUNDS, SETTLE, Trigger, Triggers};
use crate::shared::{Command, Shared, Stats};
use crate::source::{self, LicenseSource};
use crate::state::PersistedState;
use crate::token::{Claims, IAT_TOLERANCE_SECS, LicenseError, LicenseVerifier, fingerprint};
use crate::verdict::{Evaluation, Input, LicenseState, Verdict, evaluate};

/// How often the state file's mark is brought up to date.
const PERSIST_INTERVAL: Duration = Duration::from_secs(60);
/// The longest the checker sleeps between clock samples. tokio's timers stop while the
/// machine is suspended and trusted time does not, so this bounds how long a verdict can
/// lag behind after a resume (a sample costs microseconds).
pub(crate) const MAX_SLEEP: Duration = Duration::from_secs(60);
/// How long a read or write of a file may take before it counts as hung (a dead network
/// or FUSE mount): the checker goes on, and the last good license stays.
pub(crate) const IO_DEADLINE: Duration = Duration::from_secs(5);

/// Everything the builder hands the checker.
pub(crate) struct Config {
    pub(crate) verifier: LicenseVerifier,
    pub(crate) source: LicenseSource,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) built_at: Option<std::time::SystemTime>,
    pub(crate) grace_period: Duration,
    pub(crate) drain_period: Duration,
    pub(crate) check_interval: Duration,
    pub(crate) fail_closed: bool,
    pub(crate) triggers: Triggers,
    pub(crate) file_poll_interval: Option<Duration>,
    pub(crate) state_path: Option<PathBuf>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) reporter: Reporter,
    /// The link to the instance-slot task, when the monitor counts instances.
    pub(crate) instances: Option<InstanceLink>,
}

/// The checker's side of the instance-slot task (see `crate::instances`): the checker
/// tells it the limit in force, it tells the checker whether this replica is without a
/// slot.
pub(crate) struct InstanceLink {
    pub(crate) limit: watch::Sender<Option<u64>>,
    pub(crate) without: watch::Receiver<bool>,
}

/// What woke the checker.
enum Wake {
    Command(Command),
    Trigger(Trigger),
    /// The instance-slot task changed its answer.
    Instances,
    Timer,
}

/// Waits for the instance-slot task's next answer. Pends forever without a link, and
/// once the task is gone (the link is dropped: a task that died must not spin the
/// checker, and `check` then counts the replica as without a slot).
async fn instance_change(link: &mut Option<InstanceLink>, gone: &mut bool) {
    match link {
        Some(l) if !*gone => {
            if l.without.changed().await.is_err() {
                *gone = true;
            }
        }
        _ => std::future::pending().await,
    }
}

/// What a wake does.
pub(crate) enum Mode {
    /// Only time moved: sample the clocks and re-evaluate.
    Transition,
    /// A full check: judge this fresh read of the source, repeat a due alert.
    Full(Result<String, LicenseError>),
    /// The source changed since it was last judged: judge this read.
    Changed(Result<String, LicenseError>),
}

/// Why blocking work could not give an answer.
enum OffThread {
    /// It has not returned within [`IO_DEADLINE`] (or an earlier call still has not).
    Hung,
    /// It panicked.
    Failed,
}

/// Runs blocking file I/O on tokio's blocking pool with a deadline. A call that hangs is
/// left running (a thread stuck in the kernel cannot be cancelled) and remembered in
/// `slot`; until it returns, no further call is started, so a dead mount costs one thread.
async fn off_thread<T: Send + 'static>(
    slot: &mut Option<AbortHandle>,
    deadline: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, OffThread> {
    if slot.as_ref().is_some_and(|hung| !hung.is_finished()) {
        return Err(OffThread::Hung);
    }
    *slot = None;
    let mut handle = tokio::task::spawn_blocking(work);
    match tokio::time::timeout(deadline, &mut handle).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(OffThread::Failed),
        Err(_) => {
            *slot = Some(handle.abort_handle());
            Err(OffThread::Hung)
        }
    }
}

/// Adds without the panic `Instant + Duration` has on overflow (a grace period of
/// `Duration::MAX`).
pub(crate) fn later(at: Instant, by: Duration) -> Instant {
    at.checked_add(by)
        .unwrap_or_else(|| at + Duration::from_secs(100 * 365 * 86_400))
}

/// The checker: reads, verifies, samples the clocks, evaluates, publishes, reports.
pub(crate) struct Checker {
    state_path: Option<PathBuf>,
    /// What was last written to the state file, and when.
    persisted: Option<PersistedState>,
    persisted_at: Instant,
    /// Events found before the first check (restoring the state), reported with it.
    startup_events: Vec<LicenseEvent>,
    stats: Arc<Stats>,
    reporter: Reporter,
    triggers: Triggers,
    file_poll_interval: Option<Duration>,
    /// The last read of the source, to tell a changed file from an unchanged one.
    last_read: Option<Result<String, LicenseError>>,
    verifier: LicenseVerifier,
    source: LicenseSource,
    clock: Arc<dyn Clock>,
    grace_period: Duration,
    drain_period: Duration,
    check_interval: Duration,
    fail_closed: bool,
    time: TrustedTime,
    /// While cut off: when the drain period ends (running time from the check that
    /// published the cut-off), and whether it has.
    drain_ends: Option<Instant>,
    drained: bool,
    /// The license set: every token of the last good read that verified (in force, held
    /// for later, or expired), and each one's fingerprint in the same order.
    set: Vec<Arc<Claims>>,
    set_prints: Vec<String>,
    /// The fingerprint of the last read's text, when all of it verified: an unchanged
    /// source is not verified again.
    text_print: Option<String>,
    /// Tokens `license.loaded` has announced (by fingerprint), so that each is announced
    /// once, when it comes into force.
    announced: HashSet<String>,
    /// The last read's problem, while the source does not hold the license in force.
    problem: Option<LicenseError>,
    /// How many reads in a row had a problem (for `license.recovered`).
    failed_reads: u64,
    grace_anchor: Option<i64>,
    /// The grace anchor was set while trusted now rested on an unconfirmed reading.
    anchor_soft: bool,
    manipulated_at: Option<i64>,
    ever_valid: bool,
    last: Option<Evaluation>,
    /// The runtime's instant at the last clock sample.
    checked_at: Instant,
    /// When the expiry alert last fired, to repeat it at most once per check interval.
    alerted_at: Option<Instant>,
    /// The last failure reported (what was read, and when), so that an unchanged bad
    /// source is reported at most once per check interval, whatever storm of
    /// `check_now` or SIGHUP comes in between.
    failure_reported: Option<(String, Instant)>,
    /// When a wall clock behind a vendor floor was last reported.
    floor_reported_at: Option<Instant>,
    /// A read of the source, and a read or write of the state file, that hung.
    hung_read: Option<AbortHandle>,
    hung_state: Option<AbortHandle>,
    instances: Option<InstanceLink>,
    /// The instance-slot task ended without being asked to (it panicked): from then on
    /// this replica counts as holding no slot.
    instances_gone: bool,
    /// Since when (trusted seconds) the instance-slot task has said this replica holds no
    /// slot; `None` while it holds one (or instances are not counted).
    without_slot_since: Option<i64>,
}

impl Checker {
    pub(crate) fn new(config: Config) -> Self {
        let mut time = TrustedTime::new(Reading::of(&*config.clock));
        if let Some(built_at) = config.built_at {
            time.set_build_floor(built_at);
        }
        Self {
            state_path: config.state_path,
            persisted: None,
            persisted_at: Instant::now(),
            startup_events: Vec::new(),
            reporter: config.reporter,
            stats: config.stats,
            triggers: config.triggers,
            file_poll_interval: config.file_poll_interval,
            last_read: None,
            verifier: config.verifier,
            source: config.source,
            clock: config.clock,
            grace_period: config.grace_period,
            drain_period: config.drain_period,
            drain_ends: None,
            drained: false,
            check_interval: config.check_interval,
            fail_closed: config.fail_closed,
            time,
            set: Vec::new(),
            set_prints: Vec::new(),
            text_print: None,
            announced: HashSet::new(),
            problem: None,
            failed_reads: 0,
            grace_anchor: None,
            anchor_soft: false,
            manipulated_at: None,
            ever_valid: false,
            last: None,
            checked_at: Instant::now(),
            alerted_at: None,
            failure_reported: None,
            floor_reported_at: None,
            hung_read: None,
            hung_state: None,
            instances: config.instances,
            instances_gone: false,
            without_slot_since: None,
        }
    }

    /// Restores the state file and runs the first full check: what `start` awaits. Returns
    /// the verdict and whether a drain period is already over.
    pub(crate) async fn first_check(&mut self) -> (Arc<Verdict>, bool) {
        self.restore_state().await;
        let read = self.read_source().await;
        let verdict = self.check(Mode::Full(read)).await;
        self.persist_state().await;
        (verdict, self.drained)
    }

    pub(crate) async fn run(mut self, shared: Weak<Shared>, mut commands: mpsc::Receiver<Command>) {
        let mut next_full = later(self.checked_at, self.check_interval);
        let mut next_poll = self.file_poll_interval.map(|p| later(self.checked_at, p));
        loop {
            // Deadlines count from when the clocks were sampled, not from when this task
            // got to run: the two differ if the runtime was busy (or a paused test clock
            // jumped) in between. After a suspend or a long jump there is one wake at the
            // new now, no replay of the missed ones.
            let change = self
                .last
                .as_ref()
                .and_then(|e| e.next_change)
                .and_then(|at| self.checked_at.checked_add(self.time.until(at)));
            // With a state file, wake a minute after each write to keep its mark current:
            // a restart then finds a mark at most a minute old.
            let persist = self.state_path.as_ref().map(|_| {
                let due = later(self.persisted_at, PERSIST_INTERVAL);
                if due > self.checked_at {
                    due
                } else {
                    // Nothing was written (no firm mark yet, or the disk failed): retry in
                    // a minute, never in a busy loop.
                    later(self.checked_at, PERSIST_INTERVAL)
                }
            });
            let cap = later(self.checked_at, MAX_SLEEP);
            let drain = self.drain_ends.filter(|_| !self.drained);
            let wake = [
                Some(next_full),
                change,
                next_poll,
                persist,
                Some(cap),
                drain,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(cap);
            let wake = tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => Wake::Command(command),
                    None => return, // every handle is gone
                },
                trigger = self.triggers.next() => Wake::Trigger(trigger),
                () = instance_change(&mut self.instances, &mut self.instances_gone) => Wake::Instances,
                () = tokio::time::sleep_until(wake) => Wake::Timer,
            };
            let now = Instant::now();
            let mode = match &wake {
                Wake::Command(_) | Wake::Trigger(Trigger::Hangup) => {
                    Mode::Full(self.read_source().await)
                }
                Wake::Timer if now >= next_full => Mode::Full(self.read_source().await),
                Wake::Trigger(Trigger::FileChanged) => self.changed_read().await,
                Wake::Timer if next_poll.is_some_and(|p| now >= p) => self.changed_read().await,
                Wake::Timer | Wake::Instances => Mode::Transition,
            };
            if let Some(poll) = self.file_poll_interval
                && next_poll.is_some_and(|p| now >= p)
            {
                next_poll = Some(later(now, poll));
            }
            let periodic = matches!(wake, Wake::Timer) && matches!(mode, Mode::Full(_));
            let verdict = self.check(mode).await;
            if periodic {
                next_full = later(self.checked_at, self.check_interval);
            }
            let Some(shared) = shared.upgrade() else {
                return;
            };
            shared.publish(Arc::clone(&verdict), self.drained);
            drop(shared);
            // After publishing (a slow disk delays the state file, never the verdict) and
            // before answering `check_now` (whose caller may restart next).
            self.persist_state().await;
            if let Wake::Command(Command::CheckNow(reply)) = wake {
                let _ = reply.send(verdict);
            }
        }
    }

    /// Reads the source. A file is read on the blocking pool with a deadline, so a hung
    /// mount stalls neither the runtime's workers nor the checker: it reads as
    /// `unreadable`, and the last good license stays.
    async fn read_source(&mut self) -> Result<String, LicenseError> {
        if !matches!(self.source, LicenseSource::File(_)) {
            return self.source.read();
        }
        let source = self.source.clone();
        match off_thread(&mut self.hung_read, IO_DEADLINE, move || source.read()).await {
            Ok(read) => read,
            Err(why) => Err(LicenseError::Unreadable {
                detail: format!(
                    "{}: {}",
                    self.source.describe(),
                    match why {
                        OffThread::Hung => "the read has not returned within 5 s",
                        OffThread::Failed => "the read failed",
                    }
                ),
            }),
        }
    }

    /// Reads the source and, if it differs from the last read, waits until it stops
    /// changing: a read may catch a file half-written (truncate and write) or a symlink
    /// swap half-done, and such a transient state must not be judged.
    async fn changed_read(&mut self) -> Mode {
        let mut read = self.read_source().await;
        if self.last_read.as_ref() == Some(&read) {
            return Mode::Transition;
        }
        for _ in 0..MAX_SETTLE_ROUNDS {
            tokio::time::sleep(SETTLE).await;
            let again = self.read_source().await;
            if again == read {
                break;
            }
            read = again;
        }
        Mode::Changed(read)
    }

    /// One wake: sample the clocks, judge the source (read fresh on a full check, or as
    /// read by a poll that saw it change), evaluate, and report what changed. Returns the
    /// verdict to publish.
    async fn check(&mut self, mode: Mode) -> Arc<Verdict> {
        let mut events = std::mem::take(&mut self.startup_events);
        self.checked_at = Instant::now();
        if let Some(anomaly) = self.time.sample(Reading::of(&*self.clock)) {
            self.on_clock_anomaly(anomaly, &mut events);
        }
        let (full, reloaded) = match mode {
            Mode::Transition => (false, false),
            Mode::Full(read) => (true, self.judge(read, &mut events)),
            Mode::Changed(read) => (false, self.judge(read, &mut events)),
        };
        // A license's signed `iat` is a floor for judging that license (real time is at
        // least that, give or take the vendor's clock): it never raises the mark.
        let issue_floor = self
            .set
            .iter()
            .filter_map(|l| l.iat)
            .max()
            .map(|iat| iat.saturating_sub(IAT_TOLERANCE_SECS));
        let now = issue_floor.map_or(self.time.now_secs(), |f| f.max(self.time.now_secs()));
        self.report_floors(issue_floor, &mut events);
        // Anchors never lie ahead of trusted time: a reading far ahead (provisional, or
        // set ahead and corrected) must not leave a grace period that ends later.
        self.grace_anchor = self.grace_anchor.map(|a| a.min(now));
        self.manipulated_at = self.manipulated_at.map(|m| m.min(now));
        // A grace period that starts now, while trusted now rests on a reading not yet
        // confirmed (provisional, or the first after a restart), is marked: if that reading
        // turns out to be ahead, the correction moves the anchor back with it (see
        // `on_clock_anomaly`), so a clock set ahead cannot stretch grace.
        let fresh_anchor = self.grace_anchor.is_none();
        // Manipulation-grace clears once the wall clock agrees with trusted time again and
        // a valid license is in force.
        if self.manipulated_at.is_some()
            && self.time.wall_is_consistent()
            && self
                .set
                .iter()
                .any(|l| l.nbf.is_none_or(|nbf| nbf <= now) && now < l.exp)
        {
            self.manipulated_at = None;
        }
        let without = match &mut self.instances {
            Some(link) => self.instances_gone || *link.without.borrow_and_update(),
            None => false,
        };
        self.without_slot_since = match (without, self.without_slot_since) {
            (true, Some(since)) => Some(since.min(now)),
            (true, None) => Some(now),
            (false, _) => None,
        };
        let mut evaluation = evaluate(&self.input(now));
        if evaluation.verdict.state == LicenseState::GraceExpired && self.time.provisional() {
            // Provisional readings alone never cut a service off: hold as grace unless our
            // firm evidence (or the vendor's floors) cuts it off too. The checker samples
            // again within a minute, and judges for real once readings are firm.
            // Without firm evidence, time could be as early as any clock can read.
            let firm = self.time.firm_now_secs().unwrap_or(MIN_RFC3339);
            let firm = issue_floor.map_or(firm, |f| f.max(firm));
            let firm_cut = evaluate(&self.input(firm)).verdict.state == LicenseState::GraceExpired;
            if !firm_cut {
                evaluation.verdict.state = LicenseState::Grace;
                evaluation.next_change = None;
            }
        }
        self.announce(&evaluation.verdict, &mut events);
        self.transition_events(&evaluation, full || reloaded, &mut events);
        // Responses admitted before a cut-off get the drain period, counted from the check
        // that published the cut-off (at the end of grace's exact second, or when an
        // expired license was loaded), then end; a valid license or grace again stops it.
        self.drain_ends = match (evaluation.verdict.state, self.drain_ends) {
            (LicenseState::GraceExpired, Some(ends)) => Some(ends),
            (LicenseState::GraceExpired, None) => Some(later(self.checked_at, self.drain_period)),
            _ => None,
        };
        self.drained = self.drain_ends.is_some_and(|ends| self.checked_at >= ends);
        if fresh_anchor && evaluation.grace_anchor.is_some() {
            // (Only an anchor taken from the reading itself; an expired license's is its
            // own signed `exp`.)
            self.anchor_soft = self.time.unconfirmed() && evaluation.grace_anchor == Some(now);
        } else if !self.time.unconfirmed() || evaluation.grace_anchor.is_none() {
            self.anchor_soft = false;
        }
        self.grace_anchor = evaluation.grace_anchor;
        self.ever_valid |= evaluation.verdict.is_valid();
        if let Some(link) = &self.instances {
            // The limit of the licenses in force (or the expired set's, in grace), also
            // after a cut-off: a replica cut off for want of a slot keeps trying for one.
            let limit = crate::verdict::instance_limit(&evaluation.verdict.licenses);
            link.limit
                .send_if_modified(|l| std::mem::replace(l, limit) != limit);
        }
        let mut verdict = evaluation.verdict.clone();
        verdict.evaluated_mono = self.time.last_mono();
        let verdict = Arc::new(verdict);
        self.last = Some(evaluation);
        for event in events {
            self.reporter.emit(event);
        }
        verdict
    }

    fn input(&self, now: i64) -> Input<'_> {
        Input {
            licenses: &self.set,
            problem: self.problem.as_ref(),
            now,
            grace_anchor: self.grace_anchor,
            manipulated_at: self.manipulated_at,
            grace_period: i64::try_from(self.grace_period.as_secs()).unwrap_or(i64::MAX),
            no_grace: self.fail_closed && !self.ever_valid,
            without_slot_since: self.without_slot_since,
        }
    }

    /// Reports a wall clock behind a vendor floor (the build time, the license's `iat`),
    /// at most once per check interval: drift, never manipulation, as the vendor's clock
    /// may be the wrong one, and judging at the floor already takes away any gain.
    fn report_floors(&mut self, issue_floor: Option<i64>, events: &mut Vec<LicenseEvent>) {
        let wall = self.time.wall_secs();
        let finding = match self.time.behind_build_floor() {
            Some(seconds) => Some((DriftKind::BehindBuildTime, seconds)),
            None => issue_floor.filter(|&floor| wall < floor).map(|floor| {
                let iat = floor.saturating_add(IAT_TOLERANCE_SECS);
                (DriftKind::BehindIssueTime, wall.saturating_sub(iat) as f64)
            }),
        };
        let Some((kind, drift_seconds)) = finding else {
            return;
        };
        let due = self
            .floor_reported_at
            .is_none_or(|at| self.checked_at >= later(at, self.check_interval));
        if due {
            self.floor_reported_at = Some(self.checked_at);
            events.push(LicenseEvent::TimeDriftDetected {
                drift_seconds,
                kind,
            });
        }
    }

    /// Applies the state file before the first check: the stored mark is our own evidence
    /// (a wall clock more than 5 s below it was set back across the restart), and a
    /// stored grace anchor stands.
    async fn restore_state(&mut self) {
        let Some(path) = self.state_path.clone() else {
            return;
        };
        let shown = escape_control(&path.display().to_string()).into_owned();
        let loaded = off_thread(&mut self.hung_state, IO_DEADLINE, move || {
            PersistedState::load(&path)
        })
        .await;
        match loaded {
            Ok(Ok(state)) => {
                self.persisted = Some(state);
                self.grace_anchor = state.grace_anchor;
                if let Some(anomaly) = self.time.restore_mark(state.high_water) {
                    let mut events = Vec::new();
                    self.on_clock_anomaly(anomaly, &mut events);
                    self.startup_events.extend(events);
                }
            }
            Ok(Err(problem)) => self.startup_events.push(LicenseEvent::StateInvalid {
                reason: problem.reason,
                detail: problem.detail,
            }),
            Err(_) => self.startup_events.push(LicenseEvent::StateInvalid {
                reason: "unreadable",
                detail: format!("{shown}: the read has not returned within 5 s"),
            }),
        }
    }

    /// Writes the state file when the anchor changed, or the mark moved and a minute has
    /// passed since the last write. Only firm evidence is written: the mark never holds a
    /// provisional reading, and while readings are provisional an anchor is written only
    /// if firm evidence backs it (an expired license's own `exp`, say), so a clock that may
    /// be wrong leaves nothing for later that a restart could gain from.
    async fn persist_state(&mut self) {
        let Some(path) = self.state_path.clone() else {
            return;
        };
        let Some(mark) = self.time.persistable_mark() else {
            return;
        };
        let anchor = match self.grace_anchor {
            Some(anchor) if self.time.provisional() => {
                let backed = self.time.firm_now_secs().is_some_and(|firm| anchor <= firm);
                if backed {
                    Some(anchor)
                } else {
                    self.persisted.and_then(|p| p.grace_anchor)
                }
            }
            anchor => anchor,
        };
        let state = PersistedState::new(mark, anchor);
        let due = match &self.persisted {
            None => true,
            Some(last) => {
                last.grace_anchor != state.grace_anchor
                    || (last.high_water != state.high_water
                        && self.checked_at >= later(self.persisted_at, PERSIST_INTERVAL))
            }
        };
        if !due {
            return;
        }
        let shown = escape_control(&path.display().to_string()).into_owned();
        match off_thread(&mut self.hung_state, IO_DEADLINE, move || {
            state.store(&path)
        })
        .await
        {
            Ok(Ok(())) => {
                self.persisted = Some(state);
                self.persisted_at = self.checked_at;
            }
            Ok(Err(e)) => tracing::warn!(target: crate::event::TARGET, path = %shown,
                error = %escape_control(&e.to_string()), "cannot write the license state file"),
            Err(_) => tracing::warn!(target: crate::event::TARGET, path = %shown,
                "the license state file write has not returned within 5 s"),
        }
    }

    fn on_clock_anomaly(&mut self, anomaly: ClockAnomaly, events: &mut Vec<LicenseEvent>) {
        match anomaly {
            ClockAnomaly::BackwardJump { seconds } => {
                let now = self.time.now_secs();
                let at = self.time.hard_now_secs().map_or(now, |h| h.min(now));
                self.manipulated_at.get_or_insert(at);
                events.push(LicenseEvent::TimeManipulationDetected {
                    wall_clock_jump_seconds: seconds,
                });
            }
            ClockAnomaly::ForwardDrift { seconds } => {
                events.push(LicenseEvent::TimeDriftDetected {
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
                events.push(LicenseEvent::TimeDriftDetected {
                    drift_seconds: seconds,
                    kind: DriftKind::ClockCorrected,
                });
            }
        }
    }

    /// Judges one read of the source and counts it. Returns whether a new license was put
    /// in force.
    fn judge(
        &mut self,
        read: Result<String, LicenseError>,
        events: &mut Vec<LicenseEvent>,
    ) -> bool {
        let before = self.problem.as_ref().map(LicenseError::reason);
        let first = events.len();
        let reloaded = self.judge_read(read, events);
        // Every path through `judge_read` leaves `problem` set exactly when it refused.
        let after = self.problem.as_ref().map(LicenseError::reason);
        match (before, after) {
            (Some(previous_reason), None) => {
                // Before the read's own events: the fix, then what it brought in.
                events.insert(
                    first,
                    LicenseEvent::Recovered {
                        previous_reason,
                        failed_checks: self.failed_reads,
                        source: self.source.describe(),
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
        self.stats.record_check(after);
        reloaded
    }

    fn judge_read(
        &mut self,
        read: Result<String, LicenseError>,
        events: &mut Vec<LicenseEvent>,
    ) -> bool {
        self.last_read = Some(read.clone());
        let source = self.source.describe();
        let kept_previous = !self.set.is_empty();
        let text = match read.and_then(|text| {
            source::tokens(&text)?;
            Ok(text)
        }) {
            Ok(text) => text,
            Err(error) => {
                if self.report_failure(error.to_string()) {
                    events.push(match error {
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
        let print = fingerprint(&text);
        if self.text_print.as_deref() == Some(print.as_str()) {
            // The set in force, unchanged and wholly good: nothing to verify again.
            self.problem = None;
            return false;
        }
        // Each token on its own; the first that verifies names the set's customer.
        let mut good: Vec<(Arc<Claims>, String)> = Vec::new();
        let mut refused: Vec<(usize, String, LicenseError)> = Vec::new();
        for (line, token) in source::tokens(&text).unwrap_or_default() {
            let token_print = fingerprint(token);
            let verified = self
                .verifier
                .verify_token(token)
                .and_then(|v| match good.first() {
                    Some((first, _)) if first.customer != v.claims.customer => {
                        Err(LicenseError::CustomerMismatch {
                            expected: first.customer.clone(),
                            found: v.claims.customer,
                        })
                    }
                    _ => Ok(v.claims),
                });
            match verified {
                Ok(claims) => good.push((Arc::new(claims), token_print)),
                Err(error) => refused.push((line, token_print, error)),
            }
        }
        let counts = !good.is_empty() || kept_previous;
        let report = refused.is_empty() || self.report_failure(print.clone());
        for (line, token_print, error) in refused.iter().filter(|_| report) {
            events.push(LicenseEvent::VerificationFailed {
                error: error.clone(),
                source: source.clone(),
                kept_previous: counts,
                line: Some(*line),
                fingerprint: Some(token_print.clone()),
            });
        }
        self.problem = refused.into_iter().next().map(|(_, _, error)| error);
        if good.is_empty() {
            // Wholly bad: the last good set stays.
            return false;
        }
        // A set of licenses held for later and nothing in force now, read while the last
        // set had a license in force (the operator replaced this year's token with next
        // year's instead of adding it): the license in force stays until its own end, as
        // if both lines were there. It was verified, and it ends no later than it would
        // have. (A set of expired licenses replaces the last one outright.)
        let now = self.time.now_secs();
        let in_force = |c: &Claims| c.nbf.is_none_or(|nbf| nbf <= now) && now < c.exp;
        let held = |c: &Claims| c.nbf.is_some_and(|nbf| nbf > now) && c.nbf < Some(c.exp);
        if !good.iter().any(|(c, _)| in_force(c)) && good.iter().any(|(c, _)| held(c)) {
            let customer = good[0].0.customer.clone();
            for (claims, token_print) in self.set.iter().zip(&self.set_prints) {
                if in_force(claims)
                    && claims.customer == customer
                    && !good.iter().any(|(_, p)| p == token_print)
                {
                    good.push((Arc::clone(claims), token_print.clone()));
                }
            }
        }
        let prints: Vec<String> = good.iter().map(|(_, p)| p.clone()).collect();
        let changed = prints != self.set_prints;
        self.text_print = self.problem.is_none().then_some(print);
        self.set = good.into_iter().map(|(c, _)| c).collect();
        self.set_prints = prints;
        self.announced.retain(|p| self.set_prints.contains(p));
        changed
    }

    /// Whether a failure reading `what` is to be reported now: a new one, or one last
    /// reported a check interval ago or more.
    fn report_failure(&mut self, what: String) -> bool {
        let due = match &self.failure_reported {
            Some((last, at)) if *last == what => self.checked_at >= later(*at, self.check_interval),
            _ => true,
        };
        if due {
            self.failure_reported = Some((what, self.checked_at));
        }
        due
    }

    /// `license.loaded` for each license that is in force now and has not been
    /// announced: a new one read now, or a held one whose `nbf` has come.
    fn announce(&mut self, verdict: &Verdict, events: &mut Vec<LicenseEvent>) {
        for claims in &verdict.licenses {
            let Some(i) = self.set.iter().position(|c| Arc::ptr_eq(c, claims)) else {
                continue;
            };
            let print = &self.set_prints[i];
            if self.announced.insert(print.clone()) {
                events.push(LicenseEvent::Loaded {
                    customer: claims.customer.clone(),
                    expires_at: claims.expires_at(),
                    jti: claims.jti.clone(),
                    fingerprint: print.clone(),
                });
            }
        }
    }

    /// The events for the change from the last evaluation to `new`.
    fn transition_events(&mut self, new: &Evaluation, full: bool, events: &mut Vec<LicenseEvent>) {
        let verdict = &new.verdict;
        let previous = self.last.as_ref().map(|e| &e.verdict);
        let was = previous.map(|v| v.state);
        if let Some(previous) = previous {
            if let Some(changed) = entitlements_changed(previous, verdict) {
                events.push(changed);
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
                    events.push(LicenseEvent::GraceModeExited {
                        customer: claims.customer.clone(),
                        expires_at,
                    });
                }
            }
            (
                None | Some(LicenseState::Valid),
                LicenseState::Grace | LicenseState::GraceExpired,
            ) => {
                events.push(self.grace_entered(verdict));
                if verdict.state == LicenseState::GraceExpired {
                    events.push(self.grace_expired(verdict));
                }
            }
            (Some(LicenseState::Grace), LicenseState::GraceExpired) => {
                events.push(self.grace_expired(verdict));
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
            let due = self
                .alerted_at
                .is_none_or(|at| self.checked_at >= later(at, self.check_interval));
            if entered || (full && due) {
                self.alerted_at = Some(self.checked_at);
                events.push(LicenseEvent::Expiring {
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
                _ => self.grace_period.as_secs(),
            },
            grace_started_at: verdict.grace_started_at.unwrap_or(verdict.evaluated_at),
            grace_ends_at: verdict.grace_ends_at.unwrap_or(verdict.evaluated_at),
        }
    }

    fn grace_expired(&self, verdict: &Verdict) -> LicenseEvent {
        LicenseEvent::GracePeriodExpired {
            reason: verdict
                .reason
                .clone()
                .unwrap_or(crate::GraceReason::Missing),
            grace_ends_at: verdict.grace_ends_at.unwrap_or(verdict.evaluated_at),
        }
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

    #[tokio::test(start_paused = true)]
    async fn a_hung_read_times_out_and_blocks_no_second_thread() {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let mut slot = None;
        let hung = off_thread(&mut slot, IO_DEADLINE, move || {
            let _ = wait.recv();
            1
        });
        // The blocking task keeps paused time from moving by itself: move it by hand.
        let (result, ()) = tokio::join!(hung, async {
            tokio::task::yield_now().await;
            tokio::time::advance(IO_DEADLINE + Duration::from_millis(1)).await;
        });
        assert!(matches!(result, Err(OffThread::Hung)));
        assert!(slot.is_some());
        // While it hangs, no further read starts.
        let again = off_thread(&mut slot, IO_DEADLINE, || 2).await;
        assert!(matches!(again, Err(OffThread::Hung)));
        // Once it returns, reads work again.
        release.send(()).unwrap();
        while slot.as_ref().is_some_and(|h| !h.is_finished()) {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            off_thread(&mut slot, IO_DEADLINE, || 3).await,
            Ok(3)
        ));
        assert!(slot.is_none());
    }

    #[tokio::test]
    async fn a_panicking_read_is_a_failure_not_a_crash() {
        let mut slot = None;
        let result: Result<(), _> =
            off_thread(&mut slot, IO_DEADLINE, || std::panic::panic_any("boom")).await;
        assert!(matches!(result, Err(OffThread::Failed)));
    }
}
