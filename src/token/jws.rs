//! Compact JWS: splitting and decoding a token, checking its header, selecting the key
//! and verifying the signature ([`LicenseVerifier`]), and the helpers that name a token
//! in logs.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::claims::Claims;
use super::errors::{LicenseError, shorten};
use super::notice::{NOTICE_TYPE, Notice};
use super::strict_json::strict_object;
use crate::PublicKey;

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Whether `token`'s header says it is a vendor notice (`typ` is [`NOTICE_TYPE`]). Only a
/// hint for routing a line: verification checks it again, under the signature.
pub fn is_notice(token: &str) -> bool {
    let Ok((_, [header, _, _])) = split(token) else {
        return false;
    };
    b64("header", header)
        .and_then(|bytes| strict_object("header", &bytes))
        .is_ok_and(|h| names_notice(&h))
}

/// Whether a header's `typ` is [`NOTICE_TYPE`].
fn names_notice(header: &Map<String, Value>) -> bool {
    header.get("typ").and_then(Value::as_str) == Some(NOTICE_TYPE)
}

/// A token that passed every check, with what the monitor needs to know about it.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    pub(crate) claims: Claims,
}

/// Verifies license tokens against a fixed set of public keys.
///
/// This is what the monitor runs at every check; it is public so that tools (a vendor's
/// CLI, a support script) judge a token exactly as the service will.
///
/// ```
/// # use iosetu_license::{LicenseVerifier, PublicKey};
/// # let pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----";
/// let verifier = LicenseVerifier::new(vec![PublicKey::from_pem(pem)?]);
/// let err = verifier.verify("not-a-token").unwrap_err();
/// assert_eq!(err.reason(), "malformed");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct LicenseVerifier {
    keys: Vec<PublicKey>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl LicenseVerifier {
    /// A verifier that accepts tokens signed by any of `keys`.
    pub fn new(keys: Vec<PublicKey>) -> Self {
        Self {
            keys,
            issuer: None,
            audience: None,
        }
    }

    /// Requires `iss` to equal `issuer`; a token without `iss` is then refused.
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Requires `aud` to contain `audience`; a token without `aud` is then refused.
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// The configured keys.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Verifies `token` (surrounding whitespace and a UTF-8 BOM are trimmed) and returns
    /// its claims. Time claims are not judged here: see [`Claims::check_at`].
    pub fn verify(&self, token: &str) -> Result<Claims, LicenseError> {
        self.verify_token(token).map(|v| v.claims)
    }

    pub(crate) fn verify_token(&self, token: &str) -> Result<Verified, LicenseError> {
        let (notice, claims) = self.verify_signed(token)?;
        if notice {
            return Err(LicenseError::WrongType {
                expected: "license",
            });
        }
        let claims = Claims::from_json(claims)?;
        self.check_issuer_audience(claims.iss.as_deref(), &claims.aud)?;
        Ok(Verified { claims })
    }

    /// Verifies a vendor notice (header `typ` [`NOTICE_TYPE`]) with the keys, issuer
    /// and audience of licenses, and returns it. A license is never a notice.
    pub fn verify_notice(&self, token: &str) -> Result<Notice, LicenseError> {
        let (notice, claims) = self.verify_signed(token)?;
        if !notice {
            return Err(LicenseError::WrongType { expected: "notice" });
        }
        let notice = Notice::from_json(claims)?;
        self.check_issuer_audience(notice.iss.as_deref(), &notice.aud)?;
        Ok(notice)
    }

    /// The checks every signed token gets: shape, header, key, signature, strict JSON.
    /// Returns whether it is a notice, and its claims (not yet read).
    fn verify_signed(&self, token: &str) -> Result<(bool, Map<String, Value>), LicenseError> {
        let (token, [header_b64, payload_b64, signature_b64]) = split(token)?;
        // The header first: an `alg: none` token is refused as such, whatever follows.
        let header = strict_object("header", &b64("header", header_b64)?)?;
        let kid = check_header(&header)?;
        let notice = match header.get("typ") {
            None => false,
            Some(Value::String(typ)) => typ == NOTICE_TYPE,
            Some(_) => {
                return Err(LicenseError::malformed(
                    "the header's `typ` is not a string",
                ));
            }
        };
        let candidates = self.candidates(kid.as_deref())?;
        let payload_bytes = b64("payload", payload_b64)?;
        let signature_bytes = b64("signature", signature_b64)?;

        if signature_bytes.len() != 64 {
            return Err(LicenseError::malformed("an Ed25519 signature is 64 bytes"));
        }
        // The signing input is the ASCII of the first two parts as they were sent.
        let signing_input = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
        // The one signature check: strict, by ed25519-dalek.
        if !candidates
            .iter()
            .any(|k| k.verify_signature(signing_input, &signature_bytes))
        {
            return Err(LicenseError::BadSignature);
        }
        Ok((notice, strict_object("claims", &payload_bytes)?))
    }

    fn candidates(&self, kid: Option<&str>) -> Result<Vec<&PublicKey>, LicenseError> {
        let Some(kid) = kid else {
            return Ok(self.keys.iter().collect());
        };
        let named: Vec<&PublicKey> = self.keys.iter().filter(|k| k.kid() == Some(kid)).collect();
        if !named.is_empty() {
            return Ok(named);
        }
        // A key registered without a kid vouches for any token: the signature still has
        // to verify, so the kid is only a hint and never widens what is accepted.
        let anonymous: Vec<&PublicKey> = self.keys.iter().filter(|k| k.kid().is_none()).collect();
        if anonymous.is_empty() {
            return Err(LicenseError::UnknownKeyId { kid: shorten(kid) });
        }
        Ok(anonymous)
    }

    /// The issuer and audience the verifier was configured with, checked against claims
    /// that are already verified.
    fn check_issuer_audience(&self, iss: Option<&str>, aud: &[String]) -> Result<(), LicenseError> {
        if let Some(expected) = &self.issuer {
            match iss {
                None => {
                    return Err(LicenseError::MissingClaim {
                        claim: "iss".into(),
                    });
                }
                Some(iss) if iss == expected.as_str() => {}
                Some(_) => return Err(LicenseError::WrongIssuer),
            }
        }
        if let Some(expected) = &self.audience {
            if aud.is_empty() {
                return Err(LicenseError::MissingClaim {
                    claim: "aud".into(),
                });
            }
            if !aud.iter().any(|aud| aud == expected) {
                return Err(LicenseError::WrongAudience);
            }
        }
        Ok(())
    }
}

