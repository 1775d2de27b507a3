//! The optional state file: the grace anchor and the trusted-time high-water mark,
//! persisted so that a restart neither buys a new grace period nor hides a clock that was
//! set back while the service was down.
//!
//! Whoever controls the disk can delete or edit the file; it is a best effort on top of
//! the guarantees that need no state (grace anchored at a license's own `exp`, the signed
//! `iat` as a floor under time). A missing, unreadable or corrupt file is reported and
//! ignored: it never blocks start-up.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::clock::{MAX_RFC3339, MIN_RFC3339, escape_control};
use crate::source::{kind_of, open_nonblocking, shown};

/// What is kept across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersistedState {
    /// Format version, for future changes.
    pub(crate) version: u32,
    /// The highest trusted wall time seen, seconds since the epoch.
    pub(crate) high_water: i64,
    /// The start of the current grace period, if any. From version 2: of the current
    /// episode without any license (an expired license's grace is anchored at its own
    /// signed `exp`, which needs no storing).
    pub(crate) grace_anchor: Option<i64>,
    /// The latest cut-off an earlier episode without a license earned (version 2).
    #[serde(default)]
    pub(crate) grace_floor: Option<i64>,
    /// Since when the service has been in grace (or cut off), whatever the reason
    /// (version 2; version 1's `grace_anchor` meant this): a restart that finds no license
    /// at all, or a clock set back, anchors its grace there, so it buys nothing.
    #[serde(default)]
    pub(crate) not_valid_since: Option<i64>,
    /// Where the service is cut off if nothing new comes in: the end of that grace, or
    /// while licensed the latest `exp` + grace of the coverage in force (version 2). A
    /// restart that finds no license at all never ends its grace later.
    #[serde(default)]
    pub(crate) cut_off: Option<i64>,
    /// Seconds of monotonic time the honest drift budget has accrued (version 2).
    #[serde(default)]
    pub(crate) budget_age: u64,
    /// The highest vendor notice `seq` accepted, by customer (version 3): an older notice
    /// (a replayed time attestation) is refused after a restart too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) notice_seq: BTreeMap<String, u64>,
    /// The revoked license `jti`s and from when, seconds since the epoch (version 3): a
    /// revocation stays when its notice's line is deleted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) revoked: BTreeMap<String, i64>,
    /// The host boot this state was written on (`/proc/sys/kernel/random/boot_id`), if
    /// known (version 4): restarts on the same boot share one drift budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) boot_id: Option<String>,
    /// Milliseconds of the drift budget that clock corrections spent on that boot
    /// (version 4): what a restart does not get back.
    #[serde(default)]
    pub(crate) budget_spent_ms: u64,
    /// The mark is this run's own confirmed evidence (version 4): a restart on the same
    /// boot may carry it on exactly by the boot's age. (A mark written while the run's
    /// first reading was still unconfirmed is older evidence, behind real time.)
    #[serde(default)]
    pub(crate) settled: bool,
}

const VERSION: u32 = 4;
/// Version 1 files (a mark and an anchor) still load.
const OLDEST_VERSION: u32 = 1;
/// No run earns a drift budget older than this: a larger stored age is not ours.
const MAX_BUDGET_AGE: u64 = 100 * 366 * 86_400;
/// The most revocations kept (the oldest go first beyond it: a license revoked that long
/// ago has most likely expired by its own `exp`).
pub(crate) const MAX_REVOKED: usize = 512;
/// The most customers whose notice `seq` is kept.
pub(crate) const MAX_NOTICE_CUSTOMERS: usize = 16;
/// State files are small (at most [`MAX_REVOKED`] revocations); anything larger is not
/// ours.
const MAX_STATE_BYTES: u64 = 256 * 1024;

/// Why the state file could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StateProblem {
    /// Read: `missing`, `unreadable` or `corrupt`. Written: `unwritable`, `not_a_file`,
    /// `no_space` or `timed_out` (see [`StateProblem::write`]).
    pub(crate) reason: &'static str,
    pub(crate) detail: String,
}

impl StateProblem {
    /// Why [`PersistedState::store`] failed at the path `shown` (as logs show it), with
    /// `error`: `not_a_file` (a directory is at the path), `no_space` (the disk or a
    /// quota is full), else `unwritable` (permissions, a read-only file system, a
    /// directory missing on the way or a file where one should be, any other error).
    pub(crate) fn write(shown: &str, error: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        let reason = match error.kind() {
            ErrorKind::IsADirectory | ErrorKind::DirectoryNotEmpty => "not_a_file",
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => "no_space",
            _ => "unwritable",
        };
        StateProblem {
            reason,
            detail: format!("{shown}: {}", escape_control(&error.to_string())),
        }
    }
}

impl PersistedState {
    pub(crate) fn new(high_water: i64, grace_anchor: Option<i64>) -> Self {
        Self {
            version: VERSION,
            high_water,
            grace_anchor,
            grace_floor: None,
            not_valid_since: None,
            cut_off: None,
            budget_age: 0,
            notice_seq: BTreeMap::new(),
            revoked: BTreeMap::new(),
            boot_id: None,
            budget_spent_ms: 0,
            settled: false,
        }
    }

