//! A fleet in paused time: N + k replicas of one service under a license for N instances,
//! their real kube clients talking in-process to `common::kube_api` (no real API server
//! can run here), through random crashes, graceful stops, new pods, partitions, slow
//! answers, writes applied but never answered, and wall clocks hours apart. Checked every
//! simulated second:
//!
//! (a) no more than N replicas count themselves slot holders at any instant (strictly:
//!     a partitioned holder stops counting at its renew deadline, 40 s, before anyone may
//!     take its slot over at 60 s; the issue allows a lease duration after a partition,
//!     which this does not need);
//! (b) with N or fewer replicas running and the API answering them all, every one holds a
//!     slot, and serves valid, no later than [`SETTLE`] after the last disruption: a
//!     crashed holder's Lease must first expire (60 s of the observers' time since they
//!     last saw it change, seen at lists 10-12 s apart), then the next list takes it;
//! (c) a replica that holds a slot is never cut off, and none is ever cut off while the
//!     grace period (longer than the run) has not run out.
//!
//! `INSTANCE_SIM_CASES` sets the number of cases (default 24).
#![cfg(feature = "kubernetes")]

mod common;

use std::time::Duration;

use common::kube_api::{ApiServer, Door, Fault};
use common::*;
use iosetu_license::{
    Claims, InstanceSlots, LicenseMonitor, LicenseSource, LicenseState, TestClock,
};
use proptest::prelude::*;

const NS: &str = "shop";
/// How long after the last disruption every replica of a fleet within the limit holds a
/// slot: the 60 s lease duration, two list rounds (12 s each), and the longest slow
/// answer still in flight (30 s).
const SETTLE: u64 = 60 + 2 * 12 + 30;

#[derive(Debug, Clone)]
enum Action {
    /// A new pod for replica `i` (if it is not running).
    Start(usize),
    /// Replica `i`'s process dies: no word to the API server.
    Crash(usize),
    /// Replica `i` shuts down gracefully, giving its slot back.
    Stop(usize),
    /// Replica `i` cannot reach the API server.
    Partition(usize),
    /// Replica `i`'s requests reach the API server late, or its answers come back late.
    Slow(usize, Duration, bool),
    /// Replica `i`'s writes (and, if set, its reads too) are applied, but their answers
    /// never arrive.
    Unanswered(usize, bool),
    /// Replica `i` reaches the API server normally again.
    Heal(usize),
}

fn action(replicas: usize) -> impl Strategy<Value = Action> {
    let i = 0..replicas;
    prop_oneof![
        2 => i.clone().prop_map(Action::Start),
        2 => i.clone().prop_map(Action::Crash),
        1 => i.clone().prop_map(Action::Stop),
        2 => i.clone().prop_map(Action::Partition),
        1 => (i.clone(), 1u64..30, any::<bool>()).prop_map(|(i, s, reply)| Action::Slow(i, Duration::from_secs(s), reply)),
        1 => (i.clone(), any::<bool>()).prop_map(|(i, reads)| Action::Unanswered(i, reads)),
        3 => i.prop_map(Action::Heal),
    ]
}

fn case() -> impl Strategy<Value = (u64, usize, Vec<i64>, Vec<(Action, u64)>)> {
    (1u64..=3, 0usize..=3).prop_flat_map(|(n, k)| {
        let replicas = n as usize + k;
        (
            Just(n),
            Just(replicas),
            // Each replica's wall clock, hours either side of the others'.
            proptest::collection::vec(-6 * HOUR..=6 * HOUR, replicas),
            proptest::collection::vec((action(replicas), 1u64..90), 1..14),
        )
    })
}

struct Replica {
    name: String,
    clock: TestClock,
    door: Door,
    monitor: Option<LicenseMonitor>,
    generation: u32,
    /// The door is faulty (partitioned or slow).
    faulty: bool,
}

