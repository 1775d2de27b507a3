//! The judge's simulation: hundreds of thousands of random schedules, driven on the judge
//! directly (no runtime, no I/O), each checked against an oracle that knows true time.
//!
//! A schedule moves a simulated host (true time, a wall clock an operator can set, a
//! monotonic clock, a boot window, a clock that drifts) and a license source through
//! ordinary faults and tampering, and wakes the judge as the checker would: at the
//! instants it asks for, at each periodic check, on every change of the source and at
//! every step. After every wake or step it checks:
//!
//! 1. *Honest customers*: in a schedule of ordinary faults only, whenever the source gives
//!    a valid license at true time (a window holds it, a minute after it opened and ten
//!    minutes before its coverage ends), the verdict is `Valid` within 60 s of the last
//!    ordinary fault ending.
//! 2. *Casual tamperers*: once true time is past `exp` + grace + the allowed lag for every
//!    license ever in the source, nothing is admitted (outside a boot window, and 60 s
//!    after a resume), with a state file across restarts.
//!
//!    2'. *Conservation*: the seconds admitted at true times outside every license's
//!    window and grace (and the builder's grace after each time the source held no
//!    license in force) are summed over the schedule, and never exceed the allowances:
//!    the drift budget of each host boot, a minute (and a second of rounding) per
//!    restart, the downtime across reboots, the hour of an attestation's tolerance once
//!    one is in, and what a wall kept ahead borrowed (believed after 15 minutes, or at a
//!    restart across boots). A boot window and the 15 minutes confirming its first firm
//!    reading, and a minute after a resume, are not measured.
//! 3. *Reported*: a wall clock kept behind true time (beyond the allowed lag, outside a
//!    boot window) for 60 s is reported as `clock_manipulation`.
//! 4. *No alert floods*: expiry alerts fire when a band is entered and repeat at most once
//!    per check interval, whatever storms of checks come in between.
//! 5. *Adding a license never makes it worse*: a twin judge whose source also holds a
//!    validly signed license of the same customer, from some step on, is never worse at
//!    any wake (`Valid` > grace > cut-off, and in grace a later cut-off is better).
//! 6. *Lines are a set*: a twin judge whose source holds the same lines permuted and
//!    repeated reaches the same verdict at every wake.
//! 7. *Honest drift*: a clock that drifts up to 500 ppm without sync (the monotonic clock
//!    with it: one oscillator) and is then stepped back to true time by NTP never leaves
//!    `Valid`, across restarts.
//!
//! 8. *Vendor notices*: the vendor revokes licenses and attests true time in honest
//!    schedules, where a clock set far ahead across a restart leaves a wrong mark (a
//!    manipulation verdict nothing else cures); tamperers put back attestations issued
//!    earlier, with the clock set anywhere. An honest customer given a fresh attestation
//!    is `Valid` within 60 s (invariant 1, from the attestation on), a revoked license
//!    counts only until its revocation (invariants 1 and 2 judge it so), and no old
//!    attestation gains a tamperer time (invariant 2).
//!
//! The adversary draws every class of attack found so far: sub-second and sparse creeps at
//! any cadence relative to the checker's samples, forward jumps around held `nbf`s (while
//! running and across restarts), `iat`s days ahead, drift built up before the start and
//! across downtime (with and without a state file), a service started late after boot,
//! monotonic jumps within a process, twins adding another customer's license, superseding
//! renewals, failing state writes and junk in the notice source.
//!
//! `cargo test` runs 100,000 schedules in each of four tests (invariants 1 to 4 with 5,
//! 1 to 4 with 6, 7, and 1 to 4 with 8); `IOSETU_SIM_CASES=N cargo test --lib simulation`
//! runs N. The fuzz target `judge` drives the same world and oracles from bytes
//! (`decode.rs`).

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

mod decode;
#[cfg(test)]
mod tests;

pub(crate) use decode::run_bytes;

use std::collections::BTreeMap;

use super::{Judge, JudgeConfig, Line, NoticeLine, Observation, Read};
use crate::clock::Reading;
use crate::state::{PersistedState, StateProblem};
use crate::token::{Claims, LicenseError, Notice};
use crate::verdict::{GraceReason, LicenseState, Verdict};

const T0: i64 = 1_800_000_000;
const MINUTE: i64 = 60;
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;
const GRACE: i64 = HOUR;
const CHECK: i64 = HOUR;
const BOOT_WINDOW: i64 = 15 * MINUTE;
const NS: i128 = 1_000_000_000;

/// What an oracle found wrong, in words (the proptest runner and the fuzzer both report
/// it).
pub(crate) type Failure = String;

/// Fails the case with the message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($message:tt)+) => {
        if !$cond {
            return Err(format!($($message)+));
        }
    };
}

/// Fails the case with both values and the message unless they are equal.
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($message:tt)+) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            return Err(format!("{:?} != {:?}: {}", left, right, format!($($message)+)));
        }
    }};
}

/// What an operator (or the vendor) puts in the license source. Times are from T0.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Lic {
    /// Valid from before the start for six hours.
    Valid,
    /// A renewal: twelve hours.
    Renewed,
    /// Issued by a vendor whose clock is this many seconds fast: its `iat` and its `exp`
    /// are that far ahead (minutes, or days). Honest: the license is judged at its own
    /// `iat` and ends when the vendor meant it to, in true time.
    IatAhead(i64),
    /// Expired three hours before the start.
    Expired,
    /// The six-hour license and its renewal installed ahead (five hours in to eighteen).
    WithRenewal,
    /// The six-hour license and a line of garbage.
    WithGarbage,
    /// Only a license held for later: from two hours in to twenty.
    Held,
    /// A license that ends two hours in, and its renewal held for a day later (from 30
    /// hours in to 60): a gap a clock set ahead must not reach across early.
    HeldGap,
    /// A license to 40 hours in, and its renewal held from 20 hours in (to 60), which
    /// supersedes it: the license ends where the renewal starts, never earlier.
    Superseding,
    /// Finding 2: a contract with four hours of signed grace ending at six hours, and a
    /// trial add-on (no grace) that ends an hour later.
    ContractAndTrial,
    /// Two licenses without grace, the second starting a second after the first ends.
    OneSecondGap,
    /// Finding 3: an expired line naming the customer, then the renewal under a renamed
    /// customer.
    Renamed,
    Garbage,
    Deleted,
}

fn claims(customer: &str, nbf: Option<i64>, exp: i64, grace: Option<i64>) -> Claims {
    let mut c = Claims::new(customer, exp);
    c.nbf = nbf;
    c.grace_period_seconds = grace.map(|g| g as u64);
    // What a vendor revokes by: one id per license.
    c.jti = Some(format!("{customer}:{nbf:?}:{exp}:{grace:?}"));
    c
}

