//! `License<S>` against tower-test's mock service: what reaches the inner service, what
//! does not, and what happens to requests in flight across the cut-off.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod common;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use iosetu_license::{
    Claims, Clock, HealthService, License, LicenseLayer, LicenseMonitor, LicenseSigner,
    LicenseSource, LicenseState, RequireFeature, ResponseBody, ResponseFuture, TestClock,
};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::ServiceExt as _;
use tower_test::mock;

const T0: u64 = 1_800_000_000;

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0)
}

fn signer() -> LicenseSigner {
    LicenseSigner::from_seed([11; 32])
}

async fn monitor_with(clock: &TestClock, source: LicenseSource, grace: u64) -> LicenseMonitor {
    LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(source)
        .clock(clock.clone())
        .grace_period(Duration::from_secs(grace))
        .exempt_path("/ready")
        .start()
        .await
        .unwrap()
}

/// A monitor whose grace is already over (no license, fail-closed).
async fn cut_off(clock: &TestClock) -> LicenseMonitor {
    let monitor = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(String::new()))
        .clock(clock.clone())
        .fail_closed(true)
        .start()
        .await
        .unwrap();
    assert_eq!(monitor.verdict().state, LicenseState::GraceExpired);
    monitor
}

fn get(path: &str) -> Request<String> {
    Request::get(path).body(String::new()).unwrap()
}

async fn body_text<B: http_body::Body<Data = Bytes>>(body: B) -> String
where
    B::Error: std::fmt::Debug,
{
    String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

type Mock = mock::Spawn<License<mock::Mock<Request<String>, Response<String>>>>;

fn spawn(monitor: &LicenseMonitor) -> (Mock, mock::Handle<Request<String>, Response<String>>) {
    mock::spawn_layer(LicenseLayer::new(monitor))
}

#[tokio::test(start_paused = true)]
async fn admitted_requests_pass_through_untouched() {
    let clock = TestClock::new(t0());
    let token = signer().sign(&Claims::new("Acme", T0 as i64 + 86_400 * 90));
    let monitor = monitor_with(&clock, LicenseSource::Static(token), 3600).await;
    let (mut svc, mut handle) = spawn(&monitor);

    assert_ready_ok!(svc.poll_ready());
    let request = Request::post("/api/orders?x=1")
        .header("x-trace", "abc")
        .body("payload".to_owned())
        .unwrap();
    let response = svc.call(request);
    let (seen, send) = handle.next_request().await.unwrap();
    assert_eq!(seen.method(), http::Method::POST);
    assert_eq!(seen.uri(), "/api/orders?x=1");
    assert_eq!(seen.headers()["x-trace"], "abc");
    assert_eq!(seen.body(), "payload");
    send.send_response(
        Response::builder()
            .status(201)
            .header("x-inner", "yes")
            .body("created".to_owned())
            .unwrap(),
    );
    let response = response.await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-inner"], "yes");
    assert_eq!(body_text(response.into_body()).await, "created");
}

#[tokio::test(start_paused = true)]
async fn refused_requests_never_reach_the_inner_service() {
    let clock = TestClock::new(t0());
    let monitor = cut_off(&clock).await;
    let (mut svc, mut handle) = spawn(&monitor);

    assert_ready_ok!(svc.poll_ready());
    let response = svc.call(get("/api/orders")).await.unwrap();
    assert_pending!(handle.poll_request());
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: serde_json::Value =
        serde_json::from_str(&body_text(response.into_body()).await).unwrap();
    assert_eq!(body["error"], "license_expired");
    assert_eq!(body["status"], "unhealthy");
    assert!(body["message"].as_str().unwrap().contains("grace period"));
}

#[tokio::test(start_paused = true)]
async fn grpc_requests_get_a_trailers_only_unavailable() {
    let clock = TestClock::new(t0());
    let monitor = cut_off(&clock).await;
    let (mut svc, mut handle) = spawn(&monitor);

    assert_ready_ok!(svc.poll_ready());
    let request = Request::post("/grpc.health.v1.Health/Check")
        .header("content-type", "application/grpc")
        .body(String::new())
        .unwrap();
    let response = svc.call(request).await.unwrap();
    assert_pending!(handle.poll_request());
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/grpc");
    common::assert_grpc_status(response.headers(), "14", "license");
    // An empty body that is the end of the stream: hyper sends END_STREAM on HEADERS.
    assert!(response.body().is_end_stream());
    assert_eq!(response.body().size_hint().exact(), Some(0));
}

#[tokio::test(start_paused = true)]
async fn exempt_paths_pass_after_the_cut_off() {
    let clock = TestClock::new(t0());
    let monitor = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(String::new()))
        .clock(clock.clone())
        .fail_closed(true)
        .exempt_path("/ready")
        .start()
        .await
        .unwrap();
    let (mut svc, mut handle) = spawn(&monitor);
    for path in ["/ready"] {
        assert_ready_ok!(svc.poll_ready());
        let response = svc.call(get(path));
        let (seen, send) = handle.next_request().await.unwrap();
        assert_eq!(seen.uri().path(), path);
        send.send_response(Response::new("ok".to_owned()));
        assert_eq!(response.await.unwrap().status(), StatusCode::OK, "{path}");
    }
    // Exact match only, and nothing is exempt by default.
    for path in ["/ready/", "/readyz", "/health", "/metrics", "/"] {
        assert_ready_ok!(svc.poll_ready());
        let response = svc.call(get(path)).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_pending!(handle.poll_request());
    }
}

