//! Helpers for `tests/cut_scope.rs`, which proves that the cut reaches what the license
//! protects and nothing else: a monitor on a license file in real time with a short drain
//! period, the two ways to take a paid thing away (the cut-off, and a renewal without the
//! feature), axum and tonic servers served through `monitor.listener(..)`, WebSocket
//! clients over HTTP/1.1 and HTTP/2 extended CONNECT, bounded HTTP requests, and a gRPC
//! service written with a raw-bytes codec (copied from `tests/connections.rs`, plus a
//! unary method).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message as AxumMessage, WebSocket};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use iosetu_license::{Claims, LicenseMonitor, LicenseSigner, LicenseSource, LicenseState};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{DAY, now};

/// The drain period: short, because this runs in real time over real sockets, and long
/// enough that what a test does within it is done on a loaded machine.
pub const DRAIN: Duration = Duration::from_millis(1_000);
/// Long enough after the cut-off (or the renewal) for the drain period to be over.
pub const AFTER_DRAIN: Duration = Duration::from_millis(1_600);
/// Long enough after the cut-off for a connection the drain closes to be closed
/// (`CLOSE_AFTER` is 1 s), with half a second to spare.
pub const WELL_AFTER_DRAIN: Duration = Duration::from_millis(2_500);
/// How many messages an attacker tries to get through after the drain.
pub const ATTEMPTS: usize = 20;
/// How long anything that must happen may take on a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(5);
/// How long to wait for an echo that must not come (closed, failed or silent).
pub const NO_ECHO: Duration = Duration::from_secs(1);
/// The paid feature.
pub const FEATURE: &str = "reports";

pub fn signer() -> LicenseSigner {
    LicenseSigner::from_seed([34; 32])
}

pub fn write_license(path: &Path, exp: i64, features: &[&str]) {
    let mut claims = Claims::new("Acme", exp);
    claims.features = features.iter().map(|f| f.to_string()).collect();
    std::fs::write(path, signer().sign(&claims) + "\n").unwrap();
}

/// A license file in a temporary directory (kept as long as this is), and a monitor on it.
pub struct Licensed {
    pub _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub monitor: LicenseMonitor,
}

/// A license valid for 90 days with `features`, and a monitor on it with the short drain.
pub async fn licensed(features: &[&str]) -> Licensed {
    licensed_exempting(features, &[]).await
}

/// The same, with the monitor exempting `exempt`.
pub async fn licensed_exempting(features: &[&str], exempt: &[&str]) -> Licensed {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    write_license(&path, now() + 90 * DAY, features);
    let mut builder = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::File(path.clone()))
        .clock(super::SettledClock)
        .drain_period(DRAIN);
    for path in exempt {
        builder = builder.exempt_path(*path);
    }
    let monitor = builder.start().await.unwrap();
    assert!(monitor.verdict().is_valid());
    Licensed {
        _dir: dir,
        path,
        monitor,
    }
}

impl Licensed {
    /// The cut-off: the license replaced with one expired ten days ago, checked. Returns
    /// the instant the check returned (the drain period started before it).
    pub async fn cut_off(&self) -> Instant {
        write_license(&self.path, now() - 10 * DAY, &[]);
        assert_eq!(
            self.monitor.check_now().await.state,
            LicenseState::GraceExpired
        );
        Instant::now()
    }

    /// A renewal that takes [`FEATURE`] away: valid for 90 days, with `["other"]` only.
    /// Returns the instant the check returned (the feature's drain started before it).
    pub async fn remove_feature(&self) -> Instant {
        write_license(&self.path, now() + 90 * DAY, &["other"]);
        let verdict = self.monitor.check_now().await;
        assert!(
            verdict.is_valid() && !verdict.has_feature(FEATURE),
            "{verdict:?}"
        );
        Instant::now()
    }
}

/// `app` served by `axum::serve` on 127.0.0.1, its connections through the monitor's
/// listener.
pub async fn serve_axum(monitor: &LicenseMonitor, app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = monitor.listener(listener);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The client's address as the server saw it (`ConnectInfo<Peer>`): which connection a
/// request came on.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, iosetu_license::LicensedListener<TcpListener>>,
    > for Peer
{
    fn connect_info(
        stream: axum::serve::IncomingStream<'_, iosetu_license::LicensedListener<TcpListener>>,
    ) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// [`serve_axum`], with `ConnectInfo<Peer>` for the handlers.
pub async fn serve_axum_with_peers(monitor: &LicenseMonitor, app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = monitor.listener(listener);
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
            .await
            .unwrap()
    });
    addr
}

/// Which of the monitor's layers wraps a tonic server.
#[derive(Debug, Clone, Copy)]
pub enum Gate {
    /// `monitor.layer()`.
    License,
    /// `monitor.require_feature(FEATURE)`.
    Feature,
}