impl Lic {
    /// The verified licenses (and whether a garbage line goes with them).
    fn licenses(self, now: i64) -> (Vec<Claims>, bool) {
        let acme = |nbf, exp, grace| claims("Acme", nbf, exp, grace);
        match self {
            Lic::Valid | Lic::WithGarbage => (
                vec![acme(None, T0 + 6 * HOUR, None)],
                self == Lic::WithGarbage,
            ),
            Lic::Renewed => (vec![acme(None, T0 + 12 * HOUR, None)], false),
            Lic::IatAhead(ahead) => {
                let mut c = acme(None, now + ahead + 8 * HOUR, None);
                c.iat = Some(now + ahead);
                (vec![c], false)
            }
            Lic::Expired => (vec![acme(None, T0 - 3 * HOUR, None)], false),
            Lic::WithRenewal => (
                vec![
                    acme(None, T0 + 6 * HOUR, None),
                    acme(Some(T0 + 5 * HOUR), T0 + 18 * HOUR, None),
                ],
                false,
            ),
            Lic::Held => (vec![acme(Some(T0 + 2 * HOUR), T0 + 20 * HOUR, None)], false),
            Lic::Superseding => {
                let current = acme(None, T0 + 40 * HOUR, None);
                let mut renewal = acme(Some(T0 + 20 * HOUR), T0 + 60 * HOUR, None);
                renewal.supersedes = current.jti.iter().cloned().collect();
                (vec![current, renewal], false)
            }
            Lic::HeldGap => (
                vec![
                    acme(None, T0 + 2 * HOUR, None),
                    acme(Some(T0 + 30 * HOUR), T0 + 60 * HOUR, None),
                ],
                false,
            ),
            Lic::ContractAndTrial => (
                vec![
                    acme(None, T0 + 6 * HOUR, Some(4 * HOUR)),
                    acme(None, T0 + 7 * HOUR, Some(0)),
                ],
                false,
            ),
            Lic::OneSecondGap => (
                vec![
                    acme(None, T0 + 6 * HOUR, Some(0)),
                    acme(Some(T0 + 6 * HOUR + 1), T0 + 14 * HOUR, Some(0)),
                ],
                false,
            ),
            Lic::Renamed => (
                vec![
                    acme(None, T0 - HOUR, None),
                    claims("Acme Corporation", None, T0 + 10 * HOUR, None),
                ],
                false,
            ),
            Lic::Garbage => (Vec::new(), true),
            Lic::Deleted => (Vec::new(), false),
        }
    }

    /// How far the issuing vendor's clock was fast: the oracle judges its licenses by
    /// what the vendor meant, that much earlier.
    fn vendor_fast(self) -> i64 {
        match self {
            Lic::IatAhead(ahead) => ahead,
            _ => 0,
        }
    }
}

/// One line of a source: a license that verifies, or garbage.
#[derive(Debug, Clone)]
enum Entry {
    License(Arc<Claims>),
    Garbage,
}

/// The source as the host holds it.
#[derive(Debug, Clone)]
enum Content {
    Lines(Vec<Entry>),
    Deleted,
}

