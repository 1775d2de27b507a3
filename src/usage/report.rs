//! The customer's export of a usage journal, and the vendor's verification and true-up.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use serde::{Deserialize, Serialize};

use super::journal::{
    self, GENESIS, MAX_JOURNAL_BYTES, Record, Span, decode_key, encode_key, key_path,
};
use super::month_of;
use crate::clock::rfc3339;
use crate::source::shown;

/// The `format` of a report.
pub const REPORT_FORMAT: &str = "iosetu-usage-report";
const STAMP_DOMAIN: &[u8] = b"iosetu-usage-export-v1\n";
/// How far apart a record's end and the next one's start may be before it is a gap.
const GAP_SLACK: i64 = 120;
/// How far the machine's clock may read behind trusted time (a vendor's clock tolerance).
const CLOCK_SLACK: i64 = 300;

/// One instance's usage journal as the customer exports it
/// (`iosetu-license usage export`): every record, and a stamp signed with the instance
/// key saying when it was exported and which record was the last, so records cut off the
/// end before the export show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// [`REPORT_FORMAT`].
    pub format: String,
    /// The instance's current public key (base64url).
    pub key: String,
    /// When it was exported, by the machine's clock (seconds since the epoch).
    pub exported_at: i64,
    /// The last record's sequence number and link, as the journal had them.
    pub head_n: Option<u64>,
    /// See `head_n`.
    pub head_link: Option<String>,
    /// The journal ended in a record cut short (left out).
    pub torn: bool,
    /// Lines of the journal that were not records (left out).
    pub damaged_lines: u64,
    /// The stamp's signature over the fields above.
    pub sig: String,
    /// The records, oldest first.
    pub records: Vec<Record>,
}

#[derive(Serialize)]
struct Stamp<'a> {
    format: &'a str,
    key: &'a str,
    exported_at: i64,
    head_n: Option<u64>,
    head_link: Option<&'a str>,
    torn: bool,
    damaged_lines: u64,
    records: usize,
}

impl Report {
    fn stamp_bytes(&self) -> Vec<u8> {
        let stamp = Stamp {
            format: &self.format,
            key: &self.key,
            exported_at: self.exported_at,
            head_n: self.head_n,
            head_link: self.head_link.as_deref(),
            torn: self.torn,
            damaged_lines: self.damaged_lines,
            records: self.records.len(),
        };
        let mut bytes = STAMP_DOMAIN.to_vec();
        bytes.extend(serde_json::to_vec(&stamp).unwrap_or_default());
        bytes
    }

    /// Reads and parses a report file (at most 256 MiB, no FIFO followed), as `usage
    /// verify` does.
    pub fn read(path: &Path) -> Result<Self, ExportError> {
        let bytes = journal::read_bounded(path, 256 * 1024 * 1024)
            .map_err(|e| ExportError::Unreadable(format!("{}: {e}", shown(path))))?
            .ok_or_else(|| ExportError::Missing(format!("{} does not exist", shown(path))))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ExportError::Corrupt(format!("{}: not UTF-8 text", shown(path))))?;
        Self::from_json(&text)
    }

    /// Reads a file of reports, as `usage export` writes them: one report, or a JSON array
    /// of them (one per journal of a set).
    pub fn read_all(path: &Path) -> Result<Vec<Self>, ExportError> {
        let bytes = journal::read_bounded(path, 256 * 1024 * 1024)
            .map_err(|e| ExportError::Unreadable(format!("{}: {e}", shown(path))))?
            .ok_or_else(|| ExportError::Missing(format!("{} does not exist", shown(path))))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ExportError::Corrupt(format!("{}: not UTF-8 text", shown(path))))?;
        if !text.trim_start().starts_with('[') {
            return Self::from_json(&text).map(|r| vec![r]);
        }
        let values: Vec<serde_json::Value> = serde_json::from_str(&text)
            .map_err(|e| ExportError::Corrupt(format!("not usage reports: {e}")))?;
        values
            .into_iter()
            .map(|v| Self::from_json(&v.to_string()))
            .collect()
    }

    /// Parses a report (JSON), as `usage verify` reads it.
    pub fn from_json(text: &str) -> Result<Self, ExportError> {
        let report: Report = serde_json::from_str(text)
            .map_err(|e| ExportError::Corrupt(format!("not a usage report: {e}")))?;
        if report.format != REPORT_FORMAT {
            return Err(ExportError::Corrupt(format!(
                "not a usage report (format {:?})",
                report.format
            )));
        }
        Ok(report)
    }

    /// The report as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Why a journal could not be exported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The journal (or its key) is not there.
    #[error("{0}")]
    Missing(String),
    /// It could not be read.
    #[error("{0}")]
    Unreadable(String),
    /// It is not a journal (or a report) of ours.
    #[error("{0}")]
    Corrupt(String),
}

