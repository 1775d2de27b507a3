//! Instance limits across replicas, counted with Kubernetes Leases (feature `kubernetes`).
//!
//! A license with `max_instances: N` lets N replicas serve at once. Each replica holds
//! one *slot*: a `coordination.k8s.io/v1` Lease named `<prefix>-slot-<i>` (`i < N`) in
//! its namespace, the object client-go's leader election and kube-apiserver's own
//! identity leases use. Nothing else is involved: no gossip, no server of ours.
//!
//! * Each process is a holder of its own: `<pod name>_<pod uid>_<nonce>`, the nonce random
//!   per process, so replicas that share a pod name or UID (a copied environment) are
//!   still told apart. A pod without a UID (`POD_UID`, from the downward API) reports it
//!   and holds no slot rather than share an identity.
//! * A replica claims a slot that is absent (create), released (no holder), or expired,
//!   by an update carrying the `resourceVersion` it read: the API server applies at most
//!   one of two racing writes and answers the other 409 Conflict, so two replicas never
//!   both hold a slot; a holder whose renewal gets 409 (someone else wrote its Lease)
//!   gives it up.
//! * A slot is expired when its `resourceVersion` has not changed for
//!   [`LEASE_DURATION`] of the *observer's* monotonic time, as client-go judges leases;
//!   the holder's `renewTime` is never compared with our clock (pods' clocks disagree).
//!   A slot held by another process of this same pod (a restarted container) is expired
//!   after [`SAME_POD_TAKEOVER`] (55 s), longer than a holder cut off from the API server
//!   may still count itself one.
//! * The holder renews every [`RENEW_INTERVAL`] and counts itself a holder only until
//!   [`RENEW_DEADLINE`] after the last renewal that went through (measured from when it
//!   was sent), well before anyone else may take the slot over.
//! * A replica without a slot lists the slots every [`ACQUIRE_INTERVAL`] (one LIST with
//!   a label selector per round). New to the fleet, it first *settles*: admitted, quiet,
//!   `/health` healthy, for the builder's `instance_settling` (120 s), so that a
//!   rollout's surge pod gets the slot an old pod gives back at shutdown without paging
//!   anyone. Then it serves in grace (reason `instance_limit`) until it gets one, or is
//!   cut off when the grace period ends. A replica that lost a slot it held does not
//!   settle.
//! * The fleet remembers overuse, not the pod: every replica waiting for a slot keeps the
//!   Lease `<prefix>-overuse` (annotation [`OVERUSE_SINCE`]: when the fleet's first
//!   waiter began, re-stamped on each writer's clock with its `renewTime`, so readers
//!   take the age and never compare two pods' clocks beyond [`CLOCK_TOLERANCE`]). While
//!   it is live, settling counts from the fleet's first waiter and grace from the end of
//!   that, so restarting or replacing pods buys nothing (pods' clocks that disagree make
//!   the age short by at most their difference: a reader behind the writer counts the
//!   time since the write as none); it goes stale a lease duration
//!   (and the tolerance) after no replica waits any more. A waiter that gets a slot
//!   stamps [`SLOT_TAKEN_AT`]: while waiters get slots (a rollout), each new replica
//!   settles on its own clock.
//! * A lower limit (a renewal selling fewer instances) frees the highest slots first:
//!   their holders give them up and look for a free lower one like any other replica.
//! * [`LicenseMonitor::shutdown`](crate::LicenseMonitor::shutdown) deletes the slot, so a
//!   new pod gets it at once rather than after [`LEASE_DURATION`].
//! * API faults (unreachable, 5xx, 403, malformed answers) never crash and never breach:
//!   the replica keeps what it had for one grace period of failures
//!   (`license.instance_check_failed`), then counts as holding no slot.
//!
//! API load: a holder writes once per [`RENEW_INTERVAL`] and a waiting replica reads
//! once per [`ACQUIRE_INTERVAL`]: `holders / 20` writes and `waiting / 10` lists per
//! second (100 replicas holding slots: 5 writes/s).

use std::collections::HashMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::Clock;
use crate::checker::{InstanceLink, later};
use crate::event::{LicenseEvent, Reporter};
use crate::judge::SlotWord;

