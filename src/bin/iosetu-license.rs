//! `iosetu-license`: the vendor's tool to make keys, issue, inspect and verify licenses,
//! and preview when a license's alerts, grace and cut-off will happen.
//!
//! It shares the library's token code, so what it issues is exactly what the monitor
//! accepts. Exit codes: 0 success (for `verify`: valid), 1 invalid license, 2 usage or
//! I/O error. Errors are one line on stderr.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{ArgGroup, Args, Parser, Subcommand};
use iosetu_license::token::decode_unverified;
use iosetu_license::{Claims, ExpiryBand, LicenseSigner, LicenseVerifier, PublicKey};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "iosetu-license",
    version,
    about = "Make keys, issue, inspect and verify iosetu licenses"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an Ed25519 key pair: a private key (PKCS#8 PEM, mode 0600) to issue
    /// licenses with, and a public key (SPKI PEM) to compile into the service.
    Keygen {
        /// Directory to write the keys to.
        #[arg(long)]
        out: PathBuf,
        /// Key id; also names the files (`<kid>.key.pem`, `<kid>.pub.pem`).
        #[arg(long)]
        kid: Option<String>,
        /// Overwrite existing key files.
        #[arg(long)]
        force: bool,
    },
    /// Issue a license: prints the token (or writes it with --out).
    Issue(IssueArgs),
    /// Show a token's header and claims, UNVERIFIED unless --public-key is given.
    Inspect {
        #[command(flatten)]
        input: TokenInput,
        /// Also verify against this public key (SPKI PEM).
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Verify a token: exit 0 valid, 1 invalid (with its reason code), 2 usage/I/O error.
    Verify {
        #[command(flatten)]
        input: TokenInput,
        /// Public key (SPKI PEM); repeat for several.
        #[arg(long = "public-key", required = true)]
        public_keys: Vec<PathBuf>,
        /// Key id of the public key at the same position.
        #[arg(long = "kid")]
        kids: Vec<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// When each alert, the start of grace and the cut-off will happen for a token.
    Timeline {
        #[command(flatten)]
        input: TokenInput,
        /// The service's grace period.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        grace: Duration,
    },
}

#[derive(Args)]
#[command(group(ArgGroup::new("expiry").required(true).args(["expires", "valid_for"])))]
struct IssueArgs {
    /// The private key (PKCS#8 PEM) from `keygen`.
    #[arg(long)]
    key: PathBuf,
    /// Who the license is for.
    #[arg(long)]
    customer: String,
    /// Expiry: RFC 3339 (`2027-03-10T19:30:00Z`) or a date (`2027-03-10`, midnight UTC).
    #[arg(long, value_parser = parse_date)]
    expires: Option<SystemTime>,
    /// Validity from now, e.g. `365d`, `12h`.
    #[arg(long, value_parser = parse_duration)]
    valid_for: Option<Duration>,
    /// Key id to put in the header (must match the one the service registers).
    #[arg(long)]
    kid: Option<String>,
    /// A feature the license grants; repeatable.
    #[arg(long = "feature")]
    features: Vec<String>,
    /// Any other claim, `name=value` (value parsed as JSON if it is JSON); repeatable.
    #[arg(long = "claim", value_parser = parse_claim)]
    claims: Vec<(String, Value)>,
    /// Issuer (`iss`).
    #[arg(long)]
    iss: Option<String>,
    /// Audience (`aud`).
    #[arg(long)]
    aud: Option<String>,
    /// Not valid before (`nbf`): RFC 3339 or a date.
    #[arg(long, value_parser = parse_date)]
    not_before: Option<SystemTime>,
    /// Write the token to this file instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// FOR SUPPORT AND TESTS: allow an expiry in the past, to issue an already-expired
    /// license (to see grace and the cut-off on a test system). Never ship one.
    #[arg(long)]
    allow_past: bool,
}

#[derive(Args)]
struct TokenInput {
    /// The token; `-` reads it from stdin.
    #[arg(conflicts_with = "file", required_unless_present = "file")]
    token: Option<String>,
    /// Read the token from this file.
    #[arg(long)]
    file: Option<PathBuf>,
}

/// An error and the exit code it ends with.
struct Failure {
    code: u8,
    message: String,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> Failure {
    usage(format!("{}: {e}", path.display()))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version: clap's own output, exit 0.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // A usage error is one line, like every other error of this tool, and keeps
            // what clap lists below its first line (the missing arguments, say).
            eprintln!(
                "iosetu-license: {} (try --help)",
                one_line(&e.render().to_string())
            );
            return ExitCode::from(2);
        }
    };
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("iosetu-license: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Clap's error as one line: its first line, then the items it lists under it, up to
/// the blank line before the usage.
fn one_line(rendered: &str) -> String {
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first).trim_end();
    let items: Vec<&str> = lines
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    if items.is_empty() {
        first.to_owned()
    } else {
        format!("{first} {}", items.join(", "))
    }
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Keygen { out, kid, force } => keygen(&out, kid, force),
        Command::Issue(args) => issue(args),
        Command::Inspect { input, public_key } => inspect(&input, public_key.as_deref()),
        Command::Verify {
            input,
            public_keys,
            kids,
            json,
        } => verify(&input, &public_keys, &kids, json),
        Command::Timeline { input, grace } => timeline(&input, grace),
    }
}

fn keygen(out: &Path, kid: Option<String>, force: bool) -> Result<(), Failure> {
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    let signer = LicenseSigner::generate().map_err(|e| usage(e.to_string()))?;
    let stem = kid.clone().unwrap_or_else(|| "license".to_owned());
    if stem.is_empty() || stem.contains(['/', '\\']) || stem.starts_with('.') {
        return Err(usage(format!("--kid {stem:?} cannot name a file")));
    }
    let private = out.join(format!("{stem}.key.pem"));
    let public = out.join(format!("{stem}.pub.pem"));
    let private_pem = signer.private_key_pem().map_err(|e| usage(e.to_string()))?;
    write_new(&private, private_pem.as_bytes(), 0o600, force)?;
    write_new(&public, signer.public_key_pem().as_bytes(), 0o644, force)?;
    println!(
        "private key: {}  (keep it secret; it issues licenses)",
        private.display()
    );
    println!(
        "public key:  {}  (compile into the service with include_str!)",
        public.display()
    );
    if let Some(kid) = kid {
        println!(
            "register it with PublicKey::from_pem(..)?.with_kid({kid:?}) and issue with --kid {kid}"
        );
    }
    Ok(())
}

/// Writes a file that must not exist yet (unless `force`), with `mode` from creation on,
/// so a private key is never readable by others even for an instant.
fn write_new(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<(), Failure> {
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
            usage(format!(
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

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn issue(args: IssueArgs) -> Result<(), Failure> {
    // Usage first: a wrong option is reported before any file is touched.
    for (name, _) in &args.claims {
        if let Some(instead) = reserved_claim(name) {
            return Err(usage(format!("--claim {name}=…: {instead}")));
        }
    }
    let pem = std::fs::read_to_string(&args.key).map_err(|e| io(&args.key, e))?;
    let mut signer = LicenseSigner::from_pkcs8_pem(&pem)
        .map_err(|e| usage(format!("{}: {e}", args.key.display())))?;
    if let Some(kid) = &args.kid {
        signer = signer.with_kid(kid.clone());
    }
    let now = SystemTime::now();
    let expires = match (args.expires, args.valid_for) {
        (Some(at), _) => at,
        (None, Some(d)) => now + d,
        (None, None) => return Err(usage("--expires or --valid-for is required")),
    };
    if expires <= now {
        if !args.allow_past {
            return Err(usage(format!(
                "the license would already be expired ({}); for a support or test license \
                 that is expired on purpose, add --allow-past",
                rfc3339(unix(expires))
            )));
        }
        eprintln!(
            "iosetu-license: warning: --allow-past: this license expired at {}; it is for \
             support and tests, never for a customer",
            rfc3339(unix(expires))
        );
    }
    if args.customer.trim().is_empty() {
        return Err(usage("--customer cannot be empty"));
    }
    let mut claims = Claims::new(args.customer, unix(expires));
    claims.iat = Some(unix(now));
    claims.nbf = args.not_before.map(unix);
    claims.iss = args.iss;
    claims.aud = args.aud.into_iter().collect();
    claims.features = args.features;
    let mut jti = [0u8; 16];
    getrandom::fill(&mut jti).map_err(|e| usage(format!("no randomness: {e}")))?;
    claims.jti = Some(jti.iter().map(|b| format!("{b:02x}")).collect());
    // (Reserved names were refused before the key was read.)
    claims.extra.extend(args.claims);
    let token = signer.sign(&claims);
    match args.out {
        Some(path) => {
            std::fs::write(&path, format!("{token}\n")).map_err(|e| io(&path, e))?;
            eprintln!("license written to {}", path.display());
        }
        None => println!("{token}"),
    }
    Ok(())
}

/// What to do instead of `--claim name=…` for a claim the tool sets itself.
fn reserved_claim(name: &str) -> Option<&'static str> {
    Some(match name {
        "customer" => "use --customer",
        "exp" => "use --expires or --valid-for",
        "nbf" => "use --not-before",
        "iss" => "use --iss",
        "aud" => "use --aud",
        "features" => "use --feature, once per feature",
        "iat" => "`iat` is always the time of issue, set by the tool",
        "jti" => "`jti` is always a fresh random id, set by the tool",
        "sub" => "the licensee goes in --customer; `sub` is not used",
        _ => return None,
    })
}

fn read_token(input: &TokenInput) -> Result<String, Failure> {
    match (&input.token, &input.file) {
        (Some(t), _) if t == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .take(iosetu_license::source::MAX_FILE_BYTES as u64 + 1)
                .read_to_string(&mut text)
                .map_err(|e| usage(format!("stdin: {e}")))?;
            Ok(text)
        }
        (Some(t), _) => Ok(t.clone()),
        (None, Some(path)) => iosetu_license::LicenseSource::File(path.clone())
            .read()
            .map_err(|e| usage(e.to_string())),
        (None, None) => Err(usage("give a token, `-` for stdin, or --file")),
    }
}

fn load_key(path: &Path, kid: Option<&String>) -> Result<PublicKey, Failure> {
    let pem = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    let key = PublicKey::from_pem(&pem).map_err(|e| usage(format!("{}: {e}", path.display())))?;
    Ok(match kid {
        Some(kid) => key.with_kid(kid.clone()),
        None => key,
    })
}

fn days_remaining(exp: i64) -> f64 {
    (exp - unix(SystemTime::now())) as f64 / 86_400.0
}

fn inspect(input: &TokenInput, public_key: Option<&Path>) -> Result<(), Failure> {
    let token = read_token(input)?;
    let decoded = decode_unverified(&token).map_err(|e| Failure {
        code: 1,
        message: format!("{} ({})", e, e.reason()),
    })?;
    let verified = match public_key {
        None => None,
        Some(path) => Some(LicenseVerifier::new(vec![load_key(path, None)?]).verify(&token)),
    };
    let label = match &verified {
        None => "UNVERIFIED (no --public-key given): do not trust what follows".to_owned(),
        Some(Ok(_)) => "VERIFIED: the signature is good".to_owned(),
        Some(Err(e)) => format!("INVALID: {e} ({})", e.reason()),
    };
    println!("{label}");
    let pretty =
        |v: &serde_json::Map<String, Value>| serde_json::to_string_pretty(v).unwrap_or_default();
    println!("header:\n{}", pretty(&decoded.header));
    println!("claims:\n{}", pretty(&decoded.claims));
    if let Some(exp) = decoded.claims.get("exp").and_then(Value::as_i64) {
        println!(
            "expires: {} ({:.1} days remaining)",
            rfc3339(exp),
            days_remaining(exp)
        );
    }
    match verified {
        Some(Err(_)) => Err(Failure {
            code: 1,
            message: "the license is not valid".to_owned(),
        }),
        _ => Ok(()),
    }
}

fn verify(
    input: &TokenInput,
    key_paths: &[PathBuf],
    kids: &[String],
    json: bool,
) -> Result<(), Failure> {
    if kids.len() > key_paths.len() {
        return Err(usage("more --kid than --public-key"));
    }
    let keys = key_paths
        .iter()
        .enumerate()
        .map(|(i, path)| load_key(path, kids.get(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let token = read_token(input)?;
    let result = LicenseVerifier::new(keys)
        .verify(&token)
        .and_then(|claims| claims.check_at(SystemTime::now()).map(|()| claims));
    match result {
        Ok(claims) => {
            if json {
                let body = json!({
                    "valid": true,
                    "customer": claims.customer,
                    "expires_at": rfc3339(claims.exp),
                    "days_remaining": days_remaining(claims.exp),
                    "claims": claims.to_json(),
                });
                println!("{body}");
            } else {
                println!(
                    "valid: {} until {} ({:.1} days)",
                    claims.customer,
                    rfc3339(claims.exp),
                    days_remaining(claims.exp)
                );
            }
            Ok(())
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    json!({"valid": false, "reason": e.reason(), "error": e.to_string()})
                );
            } else {
                println!("invalid: {} ({e})", e.reason());
            }
            Err(Failure {
                code: 1,
                message: format!("invalid license: {}", e.reason()),
            })
        }
    }
}

fn timeline(input: &TokenInput, grace: Duration) -> Result<(), Failure> {
    let token = read_token(input)?;
    let claims = decode_unverified(&token).map_err(|e| usage(format!("{e} ({})", e.reason())))?;
    let exp = claims
        .claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(|| usage("the token has no integer `exp`"))?;
    let now = unix(SystemTime::now());
    let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    println!("(from the token's claims, unverified; `verify` checks the signature)");
    println!("{:<34} {:<22} from now", "what", "when (UTC)");
    let mut rows: Vec<(String, i64)> = ExpiryBand::ALL
        .iter()
        .map(|band| {
            let name = match band {
                ExpiryBand::Days30 => "license.expiring_30d",
                ExpiryBand::Days7 => "license.expiring_7d",
                ExpiryBand::Hours24 => "license.expiring_24h",
                _ => "license.expiring_1h",
            };
            // The first second with less than the band's width left.
            (name.to_owned(), exp - band.threshold().as_secs() as i64 + 1)
        })
        .collect();
    rows.push(("license.grace_mode_entered".into(), exp));
    rows.push((
        "license.grace_period_expired (503)".into(),
        exp.saturating_add(grace),
    ));
    for (what, at) in rows {
        println!("{what:<34} {:<22} {}", rfc3339(at), relative(at - now));
    }
    Ok(())
}

fn relative(secs: i64) -> String {
    let (sign, s) = if secs < 0 {
        ("-", secs.unsigned_abs())
    } else {
        ("+", secs.unsigned_abs())
    };
    let (d, h, m, sec) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60, s % 60);
    let when = if secs < 0 { " (past)" } else { "" };
    format!("{sign}{d}d {h:02}h {m:02}m {sec:02}s{when}")
}

fn rfc3339(secs: i64) -> String {
    let t = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    humantime::format_rfc3339_seconds(t).to_string()
}

fn parse_date(text: &str) -> Result<SystemTime, String> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    humantime::parse_rfc3339_weak(&full)
        .map_err(|e| format!("{text:?} is not a date (RFC 3339 or YYYY-MM-DD): {e}"))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 365d or 24h: {e}"))
}

fn parse_claim(text: &str) -> Result<(String, Value), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not name=value"))?;
    if name.is_empty() {
        return Err(format!("{text:?} has no name"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((name.to_owned(), value))
}
