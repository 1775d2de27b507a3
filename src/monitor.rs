//! [`LicenseMonitor`]: the handle, its builder, and the checker task behind it.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::clock::{ClockAnomaly, JUMP_THRESHOLD, SystemClock, TrustedTime};
use crate::event::LicenseEvent;
use crate::health::{Health, HealthService};
use crate::layer::LicenseLayer;
use crate::metrics::{MetricsSnapshot, Stats};
#[cfg(unix)]
use crate::reload::Hangup;
use crate::reload::{FileWatch, MAX_SETTLE_ROUNDS, SETTLE, Trigger, Triggers};
use crate::source::LicenseSource;
use crate::state::PersistedState;
use crate::token::{
    Claims, IAT_TOLERANCE_SECS, LicenseError, LicenseVerifier, NBF_LEEWAY_SECS, fingerprint,
};
use crate::verdict::{Evaluation, Input, LicenseState, Verdict, evaluate};
use crate::{Clock, PublicKey};

/// Default interval between full checks (re-read and re-verify the source).
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// Default grace period.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(24 * 3600);
/// The paths that bypass the license gate unless configured otherwise.
pub const DEFAULT_EXEMPT_PATHS: [&str; 2] = ["/health", "/metrics"];
/// Default interval between polls of a license file (a backstop for the watch).
pub const DEFAULT_FILE_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How often the state file's high-water mark is brought up to date.
const PERSIST_INTERVAL: Duration = Duration::from_secs(60);
/// How many events a subscriber may fall behind before it starts losing the oldest.
const EVENT_CAPACITY: usize = 256;

/// The license monitor: a cheap handle (`Clone + Send + Sync`) to the current verdict.
///
/// Built with [`LicenseMonitor::builder`]. Its checker task is the only writer of the
/// verdict; requests, health checks and metrics only read it, with one lock-free load.
/// The task ends by itself when the last handle (this monitor, its layers and their
/// services) is dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use iosetu_license::{LicenseMonitor, LicenseSource, LicenseState, PublicKey};
///
/// # let pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----";
/// let monitor = LicenseMonitor::builder()
///     .public_key(PublicKey::from_pem(pem)?) // in real code: include_str!("license.pub.pem")
///     .source(LicenseSource::Static(String::new()))
///     .start()
///     .await?;
/// // No license: the service starts in grace, as the product text requires.
/// assert_eq!(monitor.verdict().state, LicenseState::Grace);
/// assert_eq!(monitor.health().http_status(), 200);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LicenseMonitor {
    pub(crate) shared: Arc<Shared>,
}

/// State every handle shares. Only the checker writes `verdict`.
pub(crate) struct Shared {
    /// Whether new requests are admitted: the one thing the request path reads. A plain
    /// flag, published right after each verdict, so a request costs one relaxed load of a
    /// cache line that only the checker ever writes (and only when the verdict changes).
    pub(crate) admits: CacheLine<AtomicBool>,
    pub(crate) verdict: ArcSwap<Verdict>,
    pub(crate) exempt_paths: Box<[String]>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) grace_period: Duration,
    pub(crate) stats: Arc<Stats>,
    events: broadcast::Sender<LicenseEvent>,
    // Dropping the last handle drops this sender, which is how the checker learns to stop.
    commands: mpsc::Sender<Command>,
}

/// Keeps a value alone on its cache line (128 bytes covers adjacent-line prefetching), so
/// that writes to its neighbours (the verdict's pointer changes at every check) never
/// evict it from the readers' caches.
#[repr(align(128))]
pub(crate) struct CacheLine<T>(pub(crate) T);

impl<T> std::ops::Deref for CacheLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl Shared {
    /// Stores a new verdict (the checker is the only caller).
    fn publish(&self, verdict: Arc<Verdict>) {
        let admits = verdict.admits();
        self.verdict.store(verdict);
        // Written only when it changes, so readers' cache lines stay shared.
        if self.admits.load(Ordering::Relaxed) != admits {
            self.admits.store(admits, Ordering::Release);
        }
    }
}

