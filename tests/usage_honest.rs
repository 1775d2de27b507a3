//! Usage reports that never accuse an honest customer: each honest way a journal can end
//! up other than "one process, one file, a clock that never stepped" verifies without a
//! finding of class Tampering and counts all the usage that ran; what the reports cannot
//! account for shows as a finding of class Unknown, never silently clean.
//!
//! The cases that need real OS processes on one journal path (a rolling update, a full
//! disk, SIGKILL, two replicas at once) re-execute this test binary as a child
//! (`tests/common/usage_child.rs`: `child_entry` below returns at once unless its
//! environment is set); each child runs in paused time on a test clock, so its hours pass
//! in milliseconds. The rest run in this process, in paused time on test clocks.
// (The real-process cases are unix-only; their helpers are unused elsewhere.)
#![cfg_attr(not(unix), allow(dead_code, unused_imports))]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::notices::{attestation, file, license as dated_license, write};
use common::usage_child::{ChildProcess, ChildSpec, child_main, sibling};
use common::*;
use iosetu_license::usage::{
    self, Finding, FindingClass, FindingKind, Record, Report, TrueUpRow, Verification,
};
use iosetu_license::{Claims, Clock as _, LicenseMonitor, LicenseSource, TestClock};

/// The child's entry point (a no-op in the parent's run).
#[test]
fn child_entry() {
    child_main();
}

/// 2027-02-01T00:00:00Z.
const FEB1: i64 = 1_801_440_000;

/// A license with `seats` 10, valid for two years (the children's).
fn license() -> String {
    common::usage_child::seats_license()
}

fn dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("usage.jsonl");
    (dir, journal)
}

async fn instance(clock: &TestClock, journal: &Path) -> LicenseMonitor {
    builder(clock, LicenseSource::Static(license()))
        .usage_journal(journal)
        .start()
        .await
        .expect("start")
}

/// `minutes` of test time, one `api_calls` at the start of each: the counter's total is
/// the minutes that ran.
async fn meter(monitor: &LicenseMonitor, minutes: i64) {
    let calls = monitor.usage().counter("api_calls").unwrap();
    for _ in 0..minutes {
        calls.add(1);
        run_for(MINUTE).await;
    }
}

/// An instance on `journal` with `seats`, metered for `minutes`, then stopped gracefully.
async fn run_instance(clock: &TestClock, journal: &Path, seats: u64, minutes: i64) {
    let monitor = instance(clock, journal).await;
    monitor.usage().set("seats", seats).unwrap();
    meter(&monitor, minutes).await;
    monitor.shutdown().await;
}

/// Every journal of the set at `journal`, exported at `now`.
fn export_set(journal: &Path, now: i64) -> Vec<Report> {
    usage::export_all(journal, at(now)).expect("export the journal set")
}

fn both(a: &[Report], b: &[Report]) -> Vec<Report> {
    a.iter().chain(b).cloned().collect()
}

fn kinds(v: &Verification) -> Vec<FindingKind> {
    v.findings.iter().map(|f| f.kind).collect()
}

fn of_class(v: &Verification, class: FindingClass) -> Vec<&Finding> {
    v.findings
        .iter()
        .filter(|f| f.kind.class() == class)
        .collect()
}

fn unknown(v: &Verification) -> Vec<&Finding> {
    of_class(v, FindingClass::Unknown)
}

#[track_caller]
fn assert_no_tampering(v: &Verification) {
    let found = of_class(v, FindingClass::Tampering);
    assert!(
        found.is_empty() && v.intact(),
        "an honest journal accused of tampering: {found:#?}\nall findings: {:#?}",
        v.findings
    );
}

/// A counter's total over every month of the true-up table.
fn total(v: &Verification, metric: &str) -> u64 {
    v.true_up
        .iter()
        .filter(|r| r.metric == metric)
        .map(|r| r.value)
        .sum()
}

