//! The vendor's verification of usage reports ([`verify`]: chain, signatures, stamps,
//! gaps, clocks wound back, forks, downtime) and the true-up table.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::export::Report;
use super::journal::{GENESIS, Record, Span, decode_key};
use super::true_up::{TrueUpRow, true_up};
use crate::clock::rfc3339;

/// How far apart a record's end and the next one's start may be before it is a gap.
const GAP_SLACK: i64 = 120;
/// How far the machine's clock may read behind trusted time (a vendor's clock tolerance).
const CLOCK_SLACK: i64 = 300;

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
        // A record several reports hold (each month's export holds the journal so far) is
        // one record: what it shows is reported once, not once per report. Only a finding
        // that says exactly the same goes (a record quiet for 3 hours in one report and
        // for 30 days in the next is two findings; so are two findings of one kind on
        // one record that differ).
        let mut found: Vec<Finding> = Vec::new();
        for report in &reports {
            check_report(report, &instance, &mut found);
        }
        let mut seen = HashSet::new();
        for finding in found {
            if seen.insert((finding.kind, finding.n, finding.detail.clone())) {
                out.findings.push(finding);
            }
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