enum Command {
    CheckNow(oneshot::Sender<Arc<Verdict>>),
}

/// What woke the checker.
enum Wake {
    Command(Command),
    Trigger(Trigger),
    Timer,
}

/// What a wake does.
enum Mode {
    /// Only time moved: sample the clocks and re-evaluate.
    Transition,
    /// A full check: re-read and re-verify the source, repeat the current alert.
    Full,
    /// The source changed since it was last judged: judge this read.
    Changed(Result<String, LicenseError>),
}

impl LicenseMonitor {
    /// Starts configuring a monitor.
    pub fn builder() -> LicenseMonitorBuilder {
        LicenseMonitorBuilder::new()
    }

    /// The current verdict.
    pub fn verdict(&self) -> Arc<Verdict> {
        self.shared.verdict.load_full()
    }

    /// The current health, as `/health` reports it.
    pub fn health(&self) -> Health {
        Health::from_verdict(&self.shared.verdict.load())
    }

    /// A receiver of every event from now on. A receiver that falls more than 256 events
    /// behind loses the oldest ones (`RecvError::Lagged`); it never slows the checker.
    /// To also see the events of the first check, subscribe on the builder.
    pub fn subscribe(&self) -> broadcast::Receiver<LicenseEvent> {
        self.shared.events.subscribe()
    }

    /// Re-reads the source and re-evaluates now, and returns the new verdict. For
    /// applications that have their own reload signal.
    pub async fn check_now(&self) -> Arc<Verdict> {
        let (tx, rx) = oneshot::channel();
        if self
            .shared
            .commands
            .send(Command::CheckNow(tx))
            .await
            .is_ok()
            && let Ok(verdict) = rx.await
        {
            return verdict;
        }
        // The checker is gone only if its runtime shut down; the last verdict stands.
        self.verdict()
    }

    /// A tower layer enforcing this monitor's verdict: same as [`LicenseLayer::new`].
    pub fn layer(&self) -> LicenseLayer {
        LicenseLayer::new(self)
    }

    /// A tower service answering `/health`: same as [`HealthService::new`].
    pub fn health_service(&self) -> HealthService {
        HealthService::new(self)
    }

    /// The license's numbers now, as the metrics exporters publish them.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics()
    }

    /// The paths that pass the gate whatever the verdict (exact match).
    pub fn exempt_paths(&self) -> &[String] {
        &self.shared.exempt_paths
    }
}

impl fmt::Debug for LicenseMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = self.shared.verdict.load();
        f.debug_struct("LicenseMonitor")
            .field("state", &verdict.state)
            .field("expires_at", &verdict.expires_at)
            .finish_non_exhaustive()
    }
}

/// Why a monitor could not start. Only programming errors: a missing or bad license is
/// not one (the service starts in grace).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// No public key was configured: no license could ever verify.
    #[error("no public key configured: call .public_key(..) on the builder")]
    NoPublicKey,
    /// `start` was called outside a tokio runtime.
    #[error("LicenseMonitor::start must run inside a tokio runtime")]
    NoRuntime,
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    InvalidSetting(&'static str),
}

/// Configures and starts a [`LicenseMonitor`]. Every setting is made in code; nothing is
/// read from the environment except the license itself (through
/// [`LicenseSource::from_env`], the default source).
#[must_use = "a builder does nothing until .start().await"]
pub struct LicenseMonitorBuilder {
    keys: Vec<PublicKey>,
    source: LicenseSource,
    issuer: Option<String>,
    audience: Option<String>,
    check_interval: Duration,
    grace_period: Duration,
    exempt_paths: Vec<String>,
    clock: Arc<dyn Clock>,
    fail_closed: bool,
    watch_file: bool,
    file_poll_interval: Option<Duration>,
    reload_on_sighup: bool,
    state_file: Option<PathBuf>,
    events: broadcast::Sender<LicenseEvent>,
    #[cfg(feature = "otel")]
    pub(crate) event_hook: Option<crate::otel::EventHook>,
}

