//! An axum service protected by the license layer, with `/health`.
//!
//! ```text
//! export IOSETU_LICENSE_KEY=$(cargo run -q --example mint -- "Acme Corp" 30)
//! cargo run --example axum
//! curl -i http://127.0.0.1:3000/api/hello
//! curl -i http://127.0.0.1:3000/health
//! curl http://127.0.0.1:3000/metrics
//! ```
//!
//! Set `LOG_FORMAT=json` for JSON log lines, as a log pipeline would ingest them.
//!
//! The license is read the way a deployment provides it: `IOSETU_LICENSE_FILE` (a mounted
//! file, renewed in place) or `IOSETU_LICENSE_KEY`. Stop it with Ctrl-C.

use axum::Router;
use axum::routing::get;
use iosetu_license::{LicenseMonitor, LicenseSource, LicenseState, PublicKey};

/// In a real service: your own public key, never the published dev key.
const PUBLIC_KEY: &str = include_str!("dev-keys/dev.pub.pem");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var("LOG_FORMAT").as_deref() == Ok("json") {
        tracing_subscriber::fmt().json().flatten_event(true).init();
    } else {
        tracing_subscriber::fmt().with_target(false).init();
    }

    let monitor = LicenseMonitor::builder()
        .public_key(PublicKey::from_pem(PUBLIC_KEY)?)
        .source(LicenseSource::from_env())
        .start()
        .await?;

    if monitor.verdict().state != LicenseState::Valid {
        println!(
            "No valid license: the service runs in grace. Mint a development license with\n\
             \n    export IOSETU_LICENSE_KEY=$(cargo run -q --example mint -- \"Acme Corp\" 30)\n\
             \nand start again (or write it to a file named by IOSETU_LICENSE_FILE: a file is\n\
             re-read at every check, no restart needed)."
        );
    }

    let app = Router::new()
        .route("/api/hello", get(|| async { "hello, licensed world\n" }))
        .layer(monitor.layer())
        // Routes added after the layer are not behind it: probes and scrapes keep
        // answering after the cut-off. (Nothing is exempt by default: see exempt_path.)
        .route_service("/health", monitor.health_service())
        .route_service("/metrics", monitor.metrics_service());

    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    // The connections close at the end of the drain period after a cut-off (WebSockets
    // and uploads the layer cannot see).
    axum::serve(monitor.listener(listener), app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
