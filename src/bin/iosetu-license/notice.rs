//! `notice`: a vendor notice (revocations, a time attestation) for a customer, with its
//! next `seq` from the ledger.

use std::time::SystemTime;

use iosetu_license::Notice;
use iosetu_license::ledger::Ledger;

use crate::NoticeArgs;
use crate::common::{
    Failure, describe_notice, emit, ledger_failure, parse_date, random_jti, signer, unix,
};

pub(crate) fn run(args: NoticeArgs) -> Result<(), Failure> {
    if args.customer.trim().is_empty() {
        return Err(Failure::usage("--customer cannot be empty"));
    }
    if args.revoke.len() > iosetu_license::token::MAX_REVOKE {
        return Err(Failure::usage("at most 64 --revoke per notice"));
    }
    if let Some(bad) = args
        .revoke
        .iter()
        .find(|j| j.is_empty() || j.len() > iosetu_license::token::MAX_JTI_BYTES)
    {
        return Err(Failure::usage(format!(
            "--revoke {bad:?}: a jti is 1 to 256 bytes"
        )));
    }
    let valid = i64::try_from(args.valid_for.as_secs()).unwrap_or(i64::MAX);
    if args.time.is_some() && !(1..=iosetu_license::token::MAX_ATTESTATION_SECS).contains(&valid) {
        return Err(Failure::usage("--valid-for is at most 7d"));
    }
    let now = unix(SystemTime::now());
    let time = match args.time.as_deref() {
        None => None,
        Some("now") => Some(now),
        Some(text) => Some(unix(parse_date(text).map_err(Failure::usage)?)),
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
        return Err(Failure::usage(
            "--time must lie within the notice's validity",
        ));
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
