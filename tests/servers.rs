//! Real servers on 127.0.0.1 with real clients: axum 0.8 over HTTP/1.1 and tonic 0.14 over
//! HTTP/2. The license state is moved the way an operator would: by replacing the license
//! file and asking for a check.

use std::net::SocketAddr;
use std::path::Path;

mod common;
use common::now;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use iosetu_license::{Claims, LicenseMonitor, LicenseSigner, LicenseSource, LicenseState};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const DAY: i64 = 86_400;

fn signer() -> LicenseSigner {
    LicenseSigner::from_seed([21; 32])
}

fn write_license(path: &Path, exp: i64) {
    std::fs::write(path, signer().sign(&Claims::new("Acme", exp)) + "\n").unwrap();
}

async fn monitor(path: &Path) -> LicenseMonitor {
    LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::File(path.to_path_buf()))
        .clock(common::SettledClock)
        .start()
        .await
        .unwrap()
}

async fn serve_axum(monitor: &LicenseMonitor) -> SocketAddr {
    let app = Router::new()
        .route("/api/hello", get(|| async { "hello" }))
        .layer(monitor.layer())
        .route_service("/health", monitor.health_service());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

struct Reply {
    status: StatusCode,
    content_type: Option<String>,
    body: String,
}

async fn fetch(addr: SocketAddr, path: &str) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = Request::get(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        content_type,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

#[tokio::test]
async fn axum_server_through_valid_grace_cut_off_and_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    write_license(&path, now() + 90 * DAY);
    let monitor = monitor(&path).await;
    let addr = serve_axum(&monitor).await;

    // Valid.
    let api = fetch(addr, "/api/hello").await;
    assert_eq!((api.status, api.body.as_str()), (StatusCode::OK, "hello"));
    let health = fetch(addr, "/health").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        health.body,
        r#"{"status":"healthy","license":{"valid":true,"grace_mode":false}}"#
    );

    // Expired an hour ago: grace, still served.
    write_license(&path, now() - 3600);
    assert_eq!(monitor.check_now().await.state, LicenseState::Grace);
    let api = fetch(addr, "/api/hello").await;
    assert_eq!((api.status, api.body.as_str()), (StatusCode::OK, "hello"));
    let health = fetch(addr, "/health").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(
        health.body,
        r#"{"status":"degraded","license":{"valid":false,"grace_mode":true}}"#
    );

    // A license that expired ten days ago: grace is long over.
    write_license(&path, now() - 10 * DAY);
    assert_eq!(monitor.check_now().await.state, LicenseState::GraceExpired);
    let api = fetch(addr, "/api/hello").await;
    assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api.content_type.as_deref(), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&api.body).unwrap();
    assert_eq!(body["error"], "license_expired");
    let health = fetch(addr, "/health").await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        health.body,
        r#"{"status":"unhealthy","license":{"valid":false,"grace_mode":true}}"#
    );

    // Renewed in place: served again, no restart.
    write_license(&path, now() + 365 * DAY);
    assert_eq!(monitor.check_now().await.state, LicenseState::Valid);
    let api = fetch(addr, "/api/hello").await;
    assert_eq!((api.status, api.body.as_str()), (StatusCode::OK, "hello"));
}

/// The standard gRPC health service behind `monitor`'s layer on 127.0.0.1, reporting
/// SERVING, and a client connected to it.
async fn serve_tonic(monitor: &LicenseMonitor) -> HealthClient<tonic::transport::Channel> {
    serve_tonic_behind(monitor, None).await
}

/// The same, behind `require_feature(feature)` instead when one is given.
async fn serve_tonic_behind(
    monitor: &LicenseMonitor,
    feature: Option<&str>,
) -> HealthClient<tonic::transport::Channel> {
    let (reporter, health_server) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let layer = match feature {
        None => tower::util::Either::Left(monitor.layer()),
        Some(feature) => tower::util::Either::Right(monitor.require_feature(feature)),
    };
    let server = tonic::transport::Server::builder()
        .layer(layer)
        .add_service(health_server)
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(async move { server.await.unwrap() });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

#[tokio::test]
async fn tonic_health_behind_the_layer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    write_license(&path, now() + 90 * DAY);
    let monitor = monitor(&path).await;

    let mut client = serve_tonic(&monitor).await;
    let check = || HealthCheckRequest {
        service: String::new(),
    };
    let reply = client.check(check()).await.unwrap();
    assert_eq!(reply.into_inner().status, ServingStatus::Serving as i32);

    // Cut off: the same client, a new call, UNAVAILABLE with the license message.
    write_license(&path, now() - 10 * DAY);
    assert_eq!(monitor.check_now().await.state, LicenseState::GraceExpired);
    let status = client.check(check()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("license"), "{}", status.message());

    // Renewed: calls succeed again on the same connection.
    write_license(&path, now() + 90 * DAY);
    assert_eq!(monitor.check_now().await.state, LicenseState::Valid);
    assert!(client.check(check()).await.is_ok());
}

