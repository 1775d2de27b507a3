//! [`License`], the middleware service, and [`LicenseLayer`], the layer that makes it.

use std::fmt;
use std::task::{Context, Poll};

use http::{Request, Response, Version};
use tower_layer::Layer;
use tower_service::Service;

use super::connection;
use super::drain::{Drain, OPEN, OPEN_COUNTED};
use super::future::ResponseFuture;
use super::rejection::Rejection;
use super::shared::View;
use crate::LicenseMonitor;

/// Middleware that refuses new requests once the license's grace period is over.
///
/// Built by [`LicenseLayer`]; see the [module docs](crate::layer) for an example.
///
/// Each call does one relaxed load of an atomic flag the checker publishes with every
/// verdict: no lock, no allocation, no clock read. While it admits (valid or in
/// grace), the request goes to the inner service untouched. Once grace has expired, a new
/// request is answered at once (503 with a JSON body, or gRPC UNAVAILABLE) and never reaches
/// the inner service, except on the exempt paths (none by default; see
/// [`LicenseMonitorBuilder::exempt_path`](crate::LicenseMonitorBuilder::exempt_path)).
///
/// # Readiness
///
/// `poll_ready` is the inner service's: the decision is made in `call`, where the request
/// is known. A refused request consumes readiness without calling the inner service, as
/// tower's `LoadShed` does: capacity the inner service reserved in `poll_ready` (a
/// `ConcurrencyLimit` permit, a `Buffer` slot) stays reserved for the next call, or is
/// released when the service is dropped; it is never leaked.
pub struct License<S> {
    inner: S,
    /// The monitor's drain, with the flag `call` reads: one pointer away.
    drain: &'static Drain,
    view: View,
}

impl<S> License<S> {
    /// Wraps `inner`, judging requests by `monitor`'s verdict.
    pub fn new(inner: S, monitor: &LicenseMonitor) -> Self {
        Self::from_view(inner, monitor.view())
    }

    pub(crate) fn from_view(inner: S, view: View) -> Self {
        Self {
            inner,
            drain: view.drain(),
            view,
        }
    }

    /// A [`LicenseLayer`] for `monitor`, to wrap services with.
    pub fn layer(monitor: &LicenseMonitor) -> LicenseLayer {
        LicenseLayer::new(monitor)
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for License<S>
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
        // The admitted path: one relaxed atomic load and a branch. The checker publishes the
        // flag with each verdict; a request that reads the old value a moment after a
        // change is ordered before the change, which is all a cut-off promises.
        let gate = self.drain.gate();
        if gate == OPEN {
            return admit(&mut self.inner, self.drain, request);
        }
        if gate == OPEN_COUNTED {
            // Only a monitor that keeps a usage journal opens its gate this way.
            self.count_admitted();
            return admit(&mut self.inner, self.drain, request);
        }
        self.not_admitted(request)
    }
}

impl<S> License<S> {
    /// Out of line and without the request: the request is not moved through a call.
    #[inline(never)]
    fn count_admitted(&self) {
        self.view.stats().record_admitted();
    }

    /// Out of line and given `self` whole: the admitted path then keeps no more values
    /// alive across its branch than it needs itself (each one more is a callee-saved
    /// register pushed and popped on every request).
    #[cold]
    #[inline(never)]
    fn not_admitted<ReqBody: 'static, ResBody>(
        &mut self,
        request: Request<ReqBody>,
    ) -> ResponseFuture<S::Future>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    {
        refused_or_exempt(&mut self.inner, &self.view, request)
    }
}

/// An admitted request: to the inner service, its response (and its body, and the
/// connection of an upgrade) watched by the drain.
///
/// Only the HTTP version and whether hyper put an `OnUpgrade` in the extensions are
/// looked at here (the body's type is a constant): whether an HTTP/2 response is gRPC (so
/// that a cut ends it with trailers) is read from the response's own content type when it
/// arrives. Looking at the request's headers would let a reference to the request escape,
/// and the compiler would copy the request to hand it to the inner service (43
/// instructions per request, measured); so would passing the extensions to a function
/// of their own (+34), or reading the response's status for a `101` (+26).
#[inline(always)]
pub(super) fn admit<S, ReqBody, ResBody>(
    inner: &mut S,
    drain: &'static Drain,
    mut request: Request<ReqBody>,
) -> ResponseFuture<S::Future>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: 'static,
{
    let h2 = request.version() == Version::HTTP_2;
    if connection::wants_upgrade(&request) {
        // A WebSocket or a tunnel: hyper hands the handler the connection (or, over
        // HTTP/2, a stream of it), which is cut at this drain's end.
        connection::mark_upgrade(drain, h2);
    }
    super::request_body::watch(request.body_mut(), drain);
    ResponseFuture::inner(inner.call(request), drain, h2)
}

/// A request after the cut-off: the rejection, unless its path is exempt.
#[cold]
pub(super) fn refused_or_exempt<S, ReqBody, ResBody>(
    inner: &mut S,
    view: &View,
    request: Request<ReqBody>,
) -> ResponseFuture<S::Future>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    if view.is_exempt(request.uri().path()) {
        // Exempt paths are never cut, by the drain either.
        return ResponseFuture::inner(inner.call(request), Drain::never(), false);
    }
    view.stats().record_refused();
    ResponseFuture::rejected(Rejection::for_request(request.headers()))
}

impl<S: Clone> Clone for License<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            drain: self.drain,
            view: self.view.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for License<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("License")
            .field("inner", &self.inner)
            .field("admits", &self.view.admits())
            .finish()
    }
}

/// A tower [`Layer`] that wraps services in [`License`].
///
/// Same as [`LicenseMonitor::layer`]. A layer, and every service it makes, keeps the
/// monitor's checker running: a router that holds only the layer stays enforced.
#[derive(Clone)]
#[must_use]
pub struct LicenseLayer {
    view: View,
}

impl LicenseLayer {
    /// A layer judging requests by `monitor`'s verdict (same as [`LicenseMonitor::layer`]).
    pub fn new(monitor: &LicenseMonitor) -> Self {
        Self {
            view: monitor.view(),
        }
    }
}

impl<S> Layer<S> for LicenseLayer {
    type Service = License<S>;

    fn layer(&self, inner: S) -> License<S> {
        License::from_view(inner, self.view.clone())
    }
}

impl fmt::Debug for LicenseLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LicenseLayer")
            .field("exempt_paths", &self.view.exempt_paths())
            .finish()
    }
}

impl LicenseMonitor {
    /// A tower layer enforcing this monitor's verdict: same as [`LicenseLayer::new`].
    pub fn layer(&self) -> LicenseLayer {
        LicenseLayer::new(self)
    }
}
