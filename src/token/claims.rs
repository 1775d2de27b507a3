//! [`Claims`], the claims of a license, and the rules they are read by.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{Map, Value};

use super::errors::LicenseError;
use crate::clock::unix_seconds;

/// The largest NumericDate accepted (9999-12-31T23:59:59Z), so that date arithmetic can
/// never overflow.
const MAX_NUMERIC_DATE: i64 = 253_402_300_799;

/// The largest signed grace period a license may carry (`grace_period_seconds`): 366 days.
pub const MAX_GRACE_PERIOD_SECS: u64 = 366 * 86_400;

/// How far a license's `iat` may lie ahead of the wall clock before the clock counts as
/// set back (DESIGN: "a wall clock more than 5 min before it").
pub const IAT_TOLERANCE_SECS: i64 = 300;

/// The most `jti`s one notice may revoke (or one license supersede).
pub const MAX_REVOKE: usize = 64;

/// The longest `jti` a notice may revoke (or a license supersede), in bytes.
pub const MAX_JTI_BYTES: usize = 256;

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

    pub(super) fn from_json(mut map: Map<String, Value>) -> Result<Self, LicenseError> {
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

pub(super) fn numeric_date(
    map: &mut Map<String, Value>,
    claim: &str,
) -> Result<Option<i64>, LicenseError> {
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
pub(super) fn customer(map: &mut Map<String, Value>) -> Result<String, LicenseError> {
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
pub(super) fn audiences(map: &mut Map<String, Value>) -> Result<Vec<String>, LicenseError> {
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

pub(super) fn optional_string(
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
pub(super) fn jti_list(
    map: &mut Map<String, Value>,
    claim: &str,
) -> Result<Vec<String>, LicenseError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::strict_json::strict_object;

    fn parse(text: &str) -> Result<Map<String, Value>, LicenseError> {
        strict_object("claims", text.as_bytes())
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
}
