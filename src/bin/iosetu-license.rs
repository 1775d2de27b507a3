//! `iosetu-license`: the vendor's tool to make keys, issue, inspect and verify licenses,
//! sign vendor notices (revocations, time attestations), preview when a license's
//! alerts, grace and cut-off will happen, and verify usage reports for true-up (with
//! usage receipts).
//!
//! It shares the library's token code, so what it issues is exactly what the monitor
//! accepts. `issue`, `notice` and `usage verify` keep the vendor's ledger
//! (`--ledger`, `iosetu-ledger.db` in the current directory by default): every license,
//! notice, receipt and instance key per customer. Exit codes: 0 success (for `verify`:
//! valid), 1 invalid license (for `usage verify`: tampering), 2 usage or I/O error.
//! Errors are one line on stderr.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{ArgGroup, Args, Parser, Subcommand};
use iosetu_license::ledger::{self, Ledger, LedgerError, ReceiptSigner};
use iosetu_license::token::{decode_unverified, is_notice};
use iosetu_license::usage::FindingClass;
use iosetu_license::{Claims, ExpiryBand, LicenseSigner, LicenseVerifier, Notice, PublicKey};
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
    /// Sign a vendor notice for a customer: revoke licenses (--revoke JTI), attest the
    /// real time to un-brick a service whose clock evidence went wrong (--time now), or
    /// both, with the customer's next seq from the ledger. The customer adds the printed
    /// line to its license source.
    Notice(NoticeArgs),
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
    /// Usage reports for true-up: `export` a usage journal (customer side), `verify`
    /// reports and print the true-up table (vendor side).
    #[command(subcommand)]
    Usage(UsageCommand),
}

#[derive(Subcommand)]
enum UsageCommand {
    /// Export a usage journal (with its key, `<journal>.key`) as a signed report to send
    /// to the vendor.
    Export {
        /// The journal (`LicenseMonitorBuilder::usage_journal`).
        #[arg(long)]
        journal: PathBuf,
        /// Where to write the report (JSON).
        #[arg(long)]
        out: PathBuf,
        /// Overwrite an existing report.
        #[arg(long)]
        force: bool,
    },
    /// Verify reports of one or several instances (chains, signatures, gaps, clocks),
    /// compare them with the ledger's earlier true-ups of the customer (instances missing,
    /// new keys, receipted heads cut, notices gone back), record them, and print the
    /// true-up table: exit 0 when nothing shows tampering (honest faults and time
    /// unaccounted for are listed), 1 tampering found, 2 usage/I/O error. With
    /// --receipt (and nothing showing tampering), sign a usage receipt for the customer
    /// to install like any notice.
    Verify(UsageVerifyArgs),
}

#[derive(Args)]
struct UsageVerifyArgs {
    /// The reports (one per instance, or several months of one), all of one customer.
    #[arg(required = true)]
    reports: Vec<PathBuf>,
    /// Print the true-up table as CSV (findings go to stderr).
    #[arg(long)]
    csv: bool,
    /// The vendor's ledger (created if missing).
    #[arg(long, default_value = ledger::DEFAULT_PATH)]
    ledger: PathBuf,
    /// The customer, where the reports' records name none (no license was in force);
    /// when they name one, it must be this.
    #[arg(long)]
    customer: Option<String>,
    /// Sign a usage receipt (a vendor notice listing each instance's journal head, with
    /// the customer's next seq) when nothing shows tampering; printed last, or written
    /// with --out.
    #[arg(long, requires = "key")]
    receipt: bool,
    /// The private key (PKCS#8 PEM) to sign the receipt with.
    #[arg(long, requires = "receipt")]
    key: Option<PathBuf>,
    /// Key id to put in the receipt's header (must match the one the service registers).
    #[arg(long, requires = "receipt")]
    kid: Option<String>,
    /// Issuer (`iss`) of the receipt, if the service checks one.
    #[arg(long, requires = "receipt")]
    iss: Option<String>,
    /// Audience (`aud`) of the receipt, if the service checks one.
    #[arg(long, requires = "receipt")]
    aud: Option<String>,
    /// Write the receipt to this file instead of stdout.
    #[arg(long, requires = "receipt")]
    out: Option<PathBuf>,
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
    /// A numeric limit the license grants, `name=N` (N a non-negative integer), e.g.
    /// `seats=25`; repeatable.
    #[arg(long = "limit", value_parser = parse_limit)]
    limits: Vec<(String, u64)>,
    /// The vendor's grace period for this license, e.g. `7d` (a trial: `0s`), signed into
    /// it (`grace_period_seconds`, at most 366 days); without it the service's default
    /// applies.
    #[arg(long, value_parser = parse_duration)]
    grace: Option<Duration>,
    /// How many replicas may serve at once (`max_instances`, a positive integer), counted
    /// with Kubernetes Leases by services built with `instance_slots`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_instances: Option<u32>,
    /// The `jti` of a license this one replaces; repeatable. The service counts it as
    /// revoked from when this license starts (its --not-before, else now).
    #[arg(long = "supersedes")]
    supersedes: Vec<String>,
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
    /// The vendor's ledger, where the license is recorded (created if missing).
    #[arg(long, default_value = ledger::DEFAULT_PATH)]
    ledger: PathBuf,
    /// FOR SUPPORT AND TESTS: allow an expiry in the past, to issue an already-expired
    /// license (to see grace and the cut-off on a test system). Never ship one.
    #[arg(long)]
    allow_past: bool,
}