#[tokio::test(start_paused = true)]
async fn the_cut_off_lands_on_the_grace_boundary_second() {
    let clock = TestClock::new(t0());
    // No license: grace from T0 for one hour.
    let monitor = monitor_with(&clock, LicenseSource::Static(String::new()), 3600).await;
    let mut events = monitor.subscribe();
    let (mut svc, mut handle) = spawn(&monitor);

    // One second before the boundary: still admitted.
    tokio::time::sleep(Duration::from_secs(3599)).await;
    assert_eq!(clock.wall(), t0() + Duration::from_secs(3599));
    assert_ready_ok!(svc.poll_ready());
    let response = svc.call(get("/api"));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(String::new()));
    assert_eq!(response.await.unwrap().status(), StatusCode::OK);

    // The checker wakes at the boundary by itself and publishes the cut-off.
    loop {
        if events.recv().await.unwrap().name() == "license.grace_period_expired" {
            break;
        }
    }
    assert_eq!(clock.wall(), t0() + Duration::from_secs(3600));
    assert_ready_ok!(svc.poll_ready());
    let response = svc.call(get("/api")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_pending!(handle.poll_request());
}

#[tokio::test(start_paused = true)]
async fn a_request_in_flight_across_the_cut_off_completes() {
    let clock = TestClock::new(t0());
    let monitor = monitor_with(&clock, LicenseSource::Static(String::new()), 60).await;
    let mut events = monitor.subscribe();
    let (mut svc, mut handle) = spawn(&monitor);

    // Admitted in grace; the inner service is slow to answer.
    assert_ready_ok!(svc.poll_ready());
    let mut in_flight = tokio_test::task::spawn(svc.call(get("/slow")));
    let (_, send) = handle.next_request().await.unwrap();
    assert_pending!(in_flight.poll());

    // Grace ends while it is in flight.
    loop {
        if events.recv().await.unwrap().name() == "license.grace_period_expired" {
            break;
        }
    }
    assert!(!monitor.verdict().admits());
    assert_ready_ok!(svc.poll_ready());
    let refused = svc.call(get("/new")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);

    // The earlier request still gets the inner service's answer.
    send.send_response(
        Response::builder()
            .status(200)
            .body("done".to_owned())
            .unwrap(),
    );
    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response.into_body()).await, "done");
}

