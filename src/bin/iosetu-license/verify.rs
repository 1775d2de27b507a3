//! `verify`: a token or a license set judged as the service judges it now, by the
//! monitor's own judge ([`iosetu_license::preview`]): exit 0 valid, 1 not. Nothing is
//! decided here; this file only shows the judge's answer.

use std::path::Path;
use std::time::{Duration, SystemTime};

use iosetu_license::preview::{Keys, Line, NoticeStanding, Preview, Standing, preview};
use iosetu_license::{GraceReason, LicenseError, LicenseState};
use serde_json::{Value, json};

use crate::common::{
    Failure, days_between, describe_notice, notice_words, read_notices, read_token, rfc3339,
    rfc3339_at, signed_unix, standing_code, standing_words,
};
use crate::{KeyArgs, TokenInput};

pub(crate) fn run(
    input: &TokenInput,
    keys: &KeyArgs,
    notices: Option<&Path>,
    grace: Duration,
    json: bool,
) -> Result<(), Failure> {
    let verifier = keys.verifier()?;
    let text = read_token(input)?;
    let notices = read_notices(notices)?;
    let now = SystemTime::now();
    let seen = preview(
        &text,
        Keys::Verify(&verifier),
        notices.as_deref(),
        now,
        grace,
    );
    if let Some(e) = &seen.notice_source_problem {
        eprintln!(
            "iosetu-license: warning: the notice source adds no notices: {e} ({})",
            e.reason()
        );
    }
    let (start, kept) = (&seen.start, &seen.verdict);
    if start.state != kept.state || start.claims != kept.claims {
        eprintln!(
            "iosetu-license: warning: a service started on this source reports {} at its \
             first check, and {} from its next full check on",
            start.state.as_str(),
            kept.state.as_str()
        );
    }
    let per_line = per_line(&seen);
    // Each line is listed for a set (several tokens, or a license and notices).
    let listed = seen.lines.len() > 1;
    let verdict = &seen.verdict;
    if verdict.state == LicenseState::Valid
        && let (Some(claims), Some(end)) = (&verdict.claims, verdict.expires_at)
    {
        let end = signed_unix(end);
        if json {
            let body = json!({
                "valid": true,
                "state": verdict.state.as_str(),
                "customer": claims.customer,
                "expires_at": rfc3339(end),
                "days_remaining": days_between(now, end),
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
                days_between(now, end)
            );
            if listed {
                print_lines(&seen);
            }
        }
        return Ok(());
    }
    let (reason, message) = why(&seen);
    if json {
        say!(
            "{}",
            json!({
                "valid": false,
                "state": verdict.state.as_str(),
                "reason": reason,
                "error": message,
                "grace_ends_at": verdict.grace_ends_at.map(rfc3339_at),
                "tokens": per_line,
            })
        );
    } else {
        if listed {
            print_lines(&seen);
        }
        say!("invalid: {reason} ({message})");
    }
    Err(Failure::invalid(format!("invalid license: {reason}")))
}

/// Why the verdict is not valid: its reason code, and the reason in words with what the
/// service does meanwhile.
fn why(seen: &Preview) -> (&'static str, String) {
    let verdict = &seen.verdict;
    let reason = verdict.reason.as_ref().map_or("invalid", GraceReason::code);
    let at = |t: Option<SystemTime>| t.map_or_else(|| "-".to_owned(), rfc3339_at);
    let what = match &verdict.reason {
        Some(GraceReason::Invalid(e)) => e.to_string(),
        Some(GraceReason::Missing) => seen
            .problem
            .as_ref()
            .map_or_else(|| "no license found".to_owned(), ToString::to_string),
        Some(GraceReason::Expired) => {
            format!("the license expired at {}", at(verdict.expires_at))
        }
        Some(GraceReason::Revoked) => {
            format!(
                "the license was revoked as of {}",
                at(verdict.grace_started_at)
            )
        }
        _ => reason.replace('_', " "),
    };
    let meanwhile = match (verdict.state, verdict.grace_ends_at) {
        (LicenseState::Grace, Some(end)) => {
            format!("; the service serves in grace until {}", rfc3339_at(end))
        }
        (LicenseState::GraceExpired, Some(end)) => {
            format!("; the service refuses requests since {}", rfc3339_at(end))
        }
        _ => String::new(),
    };
    (reason, format!("{what}{meanwhile}"))
}

/// Each line as JSON.
fn per_line(seen: &Preview) -> Vec<Value> {
    seen.lines
        .iter()
        .filter_map(|line| match line {
            Line::License(l) => Some(match (&l.claims, &l.standing) {
                (claims, Standing::Refused(e)) => {
                    let mut value = json!({"line": l.line, "valid": false, "reason": e.reason(),
                        "error": e.to_string()});
                    if let Some(c) = claims {
                        value["customer"] = json!(c.customer);
                    }
                    value
                }
                (Some(c), standing) => json!({"line": l.line, "valid": true,
                    "state": standing_code(standing), "customer": c.customer,
                    "not_before": c.nbf.map(rfc3339), "expires_at": rfc3339(c.exp),
                    "revoked_at": c.revoked_at.filter(|_| c.revoked()).map(rfc3339),
                    "features": c.features}),
                (None, standing) => {
                    json!({"line": l.line, "valid": false, "reason": standing_code(standing)})
                }
            }),
            Line::Notice(n) => Some(match (&n.notice, &n.standing) {
                (Some(notice), standing)
                    if !matches!(standing, NoticeStanding::Refused(e)
                        if !matches!(e, LicenseError::StaleSequence { .. })) =>
                {
                    let mut value = json!({"line": n.line, "notice": true, "valid": true,
                        "seq": notice.seq, "newest": *standing == NoticeStanding::Accepted,
                        "customer": notice.customer, "issued_at": rfc3339(notice.iat),
                        "revoke": notice.revoke, "attested_time": notice.time.map(rfc3339),
                        "attestation_expires_at": notice.exp.map(rfc3339)});
                    match standing {
                        NoticeStanding::Refused(e) => value["reason"] = json!(e.reason()),
                        NoticeStanding::NotJudged => value["judged"] = json!(false),
                        _ => {}
                    }
                    value
                }
                (_, NoticeStanding::Refused(e)) => json!({"line": n.line, "notice": true,
                    "valid": false, "reason": e.reason(), "error": e.to_string()}),
                (_, _) => json!({"line": n.line, "notice": true, "valid": false}),
            }),
            _ => None,
        })
        .collect()
}

/// Each line in words.
fn print_lines(seen: &Preview) {
    for line in &seen.lines {
        match line {
            Line::License(l) => match &l.claims {
                Some(c) => {
                    let revoked = c
                        .revoked_at
                        .filter(|_| c.revoked())
                        .map_or_else(String::new, |at| format!(", revoked from {}", rfc3339(at)));
                    say!(
                        "  line {}: {} ({}), {} to {}{revoked}",
                        l.line,
                        c.customer,
                        standing_words(&l.standing),
                        c.nbf.map_or_else(|| "-".to_owned(), rfc3339),
                        rfc3339(c.exp)
                    );
                }
                None => match &l.standing {
                    Standing::Refused(e) => {
                        say!("  line {}: invalid: {} ({e})", l.line, e.reason());
                    }
                    other => say!("  line {}: {}", l.line, standing_words(other)),
                },
            },
            Line::Notice(n) => {
                say!("  line {}: notice{}", n.line, notice_words(&n.standing));
                if let Some(notice) = &n.notice {
                    for text in describe_notice(notice) {
                        say!("    {text}");
                    }
                }
            }
            _ => {}
        }
    }
}
