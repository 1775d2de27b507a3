//! The usage task: samples the crate's own metrics, checks usage against the limits in
//! force, and ends each hour in a journal record, written off the async workers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::AbortHandle;

use super::journal::{
    self, DAILY_DAYS, HOURLY_DAYS, LicenseInForce, MAX_JOURNAL_BYTES, Record, Span,
};
use super::{
    Cell, GRACE_SECONDS, Kind, REPLICAS, REQUESTS_ADMITTED, REQUESTS_REFUSED, Registry, SLOTS_HELD,
    month_of,
};
use crate::checker::{IO_DEADLINE, off_thread};
use crate::clock::{escape_control, unix_seconds};
use crate::event::{DriftKind, LicenseEvent, Reporter};
use crate::judge::throttle::Keyed;
use crate::shared::{Shared, View};
use crate::source::shown;
use crate::verdict::LicenseState;

/// How often the crate's own metrics are sampled and limits checked.
pub(crate) const SAMPLE_INTERVAL: Duration = Duration::from_secs(60);
/// How often the hour so far is kept beside the journal (`<journal>.checkpoint`): what a
/// process killed before its hour ends loses at most.
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(300);
const HOUR: i64 = 3600;

/// The journal as this process keeps it.
struct Journal {
    path: PathBuf,
    key: SigningKey,
    /// The last record's sequence number and link.
    head: Option<(u64, String)>,
    /// The next record declares the key (the first, or after a new key was made).
    declare_key: bool,
    /// This process's start count.
    boot: u64,
    /// The journal's length after our last write: anything else means someone else
    /// wrote to it.
    len: u64,
    /// When the oldest hourly record started (compaction is due past 400 days).
    oldest_hourly: Option<i64>,
    /// Records whose write failed (a full disk), oldest first: written, in order, before
    /// the next one, so that an hour that could not be written is late, never lost.
    pending: Vec<Record>,
    /// A failed append may have left bytes of ours past `len`: cut before the next.
    tail_dirty: bool,
    /// The lock that makes this journal this process's alone (see `journal::claim`).
    _lock: std::fs::File,
}

/// The most records kept waiting for a disk with room (a month of hours); past it, the
/// newest absorbs the next.
const MAX_PENDING: usize = 31 * 24;

