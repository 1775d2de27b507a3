//! What every handle shares, written only by the checker, and the read-only [`View`] that
//! the faces (the layer, `/health`, the metrics exporters) read it through. The faces
//! import this module, never the monitor's; the monitor imports none of them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Waker;
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::Clock;
use crate::event::LicenseEvent;
use crate::layer::connection::Conn;
use crate::layer::rejection::FeatureText;
use crate::token::LicenseError;
use crate::verdict::Verdict;

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
    pub(crate) usage: crate::usage::Usage,
    /// Asks the usage task to end the current period in a record (answering when it has).
    pub(crate) usage_flush: mpsc::Sender<oneshot::Sender<()>>,
}

/// Whether a feature is licensed now (in force, valid or in grace, and not cut off): what
/// a `RequireFeature` request reads, one relaxed load, instead of looking the name up in
/// the verdict.
#[derive(Debug)]
pub(crate) struct FeatureGate {
    name: String,
    /// What the feature's admitted responses watch: over when the monitor's drain is, or
    /// a drain period after a renewal took the feature away.
    drain: &'static Drain,
}

impl FeatureGate {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    #[inline(always)]
    pub(crate) fn drain(&self) -> &'static Drain {
        self.drain
    }

    /// Whether the feature is licensed now (its drain's `admits`).
    #[inline]
    pub(crate) fn is_on(&self) -> bool {
        self.drain.admits()
    }
}

/// Tells responses still running that the drain period after a cut-off is over, and
/// wakes those that wait for their inner body or future.
///
/// Every admitted response holds a `&'static Link` of a drain, never a reference count:
/// cloning an `Arc` per request would write to a cache line every core shares, on the path
/// that must cost one load. So each monitor (and each feature gate) leaks one `Drain` and
/// its waiter lists (about 2 KiB): responses may outlive the monitor, and they can never
/// read freed memory.
///
/// A response that goes pending registers in a waiter list (a `Notify`), which is a write
/// to shared memory. The lists are sharded by thread, each on a cache line of its own, so
/// that threads registering at once do not contend (`benches/contention.rs`, "pending
/// once": one list cost two threads 4.6 times what one thread paid).
#[derive(Debug)]
pub(crate) struct Drain {
    /// Whether new requests are admitted (for a feature's drain: whether the feature is
    /// licensed): the one thing the request path reads. A plain flag, published right
    /// after each verdict, so a request costs one relaxed load of a cache line that only
    /// the checker ever writes (and only when admission changes). Here, beside the drain
    /// it goes with, so that a service holding `&'static Drain` reaches both with one
    /// pointer.
    /// [`SHUT`], [`OPEN`], or [`OPEN_COUNTED`] (admitted, and counted for the usage
    /// journal): one byte, so that counting costs the requests of a service that does
    /// not keep a journal nothing, not even a second load.
    admits: CacheLine<AtomicU8>,
    /// Whether admitted requests are counted (a usage journal is kept): fixed when the
    /// drain is made.
    counted: bool,
    /// The two ways a response can watch this drain; both flags are set together.
    links: CacheLine<[Link; 2]>,
    waiters: &'static Waiters,
    /// The connections that carry an upgrade this drain's gate admitted: cut when it
    /// ends (see `crate::layer::connection`). Touched only by requests that upgrade.
    conns: Mutex<Vec<Weak<Conn>>>,
    /// The monitor's HTTP/2 connections (on the monitor's drain; a feature's is unused).
    h2: Mutex<Vec<Weak<Conn>>>,
}

/// What an admitted response holds: the drain's flag, and what a cut answers. One word
/// in the response, one load per poll.
#[derive(Debug)]
pub(crate) struct Link {
    over: AtomicBool,
    /// A cut answers in a form gRPC clients read as UNAVAILABLE: trailers for a gRPC
    /// response body, the 503 with `grpc-status` headers for an HTTP/2 request cut before
    /// its response started.
    grpc: bool,
    waiters: &'static Waiters,
    /// A feature gate's drain: the feature's refusal texts, and the license's drain (while
    /// the license admits, a cut is the feature's, answered with the feature's words).
    feature: Option<(&'static FeatureText, &'static Drain)>,
}

/// The waiter lists of a drain: wakers of pending responses and request bodies.
#[derive(Debug)]
pub(crate) struct Waiters {
    tickets: [CacheLine<Mutex<Tickets>>; DRAIN_SHARDS],
}

