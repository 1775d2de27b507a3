//! Real OS processes on one usage journal (`tests/usage_honest.rs`): the test binary
//! re-executed as a child that runs one monitor with a usage journal, in paused time on a
//! test clock (hours pass in milliseconds), following a plan of steps and telling the
//! parent how far it got through a small progress file.
//!
//! The parent spawns [`ChildProcess`]es; the test binary must hold a `#[test] fn
//! child_entry()` that calls [`child_main`] (it returns at once unless the child's
//! environment is set). A child never outlives its test: the guard kills it when dropped,
//! and a child waiting for the parent exits when its stdin closes.
//!
//! Plan steps (comma-separated, `IOSETU_USAGE_CHILD_PLAN`):
//!
//! * `barrier`: wait (at most 20 s of real time) for the barrier file to exist, so that
//!   two children start their monitors at once;
//! * `start`: start the monitor (the license, the journal, the test clock at the given
//!   start time) and set the gauge `seats`;
//! * `run:M`: M minutes of test time, adding 1 to the counter `api_calls` at the start of
//!   each (so `api_calls` counts the minutes that ran);
//! * `mark:NAME`: write NAME to the progress file (and the events seen so far beside it);
//! * `wait`: block (test time frozen, the process alive, its files open) until the parent
//!   writes a line to stdin; exit at once if stdin closes;
//! * `hang`: block until killed (exit at once if stdin closes);
//! * `limit:B` (unix): lower this process's soft file-size limit (`RLIMIT_FSIZE`) to the
//!   journal's current length plus B bytes: the next append writes B bytes and fails
//!   (`EFBIG`; the parent starts the child with `SIGXFSZ` ignored), later ones fail whole;
//! * `unlimit` (unix): raise the soft limit back to the hard one (space freed);
//! * `jump:S`: step the test clock's wall side by S seconds (negative: back), as NTP's
//!   step or `date -s` would (`TestClock::jump_wall`); monotonic time and the runtime's
//!   timers do not move;
//! * `stop`: `monitor.shutdown()` (the graceful stop); the child then exits 0.

use std::ffi::OsString;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use iosetu_license::{LicenseEvent, LicenseMonitor, LicenseSource, TestClock};

use super::{MINUTE, at, builder, run_for};

const PLAN: &str = "IOSETU_USAGE_CHILD_PLAN";
const JOURNAL: &str = "IOSETU_USAGE_CHILD_JOURNAL";
const START: &str = "IOSETU_USAGE_CHILD_START";
const SEATS: &str = "IOSETU_USAGE_CHILD_SEATS";
const LICENSE: &str = "IOSETU_USAGE_CHILD_LICENSE";
const PROGRESS: &str = "IOSETU_USAGE_CHILD_PROGRESS";
const BARRIER: &str = "IOSETU_USAGE_CHILD_BARRIER";

/// How long the parent waits for a child's mark or exit, and a child for the barrier.
pub const PATIENCE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

/// `path` with `suffix` appended to its file name (`usage.jsonl` + `.1`).
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// What a child does.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// For messages.
    pub name: String,
    /// The usage journal's path (the set's base path).
    pub journal: PathBuf,
    /// The test clock's wall time at start (seconds since the epoch).
    pub start: i64,
    /// The gauge `seats` from the start.
    pub seats: u64,
    /// The license (a token, or lines of tokens).
    pub license: String,
    /// The steps, comma-separated.
    pub plan: String,
    /// A file whose appearance the `barrier` step waits for.
    pub barrier: Option<PathBuf>,
    /// Start it through `bash -c "trap '' XFSZ; exec ..."`: a write past the file-size
    /// limit then fails with `EFBIG` instead of killing the process.
    pub ignore_xfsz: bool,
}

/// A running child; killed and reaped when dropped.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    progress: PathBuf,
    log: PathBuf,
}

impl ChildProcess {
    /// Spawns `spec`; its progress and log files go in `dir` (named after it).
    pub fn spawn(dir: &Path, spec: &ChildSpec) -> ChildProcess {
        let progress = dir.join(format!("{}.progress", spec.name));
        let log = dir.join(format!("{}.log", spec.name));
        let _ = std::fs::remove_file(&progress);
        let exe = std::env::current_exe().expect("the test binary");
        let args = ["--exact", "child_entry", "--nocapture", "--test-threads=1"];
        let mut command = if spec.ignore_xfsz {
            let mut c = Command::new("bash");
            c.arg("-c")
                .arg(r#"trap '' XFSZ; exec "$0" "$@""#)
                .arg(&exe)
                .args(args);
            c
        } else {
            let mut c = Command::new(&exe);
            c.args(args);
            c
        };
        let out = std::fs::File::create(&log).expect("the child's log");
        let err = out.try_clone().expect("the child's log");
        command
            .env(PLAN, &spec.plan)
            .env(JOURNAL, &spec.journal)
            .env(START, spec.start.to_string())
            .env(SEATS, spec.seats.to_string())
            .env(LICENSE, &spec.license)
            .env(PROGRESS, &progress)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err);
        if let Some(barrier) = &spec.barrier {
            command.env(BARRIER, barrier);
        }
        let mut child = command.spawn().expect("spawn the child");
        let stdin = child.stdin.take();
        ChildProcess {
            name: spec.name.clone(),
            child,
            stdin,
            progress,
            log,
        }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (at most [`PATIENCE`]) until the child has written `mark`; panics with its
    /// log if it exits or takes longer.
    pub fn wait_mark(&mut self, mark: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if std::fs::read_to_string(&self.progress).is_ok_and(|p| p.trim() == mark) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "child {} exited ({status}) before mark {mark:?}; its log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "child {} did not reach mark {mark:?} in {PATIENCE:?}; its log:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Lets a child blocked in `wait` go on.
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("the child's stdin");
        stdin.write_all(b"go\n").expect("tell the child to go on");
        stdin.flush().expect("tell the child to go on");
    }

    /// SIGKILL (on unix), and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the child");
        let status = self.child.wait().expect("reap the child");
        assert!(!status.success(), "{status}");
    }

