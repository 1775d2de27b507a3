//! The shipped alert rules against a real Prometheus server (Debian's `prometheus`,
//! which `.ci/run` installs): an axum app on 127.0.0.1 serves `/metrics`, Prometheus
//! scrapes it every second with `deploy/prometheus-rules.yaml` loaded, and the test
//! drives the license through valid (expiring) → failing read → fixed → grace → cut-off
//! → renewed → clock set back → clock put right, asserting through Prometheus's HTTP API
//! that each alert fires and resolves, and that no other alert fires meanwhile.
//!
//! Time on the license's side moves by `TestClock::suspend` (wall and monotonic clocks
//! both jump, as after a suspend) and `check_now`; Prometheus runs in real time, and
//! every wait on it is bounded.
//!
//! Without a `prometheus` binary on `PATH` the test says so and passes, except where
//! `IOSETU_REQUIRE_PROMETHEUS` or `CI` is set (as `.ci/run` does): there it fails.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use common::{DAY, HOUR, T0, builder, signer};
use iosetu_license::{Claims, LicenseLayer, LicenseSource, LicenseState, TestClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long any one state may take to show in Prometheus's alerts (a scrape and an
/// evaluation, each every second, take about two).
const WAIT: Duration = Duration::from_secs(30);

fn prometheus_binary() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join("prometheus"))
        .find(|p| p.is_file())
}

/// The Prometheus process, killed when the test ends however it ends.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1: Prometheus cannot be told to bind port 0 and report it.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Prometheus {
    async fn start(binary: &Path, target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus-rules.yaml");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok((200, _)) = get(addr, "/-/ready").await {
                return prometheus;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The active alerts (pending or firing): `(alertname, state, reason label)`.
    async fn alerts(&self) -> BTreeSet<(String, String, String)> {
        let (status, body) = get(self.addr, "/api/v1/alerts").await.expect("query");
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        json["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let label = |k: &str| a["labels"][k].as_str().unwrap_or_default().to_owned();
                (
                    label("alertname"),
                    a["state"].as_str().unwrap().to_owned(),
                    label("reason"),
                )
            })
            .collect()
    }

    /// Waits until exactly `expected` alerts fire (by name) and none is pending.
    async fn wait_for(&self, expected: &[&str], step: &str) {
        let want: BTreeSet<&str> = expected.iter().copied().collect();
        let deadline = Instant::now() + WAIT;
        loop {
            let alerts = self.alerts().await;
            let firing: BTreeSet<&str> = alerts
                .iter()
                .filter(|(_, state, _)| state == "firing")
                .map(|(name, _, _)| name.as_str())
                .collect();
            if firing == want && alerts.iter().all(|(_, state, _)| state == "firing") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{step}: waited {WAIT:?} for {want:?} firing alone; active: {alerts:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A bare HTTP/1.0 GET: status and body.
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_alert_fires_on_the_first_fault_and_resolves_after_the_fix() {
    let Some(binary) = prometheus_binary() else {
        let required = ["IOSETU_REQUIRE_PROMETHEUS", "CI"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty() && v != "false"));
        assert!(
            !required,
            "no `prometheus` binary on PATH, and this run requires it (CI or \
             IOSETU_REQUIRE_PROMETHEUS is set): install Debian's `prometheus` package"
        );
        eprintln!(
            "SKIPPED: no `prometheus` binary on PATH; install Debian's `prometheus` package \
             to run the live alert-rule test"
        );
        return;
    };

    let clock = TestClock::new(common::t0());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let expiring = signer().sign(&Claims::new("Acme", T0 + 5 * DAY));
    std::fs::write(&path, &expiring).unwrap();
    let grace = Duration::from_secs(HOUR as u64);
    let monitor = builder(&clock, LicenseSource::File(path.clone()))
        .grace_period(grace)
        .watch_file(false)
        .file_poll_interval(None)
        .start()
        .await
        .unwrap();
    let app = Router::new()
        .route("/", axum::routing::get(|| async { "protected" }))
        .layer(LicenseLayer::new(&monitor))
        .route_service("/metrics", monitor.metrics_service());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let prometheus = Prometheus::start(&binary, target).await;

    // Valid, five days left.
    prometheus
        .wait_for(&["LicenseExpiringSoon"], "valid, 5 days left")
        .await;

    // A bad file: the warning fires on the first failed read...
    std::fs::write(&path, "garbage").unwrap();
    assert_eq!(monitor.check_now().await.state, LicenseState::Valid);
    prometheus
        .wait_for(
            &["LicenseExpiringSoon", "LicenseVerificationFailing"],
            "failing read",
        )
        .await;
    let reasons: Vec<String> = prometheus
        .alerts()
        .await
        .into_iter()
        .filter(|(name, _, _)| name == "LicenseVerificationFailing")
        .map(|(_, _, reason)| reason)
        .collect();
    assert_eq!(reasons, ["malformed"]);

    // ...and resolves at the first good one.
    std::fs::write(&path, &expiring).unwrap();
    monitor.check_now().await;
    prometheus
        .wait_for(&["LicenseExpiringSoon"], "fixed file")
        .await;

    // Expired: grace pages, the expiry warning stops.
    clock.suspend(Duration::from_secs((5 * DAY + 60) as u64));
    assert_eq!(monitor.check_now().await.state, LicenseState::Grace);
    prometheus.wait_for(&["LicenseInGraceMode"], "grace").await;

    // Grace over: the cut-off pages, alone.
    clock.suspend(grace);
    assert_eq!(monitor.check_now().await.state, LicenseState::GraceExpired);
    prometheus.wait_for(&["LicenseCutOff"], "cut-off").await;

    // Renewed in place (with a limit of 10 seats): everything resolves.
    let mut renewal = Claims::new("Acme", T0 + 400 * DAY);
    renewal.limits.insert("seats".into(), 10);
    std::fs::write(&path, signer().sign(&renewal)).unwrap();
    assert_eq!(monitor.check_now().await.state, LicenseState::Valid);
    prometheus.wait_for(&[], "renewed").await;

    // The clock set back an hour: one page, as manipulation (not also as grace)...
    clock.jump_wall(-HOUR);
    assert_eq!(monitor.check_now().await.state, LicenseState::Grace);
    prometheus
        .wait_for(&["LicenseClockManipulation"], "clock set back")
        .await;

    // ...resolved once the clock is put right.
    clock.jump_wall(HOUR);
    assert_eq!(monitor.check_now().await.state, LicenseState::Valid);
    prometheus.wait_for(&[], "clock put right").await;

    // Usage over the licensed limit: a warning, never a cut-off...
    monitor.usage().set("seats", 12).unwrap();
    prometheus
        .wait_for(&["LicenseUsageOverLimit"], "12 seats of 10")
        .await;
    assert_eq!(monitor.verdict().state, LicenseState::Valid);
    // ...resolved once usage is within it.
    monitor.usage().set("seats", 10).unwrap();
    prometheus.wait_for(&[], "10 seats of 10").await;
}