/// What opening the journal found.
struct Opened {
    journal: Journal,
    problems: Vec<(&'static str, String)>,
    notes: Vec<String>,
    /// Counter totals of this month's records, by name.
    month_totals: BTreeMap<String, u64>,
}

fn open(base: PathBuf, month: String) -> Result<Opened, String> {
    let (path, lock) = journal::claim(&base)?;
    let shown_path = shown(&path);
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let bytes = journal::read_bounded(&path, MAX_JOURNAL_BYTES)
        .map_err(|e| format!("{shown_path}: {e}"))?
        .unwrap_or_default();
    let mut parsed = journal::parse(&bytes);
    let key_file = journal::key_path(&path);
    let (key, made) = match journal::load_key(&key_file) {
        Ok(Some(key)) => (key, false),
        Ok(None) => match journal::make_key(&key_file) {
            Ok(key) => (key, true),
            // Made meanwhile by a process that does not lock (an older library): its key.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => (
                journal::load_key(&key_file)?
                    .ok_or_else(|| format!("{}: {e}", shown(&key_file)))?,
                false,
            ),
            Err(e) => return Err(format!("{}: {e}", shown(&key_file))),
        },
        Err(e) => {
            problems.push(("key_replaced", format!("{e}; a new key replaces it")));
            // Keep the unusable file: move it aside, then make a new one.
            let aside = key_file.with_extension("key.invalid");
            let _ = std::fs::rename(&key_file, aside);
            (
                journal::make_key(&key_file).map_err(|e| format!("{}: {e}", shown(&key_file)))?,
                true,
            )
        }
    };
    if made && !parsed.records.is_empty() {
        if problems.is_empty() {
            problems.push((
                "key_replaced",
                format!(
                    "{} was missing: a new instance key continues the journal",
                    shown(&key_file)
                ),
            ));
        }
        notes.push("key_replaced".to_owned());
    }
    if parsed.missing_newline {
        // (A crash between a record and its newline: the record is whole and signed.)
        parsed.complete_len =
            journal::append(&path, b"").map_err(|e| format!("{shown_path}: {e}"))?;
    }
    if parsed.torn {
        problems.push((
            "torn",
            format!("{shown_path}: the last record was cut short (a crash mid-write); dropped"),
        ));
        notes.push("torn_record_dropped".to_owned());
        journal::truncate(&path, parsed.complete_len).map_err(|e| format!("{shown_path}: {e}"))?;
    }
    if !parsed.bad_lines.is_empty() {
        let (line, why) = &parsed.bad_lines[0];
        problems.push((
            "corrupt",
            format!(
                "{shown_path}: {} lines are not records (line {line}: {})",
                parsed.bad_lines.len(),
                escape_control(why)
            ),
        ));
        notes.push("journal_changed".to_owned());
    }
    // The last record must be ours: signed with the key in force at it.
    let declared = parsed
        .records
        .iter()
        .rev()
        .find_map(|r| r.key.as_deref().and_then(journal::decode_key));
    if let (Some(last), Some(declared)) = (parsed.records.last(), declared)
        && !made
        && (!last.verify_signature(&declared) || declared != key.verifying_key())
    {
        problems.push((
            "corrupt",
            format!("{shown_path}: the last record is not signed by this instance's key"),
        ));
        notes.push("journal_changed".to_owned());
    }
    let mut month_totals = BTreeMap::new();
    for record in parsed.records.iter().filter(|r| month_of(r.start) == month) {
        for (name, v) in &record.counters {
            let e: &mut u64 = month_totals.entry(name.clone()).or_default();
            *e = e.saturating_add(*v);
        }
    }
    let last = parsed.records.pop();
    let oldest_hourly = parsed
        .records
        .iter()
        .chain(last.iter())
        .find(|r| r.span == Span::Hour)
        .map(|r| r.start);
    let head = last.as_ref().map(|r| (r.last_n(), r.link()));
    // The hour a process killed before its end had so far (and records a full disk kept
    // waiting): written now, each as its process sealed it.
    let checkpoint = journal::read_checkpoint(&path, head.as_ref(), &key.verifying_key(), true);
    if checkpoint.is_some() {
        notes.retain(|n| n != "write_failed");
    }
    let checkpoint = checkpoint.unwrap_or_default();
    let boot = last
        .iter()
        .chain(checkpoint.last())
        .map(|r| r.boot.saturating_add(1))
        .max()
        .unwrap_or(0);
    for record in checkpoint.iter().filter(|r| month_of(r.start) == month) {
        for (name, v) in &record.counters {
            let e: &mut u64 = month_totals.entry(name.clone()).or_default();
            *e = e.saturating_add(*v);
        }
    }
    let mut journal = Journal {
        len: parsed.complete_len,
        head,
        declare_key: made || last.is_none(),
        boot,
        key,
        path,
        oldest_hourly,
        pending: checkpoint,
        tail_dirty: false,
        _lock: lock,
    };
    let written = flush_pending(&mut journal);
    if let Err(detail) = &written {
        problems.push(("write_failed", detail.clone()));
    }
    if written.is_ok() {
        let _ = std::fs::remove_file(journal::checkpoint_path(&journal.path));
    }
    if let Ok(more) = written {
        problems.extend(more);
    }
    Ok(Opened {
        journal,
        problems,
        notes,
        month_totals,
    })
}

