//! Minting keys and licenses (feature `issue`, also enabled by `test-util`).
//!
//! This is the vendor's side: it signs with the private key, which never ships in the
//! service. It shares its encoding with the verifier, so what it issues is exactly what
//! [`LicenseVerifier`](crate::LicenseVerifier) accepts.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::{Map, Value};

use crate::token::{NOTICE_TYPE, Notice};
use crate::{Claims, KeyError, PublicKey};

/// An Ed25519 signing key that issues licenses.
///
/// ```
/// use iosetu_license::{Claims, LicenseSigner, LicenseVerifier};
///
/// let signer = LicenseSigner::generate()?.with_kid("2026-01");
/// let token = signer.sign(&Claims::new("Acme Corp", 4_102_444_800));
/// let claims = LicenseVerifier::new(vec![signer.public_key()]).verify(&token)?;
/// assert_eq!(claims.customer, "Acme Corp");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Needs the crate feature **`issue`** (a vendor tool, or tests; a service that only
/// verifies does not need it).
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "issue")))]
pub struct LicenseSigner {
    key: SigningKey,
    kid: Option<String>,
}

impl LicenseSigner {
    /// A new random key, from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Pem(format!("no randomness: {e}")))?;
        Ok(Self::from_seed(seed))
    }

    /// The key with this 32-byte seed (the RFC 8032 private key). Deterministic: for tests.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
            kid: None,
        }
    }

    /// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let key =
            SigningKey::from_pkcs8_pem(pem.trim()).map_err(|e| KeyError::Pem(e.to_string()))?;
        Ok(Self { key, kid: None })
    }

    /// Names the key: tokens carry this `kid`, and [`public_key`](Self::public_key) is
    /// registered under it.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// The key id, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The matching public key, under the same `kid`.
    pub fn public_key(&self) -> PublicKey {
        // A key derived from a private key is a valid, non-weak point by construction:
        // the scalar is clamped, so the point is in the prime-order subgroup.
        #[allow(clippy::expect_used)]
        let key = PublicKey::from_bytes(self.key.verifying_key().as_bytes())
            .expect("a public key derived from a signing key is valid");
        match &self.kid {
            Some(kid) => key.with_kid(kid.clone()),
            None => key,
        }
    }

    /// The public key as SPKI PEM, ready for `include_str!`.
    pub fn public_key_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap_or_default()
    }

    /// The private key as PKCS#8 PEM. Keep it secret: it issues licenses.
    pub fn private_key_pem(&self) -> Result<String, KeyError> {
        self.key
            .to_pkcs8_pem(Default::default())
            .map(|pem| pem.to_string())
            .map_err(|e| KeyError::Pem(e.to_string()))
    }

    /// Signs `claims` into a license token (header `{"alg":"EdDSA","typ":"JWT"}`, plus
    /// `kid` when the signer has one).
    pub fn sign(&self, claims: &Claims) -> String {
        self.sign_typed("JWT", claims.to_json())
    }

    /// Signs `notice` into a vendor notice token (header `{"alg":"EdDSA","typ":
    /// "iosetu-notice"}`, plus `kid` when the signer has one): a line to add to the
    /// customer's license source.
    pub fn sign_notice(&self, notice: &Notice) -> String {
        self.sign_typed(NOTICE_TYPE, notice.to_json())
    }

    fn sign_typed(&self, typ: &str, claims: Map<String, Value>) -> String {
        let mut header = Map::new();
        header.insert("alg".into(), Value::from("EdDSA"));
        header.insert("typ".into(), Value::from(typ));
        if let Some(kid) = &self.kid {
            header.insert("kid".into(), Value::from(kid.as_str()));
        }
        let header = Value::Object(header).to_string();
        let payload = Value::Object(claims).to_string();
        self.sign_raw(header.as_bytes(), payload.as_bytes())
    }

    /// Signs arbitrary header and payload bytes as a compact JWS, without checking them.
    /// Meant for tests that need hostile but correctly signed tokens.
    pub fn sign_raw(&self, header: &[u8], payload: &[u8]) -> String {
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let signature = self.key.sign(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        token
    }
}

impl fmt::Debug for LicenseSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LicenseSigner")
            .field("kid", &self.kid)
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LicenseVerifier;

    #[test]
    fn pem_round_trip() {
        let signer = LicenseSigner::from_seed([7; 32]);
        let again = LicenseSigner::from_pkcs8_pem(&signer.private_key_pem().unwrap()).unwrap();
        assert_eq!(again.public_key(), signer.public_key());
        let public = PublicKey::from_pem(&signer.public_key_pem()).unwrap();
        assert_eq!(public, signer.public_key());
    }

    #[test]
    fn issued_claims_come_back_unchanged() {
        let signer = LicenseSigner::from_seed([9; 32]).with_kid("k");
        let mut claims = Claims::new("Acme", 4_102_444_800);
        claims.iat = Some(1_700_000_000);
        claims.features = vec!["sso".into()];
        claims.aud = vec!["svc".into()];
        claims.extra.insert("tier".into(), Value::from("gold"));
        // An extra claim that shadows a named one must not produce a duplicate key.
        claims
            .extra
            .insert("customer".into(), Value::from("Mallory"));
        let token = signer.sign(&claims);
        let back = LicenseVerifier::new(vec![signer.public_key()])
            .verify(&token)
            .unwrap();
        claims.extra.remove("customer");
        assert_eq!(back, claims);
    }
}