/// How long a slot may go without a renewal, on its observer's clock, before another
/// replica may take it over.
pub const LEASE_DURATION: Duration = Duration::from_secs(60);
/// How often a holder renews its slot.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(20);
/// How long after its last renewal that went through a holder still counts itself one
/// while renewals fail; a third of [`LEASE_DURATION`] short of it, so that a holder cut
/// off from the API server stops counting before anyone may take its slot.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(40);
/// How often a replica without a slot lists the slots again.
pub const ACQUIRE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a Lease held by another process of this same pod (a restarted container: the
/// same pod name and UID, another instance nonce) must go unrenewed, on the observer's
/// clock, before this process takes it over: a little longer than a holder cut off from
/// the API server may still count itself one ([`RENEW_DEADLINE`] and a last
/// [`CALL_TIMEOUT`]), so two processes that share a pod never both hold, and shorter than
/// a stranger waits ([`LEASE_DURATION`]).
pub const SAME_POD_TAKEOVER: Duration = Duration::from_secs(55);
/// How soon a failed API call is tried again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// How long one API call may take before it counts as failed: a hung API server must
/// not keep the task from noticing its renew deadline (and a holder counts itself one
/// until at most `RENEW_DEADLINE + CALL_TIMEOUT`, still short of `LEASE_DURATION`).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How far apart two pods' wall clocks may be and the fleet's overuse record still be
/// read by the writer's own timestamps (see [`OVERUSE_SINCE`]).
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(30);
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
/// The service account's namespace file in a pod.
const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// How this replica counts against `max_instances`: the slot Leases' name prefix, and
/// the pod's namespace and identity. Give it to
/// [`LicenseMonitorBuilder::instance_slots`](crate::LicenseMonitorBuilder::instance_slots).
///
/// Defaults, all from what Kubernetes gives a pod: the namespace from the service
/// account's namespace file (or the kubeconfig's context outside a cluster), the pod's
/// name from `POD_NAME` (else `HOSTNAME`, which Kubernetes sets to it) and its UID from
/// `POD_UID` (the downward API; see `deploy/kubernetes.yaml`). The client is built from
/// the in-cluster service account (or the local kubeconfig).
///
/// ```
/// use iosetu_license::InstanceSlots;
///
/// let slots = InstanceSlots::new("acme-orders"); // Leases acme-orders-slot-0, -1, ...
/// # let _ = slots;
/// ```
#[derive(Clone)]
pub struct InstanceSlots {
    prefix: String,
    namespace: Option<String>,
    pod_name: Option<String>,
    pod_uid: Option<String>,
    client: Option<kube::Client>,
    config: Option<kube::Config>,
}

impl fmt::Debug for InstanceSlots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceSlots")
            .field("prefix", &self.prefix)
            .field("namespace", &self.namespace)
            .field("pod_name", &self.pod_name)
            .field("pod_uid", &self.pod_uid)
            .field("client", &self.client.as_ref().map(|_| "custom"))
            .field("cluster_url", &self.config.as_ref().map(|c| &c.cluster_url))
            .finish()
    }
}

