//! The checker task: the only writer of the verdict, and a thin shell around the judge
//! (`crate::judge`). It waits for timers and triggers, reads the source and the state
//! file off the async workers, verifies tokens, feeds the judge, publishes its verdict,
//! emits its events and writes the state it asks for. No rule lives here.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::Clock;
use crate::clock::{Reading, escape_control, later};
use crate::emit::Reporter;
use crate::files::{read_state, write_state};
use crate::judge::{Judge, JudgeConfig, Line, NoticeLine, Observation, Read, SlotWord};
use crate::layer::shared::{Command, Shared};
use crate::link::InstanceLink;
use crate::reload::{MAX_SETTLE_ROUNDS, SETTLE, Trigger, Triggers};
use crate::runtime::{IO_DEADLINE, OffThread, off_thread};
use crate::source::{self, LicenseSource};
use crate::state::StateProblem;
use crate::stats::Stats;
use crate::token::{self, LicenseError, LicenseVerifier, fingerprint};
use crate::verdict::Verdict;
/// Everything the builder hands the checker.
pub(crate) struct Config {
    pub(crate) verifier: LicenseVerifier,
    pub(crate) source: LicenseSource,
    /// A second place vendor notices are read from, if any.
    pub(crate) notices: Option<LicenseSource>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) built_at: Option<std::time::SystemTime>,
    pub(crate) grace_period: Duration,
    pub(crate) drain_period: Duration,
    pub(crate) check_interval: Duration,
    pub(crate) fail_closed: bool,
    pub(crate) instance_settling: Duration,
    pub(crate) triggers: Triggers,
    pub(crate) file_poll_interval: Option<Duration>,
    pub(crate) state_path: Option<PathBuf>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) reporter: Reporter,
    /// The link to the instance-slot task, when the monitor counts instances.
    pub(crate) instances: Option<InstanceLink>,
}

/// What woke the checker.
enum Wake {
    Command(Command),
    Trigger(Trigger),
    /// The instance-slot task changed its answer.
    Instances,
    Timer,
}

/// Waits for the instance-slot task's next answer. Pends forever without a link, and
/// once the task is gone (the link is dropped: a task that died must not spin the
/// checker, and `check` then counts the replica as without a slot).
async fn instance_change(link: &mut Option<InstanceLink>, gone: &mut bool) {
    match link {
        Some(l) if !*gone => {
            if l.without.changed().await.is_err() {
                *gone = true;
            }
        }
        _ => std::future::pending().await,
    }
}

/// Reads `source`; a file on the blocking pool with a deadline (see
/// [`Checker::read_source`]).
async fn read_off_thread(
    source: &LicenseSource,
    hung: &mut Option<AbortHandle>,
) -> Result<String, LicenseError> {
    if !matches!(source, LicenseSource::File(_)) {
        return source.read();
    }
    let reader = source.clone();
    match off_thread(hung, IO_DEADLINE, move || reader.read()).await {
        Ok(read) => read,
        Err(why) => Err(LicenseError::Unreadable {
            detail: format!(
                "{}: {}",
                source.describe(),
                match why {
                    OffThread::Hung => "the read has not returned within 5 s",
                    OffThread::Failed => "the read failed",
                }
            ),
        }),
    }
}

/// One read of the sources: the license source's text, and the notice source's (`None`:
/// no notice source, or no notices there yet). Each is read, capped and judged on its
/// own; comparing two reads tells a change to either.
#[derive(Debug, Clone, PartialEq)]
struct Texts {
    license: Result<String, LicenseError>,
    notices: Option<Result<String, LicenseError>>,
}

/// The checker: waits, reads, verifies, feeds the judge, publishes, emits, persists.
pub(crate) struct Checker {
    judge: Judge,
    state_path: Option<PathBuf>,
    stats: Arc<Stats>,
    reporter: Reporter,
    triggers: Triggers,
    file_poll_interval: Option<Duration>,
    /// The last read of the sources, to tell a changed file from an unchanged one.
    last_read: Option<Texts>,
    /// The last license text verified and its lines (licenses and notices), and the last
    /// notice text verified and its notices (numbered from 1): an unchanged source is not
    /// verified again.
    verified: Option<(String, Vec<Line>, Vec<NoticeLine>)>,
    verified_notices: Option<(String, Vec<NoticeLine>)>,
    verifier: LicenseVerifier,
    source: LicenseSource,
    notices: Option<LicenseSource>,
    clock: Arc<dyn Clock>,
    check_interval: Duration,
    /// The runtime's instant and the clock's reading at the last check: the judge's
    /// wake-ups are monotonic readings, turned into timers from here.
    checked_at: Instant,
    checked_mono: Duration,
    /// A read of the source, and a read or write of the state file, that hung.
    hung_read: Option<AbortHandle>,
    hung_notices: Option<AbortHandle>,
    hung_state: Option<AbortHandle>,
    instances: Option<InstanceLink>,
    /// The instance-slot task ended without being asked to (it panicked): from then on
    /// this replica counts as holding no slot.
    instances_gone: bool,
}

