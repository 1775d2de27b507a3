//! The optional state file: the grace anchor and the trusted-time high-water mark,
//! persisted so that a restart neither buys a new grace period nor hides a clock that was
//! set back while the service was down.
//!
//! Whoever controls the disk can delete or edit the file; it is a best effort on top of
//! the guarantees that need no state (grace anchored at a license's own `exp`, the signed
//! `iat` as a floor under time). A missing, unreadable or corrupt file is reported and
//! ignored: it never blocks start-up.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What is kept across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersistedState {
    /// Format version, for future changes.
    pub(crate) version: u32,
    /// The highest trusted wall time seen, seconds since the epoch.
    pub(crate) high_water: i64,
    /// The start of the current grace period, if any.
    pub(crate) grace_anchor: Option<i64>,
}

const VERSION: u32 = 1;
/// State files are tiny; anything larger is not ours.
const MAX_STATE_BYTES: u64 = 4096;

/// Why the state file could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StateProblem {
    /// `missing`, `unreadable` or `corrupt`.
    pub(crate) reason: &'static str,
    pub(crate) detail: String,
}

impl PersistedState {
    pub(crate) fn new(high_water: i64, grace_anchor: Option<i64>) -> Self {
        Self {
            version: VERSION,
            high_water,
            grace_anchor,
        }
    }

    /// Reads the state file.
    pub(crate) fn load(path: &Path) -> Result<Self, StateProblem> {
        let problem = |reason, detail: String| StateProblem { reason, detail };
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(problem(
                    "missing",
                    format!("{} does not exist", path.display()),
                ));
            }
            Err(e) => return Err(problem("unreadable", format!("{}: {e}", path.display()))),
        };
        if !meta.is_file() || meta.len() > MAX_STATE_BYTES {
            return Err(problem(
                "corrupt",
                format!(
                    "{} is not a state file (not a small regular file)",
                    path.display()
                ),
            ));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| problem("unreadable", format!("{}: {e}", path.display())))?;
        let state: Self = serde_json::from_slice(&bytes)
            .map_err(|e| problem("corrupt", format!("{}: {e}", path.display())))?;
        if state.version != VERSION {
            return Err(problem(
                "corrupt",
                format!("{}: unknown version {}", path.display(), state.version),
            ));
        }
        let in_range = |v: i64| (0..=crate::token::MAX_NUMERIC_DATE).contains(&v);
        if !in_range(state.high_water) || state.grace_anchor.is_some_and(|a| !in_range(a)) {
            return Err(problem(
                "corrupt",
                format!("{}: values out of range", path.display()),
            ));
        }
        Ok(state)
    }

    /// Writes the state atomically: a temporary file in the same directory, flushed to
    /// disk, then renamed over the old one, so a crash leaves the old state or the new,
    /// never half of one.
    pub(crate) fn store(&self, path: &Path) -> std::io::Result<()> {
        let tmp = temp_path(path);
        let result = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            serde_json::to_writer(&mut file, self).map_err(std::io::Error::other)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
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
        assert!(!temp_path(&path).exists());

        for bad in [
            "",
            "{",
            r#"{"version":1,"high_water":"x","grace_anchor":null}"#,
            r#"{"version":2,"high_water":1,"grace_anchor":null}"#,
            r#"{"version":1,"high_water":-5,"grace_anchor":null}"#,
            r#"{"version":1,"high_water":1,"grace_anchor":null,"extra":1}"#,
        ] {
            std::fs::write(&path, bad).unwrap();
            assert_eq!(
                PersistedState::load(&path).unwrap_err().reason,
                "corrupt",
                "{bad}"
            );
        }
        std::fs::write(&path, vec![b' '; 5000]).unwrap();
        assert_eq!(PersistedState::load(&path).unwrap_err().reason, "corrupt");
        let as_dir = dir.path().join("d");
        std::fs::create_dir(&as_dir).unwrap();
        assert_eq!(PersistedState::load(&as_dir).unwrap_err().reason, "corrupt");
    }
}