#[derive(Args)]
#[command(group(ArgGroup::new("action").required(true).multiple(true).args(["revoke", "time"])))]
struct NoticeArgs {
    /// The private key (PKCS#8 PEM) from `keygen`.
    #[arg(long)]
    key: PathBuf,
    /// Who the notice is for: the customer of the licenses it concerns.
    #[arg(long)]
    customer: String,
    /// The customer's notice sequence number. Without it, the next from the ledger (one
    /// more than the highest it holds for the customer); give it once for a customer
    /// whose earlier notices the ledger does not hold (one more than the last you gave:
    /// a service refuses a notice older than the newest it accepted). A seq the ledger
    /// holds already is refused.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=(1 << 53)))]
    seq: Option<u64>,
    /// Revoke the license with this `jti` from now on; repeatable. List every jti still
    /// revoked, so that the newest notice alone says everything.
    #[arg(long = "revoke")]
    revoke: Vec<String>,
    /// Attest the real time: `now`, or an RFC 3339 time. The service re-bases its trusted
    /// time there and leaves grace for a clock judged set back.
    #[arg(long)]
    time: Option<String>,
    /// How long an attestation may be installed, at most 7d.
    #[arg(long, default_value = "3d", value_parser = parse_duration)]
    valid_for: Duration,
    /// Key id to put in the header (must match the one the service registers).
    #[arg(long)]
    kid: Option<String>,
    /// Issuer (`iss`), if the service checks one.
    #[arg(long)]
    iss: Option<String>,
    /// Audience (`aud`), if the service checks one.
    #[arg(long)]
    aud: Option<String>,
    /// Write the notice to this file instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The vendor's ledger: the seq is taken from it and the notice recorded (created if
    /// missing).
    #[arg(long, default_value = ledger::DEFAULT_PATH)]
    ledger: PathBuf,
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

/// `println!` that never panics: when stdout is gone (`| head` stopped reading), the
/// tool stops quietly with the shell's code for a broken pipe, 141.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(141);
        }
    }};
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
        Command::Notice(args) => notice(args),
        Command::Inspect { input, public_key } => inspect(&input, public_key.as_deref()),
        Command::Verify {
            input,
            public_keys,
            kids,
            json,
        } => verify(&input, &public_keys, &kids, json),
        Command::Timeline { input, grace } => timeline(&input, grace),
        Command::Usage(UsageCommand::Export {
            journal,
            out,
            force,
        }) => usage_export(&journal, &out, force),
        Command::Usage(UsageCommand::Verify(args)) => usage_verify(args),
    }
}

fn usage_export(journal: &Path, out: &Path, force: bool) -> Result<(), Failure> {
    // Every journal of the set: one per process that ran at once on the path.
    let reports = iosetu_license::usage::export_all(journal, std::time::SystemTime::now())
        .map_err(|e| usage(format!("cannot export ({}): {e}", e.reason())))?;
    let mut json = match reports.as_slice() {
        [report] => report.to_json(),
        _ => {
            let values: Vec<serde_json::Value> = reports
                .iter()
                .filter_map(|r| serde_json::from_str(&r.to_json()).ok())
                .collect();
            serde_json::to_string_pretty(&values).unwrap_or_default()
        }
    };
    json.push('\n');
    write_new(out, json.as_bytes(), 0o644, force)?;
    for report in &reports {
        say!(
            "{} {}: {} records{}{} -> {}",
            journal.display(),
            report.key.chars().take(12).collect::<String>(),
            report.records.len(),
            if report.torn {
                " (a record cut short at the end left out)"
            } else {
                ""
            },
            if report.damaged_lines > 0 {
                format!(" ({} damaged lines left out)", report.damaged_lines)
            } else {
                String::new()
            },
            out.display()
        );
    }
    Ok(())
}

/// A ledger error as the tool reports it (exit 2).
fn ledger_failure(e: LedgerError) -> Failure {
    usage(format!("ledger: {e} ({})", e.reason()))
}

