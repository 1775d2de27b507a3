//! Instance slots through the real `kube` client.
//!
//! No Kubernetes API server can run here, so the client talks to `common::kube_api`, an
//! in-process stand-in for the Lease endpoints with the API's own JSON and status
//! bodies. The first tests go over loopback HTTP in real time (the client's whole HTTP
//! stack, short bounded polls; every outcome here comes from a replica's first round or
//! from a reload); the later ones run the client over an in-process transport in paused
//! time, where lease durations pass in an instant.
#![cfg(feature = "kubernetes")]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::kube_api::{ApiServer, Door, Fault};
use common::*;
use iosetu_license::instances::{API_VERBS, LEASE_DURATION, RENEW_DEADLINE};
use iosetu_license::{
    Claims, DEFAULT_INSTANCE_SETTLING, GraceReason, InstanceSlots, LicenseEvent, LicenseMonitor,
    LicenseSource, LicenseState, TestClock,
};
use tokio::sync::broadcast;

const NS: &str = "shop";

fn token(max_instances: Option<u64>, exp: i64) -> String {
    let mut claims = Claims::new("Acme Corp", exp);
    claims.max_instances = max_instances;
    signer().sign(&claims)
}

fn slots(name: &str) -> InstanceSlots {
    InstanceSlots::new("acme")
        .pod_name(name)
        .pod_uid(format!("uid-{name}"))
}

/// The pod part of a holder identity (`<pod name>_<pod uid>_<nonce>`), checking that a
/// 16-hex-digit nonce follows it.
fn pod_of(holder: Option<&str>) -> Option<&str> {
    let (pod, nonce) = holder?.rsplit_once('_')?;
    assert!(
        nonce.len() == 16 && nonce.bytes().all(|b| b.is_ascii_hexdigit()),
        "{holder:?}"
    );
    Some(pod)
}

/// A replica in real time, its client over loopback HTTP through `door`.
async fn replica_over_http(
    door: &Door,
    name: &str,
    source: LicenseSource,
) -> (LicenseMonitor, broadcast::Receiver<LicenseEvent>) {
    replica_over_http_settling(door, name, source, DEFAULT_INSTANCE_SETTLING).await
}

/// [`replica_over_http`] with its own instance settling.
async fn replica_over_http_settling(
    door: &Door,
    name: &str,
    source: LicenseSource,
    settling: Duration,
) -> (LicenseMonitor, broadcast::Receiver<LicenseEvent>) {
    let url = door.listen().await;
    let mut config = kube::Config::new(url.parse().unwrap());
    config.default_namespace = NS.into();
    let client = kube::Client::try_from(config).unwrap();
    let builder = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(source)
        .clock(SettledClock)
        .instance_settling(settling)
        .instance_slots(slots(name).client(client));
    start(builder).await
}

/// Polls (real time, 10 s at most) until `what` holds.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 10 s: {what}");
}

fn real_exp() -> i64 {
    secs(std::time::SystemTime::now()) + 90 * DAY
}

fn assert_verbs_granted(api: &ApiServer) {
    let granted: BTreeSet<&str> = API_VERBS.into_iter().collect();
    for verb in api.verbs() {
        assert!(
            granted.contains(verb),
            "the code used `{verb}`, not in API_VERBS"
        );
    }
}

#[tokio::test]
async fn a_replica_takes_a_free_slot_with_the_real_client_over_http() {
    let api = ApiServer::new();
    let source = LicenseSource::Static(token(Some(2), real_exp()));
    let (a, mut events) = replica_over_http(&api.door(), "a", source).await;
    eventually("a holds slot 0", || a.instance_slot() == Some(0)).await;
    let lease = api
        .leases(NS)
        .remove("acme-slot-0")
        .expect("the Lease exists");
    let spec = lease.spec.unwrap();
    assert_eq!(pod_of(spec.holder_identity.as_deref()), Some("a_uid-a"));
    assert_eq!(spec.lease_duration_seconds, Some(60));
    assert!(spec.renew_time.is_some() && spec.acquire_time.is_some());
    assert_eq!(
        lease
            .metadata
            .labels
            .unwrap()
            .get("iosetu-license/slots")
            .map(String::as_str),
        Some("acme")
    );
    assert_eq!(a.verdict().state, LicenseState::Valid);
    let seen = drain(&mut events);
    match find(&seen, "license.instance_slot_acquired") {
        LicenseEvent::InstanceSlotAcquired {
            slot,
            lease,
            max_instances,
        } => assert_eq!(
            (*slot, lease.as_str(), *max_instances),
            (0, "acme-slot-0", 2)
        ),
        other => panic!("{other:?}"),
    }
    assert_verbs_granted(&api);
}

