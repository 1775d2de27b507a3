//! What every handle shares, written only by the checker, and the read-only [`View`] that
//! the faces (the layer, `/health`, the metrics exporters, the usage task) read it
//! through. It lives with the layer because it is the gate's state (the verdict in force
//! and the drains, `super::drain`) that every request reads: everything else imports it
//! from here, and it imports nothing of the monitor, the checker or another face, so
//! the layer and the faces reach each other in no circle.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::drain::{Drain, FeatureGate};
use super::drain::{SWEEP_INTERVAL, open_or_shut};
use super::rejection::FeatureText;
use crate::Clock;
use crate::event::LicenseEvent;
use crate::stats::Stats;
use crate::sync::lock;
use crate::verdict::Verdict;

/// What a flush of the usage task does after it ends the current hour in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Goes on recording (the shutdown signal came: the server is draining, and the
    /// requests it still serves are metered).
    Continue,
    /// Closes the journal and releases its lock before the reply, and ends the task
    /// (`LicenseMonitor::shutdown`: the server has stopped).
    Close,
}

/// State every handle shares. Only the checker writes it.
pub(crate) struct Shared {
    /// Whether new requests are admitted (the one thing the request path reads: see
    /// `Drain::admits`), and whether responses admitted before a cut-off must end now.
    drain: &'static Drain,
    verdict: ArcSwap<Verdict>,
    exempt_paths: Box<[String]>,
    clock: Arc<dyn Clock>,
    grace_period: Duration,
    stats: Arc<Stats>,
    /// One flag per feature a `RequireFeature` layer asks for, published with each
    /// verdict like `admits`.
    features: Mutex<Vec<Arc<FeatureGate>>>,
    /// When the drains' waiter lists were last swept (monotonic; see `Tickets`).
    swept_at: Mutex<Option<Duration>>,
    pub(crate) events: broadcast::Sender<LicenseEvent>,
    // Dropping the last handle drops this sender, which is how the checker learns to stop.
    pub(crate) commands: mpsc::Sender<Command>,
    /// Asks the instance-slot task to give up its slot (answering when it has).
    pub(crate) release: Option<mpsc::Sender<oneshot::Sender<()>>>,
    /// What the application meters.
    pub(crate) usage: crate::metering::Usage,
    /// Asks the usage task to end the current period in a record (answering when it has).
    pub(crate) usage_flush: mpsc::Sender<(oneshot::Sender<()>, Flush)>,
}

/// What a handle can ask of the checker.
pub(crate) enum Command {
    /// Re-read and re-evaluate now; reply with the verdict.
    CheckNow(oneshot::Sender<Arc<Verdict>>),
}

/// Everything `Shared` is made of.
pub(crate) struct Parts {
    pub(crate) first: Arc<Verdict>,
    pub(crate) first_drained: bool,
    pub(crate) exempt_paths: Vec<String>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) grace_period: Duration,
    pub(crate) stats: Arc<Stats>,
    pub(crate) events: broadcast::Sender<LicenseEvent>,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) release: Option<mpsc::Sender<oneshot::Sender<()>>>,
    pub(crate) usage: crate::metering::Usage,
    pub(crate) usage_flush: mpsc::Sender<(oneshot::Sender<()>, Flush)>,
    /// Whether the license layer counts the requests it admits (a usage journal is kept).
    pub(crate) count_admitted: bool,
}

impl Shared {
    pub(crate) fn new(parts: Parts) -> Self {
        let drain = Drain::leak(parts.count_admitted);
        drain.set_admits(parts.first.admits());
        drain.set(parts.first_drained);
        Self {
            drain,
            verdict: ArcSwap::new(parts.first),
            exempt_paths: parts.exempt_paths.into_boxed_slice(),
            clock: parts.clock,
            grace_period: parts.grace_period,
            stats: parts.stats,
            features: Mutex::new(Vec::new()),
            swept_at: Mutex::new(None),
            events: parts.events,
            commands: parts.commands,
            release: parts.release,
            usage: parts.usage,
            usage_flush: parts.usage_flush,
        }
    }

    pub(crate) fn exempt_paths(&self) -> &[String] {
        &self.exempt_paths
    }