/// After the cut-off, serves `app` and returns what `paths` answer.
async fn statuses_after_cut_off(
    app: impl FnOnce(&LicenseMonitor) -> Router,
    paths: &[&str],
) -> Vec<StatusCode> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    write_license(&path, now() - 10 * DAY);
    let monitor = monitor(&path).await;
    assert_eq!(monitor.verdict().state, LicenseState::GraceExpired);
    let app = app(&monitor);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut statuses = Vec::new();
    for path in paths {
        statuses.push(fetch(addr, path).await.status);
    }
    statuses
}

#[tokio::test]
async fn a_protected_fallback_is_not_served_for_metrics_after_the_cut_off() {
    // Before: `/metrics` was exempt by default, and with nothing mounted there the
    // protected fallback answered it, after the cut-off, for anyone.
    let statuses = statuses_after_cut_off(
        |monitor| {
            Router::new()
                .route("/api/hello", get(|| async { "hello" }))
                .fallback(|| async { "the protected fallback" })
                .layer(monitor.layer())
                .route_service("/health", monitor.health_service())
        },
        &["/metrics", "/anything", "/api/hello", "/health"],
    )
    .await;
    assert_eq!(
        statuses,
        [
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::SERVICE_UNAVAILABLE,
            // Mounted outside the layer: it reports the cut-off, it is not bypassed.
            StatusCode::SERVICE_UNAVAILABLE,
        ]
    );
}

#[tokio::test]
async fn a_nested_router_does_not_exempt_its_own_health_route() {
    // Before: axum strips `/api` before the nested layer sees the request, so
    // `GET /api/health` reached a protected handler as `/health`, which was exempt.
    let statuses = statuses_after_cut_off(
        |monitor| {
            let api = Router::new()
                .route("/health", get(|| async { "a protected handler" }))
                .route("/orders", get(|| async { "orders" }))
                .layer(monitor.layer());
            Router::new()
                .nest("/api", api)
                .route_service("/health", monitor.health_service())
        },
        &["/api/health", "/api/orders"],
    )
    .await;
    assert_eq!(
        statuses,
        [
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::SERVICE_UNAVAILABLE
        ]
    );
}

