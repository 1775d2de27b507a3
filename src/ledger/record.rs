//! Recording what the vendor signs: licenses, notices (taking the customer's next `seq`)
//! and true-ups.

use std::collections::BTreeSet;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension as _};

use super::check::{Known, customer_of, latest, shown_notices};
use super::error::db_error;
use super::receipt::{ReceiptSigner, issue_receipt};
use super::{Ledger, LedgerError, int, now_secs, short, uint};
use crate::usage::{Report, Verification};
use crate::{Claims, LicenseSigner, Notice};

/// The largest `seq` a notice may carry (2^53, exact in every JSON reader).
pub(super) const MAX_SEQ: u64 = 1 << 53;

/// A notice the ledger signed and recorded.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct IssuedNotice {
    /// The notice, with the `seq` it was given.
    pub notice: Notice,
    /// The signed token: the line the customer adds to its notice source.
    pub token: String,
    /// The highest `seq` the ledger held for the customer before this one.
    pub previous_seq: Option<u64>,
}

/// What [`Ledger::true_up`] concluded and recorded.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TrueUp {
    /// The customer.
    pub customer: String,
    /// The true-up's number in the ledger.
    pub id: u64,
    /// [`usage::verify`](crate::usage::verify)'s verification, with the ledger's findings
    /// ([`Ledger::check`]) added: [`Verification::intact`] covers both.
    pub verification: Verification,
    /// The receipt signed and recorded: only when one was asked for, nothing shows
    /// tampering and some report has a head.
    pub receipt: Option<IssuedNotice>,
}

impl Ledger {
    /// Signs `claims` into a license and records it. The license needs a `jti` (the CLI
    /// always sets one); a `jti` the ledger holds already is refused.
    pub fn issue_license(
        &mut self,
        signer: &LicenseSigner,
        claims: &Claims,
    ) -> Result<String, LedgerError> {
        let jti = claims
            .jti
            .clone()
            .ok_or_else(|| LedgerError::Invalid("a license needs a jti to be recorded".into()))?;
        let token = signer.sign(claims);
        self.write(|tx, path| {
            let taken: Option<i64> = tx
                .query_row("SELECT 1 FROM licenses WHERE jti = ?1", [&jti], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(|e| db_error(path, e))?;
            if taken.is_some() {
                return Err(LedgerError::JtiTaken { jti: jti.clone() });
            }
            tx.execute(
                "INSERT INTO licenses (jti, customer, iat, exp, token, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![
                    jti,
                    claims.customer,
                    claims.iat,
                    claims.exp,
                    token,
                    now_secs()
                ],
            )
            .map_err(|e| db_error(path, e))?;
            Ok(())
        })?;
        Ok(token)
    }

    /// Signs `notice` with `seq` (or, when `None`, the customer's next: one more than the
    /// highest the ledger holds) and records it, in one transaction: two processes at once
    /// never get the same `seq`. The `seq` already in `notice` is replaced. A `seq` the
    /// ledger holds for the customer already is refused ([`LedgerError::SeqTaken`]).
    pub fn issue_notice(
        &mut self,
        signer: &LicenseSigner,
        mut notice: Notice,
        seq: Option<u64>,
    ) -> Result<IssuedNotice, LedgerError> {
        if notice.customer.trim().is_empty() {
            return Err(LedgerError::Invalid("a notice needs a customer".to_owned()));
        }
        if seq.is_some_and(|s| !(1..=MAX_SEQ).contains(&s)) {
            return Err(LedgerError::Invalid(
                "a notice seq is a positive integer (at most 2^53)".to_owned(),
            ));
        }
        self.write(|tx, path| {
            let previous = highest_seq(tx, path, &notice.customer)?;
            notice.seq = match seq {
                Some(seq) => {
                    if seq_taken(tx, path, &notice.customer, seq)? {
                        return Err(LedgerError::SeqTaken {
                            customer: notice.customer.clone(),
                            seq,
                        });
                    }
                    seq
                }
                None => next_after(previous)?,
            };
            let token = signer.sign_notice(&notice);
            insert_notice(tx, path, &notice, &token)?;
            Ok(IssuedNotice {
                notice,
                token,
                previous_seq: previous,
            })
        })
    }

    /// The `seq` the customer's next notice would get. (Only a look: a notice issued by
    /// another process meanwhile takes it; [`issue_notice`](Self::issue_notice) takes the
    /// next atomically.)
    pub fn next_seq(&self, customer: &str) -> Result<u64, LedgerError> {
        self.read(|conn, path| next_after(highest_seq(conn, path, customer)?))
    }

