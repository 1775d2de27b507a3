//! The vendor's ledger (feature `ledger`): every license, vendor notice, usage receipt and
//! instance key per customer, in one SQLite file, and what usage verification learns from
//! it.
//!
//! The CLI keeps one (`--ledger`, `iosetu-ledger.db` in the current directory by default):
//! `issue` and `notice` record what they sign, `notice` takes the customer's next `seq`
//! from it, and `usage verify` compares the reports with what earlier true-ups accepted and
//! signs a **receipt** (`--receipt`): a vendor notice whose
//! [`receipt`](crate::Notice::receipt) lists each instance's journal head. The customer
//! installs it like any notice; the monitor notes `receipt:<seq>` in its journal, and the
//! next report must extend every receipted head.
//!
//! What the ledger adds to [`usage::verify`]'s findings ([`Ledger::check`]):
//!
//! * [`MissingInstance`](crate::usage::FindingKind::MissingInstance): a key an earlier
//!   true-up of the customer saw is in none of the reports (stopped for good, or its
//!   journal withheld).
//! * [`NewKey`](crate::usage::FindingKind::NewKey): a key the ledger has not seen (a new
//!   instance, or one that had to make a new key).
//! * [`ReceiptCut`](crate::usage::FindingKind::ReceiptCut) (tampering): a head the vendor
//!   receipted is not in that instance's report: neither an hourly record with its `n`
//!   and link, nor a daily record that folds in `n`. The journal was cut, rewritten or
//!   restored below what was accepted.
//! * [`NoticeRollback`](crate::usage::FindingKind::NoticeRollback) (tampering): a
//!   journal's records show a lower notice `seq` (or fewer revocations) than the same
//!   journal showed at an earlier true-up.
//!
//! ```
//! use iosetu_license::ledger::Ledger;
//! use iosetu_license::{Claims, LicenseSigner, Notice};
//!
//! let dir = tempfile::tempdir()?;
//! let mut ledger = Ledger::open(dir.path().join("iosetu-ledger.db"))?;
//! let signer = LicenseSigner::generate()?;
//!
//! let mut claims = Claims::new("Acme Corp", 4_102_444_800);
//! claims.jti = Some("acme-2027".into());
//! let license = ledger.issue_license(&signer, &claims)?;
//!
//! // The next seq is taken, the notice signed and recorded in one transaction.
//! let mut revocation = Notice::new("Acme Corp", 1_800_000_000, 0);
//! revocation.revoke = vec!["acme-2027".into()];
//! let issued = ledger.issue_notice(&signer, revocation, None)?;
//! assert_eq!(issued.notice.seq, 1);
//! assert_eq!(ledger.next_seq("Acme Corp")?, 2);
//! assert_eq!(ledger.licenses("Acme Corp")?[0].token, license);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The file
//!
//! An SQLite database (compiled in; no system library) marked as ours by its
//! `application_id` and schema version (`user_version`). [`Ledger::open`] creates it where
//! nothing is (built under a temporary name and linked into place, so a concurrent opener
//! never sees half a ledger), and refuses anything else it finds with a [`LedgerError`]
//! whose [`reason`](LedgerError::reason) says why (`not_a_ledger`, `damaged`,
//! `newer_version`, ...): a file that is not ours is never reset or written. It runs in
//! WAL mode with a busy timeout, and each change is one `IMMEDIATE` transaction, so CLI
//! runs at once wait for each other and never hand out the same `seq`.
//!
//! Back it up like the signing key: without it, the next `notice` starts again at `seq` 1
//! (which a customer's service refuses as stale) and the receipts it anchored are gone.
//!
//! [`usage::verify`]: crate::usage::verify

mod check;
mod entries;
mod error;
mod open;
mod receipt;
mod record;

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use rusqlite::Connection;

use crate::clock::unix_seconds;

pub use check::customer_of;
pub use entries::{InstanceEntry, LicenseEntry, NoticeEntry};
pub use error::LedgerError;
pub use open::{APPLICATION_ID, BUSY_TIMEOUT, DEFAULT_PATH, SCHEMA_VERSION};
pub use receipt::ReceiptSigner;
pub use record::{IssuedNotice, TrueUp};

/// The vendor's ledger: one SQLite file, opened with [`Ledger::open`]. See the [module
/// docs](self).
///
/// One `Ledger` is one connection: `Send`, not `Sync`. Processes and threads that each
/// open their own share the file safely.
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A count or sequence number as SQLite stores it (a 64-bit signed integer), saturating:
/// no journal or notice comes near 2^63.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored integer back as a count; a negative one (never written) reads as 0.
fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn now_secs() -> i64 {
    unix_seconds(SystemTime::now())
}

/// The instance as [`usage::verify`](crate::usage::verify) names it: the first 12
/// characters of its key.
fn short(key: &str) -> String {
    key.chars().take(12).collect()
}

fn random_jti() -> Result<String, LedgerError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| LedgerError::Invalid(format!("no randomness for a jti: {e}")))?;
    Ok(crate::token::hex(&bytes))
}
