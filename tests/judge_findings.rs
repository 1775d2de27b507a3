//! The judge review's findings (issue 20), each through the whole monitor in paused time:
//! three ways an honest customer was refused, and two smaller ones. Each failed before
//! the judge; the judge's simulation (`src/judge/simulation.rs`) checks the rules behind
//! them over every schedule.

use std::time::Duration;

use iosetu_license::{
    Claims, DriftKind, GraceReason, LicenseEvent, LicenseMonitor, LicenseSource, LicenseState,
    TestClock,
};

mod common;
use common::{DAY, HOUR, MINUTE, T0, builder, drain, find, names, run_for, secs, signer, start};

fn token(claims: &Claims) -> String {
    signer().sign(claims)
}

fn lines(tokens: &[String]) -> LicenseSource {
    LicenseSource::Static(tokens.join("\n") + "\n")
}

/// A license for the whole of each test (a year).
fn year_license() -> Claims {
    Claims::new("Acme", T0 + 365 * DAY)
}

/// Jumps paused time ahead at once (the checker wakes once, late: no replay).
async fn skip(secs: i64) {
    tokio::time::advance(Duration::from_secs(secs as u64)).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
}

fn corrected(events: &[LicenseEvent]) -> Option<f64> {
    events.iter().find_map(|e| match e {
        LicenseEvent::TimeDriftDetected {
            kind: DriftKind::ClockCorrected,
            drift_seconds,
        } => Some(*drift_seconds),
        _ => None,
    })
}

/// Finding 1: a host whose clock (wall and monotonic: one oscillator) ran `ppm` fast for
/// `days`, then stepped back by NTP. Returns the events after the step and the monitor.
async fn drifted_then_corrected(
    clock: &TestClock,
    monitor: &LicenseMonitor,
    rx: &mut tokio::sync::broadcast::Receiver<LicenseEvent>,
    step_back: i64,
) -> Vec<LicenseEvent> {
    drain(rx);
    clock.jump_wall(-step_back);
    run_for(MINUTE).await;
    let _ = monitor.check_now().await;
    drain(rx)
}

#[tokio::test(start_paused = true)]
async fn finding_1_a_clock_100_ppm_fast_for_10_days_stepped_back_by_ntp_stays_valid() {
    let clock = TestClock::new(common::t0());
    let (monitor, mut rx) = start(builder(&clock, lines(&[token(&year_license())]))).await;
    skip(10 * DAY).await;
    // 100 ppm of 10 days: 86.4 s ahead; the budget is 5 s + 500 ppm of 10 days = 437 s.
    let events = drifted_then_corrected(&clock, &monitor, &mut rx, 86).await;
    assert!(
        !names(&events).contains(&"license.time_manipulation_detected"),
        "{events:?}"
    );
    assert_eq!(corrected(&events), Some(-86.0), "{events:?}");
    assert_eq!(monitor.verdict().state, LicenseState::Valid);
    // A day later (when it used to be cut off): still valid.
    skip(DAY + MINUTE).await;
    assert_eq!(monitor.check_now().await.state, LicenseState::Valid);
}

#[tokio::test(start_paused = true)]
async fn finding_1_a_clock_20_ppm_fast_for_4_days_stepped_back_7_s_stays_valid() {
    let clock = TestClock::new(common::t0());
    let (monitor, mut rx) = start(builder(&clock, lines(&[token(&year_license())]))).await;
    skip(4 * DAY).await;
    let events = drifted_then_corrected(&clock, &monitor, &mut rx, 7).await;
    assert!(
        !names(&events).contains(&"license.time_manipulation_detected"),
        "{events:?}"
    );
    assert_eq!(corrected(&events), Some(-7.0));
    assert_eq!(monitor.verdict().state, LicenseState::Valid);
}

