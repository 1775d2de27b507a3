//! The usage journal on disk: JSON lines of [`Record`]s, hash-chained and signed with
//! the instance key, appended with an fsync, compacted to daily records after
//! [`HOURLY_DAYS`] days, written without following symlinks.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::files::{open_nonblocking, shown};

/// The record format's version.
pub(crate) const RECORD_VERSION: u32 = 1;
/// Hourly records are kept this many days; older ones are folded into one per day.
pub(crate) const HOURLY_DAYS: i64 = 400;
/// Daily records are kept this many days (ten years); older ones are dropped.
pub(crate) const DAILY_DAYS: i64 = 3660;
/// A journal is at most this large (400 days of hourly records and ten years of daily
/// ones are a few MiB); anything larger is not ours.
pub(crate) const MAX_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;
/// The longest record line.
pub(crate) const MAX_LINE_BYTES: usize = 64 * 1024;
/// The most licenses a record lists, notes it carries, and metrics it holds.
pub(crate) const MAX_LICENSES: usize = 64;
pub(crate) const MAX_NOTES: usize = 16;

/// Adds `note` to `notes` once, up to [`MAX_NOTES`]; whether it is there now.
pub(crate) fn add_note(notes: &mut Vec<String>, note: &str) -> bool {
    if notes.iter().any(|n| n == note) {
        return true;
    }
    if notes.len() >= MAX_NOTES {
        return false;
    }
    notes.push(note.to_owned());
    true
}
pub(crate) const MAX_NOTE_BYTES: usize = 256;
pub(crate) const MAX_RECORD_METRICS: usize = super::MAX_METRICS + 8;
/// The link before the first record.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// What a signature covers: this, then the record's canonical JSON without `sig`.
const DOMAIN: &[u8] = b"iosetu-usage-record-v1\n";

/// How long a record covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Span {
    /// One hour (or the part of it the process ran).
    Hour,
    /// One day: hourly records older than 400 days, folded into one.
    Day,
}

/// A license in force during a record's period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseInForce {
    /// Its `jti`, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Its customer.
    pub customer: String,
    /// Its `exp`, seconds since the epoch.
    pub exp: i64,
    /// Its `limits`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, u64>,
    /// Its `max_instances`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u64>,
}

/// One record of the usage journal: what one instance metered over one hour (or a day,
/// for records older than 400 days), signed by the instance.
///
/// Times are seconds since the epoch: `start` and `end` by the monitor's trusted time
/// (never earlier than what it has seen before), `wall` by the machine's clock when the
/// record was written. `n` counts records from the journal's first (a daily record covers
/// `n..=n_end`); `prev` is the link of the record before (the SHA-256 of its JSON, or for
/// a daily record its `last`), so a record deleted, moved or taken from another journal
/// breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The format version (1).
    pub v: u32,
    /// Its sequence number.
    pub n: u64,
    /// For a daily record, the last sequence number it covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_end: Option<u64>,
    /// Hour or day.
    pub span: Span,
    /// The instance's public key (base64url): in the journal's first record, and where
    /// the instance had to make a new key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The link of the record before (hex SHA-256), 64 zeros for the first.
    pub prev: String,
    /// For a daily record, the link of the last hourly record it folds in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    /// The period's start, by trusted time.
    pub start: i64,
    /// The period's end, by trusted time.
    pub end: i64,
    /// The trusted-time high-water mark when it was written.
    pub watermark: i64,
    /// The machine's wall clock when it was written.
    pub wall: i64,
    /// How many times the instance had started before the process that wrote it.
    pub boot: u64,
    /// Seconds the process that wrote it had run (monotonic).
    pub uptime: u64,
    /// The licenses in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub licenses: Vec<LicenseInForce>,
    /// Each gauge's peak over the period.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gauges: BTreeMap<String, u64>,
    /// Each counter's total over the period.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, u64>,
    /// The highest vendor notice `seq` the monitor had accepted, and how many licenses
    /// notices had revoked: a state file restored to undo a revocation shows as either
    /// going back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice_seq: Option<u64>,
    /// See `notice_seq`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revocations: u64,
    /// What the instance noticed (`torn_record_dropped`, `journal_changed`, `key_replaced`,
    /// `clock_attested:<seq>:<s>`, `clock_corrected:<s>`, `clock_set_back`,
    /// `unclean_stop`, `write_failed`, `receipt:<seq>`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The instance's Ed25519 signature (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

