//! What the benches share: monitors in each state, the services to compare, and a way to
//! drive one request through a service without a runtime (every future here is ready).

#![allow(dead_code, unreachable_pub)] // each bench uses its own part; `pub` for the benches that include it

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use http::{Request, Response, StatusCode};
use iosetu_license::{Claims, LicenseMonitor, LicenseSigner, LicenseSource, Verdict};
use tower::Service;

pub type Req = Request<()>;
pub type Res = Response<()>;

#[derive(Clone, Copy, Debug)]
pub enum State {
    Valid,
    /// Valid, with a usage journal: admitted requests are counted.
    Counted,
    Grace,
    Rejecting,
}

/// A monitor in `state`, started on `runtime` (which keeps its idle checker).
pub fn monitor(runtime: &tokio::runtime::Runtime, state: State) -> LicenseMonitor {
    let signer = LicenseSigner::from_seed([77; 32]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let token = match state {
        State::Valid | State::Counted => {
            // With a feature, for the `RequireFeature` variants.
            let mut claims = Claims::new("Bench", now + 365 * 86_400);
            claims.features = vec!["sso".into()];
            signer.sign(&claims)
        }
        State::Grace | State::Rejecting => String::new(),
    };
    let mut builder = LicenseMonitor::builder()
        .public_key(signer.public_key())
        .source(LicenseSource::Static(token))
        .fail_closed(matches!(state, State::Rejecting));
    if let State::Counted = state {
        // (The journal is written hourly by a task the bench never lets run: counting
        // admitted requests is what is measured.)
        builder = builder.usage_journal(
            std::env::temp_dir().join(format!("iosetu-bench-{}.jsonl", std::process::id())),
        );
    }
    runtime.block_on(builder.start()).unwrap()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The inner service: answers at once, allocates nothing.
#[derive(Clone, Copy, Debug)]
pub struct Hello;

impl Service<Req> for Hello {
    type Response = Res;
    type Error = Infallible;
    type Future = Ready<Result<Res, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Req) -> Self::Future {
        ready(Ok(Response::new(())))
    }
}

fn refused() -> Ready<Result<Res, Infallible>> {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    ready(Ok(response))
}

/// What a reader might write instead: the verdict behind an `RwLock`.
#[derive(Clone)]
pub struct RwLockGate(pub Arc<RwLock<Arc<Verdict>>>, pub Hello);

impl Service<Req> for RwLockGate {
    type Response = Res;
    type Error = Infallible;
    type Future = Ready<Result<Res, Infallible>>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.1.poll_ready(cx)
    }
    fn call(&mut self, req: Req) -> Self::Future {
        if self.0.read().unwrap().admits() {
            self.1.call(req)
        } else {
            refused()
        }
    }
}

/// Or behind a `Mutex`.
#[derive(Clone)]
pub struct MutexGate(pub Arc<Mutex<Arc<Verdict>>>, pub Hello);

impl Service<Req> for MutexGate {
    type Response = Res;
    type Error = Infallible;
    type Future = Ready<Result<Res, Infallible>>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.1.poll_ready(cx)
    }
    fn call(&mut self, req: Req) -> Self::Future {
        if self.0.lock().unwrap().admits() {
            self.1.call(req)
        } else {
            refused()
        }
    }
}

/// Or an `ArcSwap` load per request (what this crate did before publishing a flag).
#[derive(Clone)]
pub struct ArcSwapGate(pub Arc<ArcSwap<Verdict>>, pub Hello);

impl Service<Req> for ArcSwapGate {
    type Response = Res;
    type Error = Infallible;
    type Future = Ready<Result<Res, Infallible>>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.1.poll_ready(cx)
    }
    fn call(&mut self, req: Req) -> Self::Future {
        if self.0.load().admits() {
            self.1.call(req)
        } else {
            refused()
        }
    }
}

/// Asserts `service` is ready (every service here is, at once).
#[inline]
fn assert_ready<S: Service<Req>>(service: &mut S, cx: &mut Context<'_>) {
    if !matches!(service.poll_ready(cx), Poll::Ready(Ok(()))) {
        panic!("the service is not ready");
    }
}

/// One request through `service`: readiness, call, and the (ready) future polled once.
#[inline]
pub fn one_request<S>(service: &mut S) -> S::Response
where
    S: Service<Req>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert_ready(service, &mut cx);
    let future = pin!(service.call(Request::new(())));
    match future.poll(&mut cx) {
        Poll::Ready(Ok(response)) => response,
        _ => panic!("the future is not ready"),
    }
}

/// The service's `call`, behind a function boundary the compiler keeps: a server (hyper,
/// through axum's boxed routes or tonic's router) calls the service from code of its
/// own, never inlined into where the request was built.
#[inline(never)]
pub fn call_boundary<S: Service<Req>>(service: &mut S, request: Req) -> S::Future {
    service.call(request)
}

/// The response future's `poll`, behind a kept boundary, as a server's task polls it.
#[inline(never)]
pub fn poll_boundary<F: Future>(
    future: std::pin::Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<F::Output> {
    future.poll(cx)
}

/// [`one_request`], with `call` and `poll` each behind a kept function boundary, as a
/// server calls a service.
pub fn one_request_as_served<S>(service: &mut S) -> S::Response
where
    S: Service<Req>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert_ready(service, &mut cx);
    let future = pin!(call_boundary(service, Request::new(())));
    match poll_boundary(future, &mut cx) {
        Poll::Ready(Ok(response)) => response,
        _ => panic!("the future is not ready"),
    }
}

/// The inner service of a handler that waits once (on I/O, say): its future is pending at
/// the first poll and ready at the second.
#[derive(Clone, Copy, Debug)]
pub struct PendOnce;

