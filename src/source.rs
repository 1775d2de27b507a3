//! Where the license token comes from.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::clock::escape_control;
use crate::files::{kind_of, open_nonblocking, shown};
use crate::token::{LicenseError, fingerprint};

pub use crate::token::{MAX_FILE_BYTES, tokens};

/// The environment variable naming a license file; takes precedence when set.
pub const LICENSE_FILE_VAR: &str = "IOSETU_LICENSE_FILE";

/// The environment variable holding the license token itself.
pub const LICENSE_KEY_VAR: &str = "IOSETU_LICENSE_KEY";

/// Where the monitor reads the license token.
///
/// The source is re-read at every periodic check and by
/// [`LicenseMonitor::check_now`](crate::LicenseMonitor::check_now).
///
/// **Hot reload needs a file.** A process's environment can only be changed by the process
/// itself: a Kubernetes `env` entry from a Secret or a Docker `-e` value never changes in a
/// running container, so an [`Env`](LicenseSource::Env) license is renewed by a restart. A
/// Secret mounted as a volume (without `subPath`, which kubelet never updates) is
/// renewed in place.
///
/// Its `Debug` output never shows a [`Static`](LicenseSource::Static) token: only its
/// length and fingerprint.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LicenseSource {
    /// The named environment variable holds the token.
    Env(String),
    /// The file at this path holds the token (followed through symlinks, as Kubernetes
    /// secret volumes need).
    File(PathBuf),
    /// A token given in code (tests, or a license embedded by other means).
    Static(String),
}

impl LicenseSource {
    /// `File($IOSETU_LICENSE_FILE)` when that variable is set and non-empty, else
    /// `Env("IOSETU_LICENSE_KEY")`.
    pub fn from_env() -> Self {
        match std::env::var_os(LICENSE_FILE_VAR) {
            Some(path) if !path.is_empty() => LicenseSource::File(PathBuf::from(path)),
            _ => LicenseSource::Env(LICENSE_KEY_VAR.to_owned()),
        }
    }

    /// A short description for logs: the variable's name or the file's path, never the
    /// token. Control characters (a newline in a path) are escaped, so the description
    /// cannot forge log lines.
    pub fn describe(&self) -> String {
        match self {
            LicenseSource::Env(name) => format!("env:{}", escape_control(name)),
            LicenseSource::File(path) => format!("file:{}", shown(path)),
            LicenseSource::Static(_) => "static".to_owned(),
        }
    }

    /// Reads the token, trimmed of surrounding whitespace and a UTF-8 BOM.
    ///
    /// Absent and empty are [`LicenseError::Missing`]; a file that cannot be read, or is
    /// not a regular file, is [`LicenseError::Unreadable`]; over the size limits is
    /// [`LicenseError::TooLarge`]. Reading never blocks on a FIFO or a device.
    pub fn read(&self) -> Result<String, LicenseError> {
        let text = match self {
            LicenseSource::Env(name) => read_env(name)?,
            LicenseSource::File(path) => read_file(path)?,
            LicenseSource::Static(token) => token.clone(),
        };
        crate::token::source_text(&text, &self.describe()).map(str::to_owned)
    }
}

impl fmt::Debug for LicenseSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LicenseSource::Env(name) => f.debug_tuple("Env").field(name).finish(),
            LicenseSource::File(path) => f.debug_tuple("File").field(path).finish(),
            LicenseSource::Static(token) => write!(
                f,
                "Static(<redacted: {} bytes, fingerprint {}>)",
                token.len(),
                fingerprint(token)
            ),
        }
    }
}

impl Default for LicenseSource {
    fn default() -> Self {
        Self::from_env()
    }
}

fn read_env(name: &str) -> Result<String, LicenseError> {
    match std::env::var_os(name) {
        None => Err(LicenseError::Missing {
            detail: format!("environment variable {} is not set", escape_control(name)),
        }),
        Some(value) => {
            if value.len() > MAX_FILE_BYTES {
                return Err(LicenseError::TooLarge {
                    limit: MAX_FILE_BYTES,
                });
            }
            value.into_string().map_err(|_| LicenseError::Malformed {
                detail: format!("environment variable {} is not UTF-8", escape_control(name)),
            })
        }
    }
}

