//! The cut-off reaches every connection a request opened, tried as an attacker would, with
//! real clients over loopback, in real time (a drain period of 300 ms): a WebSocket over
//! HTTP/1.1 `Upgrade` and over HTTP/2 extended CONNECT, a gRPC bidirectional call whose
//! handler reads the client's messages in a task of its own, and a chunked upload read by
//! a task the handler spawned after answering. Each is opened while the license is valid,
//! and after the cut-off and its drain period it must carry nothing more. Served through
//! `monitor.listener(..)`, the README's safe layout; the layer alone cannot see them.
//!
//! And one the layer reaches alone: an SSE stream of a `require_feature` route across a
//! renewal that takes the feature away.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

mod common;
use common::cut::grpc;
use common::now;

use axum::Router;
use axum::extract::ws::{Message as AxumMessage, WebSocket, WebSocketUpgrade};
use axum::routing::{any, get, post};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use iosetu_license::{Claims, LicenseMonitor, LicenseSigner, LicenseSource, LicenseState};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

const DAY: i64 = 86_400;
/// The drain period: short, because this runs in real time over real sockets, and long
/// enough that what a test does within it is done on a loaded machine.
const DRAIN: Duration = Duration::from_millis(1_000);
/// Long enough after the cut-off for the drain period to be over.
const AFTER_DRAIN: Duration = Duration::from_millis(1_600);
/// How many messages an attacker tries to get through after the drain.
const ATTEMPTS: usize = 20;

fn signer() -> LicenseSigner {
    LicenseSigner::from_seed([33; 32])
}

fn write_license(path: &Path, exp: i64, features: &[&str]) {
    let mut claims = Claims::new("Acme", exp);
    claims.features = features.iter().map(|f| f.to_string()).collect();
    std::fs::write(path, signer().sign(&claims) + "\n").unwrap();
}

/// A valid license in a temporary directory, and a monitor on it.
async fn licensed(features: &[&str]) -> (tempfile::TempDir, std::path::PathBuf, LicenseMonitor) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    write_license(&path, now() + 90 * DAY, features);
    let monitor = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::File(path.clone()))
        .clock(common::SettledClock)
        .drain_period(DRAIN)
        .start()
        .await
        .unwrap();
    (dir, path, monitor)
}

/// Replaces the license with one expired ten days ago and checks: the cut-off.
async fn cut_off(path: &Path, monitor: &LicenseMonitor) {
    write_license(path, now() - 10 * DAY, &[]);
    assert_eq!(monitor.check_now().await.state, LicenseState::GraceExpired);
}

/// `app` served by `axum::serve` on 127.0.0.1, its connections through the monitor's
/// listener.
async fn serve_licensed(monitor: &LicenseMonitor, app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = monitor.listener(listener);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Echoes every message, as long as the connection carries them.
async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        if matches!(message, AxumMessage::Close(_)) || socket.send(message).await.is_err() {
            return;
        }
    }
}

fn websocket_app(monitor: &LicenseMonitor) -> Router {
    Router::new()
        .route(
            "/ws",
            any(|ws: WebSocketUpgrade| async move { ws.on_upgrade(echo) }),
        )
        .layer(monitor.layer())
        .route_service("/health", monitor.health_service())
}

/// Sends `ATTEMPTS` messages on a WebSocket and counts the echoes that come back.
async fn echoes_after_the_drain<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> usize
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut echoed = 0;
    for i in 0..ATTEMPTS {
        if ws.send(Message::text(format!("after {i}"))).await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => echoed += 1,
            // Closed, failed, or silent: nothing echoed.
            _ => break,
        }
    }
    echoed
}