    /// Reads the state file: one non-blocking open (a FIFO swapped in cannot hang it), the
    /// checks made on that open file (so a swap between a check and the read cannot slip
    /// anything past them), and a bounded read.
    pub(crate) fn load(path: &Path) -> Result<Self, StateProblem> {
        let shown = shown(path);
        let problem = |reason, detail: String| StateProblem { reason, detail };
        let file = match open_nonblocking(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(problem("missing", format!("{shown} does not exist")));
            }
            Err(e) => return Err(problem("unreadable", format!("{shown}: {e}"))),
        };
        let meta = file
            .metadata()
            .map_err(|e| problem("unreadable", format!("{shown}: {e}")))?;
        if !meta.is_file() {
            return Err(problem(
                "corrupt",
                format!(
                    "{shown} is not a state file but {}",
                    kind_of(&meta.file_type())
                ),
            ));
        }
        let mut bytes = Vec::new();
        // The file may grow between the stat and the read: the read is bounded regardless.
        file.take(MAX_STATE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| problem("unreadable", format!("{shown}: {e}")))?;
        if bytes.len() as u64 > MAX_STATE_BYTES {
            return Err(problem(
                "corrupt",
                format!("{shown} is not a state file (over {MAX_STATE_BYTES} bytes)"),
            ));
        }
        let state: Self = serde_json::from_slice(&bytes)
            .map_err(|e| problem("corrupt", format!("{shown}: {e}")))?;
        if !(OLDEST_VERSION..=VERSION).contains(&state.version) {
            return Err(problem(
                "corrupt",
                format!("{shown}: unknown version {}", state.version),
            ));
        }
        // Years 0000 to 9999: what a clock can plausibly read. Anything else is not ours
        // (every later computation saturates, so this is about meaning, not safety).
        let in_range = |v: i64| (MIN_RFC3339..=MAX_RFC3339).contains(&v);
        if !in_range(state.high_water)
            || state.grace_anchor.is_some_and(|a| !in_range(a))
            || state.grace_floor.is_some_and(|a| !in_range(a))
            || state.not_valid_since.is_some_and(|a| !in_range(a))
            || state.cut_off.is_some_and(|a| !in_range(a))
            || state.budget_age > MAX_BUDGET_AGE
            || state.budget_spent_ms > MAX_BUDGET_AGE.saturating_mul(1_000)
            || state
                .boot_id
                .as_ref()
                .is_some_and(|id| id.is_empty() || id.len() > 64)
            || state.revoked.len() > MAX_REVOKED
            || state.revoked.values().any(|&at| !in_range(at))
            || state
                .revoked
                .keys()
                .any(|jti| jti.is_empty() || jti.len() > crate::token::MAX_JTI_BYTES)
            || state.notice_seq.len() > MAX_NOTICE_CUSTOMERS
            || state.notice_seq.values().any(|&seq| seq == 0)
        {
            return Err(problem("corrupt", format!("{shown}: values out of range")));
        }
        Ok(state)
    }

    /// Writes the state atomically: a new temporary file in the same directory, created
    /// exclusively under a unique name (so it never follows a symlink planted there, and
    /// two writers never share one), flushed to disk, then renamed over the old one, so a
    /// crash leaves the old state or the new, never half of one.
    pub(crate) fn store(&self, path: &Path) -> std::io::Result<()> {
        let mut json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        json.push(b'\n');
        store_bytes(path, &json)
    }
}

/// Replaces `path` with `bytes` atomically: a new temporary file in the same directory,
/// created exclusively under a unique name (it never follows a symlink planted there),
/// flushed to disk, then renamed over the old one.
pub(crate) fn store_bytes(path: &Path, json: &[u8]) -> std::io::Result<()> {
    let mut last_error = None;
    for _ in 0..8 {
        let tmp = temp_path(path);
        let mut file = match create_new(&tmp) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                last_error = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        let result = file
            .write_all(json)
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&tmp, path));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        return result;
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("no unique temporary name")))
}

/// Creates `path` only if nothing (not even a dangling symlink) is there, without
/// following a symlink, readable and writable by the owner alone.
pub(crate) fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    guarded(std::fs::OpenOptions::new().write(true).create_new(true)).open(path)
}

/// Opens without following a symlink and without waiting on a FIFO (no reader: an
/// error, not a hang); a file it creates is the owner's alone.
pub(crate) fn guarded(options: &mut std::fs::OpenOptions) -> &mut std::fs::OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
        options.mode(0o600).custom_flags(flags.bits() as i32);
    }
    options
}

