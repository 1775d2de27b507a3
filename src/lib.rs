//! Offline, signed license enforcement for services built on tower (axum, tonic, hyper).
//!
//! A vendor compiles its Ed25519 public key into the service; the customer's operators
//! provide a license (a compact JWS, `alg: EdDSA`) through `IOSETU_LICENSE_KEY` or a
//! mounted file named by `IOSETU_LICENSE_FILE`. A [`LicenseMonitor`] verifies it, re-checks
//! it on a timer, warns before expiry, keeps serving through a grace period, then marks
//! the service as refusing new requests; it detects a clock set back, and reports all of
//! it as [`LicenseEvent`]s through `tracing` and to subscribers. [`LicenseLayer`] puts any
//! tower HTTP service (axum, tonic) behind the verdict at the cost of one lock-free load
//! per request, and [`HealthService`] answers `/health`.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime, UNIX_EPOCH};
//! use iosetu_license::{Claims, LicenseMonitor, LicenseSigner, LicenseSource, LicenseState};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The vendor's side (normally the CLI; `LicenseSigner` needs feature `issue`): a key
//! // pair and a license valid for 90 days.
//! let signer = LicenseSigner::generate()?;
//! let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
//! let token = signer.sign(&Claims::new("Acme Corp", now + 90 * 86_400));
//!
//! // The service's side. In real code the key is `include_str!`-ed and the source is the
//! // default, `LicenseSource::from_env()`.
//! let monitor = LicenseMonitor::builder()
//!     .public_key(signer.public_key())
//!     .source(LicenseSource::Static(token))
//!     .grace_period(Duration::from_secs(24 * 3600))
//!     .start()
//!     .await?;
//!
//! let verdict = monitor.verdict();
//! assert_eq!(verdict.state, LicenseState::Valid);
//! assert_eq!(verdict.claims.as_ref().unwrap().customer, "Acme Corp");
//! assert!(matches!(verdict.days_remaining(), Some(89..=90)));
//! assert_eq!(
//!     monitor.health().to_json(),
//!     r#"{"status":"healthy","license":{"valid":true,"grace_mode":false}}"#
//! );
//! # Ok(()) }
//! ```
//!
//! # The guide
//!
//! The README is the short version. [`guide`] holds the long explanations, one page per
//! subject (the repository's `docs/`): protecting a service in depth, renewing and
//! license sets, notices, usage reports, instance limits, every event and metric, every
//! clock rule, the performance analysis and the security analysis.
//!
//! # How it is put together
//!
//! * [`token`]: decoding and strict verification of tokens ([`LicenseVerifier`]), with
//!   stable reason codes for every refusal ([`LicenseError::reason`]).
//! * [`source`]: where the token is read ([`LicenseSource`]), bounded and non-blocking.
//! * [`clock`]: wall and monotonic clocks, and the trusted time licenses are judged by.
//! * [`verdict`]: the pure core that turns a license set, trusted time and the grace
//!   anchors into a [`Verdict`] and the next instant it can change.
//! * The judge (internal): every decision the monitor makes (trusted time and its honest
//!   drift budget, the set rules, grace, manipulation, drain timing, alert rate limits,
//!   instance grace) as one synchronous state machine without I/O or clock reads, in the
//!   manner of quinn-proto's `Connection`; the checker task only drives it. Its
//!   simulation runs 100,000 random schedules in each of three tests in `cargo test`.
//! * [`event`]: [`LicenseEvent`], its names, levels and attributes.
//! * [`LicenseMonitor`]: the handle, and the checker task that is the verdict's only writer
//!   (it waits for timers and triggers, reads off the async workers, feeds the judge,
//!   publishes and emits).
//! * [`layer`]: [`LicenseLayer`] and [`License`], the middleware; see its docs for an
//!   axum example. [`RequireFeatureLayer`] (`monitor.require_feature("sso")`) guards the
//!   routes of a paid tier. [`HealthService`] serves `/health`. [`LicensedListener`]
//!   (`monitor.listener(tcp)`, [`layer::connection`]) closes, at the end of a gate's
//!   drain period, the connections a layer cannot see into that the gate admitted
//!   (WebSockets, tunnels), and nothing else.
//!
//! A source may hold a license set, one token per line: a renewal installed ahead comes
//! into force at its exact `nbf` second, and the verdict carries the features and limits
//! of the licenses in force ([`Verdict::has_feature`], [`Verdict::limit`]).
//!
//! # Features
//!
//! * `issue`: `LicenseSigner`, to mint keys and licenses.
//! * `test-util`: `TestClock` (driven by tokio's paused time) and `issue`.
//! * `prometheus`: `LicenseMonitor::register_metrics`, `LicenseMonitor::metrics_service`
//!   and `MetricsService`.
//! * `otel`: events as OpenTelemetry log records
//!   (`LicenseMonitorBuilder::otel_logger_provider`) and gauges
//!   (`LicenseMonitor::register_otel_metrics`).
//! * `axum`: [`LicensedListener`] as an `axum::serve::Listener`.
//! * `tonic`: `LicensedListener::into_incoming` for `Server::serve_with_incoming`, and
//!   [`LicensedIo`] as tonic's `Connected`.
//! * `ledger`: the vendor's ledger (`ledger::Ledger`, with `issue`): every license,
//!   notice, usage receipt and instance key per customer in one SQLite file (compiled in),
//!   the next notice `seq`, and what usage verification learns from earlier true-ups.
//! * `cli`: the `iosetu-license` tool (keygen, issue, notice, inspect, verify, timeline,
//!   usage), with `ledger`.
//! * `kubernetes`: `InstanceSlots` (`LicenseMonitorBuilder::instance_slots`), which
//!   counts replicas against a license's `max_instances` with Kubernetes Leases; see
//!   `instances`.
//!
//! None is on by default: the default build is the monitor, the layer, `/health` and the
//! metrics snapshot ([`LicenseMonitor::metrics`]).

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod answer;
mod checker;
pub mod clock;
mod emit;
pub mod event;
mod files;
#[cfg(feature = "issue")]
#[doc(hidden)]
pub mod fuzzing;
mod health;
#[cfg(feature = "kubernetes")]
#[cfg_attr(docsrs, doc(cfg(feature = "kubernetes")))]
pub mod instances;
#[cfg(feature = "issue")]
mod issue;
mod judge;
mod key;
pub mod layer;
#[cfg(feature = "ledger")]
#[cfg_attr(docsrs, doc(cfg(feature = "ledger")))]
pub mod ledger;
mod link;
mod metering;
pub mod metrics;
mod monitor;
#[cfg(feature = "otel")]
mod otel;
mod reload;
mod runtime;
pub mod source;
mod state;
mod stats;
mod sync;
pub mod token;
pub mod usage;
pub mod verdict;

