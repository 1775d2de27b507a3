//! What the shell and the tasks (the checker, the instance slots, the usage journal)
//! share to run: blocking I/O off the async workers with a deadline.

use std::time::Duration;

use tokio::task::AbortHandle;

/// How long a read or write of a file may take before it counts as hung (a dead network
/// or FUSE mount): the checker goes on, and the last good license stays.
pub(crate) const IO_DEADLINE: Duration = Duration::from_secs(5);

/// Why blocking work could not give an answer.
pub(crate) enum OffThread {
    /// It has not returned within [`IO_DEADLINE`] (or an earlier call still has not).
    Hung,
    /// It panicked.
    Failed,
}

/// Runs blocking file I/O on tokio's blocking pool with a deadline. A call that hangs is
/// left running (a thread stuck in the kernel cannot be cancelled) and remembered in
/// `slot`; until it returns, no further call is started, so a dead mount costs one thread.
pub(crate) async fn off_thread<T: Send + 'static>(
    slot: &mut Option<AbortHandle>,
    deadline: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, OffThread> {
    if slot.as_ref().is_some_and(|hung| !hung.is_finished()) {
        return Err(OffThread::Hung);
    }
    *slot = None;
    let mut handle = tokio::task::spawn_blocking(work);
    match tokio::time::timeout(deadline, &mut handle).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(OffThread::Failed),
        Err(_) => {
            *slot = Some(handle.abort_handle());
            Err(OffThread::Hung)
        }
    }
}
