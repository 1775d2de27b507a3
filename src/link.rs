//! The channels between the checker and the instance-slot task (`crate::instances`), in
//! a leaf of their own: the slot task makes them, the checker holds its end, and neither
//! imports the other.

use tokio::sync::watch;

use crate::judge::SlotWord;

/// The checker's side of the instance-slot task: the checker tells it the limit in
/// force, it tells the checker whether this replica is without a slot.
pub(crate) struct InstanceLink {
    pub(crate) limit: watch::Sender<Option<u64>>,
    /// The task's word; `without` there after a grace period of API faults.
    pub(crate) without: watch::Receiver<SlotWord>,
}