#[cfg(feature = "test-util")]
pub use clock::TestClock;
pub use clock::{Clock, SystemClock};
pub use event::{AttributeValue, DriftKind, LicenseEvent, Severity};
pub use health::{Health, HealthService, HealthStatus, LicenseHealth};
#[cfg(feature = "kubernetes")]
pub use instances::InstanceSlots;
#[cfg(feature = "issue")]
pub use issue::LicenseSigner;
/// What the monitor would make of a license source at an instant, by the same judge,
/// without running a service: for tools (the CLI's `verify`, `inspect` and `timeline`).
pub use judge::preview;
pub use key::{KeyError, PublicKey};
#[cfg(feature = "tonic")]
pub use layer::LicensedIncoming;
pub use layer::{
    Drained, License, LicenseLayer, LicensedIo, LicensedListener, RequireFeature,
    RequireFeatureLayer, ResponseBody, ResponseFuture,
};
#[cfg(feature = "prometheus")]
pub use metrics::MetricsService;
pub use metrics::MetricsSnapshot;
pub use monitor::{
    DEFAULT_CHECK_INTERVAL, DEFAULT_DRAIN_PERIOD, DEFAULT_FILE_POLL_INTERVAL, DEFAULT_GRACE_PERIOD,
    DEFAULT_INSTANCE_SETTLING, LicenseMonitor, LicenseMonitorBuilder, StartError,
};
#[cfg(feature = "otel")]
pub use otel::OtelGauges;
pub use source::LicenseSource;
pub use token::{Claims, LicenseError, LicenseVerifier, Notice, ReceiptHead};
pub use usage::{Usage, UsageCounter, UsageError, UsageGauge};
pub use verdict::{ExpiryBand, GraceReason, LicenseState, Verdict};

/// The README's code blocks, compiled and run as doc tests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub mod guide {
    //! The long explanations behind the README, one page each (the files of `docs/`).
    //!
    //! The README says what the crate does and how to start; these pages say exactly how,
    //! and how it was measured and tested. Each is a Markdown file of the repository's
    //! `docs/` directory, rendered here as it reads on GitHub, and its code blocks are
    //! compiled and run as doc tests like the README's.
    //!
    //! * [`serving`]: protecting a service in depth: the safe layout, why the listener, what
    //!   each request and connection gets after a cut-off, what the gates cost; the monitor
    //!   on its own.
    //! * [`renewing`]: where the license comes from, renewing without a restart, license
    //!   sets, renewing ahead, features, limits and per-license grace.
    //! * [`notices`]: revoking a license and un-bricking a customer (vendor notices).
    //! * [`usage_reports`]: the usage journal, the monthly export, verification and receipts.
    //! * [`instances`]: limiting replicas (`max_instances`) with Kubernetes Leases.
    //! * [`monitoring`]: every event, reason code and metric; alert rules; OpenTelemetry.
    //! * [`trusted_time`]: grace and time: every clock rule, the drift budget, conservation.
    //! * [`performance`]: the performance analysis, every figure with the command behind it.
    //! * [`security`]: the threat model, the attacks and faults the tests cover, fuzzing.

    // Each page's links to another page are reference links whose definitions (at the end
    // of its Markdown file) name the other file, for GitHub; the definitions below come
    // first, and the first definition of a label wins, so rustdoc links the pages here.
    macro_rules! page {
        ($name:ident, $file:literal) => {
            #[doc = "[guide-serving]: crate::guide::serving"]
            #[doc = "[guide-why-the-listener]: crate::guide::serving#why-the-listener"]
            #[doc = "[guide-renewing]: crate::guide::renewing"]
            #[doc = "[guide-renewing-a-license]: crate::guide::renewing#renewing-a-license"]
            #[doc = "[guide-notices]: crate::guide::notices"]
            #[doc = "[guide-usage-reports]: crate::guide::usage_reports"]
            #[doc = "[guide-instances]: crate::guide::instances"]
            #[doc = "[guide-monitoring]: crate::guide::monitoring"]
            #[doc = "[guide-trusted-time]: crate::guide::trusted_time"]
            #[doc = "[guide-performance]: crate::guide::performance"]
            #[doc = "[guide-security]: crate::guide::security"]
            #[doc = ""]
            #[doc = include_str!(concat!("../docs/", $file))]
            pub mod $name {}
        };
    }
    page!(serving, "serving.md");
    page!(renewing, "renewing.md");
    page!(notices, "notices.md");
    page!(usage_reports, "usage-reports.md");
    page!(instances, "instances.md");
    page!(monitoring, "monitoring.md");
    page!(trusted_time, "trusted-time.md");
    page!(performance, "performance.md");
    page!(security, "security.md");
}
