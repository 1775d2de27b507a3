//! Faults beside the license source that cost nothing else: a notice source that cannot
//! be read (or holds too many tokens), and a state file that cannot be written. Each is
//! reported at most once per check interval while the same fault lasts, whatever storm of
//! polls, `check_now` or SIGHUP comes in between (the rule [`due`]), a different fault at
//! once; the end of a notice source's fault is said once (`license.recovered`).
//!
//! Neither touches the verdict: the license source is judged on its own, the notices
//! accepted earlier stay accepted (the judge's notice state is kept), and the state the
//! judge holds stays the last good one until a write succeeds.

use std::time::Duration;

use super::Judge;
use super::throttle::Throttle;
use crate::event::LicenseEvent;
use crate::state::{PersistedState, StateProblem};
use crate::token::LicenseError;

/// The faults the judge is tracking.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// The notice source's current fault, while it lasts.
    notices: Option<Episode>,
    /// The state file's current write fault, while it lasts.
    state_write: Option<Episode>,
}

/// One fault, while it lasts.
#[derive(Debug)]
struct Episode {
    /// What failed, to tell the same fault from a new one.
    what: String,
    /// Its reason code.
    reason: &'static str,
    /// When it was last reported: at most once per check interval.
    reported: Throttle,
    /// How many judged reads (or writes) in a row had it.
    count: u64,
}

/// Records `what` (with `reason`) in `slot`; returns whether it is to be reported now: a
/// new fault, or the same one last reported a check interval ago or more.
fn record(
    slot: &mut Option<Episode>,
    what: String,
    reason: &'static str,
    now: Duration,
    every: Duration,
) -> bool {
    match slot {
        Some(episode) => {
            episode.count = episode.count.saturating_add(1);
            let report = if episode.what == what {
                episode.reported.ready(now, every)
            } else {
                episode.reported.mark(now);
                true
            };
            episode.reason = reason;
            episode.what = what;
            report
        }
        None => {
            *slot = Some(Episode {
                what,
                reason,
                reported: Throttle::since(now),
                count: 1,
            });
            true
        }
    }
}

impl Judge {
    /// How the notice source (described as `source`) read at a judged read, after
    /// [`handle_check`](Judge::handle_check) judged the license source's read: `None`, it
    /// read (or holds no notices); `Some(error)`, it could not be read, is not a file, or
    /// holds more than `MAX_TOKENS` tokens. The fault is reported as
    /// `license.verification_failed` with the notice source as `source`, at most once per
    /// check interval while unchanged, and costs nothing else (the notices accepted
    /// earlier stay accepted). Its end is reported once (`license.recovered`).
    pub(crate) fn handle_notice_source(&mut self, source: &str, fault: Option<LicenseError>) {
        let Some(error) = fault else {
            if let Some(episode) = self.faults.notices.take() {
                self.events.push_back(LicenseEvent::Recovered {
                    previous_reason: episode.reason,
                    failed_checks: episode.count,
                    source: source.to_owned(),
                });
            }
            return;
        };
        let what = error.to_string();
        if record(
            &mut self.faults.notices,
            what,
            error.reason(),
            self.mono,
            self.config.check_interval,
        ) {
            self.events.push_back(LicenseEvent::VerificationFailed {
                error,
                source: source.to_owned(),
                // The licenses in force are not touched.
                kept_previous: !self.reads.set.is_empty(),
                line: None,
                fingerprint: None,
            });
        }
    }

    /// The outcome of writing what [`poll_persist`](Judge::poll_persist) asked for to the
    /// state file at `path` (as logs show it): the state written, or why it was not. A
    /// failure is reported (`license.state_write_failed`) at most once per check interval
    /// while the same failure lasts; the judge keeps its state, and asks for the write
    /// again.
    pub(crate) fn handle_write(
        &mut self,
        path: &str,
        written: Result<PersistedState, StateProblem>,
    ) {
        let problem = match written {
            Ok(state) => {
                self.faults.state_write = None;
                self.handle_persisted(state);
                return;
            }
            Err(problem) => problem,
        };
        let what = format!("{}:{}", problem.reason, problem.detail);
        if record(
            &mut self.faults.state_write,
            what,
            problem.reason,
            self.mono,
            self.config.check_interval,
        ) {
            self.events.push_back(LicenseEvent::StateWriteFailed {
                path: path.to_owned(),
                reason: problem.reason,
                detail: problem.detail,
            });
        }
    }

