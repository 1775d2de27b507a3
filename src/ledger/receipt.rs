//! Usage receipts: how the vendor signs them, and the receipt a true-up signs and records.

use std::fmt;
use std::path::Path;
use std::time::SystemTime;

use rusqlite::Connection;

use super::check::latest;
use super::entries::revocations;
use super::record::{IssuedNotice, MAX_SEQ, highest_seq, insert_notice, next_after};
use super::{LedgerError, random_jti};
use crate::clock::unix_seconds;
use crate::token::{MAX_RECEIPT_HEADS, MAX_REVOKE};
use crate::usage::Report;
use crate::{LicenseSigner, Notice, ReceiptHead};

/// How to sign a usage receipt in [`Ledger::true_up`](super::Ledger::true_up): the
/// vendor's key, and what a service that checks `iss` or `aud` needs.
#[derive(Clone)]
pub struct ReceiptSigner<'a> {
    signer: &'a LicenseSigner,
    iss: Option<String>,
    aud: Vec<String>,
    issued_at: Option<SystemTime>,
}

impl<'a> ReceiptSigner<'a> {
    /// Receipts signed with `signer` (its `kid`, if it has one, goes in the header).
    pub fn new(signer: &'a LicenseSigner) -> Self {
        Self {
            signer,
            iss: None,
            aud: Vec::new(),
            issued_at: None,
        }
    }

    /// The `iss` a service that checks one expects.
    #[must_use]
    pub fn issuer(mut self, iss: impl Into<String>) -> Self {
        self.iss = Some(iss.into());
        self
    }

    /// An `aud` a service that checks one expects.
    #[must_use]
    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.aud.push(aud.into());
        self
    }

    /// The receipt's `iat` (by default, now).
    #[must_use]
    pub fn issued_at(mut self, at: SystemTime) -> Self {
        self.issued_at = Some(at);
        self
    }
}

impl fmt::Debug for ReceiptSigner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiptSigner")
            .field("signer", self.signer)
            .field("iss", &self.iss)
            .field("aud", &self.aud)
            .finish_non_exhaustive()
    }
}

/// Signs and records the receipt of `reports` (inside the true-up's transaction).
pub(super) fn issue_receipt(
    tx: &Connection,
    path: &Path,
    signer: &ReceiptSigner<'_>,
    customer: &str,
    reports: &[Report],
) -> Result<Option<IssuedNotice>, LedgerError> {
    let heads: Vec<ReceiptHead> = latest(reports)
        .into_iter()
        .filter_map(|(key, report)| {
            Some(ReceiptHead {
                key: key.to_owned(),
                n: report.head_n?,
                link: report.head_link.clone()?,
            })
        })
        .collect();
    if heads.is_empty() {
        return Ok(None);
    }
    if heads.len() > MAX_RECEIPT_HEADS || heads.iter().any(|h| h.n > MAX_SEQ) {
        return Err(LedgerError::Invalid(format!(
            "a receipt holds at most {MAX_RECEIPT_HEADS} heads of records numbered up to 2^53"
        )));
    }
    let previous = highest_seq(tx, path, customer)?;
    let iat = unix_seconds(signer.issued_at.unwrap_or_else(SystemTime::now));
    let mut notice = Notice::new(customer, iat, next_after(previous)?);
    notice.receipt = heads;
    // The revocations in force, newest first: the receipt is the newest notice, and may
    // be all that stays in the customer's notice source.
    let mut revoke = Vec::new();
    for (_, jti) in revocations(tx, path, customer)?.into_iter().rev() {
        if !revoke.contains(&jti) && revoke.len() < MAX_REVOKE {
            revoke.push(jti);
        }
    }
    notice.revoke = revoke;
    notice.iss = signer.iss.clone();
    notice.aud = signer.aud.clone();
    notice.jti = Some(random_jti()?);
    let token = signer.signer.sign_notice(&notice);
    insert_notice(tx, path, &notice, &token)?;
    Ok(Some(IssuedNotice {
        notice,
        token,
        previous_seq: previous,
    }))
}