impl Record {
    /// Adds `note` once, up to [`MAX_NOTES`]; whether it is there now.
    pub(crate) fn note(&mut self, note: &str) -> bool {
        add_note(&mut self.notes, note)
    }

    /// Takes in the record of a later span (a day's next hour, an hour that waited for a
    /// full disk): the span reaches its end, gauges keep their peak, counters add up, and
    /// the licenses and notes of both are kept. The one rule for every record that
    /// stands for several.
    pub(crate) fn take_in(&mut self, later: Record) {
        self.end = self.end.max(later.end);
        self.watermark = self.watermark.max(later.watermark);
        self.wall = later.wall;
        self.boot = later.boot;
        self.uptime = later.uptime;
        if self.key.is_none() {
            self.key = later.key;
        }
        for license in later.licenses {
            if !self.licenses.contains(&license) && self.licenses.len() < MAX_LICENSES {
                self.licenses.push(license);
            }
        }
        for (name, v) in later.gauges {
            let e = self.gauges.entry(name).or_default();
            *e = (*e).max(v);
        }
        for (name, v) in later.counters {
            let e = self.counters.entry(name).or_default();
            *e = e.saturating_add(v);
        }
        for note in later.notes {
            self.note(&note);
        }
    }

    /// The JSON that is signed: the record without `sig`.
    fn signed_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.sig = None;
        let mut bytes = DOMAIN.to_vec();
        // (Serializing plain data to memory cannot fail.)
        bytes.extend(serde_json::to_vec(&unsigned).unwrap_or_default());
        bytes
    }

    /// The record as one line of the journal (without the newline).
    pub(crate) fn to_line(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The link the next record's `prev` must carry: the SHA-256 of this record's JSON
    /// (as written), or for a daily record the link of the last hourly one it folds in.
    pub fn link(&self) -> String {
        match (&self.span, &self.last) {
            (Span::Day, Some(last)) => last.clone(),
            _ => hex(&Sha256::digest(self.to_line())),
        }
    }

    /// The last sequence number it covers.
    pub fn last_n(&self) -> u64 {
        self.n_end.unwrap_or(self.n)
    }

    pub(crate) fn sign(&mut self, key: &SigningKey) {
        self.sig = None;
        let signature = key.sign(&self.signed_bytes());
        self.sig = Some(URL_SAFE_NO_PAD.encode(signature.to_bytes()));
    }

    /// Whether `key` signed it (strict Ed25519).
    pub fn verify_signature(&self, key: &VerifyingKey) -> bool {
        let Some(sig) = &self.sig else {
            return false;
        };
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(sig) else {
            return false;
        };
        let Ok(signature) = ed25519_dalek::Signature::from_slice(&bytes) else {
            return false;
        };
        key.verify_strict(&self.signed_bytes(), &signature).is_ok()
    }

    /// Parses one journal line, with the bounds a record of ours keeps.
    pub(crate) fn parse(line: &[u8]) -> Result<Self, String> {
        if line.len() > MAX_LINE_BYTES {
            return Err(format!("a record over {MAX_LINE_BYTES} bytes"));
        }
        let record: Record = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        record.check()?;
        Ok(record)
    }

    fn check(&self) -> Result<(), String> {
        let is_link = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        let in_range =
            |v: i64| (crate::clock::MIN_RFC3339..=crate::clock::MAX_RFC3339).contains(&v);
        if self.v != RECORD_VERSION {
            return Err(format!("unknown record version {}", self.v));
        }
        if !is_link(&self.prev) || self.last.as_deref().is_some_and(|l| !is_link(l)) {
            return Err("a link that is not a SHA-256".into());
        }
        if (self.span == Span::Day) != (self.last.is_some() && self.n_end.is_some()) {
            return Err("a daily record needs n_end and last, an hourly one neither".into());
        }
        if self.n_end.is_some_and(|e| e < self.n) {
            return Err("n_end before n".into());
        }
        if ![self.start, self.end, self.watermark, self.wall]
            .into_iter()
            .all(in_range)
            || self.end < self.start
        {
            return Err("times out of range".into());
        }
        if self.licenses.len() > MAX_LICENSES
            || self.notes.len() > MAX_NOTES
            || self.notes.iter().any(|n| n.len() > MAX_NOTE_BYTES)
            || self.gauges.len() + self.counters.len() > MAX_RECORD_METRICS
            || self
                .gauges
                .keys()
                .chain(self.counters.keys())
                .any(|k| super::validate_name(k).is_err())
        {
            return Err("more than a record holds".into());
        }
        if self.key.as_deref().is_some_and(|k| decode_key(k).is_none()) {
            return Err("a key that is not an Ed25519 public key".into());
        }
        Ok(())
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A public key from its base64url form.
pub(crate) fn decode_key(text: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

pub(crate) fn encode_key(key: &VerifyingKey) -> String {
    URL_SAFE_NO_PAD.encode(key.to_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A journal's lines as read: the records, and what was wrong.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub(crate) records: Vec<Record>,
    /// Lines that are not records (1-based line numbers and why), other than a torn last.
    pub(crate) bad_lines: Vec<(usize, String)>,
    /// The last line had no newline and is not a record: a write cut short.
    pub(crate) torn: bool,
    /// The bytes up to the end of the last complete line.
    pub(crate) complete_len: u64,
    /// The last record was written whole but for its newline.
    pub(crate) missing_newline: bool,
}

/// Splits a journal's bytes into records.
pub(crate) fn parse(bytes: &[u8]) -> Parsed {
    let mut parsed = Parsed::default();
    let mut offset = 0usize;
    for (i, chunk) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let complete = chunk.ends_with(b"\n");
        let line = chunk.strip_suffix(b"\n").unwrap_or(chunk);
        match Record::parse(line) {
            // A record without its newline was written whole but for the newline: it
            // counts (the newline is added before the next append).
            Ok(record) => {
                parsed.records.push(record);
                parsed.missing_newline = !complete;
                offset += chunk.len();
            }
            Err(_) if !complete => parsed.torn = true,
            Err(why) => {
                parsed.bad_lines.push((i + 1, why));
                offset += chunk.len();
            }
        }
    }
    parsed.complete_len = offset as u64;
    parsed
}

/// Reads a file of ours: one non-blocking open without following a FIFO, bounded.
pub(crate) fn read_bounded(path: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let file = match open_nonblocking(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            shown(path)
        )));
    }
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "{} is over {max} bytes",
            shown(path)
        )));
    }
    Ok(Some(bytes))
}

