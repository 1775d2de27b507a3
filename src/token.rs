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

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::PublicKey;
use crate::clock::unix_seconds;

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The largest NumericDate accepted (9999-12-31T23:59:59Z), so that date arithmetic can
/// never overflow.
pub(crate) const MAX_NUMERIC_DATE: i64 = 253_402_300_799;

/// The largest signed grace period a license may carry (`grace_period_seconds`): 366 days.
pub const MAX_GRACE_PERIOD_SECS: u64 = 366 * 86_400;

/// The most tokens one source may hold (a license set, one token per line).
pub const MAX_TOKENS: usize = 32;

/// How far a license's `iat` may lie ahead of the wall clock before the clock counts as
/// set back (DESIGN: "a wall clock more than 5 min before it").
pub const IAT_TOLERANCE_SECS: i64 = 300;

/// The header `typ` of a vendor notice ([`Notice`]): a token with it is never a license,
/// and a notice needs it.
pub const NOTICE_TYPE: &str = "iosetu-notice";

/// The longest a time attestation may be valid: its `exp` within 7 days of its `iat`.
pub const MAX_ATTESTATION_SECS: i64 = 7 * 86_400;

/// The most `jti`s one notice may revoke (or one license supersede).
pub const MAX_REVOKE: usize = 64;

/// The longest `jti` a notice may revoke (or a license supersede), in bytes.
pub const MAX_JTI_BYTES: usize = 256;

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
        /// The cap ([`MAX_TOKENS`]).
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
    /// says which a token is; see [`NOTICE_TYPE`]).
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

    fn malformed(detail: impl Into<String>) -> Self {
        LicenseError::Malformed {
            detail: detail.into(),
        }
    }

    fn invalid_claim(claim: &str, detail: impl Into<String>) -> Self {
        LicenseError::InvalidClaim {
            claim: claim.to_owned(),
            detail: detail.into(),
        }
    }
}

/// The claims of a verified license.
///
/// Only a token whose signature verified ever becomes `Claims`: a refused token's claims
/// are never exposed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Claims {
    /// Who the license is for (claim `customer`, required, non-empty).
    pub customer: String,
    /// Expiry, seconds since the Unix epoch (claim `exp`, required).
    pub exp: i64,
    /// Issued-at, seconds since the epoch. Acts as a floor under trusted time.
    pub iat: Option<i64>,
    /// Not-before, seconds since the epoch.
    pub nbf: Option<i64>,
    /// Issuer.
    pub iss: Option<String>,
    /// Audiences (a single string in the token becomes one entry; empty when absent).
    pub aud: Vec<String>,
    /// Token id, safe to log.
    pub jti: Option<String>,
    /// Feature flags the license grants (claim `features`; empty when absent).
    pub features: Vec<String>,
    /// Numeric limits the license grants (claim `limits`, an object of name to
    /// non-negative integer, e.g. `{"seats": 25}`; empty when absent).
    pub limits: BTreeMap<String, u64>,
    /// The vendor's grace period for this license, in seconds (claim
    /// `grace_period_seconds`, 0 to 366 days): it overrides the builder's default when
    /// this license's expiry starts grace (a trial gets 0).
    pub grace_period_seconds: Option<u64>,
    /// How many replicas may serve at once (claim `max_instances`, a positive integer;
    /// `None`: no limit). Counted across a fleet with Kubernetes Leases when the
    /// monitor is built with `instance_slots` (feature `kubernetes`).
    pub max_instances: Option<u64>,
    /// The `jti`s of the licenses this one replaces (claim `supersedes`): they count as
    /// revoked from when this license starts (its `nbf`, else its `iat`), as if a vendor
    /// notice had revoked them.
    pub supersedes: Vec<String>,
    /// Set by the monitor, never read from the token: from when a vendor notice (or a
    /// superseding license) revoked this license, in seconds since the epoch. From then
    /// on it counts as expired (reason `revoked`, its own grace applies).
    pub revoked_at: Option<i64>,
    /// Every other claim, as it was signed.
    pub extra: Map<String, Value>,
}