fn read_file(path: &Path) -> Result<String, LicenseError> {
    let unreadable = |what: &str, e: &dyn std::fmt::Display| LicenseError::Unreadable {
        detail: format!("{}: {what}: {e}", shown(path)),
    };
    let file = match open_nonblocking(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LicenseError::Missing {
                detail: format!("{} does not exist", shown(path)),
            });
        }
        Err(e) => return Err(unreadable("cannot open", &e)),
    };
    // Judge the opened file, not the path, so a swap between a check and the open cannot
    // slip a FIFO or a device past us.
    let meta = file.metadata().map_err(|e| unreadable("cannot stat", &e))?;
    if !meta.is_file() {
        return Err(LicenseError::Unreadable {
            detail: format!(
                "{} is not a regular file but {}",
                shown(path),
                kind_of(&meta.file_type())
            ),
        });
    }
    if meta.len() > MAX_FILE_BYTES as u64 {
        return Err(LicenseError::TooLarge {
            limit: MAX_FILE_BYTES,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow between the stat and the read: the read is bounded regardless.
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable("cannot read", &e))?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(LicenseError::TooLarge {
            limit: MAX_FILE_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|_| LicenseError::Malformed {
        detail: format!("{} is not UTF-8 text", shown(path)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{MAX_TOKEN_BYTES, MAX_TOKENS};

    #[test]
    fn static_source_is_trimmed() {
        let s = LicenseSource::Static("\u{feff} abc.def.ghi \r\n".into());
        assert_eq!(s.read().unwrap(), "abc.def.ghi");
    }

    #[test]
    fn empty_and_whitespace_are_missing() {
        for text in ["", "   ", "\n\r\n", "\u{feff}\n"] {
            let err = LicenseSource::Static(text.into()).read().unwrap_err();
            assert_eq!(err.reason(), "missing", "{text:?}");
        }
    }

    #[test]
    fn an_oversized_source_is_refused() {
        let err = LicenseSource::Static("a".repeat(crate::source::MAX_FILE_BYTES + 1))
            .read()
            .unwrap_err();
        assert_eq!(err.reason(), "too_large");
    }

    #[test]
    fn a_set_is_one_token_per_line_with_its_line_number() {
        let text = "\u{feff}a.b.c\r\n\n  d.e.f  \n\t\ng.h.i";
        assert_eq!(
            tokens(text).unwrap(),
            vec![(1, "a.b.c"), (3, "d.e.f"), (5, "g.h.i")]
        );
        assert_eq!(tokens(" \n\n").unwrap_err().reason(), "missing");
        let many = vec!["x.y.z"; MAX_TOKENS].join("\n");
        assert_eq!(tokens(&many).unwrap().len(), MAX_TOKENS);
        let err = tokens(&format!("{many}\nx.y.z")).unwrap_err();
        assert_eq!(err.reason(), "too_large");
        assert!(matches!(
            err,
            LicenseError::TooManyTokens { limit: MAX_TOKENS }
        ));
        // One token's own cap is the verifier's: 16 KiB.
        const { assert!(MAX_TOKEN_BYTES < crate::source::MAX_FILE_BYTES) };
    }

    #[test]
    fn files_missing_empty_unreadable_and_too_large_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("license.key");
        let source = LicenseSource::File(path.clone());
        assert_eq!(source.read().unwrap_err().reason(), "missing");

        std::fs::write(&path, "").unwrap();
        assert_eq!(source.read().unwrap_err().reason(), "missing");

        std::fs::write(&path, "tok.en.x\n").unwrap();
        assert_eq!(source.read().unwrap(), "tok.en.x");

        std::fs::write(&path, vec![b'a'; MAX_FILE_BYTES + 1]).unwrap();
        assert_eq!(source.read().unwrap_err().reason(), "too_large");

        std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(source.read().unwrap_err().reason(), "malformed");

        // A 1 GiB (sparse) file is refused from its size alone, without being read.
        let huge = std::fs::File::create(&path).unwrap();
        huge.set_len(1 << 30).unwrap();
        assert_eq!(source.read().unwrap_err().reason(), "too_large");

        let as_dir = LicenseSource::File(dir.path().to_path_buf());
        assert_eq!(as_dir.read().unwrap_err().reason(), "unreadable");
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_fifos_do_not_hang() {
        let zero = LicenseSource::File("/dev/zero".into());
        let err = zero.read().unwrap_err();
        assert_eq!(err.reason(), "unreadable");
        assert!(err.to_string().contains("a device"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let err = LicenseSource::File(fifo).read().unwrap_err();
        assert_eq!(err.reason(), "unreadable");
        assert!(err.to_string().contains("a FIFO"), "{err}");
    }

    #[test]
    fn describe_and_debug_never_show_the_token() {
        assert_eq!(LicenseSource::Static("secret".into()).describe(), "static");
        assert_eq!(LicenseSource::Env("X".into()).describe(), "env:X");
        // Finding 8: `{:?}` printed the token.
        let token = "eyJhbGciOiJFZERTQSJ9.eyJjdXN0b21lciI6ImEifQ.c2ln";
        let debug = format!("{:?}", LicenseSource::Static(token.into()));
        assert!(!debug.contains("eyJ"), "{debug}");
        assert_eq!(
            debug,
            format!(
                "Static(<redacted: 48 bytes, fingerprint {}>)",
                fingerprint(token)
            )
        );
        assert_eq!(
            format!("{:?}", LicenseSource::File("/a\nb".into())),
            "File(\"/a\\nb\")"
        );
    }

    #[test]
    fn paths_with_control_characters_are_escaped_in_descriptions_and_errors() {
        // Finding 8: a path with a newline forged a whole log line.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x\nlicense.grace_mode_exited msg=\"fake\"");
        let source = LicenseSource::File(path);
        assert!(!source.describe().contains('\n'), "{}", source.describe());
        assert!(source.describe().contains("x\\nlicense.grace_mode_exited"));
        let err = source.read().unwrap_err();
        assert!(!err.to_string().contains('\n'), "{err}");
    }
}
