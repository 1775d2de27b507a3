//! A property-based simulation of trusted time against an oracle that knows true time,
//! through the whole monitor in tokio's paused time: it checks that the checker task (the
//! shell) wires the judge right (its timers, reads, restarts with a real state file, and
//! a subscriber that loses nothing). The judge's own simulation
//! (`src/judge/simulation.rs`) checks the same invariants, the set laws and honest drift
//! at 100,000 schedules without a runtime.
//!
//! Each case drives one monitor (and its restarts) in paused time through a random
//! schedule: wall steps both ways, slow creeps, suspends (wall and monotonic time jump,
//! tokio's timers do not), reboots with the clock off and corrected within the boot window,
//! restarts carrying the state file, license swaps (valid, renewed, garbage, deleted, `iat`
//! ahead, expired, and sets: a license with its renewal installed ahead, a license with a
//! garbage line, a license held for later alone), and `check_now` storms. After every step
//! it checks:
//!
//! 1. *Honest customers*: in a schedule made only of the faults DESIGN.md calls ordinary,
//!    whenever the source gives a valid license at true time (a window holds it, a minute
//!    after it opened and ten minutes before the coverage ends), the verdict is `Valid` within
//!    60 s of the last ordinary fault ending (not grace, not cut off).
//! 2. *Casual tamperers*: once true time is past `exp` + grace + 60 s for every license
//!    that was ever in the source, nothing is admitted, whatever the schedule did, except
//!    while readings are provisional (a boot window, DESIGN "Trusted time") and within 60 s
//!    of running time after a resume (the checker's sampling bound). The state file's
//!    mark is written once a minute, so a restart can lose up to a minute of trusted time
//!    when the clock was set back: each restart adds 60 s to the bound.
//! 3. *Reported*: a wall clock behind true time by more than that bound plus 10 s, for 60
//!    s of running time, outside a boot window, is reported: the verdict's reason is
//!    `clock_manipulation`.
//! 4. *No alert floods*: expiry alerts fire when a band is entered and repeat at most once
//!    per check interval, whatever `check_now` storms came in between, and a subscriber
//!    loses nothing.
//!
//! Half the cases keep a state file; restarts without one, or that delete it, are out of
//! scope for invariants 2 and 3 (DESIGN). 2,000 cases run in
//! `cargo test`; `IOSETU_SHELL_SIM_CASES=100000 cargo test --test simulation` runs more.

use std::path::PathBuf;
use std::time::Duration;

