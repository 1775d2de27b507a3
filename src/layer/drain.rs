//! The drain of a gate (the license layer's, or a feature's): whether it admits, and
//! the end of the drain period after it stops, which the responses, bodies and
//! connections it admitted watch.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Waker;
use std::time::Duration;

use crate::layer::rejection::FeatureText;
use crate::sync::{CacheLine, SHARDS, lock, shard};

/// Whether a feature is licensed now (in force, valid or in grace, and not cut off): what
/// a `RequireFeature` request reads, one relaxed load, instead of looking the name up in
/// the verdict.
#[derive(Debug)]
pub(crate) struct FeatureGate {
    pub(crate) name: String,
    /// What the feature's admitted responses watch: over when the monitor's drain is, or
    /// a drain period after a renewal took the feature away.
    pub(crate) drain: &'static Drain,
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
    conns: Mutex<Vec<Weak<dyn Cut>>>,
    /// The monitor's HTTP/2 connections (on the monitor's drain; a feature's is unused).
    h2: Mutex<Vec<Weak<dyn Cut>>>,
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
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// How many waiter lists a drain has: more than the cores of most hosts that run one
/// service, few enough that the end of a drain wakes them all at once.
const DRAIN_SHARDS: usize = SHARDS;

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
    pub(crate) fn h2_connections(&self) -> &Mutex<Vec<Weak<dyn Cut>>> {
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
    pub(crate) fn register(&self, conn: &Arc<dyn Cut>) {
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
            .any(|c| std::ptr::addr_eq(c.as_ptr(), Arc::as_ptr(conn)))
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

    pub(crate) fn set_admits(&self, admits: bool) {
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
                let cut: Vec<Arc<dyn Cut>> = conns.drain(..).filter_map(|c| c.upgrade()).collect();
                drop(conns);
                self.waiters.wake_all();
                close_later(cut, tokio::time::Instant::now());
            }
        }
    }
}

/// A connection a drain can cut: one that carried an upgrade its gate admitted (see
/// `crate::layer::connection`, which implements it; the drain knows nothing else of it).
pub(crate) trait Cut: Send + Sync {
    /// Marks it as one a drain cuts (it then stops being read past the cut).
    fn mark(&self);
    /// Cuts it at `at`; returns when it must be closed.
    fn cut_at(&self, at: tokio::time::Instant) -> tokio::time::Instant;
    /// Closes it now, from outside.
    fn close(&self);
}

/// Sets a gate's admission and its drain, in the order that keeps a request admitted
/// from ever finding its drain over.
pub(crate) fn open_or_shut(drain: &'static Drain, admits: bool, over: bool) {
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
fn close_later(conns: Vec<Arc<dyn Cut>>, at: tokio::time::Instant) {
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

/// Registers `cx` to be woken when the drain period ends; returns whether it has ended.
/// Called only after the inner future or body returned `Pending` (or the drain is over):
/// a response that is ready costs nothing here.
#[cold]
#[inline(never)]
pub(crate) fn wait_for_drain(
    link: &'static Link,
    ticket: &mut Ticket,
    cx: &mut std::task::Context<'_>,
) -> bool {
    if link.is_over_acquire() {
        return true;
    }
    // Registered before the flag is read again: an end of the drain in between wakes it.
    link.waiters().register(ticket, cx.waker());
    link.is_over_acquire()
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
