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
//!
//! The code: `builder` ([`InstanceSlots`]); `rules`, the slot rules as pure functions of
//! plain values (expiry and takeover, the renew deadline, failure grace, the fleet's
//! overuse record); `task`, the slot task, whose API calls drive those rules; `client`,
//! TLS and the kube client.

mod builder;
mod client;
mod rules;
mod task;

pub use builder::InstanceSlots;
pub use rules::{
    ACQUIRE_INTERVAL, CALL_TIMEOUT, CLOCK_TOLERANCE, LEASE_DURATION, RENEW_DEADLINE,
    RENEW_INTERVAL, RETRY_INTERVAL, SAME_POD_TAKEOVER,
};
pub(crate) use task::wire;
pub use task::{API_VERBS, OVERUSE_SINCE, SLOT_LABEL, SLOT_TAKEN_AT};
