//! [`Notice`], a vendor notice, its usage receipt's [`ReceiptHead`]s, and the rules
//! they are read by.

use serde_json::{Map, Value};

use super::claims::{audiences, customer, jti_list, numeric_date, optional_string};
use super::errors::LicenseError;

/// The header `typ` of a vendor notice ([`Notice`]): a token with it is never a license,
/// and a notice needs it.
pub const NOTICE_TYPE: &str = "iosetu-notice";

/// The longest a time attestation may be valid: its `exp` within 7 days of its `iat`.
pub const MAX_ATTESTATION_SECS: i64 = 7 * 86_400;

/// A vendor notice: a signed statement that travels the way licenses do (a line of the
/// license source) and is verified with the same keys, by the same rules, but is never a
/// license (its header's `typ` is [`NOTICE_TYPE`]).
///
/// It can revoke licenses (`revoke`, from its `iat` on) and attest real time (`time`,
/// valid until its `exp`, at most [`MAX_ATTESTATION_SECS`] after `iat`): see "Revoking
/// and un-bricking" in `docs/notices.md` (`crate::guide::notices`). `seq` orders one customer's notices: with a state file,
/// the highest accepted is kept and an older notice is ignored.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Notice {
    /// The customer it is for (required): a notice of another customer than the
    /// license set's is refused (what it revokes still applies where that customer has
    /// a license in the source too).
    pub customer: String,
    /// When the vendor signed it (required), seconds since the epoch: revocations apply
    /// from then on.
    pub iat: i64,
    /// The customer's notice sequence number (required, positive).
    pub seq: u64,
    /// The `jti`s it revokes.
    pub revoke: Vec<String>,
    /// The real time it attests, seconds since the epoch (requires `exp`).
    pub time: Option<i64>,
    /// Until when an attestation may be accepted.
    pub exp: Option<i64>,
    /// Issuer (checked like a license's when the verifier has one).
    pub iss: Option<String>,
    /// Audiences (checked like a license's when the verifier has one).
    pub aud: Vec<String>,
    /// The notice's own id.
    pub jti: Option<String>,
    /// A usage receipt: the journal heads the vendor accepted at a true-up (`usage verify
    /// --receipt`). The monitor notes it in its usage journal, and the next report must
    /// extend every head.
    pub receipt: Vec<ReceiptHead>,
    /// Every other claim, as it was signed.
    pub extra: Map<String, Value>,
}

/// One journal head a usage receipt accepts (see [`Notice::receipt`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptHead {
    /// The instance's public key (base64url), as its report names it.
    pub key: String,
    /// The last record's sequence number.
    pub n: u64,
    /// The last record's link (hex SHA-256).
    pub link: String,
}

/// The most heads one receipt lists.
pub const MAX_RECEIPT_HEADS: usize = 1024;

impl Notice {
    /// A notice with no revocation and no attestation (the CLI fills it in).
    pub fn new(customer: impl Into<String>, iat: i64, seq: u64) -> Self {
        Self {
            customer: customer.into(),
            iat,
            seq,
            revoke: Vec::new(),
            time: None,
            exp: None,
            iss: None,
            aud: Vec::new(),
            jti: None,
            receipt: Vec::new(),
            extra: Map::new(),
        }
    }

