//! Ed25519 public keys the vendor compiles into the service.

use std::fmt;

use ed25519_dalek::VerifyingKey;
use ed25519_dalek::pkcs8::DecodePublicKey;

/// An Ed25519 public key that license signatures are checked against.
///
/// Keys are meant to be compiled in (`include_str!("license.pub.pem")`), never read at
/// runtime: whoever can change the key can issue their own licenses.
///
/// Every key is checked when it is built: it must be a 32-byte point that decodes on the
/// curve and is not of small order (a "weak" key, for which forged signatures exist). So
/// no key that reaches the verifier can make it panic or accept a forgery.
///
/// ```
/// use iosetu_license::PublicKey;
///
/// let pem = "-----BEGIN PUBLIC KEY-----\n\
///            MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n\
///            -----END PUBLIC KEY-----\n";
/// let key = PublicKey::from_pem(pem)?.with_kid("2026-01");
/// assert_eq!(key.kid(), Some("2026-01"));
/// # Ok::<(), iosetu_license::KeyError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    kid: Option<String>,
}

/// Why a public key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not an SPKI PEM (`-----BEGIN PUBLIC KEY-----`) holding an Ed25519 key.
    #[error("not an Ed25519 public key in SPKI PEM form: {0}")]
    Pem(String),
    /// The raw key is not exactly 32 bytes.
    #[error("an Ed25519 public key is 32 bytes, got {0}")]
    Length(usize),
    /// The bytes do not decode to a point on the curve, or not canonically.
    #[error("the bytes are not a canonical Ed25519 point")]
    NotOnCurve,
    /// The key is of small order: signatures could be forged for it.
    #[error("the key is a weak (small-order) Ed25519 point and would accept forgeries")]
    Weak,
}

impl KeyError {
    /// A stable snake_case code for logs and alerts.
    pub fn reason(&self) -> &'static str {
        match self {
            KeyError::Pem(_) => "bad_pem",
            KeyError::Length(_) => "bad_length",
            KeyError::NotOnCurve => "not_on_curve",
            KeyError::Weak => "weak_key",
        }
    }
}

impl PublicKey {
    /// Parses an Ed25519 public key in SPKI PEM form (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|e| KeyError::Pem(e.to_string()))?;
        Self::from_bytes(key.as_bytes())
    }

    /// Builds a key from its raw 32 bytes (the JWK `x` value, decoded).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let array: &[u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::Length(bytes.len()))?;
        let key = VerifyingKey::from_bytes(array).map_err(|_| KeyError::NotOnCurve)?;
        // Decompression reduces y modulo p; a key spelled with y >= p is a second spelling
        // of another key, which no honest key generator produces.
        if key.to_edwards().compress().to_bytes() != *array {
            return Err(KeyError::NotOnCurve);
        }
        if key.is_weak() {
            return Err(KeyError::Weak);
        }
        Ok(Self { key, kid: None })
    }

    /// Registers the key under a key id: a token whose header names this `kid` is checked
    /// against this key only.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// The key id this key is registered under, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The raw 32-byte key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Checks an Ed25519 `signature` over `message` strictly (RFC 8032 §5.1.7 with
    /// `verify_strict`: a non-canonical S, a small-order R or a wrong length is refused).
    /// This is the check every license token goes through.
    pub fn verify_signature(&self, message: &[u8], signature: &[u8]) -> bool {
        match ed25519_dalek::Signature::from_slice(signature) {
            Ok(signature) => self.key.verify_strict(message, &signature).is_ok(),
            Err(_) => false,
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("key", &crate::token::hex(&self.key.to_bytes()[..8]))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC8037_PEM: &str = "-----BEGIN PUBLIC KEY-----\n\
        MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n\
        -----END PUBLIC KEY-----\n";

    #[test]
    fn parses_rfc8037_key() {
        let key = PublicKey::from_pem(RFC8037_PEM).unwrap();
        assert_eq!(key.to_bytes()[0], 0xd7);
        assert_eq!(key.kid(), None);
    }

    #[test]
    fn refuses_wrong_lengths_without_panicking() {
        for len in [0usize, 1, 31, 33, 64] {
            assert_eq!(
                PublicKey::from_bytes(&vec![7u8; len]),
                Err(KeyError::Length(len))
            );
        }
    }

    #[test]
    fn refuses_weak_identity_key() {
        // The identity point (catalog E3): every "signature" with R = identity, S = 0
        // would verify under a non-strict verifier.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(PublicKey::from_bytes(&identity), Err(KeyError::Weak));
    }

    #[test]
    fn refuses_garbage_pem() {
        let err = PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
            .unwrap_err();
        assert_eq!(err.reason(), "bad_pem");
        assert_eq!(PublicKey::from_pem("").unwrap_err().reason(), "bad_pem");
    }

    #[test]
    fn debug_does_not_print_whole_key() {
        let key = PublicKey::from_pem(RFC8037_PEM).unwrap().with_kid("k1");
        let text = format!("{key:?}");
        assert!(text.contains("k1") && text.contains("d75a9801"));
    }
}