/// How often the checker sweeps the drains' waiter lists at the least (it checks at least
/// once a minute): the longest a response dropped while pending keeps its waker there.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// How many waiter lists a drain has: more than the cores of most hosts that run one
/// service, few enough that the end of a drain wakes them all at once.
const DRAIN_SHARDS: usize = 16;

/// The wakers of the responses that went pending, in one shard.
///
/// A response holds a [`Ticket`] (plain bits, nothing to drop) rather than a registration
/// it would have to remove when dropped: a response that owned one carried drop glue, and
/// its drop stopped being inlined (about 30 instructions per request, measured). A response
/// gives its slot back when it completes; one dropped while pending (a client that went
/// away) leaves its waker until the next sweep, which the checker runs at each check (at
/// least once a minute): it wakes every waker it holds (a spurious wake-up: a response
/// still pending registers again) and starts a new generation, so that no slot outlives a
/// minute.
///
/// A shard that reaches [`SHARD_BOUND`] places (a flood of requests abandoned while
/// pending) is swept at once, at most once a second, so its memory stays bounded between
/// the checker's sweeps too.
#[derive(Debug)]
struct Tickets {
    /// Starts at 1: a ticket of generation 0 is no ticket.
    generation: u32,
    slots: Vec<Option<Waker>>,
    free: Vec<u32>,
    /// When this shard was last swept for being full.
    swept_full_at: Option<std::time::Instant>,
}

/// How many places a shard holds before it sweeps itself (see [`Tickets`]).
const SHARD_BOUND: usize = 1 << 16;

impl Tickets {
    const fn new() -> Self {
        Tickets {
            generation: 1,
            slots: Vec::new(),
            free: Vec::new(),
            swept_full_at: None,
        }
    }

    /// Starts a new generation; returns the wakers to wake (outside the lock: a waker may
    /// run code of its own).
    fn renew(&mut self) -> Vec<Option<Waker>> {
        self.generation = (self.generation.wrapping_add(1) & 0x7fff_ffff).max(1);
        self.free.clear();
        std::mem::take(&mut self.slots)
    }
}

/// A pending response's place in a drain's waiter lists: shard, slot and generation,
/// packed in a word; 0 when it holds none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

impl Ticket {
    pub(crate) const NONE: Ticket = Ticket(0);

    fn new(shard: usize, slot: u32, generation: u32) -> Self {
        // (Slots are bounded far below 2^28, shards by 16.)
        Ticket(u64::from(generation) << 32 | (shard as u64) << 28 | u64::from(slot))
    }

    fn parts(self) -> Option<(usize, usize, u32)> {
        let generation = (self.0 >> 32) as u32;
        (generation != 0).then_some((
            ((self.0 >> 28) & 0xf) as usize,
            (self.0 & 0x0fff_ffff) as usize,
            generation,
        ))
    }

    /// Whether it holds a place (checked on the path of a completed response).
    #[inline(always)]
    pub(crate) fn is_some(self) -> bool {
        self.0 != 0
    }
}

impl Waiters {
    const fn new() -> Self {
        Waiters {
            tickets: [const { CacheLine(Mutex::new(Tickets::new())) }; DRAIN_SHARDS],
        }
    }

