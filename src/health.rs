//! The `/health` answer.

use std::convert::Infallible;
use std::fmt;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use tower_service::Service;

use crate::LicenseMonitor;
use crate::answer::fixed_response;
use crate::layer::shared::View;
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

/// A tower service that answers every request with the monitor's [`Health`]: the JSON
/// body, 200 (healthy, degraded) or 503 (unhealthy), `content-type: application/json` and
/// `cache-control: no-store`.
///
/// Mount it with axum's `route_service("/health", monitor.health_service())`, or call it
/// bare. Point a Kubernetes *readiness* probe at it, not a liveness probe: a liveness
/// probe failing on the 503 would restart every pod into the same state.
#[derive(Clone)]
pub struct HealthService {
    view: View,
}

impl HealthService {
    /// A health service for `monitor`.
    pub fn new(monitor: &LicenseMonitor) -> Self {
        Self {
            view: monitor.view(),
        }
    }

    fn respond(&self) -> Response<Full<Bytes>> {
        let health = Health::from_verdict(&self.view.verdict());
        fixed_response(
            health.http_status(),
            "application/json",
            Bytes::from(health.to_json()),
        )
    }
}

impl LicenseMonitor {
    /// The current health, as `/health` reports it.
    pub fn health(&self) -> Health {
        Health::from_verdict(&self.view().verdict())
    }

    /// A tower service answering `/health`: same as [`HealthService::new`].
    pub fn health_service(&self) -> HealthService {
        HealthService::new(self)
    }
}

impl<B> Service<Request<B>> for HealthService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<B>) -> Self::Future {
        ready(Ok(self.respond()))
    }
}

impl fmt::Debug for HealthService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthService")
            .field("health", &Health::from_verdict(&self.view.verdict()))
            .finish()
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