impl ExportError {
    /// A stable reason code: `missing`, `unreadable`, `corrupt`.
    pub fn reason(&self) -> &'static str {
        match self {
            ExportError::Missing(_) => "missing",
            ExportError::Unreadable(_) => "unreadable",
            ExportError::Corrupt(_) => "corrupt",
        }
    }
}

/// Exports the journal at `path` (with its key, `<path>.key`) as a [`Report`] stamped
/// at `now`. A torn last record or damaged lines are left out and said so in the report;
/// the export itself never changes the journal. Where no running process holds the
/// journal, the hour its last process had so far when it died (its checkpoint) is
/// included, as that journal's next start would write it.
pub fn export(path: &Path, now: std::time::SystemTime) -> Result<Report, ExportError> {
    let bytes = match journal::read_bounded(path, MAX_JOURNAL_BYTES)
        .map_err(|e| ExportError::Unreadable(format!("{}: {e}", shown(path))))?
    {
        Some(bytes) => bytes,
        // A process that died before its first hour ended left only its checkpoint.
        None if journal::checkpoint_path(path).exists() => Vec::new(),
        None => {
            return Err(ExportError::Missing(format!(
                "{} does not exist",
                shown(path)
            )));
        }
    };
    let key_file = key_path(path);
    let key = journal::load_key(&key_file)
        .map_err(ExportError::Corrupt)?
        .ok_or_else(|| {
            ExportError::Missing(format!(
                "{} does not exist: the instance key is made at the first start",
                shown(&key_file)
            ))
        })?;
    let mut parsed = journal::parse(&bytes);
    // The hour a process killed before its end had so far, sealed in its checkpoint: its
    // journal's next start would write it; a journal no process holds now (a sibling of
    // the set only used while two ran at once) may never start again.
    if !held(path) {
        let head = parsed.records.last().map(|r| (r.last_n(), r.link()));
        if let Some(more) =
            journal::read_checkpoint(path, head.as_ref(), &key.verifying_key(), false)
        {
            parsed.records.extend(more);
        }
    }
    let last = parsed.records.last();
    let mut report = Report {
        format: REPORT_FORMAT.to_owned(),
        key: encode_key(&key.verifying_key()),
        exported_at: crate::clock::unix_seconds(now),
        head_n: last.map(Record::last_n),
        head_link: last.map(Record::link),
        torn: parsed.torn,
        damaged_lines: parsed.bad_lines.len() as u64,
        sig: String::new(),
        records: parsed.records,
    };
    report.sig = URL_SAFE_NO_PAD.encode(key.sign(&report.stamp_bytes()).to_bytes());
    Ok(report)
}

