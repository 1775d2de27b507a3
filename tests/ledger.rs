//! The vendor's ledger: its file (created, refused when it is not ours, never touched
//! then), notice seqs taken at once by several processes, and the monthly true-up loop
//! with a real monitor: reports verified against it, a usage receipt installed, the next
//! report extending it, and a journal cut or restored below it caught.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use common::notices::file;
use common::{HOUR, builder, run_for, signer};
use iosetu_license::ledger::{self, Ledger, ReceiptSigner};
use iosetu_license::usage::{self, FindingClass, FindingKind, Report};
use iosetu_license::{Claims, LicenseMonitor, Notice, TestClock};

/// The tool, run in `dir` (so that its default ledger, if any, lands there).
fn cli(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_iosetu-license"));
    command.current_dir(dir);
    command
}

fn said(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}", said(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// The vendor's key (the one the tests' monitors trust) as a PEM file in `dir`.
fn vendor_key(dir: &Path) -> PathBuf {
    let path = dir.join("vendor.key.pem");
    std::fs::write(&path, signer().private_key_pem().unwrap()).unwrap();
    path
}

fn seq_of(token: &str) -> u64 {
    iosetu_license::token::decode_unverified(token.trim())
        .unwrap()
        .parse_notice()
        .unwrap()
        .seq
}

#[test]
fn open_creates_a_ledger_that_reopens_with_what_it_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vendor.db");
    let mut ledger = Ledger::open(&path).unwrap();
    assert!(path.is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the vendor's business alone");
    }
    // Nothing but the ledger is left beside it (the temporary it was built as is gone).
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with("-wal") && !n.ends_with("-shm"))
        .collect();
    assert_eq!(names, ["vendor.db"]);

    let mut claims = Claims::new("Acme", 4_102_444_800);
    claims.jti = Some("acme-1".into());
    claims.iat = Some(1_800_000_000);
    let token = ledger.issue_license(&signer(), &claims).unwrap();
    let again = ledger.issue_license(&signer(), &claims).unwrap_err();
    assert_eq!(again.reason(), "jti_taken");
    claims.jti = None;
    assert_eq!(
        ledger
            .issue_license(&signer(), &claims)
            .unwrap_err()
            .reason(),
        "invalid"
    );
    let mut revocation = Notice::new("Acme", 1_800_000_000, 0);
    revocation.revoke = vec!["acme-1".into()];
    let first = ledger.issue_notice(&signer(), revocation, None).unwrap();
    assert_eq!((first.notice.seq, first.previous_seq), (1, None));
    let other = ledger
        .issue_notice(&signer(), Notice::new("Globex", 1_800_000_000, 0), None)
        .unwrap();
    assert_eq!(other.notice.seq, 1, "seqs are per customer");
    drop(ledger);

    let ledger = Ledger::open(&path).unwrap();
    let licenses = ledger.licenses("Acme").unwrap();
    assert_eq!(licenses.len(), 1);
    assert_eq!(
        (licenses[0].jti.as_str(), licenses[0].iat, licenses[0].exp),
        ("acme-1", Some(1_800_000_000), 4_102_444_800)
    );
    assert_eq!(licenses[0].token, token);
    let notices = ledger.notices("Acme").unwrap();
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].token, first.token);
    assert_eq!(notices[0].revoke, ["acme-1"]);
    assert!(notices[0].receipt.is_empty());
    assert_eq!(ledger.next_seq("Acme").unwrap(), 2);
    assert_eq!(ledger.next_seq("Initech").unwrap(), 1);
}

/// A ledger with something in it, closed.
fn a_ledger(path: &Path) {
    let mut ledger = Ledger::open(path).unwrap();
    for i in 0..20 {
        let mut claims = Claims::new("Acme", 4_102_444_800);
        claims.jti = Some(format!("acme-{i}"));
        ledger.issue_license(&signer(), &claims).unwrap();
        let mut notice = Notice::new("Acme", 1_800_000_000, 0);
        notice.revoke = vec![format!("acme-{i}")];
        ledger.issue_notice(&signer(), notice, None).unwrap();
    }
}

