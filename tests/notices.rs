//! Vendor notices end to end: lines in a real license file, the monitor with a state file,
//! in paused time (the test clock) or against a real axum server over loopback.

use std::path::Path;

mod common;
use common::notices::{attestation, file, license, revocation, start_with_notices, write};
use common::{
    DAY, HOUR, T0, at, builder, drain, find, names, run_for, secs, serve_hello as serve, signer,
    start, status_of_hello as status,
};

use http::StatusCode;
use iosetu_license::{
    Claims, GraceReason, LicenseEvent, LicenseMonitor, LicenseSource, LicenseState, Notice,
    TestClock,
};

#[tokio::test(start_paused = true)]
async fn a_revocation_applies_from_its_iat_and_the_license_keeps_its_own_grace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let lic = license("lic-2027", T0 + 300 * DAY);
    write(&path, &[&lic]);
    let clock = TestClock::new(at(T0));
    let (monitor, mut rx) = start(
        builder(&clock, file(&path))
            .grace_period(std::time::Duration::from_secs(2 * HOUR as u64))
            .state_file(dir.path().join("state.json")),
    )
    .await;
    assert!(monitor.verdict().is_valid());
    drain(&mut rx);
    // The vendor signed the revocation ten minutes ago; the customer installs it now.
    run_for(HOUR).await;
    write(&path, &[&lic, &revocation(1, T0 + 50 * 60, &["lic-2027"])]);
    let verdict = monitor.check_now().await;
    assert_eq!(verdict.state, LicenseState::Grace);
    assert_eq!(verdict.reason, Some(GraceReason::Revoked));
    assert_eq!(secs(verdict.grace_started_at.unwrap()), T0 + 50 * 60);
    assert_eq!(
        secs(verdict.grace_ends_at.unwrap()),
        T0 + 50 * 60 + 2 * HOUR
    );
    assert_eq!(verdict.notice_seq, Some(1));
    let events = drain(&mut rx);
    match find(&events, "license.revoked") {
        LicenseEvent::Revoked {
            jti,
            revoked_at,
            seq,
            in_set,
        } => {
            assert_eq!((jti.as_str(), *seq, *in_set), ("lic-2027", Some(1), true));
            assert_eq!(secs(*revoked_at), T0 + 50 * 60);
        }
        other => panic!("{other:?}"),
    }
    match find(&events, "license.grace_mode_entered") {
        LicenseEvent::GraceModeEntered { reason, .. } => assert_eq!(reason.code(), "revoked"),
        other => panic!("{other:?}"),
    }
    let metrics = monitor.metrics();
    assert_eq!((metrics.notice_seq, metrics.revocations), (Some(1), 1));
    // Its grace runs out where it would have after expiry at the revocation.
    run_for(2 * HOUR).await;
    let verdict = monitor.verdict();
    assert!(!verdict.admits());
    assert_eq!(verdict.reason, Some(GraceReason::Revoked));
}

#[tokio::test(start_paused = true)]
async fn a_deleted_notice_line_keeps_its_revocations_with_a_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let state = dir.path().join("state.json");
    let lic = license("lic-2027", T0 + 300 * DAY);
    write(&path, &[&lic, &revocation(1, T0, &["lic-2027"])]);
    let clock = TestClock::new(at(T0));
    let (monitor, _) = start(builder(&clock, file(&path)).state_file(&state)).await;
    assert_eq!(monitor.verdict().reason, Some(GraceReason::Revoked));
    drop(monitor);
    run_for(60).await;
    // The customer deletes the notice's line and restarts: still revoked.
    write(&path, &[&lic]);
    let (monitor, mut rx) = start(builder(&clock, file(&path)).state_file(&state)).await;
    let verdict = monitor.verdict();
    assert_eq!(verdict.reason, Some(GraceReason::Revoked));
    assert_eq!(secs(verdict.grace_started_at.unwrap()), T0);
    assert!(
        !names(&drain(&mut rx)).contains(&"license.revoked"),
        "not news"
    );
    let text = std::fs::read_to_string(&state).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["revoked"]["lic-2027"], T0);
    assert_eq!(json["notice_seq"]["Acme"], 1);
}

#[tokio::test(start_paused = true)]
async fn older_notices_and_other_customers_notices_are_refused_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let state = dir.path().join("state.json");
    let lic = license("lic-2027", T0 + 300 * DAY);
    write(&path, &[&lic, &revocation(5, T0 - DAY, &[])]);
    let clock = TestClock::new(at(T0));
    let (monitor, mut rx) = start(builder(&clock, file(&path)).state_file(&state)).await;
    assert_eq!(monitor.verdict().notice_seq, Some(5));
    drain(&mut rx);
    let mut foreign = Notice::new("Globex", T0, 9);
    foreign.revoke = vec!["lic-2027".into()];
    let foreign = signer().sign_notice(&foreign);
    // An old attestation (seq 4) and another customer's revocation: neither applies.
    write(&path, &[&lic, &attestation(4, T0), &foreign]);
    let verdict = monitor.check_now().await;
    assert!(verdict.is_valid());
    assert_eq!(verdict.notice_seq, Some(5));
    let events = drain(&mut rx);
    let mut refused: Vec<(&str, usize, Option<u64>)> = events
        .iter()
        .filter_map(|e| match e {
            LicenseEvent::NoticeRejected {
                error, line, seq, ..
            } => Some((error.reason(), *line, *seq)),
            _ => None,
        })
        .collect();
    refused.sort();
    assert_eq!(
        refused,
        [("customer_mismatch", 3, Some(9)), ("stale_seq", 2, Some(4))]
    );
    assert!(!names(&events).contains(&"license.clock_attested"));
    // Reported once per check interval, not at every read.
    monitor.check_now().await;
    assert!(!names(&drain(&mut rx)).contains(&"license.notice_rejected"));
}

