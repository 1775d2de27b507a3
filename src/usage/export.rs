//! The customer's export of a usage journal: the [`Report`] (every record, and a stamp
//! signed with the instance key), reading it back, and [`export`]/[`export_all`].

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use serde::{Deserialize, Serialize};

use super::journal::{self, MAX_JOURNAL_BYTES, Record, encode_key, key_path};
use crate::files::shown;

/// The `format` of a report.
pub const REPORT_FORMAT: &str = "iosetu-usage-report";
const STAMP_DOMAIN: &[u8] = b"iosetu-usage-export-v1\n";

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
    /// The bytes the stamp signs.
    pub(super) fn stamp_bytes(&self) -> Vec<u8> {
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
    match crate::files::guarded(std::fs::OpenOptions::new().read(true).write(true)).open(&lock) {
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