/// Whether a running process holds the journal at `path` (its lock is taken).
fn held(path: &Path) -> bool {
    let lock = journal::lock_path(path);
    match crate::state::guarded(std::fs::OpenOptions::new().read(true).write(true)).open(&lock) {
        Ok(file) => matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

/// Exports every journal of the set at `path` (`path`, then `path.1`, `path.2`, ...: one
/// per process that ran at once on it, see
/// [`usage_journal`](crate::LicenseMonitorBuilder::usage_journal)), each as a [`Report`].
pub fn export_all(path: &Path, now: std::time::SystemTime) -> Result<Vec<Report>, ExportError> {
    let members = journal::members(path);
    if members.is_empty() {
        return Err(ExportError::Missing(format!(
            "{} does not exist",
            shown(path)
        )));
    }
    members.iter().map(|member| export(member, now)).collect()
}

/// What `verify` found wrong, or worth the vendor's attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FindingKind {
    /// A record's signature does not verify: edited, or taken from another journal.
    Signature,
    /// A record's `prev` is not the link of the record before: deleted, moved or spliced.
    Chain,
    /// Sequence numbers skip or repeat.
    Sequence,
    /// The export stamp does not match the records: records cut off the end.
    Truncated,
    /// The export stamp's signature does not verify: the report was edited after the
    /// export.
    Stamp,
    /// Lines of the journal were not records.
    Damaged,
    /// Trusted time went backwards between records (a clock wound back across a restart).
    ClockRollback,
    /// The machine's clock read well behind trusted time when a record was written.
    ClockBehind,
    /// Hours without records while one process ran.
    Gap,
    /// The instance made a new key (its key file was lost or replaced).
    KeyReplaced,
    /// The journal ended in a record cut short: a crash mid-write (the library drops it
    /// and says so in its next record), or a cut.
    Torn,
    /// The running service found its journal changed under it.
    ChangedUnderneath,
    /// The last record ends long before the export: the instance was stopped, or records
    /// at the end were removed.
    Quiet,
    /// A process stopped without closing its hour (killed, a power cut): its last
    /// checkpoint was recorded at the next start, and at most the minutes after it are
    /// lost.
    UncleanStop,
    /// A write of the journal failed (a full disk): the partial bytes were cut back and
    /// the record written later.
    WriteFailed,
    /// The chain forks: a journal restored from a backup, or a machine cloned with its
    /// journal. Both branches are counted.
    Fork,
    /// Trusted time stepped back by a correction the monitor judged honest (NTP
    /// correcting a drifted clock, or a clock wrong at boot), within what it noted.
    ClockCorrected,
    /// Hours inside the reported span with no process running: the service was stopped,
    /// or records were cut off while it was.
    Downtime,
    /// The highest vendor notice `seq`, or the count of revocations, went back between
    /// records: a notice deleted from the source with the state file rolled back (a
    /// revocation undone).
    NoticeRollback,
    /// (With a ledger.) An instance the vendor's ledger knows from earlier reports is in
    /// none of these.
    MissingInstance,
    /// (With a ledger.) An instance key the ledger has not seen before: a new instance,
    /// or one that had to make a new key.
    NewKey,
    /// (With a ledger.) A head the vendor receipted is not in the instance's report: the
    /// journal was cut or rewritten below what was already accepted.
    ReceiptCut,
}

/// What a finding means for the customer: [`verify`] sorts each into one of three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FindingClass {
    /// The journal as reported cannot be what the library wrote, or the monitor judged
    /// its clock manipulated. `usage verify` exits 1.
    Tampering,
    /// An honest fault the library noted or the records explain: a crash, a failed
    /// write, a restore or a clone, a clock correction. Noted; nothing is lost beyond
    /// what the finding says.
    Fault,
    /// Time the reports cannot account for: the service stopped, or records missing
    /// while it was. The vendor may ask.
    Unknown,
}

impl FindingClass {
    /// A stable code: `tampering`, `fault`, `unknown`.
    pub fn code(self) -> &'static str {
        match self {
            FindingClass::Tampering => "tampering",
            FindingClass::Fault => "fault",
            FindingClass::Unknown => "unknown",
        }
    }
}

impl FindingKind {
    /// A stable code (`signature`, `chain`, ...).
    pub fn code(self) -> &'static str {
        match self {
            FindingKind::Signature => "signature",
            FindingKind::Chain => "chain",
            FindingKind::Sequence => "sequence",
            FindingKind::Truncated => "truncated",
            FindingKind::Stamp => "stamp",
            FindingKind::Damaged => "damaged",
            FindingKind::ClockRollback => "clock_rollback",
            FindingKind::ClockBehind => "clock_behind",
            FindingKind::Gap => "gap",
            FindingKind::KeyReplaced => "key_replaced",
            FindingKind::Torn => "torn",
            FindingKind::ChangedUnderneath => "changed_underneath",
            FindingKind::Quiet => "quiet",
            FindingKind::UncleanStop => "unclean_stop",
            FindingKind::WriteFailed => "write_failed",
            FindingKind::Fork => "fork",
            FindingKind::ClockCorrected => "clock_corrected",
            FindingKind::Downtime => "downtime",
            FindingKind::NoticeRollback => "notice_rollback",
            FindingKind::MissingInstance => "missing_instance",
            FindingKind::NewKey => "new_key",
            FindingKind::ReceiptCut => "receipt_cut",
        }
    }

    /// Its class: tampering, an honest fault, or time unaccounted for.
    pub fn class(self) -> FindingClass {
        match self {
            FindingKind::Signature
            | FindingKind::Chain
            | FindingKind::Sequence
            | FindingKind::Truncated
            | FindingKind::Stamp
            | FindingKind::Damaged
            | FindingKind::ChangedUnderneath
            | FindingKind::ClockRollback
            | FindingKind::NoticeRollback
            | FindingKind::ReceiptCut => FindingClass::Tampering,
            FindingKind::Torn
            | FindingKind::KeyReplaced
            | FindingKind::UncleanStop
            | FindingKind::WriteFailed
            | FindingKind::Fork
            | FindingKind::ClockCorrected
            | FindingKind::ClockBehind
            | FindingKind::NewKey => FindingClass::Fault,
            FindingKind::Gap
            | FindingKind::Quiet
            | FindingKind::Downtime
            | FindingKind::MissingInstance => FindingClass::Unknown,
        }
    }

    /// Whether it is of class [`FindingClass::Tampering`].
    pub fn is_tampering(self) -> bool {
        self.class() == FindingClass::Tampering
    }

    /// Whether it is about the machine's clock: wound back across a restart, behind
    /// trusted time while the service ran, or corrected.
    pub fn is_clock(self) -> bool {
        matches!(
            self,
            FindingKind::ClockRollback | FindingKind::ClockBehind | FindingKind::ClockCorrected
        )
    }
}