impl Claims {
    /// A minimal set of claims; the other fields start empty.
    pub fn new(customer: impl Into<String>, exp: i64) -> Self {
        Self {
            customer: customer.into(),
            exp,
            iat: None,
            nbf: None,
            iss: None,
            aud: Vec::new(),
            jti: None,
            features: Vec::new(),
            limits: BTreeMap::new(),
            grace_period_seconds: None,
            max_instances: None,
            supersedes: Vec::new(),
            revoked_at: None,
            extra: Map::new(),
        }
    }

    /// Where the license's window ends: its `exp`, or earlier where it was revoked
    /// ([`revoked_at`](Claims::revoked_at)).
    pub fn ends(&self) -> i64 {
        self.revoked_at.map_or(self.exp, |at| at.min(self.exp))
    }

    /// Whether a revocation, not `exp`, ends the license's window.
    pub fn revoked(&self) -> bool {
        self.revoked_at.is_some_and(|at| at < self.exp)
    }

    /// `exp` as a [`SystemTime`].
    pub fn expires_at(&self) -> SystemTime {
        crate::clock::from_unix_seconds(self.exp)
    }

    /// Whether the license grants `feature`.
    pub fn has_feature(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    /// The license's limit `name`, if it sets one.
    pub fn limit(&self, name: &str) -> Option<u64> {
        self.limits.get(name).copied()
    }

    /// Judges the time claims at `now`: `exp` passed, `nbf` still ahead (a license comes
    /// into force at its exact `nbf` second), or `iat` more than [`IAT_TOLERANCE_SECS`]
    /// ahead.
    ///
    /// The monitor does not call this with the system clock but with trusted time; it is
    /// public for tools (a `verify` command) that judge a token at one instant.
    pub fn check_at(&self, now: SystemTime) -> Result<(), LicenseError> {
        let now = unix_seconds(now);
        if let Some(iat) = self.iat
            && iat > now.saturating_add(IAT_TOLERANCE_SECS)
        {
            return Err(LicenseError::IssuedInFuture { issued_at: iat });
        }
        if let Some(nbf) = self.nbf
            && nbf > now
        {
            return Err(LicenseError::NotYetValid { not_before: nbf });
        }
        if let Some(revoked_at) = self.revoked_at.filter(|at| now >= *at && *at < self.exp) {
            return Err(LicenseError::Revoked { revoked_at });
        }
        if now >= self.exp {
            return Err(LicenseError::Expired {
                expired_at: self.exp,
            });
        }
        Ok(())
    }

    /// The claims as a JSON object, as they are signed. The named fields win over an
    /// `extra` entry of the same name, so the object never holds a key twice.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut map = self.extra.clone();
        map.insert("customer".into(), Value::from(self.customer.as_str()));
        map.insert("exp".into(), Value::from(self.exp));
        let optional = [("iat", self.iat), ("nbf", self.nbf)];
        for (name, value) in optional {
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
        for (name, list) in [
            ("aud", &self.aud),
            ("features", &self.features),
            ("supersedes", &self.supersedes),
        ] {
            if list.is_empty() {
                map.remove(name);
            } else {
                map.insert(name.into(), Value::from(list.clone()));
            }
        }
        if self.limits.is_empty() {
            map.remove("limits");
        } else {
            let limits: Map<String, Value> = self
                .limits
                .iter()
                .map(|(name, value)| (name.clone(), Value::from(*value)))
                .collect();
            map.insert("limits".into(), Value::Object(limits));
        }
        match self.grace_period_seconds {
            Some(v) => map.insert("grace_period_seconds".into(), Value::from(v)),
            None => map.remove("grace_period_seconds"),
        };
        match self.max_instances {
            Some(v) => map.insert("max_instances".into(), Value::from(v)),
            None => map.remove("max_instances"),
        };
        map
    }

    fn from_json(mut map: Map<String, Value>) -> Result<Self, LicenseError> {
        let customer = customer(&mut map)?;
        let exp = numeric_date(&mut map, "exp")?.ok_or_else(|| LicenseError::MissingClaim {
            claim: "exp".into(),
        })?;
        let iat = numeric_date(&mut map, "iat")?;
        let nbf = numeric_date(&mut map, "nbf")?;
        if nbf.is_some_and(|nbf| nbf >= exp) {
            // Its window would be empty: a license that can never be in force.
            return Err(LicenseError::invalid_claim("nbf", "must be before exp"));
        }
        let iss = optional_string(&mut map, "iss")?;
        let jti = optional_string(&mut map, "jti")?;
        let aud = audiences(&mut map)?;
        let features = match map.remove("features") {
            None => Vec::new(),
            Some(Value::Array(items)) => string_list("features", items)?,
            Some(_) => {
                return Err(LicenseError::invalid_claim(
                    "features",
                    "must be an array of strings",
                ));
            }
        };
        let limits = match map.remove("limits") {
            None => BTreeMap::new(),
            Some(Value::Object(entries)) => entries
                .into_iter()
                .map(|(name, value)| match value.as_u64() {
                    Some(v) if !name.is_empty() => Ok((name, v)),
                    _ => Err(LicenseError::invalid_claim(
                        "limits",
                        "must map names to non-negative integers",
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(LicenseError::invalid_claim(
                    "limits",
                    "must be an object of name to non-negative integer",
                ));
            }
        };
        let grace_period_seconds = match map.remove("grace_period_seconds") {
            None => None,
            Some(value) => match value.as_u64() {
                Some(v) if v <= MAX_GRACE_PERIOD_SECS => Some(v),
                _ => {
                    return Err(LicenseError::invalid_claim(
                        "grace_period_seconds",
                        "must be an integer number of seconds from 0 to 366 days",
                    ));
                }
            },
        };
        let max_instances = match map.remove("max_instances") {
            None => None,
            Some(value) => match value.as_u64() {
                // Counted in `u32` slot indices; no vendor sells four billion replicas.
                Some(v) if v >= 1 && v <= u64::from(u32::MAX) => Some(v),
                _ => {
                    return Err(LicenseError::invalid_claim(
                        "max_instances",
                        "must be a positive integer",
                    ));
                }
            },
        };
        let supersedes = jti_list(&mut map, "supersedes")?;
        Ok(Self {
            customer,
            exp,
            iat,
            nbf,
            iss,
            aud,
            jti,
            features,
            limits,
            grace_period_seconds,
            max_instances,
            supersedes,
            revoked_at: None,
            extra: map,
        })
    }
}

fn numeric_date(map: &mut Map<String, Value>, claim: &str) -> Result<Option<i64>, LicenseError> {
    match map.remove(claim) {
        None => Ok(None),
        // An integer NumericDate only: a string, float, bool or null `exp` counting as
        // "absent" is how CVE-2026-25537 let expired tokens through.
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if (0..=MAX_NUMERIC_DATE).contains(&v) => Ok(Some(v)),
            Some(_) => Err(LicenseError::invalid_claim(
                claim,
                "out of range (0 to year 9999)",
            )),
            None => Err(LicenseError::invalid_claim(
                claim,
                "must be an integer number of seconds",
            )),
        },
        Some(_) => Err(LicenseError::invalid_claim(
            claim,
            "must be an integer number of seconds",
        )),
    }
}

/// The required `customer`: a non-empty string.
fn customer(map: &mut Map<String, Value>) -> Result<String, LicenseError> {
    match map.remove("customer") {
        None | Some(Value::Null) => Err(LicenseError::MissingClaim {
            claim: "customer".into(),
        }),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(LicenseError::invalid_claim(
            "customer",
            "must be a non-empty string",
        )),
    }
}

/// `aud`: a string or an array of strings (empty when absent).
fn audiences(map: &mut Map<String, Value>) -> Result<Vec<String>, LicenseError> {
    match map.remove("aud") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) => string_list("aud", items),
        Some(_) => Err(LicenseError::invalid_claim(
            "aud",
            "must be a string or an array of strings",
        )),
    }
}

fn optional_string(
    map: &mut Map<String, Value>,
    claim: &str,
) -> Result<Option<String>, LicenseError> {
    match map.remove(claim) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(LicenseError::invalid_claim(claim, "must be a string")),
    }
}