#[tokio::test(start_paused = true)]
async fn the_layer_alone_keeps_the_checker_running() {
    let clock = TestClock::new(t0());
    let monitor = monitor_with(&clock, LicenseSource::Static(String::new()), 3600).await;
    let mut events = monitor.subscribe();
    let layer = monitor.layer();
    drop(monitor);
    let (mut svc, _handle) = mock::spawn_layer::<Request<String>, Response<String>, _>(layer);
    // The monitor handle is gone, but the layer's service is not: grace still ends.
    loop {
        if events.recv().await.unwrap().name() == "license.grace_period_expired" {
            break;
        }
    }
    assert_ready_ok!(svc.poll_ready());
    assert_eq!(
        svc.call(get("/x")).await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(start_paused = true)]
async fn errors_of_the_inner_service_pass_through() {
    let clock = TestClock::new(t0());
    let token = signer().sign(&Claims::new("Acme", T0 as i64 + 86_400));
    let monitor = monitor_with(&clock, LicenseSource::Static(token), 3600).await;
    let (mut svc, mut handle) = spawn(&monitor);
    assert_ready_ok!(svc.poll_ready());
    let response = svc.call(get("/x"));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("boom");
    assert_eq!(response.await.unwrap_err().to_string(), "boom");
}

#[tokio::test(start_paused = true)]
async fn health_service_answers_in_every_state() {
    let clock = TestClock::new(t0());
    let expired_long_ago = signer().sign(&Claims::new("Acme", T0 as i64 - 86_400 * 10));
    let expired_recently = signer().sign(&Claims::new("Acme", T0 as i64 - 60));
    let valid = signer().sign(&Claims::new("Acme", T0 as i64 + 86_400));
    for (token, status, body) in [
        (
            valid,
            200,
            r#"{"status":"healthy","license":{"valid":true,"grace_mode":false}}"#,
        ),
        (
            expired_recently,
            200,
            r#"{"status":"degraded","license":{"valid":false,"grace_mode":true}}"#,
        ),
        (
            expired_long_ago,
            503,
            r#"{"status":"unhealthy","license":{"valid":false,"grace_mode":true}}"#,
        ),
    ] {
        let monitor = monitor_with(&clock, LicenseSource::Static(token), 86_400).await;
        let response = HealthService::new(&monitor)
            .oneshot(get("/health"))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_eq!(body_text(response.into_body()).await, body);
        assert_eq!(monitor.health().to_json(), body);
    }
}

#[test]
fn public_types_are_send_sync_and_clone_as_needed() {
    fn send_sync<T: Send + Sync>() {}
    fn clone<T: Clone>() {}
    send_sync::<LicenseMonitor>();
    clone::<LicenseMonitor>();
    send_sync::<LicenseLayer>();
    clone::<LicenseLayer>();
    send_sync::<License<tower::util::BoxCloneSyncService<Request<String>, Response<String>, ()>>>();
    clone::<License<tower::util::BoxCloneSyncService<Request<String>, Response<String>, ()>>>();
    send_sync::<HealthService>();
    clone::<HealthService>();
    send_sync::<ResponseFuture<std::future::Ready<Result<Response<String>, ()>>>>();
    send_sync::<ResponseBody<String>>();
}

#[tokio::test(start_paused = true)]
async fn require_feature_refuses_with_the_feature_named_and_lets_exempt_paths_through() {
    use tower::Layer as _;
    let clock = TestClock::new(t0());
    let token = signer().sign(&Claims::new("Acme", T0 as i64 + 86_400));
    let monitor = monitor_with(&clock, LicenseSource::Static(token), 3600).await;
    let layer = monitor.require_feature("sso");
    assert_eq!(layer.feature(), "sso");
    let inner = tower::service_fn(|_: Request<String>| async {
        Ok::<_, std::convert::Infallible>(Response::new("inner".to_owned()))
    });
    let svc = layer.layer(inner);

    // HTTP: 403 with the documented JSON, never reaching the inner service.
    let response = svc.clone().oneshot(get("/sso")).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: serde_json::Value =
        serde_json::from_str(&body_text(response.into_body()).await).unwrap();
    assert_eq!(body["error"], "feature_not_licensed");
    assert_eq!(body["feature"], "sso");

    // gRPC (HTTP/2, application/grpc): trailers-only PERMISSION_DENIED.
    let grpc = Request::post("/pkg.Sso/Login")
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .body(String::new())
        .unwrap();
    let response = svc.clone().oneshot(grpc).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    common::assert_grpc_status(response.headers(), "7", "sso");
    assert!(response.body().is_end_stream());

    // The monitor's exempt path passes, feature or not.
    let response = svc.clone().oneshot(get("/ready")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response.into_body()).await, "inner");
}

type FeatureMock = mock::Spawn<RequireFeature<mock::Mock<Request<String>, Response<String>>>>;

fn spawn_feature(
    monitor: &LicenseMonitor,
    feature: &str,
) -> (FeatureMock, mock::Handle<Request<String>, Response<String>>) {
    mock::spawn_layer(RequireFeature::<()>::layer(monitor, feature))
}

#[tokio::test(start_paused = true)]
async fn require_feature_passes_a_licensed_feature_through_untouched() {
    let clock = TestClock::new(t0());
    let mut claims = Claims::new("Acme", T0 as i64 + 86_400 * 90);
    claims.features.push("reports".into());
    let monitor = monitor_with(&clock, LicenseSource::Static(signer().sign(&claims)), 3600).await;
    let (mut svc, mut handle) = spawn_feature(&monitor, "reports");
    assert_eq!(svc.get_ref().feature(), "reports");
    // Readiness is the inner service's.
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let response = svc.call(get("/reports/7"));
    let (seen, send) = handle.next_request().await.unwrap();
    assert_eq!(seen.uri(), "/reports/7");
    send.send_response(Response::new("the report".to_owned()));
    let response = response.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response.into_body()).await, "the report");
}

#[tokio::test(start_paused = true)]
async fn require_feature_refuses_an_unlicensed_feature_without_calling_the_inner_service() {
    let clock = TestClock::new(t0());
    let token = signer().sign(&Claims::new("Acme", T0 as i64 + 86_400 * 90));
    let monitor = monitor_with(&clock, LicenseSource::Static(token), 3600).await;
    let (mut svc, mut handle) = spawn_feature(&monitor, "reports");
    assert_ready_ok!(svc.poll_ready());
    let response = svc.call(get("/reports/7")).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        body_text(response.into_body())
            .await
            .contains("feature_not_licensed")
    );
    // The inner service never saw it.
    handle.allow(1);
    assert_pending!(handle.poll_request());
    // The constructor has License's shape too.
    let direct = RequireFeature::new(
        tower::service_fn(|_: Request<String>| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::new()))
        }),
        &monitor,
        "reports",
    );
    assert_eq!(direct.feature(), "reports");
}