fn usage_verify(args: UsageVerifyArgs) -> Result<(), Failure> {
    let csv = args.csv;
    if csv && args.receipt && args.out.is_none() {
        return Err(usage(
            "--receipt with --csv needs --out: the CSV table is what stdout carries",
        ));
    }
    let mut reports = Vec::new();
    for path in &args.reports {
        let read = iosetu_license::usage::Report::read_all(path)
            .map_err(|e| usage(format!("{e} ({})", e.reason())))?;
        reports.extend(read);
    }
    let customer = match (
        ledger::customer_of(&reports).map_err(ledger_failure)?,
        args.customer,
    ) {
        (Some(named), Some(given)) if named != given => {
            return Err(usage(format!(
                "the reports are {named:?}'s, not {given:?}'s (--customer)"
            )));
        }
        (Some(named), _) => named,
        (None, Some(given)) if !given.trim().is_empty() => given,
        (None, _) => {
            return Err(usage(
                "the reports' records name no customer (no license was in force): give \
                 --customer",
            ));
        }
    };
    // The key before the ledger: a wrong path is reported before anything is recorded.
    let signer = match &args.key {
        Some(path) => Some(signer(path, args.kid.as_ref())?),
        None => None,
    };
    let receipt = signer.as_ref().map(|signer| {
        let mut receipt = ReceiptSigner::new(signer);
        if let Some(iss) = &args.iss {
            receipt = receipt.issuer(iss.clone());
        }
        if let Some(aud) = &args.aud {
            receipt = receipt.audience(aud.clone());
        }
        receipt
    });
    let mut ledger = Ledger::open(&args.ledger).map_err(ledger_failure)?;
    let true_up = ledger
        .true_up(&customer, &reports, receipt.as_ref())
        .map_err(ledger_failure)?;
    let verification = &true_up.verification;
    let recorded = format!(
        "ledger {}: true-up {} of {customer} recorded ({} report(s))",
        args.ledger.display(),
        true_up.id,
        reports.len()
    );
    let findings: Vec<String> = verification
        .findings
        .iter()
        .map(|f| {
            format!(
                "{} {} {}{}: {}",
                match f.kind.class() {
                    FindingClass::Tampering => "TAMPERED",
                    FindingClass::Fault => "fault   ",
                    _ => "unknown ",
                },
                f.instance,
                f.kind.code(),
                f.n.map(|n| format!(" (record {n})")).unwrap_or_default(),
                f.detail
            )
        })
        .collect();
    if csv {
        for line in &findings {
            eprintln!("{line}");
        }
        print_or_exit(&verification.csv());
    } else {
        for instance in &verification.instances {
            say!(
                "instance {}: {} report(s), {} records, {} to {}, started {} times",
                instance.instance,
                instance.reports,
                instance.records,
                instance.first.map_or_else(|| "-".into(), rfc3339),
                instance.last.map_or_else(|| "-".into(), rfc3339),
                instance.starts
            );
        }
        for line in &findings {
            say!("{line}");
        }
        let count = |class| {
            verification
                .findings
                .iter()
                .filter(|f| f.kind.class() == class)
                .count()
        };
        say!(
            "{}; {} honest fault(s), {} finding(s) of time unaccounted for",
            if verification.intact() {
                "no tampering"
            } else {
                "TAMPERING FOUND"
            },
            count(FindingClass::Fault),
            count(FindingClass::Unknown)
        );
        say!("{recorded}");
        say!("");
        print_or_exit(&verification.table());
    }
    if csv {
        eprintln!("{recorded}");
    }
    match (&true_up.receipt, args.receipt) {
        (Some(issued), _) => {
            for line in describe_notice(&issued.notice) {
                eprintln!("{line}");
            }
            eprintln!(
                "usage receipt: add the line to the customer's notice source (its next \
                 report must extend each head)"
            );
            emit(&issued.token, args.out.as_deref(), "receipt")?;
        }
        (None, true) if verification.intact() => {
            eprintln!("no receipt: the reports hold no records to receipt");
        }
        (None, true) => eprintln!("no receipt: the reports show tampering"),
        (None, false) => {}
    }
    // Only tampering fails: an honest fault or an hour unaccounted for is the vendor's
    // to read, never an accusation.
    if verification.intact() {
        Ok(())
    } else {
        Err(Failure {
            code: 1,
            message: "the usage reports show tampering".into(),
        })
    }
}

