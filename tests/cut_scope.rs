//! The cut reaches what the license protects, and nothing else: tried with real clients
//! over loopback, in real time (a drain period of 1 s), against axum and tonic servers
//! whose connections come through `monitor.listener(..)`.
//!
//! A paid thing is taken away in one of two ways: the cut-off (the license replaced with
//! one expired ten days ago: `GraceExpired`), or a renewal, still valid, without the
//! feature a `require_feature("reports")` route needs. Either way, what the paid route
//! opened must stop at the end of the drain period: a WebSocket over HTTP/1.1 `Upgrade` or
//! HTTP/2 extended CONNECT, an upload read by a task the handler spawned, the client's
//! half of a gRPC bidirectional call, a WebSocket that only pushes. A renewal's refusal
//! is the feature's (403 `feature_not_licensed`, gRPC `PERMISSION_DENIED`), not the
//! cut-off's. And what the license does not protect is not cut at all: a free WebSocket
//! or SSE stream beside a gated route, pooled keep-alive connections of free routes, the
//! exempt gRPC health check on a channel that made a paid call. Until the drain period
//! ends, what was admitted keeps working.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

mod common;
use common::cut::{
    AFTER_DRAIN, ATTEMPTS, DRAIN, FEATURE, Gate, NO_ECHO, PATIENCE, Peer, WELL_AFTER_DRAIN, echo,
    echoes, fetch_with, grpc, grpc_channel, licensed, licensed_exempting, pooled_client, push,
    serve_axum, serve_axum_with_peers, serve_tonic, status, wait_until, websocket_h1, websocket_h2,
};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::ws::WebSocketUpgrade;
use axum::routing::{any, get, post};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use iosetu_license::LicenseMonitor;
use tokio::net::TcpStream;
use tokio::time::{sleep, sleep_until, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The path of the gRPC health probe.
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// A WebSocket echo at `/ws`, behind `require_feature(FEATURE)`.
fn paid_websocket_app(monitor: &LicenseMonitor) -> Router {
    Router::new()
        .route(
            "/ws",
            any(|ws: WebSocketUpgrade| async move { ws.on_upgrade(echo) }),
        )
        .layer(monitor.require_feature(FEATURE))
}

/// A licensed route at `/paid` (behind `monitor.layer()`), and `free` beside it with no
/// layer.
fn free_beside_paid(monitor: &LicenseMonitor, free: Router) -> Router {
    Router::new()
        .route("/paid", get(|| async { "paid" }))
        .layer(monitor.layer())
        .merge(free)
}

// ---------------------------------------------------------------------------------------
// A renewal that takes the feature away: what the paid route opened ends a drain later.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_paid_websocket_over_http1_ends_a_drain_after_its_feature_is_removed() {
    let licensed = licensed(&[FEATURE]).await;
    let addr = serve_axum(&licensed.monitor, paid_websocket_app(&licensed.monitor)).await;
    let mut ws = websocket_h1(addr, "/ws").await;
    assert_eq!(echoes(&mut ws, "before", 1, PATIENCE).await, 1);

    let renewed = licensed.remove_feature().await;
    // New requests to the paid route get the feature's refusal at once.
    assert_eq!(
        status(Method::GET, addr, "/ws").await,
        StatusCode::FORBIDDEN
    );
    sleep_until(renewed + AFTER_DRAIN).await;
    let echoed = echoes(&mut ws, "after", ATTEMPTS, NO_ECHO).await;
    assert_eq!(
        echoed, 0,
        "{echoed} of {ATTEMPTS} messages echoed after the drain"
    );
}

#[tokio::test]
async fn a_paid_websocket_over_http2_extended_connect_ends_a_drain_after_its_feature_is_removed() {
    let licensed = licensed(&[FEATURE]).await;
    let addr = serve_axum(&licensed.monitor, paid_websocket_app(&licensed.monitor)).await;
    let (_sender, mut ws) = websocket_h2(addr, "/ws").await;
    assert_eq!(echoes(&mut ws, "before", 1, PATIENCE).await, 1);

    let renewed = licensed.remove_feature().await;
    assert_eq!(
        status(Method::GET, addr, "/ws").await,
        StatusCode::FORBIDDEN
    );
    sleep_until(renewed + AFTER_DRAIN).await;
    let echoed = echoes(&mut ws, "after", ATTEMPTS, NO_ECHO).await;
    assert_eq!(
        echoed, 0,
        "{echoed} of {ATTEMPTS} messages echoed after the drain"
    );
}

