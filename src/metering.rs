//! Metering: what the application records (gauges and counters, by name) and what the
//! crate records on its own, one atomic operation an update. Read by the usage task, the
//! metrics and the limit alerts; the usage journal is `crate::usage`'s.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The most metrics an application may name (the crate's own come on top).
pub const MAX_METRICS: usize = 64;
/// The longest metric name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Names the crate meters itself start with this; an application's may not.
pub const RESERVED_PREFIX: &str = "iosetu_";

/// This instance runs (a gauge, 1): summed over instances, the replicas that ran.
pub const REPLICAS: &str = "iosetu_replicas";
/// This instance holds an instance slot (a gauge, 0 or 1).
pub const SLOTS_HELD: &str = "iosetu_slots_held";
/// Seconds this instance spent in grace or cut off (a counter).
pub const GRACE_SECONDS: &str = "iosetu_grace_seconds";
/// Requests this instance answered with the license rejection (a counter).
pub const REQUESTS_REFUSED: &str = "iosetu_requests_refused";
/// Requests the license layer admitted (a counter; only with a usage journal).
pub const REQUESTS_ADMITTED: &str = "iosetu_requests_admitted";

/// Why a usage update was refused. The update is dropped; nothing else changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// Not a metric name: 1 to 64 bytes of `a-z`, `0-9` and `_`, starting with a letter.
    #[error("invalid usage metric name {0:?}: 1 to 64 of a-z, 0-9 and _, starting with a letter")]
    InvalidName(String),
    /// Names starting with `iosetu_` are the crate's own.
    #[error("usage metric name {0:?} is reserved (the iosetu_ prefix is the crate's own)")]
    Reserved(String),
    /// The name is already a metric of the other kind (a gauge used as a counter, or the
    /// reverse).
    #[error("usage metric {name:?} is a {kind}, not a {asked}")]
    KindMismatch {
        /// The metric.
        name: String,
        /// What it is.
        kind: &'static str,
        /// What the update treated it as.
        asked: &'static str,
    },
    /// More than [`MAX_METRICS`] names.
    #[error("too many usage metrics (at most {MAX_METRICS})")]
    TooMany,
}

impl UsageError {
    /// A stable reason code: `invalid_name`, `reserved`, `kind_mismatch`, `too_many`.
    pub fn reason(&self) -> &'static str {
        match self {
            UsageError::InvalidName(_) => "invalid_name",
            UsageError::Reserved(_) => "reserved",
            UsageError::KindMismatch { .. } => "kind_mismatch",
            UsageError::TooMany => "too_many",
        }
    }
}

/// Gauge or counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// One metric's cells. A gauge keeps its current value and its peak since the last
/// record; a counter its total since this process started.
#[derive(Debug)]
pub(crate) struct Cell {
    kind: Kind,
    value: AtomicU64,
    peak: AtomicU64,
}

impl Cell {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            value: AtomicU64::new(0),
            peak: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn set(&self, value: u64) {
        self.value.store(value, Ordering::Relaxed);
        self.peak.fetch_max(value, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn add(&self, n: u64) {
        // Saturating: a total that could wrap would report a tiny number.
        let _ = self
            .value
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_add(n))
            });
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// A gauge's current value, or a counter's total.
    pub(crate) fn value(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }

    /// A gauge's peak since the last [`take_peak`](Self::take_peak), leaving it.
    pub(crate) fn peek_peak(&self) -> u64 {
        self.peak
            .load(Ordering::Relaxed)
            .max(self.value.load(Ordering::Relaxed))
    }

    /// A gauge's peak since the last call, starting the next period at the current value.
    pub(crate) fn take_peak(&self) -> u64 {
        let current = self.value.load(Ordering::Relaxed);
        self.peak.swap(current, Ordering::Relaxed).max(current)
    }
}

/// The metrics of one monitor. Shared by the handles, the usage task and the metrics.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    cells: RwLock<BTreeMap<String, Arc<Cell>>>,
}

impl Registry {
    fn cell(&self, name: &str, kind: Kind) -> Result<Arc<Cell>, UsageError> {
        // (The crate's own metrics are in the map too: an application never writes them.)
        if name.starts_with(RESERVED_PREFIX) {
            return Err(UsageError::Reserved(
                name.chars().take(MAX_NAME_BYTES).collect(),
            ));
        }
        {
            let cells = self.cells.read().unwrap_or_else(|p| p.into_inner());
            if let Some(cell) = cells.get(name) {
                return check_kind(name, cell, kind);
            }
        }
        validate_name(name)?;
        self.insert(name, kind, MAX_METRICS)
    }