/// Writes the records waiting, in order.
fn flush_pending(journal: &mut Journal) -> Result<Vec<(&'static str, String)>, String> {
    let mut problems = Vec::new();
    while !journal.pending.is_empty() {
        match write_one(journal, &mut problems) {
            Ok(()) => {
                journal.pending.remove(0);
            }
            Err(e) => {
                let first = &mut journal.pending[0];
                if !first.notes.iter().any(|n| n == "write_failed")
                    && first.notes.len() < journal::MAX_NOTES
                {
                    first.notes.push("write_failed".to_owned());
                }
                return Err(e);
            }
        }
    }
    Ok(problems)
}

/// The records waiting and `current` (the hour so far), chained on from the journal's
/// head and signed as they would be written, kept beside the journal.
fn store_checkpoint(journal: &Journal, mut current: Record) -> Result<(), String> {
    current.boot = journal.boot;
    let mut head = journal.head.clone();
    let mut declare = journal.declare_key;
    let mut bytes = Vec::new();
    for record in journal
        .pending
        .iter()
        .cloned()
        .chain(std::iter::once(current))
    {
        let mut record = record;
        seal(journal, &mut record, head.as_ref(), declare);
        declare = false;
        head = Some((record.n, record.link()));
        bytes.extend(record.to_line());
        bytes.push(b'\n');
    }
    let file = journal::checkpoint_path(&journal.path);
    journal::overwrite(&file, &bytes).map_err(|e| format!("{}: {e}", shown(&file)))
}

/// Fills in a record's chain fields after `head` and signs it.
fn seal(journal: &Journal, record: &mut Record, head: Option<&(u64, String)>, declare: bool) {
    record.n = head.map_or(0, |(n, _)| n.saturating_add(1));
    record.prev = head.map_or_else(|| journal::GENESIS.to_owned(), |(_, link)| link.clone());
    if declare {
        record.key = Some(journal::encode_key(&journal.key.verifying_key()));
    }
    record.sign(&journal.key);
}

/// Appends `record` after any still waiting (their chain fields filled in and signed
/// here), compacting first when the oldest hourly record is past [`HOURLY_DAYS`]. A
/// record that cannot be written waits, noted `write_failed`, for the next write.
fn write(journal: &mut Journal, mut record: Record) -> Result<Vec<(&'static str, String)>, String> {
    record.boot = journal.boot;
    if journal.pending.len() >= MAX_PENDING
        && let Some(newest) = journal.pending.last_mut()
    {
        absorb(newest, record);
    } else {
        journal.pending.push(record);
    }
    let problems = flush_pending(journal)?;
    // The hour is written: its checkpoint is no longer needed (one left behind by a
    // kill in between is recognised as written at the next start).
    let _ = std::fs::remove_file(journal::checkpoint_path(&journal.path));
    Ok(problems)
}

/// A record that waited longest takes in the next (a disk full for a month).
fn absorb(into: &mut Record, record: Record) {
    into.end = into.end.max(record.end);
    into.watermark = into.watermark.max(record.watermark);
    into.wall = record.wall;
    into.uptime = record.uptime;
    for (name, v) in record.gauges {
        let e = into.gauges.entry(name).or_default();
        *e = (*e).max(v);
    }
    for (name, v) in record.counters {
        let e = into.counters.entry(name).or_default();
        *e = e.saturating_add(v);
    }
    for note in record.notes {
        if !into.notes.contains(&note) && into.notes.len() < journal::MAX_NOTES {
            into.notes.push(note);
        }
    }
}

