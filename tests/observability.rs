//! What operators' tools receive: OpenTelemetry log records and gauges, and the
//! Prometheus text. (The JSON log lines are in `tests/json_logs.rs`.)

#![cfg(all(feature = "otel", feature = "prometheus"))]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iosetu_license::{
    Claims, LicenseError, LicenseEvent, LicenseMonitor, LicenseSigner, LicenseSource, LicenseState,
    MetricsService, TestClock,
};
use opentelemetry::logs::{AnyValue, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLoggerProvider};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use tower::ServiceExt as _;

const T0: u64 = 1_800_000_000;
const DAY: i64 = 86_400;

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0)
}

fn signer() -> LicenseSigner {
    LicenseSigner::from_seed([51; 32])
}

#[tokio::test(start_paused = true)]
async fn events_become_opentelemetry_log_records() {
    let exporter = InMemoryLogExporter::default();
    let provider = SdkLoggerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let clock = TestClock::new(t0());
    let exp = T0 as i64 + 25 * DAY + 3600;
    let monitor = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(
            signer().sign(&Claims::new("YourCompany", exp)),
        ))
        .clock(clock.clone())
        .otel_logger_provider(&provider)
        .start()
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(60)).await;
    clock.jump_wall(-3600);
    monitor.check_now().await;
    // The clock is put right: grace ends. Then it jumps 11 s ahead: drift.
    tokio::time::advance(Duration::from_secs(60)).await;
    clock.jump_wall(3600);
    monitor.check_now().await;
    tokio::time::advance(Duration::from_secs(60)).await;
    clock.jump_wall(11);
    monitor.check_now().await;
    provider.force_flush().unwrap();

    let logs = exporter.get_emitted_logs().unwrap();
    let find = |name: &str| {
        logs.iter()
            .map(|l| &l.record)
            .find(|r| r.event_name() == Some(name))
            .unwrap_or_else(|| panic!("no {name} record"))
    };
    let attrs = |name: &str| -> HashMap<String, AnyValue> {
        find(name)
            .attributes_iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
            .collect()
    };

    let expiring = attrs("license.expiring_30d");
    assert_eq!(
        find("license.expiring_30d").severity_number(),
        Some(Severity::Warn)
    );
    assert_eq!(expiring["days_remaining"], AnyValue::Int(25));
    assert_eq!(
        expiring["expires_at"],
        AnyValue::String("2027-02-09T09:00:00Z".into())
    );
    assert_eq!(expiring["customer"], AnyValue::String("YourCompany".into()));
    assert_eq!(expiring["severity"], AnyValue::String("warning".into()));

    let jump = attrs("license.time_manipulation_detected");
    assert_eq!(
        find("license.time_manipulation_detected").severity_number(),
        Some(Severity::Error)
    );
    assert_eq!(jump["type"], AnyValue::String("backward_jump".into()));
    assert_eq!(jump["wall_clock_jump_seconds"], AnyValue::Int(-3600));
    assert_eq!(jump["severity"], AnyValue::String("critical".into()));

    let grace = attrs("license.grace_mode_entered");
    assert_eq!(grace["grace_period_seconds"], AnyValue::Int(86_400));
    assert_eq!(grace["severity"], AnyValue::String("critical".into()));

    let exited = attrs("license.grace_mode_exited");
    assert_eq!(exited["severity"], AnyValue::String("info".into()));
    assert_eq!(
        find("license.grace_mode_exited").severity_number(),
        Some(Severity::Info)
    );

    let drift = attrs("license.time_drift_detected");
    assert_eq!(drift["drift_seconds"], AnyValue::Double(11.0));
    assert_eq!(drift["severity"], AnyValue::String("warning".into()));
}

/// Equal to within a second's worth of the unit (the gauges are read at collection time,
/// a few paused-clock milliseconds after the verdict).
fn close(actual: f64, expected: f64, per_second: f64) -> bool {
    (actual - expected).abs() <= per_second
}

fn gauges(exporter: &InMemoryMetricExporter) -> HashMap<String, (f64, String)> {
    let mut out = HashMap::new();
    for resource in exporter.get_finished_metrics().unwrap() {
        for scope in resource.scope_metrics() {
            for metric in scope.metrics() {
                let value = match metric.data() {
                    AggregatedMetrics::F64(MetricData::Gauge(g)) => {
                        g.data_points().last().map(|p| p.value())
                    }
                    AggregatedMetrics::U64(MetricData::Gauge(g)) => {
                        g.data_points().last().map(|p| p.value() as f64)
                    }
                    AggregatedMetrics::I64(MetricData::Gauge(g)) => {
                        g.data_points().last().map(|p| p.value() as f64)
                    }
                    _ => None,
                };
                if let Some(value) = value {
                    out.insert(metric.name().to_owned(), (value, metric.unit().to_owned()));
                }
            }
        }
    }
    out
}

