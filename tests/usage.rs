//! Usage metering and the usage journal, end to end: real files, paused time and the
//! test clock, the monitor writing, `usage::export` and `usage::verify` reading.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use iosetu_license::usage::{self, FindingKind, Record, Report, Verification};
use iosetu_license::{Claims, LicenseMonitor, LicenseSource, TestClock};
use proptest::prelude::*;

/// A license with `seats` 10 and `max_instances` 3, valid for two years.
fn license() -> String {
    let mut claims = Claims::new("Acme Corp", T0 + 800 * DAY);
    claims.jti = Some("acme-2027".into());
    claims.limits.insert("seats".into(), 10);
    claims.max_instances = Some(3);
    signer().sign(&claims)
}

async fn instance(clock: &TestClock, journal: &Path) -> LicenseMonitor {
    builder(clock, LicenseSource::Static(license()))
        .usage_journal(journal)
        .start()
        .await
        .expect("start")
}

fn export(journal: &Path) -> Report {
    usage::export(journal, at(T0)).expect("export")
}

fn kinds(v: &Verification) -> Vec<FindingKind> {
    v.findings.iter().map(|f| f.kind).collect()
}

fn records(journal: &Path) -> Vec<String> {
    std::fs::read_to_string(journal)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `hours` of a running instance metering seats (the hour's number mod 9) and a call
/// per hour, then a graceful stop.
async fn run_hours(clock: &TestClock, journal: &Path, hours: i64) {
    let monitor = instance(clock, journal).await;
    let calls = monitor.usage().counter("api_calls").unwrap();
    for h in 0..hours {
        monitor.usage().set("seats", (h % 9) as u64).unwrap();
        calls.add(1);
        run_for(HOUR).await;
    }
    monitor.shutdown().await;
}

fn dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("usage.jsonl");
    (dir, journal)
}

#[tokio::test(start_paused = true)]
async fn a_journal_of_hours_verifies_and_sums_to_the_true_up_table() {
    let (_dir, journal) = dir();
    let clock = TestClock::new(t0());
    run_hours(&clock, &journal, 30).await;
    let report = export(&journal);
    let first: Record = report.records[0].clone();
    assert!(first.key.is_some(), "the first record carries the key");
    assert_eq!(first.licenses[0].jti.as_deref(), Some("acme-2027"));
    assert_eq!(first.licenses[0].limits["seats"], 10);
    // 30 hours from T0 (not on an hour: T0 is 08:00:00 + 0) and the partial one at stop.
    assert!(report.records.len() >= 30, "{}", report.records.len());
    let v = usage::verify(&[report]);
    assert!(v.intact() && v.clocks_ok(), "{:?}", v.findings);
    let calls: u64 = v
        .true_up
        .iter()
        .filter(|r| r.metric == "api_calls")
        .map(|r| r.value)
        .sum();
    assert_eq!(calls, 30);
    let seats = v.true_up.iter().find(|r| r.metric == "seats").unwrap();
    assert_eq!(
        (seats.value, seats.limit, seats.over()),
        (8, Some(10), false)
    );
    let replicas = v
        .true_up
        .iter()
        .find(|r| r.metric == "iosetu_replicas")
        .unwrap();
    assert_eq!((replicas.value, replicas.limit), (1, Some(3)));
    assert!(
        v.csv()
            .starts_with("month,metric,measure,value,limit,over,instance_peaks,over_hours\n")
    );
    assert!(v.table().contains("seats"));
}

#[tokio::test(start_paused = true)]
async fn every_kind_of_tampering_shows() {
    let (dir, journal) = dir();
    let clock = TestClock::new(t0());
    run_hours(&clock, &journal, 12).await;
    let good = export(&journal);
    assert!(usage::verify(std::slice::from_ref(&good)).intact());
    let lines = records(&journal);
    let tampered = |edit: &dyn Fn(&mut Vec<Record>)| {
        let mut report = good.clone();
        edit(&mut report.records);
        kinds(&usage::verify(&[report]))
    };
    // Edited: a record's counter lowered.
    let edited = tampered(&|r| {
        *r[3].counters.get_mut("api_calls").unwrap() = 0;
    });
    assert!(edited.contains(&FindingKind::Signature), "{edited:?}");
    // Deleted.
    let deleted = tampered(&|r| {
        r.remove(4);
    });
    assert!(deleted.contains(&FindingKind::Chain), "{deleted:?}");
    assert!(deleted.contains(&FindingKind::Sequence), "{deleted:?}");
    // Reordered.
    let reordered = tampered(&|r| r.swap(5, 6));
    assert!(reordered.contains(&FindingKind::Chain), "{reordered:?}");
    // Truncated: the last records cut off the report.
    let truncated = tampered(&|r| r.truncate(8));
    assert!(truncated.contains(&FindingKind::Truncated), "{truncated:?}");
    // The stamp edited.
    let mut restamped = good.clone();
    restamped.exported_at += 1;
    assert!(kinds(&usage::verify(&[restamped])).contains(&FindingKind::Stamp));
    // Spliced: a record of another instance's journal put in.
    let other = dir.path().join("other.jsonl");
    run_hours(&TestClock::new(t0()), &other, 6).await;
    let foreign = export(&other);
    let spliced = tampered(&|r| r[2] = foreign.records[2].clone());
    assert!(spliced.contains(&FindingKind::Signature), "{spliced:?}");
    assert!(spliced.contains(&FindingKind::Chain), "{spliced:?}");
    // A whole other journal's records under this instance's stamp.
    let mut swapped = good.clone();
    swapped.records = foreign.records.clone();
    assert!(!usage::verify(&[swapped]).intact());
    // Records deleted from the journal file while the service was stopped: the next
    // report no longer holds what the earlier one did. It is a fork (as a restore from a
    // backup is), and the records of both branches count: deleting gains nothing.
    std::fs::write(&journal, format!("{}\n", lines[..6].join("\n"))).unwrap();
    run_hours(&clock, &journal, 2).await;
    let later = export(&journal);
    assert!(
        usage::verify(std::slice::from_ref(&later)).intact(),
        "alone it is self-consistent"
    );
    let total = |v: &Verification| -> u64 {
        v.true_up
            .iter()
            .filter(|r| r.metric == "api_calls")
            .map(|r| r.value)
            .sum()
    };
    let both = usage::verify(&[good.clone(), later.clone()]);
    assert!(
        kinds(&both).contains(&FindingKind::Fork),
        "{:?}",
        both.findings
    );
    assert_eq!(
        total(&both),
        total(&usage::verify(std::slice::from_ref(&good))) + 2,
        "every hour of both branches, once"
    );
    // Every tampering is reported as such; each check fails without its finding.
    for k in [
        FindingKind::Signature,
        FindingKind::Chain,
        FindingKind::Truncated,
    ] {
        assert!(k.is_tampering(), "{k:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn records_cut_off_under_a_running_service_show() {
    let (_dir, journal) = dir();
    let clock = TestClock::new(t0());
    let monitor = instance(&clock, &journal).await;
    let mut events = monitor.subscribe();
    run_for(5 * HOUR).await;
    let lines = records(&journal);
    std::fs::write(&journal, format!("{}\n", lines[..2].join("\n"))).unwrap();
    run_for(2 * HOUR).await;
    let events = drain(&mut events);
    let invalid = find(&events, "license.usage_journal_invalid");
    assert!(format!("{invalid:?}").contains("changed"), "{invalid:?}");
    monitor.shutdown().await;
    let v = usage::verify(&[export(&journal)]);
    let found = kinds(&v);
    assert!(found.contains(&FindingKind::ChangedUnderneath), "{found:?}");
    assert!(found.contains(&FindingKind::Chain), "{found:?}");
    assert!(!v.intact());
}

#[tokio::test(start_paused = true)]
async fn a_clock_wound_back_across_a_restart_shows() {
    let (_dir, journal) = dir();
    let clock = TestClock::new(t0());
    run_hours(&clock, &journal, 6).await;
    // Stopped, the clock set back two days, started again without a state file.
    clock.jump_wall(-2 * DAY);
    run_hours(&clock, &journal, 3).await;
    let v = usage::verify(&[export(&journal)]);
    // Nothing the monitor noted explains the step back (no correction it judged honest,
    // no vendor's attestation): usage would land in days already reported.
    assert!(
        kinds(&v).contains(&FindingKind::ClockRollback),
        "{:?}",
        v.findings
    );
    assert_eq!(
        FindingKind::ClockRollback.class(),
        usage::FindingClass::Tampering
    );
    assert!(!v.intact() && !v.clocks_ok());
}

#[tokio::test(start_paused = true)]
async fn a_record_torn_by_a_crash_is_dropped_reported_and_the_chain_goes_on() {
    let (_dir, journal) = dir();
    let clock = TestClock::new(t0());
    run_hours(&clock, &journal, 4).await;
    // The process died in the middle of its next write.
    let whole = std::fs::read(&journal).unwrap();
    let last_line = records(&journal).pop().unwrap();
    let mut torn = whole.clone();
    torn.extend_from_slice(&last_line.as_bytes()[..last_line.len() / 2]);
    std::fs::write(&journal, &torn).unwrap();
    // The customer exports before the restart: the torn record is left out, said so.
    let before = export(&journal);
    assert!(before.torn);
    assert!(kinds(&usage::verify(&[before])).contains(&FindingKind::Torn));
    let (monitor, mut events) =
        common::start(builder(&clock, LicenseSource::Static(license())).usage_journal(&journal))
            .await;
    run_for(2 * HOUR).await;
    let invalid = find(&drain(&mut events), "license.usage_journal_invalid").clone();
    assert!(format!("{invalid:?}").contains("torn"), "{invalid:?}");
    monitor.shutdown().await;
    assert_eq!(std::fs::read(&journal).unwrap()[..whole.len()], whole[..]);
    let v = usage::verify(&[export(&journal)]);
    assert!(v.intact() && v.clocks_ok(), "{:?}", v.findings);
    assert!(
        kinds(&v).contains(&FindingKind::Torn),
        "a note, not tampering"
    );
}

#[tokio::test(start_paused = true)]
async fn two_instances_merge_into_one_true_up_table() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let clock = TestClock::new(t0());
    let first = instance(&clock, &a).await;
    let second = instance(&clock, &b).await;
    first.usage().set("seats", 6).unwrap();
    second.usage().set("seats", 7).unwrap();
    first.usage().add("api_calls", 5).unwrap();
    second.usage().add("api_calls", 4).unwrap();
    run_for(3 * HOUR).await;
    first.shutdown().await;
    second.shutdown().await;
    let v = usage::verify(&[export(&a), export(&b)]);
    assert!(v.intact(), "{:?}", v.findings);
    assert_eq!(v.instances.len(), 2);
    let row = |m: &str| v.true_up.iter().find(|r| r.metric == m).unwrap().clone();
    let seats = row("seats");
    assert_eq!(
        (seats.value, seats.limit, seats.over()),
        (13, Some(10), true)
    );
    assert_eq!(row("api_calls").value, 9);
    assert_eq!(row("iosetu_replicas").value, 2);
}

#[tokio::test(start_paused = true)]
async fn over_a_limit_warns_once_per_check_interval_and_shows_in_the_metrics() {
    let clock = TestClock::new(t0());
    let (monitor, mut events) = common::start(
        builder(&clock, LicenseSource::Static(license())).check_interval(Duration::from_secs(600)),
    )
    .await;
    monitor.usage().set("seats", 12).unwrap();
    run_for(30 * MINUTE + 30).await;
    let exceeded: Vec<_> = drain(&mut events)
        .into_iter()
        .filter(|e| e.name() == "license.limit_exceeded")
        .collect();
    // At the start, 10, 20 and 30 minutes: once per 10-minute check interval.
    assert_eq!(exceeded.len(), 4, "{exceeded:?}");
    assert_eq!(exceeded[0].level(), tracing::Level::WARN);
    let text = format!("{:?}", exceeded[0]);
    assert!(
        text.contains("seats") && text.contains("12") && text.contains("10"),
        "{text}"
    );
    let snapshot = monitor.metrics();
    assert_eq!(snapshot.usage["seats"], 12);
    assert_eq!(snapshot.limits["seats"], 10);
    // Never a cut-off.
    assert!(monitor.verdict().is_valid());
    monitor.usage().set("seats", 9).unwrap();
    run_for(30 * MINUTE).await;
    assert!(
        !names(&drain(&mut events)).contains(&"license.limit_exceeded"),
        "within the limit again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_year_of_hourly_records_stays_within_its_bound() {
    let (_dir, journal) = dir();
    let clock = TestClock::new(t0());
    let monitor = instance(&clock, &journal).await;
    monitor.usage().set("seats", 4).unwrap();
    let days = 430;
    run_for(days * DAY).await;
    monitor.shutdown().await;
    let report = export(&journal);
    let hourly = report
        .records
        .iter()
        .filter(|r| r.span == usage::Span::Hour)
        .count();
    let daily = report.records.len() - hourly;
    // 400 days of hourly records (and the hour at the edge), the rest folded into days.
    assert!(
        (400 * 24..=400 * 24 + 48).contains(&hourly),
        "{hourly} hourly records"
    );
    assert!((28..=31).contains(&daily), "{daily} daily records");
    let bytes = std::fs::metadata(&journal).unwrap().len();
    assert!(bytes < 8 * 1024 * 1024, "{bytes} bytes");
    let v = usage::verify(&[report]);
    assert!(
        v.intact() && v.clocks_ok(),
        "{:?}",
        &v.findings[..v.findings.len().min(5)]
    );
    let seats: Vec<_> = v.true_up.iter().filter(|r| r.metric == "seats").collect();
    assert!(seats.len() >= 14 && seats.iter().all(|r| r.value == 4));
}

#[tokio::test]
async fn bad_metric_names_are_refused_with_a_reason() {
    let clock = TestClock::new(t0());
    let monitor = builder(&clock, LicenseSource::Static(license()))
        .start()
        .await
        .unwrap();
    let usage = monitor.usage();
    assert_eq!(usage.set("Seats", 1).unwrap_err().reason(), "invalid_name");
    assert_eq!(
        usage.set("iosetu_replicas", 9).unwrap_err().reason(),
        "reserved"
    );
    assert_eq!(usage.value("iosetu_replicas"), Some(1));
}

#[test]
fn a_report_that_is_not_one_is_refused() {
    for bad in ["", "{}", r#"{"format":"other"}"#, "[1]"] {
        assert_eq!(
            Report::from_json(bad).unwrap_err().reason(),
            "corrupt",
            "{bad}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = usage::export(&dir.path().join("none.jsonl"), at(T0)).unwrap_err();
    assert_eq!(missing.reason(), "missing");
}

// ---- the property: verify accepts what the library writes, and no single edit ----

#[derive(Debug, Clone)]
enum Step {
    /// Run this many minutes, metering.
    Run(u32, u64),
    /// Stop gracefully (the partial hour recorded) and start again.
    Restart,
    /// Crash (no last record) and start again.
    Crash,
    /// The wall clock jumps by this many seconds (an NTP step, an operator).
    Jump(i64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1u32..400, 0u64..50).prop_map(|(m, v)| Step::Run(m, v)),
        1 => Just(Step::Restart),
        1 => Just(Step::Crash),
        1 => (-3 * HOUR..3 * HOUR).prop_map(Step::Jump),
    ]
}

fn journal_of(steps: &[Step]) -> (Report, bool) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let (_dir, journal) = dir();
        let clock = TestClock::new(t0());
        let mut monitor = Some(instance(&clock, &journal).await);
        let mut wound_back = false;
        for step in steps {
            match step {
                Step::Run(minutes, seats) => {
                    if let Some(m) = &monitor {
                        m.usage().set("seats", *seats).unwrap();
                        m.usage().add("api_calls", *seats).unwrap();
                    }
                    run_for(i64::from(*minutes) * MINUTE).await;
                }
                Step::Restart => {
                    if let Some(m) = monitor.take() {
                        m.shutdown().await;
                    }
                    monitor = Some(instance(&clock, &journal).await);
                }
                Step::Crash => {
                    drop(monitor.take());
                    run_for(1).await;
                    monitor = Some(instance(&clock, &journal).await);
                }
                Step::Jump(by) => {
                    // (Any step back may be judged a clock set back: the journal notes
                    // what the service judged.)
                    wound_back |= *by < 0;
                    clock.jump_wall(*by);
                }
            }
        }
        run_for(MINUTE).await;
        if let Some(m) = monitor.take() {
            m.shutdown().await;
        }
        (export(&journal), wound_back)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn verify_accepts_every_journal_the_library_writes_and_no_single_edit(
        steps in proptest::collection::vec(step(), 1..12),
        pick in any::<prop::sample::Index>(),
        field in 0usize..6,
    ) {
        let (report, wound_back) = journal_of(&steps);
        let v = usage::verify(std::slice::from_ref(&report));
        // (A step back the monitor judged manipulation is tampering by its verdict; one
        // it judged a correction is a fault.)
        prop_assert!(v.intact() || wound_back, "{:?}\n{steps:?}", v.findings);
        if !wound_back {
            prop_assert!(v.clocks_ok(), "{:?}\n{steps:?}", v.findings);
        }
        prop_assume!(!report.records.is_empty());
        let i = pick.index(report.records.len());
        let mut edited = report.clone();
        let r = &mut edited.records[i];
        match field {
            0 => r.start -= 1,
            1 => r.end += 3600,
            2 => { r.gauges.insert("seats".into(), 1_000); }
            3 => { r.counters.insert("api_calls".into(), 0); }
            4 => r.boot += 1,
            _ => r.licenses.clear(),
        }
        prop_assume!(edited.records[i] != report.records[i]);
        let found = usage::verify(&[edited.clone()]).findings;
        prop_assert!(
            found.iter().any(|f| f.kind.is_tampering() && !f.kind.is_clock()),
            "record {i} field {field} edited unseen: {found:?}"
        );
        // Also with the chain after it mended, as anyone can (its links are plain
        // hashes): only the signatures can tell.
        for j in i + 1..edited.records.len() {
            if edited.records[j].span == usage::Span::Hour {
                edited.records[j].prev = edited.records[j - 1].link();
            }
        }
        edited.head_link = edited.records.last().map(Record::link);
        let found = kinds(&usage::verify(&[edited]));
        prop_assert!(found.contains(&FindingKind::Signature), "record {i} field {field} re-chained unseen: {found:?}");
    }
}

#[cfg(unix)]
#[tokio::test(start_paused = true)]
async fn a_symlink_or_fifo_at_the_journal_is_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("license.key");
    std::fs::write(&target, "the license").unwrap();
    let link = dir.path().join("usage.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let fifo = dir.path().join("fifo.jsonl");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    for journal in [&link, &fifo] {
        let clock = TestClock::new(t0());
        let (monitor, mut events) =
            common::start(builder(&clock, LicenseSource::Static(license())).usage_journal(journal))
                .await;
        run_for(2 * HOUR).await;
        monitor.shutdown().await;
        let events = drain(&mut events);
        let invalid = find(&events, "license.usage_journal_invalid");
        assert_eq!(invalid.level(), tracing::Level::WARN);
        assert!(monitor.verdict().is_valid(), "never stops the service");
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "the license");
}

#[tokio::test]
async fn requests_admitted_and_refused_are_counted_with_a_journal() {
    let (_dir, journal) = dir();
    let clock = TestClock::new(t0());
    // A license that ends in a minute, with no grace: admitted, then refused.
    let mut claims = Claims::new("Acme Corp", T0 + MINUTE);
    claims.grace_period_seconds = Some(0);
    let monitor = builder(&clock, LicenseSource::Static(signer().sign(&claims)))
        .usage_journal(&journal)
        .start()
        .await
        .unwrap();
    let addr = serve_hello(&monitor).await;
    for _ in 0..5 {
        assert_eq!(status_of_hello(addr).await, http::StatusCode::OK);
    }
    clock.suspend(Duration::from_secs(120));
    assert!(!monitor.check_now().await.admits());
    for _ in 0..3 {
        assert_eq!(
            status_of_hello(addr).await,
            http::StatusCode::SERVICE_UNAVAILABLE
        );
    }
    monitor.shutdown().await;
    let report = export(&journal);
    let total = |name: &str| -> u64 {
        report
            .records
            .iter()
            .filter_map(|r| r.counters.get(name))
            .sum()
    };
    assert_eq!(total("iosetu_requests_admitted"), 5);
    assert_eq!(total("iosetu_requests_refused"), 3);
    // Without a journal, admitted requests are not counted (the plain gate).
    let plain = builder(&clock, LicenseSource::Static(license()))
        .start()
        .await
        .unwrap();
    let addr = serve_hello(&plain).await;
    assert_eq!(status_of_hello(addr).await, http::StatusCode::OK);
    assert_eq!(plain.usage().value("iosetu_requests_admitted"), None);
}

#[tokio::test(start_paused = true)]
async fn a_record_whole_but_for_its_newline_is_kept() {
    let (_dir, journal) = dir();
    let clock = TestClock::new(t0());
    run_hours(&clock, &journal, 3).await;
    let mut bytes = std::fs::read(&journal).unwrap();
    assert_eq!(bytes.pop(), Some(b'\n'));
    std::fs::write(&journal, &bytes).unwrap();
    let records_before = records(&journal).len();
    run_hours(&clock, &journal, 2).await;
    let report = export(&journal);
    assert!(report.records.len() > records_before);
    let v = usage::verify(&[report]);
    assert!(v.intact() && v.findings.is_empty(), "{:?}", v.findings);
}

#[tokio::test(start_paused = true)]
async fn a_vendor_attestation_that_moves_trusted_time_back_ends_the_hour_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, source) = (
        dir.path().join("usage.jsonl"),
        dir.path().join("license.key"),
    );
    // The machine's clock is a year ahead from the start (no state file): trusted time
    // follows it, until the vendor attests the real time.
    let clock = TestClock::new(at(T0 + 365 * DAY));
    let mut claims = Claims::new("Acme", T0 + 800 * DAY);
    claims.iat = Some(T0 - DAY);
    std::fs::write(&source, signer().sign(&claims) + "\n").unwrap();
    let monitor = builder(&clock, LicenseSource::File(source.clone()))
        .watch_file(false)
        .file_poll_interval(None)
        .usage_journal(&journal)
        .start()
        .await
        .unwrap();
    run_for(3 * HOUR).await;
    clock.jump_wall(-365 * DAY);
    let mut notice = iosetu_license::Notice::new("Acme", T0 + 3 * HOUR, 1);
    notice.time = Some(T0 + 3 * HOUR);
    notice.exp = Some(T0 + 3 * DAY);
    std::fs::write(
        &source,
        format!(
            "{}\n{}\n",
            signer().sign(&claims),
            signer().sign_notice(&notice)
        ),
    )
    .unwrap();
    monitor.check_now().await;
    run_for(2 * HOUR).await;
    monitor.shutdown().await;
    let report = export(&journal);
    // Records of the hours after the attestation, by the attested time: not a year of
    // silence until trusted time caught up with the hour the period began in.
    let after = report
        .records
        .iter()
        .filter(|r| r.start < T0 + 30 * DAY)
        .count();
    assert!(
        after >= 2,
        "{:?}",
        report
            .records
            .iter()
            .map(|r| (r.start, r.end, &r.notes))
            .collect::<Vec<_>>()
    );
    let v = usage::verify(&[report]);
    assert!(v.intact(), "{:?}", v.findings);
}

