//! Issue 30's findings, each through the whole monitor in paused time: schedules the
//! simulation did not draw, in which a tamperer got past `exp` + grace or an honest
//! customer was refused. The simulation (`src/judge/simulation.rs`) now draws every class
//! of them and measures what any schedule gains; these keep the examples.

use std::time::Duration;

use iosetu_license::{Claims, GraceReason, LicenseEvent, LicenseSource, LicenseState, TestClock};

mod common;
use common::adversary::{hour_of_grace, lines, skip, token, with_jti};
use common::notices::{attestation, revocation};
use common::{DAY, HOUR, MINUTE, T0, at, builder, drain, names, run_for, start};

#[tokio::test(start_paused = true)]
async fn finding_1_creeping_the_clock_back_5_0005_s_every_5_s_is_manipulation() {
    // The README's Kubernetes layout: a file source, polled every 2 s.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    std::fs::write(&path, token(&Claims::new("Acme", T0 + 2 * HOUR))).unwrap();
    let clock = TestClock::new(at(T0));
    let (monitor, mut rx) = start(hour_of_grace(builder(
        &clock,
        LicenseSource::File(path.clone()),
    )))
    .await;
    let mut admitted_past_cut_off = 0;
    // Four hours of true time: the license ends at two, its grace at three.
    for step in 0..(4 * HOUR / 5) {
        run_for(5).await;
        clock.jump_wall_by(-5.0005);
        if (step + 1) * 5 > 3 * HOUR && monitor.verdict().admits() {
            admitted_past_cut_off += 5;
        }
    }
    let events = drain(&mut rx);
    assert!(
        names(&events).contains(&"license.time_manipulation_detected"),
        "{:?}",
        names(&events)
    );
    let corrections = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                LicenseEvent::TimeDriftDetected {
                    kind: iosetu_license::DriftKind::ClockCorrected,
                    ..
                }
            )
        })
        .count();
    assert!(
        corrections <= 1,
        "{corrections} corrections: the 5 s is granted once"
    );
    let reports = names(&events)
        .iter()
        .filter(|n| **n == "license.time_manipulation_detected")
        .count();
    assert!(
        reports <= 5,
        "{reports} manipulation reports in 4 hours: once, then at most hourly"
    );
    assert_eq!(admitted_past_cut_off, 0);
    let verdict = monitor.verdict();
    assert!(!verdict.admits(), "{verdict:?}");
    assert_eq!(verdict.reason, Some(GraceReason::ClockManipulation));
}

#[tokio::test(start_paused = true)]
async fn finding_1_the_spent_budget_survives_restarts_with_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let clock = TestClock::new(at(T0));
    clock.set_boot_id("boot-1");
    let source = || lines(&[token(&Claims::new("Acme", T0 + 365 * DAY))]);
    // Each run: up a few minutes, then the clock stepped back 5.05 s and the process
    // restarted. Each step alone is within 5 s + 500 ppm of the minutes since the one
    // before; together they spend far more than the boot's budget.
    let mut manipulated = false;
    for _ in 0..4 {
        let (monitor, mut rx) = start(builder(&clock, source()).state_file(&state)).await;
        run_for(2 * MINUTE).await;
        clock.jump_wall_by(-5.05);
        run_for(MINUTE).await;
        let _ = monitor.check_now().await;
        manipulated |= names(&drain(&mut rx)).contains(&"license.time_manipulation_detected");
        drop(monitor);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        manipulated,
        "four steps of 5.05 s on one boot spend more than its budget"
    );

    // A new boot brings a new budget: an honest step on it is a correction.
    let clock = TestClock::new(at(T0 + 2 * DAY));
    clock.set_boot_id("boot-2");
    clock.set_boot_age(Duration::from_secs(DAY as u64));
    let (monitor, mut rx) = start(builder(&clock, source()).state_file(&state)).await;
    run_for(2 * MINUTE).await;
    clock.jump_wall_by(-10.0);
    run_for(MINUTE).await;
    let _ = monitor.check_now().await;
    let events = drain(&mut rx);
    assert!(
        !names(&events).contains(&"license.time_manipulation_detected"),
        "{:?}",
        names(&events)
    );
}

#[tokio::test(start_paused = true)]
async fn finding_2_a_clock_set_ahead_does_not_reach_a_held_renewal_early() {
    let old = Claims::new("Acme", T0 + HOUR);
    let mut renewal = Claims::new("Acme", T0 + 60 * DAY);
    renewal.nbf = Some(T0 + 30 * DAY);
    let clock = TestClock::new(at(T0));
    let (monitor, mut rx) = start(hour_of_grace(builder(
        &clock,
        lines(&[token(&old), token(&renewal)]),
    )))
    .await;
    run_for(2 * HOUR + MINUTE).await;
    assert!(!monitor.verdict().admits(), "past exp + grace");
    clock.jump_wall(30 * DAY);
    // For 15 minutes the wall is not believed: the renewal is not in force.
    for _ in 0..14 {
        run_for(MINUTE).await;
        let verdict = monitor.check_now().await;
        assert!(!verdict.admits(), "{verdict:?}");
    }
    // Believed after that (the renewal is used up that much earlier), and setting the
    // wall back then is manipulation, never silent.
    run_for(2 * MINUTE).await;
    drain(&mut rx);
    clock.jump_wall(-30 * DAY);
    run_for(MINUTE).await;
    let events = drain(&mut rx);
    assert!(
        names(&events).contains(&"license.time_manipulation_detected"),
        "{:?}",
        names(&events)
    );
}