impl InstanceSlots {
    /// Slots named `<prefix>-slot-<i>`. The prefix is the vendor's product code: lowercase
    /// letters, digits and `-`, starting and ending with a letter or digit, at most 40
    /// characters (a Lease name and a label value must hold it).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            namespace: None,
            pod_name: None,
            pod_uid: None,
            client: None,
            config: None,
        }
    }

    /// The namespace the Leases live in (default: the pod's own).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The pod's name (default: `POD_NAME`, else `HOSTNAME`).
    pub fn pod_name(mut self, name: impl Into<String>) -> Self {
        self.pod_name = Some(name.into());
        self
    }

    /// The pod's UID (default: `POD_UID`, from the downward API). Required: a replica
    /// without one reports `license.instance_check_failed` (operation `identity`) and
    /// counts as holding no slot, rather than share an identity with its copies.
    pub fn pod_uid(mut self, uid: impl Into<String>) -> Self {
        self.pod_uid = Some(uid.into());
        self
    }

    /// Talk to the API server through this client instead of one built from the
    /// in-cluster service account (for a custom TLS or proxy setup, and for tests).
    pub fn client(mut self, client: kube::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Talk to the API server `config` describes (a kubeconfig context loaded with
    /// `kube::Config::from_kubeconfig`, say) instead of the in-cluster service account.
    /// The client is built as for the in-cluster one: TLS with ring as an explicit
    /// provider, trusting the configuration's CA alone; a proxy, an exec plugin or
    /// `insecure-skip-tls-verify` is an error (build a client and use
    /// [`client`](Self::client) for those).
    pub fn kube_config(mut self, config: kube::Config) -> Self {
        self.config = Some(config);
        self
    }

    /// The prefix is usable in a Lease name and a label value.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        let p = self.prefix.as_bytes();
        let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if p.is_empty()
            || p.len() > 40
            || !p.first().is_some_and(edge)
            || !p.last().is_some_and(edge)
            || !p.iter().all(|b| edge(b) || *b == b'-')
        {
            return Err(
                "the instance slot prefix must be 1 to 40 lowercase letters, digits \
                        and '-', starting and ending with a letter or digit",
            );
        }
        Ok(())
    }

    /// Who this process is among the slots' holders: the pod (its name and UID, from the
    /// settings or the downward-API environment) and a random nonce of this process, so
    /// that two processes never share a holder identity, whatever their environment.
    fn identity(&self) -> Result<Identity, String> {
        let env = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let name = self
            .pod_name
            .clone()
            .or_else(|| env("POD_NAME"))
            .or_else(|| env("HOSTNAME"))
            .ok_or("no pod name: set POD_NAME and POD_UID from the downward API")?;
        let uid = self.pod_uid.clone().or_else(|| env("POD_UID")).ok_or(
            "no pod UID: set POD_UID from the downward API (fieldRef metadata.uid); \
             without it this replica counts as holding no instance slot",
        )?;
        Ok(Identity::new(format!("{name}_{uid}"), nonce()))
    }
}

/// A holder identity: `<pod name>_<pod uid>_<nonce>`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Identity {
    /// `<pod name>_<pod uid>`: what processes of one pod share.
    pod: String,
    /// The whole identity, written as the Lease's `holderIdentity`.
    full: String,
}

impl Identity {
    fn new(pod: String, nonce: String) -> Self {
        let full = format!("{pod}_{nonce}");
        Self { pod, full }
    }

    /// Whether `holder` is another process of this same pod.
    fn same_pod(&self, holder: &str) -> bool {
        holder != self.full
            && holder
                .rsplit_once('_')
                .is_some_and(|(pod, _)| pod == self.pod)
    }
}

/// 64 random bits, as hex: the standard library's per-process random hash keys (seeded
/// from the operating system), enough to tell two processes apart; no secret rests on it.
fn nonce() -> String {
    use std::hash::BuildHasher;
    let state = std::collections::hash_map::RandomState::new();
    format!("{:016x}", state.hash_one(std::process::id()))
}

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
        observed: HashMap::new(),
        settled_without: false,
        ever_held: false,
        waiting_since: None,
        fleet: None,
        failing_since: None,
        standing_ok: true,
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
    /// When this replica first listed the record (any version).
    first_seen: Instant,
    /// Its current version, and when this replica first saw it (on the task's and the
    /// judge's monotonic clocks).
    version: String,
    version_seen: Instant,
    version_seen_mono: Duration,
    /// The overuse's age when this replica first saw that version: its `renewTime` minus
    /// its `overuse-since` (both on the writer's clock), plus the time since the write by
    /// this replica's clock when the two agree within [`CLOCK_TOLERANCE`].
    age_at_write: Duration,
    /// How long before this replica first saw that version a waiting replica last got a
    /// slot ([`SLOT_TAKEN_AT`], on the writer's clock, as `age_at_write`).
    taken_ago_at_write: Option<Duration>,
    /// The writer's `renewTime` was within a lease duration (and the clock tolerance) of
    /// this replica's wall clock when the version was first seen.
    recent_by_clocks: bool,
}

impl FleetRecord {
    /// Whether the record shows a fleet over its limit now: renewed within a lease
    /// duration, by this replica's own observation when it has watched the record for
    /// that long (a version that changed meanwhile, or did not), else by the writer's
    /// timestamp. A record left behind when the fleet came within its limit again goes
    /// stale a lease duration after its last renewal.
    fn live(&self, now: Instant) -> bool {
        let changed_while_watched = self.version_seen > self.first_seen;
        if now.saturating_duration_since(self.version_seen) < LEASE_DURATION
            && changed_while_watched
        {
            return true;
        }
        now.saturating_duration_since(self.first_seen) < LEASE_DURATION && self.recent_by_clocks
    }