    /// Registers `waker` to be woken at the end of the drain (or by a sweep), in the place
    /// `ticket` holds if it is still current, else in a new one in this thread's shard.
    pub(crate) fn register(&self, ticket: &mut Ticket, waker: &Waker) {
        if let Some((shard, slot, generation)) = ticket.parts() {
            let mut tickets = lock(&self.tickets[shard].0);
            if tickets.generation == generation
                && let Some(held) = tickets.slots.get_mut(slot)
            {
                match held {
                    Some(held) if held.will_wake(waker) => {}
                    _ => *held = Some(waker.clone()),
                }
                return;
            }
        }
        let shard = shard();
        let mut tickets = lock(&self.tickets[shard].0);
        if tickets.free.is_empty()
            && tickets.slots.len() >= SHARD_BOUND
            && tickets
                .swept_full_at
                .is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(1))
        {
            tickets.swept_full_at = Some(std::time::Instant::now());
            let wakers = tickets.renew();
            drop(tickets);
            for waker in wakers.into_iter().flatten() {
                waker.wake();
            }
            tickets = lock(&self.tickets[shard].0);
        }
        let slot = match tickets.free.pop() {
            Some(slot) => {
                tickets.slots[slot as usize] = Some(waker.clone());
                slot
            }
            None => {
                tickets.slots.push(Some(waker.clone()));
                // (A shard holds what one thread registered within a minute: far fewer
                // than 2^28.)
                u32::try_from(tickets.slots.len() - 1).unwrap_or(u32::MAX) & 0x0fff_ffff
            }
        };
        *ticket = Ticket::new(shard, slot, tickets.generation);
    }

    /// Gives the place back (a response that completed).
    #[cold]
    #[inline(never)]
    pub(crate) fn release(&self, ticket: &mut Ticket) {
        if let Some((shard, slot, generation)) = ticket.parts() {
            let mut tickets = lock(&self.tickets[shard].0);
            if tickets.generation == generation
                && let Some(held) = tickets.slots.get_mut(slot)
                && held.take().is_some()
            {
                tickets.free.push(slot as u32);
            }
        }
        *ticket = Ticket::NONE;
    }

    /// Wakes every registered waker and starts a new generation of places: at the end of
    /// a drain, and at each check (see [`Tickets`]).
    pub(crate) fn sweep(&self) {
        for shard in &self.tickets {
            let wakers = {
                let mut tickets = lock(&shard.0);
                if tickets.slots.is_empty() {
                    continue;
                }
                tickets.renew()
            };
            // Woken outside the lock: a waker may run code of its own.
            for waker in wakers.into_iter().flatten() {
                waker.wake();
            }
        }
    }

    fn wake_all(&self) {
        self.sweep();
    }
}

impl Link {
    const fn new(
        grpc: bool,
        waiters: &'static Waiters,
        feature: Option<(&'static FeatureText, &'static Drain)>,
    ) -> Self {
        Link {
            over: AtomicBool::new(false),
            grpc,
            waiters,
            feature,
        }
    }

    /// The feature whose drain this is, while the license itself still admits: a cut is
    /// then the feature's, and answers with its words.
    pub(crate) fn feature_cut(&self) -> Option<&'static FeatureText> {
        self.feature
            .and_then(|(text, license)| license.admits().then_some(text))
    }

    /// Whether responses must end now: one relaxed load, per poll of an admitted
    /// response's future or body.
    #[inline(always)]
    pub(crate) fn is_over(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    /// Whether it is over, ordered after the registration of a waiter.
    pub(crate) fn is_over_acquire(&self) -> bool {
        self.over.load(Ordering::Acquire)
    }

    /// Whether a cut answers in gRPC's form as well.
    #[inline(always)]
    pub(crate) fn grpc(&self) -> bool {
        self.grpc
    }

    pub(crate) fn waiters(&self) -> &'static Waiters {
        self.waiters
    }
}

/// The gate is shut: requests are refused.
pub(crate) const SHUT: u8 = 0;
/// The gate is open.
pub(crate) const OPEN: u8 = 1;
/// The gate is open, and admitted requests are counted (a usage journal is kept).
pub(crate) const OPEN_COUNTED: u8 = 2;

impl Drain {
    const fn new(
        admits: bool,
        waiters: &'static Waiters,
        feature: Option<(&'static FeatureText, &'static Drain)>,
    ) -> Self {
        Drain {
            admits: CacheLine(AtomicU8::new(if admits { OPEN } else { SHUT })),
            counted: false,
            links: CacheLine([
                Link::new(false, waiters, feature),
                Link::new(true, waiters, feature),
            ]),
            waiters,
            conns: Mutex::new(Vec::new()),
            h2: Mutex::new(Vec::new()),
        }
    }

    /// The monitor's drain: this one, or the one a feature's drain belongs to.
    pub(crate) fn license(&'static self) -> &'static Drain {
        self.links.0[0].feature.map_or(self, |(_, license)| license)
    }

    /// The monitor's HTTP/2 connections through its listener.
    pub(crate) fn h2_connections(&self) -> &Mutex<Vec<Weak<Conn>>> {
        &self.h2
    }

    /// A drain of its own; `counted`: its open gate counts admitted requests.
    pub(crate) fn leak(counted: bool) -> &'static Drain {
        let waiters = Box::leak(Box::new(Waiters::new()));
        Box::leak(Box::new(Drain {
            counted,
            ..Drain::new(false, waiters, None)
        }))
    }

