//! Draining, in paused time: a response admitted before the cut-off gets the drain period
//! and no more. A stream still open then ends (an error for HTTP, `grpc-status: 14`
//! trailers for gRPC), a response not started is answered with the rejection and its inner
//! future dropped, and a renewal during the drain period stops it.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use iosetu_license::{
    Claims, LicenseMonitor, LicenseSource, LicenseState, ResponseBody, TestClock,
};
use tokio::sync::{mpsc, oneshot};
use tower::{Layer, Service, ServiceExt};

mod common;
use common::{ChannelBody, DAY, HOUR, T0, builder, run_for, signer, t0};

/// A service that answers each request with a [`ChannelBody`] and hands the test its sender.
fn streaming(
    senders: mpsc::UnboundedSender<mpsc::Sender<Bytes>>,
) -> impl Service<
    Request<()>,
    Response = Response<ChannelBody>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<ChannelBody>, Infallible>>,
> + Clone {
    tower::service_fn(move |request: Request<()>| {
        let (tx, rx) = mpsc::channel(1);
        let _ = senders.send(tx);
        // Answers in the request's content type, as a gRPC server (tonic) does.
        let mut response = Response::new(ChannelBody(rx));
        if let Some(content_type) = request.headers().get("content-type") {
            response
                .headers_mut()
                .insert("content-type", content_type.clone());
        }
        std::future::ready(Ok::<_, Infallible>(response))
    })
}

/// No license, one hour of grace from T0, the default 60 s drain period.
async fn monitor(clock: &TestClock) -> LicenseMonitor {
    builder(clock, LicenseSource::Static(String::new()))
        .grace_period(Duration::from_secs(HOUR as u64))
        .exempt_path("/ready")
        .start()
        .await
        .unwrap()
}

fn grpc_request() -> Request<()> {
    Request::builder()
        .version(Version::HTTP_2)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap()
}

async fn open(
    monitor: &LicenseMonitor,
    request: Request<()>,
) -> (ResponseBody<ChannelBody>, mpsc::Sender<Bytes>) {
    let (senders, mut rx) = mpsc::unbounded_channel();
    let response = monitor
        .layer()
        .layer(streaming(senders))
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    (response.into_body(), rx.recv().await.unwrap())
}

/// How a body cut by the drain ends, as `next` shows it.
const DRAINED: &str = "error:the license's drain period after the cut-off is over: response ended";

