//! Mints a development license signed with the examples' published dev key.
//!
//! ```text
//! cargo run --example mint -- "Acme Corp" 30     # valid for 30 days
//! cargo run --example mint -- "Acme Corp" -2     # expired two days ago
//! ```
//!
//! Prints the token on stdout, for `IOSETU_LICENSE_KEY=$(…)` or a license file. Only
//! `examples/axum.rs` and `examples/tonic.rs` accept it: they are built with the dev
//! public key (see `examples/dev-keys/README.md`).

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use iosetu_license::{Claims, LicenseSigner};

const DEV_PRIVATE_KEY: &str = include_str!("dev-keys/dev.key.pem");

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let customer = args.next().unwrap_or_else(|| "Dev Customer".to_owned());
    let days: i64 = match args.next().map(|d| d.parse()) {
        None => 30,
        Some(Ok(days)) => days,
        Some(Err(_)) => {
            eprintln!("usage: mint [CUSTOMER] [DAYS]   (DAYS may be negative)");
            return ExitCode::from(2);
        }
    };
    let signer = match LicenseSigner::from_pkcs8_pem(DEV_PRIVATE_KEY) {
        Ok(signer) => signer,
        Err(e) => {
            eprintln!("mint: the dev key does not load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut claims = Claims::new(customer, now + days * 86_400);
    claims.iat = Some(now.min(claims.exp));
    println!("{}", signer.sign(&claims));
    ExitCode::SUCCESS
}
