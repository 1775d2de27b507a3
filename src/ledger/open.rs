//! Opening the ledger file: creating it with its schema where nothing is, checking that a
//! file found is a ledger of ours, and the transactions every operation runs in.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::error::{db_error, io_error};
use super::{Ledger, LedgerError, random_jti};

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
    pub(super) fn write<T>(
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
    pub(super) fn read<T>(
        &self,
        f: impl FnOnce(&Connection, &Path) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| db_error(&self.path, e))?;
        f(&tx, &self.path)
    }
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