/// The key file beside a journal: `<journal>.key`.
pub(crate) fn key_path(journal: &Path) -> PathBuf {
    let mut name = journal.file_name().unwrap_or_default().to_os_string();
    name.push(".key");
    journal.with_file_name(name)
}

/// The most journals one path holds: one per process running at once on it.
pub(crate) const MAX_SET: usize = 64;

/// The `k`th journal of the set at `base`: `base` itself, then `base.1`, `base.2`, ...
pub(crate) fn member(base: &Path, k: usize) -> PathBuf {
    if k == 0 {
        return base.to_path_buf();
    }
    let mut name = base.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{k}"));
    base.with_file_name(name)
}

/// The checkpoint beside a journal: `<journal>.checkpoint`, the hour so far.
pub(crate) fn checkpoint_path(journal: &Path) -> PathBuf {
    let mut name = journal.file_name().unwrap_or_default().to_os_string();
    name.push(".checkpoint");
    journal.with_file_name(name)
}

/// The lock file of a journal: `<journal>.lock`, held by the process writing it.
pub(crate) fn lock_path(journal: &Path) -> PathBuf {
    let mut name = journal.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    journal.with_file_name(name)
}

/// The journals of the set at `base` that exist, in order.
pub(crate) fn members(base: &Path) -> Vec<PathBuf> {
    (0..MAX_SET)
        .map(|k| member(base, k))
        .filter(|p| {
            std::fs::symlink_metadata(p).is_ok()
                || std::fs::symlink_metadata(checkpoint_path(p)).is_ok()
        })
        .collect()
}

