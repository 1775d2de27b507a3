//! [`RequireFeature`]: routes for licenses that include a feature.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::drain::{Drain, FeatureGate};
use super::future::ResponseFuture;
use super::rejection::{FeatureText, Rejection};
use super::service::{admit, refused_or_exempt};
use super::shared::View;
use crate::LicenseMonitor;

/// A tower [`Layer`] that lets a request through only when a license in force grants a
/// feature: the paid tier of a service whose other routes are free.
///
/// Made by [`LicenseMonitor::require_feature`]. A request is admitted when a license in
/// force (valid, or in grace after one that had the feature expired) grants the
/// feature; otherwise it gets `403 Forbidden` with
/// `{"error":"feature_not_licensed","feature":"sso","message":…}` (a gRPC request:
/// `grpc-status: 7`, PERMISSION_DENIED). After the cut-off it answers as
/// [`LicenseLayer`](super::LicenseLayer) does (503, or gRPC UNAVAILABLE), and responses
/// it admitted drain the same way. The monitor's exempt paths pass it, as they pass the
/// license layer.
///
/// The request path is one relaxed load of a flag the checker publishes with each
/// verdict, for this feature: no lock, no allocation, no string comparison.
///
/// ```
/// use axum::{Router, routing::get};
/// use iosetu_license::{LicenseMonitor, LicenseSigner, LicenseSource};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let signer = LicenseSigner::generate()?;
/// let monitor = LicenseMonitor::builder()
///     .public_key(signer.public_key())
///     .source(LicenseSource::from_env())
///     .start()
///     .await?;
/// let app: Router = Router::new()
///     // The paid tier: only with a license that includes "sso".
///     .route("/sso/login", get(|| async { "signed in" }))
///     .layer(monitor.require_feature("sso"))
///     // The free tier: no layer, served whatever the license says.
///     .route("/", get(|| async { "home" }))
///     .route_service("/health", monitor.health_service());
/// # let _ = app;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use]
pub struct RequireFeatureLayer {
    view: View,
    gate: Arc<FeatureGate>,
    text: &'static FeatureText,
}

impl RequireFeatureLayer {
    /// A layer requiring `feature` of `monitor`'s licenses in force (same as
    /// [`LicenseMonitor::require_feature`]).
    pub fn new(monitor: &LicenseMonitor, feature: &str) -> Self {
        let view = monitor.view();
        Self {
            gate: view.feature_gate(feature),
            text: FeatureText::of(feature),
            view,
        }
    }

    /// The feature this layer requires.
    pub fn feature(&self) -> &str {
        self.gate.name()
    }
}

impl<S> Layer<S> for RequireFeatureLayer {
    type Service = RequireFeature<S>;

    fn layer(&self, inner: S) -> RequireFeature<S> {
        RequireFeature {
            inner,
            drain: self.gate.drain(),
            view: self.view.clone(),
            gate: Arc::clone(&self.gate),
            text: self.text,
        }
    }
}

impl fmt::Debug for RequireFeatureLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireFeatureLayer")
            .field("feature", &self.gate.name())
            .field("licensed", &self.gate.is_on())
            .finish()
    }
}

/// Middleware that admits a request only when a license in force grants a feature; see
/// [`RequireFeatureLayer`].
///
/// Readiness is the inner service's, as for [`License`](super::License).
pub struct RequireFeature<S> {
    inner: S,
    /// The feature's drain, with the flag `call` reads (on while the feature is
    /// licensed): one pointer away.
    drain: &'static Drain,
    view: View,
    gate: Arc<FeatureGate>,
    text: &'static FeatureText,
}

impl<S> RequireFeature<S> {
    /// Wraps `inner`, admitting requests only while a license of `monitor` in force
    /// grants `feature` (the shape [`License::new`](super::License::new) has).
    pub fn new(inner: S, monitor: &LicenseMonitor, feature: &str) -> Self {
        RequireFeatureLayer::new(monitor, feature).layer(inner)
    }

    /// A [`RequireFeatureLayer`] for `monitor` and `feature`, to wrap services with.
    pub fn layer(monitor: &LicenseMonitor, feature: &str) -> RequireFeatureLayer {
        RequireFeatureLayer::new(monitor, feature)
    }

    /// The feature this service requires.
    pub fn feature(&self) -> &str {
        self.gate.name()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireFeature<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: 'static,
{
    type Response = Response<super::ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The flag is on only while the license admits and grants the feature.
        if self.drain.admits() {
            return admit(&mut self.inner, self.drain, request);
        }
        self.not_licensed(request)
    }
}

impl<S> RequireFeature<S> {
    #[cold]
    fn not_licensed<ReqBody: 'static, ResBody>(
        &mut self,
        request: Request<ReqBody>,
    ) -> ResponseFuture<S::Future>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    {
        // Exempt paths pass this layer too (a health probe is not a paid feature), and
        // after the cut-off the answer is the license layer's.
        if !self.view.admits() || self.view.is_exempt(request.uri().path()) {
            return refused_or_exempt(&mut self.inner, &self.view, request);
        }
        ResponseFuture::rejected(match Rejection::for_request(request.headers()) {
            Rejection::Grpc => Rejection::FeatureGrpc(self.text),
            _ => Rejection::FeatureHttp(self.text),
        })
    }
}

impl<S: Clone> Clone for RequireFeature<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            drain: self.drain,
            view: self.view.clone(),
            gate: Arc::clone(&self.gate),
            text: self.text,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for RequireFeature<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireFeature")
            .field("inner", &self.inner)
            .field("feature", &self.gate.name())
            .field("licensed", &self.gate.is_on())
            .finish()
    }
}

impl LicenseMonitor {
    /// A tower layer that admits a request only when a license in force grants
    /// `feature`: 403 `feature_not_licensed` otherwise, and after the cut-off what
    /// [`LicenseLayer`](super::LicenseLayer) answers. See [`RequireFeatureLayer`].
    pub fn require_feature(&self, feature: &str) -> RequireFeatureLayer {
        RequireFeatureLayer::new(self, feature)
    }
}
