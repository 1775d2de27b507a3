//! The trusted-time review's findings, each through the whole monitor in paused time:
//! honest clock faults never cut a paying customer off, casual tampering never gets
//! through, and no clock reading or stored value panics (DESIGN "Trusted time").

use std::time::Duration;

use iosetu_license::{
    Claims, DriftKind, GraceReason, LicenseEvent, LicenseMonitor, LicenseSource, LicenseState,
    TestClock,
};

mod common;
use common::{
    DAY, HOUR, MINUTE, T0, at, builder, drain, find, names, run_for, secs, signer, start, t0,
};

fn source(claims: &Claims) -> LicenseSource {
    LicenseSource::Static(signer().sign(claims))
}

async fn advance(secs: i64) {
    tokio::time::advance(Duration::from_secs(secs as u64)).await;
}

#[tokio::test(start_paused = true)]
async fn finding_3_a_clock_a_year_ahead_at_boot_corrected_by_ntp_is_not_manipulation() {
    let year = 365 * DAY;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let clock = TestClock::new(at(T0 + year));
    clock.set_provisional(true);
    let license = source(&Claims::new("Acme", T0 + 90 * DAY));
    let (monitor, mut rx) = start(builder(&clock, license.clone()).state_file(&state)).await;
    // A year ahead the license looks expired beyond grace; provisional readings alone
    // never cut off: held as grace.
    let first = monitor.verdict();
    assert_eq!(first.state, LicenseState::Grace);
    assert!(first.admits());
    assert!(!state.exists(), "provisional readings are never persisted");

    // NTP steps the clock back within the boot window.
    advance(40).await;
    clock.jump_wall(-year);
    let verdict = monitor.check_now().await;
    let events = drain(&mut rx);
    assert_eq!(verdict.state, LicenseState::Valid, "{events:?}");
    match find(&events, "license.time_drift_detected") {
        LicenseEvent::TimeDriftDetected {
            kind: DriftKind::ClockCorrected,
            drift_seconds,
        } => assert!(*drift_seconds < -(year as f64) + 60.0),
        other => panic!("{other:?}"),
    }
    assert!(!names(&events).contains(&"license.time_manipulation_detected"));

    // The window closes; a day and more later the customer is still valid.
    clock.set_provisional(false);
    advance(25 * HOUR).await;
    assert_eq!(monitor.check_now().await.state, LicenseState::Valid);
    drop(monitor);

    // A restart with the state file: still valid (the wrong mark was never persisted).
    let (again, mut rx) = start(builder(&clock, license).state_file(&state)).await;
    assert_eq!(again.verdict().state, LicenseState::Valid);
    assert!(!names(&drain(&mut rx)).contains(&"license.time_manipulation_detected"));
}

#[tokio::test(start_paused = true)]
async fn finding_3_an_rtc_kept_in_local_time_corrected_at_the_window_end_is_not_manipulation() {
    let ahead = 5 * HOUR + 30 * MINUTE;
    let clock = TestClock::new(at(T0 + ahead));
    clock.set_provisional(true);
    let (monitor, mut rx) =
        start(builder(&clock, source(&Claims::new("Acme", T0 + 90 * DAY)))).await;
    assert_eq!(monitor.verdict().state, LicenseState::Valid);
    advance(14 * MINUTE).await;
    // Corrected by the first reading after the window.
    clock.set_provisional(false);
    clock.jump_wall(-ahead);
    run_for(2 * MINUTE).await;
    let events = drain(&mut rx);
    assert!(
        !names(&events).contains(&"license.time_manipulation_detected"),
        "{events:?}"
    );
    advance(30 * HOUR).await;
    assert_eq!(monitor.check_now().await.state, LicenseState::Valid);
}

