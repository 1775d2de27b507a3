//! Random schedules of honest faults on usage journals, with real processes: restarts,
//! SIGKILLs, full disks, clock corrections within the honest drift budget, restores from
//! a backup and machines cloned with their journal. Over every schedule, `usage::verify`
//! over all the reports exported along the way never finds tampering (nor damaged lines),
//! and the true-up counts what ran, less at most five minutes per kill.
//!
//! Each run is this test binary re-executed as a child (`tests/common/usage_child.rs`:
//! `child_entry` below returns at once unless its environment is set) that runs one
//! monitor in paused time on a test clock, so its hours pass in milliseconds.
//!
//! The model: machines (a directory each, holding one journal path: journal, key,
//! checkpoint, lock) and one test time that only moves forward. Steps:
//!
//! * `Run { machine, minutes, downtime, end }`: a child on the machine's journal starts
//!   `downtime` seconds (0 to 3 h) after the previous run (on any machine) ended, runs
//!   `minutes` (5 to 180; `api_calls` +1 a minute), then: `Stop` (graceful), `Kill`
//!   (SIGKILL), or `DiskFull { after, spell, bytes }` (after `after` minutes the file-size
//!   limit drops to the journal's length plus `bytes`, `spell` minutes later it is lifted,
//!   then the rest of the run and a graceful stop; the child ignores `SIGXFSZ`);
//! * `Backup { machine }`: every file of the machine's directory copied to its backup;
//! * `Restore { machine }`: the machine exported first, then its directory replaced by the
//!   backup (none yet: nothing happens);
//! * `Clone { from }`: a new machine with a copy of the journal and key of `from`;
//! * `Correction { machine, seconds, at_percent }`: the machine's clock is `seconds` ahead
//!   (negative: behind) at the start of its next run and NTP steps it right
//!   `at_percent` of the way through that run; a step back is kept within the honest
//!   drift budget there (5 s + 500 ppm of the run's time so far, floored; the judge's
//!   own also counts the host's boot age: `src/judge/time/budget.rs`).
//!
//! After every run every machine's journal set is exported (`usage::export_all`); every
//! report is kept and all are verified together at the end.
//!
//! `IOSETU_SIM_CASES=N` sets the number of schedules (24 by default), as for the judge's
//! simulations.
// (Real processes, SIGKILL and RLIMIT_FSIZE: unix only.)
#![cfg(unix)]

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use common::usage_child::{ChildProcess, ChildSpec, child_main, sibling};
use common::*;
use iosetu_license::usage::{self, FindingClass, FindingKind, Report, Verification};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// The child's entry point (a no-op in the parent's run).
#[test]
fn child_entry() {
    child_main();
}

const JOURNAL: &str = "usage.jsonl";
/// What a kill may lose: the minutes since the last checkpoint (taken every five).
const LOST_PER_KILL: u64 = 5;

/// A license with `seats` 10, valid for two years (the children's).
fn license() -> String {
    common::usage_child::seats_license()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Stop,
    Kill,
    DiskFull { after: u32, spell: u32, bytes: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Run {
        machine: usize,
        minutes: u32,
        downtime: u32,
        end: End,
    },
    Backup {
        machine: usize,
    },
    Restore {
        machine: usize,
    },
    Clone {
        from: usize,
    },
    Correction {
        machine: usize,
        seconds: i64,
        at_percent: u32,
    },
}

fn run_step() -> impl Strategy<Value = Step> {
    (
        0usize..4,
        5u32..=180,
        0u32..=3 * HOUR as u32,
        0u8..3,
        (0u32..180, 0u32..180, 1u64..400),
    )
        .prop_map(|(machine, minutes, downtime, kind, (a, s, bytes))| {
            let end = match kind {
                0 => End::Stop,
                1 => End::Kill,
                _ => {
                    // A spell inside the run, with at least a minute after it.
                    let after = 1 + a % (minutes - 2);
                    let spell = 1 + s % (minutes - after - 1);
                    End::DiskFull {
                        after,
                        spell,
                        bytes,
                    }
                }
            };
            Step::Run {
                machine,
                minutes,
                downtime,
                end,
            }
        })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => run_step(),
        2 => (0usize..4).prop_map(|machine| Step::Backup { machine }),
        2 => (0usize..4).prop_map(|machine| Step::Restore { machine }),
        2 => (0usize..4).prop_map(|from| Step::Clone { from }),
        // (Steps back of more than 5 s are what the judge takes as corrections, within
        // its budget; smaller ones it absorbs.)
        2 => (0usize..4, prop_oneof![1 => -10i64..=-1, 1 => 1i64..=5, 2 => 6i64..=10], 10u32..=90).prop_map(
            |(machine, seconds, at_percent)| Step::Correction { machine, seconds, at_percent }
        ),
    ]
}