/// `chat` (and, with `health`, the standard gRPC health service reporting SERVING) on a
/// tonic server on 127.0.0.1 behind `gate`, its connections through the monitor's
/// listener.
pub async fn serve_tonic(
    monitor: &LicenseMonitor,
    gate: Gate,
    chat: grpc::Chat,
    health: bool,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = monitor.listener(listener).into_incoming();
    let layer = match gate {
        Gate::License => tower::util::Either::Left(monitor.layer()),
        Gate::Feature => tower::util::Either::Right(monitor.require_feature(FEATURE)),
    };
    let mut router = tonic::transport::Server::builder()
        .layer(layer)
        .add_service(chat);
    if health {
        let (reporter, health_server) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        router = router.add_service(health_server);
    }
    tokio::spawn(async move { router.serve_with_incoming(incoming).await.unwrap() });
    addr
}

/// A tonic channel (HTTP/2, one connection) to `addr`.
pub async fn grpc_channel(addr: SocketAddr) -> tonic::transport::Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    timeout(PATIENCE, endpoint.connect())
        .await
        .expect("connected in time")
        .unwrap()
}

/// Echoes every message, as long as the connection carries them.
pub async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        if matches!(message, AxumMessage::Close(_)) || socket.send(message).await.is_err() {
            return;
        }
    }
}

/// Only sends: a message at once, then one every `pause`, never reading; ends when a send
/// fails.
pub async fn push(mut socket: WebSocket, pause: Duration) {
    for i in 0u64.. {
        if socket
            .send(AxumMessage::text(format!("push {i}")))
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(pause).await;
    }
}

pub type H1WebSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub type H2WebSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// A WebSocket over HTTP/1.1 `Upgrade` to `ws://addr{path}`, on a connection of its own.
pub async fn websocket_h1(addr: SocketAddr, path: &str) -> H1WebSocket {
    let (ws, response) = timeout(
        PATIENCE,
        tokio_tungstenite::connect_async(format!("ws://{addr}{path}")),
    )
    .await
    .expect("the WebSocket opened in time")
    .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

/// A WebSocket over HTTP/2 extended CONNECT (RFC 8441) to `addr{path}`, on an HTTP/2
/// connection of its own, and the connection's request sender (kept by the caller, so
/// the connection stays as the client left it).
pub async fn websocket_h2(
    addr: SocketAddr,
    path: &str,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    H2WebSocket,
) {
    websocket_h2_over(TcpStream::connect(addr).await.unwrap(), addr, path).await
}

/// [`websocket_h2`] over a connection already open (and perhaps already written to: a
/// PROXY protocol line, say).
pub async fn websocket_h2_over(
    tcp: TcpStream,
    addr: SocketAddr,
    path: &str,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    H2WebSocket,
) {
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}{path}"))
        .header("sec-websocket-version", "13")
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let mut response = timeout(PATIENCE, sender.send_request(request))
        .await
        .expect("the CONNECT was answered in time")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let upgraded = hyper::upgrade::on(&mut response).await.unwrap();
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    (sender, ws)
}

/// Sends up to `attempts` messages on a WebSocket, one at a time, and counts the echoes
/// that come back, each within `wait`; stops at the first that does not (closed, failed
/// or silent).
pub async fn echoes<S>(
    ws: &mut WebSocketStream<S>,
    label: &str,
    attempts: usize,
    wait: Duration,
) -> usize
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut echoed = 0;
    for i in 0..attempts {
        let text = format!("{label} {i}");
        if !matches!(
            timeout(wait, ws.send(Message::text(text.clone()))).await,
            Ok(Ok(()))
        ) {
            break;
        }
        match timeout(wait, ws.next()).await {
            Ok(Some(Ok(Message::Text(echo)))) if echo.as_str() == text => echoed += 1,
            _ => break,
        }
    }
    echoed
}

/// A hyper-util pooled client over HTTP/1.1 (or HTTP/2 only), which never retries a
/// request on its own: what a test sees is the first attempt.
pub fn pooled_client(
    http2: bool,
) -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .retry_canceled_requests(false)
        .build_http::<Empty<Bytes>>()
}