#[tokio::test(start_paused = true)]
async fn a_clock_set_back_inside_the_boot_window_is_caught_when_it_closes() {
    // The attacker's side of the boot window: with the state file, trusted time holds the
    // stored mark meanwhile, and the window's end judges the wall.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let clock = TestClock::new(t0());
    let license = source(&Claims::new("Acme", T0 + 2 * DAY));
    let (first, _rx) = start(builder(&clock, license.clone()).state_file(&state)).await;
    drop(first);
    advance(MINUTE).await;
    clock.set_provisional(true);
    clock.jump_wall(-30 * DAY);
    let (monitor, mut rx) = start(builder(&clock, license).state_file(&state)).await;
    let verdict = monitor.verdict();
    assert!(
        secs(verdict.evaluated_at) >= T0,
        "trusted time kept the stored mark"
    );
    clock.set_provisional(false);
    run_for(MINUTE + 1).await;
    let events = drain(&mut rx);
    find(&events, "license.time_manipulation_detected");
    assert_eq!(
        monitor.verdict().reason,
        Some(GraceReason::ClockManipulation)
    );
}

#[tokio::test(start_paused = true)]
async fn finding_4_a_vendor_clock_minutes_fast_never_bricks_the_customer() {
    let clock = TestClock::new(t0());
    let mut claims = Claims::new("Acme", T0 + 90 * DAY);
    claims.iat = Some(T0 + 10 * MINUTE);
    let (monitor, mut rx) = start(builder(&clock, source(&claims))).await;
    let events = drain(&mut rx);
    assert_eq!(monitor.verdict().state, LicenseState::Valid);
    assert!(
        matches!(
            find(&events, "license.time_drift_detected"),
            LicenseEvent::TimeDriftDetected {
                kind: DriftKind::BehindIssueTime,
                ..
            }
        ),
        "{events:?}"
    );
    assert!(!names(&events).contains(&"license.time_manipulation_detected"));
    // By hour 38 today's main refused it; here it stays valid, checked every hour.
    advance(38 * HOUR).await;
    assert_eq!(monitor.check_now().await.state, LicenseState::Valid);
    // At most one drift report per check interval, not one per wake.
    let repeats = drain(&mut rx)
        .iter()
        .filter(|e| e.name() == "license.time_drift_detected")
        .count();
    assert_eq!(repeats, 0, "the wall caught up with iat after ten minutes");
}

#[tokio::test(start_paused = true)]
async fn finding_5_a_creeping_rollback_is_reported() {
    let clock = TestClock::new(t0());
    let (monitor, mut rx) =
        start(builder(&clock, source(&Claims::new("Acme", T0 + 90 * DAY)))).await;
    drain(&mut rx);
    // 4 s back every 2 s: no single step is over the 5 s threshold.
    for _ in 0..1000 {
        advance(2).await;
        clock.jump_wall(-4);
        monitor.check_now().await;
    }
    let events = drain(&mut rx);
    let reported = events
        .iter()
        .filter(|e| e.name() == "license.time_manipulation_detected")
        .count();
    assert_eq!(reported, 1, "{:?}", names(&events));
    let verdict = monitor.verdict();
    assert_eq!(verdict.reason, Some(GraceReason::ClockManipulation));
    assert_eq!(secs(verdict.evaluated_at), T0 + 2000, "trusted time held");
}

#[tokio::test(start_paused = true)]
async fn finding_6_a_suspend_past_the_cut_off_buys_at_most_a_minute() {
    let clock = TestClock::new(t0());
    let (monitor, _rx) = start(
        builder(&clock, source(&Claims::new("Acme", T0 + HOUR)))
            .grace_period(Duration::from_secs(HOUR as u64)),
    )
    .await;
    advance(10 * MINUTE).await;
    assert!(monitor.verdict().admits());
    // Suspended for three hours: wall and BOOTTIME move, tokio's timers do not.
    clock.suspend(Duration::from_secs(3 * HOUR as u64));
    run_for(MINUTE + 1).await;
    let verdict = monitor.verdict();
    assert_eq!(verdict.state, LicenseState::GraceExpired, "{verdict:?}");
    assert!(!verdict.admits());
}