#[tokio::test(start_paused = true)]
async fn a_counters_monthly_total_starts_again_with_the_month() {
    // 2027-01-31T23:10:00Z, and a license selling 100 calls a month.
    let clock = TestClock::new(at(1_801_437_000));
    let mut claims = Claims::new("Acme", T0 + 800 * DAY);
    claims.limits.insert("api_calls".into(), 100);
    let (monitor, mut events) = common::start(builder(
        &clock,
        LicenseSource::Static(signer().sign(&claims)),
    ))
    .await;
    let calls = monitor.usage().counter("api_calls").unwrap();
    calls.add(80);
    run_for(55 * MINUTE).await; // into February
    calls.add(80);
    run_for(10 * MINUTE).await;
    assert_eq!(monitor.metrics().usage["api_calls"], 80, "February's own");
    assert!(
        !names(&drain(&mut events)).contains(&"license.limit_exceeded"),
        "80 in January and 80 in February are each within 100"
    );
    calls.add(30);
    run_for(2 * MINUTE).await;
    assert_eq!(monitor.metrics().usage["api_calls"], 110);
    assert!(names(&drain(&mut events)).contains(&"license.limit_exceeded"));
}

#[tokio::test(start_paused = true)]
async fn a_process_that_dies_before_its_hour_ends_loses_at_most_five_minutes() {
    let (_dir, journal) = dir();
    let clock = TestClock::new(t0());
    let monitor = instance(&clock, &journal).await;
    let calls = monitor.usage().counter("api_calls").unwrap();
    monitor.usage().set("seats", 7).unwrap();
    for _ in 0..52 {
        calls.add(10);
        run_for(MINUTE).await;
    }
    // Dies at :52 (no shutdown, no hour closed): nothing but its checkpoint is left.
    drop(monitor);
    run_for(10 * MINUTE).await;
    assert!(
        std::fs::read(&journal).unwrap_or_default().is_empty(),
        "no hour was closed"
    );
    // Exported before any process starts again (a sibling journal may never): the hour
    // it had, from its checkpoint.
    let dead = usage::export_all(&journal, at(T0)).expect("export");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].records.len(), 1, "{:?}", dead[0].records);
    assert_eq!(dead[0].records[0].gauges.get("seats"), Some(&7));
    assert!(usage::verify(&dead).intact());
    let monitor = instance(&clock, &journal).await;
    monitor.shutdown().await;
    let report = export(&journal);
    let died = &report.records[0];
    assert!(died.notes.contains(&"unclean_stop".to_owned()), "{died:?}");
    assert_eq!(died.gauges.get("seats"), Some(&7));
    // The checkpoint before the death: at most five minutes of calls lost.
    let counted = died.counters["api_calls"];
    assert!((470..=520).contains(&counted), "{counted} of 520 calls");
    // The same record as the restart wrote: the two reports agree, no fork.
    assert_eq!(died, &dead[0].records[0]);
    let v = usage::verify(&[dead[0].clone(), report.clone()]);
    assert!(!kinds(&v).contains(&FindingKind::Fork), "{:?}", v.findings);
    // Both reports hold the record of the death: it is reported once.
    let deaths = kinds(&v)
        .iter()
        .filter(|k| **k == FindingKind::UncleanStop)
        .count();
    assert_eq!(deaths, 1, "{:?}", v.findings);
    let v = usage::verify(&[report]);
    assert!(v.intact(), "{:?}", v.findings);
    assert!(
        kinds(&v).contains(&FindingKind::UncleanStop),
        "{:?}",
        v.findings
    );
}