use iosetu_license::{
    Claims, Clock, GraceReason, LicenseMonitor, LicenseSource, LicenseState, TestClock,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

mod common;
use common::{DAY, HOUR, MINUTE, T0, at, builder, signer};

const GRACE: i64 = HOUR;
const BOOT_WINDOW: i64 = 15 * MINUTE;

/// What an operator (or the vendor) puts in the license file.
#[derive(Debug, Clone, Copy)]
enum Lic {
    /// Valid from before the start for six hours.
    Valid,
    /// A renewal: twelve hours.
    Renewed,
    /// Issued by a vendor whose clock is this many seconds fast (at most ten minutes).
    IatAhead(i64),
    /// Expired three hours before the start.
    Expired,
    /// A set: the six-hour license and its renewal installed ahead, from five hours in to
    /// eighteen (one coverage).
    WithRenewal,
    /// A set: the six-hour license and a line of garbage.
    WithGarbage,
    /// Only a license held for later: from two hours in to twenty.
    Held,
    Garbage,
    Deleted,
}

#[derive(Debug, Clone)]
enum Step {
    /// Let time run.
    Run(u64),
    /// Ordinary: NTP keeps the wall within two seconds of true time.
    Jitter(i64),
    /// Ordinary: the wall jumps ahead (VM migration, a bad step) and is corrected later.
    /// At least 10 s: with NTP's ±2 s, smaller steps are drift the mark absorbs, and
    /// stepping back over 5 s from absorbed drift is what manipulation looks like.
    AheadFor { ahead: i64, secs: u64 },
    /// Ordinary: suspend and resume.
    Suspend(u64),
    /// A host reboot: the clock reads `rtc` off true time and is corrected `correct_after`
    /// seconds into the boot window (ordinary), or never (tampering).
    Reboot {
        rtc: i64,
        correct_after: Option<u64>,
    },
    /// The process restarts with the state file.
    Restart,
    /// The license file is swapped (as kubelet would), and the watch wakes the checker.
    Swap(Lic),
    /// `check_now` (SIGHUP) this many times.
    Storm(u8),
    /// Tampering: `date -s` by this many seconds.
    SetWall(i64),
    /// Tampering: the wall moves `step` seconds every `every` seconds, `times` times.
    Creep { step: i64, every: u64, times: u32 },
}

fn lic() -> impl Strategy<Value = Lic> {
    prop_oneof![
        3 => Just(Lic::Valid),
        3 => Just(Lic::Renewed),
        2 => (0i64..=600).prop_map(Lic::IatAhead),
        1 => Just(Lic::Expired),
        2 => Just(Lic::WithRenewal),
        1 => Just(Lic::WithGarbage),
        1 => Just(Lic::Held),
        1 => Just(Lic::Garbage),
        1 => Just(Lic::Deleted),
    ]
}

fn ordinary() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1u64..4 * HOUR as u64).prop_map(Step::Run),
        2 => (-2i64..=2).prop_map(Step::Jitter),
        1 => (10i64..2 * DAY, 1u64..HOUR as u64).prop_map(|(ahead, secs)| Step::AheadFor { ahead, secs }),
        2 => (1u64..6 * HOUR as u64).prop_map(Step::Suspend),
        1 => (-365 * DAY..365 * DAY, 0u64..(BOOT_WINDOW - MINUTE) as u64)
            .prop_map(|(rtc, c)| Step::Reboot { rtc, correct_after: Some(c) }),
        2 => Just(Step::Restart),
        3 => lic().prop_map(Step::Swap),
        1 => (1u8..40).prop_map(Step::Storm),
    ]
}

fn any_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => ordinary(),
        3 => (-60 * DAY..60 * DAY).prop_map(Step::SetWall),
        1 => (-6i64..=-1, 1u64..=60, 1u32..200)
            .prop_map(|(step, every, times)| Step::Creep { step, every, times }),
        1 => (-365 * DAY..365 * DAY).prop_map(|rtc| Step::Reboot { rtc, correct_after: None }),
    ]
}

/// A schedule: honest (ordinary faults only) or not, and its steps.
fn schedule() -> impl Strategy<Value = (bool, Vec<Step>)> {
    prop_oneof![
        proptest::collection::vec(ordinary(), 1..24).prop_map(|s| (true, s)),
        proptest::collection::vec(any_step(), 1..24).prop_map(|s| (false, s)),
    ]
}

/// What one run of the monitor has reported, for invariant 4.
#[derive(Debug)]
struct Alerts {
    started: tokio::time::Instant,
    expiring: u64,
    /// Events after which an alert band may be entered afresh.
    fresh: u64,
}

impl Default for Alerts {
    fn default() -> Self {
        Self {
            started: tokio::time::Instant::now(),
            expiring: 0,
            fresh: 0,
        }
    }
}

/// The simulated host, process and operator, with what the oracle knows.
struct World {
    _dir: tempfile::TempDir,
    license: PathBuf,
    state: PathBuf,
    clock: TestClock,
    /// True time when `clock` was made (its monotonic origin).
    origin: i64,
    /// Wall minus true time, in seconds.
    offset: i64,
    boot_at: i64,
    monitor: Option<LicenseMonitor>,
    /// The source's licenses that verify.
    in_source: Vec<Claims>,
    /// The latest `exp` + grace of any license ever in the source.
    bound: i64,
    honest: bool,
    /// An ordinary fault is in progress (the clock not yet corrected).
    disturbed: bool,
    /// Invariant 1 holds from this running time on.
    quiet_from: tokio::time::Instant,
    resumed_at: Option<tokio::time::Instant>,
    behind_since: Option<tokio::time::Instant>,
    /// Restarts and reboots so far: each may lose up to a minute of trusted time.
    restarts: i64,
    /// The running monitor's events, and the alert counts the oracle keeps for it.
    events: Option<tokio::sync::broadcast::Receiver<iosetu_license::LicenseEvent>>,
    alerts: Alerts,
    /// Whether the monitor keeps a state file. Without one, a restart is a fresh start
    /// (DESIGN: out of reach offline), so invariants 2 and 3 hold until the first.
    with_state: bool,
}