/// A gauge's peak over every month of the true-up table.
fn peak(v: &Verification, metric: &str) -> u64 {
    v.true_up
        .iter()
        .filter(|r| r.metric == metric)
        .map(|r| r.value)
        .max()
        .unwrap_or_else(|| panic!("no row for {metric}: {:#?}", v.true_up))
}

/// The one row of `metric` (the test's usage fits in one month).
#[track_caller]
fn row<'a>(v: &'a Verification, metric: &str) -> &'a TrueUpRow {
    let rows: Vec<_> = v.true_up.iter().filter(|r| r.metric == metric).collect();
    assert_eq!(rows.len(), 1, "{:#?}", v.true_up);
    rows[0]
}

/// A report's own total of counter `metric`.
fn counted(report: &Report, metric: &str) -> u64 {
    report
        .records
        .iter()
        .filter_map(|r| r.counters.get(metric))
        .sum()
}

/// How `verify` names an instance: the first 12 characters of its key.
fn instance_of(report: &Report) -> String {
    report.key.chars().take(12).collect()
}

/// The vendor's command on `reports` (each in its own file in `dir`).
fn vendor_verify(dir: &Path, reports: &[Report]) -> std::process::Output {
    let mut paths = Vec::new();
    for (i, report) in reports.iter().enumerate() {
        let path = dir.join(format!("report-{i}.json"));
        std::fs::write(&path, report.to_json()).unwrap();
        paths.push(path);
    }
    // (In the test's directory: the vendor's ledger is made in the current one.)
    std::process::Command::new(env!("CARGO_BIN_EXE_iosetu-license"))
        .current_dir(dir)
        .args(["usage", "verify"])
        .args(&paths)
        .output()
        .unwrap()
}