impl LicenseMonitorBuilder {
    fn new() -> Self {
        Self {
            keys: Vec::new(),
            source: LicenseSource::from_env(),
            issuer: None,
            audience: None,
            check_interval: DEFAULT_CHECK_INTERVAL,
            grace_period: DEFAULT_GRACE_PERIOD,
            exempt_paths: DEFAULT_EXEMPT_PATHS
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
            clock: Arc::new(SystemClock),
            fail_closed: false,
            watch_file: true,
            file_poll_interval: Some(DEFAULT_FILE_POLL_INTERVAL),
            reload_on_sighup: false,
            state_file: None,
            events: broadcast::channel(EVENT_CAPACITY).0,
            #[cfg(feature = "otel")]
            event_hook: None,
        }
    }

    /// Adds a public key licenses may be signed with (repeatable: key rotation).
    pub fn public_key(mut self, key: PublicKey) -> Self {
        self.keys.push(key);
        self
    }

    /// Where to read the license (default: [`LicenseSource::from_env`]).
    pub fn source(mut self, source: LicenseSource) -> Self {
        self.source = source;
        self
    }

    /// Requires the license's `iss` to be `issuer`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Requires the license's `aud` to contain `audience`.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Time between full checks (default 1 h). Transitions (alert bands, expiry, end of
    /// grace) do not wait for a check: they happen at their exact second.
    pub fn check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// How long requests are still served without a valid license (default 24 h).
    pub fn grace_period(mut self, period: Duration) -> Self {
        self.grace_period = period;
        self
    }

    /// Adds a path that always passes the gate (exact match). `/health` and `/metrics`
    /// are exempt by default.
    pub fn exempt_path(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        if !self.exempt_paths.contains(&path) {
            self.exempt_paths.push(path);
        }
        self
    }

    /// Removes every exempt path, the defaults included.
    pub fn clear_exempt_paths(mut self) -> Self {
        self.exempt_paths.clear();
        self
    }

    /// The clock to judge time by (default [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// With `true`, a service that has not had a valid license since it started gets no
    /// grace: requests are refused from the first one. Default `false`, as the product
    /// text wants a grace period.
    pub fn fail_closed(mut self, fail_closed: bool) -> Self {
        self.fail_closed = fail_closed;
        self
    }

    /// Whether a [`LicenseSource::File`] is watched for changes (default `true`): its
    /// directory is watched, so a Kubernetes secret swap is seen within milliseconds.
    /// Without a watch, the poll (see [`file_poll_interval`](Self::file_poll_interval))
    /// still picks changes up.
    pub fn watch_file(mut self, watch: bool) -> Self {
        self.watch_file = watch;
        self
    }

    /// How often a [`LicenseSource::File`] is compared with its last read, as a backstop
    /// for the watch (default 2 s; `None` turns polling off). A poll reads at most 64 KiB
    /// and verifies only when the bytes changed.
    pub fn file_poll_interval(mut self, interval: Option<Duration>) -> Self {
        self.file_poll_interval = interval;
        self
    }

    /// On Unix, re-read the license when the process gets SIGHUP (default `false`).
    /// Turning it on replaces SIGHUP's default action, which is to terminate the process.
    pub fn reload_on_sighup(mut self, reload: bool) -> Self {
        self.reload_on_sighup = reload;
        self
    }