/// Writes the first pending record.
fn write_one(
    journal: &mut Journal,
    problems: &mut Vec<(&'static str, String)>,
) -> Result<(), String> {
    let shown_path = shown(&journal.path);
    let Some(mut record) = journal.pending.first().cloned() else {
        return Ok(());
    };
    let mut now_len = match std::fs::symlink_metadata(&journal.path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(format!("{shown_path}: {e}")),
    };
    if journal.tail_dirty && now_len > journal.len {
        // Our own bytes of a write that failed and could not be cut back then.
        journal::truncate(&journal.path, journal.len).map_err(|e| format!("{shown_path}: {e}"))?;
        now_len = journal.len;
    }
    journal.tail_dirty = false;
    if now_len != journal.len {
        problems.push((
            "changed",
            format!(
                "{shown_path} is {now_len} bytes, {} after this process's last write: \
                 someone else changed it",
                journal.len
            ),
        ));
        record.notes.push("journal_changed".to_owned());
        // (Said once: what is there now is the base of the next check.)
        journal.len = now_len;
    }
    // Whole days past 400 are folded, once a day.
    let hourly_from = (record.start - HOURLY_DAYS * 86_400).div_euclid(86_400) * 86_400;
    if journal.oldest_hourly.is_some_and(|o| o < hourly_from) {
        let bytes = journal::read_bounded(&journal.path, MAX_JOURNAL_BYTES)
            .map_err(|e| format!("{shown_path}: {e}"))?
            .unwrap_or_default();
        let parsed = journal::parse(&bytes);
        let compacted = journal::compact(
            parsed.records,
            hourly_from,
            record.start - DAILY_DAYS * 86_400,
            &journal.key,
        );
        journal.oldest_hourly = compacted
            .iter()
            .find(|r| r.span == Span::Hour)
            .map(|r| r.start);
        if let Some(last) = compacted.last() {
            journal.head = Some((last.last_n(), last.link()));
        }
        journal.len = journal::rewrite(&journal.path, &compacted)
            .map_err(|e| format!("{shown_path}: {e}"))?;
    }
    seal(
        journal,
        &mut record,
        journal.head.as_ref(),
        journal.declare_key,
    );
    match journal::append(&journal.path, &record.to_line()) {
        Ok(len) => journal.len = len,
        Err(e) => {
            journal.tail_dirty = true;
            return Err(format!("{shown_path}: {e}"));
        }
    }
    journal.head = Some((record.n, record.link()));
    journal.declare_key = false;
    journal.oldest_hourly.get_or_insert(record.start);
    Ok(())
}

/// The task's wiring, made by the builder.
pub(crate) struct UsageTask {
    pub(crate) shared: Weak<Shared>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) path: Option<PathBuf>,
    pub(crate) check_interval: Duration,
    pub(crate) reporter: Reporter,
    pub(crate) events: broadcast::Receiver<LicenseEvent>,
    pub(crate) flush: mpsc::Receiver<oneshot::Sender<()>>,
}

struct Run {
    journal: Option<Arc<Mutex<Journal>>>,
    hung: Option<AbortHandle>,
    /// The current period's start (trusted time) and the notes for its record.
    period_start: i64,
    notes: Vec<String>,
    /// Seconds of steps back the judge took as corrections this period.
    corrected: u64,
    /// The last vendor usage receipt noted.
    receipt_noted: Option<u64>,
    /// Counter values at the last record.
    recorded: BTreeMap<String, u64>,
    /// This month (`YYYY-MM`) and its counter totals recorded so far.
    month: String,
    month_totals: BTreeMap<String, u64>,
    last_sample: Duration,
    /// When the hour so far was last kept beside the journal (or the period began).
    last_checkpoint: Duration,
    /// The last checkpoint could not be written (reported once, until one is).
    checkpoint_failing: bool,
    started: Duration,
    refused_seen: u64,
    admitted_seen: u64,
    /// `license.limit_exceeded` per metric, at most once per check interval.
    limit_reported: Keyed<String>,
    replicas: Arc<Cell>,
    slots: Arc<Cell>,
    grace: Arc<Cell>,
    refused: Arc<Cell>,
    /// With a journal only.
    admitted: Option<Arc<Cell>>,
}

fn trusted_now(view: &View) -> (i64, Duration) {
    let verdict = view.verdict();
    let mono = view.clock().monotonic();
    let since = mono.saturating_sub(verdict.evaluated_mono);
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    (
        unix_seconds(verdict.evaluated_at).saturating_add(secs),
        mono,
    )
}

