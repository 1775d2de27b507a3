//! Clock manipulation and drift, through the whole monitor (attack catalog C rows).

use std::time::Duration;

use iosetu_license::{
    Claims, Clock, DriftKind, GraceReason, LicenseEvent, LicenseMonitor, LicenseSource,
    LicenseState, TestClock,
};
use tokio::sync::broadcast;

mod common;
use common::{DAY, HOUR, T0, drain, secs, signer, t0};

async fn start(
    clock: &TestClock,
    claims: Claims,
) -> (LicenseMonitor, broadcast::Receiver<LicenseEvent>) {
    common::start(common::builder(
        clock,
        LicenseSource::Static(signer().sign(&claims)),
    ))
    .await
}

#[tokio::test(start_paused = true)]
async fn clock_set_back_two_hours_is_manipulation_and_grace() {
    let clock = TestClock::new(t0());
    let exp = T0 + 3 * HOUR;
    let (monitor, mut rx) = start(&clock, Claims::new("Acme", exp)).await;
    drain(&mut rx);
    tokio::time::advance(Duration::from_secs(600)).await;

    clock.jump_wall(-7200);
    let verdict = monitor.check_now().await;
    let events = drain(&mut rx);
    let jump = events
        .iter()
        .find(|e| e.name() == "license.time_manipulation_detected")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(
        jump,
        &LicenseEvent::TimeManipulationDetected {
            wall_clock_jump_seconds: -7200
        }
    );
    assert!(
        events
            .iter()
            .any(|e| e.name() == "license.grace_mode_entered")
    );
    assert_eq!(verdict.state, LicenseState::Grace);
    assert_eq!(verdict.reason, Some(GraceReason::ClockManipulation));
    // Trusted time did not go back with the wall clock.
    assert_eq!(secs(verdict.evaluated_at), T0 + 600);
    assert_eq!(secs(verdict.grace_started_at.unwrap()), T0 + 600);
}

#[tokio::test(start_paused = true)]
async fn a_license_still_expires_at_its_real_time_with_the_clock_set_back() {
    // Catalog C2: `date -s "-30 days"` while valid, exp = T + 1 h.
    let clock = TestClock::new(t0());
    let exp = T0 + HOUR;
    let (monitor, mut rx) = start(&clock, Claims::new("Acme", exp)).await;
    drain(&mut rx);
    clock.jump_wall(-30 * DAY);
    tokio::time::advance(Duration::from_secs(60)).await;
    let verdict = monitor.check_now().await;
    assert_eq!(verdict.reason, Some(GraceReason::ClockManipulation));

    // Now the operator puts the clock right: the license is valid again, with its real
    // time left (not thirty days more).
    clock.jump_wall(30 * DAY);
    let verdict = monitor.check_now().await;
    assert_eq!(verdict.state, LicenseState::Valid);
    assert!(
        drain(&mut rx)
            .iter()
            .any(|e| e.name() == "license.grace_mode_exited")
    );

    // And it expires at its real exp, by the checker's own timer.
    loop {
        let event = rx.recv().await.unwrap();
        if event.name() == "license.grace_mode_entered" {
            assert_eq!(secs(clock.wall()), exp);
            break;
        }
    }
    assert_eq!(monitor.verdict().reason, Some(GraceReason::Expired));
}

#[tokio::test(start_paused = true)]
async fn with_the_clock_kept_back_the_cut_off_comes_a_grace_period_after_detection() {
    let clock = TestClock::new(t0());
    let exp = T0 + HOUR;
    let (monitor, mut rx) = start(&clock, Claims::new("Acme", exp)).await;
    drain(&mut rx);
    clock.jump_wall(-30 * DAY);
    tokio::time::advance(Duration::from_secs(600)).await;
    monitor.check_now().await;
    // By the wall clock the license has 30 days left; by trusted time it is cut off a
    // grace period after the manipulation was seen.
    loop {
        let event = rx.recv().await.unwrap();
        if event.name() == "license.grace_period_expired" {
            break;
        }
    }
    let verdict = monitor.verdict();
    assert_eq!(verdict.state, LicenseState::GraceExpired);
    assert_eq!(secs(verdict.evaluated_at), T0 + 600 + DAY);
}

