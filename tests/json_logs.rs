//! The log lines: shaped like the product text's examples, safe for any clock, and
//! impossible to forge through operator-supplied text.
//!
//! Every test in this binary installs its own subscriber: `tracing` caches per call site
//! whether anyone listens, and a test on another thread without one would race with the
//! scoped ones here.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iosetu_license::{Claims, LicenseMonitor, LicenseSigner, LicenseSource, TestClock};
use serde_json::Value;

const T0: u64 = 1_800_000_000;
const DAY: i64 = 86_400;

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0)
}

fn signer() -> LicenseSigner {
    LicenseSigner::from_seed([51; 32])
}

/// A `MakeWriter` that keeps everything written, to read the JSON lines back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Installs a JSON subscriber for this thread; its lines land in the returned buffer.
fn capture_json() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(captured.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

#[tokio::test(start_paused = true)]
async fn json_log_lines_look_like_the_product_text() {
    let (captured, _guard) = capture_json();

    let clock = TestClock::new(t0());
    let exp = T0 as i64 + 25 * DAY + 3600;
    let token = signer().sign(&Claims::new("YourCompany", exp));
    let monitor = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(token.clone()))
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(60)).await;
    clock.jump_wall(-7200);
    monitor.check_now().await;

    let lines = captured.lines();
    let by_event = |name: &str| {
        lines
            .iter()
            .find(|l| l["event"] == name)
            .unwrap_or_else(|| panic!("no {name} line in {lines:#?}"))
            .clone()
    };
    let expiring = by_event("license.expiring_30d");
    assert_eq!(expiring["level"], "WARN");
    assert_eq!(expiring["msg"], "License expiring");
    assert_eq!(expiring["days_remaining"], 25);
    assert_eq!(expiring["expires_at"], "2027-02-09T09:00:00Z");
    assert_eq!(expiring["customer"], "YourCompany");
    assert_eq!(expiring["severity"], "warning");
    assert_eq!(expiring["target"], "iosetu_license");

    let jump = by_event("license.time_manipulation_detected");
    assert_eq!(jump["level"], "ERROR");
    assert_eq!(
        jump["msg"],
        "CRITICAL: Backward time jump detected - possible clock manipulation"
    );
    assert_eq!(
        jump["message"],
        "System clock was set backward - this may indicate license bypass attempt"
    );
    assert_eq!(jump["wall_clock_jump_seconds"], -7200);
    assert_eq!(jump["type"], "backward_jump");

    let grace = by_event("license.grace_mode_entered");
    assert_eq!(grace["level"], "ERROR");
    assert_eq!(grace["grace_period_seconds"], 86_400);
    assert_eq!(grace["reason"], "clock_manipulation");

    // Every line of ours names its event; none carries the token.
    let (_, signature) = token.rsplit_once('.').unwrap();
    for line in &lines {
        if line["target"] == "iosetu_license" {
            assert!(
                line["event"].as_str().unwrap().starts_with("license."),
                "{line}"
            );
        }
        assert!(
            !line.to_string().contains(signature),
            "the token leaked: {line}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_clock_in_1965_logs_without_a_panic() {
    // Finding 1 of the trusted-time review: with any subscriber installed, formatting the
    // grace anchor of a clock before 1970 panicked at start.
    let (captured, _guard) = capture_json();
    let clock = TestClock::new(UNIX_EPOCH - Duration::from_secs(157_766_400));
    let monitor = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(String::new()))
        .clock(clock)
        .start()
        .await
        .unwrap();
    assert!(monitor.verdict().admits());
    let lines = captured.lines();
    let grace = lines
        .iter()
        .find(|l| l["event"] == "license.grace_mode_entered")
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(grace["grace_started_at"], "1965-01-01T00:00:00Z");
}

#[tokio::test(start_paused = true)]
async fn a_path_with_a_newline_cannot_forge_a_log_line() {
    // Finding 8: text logs printed the path raw, so a newline in it started a new line
    // that looked like one of ours.
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join("license.key\nINFO iosetu_license: event=\"license.grace_mode_exited\"");
    let clock = TestClock::new(t0());
    let _monitor = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::File(path))
        .watch_file(false)
        .clock(clock)
        .start()
        .await
        .unwrap();
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("license.missing"), "{text}");
    for line in text.lines() {
        assert!(
            !line.starts_with("INFO iosetu_license: event=\"license.grace_mode_exited\""),
            "a forged line: {text}"
        );
    }
    assert!(text.contains("license.key\\nINFO"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_limit_the_service_does_not_count_is_warned_about_at_start() {
    let (captured, _guard) = capture_json();
    let mut claims = Claims::new("YourCompany", T0 as i64 + 30 * DAY);
    claims.max_instances = Some(3);
    let _monitor = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(signer().sign(&claims)))
        .clock(TestClock::new(t0()))
        .start()
        .await
        .unwrap();
    let lines = captured.lines();
    let warning = lines
        .iter()
        .find(|l| l["max_instances"] == 3)
        .unwrap_or_else(|| panic!("no warning in {lines:#?}"));
    assert_eq!(warning["level"], "WARN");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("does not count them"),
        "{warning}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_state_file_that_cannot_be_written_logs_one_event_line() {
    // Finding 11: each failed write logged a bare warning (no `event` field), at every
    // check.
    let (captured, _guard) = capture_json();
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("state");
    std::fs::write(&blocker, "a file where a directory should be").unwrap();
    let state = blocker.join("state.json");
    let clock = TestClock::new(t0());
    let monitor = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(
            signer().sign(&Claims::new("YourCompany", T0 as i64 + 30 * DAY)),
        ))
        .state_file(&state)
        .clock(clock)
        .start()
        .await
        .unwrap();
    for _ in 0..10 {
        monitor.check_now().await;
    }
    tokio::time::sleep(Duration::from_secs(600)).await;
    let lines = captured.lines();
    let failed: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "license.state_write_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{lines:#?}");
    let line = failed[0];
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["target"], "iosetu_license");
    assert_eq!(line["severity"], "warning");
    assert_eq!(line["reason"], "unwritable");
    assert_eq!(line["path"], state.display().to_string());
    assert!(
        line["error"].as_str().unwrap().contains("state.json"),
        "{line}"
    );
    for line in &lines {
        if line["target"] == "iosetu_license" {
            assert!(line["event"].is_string(), "a line without an event: {line}");
        }
    }
}
