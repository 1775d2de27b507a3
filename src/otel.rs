//! OpenTelemetry export (feature `otel`): events as log records, and the license gauges.
//!
//! Only the OpenTelemetry API crate is used: the application owns the SDK (its exporters,
//! its resource, its batching) and hands this crate a logger provider and a meter.

use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger, LoggerProvider, Severity};
use opentelemetry::metrics::{Meter, ObservableGauge};
use opentelemetry::{InstrumentationScope, KeyValue};
use tracing::Level;

use crate::event::{AttributeValue, LicenseEvent, TARGET};
use crate::layer::shared::WeakView;
use crate::metrics::MetricsSnapshot;
use crate::{LicenseMonitor, LicenseMonitorBuilder};

/// Something the checker hands every event to, besides `tracing` and subscribers.
pub(crate) use crate::emit::EventHook;

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

impl LicenseMonitorBuilder {
    /// Needs the crate feature **`otel`**.
    ///
    /// Emits every [`LicenseEvent`] as an OpenTelemetry log record through `provider`:
    /// `event_name` is the dotted name (`license.grace_mode_entered`, …), the attributes
    /// are the event's own (`days_remaining`, `expires_at`, `customer`, `severity`, …), the
    /// body is the log message and the severity number matches the log level.
    #[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
    pub fn otel_logger_provider<P>(mut self, provider: &P) -> Self
    where
        P: LoggerProvider,
        P::Logger: Send + Sync + 'static,
    {
        let logger = provider.logger_with_scope(scope());
        self.event_hook = Some(Arc::new(move |event: &LicenseEvent| emit(&logger, event)));
        self
    }
}

fn emit<L: Logger>(logger: &L, event: &LicenseEvent) {
    let level = event.level();
    let severity = match level {
        Level::ERROR => Severity::Error,
        Level::WARN => Severity::Warn,
        Level::INFO => Severity::Info,
        _ => Severity::Debug,
    };
    if !logger.event_enabled(severity, TARGET, Some(event.name())) {
        return;
    }
    let mut record = logger.create_log_record();
    record.set_event_name(event.name());
    record.set_target(TARGET);
    record.set_timestamp(SystemTime::now());
    record.set_severity_number(severity);
    record.set_severity_text(level.as_str());
    record.set_body(AnyValue::from(event.message()));
    for (key, value) in event.attributes() {
        let value = match value {
            AttributeValue::Int(v) => AnyValue::Int(v),
            AttributeValue::Float(v) => AnyValue::Double(v),
            AttributeValue::Str(v) => AnyValue::String(v.into()),
            AttributeValue::Bool(v) => AnyValue::Boolean(v),
        };
        record.add_attribute(key, value);
    }
    logger.emit(record);
}

/// Needs the crate feature **`otel`**.
///
/// The license gauges registered with a meter. They are read from the current verdict at
/// each collection; keep this value as long as they should be reported.
#[derive(Debug)]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub struct OtelGauges {
    _valid: ObservableGauge<u64>,
    _grace_mode: ObservableGauge<u64>,
    _days_remaining: ObservableGauge<f64>,
    _expiry_timestamp: ObservableGauge<f64>,
    _grace_remaining: ObservableGauge<f64>,
    _clock_manipulated: ObservableGauge<u64>,
    _check_failing: ObservableGauge<u64>,
    _feature: ObservableGauge<u64>,
    _feature_ends: ObservableGauge<f64>,
    _limit: ObservableGauge<u64>,
    _usage: ObservableGauge<u64>,
    _instances_max: ObservableGauge<u64>,
    _instance_slot: ObservableGauge<i64>,
    _instance_settling: ObservableGauge<u64>,
    _notice_seq: ObservableGauge<u64>,
    _revocations: ObservableGauge<u64>,
    _state_write_failing: ObservableGauge<u64>,
}