/// One finding of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The instance (the first 12 characters of its key).
    pub instance: String,
    /// What.
    pub kind: FindingKind,
    /// The record's sequence number, where one is concerned.
    pub n: Option<u64>,
    /// In words.
    pub detail: String,
}

/// One instance in a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSummary {
    /// The first 12 characters of its key.
    pub instance: String,
    /// Its reports given.
    pub reports: usize,
    /// Records in its latest report.
    pub records: usize,
    /// The first record's start and the last one's end (trusted time).
    pub first: Option<i64>,
    /// See `first`.
    pub last: Option<i64>,
    /// Times it started.
    pub starts: u64,
}

/// One row of the true-up table: a metric's peak (gauges, summed over instances hour by
/// hour) or total (counters) in a month, against the largest limit in force then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrueUpRow {
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// The metric.
    pub metric: String,
    /// `peak` or `total`.
    pub measure: &'static str,
    /// The value.
    pub value: u64,
    /// The limit in force in the hour of the peak (gauges) or at the month's last hour
    /// with records (counters): `limits.<metric>` of a license in force then,
    /// `max_instances` for `iosetu_replicas`; `None` where no license limits it.
    pub limit: Option<u64>,
    /// Gauges: the sum over instances of each one's own peak that month, beside `value`
    /// (the peak of the hourly sum): an upper bound where instances' hours do not line
    /// up. `None` for counters.
    pub instance_peaks: Option<u64>,
    /// Hours of the month whose value (gauges: the hour's sum; counters: the month's
    /// total so far) exceeded the limit in force in that hour.
    pub over_hours: u64,
}

impl TrueUpRow {
    /// Whether any hour of the month was over the limit in force in it.
    pub fn over(&self) -> bool {
        self.over_hours > 0
    }
}

/// What [`verify`] concluded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verification {
    /// Each instance.
    pub instances: Vec<InstanceSummary>,
    /// Everything found, tampering or not.
    pub findings: Vec<Finding>,
    /// The true-up table, by month then metric.
    pub true_up: Vec<TrueUpRow>,
}

impl Verification {
    /// Whether no finding is of class [`FindingClass::Tampering`]: what `usage verify`'s
    /// exit code says.
    pub fn intact(&self) -> bool {
        !self.findings.iter().any(|f| f.kind.is_tampering())
    }

    /// Whether no finding shows a clock wound back that the monitor did not judge an
    /// honest correction.
    pub fn clocks_ok(&self) -> bool {
        !self
            .findings
            .iter()
            .any(|f| f.kind.is_clock() && f.kind.is_tampering())
    }

    /// The true-up table as text.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<8} {:<28} {:<6} {:>12} {:>12} {:>10}  over\n",
            "month", "metric", "", "value", "instances", "limit"
        );
        for row in &self.true_up {
            let shown = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            let _ = writeln!(
                out,
                "{:<8} {:<28} {:<6} {:>12} {:>12} {:>10}  {}",
                row.month,
                row.metric,
                row.measure,
                row.value,
                shown(row.instance_peaks),
                shown(row.limit),
                if row.over() {
                    format!("OVER ({} h)", row.over_hours)
                } else {
                    String::new()
                }
            );
        }
        out
    }

    /// The true-up table as CSV
    /// (`month,metric,measure,value,limit,over,instance_peaks,over_hours`).
    pub fn csv(&self) -> String {
        let mut out =
            String::from("month,metric,measure,value,limit,over,instance_peaks,over_hours\n");
        for row in &self.true_up {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{}",
                row.month,
                row.metric,
                row.measure,
                row.value,
                row.limit.map_or_else(String::new, |l| l.to_string()),
                row.over(),
                row.instance_peaks
                    .map_or_else(String::new, |l| l.to_string()),
                row.over_hours
            );
        }
        out
    }
}

