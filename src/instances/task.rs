//! The slot task: the API calls (LIST, create, update, delete of `leases`) and the
//! clocks it reads, driving the pure rules of `super::rules` (which decide when a slot
//! has expired, who may take it over, how long a holder and a failing replica keep
//! their standing), and the word it sends the checker.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::InstanceSlots;
use super::client::{api_client, in_cluster_client};
use super::rules::{
    self, ACQUIRE_INTERVAL, CALL_TIMEOUT, Failures, Identity, LEASE_DURATION, Overuse,
    RETRY_INTERVAL, Stamps, Standing, Versions,
};
use crate::Clock;
use crate::emit::Reporter;
use crate::event::LicenseEvent;
use crate::judge::SlotWord;
use crate::link::InstanceLink;

/// The annotation of the fleet's overuse record (the Lease `<prefix>-overuse`): when the
/// fleet began to run more replicas than its limit, on the clock of the replica that last
/// wrote it (whose `renewTime` is on the same clock, so the difference is the overuse's
/// age whatever the readers' clocks say).
pub const OVERUSE_SINCE: &str = "iosetu-license/overuse-since";
/// The annotation of the fleet's overuse record that says when a waiting replica last got
/// a slot (on the writer's clock, as [`OVERUSE_SINCE`]).
pub const SLOT_TAKEN_AT: &str = "iosetu-license/slot-taken-at";
/// The label every slot Lease carries, whose value is the prefix: the LIST selector.
pub const SLOT_LABEL: &str = "iosetu-license/slots";
/// The API verbs used on `leases` (in the pod's namespace): what the Role must grant.
pub const API_VERBS: [&str; 4] = ["list", "create", "update", "delete"];
/// The same failed call is reported at most this often.
const FAILURE_REPORT_INTERVAL: Duration = Duration::from_secs(60);
/// Creates tried per round: a create that conflicts means a Lease of that name exists
/// that the LIST did not show (it lost its label); a round gives up after a few.
const MAX_CREATES_PER_ROUND: u32 = 3;

/// Wires a slot task to a checker: the checker's link, the sender that asks for the slot
/// to be released, and the task to spawn.
pub(crate) fn wire(
    slots: InstanceSlots,
    grace: Duration,
    reporter: Reporter,
    clock: Arc<dyn Clock>,
) -> (
    InstanceLink,
    mpsc::Sender<oneshot::Sender<()>>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (limit_tx, limit_rx) = watch::channel(None);
    let (without_tx, without_rx) = watch::channel(SlotWord::default());
    let (release_tx, release_rx) = mpsc::channel(4);
    let identity = slots.identity();
    // A fixed hash of the pod (not of the nonce, nor a random per-process one) so that
    // tests replay exactly.
    let mut hasher = DefaultHasher::new();
    identity.as_ref().ok().map(|i| &i.pod).hash(&mut hasher);
    let jitter = Duration::from_millis(hasher.finish() % 2_000);
    let task = SlotTask {
        selector: format!("{SLOT_LABEL}={}", slots.prefix),
        prefix: slots.prefix,
        namespace: slots.namespace,
        client: slots.client,
        config: slots.config,
        api: None,
        identity,
        jitter,
        grace,
        clock,
        limit: limit_rx,
        without: without_tx,
        release: release_rx,
        reporter,
        held: None,
        observed: Versions::default(),
        settled_without: false,
        ever_held: false,
        waiting_since: None,
        fleet: None,
        failures: Failures::default(),
        reported: None,
    };
    (
        InstanceLink {
            limit: limit_tx,
            without: without_rx,
        },
        release_tx,
        task.run(),
    )
}

/// The slot this replica holds.
struct Held {
    index: u32,
    /// The Lease as the API server last returned it (its `resourceVersion` is the one
    /// the next write must carry).
    lease: Lease,
    /// When the last write that went through was sent.
    renewed: Instant,
    /// The last renewal failed (retry sooner than the interval).
    retry: bool,
}

/// Why a call did not give an answer to act on.
struct Fault;

