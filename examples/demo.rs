//! The whole life of a license in under a second: a protected axum app on 127.0.0.1 walks
//! through valid, the four expiry alerts, grace, the cut-off and a hot renewal, forty-odd
//! days of simulated time. The app has three tiers: a free page with no layer (served
//! whatever the license says), the API behind the license layer, and reports behind
//! `require_feature("reports")`, which the renewal switches on with no restart.
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! The monitor runs on a tokio runtime with paused time and a `TestClock`, so each
//! transition happens at its exact simulated second; the HTTP server and client run on a
//! second, ordinary runtime, so every request is real. At each phase the demo prints the
//! event's log line (timestamped in simulated time), the `/health` body, and the status a
//! real request got. It exits non-zero if any phase misbehaves.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use iosetu_license::{
    Claims, Clock, LicenseEvent, LicenseMonitor, LicenseSigner, LicenseSource, TestClock,
};
use tokio::runtime::Runtime;
use tokio::sync::broadcast;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

const DAY: u64 = 86_400;

/// Log timestamps in simulated time, so each line shows when it happened in the story.
struct SimulatedTime(TestClock);

impl FormatTime for SimulatedTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        write!(w, "{}", humantime::format_rfc3339_seconds(self.0.wall()))
    }
}

struct Demo {
    sim: Runtime,
    real: Runtime,
    clock: TestClock,
    monitor: LicenseMonitor,
    events: broadcast::Receiver<LicenseEvent>,
    addr: SocketAddr,
    failures: Vec<String>,
}

