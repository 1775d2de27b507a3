//! The monitor driven through whole license lives in tokio's paused time.
//!
//! Nothing here sleeps for real: the test clock's wall side follows tokio's paused clock,
//! and receiving an event lets the runtime jump straight to the checker's next wake.
//! File sources here are reloaded with `check_now()`: the directory watch and the poll
//! are real-time triggers, tested in `tests/reload.rs`.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iosetu_license::{
    Claims, GraceReason, LicenseEvent, LicenseMonitor, LicenseSigner, LicenseSource, LicenseState,
    TestClock,
};
use tokio::sync::broadcast::{self, error::RecvError};

const T0: u64 = 1_800_000_000; // 2027-01-15T08:00:00Z
const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0)
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn signer() -> LicenseSigner {
    LicenseSigner::from_seed([3; 32])
}

fn license(customer: &str, exp: i64) -> String {
    signer().sign(&Claims::new(customer, exp))
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Waits for the next event with this name, skipping others; returns it and the wall time
/// (of the test clock) at which it arrived.
async fn next_named(
    rx: &mut broadcast::Receiver<LicenseEvent>,
    clock: &TestClock,
    name: &str,
) -> (LicenseEvent, i64) {
    use iosetu_license::Clock;
    loop {
        match rx.recv().await {
            Ok(event) if event.name() == name => return (event, secs(clock.wall())),
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => panic!("lagged by {n} events waiting for {name}"),
            Err(RecvError::Closed) => panic!("closed waiting for {name}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn one_license_through_its_whole_life() {
    let clock = TestClock::new(t0());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let exp = T0 as i64 + 40 * DAY;
    write(&path, &format!("{}\n", license("Acme", exp)));

    let builder = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::File(path.clone()))
        .watch_file(false)
        .file_poll_interval(None)
        .clock(clock.clone());
    let mut rx = builder.subscribe();
    let monitor = builder.start().await.unwrap();

    let (loaded, _) = next_named(&mut rx, &clock, "license.loaded").await;
    assert!(matches!(loaded, LicenseEvent::Loaded { ref customer, .. } if customer == "Acme"));
    assert_eq!(monitor.verdict().state, LicenseState::Valid);
    assert_eq!(monitor.verdict().band, None);

    // Each alert at its crossing: the first second with less than the band's width left.
    for (name, width, days) in [
        ("license.expiring_30d", 30 * DAY, 29),
        ("license.expiring_7d", 7 * DAY, 6),
        ("license.expiring_24h", DAY, 0),
        ("license.expiring_1h", HOUR, 0),
    ] {
        let (event, at) = next_named(&mut rx, &clock, name).await;
        let crossing = exp - width + 1;
        assert!(
            (at - crossing).abs() <= 1,
            "{name} at {at}, crossing at {crossing}"
        );
        match event {
            LicenseEvent::Expiring {
                days_remaining,
                customer,
                ..
            } => {
                assert_eq!(days_remaining, days, "{name}");
                assert_eq!(customer, "Acme");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(monitor.verdict().state, LicenseState::Valid);
        assert_eq!(monitor.health().http_status(), 200);
    }

    let (entered, at) = next_named(&mut rx, &clock, "license.grace_mode_entered").await;
    assert!((at - exp).abs() <= 1, "grace entered at {at}, exp {exp}");
    match entered {
        LicenseEvent::GraceModeEntered {
            reason,
            grace_period_seconds,
            grace_started_at,
            ..
        } => {
            assert_eq!(reason, GraceReason::Expired);
            assert_eq!(grace_period_seconds, 86_400);
            assert_eq!(secs(grace_started_at), exp);
        }
        other => panic!("unexpected {other:?}"),
    }
    let verdict = monitor.verdict();
    assert_eq!(verdict.state, LicenseState::Grace);
    assert!(verdict.admits());
    assert_eq!(verdict.claims.as_ref().unwrap().customer, "Acme");
    assert_eq!(
        monitor.health().to_json(),
        r#"{"status":"degraded","license":{"valid":false,"grace_mode":true}}"#
    );

    let (_, at) = next_named(&mut rx, &clock, "license.grace_period_expired").await;
    assert!((at - (exp + DAY)).abs() <= 1, "cut-off at {at}");
    assert_eq!(monitor.verdict().state, LicenseState::GraceExpired);
    assert!(!monitor.verdict().admits());
    assert_eq!(monitor.health().http_status(), 503);

    // Renewal: a new file, picked up on demand.
    let new_exp = secs(iosetu_license::Clock::wall(&clock)) + 365 * DAY;
    write(&path, &license("Acme", new_exp));
    let verdict = monitor.check_now().await;
    assert_eq!(verdict.state, LicenseState::Valid);
    assert_eq!(secs(verdict.expires_at.unwrap()), new_exp);
    let (exited, _) = next_named(&mut rx, &clock, "license.grace_mode_exited").await;
    assert!(matches!(exited, LicenseEvent::GraceModeExited { .. }));
    assert_eq!(monitor.health().http_status(), 200);
}

#[tokio::test(start_paused = true)]
async fn periodic_checks_repeat_the_alert_while_in_its_band() {
    let clock = TestClock::new(t0());
    let exp = T0 as i64 + 3 * DAY;
    let builder = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(license("Acme", exp)))
        .clock(clock.clone());
    let mut rx = builder.subscribe();
    let _monitor = builder.start().await.unwrap();
    // Already inside the 7-day band at start: only the innermost alert, at once.
    let mut names = Vec::new();
    while let Ok(event) = rx.try_recv() {
        names.push(event.name());
    }
    assert_eq!(names, ["license.loaded", "license.expiring_7d"]);
    // Then again at every hourly check.
    let (_, first) = next_named(&mut rx, &clock, "license.expiring_7d").await;
    let (_, second) = next_named(&mut rx, &clock, "license.expiring_7d").await;
    assert_eq!(first - T0 as i64, HOUR);
    assert_eq!(second - first, HOUR);
}

#[tokio::test(start_paused = true)]
async fn a_long_pause_is_one_re_evaluation_not_a_replay() {
    let clock = TestClock::new(t0());
    let exp = T0 as i64 + 40 * DAY;
    let builder = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(license("Acme", exp)))
        .clock(clock.clone())
        .check_interval(Duration::from_secs(90 * 86_400));
    let mut rx = builder.subscribe();
    let monitor = builder.start().await.unwrap();
    while rx.try_recv().is_ok() {}
    // Jump past three bands at once, as a resumed machine would.
    tokio::time::advance(Duration::from_secs(39 * 86_400 + 100)).await;
    let mut names = vec![rx.recv().await.unwrap().name()];
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    while let Ok(event) = rx.try_recv() {
        names.push(event.name());
    }
    // The checker woke for the 30-day edge, found itself 39 days on, and reported the
    // band it is in now, once.
    assert_eq!(names, ["license.expiring_24h"]);
    assert_eq!(
        monitor.verdict().band,
        Some(iosetu_license::ExpiryBand::Hours24)
    );
}

#[tokio::test(start_paused = true)]
async fn no_license_starts_in_grace_and_is_cut_off_after_the_period() {
    let clock = TestClock::new(t0());
    let builder = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Env(
            "IOSETU_TEST_SURELY_UNSET_VARIABLE".into(),
        ))
        .clock(clock.clone())
        .grace_period(Duration::from_secs(2 * 3600));
    let mut rx = builder.subscribe();
    let monitor = builder.start().await.unwrap();
    let names: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
        .map(|e| e.name())
        .collect();
    assert_eq!(names, ["license.missing", "license.grace_mode_entered"]);
    let verdict = monitor.verdict();
    assert_eq!(verdict.state, LicenseState::Grace);
    assert_eq!(verdict.reason, Some(GraceReason::Missing));
    assert!(verdict.claims.is_none());
    assert_eq!(secs(verdict.grace_ends_at.unwrap()), T0 as i64 + 2 * HOUR);

    // license.missing again at the hourly check, and the anchor does not move.
    let (_, at) = next_named(&mut rx, &clock, "license.missing").await;
    assert_eq!(at, T0 as i64 + HOUR);
    assert_eq!(secs(monitor.verdict().grace_started_at.unwrap()), T0 as i64);

    let (_, at) = next_named(&mut rx, &clock, "license.grace_period_expired").await;
    assert_eq!(at, T0 as i64 + 2 * HOUR);
    assert_eq!(monitor.verdict().state, LicenseState::GraceExpired);
}

#[tokio::test(start_paused = true)]
async fn a_failing_source_keeps_the_last_valid_license_until_its_own_exp() {
    let clock = TestClock::new(t0());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let exp = T0 as i64 + 10 * DAY;
    write(&path, &license("Acme", exp));
    let builder = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::File(path.clone()))
        .watch_file(false)
        .file_poll_interval(None)
        .clock(clock.clone());
    let mut rx = builder.subscribe();
    let monitor = builder.start().await.unwrap();
    while rx.try_recv().is_ok() {}

    // Garbage, then a token signed by someone else, then nothing at all.
    let forger = LicenseSigner::from_seed([66; 32]);
    let cases = [
        ("garbage", "license.verification_failed", "malformed"),
        ("forged", "license.verification_failed", "bad_signature"),
        ("deleted", "license.missing", "missing"),
    ];
    for (what, name, reason) in cases {
        match what {
            "garbage" => write(&path, "this is not a license"),
            "forged" => write(&path, &forger.sign(&Claims::new("Acme", exp + 365 * DAY))),
            _ => std::fs::remove_file(&path).unwrap(),
        }
        let verdict = monitor.check_now().await;
        assert_eq!(verdict.state, LicenseState::Valid, "{what}");
        assert_eq!(secs(verdict.expires_at.unwrap()), exp, "{what}");
        let events: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        let failure = events
            .iter()
            .find(|e| e.name() == name)
            .unwrap_or_else(|| panic!("{what}: {events:?}"));
        match failure {
            LicenseEvent::VerificationFailed {
                error,
                kept_previous,
                ..
            }
            | LicenseEvent::Missing {
                error,
                kept_previous,
                ..
            } => {
                assert_eq!(error.reason(), reason, "{what}");
                assert!(kept_previous, "{what}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Reported again at the next periodic check until fixed.
    let (_, at) = next_named(&mut rx, &clock, "license.missing").await;
    assert_eq!(at, T0 as i64 + HOUR);

    // The kept license still expires at its own exp, and grace is anchored there.
    let (_, at) = next_named(&mut rx, &clock, "license.grace_mode_entered").await;
    assert_eq!(at, exp);
    assert_eq!(secs(monitor.verdict().grace_started_at.unwrap()), exp);
}

#[tokio::test(start_paused = true)]
async fn swapping_an_expired_license_for_garbage_does_not_restart_grace() {
    let clock = TestClock::new(t0());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let exp = T0 as i64 - 2 * HOUR; // expired before the service started
    write(&path, &license("Acme", exp));
    let monitor = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::File(path.clone()))
        .watch_file(false)
        .file_poll_interval(None)
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    let verdict = monitor.verdict();
    assert_eq!(verdict.state, LicenseState::Grace);
    assert_eq!(
        secs(verdict.grace_started_at.unwrap()),
        exp,
        "anchored at exp, not at start"
    );
    assert_eq!(secs(verdict.grace_ends_at.unwrap()), exp + DAY);

    write(&path, "garbage");
    tokio::time::advance(Duration::from_secs(600)).await;
    let verdict = monitor.check_now().await;
    assert_eq!(secs(verdict.grace_ends_at.unwrap()), exp + DAY);
    std::fs::remove_file(&path).unwrap();
    let verdict = monitor.check_now().await;
    assert_eq!(secs(verdict.grace_ends_at.unwrap()), exp + DAY);
}

#[tokio::test(start_paused = true)]
async fn a_license_long_expired_at_start_is_cut_off_at_once() {
    let clock = TestClock::new(t0());
    let builder = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(license("Acme", T0 as i64 - 15 * DAY)))
        .clock(clock.clone());
    let mut rx = builder.subscribe();
    let monitor = builder.start().await.unwrap();
    assert_eq!(monitor.verdict().state, LicenseState::GraceExpired);
    let names: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
        .map(|e| e.name())
        .collect();
    assert_eq!(
        names,
        [
            "license.loaded",
            "license.grace_mode_entered",
            "license.grace_period_expired"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn fail_closed_refuses_from_the_first_request_without_a_license() {
    let clock = TestClock::new(t0());
    let monitor = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(String::new()))
        .clock(clock.clone())
        .fail_closed(true)
        .start()
        .await
        .unwrap();
    assert_eq!(monitor.verdict().state, LicenseState::GraceExpired);
    assert!(!monitor.verdict().admits());
}

#[tokio::test(start_paused = true)]
async fn a_license_replaced_by_a_future_dated_renewal_stays_until_the_renewal_starts() {
    let clock = TestClock::new(t0());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    write(&path, &license("Acme", T0 as i64 + 10 * DAY));
    let monitor = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::File(path.clone()))
        .watch_file(false)
        .file_poll_interval(None)
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    let mut rx = monitor.subscribe();
    // The operator replaces the file instead of adding a line: the renewal is held, and
    // the license in force (verified, and in its window) stays until the renewal starts,
    // so coverage runs on without a gap.
    let mut future = Claims::new("Acme", T0 as i64 + 400 * DAY);
    future.nbf = Some(T0 as i64 + 5 * DAY);
    write(&path, &signer().sign(&future));
    let verdict = monitor.check_now().await;
    assert_eq!(verdict.state, LicenseState::Valid);
    assert_eq!(secs(verdict.expires_at.unwrap()), T0 as i64 + 400 * DAY);
    assert_eq!(verdict.upcoming.len(), 1);
    let events: Vec<LicenseEvent> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, LicenseEvent::VerificationFailed { .. })),
        "{events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_checker_stops_when_the_last_handle_is_dropped() {
    let clock = TestClock::new(t0());
    let monitor = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(license("Acme", T0 as i64 + DAY)))
        .clock(clock)
        .start()
        .await
        .unwrap();
    let mut rx = monitor.subscribe();
    let clone = monitor.clone();
    drop(monitor);
    // A clone keeps it alive: the hourly check still runs.
    let event = rx.recv().await.unwrap();
    assert_eq!(event.name(), "license.expiring_24h");
    drop(clone);
    // The task ends and drops its sender: receivers see the channel close.
    loop {
        match rx.recv().await {
            Err(RecvError::Closed) => break,
            Ok(_) | Err(RecvError::Lagged(_)) => {}
        }
    }
}

#[tokio::test(start_paused = true)]
async fn start_refuses_only_programming_errors() {
    let err = LicenseMonitor::builder()
        .source(LicenseSource::Static(String::new()))
        .start()
        .await
        .unwrap_err();
    assert_eq!(err, iosetu_license::StartError::NoPublicKey);
    let err = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .check_interval(Duration::ZERO)
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, iosetu_license::StartError::InvalidSetting(_)));
}

#[test]
fn start_outside_a_runtime_is_an_error_not_a_panic() {
    let future = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(String::new()))
        .start();
    // Polled by a bare executor with no tokio runtime around it.
    let result = futures_lite_block_on(future);
    assert_eq!(result.unwrap_err(), iosetu_license::StartError::NoRuntime);
}

/// A minimal executor: enough to poll a future that never waits.
fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the future waited"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_that_never_reads_does_not_slow_the_checker() {
    let clock = TestClock::new(t0());
    let exp = T0 as i64 + 20 * DAY;
    let builder = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(license("Acme", exp)))
        .clock(clock.clone())
        .check_interval(Duration::from_secs(60));
    let mut stuck = builder.subscribe();
    let monitor = builder.start().await.unwrap();
    // 2000 one-minute checks, each with an alert: far more than a receiver buffers.
    let mut live = monitor.subscribe();
    for _ in 0..2000 {
        live.recv().await.unwrap();
    }
    assert!(secs(iosetu_license::Clock::wall(&clock)) >= T0 as i64 + 2000 * 60 - 60);
    assert!(matches!(
        stuck.try_recv(),
        Err(broadcast::error::TryRecvError::Lagged(_))
    ));
}