/// The fleet's overuse record (the Lease `<prefix>-overuse`), as this replica observes it.
struct FleetRecord {
    lease: Lease,
    /// Its current version.
    version: String,
    /// What it says, read on this replica's clocks.
    overuse: Overuse,
}

struct SlotTask {
    prefix: String,
    selector: String,
    namespace: Option<String>,
    client: Option<kube::Client>,
    config: Option<kube::Config>,
    api: Option<Api<Lease>>,
    /// Who this process is, or why it cannot say (then it holds no slot).
    identity: Result<Identity, String>,
    jitter: Duration,
    grace: Duration,
    clock: Arc<dyn Clock>,
    limit: watch::Receiver<Option<u64>>,
    without: watch::Sender<SlotWord>,
    /// Since when this replica has waited without a slot (it keeps the fleet's overuse
    /// record meanwhile), by this task's clock.
    waiting_since: Option<Instant>,
    /// The fleet's overuse record as last listed.
    fleet: Option<FleetRecord>,
    release: mpsc::Receiver<oneshot::Sender<()>>,
    reporter: Reporter,
    held: Option<Held>,
    /// Each slot's `resourceVersion` as last listed, and when it was first seen.
    observed: Versions,
    /// The last round completed and found no free slot.
    settled_without: bool,
    /// It has held a slot since it started.
    ever_held: bool,
    /// The API calls failing in a row, if any (none went through since).
    failures: Failures,
    /// The last failure reported, and when.
    reported: Option<(String, Instant)>,
}