    /// Whether waiting replicas have been getting slots (within a lease duration and the
    /// clock tolerance): the fleet is turning over, as in a rollout, and a replica new to
    /// it may settle.
    fn turning_over(&self, now: Instant) -> bool {
        self.taken_ago_at_write.is_some_and(|ago| {
            ago.saturating_add(now.saturating_duration_since(self.version_seen))
                < LEASE_DURATION + CLOCK_TOLERANCE
        })
    }

    /// The overuse's age now.
    fn age(&self, now: Instant) -> Duration {
        self.age_at_write
            .saturating_add(now.saturating_duration_since(self.version_seen))
    }
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
    observed: HashMap<String, (String, Instant)>,
    /// The last round completed and found no free slot.
    settled_without: bool,
    /// It has held a slot since it started.
    ever_held: bool,
    /// Since when API calls have been failing (none went through since).
    failing_since: Option<Instant>,
    /// When the failures began, this replica held a slot or had not been told it has
    /// none: it keeps counting as holding one for a grace period.
    standing_ok: bool,
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
                    self.failing_since = None;
                    None
                }
            };
            self.publish(limit);
            if let (Some(since), true) = (self.failing_since, self.standing_ok) {
                let flip = later(since, self.grace);
                if flip > Instant::now() {
                    wake = Some(wake.map_or(flip, |w| w.min(flip)));
                }
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
                .map(|h| (h.index, h.renewed + RENEW_DEADLINE)),
        );
        let without = match (limit, &self.held, self.failing_since) {
            (None, _, _) | (Some(_), Some(_), _) => false,
            // Without an identity of its own it never holds one.
            (Some(_), None, _) if self.identity.is_err() => true,
            (Some(_), None, Some(since)) if self.standing_ok => {
                Instant::now() >= later(since, self.grace)
            }
            (Some(_), None, Some(_)) => true,
            (Some(_), None, None) => self.settled_without,
        };
        let now = Instant::now();
        let live = self.fleet.as_ref().filter(|f| without && f.live(now));
        let word = SlotWord {
            without,
            ever_held: self.ever_held,
            fleet_waited: live.map(|f| (f.age_at_write, f.version_seen_mono)),
            fleet_turning_over: live.is_some_and(|f| f.turning_over(now)),
        };
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
            let due = held.renewed + RENEW_INTERVAL;
            if !held.retry && Instant::now() < due {
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
        self.held.as_ref().map_or_else(Instant::now, |h| h.renewed) + RENEW_INTERVAL
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
            if Instant::now() >= held.renewed + RENEW_DEADLINE {
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
            let name = slot_name(&self.prefix, index);
            match self.observed.get_mut(&name) {
                Some((known, since)) if *known != rv => {
                    *known = rv;
                    *since = seen;
                }
                Some(_) => {}
                None => {
                    self.observed.insert(name, (rv, seen));
                }
            }
            slots.insert(index, lease);
        }
        self.observed.retain(|name, _| {
            slot_index(&self.prefix, name).is_some_and(|i| slots.contains_key(&i))
        });
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
        let spec = lease.spec.as_ref();
        let renewed = spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
        let stamp = |key: &str| {
            lease
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .and_then(|v| v.parse::<k8s_openapi::jiff::Timestamp>().ok())
        };
        let since = stamp(OVERUSE_SINCE);
        let taken = stamp(SLOT_TAKEN_AT);
        // A record without its timestamps (written by hand, say) counts as just begun.
        let age_at_write = match (renewed, since) {
            (Some(renewed), Some(since)) => signed_secs(renewed, since).max(0),
            _ => 0,
        };
        let wall = k8s_openapi::jiff::Timestamp::try_from(self.clock.wall())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let window = (LEASE_DURATION + CLOCK_TOLERANCE).as_secs() as i64;
        // (A renewal stamped ahead of our clock is recent: a clock set back must not make
        // the fleet's record look old.)
        let since_write = renewed.map(|r| signed_secs(wall, r));
        let recent_by_clocks = since_write.is_some_and(|d| d <= window);
        // The time between the write and this sight, by the clocks, where they can say
        // (bounded by the window: a live record was renewed within it); nothing else.
        let since_write = since_write.filter(|_| recent_by_clocks).unwrap_or(0).max(0);
        let first_seen = self.fleet.as_ref().map_or(seen, |f| f.first_seen);
        self.fleet = Some(FleetRecord {
            lease,
            first_seen,
            version,
            version_seen: seen,
            version_seen_mono: seen_mono,
            age_at_write: Duration::from_secs(age_at_write.unsigned_abs())
                .saturating_add(Duration::from_secs(since_write.unsigned_abs())),
            taken_ago_at_write: match (renewed, taken) {
                (Some(renewed), Some(taken)) => Some(Duration::from_secs(
                    (signed_secs(renewed, taken).max(0) + since_write).unsigned_abs(),
                )),
                _ => None,
            },
            recent_by_clocks,
        });
    }

    /// Keeps the fleet's overuse record while this replica waits without a slot: carries
    /// on the live one (its times re-stamped on this replica's clock), or starts one.
    /// `taken`: this replica, which waited, has just got a slot (stamped as the last
    /// time one did). A write that races another (409) waits for the next round.
    async fn keep_record(&mut self, api: &Api<Lease>, taken: bool) {
        let now = Instant::now();
        let own_since = *self.waiting_since.get_or_insert(now);
        let own_age = now.saturating_duration_since(own_since);
        let live = self.fleet.as_ref().filter(|f| f.live(now));
        let age = live.map_or(own_age, |f| f.age(now).max(own_age));
        let taken_ago = if taken {
            Some(Duration::ZERO)
        } else {
            live.and_then(|f| {
                f.taken_ago_at_write
                    .map(|ago| ago.saturating_add(now.saturating_duration_since(f.version_seen)))
            })
        };
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

    /// Whether a listed slot may be claimed: released, this pod's own, or unchanged for
    /// a lease duration of our own time.
    fn is_free(&self, lease: &Lease, seen: Instant) -> bool {
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            .filter(|h| !h.is_empty());
        let Some(holder) = holder else {
            return true;
        };
        let Ok(me) = &self.identity else {
            return false;
        };
        if holder == me.full {
            // Our own write, applied but not answered.
            return true;
        }
        // Another process of this pod (a restarted container) waits less than a stranger,
        // but still longer than a live holder's renewal interval.
        let wait = if me.same_pod(holder) {
            SAME_POD_TAKEOVER
        } else {
            LEASE_DURATION
        };
        lease
            .metadata
            .name
            .as_ref()
            .and_then(|name| self.observed.get(name))
            .is_some_and(|(_, since)| seen.saturating_duration_since(*since) >= wait)
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
        self.failing_since = None;
        self.reported = None;
    }

    /// A call failed: reported (the same failure at most once a minute), and the fault
    /// window starts if it has not.
    fn fault(&mut self, operation: &'static str, status: Option<u16>, error: String) {
        let now = Instant::now();
        if self.failing_since.is_none() {
            self.failing_since = Some(now);
            self.standing_ok = self.held.is_some() || !self.settled_without;
        }
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

/// `a - b` in whole seconds.
fn signed_secs(a: k8s_openapi::jiff::Timestamp, b: k8s_openapi::jiff::Timestamp) -> i64 {
    a.as_second().saturating_sub(b.as_second())
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

/// A client from the in-cluster service account (or the local kubeconfig), and its
/// default namespace (the service account's namespace file in a pod).
async fn in_cluster_client() -> Result<(kube::Client, String), String> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| format!("no Kubernetes configuration: {e}"))?;
    let namespace = match std::fs::read_to_string(NAMESPACE_FILE) {
        Ok(ns) if !ns.trim().is_empty() => ns.trim().to_owned(),
        _ => config.default_namespace.clone(),
    };
    Ok((api_client(config)?, namespace))
}

/// kube's client over a connection whose TLS this crate sets up with ring as an explicit
/// provider. kube's own TLS stack builds its rustls config through the process-wide
/// default provider, installing one when none is (or panicking when the application
/// enables two): a library must not change, or depend on, process globals. The
/// layers are kube's own (base URI, authentication with token refresh, extra headers).
pub(crate) fn api_client(config: kube::Config) -> Result<kube::Client, String> {
    use kube::client::ConfigExt;

    if config.proxy_url.is_some() {
        return Err(unsupported("a proxy"));
    }
    let tls = tls_config(&config)?;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let https = match &config.tls_server_name {
        Some(name) => {
            let name = rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|e| format!("tls-server-name {name:?}: {e}"))?;
            https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => https,
    };
    let connection =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build::<_, kube::client::Body>(https.enable_http1().wrap_connector(http));
    let auth = config
        .auth_layer()
        .map_err(|e| format!("the Kubernetes credentials: {e}"))?;
    let headers = config
        .extra_headers_layer()
        .map_err(|e| format!("the Kubernetes configuration's headers: {e}"))?;
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(auth)
        .layer(headers)
        .map_err(BoxError::from)
        .service(connection);
    Ok(kube::Client::new(service, config.default_namespace))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn unsupported(what: &str) -> String {
    format!(
        "the Kubernetes configuration uses {what}, which the built-in client does not \
         support: build a kube::Client yourself and give it to InstanceSlots::client"
    )
}

/// TLS to the API server: the cluster's CA as the only trust root, ring as the provider,
/// the kubeconfig's client certificate if it names one.
fn tls_config(config: &kube::Config) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    if config.accept_invalid_certs {
        return Err(unsupported("insecure-skip-tls-verify"));
    }
    let mut roots = rustls::RootCertStore::empty();
    for der in config.root_cert.iter().flatten() {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| format!("the cluster's CA certificate: {e}"))?;
    }
    if roots.is_empty() && config.cluster_url.scheme_str() == Some("https") {
        return Err(unsupported("no certificate authority (system roots)"));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let info = &config.auth_info;
    let has_identity = info.client_certificate.is_some() || info.client_certificate_data.is_some();
    if info.exec.is_some() && !has_identity && info.token.is_none() && info.token_file.is_none() {
        // (An exec plugin may answer with a client certificate, which needs kube's TLS.)
        return Err(unsupported("an exec credential plugin"));
    }
    if !has_identity {
        return Ok(builder.with_no_client_auth());
    }
    let certificate = pem_of(
        info.client_certificate_data.as_deref(),
        info.client_certificate.as_deref(),
        "client certificate",
    )?;
    let key_data = info
        .client_key_data
        .as_ref()
        .map(|k| secrecy::ExposeSecret::expose_secret(k).to_owned());
    let key = pem_of(
        key_data.as_deref(),
        info.client_key.as_deref(),
        "client key",
    )?;
    let chain = CertificateDer::pem_slice_iter(&certificate)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the client certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| format!("the client key: {e}"))?;
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("the client certificate: {e}"))
}

