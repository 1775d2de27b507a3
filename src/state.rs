//! The optional state file: the grace anchor and the trusted-time high-water mark,
//! persisted so that a restart neither buys a new grace period nor hides a clock that was
//! set back while the service was down.
//!
//! Whoever controls the disk can delete or edit the file; it is a best effort on top of
//! the guarantees that need no state (grace anchored at a license's own `exp`, the signed
//! `iat` as a floor under time). A missing, unreadable or corrupt file is reported and
//! ignored: it never blocks start-up.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::{MAX_RFC3339, MIN_RFC3339, escape_control};

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
pub(crate) const MAX_STATE_BYTES: u64 = 256 * 1024;

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

    /// The state in `bytes`, read from the file shown as `shown`: a version this code
    /// knows, every value in range. Pure: the file's reading is `crate::files`'.
    pub(crate) fn parse(bytes: &[u8], shown: &str) -> Result<Self, StateProblem> {
        let problem = |reason, detail: String| StateProblem { reason, detail };
        if bytes.len() as u64 > MAX_STATE_BYTES {
            return Err(problem(
                "corrupt",
                format!("{shown} is not a state file (over {MAX_STATE_BYTES} bytes)"),
            ));
        }
        let state: Self = serde_json::from_slice(bytes)
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

    /// The file's bytes: JSON and a newline.
    pub(crate) fn to_bytes(&self) -> serde_json::Result<Vec<u8>> {
        let mut json = serde_json::to_vec(self)?;
        json.push(b'\n');
        Ok(json)
    }
}