#[tokio::test]
async fn a_paid_upload_read_in_a_spawned_task_stops_a_drain_after_its_feature_is_removed() {
    // The handler answers 202 at once and reads the (endless) chunked upload in a task of
    // its own: the response the layer watches is long over.
    let licensed = licensed(&[FEATURE]).await;
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
        .layer(licensed.monitor.require_feature(FEATURE));
    let addr = serve_axum(&licensed.monitor, app).await;

    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(connection);
    let (chunks, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let request = Request::post(format!("http://{addr}/upload"))
        .body(common::ChannelBody(rx))
        .unwrap();
    chunks.send(Bytes::from_static(b"first")).await.unwrap();
    let response = timeout(PATIENCE, sender.send_request(request))
        .await
        .expect("answered in time")
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    wait_until("the first chunk processed", || {
        processed.load(Ordering::SeqCst) == 1
    })
    .await;

    let renewed = licensed.remove_feature().await;
    assert_eq!(
        status(Method::POST, addr, "/upload").await,
        StatusCode::FORBIDDEN
    );
    sleep_until(renewed + AFTER_DRAIN).await;
    for _ in 0..ATTEMPTS {
        // (Fails once the client notices the connection is gone.)
        let _ = chunks.send(Bytes::from_static(b"more")).await;
    }
    sleep(Duration::from_millis(300)).await;
    let after = processed.load(Ordering::SeqCst) - 1;
    assert_eq!(
        after, 0,
        "{after} of {ATTEMPTS} chunks processed after the drain"
    );
}

#[tokio::test]
async fn a_paid_grpc_bidi_call_stops_receiving_a_drain_after_its_feature_is_removed() {
    let licensed = licensed(&[FEATURE]).await;
    let chat = grpc::Chat::default();
    let processed = Arc::clone(&chat.processed);
    let addr = serve_tonic(&licensed.monitor, Gate::Feature, chat, false).await;
    let channel = grpc_channel(addr).await;
    let mut client = tonic::client::Grpc::new(channel.clone());
    client.ready().await.unwrap();
    let (messages, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let outbound = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|message| (message, rx))
    });
    messages.send(Bytes::from_static(b"before")).await.unwrap();
    let response = timeout(
        PATIENCE,
        client.streaming(
            tonic::Request::new(outbound),
            http::uri::PathAndQuery::from_static(grpc::TALK),
            grpc::RawCodec,
        ),
    )
    .await
    .expect("the call started in time")
    .unwrap();
    let mut answers = response.into_inner();
    wait_until("the first message processed", || {
        processed.load(Ordering::SeqCst) == 1
    })
    .await;

    let renewed = licensed.remove_feature().await;
    // New calls get the feature's refusal at once.
    let refused = timeout(PATIENCE, grpc::echo(channel.clone(), b"new"))
        .await
        .expect("answered in time")
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // The open call ends a drain period later, with the feature's refusal.
    let ended = match timeout(Duration::from_secs(10), answers.message()).await {
        Err(_) => Err("the call did not end within 10 s".to_owned()),
        Ok(Ok(Some(answer))) => Err(format!("an answer: {answer:?}")),
        Ok(Ok(None)) => Err("a clean end (OK)".to_owned()),
        Ok(Err(status)) => Ok(status),
    };
    sleep_until(renewed + AFTER_DRAIN).await;
    for _ in 0..ATTEMPTS {
        let _ = messages.send(Bytes::from_static(b"after")).await;
    }
    sleep(Duration::from_millis(300)).await;
    let after = processed.load(Ordering::SeqCst) - 1;
    assert!(
        matches!(&ended, Ok(status) if status.code() == tonic::Code::PermissionDenied)
            && after == 0,
        "the call ended with {ended:?}; {after} of {ATTEMPTS} messages processed after the drain"
    );
}