/// The `iosetu.license.check_failing` points of the last collection, by reason.
fn failing_points(exporter: &InMemoryMetricExporter) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for resource in exporter.get_finished_metrics().unwrap() {
        for scope in resource.scope_metrics() {
            for metric in scope.metrics() {
                if let (
                    "iosetu.license.check_failing",
                    AggregatedMetrics::U64(MetricData::Gauge(g)),
                ) = (metric.name(), metric.data())
                {
                    for point in g.data_points() {
                        let reason = point
                            .attributes()
                            .find(|kv| kv.key.as_str() == "reason")
                            .map(|kv| kv.value.to_string())
                            .unwrap();
                        out.insert(reason, point.value());
                    }
                }
            }
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn opentelemetry_gauges_follow_the_verdict() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let meter = provider.meter("test");
    let clock = TestClock::new(t0());
    let exp = T0 as i64 + 10 * DAY;
    let monitor = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(
            signer().sign(&Claims::new("Acme", exp)),
        ))
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    let _gauges = monitor.register_otel_metrics(&meter);

    provider.force_flush().unwrap();
    let g = gauges(&exporter);
    assert_eq!(g["iosetu.license.valid"], (1.0, "1".into()));
    assert_eq!(g["iosetu.license.grace_mode"].0, 0.0);
    let (days, unit) = &g["iosetu.license.days_remaining"];
    assert!(close(*days, 10.0, 1.0 / 86_400.0), "{days}");
    assert_eq!(unit, "d");
    assert_eq!(
        g["iosetu.license.expiry_timestamp"],
        (exp as f64, "s".into())
    );
    assert_eq!(g["iosetu.license.grace_remaining"], (86_400.0, "s".into()));
    assert_eq!(g["iosetu.license.clock_manipulated"].0, 0.0);
    let failing = failing_points(&exporter);
    assert_eq!(failing.len(), LicenseError::REASONS.len());
    assert!(failing.values().all(|v| *v == 0));

    // Half a day into grace: the values are computed at collection time.
    exporter.reset();
    tokio::time::sleep(Duration::from_secs((10 * DAY + DAY / 2) as u64)).await;
    assert_eq!(monitor.verdict().state, LicenseState::Grace);
    provider.force_flush().unwrap();
    let g = gauges(&exporter);
    assert_eq!(g["iosetu.license.valid"].0, 0.0);
    assert_eq!(g["iosetu.license.grace_mode"].0, 1.0);
    let days = g["iosetu.license.days_remaining"].0;
    assert!(close(days, -0.5, 1.0 / 86_400.0), "{days}");
    assert!(close(g["iosetu.license.grace_remaining"].0, 43_200.0, 1.0));
}

/// One sample of the Prometheus text format.
#[derive(Debug, PartialEq)]
struct Sample {
    labels: Vec<(String, String)>,
    value: f64,
}

/// A strict reader of the text format: `# HELP`/`# TYPE` lines, then `name{labels} value`.
fn parse_prometheus(text: &str) -> (HashMap<String, String>, HashMap<String, Vec<Sample>>) {
    let mut types = HashMap::new();
    let mut samples: HashMap<String, Vec<Sample>> = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels {line:?}"));
                let labels = inner
                    .split(',')
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').unwrap();
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name {name:?}"
        );
        samples
            .entry(name.to_owned())
            .or_default()
            .push(Sample { labels, value });
    }
    (types, samples)
}