/// Seconds of steps back the monitor judged corrections in a record's period
/// (`clock_corrected:<seconds>`).
fn corrected(record: &Record) -> i64 {
    record
        .notes
        .iter()
        .filter_map(|n| n.strip_prefix("clock_corrected:"))
        .filter_map(|v| v.parse::<i64>().ok())
        .map(|v| v.clamp(0, i64::from(u32::MAX)))
        .sum()
}

/// Seconds a vendor's attestation in a record's period moved trusted time back
/// (`clock_attested:<seq>:<seconds>`), counting only attestations not seen in an earlier
/// record (`seen`): one replayed after the state file was deleted excuses nothing. `None`
/// where the record notes no attestation first seen there. A note of an older library without the amount excuses an hour, the most
/// DESIGN lets a replayed attestation gain.
fn attested(record: &Record, seen: &mut Vec<String>) -> Option<i64> {
    let mut total = None;
    for note in &record.notes {
        let (id, amount) = if note == "clock_attested" {
            (format!("legacy@{}", record.n), 3600)
        } else if let Some(rest) = note.strip_prefix("clock_attested:") {
            let Some((seq, secs)) = rest.split_once(':') else {
                continue;
            };
            let Ok(secs) = secs.parse::<i64>() else {
                continue;
            };
            (seq.to_owned(), secs.clamp(0, i64::from(u32::MAX)))
        } else {
            continue;
        };
        if !seen.contains(&id) {
            seen.push(id);
            total = Some(total.unwrap_or(0) + amount);
        }
    }
    total
}

fn seconds(secs: i64) -> humantime::FormattedDuration {
    humantime::format_duration(std::time::Duration::from_secs(secs.unsigned_abs()))
}

fn short(key: &str) -> String {
    key.chars().take(12).collect()
}

/// Verifies one or several instances' reports (several reports of one instance, from
/// successive months, are checked against each other) and builds the true-up table.
pub fn verify(reports: &[Report]) -> Verification {
    let mut out = Verification::default();
    let mut by_key: BTreeMap<&str, Vec<&Report>> = BTreeMap::new();
    for report in reports {
        by_key.entry(report.key.as_str()).or_default().push(report);
    }
    // What the true-up counts: each instance's records, and each branch of a fork as an
    // instance of its own (a clone ran beside the original; a restore's lost branch ran
    // before it).
    let mut counted: Vec<Vec<&Record>> = Vec::new();
    for (key, mut reports) in by_key {
        reports.sort_by_key(|r| (r.exported_at, r.head_n));
        let instance = short(key);
        for report in &reports {
            check_report(report, &instance, &mut out.findings);
        }
        // (A key group is never empty.)
        let Some(latest) = reports.last() else {
            continue;
        };
        let mut branches: Vec<Vec<&Record>> = vec![latest.records.iter().collect()];
        for earlier in reports.iter().rev().skip(1) {
            let extra: Vec<&Record> = earlier
                .records
                .iter()
                .filter(|r| !branches.iter().flatten().any(|c| holds(c, r)))
                .collect();
            let Some(first) = extra.first() else {
                continue;
            };
            out.findings.push(Finding {
                instance: instance.clone(),
                kind: FindingKind::Fork,
                n: Some(first.n),
                detail: format!(
                    "the report exported at {} holds {} record(s) from record {} on that \
                     the one exported at {} does not: the journal was restored from a backup, \
                     or the machine cloned with it; both branches are counted",
                    rfc3339(earlier.exported_at),
                    extra.len(),
                    first.n,
                    rfc3339(latest.exported_at)
                ),
            });
            branches.push(extra);
        }
        downtime(&branches[0], &instance, &mut out.findings);
        let all: Vec<&Record> = branches.iter().flatten().copied().collect();
        out.instances.push(InstanceSummary {
            instance,
            reports: reports.len(),
            records: all.len(),
            first: all.iter().map(|r| r.start).min(),
            last: all.iter().map(|r| r.end).max(),
            starts: all.iter().map(|r| r.boot + 1).max().unwrap_or(0),
        });
        counted.extend(branches);
    }
    out.true_up = true_up(&counted);
    out
}

/// Whether `counted` is `record`, or a daily record that folded it in.
fn holds(counted: &Record, record: &Record) -> bool {
    match (counted.span, record.span) {
        (Span::Hour, _) | (Span::Day, Span::Day) => {
            counted.n == record.n && counted.link() == record.link()
        }
        (Span::Day, Span::Hour) => {
            counted.n <= record.n
                && record.n <= counted.last_n()
                && counted.start.div_euclid(86_400) == record.start.div_euclid(86_400)
        }
    }
}

