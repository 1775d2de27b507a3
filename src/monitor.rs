//! [`LicenseMonitor`]: the handle, its builder, and the checker task behind it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::checker::{Checker, Config};
use crate::clock::SystemClock;
use crate::emit::Reporter;
use crate::event::LicenseEvent;
use crate::layer::shared::{Command, Flush, Parts, Shared, View};
#[cfg(unix)]
use crate::reload::Hangup;
use crate::reload::{FileWatch, Triggers};
use crate::source::LicenseSource;
use crate::stats::Stats;
use crate::token::LicenseVerifier;
use crate::verdict::Verdict;
use crate::{Clock, PublicKey};

/// Default interval between full checks (re-read and re-verify the source).
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// Default grace period.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(24 * 3600);
/// Default drain period: how long responses admitted before a cut-off keep running.
pub const DEFAULT_DRAIN_PERIOD: Duration = Duration::from_secs(60);
/// Default instance settling: how long a replica new to the fleet waits for an instance
/// slot, quietly, before instance-limit grace starts (two lease durations).
pub const DEFAULT_INSTANCE_SETTLING: Duration = Duration::from_secs(120);
/// Default interval between polls of a license file (a backstop for the watch).
pub const DEFAULT_FILE_POLL_INTERVAL: Duration = Duration::from_secs(2);
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

impl LicenseMonitor {
    /// Starts configuring a monitor.
    pub fn builder() -> LicenseMonitorBuilder {
        LicenseMonitorBuilder::new()
    }

    /// The current verdict.
    pub fn verdict(&self) -> Arc<Verdict> {
        self.view().verdict_full()
    }

    /// The read-only handle the faces (layer, health, metrics) read through.
    pub(crate) fn view(&self) -> View {
        View::new(&self.shared)
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

    /// The instance slot this replica holds (see `instances`, feature
    /// `kubernetes`), or `None`: it holds none, or instances are not counted.
    pub fn instance_slot(&self) -> Option<u32> {
        self.view().stats().instance_slot()
    }

    /// Gives up this replica's instance slot, if it holds one, so that a new replica gets
    /// it at once instead of after the Lease runs out (60 s): call it once the server has
    /// stopped (after graceful shutdown). The replica stops competing for a slot. Waits at
    /// most 5 s for the API server; without instance slots it returns at once.
    ///
    /// With a usage journal it also ends the current hour early in a record, so that the
    /// usage of the process's last hour is not lost, and closes the journal (also at most
    /// 5 s): its lock is released when this returns, and usage after it is not recorded.
    pub async fn shutdown(&self) {
        self.stop(Flush::Close).await;
    }

    /// Gives the slot back and ends the current hour of the usage journal; `flush` says
    /// whether the journal is closed too.
    async fn stop(&self, flush: Flush) {
        let usage = async {
            let (tx, rx) = oneshot::channel();
            if self.shared.usage_flush.send((tx, flush)).await.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
            }
        };
        let slot = async {
            let Some(release) = &self.shared.release else {
                return;
            };
            let (tx, rx) = oneshot::channel();
            if release.send(tx).await.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
            }
        };
        tokio::join!(usage, slot);
    }

    /// A future that completes at SIGTERM (what Kubernetes sends a pod it stops) or
    /// Ctrl-C, once this replica has given its instance slot back (and ended the usage
    /// journal's current hour in a record; the journal stays open, so the requests the
    /// server still drains are metered: call [`shutdown`](Self::shutdown) once it has
    /// stopped, to close it): hand it to
    /// `axum::serve(..).with_graceful_shutdown(..)` (or tonic's
    /// `serve_with_incoming_shutdown`), so that a rollout's new pod gets the slot while
    /// this one finishes its requests, instead of waiting out the Lease (see the rollout
    /// recipe in [`guide::instances`](crate::guide::instances)). The signals are registered when it is first polled; without
    /// instance slots it only waits for the signal.
    pub fn shutdown_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let monitor = self.clone();
        async move {
            #[cfg(unix)]
            let terminate = async {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        term.recv().await;
                    }
                    // (Only when the process cannot install a handler: Ctrl-C still works.)
                    Err(_) => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let terminate = std::future::pending::<()>();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = terminate => {}
            }
            // (Not `shutdown`: the server drains after this, and what it still serves is
            // metered; the journal is closed by `shutdown` once the server has stopped.)
            monitor.stop(Flush::Continue).await;
        }
    }

    /// What the application meters for usage reports and limit alerts (see
    /// [`crate::usage`]): `monitor.usage().set("seats", 23)`,
    /// `monitor.usage().add("api_calls", 1)`.
    pub fn usage(&self) -> &crate::usage::Usage {
        &self.shared.usage
    }

    /// The paths that pass the gate whatever the verdict (exact match).
    pub fn exempt_paths(&self) -> &[String] {
        self.shared.exempt_paths()
    }
}