impl UsageTask {
    pub(crate) async fn run(mut self) {
        let Some(view) = self.shared.upgrade().map(|s| View::new(&s)) else {
            return;
        };
        let (now, mono) = trusted_now(&view);
        let registry = &self.registry;
        let mut run = Run {
            journal: None,
            hung: None,
            period_start: now,
            notes: Vec::new(),
            corrected: 0,
            receipt_noted: None,
            recorded: BTreeMap::new(),
            month: month_of(now),
            month_totals: BTreeMap::new(),
            last_sample: mono,
            last_checkpoint: mono,
            checkpoint_failing: false,
            started: mono,
            refused_seen: 0,
            admitted_seen: 0,
            limit_reported: Keyed::default(),
            replicas: registry.builtin(REPLICAS, Kind::Gauge),
            slots: registry.builtin(SLOTS_HELD, Kind::Gauge),
            grace: registry.builtin(GRACE_SECONDS, Kind::Counter),
            refused: registry.builtin(REQUESTS_REFUSED, Kind::Counter),
            admitted: self
                .path
                .is_some()
                .then(|| registry.builtin(REQUESTS_ADMITTED, Kind::Counter)),
        };
        run.replicas.set(1);
        drop(view);
        if let Some(path) = self.path.clone() {
            let month = run.month.clone();
            let opened = off_thread(&mut run.hung, IO_DEADLINE, move || open(path, month)).await;
            match opened {
                Ok(Ok(opened)) => {
                    for (reason, detail) in opened.problems {
                        self.problem(reason, detail);
                    }
                    run.notes = opened.notes;
                    run.month_totals = opened.month_totals;
                    run.journal = Some(Arc::new(Mutex::new(opened.journal)));
                }
                Ok(Err(detail)) => self.problem("unreadable", detail),
                Err(_) => self.problem(
                    "unreadable",
                    "the journal's read has not returned within 5 s".into(),
                ),
            }
        }
        loop {
            let Some(shared) = self.shared.upgrade() else {
                return;
            };
            let view = View::new(&shared);
            drop(shared);
            let (now, mono) = trusted_now(&view);
            self.sample(&mut run, &view, mono);
            let boundary = (run.period_start.div_euclid(HOUR) + 1) * HOUR;
            // Trusted time that went back (a vendor's attestation re-based it) ends the
            // period at once: its hour would otherwise not end until time caught up.
            if now >= boundary || now < run.period_start {
                self.close(&mut run, &view, now, mono).await;
            } else if mono.saturating_sub(run.last_checkpoint) >= CHECKPOINT_INTERVAL {
                self.checkpoint(&mut run, &view, now, mono).await;
            }
            self.check_limits(&mut run, &view, mono);
            let (now, _) = trusted_now(&view);
            drop(view);
            let boundary = (run.period_start.div_euclid(HOUR) + 1) * HOUR;
            let until = Duration::from_secs((boundary - now).clamp(1, HOUR) as u64);
            tokio::select! {
                reply = self.flush.recv() => match reply {
                    Some(reply) => {
                        if let Some(shared) = self.shared.upgrade() {
                            let view = View::new(&shared);
                            drop(shared);
                            let (now, mono) = trusted_now(&view);
                            self.sample(&mut run, &view, mono);
                            if now > run.period_start {
                                self.close(&mut run, &view, now, mono).await;
                            }
                        }
                        let _ = reply.send(());
                    }
                    None => return,
                },
                () = tokio::time::sleep(until.min(SAMPLE_INTERVAL)) => {}
            }
        }
    }

    fn problem(&self, reason: &'static str, detail: String) {
        self.reporter
            .emit(LicenseEvent::UsageJournalInvalid { reason, detail });
    }