impl World {
    /// How far trusted time may lag true time: the persist interval, per run.
    fn allowed_lag(&self) -> i64 {
        MINUTE * (1 + self.restarts)
    }

    fn true_now(&self) -> i64 {
        self.origin + self.clock.monotonic().as_secs() as i64
    }

    fn provisional(&self) -> bool {
        self.true_now() - self.boot_at < BOOT_WINDOW
    }

    fn sync_provisional(&self) {
        self.clock.set_provisional(self.provisional());
    }

    async fn start(&mut self) {
        if self.monitor.take().is_some() {
            self.restarts += 1;
        }
        let mut builder = builder(&self.clock, LicenseSource::File(self.license.clone()))
            .grace_period(Duration::from_secs(GRACE as u64))
            .watch_file(false)
            .file_poll_interval(None);
        if self.with_state {
            builder = builder.state_file(&self.state);
        }
        self.events = Some(builder.subscribe());
        self.alerts = Alerts {
            started: tokio::time::Instant::now(),
            ..Alerts::default()
        };
        self.monitor = Some(builder.start().await.expect("start"));
    }

    fn monitor(&self) -> &LicenseMonitor {
        self.monitor.as_ref().expect("a monitor is running")
    }

    /// Lets every timer due now run, the checker's included, then returns.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    /// Lets `secs` seconds of running time pass (in one jump: the checker wakes once, as
    /// after any long sleep), flipping the boot window's end on the way.
    async fn run(&mut self, mut secs: u64) {
        if self.provisional() {
            let left = (self.boot_at + BOOT_WINDOW - self.true_now()).max(0) as u64;
            if secs >= left {
                tokio::time::advance(Duration::from_secs(left)).await;
                Self::settle().await;
                self.sync_provisional();
                secs -= left;
            }
        }
        tokio::time::advance(Duration::from_secs(secs)).await;
        Self::settle().await;
        self.sync_provisional();
    }

    fn set_offset(&mut self, offset: i64) {
        self.clock.jump_wall(offset - self.offset);
        self.offset = offset;
    }

    fn write(&mut self, lic: Lic) {
        let now = self.true_now();
        let window = |nbf: Option<i64>, exp: i64| {
            let mut c = Claims::new("Acme", exp);
            c.nbf = nbf;
            c
        };
        let claims: Vec<Claims> = match lic {
            Lic::Valid | Lic::WithGarbage => vec![window(None, T0 + 6 * HOUR)],
            Lic::Renewed => vec![window(None, T0 + 12 * HOUR)],
            Lic::IatAhead(ahead) => {
                let mut c = window(None, now + 8 * HOUR);
                c.iat = Some(now + ahead);
                vec![c]
            }
            Lic::Expired => vec![window(None, T0 - 3 * HOUR)],
            Lic::WithRenewal => vec![
                window(None, T0 + 6 * HOUR),
                window(Some(T0 + 5 * HOUR), T0 + 18 * HOUR),
            ],
            Lic::Held => vec![window(Some(T0 + 2 * HOUR), T0 + 20 * HOUR)],
            Lic::Garbage | Lic::Deleted => Vec::new(),
        };
        let mut lines: Vec<String> = claims.iter().map(|c| signer().sign(c)).collect();
        if matches!(lic, Lic::WithGarbage | Lic::Garbage) {
            lines.push("not.a.license".into());
        }
        if matches!(lic, Lic::Deleted) {
            let _ = std::fs::remove_file(&self.license);
        } else {
            std::fs::write(&self.license, lines.join("\n") + "\n").unwrap();
        }
        for c in &claims {
            self.bound = self.bound.max(c.exp + GRACE);
        }
        self.in_source = claims;
    }

