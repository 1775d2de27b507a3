//! The state file across restarts, in paused time: grace does not restart, a clock set
//! back while the service was down is caught, and a bad file never blocks start-up.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iosetu_license::{
    Claims, GraceReason, LicenseEvent, LicenseMonitor, LicenseSigner, LicenseSource, LicenseState,
    TestClock,
};

const T0: u64 = 1_800_000_000;
const HOUR: u64 = 3600;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn signer() -> LicenseSigner {
    LicenseSigner::from_seed([71; 32])
}

/// Starts a monitor on `state`; returns it with the events of its first check.
async fn start(
    clock: &TestClock,
    source: LicenseSource,
    state: &Path,
) -> (LicenseMonitor, Vec<LicenseEvent>) {
    let builder = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(source)
        .clock(clock.clone())
        .state_file(state);
    let mut rx = builder.subscribe();
    let monitor = builder.start().await.unwrap();
    let events = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    (monitor, events)
}

fn names(events: &[LicenseEvent]) -> Vec<&'static str> {
    events.iter().map(LicenseEvent::name).collect()
}

#[tokio::test(start_paused = true)]
async fn restarting_without_a_license_does_not_buy_a_new_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("license-state.json");
    let no_license = || LicenseSource::Static(String::new());

    let clock = TestClock::new(at(T0));
    let (first, events) = start(&clock, no_license(), &state).await;
    // First start ever: no state yet, said so, and the file is created.
    assert!(names(&events).contains(&"license.state_invalid"));
    assert!(state.exists());
    assert_eq!(secs(first.verdict().grace_started_at.unwrap()), T0);
    drop(first);

    // Three hours later the pod is restarted (a new process: a new clock and monitor).
    tokio::time::advance(Duration::from_secs(3 * HOUR)).await;
    let clock = TestClock::new(at(T0 + 3 * HOUR));
    let (second, events) = start(&clock, no_license(), &state).await;
    assert!(
        !names(&events).contains(&"license.state_invalid"),
        "{events:?}"
    );
    let verdict = second.verdict();
    assert_eq!(verdict.state, LicenseState::Grace);
    assert_eq!(
        secs(verdict.grace_started_at.unwrap()),
        T0,
        "grace restarted"
    );
    assert_eq!(secs(verdict.grace_ends_at.unwrap()), T0 + 24 * HOUR);

    // Restarted again after the original grace ran out: cut off at once.
    let clock = TestClock::new(at(T0 + 25 * HOUR));
    let (third, _) = start(&clock, no_license(), &state).await;
    assert_eq!(third.verdict().state, LicenseState::GraceExpired);
}

#[tokio::test(start_paused = true)]
async fn a_clock_set_back_across_a_restart_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("license-state.json");
    let token = signer().sign(&Claims::new("Acme", (T0 + 2 * HOUR) as i64));

    let clock = TestClock::new(at(T0));
    let (first, _) = start(&clock, LicenseSource::Static(token.clone()), &state).await;
    // Ninety minutes of running: the mark is kept current once a minute.
    tokio::time::sleep(Duration::from_secs(90 * 60)).await;
    assert_eq!(first.verdict().state, LicenseState::Valid);
    drop(first);

    // Restarted with the clock set back an hour, to stretch a license about to expire.
    let clock = TestClock::new(at(T0 + 90 * 60 - HOUR));
    let (second, events) = start(&clock, LicenseSource::Static(token), &state).await;
    let jump = events
        .iter()
        .find(|e| e.name() == "license.time_manipulation_detected")
        .unwrap_or_else(|| panic!("not detected: {events:?}"));
    match jump {
        LicenseEvent::TimeManipulationDetected {
            wall_clock_jump_seconds,
        } => assert!(
            *wall_clock_jump_seconds <= -(HOUR as i64) + 60,
            "{wall_clock_jump_seconds}"
        ),
        other => panic!("unexpected {other:?}"),
    }
    let verdict = second.verdict();
    assert_eq!(verdict.reason, Some(GraceReason::ClockManipulation));
    // Trusted time resumed from the mark, not from the wall clock.
    assert!(secs(verdict.evaluated_at) >= T0 + 89 * 60);
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_state_file_is_reported_survived_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("license-state.json");
    std::fs::write(&state, "{ this is not json").unwrap();
    let token = signer().sign(&Claims::new("Acme", (T0 + 100 * HOUR) as i64));
    let clock = TestClock::new(at(T0));
    let (monitor, events) = start(&clock, LicenseSource::Static(token), &state).await;
    let problem = events
        .iter()
        .find_map(|e| match e {
            LicenseEvent::StateInvalid { reason, .. } => Some(*reason),
            _ => None,
        })
        .expect("license.state_invalid");
    assert_eq!(problem, "corrupt");
    assert_eq!(monitor.verdict().state, LicenseState::Valid);
    // The file is rewritten with a usable state.
    let text = std::fs::read_to_string(&state).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["version"], 4);
    assert_eq!(json["high_water"], T0);
}

#[tokio::test(start_paused = true)]
async fn an_unwritable_state_path_does_not_block_start_up() {
    let clock = TestClock::new(at(T0));
    let token = signer().sign(&Claims::new("Acme", (T0 + 100 * HOUR) as i64));
    let (monitor, events) = start(
        &clock,
        LicenseSource::Static(token),
        Path::new("/nonexistent-dir/for/state.json"),
    )
    .await;
    assert!(names(&events).contains(&"license.state_invalid"));
    assert_eq!(monitor.verdict().state, LicenseState::Valid);
}
