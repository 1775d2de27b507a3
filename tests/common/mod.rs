//! Helpers the integration tests share: a fixed start instant, a signer, a monitor on a
//! test clock, and event collection. Each test binary uses a part of it.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body::{Body, Frame};

use iosetu_license::{
    Clock, LicenseEvent, LicenseMonitor, LicenseMonitorBuilder, LicenseSigner, LicenseSource,
    SystemClock, TestClock,
};
use tokio::sync::broadcast;

pub mod adversary;
pub mod cut;
#[cfg(feature = "kubernetes")]
pub mod kube_api;
pub mod notices;
pub mod usage_child;

/// The tests' "now" at start: 2027-01-15T08:00:00Z.
pub const T0: i64 = 1_800_000_000;
pub const MINUTE: i64 = 60;
pub const HOUR: i64 = 3_600;
pub const DAY: i64 = 86_400;

/// `secs` seconds since the epoch (before it when negative).
pub fn at(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

pub fn t0() -> SystemTime {
    at(T0)
}

/// Whole seconds since the epoch (negative before it).
pub fn secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

pub fn signer() -> LicenseSigner {
    LicenseSigner::from_seed([5; 32])
}

/// A builder for `source`, judged on `clock`, trusting [`signer`]'s key.
pub fn builder(clock: &TestClock, source: LicenseSource) -> LicenseMonitorBuilder {
    LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(source)
        .clock(clock.clone())
}

/// Starts `builder`, with a receiver that also holds the first check's events.
pub async fn start(
    builder: LicenseMonitorBuilder,
) -> (LicenseMonitor, broadcast::Receiver<LicenseEvent>) {
    let rx = builder.subscribe();
    (builder.start().await.expect("start"), rx)
}

/// Every event received so far (the newest, where more came than the channel holds).
pub fn drain(rx: &mut broadcast::Receiver<LicenseEvent>) -> Vec<LicenseEvent> {
    std::iter::from_fn(|| {
        loop {
            match rx.try_recv() {
                Ok(event) => return Some(event),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    })
    .collect()
}

pub fn names(events: &[LicenseEvent]) -> Vec<&'static str> {
    events.iter().map(LicenseEvent::name).collect()
}

/// The first event named `name`; panics with every event otherwise.
pub fn find<'a>(events: &'a [LicenseEvent], name: &str) -> &'a LicenseEvent {
    events
        .iter()
        .find(|e| e.name() == name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", names(events)))
}

/// The system clock's Unix seconds, for tests in real time.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The system's clocks, never [provisional](Clock::provisional): for tests in real time
/// whose outcome must not depend on how long ago the machine booted (in its first 15
/// minutes `SystemClock` holds a cut-off as grace).
#[derive(Debug, Clone, Copy)]
pub struct SettledClock;

impl Clock for SettledClock {
    fn wall(&self) -> SystemTime {
        SystemClock.wall()
    }
    fn monotonic(&self) -> Duration {
        SystemClock.monotonic()
    }
}

/// Lets paused time run for `secs` seconds, waking every timer due on the way (the
/// checker's included) in order, as real time would.
pub async fn run_for(secs: i64) {
    tokio::time::sleep(Duration::from_secs(secs as u64)).await;
}

/// A response body whose frames a test sends one at a time: an SSE stream, a gRPC
/// stream or a slow download, as far as the layer can tell.
pub struct ChannelBody(pub tokio::sync::mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|d| d.map(|d| Ok(Frame::data(d))))
    }
}

/// An axum GET route whose every response streams a [`ChannelBody`] (an SSE stream, as
/// far as the layer can tell), and the receiver of each response's sender.
pub fn streaming_route() -> (
    axum::routing::MethodRouter,
    tokio::sync::mpsc::UnboundedReceiver<tokio::sync::mpsc::Sender<Bytes>>,
) {
    let (senders, streams) = tokio::sync::mpsc::unbounded_channel();
    let route = axum::routing::get(move || {
        let senders = senders.clone();
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
            // (The test may have stopped listening: the stream is then never fed.)
            let _ = senders.send(tx);
            axum::body::Body::new(ChannelBody(rx))
        }
    });
    (route, streams)
}

/// Asserts `headers` carry gRPC status `code` with a message that mentions `about`.
pub fn assert_grpc_status(headers: &http::HeaderMap, code: &str, about: &str) {
    assert_eq!(headers["grpc-status"], code, "{headers:?}");
    let message = headers["grpc-message"].to_str().unwrap();
    assert!(message.contains(about), "{message}");
}

/// Serves `GET /api/hello` behind `monitor`'s license layer on 127.0.0.1 (a real axum
/// server on its own task); returns its address.
pub async fn serve_hello(monitor: &LicenseMonitor) -> std::net::SocketAddr {
    let app = axum::Router::new()
        .route("/api/hello", axum::routing::get(|| async { "hello" }))
        .layer(monitor.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The status of `GET /api/hello` from [`serve_hello`]'s server, by a real client.
pub async fn status_of_hello(addr: std::net::SocketAddr) -> http::StatusCode {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client = Client::builder(TokioExecutor::new()).build_http::<http_body_util::Empty<Bytes>>();
    let request = http::Request::get(format!("http://{addr}/api/hello"))
        .body(http_body_util::Empty::new())
        .unwrap();
    client.request(request).await.unwrap().status()
}