impl LicenseMonitor {
    /// Needs the crate feature **`otel`**.
    ///
    /// Registers the license gauges with `meter`: `iosetu.license.valid`,
    /// `iosetu.license.grace_mode`, `iosetu.license.days_remaining` (unit `d`),
    /// `iosetu.license.expiry_timestamp` (unit `s`), `iosetu.license.grace_remaining`
    /// (unit `s`), `iosetu.license.clock_manipulated`,
    /// `iosetu.license.check_failing{reason}` (one point per reason code, from the first
    /// collection), `iosetu.license.feature{feature}` (1 per feature in force),
    /// `iosetu.license.feature_ends{feature}` (unit `s`), `iosetu.license.limit{name}`,
    /// `iosetu.license.usage{name}` (see [`crate::usage`]), `iosetu.license.instances_max` (0: no limit), `iosetu.license.instance_slot`
    /// (-1: none), `iosetu.license.instance_settling`, `iosetu.license.notice_seq` (0:
    /// none), `iosetu.license.revocations` and `iosetu.license.state_write_failing`.
    /// The callbacks hold the monitor weakly.
    #[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
    pub fn register_otel_metrics(&self, meter: &Meter) -> OtelGauges {
        let read = |f: fn(&MetricsSnapshot) -> Option<f64>| {
            let weak: WeakView = self.view().downgrade();
            move || {
                weak.upgrade()
                    .and_then(|view| f(&MetricsSnapshot::read(&view)))
            }
        };
        let flag = |f: fn(&MetricsSnapshot) -> bool| {
            let weak: WeakView = self.view().downgrade();
            move || {
                weak.upgrade()
                    .map(|view| u64::from(f(&MetricsSnapshot::read(&view))))
            }
        };
        let valid = flag(|m| m.valid);
        let grace_mode = flag(|m| m.grace_mode);
        let days = read(|m| m.days_remaining);
        let expiry = read(|m| m.expiry_timestamp_seconds);
        let grace = read(|m| Some(m.grace_remaining_seconds));
        let manipulated = flag(|m| m.clock_manipulated);
        let settling = flag(|m| m.instance_settling);
        let state_write_failing = flag(|m| m.state_write_failing);
        let count = |f: fn(&MetricsSnapshot) -> u64| {
            let weak: WeakView = self.view().downgrade();
            move || weak.upgrade().map(|view| f(&MetricsSnapshot::read(&view)))
        };
        let notice_seq = count(|m| m.notice_seq.unwrap_or(0));
        let revocations = count(|m| m.revocations as u64);
        let snapshot = || {
            let weak: WeakView = self.view().downgrade();
            move || weak.upgrade().map(|view| MetricsSnapshot::read(&view))
        };
        let (features, feature_ends, limits, usage) =
            (snapshot(), snapshot(), snapshot(), snapshot());
        let (instances_max, instance_slot) = (snapshot(), snapshot());
        let failing = {
            let weak: WeakView = self.view().downgrade();
            move || {
                weak.upgrade()
                    .map(|view| MetricsSnapshot::read(&view).check_failing)
            }
        };
        OtelGauges {
            _valid: meter
                .u64_observable_gauge("iosetu.license.valid")
                .with_description("1 when a valid license is in force")
                .with_unit("1")
                .with_callback(move |o| valid().into_iter().for_each(|v| o.observe(v, &[])))
                .build(),
            _grace_mode: meter
                .u64_observable_gauge("iosetu.license.grace_mode")
                .with_description("1 while in grace or after it (no valid license)")
                .with_unit("1")
                .with_callback(move |o| grace_mode().into_iter().for_each(|v| o.observe(v, &[])))
                .build(),
            _days_remaining: meter
                .f64_observable_gauge("iosetu.license.days_remaining")
                .with_description("Days left before the license expires (negative after)")
                .with_unit("d")
                .with_callback(move |o| days().into_iter().for_each(|v| o.observe(v, &[])))
                .build(),
            _expiry_timestamp: meter
                .f64_observable_gauge("iosetu.license.expiry_timestamp")
                .with_description("When the license expires, seconds since the Unix epoch")
                .with_unit("s")
                .with_callback(move |o| expiry().into_iter().for_each(|v| o.observe(v, &[])))
                .build(),
            _grace_remaining: meter
                .f64_observable_gauge("iosetu.license.grace_remaining")
                .with_description("Seconds of grace left before new requests are refused")
                .with_unit("s")
                .with_callback(move |o| grace().into_iter().for_each(|v| o.observe(v, &[])))
                .build(),
            _clock_manipulated: meter
                .u64_observable_gauge("iosetu.license.clock_manipulated")
                .with_description(
                    "1 while the wall clock is judged set back (the service is in grace for it)",
                )
                .with_unit("1")
                .with_callback(move |o| manipulated().into_iter().for_each(|v| o.observe(v, &[])))
                .build(),
            // One point per reason code, from the first collection: 1 for the reason the
            // last read was refused with, 0 for the others.
            _check_failing: meter
                .u64_observable_gauge("iosetu.license.check_failing")
                .with_description(
                    "1 for the reason the last license read was refused with; 0 for the others",
                )
                .with_unit("1")
                .with_callback(move |o| {
                    if let Some(failing) = failing() {
                        for reason in crate::LicenseError::REASONS {
                            o.observe(
                                u64::from(failing == Some(reason)),
                                &[KeyValue::new("reason", reason)],
                            );
                        }
                    }
                })
                .build(),
            _feature: meter
                .u64_observable_gauge("iosetu.license.feature")
                .with_description("1 for each feature a license in force grants")
                .with_unit("1")
                .with_callback(move |o| {
                    for feature in features().iter().flat_map(|m| m.features.keys()) {
                        o.observe(1, &[KeyValue::new("feature", feature.clone())]);
                    }
                })
                .build(),
            _feature_ends: meter
                .f64_observable_gauge("iosetu.license.feature_ends")
                .with_description(
                    "When each feature in force stops being granted, seconds since the Unix epoch",
                )
                .with_unit("s")
                .with_callback(move |o| {
                    for (feature, at) in feature_ends().iter().flat_map(|m| m.features.iter()) {
                        if let Some(at) = at {
                            o.observe(*at, &[KeyValue::new("feature", feature.clone())]);
                        }
                    }
                })
                .build(),
            _limit: meter
                .u64_observable_gauge("iosetu.license.limit")
                .with_description("Each limit in force (the largest among the licenses in force)")
                .with_unit("1")
                .with_callback(move |o| {
                    for (name, value) in limits().iter().flat_map(|m| m.limits.iter()) {
                        o.observe(*value, &[KeyValue::new("name", name.clone())]);
                    }
                })
                .build(),
            _usage: meter
                .u64_observable_gauge("iosetu.license.usage")
                .with_description(
                    "Each usage metric: a gauge's value, a counter's total this month",
                )
                .with_unit("1")
                .with_callback(move |o| {
                    for (name, value) in usage().iter().flat_map(|m| m.usage.iter()) {
                        o.observe(*value, &[KeyValue::new("name", name.clone())]);
                    }
                })
                .build(),
            _instances_max: meter
                .u64_observable_gauge("iosetu.license.instances_max")
                .with_description("How many replicas the licenses let serve at once (0: no limit)")
                .with_unit("1")
                .with_callback(move |o| {
                    if let Some(m) = instances_max() {
                        o.observe(m.instances_max.unwrap_or(0), &[]);
                    }
                })
                .build(),
            _instance_slot: meter
                .i64_observable_gauge("iosetu.license.instance_slot")
                .with_description("The instance slot this replica holds (-1: none)")
                .with_unit("1")
                .with_callback(move |o| {
                    if let Some(m) = instance_slot() {
                        o.observe(m.instance_slot.map_or(-1, i64::from), &[]);
                    }
                })
                .build(),
            _instance_settling: meter
                .u64_observable_gauge("iosetu.license.instance_settling")
                .with_description(
                    "1 while this replica, new to the fleet, waits for an instance slot \
                     before instance-limit grace",
                )
                .with_unit("1")
                .with_callback(move |o| settling().into_iter().for_each(|v| o.observe(v, &[])))
                .build(),
            _notice_seq: meter
                .u64_observable_gauge("iosetu.license.notice_seq")
                .with_description(
                    "The highest vendor notice seq accepted for the licensed customer (0: none)",
                )
                .with_unit("1")
                .with_callback(move |o| notice_seq().into_iter().for_each(|v| o.observe(v, &[])))
                .build(),
            _revocations: meter
                .u64_observable_gauge("iosetu.license.revocations")
                .with_description("License jtis revoked by vendor notices or superseding licenses")
                .with_unit("1")
                .with_callback(move |o| revocations().into_iter().for_each(|v| o.observe(v, &[])))
                .build(),
            _state_write_failing: meter
                .u64_observable_gauge("iosetu.license.state_write_failing")
                .with_description(
                    "1 while writes of the license state file fail (the last good state is kept)",
                )
                .with_unit("1")
                .with_callback(move |o| {
                    state_write_failing()
                        .into_iter()
                        .for_each(|v| o.observe(v, &[]))
                })
                .build(),
        }
    }
}