async fn status(addr: SocketAddr, path: &str) -> StatusCode {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let request = Request::get(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap();
    client.request(request).await.unwrap().status()
}

#[tokio::test]
async fn a_websocket_over_http1_is_closed_at_the_end_of_the_drain() {
    // Before: the layer never saw the upgraded connection, and 20 of 20 messages were
    // echoed after the drain ended.
    let (_dir, path, monitor) = licensed(&[]).await;
    let addr = serve_licensed(&monitor, websocket_app(&monitor)).await;
    let (mut ws, response) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));

    cut_off(&path, &monitor).await;
    // During the drain period the WebSocket still works, as any admitted request does.
    ws.send(Message::text("draining")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("draining"));
    tokio::time::sleep(AFTER_DRAIN).await;
    assert_eq!(echoes_after_the_drain(&mut ws).await, 0);

    // New connections are not closed: they get the layer's answers.
    assert_eq!(
        status(addr, "/health").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(status(addr, "/ws").await, StatusCode::SERVICE_UNAVAILABLE);
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await;
    assert!(refused.is_err(), "a WebSocket opened after the cut-off");
}

#[tokio::test]
async fn a_websocket_over_http2_extended_connect_is_closed_at_the_end_of_the_drain() {
    // axum::serve enables RFC 8441 extended CONNECT: a WebSocket is a stream of an HTTP/2
    // connection. Before: 20 of 20 echoed after the drain.
    let (_dir, path, monitor) = licensed(&[]).await;
    let addr = serve_licensed(&monitor, websocket_app(&monitor)).await;
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}/ws"))
        .header("sec-websocket-version", "13")
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let mut response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let upgraded = hyper::upgrade::on(&mut response).await.unwrap();
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Client,
        None,
    )
    .await;
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));

    cut_off(&path, &monitor).await;
    tokio::time::sleep(AFTER_DRAIN).await;
    assert_eq!(echoes_after_the_drain(&mut ws).await, 0);
}