#[tokio::test(start_paused = true)]
async fn ten_seconds_ahead_is_only_a_drift_warning() {
    let clock = TestClock::new(t0());
    let (monitor, mut rx) = start(&clock, Claims::new("Acme", T0 + 90 * DAY)).await;
    drain(&mut rx);
    tokio::time::advance(Duration::from_secs(60)).await;
    clock.jump_wall(10);
    let verdict = monitor.check_now().await;
    let events = drain(&mut rx);
    let names: Vec<_> = events.iter().map(LicenseEvent::name).collect();
    assert_eq!(names, ["license.time_drift_detected"]);
    assert_eq!(
        events[0],
        LicenseEvent::TimeDriftDetected {
            drift_seconds: 10.0,
            kind: DriftKind::ForwardJump,
        }
    );
    assert_eq!(verdict.state, LicenseState::Valid);
}

#[tokio::test(start_paused = true)]
async fn small_steps_are_tolerated() {
    // Catalog C1: NTP steps of a few seconds are not manipulation.
    let clock = TestClock::new(t0());
    let (monitor, mut rx) = start(&clock, Claims::new("Acme", T0 + 90 * DAY)).await;
    drain(&mut rx);
    for step in [-2, 3, -4, 5, -5] {
        tokio::time::advance(Duration::from_secs(30)).await;
        clock.jump_wall(step);
        let verdict = monitor.check_now().await;
        assert_eq!(verdict.state, LicenseState::Valid, "step {step}");
    }
    assert!(drain(&mut rx).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_clock_far_behind_a_signed_iat_is_drift_and_the_license_is_judged_at_it() {
    // The license was issued "in the future" of this clock. Either this clock was set back
    // before the service started, or the vendor's was ahead: the floor takes away any
    // gain, so it is reported as drift, never as manipulation (DESIGN "Trusted time").
    let clock = TestClock::new(t0());
    let mut claims = Claims::new("Acme", T0 + 12 * DAY);
    claims.iat = Some(T0 + 10 * DAY);
    let (monitor, mut rx) = start(&clock, claims).await;
    let events = drain(&mut rx);
    assert_eq!(
        common::find(&events, "license.time_drift_detected"),
        &LicenseEvent::TimeDriftDetected {
            drift_seconds: (-10 * DAY) as f64,
            kind: DriftKind::BehindIssueTime,
        }
    );
    assert!(
        !common::names(&events).contains(&"license.time_manipulation_detected"),
        "{events:?}"
    );
    let verdict = monitor.verdict();
    assert_eq!(verdict.state, LicenseState::Valid);
    // Judged at the issue time (less its five minutes of tolerance): two days left, not
    // twelve, so the 7-day alert is the one in force. The floor lifts that license only:
    // trusted time is this clock's (issue 30).
    assert_eq!(secs(verdict.evaluated_at), T0);
    assert_eq!(
        verdict.expires_at.map(secs),
        Some(T0 + 2 * DAY + 300),
        "its end as judged at its floor"
    );
    assert_eq!(verdict.band, Some(iosetu_license::ExpiryBand::Days7));
}

#[tokio::test(start_paused = true)]
async fn an_iat_a_little_ahead_is_tolerated() {
    let clock = TestClock::new(t0());
    let mut claims = Claims::new("Acme", T0 + 365 * DAY);
    claims.iat = Some(T0 + 120); // issuer's clock two minutes ahead
    let (monitor, mut rx) = start(&clock, claims).await;
    let names: Vec<_> = drain(&mut rx).iter().map(LicenseEvent::name).collect();
    assert_eq!(names, ["license.loaded"]);
    assert_eq!(monitor.verdict().state, LicenseState::Valid);
}