struct Fleet {
    api: ApiServer,
    token: String,
    replicas: Vec<Replica>,
    n: u64,
    /// When the last disruption happened (seconds of simulated time).
    disrupted_at: u64,
    now: u64,
}

impl Fleet {
    async fn start(&mut self, i: usize) {
        let r = &mut self.replicas[i];
        if r.monitor.is_some() {
            return;
        }
        r.generation += 1;
        r.door = self.api.door();
        r.faulty = false;
        let pod = format!("{}-{}", r.name, r.generation);
        let builder = LicenseMonitor::builder()
            .public_key(signer().public_key())
            .source(LicenseSource::Static(self.token.clone()))
            .clock(r.clock.clone())
            // Longer than any run: only a breach could cut a replica off.
            .grace_period(Duration::from_secs(30 * 86_400))
            .instance_slots(
                InstanceSlots::new("acme")
                    .pod_name(&pod)
                    .pod_uid(format!("uid-{pod}"))
                    .client(r.door.client(NS)),
            );
        r.monitor = Some(builder.start().await.expect("start"));
        self.disrupted_at = self.now;
    }

    async fn apply(&mut self, action: &Action) {
        match *action {
            Action::Start(i) => self.start(i).await,
            Action::Crash(i) => {
                let r = &mut self.replicas[i];
                if let Some(m) = r.monitor.take() {
                    // Dead: even the release on drop never reaches the API server.
                    r.door.set(Fault::Refuse);
                    drop(m);
                    self.disrupted_at = self.now;
                }
            }
            Action::Stop(i) => {
                let r = &mut self.replicas[i];
                if let Some(m) = r.monitor.take() {
                    m.shutdown().await;
                    drop(m);
                    self.disrupted_at = self.now;
                }
            }
            Action::Partition(i) => {
                let r = &mut self.replicas[i];
                if r.monitor.is_some() {
                    r.door.set(Fault::Refuse);
                    r.faulty = true;
                    self.disrupted_at = self.now;
                }
            }
            Action::Slow(i, by, reply) => {
                let r = &mut self.replicas[i];
                if r.monitor.is_some() {
                    r.door.set(if reply {
                        Fault::SlowReply(by)
                    } else {
                        Fault::Delay(by)
                    });
                    r.faulty = true;
                    self.disrupted_at = self.now;
                }
            }
            Action::Unanswered(i, reads) => {
                let r = &mut self.replicas[i];
                if r.monitor.is_some() {
                    r.door.set(if reads {
                        Fault::DropAfterApply
                    } else {
                        Fault::UnansweredWrites
                    });
                    r.faulty = true;
                    self.disrupted_at = self.now;
                }
            }
            Action::Heal(i) => {
                let r = &mut self.replicas[i];
                if r.faulty {
                    r.door.set(Fault::None);
                    r.faulty = false;
                    self.disrupted_at = self.now;
                }
            }
        }
    }

    /// One simulated second, then the invariants.
    async fn tick(&mut self, log: &[String]) -> Result<(), TestCaseError> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.now += 1;
        let running: Vec<&Replica> = self
            .replicas
            .iter()
            .filter(|r| r.monitor.is_some())
            .collect();
        let holding: Vec<(&str, u32)> = running
            .iter()
            .filter_map(|r| Some((r.name.as_str(), r.monitor.as_ref()?.instance_slot()?)))
            .collect();
        prop_assert!(
            holding.len() as u64 <= self.n,
            "(a) {} holders of {} slots at {} s: {holding:?}\n{}",
            holding.len(),
            self.n,
            self.now,
            log.join("\n")
        );
        let mut slots: Vec<u32> = holding.iter().map(|(_, s)| *s).collect();
        slots.sort_unstable();
        slots.dedup();
        prop_assert_eq!(
            slots.len(),
            holding.len(),
            "(a) a slot held twice: {:?}",
            holding
        );
        for r in &running {
            let m = r.monitor.as_ref().unwrap();
            prop_assert_ne!(
                m.verdict().state,
                LicenseState::GraceExpired,
                "(c) {} cut off at {} s\n{}",
                r.name,
                self.now,
                log.join("\n")
            );
        }
        let settled = self.now >= self.disrupted_at + SETTLE;
        if settled && running.len() as u64 <= self.n && running.iter().all(|r| !r.faulty) {
            for r in &running {
                let m = r.monitor.as_ref().unwrap();
                prop_assert!(
                    m.instance_slot().is_some() && m.verdict().state == LicenseState::Valid,
                    "(b) {} without a slot ({:?}) {} s after the last disruption, {} running of {}\nholders {:?}\n{}",
                    r.name,
                    m.verdict().reason,
                    self.now - self.disrupted_at,
                    running.len(),
                    self.n,
                    self.api.holders(NS),
                    log.join("\n")
                );
            }
        }
        Ok(())
    }
}