fn print_or_exit(text: &str) {
    use std::io::Write as _;
    if std::io::stdout().lock().write_all(text.as_bytes()).is_err() {
        std::process::exit(141);
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
    say!(
        "private key: {}  (keep it secret; it issues licenses)",
        private.display()
    );
    say!(
        "public key:  {}  (compile into the service with include_str!)",
        public.display()
    );
    if let Some(kid) = kid {
        say!(
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
    let signer = signer(&args.key, args.kid.as_ref())?;
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
    if claims.nbf.is_some_and(|nbf| nbf >= claims.exp) {
        return Err(usage("--not-before must be before the expiry"));
    }
    claims.iss = args.iss;
    claims.aud = args.aud.into_iter().collect();
    claims.features = args.features;
    claims.limits = args.limits.into_iter().collect();
    if let Some(grace) = args.grace {
        if grace.as_secs() > iosetu_license::token::MAX_GRACE_PERIOD_SECS {
            return Err(usage("--grace is at most 366 days"));
        }
        claims.grace_period_seconds = Some(grace.as_secs());
    }
    claims.max_instances = args.max_instances.map(u64::from);
    if let Some(bad) = args
        .supersedes
        .iter()
        .find(|j| j.is_empty() || j.len() > iosetu_license::token::MAX_JTI_BYTES)
    {
        return Err(usage(format!(
            "--supersedes {bad:?}: a jti is 1 to 256 bytes"
        )));
    }
    claims.supersedes = args.supersedes;
    claims.jti = Some(random_jti()?);
    // (Reserved names were refused before the key was read.)
    claims.extra.extend(args.claims);
    // Signed and recorded in one step: nothing is printed that the ledger does not hold.
    let mut ledger = Ledger::open(&args.ledger).map_err(ledger_failure)?;
    let token = ledger
        .issue_license(&signer, &claims)
        .map_err(ledger_failure)?;
    emit(&token, args.out.as_deref(), "license")
}

/// A fresh random `jti`: 16 bytes, hex.
fn random_jti() -> Result<String, Failure> {
    let mut jti = [0u8; 16];
    getrandom::fill(&mut jti).map_err(|e| usage(format!("no randomness: {e}")))?;
    Ok(jti.iter().map(|b| format!("{b:02x}")).collect())
}

/// Prints a token, or writes it (one line) to `out`.
fn emit(token: &str, out: Option<&Path>, what: &str) -> Result<(), Failure> {
    match out {
        Some(path) => {
            std::fs::write(path, format!("{token}\n")).map_err(|e| io(path, e))?;
            eprintln!("{what} written to {}", path.display());
        }
        None => say!("{token}"),
    }
    Ok(())
}

/// The vendor's signing key from `path`, under `kid` when given.
fn signer(path: &Path, kid: Option<&String>) -> Result<LicenseSigner, Failure> {
    let pem = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    let signer = LicenseSigner::from_pkcs8_pem(&pem)
        .map_err(|e| usage(format!("{}: {e}", path.display())))?;
    Ok(match kid {
        Some(kid) => signer.with_kid(kid.clone()),
        None => signer,
    })
}

fn notice(args: NoticeArgs) -> Result<(), Failure> {
    if args.customer.trim().is_empty() {
        return Err(usage("--customer cannot be empty"));
    }
    if args.revoke.len() > iosetu_license::token::MAX_REVOKE {
        return Err(usage("at most 64 --revoke per notice"));
    }
    if let Some(bad) = args
        .revoke
        .iter()
        .find(|j| j.is_empty() || j.len() > iosetu_license::token::MAX_JTI_BYTES)
    {
        return Err(usage(format!("--revoke {bad:?}: a jti is 1 to 256 bytes")));
    }
    let valid = i64::try_from(args.valid_for.as_secs()).unwrap_or(i64::MAX);
    if args.time.is_some() && !(1..=iosetu_license::token::MAX_ATTESTATION_SECS).contains(&valid) {
        return Err(usage("--valid-for is at most 7d"));
    }
    let now = unix(SystemTime::now());
    let time = match args.time.as_deref() {
        None => None,
        Some("now") => Some(now),
        Some(text) => Some(unix(parse_date(text).map_err(usage)?)),
    };
    let signer = signer(&args.key, args.kid.as_ref())?;
    // (The seq is the ledger's to give: set when the notice is signed.)
    let mut notice = Notice::new(args.customer, now, args.seq.unwrap_or(1));
    notice.revoke = args.revoke;
    notice.time = time;
    notice.exp = time.map(|_| now.saturating_add(valid));
    if let Some(t) = time
        && notice.exp.is_some_and(|exp| t > exp || t < now - valid)
    {
        return Err(usage("--time must lie within the notice's validity"));
    }
    notice.iss = args.iss;
    notice.aud = args.aud.into_iter().collect();
    notice.jti = Some(random_jti()?);
    let mut ledger = Ledger::open(&args.ledger).map_err(ledger_failure)?;
    let issued = ledger
        .issue_notice(&signer, notice, args.seq)
        .map_err(ledger_failure)?;
    for line in describe_notice(&issued.notice) {
        eprintln!("{line}");
    }
    if let Some(previous) = issued.previous_seq.filter(|&p| p > issued.notice.seq) {
        eprintln!(
            "iosetu-license: warning: the ledger holds seq {previous} for this customer: a \
             service that accepted it refuses this notice as stale (its revocations still \
             apply)"
        );
    }
    eprintln!("add the line to the customer's license source (beside the license)");
    emit(&issued.token, args.out.as_deref(), "notice")
}

/// What a notice does, in words.
fn describe_notice(n: &Notice) -> Vec<String> {
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

/// What to do instead of `--claim name=…` for a claim the tool sets itself.
fn reserved_claim(name: &str) -> Option<&'static str> {
    Some(match name {
        "customer" => "use --customer",
        "exp" => "use --expires or --valid-for",
        "nbf" => "use --not-before",
        "iss" => "use --iss",
        "aud" => "use --aud",
        "features" => "use --feature, once per feature",
        "limits" => "use --limit name=N, once per limit",
        "grace_period_seconds" => "use --grace (e.g. 7d)",
        "max_instances" => "use --max-instances N",
        "iat" => "`iat` is always the time of issue, set by the tool",
        "jti" => "`jti` is always a fresh random id, set by the tool",
        "sub" => "the licensee goes in --customer; `sub` is not used",
        "supersedes" => "use --supersedes JTI, once per license replaced",
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

/// The tokens of a source's text, one per line, with their line numbers.
fn tokens(text: &str) -> Result<Vec<(usize, &str)>, Failure> {
    iosetu_license::source::tokens(text).map_err(|e| Failure {
        code: 1,
        message: format!("{e} ({})", e.reason()),
    })
}

fn inspect(input: &TokenInput, public_key: Option<&Path>) -> Result<(), Failure> {
    let text = read_token(input)?;
    let lines = tokens(&text)?;
    let verifier = match public_key {
        None => None,
        Some(path) => Some(LicenseVerifier::new(vec![load_key(path, None)?])),
    };
    let mut invalid = 0;
    for (n, (line, token)) in lines.iter().enumerate() {
        if lines.len() > 1 {
            if n > 0 {
                say!();
            }
            say!("line {line}:");
        }
        let decoded = match decode_unverified(token) {
            Ok(decoded) => decoded,
            Err(e) => {
                say!("MALFORMED: {e} ({})", e.reason());
                invalid += 1;
                continue;
            }
        };
        let notice = decoded.is_notice();
        let checked = verifier.as_ref().map(|v| {
            if notice {
                v.verify_notice(token).map(drop)
            } else {
                v.verify(token).map(drop)
            }
        });
        let label = match checked {
            None => "UNVERIFIED (no --public-key given): do not trust what follows".to_owned(),
            Some(Ok(())) => "VERIFIED: the signature is good".to_owned(),
            Some(Err(e)) => {
                invalid += 1;
                format!("INVALID: {e} ({})", e.reason())
            }
        };
        say!("{label}");
        if notice {
            say!("a vendor NOTICE, not a license");
        }
        let pretty = |v: &serde_json::Map<String, Value>| {
            serde_json::to_string_pretty(v).unwrap_or_default()
        };
        say!("header:\n{}", pretty(&decoded.header));
        say!("claims:\n{}", pretty(&decoded.claims));
        if notice {
            match decoded.parse_notice() {
                Ok(n) => describe_notice(&n).iter().for_each(|line| say!("{line}")),
                Err(e) => say!("not a valid notice: {e} ({})", e.reason()),
            }
        } else if let Some(exp) = decoded.claims.get("exp").and_then(Value::as_i64) {
            say!(
                "expires: {} ({:.1} days remaining)",
                rfc3339(exp),
                days_remaining(exp)
            );
        }
    }
    if invalid > 0 {
        return Err(Failure {
            code: 1,
            message: format!("{invalid} of {} tokens are not valid", lines.len()),
        });
    }
    Ok(())
}

/// One line of a set, judged.
struct Judged {
    line: usize,
    result: Result<Arc<Claims>, iosetu_license::LicenseError>,
}

/// Verifies each token of a set as the monitor does: alone, and all for the customer of
/// the first that verifies.
fn judge_set(verifier: &LicenseVerifier, lines: &[(usize, &str)]) -> Vec<Judged> {
    let mut customer: Option<String> = None;
    lines
        .iter()
        .map(|&(line, token)| {
            let result = verifier.verify(token).and_then(|claims| match &customer {
                Some(c) if *c != claims.customer => {
                    Err(iosetu_license::LicenseError::CustomerMismatch {
                        expected: c.clone(),
                        found: claims.customer,
                    })
                }
                _ => {
                    customer.get_or_insert_with(|| claims.customer.clone());
                    Ok(Arc::new(claims))
                }
            });
            Judged { line, result }
        })
        .collect()
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
    let text = read_token(input)?;
    let all = match iosetu_license::source::tokens(&text) {
        Ok(lines) => lines,
        Err(e) => return verdict_failure(json, &e, &[]),
    };
    let (notice_lines, lines): (Vec<_>, Vec<_>) = all.into_iter().partition(|(_, t)| is_notice(t));
    let verifier = LicenseVerifier::new(keys);
    let mut judged = judge_set(&verifier, &lines);
    let now = SystemTime::now();
    // Notices as the monitor judges them (without its state file): for the set's
    // customer, the newest `seq` first; their revocations and the set's `supersedes`.
    let customer = judged
        .iter()
        .find_map(|j| j.result.as_ref().ok().map(|c| c.customer.clone()));
    let notices = judge_notices(&verifier, &notice_lines, customer.as_deref());
    let revoked = revocations(
        notices.iter().filter_map(|(_, r)| r.as_ref().ok()),
        judged.iter().filter_map(|j| j.result.as_ref().ok()),
        unix(now),
    );
    let newest = newest_seq(&notices);
    for c in judged.iter_mut().filter_map(|j| j.result.as_mut().ok()) {
        mark_revoked(c, &revoked);
    }
    let set: Vec<Arc<Claims>> = judged
        .iter()
        .filter_map(|j| j.result.as_ref().ok().cloned())
        .collect();
    // The set as the monitor would judge it now (grace does not make it valid).
    let verdict = iosetu_license::verdict::judge(&set, now, Duration::ZERO);
    let per_line: Vec<Value> = judged
        .iter()
        .map(|j| match &j.result {
            Ok(c) => {
                let state = match c.check_at(now) {
                    Ok(()) => "in_force".to_owned(),
                    Err(e) => e.reason().to_owned(),
                };
                json!({"line": j.line, "valid": true, "state": state, "customer": c.customer,
                       "not_before": c.nbf.map(rfc3339), "expires_at": rfc3339(c.exp),
                       "features": c.features})
            }
            Err(e) => json!({"line": j.line, "valid": false, "reason": e.reason(), "error": e.to_string()}),
        })
        .chain(notices.iter().map(|(line, result)| match result {
            Ok(n) => json!({"line": line, "notice": true, "valid": true, "seq": n.seq,
                "newest": Some(n.seq) == newest,
                "customer": n.customer, "issued_at": rfc3339(n.iat), "revoke": n.revoke,
                "attested_time": n.time.map(rfc3339), "attestation_expires_at": n.exp.map(rfc3339)}),
            Err(e) => json!({"line": line, "notice": true, "valid": false, "reason": e.reason(),
                "error": e.to_string()}),
        }))
        .collect();
    if verdict.is_valid()
        && let (Some(claims), Some(end)) = (&verdict.claims, verdict.expires_at)
    {
        let end = unix(end);
        if json {
            let body = json!({
                "valid": true,
                "customer": claims.customer,
                "expires_at": rfc3339(end),
                "days_remaining": days_remaining(end),
                "features": verdict.features(),
                "limits": verdict.limits(),
                "max_instances": verdict.max_instances(),
                "claims": claims.to_json(),
                "tokens": per_line,
            });
            say!("{body}");
        } else {
            say!(
                "valid: {} until {} ({:.1} days)",
                claims.customer,
                rfc3339(end),
                days_remaining(end)
            );
            if lines.len() > 1 || !notices.is_empty() {
                print_lines(&judged, now);
                print_notices(&notices);
            }
        }
        return Ok(());
    }
    // Not valid now: the reason of the first refused line, or why the good ones are not
    // in force.
    let error = judged
        .iter()
        .find_map(|j| j.result.as_ref().err().cloned())
        .or_else(|| set.iter().find_map(|c| c.check_at(now).err()))
        .unwrap_or(iosetu_license::LicenseError::Missing {
            detail: "no token".into(),
        });
    if !json && (lines.len() > 1 || !notices.is_empty()) {
        print_lines(&judged, now);
        print_notices(&notices);
    }
    verdict_failure(json, &error, &per_line)
}

type JudgedNotice = (usize, Result<Notice, iosetu_license::LicenseError>);

/// Verifies the notice lines and judges them for `customer` as a monitor without a state
/// file does at start: of another customer, refused; older than the newest, refused
/// (`stale_seq`) but its revocations stand (see [`revocations`]).
fn judge_notices(
    verifier: &LicenseVerifier,
    lines: &[(usize, &str)],
    customer: Option<&str>,
) -> Vec<JudgedNotice> {
    let verified: Vec<JudgedNotice> = lines
        .iter()
        .map(|&(line, token)| (line, verifier.verify_notice(token)))
        .collect();
    verified
        .into_iter()
        .map(|(line, result)| {
            let result = result.and_then(|n| match customer {
                Some(c) if n.customer != c => Err(iosetu_license::LicenseError::CustomerMismatch {
                    expected: c.to_owned(),
                    found: n.customer,
                }),
                _ => Ok(n),
            });
            (line, result)
        })
        .collect()
}

/// The revocations in force: the accepted notices' `revoke` from their `iat`, and the
/// verified licenses' `supersedes` from when each starts.
fn revocations<'a>(
    notices: impl IntoIterator<Item = &'a Notice>,
    licenses: impl IntoIterator<Item = &'a Arc<Claims>>,
    now: i64,
) -> std::collections::BTreeMap<String, i64> {
    let mut revoked = std::collections::BTreeMap::new();
    let mut add = |jti: &str, at: i64| {
        let entry = revoked.entry(jti.to_owned()).or_insert(at);
        *entry = (*entry).min(at);
    };
    // Every notice of the customer revokes, the older ones too: a revocation never ends.
    for n in notices {
        n.revoke.iter().for_each(|jti| add(jti, n.iat));
    }
    for c in licenses {
        let at = c.nbf.or(c.iat).unwrap_or(now);
        for jti in c.supersedes.iter().filter(|j| Some(*j) != c.jti.as_ref()) {
            add(jti, at);
        }
    }
    revoked
}

/// Marks `c` revoked where `revoked` says so.
fn mark_revoked(c: &mut Arc<Claims>, revoked: &std::collections::BTreeMap<String, i64>) {
    if let Some(at) = c.jti.as_ref().and_then(|jti| revoked.get(jti)) {
        Arc::make_mut(c).revoked_at = Some(*at);
    }
}

/// The newest `seq` among the accepted notices.
fn newest_seq(notices: &[JudgedNotice]) -> Option<u64> {
    notices
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|n| n.seq)
        .max()
}

fn print_notices(notices: &[JudgedNotice]) {
    let newest = newest_seq(notices);
    for (line, result) in notices {
        match result {
            Ok(n) => {
                let older = if Some(n.seq) == newest {
                    ""
                } else {
                    " (older than the newest: its revocations stand, its attestation is \
                     not used; the service reports it as stale_seq)"
                };
                say!("  line {line}: notice{older}");
                for text in describe_notice(n) {
                    say!("    {text}");
                }
            }
            Err(e) => say!("  line {line}: notice refused: {} ({e})", e.reason()),
        }
    }
}

fn print_lines(judged: &[Judged], now: SystemTime) {
    for j in judged {
        match &j.result {
            Ok(c) => {
                let state = match c.check_at(now) {
                    Ok(()) => "in force".to_owned(),
                    Err(e) => e.reason().replace('_', " "),
                };
                let revoked = c
                    .revoked_at
                    .filter(|_| c.revoked())
                    .map_or_else(String::new, |at| format!(", revoked from {}", rfc3339(at)));
                say!(
                    "  line {}: {} ({}), {} to {}{revoked}",
                    j.line,
                    c.customer,
                    state,
                    c.nbf.map_or_else(|| "-".to_owned(), rfc3339),
                    rfc3339(c.exp)
                );
            }
            Err(e) => say!("  line {}: invalid: {} ({e})", j.line, e.reason()),
        }
    }
}

fn verdict_failure(
    json: bool,
    e: &iosetu_license::LicenseError,
    per_line: &[Value],
) -> Result<(), Failure> {
    if json {
        say!(
            "{}",
            json!({"valid": false, "reason": e.reason(), "error": e.to_string(), "tokens": per_line})
        );
    } else {
        say!("invalid: {} ({e})", e.reason());
    }
    Err(Failure {
        code: 1,
        message: format!("invalid license: {}", e.reason()),
    })
}

fn timeline(input: &TokenInput, grace: Duration) -> Result<(), Failure> {
    let text = read_token(input)?;
    let lines = tokens(&text)?;
    let mut set: Vec<(usize, Arc<Claims>)> = Vec::new();
    let mut notices: Vec<(usize, Notice)> = Vec::new();
    let mut skipped = Vec::new();
    for (line, token) in &lines {
        let decoded = decode_unverified(token);
        if decoded.as_ref().is_ok_and(|u| u.is_notice()) {
            match decoded.and_then(|u| u.parse_notice()) {
                Ok(n) => notices.push((*line, n)),
                Err(e) => skipped.push(format!("  line {line}: skipped, {e} ({})", e.reason())),
            }
            continue;
        }
        match decoded.and_then(|u| u.parse_claims()) {
            Ok(claims) => set.push((*line, Arc::new(claims))),
            // As the monitor does: a bad line is reported and the others still count.
            Err(e) => skipped.push(format!("  line {line}: skipped, {e} ({})", e.reason())),
        }
    }
    // What the notices and `supersedes` revoke, as the monitor would apply it (the notices
    // of the set's customer, and every license's `supersedes`).
    let customer = set.first().map(|(_, c)| c.customer.clone());
    let newest = notices
        .iter()
        .filter(|(_, n)| Some(&n.customer) == customer.as_ref())
        .map(|(_, n)| n.seq)
        .max();
    let revoked = revocations(
        notices
            .iter()
            .map(|(_, n)| n)
            .filter(|n| Some(&n.customer) == customer.as_ref()),
        set.iter().map(|(_, c)| c),
        unix(SystemTime::now()),
    );
    for (_, c) in &mut set {
        mark_revoked(c, &revoked);
    }
    if set.is_empty() {
        return Err(usage("no token of the set could be read"));
    }
    let licenses: Vec<Arc<Claims>> = set.iter().map(|(_, c)| Arc::clone(c)).collect();
    let now = unix(SystemTime::now());
    say!("(from the tokens' claims, unverified; `verify` checks the signatures)");
    say!("licenses:");
    for (line, c) in &set {
        let signed = c.grace_period_seconds.map_or_else(
            || format!("grace {} (the service's)", human(grace.as_secs())),
            |g| format!("grace {} (signed)", human(g)),
        );
        let features = if c.features.is_empty() {
            String::new()
        } else {
            format!(", features {}", c.features.join(","))
        };
        let instances = c
            .max_instances
            .map_or_else(String::new, |n| format!(", {n} instances"));
        let revoked = c
            .revoked_at
            .filter(|_| c.revoked())
            .map_or_else(String::new, |at| format!(", REVOKED from {}", rfc3339(at)));
        say!(
            "  line {line}: {} to {}{features}{instances}, {signed}{revoked}",
            c.nbf.map_or_else(|| "-".to_owned(), rfc3339),
            rfc3339(c.exp)
        );
    }
    if !notices.is_empty() {
        say!("notices:");
        for (line, n) in &notices {
            let used = if Some(&n.customer) != customer.as_ref() {
                " (another customer's: refused)"
            } else if Some(n.seq) != newest {
                " (older than the newest: its revocations stand, its attestation is not used)"
            } else {
                ""
            };
            say!("  line {line}:{used}");
            for text in describe_notice(n) {
                say!("    {text}");
            }
        }
    }
    for line in &skipped {
        say!("{line}");
    }
    // The coverage now (or the next one to begin), merged from the windows.
    let start_of = |c: &Claims| c.nbf.unwrap_or(i64::MIN);
    let from = if licenses
        .iter()
        .any(|c| start_of(c) <= now && now < c.ends())
    {
        now
    } else {
        match licenses
            .iter()
            .map(|c| start_of(c))
            .filter(|&s| s > now)
            .min()
        {
            Some(next) => next,
            None => licenses
                .iter()
                .map(|c| c.ends())
                .max()
                .unwrap_or(now)
                .saturating_sub(1),
        }
    };
    let at = |secs: i64| {
        if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        }
    };
    let Some(end) = iosetu_license::verdict::judge(&licenses, at(from), grace).expires_at else {
        return Err(usage("no license in the set has a window"));
    };
    let end = unix(end);
    let begin = licenses
        .iter()
        .filter(|c| start_of(c) <= from && from < c.ends())
        .map(|c| start_of(c))
        .min()
        .unwrap_or(from);
    say!(
        "coverage: {} to {} (merged)",
        if begin == i64::MIN {
            "-".to_owned()
        } else {
            rfc3339(begin)
        },
        rfc3339(end)
    );
    let cut_off = iosetu_license::verdict::judge(&licenses, at(end), grace)
        .grace_ends_at
        .map_or(end, unix);
    say!("{:<34} {:<22} from now", "what", "when (UTC)");
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
            (name.to_owned(), end - band.threshold().as_secs() as i64 + 1)
        })
        .collect();
    rows.push(("license.grace_mode_entered".into(), end));
    rows.push(("license.grace_period_expired (503)".into(), cut_off));
    for (what, at) in rows {
        say!("{what:<34} {:<22} {}", rfc3339(at), relative(at - now));
    }
    Ok(())
}

/// A duration in the largest whole unit: `7d`, `36h`, `0s`.
fn human(secs: u64) -> String {
    match secs {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
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

fn parse_limit(text: &str) -> Result<(String, u64), String> {
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
