//! Quick start: mint a development key and license in memory, start a monitor on a
//! license file, and watch it verify, refuse a tampered file, and pick up a renewal by
//! itself: the file's directory is watched, so each change is live in milliseconds.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! It ends by itself in well under a second, and exits non-zero if anything misbehaves.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use std::time::{Duration, Instant};

use iosetu_license::{
    Claims, LicenseEvent, LicenseMonitor, LicenseSigner, LicenseSource, LicenseState,
};
use tokio::sync::broadcast;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Every license event is one log line with `event=license.…`.
    tracing_subscriber::fmt()
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stdout)
        .init();
    match run().await {
        Ok(()) => {
            println!("\nquickstart: all steps behaved as expected");
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("\nquickstart FAILED: {problem}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs() as i64;

    // 1. The vendor's side: a key pair (the private key stays with the vendor; the public
    //    key is compiled into the service) and a license that expires in 20 days.
    let signer = LicenseSigner::generate().map_err(|e| e.to_string())?;
    println!(
        "== public key the service is built with ==\n{}",
        signer.public_key_pem()
    );
    let mut claims = Claims::new("Acme Corp", now + 20 * 86_400);
    claims.iat = Some(now);
    claims.features = vec!["sso".into(), "audit-log".into()];
    let token = signer.sign(&claims);

    // 2. The operator's side: the license is a mounted file.
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("license.key");
    std::fs::write(&path, format!("{token}\n")).map_err(|e| e.to_string())?;

    println!("== start: the first check runs before start() returns ==");
    let monitor = LicenseMonitor::builder()
        .public_key(signer.public_key())
        .source(LicenseSource::File(path.clone()))
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let verdict = monitor.verdict();
    println!(
        "verdict: {} for {:?}, {} days left, features {:?}; /health {} {}",
        verdict.state.as_str(),
        verdict.claims.as_ref().map(|c| c.customer.as_str()),
        verdict.days_remaining().unwrap_or_default(),
        verdict
            .claims
            .as_ref()
            .map(|c| c.features.clone())
            .unwrap_or_default(),
        monitor.health().http_status(),
        monitor.health().to_json(),
    );
    expect(
        verdict.state == LicenseState::Valid,
        "a fresh license is valid",
    )?;

    println!("\n== someone edits the file: the last good license stays in force ==");
    // One character of the claims changed: the signature no longer matches.
    let (header, rest) = token.split_once('.').ok_or("a token has three parts")?;
    let mut payload: Vec<char> = rest.chars().collect();
    payload[10] = if payload[10] == 'A' { 'B' } else { 'A' };
    let tampered = format!("{header}.{}", payload.into_iter().collect::<String>());
    let mut events = monitor.subscribe();
    std::fs::write(&path, tampered).map_err(|e| e.to_string())?;
    picked_up(&mut events, "license.verification_failed").await?;
    let verdict = monitor.verdict();
    println!(
        "verdict: {}, still the license that expires {}",
        verdict.state.as_str(),
        verdict
            .expires_at
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_default()
    );
    expect(
        verdict.state == LicenseState::Valid,
        "a bad file keeps the last good license",
    )?;

    println!("\n== the vendor issues a renewal; the file is replaced ==");
    let mut renewal = Claims::new("Acme Corp", now + 365 * 86_400);
    renewal.iat = Some(now);
    std::fs::write(&path, signer.sign(&renewal)).map_err(|e| e.to_string())?;
    picked_up(&mut events, "license.loaded").await?;
    let verdict = monitor.verdict();
    println!(
        "verdict: {}, {} days left",
        verdict.state.as_str(),
        verdict.days_remaining().unwrap_or_default()
    );
    expect(
        verdict.days_remaining() >= Some(364),
        "the renewal is in force",
    )?;

    println!("\n== the file is deleted: still licensed until the license's own expiry ==");
    std::fs::remove_file(&path).map_err(|e| e.to_string())?;
    picked_up(&mut events, "license.missing").await?;
    let verdict = monitor.verdict();
    expect(
        verdict.state == LicenseState::Valid,
        "a deleted file keeps the license",
    )?;
    println!("verdict: {}", verdict.state.as_str());
    Ok(())
}

/// Waits (at most 5 s) for the monitor to notice a file change by itself.
async fn picked_up(
    events: &mut broadcast::Receiver<LicenseEvent>,
    name: &str,
) -> Result<(), String> {
    let started = Instant::now();
    let wait = async {
        loop {
            match events.recv().await {
                Ok(event) if event.name() == name => return Ok(()),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    return Err("the monitor stopped".to_owned());
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .map_err(|_| format!("{name} did not come within 5 s"))??;
    println!(
        "(picked up by the file watch in {} ms, no check_now, no restart)",
        started.elapsed().as_millis()
    );
    Ok(())
}

fn expect(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("expected: {what}"))
    }
}
