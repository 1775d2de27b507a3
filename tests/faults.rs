//! Faults beside the license source that must cost nothing else (review findings 9 and
//! 11): a notice source mounted wrongly (a directory, junk, too many lines, a license in
//! it), and a state file on a path that cannot be written. In paused time, with a real
//! license file polled every 2 s.

use std::time::Duration;

mod common;
use common::notices::{file, license, revocation, start_with_notices, write};
use common::{DAY, HOUR, MINUTE, T0, at, builder, drain, names, run_for, secs, start};

use iosetu_license::{GraceReason, LicenseEvent, LicenseState, TestClock};

/// The reasons of the `license.verification_failed` events about `source`.
fn failures_of<'a>(events: &'a [LicenseEvent], source: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter_map(|e| match e {
            LicenseEvent::VerificationFailed {
                error, source: s, ..
            } if s == source => Some(error.reason()),
            _ => None,
        })
        .collect()
}

fn count(events: &[LicenseEvent], name: &str) -> usize {
    names(events).iter().filter(|n| **n == name).count()
}

#[tokio::test(start_paused = true)]
async fn a_notice_source_that_is_a_directory_costs_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let notices = dir.path().join("notices");
    std::fs::create_dir(&notices).unwrap();
    let lic = license("lic-1", T0 + 10 * DAY);
    write(&path, &[&lic]);
    let clock = TestClock::new(at(T0));
    let (monitor, mut rx) = start_with_notices(&clock, &path, &notices).await;
    // Valid at once: the license is judged as if there were no notice source.
    let verdict = monitor.verdict();
    assert_eq!(verdict.state, LicenseState::Valid, "{verdict:?}");
    let shown = file(&notices).describe();
    let mut events = drain(&mut rx);
    assert_eq!(failures_of(&events, &shown), ["unreadable"], "{events:?}");
    assert!(!names(&events).contains(&"license.grace_mode_entered"));
    // Polls every 2 s for most of an hour: not reported again.
    run_for(HOUR - 5 * MINUTE).await;
    let later = drain(&mut rx);
    assert!(failures_of(&later, &shown).is_empty(), "{later:?}");
    // A renewal appended to the license file while running is judged.
    let renewal = license("lic-2", T0 + 400 * DAY);
    write(&path, &[&lic, &renewal]);
    run_for(10).await;
    let verdict = monitor.verdict();
    assert_eq!(secs(verdict.expires_at.unwrap()), T0 + 400 * DAY);
    events.extend(drain(&mut rx));
    // A day and more later: still valid, never in grace, the fault reported at most once
    // per check interval (1 h) at the full checks.
    run_for(25 * HOUR).await;
    let verdict = monitor.verdict();
    assert_eq!(verdict.state, LicenseState::Valid, "{verdict:?}");
    events.extend(drain(&mut rx));
    assert!(!names(&events).contains(&"license.grace_mode_entered"));
    let reported = failures_of(&events, &shown).len();
    assert!((2..=27).contains(&reported), "{reported}");
    // Only the notice source's fault: the license source never failed.
    assert!(failures_of(&events, &file(&path).describe()).is_empty());
    assert_eq!(monitor.metrics().check_failing, None);
}

#[tokio::test(start_paused = true)]
async fn twenty_licenses_and_thirteen_notices_are_capped_apart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let notices = dir.path().join("notices");
    let licenses: Vec<String> = (0..20)
        .map(|i| license(&format!("lic-{i}"), T0 + (10 + i) * DAY))
        .collect();
    let lines: Vec<&str> = licenses.iter().map(String::as_str).collect();
    write(&path, &lines);
    let revocations: Vec<String> = (1..=13)
        .map(|seq| revocation(seq, T0 - DAY, &[&format!("gone-{seq}")]))
        .collect();
    let lines: Vec<&str> = revocations.iter().map(String::as_str).collect();
    write(&notices, &lines);
    let clock = TestClock::new(at(T0));
    let (monitor, mut rx) = start_with_notices(&clock, &path, &notices).await;
    let verdict = monitor.verdict();
    assert_eq!(verdict.state, LicenseState::Valid, "{verdict:?}");
    assert_eq!(secs(verdict.expires_at.unwrap()), T0 + 29 * DAY);
    assert_eq!(verdict.licenses.len(), 20);
    assert_eq!(verdict.notice_seq, Some(13));
    let events = drain(&mut rx);
    assert_eq!(
        count(&events, "license.verification_failed"),
        0,
        "{events:?}"
    );
    assert_eq!(count(&events, "license.revoked"), 13);
}

