//! `inspect`: each token's header and claims, UNVERIFIED unless a public key is given,
//! and where each stands as the service judges the source now (by the monitor's own
//! judge, [`iosetu_license::preview`]).

use std::path::Path;
use std::time::SystemTime;

use iosetu_license::preview::{Keys, Line, NoticeStanding, Standing, preview};
use iosetu_license::token::decode_unverified;
use iosetu_license::{DEFAULT_GRACE_PERIOD, LicenseError, LicenseVerifier};
use serde_json::Value;

use crate::TokenInput;
use crate::common::{
    Failure, days_between, describe_notice, load_key, notice_words, read_token, rfc3339,
    standing_words,
};

pub(crate) fn run(input: &TokenInput, public_key: Option<&Path>) -> Result<(), Failure> {
    let text = read_token(input)?;
    let tokens = iosetu_license::source::tokens(&text)
        .map_err(|e| Failure::invalid(format!("{e} ({})", e.reason())))?;
    let verifier = match public_key {
        None => None,
        Some(path) => Some(LicenseVerifier::new(vec![load_key(path, None)?])),
    };
    let keys = verifier.as_ref().map_or(Keys::Unverified, Keys::Verify);
    let now = SystemTime::now();
    let seen = preview(&text, keys, None, now, DEFAULT_GRACE_PERIOD);
    // The same tokens in the same order (the monitor's read trims the text, which may
    // number them from another line); none where the source could not be read whole.
    let judged: Vec<&Line> = if seen.lines.len() == tokens.len() {
        seen.lines.iter().collect()
    } else {
        Vec::new()
    };
    let mut invalid = 0;
    for (n, (line, token)) in tokens.iter().enumerate() {
        if tokens.len() > 1 {
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
        let judged = judged.get(n).copied();
        let label = match (&verifier, judged.map(verification)) {
            (None, _) => "UNVERIFIED (no --public-key given): do not trust what follows".to_owned(),
            (Some(_), Some(Ok(()))) => "VERIFIED: the signature is good".to_owned(),
            (Some(_), Some(Err(e))) => {
                invalid += 1;
                format!("INVALID: {e} ({})", e.reason())
            }
            (Some(_), None) => {
                invalid += 1;
                let e = seen.problem.as_ref();
                format!(
                    "INVALID: {} ({})",
                    e.map_or_else(|| "not read".to_owned(), ToString::to_string),
                    e.map_or("unreadable", LicenseError::reason)
                )
            }
        };
        say!("{label}");
        let notice = decoded.is_notice();
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
                days_between(now, exp)
            );
        }
        if let Some(judged) = judged {
            let as_judged = if verifier.is_some() {
                "as the service judges it now"
            } else {
                "as the service would judge it now, were it genuine"
            };
            let words = match judged {
                Line::License(l) => standing_words(&l.standing),
                Line::Notice(n) if n.standing == NoticeStanding::Accepted => "accepted".to_owned(),
                Line::Notice(n) => notice_words(&n.standing).trim_start().to_owned(),
                _ => "unknown".to_owned(),
            };
            say!("{as_judged}: {words}");
        }
    }
    if invalid > 0 {
        return Err(Failure::invalid(format!(
            "{invalid} of {} tokens are not valid",
            tokens.len()
        )));
    }
    Ok(())
}

/// Whether a line's token verified, and if not, why.
fn verification(line: &Line) -> Result<(), LicenseError> {
    let refused = |standing: Option<&LicenseError>| {
        standing.cloned().unwrap_or(LicenseError::Malformed {
            detail: "not read".into(),
        })
    };
    match line {
        Line::License(l) if l.claims.is_some() => Ok(()),
        Line::License(l) => Err(refused(match &l.standing {
            Standing::Refused(e) | Standing::Ended(e) => Some(e),
            _ => None,
        })),
        Line::Notice(n) if n.notice.is_some() => Ok(()),
        Line::Notice(n) => Err(refused(match &n.standing {
            NoticeStanding::Refused(e) => Some(e),
            _ => None,
        })),
        _ => Err(refused(None)),
    }
}
