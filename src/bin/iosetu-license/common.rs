//! What several commands share: failures and their exit codes, reading tokens and keys,
//! writing files, and how instants, durations and notices are shown.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iosetu_license::LicenseError;
use iosetu_license::ledger::LedgerError;
use iosetu_license::preview::{NoticeStanding, Standing};
use iosetu_license::{LicenseSigner, LicenseSource, LicenseVerifier, Notice, PublicKey};
use serde_json::Value;

use crate::{KeyArgs, TokenInput};

/// An error and the exit code it ends with.
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    /// A usage or I/O error: exit 2.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }

    /// An invalid license (or, for `usage verify`, tampering): exit 1.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
}

/// A file that could not be read or written (exit 2).
pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> Failure {
    Failure::usage(format!("{}: {e}", path.display()))
}

/// A ledger error as the tool reports it (exit 2).
pub(crate) fn ledger_failure(e: LedgerError) -> Failure {
    Failure::usage(format!("ledger: {e} ({})", e.reason()))
}

/// Writes `text` to stdout whole; stops with 141 when stdout is gone.
pub(crate) fn print_or_exit(text: &str) {
    if std::io::stdout().lock().write_all(text.as_bytes()).is_err() {
        std::process::exit(141);
    }
}

/// Writes a file that must not exist yet (unless `force`), with `mode` from creation on,
/// so a private key is never readable by others even for an instant.
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<(), Failure> {
    let mut options = OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Failure::usage(format!(
                "{} exists; use --force to overwrite it",
                path.display()
            ))
        } else {
            io(path, e)
        }
    })?;
    #[cfg(unix)]
    {
        // `mode` only applies to new files; an overwritten one keeps its old mode.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| io(path, e))?;
    }
    file.write_all(bytes).map_err(|e| io(path, e))
}

/// Prints a token, or writes it (one line) to `out`.
pub(crate) fn emit(token: &str, out: Option<&Path>, what: &str) -> Result<(), Failure> {
    match out {
        Some(path) => {
            std::fs::write(path, format!("{token}\n")).map_err(|e| io(path, e))?;
            eprintln!("{what} written to {}", path.display());
        }
        None => say!("{token}"),
    }
    Ok(())
}

/// A fresh random `jti`: 16 bytes, hex.
pub(crate) fn random_jti() -> Result<String, Failure> {
    let mut jti = [0u8; 16];
    getrandom::fill(&mut jti).map_err(|e| Failure::usage(format!("no randomness: {e}")))?;
    Ok(jti.iter().map(|b| format!("{b:02x}")).collect())
}

/// The vendor's signing key from `path`, under `kid` when given.
pub(crate) fn signer(path: &Path, kid: Option<&String>) -> Result<LicenseSigner, Failure> {
    let pem = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    let signer = LicenseSigner::from_pkcs8_pem(&pem)
        .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
    Ok(match kid {
        Some(kid) => signer.with_kid(kid.clone()),
        None => signer,
    })
}

/// A public key from `path`, under `kid` when given.
pub(crate) fn load_key(path: &Path, kid: Option<&String>) -> Result<PublicKey, Failure> {
    let pem = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    let key = PublicKey::from_pem(&pem)
        .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
    Ok(match kid {
        Some(kid) => key.with_kid(kid.clone()),
        None => key,
    })
}

/// A verifier of the public keys at `paths`, each under the kid at its position.
pub(crate) fn verifier(paths: &[PathBuf], kids: &[String]) -> Result<LicenseVerifier, Failure> {
    if kids.len() > paths.len() {
        return Err(Failure::usage("more --kid than --public-key"));
    }
    let keys = paths
        .iter()
        .enumerate()
        .map(|(i, path)| load_key(path, kids.get(i)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LicenseVerifier::new(keys))
}

impl KeyArgs {
    /// The verifier of these keys.
    pub(crate) fn verifier(&self) -> Result<LicenseVerifier, Failure> {
        verifier(&self.public_keys, &self.kids)
    }
}

/// The token (or set) given: as an argument, on stdin (`-`), or in a file read as the
/// monitor reads a license file.
pub(crate) fn read_token(input: &TokenInput) -> Result<String, Failure> {
    match (&input.token, &input.file) {
        (Some(t), _) if t == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .take(iosetu_license::source::MAX_FILE_BYTES as u64 + 1)
                .read_to_string(&mut text)
                .map_err(|e| Failure::usage(format!("stdin: {e}")))?;
            Ok(text)
        }
        (Some(t), _) => Ok(t.clone()),
        (None, Some(path)) => read_file(path),
        (None, None) => Err(Failure::usage("give a token, `-` for stdin, or --file")),
    }
}

/// A notice source's text, read as the monitor reads one (`None`: not given, or empty).
pub(crate) fn read_notices(path: Option<&Path>) -> Result<Option<String>, Failure> {
    let Some(path) = path else {
        return Ok(None);
    };
    if !path.exists() {
        return Err(Failure::usage(format!("{}: no such file", path.display())));
    }
    match LicenseSource::File(path.to_path_buf()).read() {
        Ok(text) => Ok(Some(text)),
        Err(LicenseError::Missing { .. }) => Ok(None),
        Err(e) => Err(Failure::usage(e.to_string())),
    }
}