    /// The claims as a JSON object, as they are signed.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut map = self.extra.clone();
        map.insert("customer".into(), Value::from(self.customer.as_str()));
        map.insert("iat".into(), Value::from(self.iat));
        map.insert("seq".into(), Value::from(self.seq));
        for (name, value) in [("time", self.time), ("exp", self.exp)] {
            match value {
                Some(v) => map.insert(name.into(), Value::from(v)),
                None => map.remove(name),
            };
        }
        for (name, value) in [("iss", &self.iss), ("jti", &self.jti)] {
            match value {
                Some(v) => map.insert(name.into(), Value::from(v.as_str())),
                None => map.remove(name),
            };
        }
        for (name, list) in [("aud", &self.aud), ("revoke", &self.revoke)] {
            if list.is_empty() {
                map.remove(name);
            } else {
                map.insert(name.into(), Value::from(list.clone()));
            }
        }
        if self.receipt.is_empty() {
            map.remove("receipt");
        } else {
            map.insert(
                "receipt".into(),
                serde_json::to_value(&self.receipt).unwrap_or_default(),
            );
        }
        map
    }

    /// Reads a notice's claims by the same rules as a license's: required claims,
    /// integer dates in range, and a time attestation that is short-lived.
    pub(super) fn from_json(mut map: Map<String, Value>) -> Result<Self, LicenseError> {
        let customer = customer(&mut map)?;
        let iat = numeric_date(&mut map, "iat")?.ok_or_else(|| LicenseError::MissingClaim {
            claim: "iat".into(),
        })?;
        let seq = match map.remove("seq") {
            None => {
                return Err(LicenseError::MissingClaim {
                    claim: "seq".into(),
                });
            }
            // Bounded to what every JSON reader holds exactly.
            Some(value) => match value.as_u64() {
                Some(v) if (1..=MAX_SEQ).contains(&v) => v,
                _ => {
                    return Err(LicenseError::invalid_claim(
                        "seq",
                        "must be a positive integer (at most 2^53)",
                    ));
                }
            },
        };
        let time = numeric_date(&mut map, "time")?;
        let exp = numeric_date(&mut map, "exp")?;
        match (time, exp) {
            (None, None) => {}
            (None, Some(_)) => {
                // A revocation never lapses: an `exp` would say otherwise.
                return Err(LicenseError::invalid_claim(
                    "exp",
                    "only a time attestation (`time`) expires",
                ));
            }
            (Some(_), None) => {
                return Err(LicenseError::MissingClaim {
                    claim: "exp".into(),
                });
            }
            (Some(time), Some(exp)) => {
                if exp <= iat || exp - iat > MAX_ATTESTATION_SECS {
                    return Err(LicenseError::invalid_claim(
                        "exp",
                        "an attestation expires within 7 days of its iat",
                    ));
                }
                if time > exp || time < iat.saturating_sub(MAX_ATTESTATION_SECS) {
                    return Err(LicenseError::invalid_claim(
                        "time",
                        "must lie within 7 days before iat and exp",
                    ));
                }
            }
        }
        if map.contains_key("nbf") {
            return Err(LicenseError::invalid_claim(
                "nbf",
                "a notice applies from its iat",
            ));
        }
        let revoke = jti_list(&mut map, "revoke")?;
        let receipt = receipt_heads(&mut map)?;
        let iss = optional_string(&mut map, "iss")?;
        let jti = optional_string(&mut map, "jti")?;
        let aud = audiences(&mut map)?;
        Ok(Self {
            customer,
            iat,
            seq,
            revoke,
            time,
            exp,
            iss,
            aud,
            jti,
            receipt,
            extra: map,
        })
    }
}

/// A receipt's heads: objects of a key (32 bytes, base64url), a sequence number and a
/// link (64 lowercase hex digits), at most [`MAX_RECEIPT_HEADS`].
fn receipt_heads(map: &mut Map<String, Value>) -> Result<Vec<ReceiptHead>, LicenseError> {
    let Some(value) = map.remove("receipt") else {
        return Ok(Vec::new());
    };
    let bad = |why: &str| LicenseError::invalid_claim("receipt", why.to_owned());
    let heads: Vec<ReceiptHead> = serde_json::from_value(value)
        .map_err(|_| bad("must be an array of {key, n, link} objects"))?;
    if heads.is_empty() || heads.len() > MAX_RECEIPT_HEADS {
        return Err(bad("must list 1 to 1024 heads"));
    }
    for head in &heads {
        let key_ok =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &head.key)
                .is_ok_and(|k| k.len() == 32);
        let link_ok = head.link.len() == 64
            && head
                .link
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !key_ok || !link_ok || head.n > MAX_SEQ {
            return Err(bad(
                "each head needs a 32-byte base64url key, n and a SHA-256 link",
            ));
        }
    }
    Ok(heads)
}

/// The largest `seq` a notice may carry: 2^53, exact in every JSON reader.
const MAX_SEQ: u64 = 1 << 53;
