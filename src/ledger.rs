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
//! * [`MissingInstance`](FindingKind::MissingInstance): a key an earlier true-up of the
//!   customer saw is in none of the reports (stopped for good, or its journal withheld).
//! * [`NewKey`](FindingKind::NewKey): a key the ledger has not seen (a new instance, or one
//!   that had to make a new key).
//! * [`ReceiptCut`](FindingKind::ReceiptCut) (tampering): a head the vendor receipted is
//!   not in that instance's report: neither an hourly record with its `n` and link, nor a
//!   daily record that folds in `n`. The journal was cut, rewritten or restored below what
//!   was accepted.
//! * [`NoticeRollback`](FindingKind::NoticeRollback) (tampering): a journal's records
//!   show a lower notice `seq` (or fewer revocations) than the same journal showed at an
//!   earlier true-up.
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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension as _, TransactionBehavior};

use crate::clock::{rfc3339, unix_seconds};
use crate::source::shown;
use crate::token::{MAX_RECEIPT_HEADS, MAX_REVOKE};
use crate::usage::{Finding, FindingKind, Report, Span, Verification};
use crate::{Claims, LicenseSigner, Notice, ReceiptHead};

/// Where the CLI keeps its ledger unless `--ledger` says otherwise: in the current
/// directory.
pub const DEFAULT_PATH: &str = "iosetu-ledger.db";

/// The SQLite `application_id` that marks a ledger of ours (`"ioLg"`).
pub const APPLICATION_ID: i32 = 0x696f_4c67;

/// The schema version this build reads and writes (SQLite's `user_version`).
pub const SCHEMA_VERSION: i32 = 1;

/// How long an operation waits for another process's transaction before it gives up
/// ([`LedgerError::Busy`]).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest `seq` a notice may carry (2^53, exact in every JSON reader).
const MAX_SEQ: u64 = 1 << 53;

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

const SCHEMA: &str = "
CREATE TABLE licenses (
    jti TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    iat INTEGER,
    exp INTEGER NOT NULL,
    token TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
) STRICT;
CREATE INDEX licenses_by_customer ON licenses (customer);
CREATE TABLE notices (
    customer TEXT NOT NULL,
    seq INTEGER NOT NULL CHECK (seq > 0),
    iat INTEGER NOT NULL,
    jti TEXT,
    token TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (customer, seq)
) STRICT;
CREATE TABLE notice_revocations (
    customer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    jti TEXT NOT NULL,
    PRIMARY KEY (customer, seq, jti)
) STRICT;
CREATE TABLE receipt_heads (
    customer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    n INTEGER NOT NULL,
    link TEXT NOT NULL,
    PRIMARY KEY (customer, seq, key)
) STRICT;
CREATE TABLE true_ups (
    id INTEGER PRIMARY KEY,
    customer TEXT NOT NULL,
    at INTEGER NOT NULL,
    tampering INTEGER NOT NULL,
    receipt_seq INTEGER
) STRICT;
CREATE TABLE report_heads (
    true_up INTEGER NOT NULL,
    key TEXT NOT NULL,
    exported_at INTEGER NOT NULL,
    head_n INTEGER,
    head_link TEXT,
    records INTEGER NOT NULL,
    notice_seq INTEGER,
    revocations INTEGER NOT NULL
) STRICT;
CREATE INDEX report_heads_by_true_up ON report_heads (true_up);
CREATE TABLE instances (
    customer TEXT NOT NULL,
    key TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    first_true_up INTEGER NOT NULL,
    last_true_up INTEGER NOT NULL,
    head_n INTEGER,
    head_link TEXT,
    notice_seq INTEGER,
    revocations INTEGER NOT NULL,
    PRIMARY KEY (customer, key)
) STRICT;
";

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

