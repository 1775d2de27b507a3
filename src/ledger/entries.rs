//! What the ledger holds, as it reads it back: licenses, notices (receipts among them)
//! and instance keys.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::Connection;

use super::error::db_error;
use super::{Ledger, LedgerError, uint};
use crate::ReceiptHead;

/// A license the ledger recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LicenseEntry {
    /// Its `jti`.
    pub jti: String,
    /// Its customer.
    pub customer: String,
    /// Its `iat`, if it has one.
    pub iat: Option<i64>,
    /// Its `exp`.
    pub exp: i64,
    /// The token as issued.
    pub token: String,
    /// When the ledger recorded it (seconds since the epoch, the vendor's clock).
    pub recorded_at: i64,
}

/// A vendor notice (a usage receipt among them) the ledger recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NoticeEntry {
    /// Its customer.
    pub customer: String,
    /// Its `seq`.
    pub seq: u64,
    /// Its `iat`.
    pub iat: i64,
    /// Its `jti`, if it has one.
    pub jti: Option<String>,
    /// The token as issued.
    pub token: String,
    /// The `jti`s it revokes.
    pub revoke: Vec<String>,
    /// The journal heads it receipts (empty for a notice that is not a receipt).
    pub receipt: Vec<ReceiptHead>,
    /// When the ledger recorded it (seconds since the epoch, the vendor's clock).
    pub recorded_at: i64,
}

/// An instance key the ledger has seen in a customer's usage reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstanceEntry {
    /// Its public key (base64url), as its reports name it.
    pub key: String,
    /// When a true-up first and last saw it (seconds since the epoch, the vendor's clock).
    pub first_seen: i64,
    /// See `first_seen`.
    pub last_seen: i64,
    /// The true-ups (their numbers in the ledger) that first and last saw it.
    pub first_true_up: u64,
    /// See `first_true_up`.
    pub last_true_up: u64,
    /// The head of its last report: the last record's `n` and link.
    pub head_n: Option<u64>,
    /// See `head_n`.
    pub head_link: Option<String>,
    /// The highest notice `seq` and the most revocations its records have shown.
    pub notice_seq: Option<u64>,
    /// See `notice_seq`.
    pub revocations: u64,
}

impl Ledger {
    /// The licenses recorded for `customer`, oldest first.
    pub fn licenses(&self, customer: &str) -> Result<Vec<LicenseEntry>, LedgerError> {
        self.read(|conn, path| {
            let mut statement = conn
                .prepare(
                    "SELECT jti, customer, iat, exp, token, recorded_at FROM licenses
                     WHERE customer = ?1 ORDER BY recorded_at, rowid",
                )
                .map_err(|e| db_error(path, e))?;
            let rows = statement
                .query_map([customer], |r| {
                    Ok(LicenseEntry {
                        jti: r.get(0)?,
                        customer: r.get(1)?,
                        iat: r.get(2)?,
                        exp: r.get(3)?,
                        token: r.get(4)?,
                        recorded_at: r.get(5)?,
                    })
                })
                .map_err(|e| db_error(path, e))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|e| db_error(path, e))
        })
    }

    /// The notices (receipts among them) recorded for `customer`, by `seq`.
    pub fn notices(&self, customer: &str) -> Result<Vec<NoticeEntry>, LedgerError> {
        self.read(|conn, path| {
            let mut notices = {
                let mut statement = conn
                    .prepare(
                        "SELECT seq, iat, jti, token, recorded_at FROM notices
                         WHERE customer = ?1 ORDER BY seq",
                    )
                    .map_err(|e| db_error(path, e))?;
                let rows = statement
                    .query_map([customer], |r| {
                        Ok(NoticeEntry {
                            customer: customer.to_owned(),
                            seq: uint(r.get(0)?),
                            iat: r.get(1)?,
                            jti: r.get(2)?,
                            token: r.get(3)?,
                            revoke: Vec::new(),
                            receipt: Vec::new(),
                            recorded_at: r.get(4)?,
                        })
                    })
                    .map_err(|e| db_error(path, e))?;
                rows.collect::<Result<Vec<_>, _>>()
                    .map_err(|e| db_error(path, e))?
            };
            let revocations = revocations(conn, path, customer)?;
            let heads = receipted(conn, path, customer)?;
            for notice in &mut notices {
                notice.revoke = revocations
                    .iter()
                    .filter(|(seq, _)| *seq == notice.seq)
                    .map(|(_, jti)| jti.clone())
                    .collect();
                notice.receipt = heads
                    .iter()
                    .filter(|h| h.seq == notice.seq)
                    .map(|h| h.head.clone())
                    .collect();
            }
            Ok(notices)
        })
    }

    /// The instance keys seen in `customer`'s usage reports, by key.
    pub fn instances(&self, customer: &str) -> Result<Vec<InstanceEntry>, LedgerError> {
        self.read(|conn, path| Ok(instances(conn, path, customer)?.into_values().collect()))
    }
}