    /// The reason code of the state file's last write, while writes fail.
    pub(crate) fn state_write_failing(&self) -> Option<&'static str> {
        self.faults.state_write.as_ref().map(|e| e.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::{Observation, Read};

    use crate::judge::tests::{HOUR, at, config};

    fn judge() -> Judge {
        Judge::new(config(), at(0))
    }

    fn names(judge: &mut Judge) -> Vec<&'static str> {
        std::iter::from_fn(|| judge.poll_event())
            .map(|e| e.name())
            .collect()
    }

    fn check(judge: &mut Judge, secs: u64) {
        let _ = judge.handle_check(
            at(secs),
            Observation::Full(Read::Lines(Vec::new(), Vec::new())),
            false,
        );
    }

    #[test]
    fn a_notice_source_fault_is_reported_once_per_interval_and_its_end_once() {
        let mut judge = judge();
        let fault = || {
            Some(LicenseError::Unreadable {
                detail: "file:/n: is a directory".into(),
            })
        };
        let mut reported = 0;
        for step in 0..1_800 {
            check(&mut judge, step * 2);
            names(&mut judge);
            judge.handle_notice_source("file:/n", fault());
            reported += names(&mut judge)
                .iter()
                .filter(|n| **n == "license.verification_failed")
                .count();
        }
        assert_eq!(reported, 1, "one hour of polls");
        check(&mut judge, HOUR);
        names(&mut judge);
        judge.handle_notice_source("file:/n", fault());
        assert_eq!(names(&mut judge), ["license.verification_failed"]);
        // Another fault is news at once.
        judge.handle_notice_source("file:/n", Some(LicenseError::TooManyTokens { limit: 32 }));
        assert_eq!(names(&mut judge), ["license.verification_failed"]);
        judge.handle_notice_source("file:/n", None);
        let events: Vec<_> = std::iter::from_fn(|| judge.poll_event()).collect();
        match events.as_slice() {
            [
                LicenseEvent::Recovered {
                    previous_reason,
                    failed_checks,
                    source,
                },
            ] => {
                assert_eq!(
                    (*previous_reason, source.as_str()),
                    ("too_large", "file:/n")
                );
                assert_eq!(*failed_checks, 1_802);
            }
            other => panic!("{other:?}"),
        }
        judge.handle_notice_source("file:/n", None);
        assert!(names(&mut judge).is_empty());
    }

    #[test]
    fn a_failing_state_write_is_reported_once_per_interval_and_the_state_kept() {
        let mut judge = judge();
        let failed = || {
            Err(StateProblem {
                reason: "unwritable",
                detail: "/x/state.json: Not a directory (os error 20)".into(),
            })
        };
        let mut reported = 0;
        for step in 0..3_600 {
            check(&mut judge, step * 2);
            names(&mut judge);
            assert!(judge.poll_persist().is_some(), "asked again");
            judge.handle_write("/x/state.json", failed());
            reported += names(&mut judge).len();
        }
        assert_eq!(reported, 2, "two hours");
        assert_eq!(judge.state_write_failing(), Some("unwritable"));
        let state = judge.poll_persist().unwrap();
        judge.handle_write("/x/state.json", Ok(state));
        assert_eq!(judge.state_write_failing(), None);
        assert!(judge.poll_persist().is_none(), "written");
        judge.handle_write("/x/state.json", failed());
        assert_eq!(
            names(&mut judge),
            ["license.state_write_failed"],
            "news again"
        );
    }
}