#[tokio::test(start_paused = true)]
async fn finding_1_the_budget_survives_a_restart_in_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let clock = TestClock::new(common::t0());
    let source = || lines(&[token(&year_license())]);
    let (first, _rx) = start(builder(&clock, source()).state_file(&state)).await;
    skip(10 * DAY).await;
    run_for(2 * MINUTE).await;
    drop(first);
    // Restarted (no downtime), then NTP steps the clock back 86 s: the budget the first
    // run earned is the second's.
    let (second, mut rx) = start(builder(&clock, source()).state_file(&state)).await;
    run_for(MINUTE).await;
    let events = drifted_then_corrected(&clock, &second, &mut rx, 86).await;
    assert!(
        !names(&events).contains(&"license.time_manipulation_detected"),
        "{events:?}"
    );
    assert_eq!(second.verdict().state, LicenseState::Valid);
    drop(second);

    // And stepped back while the service is down: the stored mark is ahead of the wall at
    // start by the drift, within the stored budget.
    let (third, _rx) = start(builder(&clock, source()).state_file(&state)).await;
    skip(10 * DAY).await;
    run_for(2 * MINUTE).await;
    drop(third);
    clock.jump_wall(-86);
    let (fourth, mut rx) = start(builder(&clock, source()).state_file(&state)).await;
    let events = drain(&mut rx);
    assert!(
        !names(&events).contains(&"license.time_manipulation_detected"),
        "{events:?}"
    );
    assert!(corrected(&events).is_some(), "{events:?}");
    assert_eq!(fourth.verdict().state, LicenseState::Valid);
}