#[tokio::test]
async fn a_paid_request_in_flight_when_its_feature_is_removed_gets_the_feature_refusal() {
    // The handler would answer after 3 s; the drain period (1 s) ends first.
    let licensed = licensed(&[FEATURE]).await;
    let (started, finished) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (on_start, on_finish) = (Arc::clone(&started), Arc::clone(&finished));
    let app = Router::new()
        .route(
            "/report",
            get(move || {
                let (on_start, on_finish) = (Arc::clone(&on_start), Arc::clone(&on_finish));
                async move {
                    on_start.fetch_add(1, Ordering::SeqCst);
                    sleep(Duration::from_secs(3)).await;
                    on_finish.fetch_add(1, Ordering::SeqCst);
                    "the report"
                }
            }),
        )
        .layer(licensed.monitor.require_feature(FEATURE));
    let addr = serve_axum(&licensed.monitor, app).await;
    let client = pooled_client(false);
    let call = tokio::spawn(async move { fetch_with(&client, Method::GET, addr, "/report").await });
    wait_until("the handler started", || {
        started.load(Ordering::SeqCst) == 1
    })
    .await;

    let renewed = licensed.remove_feature().await;
    let (status, body) = call.await.unwrap().unwrap();
    let answered_in = renewed.elapsed();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    assert!(
        status == StatusCode::FORBIDDEN
            && json["error"] == "feature_not_licensed"
            && json["feature"] == FEATURE
            && finished.load(Ordering::SeqCst) == 0,
        "answered {status} {body:?} {answered_in:?} after the renewal"
    );
}

#[tokio::test]
async fn a_paid_grpc_call_in_flight_when_its_feature_is_removed_gets_permission_denied() {
    // A unary call that would answer after 3 s; the drain period (1 s) ends first.
    let licensed = licensed(&[FEATURE]).await;
    let chat = grpc::Chat {
        delay: Duration::from_secs(3),
        ..grpc::Chat::default()
    };
    let (started, finished) = (Arc::clone(&chat.started), Arc::clone(&chat.finished));
    let addr = serve_tonic(&licensed.monitor, Gate::Feature, chat, false).await;
    let channel = grpc_channel(addr).await;
    let call = tokio::spawn(grpc::echo(channel, b"report"));
    wait_until("the call started", || started.load(Ordering::SeqCst) == 1).await;

    let renewed = licensed.remove_feature().await;
    let result = timeout(PATIENCE, call)
        .await
        .expect("answered in time")
        .unwrap();
    let answered_in = renewed.elapsed();
    assert!(
        matches!(&result, Err(status) if status.code() == tonic::Code::PermissionDenied)
            && finished.load(Ordering::SeqCst) == 0,
        "answered {result:?} {answered_in:?} after the renewal"
    );
}

// ---------------------------------------------------------------------------------------
// The cut-off: a connection that only writes closes on time too.
// ---------------------------------------------------------------------------------------

/// A WebSocket behind `monitor.layer()` that pushes a message every `pause` and never
/// reads: after the cut-off, nothing arrives later than the drain period plus 1.3 s
/// (`CLOSE_AFTER` is 1 s), and the client sees the connection closed within the drain
/// period plus 2.5 s.
async fn a_push_only_websocket_is_closed_on_time(pause: Duration) {
    let licensed = licensed(&[]).await;
    let app = Router::new()
        .route(
            "/push",
            any(move |ws: WebSocketUpgrade| async move {
                ws.on_upgrade(move |socket| push(socket, pause))
            }),
        )
        .layer(licensed.monitor.layer());
    let addr = serve_axum(&licensed.monitor, app).await;
    let mut ws = websocket_h1(addr, "/push").await;
    // The first push comes at once: the next ones are `pause` apart from it.
    let first = timeout(PATIENCE, ws.next()).await.expect("a first push");
    assert!(matches!(first, Some(Ok(Message::Text(_)))), "{first:?}");

    let cut = licensed.cut_off().await;
    let nothing_after = DRAIN + Duration::from_millis(1_300);
    let closed_by = DRAIN + WELL_AFTER_DRAIN;
    // Long enough to see the next push after the end of the drain period, if it comes.
    let give_up = cut + closed_by.max(DRAIN + pause + Duration::from_secs(2));
    let (mut late, mut closed) = (Vec::new(), None);
    loop {
        let next = timeout_at(give_up, ws.next()).await;
        let at = cut.elapsed();
        match next {
            Err(_) => break,
            Ok(Some(Ok(Message::Text(_)))) if at > nothing_after => late.push(at),
            Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) => {
                closed = Some(at);
                break;
            }
            Ok(Some(Ok(_))) => {}
        }
    }
    assert!(
        late.is_empty() && closed.is_some_and(|at| at <= closed_by),
        "messages received later than {nothing_after:?} after the cut-off: {late:?}; \
         the connection closed {closed:?} after it (expected by {closed_by:?})"
    );
}