fn read_file(path: &Path) -> Result<String, Failure> {
    LicenseSource::File(path.to_path_buf())
        .read()
        .map_err(|e| Failure::usage(e.to_string()))
}

/// Seconds since the epoch (0 before it).
pub(crate) fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Seconds since the epoch, negative before it.
pub(crate) fn signed_unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// Days from `now` to `end`, with a fraction.
pub(crate) fn days_between(now: SystemTime, end: i64) -> f64 {
    (end - signed_unix(now)) as f64 / 86_400.0
}

/// RFC 3339, whole seconds, UTC; clamped to the years 1970 to 9999 that the formatter
/// spells (it refuses others), so that no claim makes the tool panic.
pub(crate) fn rfc3339(secs: i64) -> String {
    const LAST: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let secs = u64::try_from(secs).unwrap_or(0).min(LAST);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// RFC 3339 of an instant.
pub(crate) fn rfc3339_at(t: SystemTime) -> String {
    rfc3339(signed_unix(t))
}

/// A duration in the largest whole unit: `7d`, `36h`, `0s`.
pub(crate) fn human(secs: u64) -> String {
    match secs {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `secs` from now, to the second: `+1d 02h 03m 04s`, or `-…s (past)`.
pub(crate) fn relative(secs: i64) -> String {
    let (sign, s) = if secs < 0 {
        ("-", secs.unsigned_abs())
    } else {
        ("+", secs.unsigned_abs())
    };
    let (d, h, m, sec) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60, s % 60);
    let when = if secs < 0 { " (past)" } else { "" };
    format!("{sign}{d}d {h:02}h {m:02}m {sec:02}s{when}")
}

/// What a notice does, in words.
pub(crate) fn describe_notice(n: &Notice) -> Vec<String> {
    let mut out = vec![format!(
        "notice seq {} for {}, signed {}",
        n.seq,
        n.customer,
        rfc3339(n.iat)
    )];
    for jti in &n.revoke {
        out.push(format!("  revokes {jti} from {}", rfc3339(n.iat)));
    }
    if let (Some(time), Some(exp)) = (n.time, n.exp) {
        out.push(format!(
            "  attests the time {} (to install before {}): trusted time re-bases there, \
             grace for a clock judged set back ends",
            rfc3339(time),
            rfc3339(exp)
        ));
    }
    for head in &n.receipt {
        out.push(format!(
            "  receipts instance {} at record {} (link {}…): its next report must extend it",
            head.key.chars().take(12).collect::<String>(),
            head.n,
            head.link.chars().take(12).collect::<String>()
        ));
    }
    out
}

pub(crate) fn parse_date(text: &str) -> Result<SystemTime, String> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    humantime::parse_rfc3339_weak(&full)
        .map_err(|e| format!("{text:?} is not a date (RFC 3339 or YYYY-MM-DD): {e}"))
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 365d or 24h: {e}"))
}

pub(crate) fn parse_limit(text: &str) -> Result<(String, u64), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not name=N"))?;
    if name.is_empty() {
        return Err(format!("{text:?} has no name"));
    }
    let value = value
        .parse()
        .map_err(|_| format!("{text:?}: the limit must be a non-negative integer"))?;
    Ok((name.to_owned(), value))
}

pub(crate) fn parse_claim(text: &str) -> Result<(String, Value), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not name=value"))?;
    if name.is_empty() {
        return Err(format!("{text:?} has no name"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((name.to_owned(), value))
}

/// A license line's standing as a code: `in_force`, `not_yet_valid` (held for later), or
/// the reason it ended or was refused.
pub(crate) fn standing_code(standing: &Standing) -> &'static str {
    match standing {
        Standing::InForce => "in_force",
        Standing::Held => "not_yet_valid",
        Standing::Ended(e) | Standing::Refused(e) => e.reason(),
        _ => "unknown",
    }
}

/// A license line's standing in words.
pub(crate) fn standing_words(standing: &Standing) -> String {
    match standing {
        Standing::InForce => "in force".to_owned(),
        Standing::Held => "held for later".to_owned(),
        Standing::Ended(e) => e.reason().replace('_', " "),
        Standing::Refused(e) => format!("refused: {} ({e})", e.reason()),
        _ => "unknown".to_owned(),
    }
}

/// A notice line's standing in words (after `notice`).
pub(crate) fn notice_words(standing: &NoticeStanding) -> String {
    match standing {
        NoticeStanding::Accepted => String::new(),
        NoticeStanding::Refused(LicenseError::StaleSequence { .. }) => {
            " (older than the newest: its revocations stand, its attestation is not used; \
             the service reports it as stale_seq)"
                .to_owned()
        }
        NoticeStanding::Refused(e) => format!(" refused: {} ({e})", e.reason()),
        NoticeStanding::NotJudged => " (not judged: no license to judge it for)".to_owned(),
        _ => " (unknown)".to_owned(),
    }
}