/// A monitor on the license file at `path` whose drain period is `drain`.
async fn draining_monitor(path: &Path, drain: std::time::Duration) -> LicenseMonitor {
    LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::File(path.to_path_buf()))
        .clock(common::SettledClock)
        .drain_period(drain)
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_axum_stream_open_at_the_cut_off_is_cut_after_the_drain_period() {
    // Before: a stream opened the minute before expiry carried on for ever. The drain
    // period is short here because this runs in real time, over real sockets.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    write_license(&path, now() + 90 * DAY);
    let monitor = draining_monitor(&path, std::time::Duration::from_millis(300)).await;
    let (route, mut streams) = common::streaming_route();
    let app = Router::new().route("/events", route).layer(monitor.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = Request::get(format!("http://{addr}/events"))
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let tx = streams.recv().await.unwrap();
    let mut next_data = async || {
        let frame = body.frame().await.unwrap().unwrap();
        String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
    };
    tx.send(Bytes::from_static(b"data: one\n\n")).await.unwrap();
    assert_eq!(next_data().await, "data: one\n\n");

    // The cut-off: new requests are refused, the open stream is drained.
    write_license(&path, now() - 10 * DAY);
    assert_eq!(monitor.check_now().await.state, LicenseState::GraceExpired);
    assert_eq!(
        fetch(addr, "/events").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    tx.send(Bytes::from_static(b"data: two\n\n")).await.unwrap();
    assert_eq!(next_data().await, "data: two\n\n");

    // Idle at the end of the drain period: the server aborts the response, and the
    // client sees a truncated body, never a clean end.
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
        .await
        .expect("the stream was cut");
    assert!(matches!(end, Some(Err(_))), "{end:?}");
}

#[tokio::test]
async fn a_tonic_server_stream_open_at_the_cut_off_ends_unavailable() {
    // gRPC health's Watch is a server-streaming RPC that stays open.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    write_license(&path, now() + 90 * DAY);
    let monitor = draining_monitor(&path, std::time::Duration::from_millis(300)).await;
    let mut client = serve_tonic(&monitor).await;
    let mut stream = client
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    write_license(&path, now() - 10 * DAY);
    assert_eq!(monitor.check_now().await.state, LicenseState::GraceExpired);
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .expect("the stream was ended");
    let status = end.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("license"), "{}", status.message());
}

fn write_license_with(path: &Path, exp: i64, features: &[&str]) {
    let mut claims = Claims::new("Acme", exp);
    claims.features = features.iter().map(|f| (*f).to_owned()).collect();
    std::fs::write(path, signer().sign(&claims) + "\n").unwrap();
}

#[tokio::test]
async fn axum_free_and_paid_tiers_through_upgrade_grace_and_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    write_license_with(&path, now() + 90 * DAY, &["audit"]);
    let monitor = monitor(&path).await;
    let app = Router::new()
        .route("/sso/login", get(|| async { "signed in" }))
        .layer(monitor.require_feature("sso"))
        .route("/", get(|| async { "home" }))
        .route_service("/health", monitor.health_service());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // A license without the feature: the paid route says which feature is missing.
    let paid = fetch(addr, "/sso/login").await;
    assert_eq!(paid.status, StatusCode::FORBIDDEN);
    assert_eq!(paid.content_type.as_deref(), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&paid.body).unwrap();
    assert_eq!(body["error"], "feature_not_licensed");
    assert_eq!(body["feature"], "sso");
    assert!(body["message"].as_str().unwrap().contains("sso"));
    assert_eq!(fetch(addr, "/").await.status, StatusCode::OK);

    // An upgrade, no restart: the paid route opens.
    write_license_with(&path, now() + 90 * DAY, &["audit", "sso"]);
    assert!(monitor.check_now().await.has_feature("sso"));
    let paid = fetch(addr, "/sso/login").await;
    assert_eq!(
        (paid.status, paid.body.as_str()),
        (StatusCode::OK, "signed in")
    );

    // Expired an hour ago, in grace: the expired license had the feature, still served.
    write_license_with(&path, now() - 3600, &["audit", "sso"]);
    assert_eq!(monitor.check_now().await.state, LicenseState::Grace);
    assert_eq!(fetch(addr, "/sso/login").await.status, StatusCode::OK);

    // Cut off: the paid route answers as the license layer does; the free tier serves.
    write_license_with(&path, now() - 10 * DAY, &["audit", "sso"]);
    assert_eq!(monitor.check_now().await.state, LicenseState::GraceExpired);
    let paid = fetch(addr, "/sso/login").await;
    assert_eq!(paid.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(paid.body.contains("license_expired"), "{}", paid.body);
    let free = fetch(addr, "/").await;
    assert_eq!((free.status, free.body.as_str()), (StatusCode::OK, "home"));
}

#[tokio::test]
async fn tonic_behind_require_feature_is_permission_denied_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    write_license_with(&path, now() + 90 * DAY, &[]);
    let monitor = monitor(&path).await;
    let mut client = serve_tonic_behind(&monitor, Some("grpc-api")).await;
    let check = || HealthCheckRequest {
        service: String::new(),
    };
    let status = client.check(check()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status.message().contains("grpc-api"),
        "{}",
        status.message()
    );

    write_license_with(&path, now() + 90 * DAY, &["grpc-api"]);
    assert!(monitor.check_now().await.has_feature("grpc-api"));
    let reply = client.check(check()).await.unwrap();
    assert_eq!(reply.into_inner().status, ServingStatus::Serving as i32);

    write_license_with(&path, now() - 10 * DAY, &["grpc-api"]);
    assert_eq!(monitor.check_now().await.state, LicenseState::GraceExpired);
    assert_eq!(
        client.check(check()).await.unwrap_err().code(),
        tonic::Code::Unavailable
    );
}

#[tokio::test]
async fn a_grpc_call_not_answered_by_the_end_of_the_drain_is_unavailable_to_tonic() {
    // An HTTP/2 request cut before its response started gets the 503 that also carries
    // grpc-status 14: a real tonic client must read it as UNAVAILABLE. The server is
    // axum (HTTP/2 prior knowledge), so the handler can hang where a gRPC method would.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    write_license(&path, now() + 90 * DAY);
    let monitor = draining_monitor(&path, std::time::Duration::from_millis(300)).await;
    let app = Router::new()
        .route(
            "/grpc.health.v1.Health/Check",
            axum::routing::post(|| async {
                std::future::pending::<()>().await;
                "never"
            }),
        )
        .layer(monitor.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let call = tokio::spawn(async move {
        client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
    });
    // Admitted while valid; then the cut-off, and the drain period runs out.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    write_license(&path, now() - 10 * DAY);
    assert_eq!(monitor.check_now().await.state, LicenseState::GraceExpired);
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), call)
        .await
        .expect("the call ends after the drain period")
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("license"), "{}", status.message());
}