#[tokio::test]
async fn a_license_without_max_instances_makes_no_api_call() {
    let api = ApiServer::new();
    let source = LicenseSource::Static(token(None, real_exp()));
    let (a, _) = replica_over_http(&api.door(), "a", source).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.load(), (0, 0), "no list, no write");
    assert_eq!(a.instance_slot(), None);
    assert_eq!(a.verdict().state, LicenseState::Valid);
}

#[tokio::test]
async fn racing_replicas_get_409_and_take_the_next_slot_and_the_third_settles_then_is_in_grace() {
    let api = ApiServer::new();
    let exp = real_exp();
    // Every request waits 200 ms, so both replicas list before either creates: they race
    // for slot 0, the API server applies one create and answers the other 409.
    let (doors, names) = ([api.door(), api.door()], ["a", "b"]);
    for d in &doors {
        d.set(Fault::Delay(Duration::from_millis(200)));
    }
    let (a, b) = tokio::join!(
        replica_over_http(
            &doors[0],
            names[0],
            LicenseSource::Static(token(Some(2), exp))
        ),
        replica_over_http(
            &doors[1],
            names[1],
            LicenseSource::Static(token(Some(2), exp))
        ),
    );
    let (a, b) = (a.0, b.0);
    eventually("a and b hold slots 0 and 1", || {
        let held: BTreeSet<_> = [a.instance_slot(), b.instance_slot()].into_iter().collect();
        held == BTreeSet::from([Some(0), Some(1)])
    })
    .await;
    assert!(api.conflicts() >= 1, "the two creates of slot 0 raced");
    // A third replica finds both taken: it settles first (a rollout's surge pod would get
    // a slot meanwhile), valid, healthy and quiet.
    let (settling, mut quiet) =
        replica_over_http(&api.door(), "s", LicenseSource::Static(token(Some(2), exp))).await;
    eventually("s settles", || {
        settling.verdict().instance_settling_until.is_some()
    })
    .await;
    assert_eq!(settling.verdict().state, LicenseState::Valid);
    assert_eq!(settling.instance_slot(), None);
    assert_eq!(
        settling.health().to_json(),
        r#"{"status":"healthy","license":{"valid":true,"grace_mode":false}}"#
    );
    assert!(settling.metrics().instance_settling);
    assert!(
        drain(&mut quiet)
            .iter()
            .all(|e| e.level() > tracing::Level::WARN),
        "settling emits no warning or error"
    );
    drop(settling);
    // Settled (a second, here), it serves in grace, with `instance_limit`.
    let (c, mut events) = replica_over_http_settling(
        &api.door(),
        "c",
        LicenseSource::Static(token(Some(2), exp)),
        Duration::from_secs(1),
    )
    .await;
    eventually("c is in grace", || c.verdict().state == LicenseState::Grace).await;
    let verdict = c.verdict();
    assert_eq!(verdict.reason, Some(GraceReason::InstanceLimit));
    assert!(verdict.admits());
    assert_eq!(c.instance_slot(), None);
    assert_eq!(
        c.health().to_json(),
        r#"{"status":"degraded","license":{"valid":false,"grace_mode":true}}"#
    );
    let seen = drain(&mut events);
    match find(&seen, "license.grace_mode_entered") {
        LicenseEvent::GraceModeEntered { reason, .. } => {
            assert_eq!(reason.code(), "instance_limit")
        }
        other => panic!("{other:?}"),
    }
    let slot_leases = |api: &ApiServer| {
        api.holders(NS)
            .into_keys()
            .filter(|k| k.contains("-slot-"))
            .count()
    };
    assert_eq!(slot_leases(&api), 2, "no third slot Lease");
    // c, waiting, keeps the fleet's overuse record.
    assert!(api.leases(NS).contains_key("acme-overuse"));

    // a shuts down: its Lease is deleted, and a new pod gets the slot at once.
    let freed = a.instance_slot().unwrap();
    a.shutdown().await;
    assert_eq!(a.instance_slot(), None);

    assert!(!api.leases(NS).contains_key(&format!("acme-slot-{freed}")));
    let (d, _) =
        replica_over_http(&api.door(), "d", LicenseSource::Static(token(Some(2), exp))).await;
    eventually("the new pod d holds the freed slot", || {
        d.instance_slot() == Some(freed)
    })
    .await;
    assert_eq!(d.verdict().state, LicenseState::Valid);
    drop(b);
    assert_verbs_granted(&api);
}

