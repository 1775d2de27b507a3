//! The files the crate reads and writes, and how: opened without waiting on a FIFO or
//! following a symlink planted at a temporary name, read with a bound, replaced
//! atomically; and the state file's reading and writing. The rules of what the files
//! hold live with their formats (`crate::state`, `crate::usage`): this module is the
//! shell's, and nothing pure imports it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::escape_control;
use crate::state::{MAX_STATE_BYTES, PersistedState, StateProblem};

/// A path as logs and errors show it: control characters escaped.
pub(crate) fn shown(path: &Path) -> String {
    escape_control(&path.display().to_string()).into_owned()
}

/// What a non-regular file is, for the operator reading the error.
pub(crate) fn kind_of(file_type: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO";
        }
        if file_type.is_char_device() || file_type.is_block_device() {
            return "a device";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    if file_type.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

/// Opens for reading without blocking: opening a FIFO with no writer would otherwise
/// hang the checker forever.
pub(crate) fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    }
    options.open(path)
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

/// Reads the state file: one non-blocking open (a FIFO swapped in cannot hang it), the
/// checks made on that open file (so a swap between a check and the read cannot slip
/// anything past them), and a bounded read.
pub(crate) fn read_state(path: &Path) -> Result<PersistedState, StateProblem> {
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
    PersistedState::parse(&bytes, &shown)
}

/// Writes the state atomically ([`store_bytes`]): a crash leaves the old state or the
/// new, never half of one.
pub(crate) fn write_state(state: &PersistedState, path: &Path) -> std::io::Result<()> {
    store_bytes(path, &state.to_bytes().map_err(std::io::Error::other)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{MAX_RFC3339, MIN_RFC3339};
    use crate::state::MAX_REVOKED;

    #[test]
    fn round_trip_and_problems() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(read_state(&path).unwrap_err().reason, "missing");
        let state = PersistedState::new(1_800_000_000, Some(1_799_000_000));
        write_state(&state, &path).unwrap();
        assert_eq!(read_state(&path).unwrap(), state);
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
            assert_eq!(read_state(&path).unwrap_err().reason, "corrupt", "{bad}");
        }
        // A version 1 file (before the drift budget) still loads, with no budget.
        std::fs::write(&path, r#"{"version":1,"high_water":5,"grace_anchor":4}"#).unwrap();
        let old = read_state(&path).unwrap();
        assert_eq!(
            (old.high_water, old.grace_anchor, old.budget_age),
            (5, Some(4), 0)
        );
        std::fs::write(&path, vec![b' '; 300 * 1024]).unwrap();
        assert_eq!(read_state(&path).unwrap_err().reason, "corrupt");
        let as_dir = dir.path().join("d");
        std::fs::create_dir(&as_dir).unwrap();
        assert_eq!(read_state(&as_dir).unwrap_err().reason, "corrupt");
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
        write_state(&state, &path).unwrap();
        assert_eq!(read_state(&path).unwrap(), state);
        std::fs::write(&path, r#"{"version":2,"high_water":5,"grace_anchor":null}"#).unwrap();
        let old = read_state(&path).unwrap();
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
            write_state(&state, &path).unwrap();
            assert_eq!(read_state(&path).unwrap(), state);
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
        let problem = read_state(&fifo).unwrap_err();
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
        write_state(&state, &path).unwrap();
        assert_eq!(std::fs::read_to_string(&license).unwrap(), "the license");
        assert_eq!(read_state(&path).unwrap(), state);
        // And the exclusive create itself refuses a symlink, dangling or not.
        let planted = dir.path().join("planted");
        std::os::unix::fs::symlink(&license, &planted).unwrap();
        assert!(create_new(&planted).is_err());
        assert_eq!(std::fs::read_to_string(&license).unwrap(), "the license");
    }
}