#[tokio::test]
async fn an_upload_read_by_a_detached_task_stops_at_the_end_of_the_drain() {
    // The handler answers 202 at once and reads the (endless) chunked upload in a task of
    // its own: the response the layer watches is long over. Before: 20 of 20 chunks
    // processed after the drain.
    let (_dir, path, monitor) = licensed(&[]).await;
    let processed = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&processed);
    let app = Router::new()
        .route(
            "/upload",
            post(move |body: axum::body::Body| {
                let counter = Arc::clone(&counter);
                async move {
                    tokio::spawn(async move {
                        let mut chunks = body.into_data_stream();
                        while let Some(Ok(_)) = chunks.next().await {
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                    StatusCode::ACCEPTED
                }
            }),
        )
        .layer(monitor.layer());
    let addr = serve_licensed(&monitor, app).await;

    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(connection);
    let (chunks, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let request = Request::post(format!("http://{addr}/upload"))
        .body(common::ChannelBody(rx))
        .unwrap();
    chunks.send(Bytes::from_static(b"first")).await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    wait_until(|| processed.load(Ordering::SeqCst) == 1).await;

    cut_off(&path, &monitor).await;
    tokio::time::sleep(AFTER_DRAIN).await;
    for _ in 0..ATTEMPTS {
        // (Fails once the client notices the connection is gone.)
        let _ = chunks.send(Bytes::from_static(b"more")).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        processed.load(Ordering::SeqCst),
        1,
        "chunks read after the drain"
    );
}

/// Polls `done` every 10 ms for up to 5 s.
async fn wait_until(done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not done in 5 s");
}

#[tokio::test]
async fn a_grpc_bidi_call_read_in_its_own_task_stops_receiving_at_the_end_of_the_drain() {
    // Before: the client got UNAVAILABLE, but the server kept receiving and processing
    // its messages (20 of 20 after the drain).
    let (_dir, path, monitor) = licensed(&[]).await;
    let processed = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = monitor.listener(listener).into_incoming();
    let chat = grpc::Chat {
        processed: Arc::clone(&processed),
        ..Default::default()
    };
    let server = tonic::transport::Server::builder()
        .layer(monitor.layer())
        .add_service(chat);
    tokio::spawn(async move { server.serve_with_incoming(incoming).await.unwrap() });

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.unwrap();
    let (messages, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let outbound = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|message| (message, rx))
    });
    messages.send(Bytes::from_static(b"before")).await.unwrap();
    let response = client
        .streaming(
            tonic::Request::new(outbound),
            http::uri::PathAndQuery::from_static(grpc::TALK),
            grpc::RawCodec,
        )
        .await
        .unwrap();
    let mut answers = response.into_inner();
    wait_until(|| processed.load(Ordering::SeqCst) == 1).await;

    cut_off(&path, &monitor).await;
    // The client is told, as before.
    let status = tokio::time::timeout(Duration::from_secs(10), answers.message())
        .await
        .expect("the call ends after the drain period")
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    tokio::time::sleep(AFTER_DRAIN).await;
    for _ in 0..ATTEMPTS {
        let _ = messages.send(Bytes::from_static(b"after")).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        processed.load(Ordering::SeqCst),
        1,
        "messages read after the drain"
    );
}

#[tokio::test]
async fn an_sse_stream_of_a_feature_a_renewal_takes_away_ends_after_the_drain() {
    // Before: new requests to the paid route got 403, but a stream opened before the
    // renewal delivered every paid frame afterwards. The layer alone reaches this one: a
    // plain listener.
    let (_dir, path, monitor) = licensed(&["live"]).await;
    let (route, mut streams) = common::streaming_route();
    let app = Router::new()
        .route("/live", route)
        .layer(monitor.require_feature("live"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let request = Request::get(format!("http://{addr}/live"))
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let frames = streams.recv().await.unwrap();
    frames
        .send(Bytes::from_static(b"data: 1\n\n"))
        .await
        .unwrap();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"data: 1\n\n");

    // The renewal: still valid for 90 days, without "live".
    write_license(&path, now() + 90 * DAY, &["other"]);
    let verdict = monitor.check_now().await;
    assert!(verdict.is_valid() && !verdict.has_feature("live"));
    assert_eq!(status(addr, "/live").await, StatusCode::FORBIDDEN);
    // The drain period: the open stream still carries what it was sending.
    frames
        .send(Bytes::from_static(b"data: 2\n\n"))
        .await
        .unwrap();
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&second[..], b"data: 2\n\n");

    // Then it ends, idle or not, as a failure the client cannot take for a clean end.
    tokio::time::sleep(AFTER_DRAIN).await;
    let _ = frames.try_send(Bytes::from_static(b"data: 3\n\n"));
    let end = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the stream was cut");
    assert!(matches!(end, Some(Err(_))), "{end:?}");
}

#[tokio::test]
async fn short_requests_admitted_before_the_cut_off_finish_normally_through_the_listener() {
    // The product's promise: requests in flight at the cut-off finish. The listener
    // closes nothing before the drain period ends, over HTTP/1.1 or HTTP/2.
    let (_dir, path, monitor) = licensed(&[]).await;
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                "done"
            }),
        )
        .layer(monitor.layer());
    let addr = serve_licensed(&monitor, app).await;
    let http1 = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let http2 = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<Bytes>>();
    let get = |client: &hyper_util::client::legacy::Client<_, Empty<Bytes>>| {
        let request = Request::get(format!("http://{addr}/slow"))
            .body(Empty::new())
            .unwrap();
        client.request(request)
    };
    let (one, two) = (tokio::spawn(get(&http1)), tokio::spawn(get(&http2)));
    tokio::time::sleep(Duration::from_millis(30)).await;
    cut_off(&path, &monitor).await;
    let (one, two) = (one.await.unwrap(), two.await.unwrap());
    for response in [one.unwrap(), two.unwrap()] {
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"done");
    }
    // New requests, on the same connections, are refused.
    assert_eq!(
        get(&http1).await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(&http2).await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}
