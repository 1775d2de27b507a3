//! The usage task's rules, as pure code: when an hour's record ends and how long the task
//! may sleep, what the judge's events note in the journal, which notes a record carries
//! when it closes or is only kept as a checkpoint, and which limits are exceeded (and when
//! that is news again). Plain values in, decisions out: no I/O, no clock read, no event
//! sent here. The task (`super::task`) samples the metrics, reads the clocks, writes the
//! journal and emits, and asks these.

use std::collections::BTreeMap;
use std::time::Duration;

use super::journal::{MAX_NOTES, add_note};
use super::{REPLICAS, SLOTS_HELD};
use crate::event::{DriftKind, LicenseEvent};
use crate::judge::throttle::Keyed;

/// A record's span: one hour of trusted time, ending on the hour.
pub(crate) const HOUR: i64 = 3600;

/// Where the hour of a period that began at `start` (trusted time) ends.
pub(crate) fn hour_end(start: i64) -> i64 {
    start
        .div_euclid(HOUR)
        .saturating_add(1)
        .saturating_mul(HOUR)
}

/// Whether the period that began at `start` ends at trusted `now`: at its hour's end, or
/// at once when trusted time went back before its start (a vendor's attestation re-based
/// it), whose hour would otherwise not end until time caught up.
pub(crate) fn period_ends(start: i64, now: i64) -> bool {
    now >= hour_end(start) || now < start
}

/// How long the task may sleep at trusted `now`: to the hour's end, at least a second,
/// at most `sample` (the metrics are sampled and limits checked that often).
pub(crate) fn sleep_for(start: i64, now: i64, sample: Duration) -> Duration {
    let left = hour_end(start).saturating_sub(now).clamp(1, HOUR);
    Duration::from_secs(left.unsigned_abs()).min(sample)
}

/// What one of the judge's events leaves in the journal: its verdict on each step back,
/// with its size, so that `usage verify` excuses the steps it judged honest and only
/// those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Noted {
    /// A note on the record (`clock_attested:<seq>:<s>`, `clock_set_back`).
    Note(String),
    /// Seconds of a step back the judge took as a correction, summed into the period's
    /// `clock_corrected:<s>`.
    Corrected(u64),
}

/// What `event` leaves in the journal, if anything.
pub(crate) fn noted(event: &LicenseEvent) -> Option<Noted> {
    match event {
        LicenseEvent::ClockAttested {
            seq,
            trusted_time_moved_seconds,
            ..
        } => Some(Noted::Note(format!(
            "clock_attested:{seq}:{}",
            trusted_time_moved_seconds.min(&0).unsigned_abs()
        ))),
        LicenseEvent::TimeDriftDetected {
            drift_seconds,
            kind: DriftKind::ClockCorrected,
        } => {
            // (Rounded up: verify's allowance is never short of the real step.)
            let back = (-drift_seconds).max(0.0).ceil();
            // (A float cast saturates: NaN is 0, a huge step u64::MAX.)
            Some(Noted::Corrected(back as u64))
        }
        LicenseEvent::TimeManipulationDetected { .. } => {
            Some(Noted::Note("clock_set_back".to_owned()))
        }
        _ => None,
    }
}

/// The places at the end of a record's notes kept for `clock_corrected:<s>` (which
/// excuses an honest step back: lost, the step reads as a rollback, tampering) and, in a
/// checkpoint, `unclean_stop`.
const RESERVED: usize = 2;

/// The notes a period gathers as it runs: each once, at most [`MAX_NOTES`] with the
/// reserved ones, and the seconds of clock corrections summed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Notes {
    notes: Vec<String>,
    corrected: u64,
}

impl Notes {
    /// Starts with the notes the journal's opening left (a death before the last record).
    pub(crate) fn from_opening(notes: Vec<String>) -> Self {
        let mut this = Self::default();
        for note in notes {
            this.add(&note);
        }
        this
    }