#[test]
fn a_file_that_is_not_a_ledger_is_refused_with_its_reason_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name);

    let random = at("random.db");
    let mut noise = vec![0u8; 8192];
    getrandom::fill(&mut noise).unwrap();
    std::fs::write(&random, &noise).unwrap();

    let empty = at("empty.db");
    std::fs::write(&empty, b"").unwrap();

    // An SQLite database of another application.
    let foreign = at("foreign.db");
    {
        let conn = rusqlite::Connection::open(&foreign).unwrap();
        conn.execute_batch(
            "CREATE TABLE notices (seq INTEGER); INSERT INTO notices VALUES (1), (2);",
        )
        .unwrap();
    }

    // A ledger cut to half its length.
    let truncated = at("truncated.db");
    a_ledger(&truncated);
    let len = std::fs::metadata(&truncated).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    // A ledger a newer version of the crate wrote.
    let newer = at("newer.db");
    a_ledger(&newer);
    {
        let conn = rusqlite::Connection::open(&newer).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
    }

    let directory = at("directory.db");
    std::fs::create_dir(&directory).unwrap();

    for (path, reason) in [
        (&random, "not_a_ledger"),
        (&empty, "not_a_ledger"),
        (&foreign, "not_a_ledger"),
        (&truncated, "damaged"),
        (&newer, "newer_version"),
    ] {
        let before = std::fs::read(path).unwrap();
        let err = Ledger::open(path).unwrap_err();
        assert_eq!(err.reason(), reason, "{}: {err}", path.display());
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert_eq!(
            std::fs::read(path).unwrap(),
            before,
            "{} was changed",
            path.display()
        );
        // The tool says the same in one line, exit 2, and leaves it too.
        let out = cli(dir.path())
            .args(["notice", "--customer", "Acme", "--time", "now", "--key"])
            .arg(vendor_key(dir.path()))
            .arg("--ledger")
            .arg(path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", said(&out));
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("({reason})")), "{err}");
        assert!(out.stdout.is_empty(), "nothing issued");
        assert_eq!(std::fs::read(path).unwrap(), before);
    }
    assert_eq!(
        Ledger::open(&directory).unwrap_err().reason(),
        "not_a_ledger"
    );
    // What it was: the foreign database still holds its rows.
    let conn = rusqlite::Connection::open(&foreign).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM notices", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2);
}

#[test]
fn eight_processes_taking_notice_seqs_at_once_get_distinct_consecutive_ones() {
    let dir = tempfile::tempdir().unwrap();
    let key = vendor_key(dir.path());
    // No ledger yet: the processes race to create it too.
    let ledger = dir.path().join("vendor.db");
    let mut seqs = Vec::new();
    for round in 0..2 {
        let children: Vec<_> = (0..8)
            .map(|i| {
                cli(dir.path())
                    .args(["notice", "--customer", "Acme", "--key"])
                    .arg(&key)
                    .args(["--revoke", &format!("jti-{round}-{i}"), "--ledger"])
                    .arg(&ledger)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", said(&out));
            seqs.push(seq_of(&String::from_utf8(out.stdout).unwrap()));
        }
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=16).collect::<Vec<u64>>());
    let notices = Ledger::open(&ledger).unwrap().notices("Acme").unwrap();
    assert_eq!(
        notices.iter().map(|n| n.seq).collect::<Vec<_>>(),
        (1..=16).collect::<Vec<u64>>()
    );
    // Each recorded what it printed: the revocation it was asked for.
    for notice in &notices {
        assert_eq!(seq_of(&notice.token), notice.seq);
        assert_eq!(notice.revoke.len(), 1);
    }
}