    /// The oracle: whether the source gives a valid license at true time `now`, with
    /// margins (a minute after a window opens, ten minutes before the coverage ends).
    fn licensed_at(&self, now: i64) -> bool {
        let start = |c: &Claims| c.nbf.unwrap_or(i64::MIN);
        let Some(mut end) = self
            .in_source
            .iter()
            .filter(|c| start(c).saturating_add(MINUTE) <= now && now < c.exp)
            .map(|c| c.exp)
            .max()
        else {
            return false;
        };
        // Windows that start within the coverage extend it.
        while let Some(later) = self
            .in_source
            .iter()
            .filter(|c| start(c) <= end && c.exp > end)
            .map(|c| c.exp)
            .max()
        {
            end = later;
        }
        now < end - 10 * MINUTE
    }

    /// A process is up at least a minute after a resume before it restarts: time
    /// suspended and never seen by a running checker is downtime, which no offline check
    /// can measure (DESIGN: the attacker's gain is bounded by what the service saw).
    async fn up_a_minute(&mut self) {
        if self
            .resumed_at
            .is_some_and(|r| r.elapsed() < Duration::from_secs(MINUTE as u64))
        {
            self.run(MINUTE as u64).await;
        }
    }

    /// Marks the end of an ordinary fault: invariant 1 holds again 60 s on.
    fn calm(&mut self, after: u64) {
        self.disturbed = false;
        self.quiet_from = tokio::time::Instant::now() + Duration::from_secs(after);
    }

    async fn step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match *step {
            Step::Run(secs) => self.run(secs).await,
            Step::Jitter(offset) => {
                // Around true time, or around where an uncorrected fault left the wall.
                if !self.disturbed {
                    self.set_offset(offset);
                }
                self.run(30).await;
            }
            Step::AheadFor { ahead, mut secs } => {
                if self.provisional() {
                    // NTP has the clock right within ten minutes of the boot window's
                    // end: a fault in progress then is corrected by that time.
                    let window = (self.boot_at + BOOT_WINDOW - self.true_now()).max(0);
                    secs = secs.min((window + 10 * MINUTE) as u64);
                }
                self.set_offset(self.offset + ahead);
                self.disturbed = true;
                self.run(secs).await;
                self.observe().await?;
                self.set_offset(self.offset - ahead);
                self.calm(60);
                // Once corrected, NTP keeps it right for a while: the checker sees it.
                self.run(2 * MINUTE as u64).await;
            }
            Step::Suspend(secs) => {
                self.clock.suspend(Duration::from_secs(secs));
                self.sync_provisional();
                self.resumed_at = Some(tokio::time::Instant::now());
                self.calm(60);
                // Observed as soon as the checker's sampling bound says it must be right.
                self.run(61).await;
            }
            Step::Reboot { rtc, correct_after } => {
                self.up_a_minute().await;
                self.monitor = None;
                self.restarts += 1;
                let now = self.true_now();
                let keep = if self.honest { 0 } else { self.offset };
                self.clock = TestClock::new(at(now + keep + rtc));
                self.origin = now;
                self.offset = keep + rtc;
                self.boot_at = now;
                self.sync_provisional();
                self.resumed_at = Some(tokio::time::Instant::now());
                self.start().await;
                match correct_after {
                    Some(after) => {
                        self.disturbed = true;
                        self.run(after).await;
                        self.observe().await?;
                        self.set_offset(keep);
                        self.calm(60);
                        self.run(1).await;
                    }
                    None => self.run(1).await,
                }
            }
            Step::Restart => {
                self.up_a_minute().await;
                self.start().await;
                self.calm(0);
            }
            Step::Swap(lic) => {
                self.write(lic);
                self.monitor().check_now().await;
                self.calm(0);
            }
            Step::Storm(n) => {
                for _ in 0..n {
                    self.monitor().check_now().await;
                }
            }
            Step::SetWall(secs) => {
                self.set_offset(self.offset + secs);
                self.run(1).await;
            }
            Step::Creep { step, every, times } => {
                for _ in 0..times {
                    self.run(every).await;
                    self.set_offset(self.offset + step);
                }
                self.run(1).await;
            }
        }
        Ok(())
    }

    /// Checks the three invariants now.
    async fn observe(&mut self) -> Result<(), TestCaseError> {
        Self::settle().await;
        let verdict = self.monitor().verdict();
        let now = self.true_now();
        let running = tokio::time::Instant::now();
        let provisional = self.clock.provisional();
        let resumed_recently = self
            .resumed_at
            .is_some_and(|r| running.duration_since(r) < Duration::from_secs(61));

        // 1. Honest customers.
        if self.honest && !self.disturbed && running >= self.quiet_from && self.licensed_at(now) {
            prop_assert_eq!(
                verdict.state,
                LicenseState::Valid,
                "a valid license was refused at true time T0{:+} (wall {:+}): {:?}",
                now - T0,
                self.offset,
                verdict
            );
        }

        let in_scope = self.with_state || self.restarts == 0;
        // 2. Casual tamperers.
        if in_scope && now > self.bound + self.allowed_lag() && !provisional && !resumed_recently {
            prop_assert!(
                !verdict.admits(),
                "admitted at true time T0{:+}, past every exp + grace (T0{:+}) + {} s \
                 (wall {:+}): {:?}",
                now - T0,
                self.bound - T0,
                self.allowed_lag(),
                self.offset,
                verdict
            );
        }

        // 4. Alerts do not flood: each expiry alert fires when its band is entered (at most
        // four bands, afresh after each license loaded or grace exited) and repeats at most
        // once per check interval (one hour), whatever storms of check_now came in between.
        if let Some(events) = &mut self.events {
            loop {
                match events.try_recv() {
                    Ok(event) => match event.name() {
                        "license.loaded" | "license.grace_mode_exited" => self.alerts.fresh += 1,
                        name if name.starts_with("license.expiring_") => self.alerts.expiring += 1,
                        _ => {}
                    },
                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                        prop_assert!(false, "a subscriber lost {} events", n);
                    }
                    Err(_) => break,
                }
            }
            let hours = running.duration_since(self.alerts.started).as_secs() / HOUR as u64;
            let bound = 4 * (self.alerts.fresh + 1) + hours + 1;
            prop_assert!(
                self.alerts.expiring <= bound,
                "{} expiry alerts in {} h of this run (bound {})",
                self.alerts.expiring,
                hours,
                bound
            );
        }

        // 3. A wall clock kept behind is reported.
        if in_scope && !provisional && self.offset < -(self.allowed_lag() + 10) {
            let since = *self.behind_since.get_or_insert(running);
            if running.duration_since(since) >= Duration::from_secs(61) {
                prop_assert_eq!(
                    verdict.reason.clone(),
                    Some(GraceReason::ClockManipulation),
                    "wall {:+} s behind true time, not reported: {:?}",
                    self.offset,
                    verdict
                );
            }
        } else {
            self.behind_since = None;
        }
        Ok(())
    }
}