/// The license the twin of invariant 5 adds: the set's customer's, or another customer's
/// (a trial under a corrected name: the set's customer is chosen by the best verdict, so
/// the law holds across customers for the state and the cut-off), some signed by a vendor
/// whose clock was days fast (a signed `iat` is a floor for judging that license only).
///
/// Another customer's license is added in honest schedules only: with a clock set back,
/// the episode a twin went through while another customer's set was chosen (its anchors,
/// its manipulation-grace) is its own, and two such histories are not comparable.
fn added(choice: u8, customer: &str, honest: bool) -> Claims {
    let other = if honest && choice / 8 % 2 == 1 {
        "Acme Corporation"
    } else {
        customer
    };
    let acme = |nbf, exp, grace| claims(other, nbf, exp, grace);
    match choice % 8 {
        0 => acme(None, T0 + 9 * HOUR, None),
        1 => acme(None, T0 + 7 * HOUR, Some(0)),
        2 => acme(Some(T0 + 6 * HOUR + 1), T0 + 16 * HOUR, Some(0)),
        3 => acme(None, T0 - 2 * HOUR, Some(2 * HOUR)),
        4 => acme(None, T0 + 5 * HOUR, Some(7 * DAY)),
        5 => {
            let mut c = acme(None, T0 + 3 * DAY + 9 * HOUR, None);
            c.iat = Some(T0 + 3 * DAY);
            c
        }
        6 => {
            let mut c = acme(None, T0 + 2 * HOUR, None);
            c.iat = Some(T0 + DAY);
            c
        }
        _ => acme(Some(T0 + 30 * HOUR), T0 + 40 * HOUR, None),
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// Let time run.
    Run(u64),
    /// Ordinary: NTP keeps the wall within two seconds of true time.
    Jitter(i64),
    /// Ordinary: the wall jumps ahead (VM migration, a bad step) and is corrected later.
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
    /// The license source is replaced, and the judge reads it.
    Swap(Lic),
    /// `check_now` (SIGHUP) this many times at once.
    Storm(u8),
    /// Tampering: `date -s` by this many seconds.
    SetWall(i64),
    /// Tampering: the wall moves `step_ms` milliseconds every `every_ms`, `times` times
    /// (sub-second steps, at any cadence), and the checker samples the clocks after every
    /// `sample`-th step only (never less than once a minute, as the shell does).
    Creep {
        step_ms: i64,
        every_ms: u64,
        times: u32,
        sample: u8,
    },
    /// A fault or tampering: the monotonic clock alone jumps by this many seconds within a
    /// running process (a checkpoint restored, a broken clock source).
    MonoJump(i64),
    /// An honest fault: writes of the state file fail for this many seconds (a full disk),
    /// then the process restarts.
    DiskFull(u64),
    /// An honest fault: the notice source holds junk beside the notice.
    NoticeJunk,
    /// Honest: the process is down for `secs` while the host's clock drifts at `ppm`
    /// unsynchronized, then starts again (with or without a state file).
    Downtime { secs: u64, ppm: i64 },
    /// Honest: the host reboots with its clock `rtc` off, the service starts `start_after`
    /// seconds into the boot (within half an hour), and NTP puts the clock right
    /// `correct_after` seconds into it (later, still within half an hour).
    LateStart {
        rtc: i64,
        start_after: u64,
        correct_after: u64,
    },
    /// Tampering: the wall set `ahead` across a restart, kept there `secs` (under 15
    /// minutes), then set back across another restart: a held renewal must not come
    /// into force for it, restart after restart.
    AheadAcrossRestart { ahead: i64, secs: u64 },
    /// Honest drift: the clock (wall and monotonic) runs `ppm` fast (or slow) for `secs`
    /// seconds of monotonic time without sync.
    Drift { ppm: i64, secs: u64 },
    /// NTP steps the wall back (or forward) to true time.
    Sync,
    /// The vendor revokes the licenses in the source now (a notice listing every jti it
    /// revoked so far), and the customer installs it.
    Revoke,
    /// A support case: the vendor attests the time by its clock, up to five minutes fast
    /// (listing every jti it revoked so far), the customer sets its clock right and
    /// installs the notice.
    Attest { fast: i64 },
    /// Tampering: a notice the vendor issued earlier is put back in the source.
    Replay(usize),
    /// Honest but unlucky: the wall `ahead` seconds fast across a restart, for `secs`
    /// (long enough that the mark is confirmed there and stored), then put right. The
    /// clock then reads as set back: a wrong manipulation verdict that only a vendor's
    /// attestation cures.
    WrongMark { ahead: i64, secs: u64 },
}

/// The simulated host: true time, a wall clock, a monotonic clock, all in nanoseconds.
#[derive(Debug, Clone)]
struct Host {
    true_ns: i128,
    /// Wall minus true time.
    off_ns: i128,
    mono_ns: i128,
    /// How fast the oscillator runs (both clocks), in parts per million.
    ppm: i64,
    /// True time (seconds) when the host booted.
    boot_at: i64,
    /// How many times the host booted (its boot identity, for the state file's budget
    /// and for carrying the stored mark on by the boot's age).
    boot: u32,
    /// Running time of the simulation (what a runtime's timers see: not suspends).
    running_ns: i128,
}

impl Host {
    fn true_secs(&self) -> i64 {
        self.true_ns.div_euclid(NS) as i64
    }

    fn provisional(&self) -> bool {
        self.true_secs() - self.boot_at < BOOT_WINDOW
    }

    /// Moves the monotonic clock by `d` nanoseconds: the wall moves with it (one
    /// oscillator), true time at the oscillator's error.
    fn tick(&mut self, d: i128) {
        let true_d = d * 1_000_000 / (1_000_000 + self.ppm as i128);
        self.mono_ns += d;
        self.true_ns += true_d;
        self.off_ns += d - true_d;
    }

    fn reading(&self) -> Reading {
        let wall = self.true_ns + self.off_ns;
        let wall = if wall >= 0 {
            UNIX_EPOCH + Duration::from_nanos(wall as u64)
        } else {
            UNIX_EPOCH - Duration::from_nanos(wall.unsigned_abs() as u64)
        };
        Reading {
            wall,
            mono: Duration::from_nanos(self.mono_ns.max(0) as u64),
            provisional: self.provisional(),
            boot_age: Some(Duration::from_nanos(self.mono_ns.max(0) as u64)),
        }
    }
}

/// How a twin's source differs from the reference's.
#[derive(Debug, Clone, Copy)]
enum Twin {
    /// Invariant 5: this license is added to every content from step `from` on.
    Adds { license: u8, from: usize },
    /// Invariant 6: the lines are permuted (by this seed) and some repeated.
    Permutes(u64),
}

/// One process: a judge and what the shell around it keeps.
struct Proc {
    judge: Judge,
    verdict: Arc<Verdict>,
    /// The state file.
    stored: Option<PersistedState>,
    /// Expiry alerts seen since this process started, and the events after which a band
    /// may be entered afresh.
    expiring: u64,
    fresh: u64,
    started_ns: i128,
    /// The monotonic reading at the start: the judge counts check intervals by it.
    started_mono: i128,
}

fn config(with_state: bool, boot: u32) -> JudgeConfig {
    JudgeConfig {
        grace_period: Duration::from_secs(GRACE as u64),
        drain_period: Duration::from_secs(60),
        check_interval: Duration::from_secs(CHECK as u64),
        fail_closed: false,
        built_at: None,
        source: "file:/sim/license.key".into(),
        instance_settling: Duration::from_secs(120),
        state_file: with_state,
        boot_id: Some(format!("boot-{boot}")),
    }
}

/// A tiny deterministic generator for the permutations of invariant 6.
fn next_random(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn lines_of(entries: &[Entry]) -> Vec<Line> {
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| match entry {
            Entry::License(c) => Line {
                line: i + 1,
                print: format!(
                    "{}:{:?}:{}:{:?}:{:?}",
                    c.customer, c.nbf, c.exp, c.grace_period_seconds, c.iat
                ),
                verified: Ok(Arc::clone(c)),
            },
            Entry::Garbage => Line {
                line: i + 1,
                print: "garbage".into(),
                verified: Err(LicenseError::Malformed {
                    detail: "not a token".into(),
                }),
            },
        })
        .collect()
}

fn rank(state: LicenseState) -> u8 {
    match state {
        LicenseState::Valid => 0,
        LicenseState::Grace => 1,
        _ => 2,
    }
}

type ReadKey = ((u64, usize, Option<String>), Read);

/// The simulated world: the host, the source, the reference process and its twin.
struct World {
    host: Host,
    content: Content,
    procs: Vec<Proc>,
    twin: Option<Twin>,
    step: usize,
    with_state: bool,
    honest: bool,
    /// Invariant 7 holds at every wake.
    drift: bool,
    next_full_ns: i128,
    /// The latest `exp` + grace of any license ever in the source.
    bound: i64,
    /// The licenses in the source now, and what the source was made from.
    in_source: Vec<Claims>,
    /// Each process's last read, by the source's generation, the step and the customer.
    generation: u64,
    reads: [Option<ReadKey>; 2],
    lic: Lic,
    disturbed: bool,
    quiet_from: i128,
    resumed_at: Option<i128>,
    behind_since: Option<i128>,
    restarts: i64,
    /// The vendor's notices so far (each carries every revocation before it), the one in
    /// the source now, and the revocations (jti, from when).
    issued: Vec<Arc<Notice>>,
    notice: Option<Arc<Notice>>,
    revoked: BTreeMap<String, i64>,
    /// Every license ever in the source, for the bound of invariant 2.
    ever: Vec<Claims>,
    /// The product's grace for a source with no license at all, from when it was written
    /// that way: a cut-off it earned stands (a license never brings it earlier), so it
    /// bounds invariant 2 too, also after a revocation.
    unlicensed_bound: i64,
    /// A wrong mark (see `Step::WrongMark`) stands until the vendor attests the time.
    mark_wrong: bool,
    /// Invariant 5 holds while (a) the reference's set has never been empty: a service
    /// with no license at all gets the builder's grace (the product text), one with only
    /// an expired license is past its cut-off (never past `exp` + grace), and there the
    /// two rules pull apart; and (b) no read after the addition kept the last good set
    /// (a source wholly bad, or holding only licenses for later): with the added line such
    /// a read is good, and a good read is the set.
    law5_in_scope: bool,
    /// The conservation invariant's ledger. `windows`: when the product may admit, in
    /// true seconds (each license ever in the source from its start to its end, or
    /// revocation, plus its grace; each time the source held no license in force, the
    /// builder's grace from then), merged. `gain`: nanoseconds admitted outside them while
    /// measured (not in a boot window, not within a minute of a resume, and with a state
    /// file across restarts). `last_true`: where the last measured interval ended (none
    /// while no process runs).
    windows: Vec<(i64, i64)>,
    merged: Vec<(i128, i128)>,
    gain: i128,
    last_true: Option<i128>,
    /// The honest drift budgets of the boots that ended (nanoseconds).
    past_boots_budget: i128,
    /// The largest wall offset ahead of true time that held for 15 minutes (borrowed
    /// time: a clock kept ahead uses its licenses up that much earlier), and since when
    /// (the host's monotonic clock) the wall has been more than 5 s ahead.
    confirmed_ahead: i64,
    ahead_since: Option<i128>,
    /// State-file writes fail until this running time.
    disk_full_until: Option<i128>,
    /// A junk line in the notice source.
    junk_notice: bool,
    /// The time the service was down across reboots (seconds).
    reboot_downtime: i64,
}

impl World {
    fn new(honest: bool, with_state: bool, drift: bool, twin: Option<Twin>) -> Self {
        let host = Host {
            true_ns: T0 as i128 * NS,
            off_ns: 0,
            mono_ns: 3 * HOUR as i128 * NS,
            ppm: 0,
            // The host has been up for an hour: readings are firm.
            boot_at: T0 - 3 * HOUR,
            boot: 0,
            running_ns: 0,
        };
        let procs = (0..if twin.is_some() { 2 } else { 1 })
            .map(|_| Proc {
                judge: Judge::new(config(with_state, host.boot), host.reading()),
                verdict: Arc::new(crate::verdict::judge(&[], UNIX_EPOCH, Duration::ZERO)),
                stored: None,
                expiring: 0,
                fresh: 0,
                started_ns: 0,
                started_mono: host.mono_ns,
            })
            .collect();
        Self {
            host,
            content: Content::Deleted,
            procs,
            twin,
            step: 0,
            with_state,
            honest,
            drift,
            next_full_ns: 0,
            bound: i64::MIN,
            in_source: Vec::new(),
            generation: 0,
            reads: [None, None],
            lic: Lic::Deleted,
            disturbed: false,
            quiet_from: 0,
            resumed_at: None,
            behind_since: None,
            restarts: 0,
            issued: Vec::new(),
            notice: None,
            revoked: BTreeMap::new(),
            ever: Vec::new(),
            unlicensed_bound: i64::MIN,
            mark_wrong: false,
            law5_in_scope: true,
            windows: Vec::new(),
            merged: Vec::new(),
            gain: 0,
            last_true: None,
            past_boots_budget: 0,
            confirmed_ahead: 0,
            ahead_since: None,
            disk_full_until: None,
            junk_notice: false,
            reboot_downtime: 0,
        }
    }

    /// A license as the oracle judges it: ended at its revocation, if any.
    fn as_revoked(&self, c: &Claims) -> Claims {
        let mut c = c.clone();
        let revoked = |jti: &String| self.revoked.get(jti).copied();
        // A license in the source that supersedes it ends it where it starts, unless it
        // was itself revoked by then.
        let superseded = self
            .in_source
            .iter()
            .filter(|s| c.jti.as_ref().is_some_and(|j| s.supersedes.contains(j)))
            .filter_map(|s| {
                let start = s.nbf.or(s.iat)?;
                let own = s.jti.as_ref().and_then(revoked);
                own.is_none_or(|r| r > start).then_some(start)
            })
            .min();
        c.revoked_at = match (c.jti.as_ref().and_then(revoked), superseded) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        c
    }

    /// Merges the windows of the conservation ledger (licenses ended at revocations).
    fn recompute_windows(&mut self) {
        let mut all: Vec<(i128, i128)> = self
            .ever
            .iter()
            .map(|c| {
                let grace = c.grace_period_seconds.map_or(GRACE, |g| g as i64);
                let c = self.as_revoked(c);
                let start = c.nbf.unwrap_or(i64::MIN / 4);
                (start as i128 * NS, (c.ends() + grace) as i128 * NS)
            })
            .chain(
                self.windows
                    .iter()
                    .map(|&(a, b)| (a as i128 * NS, b as i128 * NS)),
            )
            .filter(|(a, b)| a < b)
            .collect();
        all.sort_unstable();
        let mut merged: Vec<(i128, i128)> = Vec::new();
        for (a, b) in all {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.merged = merged;
    }

    /// How much of the true interval `[from, to)` (nanoseconds) lies outside the windows.
    fn outside(&self, from: i128, to: i128) -> i128 {
        if to <= from {
            return 0;
        }
        let covered: i128 = self
            .merged
            .iter()
            .map(|&(a, b)| (b.min(to) - a.max(from)).max(0))
            .sum();
        to - from - covered
    }

    /// The honest drift budget of the current boot, by its age as the judge sees it (the
    /// host's monotonic clock; nanoseconds).
    fn boot_budget(&self) -> i128 {
        let age = self.host.mono_ns.clamp(0, 30 * DAY as i128 * NS);
        5 * NS + age / 2_000
    }

    /// What a schedule may gain, in nanoseconds: the drift budget of each boot, a minute
    /// per restart, the vendor's hour of tolerance once an attestation is in, and what a
    /// clock kept ahead borrowed.
    fn allowance(&self) -> i128 {
        let tolerance = if self.procs[0].judge.notices.seq.is_empty() {
            0
        } else {
            super::time::ATTESTATION_TOLERANCE_SECS
        };
        // (A second a boot for rounding: the judge counts the boot's age by its monotonic
        // clock, which a drifting oscillator runs a little fast.)
        // And two seconds a restart: the state file keeps the mark and the boot's age in
        // whole seconds, and a restart on the same boot carries one on by the other.
        let boots = i128::from(self.host.boot) + 1;
        self.past_boots_budget
            + self.boot_budget()
            + (boots + 2 * i128::from(self.restarts as i32)) * NS
            + (self.allowed_lag() + tolerance + self.confirmed_ahead) as i128 * NS
    }

    /// Books the interval since the last wake: admitted time outside the windows is gain.
    fn account(&mut self) {
        let now = self.host.true_ns;
        let measured = (self.with_state || self.restarts == 0)
            && !self.host.provisional()
            && self
                .resumed_at
                .is_none_or(|r| self.host.running_ns - r >= 61 * NS);
        // (The boot window is an allowance of its own: a provisional reading alone never
        // cuts a service off, so the part of an interval inside it is not measured.)
        // (And the 15 minutes that confirm the first firm reading after it: until then a
        // step back to the stored mark is a correction, so its wall may stand ahead.)
        let window_end = (self.host.boot_at + 2 * BOOT_WINDOW) as i128 * NS;
        if let Some(from) = self.last_true
            && measured
            && self.procs[0].verdict.admits()
        {
            self.gain += self.outside(from.max(window_end), now);
        }
        self.last_true = Some(now);
        // A wall kept more than 5 s ahead for 15 minutes of the monotonic clock (a suspend
        // counts: the judge's clock runs through it) is believed: borrowed time.
        if self.host.off_ns > 5 * NS {
            let mono = self.host.mono_ns;
            // (A monotonic clock that went back, a reboot: counted from now.)
            let since = match self.ahead_since {
                Some(since) if since <= mono => since,
                _ => *self.ahead_since.insert(mono),
            };
            if mono - since >= BOOT_WINDOW as i128 * NS {
                self.confirmed_ahead = self.confirmed_ahead.max(self.offset_secs());
            }
        } else {
            self.ahead_since = None;
        }
    }

    /// The latest `exp` + grace of any license ever in the source, each ended at its
    /// revocation.
    fn recompute_bound(&mut self) {
        self.recompute_windows();
        self.bound = self
            .ever
            .iter()
            .map(|c| {
                let grace = c.grace_period_seconds.map_or(GRACE, |g| g as i64);
                self.as_revoked(c).ends() + grace
            })
            .max()
            .unwrap_or(i64::MIN)
            .max(self.unlicensed_bound);
    }

    /// The vendor signs a notice for the set's customer, listing every revocation so
    /// far, and it replaces the notice line in the source.
    fn issue(&mut self, time: bool, fast: i64) {
        let now = self.host.true_secs() + fast;
        let customer = self.procs[0]
            .judge
            .reads
            .set
            .first()
            .map_or_else(|| "Acme".to_owned(), |m| m.claims.customer.clone());
        let seq = self
            .issued
            .iter()
            .map(|n| n.seq)
            .max()
            .unwrap_or(0)
            .max(self.issued.len() as u64)
            + 1;
        let mut notice = Notice::new(customer, now, seq);
        notice.revoke = self.revoked.keys().cloned().collect();
        if time {
            notice.time = Some(now);
            notice.exp = Some(now + 3 * DAY);
        }
        let notice = Arc::new(notice);
        self.issued.push(Arc::clone(&notice));
        self.notice = Some(notice);
        self.generation += 1;
    }

    /// A minute per restart, and the time the service was down across a reboot: nothing
    /// offline measures that downtime (the boot's clock starts again), so a clock behind
    /// by it at the start is believed until NTP steps it forward, and that step is then
    /// unconfirmed for 15 minutes.
    fn allowed_lag(&self) -> i64 {
        MINUTE * (1 + self.restarts) + self.reboot_downtime
    }

    /// What process `i` reads (built once per content and step: reads are many).
    fn read(&mut self, i: usize) -> Read {
        let key = (
            self.generation,
            self.step,
            self.procs[0]
                .judge
                .reads
                .set
                .first()
                .map(|m| m.claims.customer.clone()),
        );
        if let Some((k, read)) = &self.reads[i]
            && *k == key
        {
            return read.clone();
        }
        let read = self.build_read(i);
        self.reads[i] = Some((key, read.clone()));
        read
    }

    fn build_read(&self, i: usize) -> Read {
        let mut entries = match &self.content {
            Content::Deleted => Vec::new(),
            Content::Lines(entries) => entries.clone(),
        };
        if i == 1 {
            match self.twin {
                Some(Twin::Adds { license, from }) if self.step >= from => {
                    let customer = self.procs[0]
                        .judge
                        .reads
                        .set
                        .first()
                        .map_or("Acme", |m| m.claims.customer.as_str());
                    entries.push(Entry::License(Arc::new(added(
                        license,
                        customer,
                        self.honest,
                    ))));
                }
                Some(Twin::Permutes(seed)) => {
                    let mut seed = seed | 1;
                    let n = entries.len();
                    for k in (1..n).rev() {
                        let j = (next_random(&mut seed) % (k as u64 + 1)) as usize;
                        entries.swap(k, j);
                    }
                    for k in 0..n {
                        if next_random(&mut seed).is_multiple_of(3) {
                            entries.push(entries[k].clone());
                        }
                    }
                }
                _ => {}
            }
        }
        if entries.is_empty() {
            return Read::Failed(LicenseError::Missing {
                detail: "the license source holds no token".into(),
            });
        }
        let mut notices: Vec<NoticeLine> = self
            .notice
            .iter()
            .map(|n| NoticeLine {
                line: entries.len() + 1,
                print: format!("notice-{}", n.seq),
                verified: Ok(Arc::clone(n)),
            })
            .collect();
        if self.junk_notice {
            notices.push(NoticeLine {
                line: entries.len() + 2,
                print: "junk-notice".into(),
                verified: Err(LicenseError::Malformed {
                    detail: "not a notice".into(),
                }),
            });
        }
        Read::Lines(lines_of(&entries), notices)
    }

    /// Wakes every process at the host's current reading.
    fn wake(&mut self, full: bool) -> Result<(), Failure> {
        if full
            && matches!(self.twin, Some(Twin::Adds { from, .. }) if self.step >= from)
            && matches!(
                self.lic,
                Lic::Garbage | Lic::Deleted | Lic::Held | Lic::HeldGap
            )
        {
            // A read that keeps the last good set (wholly bad, or only licenses held for
            // later) turns good with the added line, and a good read replaces the set:
            // outside the law (see `law5_in_scope`).
            self.law5_in_scope = false;
        }
        self.account();
        let reading = self.host.reading();
        for i in 0..self.procs.len() {
            let observation = if full {
                Observation::Full(self.read(i))
            } else {
                Observation::Transition
            };
            let proc = &mut self.procs[i];
            proc.verdict = proc.judge.handle_check(reading, observation, false);
            while let Some(event) = proc.judge.poll_event() {
                match event.name() {
                    "license.loaded" | "license.grace_mode_exited" => proc.fresh += 1,
                    name if name.starts_with("license.expiring_") => proc.expiring += 1,
                    _ => {}
                }
            }
        }
        // A twin's state file is written whenever the reference's is (and the other way
        // round), so that restarts find both at the same mark: only the sets differ. A
        // full disk fails every write (the judge is not told it succeeded).
        let disk_full = self
            .disk_full_until
            .is_some_and(|until| self.host.running_ns < until);
        if !disk_full && self.procs.iter().any(|p| p.judge.poll_persist().is_some()) {
            for proc in &mut self.procs {
                if let Some(state) = proc.judge.state_to_persist() {
                    proc.stored = Some(state.clone());
                    proc.judge.handle_persisted(state);
                }
            }
        }
        if full {
            self.next_full_ns = self.host.mono_ns + CHECK as i128 * NS;
        }
        self.check_every_wake()
    }

    /// Lets `secs` of monotonic time run, waking the judges where they ask and at each
    /// periodic check, and once at the end.
    fn run(&mut self, secs: u64) -> Result<(), Failure> {
        let target = self.host.mono_ns + secs as i128 * NS;
        loop {
            let mut next = self.next_full_ns;
            for proc in &self.procs {
                if let Some(at) = proc.judge.decision_timeout() {
                    next = next.min(at.as_nanos() as i128);
                }
            }
            if self.host.provisional() {
                // Wake when the boot window closes.
                let left = (self.host.boot_at + BOOT_WINDOW) as i128 * NS - self.host.true_ns;
                next = next.min(self.host.mono_ns + left.max(0) + NS);
            }
            // At least a second on: a judge never asks for the past twice.
            let next = next.max(self.host.mono_ns + NS);
            if next >= target {
                let d = target - self.host.mono_ns;
                self.advance(d);
                let full = self.host.mono_ns >= self.next_full_ns;
                return self.wake(full);
            }
            let d = next - self.host.mono_ns;
            self.advance(d);
            let full = self.host.mono_ns >= self.next_full_ns;
            self.wake(full)?;
        }
    }

    /// As [`run`](Self::run), by nanoseconds (nothing, for none).
    fn run_ns(&mut self, d: i128) -> Result<(), Failure> {
        if d <= 0 {
            return Ok(());
        }
        let whole = d / NS;
        if whole > 0 {
            self.run(whole as u64)?;
        }
        let rest = d % NS;
        if rest > 0 {
            self.advance(rest);
            let full = self.host.mono_ns >= self.next_full_ns;
            self.wake(full)?;
        }
        Ok(())
    }

    fn advance(&mut self, d: i128) {
        self.host.tick(d);
        self.host.running_ns += d;
    }

    fn set_offset(&mut self, secs: i64) {
        self.host.off_ns = secs as i128 * NS;
    }

    fn offset_secs(&self) -> i64 {
        self.host.off_ns.div_euclid(NS) as i64
    }

    fn write(&mut self, lic: Lic) {
        let (licenses, garbage) = lic.licenses(self.host.true_secs());
        let mut entries: Vec<Entry> = licenses
            .iter()
            .map(|c| Entry::License(Arc::new(c.clone())))
            .collect();
        if garbage {
            entries.push(Entry::Garbage);
        }
        self.ever.extend(licenses.iter().cloned());
        let now = self.host.true_secs();
        if licenses.is_empty() {
            self.unlicensed_bound = self.unlicensed_bound.max(now + GRACE);
        }
        if !licenses
            .iter()
            .any(|c| c.nbf.is_none_or(|nbf| nbf <= now) && now < c.ends())
        {
            // No license in force: the product's grace for a source without one.
            self.windows.push((now, now + GRACE));
        }
        self.recompute_bound();
        // The oracle judges a license by what its vendor meant: a vendor clock that was
        // fast put its `exp` that much later.
        let fast = lic.vendor_fast();
        let licenses = licenses
            .into_iter()
            .map(|mut c| {
                c.exp -= fast;
                c
            })
            .collect();
        self.in_source = licenses;
        self.generation += 1;
        self.lic = lic;
        self.content = if lic == Lic::Deleted {
            Content::Deleted
        } else {
            Content::Lines(entries)
        };
    }

    /// Starts (or restarts) every process: restore the state file, then a full check.
    fn start(&mut self) -> Result<(), Failure> {
        // A wall ahead at a start is believed (it cannot be told from real time gone by
        // while the service was down): the time it is ahead is borrowed from the end.
        if self.host.off_ns > 5 * NS {
            self.confirmed_ahead = self.confirmed_ahead.max(self.offset_secs());
        }
        let reading = self.host.reading();
        let running = self.host.running_ns;
        for proc in &mut self.procs {
            proc.judge = Judge::new(config(self.with_state, self.host.boot), reading);
            if self.with_state {
                proc.judge
                    .handle_restored(proc.stored.clone().ok_or(StateProblem {
                        reason: "missing",
                        detail: "/sim/state.json does not exist".into(),
                    }));
            }
            proc.expiring = 0;
            proc.fresh = 0;
            proc.started_ns = running;
            proc.started_mono = self.host.mono_ns;
        }
        self.wake(true)
    }

    fn restart(&mut self) -> Result<(), Failure> {
        self.restarts += 1;
        self.start()
    }

    /// A process is up at least a minute after a resume before it restarts: time never
    /// seen by a running judge is downtime, which no offline check can measure.
    fn up_a_minute(&mut self) -> Result<(), Failure> {
        if self
            .resumed_at
            .is_some_and(|r| self.host.running_ns - r < MINUTE as i128 * NS)
        {
            self.run(MINUTE as u64)?;
        }
        Ok(())
    }

    /// The ordinary fault is over: invariant 1 holds again `after` seconds from now (or
    /// later, where an earlier fault asked for longer).
    fn calm(&mut self, after: i64) {
        self.disturbed = false;
        self.quiet_from = self
            .quiet_from
            .max(self.host.running_ns + after as i128 * NS);
    }

    /// The oracle: whether the source gives a valid license at true time `now`, with
    /// margins (a minute after a window opens, ten minutes before the coverage ends).
    fn licensed_at(&self, now: i64) -> bool {
        let start = |c: &Claims| c.nbf.unwrap_or(i64::MIN);
        // Revoked licenses end at their revocation.
        let in_source: Vec<Claims> = self.in_source.iter().map(|c| self.as_revoked(c)).collect();
        // The customer whose license ends last among those started.
        let Some(customer) = in_source
            .iter()
            .filter(|c| start(c) <= now && start(c) < c.ends())
            .max_by_key(|c| c.ends())
            .map(|c| c.customer.clone())
        else {
            return false;
        };
        let ours: Vec<&Claims> = in_source
            .iter()
            .filter(|c| c.customer == customer)
            .collect();
        let Some(mut end) = ours
            .iter()
            .filter(|c| start(c).saturating_add(MINUTE) <= now && now < c.ends())
            .map(|c| c.ends())
            .max()
        else {
            return false;
        };
        while let Some(later) = ours
            .iter()
            .filter(|c| start(c) <= end && c.ends() > end)
            .map(|c| c.ends())
            .max()
        {
            end = later;
        }
        now < end - 10 * MINUTE
    }

    fn step(&mut self, step: &Step) -> Result<(), Failure> {
        match *step {
            Step::Run(secs) => self.run(secs)?,
            Step::Jitter(offset) => {
                if !self.disturbed {
                    self.set_offset(offset);
                }
                self.run(30)?;
            }
            Step::AheadFor { ahead, mut secs } => {
                if self.host.provisional() {
                    // NTP has the clock right within ten minutes of the boot window's end.
                    let window = (self.host.boot_at + BOOT_WINDOW - self.host.true_secs()).max(0);
                    secs = secs.min((window + 10 * MINUTE) as u64);
                }
                let offset = self.offset_secs();
                self.set_offset(offset + ahead);
                self.disturbed = true;
                self.run(secs)?;
                self.observe()?;
                self.set_offset(offset);
                self.calm(60);
                self.run(2 * MINUTE as u64)?;
            }
            Step::Suspend(secs) => {
                // Both clocks move; no judge runs (nothing is admitted) meanwhile.
                self.last_true = None;
                self.host.tick(secs as i128 * NS);
                self.resumed_at = Some(self.host.running_ns);
                self.calm(60);
                self.run(61)?;
            }
            Step::Reboot { rtc, correct_after } => {
                self.up_a_minute()?;
                let keep = if self.honest { 0 } else { self.offset_secs() };
                self.past_boots_budget += self.boot_budget();
                self.last_true = None;
                self.host.mono_ns = 0;
                self.host.boot_at = self.host.true_secs();
                self.host.boot += 1;
                self.set_offset(keep + rtc);
                self.resumed_at = Some(self.host.running_ns);
                self.restart()?;
                match correct_after {
                    Some(after) => {
                        self.disturbed = true;
                        self.run(after)?;
                        self.observe()?;
                        self.set_offset(keep);
                        self.calm(60);
                        self.run(1)?;
                    }
                    None => self.run(1)?,
                }
            }
            Step::Restart => {
                self.up_a_minute()?;
                self.restart()?;
                self.calm(0);
            }
            Step::LateStart {
                rtc,
                start_after,
                correct_after,
            } => {
                self.up_a_minute()?;
                self.past_boots_budget += self.boot_budget();
                // Down from the reboot until the service starts.
                self.last_true = None;
                self.host.mono_ns = 0;
                self.host.boot_at = self.host.true_secs();
                self.host.boot += 1;
                self.set_offset(rtc);
                self.disturbed = true;
                self.reboot_downtime += start_after as i64;
                self.host.tick(start_after as i128 * NS);
                self.resumed_at = Some(self.host.running_ns);
                self.restart()?;
                self.run(correct_after.saturating_sub(start_after).max(1))?;
                self.observe()?;
                self.set_offset(0);
                // A clock that was behind and is stepped forward is believed 15 minutes
                // later (forward jumps borrow, never create, time): meanwhile licenses are
                // judged at the mark, and a renewal may start that much later, in grace.
                self.calm(if rtc < -5 { BOOT_WINDOW + 60 } else { 60 });
                self.run(1)?;
            }
            Step::AheadAcrossRestart { ahead, secs } => {
                self.up_a_minute()?;
                let offset = self.offset_secs();
                self.set_offset(offset + ahead);
                self.restart()?;
                self.run(secs)?;
                self.set_offset(offset);
                self.restart()?;
                self.run(1)?;
            }
            Step::Swap(lic) => {
                self.write(lic);
                self.wake(true)?;
                self.calm(0);
            }
            Step::Storm(n) => {
                for _ in 0..n {
                    self.wake(true)?;
                }
            }
            Step::SetWall(secs) => {
                let offset = self.offset_secs();
                self.set_offset(offset + secs);
                self.run(1)?;
            }
            Step::Creep {
                step_ms,
                every_ms,
                times,
                sample,
            } => {
                // The checker samples after every `sample`-th step, and at least once a
                // minute (the shell's longest sleep); between samples the clocks only move.
                let every = every_ms as i128 * 1_000_000;
                let mut unsampled: i128 = 0;
                for i in 0..times {
                    unsampled += every;
                    if (i + 1) % u32::from(sample) == 0 || unsampled >= MINUTE as i128 * NS {
                        self.run_ns(unsampled)?;
                        unsampled = 0;
                    }
                    self.host.off_ns += step_ms as i128 * 1_000_000;
                }
                self.run_ns(unsampled)?;
                self.run(1)?;
            }
            Step::MonoJump(secs) => {
                // (A monotonic clock that jumps ahead moves trusted time with it: borrowed,
                // as by a wall kept ahead.)
                self.confirmed_ahead += secs.max(0);
                self.host.mono_ns = (self.host.mono_ns + secs as i128 * NS).max(0);
                self.run(1)?;
            }
            Step::DiskFull(secs) => {
                self.disk_full_until = Some(self.host.running_ns + secs as i128 * NS);
                self.run(secs)?;
                self.disk_full_until = None;
                self.up_a_minute()?;
                self.restart()?;
                self.calm(0);
            }
            Step::NoticeJunk => {
                self.junk_notice = !self.junk_notice;
                self.generation += 1;
                self.wake(true)?;
            }
            Step::Downtime { secs, ppm } => {
                self.up_a_minute()?;
                self.last_true = None;
                self.host.ppm = ppm;
                self.host.tick(secs as i128 * NS);
                self.host.ppm = 0;
                self.restart()?;
                self.calm(0);
            }
            Step::Drift { ppm, secs } => {
                self.host.ppm = ppm;
                self.run(secs)?;
                self.host.ppm = 0;
            }
            Step::Sync => {
                self.host.off_ns = 0;
                self.run(30)?;
            }
            Step::Revoke => {
                let now = self.host.true_secs();
                for c in &self.in_source {
                    if let Some(jti) = &c.jti {
                        self.revoked.entry(jti.clone()).or_insert(now);
                    }
                }
                self.recompute_bound();
                self.issue(false, 0);
                self.wake(true)?;
            }
            Step::Attest { fast } => {
                // The support case sets the clock right first (with a backward step, when
                // it was fast), and installs the notice at once. (An attestation kept
                // unused and installed later, with the clock set back, rolls trusted time
                // back to its `time` once: the README's threat model says so. The
                // vendor's do not wait here: one that cannot be used now, with no license
                // in the source to judge it for, is withdrawn.)
                self.set_offset(0);
                let previous = self.notice.clone();
                self.issue(true, fast);
                self.wake(true)?;
                let seq = self.issued.last().map_or(0, |n| n.seq);
                let accepted = self.procs[0].judge.notices.seq.values().any(|&s| s >= seq);
                if accepted {
                    self.mark_wrong = false;
                } else {
                    self.issued.pop();
                    self.notice = previous;
                    self.generation += 1;
                    self.wake(true)?;
                }
                self.calm(60);
            }
            Step::Replay(k) => {
                if !self.issued.is_empty() {
                    self.notice = Some(Arc::clone(&self.issued[k % self.issued.len()]));
                    self.generation += 1;
                    self.wake(true)?;
                }
            }
            Step::WrongMark { ahead, secs } => {
                let offset = self.offset_secs();
                self.set_offset(offset + ahead);
                self.disturbed = true;
                self.mark_wrong = true;
                self.up_a_minute()?;
                self.restart()?;
                self.run(secs)?;
                self.set_offset(offset);
                self.run(1)?;
            }
        }
        Ok(())
    }

    /// Invariants 5, 6 and 7: at every wake.
    fn check_every_wake(&mut self) -> Result<(), Failure> {
        if self.procs[0].judge.reads.set.is_empty() {
            self.law5_in_scope = false;
        }
        // (Likewise when the twin's set has no license in force or expired, only licenses
        // held for later: it is a service with no license at all, given the builder's
        // grace, against one whose expired license is past its cut-off.)
        if self
            .procs
            .get(1)
            .is_some_and(|twin| twin.verdict.claims.is_none())
        {
            self.law5_in_scope = false;
        }
        let reference = &self.procs[0].verdict;
        if self.drift {
            ensure_eq!(
                reference.state,
                LicenseState::Valid,
                "an honest drifting clock left Valid at true time T0{:+} (wall {:+.3} s): {:?}",
                self.host.true_secs() - T0,
                self.host.off_ns as f64 / NS as f64,
                reference
            );
        }
        match (self.twin, self.procs.get(1)) {
            (Some(Twin::Permutes(_)), Some(twin)) => {
                ensure_eq!(
                    &*twin.verdict,
                    &**reference,
                    "permuted and repeated lines changed the verdict at T0{:+}",
                    self.host.true_secs() - T0
                );
            }
            // (A signed `iat` lifts trusted now for the whole set it is in, where DESIGN
            // wants it for that license only: a twin that kept such a license is judged at
            // a later instant, and two verdicts at different instants are not compared.
            // It takes a wall clock set back below the `iat`: tampering.)
            (Some(Twin::Adds { .. }), Some(twin))
                if self.law5_in_scope && twin.verdict.evaluated_at == reference.evaluated_at =>
            {
                let (a, b) = (&**reference, &*twin.verdict);
                ensure!(
                    rank(b.state) <= rank(a.state),
                    "adding a license made it worse at T0{:+}: {:?} against {:?}",
                    self.host.true_secs() - T0,
                    b,
                    a
                );
                if a.state == LicenseState::Grace && b.state == LicenseState::Grace {
                    ensure!(
                        b.grace_ends_at >= a.grace_ends_at,
                        "adding a license brought the cut-off earlier at T0{:+}: {:?} against {:?}",
                        self.host.true_secs() - T0,
                        b,
                        a
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Invariants 1 to 4: after every step.
    fn observe(&mut self) -> Result<(), Failure> {
        let verdict = Arc::clone(&self.procs[0].verdict);
        let now = self.host.true_secs();
        let running = self.host.running_ns;
        let provisional = self.host.provisional();
        let resumed_recently = self.resumed_at.is_some_and(|r| running - r < 61 * NS);

        // 1. Honest customers.
        if self.honest
            && !self.disturbed
            && !self.mark_wrong
            && running >= self.quiet_from
            && self.licensed_at(now)
        {
            ensure_eq!(
                verdict.state,
                LicenseState::Valid,
                "a valid license was refused at true time T0{:+} (wall {:+}): {:?}",
                now - T0,
                self.offset_secs(),
                verdict
            );
        }

        let in_scope = self.with_state || self.restarts == 0;
        // (An attestation lets the vendor's clock be five minutes fast: a wall that far
        // behind it is taken as right, once, as for a license's `iat`.)
        let tolerance = if self.procs[0].judge.notices.seq.is_empty() {
            0
        } else {
            super::time::ATTESTATION_TOLERANCE_SECS
        };
        // 2. Casual tamperers.
        if in_scope
            && now > self.bound + self.allowed_lag() + tolerance
            && !provisional
            && !resumed_recently
        {
            ensure!(
                !verdict.admits(),
                "admitted at true time T0{:+}, past every exp + grace (T0{:+}) + {} s \
                 (wall {:+}): {:?}",
                now - T0,
                self.bound - T0,
                self.allowed_lag(),
                self.offset_secs(),
                verdict
            );
        }

        // 2'. Conservation: what the schedule gained (admitted outside every license's
        // window and grace) stays within the allowances.
        ensure!(
            self.gain <= self.allowance(),
            "gained {:.1} s past coverage and grace, allowed {:.1} s, at true time T0{:+} \
             (wall {:+}): {:?}",
            self.gain as f64 / NS as f64,
            self.allowance() as f64 / NS as f64,
            now - T0,
            self.offset_secs(),
            verdict
        );

        // 4. Alerts do not flood.
        let proc = &self.procs[0];
        // (Check intervals by the judge's monotonic clock, which a broken clock source can
        // move faster than real time.)
        let elapsed = (running - proc.started_ns).max(self.host.mono_ns - proc.started_mono);
        let hours = (elapsed / (HOUR as i128 * NS)) as u64;
        let bound = 4 * (proc.fresh + 1) + hours + 1;
        ensure!(
            proc.expiring <= bound,
            "{} expiry alerts in {} h of this run (bound {})",
            proc.expiring,
            hours,
            bound
        );

        // 3. A wall clock kept behind is reported.
        // (A step back within the boot's drift budget is an honest correction.)
        let budget = (self.boot_budget() / NS) as i64 + 1;
        if in_scope
            && !provisional
            && self.offset_secs() < -(self.allowed_lag() + tolerance + budget + 10)
        {
            let since = *self.behind_since.get_or_insert(running);
            if running - since >= 61 * NS {
                ensure_eq!(
                    verdict.reason.clone(),
                    Some(GraceReason::ClockManipulation),
                    "wall {:+} s behind true time, not reported: {:?}",
                    self.offset_secs(),
                    verdict
                );
            }
        } else {
            self.behind_since = None;
        }
        Ok(())
    }
}

/// Invariant 7's case: a host that booted `booted_before` seconds before the start and
/// ran `ppm` fast (or slow) unsynchronized since, a license that outlasts every schedule,
/// then the steps.
fn run_drifting(
    with_state: bool,
    booted_before: i64,
    ppm: i64,
    steps: &[Step],
) -> Result<(), Failure> {
    let mut world = World::new(true, with_state, true, None);
    world.host.mono_ns = booted_before as i128 * NS;
    world.host.boot_at = T0 - booted_before;
    world.host.off_ns = booted_before as i128 * NS * ppm as i128 / 1_000_000;
    world.write(Lic::Valid);
    world.generation += 1;
    let year = claims("Acme", None, T0 + 400 * DAY, None);
    world.content = Content::Lines(vec![Entry::License(Arc::new(year))]);
    world.start()?;
    for step in steps {
        world.step(step)?;
    }
    Ok(())
}

/// One case: the initial source, then the steps.
fn run_case(world: &mut World, first: Lic, steps: &[Step]) -> Result<(), Failure> {
    world.write(first);
    world.start()?;
    world.observe()?;
    for (i, step) in steps.iter().enumerate() {
        world.step = i + 1;
        world.step(step)?;
        world.observe()?;
    }
    Ok(())
}