/// The next frame, as text: `data:…`, `trailers:…`, `error:…`, or `end`.
async fn next(body: &mut ResponseBody<ChannelBody>) -> String {
    match body.frame().await {
        None => "end".into(),
        Some(Err(e)) => format!("error:{e}"),
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) => format!("data:{}", String::from_utf8_lossy(&data)),
            Err(frame) => format!("trailers:{:?}", frame.into_trailers().unwrap()),
        },
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_open_at_the_cut_off_ends_with_an_error_after_the_drain_period() {
    let clock = TestClock::new(t0());
    let monitor = monitor(&clock).await;
    run_for(HOUR - 10).await;
    let (mut body, tx) = open(&monitor, Request::new(())).await;
    tx.send(Bytes::from_static(b"before")).await.unwrap();
    assert_eq!(next(&mut body).await, "data:before");

    // The cut-off: new requests are refused, the open stream carries on for the drain
    // period.
    run_for(10 + 30).await;
    assert_eq!(monitor.verdict().state, LicenseState::GraceExpired);
    tx.send(Bytes::from_static(b"draining")).await.unwrap();
    assert_eq!(next(&mut body).await, "data:draining");

    // Idle when the drain period ends: it is woken and ends, as a failure.
    let ended = tokio::spawn(async move { (next(&mut body).await, body) });
    run_for(31).await;
    let (frame, body) = ended.await.unwrap();
    assert_eq!(frame, DRAINED);
    assert!(body.is_end_stream());
    // The stream's producer sees the stream is gone.
    assert!(tx.send(Bytes::from_static(b"after")).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_busy_stream_is_cut_at_the_next_frame_after_the_drain_period() {
    let clock = TestClock::new(t0());
    let monitor = monitor(&clock).await;
    run_for(HOUR - 10).await;
    let (mut body, tx) = open(&monitor, Request::new(())).await;
    run_for(10 + 61).await;
    // A frame is ready, but the drain period is over: it is not delivered.
    tx.send(Bytes::from_static(b"too late")).await.unwrap();
    assert_eq!(next(&mut body).await, DRAINED);
    assert_eq!(next(&mut body).await, "end");
}

#[tokio::test(start_paused = true)]
async fn a_grpc_stream_ends_with_unavailable_trailers() {
    let clock = TestClock::new(t0());
    let monitor = monitor(&clock).await;
    run_for(HOUR - 10).await;
    let (mut body, _tx) = open(&monitor, grpc_request()).await;
    let ended = tokio::spawn(async move { next(&mut body).await });
    run_for(10 + 61).await;
    let frame = ended.await.unwrap();
    assert!(frame.starts_with("trailers:"), "{frame}");
    assert!(frame.contains(r#""grpc-status": "14""#), "{frame}");
    assert!(frame.contains("license"), "{frame}");
}

#[tokio::test(start_paused = true)]
async fn an_http2_stream_that_is_not_grpc_ends_with_an_error_not_trailers() {
    let clock = TestClock::new(t0());
    let monitor = monitor(&clock).await;
    run_for(HOUR - 10).await;
    // HTTP/2, but an event stream: whether to end with trailers is the response's call.
    let request = Request::builder()
        .version(Version::HTTP_2)
        .header("content-type", "text/event-stream")
        .body(())
        .unwrap();
    let (mut body, _tx) = open(&monitor, request).await;
    let ended = tokio::spawn(async move { next(&mut body).await });
    run_for(10 + 61).await;
    assert_eq!(ended.await.unwrap(), DRAINED);
}

#[tokio::test(start_paused = true)]
async fn an_http2_request_not_answered_by_the_end_of_the_drain_gets_a_503_grpc_clients_read_too() {
    let clock = TestClock::new(t0());
    let monitor = monitor(&clock).await;
    run_for(HOUR - 10).await;
    let never = tower::service_fn(|_request: Request<()>| async {
        std::future::pending::<()>().await;
        Ok::<_, Infallible>(Response::new(String::new()))
    });
    let response = tokio::spawn(monitor.layer().layer(never).oneshot(grpc_request()));
    run_for(10 + 61).await;
    let response = response.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["content-type"], "application/json");
    common::assert_grpc_status(response.headers(), "14", "license");
}

#[tokio::test(start_paused = true)]
async fn a_response_not_started_by_the_end_of_the_drain_is_refused_and_dropped() {
    let clock = TestClock::new(t0());
    let monitor = monitor(&clock).await;
    run_for(HOUR - 10).await;
    let (dropped_tx, dropped) = oneshot::channel::<()>();
    let mut dropped_tx = Some(dropped_tx);
    let slow = tower::service_fn(move |_request: Request<()>| {
        let guard = dropped_tx.take();
        async move {
            // Never answers; dropping the future drops `guard`.
            std::future::pending::<()>().await;
            drop(guard);
            Ok::<_, Infallible>(Response::new(String::new()))
        }
    });
    let service = monitor.layer().layer(slow);
    let response = tokio::spawn(service.oneshot(Request::new(())));
    run_for(10 + 30).await;
    assert!(
        !response.is_finished(),
        "admitted: it runs during the drain period"
    );
    run_for(31).await;
    let response = response.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(dropped.await.is_err(), "the inner future was dropped");
}

/// No license in a file that a test replaces (checked on `check_now` only), one hour of
/// grace from T0.
async fn renewable(clock: &TestClock) -> (tempfile::TempDir, std::path::PathBuf, LicenseMonitor) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    std::fs::write(&path, "").unwrap();
    let monitor = builder(clock, LicenseSource::File(path.clone()))
        .grace_period(Duration::from_secs(HOUR as u64))
        .watch_file(false)
        .file_poll_interval(None)
        .start()
        .await
        .unwrap();
    (dir, path, monitor)
}

#[tokio::test(start_paused = true)]
async fn a_renewal_during_the_drain_period_stops_the_drain() {
    let clock = TestClock::new(t0());
    let (_dir, path, monitor) = renewable(&clock).await;
    run_for(HOUR - 10).await;
    let (mut body, tx) = open(&monitor, Request::new(())).await;
    run_for(10 + 30).await;
    assert_eq!(monitor.verdict().state, LicenseState::GraceExpired);
    std::fs::write(&path, signer().sign(&Claims::new("Acme", T0 + 90 * DAY))).unwrap();
    assert_eq!(monitor.check_now().await.state, LicenseState::Valid);
    run_for(HOUR).await;
    tx.send(Bytes::from_static(b"still here")).await.unwrap();
    assert_eq!(next(&mut body).await, "data:still here");
}

#[tokio::test(start_paused = true)]
async fn streams_on_exempt_paths_opened_after_the_cut_off_are_never_cut() {
    // (One opened before the cut-off was admitted like any other request, without a look
    // at its path, and is drained like any other: see `drain_period`.)
    let clock = TestClock::new(t0());
    let monitor = monitor(&clock).await;
    run_for(HOUR + 1).await;
    assert_eq!(monitor.verdict().state, LicenseState::GraceExpired);
    let (mut body, tx) = open(&monitor, Request::get("/ready").body(()).unwrap()).await;
    run_for(HOUR).await;
    tx.send(Bytes::from_static(b"probe")).await.unwrap();
    assert_eq!(next(&mut body).await, "data:probe");
}

mod connections {
    //! `LicensedIo` in paused time, over an in-memory pipe: which connections the end of a
    //! drain period cuts (those that carried an upgrade a gate admitted), and what such a
    //! connection does then, to the second.

    use std::time::Duration;

    use http::{Request, Response, StatusCode};
    use iosetu_license::{Claims, LicenseState, LicensedIo, TestClock};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
    use tower::Layer;

    use super::common::{DAY, HOUR, T0, run_for, signer, t0};
    use super::{monitor, renewable};

    /// A connection through `monitor`'s wrapper, and the client's end of it.
    fn connect(
        monitor: &iosetu_license::LicenseMonitor,
    ) -> (LicensedIo<DuplexStream>, DuplexStream) {
        let (server, client) = duplex(1024);
        (LicensedIo::new(server, monitor), client)
    }

    /// A connection served by hyper with the license layer, that upgrades: the client's
    /// end, and the server's end of the upgraded connection (what a WebSocket handler
    /// reads and writes), both over the monitor's wrapper.
    async fn upgraded(
        monitor: &iosetu_license::LicenseMonitor,
    ) -> (
        hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>,
        DuplexStream,
    ) {
        let (server, mut client) = connect(monitor);
        let (handed, upgraded) = tokio::sync::oneshot::channel();
        let handed = std::sync::Arc::new(std::sync::Mutex::new(Some(handed)));
        let service = monitor.layer().layer(tower::service_fn(
            move |mut request: Request<hyper::body::Incoming>| {
                let handed = handed.lock().unwrap().take();
                async move {
                    let on_upgrade = hyper::upgrade::on(&mut request);
                    tokio::spawn(async move {
                        let io = on_upgrade.await.unwrap();
                        let _ = handed.unwrap().send(hyper_util::rt::TokioIo::new(io));
                    });
                    let mut response = Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    response
                        .headers_mut()
                        .insert("connection", "upgrade".parse().unwrap());
                    response
                        .headers_mut()
                        .insert("upgrade", "test".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(response)
                }
            },
        ));
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(
                    hyper_util::rt::TokioIo::new(server),
                    hyper_util::service::TowerToHyperService::new(service),
                )
                .with_upgrades(),
        );
        client
            .write_all(
                b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: test\r\n\r\n",
            )
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0; 1];
            client.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        (upgraded.await.unwrap(), client)
    }

    #[tokio::test(start_paused = true)]
    async fn an_upgraded_connection_stops_reading_at_the_end_of_the_drain_and_closes_a_second_later()
     {
        let clock = TestClock::new(t0());
        let monitor = monitor(&clock).await;
        run_for(HOUR - 10).await;
        let (mut server, mut client) = upgraded(&monitor).await;
        client.write_all(b"before").await.unwrap();
        let mut buf = [0; 16];
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"before");

        // Cut off, in the drain period: the connection carries on.
        run_for(10 + 30).await;
        assert_eq!(monitor.verdict().state, LicenseState::GraceExpired);
        client.write_all(b"draining").await.unwrap();
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"draining");

        // A read waiting when the drain period ends (an idle WebSocket): it is woken, and
        // reads nothing more, though the client sends.
        let reader = tokio::spawn(async move {
            let mut buf = [0; 16];
            let read = server.read(&mut buf).await;
            (read.map_err(|e| e.kind()), server)
        });
        tokio::time::sleep(Duration::from_millis(30_500)).await;
        client.write_all(b"after").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!reader.is_finished(), "nothing read after the drain");
        // A second after the end of the drain the connection fails, and the server drops
        // it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (read, mut server) = reader.await.unwrap();
        assert_eq!(read, Err(std::io::ErrorKind::ConnectionAborted));
        let write = server.write_all(b"late").await.unwrap_err();
        assert_eq!(write.kind(), std::io::ErrorKind::ConnectionAborted);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_connection_still_writes_its_final_answer_for_a_second_from_the_drains_end() {
        let clock = TestClock::new(t0());
        let monitor = monitor(&clock).await;
        let (mut server, mut client) = upgraded(&monitor).await;
        // (Grace ends at an hour, and the drain period a minute later.)
        run_for(HOUR + 60).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Within the second after the cut: the final answer (trailers, a 503) goes out.
        server.write_all(b"grpc-status: 14").await.unwrap();
        server.flush().await.unwrap();
        let mut buf = [0; 32];
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"grpc-status: 14");
        // The second counts from the drain's end, not from the connection's first write
        // after it: a handler that pushes now and then gets no burst out later.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let write = server.write_all(b"late").await.unwrap_err();
        assert_eq!(write.kind(), std::io::ErrorKind::ConnectionAborted);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_carried_no_upgrade_is_never_closed() {
        // Free routes, `/health`, a pooled client's keep-alive connection: what no gate
        // admitted an upgrade on goes on across the cut-off.
        let clock = TestClock::new(t0());
        let monitor = monitor(&clock).await;
        let (mut server, mut client) = connect(&monitor);
        run_for(HOUR + 61).await;
        assert_eq!(monitor.verdict().state, LicenseState::GraceExpired);
        run_for(HOUR).await;
        client.write_all(b"GET /").await.unwrap();
        let mut buf = [0; 16];
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET /");
        server.write_all(b"200").await.unwrap();
        assert!(!server.is_cut());
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_during_the_drain_leaves_upgraded_connections_open() {
        let clock = TestClock::new(t0());
        let (_dir, path, monitor) = renewable(&clock).await;
        let (mut server, mut client) = upgraded(&monitor).await;
        run_for(HOUR + 30).await;
        assert_eq!(monitor.verdict().state, LicenseState::GraceExpired);
        std::fs::write(&path, signer().sign(&Claims::new("Acme", T0 + 90 * DAY))).unwrap();
        assert_eq!(monitor.check_now().await.state, LicenseState::Valid);
        run_for(HOUR).await;
        client.write_all(b"still here").await.unwrap();
        let mut buf = [0; 16];
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"still here");
    }
}
