//! Vendor notices in under a second of real time: a service with a state file is cut off
//! for a clock "set back" that was really a clock once set a year ahead, a vendor's time
//! attestation brings it back, and later a revocation takes its license away, for good.
//!
//! ```text
//! cargo run --example notices
//! ```
//!
//! The monitor runs on paused tokio time with a `TestClock`, so days pass at once; the
//! license file and the state file are real files in a temporary directory. The vendor's
//! notices are signed here with the published example key (`examples/dev-keys/`), as
//! `iosetu-license notice` would sign them. Exits non-zero if any phase misbehaves.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iosetu_license::{
    AttributeValue, Claims, LicenseEvent, LicenseMonitor, LicenseSigner, LicenseSource, Notice,
    TestClock,
};
use tokio::sync::broadcast;

const DAY: i64 = 86_400;
const SIGNING_KEY: &str = include_str!("dev-keys/dev.key.pem");

fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    match runtime.block_on(story()) {
        Ok(()) => {
            println!("\nnotices: every phase behaved as expected");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("\nnotices: {failure}");
            ExitCode::FAILURE
        }
    }
}

struct Service {
    clock: TestClock,
    license: std::path::PathBuf,
    state: std::path::PathBuf,
    signer: LicenseSigner,
}

impl Service {
    async fn start(&self) -> Result<(LicenseMonitor, broadcast::Receiver<LicenseEvent>), String> {
        let builder = LicenseMonitor::builder()
            .public_key(self.signer.public_key())
            .source(LicenseSource::File(self.license.clone()))
            .state_file(&self.state)
            // The story asks for a check after each change it makes (as an operator's
            // reload would): no polls every 2 s through its months of paused time.
            .watch_file(false)
            .file_poll_interval(None)
            .clock(self.clock.clone());
        let events = builder.subscribe();
        let monitor = builder.start().await.map_err(|e| e.to_string())?;
        Ok((monitor, events))
    }

    fn write(&self, lines: &[&str]) -> Result<(), String> {
        std::fs::write(&self.license, lines.join("\n") + "\n").map_err(|e| e.to_string())
    }

    /// The vendor's clock: real time, which the test clock follows when it is right.
    fn now(&self) -> i64 {
        secs(iosetu_license::Clock::wall(&self.clock))
    }
}

/// Prints the events so far and the verdict, and checks `expect` against `/health`.
fn phase(
    title: &str,
    monitor: &LicenseMonitor,
    events: &mut broadcast::Receiver<LicenseEvent>,
    expect: &str,
) -> Result<(), String> {
    println!("\n== {title}");
    while let Ok(event) = events.try_recv() {
        let fields: Vec<String> = event
            .attributes()
            .into_iter()
            .filter(|(k, _)| !matches!(*k, "severity" | "action" | "error"))
            .map(|(k, v)| match v {
                AttributeValue::Str(s) => format!("{k}={s}"),
                AttributeValue::Int(i) => format!("{k}={i}"),
                AttributeValue::Bool(b) => format!("{k}={b}"),
                AttributeValue::Float(f) => format!("{k}={f}"),
                other => format!("{k}={other:?}"),
            })
            .collect();
        println!("  event {} {}", event.name(), fields.join(" "));
    }
    let verdict = monitor.verdict();
    let health = monitor.health();
    println!(
        "  verdict: {:?}{}  /health: {}",
        verdict.state,
        verdict
            .reason
            .as_ref()
            .map_or_else(String::new, |r| format!(" ({})", r.code())),
        serde_json::to_string(&health).unwrap_or_default()
    );
    let status = serde_json::to_value(health.status).unwrap_or_default();
    if status != expect {
        return Err(format!("{title}: /health is {status}, expected {expect}"));
    }
    Ok(())
}

// (The day-long waits run a few seconds past the cut-off: the checker's timer for it and
// the story's own may fire at the same paused instant, in either order.)
async fn story() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let signer = LicenseSigner::from_pkcs8_pem(SIGNING_KEY).map_err(|e| e.to_string())?;
    let start = secs(SystemTime::now());
    let service = Service {
        clock: TestClock::new(UNIX_EPOCH + Duration::from_secs(start as u64)),
        license: dir.path().join("license.key"),
        state: dir.path().join("license-state.json"),
        signer,
    };
    let mut claims = Claims::new("Acme Corp", start + 365 * DAY);
    claims.jti = Some("acme-2027".into());
    claims.iat = Some(start);
    let license = service.signer.sign(&claims);
    service.write(&[&license])?;

    let (monitor, mut events) = service.start().await?;
    phase("a licensed service", &monitor, &mut events, "healthy")?;

    // Someone sets the clock a year ahead, and the service restarts meanwhile: its state
    // file now holds a mark a year ahead. NTP puts the clock right an hour later.
    drop(monitor);
    service.clock.jump_wall(365 * DAY);
    let (monitor, mut events) = service.start().await?;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    service.clock.jump_wall(-365 * DAY);
    tokio::time::sleep(Duration::from_secs(61)).await;
    phase(
        "the clock put right reads as set back: grace (clock_manipulation)",
        &monitor,
        &mut events,
        "degraded",
    )?;
    tokio::time::sleep(Duration::from_secs(DAY as u64 + 5)).await;
    phase(
        "a day later: cut off, and every restart finds the same",
        &monitor,
        &mut events,
        "unhealthy",
    )?;

    // The vendor attests the time (`iosetu-license notice --seq 1 --time now`); the
    // customer adds the line.
    let now = service.now();
    let mut notice = Notice::new("Acme Corp", now, 1);
    notice.time = Some(now);
    notice.exp = Some(now + 3 * DAY);
    let attestation = service.signer.sign_notice(&notice);
    service.write(&[&license, &attestation])?;
    monitor.check_now().await;
    phase(
        "the vendor's time attestation installed: valid again",
        &monitor,
        &mut events,
        "healthy",
    )?;
    drop(monitor);
    let (monitor, mut events) = service.start().await?;
    phase(
        "a restart: the state file's mark is right now, the attestation not used again",
        &monitor,
        &mut events,
        "healthy",
    )?;

    // Ten days later the contract ends early: the vendor revokes the license
    // (`iosetu-license notice --seq 2 --revoke acme-2027`). (Each simulated minute writes
    // the state file, as a real one would: the story keeps its days few.)
    tokio::time::sleep(Duration::from_secs(10 * DAY as u64)).await;
    let now = service.now();
    let mut notice = Notice::new("Acme Corp", now, 2);
    notice.revoke = vec!["acme-2027".into()];
    let revocation = service.signer.sign_notice(&notice);
    service.write(&[&license, &revocation])?;
    monitor.check_now().await;
    phase(
        "the revocation installed: the license's grace (revoked)",
        &monitor,
        &mut events,
        "degraded",
    )?;
    tokio::time::sleep(Duration::from_secs(DAY as u64 + 5)).await;
    phase("a day later: cut off", &monitor, &mut events, "unhealthy")?;

    drop(monitor);
    service.write(&[&license])?;
    let (monitor, mut events) = service.start().await?;
    phase(
        "the notice's line deleted and the service restarted: still revoked (state file)",
        &monitor,
        &mut events,
        "unhealthy",
    )?;
    Ok(())
}
