//! [`LicenseError`], the reasons a token is refused, and their stable codes.

use crate::clock::rfc3339;

/// Why a license was refused.
///
/// Every variant has a stable snake_case [`reason`](LicenseError::reason) code that also
/// appears in events and logs, so operators can alert on it. The token text itself never
/// appears in an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LicenseError {
    /// No license: the variable or file is absent, or holds only whitespace.
    #[error("no license found: {detail}")]
    Missing {
        /// Where it was looked for and what was found.
        detail: String,
    },
    /// The license file exists but could not be read (permissions, not a regular file…).
    #[error("license source unreadable: {detail}")]
    Unreadable {
        /// The I/O problem.
        detail: String,
    },
    /// The token or the file is over its size limit.
    #[error("license is too large: over {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// The source holds more tokens than a license set may (reason `too_large`).
    #[error("the license source holds more than {limit} tokens")]
    TooManyTokens {
        /// The cap ([`MAX_TOKENS`](super::MAX_TOKENS)).
        limit: usize,
    },
    /// A token of a license set is for another customer than the set (the first token
    /// that verified names it).
    #[error("license is for {found:?}, not for the set's customer {expected:?}")]
    CustomerMismatch {
        /// The set's customer.
        expected: String,
        /// This token's customer.
        found: String,
    },
    /// Not a well-formed compact JWS, or its JSON is not acceptable.
    #[error("license token is malformed: {detail}")]
    Malformed {
        /// What is wrong with it.
        detail: String,
    },
    /// The header names an algorithm other than `EdDSA`.
    #[error("license algorithm {alg:?} is not accepted (only EdDSA)")]
    UnsupportedAlgorithm {
        /// The algorithm the header named (shortened).
        alg: String,
    },
    /// The header carries a parameter this verifier refuses (`crit`, `zip`, `b64`).
    #[error("license header parameter {param:?} is not supported")]
    UnsupportedHeader {
        /// The refused parameter.
        param: String,
    },
    /// The header names a `kid` no configured key is registered under.
    #[error("no public key is registered under key id {kid:?}")]
    UnknownKeyId {
        /// The key id the token named (shortened).
        kid: String,
    },
    /// The signature does not verify under any candidate key.
    #[error("license signature is not valid")]
    BadSignature,
    /// A required claim is absent.
    #[error("license claim `{claim}` is missing")]
    MissingClaim {
        /// The claim's name.
        claim: String,
    },
    /// A claim has the wrong type or an out-of-range value.
    #[error("license claim `{claim}` is invalid: {detail}")]
    InvalidClaim {
        /// The claim's name.
        claim: String,
        /// What is wrong with it.
        detail: String,
    },
    /// `nbf` is still in the future.
    #[error("license is not valid before {}", rfc3339(*.not_before))]
    NotYetValid {
        /// The `nbf` claim, in seconds since the epoch.
        not_before: i64,
    },
    /// `exp` has passed.
    #[error("license expired at {}", rfc3339(*.expired_at))]
    Expired {
        /// The `exp` claim, in seconds since the epoch.
        expired_at: i64,
    },
    /// `iss` differs from the configured issuer.
    #[error("license issuer is not the expected one")]
    WrongIssuer,
    /// `aud` does not contain the configured audience.
    #[error("license audience is not the expected one")]
    WrongAudience,
    /// `iat` is later than the clock allows: the clock is behind the issuer's.
    #[error("license was issued at {}, in the future of this clock", rfc3339(*.issued_at))]
    IssuedInFuture {
        /// The `iat` claim, in seconds since the epoch.
        issued_at: i64,
    },
    /// A vendor notice where a license was expected, or the reverse (the header's `typ`
    /// says which a token is; see [`NOTICE_TYPE`](super::NOTICE_TYPE)).
    #[error("the token is not a {expected}")]
    WrongType {
        /// What was expected: `license` or `notice`.
        expected: &'static str,
    },
    /// A vendor notice revoked this license (or a newer license superseded it).
    #[error("license was revoked as of {}", rfc3339(*.revoked_at))]
    Revoked {
        /// From when, in seconds since the epoch.
        revoked_at: i64,
    },
    /// A notice whose `seq` is below the highest this service has accepted for its
    /// customer: an older notice, ignored.
    #[error("notice seq {seq} is older than the highest accepted ({highest})")]
    StaleSequence {
        /// The notice's `seq`.
        seq: u64,
        /// The highest accepted.
        highest: u64,
    },
}