#[tokio::test]
async fn a_push_only_websocket_gets_nothing_out_after_the_drain() {
    a_push_only_websocket_is_closed_on_time(Duration::from_millis(400)).await;
}

#[tokio::test]
async fn a_push_only_websocket_pausing_4_s_gets_nothing_out_after_the_drain() {
    a_push_only_websocket_is_closed_on_time(Duration::from_secs(4)).await;
}

// ---------------------------------------------------------------------------------------
// What the license does not protect is never cut.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_free_websocket_is_never_cut() {
    let licensed = licensed(&[]).await;
    let free = Router::new().route(
        "/free-ws",
        any(|ws: WebSocketUpgrade| async move { ws.on_upgrade(echo) }),
    );
    let addr = serve_axum(&licensed.monitor, free_beside_paid(&licensed.monitor, free)).await;
    let mut before = websocket_h1(addr, "/free-ws").await;
    assert_eq!(echoes(&mut before, "before", 5, PATIENCE).await, 5);

    let cut = licensed.cut_off().await;
    // Opened during the drain period, on a connection of its own.
    let mut during = timeout_at(cut + DRAIN, websocket_h1(addr, "/free-ws"))
        .await
        .expect("opened within the drain period (machine too slow?)");
    assert_eq!(echoes(&mut during, "during", 5, PATIENCE).await, 5);
    assert_eq!(
        status(Method::GET, addr, "/paid").await,
        StatusCode::SERVICE_UNAVAILABLE
    );

    sleep_until(cut + DRAIN + Duration::from_millis(1_500)).await;
    let echoed = (
        echoes(&mut before, "after", 5, PATIENCE).await,
        echoes(&mut during, "after", 5, PATIENCE).await,
    );
    assert_eq!(
        echoed,
        (5, 5),
        "echoes after the drain, of 5, on the free WebSockets opened before the cut-off \
         and during its drain period"
    );
}