#[tokio::test(start_paused = true)]
async fn finding_3_an_add_on_signed_days_fast_never_ends_the_main_license_early() {
    let mut main = Claims::new("Acme", T0 + 2 * DAY);
    main.features = vec!["core".into()];
    // The vendor's clock was three days fast when it signed the add-on.
    let mut addon = Claims::new("Acme", T0 + 3 * DAY + 365 * DAY);
    addon.iat = Some(T0 + 3 * DAY);
    addon.features = vec!["reports".into()];
    let clock = TestClock::new(at(T0));
    let (monitor, _rx) = start(builder(&clock, lines(&[token(&main), token(&addon)]))).await;
    let verdict = monitor.verdict();
    assert!(verdict.is_valid(), "{verdict:?}");
    assert!(verdict.has_feature("core"), "{verdict:?}");
    assert!(verdict.has_feature("reports"), "{verdict:?}");
    // A day later, the main license is still in force (it ends on day 2).
    skip(DAY).await;
    assert!(monitor.check_now().await.has_feature("core"));
}

#[tokio::test(start_paused = true)]
async fn finding_4_the_readmes_drift_example_stays_valid_without_a_state_file() {
    // The host ran 100 ppm fast for 10 days unsynchronized (86 s ahead); the pod started
    // an hour before NTP came back and stepped the clock back.
    let clock = TestClock::new(at(T0));
    clock.set_boot_age(Duration::from_secs(10 * DAY as u64));
    let (monitor, mut rx) = start(builder(
        &clock,
        lines(&[token(&Claims::new("Acme", T0 + 365 * DAY))]),
    ))
    .await;
    run_for(HOUR).await;
    clock.jump_wall(-86);
    run_for(MINUTE).await;
    let events = drain(&mut rx);
    assert!(
        !names(&events).contains(&"license.time_manipulation_detected"),
        "{:?}",
        names(&events)
    );
    assert!(names(&events).contains(&"license.time_drift_detected"));
    for _ in 0..2 {
        skip(DAY).await;
        assert_eq!(monitor.check_now().await.state, LicenseState::Valid);
    }
}

#[tokio::test(start_paused = true)]
async fn finding_5_a_trial_under_a_corrected_name_never_costs_the_contract() {
    let mut contract = Claims::new("Acme Corp", T0 + 20 * DAY);
    contract.features = vec!["sso".into()];
    contract.grace_period_seconds = Some(7 * DAY as u64);
    let mut trial = Claims::new("Acme Corporation", T0 + 24 * DAY);
    trial.nbf = Some(T0 + 10 * DAY);
    trial.grace_period_seconds = Some(0);
    let clock = TestClock::new(at(T0));
    let (monitor, _rx) = start(builder(&clock, lines(&[token(&contract), token(&trial)]))).await;
    skip(10 * DAY + HOUR).await;
    let verdict = monitor.check_now().await;
    assert!(verdict.has_feature("sso"), "{verdict:?}");
    assert_eq!(
        verdict.claims.as_ref().map(|c| c.customer.as_str()),
        Some("Acme Corp")
    );
    // The trial over (no grace of its own): the contract's grace runs on to day 27.
    skip(15 * DAY).await;
    let verdict = monitor.check_now().await;
    assert_eq!(verdict.state, LicenseState::Grace, "{verdict:?}");
    assert_eq!(
        verdict.grace_ends_at,
        Some(at(T0 + 27 * DAY)),
        "the contract's cut-off"
    );
}

#[tokio::test(start_paused = true)]
async fn finding_6_a_wall_a_year_ahead_for_59_s_refuses_nobody() {
    let clock = TestClock::new(at(T0));
    let (monitor, mut rx) = start(builder(
        &clock,
        lines(&[token(&Claims::new("Acme", T0 + 30 * DAY))]),
    ))
    .await;
    run_for(HOUR).await;
    drain(&mut rx);
    clock.jump_wall(365 * DAY);
    for _ in 0..59 {
        run_for(1).await;
        let verdict = monitor.check_now().await;
        assert_eq!(verdict.state, LicenseState::Valid, "{verdict:?}");
    }
    clock.jump_wall(-365 * DAY);
    run_for(MINUTE).await;
    assert_eq!(monitor.check_now().await.state, LicenseState::Valid);
    let events = drain(&mut rx);
    for bad in [
        "license.grace_mode_entered",
        "license.grace_period_expired",
        "license.time_manipulation_detected",
    ] {
        assert!(!names(&events).contains(&bad), "{:?}", names(&events));
    }
}

