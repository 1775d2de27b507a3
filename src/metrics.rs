//! License metrics: one snapshot, computed at read time from the current verdict, that
//! the Prometheus and OpenTelemetry exporters both render.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::LicenseMonitor;
use crate::clock::unix_seconds;
use crate::layer::shared::View;
use crate::verdict::{GraceReason, LicenseState};

/// The license's numbers at one instant, as the metrics exporters publish them.
///
/// Computed when read (a scrape, a collection), from the current verdict and the time
/// elapsed since it was reached, so it is never stale between checks.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// 1 when a valid license is in force (`iosetu_license_valid`).
    pub valid: bool,
    /// 1 in grace and after it (`iosetu_license_grace_mode`), as `/health` reports it.
    pub grace_mode: bool,
    /// Days left before `exp`, fractional, negative after expiry; `None` without a
    /// license (`iosetu_license_days_remaining`).
    pub days_remaining: Option<f64>,
    /// `exp` in seconds since the epoch (`iosetu_license_expiry_timestamp_seconds`).
    pub expiry_timestamp_seconds: Option<f64>,
    /// Seconds of grace left: the whole period while valid, what is left in grace, 0 once
    /// cut off (`iosetu_license_grace_remaining_seconds`).
    pub grace_remaining_seconds: f64,
    /// How many times the license source was read and judged.
    pub checks: u64,
    /// Judgements that refused the license, by reason code.
    pub check_failures: BTreeMap<&'static str, u64>,
    /// Events emitted, by dotted name.
    pub events: BTreeMap<&'static str, u64>,
    /// The reason code the last read of the source was refused with, or `None` when it
    /// read good (`iosetu_license_check_failing{reason}`: 1 for this reason, 0 for every
    /// other). A state, so an alert on it fires on the first failed read and clears at
    /// the first good one.
    pub check_failing: Option<&'static str>,
    /// 1 while the wall clock is judged set back and the service is in grace for it
    /// (`iosetu_license_clock_manipulated`); 0 again once the clock agrees.
    pub clock_manipulated: bool,
    /// The features in force (`iosetu_license_feature{feature}`, 1 each), with when each
    /// stops being granted, seconds since the epoch
    /// (`iosetu_license_feature_ends_timestamp_seconds{feature}`): earlier than the end of
    /// coverage when a renewal installed ahead does not carry it.
    pub features: BTreeMap<String, Option<f64>>,
    /// The limits in force, the largest value of each (`iosetu_license_limit{name}`).
    pub limits: BTreeMap<String, u64>,
    /// Each usage metric (see [`crate::usage`]) as compared with its limit: a gauge's
    /// current value, a counter's total this month (`iosetu_license_usage{name}`).
    pub usage: BTreeMap<String, u64>,
    /// How many replicas the licenses let serve at once, `None` for no limit
    /// (`iosetu_license_instances_max`, 0 for no limit).
    pub instances_max: Option<u64>,
    /// The instance slot this replica holds (`iosetu_license_instance_slot`, -1 for
    /// none); see `crate::instances` (feature `kubernetes`).
    pub instance_slot: Option<u32>,
    /// 1 while this replica, new to the fleet, waits without an instance slot before
    /// instance-limit grace starts (`iosetu_license_instance_settling`; see
    /// [`Verdict::instance_settling_until`](crate::Verdict::instance_settling_until)).
    pub instance_settling: bool,
    /// The highest vendor notice `seq` accepted for the set's customer
    /// (`iosetu_license_notice_seq`, 0 before any): compare it with the last `seq` the
    /// vendor issued to see whether a notice was installed.
    pub notice_seq: Option<u64>,
    /// How many license `jti`s notices or superseding licenses revoked
    /// (`iosetu_license_revocations`).
    pub revocations: usize,
    /// 1 while writes of the state file fail (`iosetu_license_state_write_failing`): a
    /// state, set at the first failed write and cleared at the first good one (0 without
    /// a state file).
    pub state_write_failing: bool,
    /// How many writes of the state file failed
    /// (`iosetu_license_state_write_failures_total`).
    pub state_write_failures: u64,
}

