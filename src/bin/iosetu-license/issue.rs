//! `issue`: a license signed and recorded in the vendor's ledger in one step.

use std::time::SystemTime;

use iosetu_license::Claims;
use iosetu_license::ledger::Ledger;

use crate::IssueArgs;
use crate::common::{Failure, emit, ledger_failure, random_jti, rfc3339, signer, unix};

pub(crate) fn run(args: IssueArgs) -> Result<(), Failure> {
    // Usage first: a wrong option is reported before any file is touched.
    for (name, _) in &args.claims {
        if let Some(instead) = reserved_claim(name) {
            return Err(Failure::usage(format!("--claim {name}=…: {instead}")));
        }
    }
    let signer = signer(&args.key, args.kid.as_ref())?;
    let now = SystemTime::now();
    let expires = match (args.expires, args.valid_for) {
        (Some(at), _) => at,
        (None, Some(d)) => now + d,
        (None, None) => return Err(Failure::usage("--expires or --valid-for is required")),
    };
    if expires <= now {
        if !args.allow_past {
            return Err(Failure::usage(format!(
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
        return Err(Failure::usage("--customer cannot be empty"));
    }
    let mut claims = Claims::new(args.customer, unix(expires));
    claims.iat = Some(unix(now));
    claims.nbf = args.not_before.map(unix);
    if claims.nbf.is_some_and(|nbf| nbf >= claims.exp) {
        return Err(Failure::usage("--not-before must be before the expiry"));
    }
    claims.iss = args.iss;
    claims.aud = args.aud.into_iter().collect();
    claims.features = args.features;
    claims.limits = args.limits.into_iter().collect();
    if let Some(grace) = args.grace {
        if grace.as_secs() > iosetu_license::token::MAX_GRACE_PERIOD_SECS {
            return Err(Failure::usage("--grace is at most 366 days"));
        }
        claims.grace_period_seconds = Some(grace.as_secs());
    }
    claims.max_instances = args.max_instances.map(u64::from);
    if let Some(bad) = args
        .supersedes
        .iter()
        .find(|j| j.is_empty() || j.len() > iosetu_license::token::MAX_JTI_BYTES)
    {
        return Err(Failure::usage(format!(
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