impl Checker {
    pub(crate) fn new(config: Config) -> Self {
        let first = Reading::of(&*config.clock);
        let judge = Judge::new(
            JudgeConfig {
                grace_period: config.grace_period,
                drain_period: config.drain_period,
                check_interval: config.check_interval,
                fail_closed: config.fail_closed,
                built_at: config.built_at,
                source: config.source.describe(),
                state_file: config.state_path.is_some(),
                instance_settling: config.instance_settling,
                boot_id: config.clock.boot_id(),
            },
            first,
        );
        Self {
            judge,
            state_path: config.state_path,
            reporter: config.reporter,
            stats: config.stats,
            triggers: config.triggers,
            file_poll_interval: config.file_poll_interval,
            last_read: None,
            verified: None,
            verified_notices: None,
            verifier: config.verifier,
            source: config.source,
            notices: config.notices,
            clock: config.clock,
            check_interval: config.check_interval,
            checked_at: Instant::now(),
            checked_mono: first.mono,
            hung_read: None,
            hung_notices: None,
            hung_state: None,
            instances: config.instances,
            instances_gone: false,
        }
    }

    /// Restores the state file and runs the first full check: what `start` awaits. Returns
    /// the verdict and whether a drain period is already over.
    pub(crate) async fn first_check(&mut self) -> (Arc<Verdict>, bool) {
        self.restore_state().await;
        let read = self.read_source().await;
        let verdict = self.check(Some(true), Some(read));
        self.persist_state().await;
        (verdict, self.judge.drained())
    }