    /// A feature gate's drain: `text` is the feature's refusal, `license` the monitor's
    /// drain.
    pub(crate) fn leak_feature(
        text: &'static FeatureText,
        license: &'static Drain,
    ) -> &'static Drain {
        let waiters = Box::leak(Box::new(Waiters::new()));
        Box::leak(Box::new(Drain::new(false, waiters, Some((text, license)))))
    }

    /// A connection carries an upgrade this drain's gate admitted: it is cut when the
    /// drain ends (at once, if it has: the gate admitted it just before).
    pub(crate) fn register(&self, conn: &Arc<Conn>) {
        let mut conns = lock(&self.conns);
        if self.links.0[0].is_over_acquire() {
            drop(conns);
            close_later(vec![Arc::clone(conn)], tokio::time::Instant::now());
            return;
        }
        // (Connections gone since are dropped here, and a connection is held once, so the
        // list stays as long as the connections alive that carry upgrades.)
        conns.retain(|c| c.strong_count() > 0);
        if !conns
            .iter()
            .any(|c| std::ptr::eq(c.as_ptr(), Arc::as_ptr(conn)))
        {
            conns.push(Arc::downgrade(conn));
        }
    }

    /// The drain of responses that are never cut (exempt paths): never over.
    pub(crate) fn never() -> &'static Drain {
        static WAITERS: Waiters = Waiters::new();
        static NEVER: Drain = Drain::new(true, &WAITERS, None);
        &NEVER
    }

    /// Whether new requests are admitted: one relaxed load, the whole request path.
    #[inline(always)]
    pub(crate) fn admits(&self) -> bool {
        self.gate() != SHUT
    }

    /// [`SHUT`], [`OPEN`] or [`OPEN_COUNTED`]: one relaxed load.
    #[inline(always)]
    pub(crate) fn gate(&self) -> u8 {
        self.admits.0.load(Ordering::Relaxed)
    }

    fn set_admits(&self, admits: bool) {
        let gate = match (admits, self.counted) {
            (false, _) => SHUT,
            (true, false) => OPEN,
            (true, true) => OPEN_COUNTED,
        };
        // Written only when it changes, so readers' cache lines stay shared.
        if self.gate() != gate {
            self.admits.0.store(gate, Ordering::Release);
        }
    }

    /// The link a response holds: `grpc` when a cut must answer in gRPC's form.
    #[inline(always)]
    pub(crate) fn link(&'static self, grpc: bool) -> &'static Link {
        &self.links.0[usize::from(grpc)]
    }

    /// Whether responses must end now (one relaxed load).
    #[inline(always)]
    pub(crate) fn is_over(&self) -> bool {
        self.links.0[0].is_over()
    }

    pub(crate) fn waiters(&self) -> &'static Waiters {
        self.waiters
    }

    pub(crate) fn set(&self, over: bool) {
        if self.is_over() != over {
            // Under the connections' lock: a gate registering a connection meanwhile either
            // sees the flag set (and cuts at once) or is in the list taken here.
            let mut conns = lock(&self.conns);
            for link in &self.links.0 {
                link.over.store(over, Ordering::Release);
            }
            if over {
                let cut: Vec<Arc<Conn>> = conns.drain(..).filter_map(|c| c.upgrade()).collect();
                drop(conns);
                self.waiters.wake_all();
                close_later(cut, tokio::time::Instant::now());
            }
        }
    }
}

/// Sets a gate's admission and its drain, in the order that keeps a request admitted
/// from ever finding its drain over.
fn open_or_shut(drain: &'static Drain, admits: bool, over: bool) {
    if admits {
        drain.set(over);
        drain.set_admits(true);
    } else {
        drain.set_admits(false);
        drain.set(over);
    }
}

/// Cuts `conns` at `at` (reads stop, writes go on), and closes them from outside when
/// they must close, by a task of their own: a connection whose handler neither reads
/// nor writes closes on time too.
fn close_later(conns: Vec<Arc<Conn>>, at: tokio::time::Instant) {
    let Some(closes) = conns.iter().map(|conn| conn.cut_at(at)).max() else {
        return;
    };
    // (No runtime: the connections fail at their next read or write.)
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            tokio::time::sleep_until(closes).await;
            for conn in conns {
                conn.close();
            }
        });
    }
}