/// A license of `customer` with `jti`, expiring at `exp`.
fn license_of(customer: &str, jti: &str, exp: i64) -> String {
    let mut claims = Claims::new(customer, exp);
    claims.jti = Some(jti.into());
    claims.iat = Some(T0 - DAY);
    signer().sign(&claims)
}

/// `customer`'s notice `seq`, signed at `iat`, revoking `jtis`.
fn revocation_of(customer: &str, seq: u64, iat: i64, jtis: &[&str]) -> String {
    let mut notice = Notice::new(customer, iat, seq);
    notice.revoke = jtis.iter().map(|j| (*j).to_owned()).collect();
    signer().sign_notice(&notice)
}

#[tokio::test(start_paused = true)]
async fn a_renamed_customers_revocation_applies_from_the_first_check() {
    // Judge finding: a source with a license under the old name and its renewal under
    // the new one, each revoked by a notice of its own name. The first check judged the
    // notices of one name only (the customer whose licenses reach further), then kept
    // the other name's license, valid; its revocation arrived with the next full check,
    // and the service went from valid to grace an hour after its start, its source
    // unchanged. Every name with a license in the source has its revocations applied
    // from the first check.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let revoked_at = T0 - 600;
    write(
        &path,
        &[
            &license_of("Acme Corp", "corp", T0 + 60 * DAY),
            &license_of("Acme Inc", "inc", T0 + 30 * DAY),
            &revocation_of("Acme Corp", 1, revoked_at, &["corp"]),
            &revocation_of("Acme Inc", 1, revoked_at, &["inc"]),
        ],
    );
    let clock = TestClock::new(at(T0));
    let (monitor, mut rx) = start(
        builder(&clock, file(&path)).grace_period(std::time::Duration::from_secs(2 * HOUR as u64)),
    )
    .await;
    let first = monitor.verdict();
    assert_eq!(first.state, LicenseState::Grace, "{first:?}");
    assert_eq!(first.reason, Some(GraceReason::Revoked));
    assert_eq!(secs(first.grace_ends_at.unwrap()), revoked_at + 2 * HOUR);
    let events = drain(&mut rx);
    let mut revoked: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            LicenseEvent::Revoked { jti, .. } => Some(jti.as_str()),
            _ => None,
        })
        .collect();
    revoked.sort_unstable();
    assert_eq!(revoked, ["corp", "inc"]);
    // The other name's notice is still refused for the set (its `seq` and any
    // attestation wait for a set of its own), and says so.
    assert!(names(&events).contains(&"license.notice_rejected"));
    // Full checks of the same text change nothing.
    for _ in 0..3 {
        run_for(HOUR / 4).await;
        let verdict = monitor.check_now().await;
        assert_eq!(
            (verdict.state, verdict.reason.clone(), verdict.grace_ends_at),
            (first.state, first.reason.clone(), first.grace_ends_at),
            "{verdict:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn notices_alone_are_no_license() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    write(&path, &[&revocation(1, T0, &["x"])]);
    let clock = TestClock::new(at(T0));
    let (monitor, mut rx) = start(builder(&clock, file(&path))).await;
    let verdict = monitor.verdict();
    assert_eq!(verdict.state, LicenseState::Grace);
    assert_eq!(verdict.reason, Some(GraceReason::Missing));
    let events = drain(&mut rx);
    match find(&events, "license.missing") {
        LicenseEvent::Missing { error, .. } => {
            assert!(error.to_string().contains("vendor notices but no license"))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_replayed_attestation_gains_nothing() {
    // Monday: a clock problem, fixed with attestation 1. Wednesday: the license has
    // expired and its grace is over; the clock is set back to Monday and the service
    // restarted with the old notice still in its source.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let source = || {
        let text = [license("lic-2027", T0 + HOUR), attestation(1, T0)].join("\n");
        LicenseSource::Static(text)
    };
    let clock = TestClock::new(at(T0));
    let (monitor, _) = start(builder(&clock, source()).state_file(&state)).await;
    assert!(monitor.verdict().is_valid());
    run_for(2 * DAY).await;
    assert!(!monitor.verdict().admits());
    drop(monitor);
    clock.jump_wall(-2 * DAY + 60);
    let (monitor, mut rx) = start(builder(&clock, source()).state_file(&state)).await;
    let verdict = monitor.verdict();
    assert!(!verdict.admits(), "{verdict:?}");
    let events = drain(&mut rx);
    assert!(names(&events).contains(&"license.time_manipulation_detected"));
    assert!(!names(&events).contains(&"license.clock_attested"));
}

fn real_license(jti: &str, now: i64) -> String {
    let mut claims = Claims::new("Acme", now + 300 * DAY);
    claims.jti = Some(jti.into());
    claims.iat = Some(now - DAY);
    signer().sign(&claims)
}

#[tokio::test]
async fn a_real_server_refuses_after_a_revocation_and_an_attestation_unbricks_it() {
    let now = common::now();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let state = dir.path().join("state.json");
    let start_on = |path: &Path| {
        LicenseMonitor::builder()
            .public_key(signer().public_key())
            .source(LicenseSource::File(path.to_path_buf()))
            .clock(common::SettledClock)
            .state_file(&state)
            .start()
    };

    // 1. A clock once set a year ahead left the stored mark there; the service was cut
    // off for a clock "set back" two days ago, and every restart finds the same.
    std::fs::write(
        &state,
        format!(
            r#"{{"version":3,"high_water":{},"grace_anchor":null,"not_valid_since":{}}}"#,
            now + 365 * DAY,
            now - 2 * DAY
        ),
    )
    .unwrap();
    let lic = real_license("lic-real", now);
    write(&path, &[&lic]);
    let monitor = start_on(&path).await.unwrap();
    let addr = serve(&monitor).await;
    assert_eq!(
        monitor.verdict().reason,
        Some(GraceReason::ClockManipulation)
    );
    assert_eq!(status(addr).await, StatusCode::SERVICE_UNAVAILABLE);

    // 2. The vendor attests the time; the customer adds the line: served again at once.
    let mut rx = monitor.subscribe();
    write(&path, &[&lic, &attestation(1, now)]);
    let verdict = monitor.check_now().await;
    assert!(verdict.is_valid(), "{verdict:?}");
    assert_eq!(status(addr).await, StatusCode::OK);
    match find(&drain(&mut rx), "license.clock_attested") {
        LicenseEvent::ClockAttested {
            seq,
            cleared_manipulation,
            trusted_time_moved_seconds,
            ..
        } => {
            assert_eq!((*seq, *cleared_manipulation), (1, true));
            assert!(*trusted_time_moved_seconds < -364 * DAY);
        }
        other => panic!("{other:?}"),
    }
    // The stored mark is re-based for good: a restart is valid, and does not use the
    // attestation again.
    let text = std::fs::read_to_string(&state).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        json["high_water"].as_i64().unwrap() <= common::now() + 5,
        "{json}"
    );
    drop(monitor);
    let monitor = start_on(&path).await.unwrap();
    assert!(monitor.verdict().is_valid());

    // 3. The vendor revokes the license (signed two days ago, so its grace of one day
    // is over): new requests are refused, with the reason in the verdict.
    let addr = serve(&monitor).await;
    assert_eq!(status(addr).await, StatusCode::OK);
    write(
        &path,
        &[
            &lic,
            &attestation(1, now),
            &revocation(2, now - 2 * DAY, &["lic-real"]),
        ],
    );
    let verdict = monitor.check_now().await;
    assert!(!verdict.admits());
    assert_eq!(verdict.reason, Some(GraceReason::Revoked));
    assert_eq!(status(addr).await, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(start_paused = true)]
async fn notices_can_come_from_a_second_file_polled_like_the_license() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let notices = dir.path().join("notices");
    write(&path, &[&license("lic-2027", T0 + 300 * DAY)]);
    let clock = TestClock::new(at(T0));
    let (monitor, mut rx) = start_with_notices(&clock, &path, &notices).await;
    // No notices file yet: nothing to say.
    assert!(monitor.verdict().is_valid());
    drain(&mut rx);
    // The vendor's revocation arrives in the second file; the poll picks it up.
    write(&notices, &[&revocation(1, T0, &["lic-2027"])]);
    run_for(10).await;
    let verdict = monitor.verdict();
    assert_eq!(verdict.reason, Some(GraceReason::Revoked), "{verdict:?}");
    match find(&drain(&mut rx), "license.revoked") {
        LicenseEvent::Revoked { seq, .. } => assert_eq!(*seq, Some(1)),
        other => panic!("{other:?}"),
    }
    // A notices file that cannot be read is reported, and the license state stands.
    std::fs::remove_file(&notices).unwrap();
    std::fs::create_dir(&notices).unwrap();
    let verdict = monitor.check_now().await;
    assert_eq!(verdict.reason, Some(GraceReason::Revoked));
    let events = drain(&mut rx);
    match find(&events, "license.verification_failed") {
        LicenseEvent::VerificationFailed { error, .. } => {
            assert_eq!(error.reason(), "unreadable", "{error}");
            assert!(error.to_string().contains("notices"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}