fn io_error(path: &Path, e: impl fmt::Display) -> LedgerError {
    LedgerError::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// An SQLite error as a ledger error of `path`.
fn db_error(path: &Path, e: rusqlite::Error) -> LedgerError {
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

/// How to sign a usage receipt in [`Ledger::true_up`]: the vendor's key, and what a
/// service that checks `iss` or `aud` needs.
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

/// The customer the reports' records name (the customer of the licenses in force when
/// they were written): `None` when no record names one (no license was in force), an
/// error when they name several.
pub fn customer_of(reports: &[Report]) -> Result<Option<String>, LedgerError> {
    let customers: BTreeSet<&str> = reports
        .iter()
        .flat_map(|r| &r.records)
        .flat_map(|r| &r.licenses)
        .map(|l| l.customer.as_str())
        .collect();
    match customers.len() {
        0 => Ok(None),
        1 => Ok(customers.first().map(|c| (*c).to_owned())),
        _ => Err(LedgerError::SeveralCustomers {
            customers: customers.into_iter().map(str::to_owned).collect(),
        }),
    }
}

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

impl Ledger {
    /// Opens the ledger at `path`, creating it (with its schema) where no file is.
    ///
    /// A file that is there and is not a ledger of ours is refused, never reset or
    /// written: [`LedgerError::NotALedger`] (not an SQLite database, or another
    /// application's), [`LedgerError::Damaged`] (SQLite's `quick_check` fails),
    /// [`LedgerError::NewerVersion`]. Waits up to [`BUSY_TIMEOUT`] for other processes.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LedgerError> {
        let path = path.as_ref();
        match std::fs::metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path)?,
            Err(e) => return Err(io_error(path, e)),
        }
        validate(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| db_error(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| db_error(path, e))?;
        // Every change is durable once its transaction returns: a license or notice the
        // ledger says it recorded is on disk.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| db_error(path, e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| db_error(path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Set at creation; someone's tool switched it off. WAL lets readers run beside
            // a writer; correctness rests on the IMMEDIATE transactions either way, so a
            // switch that cannot be made now (another process has the file open) waits for
            // a later run.
            let _ = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0));
        }
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The ledger's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one `IMMEDIATE` transaction: it holds the write lock from its start, so
    /// what it reads is still true when it writes; an error rolls everything back.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>, &Path) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| db_error(&path, e))?;
        let out = f(&tx, &path)?;
        tx.commit().map_err(|e| db_error(&path, e))?;
        Ok(out)
    }

    /// Runs `f` in one read transaction: a consistent view, whatever other processes
    /// commit meanwhile.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection, &Path) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| db_error(&self.path, e))?;
        f(&tx, &self.path)
    }

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

    /// What the ledger says about `customer`'s `reports`, without recording anything:
    /// instances missing since an earlier true-up, keys never seen, receipted heads the
    /// reports no longer hold, and journals whose notices went back since an earlier
    /// true-up. See the [module docs](self).
    pub fn check(&self, customer: &str, reports: &[Report]) -> Result<Vec<Finding>, LedgerError> {
        self.read(|conn, path| {
            let known = Known::load(conn, path, customer)?;
            Ok(known.findings(customer, reports))
        })
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

/// Signs and records the receipt of `reports` (inside the true-up's transaction).
fn issue_receipt(
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

fn random_jti() -> Result<String, LedgerError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| LedgerError::Invalid(format!("no randomness for a jti: {e}")))?;
    Ok(crate::token::hex(&bytes))
}

fn next_after(previous: Option<u64>) -> Result<u64, LedgerError> {
    let next = previous.unwrap_or(0).saturating_add(1);
    if next > MAX_SEQ {
        return Err(LedgerError::Invalid(
            "the customer's notice seq has reached 2^53".into(),
        ));
    }
    Ok(next)
}

