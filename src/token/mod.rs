//! Decoding and verifying license tokens.
//!
//! A license is a compact JWS signed with Ed25519 (`alg: EdDSA`). Verification runs in
//! this order, and each step only looks at what the previous ones vouched for:
//!
//! 1. size cap (16 KiB) and shape: exactly three base64url parts, canonical encoding;
//! 2. header: strict JSON (no duplicate keys), `alg` exactly `EdDSA`, no `crit`, `zip`
//!    or `b64`; `jku`, `x5u`, `jwk` and `x5c` are never followed;
//! 3. key selection by `kid`, then a **strict** Ed25519 check (`verify_strict`: small-order
//!    and non-canonical signatures are refused) with `ed25519-dalek`;
//! 4. claims: strict JSON, `customer` and `exp` required, NumericDates must be integers;
//!    then the issuer and audience, when the verifier is configured with them.
//!
//! The signature is checked once. No JWT library's crypto backend is involved, so nothing
//! here installs or needs a process-global provider (an application's own jsonwebtoken
//! setup is left alone), and no RSA or NIST-curve code is linked.
//!
//! `exp` and `nbf` are never judged here against the system clock: the monitor judges them
//! against trusted time (see [`Claims::check_at`]).

mod claims;
mod errors;
mod jws;
mod notice;
mod strict_json;

pub use claims::{Claims, IAT_TOLERANCE_SECS, MAX_GRACE_PERIOD_SECS, MAX_JTI_BYTES, MAX_REVOKE};
pub use errors::LicenseError;
pub use jws::{LicenseVerifier, MAX_TOKEN_BYTES, Unverified, decode_unverified, is_notice};
pub(crate) use jws::{fingerprint, hex, trim_token};
pub use notice::{MAX_ATTESTATION_SECS, MAX_RECEIPT_HEADS, NOTICE_TYPE, Notice, ReceiptHead};

/// The most tokens one source may hold (a license set, one token per line).
pub const MAX_TOKENS: usize = 32;

/// Files larger than this are refused without being read further (a Kubernetes Secret is
/// at most 1 MiB; a license is a few hundred bytes).
pub const MAX_FILE_BYTES: usize = 64 * 1024;

/// The tokens of a license set: one per line, each trimmed, blank lines skipped, with
/// its 1-based line number. More than [`MAX_TOKENS`] is
/// [`TooManyTokens`](LicenseError::TooManyTokens) (reason `too_large`); no token at all
/// is [`Missing`](LicenseError::Missing). Each token's own size limit
/// ([`MAX_TOKEN_BYTES`]) is checked when it is verified.
pub fn tokens(text: &str) -> Result<Vec<(usize, &str)>, LicenseError> {
    let tokens: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, trim_token(line)))
        .filter(|(_, token)| !token.is_empty())
        .take(MAX_TOKENS + 1)
        .collect();
    if tokens.len() > MAX_TOKENS {
        return Err(LicenseError::TooManyTokens { limit: MAX_TOKENS });
    }
    if tokens.is_empty() {
        return Err(LicenseError::Missing {
            detail: "the license source holds no token".into(),
        });
    }
    Ok(tokens)
}

/// A source's whole text as the checker takes it: trimmed, neither empty nor over
/// [`MAX_FILE_BYTES`] (`what` names the source in the error).
pub(crate) fn source_text<'a>(text: &'a str, what: &str) -> Result<&'a str, LicenseError> {
    let token = trim_token(text);
    if token.is_empty() {
        return Err(LicenseError::Missing {
            detail: format!("{what} is empty"),
        });
    }
    if token.len() > MAX_FILE_BYTES {
        return Err(LicenseError::TooLarge {
            limit: MAX_FILE_BYTES,
        });
    }
    Ok(token)
}