    /// Stores a new verdict, and whether the drain period after a cut-off is over (the
    /// checker is the only caller).
    /// `feature_drained` tells, for a feature's gate, whether the open responses of that
    /// feature's routes must end (see `Judge::feature_drained`).
    pub(crate) fn publish(
        &self,
        verdict: Arc<Verdict>,
        drained: bool,
        feature_drained: impl Fn(&str) -> bool,
    ) {
        let admits = verdict.admits();
        self.verdict.store(verdict);
        // Written only when they change, so readers' cache lines stay shared. A gate that
        // opens has its drain stopped first, one that shuts is shut first: a request it
        // admits never finds its drain over (it would be cut at once).
        open_or_shut(self.drain, admits, drained && !admits);
        // After the verdict is stored: a gate registered meanwhile read this verdict or
        // is set here (both happen under the lock).
        let verdict = self.verdict.load();
        let sweep = {
            let now = self.clock.monotonic();
            let mut swept_at = lock(&self.swept_at);
            let due = swept_at.is_none_or(|at| now.saturating_sub(at) >= SWEEP_INTERVAL);
            if due {
                *swept_at = Some(now);
            }
            due
        };
        if sweep {
            self.drain.waiters().sweep();
        }
        for gate in lock(&self.features).iter() {
            if sweep {
                gate.drain.waiters().sweep();
            }
            open_or_shut(
                gate.drain,
                verdict.has_feature(&gate.name),
                self.drain.is_over() || feature_drained(&gate.name),
            );
        }
    }
}

/// A read-only handle on the shared state. It counts as a handle: while one exists, the
/// checker keeps running (a router holding only a layer stays enforced).
#[derive(Clone)]
pub(crate) struct View(Arc<Shared>);

impl View {
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        Self(Arc::clone(shared))
    }

    /// Whether new requests are admitted: one relaxed load, the whole request path.
    #[inline]
    pub(crate) fn admits(&self) -> bool {
        self.0.drain.admits()
    }

    /// The current verdict, borrowed (cheapest; do not hold across an `.await`).
    pub(crate) fn verdict(&self) -> Guard<Arc<Verdict>> {
        self.0.verdict.load()
    }

    /// The current verdict, owned.
    pub(crate) fn verdict_full(&self) -> Arc<Verdict> {
        self.0.verdict.load_full()
    }

    pub(crate) fn exempt_paths(&self) -> &[String] {
        &self.0.exempt_paths
    }

    /// What the application meters.
    pub(crate) fn usage(&self) -> &crate::metering::Usage {
        &self.0.usage
    }

    /// Whether `path` (as the layer sees it) is exempt: an exact match.
    pub(crate) fn is_exempt(&self, path: &str) -> bool {
        self.0.exempt_paths.iter().any(|p| p == path)
    }

    /// The gate for `feature`, registered with the checker's publishing (one per name).
    pub(crate) fn feature_gate(&self, feature: &str) -> Arc<FeatureGate> {
        let mut gates = lock(&self.0.features);
        if let Some(gate) = gates.iter().find(|g| g.name == feature) {
            return Arc::clone(gate);
        }
        let gate = Arc::new(FeatureGate {
            name: feature.to_owned(),
            drain: Drain::leak_feature(FeatureText::of(feature), self.0.drain),
        });
        open_or_shut(
            gate.drain,
            self.verdict().has_feature(feature),
            self.0.drain.is_over(),
        );
        gates.push(Arc::clone(&gate));
        gate
    }

    /// The drain admitted responses watch.
    #[inline(always)]
    pub(crate) fn drain(&self) -> &'static Drain {
        self.0.drain
    }

    pub(crate) fn clock(&self) -> &dyn Clock {
        &*self.0.clock
    }

    pub(crate) fn grace_period(&self) -> Duration {
        self.0.grace_period
    }

    pub(crate) fn stats(&self) -> &Stats {
        &self.0.stats
    }

    /// A weak view, for callbacks (metrics collectors) that must not keep the monitor alive.
    #[cfg(any(feature = "otel", feature = "prometheus"))]
    pub(crate) fn downgrade(&self) -> WeakView {
        WeakView(Arc::downgrade(&self.0))
    }
}

/// A [`View`] that does not keep the monitor alive.
#[cfg(any(feature = "otel", feature = "prometheus"))]
#[derive(Clone)]
pub(crate) struct WeakView(std::sync::Weak<Shared>);

#[cfg(any(feature = "otel", feature = "prometheus"))]
impl WeakView {
    pub(crate) fn upgrade(&self) -> Option<View> {
        self.0.upgrade().map(View)
    }
}
