//! `iosetu-license`: the vendor's tool to make keys, issue, inspect and verify licenses,
//! sign vendor notices (revocations, time attestations), preview when a license's
//! alerts, grace and cut-off will happen, and verify usage reports for true-up (with
//! usage receipts).
//!
//! It shares the library's token code, so what it issues is exactly what the monitor
//! accepts, and it judges a source with the monitor's own judge
//! ([`iosetu_license::preview`]): `verify`, `inspect` and `timeline` hold no rule of
//! their own. `issue`, `notice` and `usage verify` keep the vendor's ledger
//! (`--ledger`, `iosetu-ledger.db` in the current directory by default): every license,
//! notice, receipt and instance key per customer. Exit codes: 0 success (for `verify`:
//! valid), 1 invalid license (for `usage verify`: tampering), 2 usage or I/O error.
//! Errors are one line on stderr.
//!
//! One file per command (`keygen`, `issue`, `notice`, `inspect`, `verify`, `timeline`,
//! `usage`), the arguments and the dispatch here, and what several share in `common`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{ArgGroup, Args, Parser, Subcommand};
use iosetu_license::ledger;
use serde_json::Value;

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

mod common;
mod inspect;
mod issue;
mod keygen;
mod notice;
mod timeline;
mod usage;
mod verify;