/// [`PendOnce`]'s future.
pub struct PendingOnce(bool);

impl Future for PendingOnce {
    type Output = Result<Res, Infallible>;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if std::mem::replace(&mut self.0, true) {
            Poll::Ready(Ok(Response::new(())))
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

impl Service<Req> for PendOnce {
    type Response = Res;
    type Error = Infallible;
    type Future = PendingOnce;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Req) -> Self::Future {
        PendingOnce(false)
    }
}

/// One request whose future is polled until ready (twice for [`PendOnce`]).
pub fn one_pending_request<S>(service: &mut S) -> S::Response
where
    S: Service<Req>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert_ready(service, &mut cx);
    let mut future = pin!(service.call(Request::new(())));
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(response)) => return response,
            Poll::Ready(Err(e)) => panic!("{e:?}"),
            Poll::Pending => {}
        }
    }
}

/// How many frames a streamed response has.
pub const FRAMES: u32 = 100;

/// A response body of [`FRAMES`] one-byte frames, all ready at once.
pub struct Frames(u32);

impl http_body::Body for Frames {
    type Data = bytes::Bytes;
    type Error = Infallible;
    #[inline]
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Infallible>>> {
        if self.0 == 0 {
            return Poll::Ready(None);
        }
        self.0 -= 1;
        Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from_static(
            b"x",
        )))))
    }
}

/// A service whose every response streams [`FRAMES`] frames.
#[derive(Clone, Copy, Debug)]
pub struct Streamer;

impl Service<Req> for Streamer {
    type Response = Response<Frames>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Frames>, Infallible>>;
    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    #[inline]
    fn call(&mut self, _req: Req) -> Self::Future {
        std::future::ready(Ok(Response::new(Frames(FRAMES))))
    }
}

/// One request through `service`, its body read to the end; returns the frames read.
#[inline]
pub fn one_streamed_request<S, B>(service: &mut S) -> u32
where
    S: Service<Req, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let response = one_request(service);
    let mut cx = Context::from_waker(Waker::noop());
    let mut body = pin!(response.into_body());
    let mut frames = 0;
    loop {
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                std::hint::black_box(frame);
                frames += 1;
            }
            Poll::Ready(None) => return frames,
            _ => panic!("the body is not ready"),
        }
    }
}

/// The floor: the least a layer with the same behaviour on ready responses can do, written
/// by hand for the benches (a gate load on `call`, a drain check when the future is
/// polled, a body that checks the drain per frame and ends with an error when cut). It
/// has no rejection body, no gRPC form, no waking of pending responses: it is the row
/// that says how far the crate's layer is from nothing.
pub mod floor {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Poll};

    use http::{Request, Response};
    use http_body::{Body, Frame};
    use pin_project_lite::pin_project;
    use tower::{Layer, Service};

    static ADMITS: AtomicBool = AtomicBool::new(true);
    static DRAINED: AtomicBool = AtomicBool::new(false);

    /// Layer of [`Floor`].
    #[derive(Clone, Copy, Debug)]
    pub struct FloorLayer;

    impl<S> Layer<S> for FloorLayer {
        type Service = Floor<S>;
        fn layer(&self, inner: S) -> Floor<S> {
            Floor(inner)
        }
    }

    /// The service.
    #[derive(Clone, Copy, Debug)]
    pub struct Floor<S>(S);

    impl<S, Q, B> Service<Request<Q>> for Floor<S>
    where
        S: Service<Request<Q>, Response = Response<B>>,
    {
        type Response = Response<FloorBody<B>>;
        type Error = S::Error;
        type Future = FloorFuture<S::Future>;
        #[inline]
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.0.poll_ready(cx)
        }
        #[inline]
        fn call(&mut self, request: Request<Q>) -> Self::Future {
            if ADMITS.load(Ordering::Relaxed) {
                FloorFuture {
                    inner: Some(self.0.call(request)),
                }
            } else {
                FloorFuture { inner: None }
            }
        }
    }

    pin_project! {
        /// The future.
        pub struct FloorFuture<F> {
            #[pin]
            inner: Option<F>,
        }
    }

    impl<F, B, E> Future for FloorFuture<F>
    where
        F: Future<Output = Result<Response<B>, E>>,
    {
        type Output = Result<Response<FloorBody<B>>, E>;
        #[inline]
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match self.project().inner.as_pin_mut() {
                Some(inner) if !DRAINED.load(Ordering::Relaxed) => inner.poll(cx).map(|r| {
                    r.map(|response| response.map(|body| FloorBody { inner: Some(body) }))
                }),
                _ => Poll::Ready(Ok(Response::new(FloorBody { inner: None }))),
            }
        }
    }

    pin_project! {
        /// The body.
        pub struct FloorBody<B> {
            #[pin]
            inner: Option<B>,
        }
    }

    /// The body's error when cut.
    #[derive(Debug)]
    pub struct Cut;
    impl std::fmt::Display for Cut {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("cut")
        }
    }
    impl std::error::Error for Cut {}

    impl<B> Body for FloorBody<B>
    where
        B: Body,
        B::Error: Into<super::BoxError>,
    {
        type Data = B::Data;
        type Error = super::BoxError;
        #[inline]
        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<B::Data>, super::BoxError>>> {
            match self.project().inner.as_pin_mut() {
                Some(_) if DRAINED.load(Ordering::Relaxed) => Poll::Ready(Some(Err(Box::new(Cut)))),
                Some(inner) => inner.poll_frame(cx).map_err(Into::into),
                None => Poll::Ready(None),
            }
        }
    }
}

/// What hyper, axum and tonic take a body's error as.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