    /// Persists the grace anchor and the trusted-time high-water mark in `path`, so that
    /// restarting the service neither starts a new grace period nor hides a clock that was
    /// set back while it was down. Written atomically when the anchor changes and once a
    /// minute otherwise. A missing, unreadable or corrupt file is reported
    /// (`license.state_invalid`) and ignored; it never blocks start-up.
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }

    /// A receiver of every event, including those of the first check that `start` runs.
    pub fn subscribe(&self) -> broadcast::Receiver<LicenseEvent> {
        self.events.subscribe()
    }

    /// Runs the first check, then spawns the checker on the current tokio runtime.
    ///
    /// Fails only for programming errors ([`StartError`]); a missing or invalid license
    /// starts the service in grace.
    pub async fn start(self) -> Result<LicenseMonitor, StartError> {
        if self.keys.is_empty() {
            return Err(StartError::NoPublicKey);
        }
        if self.check_interval.is_zero() {
            return Err(StartError::InvalidSetting(
                "check_interval must be above zero",
            ));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let mut verifier = LicenseVerifier::new(self.keys);
        if let Some(iss) = self.issuer {
            verifier = verifier.issuer(iss);
        }
        if let Some(aud) = self.audience {
            verifier = verifier.audience(aud);
        }
        let triggers =
            Triggers {
                watch: match (&self.source, self.watch_file) {
                    (LicenseSource::File(path), true) => match FileWatch::new(path) {
                        Ok(watch) => Some(watch),
                        Err(e) => {
                            // Not fatal: the poll still sees every change, only later.
                            tracing::warn!(target: crate::event::TARGET, error = %e,
                            "cannot watch the license file's directory; relying on polling");
                            None
                        }
                    },
                    _ => None,
                },
                #[cfg(unix)]
                hangup: if self.reload_on_sighup {
                    Some(Hangup::new().map_err(|_| {
                        StartError::InvalidSetting("cannot install a SIGHUP handler")
                    })?)
                } else {
                    None
                },
            };
        #[cfg(not(unix))]
        let _ = self.reload_on_sighup;
        let file_poll_interval = match self.source {
            LicenseSource::File(_) => self.file_poll_interval,
            _ => None,
        };
        let stats = Arc::new(Stats::default());
        let mut checker = Checker {
            state_path: self.state_file,
            persisted: None,
            persisted_at: tokio::time::Instant::now(),
            startup_events: Vec::new(),
            stats: Arc::clone(&stats),
            #[cfg(feature = "otel")]
            event_hook: self.event_hook,
            triggers,
            file_poll_interval,
            last_read: None,
            time: TrustedTime::new(self.clock.wall(), self.clock.monotonic()),
            verifier,
            source: self.source,
            clock: Arc::clone(&self.clock),
            grace_period: self.grace_period,
            check_interval: self.check_interval,
            fail_closed: self.fail_closed,
            license: None,
            license_fingerprint: None,
            problem: None,
            grace_anchor: None,
            manipulated_at: None,
            ever_valid: false,
            last: None,
            checked_at: tokio::time::Instant::now(),
            events: self.events.clone(),
        };
        checker.restore_state();
        let first = checker.check(Mode::Full);
        let (commands, rx) = mpsc::channel(8);
        let shared = Arc::new(Shared {
            admits: CacheLine(AtomicBool::new(first.admits())),
            verdict: ArcSwap::new(first),
            exempt_paths: self.exempt_paths.into_boxed_slice(),
            clock: self.clock,
            grace_period: self.grace_period,
            stats,
            events: self.events,
            commands,
        });
        runtime.spawn(checker.run(Arc::downgrade(&shared), rx));
        Ok(LicenseMonitor { shared })
    }
}

impl fmt::Debug for LicenseMonitorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LicenseMonitorBuilder")
            .field("keys", &self.keys)
            .field("source", &self.source.describe())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("check_interval", &self.check_interval)
            .field("grace_period", &self.grace_period)
            .field("exempt_paths", &self.exempt_paths)
            .field("fail_closed", &self.fail_closed)
            .finish_non_exhaustive()
    }
}

