//! The monitor's statistics: counters the checker, the tasks and the layer write, and the
//! metrics read.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::event::LicenseEvent;
use crate::sync::{CacheLine, SHARDS, lock, shard};
use crate::token::LicenseError;

/// How many counters of admitted requests a monitor keeps: one per waiter list, taken by
/// threads in turn as those are ([`shard`]).
const ADMITTED_SHARDS: usize = SHARDS;

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