    fn insert(&self, name: &str, kind: Kind, max: usize) -> Result<Arc<Cell>, UsageError> {
        let mut cells = self.cells.write().unwrap_or_else(|p| p.into_inner());
        if let Some(cell) = cells.get(name) {
            return check_kind(name, cell, kind);
        }
        let own = cells
            .keys()
            .filter(|k| !k.starts_with(RESERVED_PREFIX))
            .count();
        if !name.starts_with(RESERVED_PREFIX) && own >= max {
            return Err(UsageError::TooMany);
        }
        let cell = Arc::new(Cell::new(kind));
        cells.insert(name.to_owned(), Arc::clone(&cell));
        Ok(cell)
    }

    /// One of the crate's own metrics (its names are valid and never collide by kind).
    pub(crate) fn builtin(&self, name: &'static str, kind: Kind) -> Arc<Cell> {
        match self.insert(name, kind, usize::MAX) {
            Ok(cell) => cell,
            // (Unreachable: built-in names are distinct constants of one kind each, and
            // an application cannot register a reserved name; a cell still comes back.)
            Err(_) => Arc::new(Cell::new(kind)),
        }
    }

    /// Each metric as compared with its limit: a gauge's current value, a counter's total
    /// this month (`bases`: its total recorded this month and its value then).
    pub(crate) fn current(&self, bases: &BTreeMap<String, (u64, u64)>) -> BTreeMap<String, u64> {
        let cells = self.cells.read().unwrap_or_else(|p| p.into_inner());
        cells
            .iter()
            .map(|(name, cell)| {
                let value = match cell.kind {
                    Kind::Gauge => cell.value(),
                    Kind::Counter => {
                        let (month, at) = bases.get(name).copied().unwrap_or((0, 0));
                        month.saturating_add(cell.value().saturating_sub(at))
                    }
                };
                (name.clone(), value)
            })
            .collect()
    }

    /// Every metric with its cell, by name.
    pub(crate) fn cells(&self) -> Vec<(String, Arc<Cell>)> {
        let cells = self.cells.read().unwrap_or_else(|p| p.into_inner());
        cells
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }
}

fn check_kind(name: &str, cell: &Arc<Cell>, kind: Kind) -> Result<Arc<Cell>, UsageError> {
    if cell.kind == kind {
        Ok(Arc::clone(cell))
    } else {
        Err(UsageError::KindMismatch {
            name: name.to_owned(),
            kind: cell.kind.as_str(),
            asked: kind.as_str(),
        })
    }
}

/// `YYYY-MM` (UTC) of a time in seconds since the epoch: the month a record counts in.
pub(crate) fn month_of(secs: i64) -> String {
    crate::clock::rfc3339(secs)[..7].to_owned()
}

/// Checks a metric name: 1 to [`MAX_NAME_BYTES`] of `a-z`, `0-9`, `_`, a letter first.
pub(crate) fn validate_name(name: &str) -> Result<(), UsageError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(UsageError::InvalidName(
            name.chars().take(MAX_NAME_BYTES + 8).collect(),
        ))
    }
}

/// What the application meters, for the usage journal, the metrics and limit alerts.
///
/// Got from [`LicenseMonitor::usage`](crate::LicenseMonitor::usage); cheap to clone (one
/// reference count). Names are free (`seats`, `api_calls`): 1 to 64 bytes of `a-z`,
/// `0-9`, `_`, a letter first; a license's `limits` claim of the same name is the limit
/// the metric is checked against. For a hot path, keep a handle ([`gauge`](Self::gauge),
/// [`counter`](Self::counter)): an update is then one atomic operation.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # use iosetu_license::{LicenseMonitor, LicenseSource, PublicKey};
/// # let pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----";
/// # let monitor = LicenseMonitor::builder()
/// #     .public_key(PublicKey::from_pem(pem)?)
/// #     .source(LicenseSource::Static(String::new()))
/// #     .start()
/// #     .await?;
/// let usage = monitor.usage();
/// usage.set("seats", 23)?; // a gauge: the hour's peak is recorded
/// let calls = usage.counter("api_calls")?; // keep it: one atomic add per call
/// calls.add(1);
/// assert_eq!(usage.value("seats"), Some(23));
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct Usage {
    pub(crate) registry: Arc<Registry>,
}

