//! License events: what the monitor reports, under the product's dotted names.
//!
//! Each event is logged once through `tracing` (target [`TARGET`], level as in the table
//! below) with a field `event` holding its dotted name, so `grep license.grace_mode_entered`
//! works on any log format, and is sent to every
//! [`LicenseMonitor::subscribe`](crate::LicenseMonitor::subscribe) receiver.
//!
//! | name | level | when |
//! |---|---|---|
//! | `license.expiring_30d` | WARN | less than 30 days left: on entering the band, and at each check while in it |
//! | `license.expiring_7d` | WARN | less than 7 days left (same rule) |
//! | `license.expiring_24h` | ERROR | less than 24 hours left (same rule) |
//! | `license.expiring_1h` | ERROR | less than 1 hour left (same rule) |
//! | `license.grace_mode_entered` | ERROR | no valid license any more (expired, missing, refused, clock set back): grace starts |
//! | `license.grace_mode_exited` | INFO | a valid license ended grace |
//! | `license.grace_period_expired` | ERROR | grace ran out: new requests get 503 |
//! | `license.time_manipulation_detected` | ERROR | the wall clock was set back more than 5 s |
//! | `license.time_drift_detected` | WARN | the wall clock jumped ahead more than 5 s, a provisional reading was corrected, or the wall is behind the build time or a license's `iat` (`type` says which) |
//! | `license.verification_failed` | ERROR | the license was refused, or the notice source could not be read (`source` names it; it costs nothing else) (until fixed; the same failure at most once per check interval) |
//! | `license.missing` | ERROR | no license found (the same way) |
//! | `license.recovered` | INFO | the source reads good again after failed reads (once) |
//! | `license.loaded` | INFO | a new license verified and is now in force (a held one: at its `nbf`) |
//! | `license.entitlements_changed` | INFO | the features or limits in force changed |
//! | `license.state_invalid` | WARN | the state file is missing, unreadable or corrupt (start-up) |
//! | `license.instance_slot_acquired` | INFO | this replica took an instance slot (a Kubernetes Lease) |
//! | `license.instance_slot_lost` | WARN | this replica no longer holds its slot (`reason` says why) |
//! | `license.instance_check_failed` | WARN | a Kubernetes API call for the slots failed (the same failure at most once a minute) |
//! | `license.revoked` | WARN | a vendor notice revoked a license of the source, or a license superseded one (INFO when no license of the source has that `jti`) |
//! | `license.clock_attested` | INFO | a vendor notice attested real time: trusted time re-based, clock-manipulation grace ended |
//! | `license.notice_rejected` | WARN | a vendor notice was refused (`reason`: `stale_seq`, `customer_mismatch`, `expired`, or why it did not verify; the same notice at most once per check interval) |
//! | `license.limit_exceeded` | WARN | a usage metric is over the license's limit of that name (never a cut-off; at most once per check interval per metric) |
//! | `license.usage_journal_invalid` | WARN | the usage journal was torn by a crash, damaged, changed by someone else, lost its key, or could not be written; the service goes on |
//! | `license.state_write_failed` | WARN | the state file could not be written (`reason`: `unwritable`, `not_a_file`, `no_space`, `timed_out`); the last good state is kept and the write retried (the same failure at most once per check interval) |

use std::time::SystemTime;

use crate::clock::{escape_control, rfc3339, unix_seconds};
use crate::token::LicenseError;
use crate::verdict::{ExpiryBand, GraceReason};

mod render;

/// The `tracing` target of every event this crate logs.
pub const TARGET: &str = "iosetu_license";