/// The HTTP status of an API error, if the API server answered.
fn status_of(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

impl SlotTask {
    async fn run(mut self) {
        loop {
            let limit = *self.limit.borrow_and_update();
            let mut wake = match limit {
                Some(n) => Some(self.round(n).await),
                None => {
                    // No limit: no API calls at all (and a slot held is given back).
                    self.give_up("released").await;
                    self.settled_without = false;
                    self.failures.over();
                    None
                }
            };
            self.publish(limit);
            if let Some(flip) = self.failures.tolerated_until(self.grace)
                && flip > Instant::now()
            {
                wake = Some(wake.map_or(flip, |w| w.min(flip)));
            }
            tokio::select! {
                biased;
                request = self.release.recv() => {
                    self.give_up("released").await;
                    self.publish(None);
                    if let Some(reply) = request {
                        let _ = reply.send(());
                    }
                    // Released for good: wait, without competing, for the monitor to go,
                    // answering any later `shutdown` at once.
                    loop {
                        tokio::select! {
                            changed = self.limit.changed() => if changed.is_err() {
                                return;
                            },
                            Some(reply) = self.release.recv() => {
                                let _ = reply.send(());
                            }
                        }
                    }
                }
                changed = self.limit.changed() => if changed.is_err() {
                    // The checker is gone (every handle was dropped).
                    self.give_up("released").await;
                    return;
                },
                () = sleep_until(wake) => {}
            }
        }
    }

    /// Tells the checker whether this replica is without a slot, and the metrics which
    /// slot it holds.
    fn publish(&mut self, limit: Option<u64>) {
        // Counted as held until the renew deadline, even while a renewal is in flight.
        self.reporter.stats.set_instance_slot(
            self.held
                .as_ref()
                .map(|h| (h.index, rules::holds_until(h.renewed))),
        );
        let now = Instant::now();
        let standing = Standing {
            limited: limit.is_some(),
            holds: self.held.is_some(),
            has_identity: self.identity.is_ok(),
            settled_without: self.settled_without,
            failures: &self.failures,
        };
        let without = rules::without_slot(standing, self.grace, now);
        let fleet = self.fleet.as_ref().map(|f| &f.overuse);
        let word = rules::slot_word(without, self.ever_held, fleet, now);
        self.without
            .send_if_modified(|w| std::mem::replace(w, word) != word);
    }

    /// One round under limit `n`: renew the slot held, or look for one. Returns when the
    /// next round is due.
    async fn round(&mut self, n: u64) -> Instant {
        let Some(api) = self.api().await else {
            return Instant::now() + RETRY_INTERVAL;
        };
        if self.held.as_ref().is_some_and(|h| u64::from(h.index) >= n) {
            self.give_up("limit_lowered").await;
        }
        if let Some(held) = &self.held {
            if let Some(due) = rules::renew_after(held.renewed, held.retry, Instant::now()) {
                return due;
            }
            match self.renew(&api).await {
                Ok(true) => {
                    self.went_through();
                    return self.next_renewal();
                }
                Ok(false) => {} // lost it: look for another below
                Err(Fault) => return Instant::now() + RETRY_INTERVAL,
            }
        }
        self.acquire(&api, n).await
    }

    /// When the slot held is due for renewal.
    fn next_renewal(&self) -> Instant {
        rules::renewal_due(self.held.as_ref().map_or_else(Instant::now, |h| h.renewed))
    }

    /// The API handle, built on first use.
    async fn api(&mut self) -> Option<Api<Lease>> {
        if let Some(api) = &self.api {
            return Some(api.clone());
        }
        if let Err(why) = &self.identity {
            let why = why.clone();
            self.fault("identity", None, why);
            return None;
        }
        let built = if let Some(client) = self.client.clone() {
            let ns = client.default_namespace().to_owned();
            Ok((client, ns))
        } else if let Some(config) = self.config.clone() {
            let ns = config.default_namespace.clone();
            api_client(config).map(|client| (client, ns))
        } else {
            in_cluster_client().await
        };
        let (client, default_ns) = match built {
            Ok(pair) => pair,
            Err(e) => {
                self.fault("client", None, e);
                return None;
            }
        };
        let ns = self.namespace.clone().unwrap_or(default_ns);
        let api = Api::<Lease>::namespaced(client, &ns);
        self.api = Some(api.clone());
        Some(api)
    }

    /// Renews the slot held. `Ok(false)`: it is someone else's now.
    async fn renew(&mut self, api: &Api<Lease>) -> Result<bool, Fault> {
        let Some(held) = &mut self.held else {
            return Ok(false);
        };
        let index = held.index;
        let mut lease = held.lease.clone();
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.renew_time = Some(micro_time(self.clock.wall()));
        let name = slot_name(&self.prefix, index);
        let sent = Instant::now();
        match bounded(api.replace(&name, &PostParams::default(), &lease)).await {
            Ok(lease) => {
                *held = Held {
                    index,
                    lease,
                    renewed: sent,
                    retry: false,
                };
                Ok(true)
            }
            Err(e) if status_of(&e) == Some(409) => {
                self.lost("taken");
                Ok(false)
            }
            Err(e) if status_of(&e) == Some(404) => {
                // Deleted under us (by hand): create it again, unless someone was faster.
                match self.create(api, index).await {
                    Ok(true) => Ok(true),
                    Ok(false) => {
                        self.lost("taken");
                        Ok(false)
                    }
                    Err(Fault) => self.renewal_failed(),
                }
            }
            Err(e) => {
                self.fault("renew", status_of(&e), e.to_string());
                self.renewal_failed()
            }
        }
    }

    /// A renewal failed: retry soon, and stop counting as a holder past the deadline.
    fn renewal_failed(&mut self) -> Result<bool, Fault> {
        if let Some(held) = &mut self.held {
            held.retry = true;
            if !rules::still_holds(held.renewed, Instant::now()) {
                self.lost("renew_failed");
            }
        }
        Err(Fault)
    }

    /// One acquisition round: one LIST, then a claim on the lowest free slot.
    async fn acquire(&mut self, api: &Api<Lease>, n: u64) -> Instant {
        let list = match bounded(api.list(&ListParams::default().labels(&self.selector))).await {
            Ok(list) => list,
            Err(e) => {
                self.fault("list", status_of(&e), e.to_string());
                return Instant::now() + RETRY_INTERVAL;
            }
        };
        let seen = Instant::now();
        let seen_mono = self.clock.monotonic();
        let mut slots: HashMap<u32, Lease> = HashMap::new();
        let record_name = overuse_name(&self.prefix);
        let mut record = None;
        for lease in list.items {
            if lease.metadata.name.as_deref() == Some(record_name.as_str()) {
                record = Some(lease);
                continue;
            }
            let Some(index) = lease
                .metadata
                .name
                .as_deref()
                .and_then(|name| slot_index(&self.prefix, name))
            else {
                continue; // not one of ours (a name that only shares the label)
            };
            let Some(rv) = lease.metadata.resource_version.clone() else {
                continue; // malformed: without a version it cannot be claimed anyway
            };
            // A version not seen before starts its lease duration now.
            self.observed.see(&slot_name(&self.prefix, index), rv, seen);
            slots.insert(index, lease);
        }
        self.observed
            .keep(|name| slot_index(&self.prefix, name).is_some_and(|i| slots.contains_key(&i)));
        self.observe_record(record, seen, seen_mono);
        let mut creates = 0;
        for index in 0..u32::try_from(n).unwrap_or(u32::MAX) {
            let claimed = match slots.get(&index) {
                None => {
                    if creates == MAX_CREATES_PER_ROUND {
                        break;
                    }
                    creates += 1;
                    self.create(api, index).await
                }
                Some(lease) if self.is_free(lease, seen) => self.take(api, index, lease).await,
                Some(_) => continue,
            };
            match claimed {
                Ok(true) => {
                    self.went_through();
                    if self.waiting_since.is_some() {
                        // A waiter got a slot: the fleet is turning over (a rollout), not
                        // over its limit; new replicas may settle.
                        self.keep_record(api, true).await;
                        self.waiting_since = None;
                    }
                    return self.next_renewal();
                }
                Ok(false) => continue, // another replica was faster
                Err(Fault) => return Instant::now() + RETRY_INTERVAL,
            }
        }
        self.settled_without = true;
        self.went_through();
        self.keep_record(api, false).await;
        Instant::now() + ACQUIRE_INTERVAL + self.jitter
    }

    /// Takes in the fleet's overuse record as listed (or its absence).
    fn observe_record(&mut self, record: Option<Lease>, seen: Instant, seen_mono: Duration) {
        let Some(lease) = record else {
            self.fleet = None;
            return;
        };
        let Some(version) = lease.metadata.resource_version.clone() else {
            self.fleet = None;
            return;
        };
        if let Some(fleet) = &mut self.fleet
            && fleet.version == version
        {
            return;
        }
        let stamp = |key: &str| {
            lease
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .and_then(|v| v.parse::<k8s_openapi::jiff::Timestamp>().ok())
        };
        let stamps = Stamps {
            renewed: lease
                .spec
                .as_ref()
                .and_then(|s| s.renew_time.as_ref())
                .map(|t| t.0),
            since: stamp(OVERUSE_SINCE),
            taken: stamp(SLOT_TAKEN_AT),
        };
        let wall = k8s_openapi::jiff::Timestamp::try_from(self.clock.wall())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let first_seen = self.fleet.as_ref().map(|f| f.overuse.first_seen);
        let overuse = Overuse::read(stamps, wall, seen, seen_mono, first_seen);
        self.fleet = Some(FleetRecord {
            lease,
            version,
            overuse,
        });
    }

    /// Keeps the fleet's overuse record while this replica waits without a slot: carries
    /// on the live one (its times re-stamped on this replica's clock), or starts one.
    /// `taken`: this replica, which waited, has just got a slot (stamped as the last
    /// time one did). A write that races another (409) waits for the next round.
    async fn keep_record(&mut self, api: &Api<Lease>, taken: bool) {
        let now = Instant::now();
        let waiting_since = *self.waiting_since.get_or_insert(now);
        let fleet = self.fleet.as_ref().map(|f| &f.overuse);
        let rules::OveruseWrite { age, taken_ago } =
            rules::overuse_write(fleet, waiting_since, taken, now);
        let wall = self.clock.wall();
        let since = wall.checked_sub(age).unwrap_or(std::time::UNIX_EPOCH);
        let mut lease = self.fleet.as_ref().map_or_else(
            || Lease {
                metadata: ObjectMeta {
                    name: Some(overuse_name(&self.prefix)),
                    labels: Some([(SLOT_LABEL.to_owned(), self.prefix.clone())].into()),
                    ..ObjectMeta::default()
                },
                spec: None,
            },
            |f| f.lease.clone(),
        );
        lease
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(OVERUSE_SINCE.to_owned(), micro_time(since).0.to_string());
        if let Some(ago) = taken_ago {
            let at = wall.checked_sub(ago).unwrap_or(std::time::UNIX_EPOCH);
            lease
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(SLOT_TAKEN_AT.to_owned(), micro_time(at).0.to_string());
        }
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = self.holder();
        spec.renew_time = Some(micro_time(wall));
        spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
        let answer = if self.fleet.is_some() {
            let name = overuse_name(&self.prefix);
            bounded(api.replace(&name, &PostParams::default(), &lease)).await
        } else {
            bounded(api.create(&PostParams::default(), &lease)).await
        };
        match answer {
            Ok(written) => {
                let seen_mono = self.clock.monotonic();
                self.observe_record(Some(written), Instant::now(), seen_mono);
            }
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => {}
            Err(e) => self.fault("overuse", status_of(&e), e.to_string()),
        }
    }

    /// Whether a listed slot may be claimed (see [`rules::may_take_over`]), as of `seen`.
    fn is_free(&self, lease: &Lease, seen: Instant) -> bool {
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref());
        let unchanged_for = lease
            .metadata
            .name
            .as_deref()
            .and_then(|name| self.observed.unchanged_for(name, seen));
        rules::may_take_over(holder, self.identity.as_ref().ok(), unchanged_for)
    }

    /// Creates slot `index` for this replica. `Ok(false)`: it exists already.
    async fn create(&mut self, api: &Api<Lease>, index: u32) -> Result<bool, Fault> {
        let now = micro_time(self.clock.wall());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(slot_name(&self.prefix, index)),
                labels: Some([(SLOT_LABEL.to_owned(), self.prefix.clone())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: self.holder(),
                lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        let sent = Instant::now();
        match bounded(api.create(&PostParams::default(), &lease)).await {
            Ok(lease) => {
                self.hold(index, lease, sent);
                Ok(true)
            }
            Err(e) if status_of(&e) == Some(409) => Ok(false),
            Err(e) => {
                self.fault("create", status_of(&e), e.to_string());
                Err(Fault)
            }
        }
    }

    /// Takes over listed slot `index` with the version it was read at. `Ok(false)`: it
    /// changed since, or is gone.
    async fn take(&mut self, api: &Api<Lease>, index: u32, listed: &Lease) -> Result<bool, Fault> {
        let now = micro_time(self.clock.wall());
        let mut lease = listed.clone();
        lease
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(SLOT_LABEL.to_owned(), self.prefix.clone());
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let ours = spec.holder_identity.is_some() && spec.holder_identity == self.holder();
        if !ours {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            spec.acquire_time = Some(now.clone());
        }
        spec.holder_identity = self.holder();
        spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
        spec.renew_time = Some(now);
        let name = slot_name(&self.prefix, index);
        let sent = Instant::now();
        match bounded(api.replace(&name, &PostParams::default(), &lease)).await {
            Ok(lease) => {
                self.hold(index, lease, sent);
                Ok(true)
            }
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(false),
            Err(e) => {
                self.fault("take", status_of(&e), e.to_string());
                Err(Fault)
            }
        }
    }

    /// The `holderIdentity` this process writes.
    fn holder(&self) -> Option<String> {
        self.identity.as_ref().ok().map(|i| i.full.clone())
    }

    fn hold(&mut self, index: u32, lease: Lease, sent: Instant) {
        let new = self.held.as_ref().is_none_or(|h| h.index != index);
        self.held = Some(Held {
            index,
            lease,
            renewed: sent,
            retry: false,
        });
        self.settled_without = false;
        self.ever_held = true;
        if new {
            let max_instances = (*self.limit.borrow()).unwrap_or(0);
            self.reporter.emit(LicenseEvent::InstanceSlotAcquired {
                slot: index,
                lease: slot_name(&self.prefix, index),
                max_instances,
            });
        }
    }

    /// The slot held is no longer ours to count.
    fn lost(&mut self, reason: &'static str) {
        if let Some(held) = self.held.take() {
            self.reporter.emit(LicenseEvent::InstanceSlotLost {
                slot: held.index,
                lease: slot_name(&self.prefix, held.index),
                reason,
            });
        }
    }

    /// Gives the slot held back (deletes its Lease, if it is still the version we
    /// wrote), so that another replica can create it at once.
    async fn give_up(&mut self, reason: &'static str) {
        let Some(held) = &self.held else {
            return;
        };
        let name = slot_name(&self.prefix, held.index);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: held.lease.metadata.resource_version.clone(),
                uid: held.lease.metadata.uid.clone(),
            }),
            ..DeleteParams::default()
        };
        if let Some(api) = &self.api {
            match bounded(api.delete(&name, &params)).await {
                // Gone already, or someone else's now: nothing of ours to delete.
                Ok(_) => {}
                Err(e) if matches!(status_of(&e), Some(404 | 409)) => {}
                Err(e) => {
                    // It expires by itself after a lease duration.
                    let status = status_of(&e);
                    self.fault("release", status, e.to_string());
                }
            }
        }
        self.lost(reason);
    }

    /// A call went through: failures (if any) are over.
    fn went_through(&mut self) {
        self.failures.over();
        self.reported = None;
    }

    /// A call failed: reported (the same failure at most once a minute), and the fault
    /// window starts if it has not.
    fn fault(&mut self, operation: &'static str, status: Option<u16>, error: String) {
        let now = Instant::now();
        let standing_ok = self.held.is_some() || !self.settled_without;
        self.failures.failed(now, standing_ok);
        let key = format!("{operation}:{status:?}:{error}");
        let fresh = match &self.reported {
            Some((last, at)) => *last != key || now >= *at + FAILURE_REPORT_INTERVAL,
            None => true,
        };
        if fresh {
            self.reported = Some((key, now));
            self.reporter.emit(LicenseEvent::InstanceCheckFailed {
                operation,
                status,
                error,
            });
        }
    }
}