    /// Notes `note` once, leaving [`RESERVED`] places for the notes a record must be
    /// able to carry whatever else the hour noted.
    pub(crate) fn add(&mut self, note: &str) {
        if self.notes.len() < MAX_NOTES - RESERVED || self.notes.iter().any(|n| n == note) {
            add_note(&mut self.notes, note);
        }
    }

    /// Takes in what an event leaves.
    pub(crate) fn take(&mut self, noted: Noted) {
        match noted {
            Noted::Note(note) => self.add(&note),
            Noted::Corrected(s) => self.corrected = self.corrected.saturating_add(s),
        }
    }

    /// Notes a vendor receipt the judge accepted, once per receipt: the report that
    /// follows must extend the heads it names. `noted` is the last one noted.
    pub(crate) fn receipt(&mut self, noted: &mut Option<u64>, in_force: Option<u64>) {
        if in_force > *noted
            && let Some(seq) = in_force
        {
            *noted = in_force;
            self.add(&format!("receipt:{seq}"));
        }
    }

    /// The notes of the record that closes the period; the next period starts with none.
    pub(crate) fn close(&mut self) -> Vec<String> {
        let corrected = std::mem::take(&mut self.corrected);
        if corrected > 0 {
            // (In a reserved place.)
            add_note(&mut self.notes, &format!("clock_corrected:{corrected}"));
        }
        std::mem::take(&mut self.notes)
    }

    /// The notes of the period so far, kept as a checkpoint: written only if this process
    /// dies before its hour ends, so they say `unclean_stop`. The period keeps its notes.
    pub(crate) fn checkpoint(&self) -> Vec<String> {
        let mut notes = self.notes.clone();
        if self.corrected > 0 {
            add_note(&mut notes, &format!("clock_corrected:{}", self.corrected));
        }
        // (The reserved places: both always fit.)
        add_note(&mut notes, "unclean_stop");
        notes
    }
}

/// The month's counter totals so far and each counter's value at the last record: what
/// the `iosetu_license_usage` gauges of counters count from.
pub(crate) fn counter_bases(
    month_totals: &BTreeMap<String, u64>,
    recorded: &BTreeMap<String, u64>,
) -> BTreeMap<String, (u64, u64)> {
    month_totals
        .keys()
        .chain(recorded.keys())
        .map(|name| {
            let month = month_totals.get(name).copied().unwrap_or(0);
            let at = recorded.get(name).copied().unwrap_or(0);
            (name.clone(), (month, at))
        })
        .collect()
}

/// A metric over its limit, to report as `license.limit_exceeded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exceeded {
    pub(crate) name: String,
    pub(crate) usage: u64,
    pub(crate) limit: u64,
}

/// Which metrics are over their limits, each reported at most once per interval.
#[derive(Default)]
pub(crate) struct LimitAlerts {
    reported: Keyed<String>,
}