impl MetricsSnapshot {
    /// The numbers now, read through `view`.
    pub(crate) fn read(view: &View) -> Self {
        let verdict = view.verdict();
        // Trusted time now: the verdict's, plus monotonic time since (never the wall
        // clock, which may have been set back).
        let since = view
            .clock()
            .monotonic()
            .checked_sub(verdict.evaluated_mono)
            .unwrap_or(Duration::ZERO);
        let now = unix_seconds(verdict.evaluated_at) as f64 + since.as_secs_f64();
        // The end of coverage: with renewals installed ahead, later than any one `exp`.
        let exp = verdict.expires_at.map(|t| unix_seconds(t) as f64);
        let grace_remaining_seconds = match (verdict.state, verdict.grace_ends_at) {
            (LicenseState::Valid, _) => view.grace_period().as_secs_f64(),
            (LicenseState::Grace, Some(ends)) => (unix_seconds(ends) as f64 - now).max(0.0),
            _ => 0.0,
        };
        let stats = view.stats();
        MetricsSnapshot {
            valid: verdict.state == LicenseState::Valid,
            grace_mode: verdict.state != LicenseState::Valid,
            days_remaining: exp.map(|exp| (exp - now) / 86_400.0),
            expiry_timestamp_seconds: exp,
            grace_remaining_seconds,
            checks: stats.checks(),
            check_failures: stats.failures(),
            events: stats.events(),
            check_failing: stats.failing(),
            clock_manipulated: verdict.reason == Some(GraceReason::ClockManipulation),
            features: verdict
                .features()
                .into_iter()
                .map(|f| {
                    let ends = verdict.feature_ends_at(f).map(|t| unix_seconds(t) as f64);
                    (f.to_owned(), ends)
                })
                .collect(),
            limits: verdict
                .limits()
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
            usage: view.usage().registry.current(&stats.counter_bases()),
            // Also after a cut-off: a replica cut off for want of a slot shows the limit.
            instances_max: crate::verdict::instance_limit(&verdict.licenses),
            instance_slot: stats.instance_slot(),
            instance_settling: verdict.instance_settling_until.is_some(),
            notice_seq: verdict.notice_seq,
            revocations: verdict.revocations,
            state_write_failing: stats.state_write_failing(),
            state_write_failures: stats.state_write_failures(),
        }
    }
}

impl LicenseMonitor {
    /// The license's numbers now, as the metrics exporters publish them.
    pub fn metrics(&self) -> MetricsSnapshot {
        MetricsSnapshot::read(&self.view())
    }
}

#[cfg(feature = "prometheus")]
pub use self::prometheus::MetricsService;

#[cfg(feature = "prometheus")]
mod prometheus {
    use std::convert::Infallible;
    use std::fmt;
    use std::future::{Ready, ready};
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::Full;
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
    use prometheus_client::metrics::MetricType;
    use prometheus_client::registry::{Registry, Unit};
    use tower_service::Service;

    use super::MetricsSnapshot;
    use crate::LicenseMonitor;
    use crate::answer::fixed_response;
    use crate::layer::shared::WeakView;

    /// Renders the snapshot at each scrape. Holds the monitor weakly: a registry that
    /// outlives the monitor reports nothing rather than keeping the checker alive.
    pub(crate) struct LicenseCollector(pub(crate) WeakView);