    /// The crate's own metrics, and the notes events give.
    fn sample(&mut self, run: &mut Run, view: &View, mono: Duration) {
        let stats = view.stats();
        run.slots.set(u64::from(stats.instance_slot().is_some()));
        let refused = stats.refused();
        run.refused.add(refused.saturating_sub(run.refused_seen));
        run.refused_seen = refused;
        if let Some(cell) = &run.admitted {
            let admitted = stats.admitted();
            cell.add(admitted.wrapping_sub(run.admitted_seen));
            run.admitted_seen = admitted;
        }
        if view.verdict().state != LicenseState::Valid {
            run.grace
                .add(mono.saturating_sub(run.last_sample).as_secs());
        }
        run.last_sample = mono;
        loop {
            match self.events.try_recv() {
                // The judge's verdict on each step back, with its size, so that verify
                // excuses the steps it judged honest and only those.
                Ok(LicenseEvent::ClockAttested {
                    seq,
                    trusted_time_moved_seconds,
                    ..
                }) => note(
                    run,
                    &format!(
                        "clock_attested:{seq}:{}",
                        trusted_time_moved_seconds.min(0).unsigned_abs()
                    ),
                ),
                Ok(LicenseEvent::TimeDriftDetected {
                    drift_seconds,
                    kind: DriftKind::ClockCorrected,
                }) => {
                    // (Rounded up: verify's allowance is never short of the real step.)
                    let back = (-drift_seconds).max(0.0).ceil();
                    run.corrected = run.corrected.saturating_add(back as u64);
                }
                Ok(LicenseEvent::TimeManipulationDetected { .. }) => note(run, "clock_set_back"),
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
    }

    /// The current period as a record: closing it (`close`: peaks and counters start
    /// again, notes are taken), or as a checkpoint that leaves them.
    fn record(&self, run: &mut Run, view: &View, now: i64, mono: Duration, close: bool) -> Record {
        let mut gauges = BTreeMap::new();
        let mut counters = BTreeMap::new();
        for (name, cell) in self.registry.cells() {
            match cell.kind() {
                Kind::Gauge => {
                    let peak = if close {
                        cell.take_peak()
                    } else {
                        cell.peek_peak()
                    };
                    gauges.insert(name, peak);
                }
                Kind::Counter => {
                    let value = cell.value();
                    let before = if close {
                        run.recorded.insert(name.clone(), value)
                    } else {
                        run.recorded.get(&name).copied()
                    };
                    counters.insert(name, value.saturating_sub(before.unwrap_or(0)));
                }
            }
        }
        // A vendor's receipt the monitor accepted since the last record: the report
        // that follows must extend the heads it names.
        let receipt = view.verdict().receipt_seq;
        if receipt > run.receipt_noted
            && let Some(seq) = receipt
        {
            run.receipt_noted = receipt;
            note(run, &format!("receipt:{seq}"));
        }
        let mut notes = if close {
            if run.corrected > 0 {
                let corrected = std::mem::take(&mut run.corrected);
                note(run, &format!("clock_corrected:{corrected}"));
            }
            std::mem::take(&mut run.notes)
        } else {
            let mut notes = run.notes.clone();
            if run.corrected > 0 {
                notes.push(format!("clock_corrected:{}", run.corrected));
            }
            // Written only if this process dies before its hour ends.
            notes.push("unclean_stop".to_owned());
            notes.truncate(journal::MAX_NOTES);
            notes
        };
        notes.dedup();
        let verdict = view.verdict();
        Record {
            v: journal::RECORD_VERSION,
            n: 0,
            n_end: None,
            span: Span::Hour,
            key: None,
            prev: String::new(),
            last: None,
            start: run.period_start,
            end: now.max(run.period_start),
            watermark: now,
            wall: unix_seconds(view.clock().wall()),
            boot: 0,
            uptime: mono.saturating_sub(run.started).as_secs(),
            licenses: verdict
                .licenses
                .iter()
                .take(journal::MAX_LICENSES)
                .map(|c| LicenseInForce {
                    jti: c.jti.clone(),
                    customer: c.customer.clone(),
                    exp: c.exp,
                    limits: c.limits.clone(),
                    max_instances: c.max_instances,
                })
                .collect(),
            gauges,
            counters,
            notice_seq: verdict.notice_seq,
            revocations: verdict.revocations as u64,
            notes,
            sig: None,
        }
    }

    /// Keeps the hour so far beside the journal, so that a process killed before its
    /// hour ends loses at most [`CHECKPOINT_INTERVAL`] of it.
    async fn checkpoint(&mut self, run: &mut Run, view: &View, now: i64, mono: Duration) {
        run.last_checkpoint = mono;
        let Some(journal) = run.journal.clone() else {
            return;
        };
        let record = self.record(run, view, now, mono, false);
        let stored = off_thread(&mut run.hung, IO_DEADLINE, move || {
            let journal = journal.lock().unwrap_or_else(|p| p.into_inner());
            store_checkpoint(&journal, record)
        })
        .await;
        // (Reported when it starts failing, not every 5 minutes of a full disk.)
        let failed = match stored {
            Ok(Ok(())) => None,
            Ok(Err(detail)) => Some(detail),
            Err(_) => Some("the checkpoint's write has not returned within 5 s".into()),
        };
        if let Some(detail) = &failed
            && !run.checkpoint_failing
        {
            self.problem("write_failed", detail.clone());
        }
        run.checkpoint_failing = failed.is_some();
    }

    /// Ends the current period in a record.
    async fn close(&mut self, run: &mut Run, view: &View, now: i64, mono: Duration) {
        let month = month_of(run.period_start);
        if month != run.month {
            run.month = month;
            run.month_totals.clear();
        }
        let record = self.record(run, view, now, mono, true);
        for (name, v) in &record.counters {
            let e = run.month_totals.entry(name.clone()).or_default();
            *e = e.saturating_add(*v);
        }
        run.period_start = now;
        run.last_checkpoint = mono;
        // The next period's month: a counter's total this month starts again with it.
        let month = month_of(now);
        if month != run.month {
            run.month = month;
            run.month_totals.clear();
        }
        let Some(journal) = run.journal.clone() else {
            return;
        };
        let written = off_thread(&mut run.hung, IO_DEADLINE, move || {
            let mut journal = journal.lock().unwrap_or_else(|p| p.into_inner());
            write(&mut journal, record)
        })
        .await;
        match written {
            Ok(Ok(problems)) => {
                for (reason, detail) in problems {
                    self.problem(reason, detail);
                }
            }
            // (The record waits, noted, for the next write.)
            Ok(Err(detail)) => self.problem("write_failed", detail),
            Err(_) => {
                self.problem(
                    "write_failed",
                    "the journal's write has not returned within 5 s".into(),
                );
                note(run, "write_failed");
            }
        }
    }

    /// `license.limit_exceeded` for each metric over its limit, at most once per check
    /// interval each; and the values the metrics show.
    fn check_limits(&mut self, run: &mut Run, view: &View, mono: Duration) {
        let verdict = view.verdict();
        let bases: BTreeMap<String, (u64, u64)> = run
            .month_totals
            .keys()
            .chain(run.recorded.keys())
            .map(|name| {
                let month = run.month_totals.get(name).copied().unwrap_or(0);
                let at = run.recorded.get(name).copied().unwrap_or(0);
                (name.clone(), (month, at))
            })
            .collect();
        let usage = self.registry.current(&bases);
        view.stats().set_counter_bases(bases);
        for (name, value) in usage {
            // (Replicas are the fleet's to count: `max_instances` is the slots' limit.)
            if name == REPLICAS || name == SLOTS_HELD {
                continue;
            }
            let Some(limit) = verdict.limit(&name) else {
                continue;
            };
            if value <= limit {
                continue;
            }
            if run
                .limit_reported
                .ready(name.clone(), mono, self.check_interval)
            {
                self.reporter.emit(LicenseEvent::LimitExceeded {
                    name,
                    usage: value,
                    limit,
                });
            }
        }
    }
}

fn note(run: &mut Run, note: &str) {
    if !run.notes.iter().any(|n| n == note) && run.notes.len() < journal::MAX_NOTES {
        run.notes.push(note.to_owned());
    }
}