#[test]
fn the_tool_records_what_it_issues_and_refuses_a_seq_the_ledger_holds() {
    let dir = tempfile::tempdir().unwrap();
    let key = vendor_key(dir.path());
    let issue = || {
        ok(cli(dir.path())
            .args(["issue", "--customer", "Acme", "--valid-for", "30d", "--key"])
            .arg(&key))
    };
    let (a, b) = (issue(), issue());
    // The default ledger, in the current directory.
    let path = dir.path().join(ledger::DEFAULT_PATH);
    let recorded: Vec<String> = Ledger::open(&path)
        .unwrap()
        .licenses("Acme")
        .unwrap()
        .into_iter()
        .map(|l| l.token)
        .collect();
    assert_eq!(recorded, [a.trim(), b.trim()]);

    let notice = |extra: &[&str]| {
        cli(dir.path())
            .args(["notice", "--customer", "Acme", "--time", "now", "--key"])
            .arg(&key)
            .args(extra)
            .output()
            .unwrap()
    };
    // A customer's earlier notices, from before the ledger: its seq given once.
    let out = notice(&["--seq", "5"]);
    assert!(out.status.success(), "{}", said(&out));
    let again = notice(&["--seq", "5"]);
    assert_eq!(again.status.code(), Some(2), "{}", said(&again));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("seq_taken") && err.contains("seq 5"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let next = notice(&[]);
    assert!(next.status.success(), "{}", said(&next));
    assert_eq!(seq_of(&String::from_utf8_lossy(&next.stdout)), 6);
    // Lower than the highest: issued, with a warning that a service refuses it as stale.
    let lower = notice(&["--seq", "2"]);
    assert!(lower.status.success(), "{}", said(&lower));
    assert!(
        String::from_utf8_lossy(&lower.stderr).contains("stale"),
        "{}",
        said(&lower)
    );
    let seqs: Vec<u64> = Ledger::open(&path)
        .unwrap()
        .notices("Acme")
        .unwrap()
        .iter()
        .map(|n| n.seq)
        .collect();
    assert_eq!(seqs, [2, 5, 6]);
}

/// A monitor for the license file `license` with the notice source `notices`, on
/// `clock`, journaling to `journal`.
async fn instance(
    clock: &TestClock,
    license: &Path,
    notices: &Path,
    journal: &Path,
) -> LicenseMonitor {
    builder(clock, file(license))
        .notice_source(file(notices))
        // Read at start (each month starts the instances) and at every hourly check.
        .watch_file(false)
        .file_poll_interval(None)
        .usage_journal(journal)
        .start()
        .await
        .expect("start")
}

/// Runs an instance per journal for `hours`, metering seats, then stops them.
async fn run(clock: &TestClock, license: &Path, notices: &Path, journals: &[&Path], hours: i64) {
    let mut monitors = Vec::new();
    for journal in journals {
        monitors.push(instance(clock, license, notices, journal).await);
    }
    for h in 0..hours {
        for (i, monitor) in monitors.iter().enumerate() {
            monitor
                .usage()
                .set("seats", (h as u64 + i as u64) % 4)
                .unwrap();
        }
        run_for(HOUR).await;
    }
    for monitor in monitors {
        monitor.shutdown().await;
    }
}

/// `usage export` of `journal` to `dir/<name>`, as the customer runs it.
fn export(dir: &Path, journal: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    ok(cli(dir)
        .args(["usage", "export", "--journal"])
        .arg(journal)
        .arg("--out")
        .arg(&out));
    out
}

fn notes(report: &Path) -> Vec<String> {
    Report::read_all(report)
        .unwrap()
        .into_iter()
        .flat_map(|r| r.records)
        .flat_map(|r| r.notes)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_monthly_loop_receipts_each_head_and_a_journal_cut_below_one_is_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = vendor_key(d);
    let ledger = d.join("vendor.db");
    // The monitors' clock starts at the real time: the tool signs with it.
    let clock = TestClock::new(SystemTime::now());
    let license_file = d.join("license.key");
    let license = ok(cli(d)
        .args(["issue", "--customer", "Acme Corp", "--valid-for", "365d"])
        .args(["--limit", "seats=10", "--key"])
        .arg(&key)
        .arg("--ledger")
        .arg(&ledger));
    std::fs::write(&license_file, &license).unwrap();
    let notices = d.join("notices");
    let (a, b, c) = (d.join("a.jsonl"), d.join("b.jsonl"), d.join("c.jsonl"));

    // Month 1: two instances; the vendor verifies and receipts their heads.
    run(&clock, &license_file, &notices, &[&a, &b], 6).await;
    let backup = d.join("a.backup");
    std::fs::copy(&a, &backup).unwrap();
    let month1 = [export(d, &a, "m1-a.json"), export(d, &b, "m1-b.json")];
    // `usage verify` with the ledger; with a receipt written to `receipt`, if given.
    let verify = |reports: &[PathBuf], receipt: Option<&Path>| {
        let mut command = cli(d);
        command
            .args(["usage", "verify", "--ledger"])
            .arg(&ledger)
            .args(reports);
        if let Some(out) = receipt {
            command
                .args(["--receipt", "--key"])
                .arg(&key)
                .arg("--out")
                .arg(out);
        }
        command.output().unwrap()
    };
    let r1 = d.join("r1.notice");
    let out = verify(&month1, Some(&r1));
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let text = said(&out);
    assert_eq!(text.matches("new_key").count(), 2, "{text}");
    assert!(text.contains("true-up 1 of Acme Corp recorded"), "{text}");
    let r1_token = std::fs::read_to_string(&r1).unwrap();
    let r1_notice = iosetu_license::LicenseVerifier::new(vec![signer().public_key()])
        .verify_notice(r1_token.trim())
        .unwrap();
    // The license was seq-less; the receipt is the customer's first notice.
    assert_eq!(r1_notice.seq, 1);
    let month1_reports: Vec<Report> = month1
        .iter()
        .flat_map(|p| Report::read_all(p).unwrap())
        .collect();
    let mut heads: Vec<(String, u64, String)> = r1_notice
        .receipt
        .iter()
        .map(|h| (h.key.clone(), h.n, h.link.clone()))
        .collect();
    heads.sort();
    let mut expected: Vec<(String, u64, String)> = month1_reports
        .iter()
        .map(|r| {
            (
                r.key.clone(),
                r.head_n.unwrap(),
                r.head_link.clone().unwrap(),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(heads, expected, "each instance's head");
    {
        let ledger = Ledger::open(&ledger).unwrap();
        assert_eq!(ledger.licenses("Acme Corp").unwrap().len(), 1);
        let instances = ledger.instances("Acme Corp").unwrap();
        assert_eq!(instances.len(), 2);
        assert!(
            instances
                .iter()
                .all(|i| i.last_true_up == 1 && i.head_n.is_some())
        );
        let recorded = ledger.notices("Acme Corp").unwrap();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].receipt.len(), 2);
    }

    // The customer installs the receipt like any notice; month 2 runs on.
    std::fs::write(&notices, &r1_token).unwrap();
    run(&clock, &license_file, &notices, &[&a, &b], 6).await;
    let month2 = [export(d, &a, "m2-a.json"), export(d, &b, "m2-b.json")];
    for report in &month2 {
        assert!(
            notes(report).iter().any(|n| n == "receipt:1"),
            "{}: {:?}",
            report.display(),
            notes(report)
        );
    }
    let r2 = d.join("r2.notice");
    let out = verify(&month2, Some(&r2));
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let text = said(&out);
    for absent in [
        "receipt_cut",
        "new_key",
        "missing_instance",
        "notice_rollback",
    ] {
        assert!(!text.contains(absent), "{absent}: {text}");
    }
    let r2_token = std::fs::read_to_string(&r2).unwrap();
    assert_eq!(seq_of(&r2_token), 2);
    std::fs::write(&notices, &r2_token).unwrap();

    // Month 3: instance a is gone, c is new.
    run(&clock, &license_file, &notices, &[&b, &c], 2).await;
    let month3 = [export(d, &b, "m3-b.json"), export(d, &c, "m3-c.json")];
    let out = verify(&month3, None);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let text = said(&out);
    let a_key = &Report::read_all(&month1[0]).unwrap()[0].key[..12];
    assert!(
        text.lines().any(|l| l.starts_with("unknown ")
            && l.contains(a_key)
            && l.contains("missing_instance")),
        "{text}"
    );
    assert_eq!(text.matches("new_key").count(), 1, "{text}");
    assert!(!text.contains("receipt_cut"), "{text}");

    // a's journal restored from the backup taken in month 1: below the head receipt 2
    // accepted. Tampering, exit 1, and no receipt.
    std::fs::copy(&backup, &a).unwrap();
    let restored = export(d, &a, "m4-a.json");
    let r4 = d.join("r4.notice");
    let reports = [restored, month3[0].clone(), month3[1].clone()];
    let out = verify(&reports, Some(&r4));
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let text = said(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("TAMPERED") && l.contains(a_key) && l.contains("receipt_cut")),
        "{text}"
    );
    assert!(text.contains("receipt seq 2"), "{text}");
    assert!(
        text.contains("no receipt: the reports show tampering"),
        "{text}"
    );
    assert!(!r4.exists());

    // The same through the library: a journal cut below the receipted head.
    let cut = d.join("cut.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&b)
        .unwrap()
        .lines()
        .take(3)
        .map(str::to_owned)
        .collect();
    std::fs::write(&cut, lines.join("\n") + "\n").unwrap();
    std::fs::copy(d.join("b.jsonl.key"), d.join("cut.jsonl.key")).unwrap();
    let cut_report = usage::export(&cut, SystemTime::now()).unwrap();
    let findings = Ledger::open(&ledger)
        .unwrap()
        .check(
            "Acme Corp",
            &[cut_report, Report::read_all(&month3[1]).unwrap().remove(0)],
        )
        .unwrap();
    let receipt_cut = findings
        .iter()
        .find(|f| f.kind == FindingKind::ReceiptCut)
        .unwrap_or_else(|| panic!("{findings:?}"));
    assert_eq!(receipt_cut.kind.class(), FindingClass::Tampering);
    assert!(
        findings
            .iter()
            .any(|f| f.kind == FindingKind::MissingInstance)
    );

    // Each true-up is in the ledger; receipts are notices of the customer.
    let recorded = Ledger::open(&ledger).unwrap().notices("Acme Corp").unwrap();
    assert_eq!(recorded.iter().map(|n| n.seq).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn a_true_up_is_of_one_customer_and_a_receipt_carries_the_revocations_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let journal = |customer: &str, name: &str| {
        let journal = d.join(name);
        let license = d.join(format!("{name}.license"));
        let mut claims = Claims::new(customer, 4_102_444_800);
        claims.jti = Some(format!("{customer}-1"));
        std::fs::write(&license, signer().sign(&claims)).unwrap();
        runtime.block_on(async {
            let clock = TestClock::new(SystemTime::now());
            run(&clock, &license, &d.join("none"), &[&journal], 2).await;
        });
        usage::export(&journal, SystemTime::now()).unwrap()
    };
    let acme = journal("Acme", "acme.jsonl");
    let globex = journal("Globex", "globex.jsonl");
    let path = d.join("vendor.db");
    let mut ledger = Ledger::open(&path).unwrap();
    let err = ledger
        .true_up("Acme", &[acme.clone(), globex.clone()], None)
        .unwrap_err();
    assert_eq!(err.reason(), "several_customers");
    assert_eq!(
        ledger
            .true_up("Globex", std::slice::from_ref(&acme), None)
            .unwrap_err()
            .reason(),
        "invalid"
    );
    // The tool says so too, in one line, and records nothing.
    for (name, report) in [("acme.json", &acme), ("globex.json", &globex)] {
        std::fs::write(d.join(name), report.to_json()).unwrap();
    }
    let out = cli(d)
        .args(["usage", "verify", "acme.json", "globex.json", "--ledger"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("several customers") && err.contains("Acme, Globex"),
        "{err}"
    );
    assert!(ledger.instances("Acme").unwrap().is_empty());

    // A revocation earlier, then a receipt: the receipt repeats it, so the receipt alone
    // keeps it in force when it replaces the notice lines before it.
    let mut revocation = Notice::new("Acme", 1_800_000_000, 0);
    revocation.revoke = vec!["Acme-0".into()];
    ledger.issue_notice(&signer(), revocation, None).unwrap();
    let signer = signer();
    let up = ledger
        .true_up(
            "Acme",
            std::slice::from_ref(&acme),
            Some(&ReceiptSigner::new(&signer).audience("svc")),
        )
        .unwrap();
    assert!(up.verification.intact(), "{:?}", up.verification.findings);
    let issued = up.receipt.unwrap();
    assert_eq!(issued.notice.seq, 2);
    assert_eq!(issued.notice.revoke, ["Acme-0"]);
    assert_eq!(issued.notice.aud, ["svc"]);
    assert_eq!(issued.notice.receipt.len(), 1);
    assert_eq!(issued.notice.receipt[0].n, acme.head_n.unwrap());
    // A true-up without a receipt asked for: recorded, no notice.
    let up = ledger.true_up("Acme", &[acme], None).unwrap();
    assert!(up.receipt.is_none());
    assert_eq!(up.id, 2);
    assert_eq!(ledger.notices("Acme").unwrap().len(), 2);
}

#[test]
fn the_public_types_cross_threads() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    // One connection: moved to a thread, not shared.
    send::<Ledger>();
    send_sync::<ledger::LedgerError>();
    send_sync::<ledger::TrueUp>();
    send_sync::<ledger::IssuedNotice>();
    send_sync::<ledger::NoticeEntry>();
    send_sync::<ledger::InstanceEntry>();
    send_sync::<ledger::LicenseEntry>();
    send_sync::<ReceiptSigner<'static>>();
}