#[tokio::test(start_paused = true)]
async fn a_step_back_beyond_the_drift_budget_is_still_manipulation() {
    let clock = TestClock::new(common::t0());
    let (monitor, mut rx) = start(builder(&clock, lines(&[token(&year_license())]))).await;
    skip(10 * DAY).await;
    // 500 ppm of 10 days is 432 s: 10 minutes back is more than any honest clock drifts.
    let events = drifted_then_corrected(&clock, &monitor, &mut rx, 10 * MINUTE).await;
    assert!(
        names(&events).contains(&"license.time_manipulation_detected"),
        "{events:?}"
    );
    assert_eq!(
        monitor.verdict().reason,
        Some(GraceReason::ClockManipulation)
    );
    // And the budget is one per boot, spent by every correction (issue 30): after 86 s
    // and 30 s of its 437 s, a step of 330 s more is manipulation.
    let clock = TestClock::new(common::t0());
    let (monitor, mut rx) = start(builder(&clock, lines(&[token(&year_license())]))).await;
    skip(10 * DAY).await;
    drifted_then_corrected(&clock, &monitor, &mut rx, 86).await;
    let events = drifted_then_corrected(&clock, &monitor, &mut rx, 30).await;
    assert_eq!(corrected(&events), Some(-30.0), "{events:?}");
    let events = drifted_then_corrected(&clock, &monitor, &mut rx, 330).await;
    assert!(
        names(&events).contains(&"license.time_manipulation_detected"),
        "{events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn finding_2_a_trial_without_grace_does_not_shorten_the_contracts_grace() {
    let clock = TestClock::new(common::t0());
    let exp = T0 + 10 * DAY;
    let mut contract = Claims::new("Acme", exp);
    contract.grace_period_seconds = Some(7 * DAY as u64);
    let mut trial = Claims::new("Acme", exp + DAY);
    trial.grace_period_seconds = Some(0);
    trial.features = vec!["analytics".into()];
    let (monitor, _rx) = start(builder(&clock, lines(&[token(&contract), token(&trial)]))).await;
    skip(exp + DAY - T0 + MINUTE).await;
    let v = monitor.check_now().await;
    assert_eq!(v.state, LicenseState::Grace, "{v:?}");
    assert_eq!(v.reason, Some(GraceReason::Expired));
    assert_eq!(secs(v.grace_started_at.unwrap()), exp + DAY);
    assert_eq!(secs(v.grace_ends_at.unwrap()), exp + 7 * DAY);
    skip(6 * DAY - 2 * MINUTE).await;
    assert_eq!(monitor.check_now().await.state, LicenseState::Grace);
    skip(2 * MINUTE).await;
    assert_eq!(monitor.check_now().await.state, LicenseState::GraceExpired);
}

#[tokio::test(start_paused = true)]
async fn finding_2_with_the_default_grace_a_trial_ending_an_hour_later_keeps_the_days_grace() {
    // The main license takes the builder's day; the trial add-on signs none and ends an
    // hour later. The cut-off is the later of the two: a day after the main license, not
    // an hour after the trial.
    let clock = TestClock::new(common::t0());
    let exp = T0 + 10 * DAY;
    let main = Claims::new("Acme", exp);
    let mut trial = Claims::new("Acme", exp + HOUR);
    trial.grace_period_seconds = Some(0);
    let (monitor, _rx) = start(
        builder(&clock, lines(&[token(&main), token(&trial)]))
            .grace_period(Duration::from_secs(DAY as u64)),
    )
    .await;
    skip(exp + HOUR - T0 + MINUTE).await;
    let v = monitor.check_now().await;
    assert_eq!(v.state, LicenseState::Grace, "{v:?}");
    assert_eq!(secs(v.grace_started_at.unwrap()), exp + HOUR);
    assert_eq!(secs(v.grace_ends_at.unwrap()), exp + DAY);
    skip(DAY - HOUR - 2 * MINUTE).await;
    assert_eq!(monitor.check_now().await.state, LicenseState::Grace);
    skip(2 * MINUTE).await;
    assert_eq!(monitor.check_now().await.state, LicenseState::GraceExpired);
}

#[tokio::test(start_paused = true)]
async fn finding_3_a_renewal_under_a_renamed_customer_appended_after_the_expired_line_takes_over() {
    for order in ["expired first", "renewal first"] {
        let clock = TestClock::new(common::t0());
        let expired = Claims::new("Acme Corp", T0 - DAY);
        let renewal = Claims::new("Acme Corporation", T0 + 365 * DAY);
        let tokens = match order {
            "expired first" => [token(&expired), token(&renewal)],
            _ => [token(&renewal), token(&expired)],
        };
        let (monitor, mut rx) = start(builder(&clock, lines(&tokens))).await;
        let v = monitor.verdict();
        assert_eq!(v.state, LicenseState::Valid, "{order}: {v:?}");
        assert_eq!(v.claims.as_ref().unwrap().customer, "Acme Corporation");
        // The old line is the one refused, with the set's customer named.
        let events = drain(&mut rx);
        let LicenseEvent::VerificationFailed { error, .. } =
            find(&events, "license.verification_failed")
        else {
            unreachable!()
        };
        assert_eq!(error.reason(), "customer_mismatch", "{order}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_renamed_renewal_installed_ahead_leaves_the_license_in_force_alone_until_its_nbf() {
    let clock = TestClock::new(common::t0());
    let current = Claims::new("Acme Corp", T0 + 10 * DAY);
    let mut renewal = Claims::new("Acme Corporation", T0 + 375 * DAY);
    renewal.nbf = Some(T0 + 9 * DAY);
    let (monitor, _rx) = start(builder(&clock, lines(&[token(&current), token(&renewal)]))).await;
    let v = monitor.verdict();
    assert_eq!(v.state, LicenseState::Valid);
    assert_eq!(v.claims.as_ref().unwrap().customer, "Acme Corp");
    skip(9 * DAY - 1).await;
    assert_eq!(
        monitor.verdict().claims.as_ref().unwrap().customer,
        "Acme Corp"
    );
    run_for(2).await;
    let v = monitor.verdict();
    assert_eq!(v.state, LicenseState::Valid);
    assert_eq!(v.claims.as_ref().unwrap().customer, "Acme Corporation");
}

#[tokio::test(start_paused = true)]
async fn a_one_second_gap_between_licenses_raises_no_alert_and_never_cuts_off() {
    let clock = TestClock::new(common::t0());
    let exp = T0 + 20 * DAY;
    let mut first = Claims::new("Acme", exp);
    first.grace_period_seconds = Some(0);
    let mut next = Claims::new("Acme", exp + 365 * DAY);
    next.nbf = Some(exp + 1);
    next.grace_period_seconds = Some(0);
    let (monitor, mut rx) = start(builder(&clock, lines(&[token(&first), token(&next)]))).await;
    assert_eq!(
        secs(monitor.verdict().expires_at.unwrap()),
        exp + 365 * DAY,
        "alerts count down to the end of the continued coverage"
    );
    skip(exp - T0 - 2).await;
    run_for(1).await;
    assert_eq!(monitor.verdict().state, LicenseState::Valid);
    let before = names(&drain(&mut rx));
    assert!(
        !before.iter().any(|n| n.starts_with("license.expiring")),
        "{before:?}"
    );
    // The gap second: grace, never a cut-off.
    run_for(1).await;
    let v = monitor.verdict();
    assert_eq!(secs(v.evaluated_at), exp);
    assert_eq!(v.state, LicenseState::Grace, "{v:?}");
    assert!(v.admits());
    run_for(1).await;
    assert_eq!(monitor.verdict().state, LicenseState::Valid);
    assert!(!names(&drain(&mut rx)).contains(&"license.grace_period_expired"));
}

#[tokio::test(start_paused = true)]
async fn the_same_token_three_times_is_one_license() {
    let clock = TestClock::new(common::t0());
    let license = token(&year_license());
    let (monitor, _rx) = start(builder(
        &clock,
        lines(&[license.clone(), license.clone(), license]),
    ))
    .await;
    let v = monitor.verdict();
    assert_eq!(v.licenses.len(), 1, "{v:?}");
    assert_eq!(monitor.metrics().check_failing, None);
}

#[tokio::test(start_paused = true)]
async fn deleting_an_expired_trial_and_restarting_buys_no_grace() {
    // Found by the judge's simulation: a restart that finds no license continued the last
    // run's grace with the builder's period, a day past a trial that signs none.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let clock = TestClock::new(common::t0());
    let mut trial = Claims::new("Acme", T0 + HOUR);
    trial.grace_period_seconds = Some(0);
    let (first, _rx) = start(builder(&clock, lines(&[token(&trial)])).state_file(&state)).await;
    skip(HOUR + MINUTE).await;
    assert!(!first.check_now().await.admits());
    drop(first);
    let (second, _rx) =
        start(builder(&clock, LicenseSource::Static(String::new())).state_file(&state)).await;
    let v = second.verdict();
    assert!(!v.admits(), "{v:?}");
    assert_eq!(secs(v.grace_ends_at.unwrap()), T0 + HOUR);
}

#[tokio::test(start_paused = true)]
async fn garbage_and_a_restart_an_hour_before_a_trial_ends_buys_no_days_grace() {
    // Found by the judge's simulation: the last run was valid, so a restart that found
    // the source wholly bad took the builder's grace from then, past the trial's `exp`
    // (it signs no grace). The state file keeps the licensed cut-off, and the restart
    // never ends grace later.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let clock = TestClock::new(common::t0());
    let mut trial = Claims::new("Acme", T0 + 2 * HOUR);
    trial.grace_period_seconds = Some(0);
    let (first, _rx) = start(
        builder(&clock, lines(&[token(&trial)]))
            .grace_period(Duration::from_secs(DAY as u64))
            .state_file(&state),
    )
    .await;
    skip(HOUR).await;
    drop(first);
    let (second, _rx) = start(
        builder(&clock, LicenseSource::Static("garbage".into()))
            .grace_period(Duration::from_secs(DAY as u64))
            .state_file(&state),
    )
    .await;
    let v = second.verdict();
    assert_eq!(v.state, LicenseState::Grace, "{v:?}");
    assert_eq!(secs(v.grace_ends_at.unwrap()), T0 + 2 * HOUR);
    skip(HOUR).await;
    assert!(!second.check_now().await.admits());
}
