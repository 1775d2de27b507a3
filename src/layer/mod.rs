//! Middleware that enforces the license on any tower HTTP service.
//!
//! [`LicenseLayer`] wraps a service in [`License`]: while the license is valid or in
//! grace, requests pass through untouched; once grace has expired, new requests get
//! `503 Service Unavailable` with a JSON body (`{"error":"license_expired",…}`), or, for
//! gRPC requests (`content-type: application/grpc…`), a trailers-only response with
//! `grpc-status: 14` (UNAVAILABLE). Responses already admitted get the drain period, then
//! end. Nothing is exempt by default: mount `/health` and `/metrics` outside the layer.
//!
//! [`RequireFeatureLayer`] (from [`LicenseMonitor::require_feature`](crate::LicenseMonitor::require_feature))
//! does the same for one feature: 403 `feature_not_licensed` while no license in force
//! grants it, so routes without it are a free tier and routes with it the paid one.
//!
//! What a gate admitted is what its drain ends: responses, requests not yet answered
//! (with the gate's own refusal: a feature's drain answers 403, never "license
//! expired"), and the request bodies of axum and tonic requests. An upgraded connection
//! (a WebSocket, a tunnel) is out of a layer's reach: the gate marks it, and
//! [`LicensedListener`] (`monitor.listener(tcp)`, [`connection`]) closes it at the end
//! of that gate's drain period, and closes no other; serve through it.
//!
//! Both work with axum's `Router::layer` and tonic's `Server::builder().layer`; the
//! service's error type is the inner service's, so it never turns an infallible service
//! fallible.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use iosetu_license::{LicenseLayer, LicenseMonitor, LicenseSigner, LicenseSource};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let signer = LicenseSigner::generate()?;
//! let monitor = LicenseMonitor::builder()
//!     .public_key(signer.public_key()) // in real code: PublicKey::from_pem(include_str!(..))?
//!     .source(LicenseSource::from_env())
//!     .start()
//!     .await?;
//!
//! let app: Router = Router::new()
//!     .route("/api/orders", get(|| async { "orders" }))
//!     .layer(LicenseLayer::new(&monitor))
//!     // Added after the layer, so not behind it: probes answer after the cut-off.
//!     .route_service("/health", monitor.health_service());
//! # let _ = app;
//! # Ok(()) }
//! ```

mod body;
pub mod connection;
pub(crate) mod drain;
mod feature;
mod future;
#[allow(clippy::module_inception)]
pub(crate) mod rejection;
mod request_body;
mod service;
pub(crate) mod shared;

pub use body::{BodyError, BoxError, Drained, ResponseBody};
#[cfg(feature = "tonic")]
pub use connection::LicensedIncoming;
pub use connection::{LicensedIo, LicensedListener};
pub use feature::{RequireFeature, RequireFeatureLayer};
pub use future::ResponseFuture;
pub use service::{License, LicenseLayer};