use common::{Failure, parse_claim, parse_date, parse_duration, parse_limit};

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
    /// Show a token's header and claims, UNVERIFIED unless --public-key is given, and
    /// where each line of a set stands as the service judges it now.
    Inspect {
        #[command(flatten)]
        input: TokenInput,
        /// Also verify against this public key (SPKI PEM).
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Verify a token or a license set as the service judges it now: exit 0 valid, 1
    /// invalid (with its reason code), 2 usage/I/O error.
    Verify {
        #[command(flatten)]
        input: TokenInput,
        #[command(flatten)]
        keys: KeyArgs,
        /// The service's notice source, if it reads vendor notices from a file of their
        /// own.
        #[arg(long)]
        notices: Option<PathBuf>,
        /// The service's grace period (it decides which customer's licenses a set of
        /// several holds, and the cut-off shown).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        grace: Duration,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// When each alert, the start of grace and the cut-off will happen for a token or a
    /// set, as the service will report them (from the tokens' claims, unverified, unless
    /// --public-key is given).
    Timeline {
        #[command(flatten)]
        input: TokenInput,
        /// Verify against this public key (SPKI PEM); repeat for several.
        #[arg(long = "public-key")]
        public_keys: Vec<PathBuf>,
        /// Key id of the public key at the same position.
        #[arg(long = "kid", requires = "public_keys")]
        kids: Vec<String>,
        /// The service's notice source, if it reads vendor notices from a file of their
        /// own.
        #[arg(long)]
        notices: Option<PathBuf>,
        /// The service's grace period.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        grace: Duration,
    },
    /// Usage reports for true-up: `export` a usage journal (customer side), `verify`
    /// reports and print the true-up table (vendor side).
    #[command(subcommand)]
    Usage(UsageCommand),
}

/// The public keys to verify with.
#[derive(Args)]
pub(crate) struct KeyArgs {
    /// Public key (SPKI PEM); repeat for several.
    #[arg(long = "public-key", required = true)]
    pub(crate) public_keys: Vec<PathBuf>,
    /// Key id of the public key at the same position.
    #[arg(long = "kid")]
    pub(crate) kids: Vec<String>,
}

#[derive(Subcommand)]
pub(crate) enum UsageCommand {
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
pub(crate) struct UsageVerifyArgs {
    /// The reports (one per instance, or several months of one), all of one customer.
    #[arg(required = true)]
    pub(crate) reports: Vec<PathBuf>,
    /// Print the true-up table as CSV (findings go to stderr).
    #[arg(long)]
    pub(crate) csv: bool,
    /// The vendor's ledger (created if missing).
    #[arg(long, default_value = ledger::DEFAULT_PATH)]
    pub(crate) ledger: PathBuf,
    /// The customer, where the reports' records name none (no license was in force);
    /// when they name one, it must be this.
    #[arg(long)]
    pub(crate) customer: Option<String>,
    /// Sign a usage receipt (a vendor notice listing each instance's journal head, with
    /// the customer's next seq) when nothing shows tampering; printed last, or written
    /// with --out.
    #[arg(long, requires = "key")]
    pub(crate) receipt: bool,
    /// The private key (PKCS#8 PEM) to sign the receipt with.
    #[arg(long, requires = "receipt")]
    pub(crate) key: Option<PathBuf>,
    /// Key id to put in the receipt's header (must match the one the service registers).
    #[arg(long, requires = "receipt")]
    pub(crate) kid: Option<String>,
    /// Issuer (`iss`) of the receipt, if the service checks one.
    #[arg(long, requires = "receipt")]
    pub(crate) iss: Option<String>,
    /// Audience (`aud`) of the receipt, if the service checks one.
    #[arg(long, requires = "receipt")]
    pub(crate) aud: Option<String>,
    /// Write the receipt to this file instead of stdout.
    #[arg(long, requires = "receipt")]
    pub(crate) out: Option<PathBuf>,
}

#[derive(Args)]
#[command(group(ArgGroup::new("expiry").required(true).args(["expires", "valid_for"])))]
pub(crate) struct IssueArgs {
    /// The private key (PKCS#8 PEM) from `keygen`.
    #[arg(long)]
    pub(crate) key: PathBuf,
    /// Who the license is for.
    #[arg(long)]
    pub(crate) customer: String,
    /// Expiry: RFC 3339 (`2027-03-10T19:30:00Z`) or a date (`2027-03-10`, midnight UTC).
    #[arg(long, value_parser = parse_date)]
    pub(crate) expires: Option<SystemTime>,
    /// Validity from now, e.g. `365d`, `12h`.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) valid_for: Option<Duration>,
    /// Key id to put in the header (must match the one the service registers).
    #[arg(long)]
    pub(crate) kid: Option<String>,
    /// A feature the license grants; repeatable.
    #[arg(long = "feature")]
    pub(crate) features: Vec<String>,
    /// A numeric limit the license grants, `name=N` (N a non-negative integer), e.g.
    /// `seats=25`; repeatable.
    #[arg(long = "limit", value_parser = parse_limit)]
    pub(crate) limits: Vec<(String, u64)>,
    /// The vendor's grace period for this license, e.g. `7d` (a trial: `0s`), signed into
    /// it (`grace_period_seconds`, at most 366 days); without it the service's default
    /// applies.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) grace: Option<Duration>,
    /// How many replicas may serve at once (`max_instances`, a positive integer), counted
    /// with Kubernetes Leases by services built with `instance_slots`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_instances: Option<u32>,
    /// The `jti` of a license this one replaces; repeatable. The service counts it as
    /// revoked from when this license starts (its --not-before, else now).
    #[arg(long = "supersedes")]
    pub(crate) supersedes: Vec<String>,
    /// Any other claim, `name=value` (value parsed as JSON if it is JSON); repeatable.
    #[arg(long = "claim", value_parser = parse_claim)]
    pub(crate) claims: Vec<(String, Value)>,
    /// Issuer (`iss`).
    #[arg(long)]
    pub(crate) iss: Option<String>,
    /// Audience (`aud`).
    #[arg(long)]
    pub(crate) aud: Option<String>,
    /// Not valid before (`nbf`): RFC 3339 or a date.
    #[arg(long, value_parser = parse_date)]
    pub(crate) not_before: Option<SystemTime>,
    /// Write the token to this file instead of stdout.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// The vendor's ledger, where the license is recorded (created if missing).
    #[arg(long, default_value = ledger::DEFAULT_PATH)]
    pub(crate) ledger: PathBuf,
    /// FOR SUPPORT AND TESTS: allow an expiry in the past, to issue an already-expired
    /// license (to see grace and the cut-off on a test system). Never ship one.
    #[arg(long)]
    pub(crate) allow_past: bool,
}

#[derive(Args)]
#[command(group(ArgGroup::new("action").required(true).multiple(true).args(["revoke", "time"])))]
pub(crate) struct NoticeArgs {
    /// The private key (PKCS#8 PEM) from `keygen`.
    #[arg(long)]
    pub(crate) key: PathBuf,
    /// Who the notice is for: the customer of the licenses it concerns.
    #[arg(long)]
    pub(crate) customer: String,
    /// The customer's notice sequence number. Without it, the next from the ledger (one
    /// more than the highest it holds for the customer); give it once for a customer
    /// whose earlier notices the ledger does not hold (one more than the last you gave:
    /// a service refuses a notice older than the newest it accepted). A seq the ledger
    /// holds already is refused.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=(1 << 53)))]
    pub(crate) seq: Option<u64>,
    /// Revoke the license with this `jti` from now on; repeatable. List every jti still
    /// revoked, so that the newest notice alone says everything.
    #[arg(long = "revoke")]
    pub(crate) revoke: Vec<String>,
    /// Attest the real time: `now`, or an RFC 3339 time. The service re-bases its trusted
    /// time there and leaves grace for a clock judged set back.
    #[arg(long)]
    pub(crate) time: Option<String>,
    /// How long an attestation may be installed, at most 7d.
    #[arg(long, default_value = "3d", value_parser = parse_duration)]
    pub(crate) valid_for: Duration,
    /// Key id to put in the header (must match the one the service registers).
    #[arg(long)]
    pub(crate) kid: Option<String>,
    /// Issuer (`iss`), if the service checks one.
    #[arg(long)]
    pub(crate) iss: Option<String>,
    /// Audience (`aud`), if the service checks one.
    #[arg(long)]
    pub(crate) aud: Option<String>,
    /// Write the notice to this file instead of stdout.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// The vendor's ledger: the seq is taken from it and the notice recorded (created if
    /// missing).
    #[arg(long, default_value = ledger::DEFAULT_PATH)]
    pub(crate) ledger: PathBuf,
}

#[derive(Args)]
pub(crate) struct TokenInput {
    /// The token; `-` reads it from stdin.
    #[arg(conflicts_with = "file", required_unless_present = "file")]
    pub(crate) token: Option<String>,
    /// Read the token from this file.
    #[arg(long)]
    pub(crate) file: Option<PathBuf>,
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
        Command::Keygen { out, kid, force } => keygen::run(&out, kid, force),
        Command::Issue(args) => issue::run(args),
        Command::Notice(args) => notice::run(args),
        Command::Inspect { input, public_key } => inspect::run(&input, public_key.as_deref()),
        Command::Verify {
            input,
            keys,
            notices,
            grace,
            json,
        } => verify::run(&input, &keys, notices.as_deref(), grace, json),
        Command::Timeline {
            input,
            public_keys,
            kids,
            notices,
            grace,
        } => timeline::run(&input, &public_keys, &kids, notices.as_deref(), grace),
        Command::Usage(UsageCommand::Export {
            journal,
            out,
            force,
        }) => usage::export(&journal, &out, force),
        Command::Usage(UsageCommand::Verify(args)) => usage::verify(args),
    }
}
