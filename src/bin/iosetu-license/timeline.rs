//! `timeline`: when the service will report each alert band, grace and the cut-off for a
//! token or a set. The instants are the judge's own ([`iosetu_license::preview`]: the
//! monitor's judge, woken by its own timers as time alone moves on), never worked out
//! here.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use iosetu_license::preview::{Keys, Preview, Standing, preview};
use iosetu_license::{LicenseEvent, LicenseState};

use crate::TokenInput;
use crate::common::{
    Failure, describe_notice, human, notice_words, read_notices, read_token, relative, rfc3339,
    rfc3339_at, signed_unix, verifier,
};

pub(crate) fn run(
    input: &TokenInput,
    public_keys: &[PathBuf],
    kids: &[String],
    notices: Option<&Path>,
    grace: Duration,
) -> Result<(), Failure> {
    let verifier = if public_keys.is_empty() {
        None
    } else {
        Some(verifier(public_keys, kids)?)
    };
    let text = read_token(input)?;
    let notices = read_notices(notices)?;
    let now = SystemTime::now();
    let keys = verifier.as_ref().map_or(Keys::Unverified, Keys::Verify);
    let seen = preview(&text, keys, notices.as_deref(), now, grace);
    if let (true, Some(e)) = (seen.lines.is_empty(), &seen.problem) {
        return Err(Failure::invalid(format!("{e} ({})", e.reason())));
    }
    if !seen.licenses().any(|l| l.claims.is_some()) {
        return Err(Failure::usage("no token of the set could be read"));
    }
    if verifier.is_some() {
        say!("(verified with the public key, judged as the service judges them)");
    } else {
        say!("(from the tokens' claims, unverified; `verify` checks the signatures)");
    }
    print_lines(&seen, grace);
    print_coverage(&seen);
    say!("{:<34} {:<22} from now", "what", "when (UTC)");
    let at_start = seen.events.iter().filter_map(|event| match event {
        // At start, only what is already due: the innermost band, grace, the cut-off.
        LicenseEvent::Expiring { .. }
        | LicenseEvent::GraceModeEntered { .. }
        | LicenseEvent::GracePeriodExpired { .. } => row(event, seen.verdict.evaluated_at),
        _ => None,
    });
    let later = seen.schedule.iter().filter_map(|s| row(&s.event, s.at));
    let now = signed_unix(now);
    for (what, at) in at_start.chain(later) {
        let at = signed_unix(at);
        say!("{what:<34} {:<22} {}", rfc3339(at), relative(at - now));
    }
    Ok(())
}

/// The row of an event the timeline lists, with its instant: grace's by the event's own
/// bounds, any other when it is emitted (`at`).
fn row(event: &LicenseEvent, at: SystemTime) -> Option<(String, SystemTime)> {
    match event {
        LicenseEvent::GraceModeEntered {
            grace_started_at, ..
        } => Some((event.name().to_owned(), *grace_started_at)),
        LicenseEvent::GracePeriodExpired { grace_ends_at, .. } => {
            Some((format!("{} (503)", event.name()), *grace_ends_at))
        }
        LicenseEvent::Expiring { .. }
        | LicenseEvent::GraceModeExited { .. }
        | LicenseEvent::Loaded { .. }
        | LicenseEvent::EntitlementsChanged { .. }
        | LicenseEvent::Revoked { .. } => Some((event.name().to_owned(), at)),
        _ => None,
    }
}

/// Each line: a license's window, grace and what the service makes of it; a notice and
/// whether it is used.
fn print_lines(seen: &Preview, grace: Duration) {
    say!("licenses:");
    for l in seen.licenses() {
        let Some(c) = &l.claims else {
            if let Standing::Refused(e) = &l.standing {
                say!("  line {}: skipped, {e} ({})", l.line, e.reason());
            }
            continue;
        };
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
        let refused = match &l.standing {
            Standing::Refused(e) => format!(", REFUSED: {e} ({})", e.reason()),
            _ => String::new(),
        };
        say!(
            "  line {}: {} to {}{features}{instances}, {signed}{revoked}{refused}",
            l.line,
            c.nbf.map_or_else(|| "-".to_owned(), rfc3339),
            rfc3339(c.exp)
        );
    }
    if seen.notices().next().is_some() {
        say!("notices:");
        for n in seen.notices() {
            say!("  line {}:{}", n.line, notice_words(&n.standing));
            if let Some(notice) = &n.notice {
                for text in describe_notice(notice) {
                    say!("    {text}");
                }
            }
        }
    }
}

/// The coverage the verdict holds, and where the service stands now.
fn print_coverage(seen: &Preview) {
    let verdict = &seen.verdict;
    match verdict.expires_at {
        Some(end) => {
            // From the earliest start among the licenses in force (`-`: one has none).
            let begin = if verdict.licenses.iter().any(|c| c.nbf.is_none()) {
                "-".to_owned()
            } else {
                verdict
                    .licenses
                    .iter()
                    .filter_map(|c| c.nbf)
                    .min()
                    .map_or_else(|| "-".to_owned(), rfc3339)
            };
            say!("coverage: {begin} to {} (merged)", rfc3339_at(end));
        }
        None => say!("coverage: none in force now"),
    }
    let reason = verdict
        .reason
        .as_ref()
        .map_or_else(String::new, |r| format!(" ({})", r.code()));
    match (verdict.state, verdict.grace_ends_at) {
        (LicenseState::Valid, _) => say!("now: valid"),
        (LicenseState::Grace, Some(end)) => {
            say!("now: in grace{reason} until {}", rfc3339_at(end));
        }
        (state, _) => say!("now: {}{reason}", state.as_str()),
    }
}