/// The checker: reads, verifies, samples the clocks, evaluates, publishes, reports.
struct Checker {
    state_path: Option<PathBuf>,
    /// What was last written to the state file, and when.
    persisted: Option<PersistedState>,
    persisted_at: tokio::time::Instant,
    /// Events found before the first check (restoring the state), reported with it.
    startup_events: Vec<LicenseEvent>,
    stats: Arc<Stats>,
    #[cfg(feature = "otel")]
    event_hook: Option<crate::otel::EventHook>,
    triggers: Triggers,
    file_poll_interval: Option<Duration>,
    /// The last read of the source, to tell a changed file from an unchanged one.
    last_read: Option<Result<String, LicenseError>>,
    verifier: LicenseVerifier,
    source: LicenseSource,
    clock: Arc<dyn Clock>,
    grace_period: Duration,
    check_interval: Duration,
    fail_closed: bool,
    time: TrustedTime,
    /// The license in force: the last token that verified.
    license: Option<Arc<Claims>>,
    license_fingerprint: Option<String>,
    /// The last read's problem, while the source does not hold the license in force.
    problem: Option<LicenseError>,
    grace_anchor: Option<i64>,
    manipulated_at: Option<i64>,
    ever_valid: bool,
    last: Option<Evaluation>,
    /// The runtime's instant at the last clock sample.
    checked_at: tokio::time::Instant,
    events: broadcast::Sender<LicenseEvent>,
}