#[tokio::test(start_paused = true)]
async fn a_notice_source_with_junk_is_reported_and_fixed_it_applies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let notices = dir.path().join("notices");
    write(&path, &[&license("lic-1", T0 + 300 * DAY)]);
    // Not text at all.
    std::fs::write(&notices, [0xff, 0xfe, 0x00, 0x9c, b'\n']).unwrap();
    let clock = TestClock::new(at(T0));
    let (monitor, mut rx) = start_with_notices(&clock, &path, &notices).await;
    assert_eq!(monitor.verdict().state, LicenseState::Valid);
    let shown = file(&notices).describe();
    let events = drain(&mut rx);
    assert_eq!(failures_of(&events, &shown), ["malformed"], "{events:?}");
    // Too many lines of junk: another fault, reported at once; the license stands.
    write(&notices, &["junk"; 40]);
    run_for(10).await;
    assert_eq!(monitor.verdict().state, LicenseState::Valid);
    let events = drain(&mut rx);
    assert_eq!(failures_of(&events, &shown), ["too_large"], "{events:?}");
    // Fixed: the vendor's revocation applies.
    write(&notices, &[&revocation(1, T0, &["lic-1"])]);
    let verdict = monitor.check_now().await;
    assert_eq!(verdict.reason, Some(GraceReason::Revoked), "{verdict:?}");
    assert_eq!(verdict.notice_seq, Some(1));
    let events = drain(&mut rx);
    assert!(names(&events).contains(&"license.revoked"), "{events:?}");
    assert!(
        events.iter().any(|e| matches!(e,
            LicenseEvent::Recovered { source, previous_reason: "too_large", .. } if *source == shown)),
        "{events:?}"
    );
    // Junk again: the revocation stays (the judge keeps what it accepted).
    std::fs::remove_file(&notices).unwrap();
    std::fs::create_dir(&notices).unwrap();
    let verdict = monitor.check_now().await;
    assert_eq!(verdict.reason, Some(GraceReason::Revoked), "{verdict:?}");
    assert_eq!(failures_of(&drain(&mut rx), &shown), ["unreadable"]);
}

#[tokio::test(start_paused = true)]
async fn a_license_in_the_notice_source_is_refused_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let notices = dir.path().join("notices");
    write(&path, &[&license("lic-1", T0 + 10 * DAY)]);
    write(&notices, &[&license("lic-2", T0 + 300 * DAY)]);
    let clock = TestClock::new(at(T0));
    let (monitor, mut rx) = start_with_notices(&clock, &path, &notices).await;
    let verdict = monitor.verdict();
    assert_eq!(
        secs(verdict.expires_at.unwrap()),
        T0 + 10 * DAY,
        "not a license"
    );
    let events = drain(&mut rx);
    match events
        .iter()
        .find(|e| e.name() == "license.notice_rejected")
    {
        Some(LicenseEvent::NoticeRejected { error, line, .. }) => {
            assert_eq!(error.reason(), "wrong_type");
            // Numbered after the license source's lines.
            assert_eq!(*line, 2);
        }
        other => panic!("{other:?} in {events:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_state_file_that_cannot_be_written_is_reported_once_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    // A regular file where the state file's directory should be: every write fails with
    // ENOTDIR, as root too.
    let blocker = dir.path().join("state");
    std::fs::write(&blocker, "not a directory").unwrap();
    let state = blocker.join("state.json");
    write(&path, &[&license("lic-1", T0 + 300 * DAY)]);
    let clock = TestClock::new(at(T0));
    let (monitor, mut rx) = start(
        builder(&clock, file(&path))
            .state_file(&state)
            .check_interval(Duration::from_secs(3600))
            .watch_file(false),
    )
    .await;
    let before = monitor.verdict();
    assert_eq!(before.state, LicenseState::Valid);
    run_for(2 * HOUR).await;
    let events = drain(&mut rx);
    let failed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            LicenseEvent::StateWriteFailed {
                path,
                reason,
                detail,
            } => Some((path, *reason, detail)),
            _ => None,
        })
        .collect();
    assert!((1..=3).contains(&failed.len()), "{failed:?}");
    let (shown, reason, detail) = failed[0];
    assert_eq!(*shown, state.display().to_string());
    assert_eq!(reason, "unwritable");
    assert!(detail.contains("state.json"), "{detail}");
    let event = events
        .iter()
        .find(|e| e.name() == "license.state_write_failed")
        .unwrap();
    assert_eq!(event.level(), tracing::Level::WARN);
    let metrics = monitor.metrics();
    assert!(metrics.state_write_failing);
    assert!(metrics.state_write_failures >= 2, "{metrics:?}");
    assert_eq!(
        metrics.events["license.state_write_failed"],
        failed.len() as u64
    );
    // The verdict is not touched.
    let verdict = monitor.verdict();
    assert_eq!(verdict.state, LicenseState::Valid);
    assert_eq!(verdict.expires_at, before.expires_at);
    #[cfg(feature = "prometheus")]
    {
        let text = monitor.metrics_service().render().unwrap();
        assert!(
            text.contains("\niosetu_license_state_write_failing 1.0\n"),
            "{text}"
        );
        assert!(text.contains("iosetu_license_state_write_failures_total "));
    }

    // The path is put right: the next write goes through, and the gauge clears.
    std::fs::remove_file(&blocker).unwrap();
    std::fs::create_dir(&blocker).unwrap();
    run_for(MINUTE).await;
    let metrics = monitor.metrics();
    assert!(!metrics.state_write_failing, "{metrics:?}");
    let text = std::fs::read_to_string(&state).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(json["high_water"].as_i64().unwrap() >= T0 + 2 * HOUR);
    assert_eq!(count(&drain(&mut rx), "license.state_write_failed"), 0);
    #[cfg(feature = "prometheus")]
    {
        let text = monitor.metrics_service().render().unwrap();
        assert!(
            text.contains("\niosetu_license_state_write_failing 0.0\n"),
            "{text}"
        );
    }
}