    pub(crate) async fn run(mut self, shared: Weak<Shared>, mut commands: mpsc::Receiver<Command>) {
        let mut next_full = later(self.checked_at, self.check_interval);
        let mut next_poll = self.file_poll_interval.map(|p| later(self.checked_at, p));
        loop {
            // Deadlines count from when the clocks were sampled, not from when this task
            // got to run: the two differ if the runtime was busy (or a paused test clock
            // jumped) in between. After a suspend or a long jump there is one wake at the
            // new now, no replay of the missed ones.
            let judge_wake = later(
                self.checked_at,
                self.judge.poll_timeout().saturating_sub(self.checked_mono),
            );
            let wake = [Some(next_full), next_poll, Some(judge_wake)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(judge_wake);
            let wake = tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => Wake::Command(command),
                    None => return, // every handle is gone
                },
                trigger = self.triggers.next() => Wake::Trigger(trigger),
                () = instance_change(&mut self.instances, &mut self.instances_gone) => Wake::Instances,
                () = tokio::time::sleep_until(wake) => Wake::Timer,
            };
            let now = Instant::now();
            // (full?, read): a full check reads afresh; a change seen by a watch or a poll
            // is judged once the file has settled; otherwise only time moved.
            let (full, read) = match &wake {
                Wake::Command(_) | Wake::Trigger(Trigger::Hangup) => {
                    (Some(true), Some(self.read_source().await))
                }
                Wake::Timer if now >= next_full => (Some(true), Some(self.read_source().await)),
                Wake::Trigger(Trigger::FileChanged) => (Some(false), self.changed_read().await),
                Wake::Timer if next_poll.is_some_and(|p| now >= p) => {
                    (Some(false), self.changed_read().await)
                }
                Wake::Timer | Wake::Instances => (None, None),
            };
            if let Some(poll) = self.file_poll_interval
                && next_poll.is_some_and(|p| now >= p)
            {
                next_poll = Some(later(now, poll));
            }
            let periodic = matches!(wake, Wake::Timer) && full == Some(true);
            let verdict = self.check(full, read);
            if periodic {
                next_full = later(self.checked_at, self.check_interval);
            }
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let judge = &self.judge;
            shared.publish(Arc::clone(&verdict), judge.drained(), |feature| {
                judge.feature_drained(feature)
            });
            drop(shared);
            // After publishing (a slow disk delays the state file, never the verdict) and
            // before answering `check_now` (whose caller may restart next).
            self.persist_state().await;
            if let Wake::Command(Command::CheckNow(reply)) = wake {
                let _ = reply.send(verdict);
            }
        }
    }

    /// Reads the sources. A file is read on the blocking pool with a deadline, so a hung
    /// mount stalls neither the runtime's workers nor the checker: it reads as
    /// `unreadable`, and the last good license stays.
    ///
    /// The notice source, if any, is read on its own, after the license source and
    /// whatever that read: no notices (a file not there yet) reads as none, and one that
    /// cannot be read is the notice source's own fault (see [`Checker::verify`]).
    async fn read_source(&mut self) -> Texts {
        let license = read_off_thread(&self.source, &mut self.hung_read).await;
        let notices = match self.notices.clone() {
            None => None,
            Some(source) => match read_off_thread(&source, &mut self.hung_notices).await {
                Err(LicenseError::Missing { .. }) => None,
                read => Some(read),
            },
        };
        Texts { license, notices }
    }

    /// Reads the source and, if it differs from the last read, waits until it stops
    /// changing: a read may catch a file half-written (truncate and write) or a symlink
    /// swap half-done, and such a transient state must not be judged. `None`: unchanged.
    async fn changed_read(&mut self) -> Option<Texts> {
        let mut read = self.read_source().await;
        if self.last_read.as_ref() == Some(&read) {
            return None;
        }
        for _ in 0..MAX_SETTLE_ROUNDS {
            tokio::time::sleep(SETTLE).await;
            let again = self.read_source().await;
            if again == read {
                break;
            }
            read = again;
        }
        Some(read)
    }

    /// Verifies each token of a read (each source's only when its text changed since the
    /// last one verified): the judge gets the result of each, and the notice source's
    /// fault, if it has one.
    ///
    /// The license source is capped and judged on its own. Every token of the notice
    /// source is verified as a notice (a license there is refused: it is not a notice),
    /// numbered after the license source's lines; a notice source that cannot be read
    /// or holds more than `MAX_TOKENS` tokens adds no notices and is its own fault,
    /// which costs the license source nothing.
    fn verify(&mut self, texts: Texts) -> (Read, Option<LicenseError>) {
        let (notices, fault) = match texts.notices {
            None => (Vec::new(), None),
            Some(Err(error)) => (Vec::new(), Some(error)),
            Some(Ok(text)) => match self.verify_notices(text) {
                Ok(notices) => (notices, None),
                Err(error) => (Vec::new(), Some(error)),
            },
        };
        let read = match texts.license {
            Err(error) => Read::Failed(error),
            Ok(text) => {
                // Numbered after the license source's lines, as in one text.
                let offset = text.lines().count();
                match self.verify_licenses(text) {
                    Err(error) => Read::Failed(error),
                    Ok((lines, mut own)) => {
                        own.extend(notices.into_iter().map(|mut n| {
                            n.line = n.line.saturating_add(offset);
                            n
                        }));
                        Read::Lines(lines, own)
                    }
                }
            }
        };
        (read, fault)
    }

    /// The notice source's tokens, each verified as a notice (numbered from 1).
    fn verify_notices(&mut self, text: String) -> Result<Vec<NoticeLine>, LicenseError> {
        if let Some((last, notices)) = &self.verified_notices
            && *last == text
        {
            return Ok(notices.clone());
        }
        let notices: Vec<NoticeLine> = match source::tokens(&text) {
            Ok(tokens) => tokens
                .into_iter()
                .map(|(line, token)| NoticeLine {
                    line,
                    print: fingerprint(token),
                    verified: self.verifier.verify_notice(token).map(Arc::new),
                })
                .collect(),
            // (Blank: no notices.)
            Err(LicenseError::Missing { .. }) => Vec::new(),
            Err(error) => return Err(error),
        };
        self.verified_notices = Some((text, notices.clone()));
        Ok(notices)
    }

    /// The license source's tokens, each verified: licenses, and notices it holds too.
    fn verify_licenses(
        &mut self,
        text: String,
    ) -> Result<(Vec<Line>, Vec<NoticeLine>), LicenseError> {
        if let Some((last, lines, notices)) = &self.verified
            && *last == text
        {
            return Ok((lines.clone(), notices.clone()));
        }
        let tokens = source::tokens(&text)?;
        let mut lines = Vec::new();
        let mut notices = Vec::new();
        for (line, token) in tokens {
            let print = fingerprint(token);
            // The header routes a line; verification checks the type again, signed.
            if token::is_notice(token) {
                notices.push(NoticeLine {
                    line,
                    print,
                    verified: self.verifier.verify_notice(token).map(Arc::new),
                });
            } else {
                lines.push(Line {
                    line,
                    print,
                    verified: self
                        .verifier
                        .verify_token(token)
                        .map(|v| Arc::new(v.claims)),
                });
            }
        }
        self.verified = Some((text, lines.clone(), notices.clone()));
        Ok((lines, notices))
    }

    /// One wake: sample the clocks, hand the judge what was read (`full`: a full check,
    /// `Some(false)`: a change), emit its events. Returns the verdict to publish.
    fn check(&mut self, full: Option<bool>, read: Option<Texts>) -> Arc<Verdict> {
        self.checked_at = Instant::now();
        let reading = Reading::of(&*self.clock);
        self.checked_mono = reading.mono;
        let judged = read.is_some();
        let mut notice_fault = None;
        let observation = match (full, read) {
            (_, None) => Observation::Transition,
            (full, Some(read)) => {
                self.last_read = Some(read.clone());
                let (read, fault) = self.verify(read);
                notice_fault = fault;
                if full == Some(true) {
                    Observation::Full(read)
                } else {
                    Observation::Changed(read)
                }
            }
        };
        let slot = match &mut self.instances {
            // A task that died counts as a slot lost.
            Some(_) if self.instances_gone => SlotWord::from(true),
            Some(link) => *link.without.borrow_and_update(),
            None => SlotWord::default(),
        };
        let verdict = self.judge.handle_check(reading, observation, slot);
        if judged {
            self.stats.record_check(self.judge.problem());
            if let Some(notices) = &self.notices {
                self.judge
                    .handle_notice_source(&notices.describe(), notice_fault);
            }
        }
        if let Some(link) = &self.instances {
            let limit = self.judge.instance_limit();
            link.limit
                .send_if_modified(|l| std::mem::replace(l, limit) != limit);
        }
        while let Some(event) = self.judge.poll_event() {
            self.reporter.emit(event);
        }
        verdict
    }

    /// Reads the state file before the first check and hands it to the judge.
    async fn restore_state(&mut self) {
        let Some(path) = self.state_path.clone() else {
            return;
        };
        let shown = escape_control(&path.display().to_string()).into_owned();
        let loaded = off_thread(&mut self.hung_state, IO_DEADLINE, move || read_state(&path)).await;
        self.judge.handle_restored(match loaded {
            Ok(result) => result,
            Err(_) => Err(StateProblem {
                reason: "unreadable",
                detail: format!("{shown}: the read has not returned within 5 s"),
            }),
        });
    }

    /// Writes what the judge asks to be written, off the async workers, and tells the
    /// judge how it went (it reports a failure, at most once per check interval, and
    /// keeps its state).
    async fn persist_state(&mut self) {
        let (Some(path), Some(state)) = (self.state_path.clone(), self.judge.poll_persist()) else {
            return;
        };
        let written = state.clone();
        let shown = escape_control(&path.display().to_string()).into_owned();
        let result = match off_thread(&mut self.hung_state, IO_DEADLINE, move || {
            write_state(&state, &path)
        })
        .await
        {
            Ok(Ok(())) => Ok(written),
            Ok(Err(e)) => Err(StateProblem::write(&shown, &e)),
            Err(OffThread::Hung) => Err(StateProblem {
                reason: "timed_out",
                detail: format!("{shown}: the write has not returned within 5 s"),
            }),
            Err(OffThread::Failed) => Err(StateProblem {
                reason: "unwritable",
                detail: format!("{shown}: the write failed"),
            }),
        };
        self.judge.handle_write(&shown, result);
        self.stats
            .record_state_write(self.judge.state_write_failing().is_some());
        while let Some(event) = self.judge.poll_event() {
            self.reporter.emit(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_hung_read_times_out_and_blocks_no_second_thread() {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let mut slot = None;
        let hung = off_thread(&mut slot, IO_DEADLINE, move || {
            let _ = wait.recv();
            1
        });
        // The blocking task keeps paused time from moving by itself: move it by hand.
        let (result, ()) = tokio::join!(hung, async {
            tokio::task::yield_now().await;
            tokio::time::advance(IO_DEADLINE + Duration::from_millis(1)).await;
        });
        assert!(matches!(result, Err(OffThread::Hung)));
        assert!(slot.is_some());
        // While it hangs, no further read starts.
        let again = off_thread(&mut slot, IO_DEADLINE, || 2).await;
        assert!(matches!(again, Err(OffThread::Hung)));
        // Once it returns, reads work again.
        release.send(()).unwrap();
        while slot.as_ref().is_some_and(|h| !h.is_finished()) {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            off_thread(&mut slot, IO_DEADLINE, || 3).await,
            Ok(3)
        ));
        assert!(slot.is_none());
    }

    #[tokio::test]
    async fn a_panicking_read_is_a_failure_not_a_crash() {
        let mut slot = None;
        let result: Result<(), _> =
            off_thread(&mut slot, IO_DEADLINE, || std::panic::panic_any("boom")).await;
        assert!(matches!(result, Err(OffThread::Failed)));
    }
}