#[tokio::test]
async fn a_free_sse_stream_is_never_cut() {
    let licensed = licensed(&[]).await;
    let (route, mut streams) = common::streaming_route();
    let free = Router::new().route("/events", route);
    let addr = serve_axum(&licensed.monitor, free_beside_paid(&licensed.monitor, free)).await;
    let client = pooled_client(false);
    let request = Request::get(format!("http://{addr}/events"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = timeout(PATIENCE, client.request(request))
        .await
        .expect("answered in time")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let frames = timeout(PATIENCE, streams.recv()).await.unwrap().unwrap();
    frames
        .send(Bytes::from_static(b"data: 1\n\n"))
        .await
        .unwrap();
    let first = timeout(PATIENCE, body.frame()).await.unwrap();
    let first = first.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"data: 1\n\n");

    let cut = licensed.cut_off().await;
    assert_eq!(
        status(Method::GET, addr, "/paid").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    sleep_until(cut + DRAIN + Duration::from_millis(1_500)).await;
    let sent = frames
        .send(Bytes::from_static(b"data: 2\n\n"))
        .await
        .is_ok();
    let later = timeout(PATIENCE, body.frame()).await;
    let delivered = matches!(
        &later,
        Ok(Some(Ok(frame))) if frame.data_ref().is_some_and(|d| &d[..] == b"data: 2\n\n")
    );
    // The server ends the stream: a clean end, not an error.
    drop(frames);
    let end = timeout(PATIENCE, body.frame()).await;
    let clean_end = matches!(end, Ok(None));
    assert!(
        sent && delivered && clean_end,
        "after the drain: the server could send a frame: {sent}; the client got {later:?}, \
         then {end:?}"
    );
}

/// Free routes only, at `/` (answering the port of the client's end of the connection:
/// which connection it came on) and `/metrics`, beside a licensed `/paid`; and a pooled
/// client over HTTP/1.1 and one over HTTP/2, each with a connection open to it.
async fn free_routes_and_pooled_clients(
    monitor: &LicenseMonitor,
) -> (
    std::net::SocketAddr,
    [(
        &'static str,
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            http_body_util::Empty<Bytes>,
        >,
    ); 2],
    Vec<Bytes>,
) {
    let free = Router::new()
        .route(
            "/",
            get(
                |ConnectInfo(Peer(peer)): ConnectInfo<Peer>| async move { peer.port().to_string() },
            ),
        )
        .route("/metrics", get(|| async { "metrics" }));
    let addr = serve_axum_with_peers(monitor, free_beside_paid(monitor, free)).await;
    let clients = [
        ("HTTP/1.1", pooled_client(false)),
        ("HTTP/2", pooled_client(true)),
    ];
    let mut ports = Vec::new();
    for (name, client) in &clients {
        let (status, port) = fetch_with(client, Method::GET, addr, "/").await.unwrap();
        assert_eq!(status, StatusCode::OK, "{name} /");
        ports.push(port);
        let (status, _) = fetch_with(client, Method::GET, addr, "/metrics")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{name} /metrics");
    }
    (addr, clients, ports)
}

#[tokio::test]
async fn pooled_clients_of_free_routes_see_no_reset() {
    let licensed = licensed(&[]).await;
    let (addr, clients, ports_before) = free_routes_and_pooled_clients(&licensed.monitor).await;

    let cut = licensed.cut_off().await;
    assert_eq!(
        status(Method::GET, addr, "/paid").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    sleep_until(cut + DRAIN + Duration::from_millis(1_500)).await;
    let (mut failures, mut ports_after) = (Vec::new(), Vec::new());
    for (name, client) in &clients {
        for path in ["/", "/metrics"] {
            match fetch_with(client, Method::GET, addr, path).await {
                Ok((StatusCode::OK, body)) if path == "/" => ports_after.push(body),
                Ok((StatusCode::OK, _)) => {}
                other => failures.push(format!("{name} {path}: {other:?}")),
            }
        }
    }
    // (Whether the pooled connections were kept or replaced, for the record.)
    eprintln!("client ports before the cut-off {ports_before:?}, after the drain {ports_after:?}");
    assert!(
        failures.is_empty(),
        "first attempts after the drain that failed: {failures:#?}"
    );
}

#[tokio::test]
async fn pooled_clients_of_free_routes_see_no_reset_while_the_drain_ends() {
    // The same pooled connections, used every 250 ms from the cut-off until well after
    // the end of its drain period: a free route's request never fails, whenever it is
    // sent.
    let licensed = licensed(&[]).await;
    let (addr, clients, _) = free_routes_and_pooled_clients(&licensed.monitor).await;

    let cut = licensed.cut_off().await;
    let (mut failures, mut requests) = (Vec::new(), 0);
    while cut.elapsed() <= DRAIN + WELL_AFTER_DRAIN {
        // Both clients at once, so that each has a request out whenever one does.
        let at = cut.elapsed();
        let answers = futures_util::future::join_all(
            clients
                .iter()
                .map(|(_, client)| fetch_with(client, Method::GET, addr, "/metrics")),
        )
        .await;
        for ((name, _), answer) in clients.iter().zip(answers) {
            requests += 1;
            if !matches!(answer, Ok((StatusCode::OK, _))) {
                failures.push(format!("{name}, {at:?} after the cut-off: {answer:?}"));
            }
        }
        sleep(Duration::from_millis(250)).await;
    }
    assert!(
        failures.is_empty(),
        "{} of {requests} first attempts failed: {failures:#?}",
        failures.len()
    );
}

/// One `Health/Check` of the server's overall health: SERVING, or what went wrong.
async fn health_check(client: &mut HealthClient<tonic::transport::Channel>) -> Result<(), String> {
    let request = HealthCheckRequest {
        service: String::new(),
    };
    match timeout(PATIENCE, client.check(request)).await {
        Err(_) => Err(format!("no answer in {PATIENCE:?}")),
        Ok(Err(status)) => Err(format!("{status:?}")),
        Ok(Ok(reply)) if reply.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
        Ok(Ok(reply)) => Err(format!("{reply:?}")),
    }
}

#[tokio::test]
async fn the_exempt_grpc_health_check_on_a_channel_keeps_working() {
    let licensed = licensed_exempting(&[], &[HEALTH_CHECK]).await;
    let addr = serve_tonic(
        &licensed.monitor,
        Gate::License,
        grpc::Chat::default(),
        true,
    )
    .await;
    let channel = grpc_channel(addr).await;
    // A paid call first, on the same channel.
    let paid = timeout(PATIENCE, grpc::echo(channel.clone(), b"paid"))
        .await
        .expect("answered in time");
    assert_eq!(paid.unwrap(), Bytes::from_static(b"paid"));
    let mut health = HealthClient::new(channel.clone());
    health_check(&mut health).await.unwrap();

    let cut = licensed.cut_off().await;
    // The paid service is refused from now on; the probe is not, before the end of the
    // drain period or after it.
    let refused = timeout(PATIENCE, grpc::echo(channel.clone(), b"paid"))
        .await
        .expect("answered in time")
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let mut failures = Vec::new();
    let mut checks = 0;
    while cut.elapsed() <= DRAIN + WELL_AFTER_DRAIN {
        let at = cut.elapsed();
        checks += 1;
        if let Err(error) = health_check(&mut health).await {
            failures.push(format!("{at:?} after the cut-off: {error}"));
        }
        sleep(Duration::from_millis(250)).await;
    }
    assert!(
        failures.is_empty(),
        "{} of {checks} Health/Check calls failed: {failures:#?}",
        failures.len()
    );
}

// ---------------------------------------------------------------------------------------
// Until the drain period ends, what was admitted keeps working.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_paid_websocket_still_echoes_during_the_drain_after_its_feature_is_removed() {
    let licensed = licensed(&[FEATURE]).await;
    let addr = serve_axum(&licensed.monitor, paid_websocket_app(&licensed.monitor)).await;
    let mut h1 = websocket_h1(addr, "/ws").await;
    let (_sender, mut h2) = websocket_h2(addr, "/ws").await;
    assert_eq!(echoes(&mut h1, "before", 1, PATIENCE).await, 1);
    assert_eq!(echoes(&mut h2, "before", 1, PATIENCE).await, 1);

    let renewed = licensed.remove_feature().await;
    let during = timeout_at(renewed + DRAIN, async {
        (
            echoes(&mut h1, "draining", 5, PATIENCE).await,
            echoes(&mut h2, "draining", 5, PATIENCE).await,
        )
    })
    .await
    .expect("echoed within the drain period (machine too slow?)");
    assert_eq!(during, (5, 5), "echoes during the drain (HTTP/1.1, HTTP/2)");
}

#[tokio::test]
async fn a_licensed_websocket_still_echoes_during_the_drain_after_the_cut_off() {
    let licensed = licensed(&[]).await;
    let app = Router::new()
        .route(
            "/ws",
            any(|ws: WebSocketUpgrade| async move { ws.on_upgrade(echo) }),
        )
        .layer(licensed.monitor.layer());
    let addr = serve_axum(&licensed.monitor, app).await;
    let mut ws = websocket_h1(addr, "/ws").await;
    assert_eq!(echoes(&mut ws, "before", 1, PATIENCE).await, 1);

    let cut = licensed.cut_off().await;
    let during = timeout_at(cut + DRAIN, echoes(&mut ws, "draining", 5, PATIENCE))
        .await
        .expect("echoed within the drain period (machine too slow?)");
    assert_eq!(during, 5, "echoes during the drain");
}

#[tokio::test]
async fn short_paid_requests_in_flight_when_the_feature_is_removed_finish_normally() {
    // Over HTTP/1.1 and HTTP/2: a paid request in flight at the renewal finishes (a
    // 300 ms handler, a 1 s drain period); new ones on the same connections get the 403.
    let licensed = licensed(&[FEATURE]).await;
    let started = Arc::new(AtomicUsize::new(0));
    let on_start = Arc::clone(&started);
    let app = Router::new()
        .route(
            "/report",
            get(move || {
                let on_start = Arc::clone(&on_start);
                async move {
                    on_start.fetch_add(1, Ordering::SeqCst);
                    sleep(Duration::from_millis(300)).await;
                    "done"
                }
            }),
        )
        .layer(licensed.monitor.require_feature(FEATURE));
    let addr = serve_axum(&licensed.monitor, app).await;
    let (http1, http2) = (pooled_client(false), pooled_client(true));
    let (one, two) = (http1.clone(), http2.clone());
    let one = tokio::spawn(async move { fetch_with(&one, Method::GET, addr, "/report").await });
    let two = tokio::spawn(async move { fetch_with(&two, Method::GET, addr, "/report").await });
    wait_until("both handlers started", || {
        started.load(Ordering::SeqCst) == 2
    })
    .await;

    licensed.remove_feature().await;
    for answer in [one.await.unwrap(), two.await.unwrap()] {
        let (status, body) = answer.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"done"[..]));
    }
    for client in [&http1, &http2] {
        let (status, _) = fetch_with(client, Method::GET, addr, "/report")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
}