fn cases() -> u32 {
    std::env::var("IOSETU_SIM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

struct Machine {
    dir: PathBuf,
    backup: Option<PathBuf>,
    /// Corrections due at its next run: (seconds ahead, percent of the run).
    corrections: Vec<(i64, u32)>,
}

impl Machine {
    fn journal(&self) -> PathBuf {
        self.dir.join(JOURNAL)
    }
}

/// A kill, and what the checkpoint beside the journal showed right after it.
struct Kill {
    run: usize,
    checkpoint: bool,
    /// What the run's timing says (`None` where too close to call).
    expected: Option<bool>,
}

struct World {
    root: tempfile::TempDir,
    logs: PathBuf,
    machines: Vec<Machine>,
    /// The test time: only moves forward.
    now: i64,
    runs: usize,
    /// Minutes that ran, over every process.
    ran: u64,
    kills: Vec<Kill>,
    /// Forks made: clones and restores.
    forks: u64,
    /// Months (`YYYY-MM`) in which some run left a record.
    months: BTreeSet<String>,
    reports: Vec<Report>,
    log: String,
}

fn month(secs: i64) -> String {
    humantime::format_rfc3339_seconds(at(secs)).to_string()[..7].to_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

impl World {
    fn new() -> World {
        let root = tempfile::tempdir().unwrap();
        let logs = root.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let mut world = World {
            root,
            logs,
            machines: Vec::new(),
            now: T0,
            runs: 0,
            ran: 0,
            kills: Vec::new(),
            forks: 0,
            months: BTreeSet::new(),
            reports: Vec::new(),
            log: String::new(),
        };
        world.add_machine();
        world
    }

    fn add_machine(&mut self) -> usize {
        let k = self.machines.len();
        let dir = self.root.path().join(format!("m{k}"));
        std::fs::create_dir(&dir).unwrap();
        self.machines.push(Machine {
            dir,
            backup: None,
            corrections: Vec::new(),
        });
        k
    }

    fn note(&mut self, line: String) {
        self.log.push_str(&line);
        self.log.push('\n');
    }

    fn execute(&mut self, step: &Step) {
        match step {
            Step::Run {
                machine,
                minutes,
                downtime,
                end,
            } => self.run(*machine % self.machines.len(), *minutes, *downtime, end),
            Step::Backup { machine } => {
                let m = *machine % self.machines.len();
                let backup = self.root.path().join(format!("backup-m{m}"));
                copy_dir(&self.machines[m].dir, &backup);
                self.machines[m].backup = Some(backup);
                self.note(format!("backup m{m}"));
            }
            Step::Restore { machine } => {
                let m = *machine % self.machines.len();
                let Some(backup) = self.machines[m].backup.clone() else {
                    self.note(format!("restore m{m}: no backup, nothing done"));
                    return;
                };
                // Exported first, as a customer about to restore would: every record the
                // journal holds (and the hour a killed process left in its checkpoint)
                // is then in a report, so the branch the restore drops is counted (a
                // fork), and nothing that ran goes unreported.
                self.export(m);
                copy_dir(&backup, &self.machines[m].dir);
                self.forks += 1;
                self.note(format!("restore m{m} from its backup"));
            }
            Step::Clone { from } => {
                let from = *from % self.machines.len();
                let to = self.add_machine();
                for suffix in ["", ".key"] {
                    let source = sibling(&self.machines[from].journal(), suffix);
                    if source.exists() {
                        std::fs::copy(&source, sibling(&self.machines[to].journal(), suffix))
                            .unwrap();
                    }
                }
                self.forks += 1;
                self.note(format!("clone m{from} to m{to} (journal and key)"));
            }
            Step::Correction {
                machine,
                seconds,
                at_percent,
            } => {
                let m = *machine % self.machines.len();
                self.machines[m].corrections.push((*seconds, *at_percent));
                self.note(format!(
                    "correction m{m}: {seconds} s ahead, stepped right at {at_percent}% of the next run"
                ));
            }
        }
    }

    fn run(&mut self, m: usize, minutes: u32, downtime: u32, end: &End) {
        let start = self.now + i64::from(downtime);
        let run = self.runs;
        self.runs += 1;
        // The corrections due: each at its point of the run, a step back kept within the
        // budget there (all steps back so far counted against it), steps forward to 10 s
        // in all.
        let mut events: Vec<(u32, String)> = Vec::new();
        let mut ahead = 0i64;
        let mut back = 0i64;
        let mut forward = 0i64;
        let mut jumps = Vec::new();
        let mut corrections = std::mem::take(&mut self.machines[m].corrections);
        corrections.sort_by_key(|c| c.1);
        for (seconds, percent) in corrections {
            let minute = (minutes * percent / 100).clamp(1, minutes - 1);
            let budget = 5 + i64::from(minute) * MINUTE / 2_000;
            let seconds = if seconds > 0 {
                seconds.min(budget - back)
            } else {
                seconds.max(-10 - forward)
            };
            if seconds == 0 {
                continue;
            }
            back += seconds.max(0);
            forward += seconds.min(0);
            ahead += seconds;
            jumps.push(minute);
            events.push((minute, format!("jump:{}", -seconds)));
        }
        if let End::DiskFull {
            after,
            spell,
            bytes,
        } = end
        {
            events.push((*after, format!("limit:{bytes}")));
            events.push((after + spell, "unlimit".into()));
        }
        events.sort_by_key(|e| e.0);
        let mut plan = vec!["start".to_owned()];
        let mut at_minute = 0;
        for (minute, step) in events {
            if minute > at_minute {
                plan.push(format!("run:{}", minute - at_minute));
                at_minute = minute;
            }
            plan.push(step);
        }
        if minutes > at_minute {
            plan.push(format!("run:{}", minutes - at_minute));
        }
        match end {
            End::Kill => plan.extend(["mark:end".to_owned(), "hang".to_owned()]),
            _ => plan.push("stop".into()),
        }
        let plan = plan.join(",");
        let journal = self.machines[m].journal();
        let spec = ChildSpec {
            name: format!("run-{run}"),
            journal: journal.clone(),
            start: start + ahead,
            seats: 3,
            license: license(),
            plan: plan.clone(),
            barrier: None,
            ignore_xfsz: matches!(end, End::DiskFull { .. }),
        };
        let mut child = ChildProcess::spawn(&self.logs, &spec);
        let end_at = start + i64::from(minutes) * MINUTE;
        let mut line = format!(
            "run {run} on m{m}: {} to {} (clock {ahead:+} s), plan {plan}",
            start - T0,
            end_at - T0
        );
        let mut recorded = true;
        if *end == End::Kill {
            child.wait_mark("end");
            let checkpoint = sibling(&journal, ".checkpoint").exists();
            child.kill();
            let expected = checkpoint_expected(start, end_at, &jumps);
            let _ = write!(
                line,
                "; killed, checkpoint {checkpoint} (expected {expected:?})"
            );
            // (A kill before its first checkpoint, or within five minutes of an hour's
            // record, leaves nothing of its last minutes: at most five, the loss allowed
            // per kill.)
            recorded = checkpoint || (end_at - MINUTE).div_euclid(HOUR) > start.div_euclid(HOUR);
            self.kills.push(Kill {
                run,
                checkpoint,
                expected,
            });
        } else {
            child.finish();
        }
        if recorded {
            self.months.insert(month(start));
        }
        self.ran += u64::from(minutes);
        self.now = end_at;
        self.note(line);
        for k in 0..self.machines.len() {
            self.export(k);
        }
    }

    /// Every journal of machine `m`'s set, exported a second after the last one (nothing
    /// yet where no process has kept anything there).
    fn export(&mut self, m: usize) {
        let journal = self.machines[m].journal();
        if !journal.exists() && !sibling(&journal, ".checkpoint").exists() {
            return;
        }
        self.now += 1;
        let reports = usage::export_all(&journal, at(self.now))
            .unwrap_or_else(|e| panic!("export m{m}: {e}"));
        let heads: Vec<_> = reports.iter().map(|r| r.head_n).collect();
        self.note(format!(
            "  export m{m} at {}: heads {heads:?}",
            self.now - T0
        ));
        self.reports.extend(reports);
    }
}

/// Whether a checkpoint must lie beside the journal of a process started at `start` and
/// killed at `kill` (test time), by the task's timing: one five minutes after the start
/// and after each hour's record, removed when an hour's record is written. `None` where
/// the clock corrections (at most 10 s either way) or the instant of the kill make it too
/// close to call.
fn checkpoint_expected(start: i64, kill: i64, jumps: &[u32]) -> Option<bool> {
    const FUZZ: i64 = 15;
    let hour = kill.div_euclid(HOUR) * HOUR;
    if (kill - hour) < FUZZ || (hour + HOUR - kill) < FUZZ || (hour - start).abs() < FUZZ {
        return None;
    }
    // The current period began at the start or at the last hour's record.
    let began = start.max(hour);
    // (A step back within seconds of a period's start closes the period there.)
    if jumps.iter().any(|&j| {
        let t = start + i64::from(j) * MINUTE;
        (0..=FUZZ * 2).contains(&(t - began))
    }) {
        return None;
    }
    let since = kill - began;
    if since >= 5 * MINUTE + 2 * FUZZ {
        Some(true)
    } else if since <= 5 * MINUTE - 2 * FUZZ {
        Some(false)
    } else {
        None
    }
}

fn short(key: &str) -> String {
    key.chars().take(12).collect()
}

/// A metric's rows, summed over months.
fn total(v: &Verification, metric: &str) -> u64 {
    v.true_up
        .iter()
        .filter(|r| r.metric == metric)
        .map(|r| r.value)
        .sum()
}

fn check(world: &World) -> Result<(), TestCaseError> {
    let log = &world.log;
    let v = usage::verify(&world.reports);
    let findings: Vec<String> = v
        .findings
        .iter()
        .map(|f| format!("{} {:?} n={:?}: {}", f.instance, f.kind, f.n, f.detail))
        .collect();
    let tampering: Vec<&String> = v
        .findings
        .iter()
        .zip(&findings)
        .filter(|(f, _)| f.kind.class() == FindingClass::Tampering)
        .map(|(_, s)| s)
        .collect();
    prop_assert!(
        v.intact() && tampering.is_empty(),
        "honest schedule accused of tampering: {tampering:#?}\nall findings: {findings:#?}\n{log}"
    );
    prop_assert!(
        !v.findings.iter().any(|f| f.kind == FindingKind::Damaged),
        "damaged lines: {findings:#?}\n{log}"
    );

    // A journal goes two ways only where the schedule made it: a restore or a clone (a
    // kill's checkpoint, exported and then written by the next start, is one record).
    prop_assert!(
        world.forks > 0 || !v.findings.iter().any(|f| f.kind == FindingKind::Fork),
        "a fork without a restore or a clone: {findings:#?}\n{log}"
    );

    // What ran is counted, less at most five minutes a kill, and never more.
    let counted = total(&v, "api_calls");
    let ran = world.ran;
    let kills = world.kills.len() as u64;
    prop_assert!(
        counted <= ran && counted + LOST_PER_KILL * kills >= ran,
        "api_calls counted {counted} of {ran} minutes run, {kills} kills\ntrue-up:\n{}findings: {findings:#?}\n{log}",
        v.table()
    );

    // Something ran in each month with a record: its replicas peak is at least 1, and no
    // more than the branches that could overlap in an hour (one, plus each fork).
    for m in &world.months {
        let peak = v
            .true_up
            .iter()
            .find(|r| r.metric == "iosetu_replicas" && &r.month == m)
            .map(|r| r.value);
        prop_assert!(
            peak.is_some_and(|p| p >= 1 && p <= 1 + world.forks),
            "iosetu_replicas in {m}: {peak:?} ({} forks)\ntrue-up:\n{}{log}",
            world.forks,
            v.table()
        );
    }

    // Each kill after which a checkpoint lay beside the journal is one record noted
    // `unclean_stop` (the same record wherever it shows: the export of the dead process's
    // journal, its restart, a restore that brought the checkpoint back) and a finding.
    let unclean: BTreeSet<(String, u64, String)> = world
        .reports
        .iter()
        .flat_map(|r| {
            r.records
                .iter()
                .filter(|rec| rec.notes.iter().any(|n| n == "unclean_stop"))
                .map(|rec| (r.key.clone(), rec.n, rec.link()))
        })
        .collect();
    let with_checkpoint = world.kills.iter().filter(|k| k.checkpoint).count();
    prop_assert_eq!(
        unclean.len(),
        with_checkpoint,
        "records noted unclean_stop: {:?}\nfindings: {:#?}\n{}",
        unclean,
        findings,
        log
    );
    for (key, n, _) in &unclean {
        prop_assert!(
            v.findings.iter().any(|f| f.kind == FindingKind::UncleanStop
                && f.instance == short(key)
                && f.n == Some(*n)),
            "no unclean_stop finding for record {n} of {}: {findings:#?}\n{log}",
            short(key)
        );
    }
    for kill in &world.kills {
        prop_assert!(
            kill.expected.is_none_or(|e| e == kill.checkpoint),
            "run {}: a checkpoint {} after the kill, expected {:?}\n{log}",
            kill.run,
            if kill.checkpoint {
                "lay"
            } else {
                "did not lie"
            },
            kill.expected
        );
    }
    Ok(())
}

fn schedule(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut world = World::new();
    let executed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for step in steps {
            world.execute(step);
        }
    }));
    if let Err(panic) = executed {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        return Err(TestCaseError::fail(format!("{what}\n{}", world.log)));
    }
    check(&world)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn honest_schedules_never_verify_as_tampering_and_lose_at_most_five_minutes_a_kill(
        steps in proptest::collection::vec(step(), 2..=8),
    ) {
        schedule(&steps)?;
    }
}