fn main() -> ExitCode {
    match run() {
        Ok(failures) if failures.is_empty() => {
            println!("\ndemo: every phase behaved as expected");
            ExitCode::SUCCESS
        }
        Ok(failures) => {
            eprintln!("\ndemo FAILED:\n  {}", failures.join("\n  "));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("\ndemo FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<Vec<String>, Box<dyn std::error::Error>> {
    // Simulated time for the monitor; real time for the server and the client.
    let sim = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    let real = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;

    let start =
        UNIX_EPOCH + Duration::from_secs(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs());
    let clock = {
        let _in_sim = sim.enter();
        TestClock::new(start)
    };
    tracing_subscriber::fmt()
        .with_timer(SimulatedTime(clock.clone()))
        .with_target(false)
        .with_ansi(false)
        .init();

    // The vendor mints a key and a 40-day license; the operator mounts it as a file.
    let signer = LicenseSigner::generate()?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("license.key");
    let exp = unix(start) + 40 * DAY as i64;
    write_license(&signer, &path, exp, &[])?;

    println!("== start: a license for 40 days, mounted as a file ==");
    let builder = LicenseMonitor::builder()
        .public_key(signer.public_key())
        .source(LicenseSource::File(path.clone()))
        .clock(clock.clone())
        // Simulated time runs far ahead of real time here, so the renewal is picked up
        // with `check_now()`; in a real deployment the directory watch sees a replaced
        // file within milliseconds (and a poll within 2 s).
        .watch_file(false)
        .file_poll_interval(None)
        // Weekly rather than hourly re-checks keep this output short; the repeated
        // alerts of the default hourly check would be dozens of lines.
        .check_interval(Duration::from_secs(7 * DAY));
    let events = builder.subscribe();
    let monitor = sim.block_on(builder.start())?;

    let app = Router::new()
        // The paid tier: only with a license that includes "reports".
        .route("/api/reports", get(|| async { "[report 1]" }))
        .layer(monitor.require_feature("reports"))
        // The licensed API.
        .route("/api/orders", get(|| async { "[order 1, order 2]" }))
        .layer(monitor.layer())
        // The free tier and the probe: no layer, served after the cut-off too.
        .route("/", get(|| async { "welcome" }))
        .route_service("/health", monitor.health_service());
    let listener = real.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    // Through the monitor's listener: at the end of a drain period after a cut-off the
    // connections it accepted close, and with them any WebSocket or upload.
    let listener = monitor.listener(listener);
    real.spawn(async move { axum::serve(listener, app).await });
    println!("serving a protected axum app on http://{addr}");

    let mut demo = Demo {
        sim,
        real,
        clock,
        monitor,
        events,
        addr,
        failures: Vec::new(),
    };
    demo.drain();
    demo.report("valid", 200, "healthy");
    demo.report_tiers("valid, without the reports feature", 403);

    for (event, title) in [
        ("license.expiring_30d", "under 30 days left"),
        ("license.expiring_7d", "under 7 days left"),
        ("license.expiring_24h", "under 24 hours left"),
        ("license.expiring_1h", "under 1 hour left"),
    ] {
        demo.wait_for(event, title);
        demo.report(title, 200, "healthy");
    }
    demo.wait_for("license.grace_mode_entered", "expired: grace period");
    demo.report("grace", 200, "degraded");
    demo.wait_for("license.grace_period_expired", "grace period over: cut-off");
    demo.report("cut-off", 503, "unhealthy");
    demo.report_tiers("cut-off", 503);

    println!(
        "\n== renewal with the reports feature: the operator replaces the file; no restart =="
    );
    let renewed = unix(demo.sim_now()) + 365 * DAY as i64;
    write_license(&signer, &path, renewed, &["reports"])?;
    let verdict = demo.sim.block_on(demo.monitor.check_now());
    demo.drain();
    if !verdict.is_valid() {
        demo.failures.push("the renewal was not accepted".into());
    }
    demo.report("renewed", 200, "healthy");
    demo.report_tiers("renewed with reports", 200);
    demo.real.shutdown_background();
    Ok(demo.failures)
}

impl Demo {
    fn sim_now(&self) -> SystemTime {
        let _in_sim = self.sim.enter();
        self.clock.wall()
    }

    /// Lets simulated time run until the monitor emits `name` (its log line prints as it
    /// happens), skipping the periodic repeats of earlier alerts.
    fn wait_for(&mut self, name: &str, title: &str) {
        println!("\n== {title} ==");
        let found = self.sim.block_on(async {
            let deadline = tokio::time::sleep(Duration::from_secs(400 * DAY));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    event = self.events.recv() => match event {
                        Ok(event) if event.name() == name => return true,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return false,
                    },
                    () = &mut deadline => return false,
                }
            }
        });
        if !found {
            self.failures.push(format!("{name} never came"));
        }
    }

    fn drain(&mut self) {
        while self.events.try_recv().is_ok() {}
    }

    /// One real request to the API and one to `/health`, checked against expectations.
    fn report(&mut self, phase: &str, want_status: u16, want_health: &str) {
        let now = humantime::format_rfc3339_seconds(self.sim_now());
        let api = self.real.block_on(fetch(self.addr, "/api/orders"));
        let health = self.real.block_on(fetch(self.addr, "/health"));
        match (api, health) {
            (Ok((status, body)), Ok((health_status, health_body))) => {
                println!("   at {now}: GET /api/orders -> {status} {body}");
                println!("   at {now}: GET /health     -> {health_status} {health_body}");
                if status != want_status {
                    self.failures.push(format!(
                        "{phase}: /api/orders gave {status}, want {want_status}"
                    ));
                }
                if !health_body.contains(&format!("\"status\":\"{want_health}\"")) {
                    self.failures.push(format!(
                        "{phase}: /health said {health_body}, want {want_health}"
                    ));
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                self.failures.push(format!("{phase}: request failed: {e}"))
            }
        }
    }
}

impl Demo {
    /// The free page (always 200) and the reports route, which must answer `want`.
    fn report_tiers(&mut self, phase: &str, want: u16) {
        let now = humantime::format_rfc3339_seconds(self.sim_now());
        for (path, want) in [("/", 200), ("/api/reports", want)] {
            match self.real.block_on(fetch(self.addr, path)) {
                Ok((status, body)) => {
                    let body: String = body.chars().take(70).collect();
                    println!("   at {now}: GET {path:<12} -> {status} {body}");
                    if status != want {
                        self.failures
                            .push(format!("{phase}: {path} gave {status}, want {want}"));
                    }
                }
                Err(e) => self.failures.push(format!("{phase}: {path} failed: {e}")),
            }
        }
    }
}

async fn fetch(addr: SocketAddr, path: &str) -> Result<(u16, String), Box<dyn std::error::Error>> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = http::Request::get(format!("http://{addr}{path}")).body(Empty::new())?;
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn write_license(
    signer: &LicenseSigner,
    path: &Path,
    exp: i64,
    features: &[&str],
) -> std::io::Result<()> {
    let mut claims = Claims::new("Acme Corp", exp);
    claims.features = features.iter().map(|f| (*f).to_owned()).collect();
    std::fs::write(path, signer.sign(&claims) + "\n")
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