/// A temporary name beside `path`, unique to this process, this call and this instant.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}.{n}.{nanos:08x}.tmp", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_problems() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(PersistedState::load(&path).unwrap_err().reason, "missing");
        let state = PersistedState::new(1_800_000_000, Some(1_799_000_000));
        state.store(&path).unwrap();
        assert_eq!(PersistedState::load(&path).unwrap(), state);
        // No temporary is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        for bad in [
            "",
            "{",
            r#"{"version":1,"high_water":"x","grace_anchor":null}"#,
            r#"{"version":5,"high_water":1,"grace_anchor":null}"#,
            r#"{"version":3,"high_water":1,"grace_anchor":null,"revoked":{"a":1e300}}"#,
            r#"{"version":3,"high_water":1,"grace_anchor":null,"revoked":{"":1}}"#,
            r#"{"version":3,"high_water":1,"grace_anchor":null,"notice_seq":{"acme":0}}"#,
            r#"{"version":3,"high_water":1,"grace_anchor":null,"notice_seq":{"acme":-1}}"#,
            r#"{"version":2,"high_water":1,"grace_anchor":null,"budget_age":-1}"#,
            r#"{"version":2,"high_water":1,"grace_anchor":null,"budget_age":99999999999999}"#,
            r#"{"version":2,"high_water":1,"grace_anchor":null,"grace_floor":9223372036854775807}"#,
            r#"{"version":1,"high_water":-62167219201,"grace_anchor":null}"#,
            r#"{"version":1,"high_water":9223372036854775807,"grace_anchor":null}"#,
            r#"{"version":1,"high_water":1,"grace_anchor":-9223372036854775808}"#,
            r#"{"version":1,"high_water":1e300,"grace_anchor":null}"#,
            r#"{"version":1,"high_water":1,"grace_anchor":null,"extra":1}"#,
        ] {
            std::fs::write(&path, bad).unwrap();
            assert_eq!(
                PersistedState::load(&path).unwrap_err().reason,
                "corrupt",
                "{bad}"
            );
        }
        // A version 1 file (before the drift budget) still loads, with no budget.
        std::fs::write(&path, r#"{"version":1,"high_water":5,"grace_anchor":4}"#).unwrap();
        let old = PersistedState::load(&path).unwrap();
        assert_eq!(
            (old.high_water, old.grace_anchor, old.budget_age),
            (5, Some(4), 0)
        );
        std::fs::write(&path, vec![b' '; 300 * 1024]).unwrap();
        assert_eq!(PersistedState::load(&path).unwrap_err().reason, "corrupt");
        let as_dir = dir.path().join("d");
        std::fs::create_dir(&as_dir).unwrap();
        assert_eq!(PersistedState::load(&as_dir).unwrap_err().reason, "corrupt");
    }

    #[test]
    fn notices_and_revocations_round_trip_and_version_2_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut state = PersistedState::new(1_800_000_000, None);
        state.notice_seq.insert("acme".into(), 7);
        for n in 0..MAX_REVOKED {
            state.revoked.insert(format!("{n:0>200}"), 1_700_000_000);
        }
        state.store(&path).unwrap();
        assert_eq!(PersistedState::load(&path).unwrap(), state);
        std::fs::write(&path, r#"{"version":2,"high_water":5,"grace_anchor":null}"#).unwrap();
        let old = PersistedState::load(&path).unwrap();
        assert!(old.revoked.is_empty() && old.notice_seq.is_empty());
    }

    #[test]
    fn the_limits_of_the_range_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // Finding 1: an anchor near year 9999 panicked once grace was added to it.
        for (mark, anchor) in [
            (MAX_RFC3339, Some(MAX_RFC3339)),
            (MIN_RFC3339, None),
            (-5, Some(-5)),
        ] {
            let state = PersistedState::new(mark, anchor);
            state.store(&path).unwrap();
            assert_eq!(PersistedState::load(&path).unwrap(), state);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_at_the_path_is_refused_without_blocking() {
        // Finding 2: a FIFO swapped in between a check and the read hung `start()`.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("state.json");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let problem = PersistedState::load(&fifo).unwrap_err();
        assert_eq!(problem.reason, "corrupt");
        assert!(problem.detail.contains("a FIFO"), "{}", problem.detail);
    }

    #[cfg(unix)]
    #[test]
    fn writing_never_follows_a_symlink_planted_at_a_temporary_name() {
        // Finding 2: `state.json.tmp -> license.key` overwrote the license with state JSON.
        let dir = tempfile::tempdir().unwrap();
        let license = dir.path().join("license.key");
        std::fs::write(&license, "the license").unwrap();
        let path = dir.path().join("state.json");
        std::os::unix::fs::symlink(&license, dir.path().join("state.json.tmp")).unwrap();
        std::os::unix::fs::symlink(&license, dir.path().join(".state.json.tmp")).unwrap();
        let state = PersistedState::new(1_800_000_000, None);
        state.store(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&license).unwrap(), "the license");
        assert_eq!(PersistedState::load(&path).unwrap(), state);
        // And the exclusive create itself refuses a symlink, dangling or not.
        let planted = dir.path().join("planted");
        std::os::unix::fs::symlink(&license, &planted).unwrap();
        assert!(create_new(&planted).is_err());
        assert_eq!(std::fs::read_to_string(&license).unwrap(), "the license");
    }
}