fn run_case(honest: bool, with_state: bool, steps: &[Step]) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir_in(scratch()).unwrap();
        let clock = TestClock::new(at(T0));
        let mut world = World {
            license: dir.path().join("license.key"),
            state: dir.path().join("state.json"),
            _dir: dir,
            clock,
            origin: T0,
            offset: 0,
            // The host has been up for an hour: readings are firm.
            boot_at: T0 - HOUR,
            monitor: None,
            in_source: Vec::new(),
            bound: i64::MIN,
            honest,
            disturbed: false,
            quiet_from: tokio::time::Instant::now(),
            resumed_at: None,
            behind_since: None,
            restarts: 0,
            events: None,
            alerts: Alerts::default(),
            with_state,
        };
        world.write(Lic::Valid);
        world.start().await;
        world.observe().await?;
        for step in steps {
            world.step(step).await?;
            world.observe().await?;
        }
        Ok(())
    })
}

/// Where the cases' files go: memory when there is a tmpfs, so thousands of fsyncs of the
/// state file cost nothing.
fn scratch() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

#[test]
fn trusted_time_holds_both_invariants_over_random_schedules() {
    let cases = std::env::var("IOSETU_SHELL_SIM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let mut runner = TestRunner::new(Config {
        cases,
        // Failures found are replayed first on later runs: commit the file.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "tests/simulation.proptest-regressions",
            ),
        )),
        ..Config::default()
    });
    let result = runner.run(
        &(schedule(), any::<bool>()),
        |((honest, steps), with_state)| run_case(honest, with_state, &steps),
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