#[tokio::test(start_paused = true)]
async fn prometheus_text_has_every_gauge_and_counter() {
    let clock = TestClock::new(t0());
    let exp = T0 as i64 + 3 * DAY;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    std::fs::write(&path, signer().sign(&Claims::new("Acme", exp))).unwrap();
    let monitor = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::File(path.clone()))
        .watch_file(false)
        .file_poll_interval(None)
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    std::fs::write(&path, "garbage").unwrap();
    monitor.check_now().await;

    let response = MetricsService::new(&monitor)
        .oneshot(http::Request::get("/metrics").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    use http_body_util::BodyExt as _;
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let (types, samples) = parse_prometheus(&text);
    let one = |name: &str| {
        let s = samples
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in\n{text}"));
        assert_eq!(s.len(), 1, "{name}");
        s[0].value
    };
    assert_eq!(one("iosetu_license_valid"), 1.0);
    assert_eq!(one("iosetu_license_grace_mode"), 0.0);
    assert_eq!(one("iosetu_license_days_remaining"), 3.0);
    assert_eq!(one("iosetu_license_expiry_timestamp_seconds"), exp as f64);
    assert_eq!(one("iosetu_license_grace_remaining_seconds"), 86_400.0);
    assert_eq!(one("iosetu_license_checks_total"), 2.0);
    for gauge in [
        "iosetu_license_valid",
        "iosetu_license_days_remaining",
        "iosetu_license_grace_remaining_seconds",
    ] {
        assert_eq!(types[gauge], "gauge");
    }
    assert_eq!(types["iosetu_license_checks_total"], "counter");
    // Every reason and every event has its series, at 0 until it happens.
    let by_label = |name: &str, label: &str| -> HashMap<String, f64> {
        samples[name]
            .iter()
            .map(|s| {
                assert_eq!(s.labels.len(), 1, "{name}: {:?}", s.labels);
                assert_eq!(s.labels[0].0, label);
                (s.labels[0].1.clone(), s.value)
            })
            .collect()
    };
    let expect = |keys: &[&str], hot: &[(&str, f64)]| -> HashMap<String, f64> {
        keys.iter()
            .map(|k| {
                let v = hot.iter().find(|(h, _)| h == k).map_or(0.0, |(_, v)| *v);
                ((*k).to_owned(), v)
            })
            .collect()
    };
    assert_eq!(
        by_label("iosetu_license_check_failures_total", "reason"),
        expect(&LicenseError::REASONS, &[("malformed", 1.0)])
    );
    assert_eq!(
        by_label("iosetu_license_check_failing", "reason"),
        expect(&LicenseError::REASONS, &[("malformed", 1.0)])
    );
    assert_eq!(types["iosetu_license_check_failing"], "gauge");
    assert_eq!(
        by_label("iosetu_license_events_total", "event"),
        expect(
            &LicenseEvent::NAMES,
            &[
                ("license.loaded", 1.0),
                ("license.expiring_7d", 1.0),
                ("license.verification_failed", 1.0)
            ]
        )
    );
    assert_eq!(one("iosetu_license_clock_manipulated"), 0.0);

    // The fix: the failing state clears at the first good read, and says so once.
    std::fs::write(&path, signer().sign(&Claims::new("Acme", exp))).unwrap();
    monitor.check_now().await;
    let (_, samples) = parse_prometheus(&MetricsService::new(&monitor).render().unwrap());
    assert!(
        samples["iosetu_license_check_failing"]
            .iter()
            .all(|s| s.value == 0.0)
    );
    let recovered = samples["iosetu_license_events_total"]
        .iter()
        .find(|s| s.labels == vec![("event".into(), "license.recovered".into())])
        .unwrap();
    assert_eq!(recovered.value, 1.0);

    // Computed at scrape time: two and a half days later, without a check in between.
    tokio::time::advance(Duration::from_secs((2 * DAY + DAY / 2) as u64)).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    let (_, samples) = parse_prometheus(&MetricsService::new(&monitor).render().unwrap());
    assert!((samples["iosetu_license_days_remaining"][0].value - 0.5).abs() < 1e-6);
}

#[tokio::test(start_paused = true)]
async fn an_application_registry_gets_the_license_metrics() {
    let clock = TestClock::new(t0());
    let monitor = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(String::new()))
        .clock(clock)
        .grace_period(Duration::from_secs(3600))
        .start()
        .await
        .unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let requests = prometheus_client::metrics::counter::Counter::<u64>::default();
    registry.register("app_requests", "The app's own metric", requests.clone());
    monitor.register_metrics(&mut registry);
    let service = MetricsService::from_registry(Arc::new(registry));
    let (_, samples) = parse_prometheus(&service.render().unwrap());
    assert!(samples.contains_key("app_requests_total"));
    assert_eq!(samples["iosetu_license_valid"][0].value, 0.0);
    assert_eq!(samples["iosetu_license_grace_mode"][0].value, 1.0);
    assert_eq!(
        samples["iosetu_license_grace_remaining_seconds"][0].value,
        3600.0
    );
    // No license, no expiry: those gauges are absent rather than made up.
    assert!(!samples.contains_key("iosetu_license_days_remaining"));
}

