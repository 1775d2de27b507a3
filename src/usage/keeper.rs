//! Keeping the usage journal: opening and claiming it (repairing a torn end, taking in a
//! checkpoint), appending records in order (waiting ones first, compacting old hours),
//! and keeping the hour so far beside it. The file I/O of the usage task, run off the
//! async workers.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ed25519_dalek::SigningKey;

use super::journal::{self, DAILY_DAYS, HOURLY_DAYS, MAX_JOURNAL_BYTES, Record, Span};
use super::month_of;
use crate::clock::escape_control;
use crate::files::shown;

/// The journal as this process keeps it.
pub(super) struct Journal {
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
pub(super) struct Opened {
    pub(super) journal: Journal,
    pub(super) problems: Vec<(&'static str, String)>,
    pub(super) notes: Vec<String>,
    /// Counter totals of this month's records, by name.
    pub(super) month_totals: BTreeMap<String, u64>,
}

pub(super) fn open(base: PathBuf, month: String) -> Result<Opened, String> {
    let (path, lock) = journal::claim(&base)?;
    let shown_path = shown(&path);
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    if let Some(kind) = journal::network_filesystem(&lock) {
        problems.push((
            "network_filesystem",
            format!(
                "{shown_path} is on {kind}: its lock may not hold across machines, and two \
                 processes sharing the journal would break its chain; keep it on a local \
                 disk, or give each replica a path of its own"
            ),
        ));
    }
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
                journal.pending[0].note("write_failed");
                return Err(e);
            }
        }
    }
    Ok(problems)
}

/// The records waiting and `current` (the hour so far), chained on from the journal's
/// head and signed as they would be written, kept beside the journal.
pub(super) fn store_checkpoint(journal: &Journal, mut current: Record) -> Result<(), String> {
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
pub(super) fn write(
    journal: &mut Journal,
    mut record: Record,
) -> Result<Vec<(&'static str, String)>, String> {
    record.boot = journal.boot;
    if journal.pending.len() >= MAX_PENDING
        && let Some(newest) = journal.pending.last_mut()
    {
        // (A record that waited longest takes in the next: a disk full for a month.)
        newest.take_in(record);
    } else {
        journal.pending.push(record);
    }
    let problems = flush_pending(journal)?;
    // The hour is written: its checkpoint is no longer needed (one left behind by a
    // kill in between is recognised as written at the next start).
    let _ = std::fs::remove_file(journal::checkpoint_path(&journal.path));
    Ok(problems)
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