/// Takes the first journal of the set at `base` that no running process holds: an
/// exclusive lock on its lock file, held for as long as the returned file is open (the
/// operating system lets it go when the process dies, however it dies). Two processes on
/// one path (a rolling update whose pods share a volume, replicas starting at once)
/// each get a journal, and neither ever writes the other's.
pub(crate) fn claim(base: &Path) -> Result<(PathBuf, std::fs::File), String> {
    for k in 0..MAX_SET {
        let journal = member(base, k);
        let lock = lock_path(&journal);
        let file = crate::files::guarded(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )
        .open(&lock)
        .map_err(|e| format!("{}: {e}", shown(&lock)))?;
        match file.try_lock() {
            Ok(()) => return Ok((journal, file)),
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("{}: cannot be locked: {e}", shown(&lock)));
            }
        }
    }
    Err(format!(
        "{}: all {MAX_SET} journals of the set are held by running processes",
        shown(base)
    ))
}

/// The network filesystem `file` is on, if it is one whose locks may not hold across
/// machines: there, two processes on two machines could both [`claim`] one journal.
pub(crate) fn network_filesystem(file: &std::fs::File) -> Option<&'static str> {
    #[cfg(target_os = "linux")]
    {
        let stat = rustix::fs::fstatfs(file).ok()?;
        // (Magic numbers are 32 bits; the field is a signed word on some targets.)
        network_kind(stat.f_type as u64 & 0xffff_ffff)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        None
    }
}

/// The network filesystem a `statfs` magic number names (`man 2 statfs`).
fn network_kind(magic: u64) -> Option<&'static str> {
    match magic {
        0x6969 => Some("NFS"),
        0x517b | 0xff53_4d42 | 0xfe53_4d42 => Some("SMB/CIFS"),
        0x00c3_6400 => Some("CephFS"),
        0x6573_5546 => Some("a FUSE filesystem"),
        _ => None,
    }
}

const KEY_PREFIX: &str = "iosetu-usage-key-v1 ";

/// Reads the instance key; `None` when there is none.
pub(crate) fn load_key(path: &Path) -> Result<Option<SigningKey>, String> {
    let Some(bytes) = read_bounded(path, 1024).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes).map_err(|_| "not text".to_owned())?;
    let seed = text
        .trim()
        .strip_prefix(KEY_PREFIX)
        .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| format!("{} is not an instance key", shown(path)))?;
    Ok(Some(SigningKey::from_bytes(&seed)))
}

/// Makes and stores a new instance key (owner-only, never over an existing file).
pub(crate) fn make_key(path: &Path) -> std::io::Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(format!("no randomness: {e}")))?;
    let key = SigningKey::from_bytes(&seed);
    let text = format!("{KEY_PREFIX}{}\n", URL_SAFE_NO_PAD.encode(seed));
    let tmp = crate::files::temp_path(path);
    let mut file = crate::files::create_new(&tmp)?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        // Never over a key already there (another process made one meanwhile).
        .and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    written?;
    Ok(key)
}

/// Appends one line to the journal: opened without following a symlink, with an fsync;
/// a write that fails leaves the file as it was.
pub(crate) fn append(path: &Path, line: &[u8]) -> std::io::Result<u64> {
    let mut file =
        crate::files::guarded(std::fs::OpenOptions::new().append(true).create(true)).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let before = file.metadata()?.len();
    let mut bytes = line.to_vec();
    bytes.push(b'\n');
    if let Err(e) = file.write_all(&bytes).and_then(|()| file.sync_data()) {
        // A full disk or a file-size limit: bytes written in part would glue the next
        // record onto them. They are cut back (shrinking needs no space); where even that
        // fails, the caller cuts them before its next append.
        let _ = file.set_len(before).and_then(|()| file.sync_data());
        return Err(e);
    }
    Ok(file.metadata()?.len())
}