/// Every (seq, jti) the customer's notices revoke, oldest notice first.
pub(super) fn revocations(
    conn: &Connection,
    path: &Path,
    customer: &str,
) -> Result<Vec<(u64, String)>, LedgerError> {
    let mut statement = conn
        .prepare("SELECT seq, jti FROM notice_revocations WHERE customer = ?1 ORDER BY seq, jti")
        .map_err(|e| db_error(path, e))?;
    let rows = statement
        .query_map([customer], |r| Ok((uint(r.get(0)?), r.get(1)?)))
        .map_err(|e| db_error(path, e))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(|e| db_error(path, e))
}

/// A head a receipt accepted.
#[derive(Debug, Clone)]
pub(super) struct Receipted {
    pub(super) seq: u64,
    pub(super) head: ReceiptHead,
}

pub(super) fn receipted(
    conn: &Connection,
    path: &Path,
    customer: &str,
) -> Result<Vec<Receipted>, LedgerError> {
    let mut statement = conn
        .prepare(
            "SELECT seq, key, n, link FROM receipt_heads WHERE customer = ?1 ORDER BY seq, key",
        )
        .map_err(|e| db_error(path, e))?;
    let rows = statement
        .query_map([customer], |r| {
            Ok(Receipted {
                seq: uint(r.get(0)?),
                head: ReceiptHead {
                    key: r.get(1)?,
                    n: uint(r.get(2)?),
                    link: r.get(3)?,
                },
            })
        })
        .map_err(|e| db_error(path, e))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(|e| db_error(path, e))
}

pub(super) fn instances(
    conn: &Connection,
    path: &Path,
    customer: &str,
) -> Result<BTreeMap<String, InstanceEntry>, LedgerError> {
    let mut statement = conn
        .prepare(
            "SELECT key, first_seen, last_seen, first_true_up, last_true_up, head_n, head_link,
                 notice_seq, revocations
             FROM instances WHERE customer = ?1 ORDER BY key",
        )
        .map_err(|e| db_error(path, e))?;
    let rows = statement
        .query_map([customer], |r| {
            Ok(InstanceEntry {
                key: r.get(0)?,
                first_seen: r.get(1)?,
                last_seen: r.get(2)?,
                first_true_up: uint(r.get(3)?),
                last_true_up: uint(r.get(4)?),
                head_n: r.get::<_, Option<i64>>(5)?.map(uint),
                head_link: r.get(6)?,
                notice_seq: r.get::<_, Option<i64>>(7)?.map(uint),
                revocations: uint(r.get(8)?),
            })
        })
        .map_err(|e| db_error(path, e))?;
    rows.map(|row| row.map(|i| (i.key.clone(), i)))
        .collect::<Result<BTreeMap<_, _>, _>>()
        .map_err(|e| db_error(path, e))
}