#[tokio::test(start_paused = true)]
async fn finding_7_a_sighup_storm_is_not_an_alert_storm() {
    let clock = TestClock::new(t0());
    let (monitor, mut rx) = start(
        builder(&clock, source(&Claims::new("Acme", T0 + 20 * DAY)))
            .check_interval(Duration::from_secs(HOUR as u64)),
    )
    .await;
    assert_eq!(
        names(&drain(&mut rx)),
        ["license.loaded", "license.expiring_30d"]
    );
    for _ in 0..300 {
        monitor.check_now().await;
    }
    assert!(
        drain(&mut rx).is_empty(),
        "no repeat within the check interval"
    );
    // The periodic check repeats it, once.
    run_for(HOUR + 1).await;
    assert_eq!(names(&drain(&mut rx)), ["license.expiring_30d"]);
    for _ in 0..300 {
        monitor.check_now().await;
    }
    // Nothing was lost to lagging, and nothing was repeated.
    assert!(drain(&mut rx).is_empty());
    // Grace is entered as before, and a subscriber sees it.
    advance(20 * DAY).await;
    run_for(1).await;
    find(&drain(&mut rx), "license.grace_mode_entered");
}

#[tokio::test(start_paused = true)]
async fn finding_1_a_clock_before_1970_and_far_future_state_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    // 1965, no license: grace anchored in 1965, formatted, no panic.
    let clock = TestClock::new(at(-157_766_400));
    let (monitor, mut rx) =
        start(builder(&clock, LicenseSource::Static(String::new())).state_file(&state)).await;
    let verdict = monitor.verdict();
    assert_eq!(verdict.state, LicenseState::Grace);
    assert_eq!(secs(verdict.grace_started_at.unwrap()), -157_766_400);
    for event in drain(&mut rx) {
        let _ = event.attributes();
    }
    drop(monitor);
    // A well-formed state file whose anchor is the last second of year 9999.
    std::fs::write(
        &state,
        r#"{"version":1,"high_water":253402300799,"grace_anchor":253402300799}"#,
    )
    .unwrap();
    let clock = TestClock::new(t0());
    let (monitor, mut rx) =
        start(builder(&clock, LicenseSource::Static(String::new())).state_file(&state)).await;
    for event in drain(&mut rx) {
        let _ = event.attributes();
    }
    // The stored mark is our own evidence: the clock reads far behind it.
    assert_eq!(
        monitor.verdict().reason,
        Some(GraceReason::ClockManipulation)
    );
    let _ = monitor.metrics();
}

