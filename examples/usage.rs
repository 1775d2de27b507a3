//! Usage reports for true-up in a second of real time: two instances of a service meter
//! the seats in use over six weeks (one month's peak goes over the license's 10 seats),
//! keep usage journals, export them, and the vendor verifies the reports and reads the
//! true-up table. Then a record is edited and verification catches it. Last, the monthly
//! loop with the vendor's ledger: the true-up is recorded and a usage receipt signed; the
//! customer installs it like any notice, the next month's reports extend the heads it
//! accepted, and a journal restored from before it is caught.
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
//!     --ledger target/usage-example/iosetu-ledger.db \
//!     target/usage-example/a.json target/usage-example/b.json
//! ```
//!
//! (The example's own ledger lives in a temporary directory and goes with it.)
//!
//! The monitors run on paused tokio time with a `TestClock`, so weeks pass at once.
//! Exits non-zero if anything misbehaves.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iosetu_license::ledger::{Ledger, ReceiptSigner};
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

/// An instance of the service: the license, the vendor's notices (a file the customer
/// adds notices to, receipts among them), its usage journal.
async fn instance(
    signer: &LicenseSigner,
    token: &str,
    notices: &Path,
    clock: &TestClock,
    journal: &Path,
) -> Result<LicenseMonitor, String> {
    LicenseMonitor::builder()
        .public_key(signer.public_key())
        .source(LicenseSource::Static(token.to_owned()))
        .notice_source(LicenseSource::File(notices.to_path_buf()))
        // Read at start and at every hourly check: paused weeks need no 2 s poll.
        .watch_file(false)
        .file_poll_interval(None)
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
    // No notices yet (no file is none).
    let notices = dir.join("notices");
    let first = instance(&signer, &token, &notices, &clock, &a).await?;
    let second = instance(&signer, &token, &notices, &clock, &b).await?;
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

    let now = monthly_loop(&signer, &token, &notices, &clock, [&a, &b], reports, now).await?;
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

/// The vendor records the true-up in its ledger and signs a receipt; the customer
/// installs it; the next month's reports must extend what it accepted. Returns the time
/// of the last export.
async fn monthly_loop(
    signer: &LicenseSigner,
    token: &str,
    notices: &Path,
    clock: &TestClock,
    journals: [&Path; 2],
    reports: Vec<usage::Report>,
    now: SystemTime,
) -> Result<SystemTime, String> {
    println!("\n== the monthly loop: the vendor's ledger and a usage receipt ==");
    // The vendor's ledger (the CLI's `--ledger`, `iosetu-ledger.db` by default).
    let vendor = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut ledger =
        Ledger::open(vendor.path().join("iosetu-ledger.db")).map_err(|e| e.to_string())?;
    let receipts = ReceiptSigner::new(signer);
    let first = ledger
        .true_up(
            "Acme Corp",
            &reports,
            Some(&receipts.clone().issued_at(now)),
        )
        .map_err(|e| e.to_string())?;
    let new_keys = first
        .verification
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::NewKey)
        .count();
    let receipt = first
        .receipt
        .ok_or("an intact true-up with a receipt asked for signs one")?;
    println!(
        "  true-up {} recorded: {new_keys} keys new to the ledger; receipt seq {} accepts {} \
         heads",
        first.id,
        receipt.notice.seq,
        receipt.notice.receipt.len()
    );
    // The customer adds the receipt to its notices, like any notice.
    std::fs::write(notices, format!("{}\n", receipt.token)).map_err(|e| e.to_string())?;

    println!("  a week later:");
    let mut running = Vec::new();
    for journal in journals {
        running.push(instance(signer, token, notices, clock, journal).await?);
    }
    for hour in 0..7 * 24u64 {
        for (i, monitor) in running.iter().enumerate() {
            monitor
                .usage()
                .set("seats", (hour + i as u64) % 6)
                .map_err(|e| e.to_string())?;
        }
        tokio::time::sleep(Duration::from_secs(HOUR)).await;
    }
    for monitor in running {
        monitor.shutdown().await;
    }
    let now = now + Duration::from_secs(7 * 24 * HOUR);
    let mut next = Vec::new();
    for journal in journals {
        next.push(usage::export(journal, now).map_err(|e| e.to_string())?);
    }
    let noted = next
        .iter()
        .filter(|r| {
            r.records.iter().any(|rec| {
                rec.notes
                    .contains(&format!("receipt:{}", receipt.notice.seq))
            })
        })
        .count();
    let second = ledger
        .true_up("Acme Corp", &next, Some(&receipts.issued_at(now)))
        .map_err(|e| e.to_string())?;
    if !second.verification.intact() || noted != 2 {
        return Err(format!(
            "the next month should extend the receipt ({noted} journals noted it): {:?}",
            second.verification.findings
        ));
    }
    let receipt = second.receipt.ok_or("no second receipt")?;
    println!(
        "  both journals note receipt:1 and extend its heads; true-up {} signs receipt seq {}",
        second.id, receipt.notice.seq
    );

    println!("  a journal restored from a backup taken before that receipt:");
    let restored = reports[0].clone();
    let findings = ledger
        .check("Acme Corp", &[restored, next[1].clone()])
        .map_err(|e| e.to_string())?;
    let cut = findings
        .iter()
        .find(|f| f.kind == FindingKind::ReceiptCut)
        .ok_or("a journal below its receipted head went unseen")?;
    println!(
        "    {} ({}): {}",
        cut.kind.code(),
        cut.kind.class().code(),
        cut.detail
    );
    Ok(now)
}
