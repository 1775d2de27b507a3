//! A tonic gRPC server (the standard health service, so no protoc is needed) behind the
//! license layer.
//!
//! ```text
//! export IOSETU_LICENSE_KEY=$(cargo run -q --example mint -- "Acme Corp" 30)
//! cargo run --example tonic
//! grpcurl -plaintext 127.0.0.1:50051 grpc.health.v1.Health/Check
//! curl -s 127.0.0.1:8080/health; curl -s 127.0.0.1:8080/metrics
//! ```
//!
//! `/health` and `/metrics` are plain HTTP, so they are served beside the gRPC server on
//! a port of their own (`HTTP_ADDR`, default 127.0.0.1:8080), outside the license layer:
//! they keep answering after the cut-off, which is when an operator needs them.
//!
//! After the grace period every call fails with `UNAVAILABLE` and a message naming the
//! license, except `grpc.health.v1.Health/Check`: one tonic layer wraps every service,
//! so the probe's path is exempted explicitly (nothing is exempt by default), and a
//! Kubernetes gRPC probe keeps answering. `Health/Watch` stays behind the license.
//! Stop it with Ctrl-C.

use iosetu_license::{LicenseMonitor, LicenseSource, LicenseState, PublicKey};
use tonic_health::ServingStatus;

/// In a real service: your own public key, never the published dev key.
const PUBLIC_KEY: &str = include_str!("dev-keys/dev.pub.pem");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_target(false).init();

    let monitor = LicenseMonitor::builder()
        .public_key(PublicKey::from_pem(PUBLIC_KEY)?)
        .source(LicenseSource::from_env())
        // The layer below wraps every gRPC service: let the health probe through.
        .exempt_path("/grpc.health.v1.Health/Check")
        .start()
        .await?;
    // Say what the service will really do, not what it would like to.
    let verdict = monitor.verdict();
    match verdict.state {
        LicenseState::Valid => println!(
            "License valid: {} days left; gRPC calls are served.",
            verdict.days_remaining().unwrap_or_default()
        ),
        LicenseState::Grace => println!(
            "No valid license ({}): in grace, gRPC calls are still served until {}.",
            verdict.reason.as_ref().map_or("?", |r| r.code()),
            verdict
                .grace_ends_at
                .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                .unwrap_or_default()
        ),
        _ => println!(
            "No valid license ({}) and no grace left: every gRPC call except \
             Health/Check is refused with UNAVAILABLE.",
            verdict.reason.as_ref().map_or("?", |r| r.code())
        ),
    }
    if verdict.state != LicenseState::Valid {
        println!(
            "Mint a license with\n\
             \n    export IOSETU_LICENSE_KEY=$(cargo run -q --example mint -- \"Acme Corp\" 30)\n"
        );
    }

    // /health and /metrics beside the gRPC server, outside the layer.
    let http_addr = std::env::var("HTTP_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let ops = axum::Router::new()
        .route_service("/health", monitor.health_service())
        .route_service("/metrics", monitor.metrics_service());
    let listener = tokio::net::TcpListener::bind(&http_addr).await?;
    println!("/health and /metrics on http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, ops).await });

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;

    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:50051".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("gRPC health service on {}", listener.local_addr()?);
    // Through the monitor's listener (feature `tonic`): at the end of a drain period after
    // a cut-off the connections close, and with them the client's half of any stream.
    tonic::transport::Server::builder()
        .layer(monitor.layer())
        .add_service(health)
        .serve_with_incoming_shutdown(monitor.listener(listener).into_incoming(), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