fn string_list(claim: &str, items: Vec<Value>) -> Result<Vec<String>, LicenseError> {
    items
        .into_iter()
        .map(|v| match v {
            Value::String(s) => Ok(s),
            _ => Err(LicenseError::invalid_claim(
                claim,
                "must contain only strings",
            )),
        })
        .collect()
}

/// A list of `jti`s (`revoke` in a notice, `supersedes` in a license): non-empty strings
/// of at most [`MAX_JTI_BYTES`], at most [`MAX_REVOKE`] of them.
fn jti_list(map: &mut Map<String, Value>, claim: &str) -> Result<Vec<String>, LicenseError> {
    let items = match map.remove(claim) {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(LicenseError::invalid_claim(
                claim,
                "must be an array of jti strings",
            ));
        }
    };
    if items.len() > MAX_REVOKE {
        return Err(LicenseError::invalid_claim(
            claim,
            format!("at most {MAX_REVOKE} entries"),
        ));
    }
    let list = string_list(claim, items)?;
    if list
        .iter()
        .any(|jti| jti.is_empty() || jti.len() > MAX_JTI_BYTES)
    {
        return Err(LicenseError::invalid_claim(
            claim,
            format!("each jti must be 1 to {MAX_JTI_BYTES} bytes"),
        ));
    }
    Ok(list)
}