    impl fmt::Debug for LicenseCollector {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("LicenseCollector").finish_non_exhaustive()
        }
    }

    fn gauge(
        encoder: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        value: f64,
    ) -> fmt::Result {
        encoder
            .encode_descriptor(name, help, unit, MetricType::Gauge)?
            .encode_gauge(&value)
    }

    impl Collector for LicenseCollector {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
            let Some(view) = self.0.upgrade() else {
                return Ok(());
            };
            let m = MetricsSnapshot::read(&view);
            drop(view);
            let flag = |b: bool| if b { 1.0 } else { 0.0 };
            gauge(
                &mut encoder,
                "iosetu_license_valid",
                "1 when a valid license is in force",
                None,
                flag(m.valid),
            )?;
            gauge(
                &mut encoder,
                "iosetu_license_grace_mode",
                "1 while in grace or after it (no valid license)",
                None,
                flag(m.grace_mode),
            )?;
            if let Some(days) = m.days_remaining {
                gauge(
                    &mut encoder,
                    "iosetu_license_days_remaining",
                    "Days left before the license expires (negative after)",
                    None,
                    days,
                )?;
            }
            if let Some(exp) = m.expiry_timestamp_seconds {
                gauge(
                    &mut encoder,
                    "iosetu_license_expiry_timestamp",
                    "When the license expires, seconds since the Unix epoch",
                    Some(&Unit::Seconds),
                    exp,
                )?;
            }
            gauge(
                &mut encoder,
                "iosetu_license_grace_remaining",
                "Seconds of grace left before new requests are refused",
                Some(&Unit::Seconds),
                m.grace_remaining_seconds,
            )?;

            gauge(
                &mut encoder,
                "iosetu_license_clock_manipulated",
                "1 while the wall clock is judged set back (the service is in grace for it)",
                None,
                flag(m.clock_manipulated),
            )?;
            let mut failing = encoder.encode_descriptor(
                "iosetu_license_check_failing",
                "1 for the reason the last license read was refused with; 0 for the others",
                None,
                MetricType::Gauge,
            )?;
            for reason in crate::LicenseError::REASONS {
                failing
                    .encode_family(&[("reason", reason)])?
                    .encode_gauge(&flag(m.check_failing == Some(reason)))?;
            }

            let mut features = encoder.encode_descriptor(
                "iosetu_license_feature",
                "1 for each feature a license in force grants",
                None,
                MetricType::Gauge,
            )?;
            for feature in m.features.keys() {
                features
                    .encode_family(&[("feature", feature.as_str())])?
                    .encode_gauge(&1.0)?;
            }
            let mut ends = encoder.encode_descriptor(
                "iosetu_license_feature_ends_timestamp",
                "When each feature in force stops being granted, seconds since the Unix epoch",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            for (feature, at) in &m.features {
                if let Some(at) = at {
                    ends.encode_family(&[("feature", feature.as_str())])?
                        .encode_gauge(at)?;
                }
            }
            let mut limits = encoder.encode_descriptor(
                "iosetu_license_limit",
                "Each limit in force (the largest value among the licenses in force)",
                None,
                MetricType::Gauge,
            )?;
            for (name, value) in &m.limits {
                limits
                    .encode_family(&[("name", name.as_str())])?
                    .encode_gauge(&(*value as f64))?;
            }
            let mut usage = encoder.encode_descriptor(
                "iosetu_license_usage",
                "Each usage metric: a gauge's value, a counter's total this month",
                None,
                MetricType::Gauge,
            )?;
            for (name, value) in &m.usage {
                usage
                    .encode_family(&[("name", name.as_str())])?
                    .encode_gauge(&(*value as f64))?;
            }

            gauge(
                &mut encoder,
                "iosetu_license_instances_max",
                "How many replicas the licenses let serve at once (0: no limit)",
                None,
                m.instances_max.map_or(0.0, |n| n as f64),
            )?;
            gauge(
                &mut encoder,
                "iosetu_license_instance_slot",
                "The instance slot this replica holds (-1: none)",
                None,
                m.instance_slot.map_or(-1.0, f64::from),
            )?;
            gauge(
                &mut encoder,
                "iosetu_license_instance_settling",
                "1 while this replica, new to the fleet, waits for an instance slot before \
                 instance-limit grace",
                None,
                if m.instance_settling { 1.0 } else { 0.0 },
            )?;
            gauge(
                &mut encoder,
                "iosetu_license_notice_seq",
                "The highest vendor notice seq accepted for the licensed customer (0: none)",
                None,
                m.notice_seq.map_or(0.0, |n| n as f64),
            )?;
            gauge(
                &mut encoder,
                "iosetu_license_revocations",
                "License jtis revoked by vendor notices or superseding licenses",
                None,
                m.revocations as f64,
            )?;
            gauge(
                &mut encoder,
                "iosetu_license_state_write_failing",
                "1 while writes of the license state file fail (the last good state is kept)",
                None,
                flag(m.state_write_failing),
            )?;

            let mut checks = encoder.encode_descriptor(
                "iosetu_license_checks",
                "License reads judged",
                None,
                MetricType::Counter,
            )?;
            checks.encode_counter::<NoLabelSet, _, u64>(&m.checks, None)?;

            let mut state_writes = encoder.encode_descriptor(
                "iosetu_license_state_write_failures",
                "Writes of the license state file that failed",
                None,
                MetricType::Counter,
            )?;
            state_writes.encode_counter::<NoLabelSet, _, u64>(&m.state_write_failures, None)?;

            let mut failures = encoder.encode_descriptor(
                "iosetu_license_check_failures",
                "License reads refused, by reason",
                None,
                MetricType::Counter,
            )?;
            for (reason, count) in &m.check_failures {
                failures
                    .encode_family(&[("reason", *reason)])?
                    .encode_counter::<NoLabelSet, _, u64>(count, None)?;
            }

            let mut events = encoder.encode_descriptor(
                "iosetu_license_events",
                "License events emitted, by name",
                None,
                MetricType::Counter,
            )?;
            for (name, count) in &m.events {
                events
                    .encode_family(&[("event", *name)])?
                    .encode_counter::<NoLabelSet, _, u64>(count, None)?;
            }
            Ok(())
        }
    }

    impl LicenseMonitor {
        /// Needs the crate feature **`prometheus`**.
        ///
        /// Registers the license metrics with an application's own registry. Values are
        /// computed at each scrape.
        #[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
        pub fn register_metrics(&self, registry: &mut Registry) {
            registry.register_collector(Box::new(LicenseCollector(self.view().downgrade())));
        }

        /// Needs the crate feature **`prometheus`** (without it, this method does not
        /// exist: `no method named metrics_service`).
        ///
        /// A ready `/metrics` service with the license metrics alone: same as
        /// [`MetricsService::new`].
        #[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
        pub fn metrics_service(&self) -> MetricsService {
            MetricsService::new(self)
        }
    }

    /// A tower service answering `/metrics` in the Prometheus text format (0.0.4).
    /// Needs the crate feature **`prometheus`**.
    ///
    /// Mount it outside the license layer, e.g. axum's `.route_service("/metrics",
    /// monitor.metrics_service())` after `.layer(..)`, so scrapes keep working after the
    /// cut-off, which is exactly when they matter.
    #[derive(Clone)]
    #[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
    pub struct MetricsService {
        registry: Arc<Registry>,
    }

    impl MetricsService {
        /// A service exposing `monitor`'s metrics.
        pub fn new(monitor: &LicenseMonitor) -> Self {
            let mut registry = Registry::default();
            monitor.register_metrics(&mut registry);
            Self::from_registry(Arc::new(registry))
        }

        /// A service exposing an application's registry (register the license metrics in
        /// it with [`LicenseMonitor::register_metrics`]).
        pub fn from_registry(registry: Arc<Registry>) -> Self {
            Self { registry }
        }

        /// The rendered text (Prometheus text format 0.0.4).
        pub fn render(&self) -> Result<String, fmt::Error> {
            let mut text = String::new();
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
            Ok(text)
        }
    }

    impl<B> Service<Request<B>> for MetricsService {
        type Response = Response<Full<Bytes>>;
        type Error = Infallible;
        type Future = Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _request: Request<B>) -> Self::Future {
            ready(Ok(match self.render() {
                Ok(text) => fixed_response(
                    StatusCode::OK,
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                    Bytes::from(text),
                ),
                Err(_) => fixed_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    Bytes::from_static(b"metrics encoding failed\n"),
                ),
            }))
        }
    }

    impl fmt::Debug for MetricsService {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("MetricsService").finish_non_exhaustive()
        }
    }
}