fn said(out: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Copies `journal` and its key into `into` (same file names).
fn copy_journal(journal: &Path, into: &Path) -> PathBuf {
    let name = journal.file_name().unwrap();
    let to = into.join(name);
    std::fs::copy(journal, &to).unwrap();
    std::fs::copy(sibling(journal, ".key"), sibling(&to, ".key")).unwrap();
    to
}

fn child(journal: &Path, name: &str, start: i64, seats: u64, plan: &str) -> ChildSpec {
    ChildSpec {
        name: name.into(),
        journal: journal.to_path_buf(),
        start,
        seats,
        license: license(),
        plan: plan.into(),
        barrier: None,
        ignore_xfsz: false,
    }
}

// ---- 1. A rolling update: two processes on one journal path at once ----

#[cfg(unix)]
#[test]
fn case_1_a_rolling_update_on_one_journal_path_counts_both_processes_without_tampering() {
    let (dir, journal) = dir();
    // The old process serves from 08:00; at 10:55 the new one starts beside it, and the
    // old one stops at 11:00 (five minutes of overlap by the test clocks).
    let mut old = ChildProcess::spawn(
        dir.path(),
        &child(
            &journal,
            "old",
            T0,
            4,
            "start,run:175,mark:ready,wait,run:5,stop",
        ),
    );
    old.wait_mark("ready");
    let mut new = ChildProcess::spawn(
        dir.path(),
        &child(
            &journal,
            "new",
            T0 + 175 * MINUTE,
            4,
            "start,run:5,mark:overlap,wait,run:180,stop",
        ),
    );
    new.wait_mark("overlap");
    // Both alive: the new process found the journal's lock held and keeps its own
    // journal, with its own key, beside the old one's.
    assert!(sibling(&journal, ".key").exists());
    assert!(
        sibling(&journal, ".1.key").exists(),
        "the new process keeps usage.jsonl.1 with its own key while the old one runs: {:?}",
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
    old.go();
    old.finish();
    new.go();
    new.finish();

    let reports = export_set(&journal, T0 + 6 * HOUR);
    assert_eq!(reports.len(), 2, "one report per journal of the set");
    assert_ne!(reports[0].key, reports[1].key);
    let v = usage::verify(&reports);
    assert_no_tampering(&v);
    assert_eq!(v.instances.len(), 2, "{:#?}", v.instances);
    // Every minute either process ran: 180 of the old one, 185 of the new one.
    assert_eq!(total(&v, "api_calls"), 180 + 185, "{:#?}", v.true_up);
    assert_eq!(
        peak(&v, "iosetu_replicas"),
        2,
        "both ran in the hour of the overlap"
    );

    // The set as the customer sends it, in one file: read back whole.
    let sent = dir.path().join("usage-2027-01.json");
    let array: Vec<String> = reports.iter().map(Report::to_json).collect();
    std::fs::write(&sent, format!("[{}]", array.join(",\n"))).unwrap();
    assert_eq!(Report::read_all(&sent).unwrap(), reports);
}

// ---- 2. The disk fills: hourly writes fail, one partially, and space comes back ----

#[cfg(unix)]
#[test]
fn case_2_a_full_disk_fails_hourly_writes_one_partially_and_loses_no_record() {
    let (dir, journal) = dir();
    let mut spec = child(
        &journal,
        "disk",
        T0,
        4,
        // 6.5 hours with room (08:00 to 14:30), then the file-size limit 100 bytes past
        // the journal's end: the record closing at 15:00 is written 100 bytes and fails,
        // those of 16:00 and 17:00 fail whole. At 17:30 space is freed; 2.5 hours more.
        "start,run:390,limit:100,run:180,mark:full,wait,unlimit,run:150,stop",
    );
    // (Started with SIGXFSZ ignored: a write past the limit fails with EFBIG.)
    spec.ignore_xfsz = true;
    let mut disk = ChildProcess::spawn(dir.path(), &spec);
    disk.wait_mark("full");
    // The premise: the three hours were not written (the journal is within the limit).
    let events = disk.events();
    let limit: u64 = events
        .lines()
        .find_map(|l| l.strip_prefix("rlimit_fsize "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("the child set no limit: {events}"));
    let len = std::fs::metadata(&journal).unwrap().len();
    assert!(
        len <= limit,
        "{len} bytes past the limit {limit}: no write failed"
    );
    disk.go();
    disk.finish();

    let reports = export_set(&journal, T0 + 12 * HOUR);
    assert_eq!(reports.len(), 1);
    let report = &reports[0];
    assert_eq!(
        (report.damaged_lines, report.torn),
        (0, false),
        "the partial write was not left in the journal"
    );
    let v = usage::verify(&reports);
    assert_no_tampering(&v);
    assert!(
        !kinds(&v).contains(&FindingKind::Damaged),
        "{:#?}",
        v.findings
    );
    assert!(
        unknown(&v).is_empty(),
        "no time is unaccounted for: {:#?}",
        v.findings
    );
    // The records of the hours whose writes failed were written later: every hour from
    // 08:00 to 19:00 has its record, and every minute is counted.
    let hours: BTreeSet<i64> = report
        .records
        .iter()
        .map(|r| r.start.div_euclid(HOUR))
        .collect();
    for h in 0..12 {
        assert!(
            hours.contains(&(T0 / HOUR + h)),
            "no record of hour {h} (events: {events}): {:?}",
            report
                .records
                .iter()
                .map(|r| (r.n, r.start, r.end, &r.notes))
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(total(&v, "api_calls"), 12 * 60, "{:#?}", v.findings);
    // (A `write_failed` fault may be reported; nothing else is required of it.)
    for f in &v.findings {
        if f.kind == FindingKind::WriteFailed {
            assert_eq!(f.kind.class(), FindingClass::Fault);
        }
    }
}

// ---- 3. Honest clocks ----

#[tokio::test(start_paused = true)]
async fn case_3a_a_clock_two_hours_ahead_at_boot_fixed_by_ntp_after_3_minutes_is_no_tampering() {
    let (_dir, journal) = dir();
    // The host booted a minute ago with its hardware clock two hours ahead.
    let clock = TestClock::new(at(T0 + 2 * HOUR));
    clock.set_boot_age(Duration::from_secs(MINUTE as u64));
    clock.set_provisional(true);
    let monitor = instance(&clock, &journal).await;
    monitor.usage().set("seats", 4).unwrap();
    meter(&monitor, 3).await;
    // NTP steps it back.
    clock.jump_wall(-2 * HOUR);
    meter(&monitor, 11).await;
    assert!(monitor.verdict().is_valid(), "{:?}", monitor.verdict());
    // The boot window closes; five hours more.
    clock.set_provisional(false);
    meter(&monitor, 5 * 60).await;
    assert!(monitor.verdict().is_valid(), "{:?}", monitor.verdict());
    monitor.shutdown().await;

    let v = usage::verify(&export_set(&journal, secs(clock.wall())));
    assert_no_tampering(&v);
    assert!(!kinds(&v).contains(&FindingKind::ClockRollback));
    assert_eq!(total(&v, "api_calls"), 3 + 11 + 5 * 60);
}

#[tokio::test(start_paused = true)]
async fn case_3b_a_date_set_a_day_ahead_by_mistake_and_set_right_10_minutes_later_is_no_tampering()
{
    let (_dir, journal) = dir();
    let clock = TestClock::new(t0());
    let monitor = instance(&clock, &journal).await;
    monitor.usage().set("seats", 4).unwrap();
    meter(&monitor, 30).await;
    // `date -s` a day ahead by mistake, put right ten minutes later.
    clock.jump_wall(DAY);
    meter(&monitor, 10).await;
    assert!(monitor.verdict().is_valid(), "{:?}", monitor.verdict());
    clock.jump_wall(-DAY);
    meter(&monitor, 5 * 60).await;
    assert!(monitor.verdict().is_valid(), "{:?}", monitor.verdict());
    monitor.shutdown().await;

    let v = usage::verify(&export_set(&journal, secs(clock.wall())));
    assert_no_tampering(&v);
    assert!(!kinds(&v).contains(&FindingKind::ClockRollback));
    assert_eq!(total(&v, "api_calls"), 30 + 10 + 5 * 60);
}

#[tokio::test(start_paused = true)]
async fn case_3c_a_100_ppm_drift_corrected_by_an_86_s_step_after_10_days_is_no_tampering() {
    let (_dir, journal) = dir();
    let clock = TestClock::new(t0());
    let monitor = instance(&clock, &journal).await;
    monitor.usage().set("seats", 4).unwrap();
    // Ten days of uptime, the clock (wall and monotonic: one oscillator) 100 ppm fast:
    // 86.4 s ahead, within the boot's budget of 5 s + 500 ppm of its age (README).
    meter(&monitor, 10 * 24 * 60).await;
    clock.jump_wall(-86);
    meter(&monitor, 2 * 60).await;
    assert!(monitor.verdict().is_valid(), "{:?}", monitor.verdict());
    monitor.shutdown().await;

    let v = usage::verify(&export_set(&journal, secs(clock.wall())));
    assert_no_tampering(&v);
    assert!(!kinds(&v).contains(&FindingKind::ClockRollback));
    assert_eq!(total(&v, "api_calls"), 10 * 24 * 60 + 2 * 60);
}

// ---- 4. Journal and key restored from last night's backup ----

#[tokio::test(start_paused = true)]
async fn case_4_a_journal_restored_from_a_backup_is_a_fork_and_alone_shows_the_lost_hours() {
    let (dir, journal) = dir();
    let backup = dir.path().join("backup");
    std::fs::create_dir(&backup).unwrap();
    let clock = TestClock::new(t0());
    // 08:00 to 13:00, then the night's backup of journal and key.
    run_instance(&clock, &journal, 4, 5 * 60).await;
    let saved = copy_journal(&journal, &backup);
    // 13:00 to 18:00; the month's report goes to the vendor.
    run_instance(&clock, &journal, 4, 5 * 60).await;
    let earlier = export_set(&journal, T0 + 10 * HOUR);
    assert_eq!(earlier.len(), 1);
    // The disk is lost (everything beside the journal too); an hour later journal and
    // key are back from the backup, and the service runs on, 19:00 to 24:00.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::remove_file(path).unwrap();
        }
    }
    copy_journal(&saved, dir.path());
    run_for(HOUR).await;
    run_instance(&clock, &journal, 4, 5 * 60).await;
    let later = export_set(&journal, T0 + 16 * HOUR);
    assert_eq!(later.len(), 1);
    assert_eq!(earlier[0].key, later[0].key, "the key came back with it");

    // Both reports: a fork, both branches counted.
    let v = usage::verify(&both(&earlier, &later));
    assert_no_tampering(&v);
    assert!(kinds(&v).contains(&FindingKind::Fork), "{:#?}", v.findings);
    assert_eq!(FindingKind::Fork.class(), FindingClass::Fault);
    assert_eq!(
        total(&v, "api_calls"),
        3 * 5 * 60,
        "the hours before the backup once, each branch's own"
    );

    // The later report alone: the lost hours are time unaccounted for, not clean.
    let v = usage::verify(&later);
    assert_no_tampering(&v);
    let id = instance_of(&later[0]);
    assert!(
        unknown(&v).iter().any(|f| f.instance == id
            && matches!(f.kind, FindingKind::Downtime | FindingKind::Gap)),
        "13:00 to 19:00 shows as downtime of the instance: {:#?}",
        v.findings
    );
    assert_eq!(total(&v, "api_calls"), 2 * 5 * 60);
}

// ---- 5. Two machines started from one image that held journal and key ----

#[tokio::test(start_paused = true)]
async fn case_5_two_machines_cloned_from_one_image_count_both_branches() {
    let root = tempfile::tempdir().unwrap();
    let [image, a, b] = ["image", "a", "b"].map(|d| {
        let path = root.path().join(d);
        std::fs::create_dir(&path).unwrap();
        path
    });
    let clock = TestClock::new(t0());
    // The image's own two hours (08:00 to 10:00).
    let image_journal = image.join("usage.jsonl");
    run_instance(&clock, &image_journal, 3, 2 * 60).await;
    let ja = copy_journal(&image_journal, &a);
    let jb = copy_journal(&image_journal, &b);
    // Both machines boot at 11:00 (the second half a minute later: two clones never
    // write the very same records, which no report could tell from one sent twice) and
    // serve six seats each for four hours.
    run_for(HOUR).await;
    let first = instance(&clock, &ja).await;
    run_for(30).await;
    let second = instance(&clock, &jb).await;
    first.usage().set("seats", 6).unwrap();
    second.usage().set("seats", 6).unwrap();
    let (ca, cb) = (
        first.usage().counter("api_calls").unwrap(),
        second.usage().counter("api_calls").unwrap(),
    );
    for _ in 0..4 * 60 {
        ca.add(1);
        cb.add(1);
        run_for(MINUTE).await;
    }
    first.shutdown().await;
    second.shutdown().await;

    let ra = export_set(&ja, T0 + 7 * HOUR);
    let rb = export_set(&jb, T0 + 7 * HOUR);
    assert_eq!((ra.len(), rb.len()), (1, 1));
    let v = usage::verify(&both(&ra, &rb));
    assert_no_tampering(&v);
    assert_eq!(
        peak(&v, "seats"),
        12,
        "both branches counted: {:#?}",
        v.true_up
    );
    assert_eq!(
        total(&v, "api_calls"),
        2 * 60 + 2 * 4 * 60,
        "the image's hours once, each machine's own: {:#?}",
        v.true_up
    );
    // Said so: one journal went two ways (an honest fault).
    assert!(kinds(&v).contains(&FindingKind::Fork), "{:#?}", v.findings);
}

// ---- 6. SIGKILL at :59 every hour ----

#[cfg(unix)]
#[test]
fn case_6_a_process_killed_at_59_every_hour_loses_at_most_five_minutes_a_kill() {
    let (dir, journal) = dir();
    let kills: i64 = 3;
    for h in 0..kills {
        let mut killed = ChildProcess::spawn(
            dir.path(),
            &child(
                &journal,
                &format!("killed-{h}"),
                T0 + h * HOUR,
                4,
                "start,run:59,mark:at59,hang",
            ),
        );
        killed.wait_mark("at59");
        killed.kill();
    }
    // Restarted on the hour once more, and stopped gracefully two hours later.
    let mut last = ChildProcess::spawn(
        dir.path(),
        &child(&journal, "last", T0 + kills * HOUR, 4, "start,run:120,stop"),
    );
    last.finish();

    let reports = export_set(&journal, T0 + (kills + 2) * HOUR);
    assert_eq!(
        reports.len(),
        1,
        "a killed process holds no lock: the next one continues its journal"
    );
    let v = usage::verify(&reports);
    assert_no_tampering(&v);
    let unclean = v
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::UncleanStop)
        .count();
    assert_eq!(unclean, kills as usize, "one per kill: {:#?}", v.findings);
    assert_eq!(FindingKind::UncleanStop.class(), FindingClass::Fault);
    let ran = (kills * 59 + 120) as u64;
    let counted = total(&v, "api_calls");
    assert!(
        counted <= ran && counted + 5 * kills as u64 >= ran,
        "{counted} of {ran} minutes counted: at most 5 lost per kill"
    );
    // The vendor's command exits 0: faults are not tampering.
    let out = vendor_verify(dir.path(), &reports);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
}

// ---- 7. Records after the last export cut off the end while stopped ----

#[tokio::test(start_paused = true)]
async fn case_7_records_cut_off_after_an_export_show_as_time_unknown_never_clean() {
    let (_dir, journal) = dir();
    let clock = TestClock::new(t0());
    run_instance(&clock, &journal, 4, 5 * 60).await;
    let earlier = export_set(&journal, T0 + 5 * HOUR);
    assert_eq!(earlier.len(), 1);
    let id = instance_of(&earlier[0]);
    let exported_len = std::fs::metadata(&journal).unwrap().len();
    run_instance(&clock, &journal, 4, 5 * 60).await;
    // Stopped: the records written since the export are cut off the end (the file
    // truncated to its length then; nothing else touched).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap()
        .set_len(exported_len)
        .unwrap();

    // Exported as it is now: the hours after the earlier report are unknown.
    let cut = export_set(&journal, T0 + 10 * HOUR);
    let v = usage::verify(&both(&earlier, &cut));
    assert!(
        unknown(&v).iter().any(|f| f.instance == id),
        "13:00 to 18:00 passed silently: {:#?}",
        v.findings
    );

    // Started again and exported at the end of its run: the hours cut off are that
    // instance's downtime.
    run_instance(&clock, &journal, 4, 2 * 60).await;
    let later = export_set(&journal, T0 + 12 * HOUR);
    assert_eq!(later.len(), 1);
    let v = usage::verify(&both(&earlier, &later));
    assert!(
        unknown(&v).iter().any(|f| f.instance == id
            && matches!(f.kind, FindingKind::Downtime | FindingKind::Gap)),
        "13:00 to 18:00 passed silently: {:#?}",
        v.findings
    );
    assert_eq!(FindingKind::Downtime.class(), FindingClass::Unknown);
}

// ---- 8. Two replicas starting at once on a fresh shared journal path ----

#[cfg(unix)]
#[test]
fn case_8_two_replicas_starting_at_once_on_a_fresh_path_each_keep_a_journal() {
    let (dir, journal) = dir();
    let barrier = dir.path().join("barrier");
    let plan = "barrier,start,run:1,mark:started,wait,run:179,stop";
    let spec = |name: &str| ChildSpec {
        barrier: Some(barrier.clone()),
        ..child(&journal, name, T0, 3, plan)
    };
    let mut a = ChildProcess::spawn(dir.path(), &spec("a"));
    let mut b = ChildProcess::spawn(dir.path(), &spec("b"));
    // Both wait at the barrier, then start their monitors at once.
    std::fs::write(&barrier, "").unwrap();
    a.wait_mark("started");
    b.wait_mark("started");
    assert!(sibling(&journal, ".key").exists());
    assert!(sibling(&journal, ".1.key").exists());
    a.go();
    b.go();
    a.finish();
    b.finish();

    let reports = export_set(&journal, T0 + 3 * HOUR);
    assert_eq!(reports.len(), 2, "two journals in the set");
    assert_ne!(reports[0].key, reports[1].key);
    for report in &reports {
        // Each journal covers its process's whole life, 08:00 to 11:00.
        let (first, last) = (
            report.records.first().unwrap(),
            report.records.last().unwrap(),
        );
        assert!(first.start <= T0 + MINUTE, "{first:?}");
        assert!(last.end >= T0 + 3 * HOUR - MINUTE, "{last:?}");
        assert_eq!(counted(report, "api_calls"), 180);
    }
    let v = usage::verify(&reports);
    assert_no_tampering(&v);
    assert_eq!(v.instances.len(), 2, "{:#?}", v.instances);
    assert_eq!(peak(&v, "iosetu_replicas"), 2, "{:#?}", v.true_up);
    assert_eq!(total(&v, "api_calls"), 2 * 180);

    // One report alone in a file reads as a set of one.
    let one = dir.path().join("one.json");
    std::fs::write(&one, reports[0].to_json()).unwrap();
    assert_eq!(Report::read_all(&one).unwrap(), vec![reports[0].clone()]);
}

// ---- 9. Two instances whose clocks differ by exactly one hour ----

#[tokio::test(start_paused = true)]
async fn case_9_instances_whose_clocks_differ_by_an_hour_show_the_sum_of_their_own_peaks() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a.jsonl"), root.path().join("b.jsonl"));
    let (clock_a, clock_b) = (TestClock::new(t0()), TestClock::new(at(T0 + HOUR)));
    let first = instance(&clock_a, &a).await;
    let second = instance(&clock_b, &b).await;
    first.usage().set("seats", 10).unwrap();
    second.usage().set("seats", 10).unwrap();
    // Both run the same 59 minutes; by their clocks, 08:00 and 09:00.
    run_for(59 * MINUTE).await;
    first.shutdown().await;
    second.shutdown().await;

    let reports = both(&export_set(&a, T0 + HOUR), &export_set(&b, T0 + 2 * HOUR));
    let v = usage::verify(&reports);
    assert_no_tampering(&v);
    let seats = row(&v, "seats");
    assert_eq!(seats.instance_peaks, Some(20), "{seats:?}");
    // (Hour by hour the two never meet: the hourly sum alone would say 10.)
    assert_eq!(seats.value, 10, "{seats:?}");
}

// ---- 10. A replayed attestation across a restart with the clock set back ----

#[tokio::test(start_paused = true)]
async fn case_10_a_replayed_attestation_never_excuses_a_step_back_beyond_what_it_attested() {
    let dir = tempfile::tempdir().unwrap();
    let [path, notices, state, journal] =
        ["license.key", "notices", "state.json", "usage.jsonl"].map(|name| dir.path().join(name));
    write(&path, &[&dated_license("lic-2027", T0 + 300 * DAY)]);
    // A support case on 31 January at 22:00: the vendor's attestation, used then (an
    // hour of service) and left in the notice source afterwards.
    let attested = FEB1 - 2 * HOUR;
    write(&notices, &[&attestation(1, attested)]);
    let clock = TestClock::new(at(attested));
    let start_monitor = || {
        builder(&clock, file(&path))
            .notice_source(file(&notices))
            .watch_file(false)
            .state_file(&state)
            .usage_journal(&journal)
            .start()
    };
    let run = |minutes: i64| async move {
        let monitor = start_monitor().await.unwrap();
        monitor.usage().set("seats", 4).unwrap();
        meter(&monitor, minutes).await;
        monitor.shutdown().await;
    };
    run(HOUR / MINUTE).await;
    // Down until 3 February, 17:00; then three hours, to 20:00.
    run_for(66 * HOUR).await;
    run(3 * HOUR / MINUTE).await;
    // Stopped; the state file deleted; the clock set back 71 hours, to 31 January
    // 21:00: within an hour below the old attestation's time and before its exp, so the
    // restarted service takes it again. Six hours, to 1 February 03:00 (real time: 3
    // February, 21:00 to 4 February, 03:00).
    assert!(state.exists());
    std::fs::remove_file(&state).unwrap();
    clock.jump_wall(-71 * HOUR);
    run(6 * HOUR / MINUTE).await;

    let reports = export_set(&journal, secs(clock.wall()));
    assert_eq!(reports.len(), 1);
    let v = usage::verify(&reports);
    let rollbacks: Vec<&Finding> = v
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::ClockRollback)
        .collect();
    assert!(
        !rollbacks.is_empty(),
        "a step back of 71 hours excused by a replayed attestation: {:#?}",
        v.findings
    );
    assert_eq!(FindingKind::ClockRollback.class(), FindingClass::Tampering);
    assert!(!v.intact());
    // Flagged where it lands: in the run after the step back, at or before any of its
    // records dated January (February's usage is not silently January's).
    let records = &reports[0].records;
    let last_boot = records.last().unwrap().boot;
    let after: Vec<&Record> = records.iter().filter(|r| r.boot == last_boot).collect();
    let flagged = rollbacks.iter().filter_map(|f| f.n).min();
    assert!(
        flagged.is_some_and(|n| after.iter().any(|r| r.n == n)),
        "{rollbacks:#?}"
    );
    for record in after.iter().filter(|r| r.start < FEB1) {
        assert!(
            flagged.is_some_and(|n| n <= record.n),
            "record {} dated {} is not flagged: {rollbacks:#?}",
            record.n,
            record.start
        );
    }
    // Nothing is lost either: every minute is in the table, January's or February's.
    assert_eq!(total(&v, "api_calls"), (1 + 3 + 6) * 60);
    // The vendor's command exits 1.
    let out = vendor_verify(dir.path(), &reports);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
}