impl fmt::Debug for LicenseMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = self.view().verdict();
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
    drain_period: Duration,
    exempt_paths: Vec<String>,
    clock: Arc<dyn Clock>,
    built_at: Option<SystemTime>,
    fail_closed: bool,
    watch_file: bool,
    file_poll_interval: Option<Duration>,
    notice_source: Option<LicenseSource>,
    reload_on_sighup: bool,
    state_file: Option<PathBuf>,
    usage_journal: Option<PathBuf>,
    events: broadcast::Sender<LicenseEvent>,
    #[cfg(feature = "otel")]
    pub(crate) event_hook: Option<crate::otel::EventHook>,
    #[cfg(feature = "kubernetes")]
    instance_slots: Option<crate::instances::InstanceSlots>,
    instance_settling: Duration,
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
            drain_period: DEFAULT_DRAIN_PERIOD,
            exempt_paths: Vec::new(),
            clock: Arc::new(SystemClock),
            built_at: None,
            fail_closed: false,
            watch_file: true,
            file_poll_interval: Some(DEFAULT_FILE_POLL_INTERVAL),
            notice_source: None,
            reload_on_sighup: false,
            state_file: None,
            usage_journal: None,
            events: broadcast::channel(EVENT_CAPACITY).0,
            #[cfg(feature = "otel")]
            event_hook: None,
            #[cfg(feature = "kubernetes")]
            instance_slots: None,
            instance_settling: DEFAULT_INSTANCE_SETTLING,
        }
    }

    /// Counts this replica against the licenses' `max_instances` with Kubernetes Leases
    /// (see [`crate::instances`]). Without it, a limit in a license is not enforced (a
    /// warning says so at start). Licenses without `max_instances` make no API calls.
    #[cfg(feature = "kubernetes")]
    #[cfg_attr(docsrs, doc(cfg(feature = "kubernetes")))]
    pub fn instance_slots(mut self, slots: crate::instances::InstanceSlots) -> Self {
        self.instance_slots = Some(slots);
        self
    }

    /// How long a replica new to the fleet may wait for an instance slot, admitted and
    /// quiet (`/health` healthy, no error event), before instance-limit grace starts
    /// (default 120 s, two lease durations). A rollout's surge pod waits here until an
    /// old pod gives its slot back at shutdown. It is the vendor's to set, in code: no
    /// environment variable or file changes it. A replica that lost a slot it held, or
    /// that joins a fleet the cluster records as over its limit, does not settle.
    #[cfg(feature = "kubernetes")]
    #[cfg_attr(docsrs, doc(cfg(feature = "kubernetes")))]
    pub fn instance_settling(mut self, settling: Duration) -> Self {
        self.instance_settling = settling;
        self
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

    /// A second place to read vendor notices from (revocations, time attestations; see
    /// [`Notice`](crate::Notice)), besides the license source, which may hold them too:
    /// a ConfigMap mounted apart from the license secret, say. Read with the license at
    /// every check and polled like a license file; no file (or an unset variable) is no
    /// notices. It is read and capped on its own: one that cannot be read, is not a
    /// file, or holds more than 32 lines is reported (`license.verification_failed` with
    /// its `source`, at most once per check interval) and costs nothing else (the
    /// license source is judged as if there were none; notices accepted before stay
    /// accepted). Every line is read as a notice: a license there is refused
    /// (`wrong_type`). In events, its lines are numbered after the license source's.
    pub fn notice_source(mut self, source: LicenseSource) -> Self {
        self.notice_source = Some(source);
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

    /// How long responses admitted before the cut-off keep running after it (default
    /// 60 s). Then a body still streaming ends (a gRPC response with `grpc-status: 14`
    /// trailers, any other with a body error, so the client sees a truncated response,
    /// never a clean end), and a request whose response has not started is answered with
    /// the rejection, its inner future dropped. A long-lived stream (SSE, gRPC streaming, a
    /// slow download) opened before the cut-off therefore cannot carry the service on past
    /// it. A license renewed meanwhile stops the drain: nothing is cut. Requests to exempt
    /// paths made after the cut-off are never cut; one made before it was admitted like
    /// any other (the admitted path does not look at the path) and is drained like any
    /// other.
    pub fn drain_period(mut self, period: Duration) -> Self {
        self.drain_period = period;
        self
    }

    /// Adds a path that always passes the gate; none pass by default.
    ///
    /// The match is exact, on the path *the layer sees*: after any router rewriting, and
    /// whatever handler would answer it. Two traps follow, and both are why nothing is
    /// exempt by default:
    ///
    /// * a protected fallback answers every path nothing else is mounted at, so an exempt
    ///   `/metrics` with no `/metrics` route serves the fallback to anyone after the
    ///   cut-off;
    /// * axum's `Router::nest("/api", api.layer(..))` strips the prefix before the layer
    ///   sees the request, so an exempt `/health` also exempts `/api/health`.
    ///
    /// With axum, mount `/health` and `/metrics` outside the layer instead
    /// (`.route_service(..)` after `.layer(..)`). Use this for setups where one layer
    /// wraps everything, e.g. tonic's `Server::builder().layer(..)` and the gRPC health
    /// service's `/grpc.health.v1.Health/Check`.
    pub fn exempt_path(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        if !self.exempt_paths.contains(&path) {
            self.exempt_paths.push(path);
        }
        self
    }

    /// Removes every exempt path added so far.
    pub fn clear_exempt_paths(mut self) -> Self {
        self.exempt_paths.clear();
        self
    }

    /// The clock to judge time by (default [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The vendor's build time of this binary (from `build.rs` or `SOURCE_DATE_EPOCH`).
    /// Real time cannot be before the binary was built, so it is a floor under trusted
    /// time: a license that expired before the build is expired, whatever the clock says.
    /// A wall clock behind it is reported as drift (`license.time_drift_detected`, `type:
    /// behind_build_time`), never as manipulation: the build machine's clock may be the
    /// wrong one.
    pub fn built_at(mut self, built_at: SystemTime) -> Self {
        self.built_at = Some(built_at);
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
    /// set back while it was down. Written atomically (a new temporary, then a rename)
    /// when the anchor changes and a minute after the last write, so a restart loses at
    /// most a minute of trusted time; only firm evidence is written, never a provisional
    /// reading. Read once at start, without blocking and with a bound, on tokio's
    /// blocking pool. A missing, unreadable or corrupt file is reported
    /// (`license.state_invalid`) and ignored; it never blocks start-up.
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }

    /// Keeps a usage journal at `path` (see [`crate::usage`]): one record per hour (and at
    /// [`LicenseMonitor::shutdown`]) with what the application meters
    /// ([`LicenseMonitor::usage`]) and what the crate does, the licenses in force, the
    /// trusted-time watermark and a sequence number; hash-chained and signed with an
    /// Ed25519 key the instance makes at its first start (`<path>.key`, owner-only). The
    /// customer exports it with `iosetu-license usage export`, the vendor checks it with
    /// `usage verify`. Appended with an fsync, never through a symlink, on tokio's blocking
    /// pool; hourly records older than 400 days are folded into one per day. A record cut
    /// short by a crash is dropped and said so in the next one; a journal that cannot be
    /// used is reported (`license.usage_journal_invalid`) and never stops the service.
    pub fn usage_journal(mut self, path: impl Into<PathBuf>) -> Self {
        self.usage_journal = Some(path.into());
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
        let file_poll_interval = match (&self.source, &self.notice_source) {
            (LicenseSource::File(_), _) | (_, Some(LicenseSource::File(_))) => {
                self.file_poll_interval
            }
            _ => None,
        };
        let stats = Arc::new(Stats::default());
        // Subscribed before the first check, so its events reach the journal's notes.
        let usage_events = self.events.subscribe();
        let reporter = Reporter {
            stats: Arc::clone(&stats),
            events: self.events.clone(),
            #[cfg(feature = "otel")]
            hook: self.event_hook,
        };
        #[cfg(feature = "kubernetes")]
        let (instances, release, slot_task) = match self.instance_slots {
            Some(slots) => {
                slots.check().map_err(StartError::InvalidSetting)?;
                let (link, release, task) = crate::instances::wire(
                    slots,
                    self.grace_period,
                    reporter.clone(),
                    Arc::clone(&self.clock),
                );
                (Some(link), Some(release), Some(task))
            }
            None => (None, None, None),
        };
        #[cfg(not(feature = "kubernetes"))]
        let (instances, release) = (None, None);
        let counts_instances = instances.is_some();
        let mut checker = Checker::new(Config {
            verifier,
            source: self.source,
            notices: self.notice_source,
            clock: Arc::clone(&self.clock),
            built_at: self.built_at,
            grace_period: self.grace_period,
            drain_period: self.drain_period,
            check_interval: self.check_interval,
            fail_closed: self.fail_closed,
            instance_settling: self.instance_settling,
            triggers,
            file_poll_interval,
            state_path: self.state_file,
            stats: Arc::clone(&stats),
            reporter: reporter.clone(),
            instances,
        });
        let (first, first_drained) = checker.first_check().await;
        if !counts_instances && let Some(n) = crate::verdict::instance_limit(&first.licenses) {
            tracing::warn!(target: crate::event::TARGET, max_instances = n,
                "the license limits instances, but this service does not count them \
                 (LicenseMonitorBuilder::instance_slots, feature `kubernetes`)");
        }
        let (commands, rx) = mpsc::channel(8);
        let (usage_flush, flush) = mpsc::channel(1);
        let usage = crate::usage::Usage::default();
        // (Registered before `start` returns, so an application sees them at once.)
        usage
            .registry
            .builtin(crate::usage::REPLICAS, crate::usage::Kind::Gauge)
            .set(1);
        let shared = Arc::new(Shared::new(Parts {
            first,
            first_drained,
            exempt_paths: self.exempt_paths,
            clock: self.clock,
            grace_period: self.grace_period,
            stats,
            events: self.events,
            commands,
            release,
            usage: usage.clone(),
            usage_flush,
            count_admitted: self.usage_journal.is_some(),
        }));
        runtime.spawn(checker.run(Arc::downgrade(&shared), rx));
        runtime.spawn(
            crate::usage::task::UsageTask {
                shared: Arc::downgrade(&shared),
                registry: Arc::clone(&usage.registry),
                path: self.usage_journal,
                check_interval: self.check_interval,
                reporter,
                events: usage_events,
                flush,
            }
            .run(),
        );
        #[cfg(feature = "kubernetes")]
        if let Some(task) = slot_task {
            runtime.spawn(task);
        }
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
