//! The state file: what to write, and when. Only firm evidence is written, so that a
//! clock that may be wrong leaves nothing for later that a restart could gain from.

use std::time::Duration;

use super::PERSIST_INTERVAL;
use super::episode::Episode;
use super::notices::Notices;
use super::throttle::Throttle;
use super::time::TrustedTime;
use crate::state::PersistedState;
use crate::verdict::Evaluation;

/// What was last written to the state file, and when.
#[derive(Debug)]
pub(super) struct Persist {
    /// What was last written (or read back at start).
    persisted: Option<PersistedState>,
    /// The last write: a moved mark alone is written at most once per
    /// [`PERSIST_INTERVAL`].
    written: Throttle,
}

/// What the state is made of at one moment: the sub-states it is written from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sources<'a> {
    pub(super) time: &'a TrustedTime,
    pub(super) episode: &'a Episode,
    /// The last evaluation, if any.
    pub(super) last: Option<&'a Evaluation>,
    pub(super) notices: &'a Notices,
    /// The host's boot identity, if known.
    pub(super) boot_id: Option<&'a str>,
}

impl Persist {
    /// Nothing written yet, at the judge's first reading `first` (a first write waits for
    /// firm evidence; retries come at most once per interval).
    pub(super) fn new(first: Duration) -> Self {
        Self {
            persisted: None,
            written: Throttle::since(first),
        }
    }

    /// The state file as read at start: what is there counts as written.
    pub(super) fn restored(&mut self, state: PersistedState) {
        self.persisted = Some(state);
    }

    /// A successful write of `state` at `mono`.
    pub(super) fn written(&mut self, state: PersistedState, mono: Duration) {
        self.persisted = Some(state);
        self.written.mark(mono);
    }

    /// `state` (the state as it would be written now), if a write is due at `mono`: when
    /// the anchor changed, or the mark moved and a minute has passed since the last write.
    pub(super) fn poll(&self, state: PersistedState, mono: Duration) -> Option<PersistedState> {
        let due = match &self.persisted {
            None => true,
            Some(last) => {
                last.version != state.version
                    || last.grace_anchor != state.grace_anchor
                    || last.grace_floor != state.grace_floor
                    || last.not_valid_since != state.not_valid_since
                    || last.cut_off != state.cut_off
                    || last.notice_seq != state.notice_seq
                    || last.revoked != state.revoked
                    || last.budget_spent_ms != state.budget_spent_ms
                    || last.settled != state.settled
                    || ((last.high_water != state.high_water
                        || last.budget_age != state.budget_age)
                        && self.written.is_due(mono, PERSIST_INTERVAL))
            }
        };
        due.then_some(state)
    }

    /// The state as it would be written now, once there is firm evidence to write. While
    /// readings are provisional an anchor is written only if firm evidence backs it (an
    /// expired license's own `exp`, say); else what was written before stands.
    pub(super) fn state(&self, now: Sources<'_>) -> Option<PersistedState> {
        let time = now.time;
        let mark = time.persistable_mark()?;
        let backed =
            |at: i64| !time.provisional() || time.firm_now_secs().is_some_and(|firm| at <= firm);
        let anchor = match now.episode.grace_anchor {
            Some(anchor) if !backed(anchor) => self.persisted.as_ref().and_then(|p| p.grace_anchor),
            anchor => anchor,
        };
        // Since when the service has been in grace or cut off (`None` while valid), and
        // where it is cut off if nothing new comes in.
        let last = now.last;
        let not_valid_since = last
            .and_then(|e| e.verdict.grace_started_at)
            .map(crate::clock::unix_seconds);
        let (since, cut_off) = match not_valid_since {
            Some(since) if !backed(since) => self
                .persisted
                .as_ref()
                .map_or((None, None), |p| (p.not_valid_since, p.cut_off)),
            since => (since, last.and_then(|e| e.cut_off)),
        };
        // While trusted now rests on a reading not yet confirmed, a stretch out of Valid on
        // record never starts later nor ends later: such a reading may be a clock set
        // ahead across a reboot, and the cut-off an earlier run earned (a clock found set
        // back, say) would be laundered into the later one of an expired license's own
        // grace, for the next restart to take up.
        let (since, cut_off) = match (time.unconfirmed(), since, &self.persisted) {
            (true, Some(since), Some(p)) => (
                Some(p.not_valid_since.map_or(since, |old| old.min(since))),
                match (cut_off, p.cut_off) {
                    (Some(cut), Some(old)) => Some(cut.min(old)),
                    (cut, old) => cut.or(old),
                },
            ),
            (_, since, _) => (since, cut_off),
        };
        let mut state = PersistedState::new(mark, anchor);
        state.grace_floor = now.episode.grace_floor;
        state.not_valid_since = since;
        state.cut_off = cut_off;
        state.budget_age = time.budget_age().as_secs();
        state.boot_id = now.boot_id.map(str::to_owned);
        state.settled = !time.unconfirmed();
        // (Rounded up: a restart never gets a fraction of a step back.)
        let spent = time.budget_spent().as_nanos().div_ceil(1_000_000);
        state.budget_spent_ms = u64::try_from(spent).unwrap_or(u64::MAX);
        state.notice_seq = now.notices.seq.clone();
        state.revoked = now.notices.revoked.clone();
        Some(state)
    }

    /// When to wake to keep the mark current: a minute after the last write, so that a
    /// restart finds a mark at most a minute old. Nothing written (no firm mark yet, or
    /// the disk failed): retry in a minute, never in a busy loop.
    pub(super) fn wake(&self, mono: Duration) -> Duration {
        self.written.next_due(mono, PERSIST_INTERVAL)
    }
}
