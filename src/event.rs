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

use tracing::Level;

use crate::clock::{escape_control, rfc3339, unix_seconds};
use crate::token::LicenseError;
use crate::verdict::{ExpiryBand, GraceReason};

/// `tracing`'s macros need the level at compile time; this picks the macro at run time.
macro_rules! log_at {
    ($level:expr, $($rest:tt)*) => {
        match $level {
            Level::ERROR => tracing::error!(target: TARGET, $($rest)*),
            Level::WARN => tracing::warn!(target: TARGET, $($rest)*),
            Level::INFO => tracing::info!(target: TARGET, $($rest)*),
            _ => tracing::debug!(target: TARGET, $($rest)*),
        }
    };
}

/// Where every event goes: the log, the counters, the OpenTelemetry hook and the
/// subscribers. Shared by the checker and the instance-slot task.
#[derive(Clone)]
pub(crate) struct Reporter {
    pub(crate) stats: std::sync::Arc<crate::shared::Stats>,
    pub(crate) events: tokio::sync::broadcast::Sender<LicenseEvent>,
    #[cfg(feature = "otel")]
    pub(crate) hook: Option<crate::otel::EventHook>,
}

impl Reporter {
    pub(crate) fn emit(&self, event: LicenseEvent) {
        event.log();
        self.stats.record_event(&event);
        #[cfg(feature = "otel")]
        if let Some(hook) = &self.hook {
            hook(&event);
        }
        // No receiver, or receivers lagging behind, never block or fail the sender.
        let _ = self.events.send(event);
    }
}

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
    /// new one continues the journal), `unreadable` or `write_failed`. The service goes
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

/// Changed limits as one attribute: `seats:10->25,nodes:->3` (empty side: not set).
fn limit_changes(limits: &[(String, Option<u64>, Option<u64>)]) -> String {
    let side = |v: &Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    limits
        .iter()
        .map(|(name, before, after)| format!("{name}:{}->{}", side(before), side(after)))
        .collect::<Vec<_>>()
        .join(",")
}

/// What to do about a `license.time_manipulation_detected` (its `action` attribute).
const MANIPULATION_ACTION: &str = "set the system clock right (NTP): licenses are judged by \
    trusted time meanwhile, and grace ends at the next check once the clock agrees; a state \
    file, if configured, keeps trusted time across restarts";

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

impl LicenseEvent {
    /// Every dotted event [`name`](LicenseEvent::name), for exporters that publish a
    /// series per event from the start.
    pub const NAMES: [&'static str; 24] = [
        "license.expiring_30d",
        "license.expiring_7d",
        "license.expiring_24h",
        "license.expiring_1h",
        "license.grace_mode_entered",
        "license.grace_mode_exited",
        "license.grace_period_expired",
        "license.time_manipulation_detected",
        "license.time_drift_detected",
        "license.verification_failed",
        "license.missing",
        "license.recovered",
        "license.loaded",
        "license.entitlements_changed",
        "license.state_invalid",
        "license.instance_slot_acquired",
        "license.instance_slot_lost",
        "license.instance_check_failed",
        "license.revoked",
        "license.clock_attested",
        "license.notice_rejected",
        "license.limit_exceeded",
        "license.usage_journal_invalid",
        "license.state_write_failed",
    ];