#[tokio::test]
async fn api_faults_are_reported_with_their_status_and_keep_the_replica_serving() {
    let api = ApiServer::new();
    let exp = real_exp();
    let cases = [
        (Fault::Status(500), Some(500)),
        (Fault::Status(403), Some(403)),
        (Fault::Refuse, None),
        (Fault::Malformed, None),
    ];
    let mut replicas = Vec::new();
    for (i, (fault, _)) in cases.iter().enumerate() {
        let door = api.door();
        door.set(fault.clone());
        let name = format!("r{i}");
        let (m, rx) =
            replica_over_http(&door, &name, LicenseSource::Static(token(Some(5), exp))).await;
        replicas.push((door, m, rx));
    }
    for ((fault, status), (_, m, rx)) in cases.iter().zip(&mut replicas) {
        let mut seen = Vec::new();
        eventually("a failure is reported", || {
            seen.extend(drain(rx));
            seen.iter()
                .any(|e| e.name() == "license.instance_check_failed")
        })
        .await;
        match find(&seen, "license.instance_check_failed") {
            LicenseEvent::InstanceCheckFailed {
                operation,
                status: got,
                error,
            } => {
                assert_eq!(*operation, "list", "{fault:?}");
                assert_eq!(got, status, "{fault:?}: {error}");
                assert!(!error.is_empty());
                if *status == Some(403) {
                    assert!(error.contains("forbidden"), "{error}");
                }
                if *fault == Fault::Malformed {
                    assert!(error.contains("deserializ"), "{error}");
                }
            }
            other => panic!("{other:?}"),
        }
        // Faults are not a breach and not a cut-off: it keeps what it had (it had not
        // been told it has no slot) for a grace period.
        assert_eq!(m.verdict().state, LicenseState::Valid, "{fault:?}");
        assert_eq!(m.instance_slot(), None);
    }
    assert!(api.holders(NS).is_empty());
    // The API answers again: the next round (5 s later) takes a slot.
    let (door, m, _) = &replicas[0];
    door.set(Fault::None);
    for _ in 0..140 {
        if m.instance_slot().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(m.instance_slot(), Some(0));
}

#[tokio::test]
async fn a_lower_limit_frees_the_highest_slot_and_its_holder_goes_into_grace() {
    let api = ApiServer::new();
    let dir = tempfile::tempdir().unwrap();
    let exp = real_exp();
    let mut replicas = Vec::new();
    for name in ["a", "b", "c"] {
        let path = dir.path().join(format!("{name}.key"));
        std::fs::write(&path, token(Some(3), exp)).unwrap();
        let (m, _) = replica_over_http(&api.door(), name, LicenseSource::File(path.clone())).await;
        let want = replicas.len() as u32;
        eventually("the replica holds the next slot", || {
            m.instance_slot() == Some(want)
        })
        .await;
        replicas.push((path, m));
    }
    // The renewal sells 2 instances: every replica reloads it.
    for (path, m) in &replicas {
        std::fs::write(path, token(Some(2), exp)).unwrap();
        m.check_now().await;
    }
    let (_, c) = &replicas[2];
    eventually("c gave slot 2 up and is in grace", || {
        c.instance_slot().is_none() && c.verdict().reason == Some(GraceReason::InstanceLimit)
    })
    .await;
    assert_eq!(replicas[0].1.instance_slot(), Some(0));
    assert_eq!(replicas[1].1.instance_slot(), Some(1));
    let holders = api.holders(NS);
    // (c, waiting now, keeps the fleet's overuse record beside the two slots.)
    assert_eq!(
        holders.keys().map(String::as_str).collect::<Vec<_>>(),
        ["acme-overuse", "acme-slot-0", "acme-slot-1"]
    );
    assert_verbs_granted(&api);
}

#[test]
fn the_role_in_deploy_grants_every_verb_the_slots_use() {
    use yaml_rust2::YamlLoader;
    let text = std::fs::read_to_string("deploy/kubernetes.yaml").unwrap();
    let docs = YamlLoader::load_from_str(&text).unwrap();
    let role = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Role"))
        .expect("a Role in deploy/kubernetes.yaml");
    let rule = role["rules"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|r| {
            r["resources"]
                .as_vec()
                .is_some_and(|v| v.iter().any(|x| x.as_str() == Some("leases")))
        })
        .expect("a rule on leases");
    assert!(
        rule["apiGroups"]
            .as_vec()
            .unwrap()
            .iter()
            .any(|g| g.as_str() == Some("coordination.k8s.io"))
    );
    let verbs: BTreeSet<&str> = rule["verbs"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for verb in API_VERBS {
        assert!(verbs.contains(verb), "the Role lacks `{verb}` on leases");
    }
    // The Role is bound to the Deployment's service account, which gets the downward API.
    let binding = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("RoleBinding"))
        .expect("a RoleBinding");
    assert_eq!(
        binding["roleRef"]["name"].as_str(),
        role["metadata"]["name"].as_str()
    );
    let account = binding["subjects"][0]["name"].as_str().unwrap();
    let deployment = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"].as_str(), Some(account));
    let env = pod["containers"][0]["env"].as_vec().unwrap();
    let field = |name: &str| {
        env.iter()
            .find(|e| e["name"].as_str() == Some(name))
            .and_then(|e| e["valueFrom"]["fieldRef"]["fieldPath"].as_str())
    };
    assert_eq!(field("POD_NAME"), Some("metadata.name"));
    assert_eq!(field("POD_UID"), Some("metadata.uid"));
}

// ---- paused time, in-process transport ----

/// A replica in paused time whose client runs in-process through `door`.
async fn replica(
    door: &Door,
    name: &str,
    clock: &TestClock,
    max: u64,
    grace: Duration,
) -> (LicenseMonitor, broadcast::Receiver<LicenseEvent>) {
    let builder = builder(
        clock,
        LicenseSource::Static(token(Some(max), T0 + 90 * DAY)),
    )
    .grace_period(grace)
    .instance_slots(slots(name).client(door.client(NS)));
    start(builder).await
}

/// Runs paused time for `secs` seconds in one-second steps.
async fn tick(secs: u64) {
    for _ in 0..secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_crashed_holders_slot_is_taken_over_after_a_lease_duration_of_the_observers_time() {
    let api = ApiServer::new();
    let hour = Duration::from_secs(3600);
    // The holder's wall clock is an hour behind and the waiter's an hour ahead: were
    // `renewTime` compared with the waiter's clock, the slot would look long expired.
    let a_clock = TestClock::new(at(T0 - HOUR));
    let b_clock = TestClock::new(at(T0 + HOUR));
    let a_door = api.door();
    let (a, _) = replica(&a_door, "a", &a_clock, 1, hour).await;
    tick(1).await;
    assert_eq!(a.instance_slot(), Some(0));
    let (b, mut b_events) = replica(&api.door(), "b", &b_clock, 1, hour).await;
    tick(1).await;
    assert_eq!(b.instance_slot(), None);
    // The metrics say who holds what.
    let scrape = |m: &LicenseMonitor| iosetu_license::MetricsService::new(m).render().unwrap();
    assert!(
        scrape(&a).contains("\niosetu_license_instance_slot 0.0\n"),
        "{}",
        scrape(&a)
    );
    assert!(scrape(&b).contains("\niosetu_license_instance_slot -1.0\n"));
    assert!(scrape(&b).contains("\niosetu_license_instances_max 1.0\n"));
    // New to the fleet, b settles first (quiet, valid), then goes into grace.
    assert!(scrape(&b).contains("\niosetu_license_instance_settling 1.0\n"));
    assert!(b.verdict().is_valid());
    // a renews every 20 s; the slot never looks free to b meanwhile.
    tick(200).await;
    assert_eq!(b.instance_slot(), None);
    assert_eq!(b.verdict().reason, Some(GraceReason::InstanceLimit));
    assert!(scrape(&b).contains("\niosetu_license_instance_settling 0.0\n"));
    // a crashes: its process is gone without a word to the API server.
    a_door.set(Fault::Refuse);
    drop(a);
    let last_write = tokio::time::Instant::now();
    let mut taken = None;
    for s in 0..120 {
        tick(1).await;
        if b.instance_slot() == Some(0) {
            taken = Some(s + 1);
            break;
        }
    }
    let taken = taken.expect("b takes the slot over within two minutes");
    // a's last renewal was at most 20 s before the crash; b waits a full lease duration
    // after it last saw the Lease change, listing every 10-12 s.
    assert!(
        taken as u64 + 20 >= LEASE_DURATION.as_secs(),
        "taken over {taken} s after the crash: before the lease could have expired"
    );
    assert!(
        taken <= 60 + 2 * 12,
        "taken over only {taken} s after the crash"
    );
    let _ = last_write;
    assert_eq!(b.verdict().state, LicenseState::Valid);
    let seen = drain(&mut b_events);
    assert!(
        names(&seen).contains(&"license.grace_mode_exited"),
        "{:?}",
        names(&seen)
    );
    assert_eq!(
        pod_of(api.holder(NS, "acme-slot-0").as_deref()),
        Some("b_uid-b")
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_slot_grace_runs_out_into_a_cut_off_and_a_freed_slot_ends_it() {
    let api = ApiServer::new();
    let clock = TestClock::new(t0());
    let hour = Duration::from_secs(3600);
    let (a, _) = replica(&api.door(), "a", &clock, 1, hour).await;
    tick(1).await;
    let (b, _) = replica(&api.door(), "b", &clock, 1, hour).await;
    // It settles for two lease durations first.
    tick(120).await;
    assert!(b.verdict().is_valid());
    tick(1).await;
    let grace = b.verdict();
    assert_eq!(grace.state, LicenseState::Grace);
    assert_eq!(grace.reason, Some(GraceReason::InstanceLimit));
    let ends = grace.grace_ends_at.unwrap();
    assert_eq!(secs(ends) - secs(grace.grace_started_at.unwrap()), HOUR);
    // Paused time jumps to the end of grace; the checker wakes at its exact second.
    tokio::time::sleep(Duration::from_secs(HOUR as u64)).await;
    tick(1).await;
    assert_eq!(b.verdict().state, LicenseState::GraceExpired);
    assert!(!b.verdict().admits());
    assert_eq!(a.verdict().state, LicenseState::Valid);
    // a gives its slot back; b finds it at its next round and serves again.
    a.shutdown().await;
    // A second call answers at once (paused time: waiting out its 5 s bound would show).
    let again = tokio::time::Instant::now();
    a.shutdown().await;
    assert_eq!(again.elapsed(), Duration::ZERO);
    tick(13).await;
    assert_eq!(b.instance_slot(), Some(0));
    assert_eq!(b.verdict().state, LicenseState::Valid);
}

#[tokio::test(start_paused = true)]
async fn a_partitioned_holder_stops_counting_before_its_slot_can_be_taken_and_serves_a_grace_period()
 {
    let api = ApiServer::new();
    let clock = TestClock::new(t0());
    let hour = Duration::from_secs(3600);
    let a_door = api.door();
    let (a, mut a_events) = replica(&a_door, "a", &clock, 1, hour).await;
    tick(1).await;
    let (b, _) = replica(&api.door(), "b", &clock, 1, hour).await;
    tick(30).await;
    assert_eq!(a.instance_slot(), Some(0));
    // a is cut off from the API server.
    a_door.set(Fault::Refuse);
    let cut = tokio::time::Instant::now();
    let mut a_stopped = None;
    let mut b_took = None;
    for _ in 0..150 {
        tick(1).await;
        let elapsed = cut.elapsed().as_secs();
        if a_stopped.is_none() && a.instance_slot().is_none() {
            a_stopped = Some(elapsed);
        }
        if b_took.is_none() && b.instance_slot() == Some(0) {
            b_took = Some(elapsed);
        }
        // Never two holders at once.
        assert!(a.instance_slot().is_none() || b.instance_slot().is_none());
    }
    let (a_stopped, b_took) = (a_stopped.unwrap(), b_took.unwrap());
    assert!(a_stopped <= RENEW_DEADLINE.as_secs(), "{a_stopped}");
    assert!(
        b_took > a_stopped,
        "b took over at {b_took} s, a stopped at {a_stopped} s"
    );
    let seen = drain(&mut a_events);
    let lost = find(&seen, "license.instance_slot_lost");
    assert!(
        matches!(
            lost,
            LicenseEvent::InstanceSlotLost {
                reason: "renew_failed",
                ..
            }
        ),
        "{lost:?}"
    );
    assert!(names(&seen).contains(&"license.instance_check_failed"));
    // Partitioned, a keeps what it had for one grace period of failures...
    assert_eq!(a.verdict().state, LicenseState::Valid);
    tokio::time::sleep(hour).await;
    tick(6).await;
    // ...then counts as holding none: grace, cut off a grace period later.
    let v = a.verdict();
    assert_eq!(v.state, LicenseState::Grace);
    assert_eq!(v.reason, Some(GraceReason::InstanceLimit));
    tokio::time::sleep(hour).await;
    tick(6).await;
    assert_eq!(a.verdict().state, LicenseState::GraceExpired);
    // The partition heals: b holds the slot, so a stays cut off.
    a_door.set(Fault::None);
    tick(30).await;
    assert_eq!(a.verdict().state, LicenseState::GraceExpired);
    assert_eq!(b.instance_slot(), Some(0));
    assert_eq!(b.verdict().state, LicenseState::Valid);
}

#[tokio::test(start_paused = true)]
async fn a_claim_applied_but_unanswered_is_recognised_as_our_own_at_the_next_round() {
    let api = ApiServer::new();
    let clock = TestClock::new(t0());
    let door = api.door();
    // The create reaches the API server, but the connection drops before the answer.
    door.set(Fault::UnansweredWrites);
    let (a, mut events) = replica(&door, "a", &clock, 2, Duration::from_secs(3600)).await;
    tick(1).await;
    assert_eq!(a.instance_slot(), None);
    assert_eq!(
        pod_of(api.holder(NS, "acme-slot-0").as_deref()),
        Some("a_uid-a"),
        "the create was applied"
    );
    door.set(Fault::None);
    tick(6).await;
    // The Lease names this pod: it is taken back, not a second slot created.
    assert_eq!(a.instance_slot(), Some(0));
    assert_eq!(api.holders(NS).len(), 1);
    let seen = drain(&mut events);
    assert!(names(&seen).contains(&"license.instance_check_failed"));
    assert!(names(&seen).contains(&"license.instance_slot_acquired"));
    assert_eq!(a.verdict().state, LicenseState::Valid);
}

#[tokio::test(start_paused = true)]
async fn a_lease_deleted_by_hand_is_created_again_by_its_holder() {
    let api = ApiServer::new();
    let clock = TestClock::new(t0());
    let (a, _) = replica(&api.door(), "a", &clock, 1, Duration::from_secs(3600)).await;
    tick(1).await;
    assert_eq!(a.instance_slot(), Some(0));
    assert!(api.remove(NS, "acme-slot-0"));
    // The next renewal finds it gone (404) and creates it again.
    tick(21).await;
    assert_eq!(a.instance_slot(), Some(0));
    assert_eq!(
        pod_of(api.holder(NS, "acme-slot-0").as_deref()),
        Some("a_uid-a")
    );
}

// ---- holder identities ----

/// The operation and error of the first `license.instance_check_failed` in `seen`.
fn check_failed(seen: &[LicenseEvent]) -> (&'static str, &str) {
    match find(seen, "license.instance_check_failed") {
        LicenseEvent::InstanceCheckFailed {
            operation, error, ..
        } => (*operation, error.as_str()),
        other => panic!("{other:?}"),
    }
}

/// A replica in paused time with the given slot settings (its client through `door`).
async fn replica_with(
    door: &Door,
    slots: InstanceSlots,
    clock: &TestClock,
    max: u64,
) -> (LicenseMonitor, broadcast::Receiver<LicenseEvent>) {
    let builder = builder(
        clock,
        LicenseSource::Static(token(Some(max), T0 + 90 * DAY)),
    )
    .grace_period(Duration::from_secs(30 * 86_400))
    .instance_slots(slots.client(door.client(NS)));
    start(builder).await
}

#[tokio::test(start_paused = true)]
async fn replicas_that_share_a_pod_name_and_uid_never_both_hold_a_slot() {
    // A copied environment (or a template without the downward API that sets the same
    // values everywhere): four processes with one pod name and UID, on a limit of one.
    let api = ApiServer::new();
    let clock = TestClock::new(t0());
    let mut fleet = Vec::new();
    for _ in 0..4 {
        fleet.push(replica_with(&api.door(), slots("web"), &clock, 1).await.0);
    }
    let mut holding_seconds = 0;
    for second in 0..600 {
        tick(1).await;
        let holding = fleet.iter().filter(|m| m.instance_slot().is_some()).count();
        assert!(holding <= 1, "{holding} holders at second {second}");
        holding_seconds += holding;
        // (After the others' settling: two lease durations.)
        if second >= 130 {
            let in_grace = fleet
                .iter()
                .filter(|m| m.verdict().reason == Some(GraceReason::InstanceLimit))
                .count();
            assert!(in_grace >= 3, "{in_grace} in grace at second {second}");
        }
    }
    assert!(
        holding_seconds >= 590,
        "the slot stays held: {holding_seconds}"
    );
    let leases = api.leases(NS);
    assert_eq!(leases.keys().filter(|k| k.contains("-slot-")).count(), 1);
    // The three in grace keep the fleet's overuse record.
    let record = &leases["acme-overuse"];
    let annotations = record.metadata.annotations.as_ref().unwrap();
    assert!(annotations.contains_key("iosetu-license/overuse-since"));
}

#[tokio::test(start_paused = true)]
async fn a_restarted_container_takes_its_pods_slot_over_after_55_s_not_at_once() {
    let api = ApiServer::new();
    let clock = TestClock::new(t0());
    let door = api.door();
    let (a, _) = replica_with(&door, slots("web"), &clock, 1).await;
    tick(1).await;
    assert_eq!(a.instance_slot(), Some(0));
    let first = api.holder(NS, "acme-slot-0").unwrap();
    // The container dies without a word; kubelet starts it again: same pod, new process.
    door.set(Fault::Refuse);
    drop(a);
    let (again, _) = replica_with(&api.door(), slots("web"), &clock, 1).await;
    let mut taken = None;
    for s in 1..=90 {
        tick(1).await;
        if again.instance_slot() == Some(0) {
            taken = Some(s);
            break;
        }
    }
    let taken = taken.expect("the new process takes its pod's slot over");
    // 55 s of its own time since it first saw the Lease, at lists 10-12 s apart: sooner
    // than a stranger (60 s), later than a holder cut off from the API server may still
    // count itself one (50 s).
    assert!((55..=70).contains(&taken), "taken after {taken} s");
    let second = api.holder(NS, "acme-slot-0").unwrap();
    assert_ne!(first, second, "a new holder identity");
    assert_eq!(pod_of(Some(&first)), pod_of(Some(&second)));
}

#[tokio::test(start_paused = true)]
async fn without_a_pod_uid_a_replica_says_so_and_holds_no_slot() {
    // (The test process has no POD_UID; the builder is given none.)
    if std::env::var_os("POD_UID").is_some() {
        return;
    }
    let api = ApiServer::new();
    let clock = TestClock::new(t0());
    let (a, mut events) = replica_with(
        &api.door(),
        InstanceSlots::new("acme").pod_name("web"),
        &clock,
        2,
    )
    .await;
    tick(125).await;
    assert_eq!(a.instance_slot(), None);
    assert_eq!(
        api.holders(NS).len(),
        0,
        "no Lease written under a shared identity"
    );
    let seen = drain(&mut events);
    let (operation, error) = check_failed(&seen);
    assert_eq!(operation, "identity");
    assert!(error.contains("POD_UID"), "{error}");
    assert_eq!(a.verdict().reason, Some(GraceReason::InstanceLimit));
}

// ---- the built-in client ----

/// A CA, and a TLS acceptor with a certificate it signed for 127.0.0.1; the CA's DER.
fn tls_server() -> (tokio_rustls::TlsAcceptor, Vec<u8>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(params, &ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    // The server's rustls config names its provider too: nothing in this test binary
    // installs a process default.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
        ca.der().to_vec(),
    )
}

#[tokio::test]
async fn the_built_in_client_speaks_tls_to_the_clusters_ca_and_sets_no_process_default() {
    let api = ApiServer::new();
    let (acceptor, ca) = tls_server();
    let url = api.door().listen_tls(acceptor).await;
    assert!(url.starts_with("https://"));
    // What `Config::infer` makes of a pod's service account: the API server's URL, the
    // cluster's CA, a bearer token.
    let mut config = kube::Config::new(url.parse().unwrap());
    config.default_namespace = NS.into();
    config.root_cert = Some(vec![ca]);
    config.auth_info.token = Some("a-service-account-token".to_owned().into());
    let builder = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(token(Some(1), real_exp())))
        .clock(SettledClock)
        .instance_slots(slots("a").kube_config(config));
    let (a, _) = start(builder).await;
    eventually("a holds slot 0 over TLS", || a.instance_slot() == Some(0)).await;
    assert_eq!(a.verdict().state, LicenseState::Valid);
    // The TLS client named its crypto provider: the process has no default (which an
    // application's own choice would then conflict with).
    assert!(rustls::crypto::CryptoProvider::get_default().is_none());
}

#[tokio::test]
async fn a_kubeconfig_the_built_in_client_cannot_honour_is_a_clear_error() {
    let api = ApiServer::new();
    let mut config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
    config.default_namespace = NS.into();
    config.accept_invalid_certs = true;
    let builder = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(token(Some(1), real_exp())))
        .clock(SettledClock)
        .instance_slots(slots("a").kube_config(config));
    let (a, mut events) = start(builder).await;
    let mut seen = Vec::new();
    eventually("the client error is reported", || {
        seen.extend(drain(&mut events));
        names(&seen).contains(&"license.instance_check_failed")
    })
    .await;
    let (operation, error) = check_failed(&seen);
    assert_eq!(operation, "client");
    assert!(error.contains("insecure-skip-tls-verify"), "{error}");
    assert!(error.contains("InstanceSlots::client"), "{error}");
    assert_eq!(api.load(), (0, 0));
    // The replica keeps serving while it cannot count (an API fault is no breach).
    assert!(a.verdict().admits());
}

#[tokio::test(start_paused = true)]
async fn a_replaced_extra_pod_joins_the_fleets_grace_instead_of_starting_its_own() {
    let api = ApiServer::new();
    let clock = TestClock::new(t0());
    let hour = Duration::from_secs(3600);
    let (a, _) = replica(&api.door(), "a", &clock, 1, hour).await;
    tick(1).await;
    assert_eq!(a.instance_slot(), Some(0));
    // b is the extra replica: it settles for 120 s, then its grace runs.
    let b_door = api.door();
    let (b, _) = replica(&b_door, "b", &clock, 1, hour).await;
    tick(600).await;
    let first = b.verdict();
    assert_eq!(first.reason, Some(GraceReason::InstanceLimit));
    let started = secs(first.grace_started_at.unwrap());
    assert!((T0 + 115..=T0 + 125).contains(&started), "{started}");
    // A CronJob deletes b; its ReplicaSet makes a new pod c a few seconds later.
    b.shutdown().await;
    drop(b);
    tick(5).await;
    let (c, mut events) = replica(&api.door(), "c", &clock, 1, hour).await;
    tick(15).await;
    // c is not new to an overused fleet: no settling, and the fleet's grace, not its own.
    let verdict = c.verdict();
    assert_eq!(verdict.reason, Some(GraceReason::InstanceLimit));
    assert_eq!(verdict.instance_settling_until, None);
    let joined = secs(verdict.grace_started_at.unwrap());
    assert!(
        (started - 5..=started + 15).contains(&joined),
        "c's grace starts at {joined}, b's at {started}"
    );
    assert!(names(&drain(&mut events)).contains(&"license.grace_mode_entered"));
    // And it ends with the fleet's grace: an hour after b's began, c is cut off.
    tokio::time::sleep(Duration::from_secs((started + HOUR - T0) as u64 - 621)).await;
    tick(20).await;
    assert!(!c.verdict().admits(), "{:?}", c.verdict());
    assert!(a.verdict().is_valid());
}