fn highest_seq(conn: &Connection, path: &Path, customer: &str) -> Result<Option<u64>, LedgerError> {
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

fn insert_notice(
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

/// Every (seq, jti) the customer's notices revoke, oldest notice first.
fn revocations(
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
struct Receipted {
    seq: u64,
    head: ReceiptHead,
}

fn receipted(
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

fn instances(
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

/// What the ledger knew of a customer before a true-up.
#[derive(Debug, Default)]
struct Known {
    instances: BTreeMap<String, InstanceEntry>,
    receipted: Vec<Receipted>,
}

impl Known {
    fn load(conn: &Connection, path: &Path, customer: &str) -> Result<Self, LedgerError> {
        Ok(Self {
            instances: instances(conn, path, customer)?,
            receipted: receipted(conn, path, customer)?,
        })
    }

    /// The ledger's findings on `reports` (pure: what [`Ledger::check`] returns).
    fn findings(&self, customer: &str, reports: &[Report]) -> Vec<Finding> {
        let mut findings = Vec::new();
        let latest = latest(reports);
        // Every key a report's journal ever declared: a journal whose key was replaced
        // continues under the new one, and is still the instance the ledger knew.
        let declared: BTreeMap<&str, &Report> = latest
            .values()
            .flat_map(|report| keys_of(report).into_iter().map(move |k| (k, *report)))
            .collect();
        for (key, instance) in &self.instances {
            if !declared.contains_key(key.as_str()) {
                findings.push(Finding {
                    instance: short(key),
                    kind: FindingKind::MissingInstance,
                    n: instance.head_n,
                    detail: format!(
                        "an instance of {customer:?} known since true-up {} and last seen at \
                         true-up {} ({}, head record {}) is in none of these reports: stopped \
                         for good, or its journal withheld",
                        instance.first_true_up,
                        instance.last_true_up,
                        rfc3339(instance.last_seen),
                        instance
                            .head_n
                            .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                    ),
                });
            }
        }
        for (key, report) in &latest {
            if self.instances.contains_key(*key) {
                continue;
            }
            let continued = keys_of(report)
                .into_iter()
                .find(|k| k != key && self.instances.contains_key(*k));
            let detail = match continued {
                Some(old) => format!(
                    "a key the ledger has not seen, continuing the journal of instance {} \
                     (its key file was lost or replaced)",
                    short(old)
                ),
                None if self.instances.is_empty() => format!(
                    "a key the ledger has not seen (the ledger's first true-up of {customer:?})"
                ),
                None => "a key the ledger has not seen: a new instance, or one that had to \
                         make a new key"
                    .to_owned(),
            };
            findings.push(Finding {
                instance: short(key),
                kind: FindingKind::NewKey,
                n: None,
                detail,
            });
        }
        // Receipted heads each instance's latest report no longer holds: the highest one
        // per key is reported.
        let mut cut: BTreeMap<&str, &Receipted> = BTreeMap::new();
        for receipted in &self.receipted {
            let Some(report) = declared.get(receipted.head.key.as_str()) else {
                continue; // (Missing altogether: MissingInstance says so.)
            };
            if !holds_head(report, receipted.head.n, &receipted.head.link) {
                let e = cut.entry(receipted.head.key.as_str()).or_insert(receipted);
                if receipted.head.n > e.head.n {
                    *e = receipted;
                }
            }
        }
        for (key, receipted) in cut {
            let report = declared.get(key).copied();
            findings.push(Finding {
                instance: short(report.map_or(key, |r| r.key.as_str())),
                kind: FindingKind::ReceiptCut,
                n: Some(receipted.head.n),
                detail: format!(
                    "receipt seq {} accepted record {} (link {}…) of instance {}; the report \
                     does not hold it (its head is record {}): the journal was cut, rewritten \
                     or restored below what was accepted",
                    receipted.seq,
                    receipted.head.n,
                    receipted.head.link.chars().take(12).collect::<String>(),
                    short(key),
                    report
                        .and_then(|r| r.head_n)
                        .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                ),
            });
        }
        // Notices a journal showed at an earlier true-up that it no longer shows.
        for (key, report) in &latest {
            let (seq, revocations) = shown_notices(report, customer);
            for old in keys_of(report) {
                let Some(known) = self.instances.get(old) else {
                    continue;
                };
                if seq < known.notice_seq || revocations < known.revocations {
                    findings.push(Finding {
                        instance: short(key),
                        kind: FindingKind::NoticeRollback,
                        n: report.records.last().map(|r| r.last_n()),
                        detail: format!(
                            "at true-up {} this journal showed vendor notice seq {} ({} \
                             revocations); its records now show at most seq {} ({}): a notice \
                             removed and the state file rolled back",
                            known.last_true_up,
                            seq_text(known.notice_seq),
                            known.revocations,
                            seq_text(seq),
                            revocations
                        ),
                    });
                    break;
                }
            }
        }
        findings
    }
}

fn seq_text(seq: Option<u64>) -> String {
    seq.map_or_else(|| "none".to_owned(), |s| s.to_string())
}

/// The latest report of each key (by export time, then head), as `verify` takes it.
fn latest(reports: &[Report]) -> BTreeMap<&str, &Report> {
    let mut latest: BTreeMap<&str, &Report> = BTreeMap::new();
    for report in reports {
        let e = latest.entry(report.key.as_str()).or_insert(report);
        if (report.exported_at, report.head_n) >= (e.exported_at, e.head_n) {
            *e = report;
        }
    }
    latest
}

/// The report's key and every key its records declare.
fn keys_of(report: &Report) -> BTreeSet<&str> {
    std::iter::once(report.key.as_str())
        .chain(report.records.iter().filter_map(|r| r.key.as_deref()))
        .collect()
}

/// The highest notice `seq` and the most revocations the report's records of `customer`
/// show.
fn shown_notices(report: &Report, customer: &str) -> (Option<u64>, u64) {
    let mine = report
        .records
        .iter()
        .filter(|r| r.licenses.first().is_some_and(|l| l.customer == customer));
    let seq = mine.clone().filter_map(|r| r.notice_seq).max();
    let revocations = mine.map(|r| r.revocations).max().unwrap_or(0);
    (seq, revocations)
}

/// Whether the report holds record `n` with `link`: an hourly record of that number and
/// link, or a daily record that folded it in (its link, where `n` was the last it folds
/// in). A head older than a journal's first record, where that is a daily record, was
/// dropped with age (ten years of daily records are kept), not cut.
fn holds_head(report: &Report, n: u64, link: &str) -> bool {
    if report
        .records
        .first()
        .is_some_and(|first| first.span == Span::Day && n < first.n)
    {
        return true;
    }
    report.records.iter().any(|r| match r.span {
        Span::Hour => r.n == n && r.link() == link,
        Span::Day => r.n <= n && n <= r.last_n() && (n != r.last_n() || r.link() == link),
    })
}

/// Creates a ledger at `path`: built under a temporary name beside it, then linked into
/// place, so that no process ever opens half a ledger, and one made meanwhile by another
/// process is kept (and used).
fn create(path: &Path) -> Result<(), LedgerError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}-{}.new", std::process::id(), random_jti()?));
    let tmp = path.with_file_name(name);
    let built = build(&tmp).and_then(|()| place(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    for side in ["-wal", "-shm", "-journal"] {
        let mut name = tmp.clone().into_os_string();
        name.push(side);
        let _ = std::fs::remove_file(name);
    }
    built
}

/// Puts the ledger built at `tmp` at `path`, unless a file is there by now (another
/// process made one meanwhile: it is checked like any other).
fn place(tmp: &Path, path: &Path) -> Result<(), LedgerError> {
    match std::fs::hard_link(tmp, path) {
        Ok(()) => {
            sync_parent(path);
            return Ok(());
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        // A file system without hard links: copied into a file made for it. (A process
        // that opens it before the copy ends finds it incomplete and is refused; it never
        // writes to it.)
        Err(_) => {}
    }
    let bytes = std::fs::read(tmp).map_err(|e| io_error(tmp, e))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io_error(path, e)),
    };
    if let Err(e) = file.write_all(&bytes).and_then(|()| file.sync_all()) {
        // Ours, made by this call and incomplete: it goes, rather than stay as a file
        // every later open refuses.
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(io_error(path, e));
    }
    sync_parent(path);
    Ok(())
}

/// A new, empty ledger at `tmp`, closed (so its write-ahead log is folded in).
fn build(tmp: &Path) -> Result<(), LedgerError> {
    let conn = Connection::open_with_flags(
        tmp,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| db_error(tmp, e))?;
    #[cfg(unix)]
    {
        // Licenses and the customers' instance keys: the vendor's business alone. (SQLite
        // gives its side files the database's mode.)
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io_error(tmp, e))?;
    }
    conn.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(|e| db_error(tmp, e))?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(|e| db_error(tmp, e))?;
    conn.execute_batch(&format!("BEGIN; {SCHEMA} COMMIT;"))
        .map_err(|e| db_error(tmp, e))?;
    let _: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| db_error(tmp, e))?;
    conn.close().map_err(|(_, e)| db_error(tmp, e))
}

#[cfg(unix)]
fn sync_parent(path: &Path) {
    // The new name is durable too (best effort: a ledger whose creation is lost with a
    // power cut held nothing yet).
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = std::fs::File::open(parent) {
        let _ = dir.sync_all();
    }
}

#[cfg(not(unix))]
fn sync_parent(_: &Path) {}

/// Checks that the file at `path` is a ledger of ours, in one piece, of a version this
/// build reads, without writing to it: the SQLite header first (a file that is not an
/// SQLite database, or is another application's, is never opened by SQLite), then a
/// read-only connection for `quick_check`.
fn validate(path: &Path) -> Result<(), LedgerError> {
    let not_ours = |detail: String| LedgerError::NotALedger {
        path: path.to_path_buf(),
        detail,
    };
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
    if !meta.is_file() {
        return Err(not_ours("not a regular file".into()));
    }
    let mut header = Vec::with_capacity(100);
    std::fs::File::open(path)
        .and_then(|f| f.take(100).read_to_end(&mut header))
        .map_err(|e| io_error(path, e))?;
    if header.is_empty() {
        return Err(not_ours("the file is empty".into()));
    }
    if header.len() < 100 || !header.starts_with(SQLITE_MAGIC) {
        return Err(not_ours("not an SQLite database".into()));
    }
    // (The header is 100 bytes long here: the fields read end at 72.)
    let field = |at: usize| {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(&header[at..at + 4]);
        i32::from_be_bytes(bytes)
    };
    let application_id = field(68);
    if application_id != APPLICATION_ID {
        return Err(not_ours(format!(
            "an SQLite database of another application (application_id {application_id:#x})"
        )));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| db_error(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| db_error(path, e))?;
    // (Read through SQLite as well: a change still in the write-ahead log is not in the
    // header yet.)
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| db_error(path, e))?;
    if version > i64::from(SCHEMA_VERSION) {
        return Err(LedgerError::NewerVersion {
            path: path.to_path_buf(),
            found: version,
        });
    }
    if version < 1 {
        return Err(LedgerError::Damaged {
            path: path.to_path_buf(),
            detail: format!("schema version {version}"),
        });
    }
    let problems: Vec<String> = {
        let mut statement = conn
            .prepare("PRAGMA quick_check(5)")
            .map_err(|e| db_error(path, e))?;
        let rows = statement
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| db_error(path, e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| db_error(path, e))?
    };
    if problems != ["ok"] {
        return Err(LedgerError::Damaged {
            path: path.to_path_buf(),
            detail: format!("quick_check: {}", problems.join("; ")),
        });
    }
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN
                 ('licenses', 'notices', 'notice_revocations', 'receipt_heads', 'true_ups',
                  'report_heads', 'instances')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| db_error(path, e))?;
    if tables != 7 {
        return Err(LedgerError::Damaged {
            path: path.to_path_buf(),
            detail: format!("{tables} of its 7 tables"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{LicenseInForce, Record, Span};

    fn record(n: u64, span: Span, key: Option<&str>) -> Record {
        Record {
            v: 1,
            n,
            n_end: (span == Span::Day).then_some(n + 23),
            span,
            key: key.map(str::to_owned),
            prev: "0".repeat(64),
            last: (span == Span::Day).then(|| format!("{:064x}", n + 23)),
            start: 1_800_000_000 + n as i64 * 3600,
            end: 1_800_000_000 + n as i64 * 3600 + 3600,
            watermark: 1_800_000_000,
            wall: 1_800_000_000,
            boot: 0,
            uptime: 0,
            licenses: vec![LicenseInForce {
                jti: None,
                customer: "Acme".into(),
                exp: 1_900_000_000,
                limits: BTreeMap::new(),
                max_instances: None,
            }],
            gauges: BTreeMap::new(),
            counters: BTreeMap::new(),
            notice_seq: Some(3),
            revocations: 1,
            notes: Vec::new(),
            sig: None,
        }
    }

    fn report(key: &str, records: Vec<Record>) -> Report {
        Report {
            format: crate::usage::REPORT_FORMAT.into(),
            key: key.into(),
            exported_at: 1_900_000_000,
            head_n: records.last().map(Record::last_n),
            head_link: records.last().map(Record::link),
            torn: false,
            damaged_lines: 0,
            sig: String::new(),
            records,
        }
    }

    fn instance(key: &str, notice_seq: Option<u64>, revocations: u64) -> InstanceEntry {
        InstanceEntry {
            key: key.into(),
            first_seen: 0,
            last_seen: 0,
            first_true_up: 1,
            last_true_up: 1,
            head_n: Some(1),
            head_link: None,
            notice_seq,
            revocations,
        }
    }

    fn kinds(findings: &[Finding]) -> Vec<FindingKind> {
        findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn a_head_is_held_by_its_hourly_record_or_a_daily_record_that_folds_it_in() {
        let hourly = report("k", (0..5).map(|n| record(n, Span::Hour, None)).collect());
        let link = hourly.records[3].link();
        assert!(holds_head(&hourly, 3, &link));
        assert!(!holds_head(&hourly, 3, &"0".repeat(64)), "another link");
        assert!(!holds_head(&hourly, 7, &link), "beyond the head");
        // Folded into a daily record: inside it, and at its end (by its link).
        let day = record(0, Span::Day, None);
        let daily = report("k", vec![day.clone(), record(24, Span::Hour, None)]);
        assert!(holds_head(&daily, 5, "whatever"));
        assert!(holds_head(&daily, 23, &day.link()));
        assert!(!holds_head(&daily, 23, &"1".repeat(64)));
        // Older than the first record, a daily one: dropped with age.
        let aged = report("k", vec![record(48, Span::Day, None)]);
        assert!(holds_head(&aged, 5, "whatever"));
        // Older than the first record, an hourly one: cut.
        let cut = report("k", vec![record(48, Span::Hour, None)]);
        assert!(!holds_head(&cut, 5, "whatever"));
    }

    #[test]
    fn findings_follow_the_keys_receipts_and_notices_the_ledger_knows() {
        let a = report(
            "aaaa",
            (0..4)
                .map(|n| record(n, Span::Hour, Some("aaaa")).clone())
                .collect(),
        );
        let mut known = Known::default();
        // The first true-up: every key is new.
        assert_eq!(
            kinds(&known.findings("Acme", std::slice::from_ref(&a))),
            [FindingKind::NewKey]
        );
        known
            .instances
            .insert("aaaa".into(), instance("aaaa", Some(3), 1));
        known
            .instances
            .insert("bbbb".into(), instance("bbbb", None, 0));
        known.receipted.push(Receipted {
            seq: 4,
            head: ReceiptHead {
                key: "aaaa".into(),
                n: 2,
                link: a.records[2].link(),
            },
        });
        // b is missing; a holds its receipted head and shows its notices.
        assert_eq!(
            kinds(&known.findings("Acme", std::slice::from_ref(&a))),
            [FindingKind::MissingInstance]
        );
        // a cut below the receipted head.
        let cut = report("aaaa", a.records[..2].to_vec());
        let findings = known.findings("Acme", &[cut]);
        assert!(
            kinds(&findings).contains(&FindingKind::ReceiptCut),
            "{findings:?}"
        );
        // a continued under a new key: not missing, not cut, and a new key.
        let mut replaced = a.clone();
        replaced.key = "cccc".into();
        let findings = known.findings("Acme", &[replaced]);
        assert_eq!(
            kinds(&findings),
            [FindingKind::MissingInstance, FindingKind::NewKey],
            "{findings:?}"
        );
        assert!(
            findings[1]
                .detail
                .contains("continuing the journal of instance aaaa")
        );
        // Its notices went back since the true-up that saw seq 3.
        let mut rolled = a.clone();
        for r in &mut rolled.records {
            r.notice_seq = Some(2);
        }
        assert!(kinds(&known.findings("Acme", &[rolled])).contains(&FindingKind::NoticeRollback));
        let mut unrevoked = a.clone();
        for r in &mut unrevoked.records {
            r.revocations = 0;
        }
        assert!(
            kinds(&known.findings("Acme", &[unrevoked])).contains(&FindingKind::NoticeRollback)
        );
        // Records of another customer's licenses do not count for this one's notices.
        assert_eq!(shown_notices(&a, "Acme"), (Some(3), 1));
        assert_eq!(shown_notices(&a, "Globex"), (None, 0));
    }

    #[test]
    fn the_customer_is_the_one_the_records_name() {
        let a = report("a", vec![record(0, Span::Hour, None)]);
        assert_eq!(
            customer_of(std::slice::from_ref(&a)).unwrap().as_deref(),
            Some("Acme")
        );
        assert_eq!(customer_of(&[report("e", vec![])]).unwrap(), None);
        let mut other = a.clone();
        other.records[0].licenses[0].customer = "Globex".into();
        let err = customer_of(&[a, other]).unwrap_err();
        assert_eq!(err.reason(), "several_customers");
        assert!(err.to_string().contains("Acme, Globex"), "{err}");
    }
}
