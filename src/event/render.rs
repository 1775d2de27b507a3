//! How each event is told: its name, level, message, attributes, and the log line.

use tracing::Level;

use super::*;

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
