//! A tonic gRPC server (the standard health service, so no protoc is needed) behind the
//! license layer.
//!
//! ```text
//! export IOSETU_LICENSE_KEY=$(cargo run -q --example mint -- "Acme Corp" 30)
//! cargo run --example tonic
//! grpcurl -plaintext 127.0.0.1:50051 grpc.health.v1.Health/Check
//! ```
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
    if monitor.verdict().state != LicenseState::Valid {
        println!(
            "No valid license: running in grace. Mint one with\n\
             \n    export IOSETU_LICENSE_KEY=$(cargo run -q --example mint -- \"Acme Corp\" 30)\n"
        );
    }

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;

    let addr = std::env::var("ADDR")
        .unwrap_or_else(|_| "127.0.0.1:50051".to_owned())
        .parse()?;
    println!("gRPC health service on {addr}");
    tonic::transport::Server::builder()
        .layer(monitor.layer())
        .add_service(health)
        .serve_with_shutdown(addr, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