/// One thing the monitor has to report.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LicenseEvent {
    /// The license is inside an expiry alert band.
    Expiring {
        /// The band (its event name is `license.expiring_30d` … `license.expiring_1h`).
        band: ExpiryBand,
        /// Whole days left.
        days_remaining: i64,
        /// When the license expires.
        expires_at: SystemTime,
        /// The license's customer.
        customer: String,
    },
    /// Grace started.
    GraceModeEntered {
        /// Why.
        reason: GraceReason,
        /// The configured grace period, in seconds.
        grace_period_seconds: u64,
        /// When grace began (for an expired license: its `exp`).
        grace_started_at: SystemTime,
        /// When grace ends and requests start getting 503.
        grace_ends_at: SystemTime,
    },
    /// A valid license ended grace.
    GraceModeExited {
        /// The new license's customer.
        customer: String,
        /// When the new license expires.
        expires_at: SystemTime,
    },
    /// Grace ran out; new requests are refused.
    GracePeriodExpired {
        /// Why the service was in grace.
        reason: GraceReason,
        /// When grace ended.
        grace_ends_at: SystemTime,
    },
    /// The wall clock was set back.
    TimeManipulationDetected {
        /// How far the wall clock moved against the monotonic clock, in seconds (negative).
        wall_clock_jump_seconds: i64,
    },
    /// The wall clock disagrees with other evidence in a way that is not manipulation:
    /// it jumped ahead, a provisional reading was corrected, or it is behind a vendor's
    /// floor (see [`DriftKind`]).
    TimeDriftDetected {
        /// By how many seconds (negative: the wall clock is, or was, behind).
        drift_seconds: f64,
        /// Which kind of drift (the `type` attribute).
        kind: DriftKind,
    },
    /// The license (or one token of a license set) was refused.
    VerificationFailed {
        /// Why (its [`reason`](LicenseError::reason) is the stable code).
        error: LicenseError,
        /// Where it was read, e.g. `file:/etc/iosetu/license.key` (never the token).
        source: String,
        /// Whether an earlier valid license stays in force (for a set: whether any
        /// license of the set, or of the last good one, still counts).
        kept_previous: bool,
        /// The token's line in the source (1-based), when the source was read.
        line: Option<usize>,
        /// A short hash of the refused token, to tell it apart without showing it.
        fingerprint: Option<String>,
    },
    /// No license was found.
    Missing {
        /// What was found where.
        error: LicenseError,
        /// Where it was looked for.
        source: String,
        /// Whether an earlier valid license stays in force.
        kept_previous: bool,
    },
    /// A reload, or a license coming into force, changed the features or limits in force.
    EntitlementsChanged {
        /// Features now in force that were not (sorted).
        added: Vec<String>,
        /// Features no longer in force (sorted).
        removed: Vec<String>,
        /// Limits that changed: name, value before, value after (`None`: not set).
        limits: Vec<(String, Option<u64>, Option<u64>)>,
    },
    /// The source reads good again after one or more failed reads (missing, unreadable
    /// or refused): what the operator did fixed it.
    Recovered {
        /// The reason code of the last failed read.
        previous_reason: &'static str,
        /// How many reads in a row had failed.
        failed_checks: u64,
        /// Where the license was read.
        source: String,
    },
    /// The state file (see `LicenseMonitorBuilder::state_file`) could not be used; the
    /// monitor goes on without it.
    StateInvalid {
        /// `missing`, `unreadable` or `corrupt`.
        reason: &'static str,
        /// What was wrong, with the path.
        detail: String,
    },
    /// A new license is in force.
    Loaded {
        /// Its customer.
        customer: String,
        /// When it expires.
        expires_at: SystemTime,
        /// Its `jti`, if any.
        jti: Option<String>,
        /// A short hash of the token, to tell tokens apart in logs without showing them.
        fingerprint: String,
    },
    /// This replica took an instance slot: the licenses limit how many replicas serve
    /// at once (`max_instances`), and it is one of them.
    InstanceSlotAcquired {
        /// The slot's index, from 0.
        slot: u32,
        /// The Lease object's name (`<prefix>-slot-<index>`).
        lease: String,
        /// The limit in force.
        max_instances: u64,
    },
    /// This replica no longer holds its instance slot.
    InstanceSlotLost {
        /// The slot's index.
        slot: u32,
        /// The Lease object's name.
        lease: String,
        /// Why: `taken` (another replica holds the Lease now), `limit_lowered` (the slot
        /// is beyond a lower limit and was given up), `renew_failed` (no renewal went
        /// through for 40 s), `released` (given up on shutdown, or the licenses no longer
        /// limit instances).
        reason: &'static str,
    },
    /// A Kubernetes API call for the instance slots failed. The replica keeps what it had
    /// for one grace period of failures, then counts as holding no slot.
    InstanceCheckFailed {
        /// What was attempted: `client`, `list`, `create`, `take`, `renew` or `release`.
        operation: &'static str,
        /// The HTTP status the API server answered, if it answered.
        status: Option<u16>,
        /// What went wrong.
        error: String,
    },
    /// A vendor notice revoked a license (`revoke`), or a license superseded one
    /// (`supersedes`): from `revoked_at` on it counts as expired, with reason `revoked`.
    Revoked {
        /// The revoked license's `jti`.
        jti: String,
        /// From when.
        revoked_at: SystemTime,
        /// The notice's `seq`; `None` when a superseding license revoked it.
        seq: Option<u64>,
        /// Whether the revoked license is among the source's licenses.
        in_set: bool,
    },
    /// A vendor notice attested real time: trusted time re-based there, and grace for a
    /// clock judged set back ended.
    ClockAttested {
        /// The notice's `seq`.
        seq: u64,
        /// The real time it attests.
        attested_time: SystemTime,
        /// The wall clock minus the attested time, in seconds, when it was accepted.
        wall_offset_seconds: i64,
        /// How far trusted time moved (negative: back, the usual case).
        trusted_time_moved_seconds: i64,
        /// Whether it ended grace for clock manipulation.
        cleared_manipulation: bool,
    },
    /// A vendor notice was refused: it did not verify, is for another customer, is
    /// older than the highest accepted (`stale_seq`), or attests time past its `exp`.
    /// The same notice at most once per check interval.
    NoticeRejected {
        /// Why (`reason` is its code).
        error: LicenseError,
        /// Its line in the source.
        line: usize,
        /// A short hash of the token.
        fingerprint: String,
        /// Its `seq`, if it verified.
        seq: Option<u64>,
    },
    /// A usage metric (see [`crate::usage`]) is over the license's limit of the same name:
    /// a gauge's current value, or a counter's total this month. Never a cut-off; at most
    /// once per check interval per metric.
    LimitExceeded {
        /// The metric.
        name: String,
        /// Its value.
        usage: u64,
        /// The limit in force.
        limit: u64,
    },
    /// The usage journal (see `LicenseMonitorBuilder::usage_journal`) could not be used as
    /// it was: `torn` (a record cut short by a crash, dropped), `corrupt` (lines that are
    /// not records, or a last record not ours), `changed` (written by someone else under
    /// the running service), `key_replaced` (the instance key was missing or unusable: a
    /// new one continues the journal), `unreadable`, `write_failed`, or
    /// `network_filesystem` (the journal is on NFS, SMB, CephFS or FUSE, where its lock
    /// may not hold across machines: a warning, the journal is used). The service goes
    /// on; the next record says so.
    UsageJournalInvalid {
        /// The reason code.
        reason: &'static str,
        /// What was wrong, with the path.
        detail: String,
    },
    /// The state file (see `LicenseMonitorBuilder::state_file`) could not be written.
    /// Nothing else changes: the monitor keeps its state (the file keeps the last good
    /// one) and writes again at its next check. The same failure at most once per check
    /// interval; the gauge `iosetu_license_state_write_failing` says when it ends.
    StateWriteFailed {
        /// The state file's path.
        path: String,
        /// `unwritable` (permissions, a read-only file system, a directory missing on
        /// the way or a file where one should be), `not_a_file` (a directory is at the
        /// path), `no_space` (the disk or a quota is full) or `timed_out` (the write has
        /// not returned within 5 s: a hung mount).
        reason: &'static str,
        /// What went wrong, with the path.
        detail: String,
    },
}