#[cfg(unix)]
#[tokio::test]
async fn finding_2_a_fifo_swapped_in_for_the_state_file_never_hangs_start() {
    // A swapper thread flips the state path between a regular file and a FIFO while
    // monitors start: each start must return (today's main hung 4 of 4 tries).
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let fifo = dir.path().join("fifo");
    let regular = dir.path().join("regular");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (state, fifo, regular, stop) =
            (state.clone(), fifo.clone(), regular.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = rustix::fs::mkfifoat(
                    rustix::fs::CWD,
                    &fifo,
                    rustix::fs::Mode::from_raw_mode(0o600),
                );
                let _ = std::fs::rename(&fifo, &state);
                let _ = std::fs::write(
                    &regular,
                    r#"{"version":1,"high_water":1,"grace_anchor":null}"#,
                );
                let _ = std::fs::rename(&regular, &state);
            }
        })
    };
    let clock = TestClock::new(t0());
    for _ in 0..50 {
        let started = tokio::time::timeout(
            Duration::from_secs(20),
            start(builder(&clock, LicenseSource::Static(String::new())).state_file(&state)),
        )
        .await;
        assert!(started.is_ok(), "start() hung on the state file");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_clock_set_back_after_expiry_stays_expired() {
    // Catalog C3, and the tamperer's side of the mark: a restart with the state file and
    // the clock set back does not bring the license back.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let clock = TestClock::new(t0());
    let license = source(&Claims::new("Acme", T0 + HOUR));
    let (monitor, _rx) = start(
        builder(&clock, license.clone())
            .grace_period(Duration::from_secs(HOUR as u64))
            .state_file(&state),
    )
    .await;
    advance(2 * HOUR + MINUTE).await;
    assert!(!monitor.check_now().await.admits());
    drop(monitor);
    clock.jump_wall(-3 * HOUR);
    let (monitor, mut _rx) = start(
        builder(&clock, license)
            .grace_period(Duration::from_secs(HOUR as u64))
            .state_file(&state),
    )
    .await;
    assert!(
        !monitor.verdict().admits(),
        "{:?} {:?}",
        monitor.verdict(),
        drain(&mut _rx)
    );
}

#[tokio::test(start_paused = true)]
async fn a_build_time_after_expiry_means_expired_whatever_the_clock_says() {
    let clock = TestClock::new(t0());
    let (monitor, mut rx) = start(
        builder(&clock, source(&Claims::new("Acme", T0 + DAY)))
            .built_at(at(T0 + 10 * DAY))
            .grace_period(Duration::from_secs(HOUR as u64)),
    )
    .await;
    let events = drain(&mut rx);
    assert!(!monitor.verdict().admits(), "{events:?}");
    assert!(matches!(
        find(&events, "license.time_drift_detected"),
        LicenseEvent::TimeDriftDetected {
            kind: DriftKind::BehindBuildTime,
            ..
        }
    ));
    assert!(!names(&events).contains(&"license.time_manipulation_detected"));
}

/// A run with a valid license that leaves its state file in the returned directory.
async fn licensed_run_with_state() -> (TestClock, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(t0());
    let license = source(&Claims::new("Acme", T0 + 90 * DAY));
    let (first, _rx) =
        start(builder(&clock, license).state_file(dir.path().join("state.json"))).await;
    drop(first);
    (clock, dir)
}

/// The service started again on that state file, with no license.
async fn restart_without_license(clock: &TestClock, dir: &tempfile::TempDir) -> LicenseMonitor {
    let builder = builder(clock, LicenseSource::Static(String::new()))
        .state_file(dir.path().join("state.json"));
    start(builder).await.0
}

#[tokio::test(start_paused = true)]
async fn a_restart_after_long_downtime_without_a_license_still_gets_its_grace() {
    // The stored mark is two days old: real time has gone by while the service was down.
    // A grace period that starts now starts now, not at the old mark.
    let (clock, dir) = licensed_run_with_state().await;
    advance(2 * DAY).await;
    let monitor = restart_without_license(&clock, &dir).await;
    let verdict = monitor.verdict();
    assert_eq!(verdict.state, LicenseState::Grace, "{verdict:?}");
    assert_eq!(secs(verdict.grace_started_at.unwrap()), T0 + 2 * DAY);
    advance(DAY + MINUTE).await;
    assert!(!monitor.check_now().await.admits());
}

#[tokio::test(start_paused = true)]
async fn a_clock_set_ahead_before_a_restart_does_not_stretch_grace() {
    // The tamperer's side of the test above: the clock set 30 days ahead, the service
    // restarted without a license (grace anchored at the wrong now), the clock put back.
    let (clock, dir) = licensed_run_with_state().await;
    clock.jump_wall(30 * DAY);
    let monitor = restart_without_license(&clock, &dir).await;
    assert_eq!(monitor.verdict().state, LicenseState::Grace);
    advance(MINUTE).await;
    clock.jump_wall(-30 * DAY);
    monitor.check_now().await;
    // Grace runs from the real restart, not from thirty days on (nor from the correction,
    // a minute later).
    advance(DAY - 30).await;
    assert!(
        !monitor.check_now().await.admits(),
        "{:?}",
        monitor.verdict()
    );
}