/// A vendor notice: a signed statement that travels the way licenses do (a line of the
/// license source) and is verified with the same keys, by the same rules, but is never a
/// license (its header's `typ` is [`NOTICE_TYPE`]).
///
/// It can revoke licenses (`revoke`, from its `iat` on) and attest real time (`time`,
/// valid until its `exp`, at most [`MAX_ATTESTATION_SECS`] after `iat`): see "Revoking
/// and un-bricking" in the README. `seq` orders one customer's notices: with a state file,
/// the highest accepted is kept and an older notice is ignored.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Notice {
    /// The customer it is for (required): a notice of another customer than the
    /// license set's is refused.
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
    pub(crate) fn from_json(mut map: Map<String, Value>) -> Result<Self, LicenseError> {
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

fn strict_object(part: &str, bytes: &[u8]) -> Result<Map<String, Value>, LicenseError> {
    let value: StrictValue = serde_json::from_slice(bytes)
        .map_err(|e| LicenseError::malformed(format!("the {part} is not acceptable JSON: {e}")))?;
    match value.0 {
        Value::Object(map) => Ok(map),
        _ => Err(LicenseError::malformed(format!(
            "the {part} is not a JSON object"
        ))),
    }
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

/// Attacker-chosen text in an error is cut short and made printable.
fn shorten(text: &str) -> String {
    let mut out: String = text.chars().take(64).flat_map(char::escape_debug).collect();
    if text.chars().count() > 64 {
        out.push('…');
    }
    out
}

/// A short, stable, non-reversible identifier of a token for logs (the token itself is
/// never logged): the first 8 bytes of its SHA-256, in hex.
pub(crate) fn fingerprint(token: &str) -> String {
    hex(&Sha256::digest(trim_token(token).as_bytes())[..8])
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) use crate::clock::rfc3339;

/// A JSON value parsed with duplicate object keys refused at every depth. serde_json keeps
/// the last duplicate silently, which lets `{"tier":"basic","tier":"enterprise"}` mean
/// different things to different parsers (RFC 7515 §5.2).
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        let mut seen = HashSet::new();
        while let Some(key) = access.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key `{}`",
                    shorten(&key)
                )));
            }
            let StrictValue(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Map<String, Value>, LicenseError> {
        strict_object("claims", text.as_bytes())
    }

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
    fn strict_json_refuses_duplicates_at_any_depth() {
        assert!(parse(r#"{"a":1,"b":{"c":[1,{"d":2}]}}"#).is_ok());
        for dup in [
            r#"{"exp":1,"exp":2}"#,
            r#"{"tier":"basic","tier":"enterprise"}"#,
            r#"{"a":{"b":1,"b":1}}"#,
            r#"{"a":[{"b":1,"b":2}]}"#,
        ] {
            let err = parse(dup).unwrap_err();
            assert_eq!(err.reason(), "malformed", "{dup}");
            assert!(err.to_string().contains("duplicate key"), "{err}");
        }
    }

    #[test]
    fn strict_json_refuses_non_objects_and_trailing_garbage() {
        for bad in [
            "[]",
            "1",
            "\"x\"",
            "null",
            "{} x",
            "{",
            "{\"a\":\"\\ud800\"}",
        ] {
            assert_eq!(parse(bad).unwrap_err().reason(), "malformed", "{bad}");
        }
    }

    #[test]
    fn strict_json_limits_nesting() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let text = format!(r#"{{"a":{deep}}}"#);
        assert_eq!(parse(&text).unwrap_err().reason(), "malformed");
    }

    #[test]
    fn max_instances_is_a_positive_integer() {
        let claims = |v: &str| {
            Claims::from_json(
                parse(&format!(
                    r#"{{"customer":"a","exp":4102444800,"max_instances":{v}}}"#
                ))
                .unwrap(),
            )
        };
        assert_eq!(claims("3").unwrap().max_instances, Some(3));
        assert_eq!(
            claims("4294967295").unwrap().max_instances,
            Some(u64::from(u32::MAX))
        );
        for bad in [
            "0",
            "-1",
            "2.5",
            "\"3\"",
            "null",
            "true",
            "4294967296",
            "[3]",
        ] {
            let err = claims(bad).unwrap_err();
            assert_eq!(err.reason(), "invalid_claim", "{bad}");
            assert!(err.to_string().contains("max_instances"), "{err}");
        }
        let mut c = Claims::new("a", 4_102_444_800);
        c.max_instances = Some(7);
        assert_eq!(Claims::from_json(c.to_json()).unwrap(), c);
    }

    #[test]
    fn trims_whitespace_and_bom() {
        assert_eq!(trim_token("\u{feff}abc\r\n"), "abc");
        assert_eq!(trim_token(" \t\u{feff}abc \n"), "abc");
        assert_eq!(trim_token("\n\n"), "");
    }

    #[test]
    fn numeric_dates_are_integers_in_range() {
        let claims = |exp: &str| {
            Claims::from_json(parse(&format!(r#"{{"customer":"a","exp":{exp}}}"#)).unwrap())
        };
        assert_eq!(claims("4102444800").unwrap().exp, 4_102_444_800);
        for bad in [
            "\"4102444800\"",
            "-1",
            "true",
            "4102444800.9",
            "1e300",
            "18446744073709551616",
            "[1]",
            "253402300800",
        ] {
            assert_eq!(claims(bad).unwrap_err().reason(), "invalid_claim", "{bad}");
        }
        assert_eq!(claims("null").unwrap_err().reason(), "invalid_claim");
        let missing = Claims::from_json(parse(r#"{"customer":"a"}"#).unwrap()).unwrap_err();
        assert_eq!(
            missing,
            LicenseError::MissingClaim {
                claim: "exp".into()
            }
        );
    }

    #[test]
    fn customer_is_required_and_non_empty() {
        let c = |t: &str| Claims::from_json(parse(t).unwrap());
        assert_eq!(c(r#"{"exp":1}"#).unwrap_err().reason(), "missing_claim");
        assert_eq!(
            c(r#"{"exp":1,"customer":"  "}"#).unwrap_err().reason(),
            "invalid_claim"
        );
        assert_eq!(
            c(r#"{"exp":1,"customer":7}"#).unwrap_err().reason(),
            "invalid_claim"
        );
    }

    #[test]
    fn other_claims_are_kept() {
        let c = Claims::from_json(
            parse(r#"{"customer":"a","exp":9,"aud":"x","features":["sso"],"tier":"gold"}"#)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(c.aud, vec!["x".to_string()]);
        assert!(c.has_feature("sso"));
        assert_eq!(c.extra.get("tier"), Some(&Value::from("gold")));
    }

    #[test]
    fn check_at_judges_time_claims() {
        let mut c = Claims::new("a", 1000);
        let at = crate::clock::from_unix_seconds;
        assert!(c.check_at(at(999)).is_ok());
        assert_eq!(
            c.check_at(at(1000)),
            Err(LicenseError::Expired { expired_at: 1000 })
        );
        // In force from the exact `nbf` second.
        c.nbf = Some(600);
        assert!(c.check_at(at(600)).is_ok());
        assert_eq!(c.check_at(at(599)).unwrap_err().reason(), "not_yet_valid");
        c.iat = Some(900);
        assert_eq!(
            c.check_at(at(599)).unwrap_err().reason(),
            "issued_in_future"
        );
        c.iat = None;
        assert!(c.check_at(at(600)).is_ok());
    }

    #[test]
    fn shorten_escapes_and_cuts() {
        assert_eq!(shorten("a\nb"), "a\\nb");
        assert_eq!(shorten(&"x".repeat(100)).chars().count(), 65);
    }
}