/// This thread's waiter list: threads take the lists in turn, once each.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % DRAIN_SHARDS;
    }
    SHARD.with(|shard| *shard)
}

/// What a handle can ask of the checker.
pub(crate) enum Command {
    /// Re-read and re-evaluate now; reply with the verdict.
    CheckNow(oneshot::Sender<Arc<Verdict>>),
}

/// Keeps a value alone on its cache line (128 bytes covers adjacent-line prefetching), so
/// that writes to its neighbours (the verdict's pointer changes at every check) never
/// evict it from the readers' caches.
#[repr(align(128))]
#[derive(Debug, Default)]
struct CacheLine<T>(T);

/// How many counters of admitted requests a monitor keeps: one per waiter list, taken by
/// threads in turn as those are ([`shard`]).
const ADMITTED_SHARDS: usize = DRAIN_SHARDS;

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
    pub(crate) usage: crate::usage::Usage,
    pub(crate) usage_flush: mpsc::Sender<oneshot::Sender<()>>,
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
    pub(crate) fn usage(&self) -> &crate::usage::Usage {
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
pub(crate) struct WeakView(Weak<Shared>);

#[cfg(any(feature = "otel", feature = "prometheus"))]
impl WeakView {
    pub(crate) fn upgrade(&self) -> Option<View> {
        self.0.upgrade().map(View)
    }
}

/// Counters the checker keeps; scrapes read them. Never touched on the request path.
///
/// Every reason code and event name is counted from 0 at start, so that each labelled
/// series exists from the first scrape: a counter that first appears at 1 reads as no
/// increase to Prometheus, and an alert on it misses the first failure.
#[derive(Debug)]
pub(crate) struct Stats {
    checks: AtomicU64,
    failures: Mutex<BTreeMap<&'static str, u64>>,
    events: Mutex<BTreeMap<&'static str, u64>>,
    /// The reason the last read was refused, or `None` when it was good.
    failing: Mutex<Option<&'static str>>,
    /// The instance slot this replica holds, and until when it counts as held without a
    /// renewal (see `crate::instances`).
    instance_slot: Mutex<Option<(u32, tokio::time::Instant)>>,
    /// Requests answered with the rejection (the cold path only).
    refused: AtomicU64,
    /// Requests admitted, when counted: one counter per thread group, each on its own
    /// cache line, so that threads serving requests at once never write the same line.
    admitted: Box<[CacheLine<AtomicU64>; ADMITTED_SHARDS]>,
    /// Each usage counter's total recorded this month and its value when last recorded,
    /// as the usage task keeps them: its total this month is the first plus what it
    /// counted since.
    counter_bases: Mutex<BTreeMap<String, (u64, u64)>>,
    /// Writes of the state file that failed.
    state_write_failures: AtomicU64,
    /// Whether the last write of the state file failed.
    state_write_failing: AtomicBool,
}

impl Default for Stats {
    fn default() -> Self {
        let zeros = |keys: &[&'static str]| keys.iter().map(|k| (*k, 0)).collect();
        Self {
            checks: AtomicU64::new(0),
            failures: Mutex::new(zeros(&LicenseError::REASONS)),
            events: Mutex::new(zeros(&LicenseEvent::NAMES)),
            failing: Mutex::new(None),
            instance_slot: Mutex::new(None),
            refused: AtomicU64::new(0),
            admitted: Box::new(std::array::from_fn(|_| CacheLine(AtomicU64::new(0)))),
            counter_bases: Mutex::new(BTreeMap::new()),
            state_write_failures: AtomicU64::new(0),
            state_write_failing: AtomicBool::new(false),
        }
    }
}

impl Stats {
    pub(crate) fn record_check(&self, failure: Option<&'static str>) {
        self.checks.fetch_add(1, Ordering::Relaxed);
        if let Some(reason) = failure {
            *lock(&self.failures).entry(reason).or_default() += 1;
        }
        *lock(&self.failing) = failure;
    }

    /// A write of the state file: whether it failed.
    pub(crate) fn record_state_write(&self, failed: bool) {
        if failed {
            self.state_write_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.state_write_failing.store(failed, Ordering::Relaxed);
    }

    pub(crate) fn state_write_failures(&self) -> u64 {
        self.state_write_failures.load(Ordering::Relaxed)
    }

    pub(crate) fn state_write_failing(&self) -> bool {
        self.state_write_failing.load(Ordering::Relaxed)
    }

    pub(crate) fn record_event(&self, event: &LicenseEvent) {
        *lock(&self.events).entry(event.name()).or_default() += 1;
    }

    /// One more request answered with the rejection.
    pub(crate) fn record_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// One more request admitted (only with a usage journal: see [`OPEN_COUNTED`]).
    pub(crate) fn record_admitted(&self) {
        self.admitted[shard() % ADMITTED_SHARDS]
            .0
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn admitted(&self) -> u64 {
        self.admitted
            .iter()
            .fold(0u64, |sum, c| sum.wrapping_add(c.0.load(Ordering::Relaxed)))
    }

    pub(crate) fn set_counter_bases(&self, bases: BTreeMap<String, (u64, u64)>) {
        *lock(&self.counter_bases) = bases;
    }

    pub(crate) fn counter_bases(&self) -> BTreeMap<String, (u64, u64)> {
        lock(&self.counter_bases).clone()
    }

    pub(crate) fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    pub(crate) fn failures(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.failures).clone()
    }

    pub(crate) fn events(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.events).clone()
    }

    pub(crate) fn failing(&self) -> Option<&'static str> {
        *lock(&self.failing)
    }

    pub(crate) fn instance_slot(&self) -> Option<u32> {
        lock(&self.instance_slot)
            .filter(|(_, until)| tokio::time::Instant::now() < *until)
            .map(|(slot, _)| slot)
    }

    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    pub(crate) fn set_instance_slot(&self, slot: Option<(u32, tokio::time::Instant)>) {
        *lock(&self.instance_slot) = slot;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps hold plain counters: a panic elsewhere cannot leave them inconsistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use super::{Ticket, Waiters};

    /// A waker that counts its wake-ups.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        (Arc::clone(&counter), Waker::from(Arc::clone(&counter)))
    }

    fn held(waiters: &Waiters) -> usize {
        waiters
            .tickets
            .iter()
            .map(|shard| super::lock(&shard.0).slots.iter().flatten().count())
            .sum()
    }

    #[test]
    fn a_registered_waker_is_woken_by_a_sweep_once_and_its_ticket_goes_stale() {
        let waiters = Waiters::new();
        let (count, waker) = counter();
        let mut ticket = Ticket::NONE;
        waiters.register(&mut ticket, &waker);
        assert!(ticket.is_some());
        // Registering again with the same ticket keeps one place.
        waiters.register(&mut ticket, &waker);
        assert_eq!(held(&waiters), 1);
        waiters.sweep();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(held(&waiters), 0);
        waiters.sweep();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken once");
        // The stale ticket takes a new place in the new generation.
        waiters.register(&mut ticket, &waker);
        assert_eq!(held(&waiters), 1);
        waiters.wake_all();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_completed_response_gives_its_place_back_and_the_place_is_reused() {
        let waiters = Waiters::new();
        let (count, waker) = counter();
        let mut first = Ticket::NONE;
        waiters.register(&mut first, &waker);
        waiters.release(&mut first);
        assert_eq!(first, Ticket::NONE);
        assert_eq!(held(&waiters), 0);
        let mut second = Ticket::NONE;
        waiters.register(&mut second, &waker);
        let slots: usize = waiters
            .tickets
            .iter()
            .map(|shard| super::lock(&shard.0).slots.len())
            .sum();
        assert_eq!(slots, 1, "the freed place was reused");
        // A ticket from before a sweep releases nothing of the new generation.
        waiters.sweep();
        let mut third = Ticket::NONE;
        waiters.register(&mut third, &waker);
        waiters.release(&mut second);
        assert_eq!(held(&waiters), 1);
        waiters.sweep();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_full_shard_sweeps_itself_so_abandoned_places_cannot_pile_up() {
        // Responses dropped while pending never give their places back; past the bound
        // the shard wakes them (once) and starts over.
        let waiters = Waiters::new();
        let (count, waker) = counter();
        for _ in 0..super::SHARD_BOUND {
            let mut abandoned = Ticket::NONE;
            waiters.register(&mut abandoned, &waker);
        }
        assert_eq!(held(&waiters), super::SHARD_BOUND);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        let mut next = Ticket::NONE;
        waiters.register(&mut next, &waker);
        assert_eq!(count.0.load(Ordering::SeqCst), super::SHARD_BOUND);
        assert_eq!(held(&waiters), 1);
    }
}