/// A kubeconfig PEM given inline (base64) or as a file.
fn pem_of(data: Option<&str>, file: Option<&str>, what: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    match (data, file) {
        (Some(data), _) => base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("the kubeconfig's {what} data: {e}")),
        (None, Some(file)) => std::fs::read(file).map_err(|e| format!("the {what} {file}: {e}")),
        (None, None) => Err(format!("the kubeconfig names no {what}")),
    }
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

    #[test]
    fn prefixes_must_fit_a_lease_name_and_a_label() {
        for good in ["acme", "a", "acme-orders-2", &"a".repeat(40)] {
            assert!(InstanceSlots::new(good).check().is_ok(), "{good}");
        }
        for bad in [
            "",
            "Acme",
            "-acme",
            "acme-",
            "ac_me",
            "ac.me",
            &"a".repeat(41),
        ] {
            assert!(InstanceSlots::new(bad).check().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_identity_is_the_pod_name_and_uid_and_a_nonce_of_the_process() {
        let slots = InstanceSlots::new("acme")
            .pod_name("web-7f9c")
            .pod_uid("1234-abcd");
        let (a, b) = (slots.identity().unwrap(), slots.identity().unwrap());
        assert_eq!(a.pod, "web-7f9c_1234-abcd");
        assert!(a.full.starts_with("web-7f9c_1234-abcd_") && a.full.len() == a.pod.len() + 17);
        // Two processes with the same settings are still two holders, of one pod.
        assert_ne!(a.full, b.full);
        assert!(a.same_pod(&b.full) && b.same_pod(&a.full));
        assert!(!a.same_pod(&a.full));
        assert!(
            !a.same_pod("web-7f9c_1234-abcd"),
            "a holder of the old format is a stranger"
        );
        assert!(!a.same_pod("web-7f9c_9999_0123456789abcdef"));
    }

    #[test]
    fn without_a_pod_uid_there_is_no_identity() {
        let slots = InstanceSlots::new("acme").pod_name("web-7f9c");
        if std::env::var_os("POD_UID").is_none() {
            assert!(slots.identity().unwrap_err().contains("POD_UID"));
        }
    }
}
