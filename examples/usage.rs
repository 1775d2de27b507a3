//! Usage reports for true-up in a second of real time: two instances of a service meter
//! the seats in use over six weeks (one month's peak goes over the license's 10 seats),
//! keep usage journals, export them, and the vendor verifies the reports and reads the
//! true-up table. Then a record is edited and verification catches it.
//!
//! ```text
//! cargo run --example usage
//! ```
//!
//! The journals are real files in `target/usage-example/` (`a.jsonl`, `b.jsonl`, each
//! with its instance key beside it), so the README's commands can be run on them:
//!
//! ```text
//! cargo run --features cli --bin iosetu-license -- usage export \
//!     --journal target/usage-example/a.jsonl --out target/usage-example/a.json
//! cargo run --features cli --bin iosetu-license -- usage verify \
//!     target/usage-example/a.json target/usage-example/b.json
//! ```
//!
//! The monitors run on paused tokio time with a `TestClock`, so weeks pass at once.
//! Exits non-zero if anything misbehaves.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iosetu_license::usage::{self, FindingKind};
use iosetu_license::{Claims, LicenseMonitor, LicenseSigner, LicenseSource, TestClock};

const HOUR: u64 = 3_600;
const SIGNING_KEY: &str = include_str!("dev-keys/dev.key.pem");
/// 2027-01-24T00:00:00Z: six weeks from here reach into March.
const START: u64 = 1_800_800_000 - 1_800_800_000 % 86_400;

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    match runtime.block_on(story()) {
        Ok(()) => {
            println!("\nusage: every phase behaved as expected");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("\nusage: {failure}");
            ExitCode::FAILURE
        }
    }
}

async fn instance(
    signer: &LicenseSigner,
    token: &str,
    clock: &TestClock,
    journal: &Path,
) -> Result<LicenseMonitor, String> {
    LicenseMonitor::builder()
        .public_key(signer.public_key())
        .source(LicenseSource::Static(token.to_owned()))
        .clock(clock.clone())
        .usage_journal(journal)
        .start()
        .await
        .map_err(|e| e.to_string())
}

async fn story() -> Result<(), String> {
    let dir = PathBuf::from("target/usage-example");
    // A fresh run: the journals of an earlier run would meet this run's clock going
    // back to the same start (which verification rightly calls a clock wound back).
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let signer = LicenseSigner::from_pkcs8_pem(SIGNING_KEY).map_err(|e| e.to_string())?;
    let mut claims = Claims::new("Acme Corp", START as i64 + 365 * 86_400);
    claims.jti = Some("acme-2027".into());
    claims.limits.insert("seats".into(), 10);
    claims.max_instances = Some(2);
    let token = signer.sign(&claims);
    let clock = TestClock::new(UNIX_EPOCH + Duration::from_secs(START));

    println!("== two instances meter seats for six weeks ==");
    let (a, b) = (dir.join("a.jsonl"), dir.join("b.jsonl"));
    let first = instance(&signer, &token, &clock, &a).await?;
    let second = instance(&signer, &token, &clock, &b).await?;
    let mut warned = first.subscribe();
    let calls = first
        .usage()
        .counter("api_calls")
        .map_err(|e| e.to_string())?;
    for hour in 0..42 * 24u64 {
        // Seats in use follow the working day; a busy week in February goes over.
        let busy = (30..35).contains(&(hour / 24)) && (hour % 24) == 14;
        let (x, y) = if busy { (7, 6) } else { (hour % 5, 3) };
        first.usage().set("seats", x).map_err(|e| e.to_string())?;
        second.usage().set("seats", y).map_err(|e| e.to_string())?;
        calls.add(40);
        tokio::time::sleep(Duration::from_secs(HOUR)).await;
    }
    first.shutdown().await;
    second.shutdown().await;
    let mut over_limit = 0;
    while let Ok(event) = warned.try_recv() {
        if event.name() == "license.limit_exceeded" {
            over_limit += 1;
        }
    }
    println!(
        "  {over_limit} license.limit_exceeded warnings (one instance never goes over 10 alone)"
    );

    println!("\n== the customer exports, the vendor verifies ==");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(START + 42 * 24 * HOUR);
    let mut reports = Vec::new();
    for journal in [&a, &b] {
        let report = usage::export(journal, now).map_err(|e| e.to_string())?;
        println!(
            "  {}: {} records, key {}…",
            journal.display(),
            report.records.len(),
            &report.key[..12]
        );
        reports.push(report);
    }
    let verification = usage::verify(&reports);
    if !verification.intact() || !verification.clocks_ok() {
        return Err(format!(
            "honest journals flagged: {:?}",
            verification.findings
        ));
    }
    println!("  chains and signatures intact, clocks consistent\n");
    print!("{}", verification.table());
    let feb = verification
        .true_up
        .iter()
        .find(|r| r.month == "2027-02" && r.metric == "seats")
        .ok_or("no February seats row")?;
    if !(feb.value == 13 && feb.over()) {
        return Err(format!("February's peak should be 13 of 10: {feb:?}"));
    }
    let jan = verification
        .true_up
        .iter()
        .find(|r| r.month == "2027-01" && r.metric == "seats")
        .ok_or("no January seats row")?;
    if jan.over() {
        return Err(format!("January stayed within 10: {jan:?}"));
    }

    println!("\n== a record edited before sending ==");
    let mut edited = reports[0].clone();
    let record = edited
        .records
        .iter_mut()
        .find(|r| r.gauges.get("seats") == Some(&7))
        .ok_or("no busy hour")?;
    record.gauges.insert("seats".into(), 2);
    let caught = usage::verify(&[edited, reports[1].clone()]);
    let signature = caught
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::Signature)
        .ok_or("the edit went unseen")?;
    println!(
        "  {} (record {}): {}",
        signature.kind.code(),
        signature.n.unwrap_or(0),
        signature.detail
    );
    for (journal, name) in [(&a, "a.json"), (&b, "b.json")] {
        let report = usage::export(journal, now).map_err(|e| e.to_string())?;
        std::fs::write(dir.join(name), report.to_json()).map_err(|e| e.to_string())?;
    }
    println!(
        "\n  reports written to {}/a.json and b.json for `iosetu-license usage verify`",
        dir.display()
    );
    Ok(())
}
