//! Vendor notices: which are accepted (by `seq`, per customer), what they revoke, and
//! which are refused and reported. Accepted attestations re-base trusted time; what that
//! does to the anchors of other sub-states is the judge's to apply (see [`Cx`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::reads::Reads;
use super::throttle::Keyed;
use super::{Cx, Events, NoticeLine};
use crate::event::LicenseEvent;
use crate::state::{MAX_NOTICE_CUSTOMERS, MAX_REVOKED};
use crate::token::{Claims, LicenseError, Notice};

/// The notices accepted and refused, and the revocations known (kept in the state file).
#[derive(Debug, Default)]
pub(super) struct Notices {
    /// The highest vendor notice `seq` accepted, by customer (kept in the state file).
    pub(super) seq: BTreeMap<String, u64>,
    /// Revoked license `jti`s, and from when (trusted seconds; kept in the state file).
    pub(super) revoked: BTreeMap<String, i64>,
    /// Licenses a successor not yet started supersedes, and from when it starts (worked
    /// out at every check by `Reads::supersessions`, never kept).
    pub(super) superseded: BTreeMap<String, i64>,
    /// Refused notices reported (by fingerprint): each at most once per check interval.
    reported: Keyed<String>,
    /// The highest `seq` of a usage receipt of the set's customer seen in the source
    /// (accepted now or before: a newer notice does not undo a receipt).
    pub(super) receipt_seq: Option<u64>,
}

impl Notices {
    /// `claims` with its revocation, if one is known (the same `Arc` if nothing changes).
    pub(super) fn revoked_claims(&self, claims: &Arc<Claims>) -> Arc<Claims> {
        let at = claims.jti.as_ref().and_then(|jti| {
            match (self.revoked.get(jti), self.superseded.get(jti)) {
                (Some(a), Some(b)) => Some(*a.min(b)),
                (a, b) => a.or(b).copied(),
            }
        });
        if at == claims.revoked_at {
            return Arc::clone(claims);
        }
        let mut revoked = Claims::clone(claims);
        revoked.revoked_at = at;
        Arc::new(revoked)
    }

    /// Records that `jti` is revoked from `at` (an earlier revocation stands), by notice
    /// `seq` (or by a superseding license), and reports it when it is news (saying whether
    /// `reads` holds that license).
    pub(super) fn learn_revocation(
        &mut self,
        jti: &str,
        at: i64,
        seq: Option<u64>,
        reads: &Reads,
        events: &mut Events,
    ) {
        if self.revoked.get(jti).is_some_and(|&known| known <= at) {
            return;
        }
        self.revoked.insert(jti.to_owned(), at);
        if self.revoked.len() > MAX_REVOKED {
            // The oldest revocation goes: its license has most likely expired by now.
            if let Some(oldest) = self
                .revoked
                .iter()
                .min_by_key(|(jti, at)| (**at, (*jti).clone()))
                .map(|(jti, _)| jti.clone())
            {
                self.revoked.remove(&oldest);
            }
        }
        events.push_back(LicenseEvent::Revoked {
            jti: jti.to_owned(),
            revoked_at: crate::clock::from_unix_seconds(at),
            seq,
            in_set: reads.holds(jti),
        });
    }