impl Checker {
    async fn run(mut self, shared: Weak<Shared>, mut commands: mpsc::Receiver<Command>) {
        let mut next_full = self.checked_at + self.check_interval;
        let mut next_poll = self.file_poll_interval.map(|p| self.checked_at + p);
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
            // With a state file, wake at least once a minute to keep its mark current.
            let persist = self
                .state_path
                .as_ref()
                .map(|_| self.checked_at + PERSIST_INTERVAL);
            let wake = [Some(next_full), change, next_poll, persist]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(next_full);
            let wake = tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => Wake::Command(command),
                    None => return, // every handle is gone
                },
                trigger = self.triggers.next() => Wake::Trigger(trigger),
                () = tokio::time::sleep_until(wake) => Wake::Timer,
            };
            let now = tokio::time::Instant::now();
            let mode = match &wake {
                Wake::Command(_) | Wake::Trigger(Trigger::Hangup) => Mode::Full,
                Wake::Timer if now >= next_full => Mode::Full,
                Wake::Trigger(Trigger::FileChanged) => self.changed_read().await,
                Wake::Timer if next_poll.is_some_and(|p| now >= p) => self.changed_read().await,
                Wake::Timer => Mode::Transition,
            };
            if let Some(poll) = self.file_poll_interval
                && next_poll.is_some_and(|p| now >= p)
            {
                next_poll = Some(now + poll);
            }
            let full = matches!(mode, Mode::Full);
            let verdict = self.check(mode);
            if full && matches!(wake, Wake::Timer) {
                next_full = self.checked_at + self.check_interval;
            }
            let Some(shared) = shared.upgrade() else {
                return;
            };
            shared.publish(Arc::clone(&verdict));
            drop(shared);
            if let Wake::Command(Command::CheckNow(reply)) = wake {
                let _ = reply.send(verdict);
            }
        }
    }

    /// Reads the source and, if it differs from the last read, waits until it stops
    /// changing: a read may catch a file half-written (truncate and write) or a symlink
    /// swap half-done, and such a transient state must not be judged.
    async fn changed_read(&mut self) -> Mode {
        let mut read = self.source.read();
        if self.last_read.as_ref() == Some(&read) {
            return Mode::Transition;
        }
        for _ in 0..MAX_SETTLE_ROUNDS {
            tokio::time::sleep(SETTLE).await;
            let again = self.source.read();
            if again == read {
                break;
            }
            read = again;
        }
        Mode::Changed(read)
    }

    /// One wake: sample the clocks, judge the source (read now on a full check, or as
    /// read by a poll that saw it change), evaluate, and report what changed. Returns the
    /// verdict to publish.
    fn check(&mut self, mode: Mode) -> Arc<Verdict> {
        let mut events = std::mem::take(&mut self.startup_events);
        self.checked_at = tokio::time::Instant::now();
        if let Some(anomaly) = self.time.sample(self.clock.wall(), self.clock.monotonic()) {
            self.on_clock_anomaly(anomaly, &mut events);
        }
        let (full, reloaded) = match mode {
            Mode::Transition => (false, false),
            Mode::Full => {
                let read = self.source.read();
                (true, self.judge(read, &mut events))
            }
            Mode::Changed(read) => (false, self.judge(read, &mut events)),
        };
        let now = self.time.now_secs();
        // Manipulation-grace clears once the wall clock agrees with trusted time again and
        // a valid license is in force.
        if self.manipulated_at.is_some()
            && self.time.wall_is_consistent()
            && self.license.as_ref().is_some_and(|l| now < l.exp)
        {
            self.manipulated_at = None;
        }
        let evaluation = evaluate(&Input {
            license: self.license.as_ref(),
            problem: self.problem.as_ref(),
            now,
            grace_anchor: self.grace_anchor,
            manipulated_at: self.manipulated_at,
            grace_period: i64::try_from(self.grace_period.as_secs()).unwrap_or(i64::MAX),
            no_grace: self.fail_closed && !self.ever_valid,
        });
        self.transition_events(&evaluation, full || reloaded, &mut events);
        self.grace_anchor = evaluation.grace_anchor;
        self.ever_valid |= evaluation.verdict.is_valid();
        self.persist_state();
        let mut verdict = evaluation.verdict.clone();
        verdict.evaluated_mono = self.time.last_mono();
        let verdict = Arc::new(verdict);
        self.last = Some(evaluation);
        for event in events {
            event.log();
            self.stats.record_event(&event);
            #[cfg(feature = "otel")]
            if let Some(hook) = &self.event_hook {
                hook(&event);
            }
            // No receiver, or receivers lagging behind, never block or fail the checker.
            let _ = self.events.send(event);
        }
        verdict
    }

    /// Applies the state file before the first check: the stored high-water mark is a
    /// floor under trusted time (a wall clock more than 5 s below it was set back across
    /// the restart), and a stored grace anchor stands.
    fn restore_state(&mut self) {
        let Some(path) = &self.state_path else { return };
        match PersistedState::load(path) {
            Ok(state) => {
                self.persisted = Some(state);
                self.grace_anchor = state.grace_anchor;
                if let Some(anomaly) = self.time.raise_floor(state.high_water, JUMP_THRESHOLD) {
                    let mut events = Vec::new();
                    self.on_clock_anomaly(anomaly, &mut events);
                    self.startup_events.extend(events);
                }
            }
            Err(problem) => self.startup_events.push(LicenseEvent::StateInvalid {
                reason: problem.reason,
                detail: problem.detail,
            }),
        }
    }

    /// Writes the state file when the anchor changed, or the mark moved and a minute has
    /// passed since the last write.
    fn persist_state(&mut self) {
        let Some(path) = &self.state_path else { return };
        let state = PersistedState::new(self.time.high_water_secs(), self.grace_anchor);
        let due = match &self.persisted {
            None => true,
            Some(last) => {
                last.grace_anchor != state.grace_anchor
                    || (last.high_water != state.high_water
                        && self.checked_at >= self.persisted_at + PERSIST_INTERVAL)
            }
        };
        if !due {
            return;
        }
        match state.store(path) {
            Ok(()) => {
                self.persisted = Some(state);
                self.persisted_at = self.checked_at;
            }
            Err(e) => tracing::warn!(target: crate::event::TARGET, path = %path.display(),
                error = %e, "cannot write the license state file"),
        }
    }

    fn on_clock_anomaly(&mut self, anomaly: ClockAnomaly, events: &mut Vec<LicenseEvent>) {
        match anomaly {
            ClockAnomaly::BackwardJump { seconds } => {
                self.manipulated_at.get_or_insert(self.time.now_secs());
                events.push(LicenseEvent::TimeManipulationDetected {
                    wall_clock_jump_seconds: seconds,
                });
            }
            ClockAnomaly::ForwardDrift { seconds } => {
                events.push(LicenseEvent::TimeDriftDetected {
                    drift_seconds: seconds,
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
        let reloaded = self.judge_read(read, events);
        // Every path through `judge_read` leaves `problem` set exactly when it refused.
        self.stats
            .record_check(self.problem.as_ref().map(LicenseError::reason));
        reloaded
    }

    fn judge_read(
        &mut self,
        read: Result<String, LicenseError>,
        events: &mut Vec<LicenseEvent>,
    ) -> bool {
        self.last_read = Some(read.clone());
        let source = self.source.describe();
        let kept_previous = self.license.is_some();
        let token = match read {
            Ok(token) => token,
            Err(error) => {
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
                    },
                });
                self.problem = Some(error);
                return false;
            }
        };
        let print = fingerprint(&token);
        if self.license_fingerprint.as_deref() == Some(print.as_str()) {
            // The license in force, unchanged: nothing to verify again.
            self.problem = None;
            return false;
        }
        let refused = |error: LicenseError, events: &mut Vec<LicenseEvent>| {
            events.push(LicenseEvent::VerificationFailed {
                error: error.clone(),
                source: source.clone(),
                kept_previous,
            });
            error
        };
        let claims = match self.verifier.verify_token(&token) {
            Ok(verified) => verified.claims,
            Err(error) => {
                self.problem = Some(refused(error, events));
                return false;
            }
        };
        if let Some(nbf) = claims.nbf
            && nbf > self.time.now_secs().saturating_add(NBF_LEEWAY_SECS)
        {
            // Not in force yet: the current license (if any) stays until this one is.
            self.problem = Some(refused(
                LicenseError::NotYetValid { not_before: nbf },
                events,
            ));
            return false;
        }
        if let Some(iat) = claims.iat
            && let Some(anomaly) = self
                .time
                .raise_floor(iat, Duration::from_secs(IAT_TOLERANCE_SECS as u64))
        {
            // The signed issue time is ahead of our clock by more than the tolerance: the
            // clock was set back before we could see it happen.
            self.on_clock_anomaly(anomaly, events);
        }
        events.push(LicenseEvent::Loaded {
            customer: claims.customer.clone(),
            expires_at: claims.expires_at(),
            jti: claims.jti.clone(),
            fingerprint: print.clone(),
        });
        self.license = Some(Arc::new(claims));
        self.license_fingerprint = Some(print);
        self.problem = None;
        true
    }

    /// The events for the change from the last evaluation to `new`.
    fn transition_events(&self, new: &Evaluation, full: bool, events: &mut Vec<LicenseEvent>) {
        let verdict = &new.verdict;
        let previous = self.last.as_ref().map(|e| &e.verdict);
        let was = previous.map(|v| v.state);
        match (was, verdict.state) {
            (Some(LicenseState::Grace | LicenseState::GraceExpired), LicenseState::Valid) => {
                if let Some(claims) = &verdict.claims {
                    events.push(LicenseEvent::GraceModeExited {
                        customer: claims.customer.clone(),
                        expires_at: claims.expires_at(),
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
        // crossed at once) and again at each full check while in it.
        if let (Some(band), Some(claims)) = (verdict.band, &verdict.claims) {
            let entered = previous.is_none_or(|p| p.band != Some(band) || !p.is_valid());
            if entered || full {
                events.push(LicenseEvent::Expiring {
                    band,
                    days_remaining: verdict.days_remaining().unwrap_or(0),
                    expires_at: claims.expires_at(),
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
            grace_period_seconds: self.grace_period.as_secs(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_types_are_send_sync() {
        fn is<T: Send + Sync + 'static>() {}
        is::<LicenseMonitor>();
        is::<LicenseMonitorBuilder>();
        is::<Verdict>();
        is::<LicenseEvent>();
    }
}