    /// The dotted event name, e.g. `license.grace_mode_entered`.
    pub fn name(&self) -> &'static str {
        match self {
            LicenseEvent::Expiring { band, .. } => match band {
                ExpiryBand::Days30 => "license.expiring_30d",
                ExpiryBand::Days7 => "license.expiring_7d",
                ExpiryBand::Hours24 => "license.expiring_24h",
                ExpiryBand::Hour1 => "license.expiring_1h",
            },
            LicenseEvent::GraceModeEntered { .. } => "license.grace_mode_entered",
            LicenseEvent::GraceModeExited { .. } => "license.grace_mode_exited",
            LicenseEvent::GracePeriodExpired { .. } => "license.grace_period_expired",
            LicenseEvent::TimeManipulationDetected { .. } => "license.time_manipulation_detected",
            LicenseEvent::TimeDriftDetected { .. } => "license.time_drift_detected",
            LicenseEvent::VerificationFailed { .. } => "license.verification_failed",
            LicenseEvent::Missing { .. } => "license.missing",
            LicenseEvent::Loaded { .. } => "license.loaded",
            LicenseEvent::Recovered { .. } => "license.recovered",
            LicenseEvent::EntitlementsChanged { .. } => "license.entitlements_changed",
            LicenseEvent::StateInvalid { .. } => "license.state_invalid",
            LicenseEvent::InstanceSlotAcquired { .. } => "license.instance_slot_acquired",
            LicenseEvent::InstanceSlotLost { .. } => "license.instance_slot_lost",
            LicenseEvent::InstanceCheckFailed { .. } => "license.instance_check_failed",
            LicenseEvent::Revoked { .. } => "license.revoked",
            LicenseEvent::ClockAttested { .. } => "license.clock_attested",
            LicenseEvent::NoticeRejected { .. } => "license.notice_rejected",
            LicenseEvent::LimitExceeded { .. } => "license.limit_exceeded",
            LicenseEvent::UsageJournalInvalid { .. } => "license.usage_journal_invalid",
            LicenseEvent::StateWriteFailed { .. } => "license.state_write_failed",
        }
    }

    /// The log level.
    pub fn level(&self) -> Level {
        match self {
            LicenseEvent::Expiring {
                band: ExpiryBand::Days30 | ExpiryBand::Days7,
                ..
            }
            | LicenseEvent::TimeDriftDetected { .. }
            | LicenseEvent::StateInvalid { .. }
            | LicenseEvent::InstanceSlotLost { .. }
            | LicenseEvent::InstanceCheckFailed { .. }
            | LicenseEvent::NoticeRejected { .. }
            | LicenseEvent::LimitExceeded { .. }
            | LicenseEvent::UsageJournalInvalid { .. }
            | LicenseEvent::StateWriteFailed { .. }
            | LicenseEvent::Revoked { in_set: true, .. } => Level::WARN,
            LicenseEvent::InstanceSlotAcquired { .. }
            | LicenseEvent::GraceModeExited { .. }
            | LicenseEvent::Loaded { .. }
            | LicenseEvent::Recovered { .. }
            | LicenseEvent::EntitlementsChanged { .. }
            | LicenseEvent::Revoked { in_set: false, .. }
            | LicenseEvent::ClockAttested { .. } => Level::INFO,
            _ => Level::ERROR,
        }
    }

    /// The `severity` attribute.
    pub fn severity(&self) -> Severity {
        match self.level() {
            Level::ERROR => Severity::Critical,
            Level::WARN => Severity::Warning,
            _ => Severity::Info,
        }
    }

    /// The human-readable log message.
    pub fn message(&self) -> &'static str {
        match self {
            LicenseEvent::Expiring { .. } => "License expiring",
            LicenseEvent::GraceModeEntered {
                reason: GraceReason::Expired,
                ..
            } => "License expired - grace period started",
            LicenseEvent::GraceModeEntered { .. } => "No valid license - grace period started",
            LicenseEvent::GraceModeExited { .. } => "Valid license in force - grace period ended",
            LicenseEvent::GracePeriodExpired { .. } => {
                "License grace period expired - new requests are refused"
            }
            LicenseEvent::TimeManipulationDetected { .. } => {
                "CRITICAL: Backward time jump detected - possible clock manipulation"
            }
            LicenseEvent::TimeDriftDetected { .. } => "Wall clock drift detected",
            LicenseEvent::VerificationFailed { .. } => "License verification failed",
            LicenseEvent::Missing { .. } => "No license found",
            LicenseEvent::Loaded { .. } => "License loaded",
            LicenseEvent::Recovered { .. } => "License source reads good again",
            LicenseEvent::EntitlementsChanged { .. } => "Licensed features or limits changed",
            LicenseEvent::StateInvalid { .. } => {
                "License state file unusable - continuing without it"
            }
            LicenseEvent::InstanceSlotAcquired { .. } => "Instance slot acquired",
            LicenseEvent::InstanceSlotLost { .. } => "Instance slot lost",
            LicenseEvent::InstanceCheckFailed { .. } => {
                "Instance slot check failed - keeping the last standing for now"
            }
            LicenseEvent::Revoked { .. } => "License revoked by the vendor",
            LicenseEvent::ClockAttested { .. } => {
                "Vendor attested the time - trusted time re-based"
            }
            LicenseEvent::NoticeRejected { .. } => "Vendor notice refused",
            LicenseEvent::LimitExceeded { .. } => "Usage over the licensed limit",
            LicenseEvent::UsageJournalInvalid { .. } => {
                "Usage journal damaged or unusable - continuing"
            }
            LicenseEvent::StateWriteFailed { .. } => {
                "License state file cannot be written - keeping the last good state"
            }
        }
    }

    /// A longer explanation where the product text gives one, else the message.
    pub fn detail(&self) -> &'static str {
        match self {
            LicenseEvent::TimeManipulationDetected { .. } => {
                "System clock was set backward - this may indicate license bypass attempt"
            }
            _ => self.message(),
        }
    }

    /// The event's attributes, as the product text names them (`severity` included).
    pub fn attributes(&self) -> Vec<(&'static str, AttributeValue)> {
        use AttributeValue::{Bool, Float, Int, Str};
        let time = |t: &SystemTime| Str(rfc3339(unix_seconds(*t)));
        let mut attrs = match self {
            LicenseEvent::Expiring {
                days_remaining,
                expires_at,
                customer,
                ..
            } => vec![
                ("days_remaining", Int(*days_remaining)),
                ("expires_at", time(expires_at)),
                ("customer", Str(customer.clone())),
            ],
            LicenseEvent::GraceModeEntered {
                reason,
                grace_period_seconds,
                grace_started_at,
                grace_ends_at,
            } => vec![
                ("grace_period_seconds", Int(*grace_period_seconds as i64)),
                ("reason", Str(reason.code().into())),
                ("grace_started_at", time(grace_started_at)),
                ("grace_ends_at", time(grace_ends_at)),
            ],
            LicenseEvent::GraceModeExited {
                customer,
                expires_at,
            } => vec![
                ("customer", Str(customer.clone())),
                ("expires_at", time(expires_at)),
            ],
            LicenseEvent::GracePeriodExpired {
                reason,
                grace_ends_at,
            } => vec![
                ("reason", Str(reason.code().into())),
                ("grace_ends_at", time(grace_ends_at)),
            ],
            LicenseEvent::TimeManipulationDetected {
                wall_clock_jump_seconds,
            } => vec![
                ("type", Str("backward_jump".into())),
                ("wall_clock_jump_seconds", Int(*wall_clock_jump_seconds)),
                ("action", Str(MANIPULATION_ACTION.into())),
            ],
            LicenseEvent::TimeDriftDetected {
                drift_seconds,
                kind,
            } => vec![
                ("type", Str(kind.as_str().into())),
                ("drift_seconds", Float(*drift_seconds)),
            ],
            LicenseEvent::VerificationFailed {
                error,
                source,
                kept_previous,
                line,
                fingerprint,
            } => {
                let mut v = vec![
                    ("reason", Str(error.reason().into())),
                    ("error", Str(error.to_string())),
                    ("source", Str(source.clone())),
                    ("kept_previous", Bool(*kept_previous)),
                ];
                if let Some(line) = line {
                    v.push(("line", Int(i64::try_from(*line).unwrap_or(i64::MAX))));
                }
                if let Some(fingerprint) = fingerprint {
                    v.push(("fingerprint", Str(fingerprint.clone())));
                }
                v
            }
            LicenseEvent::Missing {
                error,
                source,
                kept_previous,
            } => vec![
                ("reason", Str(error.reason().into())),
                ("error", Str(error.to_string())),
                ("source", Str(source.clone())),
                ("kept_previous", Bool(*kept_previous)),
            ],
            LicenseEvent::EntitlementsChanged {
                added,
                removed,
                limits,
            } => vec![
                ("added", Str(added.join(","))),
                ("removed", Str(removed.join(","))),
                ("limits", Str(limit_changes(limits))),
            ],
            LicenseEvent::Recovered {
                previous_reason,
                failed_checks,
                source,
            } => vec![
                ("previous_reason", Str((*previous_reason).into())),
                (
                    "failed_checks",
                    Int(i64::try_from(*failed_checks).unwrap_or(i64::MAX)),
                ),
                ("source", Str(source.clone())),
            ],
            LicenseEvent::StateInvalid { reason, detail } => vec![
                ("reason", Str((*reason).into())),
                ("error", Str(detail.clone())),
            ],
            LicenseEvent::Loaded {
                customer,
                expires_at,
                jti,
                fingerprint,
            } => {
                let mut v = vec![
                    ("customer", Str(customer.clone())),
                    ("expires_at", time(expires_at)),
                    ("fingerprint", Str(fingerprint.clone())),
                ];
                if let Some(jti) = jti {
                    v.push(("jti", Str(jti.clone())));
                }
                v
            }
            LicenseEvent::InstanceSlotAcquired {
                slot,
                lease,
                max_instances,
            } => vec![
                ("slot", Int(i64::from(*slot))),
                ("lease", Str(lease.clone())),
                (
                    "max_instances",
                    Int(i64::try_from(*max_instances).unwrap_or(i64::MAX)),
                ),
            ],
            LicenseEvent::InstanceSlotLost {
                slot,
                lease,
                reason,
            } => vec![
                ("slot", Int(i64::from(*slot))),
                ("lease", Str(lease.clone())),
                ("reason", Str((*reason).into())),
            ],
            LicenseEvent::InstanceCheckFailed {
                operation,
                status,
                error,
            } => {
                let mut v = vec![
                    ("operation", Str((*operation).into())),
                    ("error", Str(error.clone())),
                ];
                if let Some(status) = status {
                    v.push(("status", Int(i64::from(*status))));
                }
                v
            }
            LicenseEvent::Revoked {
                jti,
                revoked_at,
                seq,
                in_set,
            } => {
                let mut v = vec![
                    ("jti", Str(jti.clone())),
                    ("revoked_at", time(revoked_at)),
                    (
                        "by",
                        Str(if seq.is_some() {
                            "notice"
                        } else {
                            "supersedes"
                        }
                        .into()),
                    ),
                    ("in_set", Bool(*in_set)),
                ];
                if let Some(seq) = seq {
                    v.push(("seq", Int(i64::try_from(*seq).unwrap_or(i64::MAX))));
                }
                v
            }
            LicenseEvent::ClockAttested {
                seq,
                attested_time,
                wall_offset_seconds,
                trusted_time_moved_seconds,
                cleared_manipulation,
            } => vec![
                ("seq", Int(i64::try_from(*seq).unwrap_or(i64::MAX))),
                ("attested_time", time(attested_time)),
                ("wall_offset_seconds", Int(*wall_offset_seconds)),
                (
                    "trusted_time_moved_seconds",
                    Int(*trusted_time_moved_seconds),
                ),
                ("cleared_manipulation", Bool(*cleared_manipulation)),
            ],
            LicenseEvent::NoticeRejected {
                error,
                line,
                fingerprint,
                seq,
            } => {
                let mut v = vec![
                    ("reason", Str(error.reason().into())),
                    ("error", Str(error.to_string())),
                    ("line", Int(i64::try_from(*line).unwrap_or(i64::MAX))),
                    ("fingerprint", Str(fingerprint.clone())),
                ];
                if let Some(seq) = seq {
                    v.push(("seq", Int(i64::try_from(*seq).unwrap_or(i64::MAX))));
                }
                v
            }
            LicenseEvent::LimitExceeded { name, usage, limit } => vec![
                ("name", Str(name.clone())),
                ("usage", Int(i64::try_from(*usage).unwrap_or(i64::MAX))),
                ("limit", Int(i64::try_from(*limit).unwrap_or(i64::MAX))),
            ],
            LicenseEvent::UsageJournalInvalid { reason, detail } => vec![
                ("reason", Str((*reason).into())),
                ("error", Str(detail.clone())),
            ],
            LicenseEvent::StateWriteFailed {
                path,
                reason,
                detail,
            } => vec![
                ("path", Str(path.clone())),
                ("reason", Str((*reason).into())),
                ("error", Str(detail.clone())),
            ],
        };
        attrs.push(("severity", Str(self.severity().as_str().into())));
        attrs
    }

    /// Logs the event through `tracing`.
    pub(crate) fn log(&self) {
        let event = self.name();
        let severity = self.severity().as_str();
        // `msg` is the headline, as in the product's log examples; the formatted message
        // (`message` in JSON output) repeats it, or explains it where the product does.
        let msg = self.message();
        let detail = self.detail();
        let level = self.level();
        let time = |t: &SystemTime| rfc3339(unix_seconds(*t));
        // Text logs must not carry control characters from operator-supplied text (a path
        // with a newline could forge a whole log line) or from a license's claims.
        let esc = |text: &str| escape_control(text).into_owned();
        match self {
            LicenseEvent::Expiring {
                days_remaining,
                expires_at,
                customer,
                ..
            } => log_at!(level, event, msg, severity, days_remaining = *days_remaining,
                expires_at = %time(expires_at), customer = %esc(customer), "{detail}"),
            LicenseEvent::GraceModeEntered {
                reason,
                grace_period_seconds,
                grace_started_at,
                grace_ends_at,
            } => log_at!(level, event, msg, severity, grace_period_seconds = *grace_period_seconds,
                reason = reason.code(), grace_started_at = %time(grace_started_at),
                grace_ends_at = %time(grace_ends_at), "{detail}"),
            LicenseEvent::GraceModeExited {
                customer,
                expires_at,
            } => log_at!(level, event, msg, severity, customer = %esc(customer),
                expires_at = %time(expires_at), "{detail}"),
            LicenseEvent::GracePeriodExpired {
                reason,
                grace_ends_at,
            } => log_at!(level, event, msg, severity, reason = reason.code(),
                grace_ends_at = %time(grace_ends_at), "{detail}"),
            LicenseEvent::TimeManipulationDetected {
                wall_clock_jump_seconds,
            } => log_at!(
                level,
                event,
                msg,
                severity,
                r#type = "backward_jump",
                wall_clock_jump_seconds = *wall_clock_jump_seconds,
                action = MANIPULATION_ACTION,
                "{detail}"
            ),
            LicenseEvent::TimeDriftDetected {
                drift_seconds,
                kind,
            } => {
                log_at!(
                    level,
                    event,
                    msg,
                    severity,
                    r#type = kind.as_str(),
                    drift_seconds = *drift_seconds,
                    "{detail}"
                )
            }
            LicenseEvent::VerificationFailed {
                error,
                source,
                kept_previous,
                line,
                fingerprint,
            } => {
                log_at!(level, event, msg, severity, reason = error.reason(), error = %esc(&error.to_string()),
                source = %esc(source), kept_previous = *kept_previous, line = *line,
                fingerprint = fingerprint.as_deref(), "{detail}")
            }
            LicenseEvent::Missing {
                error,
                source,
                kept_previous,
            } => {
                log_at!(level, event, msg, severity, reason = error.reason(), error = %esc(&error.to_string()),
                source = %esc(source), kept_previous = *kept_previous, "{detail}")
            }
            LicenseEvent::EntitlementsChanged {
                added,
                removed,
                limits,
            } => log_at!(level, event, msg, severity, added = %esc(&added.join(",")),
                removed = %esc(&removed.join(",")), limits = %esc(&limit_changes(limits)),
                "{detail}"),
            LicenseEvent::Recovered {
                previous_reason,
                failed_checks,
                source,
            } => log_at!(level, event, msg, severity, previous_reason = *previous_reason,
                failed_checks = *failed_checks, source = %esc(source), "{detail}"),
            LicenseEvent::StateInvalid { reason, detail } => {
                log_at!(level, event, msg, severity, reason = *reason, error = %esc(detail), "{}", esc(detail))
            }
            LicenseEvent::Loaded {
                customer,
                expires_at,
                jti,
                fingerprint,
            } => log_at!(level, event, msg, severity, customer = %esc(customer),
                expires_at = %time(expires_at), jti = jti.as_deref().map(esc),
                fingerprint = %fingerprint, "{detail}"),
            LicenseEvent::InstanceSlotAcquired {
                slot,
                lease,
                max_instances,
            } => log_at!(level, event, msg, severity, slot = *slot, lease = %esc(lease),
                max_instances = *max_instances, "{detail}"),
            LicenseEvent::InstanceSlotLost {
                slot,
                lease,
                reason,
            } => log_at!(level, event, msg, severity, slot = *slot, lease = %esc(lease),
                reason = *reason, "{detail}"),
            LicenseEvent::InstanceCheckFailed {
                operation,
                status,
                error,
            } => log_at!(level, event, msg, severity, operation = *operation, status = *status,
                error = %esc(error), "{detail}"),
            LicenseEvent::Revoked {
                jti,
                revoked_at,
                seq,
                in_set,
            } => log_at!(level, event, msg, severity, jti = %esc(jti),
                revoked_at = %time(revoked_at),
                by = if seq.is_some() { "notice" } else { "supersedes" }, seq = *seq,
                in_set = *in_set, "{detail}"),
            LicenseEvent::ClockAttested {
                seq,
                attested_time,
                wall_offset_seconds,
                trusted_time_moved_seconds,
                cleared_manipulation,
            } => log_at!(level, event, msg, severity, seq = *seq,
                attested_time = %time(attested_time), wall_offset_seconds = *wall_offset_seconds,
                trusted_time_moved_seconds = *trusted_time_moved_seconds,
                cleared_manipulation = *cleared_manipulation, "{detail}"),
            LicenseEvent::NoticeRejected {
                error,
                line,
                fingerprint,
                seq,
            } => log_at!(level, event, msg, severity, reason = error.reason(),
                error = %esc(&error.to_string()), line = *line, fingerprint = %fingerprint,
                seq = *seq, "{detail}"),
            LicenseEvent::LimitExceeded { name, usage, limit } => log_at!(level, event, msg,
                severity, name = %esc(name), usage = *usage, limit = *limit, "{detail}"),
            LicenseEvent::UsageJournalInvalid { reason, detail } => {
                log_at!(level, event, msg, severity, reason = *reason, error = %esc(detail), "{}", esc(detail))
            }
            LicenseEvent::StateWriteFailed {
                path,
                reason,
                detail,
            } => {
                log_at!(level, event, msg, severity, path = %esc(path), reason = *reason,
                    error = %esc(detail), "{}", esc(detail))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn names_levels_and_severities_follow_the_product_text() {
        let at = UNIX_EPOCH + Duration::from_secs(1_773_151_200);
        let expiring = |band| LicenseEvent::Expiring {
            band,
            days_remaining: 25,
            expires_at: at,
            customer: "YourCompany".into(),
        };
        let e = expiring(ExpiryBand::Days30);
        assert_eq!(e.name(), "license.expiring_30d");
        assert_eq!(e.level(), Level::WARN);
        assert_eq!(
            e.attributes(),
            vec![
                ("days_remaining", AttributeValue::Int(25)),
                (
                    "expires_at",
                    AttributeValue::Str("2026-03-10T14:00:00Z".into())
                ),
                ("customer", AttributeValue::Str("YourCompany".into())),
                ("severity", AttributeValue::Str("warning".into())),
            ]
        );
        assert_eq!(expiring(ExpiryBand::Days7).level(), Level::WARN);
        assert_eq!(expiring(ExpiryBand::Hours24).name(), "license.expiring_24h");
        assert_eq!(expiring(ExpiryBand::Hours24).level(), Level::ERROR);
        assert_eq!(expiring(ExpiryBand::Hour1).name(), "license.expiring_1h");
        assert_eq!(expiring(ExpiryBand::Hour1).severity(), Severity::Critical);

        let jump = LicenseEvent::TimeManipulationDetected {
            wall_clock_jump_seconds: -3600,
        };
        assert_eq!(jump.name(), "license.time_manipulation_detected");
        assert_eq!(jump.severity().as_str(), "critical");
        assert!(
            jump.attributes()
                .contains(&("type", AttributeValue::Str("backward_jump".into())))
        );

        let drift = LicenseEvent::TimeDriftDetected {
            drift_seconds: 10.5,
            kind: DriftKind::ForwardJump,
        };
        assert_eq!(drift.severity().as_str(), "warning");
        assert_eq!(
            drift.attributes()[..2],
            [
                ("type", AttributeValue::Str("forward_jump".into())),
                ("drift_seconds", AttributeValue::Float(10.5))
            ]
        );

        let exited = LicenseEvent::GraceModeExited {
            customer: "c".into(),
            expires_at: at,
        };
        assert_eq!(exited.severity().as_str(), "info");
    }

    #[test]
    fn names_lists_every_event_once() {
        let at = UNIX_EPOCH;
        let expiring = |band| LicenseEvent::Expiring {
            band,
            days_remaining: 0,
            expires_at: at,
            customer: String::new(),
        };
        let every = [
            expiring(ExpiryBand::Days30),
            expiring(ExpiryBand::Days7),
            expiring(ExpiryBand::Hours24),
            expiring(ExpiryBand::Hour1),
            LicenseEvent::GraceModeEntered {
                reason: GraceReason::Expired,
                grace_period_seconds: 0,
                grace_started_at: at,
                grace_ends_at: at,
            },
            LicenseEvent::GraceModeExited {
                customer: String::new(),
                expires_at: at,
            },
            LicenseEvent::GracePeriodExpired {
                reason: GraceReason::Expired,
                grace_ends_at: at,
            },
            LicenseEvent::TimeManipulationDetected {
                wall_clock_jump_seconds: 0,
            },
            LicenseEvent::TimeDriftDetected {
                drift_seconds: 0.0,
                kind: DriftKind::ForwardJump,
            },
            LicenseEvent::VerificationFailed {
                error: LicenseError::BadSignature,
                source: String::new(),
                kept_previous: false,
                line: Some(2),
                fingerprint: None,
            },
            LicenseEvent::Missing {
                error: LicenseError::BadSignature,
                source: String::new(),
                kept_previous: false,
            },
            LicenseEvent::Recovered {
                previous_reason: "missing",
                failed_checks: 1,
                source: String::new(),
            },
            LicenseEvent::Loaded {
                customer: String::new(),
                expires_at: at,
                jti: None,
                fingerprint: String::new(),
            },
            LicenseEvent::EntitlementsChanged {
                added: vec!["sso".into()],
                removed: Vec::new(),
                limits: vec![("seats".into(), Some(10), Some(25))],
            },
            LicenseEvent::StateInvalid {
                reason: "missing",
                detail: String::new(),
            },
            LicenseEvent::InstanceSlotAcquired {
                slot: 1,
                lease: "acme-slot-1".into(),
                max_instances: 3,
            },
            LicenseEvent::InstanceSlotLost {
                slot: 1,
                lease: "acme-slot-1".into(),
                reason: "taken",
            },
            LicenseEvent::InstanceCheckFailed {
                operation: "renew",
                status: Some(403),
                error: "forbidden".into(),
            },
            LicenseEvent::Revoked {
                jti: "lic-1".into(),
                revoked_at: at,
                seq: Some(3),
                in_set: true,
            },
            LicenseEvent::ClockAttested {
                seq: 4,
                attested_time: at,
                wall_offset_seconds: 0,
                trusted_time_moved_seconds: -86_400,
                cleared_manipulation: true,
            },
            LicenseEvent::NoticeRejected {
                error: LicenseError::StaleSequence { seq: 2, highest: 4 },
                line: 3,
                fingerprint: "0123456789abcdef".into(),
                seq: Some(2),
            },
            LicenseEvent::LimitExceeded {
                name: "seats".into(),
                usage: 12,
                limit: 10,
            },
            LicenseEvent::UsageJournalInvalid {
                reason: "torn",
                detail: "usage.jsonl: cut short".into(),
            },
            LicenseEvent::StateWriteFailed {
                path: "/var/lib/app/state.json".into(),
                reason: "unwritable",
                detail: "/var/lib/app/state.json: Permission denied (os error 13)".into(),
            },
        ];
        // A new variant fails to compile here until it is listed above and in NAMES.
        for e in &every {
            match e {
                LicenseEvent::Expiring { .. }
                | LicenseEvent::GraceModeEntered { .. }
                | LicenseEvent::GraceModeExited { .. }
                | LicenseEvent::GracePeriodExpired { .. }
                | LicenseEvent::TimeManipulationDetected { .. }
                | LicenseEvent::TimeDriftDetected { .. }
                | LicenseEvent::VerificationFailed { .. }
                | LicenseEvent::Missing { .. }
                | LicenseEvent::Recovered { .. }
                | LicenseEvent::Loaded { .. }
                | LicenseEvent::EntitlementsChanged { .. }
                | LicenseEvent::StateInvalid { .. }
                | LicenseEvent::InstanceSlotAcquired { .. }
                | LicenseEvent::InstanceSlotLost { .. }
                | LicenseEvent::InstanceCheckFailed { .. }
                | LicenseEvent::Revoked { .. }
                | LicenseEvent::ClockAttested { .. }
                | LicenseEvent::NoticeRejected { .. }
                | LicenseEvent::LimitExceeded { .. }
                | LicenseEvent::UsageJournalInvalid { .. }
                | LicenseEvent::StateWriteFailed { .. } => {}
            }
        }
        let names: Vec<&str> = every.iter().map(LicenseEvent::name).collect();
        assert_eq!(names, LicenseEvent::NAMES);
        assert_eq!(every[11].level(), Level::INFO);
        assert_eq!(
            every[13].attributes()[..3],
            [
                ("added", AttributeValue::Str("sso".into())),
                ("removed", AttributeValue::Str(String::new())),
                ("limits", AttributeValue::Str("seats:10->25".into())),
            ]
        );
        assert_eq!(every[15].level(), Level::INFO);
        assert_eq!(every[16].level(), Level::WARN);
        assert_eq!(
            every[17].attributes(),
            [
                ("operation", AttributeValue::Str("renew".into())),
                ("error", AttributeValue::Str("forbidden".into())),
                ("status", AttributeValue::Int(403)),
                ("severity", AttributeValue::Str("warning".into())),
            ]
        );
        assert_eq!(every[18].level(), Level::WARN);
        assert_eq!(every[19].level(), Level::INFO);
        assert_eq!(every[20].level(), Level::WARN);
        assert!(
            every[20]
                .attributes()
                .contains(&("reason", AttributeValue::Str("stale_seq".into())))
        );
        assert!(
            every[18]
                .attributes()
                .contains(&("by", AttributeValue::Str("notice".into())))
        );
        assert_eq!(every[23].level(), Level::WARN);
        assert_eq!(
            every[23].attributes(),
            [
                (
                    "path",
                    AttributeValue::Str("/var/lib/app/state.json".into())
                ),
                ("reason", AttributeValue::Str("unwritable".into())),
                (
                    "error",
                    AttributeValue::Str(
                        "/var/lib/app/state.json: Permission denied (os error 13)".into()
                    )
                ),
                ("severity", AttributeValue::Str("warning".into())),
            ]
        );
    }

    #[test]
    fn refusal_events_carry_the_reason_code_never_a_token() {
        let e = LicenseEvent::VerificationFailed {
            error: LicenseError::BadSignature,
            source: "env:IOSETU_LICENSE_KEY".into(),
            kept_previous: true,
            line: Some(2),
            fingerprint: Some("0123456789abcdef".into()),
        };
        assert_eq!(e.name(), "license.verification_failed");
        assert!(
            e.attributes()
                .contains(&("reason", AttributeValue::Str("bad_signature".into())))
        );
    }
}
