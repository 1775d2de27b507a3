//! The `/health` answer.

use http::StatusCode;
use serde::Serialize;

use crate::verdict::{LicenseState, Verdict};

/// The health body the product text specifies:
/// `{"status":"healthy|degraded|unhealthy","license":{"valid":bool,"grace_mode":bool}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Overall status.
    pub status: HealthStatus,
    /// The license part.
    pub license: LicenseHealth,
}

/// `healthy`, `degraded` or `unhealthy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum HealthStatus {
    /// A valid license is in force.
    Healthy,
    /// In grace: requests are still served.
    Degraded,
    /// Grace is over: requests get 503.
    Unhealthy,
}

/// The `license` object of the health body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LicenseHealth {
    /// Whether a valid license is in force.
    pub valid: bool,
    /// Whether the service is in grace (also after grace expired, as the product text shows).
    pub grace_mode: bool,
}

impl Health {
    /// The health that `verdict` implies.
    pub fn from_verdict(verdict: &Verdict) -> Self {
        let (status, valid, grace_mode) = match verdict.state {
            LicenseState::Valid => (HealthStatus::Healthy, true, false),
            LicenseState::Grace => (HealthStatus::Degraded, false, true),
            LicenseState::GraceExpired => (HealthStatus::Unhealthy, false, true),
        };
        Self {
            status,
            license: LicenseHealth { valid, grace_mode },
        }
    }

    /// 200 for healthy and degraded, 503 for unhealthy.
    pub fn http_status(&self) -> StatusCode {
        match self.status {
            HealthStatus::Healthy | HealthStatus::Degraded => StatusCode::OK,
            HealthStatus::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The JSON body, exactly as the product text shows it (compact).
    pub fn to_json(&self) -> String {
        // Three fixed shapes; no serializer needed at request time.
        let status = match self.status {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        };
        format!(
            r#"{{"status":"{status}","license":{{"valid":{},"grace_mode":{}}}}}"#,
            self.license.valid, self.license.grace_mode
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(status: HealthStatus, valid: bool, grace_mode: bool) -> Health {
        Health {
            status,
            license: LicenseHealth { valid, grace_mode },
        }
    }

    #[test]
    fn bodies_and_codes_match_the_product_text() {
        let h = health(HealthStatus::Healthy, true, false);
        assert_eq!(
            h.to_json(),
            r#"{"status":"healthy","license":{"valid":true,"grace_mode":false}}"#
        );
        assert_eq!(h.http_status(), StatusCode::OK);
        let d = health(HealthStatus::Degraded, false, true);
        assert_eq!(
            d.to_json(),
            r#"{"status":"degraded","license":{"valid":false,"grace_mode":true}}"#
        );
        assert_eq!(d.http_status(), StatusCode::OK);
        let u = health(HealthStatus::Unhealthy, false, true);
        assert_eq!(
            u.to_json(),
            r#"{"status":"unhealthy","license":{"valid":false,"grace_mode":true}}"#
        );
        assert_eq!(u.http_status(), StatusCode::SERVICE_UNAVAILABLE);
        // serde agrees with the hand-written form.
        for h in [h, d, u] {
            assert_eq!(serde_json::to_string(&h).unwrap(), h.to_json());
        }
    }
}