#[tokio::test(start_paused = true)]
async fn finding_7_setting_the_clock_back_never_undoes_a_revocation() {
    let license = token(&with_jti("Acme", T0 + 365 * DAY, "lic-1"));
    let source = || lines(&[license.clone(), revocation(1, T0 + 10 * DAY, &["lic-1"])]);
    let clock = TestClock::new(at(T0 + 10 * DAY + HOUR));
    let (monitor, _rx) = start(builder(&clock, source())).await;
    let verdict = monitor.verdict();
    assert_eq!(verdict.reason, Some(GraceReason::Revoked), "{verdict:?}");
    drop(monitor);
    tokio::time::sleep(Duration::from_millis(1)).await;
    // Stopped, the clock set back three days, restarted without a state file.
    clock.jump_wall(-3 * DAY);
    let (monitor, _rx) = start(builder(&clock, source())).await;
    let verdict = monitor.verdict();
    assert!(!verdict.is_valid(), "{verdict:?}");
    assert_eq!(verdict.reason, Some(GraceReason::Revoked), "{verdict:?}");
    // Its grace counts from the restart at the latest: a day later, cut off.
    skip(DAY + MINUTE).await;
    let verdict = monitor.check_now().await;
    assert!(!verdict.admits(), "{verdict:?}");
}

#[tokio::test(start_paused = true)]
async fn finding_8_an_attestation_from_a_vendor_clock_minutes_fast_clears_the_grace() {
    for fast in [6 * MINUTE, 10 * MINUTE, 50 * MINUTE] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        // A clock once set a year ahead left the stored mark there: the service reads
        // the right clock as set back.
        std::fs::write(
            &state,
            format!(
                r#"{{"version":3,"high_water":{},"grace_anchor":null,"not_valid_since":{}}}"#,
                T0 + 365 * DAY,
                T0 - HOUR
            ),
        )
        .unwrap();
        let license = token(&Claims::new("Acme", T0 + 300 * DAY));
        let clock = TestClock::new(at(T0));
        let (monitor, _) =
            start(builder(&clock, lines(std::slice::from_ref(&license))).state_file(&state)).await;
        assert_eq!(
            monitor.verdict().reason,
            Some(GraceReason::ClockManipulation)
        );
        drop(monitor);
        tokio::time::sleep(Duration::from_millis(1)).await;
        // The vendor's attestation, by a clock `fast` ahead.
        let source = || lines(&[license.clone(), attestation(1, T0 + fast)]);
        let (monitor, mut rx) = start(builder(&clock, source()).state_file(&state)).await;
        let verdict = monitor.verdict();
        assert!(verdict.is_valid(), "{fast} s fast: {verdict:?}");
        run_for(MINUTE).await;
        skip(DAY + MINUTE).await;
        assert!(monitor.check_now().await.is_valid(), "{fast} s fast");
        // (The restart reports the wrong mark first; after the attestation, nothing.)
        let events = drain(&mut rx);
        let attested = events
            .iter()
            .position(|e| e.name() == "license.clock_attested")
            .expect("license.clock_attested");
        match &events[attested] {
            LicenseEvent::ClockAttested {
                cleared_manipulation,
                ..
            } => assert!(cleared_manipulation, "{fast} s fast"),
            other => panic!("{other:?}"),
        }
        assert!(
            !names(&events[attested..]).contains(&"license.time_manipulation_detected"),
            "{fast} s fast: {:?}",
            names(&events)
        );
        drop(monitor);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let (monitor, _) = start(builder(&clock, source()).state_file(&state)).await;
        assert!(monitor.verdict().is_valid(), "{fast} s fast, restarted");
    }
}

#[tokio::test(start_paused = true)]
async fn finding_10_a_renewal_revoked_before_it_starts_supersedes_nothing() {
    let current = token(&with_jti("Acme", T0 + 365 * DAY, "lic-1"));
    let mut renewal = with_jti("Acme", T0 + 400 * DAY, "lic-2");
    renewal.nbf = Some(T0 + 30 * DAY);
    renewal.supersedes = vec!["lic-1".into()];
    let renewal = token(&renewal);
    let clock = TestClock::new(at(T0));
    let source = lines(&[current, renewal, revocation(1, T0 + DAY, &["lic-2"])]);
    let (monitor, _rx) = start(hour_of_grace(builder(&clock, source))).await;
    skip(2 * DAY).await;
    assert!(monitor.check_now().await.is_valid());
    // Past the renewal's would-be start and its grace: the current license stands.
    skip(29 * DAY + 2 * HOUR).await;
    let verdict = monitor.check_now().await;
    assert!(verdict.is_valid(), "{verdict:?}");
    assert_eq!(verdict.expires_at, Some(at(T0 + 365 * DAY)));
}