impl LimitAlerts {
    /// The metrics of `usage` over the limit `limit_of` gives them, not reported within
    /// `every` before `now` (monotonic). Usage over a limit is never a cut-off, only news.
    /// Replicas and slots are the fleet's to count (`max_instances` is the slots' limit),
    /// so they are never compared here.
    pub(crate) fn check(
        &mut self,
        usage: impl IntoIterator<Item = (String, u64)>,
        limit_of: impl Fn(&str) -> Option<u64>,
        now: Duration,
        every: Duration,
    ) -> Vec<Exceeded> {
        let mut out = Vec::new();
        for (name, value) in usage {
            if name == REPLICAS || name == SLOTS_HELD {
                continue;
            }
            let Some(limit) = limit_of(&name) else {
                continue;
            };
            if value > limit && self.reported.ready(name.clone(), now, every) {
                out.push(Exceeded {
                    name,
                    usage: value,
                    limit,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_period_ends_on_the_hour_or_when_trusted_time_went_back_before_it() {
        // 10:20:00 on some day.
        let start = 1_000 * HOUR + 1_200;
        assert_eq!(hour_end(start), 1_001 * HOUR);
        assert!(!period_ends(start, start));
        assert!(!period_ends(start, 1_001 * HOUR - 1));
        assert!(period_ends(start, 1_001 * HOUR));
        assert!(period_ends(start, 1_003 * HOUR + 5));
        assert!(period_ends(start, start - 1));
        // A period that began on the hour runs the whole hour.
        assert_eq!(hour_end(1_000 * HOUR), 1_001 * HOUR);
        // Before 1970 too (a clock at 0 before NTP), and at the edge of i64.
        assert_eq!(hour_end(-1), 0);
        // (Saturating, never a panic.)
        assert_eq!(hour_end(i64::MAX), i64::MAX);
        assert_eq!(
            hour_end(i64::MIN),
            i64::MIN.div_euclid(HOUR).saturating_add(1) * HOUR
        );
    }

    #[test]
    fn the_task_sleeps_to_the_hours_end_at_most_a_sample_at_least_a_second() {
        let start = 1_000 * HOUR;
        assert_eq!(sleep_for(start, start, MINUTE), MINUTE);
        assert_eq!(
            sleep_for(start, 1_001 * HOUR - 20, MINUTE),
            Duration::from_secs(20)
        );
        assert_eq!(
            sleep_for(start, 1_001 * HOUR, MINUTE),
            Duration::from_secs(1)
        );
        assert_eq!(
            sleep_for(start, 1_005 * HOUR, MINUTE),
            Duration::from_secs(1)
        );
        // Trusted time before the start (re-based): at most an hour, then the sample.
        assert_eq!(
            sleep_for(start, start - 10 * HOUR, Duration::MAX),
            Duration::from_secs(3_600)
        );
    }

    #[test]
    fn each_verdict_on_a_step_back_leaves_its_note_and_nothing_else_does() {
        let attested = LicenseEvent::ClockAttested {
            seq: 7,
            attested_time: std::time::UNIX_EPOCH,
            wall_offset_seconds: 0,
            trusted_time_moved_seconds: -90,
            cleared_manipulation: false,
        };
        assert_eq!(
            noted(&attested),
            Some(Noted::Note("clock_attested:7:90".into()))
        );
        let forward = LicenseEvent::ClockAttested {
            seq: 8,
            attested_time: std::time::UNIX_EPOCH,
            wall_offset_seconds: 0,
            trusted_time_moved_seconds: 30,
            cleared_manipulation: false,
        };
        assert_eq!(
            noted(&forward),
            Some(Noted::Note("clock_attested:8:0".into()))
        );
        let corrected = |drift_seconds| LicenseEvent::TimeDriftDetected {
            drift_seconds,
            kind: DriftKind::ClockCorrected,
        };
        assert_eq!(noted(&corrected(-4.2)), Some(Noted::Corrected(5)));
        assert_eq!(noted(&corrected(3.0)), Some(Noted::Corrected(0)));
        assert_eq!(noted(&corrected(f64::NAN)), Some(Noted::Corrected(0)));
        assert_eq!(
            noted(&corrected(f64::NEG_INFINITY)),
            Some(Noted::Corrected(u64::MAX))
        );
        let other_drift = LicenseEvent::TimeDriftDetected {
            drift_seconds: -40.0,
            kind: DriftKind::BehindBuildTime,
        };
        assert_eq!(noted(&other_drift), None);
        let stale = LicenseEvent::StateInvalid {
            reason: "corrupt",
            detail: String::new(),
        };
        assert_eq!(noted(&stale), None);
        let manipulation = LicenseEvent::TimeManipulationDetected {
            wall_clock_jump_seconds: -5,
        };
        assert_eq!(
            noted(&manipulation),
            Some(Noted::Note("clock_set_back".into()))
        );
    }

    #[test]
    fn a_closing_record_takes_the_notes_and_the_corrections_summed() {
        let mut notes = Notes::from_opening(vec!["unclean_stop".into(), "unclean_stop".into()]);
        notes.take(Noted::Corrected(4));
        notes.take(Noted::Note("clock_set_back".into()));
        notes.take(Noted::Corrected(6));
        notes.take(Noted::Note("clock_set_back".into()));
        assert_eq!(
            notes.checkpoint(),
            ["unclean_stop", "clock_set_back", "clock_corrected:10"]
        );
        assert_eq!(
            notes.close(),
            ["unclean_stop", "clock_set_back", "clock_corrected:10"]
        );
        // The next period starts with none, and a checkpoint says it is one.
        assert_eq!(notes.close(), Vec::<String>::new());
        assert_eq!(notes.checkpoint(), ["unclean_stop"]);
    }

    #[test]
    fn an_hour_of_many_notes_still_carries_its_correction_and_says_a_checkpoint_is_one() {
        let mut notes = Notes::default();
        for i in 0..40 {
            notes.add(&format!("n{i}"));
        }
        notes.take(Noted::Corrected(7));
        let kept = notes.checkpoint();
        assert_eq!(kept.len(), MAX_NOTES);
        assert_eq!(kept[MAX_NOTES - 2..], ["clock_corrected:7", "unclean_stop"]);
        let closed = notes.close();
        assert_eq!(closed.len(), MAX_NOTES - 1);
        assert_eq!(closed.last().map(String::as_str), Some("clock_corrected:7"));
    }

    #[test]
    fn each_receipt_is_noted_once_and_an_older_one_never() {
        let mut notes = Notes::default();
        let mut noted = None;
        notes.receipt(&mut noted, None);
        notes.receipt(&mut noted, Some(3));
        notes.receipt(&mut noted, Some(3));
        notes.receipt(&mut noted, Some(2));
        notes.receipt(&mut noted, Some(5));
        assert_eq!(noted, Some(5));
        assert_eq!(notes.close(), ["receipt:3", "receipt:5"]);
    }

    #[test]
    fn counter_bases_name_every_counter_of_the_month_or_the_last_record() {
        let month = BTreeMap::from([("a".to_owned(), 10), ("b".to_owned(), 4)]);
        let recorded = BTreeMap::from([("b".to_owned(), 7), ("c".to_owned(), 1)]);
        assert_eq!(
            counter_bases(&month, &recorded),
            BTreeMap::from([
                ("a".to_owned(), (10, 0)),
                ("b".to_owned(), (4, 7)),
                ("c".to_owned(), (0, 1)),
            ])
        );
    }

    #[test]
    fn a_limit_exceeded_is_news_once_per_interval_per_metric_and_never_for_the_fleet() {
        let limits = |name: &str| match name {
            "seats" => Some(10),
            "gb" => Some(5),
            REPLICAS | SLOTS_HELD => Some(1),
            _ => None,
        };
        let usage = |seats, gb| {
            vec![
                ("seats".to_owned(), seats),
                ("gb".to_owned(), gb),
                ("free".to_owned(), 1_000),
                (REPLICAS.to_owned(), 9),
                (SLOTS_HELD.to_owned(), 9),
            ]
        };
        let mut alerts = LimitAlerts::default();
        let at = Duration::from_secs;
        let over = |seats| Exceeded {
            name: "seats".into(),
            usage: seats,
            limit: 10,
        };
        // At the limit is not over it.
        assert_eq!(alerts.check(usage(10, 5), limits, at(0), MINUTE), []);
        assert_eq!(
            alerts.check(usage(11, 5), limits, at(1), MINUTE),
            [over(11)]
        );
        assert_eq!(alerts.check(usage(12, 5), limits, at(60), MINUTE), []);
        let both = alerts.check(usage(12, 6), limits, at(61), MINUTE);
        assert_eq!(
            both,
            [
                over(12),
                Exceeded {
                    name: "gb".into(),
                    usage: 6,
                    limit: 5
                }
            ]
        );
    }
}