/// The least stop between two processes reported as downtime: restarts shorter than
/// this are a deployment, not time the vendor need ask about.
const DOWNTIME_MIN: i64 = 15 * 60;

/// Stretches with no process running between a record and the next, by a different
/// process: the service was stopped, or records cut off while it was.
fn downtime(records: &[&Record], instance: &str, findings: &mut Vec<Finding>) {
    for pair in records.windows(2) {
        let (before, after) = (pair[0], pair[1]);
        let stopped = after.start - before.end;
        if after.boot != before.boot && stopped > DOWNTIME_MIN {
            findings.push(Finding {
                instance: instance.to_owned(),
                kind: FindingKind::Downtime,
                n: Some(after.n),
                detail: format!(
                    "no process ran from {} to {} ({}): the service was stopped, or records \
                     of that time were removed while it was",
                    rfc3339(before.end),
                    rfc3339(after.start),
                    seconds(stopped)
                ),
            });
        }
    }
}

fn check_report(report: &Report, instance: &str, findings: &mut Vec<Finding>) {
    let mut find = |kind, n, detail: String| {
        findings.push(Finding {
            instance: instance.to_owned(),
            kind,
            n,
            detail,
        });
    };
    // The stamp.
    let stamp_ok = decode_key(&report.key).is_some_and(|key| {
        URL_SAFE_NO_PAD
            .decode(&report.sig)
            .ok()
            .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
            .is_some_and(|sig| key.verify_strict(&report.stamp_bytes(), &sig).is_ok())
    });
    if !stamp_ok {
        find(
            FindingKind::Stamp,
            None,
            "the export stamp's signature does not verify: the report was edited".into(),
        );
    }
    let last = report.records.last();
    if last.map(Record::last_n) != report.head_n || last.map(Record::link) != report.head_link {
        find(
            FindingKind::Truncated,
            report.head_n,
            format!(
                "the export stamp names record {:?}, the report ends at {:?}: records were \
                 cut off the end",
                report.head_n,
                last.map(Record::last_n)
            ),
        );
    }
    if report.torn {
        find(
            FindingKind::Torn,
            None,
            "the journal ended in a record cut short (left out)".into(),
        );
    }
    if report.damaged_lines > 0 {
        find(
            FindingKind::Damaged,
            None,
            format!(
                "{} lines of the journal are not records",
                report.damaged_lines
            ),
        );
    }
    let mut key = None;
    let mut previous: Option<&Record> = None;
    // The attestations seen so far: each excuses a step back at the record that first
    // notes it (or the next), once.
    let mut attestations: Vec<String> = Vec::new();
    let mut fresh_before = 0;
    // The last record that notes an attestation first seen there: a verdict of
    // manipulation before it was vouched for.
    let attested_from = {
        let mut seen = Vec::new();
        report
            .records
            .iter()
            .enumerate()
            .filter(|(_, r)| attested(r, &mut seen).is_some())
            .map(|(i, _)| i)
            .next_back()
    };
    for (i, record) in report.records.iter().enumerate() {
        let n = Some(record.n);
        let fresh = attested(record, &mut attestations).unwrap_or(0);
        if let Some(declared) = &record.key {
            if let Some((current, _)) = &key
                && current != declared
            {
                find(
                    FindingKind::KeyReplaced,
                    n,
                    "the instance made a new key (its key file was lost or replaced)".into(),
                );
            }
            key = decode_key(declared).map(|k| (declared.clone(), k));
        }
        match &key {
            Some((_, k)) if record.verify_signature(k) => {}
            Some(_) => find(
                FindingKind::Signature,
                n,
                "the signature does not verify: edited or from another journal".into(),
            ),
            None => find(
                FindingKind::Signature,
                n,
                "no key before this record to verify it with".into(),
            ),
        }
        for note in &record.notes {
            match note.as_str() {
                "journal_changed" => find(
                    FindingKind::ChangedUnderneath,
                    n,
                    "the running service found its journal changed under it".into(),
                ),
                "torn_record_dropped" => find(
                    FindingKind::Torn,
                    n,
                    "a record cut short (a crash mid-write) was dropped before this one".into(),
                ),
                // A vendor's attestation later in the journal is the remedy for a verdict
                // of manipulation the rules could not tell from tampering: it vouched for
                // the time.
                "clock_set_back" if attested_from.is_some_and(|at| at >= i) => find(
                    FindingKind::ClockCorrected,
                    n,
                    "the monitor judged its clock set back; a vendor's attestation of real \
                     time came after"
                        .into(),
                ),
                "clock_set_back" => find(
                    FindingKind::ClockRollback,
                    n,
                    "the monitor judged its clock set back (manipulation, not a correction)".into(),
                ),
                "unclean_stop" => find(
                    FindingKind::UncleanStop,
                    n,
                    "the process stopped without closing its hour (killed, a power cut): \
                     recorded from its last checkpoint; the minutes after it are lost"
                        .into(),
                ),
                "write_failed" => find(
                    FindingKind::WriteFailed,
                    n,
                    "a write of the journal failed (a full disk?): its bytes were cut back \
                     and the records written with this one"
                        .into(),
                ),
                _ => {}
            }
        }
        if record.wall < record.watermark - CLOCK_SLACK {
            find(
                FindingKind::ClockBehind,
                n,
                format!(
                    "the machine's clock read {} behind trusted time",
                    humantime::format_duration(std::time::Duration::from_secs(
                        (record.watermark - record.wall).unsigned_abs()
                    ))
                ),
            );
        }
        match previous {
            None => {
                if record.n != 0 && record.span == Span::Hour
                    || record.n == 0 && record.prev != GENESIS
                {
                    find(
                        FindingKind::Chain,
                        n,
                        format!(
                            "the journal starts at record {}: earlier ones are missing",
                            record.n
                        ),
                    );
                }
            }
            Some(before) => {
                if record.n != before.last_n().saturating_add(1) {
                    find(
                        FindingKind::Sequence,
                        n,
                        format!("record {} follows record {}", record.n, before.last_n()),
                    );
                }
                if record.prev != before.link() {
                    find(
                        FindingKind::Chain,
                        n,
                        "its prev is not the link of the record before: records deleted, \
                         moved or spliced"
                            .into(),
                    );
                }
                // How far trusted time went back between the two, and what the monitor
                // noted to explain it (the note lands on the record closed when the
                // service saw the event: the one at the step back, or the one before).
                let back = before.watermark.max(before.end) - record.start.min(record.watermark);
                if record.watermark < before.watermark || back > GAP_SLACK {
                    let corrected: i64 = [before, record].iter().map(|r| corrected(r)).sum();
                    let attested = fresh_before + fresh;
                    if back <= corrected + attested + GAP_SLACK {
                        if corrected > 0 {
                            find(
                                FindingKind::ClockCorrected,
                                n,
                                format!(
                                    "trusted time stepped back {}, a correction the monitor \
                                     judged honest (it noted {corrected} s)",
                                    seconds(back)
                                ),
                            );
                        }
                    } else {
                        find(
                            FindingKind::ClockRollback,
                            n,
                            format!(
                                "trusted time went back from {} to {} ({}), more than the \
                                 monitor noted as corrected ({corrected} s) or attested \
                                 ({attested} s)",
                                rfc3339(before.watermark.max(before.end)),
                                rfc3339(record.start.min(record.watermark)),
                                seconds(back)
                            ),
                        );
                    }
                }
                // (Notice numbers are per customer: a renewal under a new name starts
                // its own.)
                let customer = |r: &Record| r.licenses.first().map(|l| l.customer.clone());
                if customer(record) == customer(before)
                    && (record.notice_seq < before.notice_seq
                        || record.revocations < before.revocations)
                {
                    find(
                        FindingKind::NoticeRollback,
                        n,
                        format!(
                            "vendor notices went back from seq {:?} ({} revocations) to {:?} \
                             ({}): a notice removed and the state file rolled back",
                            before.notice_seq,
                            before.revocations,
                            record.notice_seq,
                            record.revocations
                        ),
                    );
                }
                let gap = record.start - before.end;
                if gap > 3600 + GAP_SLACK && record.boot == before.boot {
                    find(
                        FindingKind::Gap,
                        n,
                        format!(
                            "{} without records while one process ran",
                            humantime::format_duration(std::time::Duration::from_secs(
                                gap.unsigned_abs()
                            ))
                        ),
                    );
                }
            }
        }
        previous = Some(record);
        fresh_before = fresh;
    }
    if let Some(last) = last
        && report.exported_at - last.end > 2 * 3600
    {
        find(
            FindingKind::Quiet,
            Some(last.last_n()),
            format!(
                "the last record ends {} before the export: the instance was stopped, or \
                 records at the end were removed",
                humantime::format_duration(std::time::Duration::from_secs(
                    (report.exported_at - last.end).unsigned_abs()
                ))
            ),
        );
    }
}

