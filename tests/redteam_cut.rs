//! A review of "the cut reaches what the license protects, and nothing else": real clients
//! over loopback, in real time (a drain period of 1 s), each test a way the rule could
//! fail that `tests/cut_scope.rs` does not draw. Found by it and fixed: a gate behind an
//! async middleware with a frame pipelined after the handshake (its connection went
//! unmarked), an HTTP/2 connection whose preface a PROXY line hid, another monitor's
//! HTTP/2 client reset, a connection served outside a task, a drain's list of connections
//! growing with every upgrade request.

#![allow(unsafe_code)] // the counting allocator of `repeated_upgrade_requests_...`

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::cut::{
    AFTER_DRAIN, ATTEMPTS, DRAIN, FEATURE, H2WebSocket, Licensed, NO_ECHO, PATIENCE,
    WELL_AFTER_DRAIN, echo, echoes, fetch_with, licensed, pooled_client, serve_axum, status,
    websocket_h1, websocket_h2, websocket_h2_over, write_license,
};

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::routing::{any, get, post};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use iosetu_license::{LicenseMonitor, LicensedIo, LicensedListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

// ---------------------------------------------------------------------------------------
// A counting allocator: the bytes this thread holds (allocated minus freed), so that a
// current-thread runtime's test sees the growth of what its own server keeps.
// ---------------------------------------------------------------------------------------

struct Counting;

thread_local! {
    static HELD: Cell<i64> = const { Cell::new(0) };
}

fn held_add(delta: i64) {
    let _ = HELD.try_with(|c| c.set(c.get() + delta));
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counter is a
// const-initialised thread local, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        held_add(layout.size() as i64);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        held_add(-(layout.size() as i64));
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        held_add(new_size as i64 - layout.size() as i64);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn held() -> i64 {
    HELD.with(Cell::get)
}

// ---------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------

/// A WebSocket echo at `/ws` behind `require_feature(FEATURE)`, and a free `/` beside it.
fn paid_ws_and_free_root(monitor: &LicenseMonitor) -> Router {
    Router::new()
        .route(
            "/ws",
            any(|ws: WebSocketUpgrade| async move { ws.on_upgrade(echo) }),
        )
        .layer(monitor.require_feature(FEATURE))
        .route("/", get(|| async { "free" }))
}

/// Gives the feature back: a renewal valid for 90 days with FEATURE.
async fn give_feature_back(licensed: &Licensed) -> Instant {
    write_license(&licensed.path, common::now() + 90 * common::DAY, &[FEATURE]);
    let verdict = licensed.monitor.check_now().await;
    assert!(verdict.has_feature(FEATURE), "{verdict:?}");
    Instant::now()
}

/// A masked WebSocket text frame (client to server), payload under 126 bytes.
fn client_text_frame(text: &str) -> Vec<u8> {
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut frame = vec![0x81, 0x80 | text.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads an HTTP/1.1 response head off `tcp` byte by byte (nothing after it is consumed).
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = timeout(PATIENCE, tcp.read(&mut byte))
            .await
            .expect("a response head in time")
            .unwrap();
        assert_eq!(n, 1, "connection closed in the head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// An HTTP/1.1 connection of hyper's client to `addr`.
async fn h1_connection(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(connection);
    sender
}

/// `GET addr{path}` (with `headers`) on `sender`: the status and body, or the error.
async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, Bytes), String> {
    let exchange = async {
        sender
            .ready()
            .await
            .map_err(|e| format!("not ready: {e:?}"))?;
        let mut request = Request::get(format!("http://{addr}{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = sender
            .send_request(request.body(Empty::new()).unwrap())
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{e:?}"))?
            .to_bytes();
        Ok((status, body))
    };
    timeout(PATIENCE, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer in {PATIENCE:?}")))
}

// =======================================================================================
// Findings: tests expected to FAIL while the behaviour is wrong.
// =======================================================================================

/// Every admitted request with an `Upgrade` header pushes its connection into the drain's
/// list again (`Drain::register` drops only dead entries, never duplicates), so one
/// keep-alive connection repeating such requests grows the list without bound while the
/// license is valid (8 bytes a request, kept until a drain ends: maybe never).
#[tokio::test]
async fn repeated_upgrade_requests_on_one_connection_keep_what_the_drain_holds_bounded() {
    let licensed = licensed(&[]).await;
    let app = Router::new()
        .route("/paid", get(|| async { "paid" }))
        .layer(licensed.monitor.layer());
    let addr = serve_axum(&licensed.monitor, app).await;
    let mut sender = h1_connection(addr).await;
    let upgrade = [("connection", "upgrade"), ("upgrade", "foo")];
    async fn run(
        sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
        addr: SocketAddr,
        headers: &[(&str, &str)],
        n: usize,
    ) {
        for _ in 0..n {
            let (status, _) = get_on(sender, addr, "/paid", headers).await.unwrap();
            assert_eq!(status, StatusCode::OK);
        }
    }
    // Warm-up, then the same number of requests without and with the header.
    run(&mut sender, addr, &[], 2_000).await;
    run(&mut sender, addr, &upgrade, 2_000).await;
    const MORE: usize = 30_000;
    let mut grown = [0i64; 2];
    for (i, headers) in [&[][..], &upgrade[..]].into_iter().enumerate() {
        sleep(Duration::from_millis(50)).await;
        let before = held();
        run(&mut sender, addr, headers, MORE).await;
        sleep(Duration::from_millis(50)).await;
        grown[i] = held() - before;
    }
    assert!(
        grown[1] < 64 * 1024,
        "bytes more held after {MORE} more admitted requests on the same connection: \
         {} without an Upgrade header, {} with one ({} bytes a request)",
        grown[0],
        grown[1],
        grown[1] / MORE as i64
    );
}

/// An attacker's WebSocket escapes the mark: an async middleware before the gate (an
/// auth check that awaits, `axum::middleware::from_fn`) makes the gate's `call` run in a
/// later poll of the connection's task; the client pipelines its first WebSocket frame
/// with the handshake, so hyper's read buffer is not empty and that poll reads nothing
/// (`mid_message_detect_eof`), and the thread-local note was meanwhile overwritten by
/// another connection (here: the attacker's own request on a second connection). The
/// gate finds no connection for its task and, on HTTP/1.1, marks nothing: the paid
/// WebSocket outlives its feature for good.
#[tokio::test]
async fn a_paid_websocket_behind_an_async_middleware_with_a_pipelined_frame_is_still_cut() {
    let licensed = licensed(&[FEATURE]).await;
    let app = paid_ws_and_free_root(&licensed.monitor).layer(axum::middleware::from_fn(
        |request: axum::extract::Request, next: axum::middleware::Next| async move {
            // An auth lookup that takes a moment.
            sleep(Duration::from_millis(200)).await;
            next.run(request).await
        },
    ));
    let addr = serve_axum(&licensed.monitor, app).await;

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .into_bytes();
    handshake.extend(client_text_frame("early"));
    tcp.write_all(&handshake).await.unwrap();
    // While the middleware waits: a request on another connection.
    sleep(Duration::from_millis(50)).await;
    assert_eq!(status(Method::GET, addr, "/").await, StatusCode::OK);

    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut ws = WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
    // The control: the same handshake through the same middleware, nothing pipelined.
    let mut control = websocket_h1(addr, "/ws").await;
    assert_eq!(echoes(&mut control, "before", 1, PATIENCE).await, 1);
    let early = timeout(PATIENCE, ws.next()).await.expect("the early echo");
    assert!(
        matches!(&early, Some(Ok(Message::Text(t))) if t.as_str() == "early"),
        "{early:?}"
    );
    assert_eq!(echoes(&mut ws, "before", 1, PATIENCE).await, 1);

    let renewed = licensed.remove_feature().await;
    sleep_until(renewed + AFTER_DRAIN).await;
    let echoed = (
        echoes(&mut control, "after", ATTEMPTS, NO_ECHO).await,
        echoes(&mut ws, "after", ATTEMPTS, NO_ECHO).await,
    );
    assert_eq!(
        echoed,
        (0, 0),
        "messages of {ATTEMPTS} echoed after the feature's drain: (the control, the \
         WebSocket whose first frame came with its handshake)"
    );
}

/// A listener that reads a PROXY protocol v1 line (as behind a load balancer) off each
/// connection `monitor.listener(tcp)` accepts, before axum serves it: the first bytes the
/// `LicensedIo` reads are not the HTTP/2 preface (the same with TLS over the
/// `LicensedIo`).
struct ProxyProtocol(LicensedListener<TcpListener>);

impl axum::serve::Listener for ProxyProtocol {
    type Io = LicensedIo<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((mut io, addr)) = self.0.accept().await else {
                continue;
            };
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while !line.ends_with(b"\r\n") {
                match io.read(&mut byte).await {
                    Ok(1) => line.push(byte[0]),
                    _ => break,
                }
            }
            if line.starts_with(b"PROXY ") {
                return (io, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.get_ref().local_addr()
    }
}

/// [`websocket_h2`], with a PROXY line before the HTTP/2 preface.
async fn websocket_h2_behind_proxy(
    addr: SocketAddr,
    path: &str,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    H2WebSocket,
) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 443\r\n")
        .await
        .unwrap();
    websocket_h2_over(tcp, addr, path).await
}

/// HTTP/2 connections are told by sniffing the preface off the first bytes the
/// `LicensedIo` reads; anything the server reads itself first (a PROXY protocol line from
/// a load balancer, a TLS handshake when TLS is layered over `monitor.listener(tcp)`)
/// hides it. An axum route's gate on an HTTP/2 WebSocket then has no connection to mark:
/// the paid WebSocket is never cut.
#[tokio::test]
async fn a_paid_http2_websocket_is_cut_when_the_server_reads_a_proxy_line_first() {
    let licensed = licensed(&[FEATURE]).await;
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = ProxyProtocol(licensed.monitor.listener(tcp));
    let app = paid_ws_and_free_root(&licensed.monitor);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (_sender, mut ws) = websocket_h2_behind_proxy(addr, "/ws").await;
    assert_eq!(echoes(&mut ws, "before", 1, PATIENCE).await, 1);

    let renewed = licensed.remove_feature().await;
    sleep_until(renewed + AFTER_DRAIN).await;
    let echoed = echoes(&mut ws, "after", ATTEMPTS, NO_ECHO).await;
    assert_eq!(
        echoed, 0,
        "{echoed} of {ATTEMPTS} messages echoed after the feature's drain"
    );
}

/// The list of HTTP/2 connections an axum route's gate marks is one for the whole
/// process: a paid HTTP/2 WebSocket of product A marks (and A's feature drain resets) a
/// pooled HTTP/2 client of another monitor's server, whose license is valid and never
/// changed. That connection never carried anything a gate of A admitted.
#[tokio::test]
async fn another_monitors_http2_client_is_not_reset_by_a_paid_http2_websocket() {
    let product_a = licensed(&[FEATURE]).await;
    let product_b = licensed(&[]).await;
    let addr_b = serve_axum(
        &product_b.monitor,
        Router::new().route("/", get(|| async { "b" })),
    )
    .await;
    let client_b = pooled_client(true);
    let first = fetch_with(&client_b, Method::GET, addr_b, "/").await;
    assert!(matches!(first, Ok((StatusCode::OK, _))), "{first:?}");

    let addr_a = serve_axum(
        &product_a.monitor,
        paid_ws_and_free_root(&product_a.monitor),
    )
    .await;
    let (_sender, mut ws) = websocket_h2(addr_a, "/ws").await;
    assert_eq!(echoes(&mut ws, "before", 1, PATIENCE).await, 1);

    let renewed = product_a.remove_feature().await;
    sleep_until(renewed + WELL_AFTER_DRAIN).await;
    let after = fetch_with(&client_b, Method::GET, addr_b, "/").await;
    assert!(
        matches!(after, Ok((StatusCode::OK, _))),
        "product B's pooled HTTP/2 client, after product A's feature drain: {after:?}"
    );
}

/// A connection served outside a tokio task (in `block_on`: a `#[tokio::main]` or test
/// body serving a connection inline) has no task id: `enter` notes nothing and the gate
/// falls back to the HTTP/2 list, which marks nothing on HTTP/1.1. The paid WebSocket
/// survives the cut-off.
#[tokio::test]
async fn a_paid_websocket_on_a_connection_served_outside_a_task_is_cut() {
    let licensed = Arc::new(licensed(&[]).await);
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = licensed.monitor.listener(tcp);
    let app = Router::new()
        .route(
            "/ws",
            any(|ws: WebSocketUpgrade| async move { ws.on_upgrade(echo) }),
        )
        .layer(licensed.monitor.layer());

    let on_client = Arc::clone(&licensed);
    let client = tokio::spawn(async move {
        let mut ws = websocket_h1(addr, "/ws").await;
        let before = echoes(&mut ws, "before", 1, PATIENCE).await;
        let cut = on_client.cut_off().await;
        sleep_until(cut + AFTER_DRAIN).await;
        let after = echoes(&mut ws, "after", ATTEMPTS, NO_ECHO).await;
        (before, after)
    });
    // The connection, served right here (not spawned): in `block_on`, not in a task.
    assert!(
        tokio::task::try_id().is_none(),
        "the test body is not a task"
    );
    let (io, _) = listener.accept().await.unwrap();
    let service = hyper_util::service::TowerToHyperService::new(app);
    let serve = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let (_, result) = tokio::join!(serve, async {
        timeout(Duration::from_secs(15), client).await
    });
    let (before, after) = result.expect("the client in time").unwrap();
    assert_eq!(before, 1);
    assert_eq!(
        after, 0,
        "{after} of {ATTEMPTS} messages echoed after the drain"
    );
}

/// A renewal that gives the feature back within the drain period cuts nothing; the same
/// WebSocket is cut when the feature is taken away again and that drain ends. (HTTP/1.1
/// only: an HTTP/2 WebSocket here passes alone, but in this file's process another
/// test's HTTP/2 WebSocket marks it and that test's drain cuts it; see
/// `a_second_features_drain_does_not_cut_the_first_features_http2_websocket`.)
#[tokio::test]
async fn a_feature_given_back_within_the_drain_cuts_nothing_and_a_later_removal_does() {
    let licensed = licensed(&[FEATURE]).await;
    let addr = serve_axum(&licensed.monitor, paid_ws_and_free_root(&licensed.monitor)).await;
    let mut h1 = websocket_h1(addr, "/ws").await;

    let removed = licensed.remove_feature().await;
    sleep(Duration::from_millis(300)).await;
    give_feature_back(&licensed).await;
    sleep_until(removed + WELL_AFTER_DRAIN).await;
    let kept = echoes(&mut h1, "kept", 5, PATIENCE).await;
    assert_eq!(kept, 5, "echoes after a drain that a renewal stopped");

    let removed = licensed.remove_feature().await;
    sleep_until(removed + AFTER_DRAIN).await;
    let after = echoes(&mut h1, "after", ATTEMPTS, NO_ECHO).await;
    assert_eq!(after, 0, "echoes after the second removal's drain");
}

/// After a feature's drain ended (its WebSocket cut), the feature comes back: a new
/// WebSocket works, through what would have been the drain's end, and is cut when the
/// feature is removed again.
#[tokio::test]
async fn a_websocket_opened_after_the_feature_came_back_is_cut_by_the_next_removal_only() {
    let licensed = licensed(&[FEATURE]).await;
    let addr = serve_axum(&licensed.monitor, paid_ws_and_free_root(&licensed.monitor)).await;
    let mut first = websocket_h1(addr, "/ws").await;
    let removed = licensed.remove_feature().await;
    sleep_until(removed + AFTER_DRAIN).await;
    assert_eq!(echoes(&mut first, "after", 3, NO_ECHO).await, 0);

    let back = give_feature_back(&licensed).await;
    let mut second = websocket_h1(addr, "/ws").await;
    sleep_until(back + WELL_AFTER_DRAIN).await;
    assert_eq!(echoes(&mut second, "back", 5, PATIENCE).await, 5);

    let removed = licensed.remove_feature().await;
    sleep_until(removed + AFTER_DRAIN).await;
    let after = echoes(&mut second, "after", ATTEMPTS, NO_ECHO).await;
    assert_eq!(after, 0, "{after} echoes after the second removal's drain");
}

/// Two gates stacked (the license layer outside, `require_feature` inside): the feature's
/// removal cuts the paid WebSockets (HTTP/1.1 and HTTP/2) at its drain and answers an
/// unanswered request with the feature's 403, not the license's 503; a free request on a
/// keep-alive connection beside them goes on.
#[tokio::test]
async fn stacked_gates_the_features_drain_cuts_with_the_features_refusal() {
    let licensed = licensed(&[FEATURE]).await;
    let app = Router::new()
        .route(
            "/ws",
            any(|ws: WebSocketUpgrade| async move { ws.on_upgrade(echo) }),
        )
        .route(
            "/slow",
            get(|| async {
                sleep(Duration::from_secs(3)).await;
                "slow"
            }),
        )
        .layer(licensed.monitor.require_feature(FEATURE))
        .layer(licensed.monitor.layer())
        .route("/", get(|| async { "free" }));
    let addr = serve_axum(&licensed.monitor, app).await;
    let mut h1 = websocket_h1(addr, "/ws").await;
    let (_sender, mut h2) = websocket_h2(addr, "/ws").await;
    let mut free = h1_connection(addr).await;
    assert_eq!(
        get_on(&mut free, addr, "/", &[]).await.unwrap().0,
        StatusCode::OK
    );
    let slow = tokio::spawn(async move { status(Method::GET, addr, "/slow").await });
    sleep(Duration::from_millis(200)).await;

    let removed = licensed.remove_feature().await;
    assert_eq!(
        timeout(PATIENCE, slow).await.unwrap().unwrap(),
        StatusCode::FORBIDDEN
    );
    sleep_until(removed + WELL_AFTER_DRAIN).await;
    let after = (
        echoes(&mut h1, "after", ATTEMPTS, NO_ECHO).await,
        echoes(&mut h2, "after", ATTEMPTS, NO_ECHO).await,
    );
    let free_after = get_on(&mut free, addr, "/", &[]).await;
    assert!(
        after == (0, 0) && matches!(free_after, Ok((StatusCode::OK, _))),
        "echoes after the drain {after:?}; the free keep-alive request: {free_after:?}"
    );
}

/// On a multi-thread runtime, with handlers that wait before they answer 101 and other
/// connections busy meanwhile: every paid HTTP/1.1 WebSocket is cut, and free ones on the
/// same server are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_paid_websockets_with_slow_handlers_are_cut_and_free_ones_are_not() {
    let licensed = licensed(&[FEATURE]).await;
    let app = Router::new()
        .route(
            "/ws",
            any(|ws: WebSocketUpgrade| async move {
                sleep(Duration::from_millis(30)).await;
                ws.on_upgrade(echo)
            }),
        )
        .layer(licensed.monitor.require_feature(FEATURE))
        .route(
            "/free-ws",
            any(|ws: WebSocketUpgrade| async move {
                sleep(Duration::from_millis(30)).await;
                ws.on_upgrade(echo)
            }),
        )
        .route("/", get(|| async { "free" }));
    let addr = serve_axum(&licensed.monitor, app).await;
    let opened = futures_util::future::join_all((0..16).map(|i| async move {
        let path = if i % 2 == 0 { "/ws" } else { "/free-ws" };
        (path, websocket_h1(addr, path).await)
    }));
    let noise = futures_util::future::join_all((0..16).map(|_| status(Method::GET, addr, "/")));
    let (mut sockets, _) = tokio::join!(opened, noise);

    let removed = licensed.remove_feature().await;
    sleep_until(removed + WELL_AFTER_DRAIN).await;
    let mut wrong = Vec::new();
    for (path, ws) in &mut sockets {
        let echoed = echoes(ws, "after", 3, NO_ECHO).await;
        let expected = if *path == "/ws" { 0 } else { 3 };
        if echoed != expected {
            wrong.push(format!("{path}: {echoed} echoes, expected {expected}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// A paid upload read by the handler itself (not in a task of its own) that the client
/// finishes within the drain period completes normally.
#[tokio::test]
async fn a_paid_upload_read_inline_that_ends_within_the_drain_completes() {
    let licensed = licensed(&[FEATURE]).await;
    let app = Router::new()
        .route(
            "/upload",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .layer(licensed.monitor.require_feature(FEATURE));
    let addr = serve_axum(&licensed.monitor, app).await;
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(connection);
    let (chunks, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let request = Request::post(format!("http://{addr}/upload"))
        .body(common::ChannelBody(rx))
        .unwrap();
    let response = tokio::spawn(async move { sender.send_request(request).await });
    chunks.send(Bytes::from_static(b"12345")).await.unwrap();
    sleep(Duration::from_millis(100)).await;

    let removed = licensed.remove_feature().await;
    for _ in 0..5 {
        chunks.send(Bytes::from_static(b"12345")).await.unwrap();
        sleep(Duration::from_millis(50)).await;
    }
    drop(chunks);
    let response = timeout(PATIENCE, response)
        .await
        .expect("answered in time")
        .unwrap()
        .unwrap();
    assert!(removed.elapsed() < DRAIN, "finished within the drain");
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"30"[..]));
}

/// A `CONNECT` tunnel over HTTP/1.1 behind the license layer: echoes within the drain
/// period, gets nothing through after it.
#[tokio::test]
async fn an_http1_connect_tunnel_is_cut_at_the_drains_end() {
    let licensed = licensed(&[]).await;
    let app = Router::new()
        .fallback(|request: axum::extract::Request| async move {
            tokio::spawn(async move {
                if let Ok(upgraded) = hyper::upgrade::on(request).await {
                    let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                }
            });
            StatusCode::OK
        })
        .layer(licensed.monitor.layer());
    let addr = serve_axum(&licensed.monitor, app).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    async fn round_trip(tcp: &mut TcpStream) -> bool {
        if tcp.write_all(b"ping").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 4];
        matches!(timeout(NO_ECHO, tcp.read_exact(&mut buf)).await, Ok(Ok(4))) && &buf == b"ping"
    }
    assert!(round_trip(&mut tcp).await, "the tunnel echoes");

    let cut = licensed.cut_off().await;
    assert!(
        round_trip(&mut tcp).await,
        "the tunnel echoes within the drain"
    );
    sleep_until(cut + AFTER_DRAIN).await;
    let mut through = 0;
    for _ in 0..5 {
        if round_trip(&mut tcp).await {
            through += 1;
        }
    }
    assert_eq!(
        through, 0,
        "{through} round trips through the tunnel after the drain"
    );
}

/// A pooled HTTP/2 client of a free route whose connection opened after a paid HTTP/2
/// WebSocket was admitted is not cut at the feature's drain.
#[tokio::test]
async fn an_http2_client_of_a_free_route_opened_after_the_paid_websocket_is_not_cut() {
    let licensed = licensed(&[FEATURE]).await;
    let addr = serve_axum(&licensed.monitor, paid_ws_and_free_root(&licensed.monitor)).await;
    let (_sender, mut ws) = websocket_h2(addr, "/ws").await;
    assert_eq!(echoes(&mut ws, "before", 1, PATIENCE).await, 1);
    let client = pooled_client(true);
    let first = fetch_with(&client, Method::GET, addr, "/").await;
    assert!(matches!(first, Ok((StatusCode::OK, _))), "{first:?}");

    let removed = licensed.remove_feature().await;
    sleep_until(removed + WELL_AFTER_DRAIN).await;
    let after = fetch_with(&client, Method::GET, addr, "/").await;
    let echoed = echoes(&mut ws, "after", ATTEMPTS, NO_ECHO).await;
    assert!(
        matches!(after, Ok((StatusCode::OK, _))) && echoed == 0,
        "the free client after the drain: {after:?}; {echoed} echoes on the paid WebSocket"
    );
}