    /// Judges a read's vendor notices for `customer` (the set's), oldest `seq` first. One
    /// of another customer, or an attestation past its `exp`, is refused as a whole; but
    /// what a refused notice of one of `others` (the other customers with a license in the
    /// read, any of which the set may be chosen from) revokes is revoked all the same, as
    /// a vendor-signed revocation of a license in the source (it only ever ends a license
    /// sooner; its attestation and `seq` wait until its customer's set is the one). One
    /// older than the highest accepted (`seq`) is refused too, but what it revokes stays
    /// revoked (a revocation never ends). Refusals are reported, each at most once per
    /// check interval. The highest accepted notice is read again at every check without
    /// effect but its revocations; only a newer one's attestation re-bases trusted time,
    /// so no attestation is ever used twice.
    pub(super) fn judge(
        &mut self,
        notices: &[NoticeLine],
        customer: Option<&str>,
        others: &[&str],
        reads: &Reads,
        cx: &mut Cx<'_>,
    ) {
        let Some(customer) = customer else {
            return;
        };
        let mut order: Vec<&NoticeLine> = notices.iter().collect();
        order.sort_by_key(|n| {
            (
                n.verified.as_ref().map_or(0, |notice| notice.seq),
                n.print.clone(),
            )
        });
        let mut seen = HashSet::new();
        for line in order {
            seen.insert(line.print.clone());
            let notice = match &line.verified {
                Ok(notice) => Arc::clone(notice),
                Err(error) => {
                    self.reject(line, error.clone(), None, cx);
                    continue;
                }
            };
            if notice.customer != customer {
                if others.contains(&notice.customer.as_str()) {
                    for jti in &notice.revoke {
                        self.learn_revocation(jti, notice.iat, Some(notice.seq), reads, cx.events);
                    }
                }
                let error = LicenseError::CustomerMismatch {
                    expected: customer.to_owned(),
                    found: notice.customer.clone(),
                };
                self.reject(line, error, Some(notice.seq), cx);
                continue;
            }
            // (A receipt stays a receipt when a newer notice follows it.)
            if !notice.receipt.is_empty() {
                self.receipt_seq = self.receipt_seq.max(Some(notice.seq));
            }
            let highest = self.seq.get(customer).copied().unwrap_or(0);
            if notice.seq < highest {
                // Its attestation is never used. What it revokes stays revoked, though: a
                // revoked license never comes back, and its revocations were in force
                // when it was the newest (or the newer notice lists them again).
                for jti in &notice.revoke {
                    self.learn_revocation(jti, notice.iat, Some(notice.seq), reads, cx.events);
                }
                let error = LicenseError::StaleSequence {
                    seq: notice.seq,
                    highest,
                };
                self.reject(line, error, Some(notice.seq), cx);
                continue;
            }
            if notice.seq == highest {
                // Accepted before (this run or an earlier one): what it revoked stays
                // revoked, and what it attested is still a floor under real time.
                for jti in &notice.revoke {
                    self.learn_revocation(jti, notice.iat, Some(notice.seq), reads, cx.events);
                }
                if let Some(time) = notice.time {
                    cx.time.attest_floor(time);
                }
                continue;
            }
            if let (Some(_), Some(exp)) = (notice.time, notice.exp) {
                // Judged by the wall and the vendor's floors, not by our own marks: the
                // attestation is there to correct them.
                let floors = [cx.time.vendor_floor_secs(), reads.issue_floor()]
                    .into_iter()
                    .flatten()
                    .fold(cx.time.wall_secs(), i64::max);
                if floors >= exp {
                    let error = LicenseError::Expired { expired_at: exp };
                    self.reject(line, error, Some(notice.seq), cx);
                    continue;
                }
            }
            self.accept(customer, &notice, reads, cx);
        }
        self.reported.retain(|print| seen.contains(print));
    }

    /// Accepts `notice` for `customer`: its `seq` becomes the highest, its revocations
    /// apply, and its attestation re-bases trusted time. How far trusted time moved goes
    /// to the judge (`cx.attested`), which moves the anchors of the episode and the
    /// instance back with it and says whether manipulation cleared.
    fn accept(&mut self, customer: &str, notice: &Notice, reads: &Reads, cx: &mut Cx<'_>) {
        if !self.seq.contains_key(customer) && self.seq.len() >= MAX_NOTICE_CUSTOMERS {
            // (Only a renamed customer's history goes: its notices no longer apply.)
            if let Some(other) = self.seq.keys().find(|c| *c != customer).cloned() {
                self.seq.remove(&other);
            }
        }
        self.seq.insert(customer.to_owned(), notice.seq);
        for jti in &notice.revoke {
            self.learn_revocation(jti, notice.iat, Some(notice.seq), reads, cx.events);
        }
        let Some(time) = notice.time else {
            return;
        };
        let wall = cx.time.wall_secs();
        let moved = cx.time.attest(time);
        let cleared = (cx.attested)(moved, cx.time.wall_is_consistent());
        cx.events.push_back(LicenseEvent::ClockAttested {
            seq: notice.seq,
            attested_time: crate::clock::from_unix_seconds(time),
            wall_offset_seconds: wall.saturating_sub(time),
            trusted_time_moved_seconds: moved,
            cleared_manipulation: cleared,
        });
    }

    /// Reports a refused notice, at most once per check interval for each.
    fn reject(
        &mut self,
        line: &NoticeLine,
        error: LicenseError,
        seq: Option<u64>,
        cx: &mut Cx<'_>,
    ) {
        if !self
            .reported
            .ready(line.print.clone(), cx.mono, cx.config.check_interval)
        {
            return;
        }
        cx.events.push_back(LicenseEvent::NoticeRejected {
            error,
            line: line.line,
            fingerprint: line.print.clone(),
            seq,
        });
    }
}