/// Writes a checkpoint over the last: in place, from the start, then cut to length, and
/// without an fsync. A process killed meanwhile leaves the new lines (perhaps with a tail
/// of the old ones, which do not continue the chain); a power cut may leave an older
/// checkpoint or none: the hour so far is then lost, as it was before checkpoints.
pub(crate) fn overwrite(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Seek as _;
    let mut file = crate::files::guarded(
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false),
    )
    .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    file.seek(std::io::SeekFrom::Start(0))?;
    file.write_all(bytes)?;
    file.set_len(bytes.len() as u64)
}

/// Replaces the journal with `records` atomically (a new temporary, fsync, rename).
pub(crate) fn rewrite(path: &Path, records: &[Record]) -> std::io::Result<u64> {
    let mut bytes = Vec::new();
    for record in records {
        bytes.extend(record.to_line());
        bytes.push(b'\n');
    }
    crate::files::store_bytes(path, &bytes)?;
    Ok(bytes.len() as u64)
}

/// Cuts a torn last line off (the record being written when the process stopped).
pub(crate) fn truncate(path: &Path, len: u64) -> std::io::Result<()> {
    let file = crate::files::guarded(std::fs::OpenOptions::new().write(true)).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    file.set_len(len)?;
    file.sync_all()
}

/// Folds hourly records that started before `hourly_from` into one record per UTC day,
/// and drops daily records that started before `daily_from`. The chain stays whole: a
/// daily record's `prev` is its first hour's, its `last` the link of its last hour.
///
/// Only records signed with `key` are folded or dropped: those from the last record that
/// declares a key on (records before a key the instance had to replace stay as signed).
pub(crate) fn compact(
    mut records: Vec<Record>,
    hourly_from: i64,
    daily_from: i64,
    key: &SigningKey,
) -> Vec<Record> {
    let segment = records.iter().rposition(|r| r.key.is_some()).unwrap_or(0);
    let mut out: Vec<Record> = records.drain(..segment).collect();
    let kept = out.len();
    let mut day: Option<Record> = None;
    let flush = |day: &mut Option<Record>, out: &mut Vec<Record>| {
        if let Some(mut d) = day.take() {
            d.sign(key);
            out.push(d);
        }
    };
    for record in records {
        // A day folded before takes the rest of its hours.
        if record.span == Span::Day && record.start < hourly_from {
            flush(&mut day, &mut out);
            day = Some(record);
            continue;
        }
        if record.span == Span::Hour && record.start < hourly_from {
            let link = record.link();
            let day_of = record.start.div_euclid(86_400);
            match &mut day {
                Some(d) if d.start.div_euclid(86_400) == day_of && d.last_n() + 1 == record.n => {
                    fold(d, record, link);
                }
                _ => {
                    flush(&mut day, &mut out);
                    let mut d = record.clone();
                    d.span = Span::Day;
                    d.n_end = Some(record.n);
                    d.last = Some(link);
                    day = Some(d);
                }
            }
        } else {
            flush(&mut day, &mut out);
            out.push(record);
        }
    }
    flush(&mut day, &mut out);
    // Daily records past ten years go (only where nothing older stays: the chain must
    // not break inside the file); the first left carries the key. Re-signing a daily
    // record leaves its link (its last hour's) as it was.
    if kept == 0 {
        let key_text = out.first().and_then(|r| r.key.clone());
        let drop = out
            .iter()
            .take_while(|r| r.span == Span::Day && r.start < daily_from)
            .count()
            .min(out.len().saturating_sub(1));
        out.drain(..drop);
        if let Some(first) = out.first_mut()
            && first.key.is_none()
        {
            first.key = key_text;
            first.sign(key);
        }
    }
    out
}

fn fold(day: &mut Record, hour: Record, link: String) {
    day.n_end = Some(hour.n);
    day.last = Some(link);
    day.take_in(hour);
}

