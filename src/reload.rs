//! What wakes the checker to re-read a license file between periodic checks: a directory
//! watch, a cheap poll, and (on Unix, when asked) SIGHUP.
//!
//! A Kubernetes secret volume never touches the license file itself: kubelet writes a new
//! `..<timestamp>` directory, points a `..data_tmp` symlink at it, renames that over
//! `..data` and removes the old directory, while `license.key` stays a symlink through
//! `..data`. A watch on the file goes silent after the first swap, so the *parent
//! directory* is watched, any event there triggers a re-read through the path, and the
//! bytes are compared with the last read. Because inotify can miss events (queue
//! overflow, network filesystems), a poll every few seconds backs the watch up.

use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc;

/// How long a changed file must stay the same before it is judged: long enough for an
/// editor's truncate-and-write or kubelet's swap to finish, short enough to stay far
/// below a second.
pub(crate) const SETTLE: Duration = Duration::from_millis(100);

/// How many times a file that keeps changing is re-read before the latest read is judged.
pub(crate) const MAX_SETTLE_ROUNDS: u32 = 20;

/// A watch on a license file's directory. Events arrive on notify's own thread and are
/// only forwarded here, as "something changed": the checker does all the work.
pub(crate) struct FileWatch {
    // Dropping the watcher ends the watch.
    _watcher: notify::RecommendedWatcher,
    changes: mpsc::Receiver<()>,
}

impl FileWatch {
    /// Watches the directory that holds `path` (not recursively).
    pub(crate) fn new(path: &Path) -> notify::Result<Self> {
        use notify::Watcher as _;
        use notify::event::{AccessKind, AccessMode, EventKind};

        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        // One pending wake is enough: the checker re-reads the file, whatever changed.
        let (tx, changes) = mpsc::channel(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let relevant = match &event {
                    // Reads (ours included) must not wake the reader, or it would loop.
                    Ok(event) => !matches!(
                        event.kind,
                        EventKind::Access(access) if access != AccessKind::Close(AccessMode::Write)
                    ),
                    // An error (say, a queue overflow) may hide a change: look.
                    Err(_) => true,
                };
                if relevant {
                    let _ = tx.try_send(());
                }
            })?;
        watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        Ok(Self {
            _watcher: watcher,
            changes,
        })
    }

    /// Waits for the next change; `None` if the watcher stopped.
    pub(crate) async fn changed(&mut self) -> Option<()> {
        self.changes.recv().await
    }
}

/// SIGHUP, for operators used to `kill -HUP` to make a daemon reload.
#[cfg(unix)]
pub(crate) struct Hangup(tokio::signal::unix::Signal);

#[cfg(unix)]
impl Hangup {
    pub(crate) fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::hangup()).map(Self)
    }

    pub(crate) async fn recv(&mut self) -> Option<()> {
        self.0.recv().await
    }
}

/// What can wake the checker besides its timers and commands. Each part is optional.
#[derive(Default)]
pub(crate) struct Triggers {
    pub(crate) watch: Option<FileWatch>,
    #[cfg(unix)]
    pub(crate) hangup: Option<Hangup>,
}

/// Why the checker woke up from a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    FileChanged,
    Hangup,
}

impl Triggers {
    /// Waits for the next trigger. A trigger whose source has gone away is disabled rather
    /// than reported again and again.
    pub(crate) async fn next(&mut self) -> Trigger {
        loop {
            let watch = async {
                match self.watch.as_mut() {
                    Some(watch) => watch.changed().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(unix)]
            let hangup = async {
                match self.hangup.as_mut() {
                    Some(hangup) => hangup.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<Option<()>>();
            tokio::select! {
                changed = watch => match changed {
                    Some(()) => return Trigger::FileChanged,
                    None => {
                        tracing::warn!(target: crate::event::TARGET, "the license file watch stopped; polling continues");
                        self.watch = None;
                    }
                },
                hup = hangup => match hup {
                    Some(()) => return Trigger::Hangup,
                    None => {
                        #[cfg(unix)]
                        { self.hangup = None; }
                    }
                },
            }
        }
    }
}

impl std::fmt::Debug for Triggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Triggers");
        d.field("watch", &self.watch.is_some());
        #[cfg(unix)]
        d.field("hangup", &self.hangup.is_some());
        d.finish()
    }
}
