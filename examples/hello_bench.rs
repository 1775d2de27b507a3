//! The smallest axum service, with or without the license layer, for load tests
//! (`benches/http.sh`). Not an example to copy: it mints its own license.
//!
//! ```text
//! cargo run --release --example hello_bench -- 127.0.0.1:8080 layer
//! cargo run --release --example hello_bench -- 127.0.0.1:8080 bare
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use iosetu_license::{Claims, LicenseMonitor, LicenseSigner, LicenseSource};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let with_layer = match args.next().as_deref() {
        Some("layer") | None => true,
        Some("bare") => false,
        Some(other) => return Err(format!("second argument: layer or bare, not {other}").into()),
    };
    let signer = LicenseSigner::generate()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let monitor = LicenseMonitor::builder()
        .public_key(signer.public_key())
        .source(LicenseSource::Static(
            signer.sign(&Claims::new("Bench", now + 86_400)),
        ))
        .start()
        .await?;
    let router = Router::new().route("/", get(|| async { "hello" }));
    let app = if with_layer {
        router.layer(monitor.layer())
    } else {
        router
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