/// The records of the checkpoint beside the journal at `path`, if they continue its
/// chain from `head` and the instance's key signed them; a checkpoint already written
/// (a process killed between its record and the checkpoint's removal) is not, and is
/// removed where `remove_stale`.
pub(crate) fn read_checkpoint(
    path: &std::path::Path,
    head: Option<&(u64, String)>,
    verifying: &VerifyingKey,
    remove_stale: bool,
) -> Option<Vec<Record>> {
    let file = checkpoint_path(path);
    let bytes = read_bounded(&file, MAX_CHECKPOINT_BYTES).ok()??;
    let parsed = parse(&bytes);
    let first = parsed.records.first()?;
    let (n, link) = head.map_or((0, GENESIS.to_owned()), |(n, l)| {
        (n.saturating_add(1), l.clone())
    });
    if first.n != n || first.prev != link {
        if remove_stale {
            let _ = std::fs::remove_file(&file);
        }
        return None;
    }
    // (Lines of an older, longer checkpoint left past a kill do not continue the chain.)
    let mut records: Vec<Record> = Vec::new();
    for record in parsed.records {
        let follows = records
            .last()
            .is_none_or(|before| record.n == before.n + 1 && record.prev == before.link());
        if !follows || !record.verify_signature(verifying) {
            break;
        }
        records.push(record);
    }
    (!records.is_empty()).then_some(records)
}

/// The largest checkpoint read: a month of hours waiting for a disk with room.
const MAX_CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(start: i64, licenses: &[&str], gauge: u64, counter: u64, notes: &[&str]) -> Record {
        Record {
            v: RECORD_VERSION,
            n: 0,
            n_end: None,
            span: Span::Hour,
            key: None,
            prev: String::new(),
            last: None,
            start,
            end: start + 3_600,
            watermark: start + 3_600,
            wall: start + 3_600,
            boot: 1,
            uptime: 3_600,
            licenses: licenses
                .iter()
                .map(|jti| LicenseInForce {
                    jti: Some((*jti).to_owned()),
                    customer: "acme".into(),
                    exp: 2_000_000_000,
                    limits: BTreeMap::new(),
                    max_instances: None,
                })
                .collect(),
            gauges: BTreeMap::from([("seats".to_owned(), gauge)]),
            counters: BTreeMap::from([("calls".to_owned(), counter)]),
            notice_seq: None,
            revocations: 0,
            notes: notes.iter().map(|n| (*n).to_owned()).collect(),
            sig: None,
        }
    }

    #[test]
    fn a_record_that_stands_for_several_keeps_the_peak_the_sum_and_every_license() {
        let mut first = hour(0, &["old"], 7, 10, &["write_failed"]);
        first.take_in(hour(
            3_600,
            &["old", "renewal"],
            5,
            4,
            &["write_failed", "x"],
        ));
        first.take_in(hour(7_200, &["renewal"], 9, 1, &[]));
        assert_eq!(
            (first.start, first.end, first.watermark),
            (0, 10_800, 10_800)
        );
        assert_eq!(first.gauges["seats"], 9);
        assert_eq!(first.counters["calls"], 15);
        let jtis: Vec<_> = first
            .licenses
            .iter()
            .filter_map(|l| l.jti.as_deref())
            .collect();
        assert_eq!(jtis, ["old", "renewal"]);
        assert_eq!(first.notes, ["write_failed", "x"]);
    }

    #[test]
    fn network_filesystems_are_told_by_their_magic_numbers() {
        assert_eq!(network_kind(0x6969), Some("NFS"));
        assert_eq!(network_kind(0xff53_4d42), Some("SMB/CIFS"));
        assert_eq!(network_kind(0x6573_5546), Some("a FUSE filesystem"));
        // ext4, xfs, tmpfs, overlayfs: local.
        for local in [0xef53, 0x5846_5342, 0x0102_1994, 0x794c_7630] {
            assert_eq!(network_kind(local), None);
        }
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        // (The test's temporary directory is on a local disk.)
        assert_eq!(network_filesystem(&file), None);
    }

    #[test]
    fn notes_are_kept_once_each_up_to_the_cap() {
        let mut notes = Vec::new();
        assert!(add_note(&mut notes, "a"));
        assert!(add_note(&mut notes, "a"));
        for i in 1..MAX_NOTES {
            assert!(add_note(&mut notes, &format!("n{i}")));
        }
        assert_eq!(notes.len(), MAX_NOTES);
        assert!(!add_note(&mut notes, "one too many"));
        assert!(add_note(&mut notes, "a"));
        assert_eq!(notes.len(), MAX_NOTES);
    }
}