impl Usage {
    /// Sets gauge `name` to `value` (its peak per hour is what the journal records).
    pub fn set(&self, name: &str, value: u64) -> Result<(), UsageError> {
        self.registry.cell(name, Kind::Gauge)?.set(value);
        Ok(())
    }

    /// Adds `n` to counter `name` (its total per hour is what the journal records).
    pub fn add(&self, name: &str, n: u64) -> Result<(), UsageError> {
        self.registry.cell(name, Kind::Counter)?.add(n);
        Ok(())
    }

    /// A handle to gauge `name`, for a hot path.
    pub fn gauge(&self, name: &str) -> Result<UsageGauge, UsageError> {
        Ok(UsageGauge(self.registry.cell(name, Kind::Gauge)?))
    }

    /// A handle to counter `name`, for a hot path.
    pub fn counter(&self, name: &str) -> Result<UsageCounter, UsageError> {
        Ok(UsageCounter(self.registry.cell(name, Kind::Counter)?))
    }

    /// A gauge's current value or a counter's total since this process started; `None`
    /// for a name never used.
    pub fn value(&self, name: &str) -> Option<u64> {
        let cells = self
            .registry
            .cells
            .read()
            .unwrap_or_else(|p| p.into_inner());
        cells.get(name).map(|c| c.value())
    }
}

impl fmt::Debug for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cells = self.registry.cells();
        f.debug_map()
            .entries(cells.iter().map(|(k, c)| (k, c.value())))
            .finish()
    }
}

/// A gauge of [`Usage`]: [`set`](Self::set) is one atomic store and one atomic max.
#[derive(Clone)]
pub struct UsageGauge(Arc<Cell>);

impl UsageGauge {
    /// Sets the gauge.
    #[inline]
    pub fn set(&self, value: u64) {
        self.0.set(value);
    }
}

impl fmt::Debug for UsageGauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UsageGauge").field(&self.0.value()).finish()
    }
}

/// A counter of [`Usage`]: [`add`](Self::add) is one atomic update (saturating).
#[derive(Clone)]
pub struct UsageCounter(Arc<Cell>);

impl UsageCounter {
    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.add(n);
    }
}

impl fmt::Debug for UsageCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UsageCounter")
            .field(&self.0.value())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_kinds_and_bounds() {
        let usage = Usage::default();
        usage.set("seats", 3).unwrap();
        usage.set("seats", 9).unwrap();
        usage.set("seats", 4).unwrap();
        assert_eq!(usage.value("seats"), Some(4));
        let cells = usage.registry.cells();
        assert_eq!(cells[0].1.take_peak(), 9);
        assert_eq!(
            cells[0].1.take_peak(),
            4,
            "the next period starts at the value"
        );
        usage.add("calls", 2).unwrap();
        usage.counter("calls").unwrap().add(u64::MAX);
        assert_eq!(usage.value("calls"), Some(u64::MAX), "saturates");
        for (bad, reason) in [
            ("", "invalid_name"),
            ("Seats", "invalid_name"),
            ("9lives", "invalid_name"),
            ("a-b", "invalid_name"),
            ("seats\n", "invalid_name"),
            ("iosetu_replicas", "reserved"),
            ("calls", "kind_mismatch"),
        ] {
            assert_eq!(usage.set(bad, 1).unwrap_err().reason(), reason, "{bad:?}");
        }
        assert_eq!(
            usage.set(&"a".repeat(65), 1).unwrap_err().reason(),
            "invalid_name"
        );
        assert_eq!(usage.add("seats", 1).unwrap_err().reason(), "kind_mismatch");
        for i in 0..MAX_METRICS - 2 {
            usage.set(&format!("m{i}"), 1).unwrap();
        }
        assert_eq!(usage.set("one_more", 1).unwrap_err(), UsageError::TooMany);
        // The crate's own metrics do not count against the application's.
        usage.registry.builtin(REPLICAS, Kind::Gauge).set(1);
        assert_eq!(usage.value(REPLICAS), Some(1));
        assert_eq!(usage.value("never"), None);
    }
}