// ---- 11. A trial's limit never hides overuse after it ended ----

#[tokio::test(start_paused = true)]
async fn case_11_seats_over_the_contract_after_a_trial_ended_are_over_hour_by_hour() {
    let (_dir, journal) = dir();
    let mut contract = Claims::new("Acme Corp", T0 + 800 * DAY);
    contract.jti = Some("contract-2027".into());
    contract.limits.insert("seats".into(), 10);
    let mut trial = Claims::new("Acme Corp", T0 + DAY);
    trial.jti = Some("trial-100".into());
    trial.limits.insert("seats".into(), 100);
    let source = LicenseSource::Static(format!(
        "{}\n{}\n",
        signer().sign(&contract),
        signer().sign(&trial)
    ));
    let clock = TestClock::new(t0());
    let monitor = builder(&clock, source)
        .usage_journal(&journal)
        .start()
        .await
        .unwrap();
    // 30 seats during the one-day trial (limit 100), then 40 for nine days on the
    // contract alone (limit 10).
    monitor.usage().set("seats", 30).unwrap();
    run_for(DAY + MINUTE).await;
    assert!(monitor.verdict().is_valid());
    assert_eq!(
        monitor.verdict().limit("seats"),
        Some(10),
        "the trial ended"
    );
    monitor.usage().set("seats", 40).unwrap();
    run_for(9 * DAY - MINUTE).await;
    monitor.shutdown().await;

    let v = usage::verify(&export_set(&journal, T0 + 10 * DAY));
    assert_no_tampering(&v);
    let seats = row(&v, "seats");
    assert_eq!(seats.value, 40, "{seats:?}");
    assert!(
        seats.over(),
        "40 seats for nine days on a 10-seat contract: {seats:?}"
    );
    // The nine days' hours (and perhaps the trial's last, at the edge).
    assert!(
        (9 * 24 - 1..=9 * 24 + 1).contains(&seats.over_hours),
        "{seats:?}"
    );
    assert!(
        v.table()
            .lines()
            .any(|l| l.contains("seats") && l.contains("OVER")),
        "{}",
        v.table()
    );
}