impl LicenseError {
    /// The stable snake_case reason code (`missing`, `bad_signature`, …).
    pub fn reason(&self) -> &'static str {
        match self {
            LicenseError::Missing { .. } => "missing",
            LicenseError::Unreadable { .. } => "unreadable",
            LicenseError::TooLarge { .. } | LicenseError::TooManyTokens { .. } => "too_large",
            LicenseError::CustomerMismatch { .. } => "customer_mismatch",
            LicenseError::Malformed { .. } => "malformed",
            LicenseError::UnsupportedAlgorithm { .. } => "unsupported_algorithm",
            LicenseError::UnsupportedHeader { .. } => "unsupported_header",
            LicenseError::UnknownKeyId { .. } => "unknown_key_id",
            LicenseError::BadSignature => "bad_signature",
            LicenseError::MissingClaim { .. } => "missing_claim",
            LicenseError::InvalidClaim { .. } => "invalid_claim",
            LicenseError::NotYetValid { .. } => "not_yet_valid",
            LicenseError::Expired { .. } => "expired",
            LicenseError::WrongIssuer => "wrong_issuer",
            LicenseError::WrongAudience => "wrong_audience",
            LicenseError::IssuedInFuture { .. } => "issued_in_future",
            LicenseError::WrongType { .. } => "wrong_type",
            LicenseError::Revoked { .. } => "revoked",
            LicenseError::StaleSequence { .. } => "stale_seq",
        }
    }

    /// Every [`reason`](LicenseError::reason) code, for exporters that publish a series
    /// per reason from the start.
    pub const REASONS: [&'static str; 19] = [
        "missing",
        "unreadable",
        "too_large",
        "malformed",
        "unsupported_algorithm",
        "unsupported_header",
        "unknown_key_id",
        "bad_signature",
        "missing_claim",
        "invalid_claim",
        "not_yet_valid",
        "expired",
        "wrong_issuer",
        "wrong_audience",
        "issued_in_future",
        "customer_mismatch",
        "wrong_type",
        "revoked",
        "stale_seq",
    ];

    pub(super) fn malformed(detail: impl Into<String>) -> Self {
        LicenseError::Malformed {
            detail: detail.into(),
        }
    }

    pub(super) fn invalid_claim(claim: &str, detail: impl Into<String>) -> Self {
        LicenseError::InvalidClaim {
            claim: claim.to_owned(),
            detail: detail.into(),
        }
    }
}

/// Attacker-chosen text in an error is cut short and made printable.
pub(super) fn shorten(text: &str) -> String {
    let mut out: String = text.chars().take(64).flat_map(char::escape_debug).collect();
    if text.chars().count() > 64 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn reasons_lists_every_code_once() {
        let s = String::new;
        let every = [
            LicenseError::Missing { detail: s() },
            LicenseError::Unreadable { detail: s() },
            LicenseError::TooLarge { limit: 1 },
            LicenseError::Malformed { detail: s() },
            LicenseError::UnsupportedAlgorithm { alg: s() },
            LicenseError::UnsupportedHeader { param: s() },
            LicenseError::UnknownKeyId { kid: s() },
            LicenseError::BadSignature,
            LicenseError::MissingClaim { claim: s() },
            LicenseError::InvalidClaim {
                claim: s(),
                detail: s(),
            },
            LicenseError::NotYetValid { not_before: 0 },
            LicenseError::Expired { expired_at: 0 },
            LicenseError::WrongIssuer,
            LicenseError::WrongAudience,
            LicenseError::IssuedInFuture { issued_at: 0 },
            LicenseError::TooManyTokens { limit: 1 },
            LicenseError::CustomerMismatch {
                expected: s(),
                found: s(),
            },
            LicenseError::WrongType {
                expected: "license",
            },
            LicenseError::Revoked { revoked_at: 0 },
            LicenseError::StaleSequence { seq: 1, highest: 2 },
        ];
        // A new variant fails to compile here until it is listed above and in REASONS.
        for e in &every {
            match e {
                LicenseError::Missing { .. }
                | LicenseError::Unreadable { .. }
                | LicenseError::TooLarge { .. }
                | LicenseError::Malformed { .. }
                | LicenseError::UnsupportedAlgorithm { .. }
                | LicenseError::UnsupportedHeader { .. }
                | LicenseError::UnknownKeyId { .. }
                | LicenseError::BadSignature
                | LicenseError::MissingClaim { .. }
                | LicenseError::InvalidClaim { .. }
                | LicenseError::NotYetValid { .. }
                | LicenseError::Expired { .. }
                | LicenseError::WrongIssuer
                | LicenseError::WrongAudience
                | LicenseError::IssuedInFuture { .. }
                | LicenseError::TooManyTokens { .. }
                | LicenseError::CustomerMismatch { .. }
                | LicenseError::WrongType { .. }
                | LicenseError::Revoked { .. }
                | LicenseError::StaleSequence { .. } => {}
            }
        }
        let mut codes: Vec<&str> = every.iter().map(LicenseError::reason).collect();
        codes.dedup_by(|a, b| a == b);
        codes.sort_unstable();
        codes.dedup();
        let mut listed = LicenseError::REASONS.to_vec();
        listed.sort_unstable();
        assert_eq!(codes, listed);
        let unique: HashSet<&str> = LicenseError::REASONS.iter().copied().collect();
        assert_eq!(unique.len(), LicenseError::REASONS.len());
    }

    #[test]
    fn shorten_escapes_and_cuts() {
        assert_eq!(shorten("a\nb"), "a\\nb");
        assert_eq!(shorten(&"x".repeat(100)).chars().count(), 65);
    }
}
