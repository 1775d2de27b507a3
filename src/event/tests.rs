//! The events' names, levels, messages and attributes.

use super::*;
use std::time::{Duration, UNIX_EPOCH};
use tracing::Level;

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
