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
//!   after [`SAME_POD_TAKEOVER`] (30 s), longer than a live holder's renewal interval.
//! * The holder renews every [`RENEW_INTERVAL`] and counts itself a holder only until
//!   [`RENEW_DEADLINE`] after the last renewal that went through (measured from when it
//!   was sent), well before anyone else may take the slot over.
//! * A replica without a slot lists the slots every [`ACQUIRE_INTERVAL`] (one LIST with
//!   a label selector per round) and serves in grace (reason `instance_limit`) until it
//!   gets one, or is cut off when the grace period ends.
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
/// clock, before this process takes it over. A live holder renews every
/// [`RENEW_INTERVAL`], so two live processes that share a pod never both hold.
pub const SAME_POD_TAKEOVER: Duration = Duration::from_secs(30);
/// How soon a failed API call is tried again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// How long one API call may take before it counts as failed: a hung API server must
/// not keep the task from noticing its renew deadline (and a holder counts itself one
/// until at most `RENEW_DEADLINE + CALL_TIMEOUT`, still short of `LEASE_DURATION`).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
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
}

impl fmt::Debug for InstanceSlots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceSlots")
            .field("prefix", &self.prefix)
            .field("namespace", &self.namespace)
            .field("pod_name", &self.pod_name)
            .field("pod_uid", &self.pod_uid)
            .field("client", &self.client.as_ref().map(|_| "custom"))
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
    let (without_tx, without_rx) = watch::channel(false);
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

struct SlotTask {
    prefix: String,
    selector: String,
    namespace: Option<String>,
    client: Option<kube::Client>,
    api: Option<Api<Lease>>,
    /// Who this process is, or why it cannot say (then it holds no slot).
    identity: Result<Identity, String>,
    jitter: Duration,
    grace: Duration,
    clock: Arc<dyn Clock>,
    limit: watch::Receiver<Option<u64>>,
    without: watch::Sender<bool>,
    release: mpsc::Receiver<oneshot::Sender<()>>,
    reporter: Reporter,
    held: Option<Held>,
    /// Each slot's `resourceVersion` as last listed, and when it was first seen.
    observed: HashMap<String, (String, Instant)>,
    /// The last round completed and found no free slot.
    settled_without: bool,
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
        self.without
            .send_if_modified(|w| std::mem::replace(w, without) != without);
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
        let (client, default_ns) = match self.client.clone() {
            Some(client) => {
                let ns = client.default_namespace().to_owned();
                (client, ns)
            }
            None => match in_cluster_client().await {
                Ok(pair) => pair,
                Err(e) => {
                    self.fault("client", None, e);
                    return None;
                }
            },
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
        let mut slots: HashMap<u32, Lease> = HashMap::new();
        for lease in list.items {
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
                    return self.next_renewal();
                }
                Ok(false) => continue, // another replica was faster
                Err(Fault) => return Instant::now() + RETRY_INTERVAL,
            }
        }
        self.settled_without = true;
        self.went_through();
        Instant::now() + ACQUIRE_INTERVAL + self.jitter
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
    // rustls panics building a TLS config when the application's dependencies enable
    // two crypto providers and none is installed; install ours (ring, as kube is built
    // with) only in that case, as rustls itself would with one provider.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let client =
        kube::Client::try_from(config).map_err(|e| format!("cannot build a client: {e}"))?;
    Ok((client, namespace))
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