/// An API call with [`CALL_TIMEOUT`]: no answer in time is a failure like any other.
async fn bounded<T>(call: impl Future<Output = Result<T, kube::Error>>) -> Result<T, kube::Error> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(answer) => answer,
        Err(_) => Err(kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the API server did not answer within 10 s",
        )))),
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The fleet's overuse record: `<prefix>-overuse` (not a slot name: no `-slot-`).
fn overuse_name(prefix: &str) -> String {
    format!("{prefix}-overuse")
}

/// `<prefix>-slot-<index>`.
fn slot_name(prefix: &str, index: u32) -> String {
    format!("{prefix}-slot-{index}")
}

/// The index in a slot name of this prefix (canonical decimal only: `-slot-01` is not a
/// slot, so no two names share an index).
fn slot_index(prefix: &str, name: &str) -> Option<u32> {
    let digits = name.strip_prefix(prefix)?.strip_prefix("-slot-")?;
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn micro_time(at: std::time::SystemTime) -> MicroTime {
    // A wall clock before 1970 or past 9999 is written as the epoch: the field is for
    // people reading the Lease; nothing here compares it.
    MicroTime(
        k8s_openapi::jiff::Timestamp::try_from(at)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_round_trip_and_only_canonical_ones_count() {
        assert_eq!(slot_name("acme", 0), "acme-slot-0");
        assert_eq!(slot_index("acme", "acme-slot-0"), Some(0));
        assert_eq!(slot_index("acme", "acme-slot-41"), Some(41));
        for not_ours in [
            "acme-slot-",
            "acme-slot-01",
            "acme-slot--1",
            "acme-slot-1a",
            "acme-slot-99999999999",
            "acme-x-slot-1",
            "other-slot-1",
            "acme",
        ] {
            assert_eq!(slot_index("acme", not_ours), None, "{not_ours}");
        }
    }
}