#[tokio::test(start_paused = true)]
async fn an_ntp_step_back_into_the_hour_before_is_a_correction_not_a_rollback() {
    let (_dir, journal) = dir();
    let clock = TestClock::new(t0());
    let monitor = instance(&clock, &journal).await;
    monitor.usage().set("seats", 3).unwrap();
    // Ten days and half a minute up, 350 ppm fast: NTP steps the clock back 300 s
    // (within the budget of 5 s + 500 ppm of the boot's age), into the hour before (the
    // period that began half a minute ago ends at once).
    run_for(10 * DAY + 30).await;
    clock.jump_wall(-300);
    run_for(2 * HOUR).await;
    assert!(monitor.verdict().is_valid());
    monitor.shutdown().await;
    let v = usage::verify(&[export(&journal)]);
    assert!(v.intact() && v.clocks_ok(), "{:?}", v.findings);
    assert!(
        kinds(&v).contains(&FindingKind::ClockCorrected),
        "the step shows, as a fault: {:?}",
        v.findings
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_releases_the_journal_and_the_next_monitor_continues_it() {
    // Found under load: `shutdown` returned while the usage task still held the journal's
    // lock, so a monitor started next in the same process found it held and began a
    // sibling journal (`usage.jsonl.1`) with a key of its own.
    let (_dir, journal) = dir();
    let clock = TestClock::new(t0());
    let monitor = instance(&clock, &journal).await;
    monitor.usage().set("seats", 4).unwrap();
    run_for(HOUR / 2).await;
    monitor.shutdown().await;
    // The monitor still exists (a server may keep its handle): the lock is free anyway.
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(journal.with_extension("jsonl.lock"))
        .expect("the lock file");
    assert!(lock.try_lock().is_ok(), "the journal is still held");
    drop(lock);
    let next = instance(&clock, &journal).await;
    run_for(HOUR / 2).await;
    next.shutdown().await;
    drop(monitor);
    let reports = usage::export_all(&journal, at(T0)).expect("export");
    assert_eq!(reports.len(), 1, "one journal, no sibling");
    assert!(usage::verify(&reports).intact());
}