fn simulate(
    n: u64,
    replicas: usize,
    skews: Vec<i64>,
    actions: Vec<(Action, u64)>,
) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut claims = Claims::new("Acme Corp", T0 + 90 * DAY);
        claims.max_instances = Some(n);
        let api = ApiServer::new();
        let mut fleet = Fleet {
            token: signer().sign(&claims),
            replicas: (0..replicas)
                .map(|i| Replica {
                    name: format!("r{i}"),
                    clock: TestClock::new(at(T0 + skews[i])),
                    door: api.door(),
                    monitor: None,
                    generation: 0,
                    faulty: false,
                })
                .collect(),
            api,
            n,
            disrupted_at: 0,
            now: 0,
        };
        // The fleet as deployed: every replica starts, the first N get slots.
        for i in 0..replicas {
            fleet.start(i).await;
        }
        let mut log = vec![format!("limit {n}, {replicas} replicas, skews {skews:?}")];
        for (action, then) in &actions {
            log.push(format!("{} s: {action:?}, then {then} s", fleet.now));
            fleet.apply(action).await;
            for _ in 0..*then {
                fleet.tick(&log).await?;
            }
        }
        // Heal everything and stop the surplus: the fleet must settle within the limit.
        log.push(format!("{} s: heal all, stop beyond the limit", fleet.now));
        for i in 0..replicas {
            fleet.apply(&Action::Heal(i)).await;
            if i as u64 >= n {
                fleet.apply(&Action::Stop(i)).await;
            }
        }
        for _ in 0..SETTLE + 5 {
            fleet.tick(&log).await?;
        }
        let running = fleet
            .replicas
            .iter()
            .filter(|r| r.monitor.is_some())
            .count() as u64;
        prop_assert!(running <= n);
        // The run did talk to the API server (a replica crashed before its first round
        // and never restarted made no call).
        let (writes, lists) = fleet.api.load();
        if std::env::var("INSTANCE_SIM_VERBOSE").is_ok() {
            eprintln!(
                "{} s simulated, {writes} writes, {lists} lists: {}",
                fleet.now,
                log[..3.min(log.len())].join(" / ")
            );
        }
        prop_assert!(
            running == 0 || (writes >= 1 && lists >= 1),
            "{writes} writes, {lists} lists"
        );
        Ok(())
    })
}

fn cases() -> u32 {
    std::env::var("INSTANCE_SIM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_fleet_never_holds_more_slots_than_the_license_sells_and_settles_within_it(
        (n, replicas, skews, actions) in case()
    ) {
        simulate(n, replicas, skews, actions)?;
    }
}

/// The oracle is not blind: a fleet whose replicas judge expiry by comparing a holder's
/// `renewTime` with their own wall clock would take live slots from holders whose clock is
/// behind. Here, a holder 6 h behind keeps its slot against a waiter 6 h ahead.
#[test]
fn a_holder_whose_clock_is_hours_behind_keeps_its_slot() {
    simulate(
        1,
        2,
        vec![-6 * HOUR, 6 * HOUR],
        vec![(Action::Heal(0), 600)],
    )
    .unwrap();
}