    /// A true-up of `customer`'s `reports`, recorded: runs
    /// [`usage::verify`](crate::usage::verify), adds the ledger's findings
    /// ([`check`](Self::check)), records each instance key and report head, and, when
    /// `receipt` is given and nothing shows tampering, signs and records a usage receipt:
    /// a notice with the customer's next `seq` whose [`receipt`](Notice::receipt) lists
    /// each instance's head (the last record's `n` and link of its latest report), and
    /// whose `revoke` repeats the revocations the ledger holds for the customer (the
    /// newest 64), so that the receipt alone keeps them when it replaces older notice
    /// lines.
    ///
    /// The reports must name no customer but `customer` ([`customer_of`]). A true-up that
    /// shows tampering is recorded too (as such), without a receipt.
    pub fn true_up(
        &mut self,
        customer: &str,
        reports: &[Report],
        receipt: Option<&ReceiptSigner<'_>>,
    ) -> Result<TrueUp, LedgerError> {
        if customer.trim().is_empty() {
            return Err(LedgerError::Invalid("a true-up needs a customer".into()));
        }
        if let Some(named) = customer_of(reports)?
            && named != customer
        {
            return Err(LedgerError::Invalid(format!(
                "the reports are {named:?}'s, not {customer:?}'s"
            )));
        }
        // Outside the lock: checking signatures is the slow part.
        let mut verification = crate::usage::verify(reports);
        self.write(|tx, path| {
            let known = Known::load(tx, path, customer)?;
            verification
                .findings
                .extend(known.findings(customer, reports));
            let intact = verification.intact();
            let now = now_secs();
            tx.execute(
                "INSERT INTO true_ups (customer, at, tampering) VALUES (?1, ?2, ?3)",
                rusqlite::params![customer, now, !intact],
            )
            .map_err(|e| db_error(path, e))?;
            let id = tx.last_insert_rowid();
            for report in reports {
                let (notice_seq, revocations) = shown_notices(report, customer);
                tx.execute(
                    "INSERT INTO report_heads (true_up, key, exported_at, head_n, head_link,
                         records, notice_seq, revocations)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    rusqlite::params![
                        id,
                        report.key,
                        report.exported_at,
                        report.head_n.map(int),
                        report.head_link,
                        int(report.records.len() as u64),
                        notice_seq.map(int),
                        int(revocations)
                    ],
                )
                .map_err(|e| db_error(path, e))?;
            }
            for (key, report) in latest(reports) {
                let (shown_seq, shown_revocations) = shown_notices(report, customer);
                let before = known.instances.get(key);
                let notice_seq = shown_seq.max(before.and_then(|b| b.notice_seq));
                let revocations = shown_revocations.max(before.map_or(0, |b| b.revocations));
                tx.execute(
                    "INSERT INTO instances (customer, key, first_seen, last_seen, first_true_up,
                         last_true_up, head_n, head_link, notice_seq, revocations)
                     VALUES (?1, ?2, ?3, ?3, ?4, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (customer, key) DO UPDATE SET
                         last_seen = excluded.last_seen,
                         last_true_up = excluded.last_true_up,
                         head_n = excluded.head_n,
                         head_link = excluded.head_link,
                         notice_seq = excluded.notice_seq,
                         revocations = excluded.revocations",
                    rusqlite::params![
                        customer,
                        key,
                        now,
                        id,
                        report.head_n.map(int),
                        report.head_link,
                        notice_seq.map(int),
                        int(revocations)
                    ],
                )
                .map_err(|e| db_error(path, e))?;
            }
            let receipt = match receipt {
                Some(signer) if intact => issue_receipt(tx, path, signer, customer, reports)?,
                _ => None,
            };
            if let Some(issued) = &receipt {
                tx.execute(
                    "UPDATE true_ups SET receipt_seq = ?1 WHERE id = ?2",
                    rusqlite::params![int(issued.notice.seq), id],
                )
                .map_err(|e| db_error(path, e))?;
            }
            Ok(TrueUp {
                customer: customer.to_owned(),
                id: uint(id),
                verification,
                receipt,
            })
        })
    }
}

pub(super) fn next_after(previous: Option<u64>) -> Result<u64, LedgerError> {
    let next = previous.unwrap_or(0).saturating_add(1);
    if next > MAX_SEQ {
        return Err(LedgerError::Invalid(
            "the customer's notice seq has reached 2^53".into(),
        ));
    }
    Ok(next)
}

pub(super) fn highest_seq(
    conn: &Connection,
    path: &Path,
    customer: &str,
) -> Result<Option<u64>, LedgerError> {
    let highest: Option<i64> = conn
        .query_row(
            "SELECT max(seq) FROM notices WHERE customer = ?1",
            [customer],
            |r| r.get(0),
        )
        .map_err(|e| db_error(path, e))?;
    Ok(highest.map(uint))
}

fn seq_taken(
    conn: &Connection,
    path: &Path,
    customer: &str,
    seq: u64,
) -> Result<bool, LedgerError> {
    conn.query_row(
        "SELECT 1 FROM notices WHERE customer = ?1 AND seq = ?2",
        rusqlite::params![customer, int(seq)],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map(|found| found.is_some())
    .map_err(|e| db_error(path, e))
}

pub(super) fn insert_notice(
    conn: &Connection,
    path: &Path,
    notice: &Notice,
    token: &str,
) -> Result<(), LedgerError> {
    let customer = &notice.customer;
    let seq = int(notice.seq);
    conn.execute(
        "INSERT INTO notices (customer, seq, iat, jti, token, recorded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        rusqlite::params![customer, seq, notice.iat, notice.jti, token, now_secs()],
    )
    .map_err(|e| db_error(path, e))?;
    for jti in notice.revoke.iter().collect::<BTreeSet<_>>() {
        conn.execute(
            "INSERT INTO notice_revocations (customer, seq, jti) VALUES (?1, ?2, ?3)",
            rusqlite::params![customer, seq, jti],
        )
        .map_err(|e| db_error(path, e))?;
    }
    let mut keys = BTreeSet::new();
    for head in &notice.receipt {
        if !keys.insert(head.key.as_str()) {
            return Err(LedgerError::Invalid(format!(
                "a receipt names instance {} twice",
                short(&head.key)
            )));
        }
        conn.execute(
            "INSERT INTO receipt_heads (customer, seq, key, n, link) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![customer, seq, head.key, int(head.n), head.link],
        )
        .map_err(|e| db_error(path, e))?;
    }
    Ok(())
}