    /// Waits (at most [`PATIENCE`]) for the child to exit; panics with its log unless it
    /// succeeded.
    pub fn finish(&mut self) {
        let status = self.wait_exit();
        assert!(
            status.success(),
            "child {} failed ({status}); its log:\n{}",
            self.name,
            self.log_text()
        );
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("the child's status") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "child {} did not exit in {PATIENCE:?}; its log:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(POLL);
        }
    }

    /// The events the child had seen at its last mark (`name {debug}`, one a line).
    pub fn events(&self) -> String {
        std::fs::read_to_string(sibling(&self.progress, ".events")).unwrap_or_default()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // (Killing an exited, reaped child is an error; nothing to do then.)
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `text` to `path` whole (a temporary file and a rename): a reader never sees
/// half of it.
fn write_whole(path: &Path, text: &str) {
    let tmp = sibling(path, ".tmp");
    std::fs::write(&tmp, text).expect("write progress");
    std::fs::rename(&tmp, path).expect("write progress");
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// Blocks until the parent writes a line; exits the process if stdin closes (the parent
/// is gone).
fn block_on_stdin() {
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(n) if n > 0 => {}
        _ => std::process::exit(3),
    }
}

/// The child's side: returns at once unless this process was started as a child.
pub fn child_main() {
    let Ok(plan) = std::env::var(PLAN) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(run_plan(&plan));
}

async fn run_plan(plan: &str) {
    let journal = PathBuf::from(var(JOURNAL));
    let start: i64 = var(START).parse().expect("a start time");
    let seats: u64 = var(SEATS).parse().expect("seats");
    let license = var(LICENSE);
    let progress = PathBuf::from(var(PROGRESS));
    let events_file = sibling(&progress, ".events");
    let mut events_seen: Vec<String> = Vec::new();
    let clock = TestClock::new(at(start));
    let mut monitor: Option<LicenseMonitor> = None;
    let mut events: Option<tokio::sync::broadcast::Receiver<LicenseEvent>> = None;
    #[cfg(unix)]
    let hard = rustix::process::getrlimit(rustix::process::Resource::Fsize).maximum;
    for step in plan.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (verb, arg) = step.split_once(':').unwrap_or((step, ""));
        match verb {
            "barrier" => {
                let barrier = PathBuf::from(var(BARRIER));
                let deadline = Instant::now() + PATIENCE;
                while !barrier.exists() {
                    assert!(Instant::now() < deadline, "no barrier in {PATIENCE:?}");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            "start" => {
                let b =
                    builder(&clock, LicenseSource::Static(license.clone())).usage_journal(&journal);
                let rx = b.subscribe();
                let m = b.start().await.expect("start the monitor");
                m.usage().set("seats", seats).expect("seats");
                monitor = Some(m);
                events = Some(rx);
            }
            "run" => {
                let minutes: u64 = arg.parse().expect("run:<minutes>");
                let m = monitor.as_ref().expect("run before start");
                let calls = m.usage().counter("api_calls").expect("api_calls");
                for _ in 0..minutes {
                    calls.add(1);
                    run_for(MINUTE).await;
                }
            }
            "mark" => {
                if let Some(rx) = events.as_mut() {
                    for e in super::drain(rx) {
                        events_seen.push(format!("{} {e:?}", e.name()));
                    }
                }
                // (Best effort: under a file-size limit it may fail; the mark must not.)
                let _ = std::fs::write(&events_file, events_seen.join("\n") + "\n");
                write_whole(&progress, &format!("{arg}\n"));
            }
            "wait" => block_on_stdin(),
            "hang" => loop {
                block_on_stdin();
            },
            #[cfg(unix)]
            "limit" => {
                let extra: u64 = arg.parse().expect("limit:<bytes>");
                let len = std::fs::metadata(&journal).map_or(0, |m| m.len());
                rustix::process::setrlimit(
                    rustix::process::Resource::Fsize,
                    rustix::process::Rlimit {
                        current: Some(len + extra),
                        maximum: hard,
                    },
                )
                .expect("lower RLIMIT_FSIZE");
                events_seen.push(format!("rlimit_fsize {}", len + extra));
            }
            #[cfg(unix)]
            "unlimit" => {
                rustix::process::setrlimit(
                    rustix::process::Resource::Fsize,
                    rustix::process::Rlimit {
                        current: hard,
                        maximum: hard,
                    },
                )
                .expect("raise RLIMIT_FSIZE");
            }
            "jump" => {
                let seconds: i64 = arg.parse().expect("jump:<seconds>");
                clock.jump_wall(seconds);
            }
            "stop" => {
                let m = monitor.take().expect("stop before start");
                m.shutdown().await;
                drop(m);
                run_for(1).await;
            }
            other => panic!("unknown plan step {other:?}"),
        }
    }
}

/// A license with `seats` 10, valid for two years: what the usage tests' instances run.
pub fn seats_license() -> String {
    let mut claims = iosetu_license::Claims::new("Acme Corp", super::T0 + 800 * super::DAY);
    claims.jti = Some("acme-2027".into());
    claims.limits.insert("seats".into(), 10);
    super::signer().sign(&claims)
}