/// What a `license.time_drift_detected` reports (its `type` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DriftKind {
    /// The wall clock ran ahead of the monotonic clock (`forward_jump`).
    ForwardJump,
    /// A backward step corrected a reading taken before the clock could have been
    /// synchronized (the first minutes after boot): the mark was re-based
    /// (`clock_corrected`).
    ClockCorrected,
    /// The wall clock reads before the vendor's build time (`behind_build_time`).
    BehindBuildTime,
    /// The wall clock reads more than 5 minutes before the license's signed `iat`
    /// (`behind_issue_time`).
    BehindIssueTime,
    /// The wall clock reads more than 5 s before a time a vendor notice attested
    /// (`behind_attested_time`).
    BehindAttestedTime,
}

impl DriftKind {
    /// The `type` attribute's value.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::ForwardJump => "forward_jump",
            DriftKind::ClockCorrected => "clock_corrected",
            DriftKind::BehindBuildTime => "behind_build_time",
            DriftKind::BehindIssueTime => "behind_issue_time",
            DriftKind::BehindAttestedTime => "behind_attested_time",
        }
    }
}

/// How serious an event is, as the `severity` attribute names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Severity {
    /// Nothing to do.
    Info,
    /// Act soon.
    Warning,
    /// Act now.
    Critical,
}

impl Severity {
    /// `info`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A typed attribute value, for exporters that are not `tracing`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AttributeValue {
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
}

#[cfg(test)]
mod tests;
