//! A red-team review of issue 30's trusted time, each schedule through the whole monitor
//! in paused time, asserting the safe outcome. Each FINDING below failed on the first
//! version of the rules and is fixed: a restart on the same host boot carries the stored
//! mark on by the boot's age (`Clock::boot_age`, `Clock::boot_id`), so a wall ahead at a
//! restart is a forward jump, not downtime; a run started within half an hour of boot
//! takes its first reading as unconfirmed; and a successor's supersession becomes
//! permanent only once hard evidence says it started. The simulation draws each class
//! (`Step::AheadAcrossRestart`, `Step::LateStart`, `Lic::Superseding`).

use std::time::Duration;

use iosetu_license::{Claims, LicenseState, TestClock};

mod common;
use common::adversary::{hour_of_grace, lines, skip, token, with_jti};

use common::{DAY, HOUR, MINUTE, T0, at, builder, drain, names, run_for, start};

async fn stop(monitor: iosetu_license::LicenseMonitor) {
    drop(monitor);
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// FINDING (rule 1, tamperer). Schedule, with a state file throughout: the current
/// license ends at T0+1h (an hour of grace: cut off at T0+2h); its renewal is installed
/// ahead (`nbf` T0+30d). Past the cut-off, the tamperer stops the service, sets the wall
/// 30 days ahead (`date -s`) and starts it again. The first reading of a run with a stored
/// mark is "soft" for 15 minutes (it might be real downtime), but it is still the instant
/// licenses are judged at: the renewal is in force at once. 14 minutes later he sets the
/// wall back to the right time: it lands at the stored mark, so it is a *correction*
/// (no manipulation, no budget spent, nothing borrowed: the wall was never believed as
/// ahead for 15 minutes). Stop, repeat. Gain: ~14 minutes of admission past exp + grace
/// per restart, with no end (here 5 restarts, ~70 minutes), against an allowance of a
/// minute per restart. The forward-jump rule ("a wall >5 s ahead is unconfirmed for 15
/// minutes, nbf judged at the mark") is bypassed by making the jump across a restart.
#[tokio::test(start_paused = true)]
async fn finding_a_restart_with_the_wall_ahead_reaches_a_held_renewal_again_and_again() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let old = Claims::new("Acme", T0 + HOUR);
    let mut renewal = Claims::new("Acme", T0 + 60 * DAY);
    renewal.nbf = Some(T0 + 30 * DAY);
    let source = || lines(&[token(&old), token(&renewal)]);
    let clock = TestClock::new(at(T0));
    clock.set_boot_id("boot-1");
    clock.set_boot_age(Duration::from_secs(DAY as u64));
    let (monitor, _rx) = start(hour_of_grace(builder(&clock, source())).state_file(&state)).await;
    run_for(2 * HOUR + 2 * MINUTE).await;
    assert!(!monitor.verdict().admits(), "past exp + grace");
    stop(monitor).await;

    let restarts = 5;
    let mut admitted_secs = 0;
    let mut manipulation_reported = false;
    for _ in 0..restarts {
        clock.jump_wall(30 * DAY);
        let (monitor, mut rx) =
            start(hour_of_grace(builder(&clock, source())).state_file(&state)).await;
        for _ in 0..14 {
            if monitor.check_now().await.admits() {
                admitted_secs += MINUTE;
            }
            run_for(MINUTE).await;
        }
        clock.jump_wall(-30 * DAY);
        run_for(MINUTE).await;
        let verdict = monitor.check_now().await;
        if verdict.admits() {
            admitted_secs += MINUTE;
        }
        manipulation_reported |=
            names(&drain(&mut rx)).contains(&"license.time_manipulation_detected");
        stop(monitor).await;
    }
    // Allowance: a minute per restart (no reboot, no attestation, nothing kept ahead).
    assert!(
        admitted_secs <= restarts * MINUTE,
        "admitted {admitted_secs} s past exp + grace over {restarts} restarts \
         (manipulation reported: {manipulation_reported})"
    );
}