/// The true-up table over each instance's records (each branch of a fork an instance).
///
/// Gauges: per hour, each instance's peak in that hour summed over instances; the month's
/// row is the largest such sum, beside the sum of each instance's own peak that month (an
/// upper bound where instances' hours do not line up: clocks an hour apart, restarts).
/// Counters: the month's total. Each hour is compared with the limit in force in that
/// hour (the largest of the licenses whose `exp` had not passed, as the monitor takes
/// it), so a trial's higher limit never covers the hours after it.
fn true_up(instances: &[Vec<&Record>]) -> Vec<TrueUpRow> {
    type Hours<'a> = BTreeMap<i64, BTreeMap<&'a str, u64>>;
    let mut sums: Hours<'_> = BTreeMap::new();
    let mut limits: BTreeMap<i64, BTreeMap<String, u64>> = BTreeMap::new();
    let mut counts: Hours<'_> = BTreeMap::new();
    for records in instances {
        let mut own: Hours<'_> = BTreeMap::new();
        for record in records {
            let first = record.start.div_euclid(3600);
            let hours = match record.span {
                Span::Hour => first..first + 1,
                Span::Day => first..first + 24,
            };
            for hour in hours.clone() {
                let in_force = limits.entry(hour).or_default();
                for license in record.licenses.iter().filter(|l| l.exp > hour * 3600) {
                    let named = license.limits.iter().map(|(k, v)| (k.clone(), *v));
                    let replicas = license
                        .max_instances
                        .map(|m| (super::REPLICAS.to_owned(), m));
                    for (name, limit) in named.chain(replicas) {
                        let e = in_force.entry(name).or_insert(limit);
                        *e = (*e).max(limit);
                    }
                }
                for (name, &peak) in &record.gauges {
                    let e = own
                        .entry(hour)
                        .or_default()
                        .entry(name.as_str())
                        .or_default();
                    *e = (*e).max(peak);
                }
            }
            for (name, &total) in &record.counters {
                let e = counts
                    .entry(first)
                    .or_default()
                    .entry(name.as_str())
                    .or_default();
                *e = e.saturating_add(total);
            }
        }
        for (hour, peaks) in own {
            for (name, peak) in peaks {
                let e = sums.entry(hour).or_default().entry(name).or_default();
                *e = e.saturating_add(peak);
            }
        }
    }
    let mut instance_peaks: BTreeMap<(String, &str), u64> = BTreeMap::new();
    for records in instances {
        let mut own: BTreeMap<(String, &str), u64> = BTreeMap::new();
        for record in records {
            for (name, &peak) in &record.gauges {
                let e = own
                    .entry((month_of(record.start), name.as_str()))
                    .or_default();
                *e = (*e).max(peak);
            }
        }
        for (key, peak) in own {
            let e = instance_peaks.entry(key).or_default();
            *e = e.saturating_add(peak);
        }
    }
    let limit_at = |hour: i64, name: &str| limits.get(&hour).and_then(|l| l.get(name)).copied();
    let mut rows: BTreeMap<(String, String), TrueUpRow> = BTreeMap::new();
    for (hour, hour_sums) in &sums {
        let month = month_of(hour * 3600);
        for (&name, &sum) in hour_sums {
            let limit = limit_at(*hour, name);
            let row = rows
                .entry((month.clone(), name.to_owned()))
                .or_insert_with(|| TrueUpRow {
                    month: month.clone(),
                    metric: name.to_owned(),
                    measure: "peak",
                    value: 0,
                    limit: None,
                    instance_peaks: instance_peaks.get(&(month.clone(), name)).copied(),
                    over_hours: 0,
                });
            if sum > row.value || row.limit.is_none() && sum == row.value {
                row.value = sum;
                row.limit = limit;
            }
            if limit.is_some_and(|l| sum > l) {
                row.over_hours += 1;
            }
        }
    }
    // Counters: the month's total so far, hour by hour, against the limit in force then.
    for (hour, hour_counts) in &counts {
        let month = month_of(hour * 3600);
        for (&name, &count) in hour_counts {
            let row = rows
                .entry((month.clone(), name.to_owned()))
                .or_insert_with(|| TrueUpRow {
                    month: month.clone(),
                    metric: name.to_owned(),
                    measure: "total",
                    value: 0,
                    limit: None,
                    instance_peaks: None,
                    over_hours: 0,
                });
            row.value = row.value.saturating_add(count);
            if let Some(limit) = limit_at(*hour, name) {
                row.limit = Some(limit);
                if row.value > limit {
                    row.over_hours += 1;
                }
            }
        }
    }
    rows.into_values().collect()
}