/// `method addr{path}` on `client`: the status and the whole body, or the client's error,
/// within [`PATIENCE`].
pub async fn fetch_with(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Empty<Bytes>,
    >,
    method: Method,
    addr: SocketAddr,
    path: &str,
) -> Result<(StatusCode, Bytes), String> {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap();
    let exchange = async {
        let response = client
            .request(request)
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

/// The status of `method addr{path}`, from a new client (a new connection).
pub async fn status(method: Method, addr: SocketAddr, path: &str) -> StatusCode {
    fetch_with(&pooled_client(false), method, addr, path)
        .await
        .unwrap()
        .0
}

/// Polls `done` every 10 ms for up to [`PATIENCE`].
pub async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "not done in {PATIENCE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub mod grpc {
    //! A gRPC service with a bidirectional method (`Talk`) and a unary one (`Echo`),
    //! written against tonic's own server and client machinery with a codec of raw bytes
    //! (no protobuf code generation). `Talk` is the one of `tests/connections.rs`.

    use std::convert::Infallible;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use bytes::{Buf, BufMut, Bytes};
    use futures_util::StreamExt;
    use futures_util::future::BoxFuture;
    use futures_util::stream::BoxStream;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::server::{Grpc, NamedService, StreamingService};
    use tonic::{Status, Streaming};

    /// Messages as they are on the wire.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct RawCodec;

    impl Codec for RawCodec {
        type Encode = Bytes;
        type Decode = Bytes;
        type Encoder = RawCodec;
        type Decoder = RawCodec;
        fn encoder(&mut self) -> RawCodec {
            RawCodec
        }
        fn decoder(&mut self) -> RawCodec {
            RawCodec
        }
    }

    impl Encoder for RawCodec {
        type Item = Bytes;
        type Error = Status;
        fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put(item);
            Ok(())
        }
    }

    impl Decoder for RawCodec {
        type Item = Bytes;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
            Ok(Some(src.copy_to_bytes(src.remaining())))
        }
    }

    /// The bidirectional method.
    pub const TALK: &str = "/test.Chat/Talk";
    /// The unary method.
    pub const ECHO: &str = "/test.Chat/Echo";

    /// `Talk`: reads the client's messages in a task of its own, counting them in
    /// `processed`, and keeps its own stream of answers open (empty). `Echo`: counts the
    /// call in `started`, waits `delay`, counts it in `finished` and answers the request.
    #[derive(Clone, Default)]
    pub struct Chat {
        pub processed: Arc<AtomicUsize>,
        pub started: Arc<AtomicUsize>,
        pub finished: Arc<AtomicUsize>,
        pub delay: Duration,
    }

    impl NamedService for Chat {
        const NAME: &'static str = "test.Chat";
    }

    impl StreamingService<Bytes> for Chat {
        type Response = Bytes;
        type ResponseStream = BoxStream<'static, Result<Bytes, Status>>;
        type Future = std::future::Ready<Result<tonic::Response<Self::ResponseStream>, Status>>;

        fn call(&mut self, request: tonic::Request<Streaming<Bytes>>) -> Self::Future {
            let processed = Arc::clone(&self.processed);
            let (answers, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Status>>(1);
            let mut incoming = request.into_inner();
            tokio::spawn(async move {
                // Held for as long as the client's stream lasts: the answers stay open.
                let _answers = answers;
                while let Some(Ok(_)) = incoming.next().await {
                    processed.fetch_add(1, Ordering::SeqCst);
                }
            });
            let answers = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|answer| (answer, rx))
            });
            std::future::ready(Ok(tonic::Response::new(answers.boxed())))
        }
    }

    /// `Echo`, as the unary service tonic's machinery takes.
    struct Echo(Chat);

    impl tower::Service<tonic::Request<Bytes>> for Echo {
        type Response = tonic::Response<Bytes>;
        type Error = Status;
        type Future = BoxFuture<'static, Result<tonic::Response<Bytes>, Status>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
            let chat = self.0.clone();
            Box::pin(async move {
                chat.started.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(chat.delay).await;
                chat.finished.fetch_add(1, Ordering::SeqCst);
                Ok(tonic::Response::new(request.into_inner()))
            })
        }
    }

    impl tower::Service<http::Request<tonic::body::Body>> for Chat {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
            let chat = self.clone();
            Box::pin(async move {
                let path = request.uri().path().to_owned();
                Ok(match path.as_str() {
                    TALK => Grpc::new(RawCodec).streaming(chat, request).await,
                    ECHO => Grpc::new(RawCodec).unary(Echo(chat), request).await,
                    _ => Status::unimplemented(path).into_http(),
                })
            })
        }
    }

    /// One `Echo` call on `channel`.
    pub async fn echo(
        channel: tonic::transport::Channel,
        message: &'static [u8],
    ) -> Result<Bytes, Status> {
        let mut client = tonic::client::Grpc::new(channel);
        client
            .ready()
            .await
            .map_err(|e| Status::unknown(format!("not ready: {e:?}")))?;
        client
            .unary(
                tonic::Request::new(Bytes::from_static(message)),
                http::uri::PathAndQuery::from_static(ECHO),
                RawCodec,
            )
            .await
            .map(tonic::Response::into_inner)
    }
}