/// Trims a token and splits it into its three parts, refusing what is empty, too large or
/// not three parts.
fn split(token: &str) -> Result<(&str, [&str; 3]), LicenseError> {
    let token = trim_token(token);
    if token.is_empty() {
        return Err(LicenseError::Missing {
            detail: "the license is empty".into(),
        });
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(LicenseError::TooLarge {
            limit: MAX_TOKEN_BYTES,
        });
    }
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(payload), Some(signature), None) => {
            Ok((token, [header, payload, signature]))
        }
        _ => Err(LicenseError::malformed(
            "a license is three base64url parts joined by '.'",
        )),
    }
}

/// A token's header and claims, decoded but **not verified**: for support tools that
/// must show what a token says before (or without) trusting it. Never base a decision
/// on it; [`LicenseVerifier::verify`] is the only way to trust a token.
#[derive(Debug, Clone, PartialEq)]
pub struct Unverified {
    /// The protected header, as sent.
    pub header: Map<String, Value>,
    /// The claims, as sent.
    pub claims: Map<String, Value>,
}

impl Unverified {
    /// The claims read by the verifier's rules (types, ranges, required claims), still
    /// **unverified**: for tools that preview what a token would do (a timeline).
    pub fn parse_claims(&self) -> Result<Claims, LicenseError> {
        Claims::from_json(self.claims.clone())
    }

    /// Whether the header says the token is a vendor notice (see [`NOTICE_TYPE`]).
    pub fn is_notice(&self) -> bool {
        names_notice(&self.header)
    }

    /// The claims read as a vendor notice by the verifier's rules, still **unverified**.
    pub fn parse_notice(&self) -> Result<Notice, LicenseError> {
        Notice::from_json(self.claims.clone())
    }
}

/// Decodes a token without checking its signature (same shape, size and JSON rules as
/// verification: one spelling, no duplicate keys). See [`Unverified`].
pub fn decode_unverified(token: &str) -> Result<Unverified, LicenseError> {
    let (_, [header, payload, _signature]) = split(token)?;
    Ok(Unverified {
        header: strict_object("header", &b64("header", header)?)?,
        claims: strict_object("claims", &b64("payload", payload)?)?,
    })
}

/// Trims ASCII whitespace and a leading UTF-8 BOM, as secret files and env values carry
/// them (a trailing newline is the norm for `kubectl create secret --from-file`).
pub(crate) fn trim_token(text: &str) -> &str {
    let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.trim_matches(|c: char| c.is_ascii_whitespace())
}

fn b64(part: &str, text: &str) -> Result<Vec<u8>, LicenseError> {
    if text.is_empty() {
        return Err(LicenseError::malformed(format!("the {part} part is empty")));
    }
    // The no-pad engine refuses '=', '+', '/', whitespace and non-zero trailing bits, so
    // each token has exactly one spelling.
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| LicenseError::malformed(format!("the {part} part is not canonical base64url")))
}
/// Checks the protected header and returns its `kid`.
fn check_header(header: &Map<String, Value>) -> Result<Option<String>, LicenseError> {
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "EdDSA" => {}
        Some(Value::String(alg)) => {
            return Err(LicenseError::UnsupportedAlgorithm { alg: shorten(alg) });
        }
        Some(other) => {
            return Err(LicenseError::UnsupportedAlgorithm {
                alg: shorten(&other.to_string()),
            });
        }
        None => return Err(LicenseError::malformed("the header has no `alg`")),
    }
    // `crit` would oblige us to understand extensions we do not; `zip` is JWE-only and
    // would mean inflating attacker data; `b64: false` changes what is signed.
    for param in ["crit", "zip", "b64"] {
        if header.contains_key(param) {
            return Err(LicenseError::UnsupportedHeader {
                param: param.into(),
            });
        }
    }
    match header.get("kid") {
        None => Ok(None),
        Some(Value::String(kid)) => Ok(Some(kid.clone())),
        Some(_) => Err(LicenseError::malformed(
            "the header's `kid` is not a string",
        )),
    }
}

/// A short, stable, non-reversible identifier of a token for logs (the token itself is
/// never logged): the first 8 bytes of its SHA-256, in hex.
pub(crate) fn fingerprint(token: &str) -> String {
    hex(&Sha256::digest(trim_token(token).as_bytes())[..8])
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_whitespace_and_bom() {
        assert_eq!(trim_token("\u{feff}abc\r\n"), "abc");
        assert_eq!(trim_token(" \t\u{feff}abc \n"), "abc");
        assert_eq!(trim_token("\n\n"), "");
    }
}