/// FINDING (rule 2, honest). A host whose RTC is kept in local time boots an hour ahead;
/// NTP is slow to come up. The service (no state file, e.g. a pod rescheduled or a unit
/// that failed its first start) starts at boot age 16 minutes, just after the boot window,
/// and NTP steps the wall back an hour at boot age 20 minutes. The README promises a
/// clock ahead at boot corrected by NTP is never manipulation and that "after the window,
/// the first reading stays unconfirmed for another 15 minutes, so a clock NTP fixes a
/// little late is still a correction"; the simulation exempts boot + 30 min. But a run
/// that *starts* after the window, without a state file, takes its first reading as hard
/// evidence: the step back (3,600 s, budget 5 s + 500 ppm of 20 min = 5.6 s) is
/// manipulation, and a customer holding a license valid for 90 days goes into grace (and
/// is cut off a day later unless the vendor attests). Refusal: Grace instead of Valid.
#[tokio::test(start_paused = true)]
async fn finding_an_rtc_ahead_at_boot_fixed_by_ntp_just_after_the_window_is_not_manipulation() {
    let ahead = HOUR;
    let clock = TestClock::new(at(T0 + ahead));
    clock.set_boot_age(Duration::from_secs(16 * MINUTE as u64));
    let (monitor, mut rx) = start(builder(
        &clock,
        lines(&[token(&Claims::new("Acme", T0 + 90 * DAY))]),
    ))
    .await;
    assert_eq!(monitor.verdict().state, LicenseState::Valid);
    run_for(4 * MINUTE).await;
    clock.jump_wall(-ahead);
    run_for(2 * MINUTE).await;
    let verdict = monitor.check_now().await;
    let events = drain(&mut rx);
    assert!(
        !names(&events).contains(&"license.time_manipulation_detected"),
        "{:?}",
        names(&events)
    );
    assert_eq!(verdict.state, LicenseState::Valid, "{verdict:?}");
}

/// FINDING (rule 2, honest). The vendor installs a renewal ahead (`lic-2`, `nbf` T0+30d,
/// `supersedes: [lic-1]`); the current `lic-1` runs to T0+365d. The host reboots with its
/// clock a year ahead (provisional readings, corrected by NTP within the boot window: the
/// honest case of `tests/trusted_time.rs`, finding 3). While readings are provisional,
/// trusted now is the wall, so `Reads::supersessions` finds the renewal "started" and
/// learns lic-1's supersession *for good* (`notices.revoked`, at T0+30d, also written to
/// the state file). That revocation is then a floor for judging lic-1 (`floors.rs`): after
/// NTP puts the clock right, lic-1 is judged at T0+30d, i.e. revoked, and the service is
/// in grace at once (reason `revoked`) and cut off when the grace ends (here an hour
/// later), while the renewal is not in force for another 30 days. Refusal: a customer
/// holding a license valid for a year is cut off an hour after an honest boot; with the
/// state file a restart does not heal it. (Without the reboot, the supersession stays
/// pending and lic-1 runs to T0+30d: `tests/adversary.rs`, finding 10's set-up.)
#[tokio::test(start_paused = true)]
async fn finding_a_clock_ahead_at_boot_never_makes_a_held_renewals_supersession_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let current = token(&with_jti("Acme", T0 + 365 * DAY, "lic-1"));
    let mut renewal = with_jti("Acme", T0 + 400 * DAY, "lic-2");
    renewal.nbf = Some(T0 + 30 * DAY);
    renewal.supersedes = vec!["lic-1".into()];
    let renewal = token(&renewal);
    let source = || lines(&[current.clone(), renewal.clone()]);
    // The host boots a year ahead; NTP fixes it within the window.
    let clock = TestClock::new(at(T0 + 365 * DAY - HOUR));
    clock.set_provisional(true);
    let (monitor, _rx) = start(hour_of_grace(builder(&clock, source())).state_file(&state)).await;
    run_for(MINUTE).await;
    clock.jump_wall(-(365 * DAY - HOUR));
    run_for(MINUTE).await;
    clock.set_provisional(false);
    run_for(MINUTE).await;
    let verdict = monitor.check_now().await;
    assert_eq!(
        verdict.state,
        LicenseState::Valid,
        "after the NTP fix: {verdict:?}"
    );
    skip(2 * HOUR).await;
    let verdict = monitor.check_now().await;
    assert_eq!(
        verdict.state,
        LicenseState::Valid,
        "two hours on: {verdict:?}"
    );
    stop(monitor).await;
    let (monitor, _rx) = start(hour_of_grace(builder(&clock, source())).state_file(&state)).await;
    let verdict = monitor.verdict();
    assert_eq!(verdict.state, LicenseState::Valid, "restarted: {verdict:?}");
}
