//! The usage task: samples the crate's own metrics, checks usage against the limits in
//! force, and ends each hour in a journal record, written off the async workers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::AbortHandle;

use super::journal::{self, LicenseInForce, Record, Span};
use super::keeper::{Journal, open, store_checkpoint, write};
use super::rules::{LimitAlerts, Notes, counter_bases, noted, period_ends, sleep_for};
use super::{
    Cell, GRACE_SECONDS, Kind, REPLICAS, REQUESTS_ADMITTED, REQUESTS_REFUSED, Registry, SLOTS_HELD,
    month_of,
};
use crate::clock::unix_seconds;
use crate::emit::Reporter;
use crate::event::LicenseEvent;
use crate::layer::shared::{Flush, Shared, View};
use crate::runtime::{IO_DEADLINE, off_thread};
use crate::verdict::LicenseState;

/// How often the crate's own metrics are sampled and limits checked.
pub(crate) const SAMPLE_INTERVAL: Duration = Duration::from_secs(60);
/// How often the hour so far is kept beside the journal (`<journal>.checkpoint`): what a
/// process killed before its hour ends loses at most.
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(300);

/// The task's wiring, made by the builder.
pub(crate) struct UsageTask {
    pub(crate) shared: Weak<Shared>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) path: Option<PathBuf>,
    pub(crate) check_interval: Duration,
    pub(crate) reporter: Reporter,
    pub(crate) events: broadcast::Receiver<LicenseEvent>,
    pub(crate) flush: mpsc::Receiver<(oneshot::Sender<()>, Flush)>,
}

struct Run {
    journal: Option<Arc<Mutex<Journal>>>,
    hung: Option<AbortHandle>,
    /// The current period's start (trusted time) and the notes for its record.
    period_start: i64,
    notes: Notes,
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
    alerts: LimitAlerts,
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
            notes: Notes::default(),
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
            alerts: LimitAlerts::default(),
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
                    run.notes = Notes::from_opening(opened.notes);
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
            if period_ends(run.period_start, now) {
                self.close(&mut run, &view, now, mono).await;
            } else if mono.saturating_sub(run.last_checkpoint) >= CHECKPOINT_INTERVAL {
                self.checkpoint(&mut run, &view, now, mono).await;
            }
            self.check_limits(&mut run, &view, mono);
            let (now, _) = trusted_now(&view);
            drop(view);
            let until = sleep_for(run.period_start, now, SAMPLE_INTERVAL);
            tokio::select! {
                flush = self.flush.recv() => match flush {
                    Some((reply, flush)) => {
                        if let Some(shared) = self.shared.upgrade() {
                            let view = View::new(&shared);
                            drop(shared);
                            let (now, mono) = trusted_now(&view);
                            self.sample(&mut run, &view, mono);
                            if now > run.period_start {
                                self.close(&mut run, &view, now, mono).await;
                            }
                        }
                        if flush == Flush::Close {
                            // The journal is closed, and its lock released, before
                            // `shutdown` returns, so that a monitor started next (in this
                            // process or another) continues the same journal rather than
                            // finding it held and starting a sibling.
                            drop(run.journal.take());
                            let _ = reply.send(());
                            return;
                        }
                        let _ = reply.send(());
                    }
                    None => return,
                },
                () = tokio::time::sleep(until) => {}
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
                Ok(event) => {
                    if let Some(noted) = noted(&event) {
                        run.notes.take(noted);
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
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
        run.notes
            .receipt(&mut run.receipt_noted, view.verdict().receipt_seq);
        let notes = if close {
            run.notes.close()
        } else {
            run.notes.checkpoint()
        };
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
                run.notes.add("write_failed");
            }
        }
    }

    /// `license.limit_exceeded` for each metric over its limit, at most once per check
    /// interval each; and the values the metrics show.
    fn check_limits(&mut self, run: &mut Run, view: &View, mono: Duration) {
        let verdict = view.verdict();
        let bases = counter_bases(&run.month_totals, &run.recorded);
        let usage = self.registry.current(&bases);
        view.stats().set_counter_bases(bases);
        for over in run
            .alerts
            .check(usage, |name| verdict.limit(name), mono, self.check_interval)
        {
            self.reporter.emit(LicenseEvent::LimitExceeded {
                name: over.name,
                usage: over.usage,
                limit: over.limit,
            });
        }
    }
}