#[tokio::test(start_paused = true)]
async fn features_and_limits_in_force_are_metrics_with_when_each_feature_ends() {
    let clock = TestClock::new(t0());
    let exp = T0 as i64 + 30 * DAY;
    let mut current = Claims::new("Acme", exp);
    current.features = vec!["sso".into(), "audit".into()];
    current.limits.insert("seats".into(), 10);
    // A renewal installed ahead, without "sso": that feature ends with this license.
    let mut renewal = Claims::new("Acme", exp + 365 * DAY);
    renewal.nbf = Some(exp - DAY);
    renewal.features = vec!["audit".into()];
    renewal.limits.insert("seats".into(), 25);
    let monitor = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(format!(
            "{}\n{}\n",
            signer().sign(&current),
            signer().sign(&renewal)
        )))
        .clock(clock.clone())
        .start()
        .await
        .unwrap();

    let (_, samples) = parse_prometheus(&MetricsService::new(&monitor).render().unwrap());
    let by = |name: &str| -> HashMap<String, f64> {
        samples
            .get(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .iter()
            .map(|s| (s.labels[0].1.clone(), s.value))
            .collect()
    };
    assert_eq!(
        by("iosetu_license_feature"),
        HashMap::from([("audit".into(), 1.0), ("sso".into(), 1.0)])
    );
    assert_eq!(
        by("iosetu_license_feature_ends_timestamp_seconds"),
        HashMap::from([
            ("audit".into(), (exp + 365 * DAY) as f64),
            ("sso".into(), exp as f64)
        ])
    );
    assert_eq!(
        by("iosetu_license_limit"),
        HashMap::from([("seats".into(), 10.0)])
    );
    assert_eq!(
        samples["iosetu_license_expiry_timestamp_seconds"][0].value,
        (exp + 365 * DAY) as f64
    );

    // OpenTelemetry: the same numbers.
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let _gauges = monitor.register_otel_metrics(&provider.meter("test"));
    provider.force_flush().unwrap();
    let mut points: HashMap<(String, String), f64> = HashMap::new();
    for resource in exporter.get_finished_metrics().unwrap() {
        for scope in resource.scope_metrics() {
            for metric in scope.metrics() {
                let name = metric.name().to_owned();
                let mut add = |attrs: Vec<String>, value: f64| {
                    if let Some(label) = attrs.into_iter().next() {
                        points.insert((name.clone(), label), value);
                    }
                };
                match metric.data() {
                    AggregatedMetrics::U64(MetricData::Gauge(g)) => {
                        for p in g.data_points() {
                            add(
                                p.attributes().map(|kv| kv.value.to_string()).collect(),
                                p.value() as f64,
                            );
                        }
                    }
                    AggregatedMetrics::F64(MetricData::Gauge(g)) => {
                        for p in g.data_points() {
                            add(
                                p.attributes().map(|kv| kv.value.to_string()).collect(),
                                p.value(),
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    let point = |name: &str, label: &str| points[&(name.to_owned(), label.to_owned())];
    assert_eq!(point("iosetu.license.feature", "sso"), 1.0);
    assert_eq!(point("iosetu.license.feature", "audit"), 1.0);
    assert_eq!(point("iosetu.license.feature_ends", "sso"), exp as f64);
    assert_eq!(point("iosetu.license.limit", "seats"), 10.0);
}

#[tokio::test(start_paused = true)]
async fn the_instance_limit_and_the_slot_held_are_metrics() {
    let clock = TestClock::new(t0());
    let mut claims = Claims::new("Acme", T0 as i64 + 30 * DAY);
    claims.max_instances = Some(3);
    let limited = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(signer().sign(&claims)))
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    let m = limited.metrics();
    assert_eq!((m.instances_max, m.instance_slot), (Some(3), None));
    let (_, samples) = parse_prometheus(&MetricsService::new(&limited).render().unwrap());
    assert_eq!(samples["iosetu_license_instances_max"][0].value, 3.0);
    // Not counted (no `instance_slots`): no slot.
    assert_eq!(samples["iosetu_license_instance_slot"][0].value, -1.0);

    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let _gauges = limited.register_otel_metrics(&provider.meter("test"));
    provider.force_flush().unwrap();
    let g = gauges(&exporter);
    assert_eq!(g["iosetu.license.instances_max"].0, 3.0);
    assert_eq!(g["iosetu.license.instance_slot"].0, -1.0);

    // No limit in the license: 0.
    let unlimited = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(
            signer().sign(&Claims::new("Acme", T0 as i64 + DAY)),
        ))
        .clock(clock)
        .start()
        .await
        .unwrap();
    let (_, samples) = parse_prometheus(&MetricsService::new(&unlimited).render().unwrap());
    assert_eq!(samples["iosetu_license_instances_max"][0].value, 0.0);
}
