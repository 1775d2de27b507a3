//! Why the ledger could not be used, or refused a change, and SQLite's errors as such.

use std::fmt;
use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

use super::{BUSY_TIMEOUT, SCHEMA_VERSION};
use crate::files::shown;

/// Why the ledger could not be used, or refused a change. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The file could not be read, created or written (permissions, a full disk, ...).
    #[error("{}: {detail}", shown(path))]
    Io {
        /// The ledger.
        path: PathBuf,
        /// What the system said.
        detail: String,
    },
    /// The file is not a ledger of ours: not an SQLite database, or one of another
    /// application. It was left as it is.
    #[error(
        "{}: not an iosetu ledger ({detail}); it was left as it is",
        shown(path)
    )]
    NotALedger {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The file is a ledger of ours, but damaged (SQLite's `quick_check` failed, or it is
    /// cut short). It was left as it is: restore it from a backup.
    #[error(
        "{}: the ledger is damaged ({detail}); it was left as it is: restore it from a backup",
        shown(path)
    )]
    Damaged {
        /// The ledger.
        path: PathBuf,
        /// What SQLite found.
        detail: String,
    },
    /// The ledger was written by a newer version of this crate (its schema version is
    /// higher than [`SCHEMA_VERSION`]).
    #[error(
        "{}: a ledger of schema version {found}, newer than this build reads ({SCHEMA_VERSION}): \
         use a newer iosetu-license",
        shown(path)
    )]
    NewerVersion {
        /// The ledger.
        path: PathBuf,
        /// Its schema version.
        found: i64,
    },
    /// Another process held the ledger for longer than [`BUSY_TIMEOUT`].
    #[error(
        "{}: the ledger stayed locked by another process for {} s; try again",
        shown(path),
        BUSY_TIMEOUT.as_secs()
    )]
    Busy {
        /// The ledger.
        path: PathBuf,
    },
    /// A notice `seq` the ledger already holds for the customer was asked for.
    #[error(
        "the ledger already holds notice seq {seq} for {customer:?}: a second notice with it \
         would be refused as stale or replace the first; leave the seq out to take the next"
    )]
    SeqTaken {
        /// The customer.
        customer: String,
        /// The seq.
        seq: u64,
    },
    /// A license `jti` the ledger already holds.
    #[error("the ledger already holds a license with jti {jti:?}")]
    JtiTaken {
        /// The jti.
        jti: String,
    },
    /// The reports name licenses of several customers: a true-up is of one.
    #[error(
        "the reports name licenses of several customers ({}): verify each customer's reports \
         on their own",
        customers.join(", ")
    )]
    SeveralCustomers {
        /// The customers named.
        customers: Vec<String>,
    },
    /// Something asked of the ledger that it cannot record (a license without a `jti`, a
    /// `seq` out of range, a receipt of too many heads, ...).
    #[error("{0}")]
    Invalid(String),
    /// Any other error SQLite reported.
    #[error("{}: {detail}", shown(path))]
    Database {
        /// The ledger.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
}

impl LedgerError {
    /// A stable reason code: `io`, `not_a_ledger`, `damaged`, `newer_version`, `busy`,
    /// `seq_taken`, `jti_taken`, `several_customers`, `invalid`, `database`.
    pub fn reason(&self) -> &'static str {
        match self {
            LedgerError::Io { .. } => "io",
            LedgerError::NotALedger { .. } => "not_a_ledger",
            LedgerError::Damaged { .. } => "damaged",
            LedgerError::NewerVersion { .. } => "newer_version",
            LedgerError::Busy { .. } => "busy",
            LedgerError::SeqTaken { .. } => "seq_taken",
            LedgerError::JtiTaken { .. } => "jti_taken",
            LedgerError::SeveralCustomers { .. } => "several_customers",
            LedgerError::Invalid(_) => "invalid",
            LedgerError::Database { .. } => "database",
        }
    }
}

pub(super) fn io_error(path: &Path, e: impl fmt::Display) -> LedgerError {
    LedgerError::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// An SQLite error as a ledger error of `path`.
pub(super) fn db_error(path: &Path, e: rusqlite::Error) -> LedgerError {
    let path = path.to_path_buf();
    let detail = e.to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => LedgerError::Busy { path },
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            LedgerError::Damaged { path, detail }
        }
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::NoLargeFileSupport,
        ) => LedgerError::Io { path, detail },
        _ => LedgerError::Database { path, detail },
    }
}
