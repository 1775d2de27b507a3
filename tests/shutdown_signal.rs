//! `monitor.shutdown_signal()` gives the instance slot back at SIGTERM, before the server
//! finishes its requests. In a test binary of its own, because it signals its own process.
#![cfg(all(unix, feature = "kubernetes"))]

mod common;

use std::time::Duration;

use common::kube_api::ApiServer;
use common::*;
use iosetu_license::{Claims, InstanceSlots, LicenseMonitor, LicenseSource};

#[tokio::test]
async fn sigterm_gives_the_slot_back_before_the_server_stops() {
    let api = ApiServer::new();
    let url = api.door().listen().await;
    let mut config = kube::Config::new(url.parse().unwrap());
    config.default_namespace = "shop".into();
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("usage.jsonl");
    let mut claims = Claims::new("Acme Corp", now() + 90 * 86_400);
    claims.max_instances = Some(1);
    let monitor = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::Static(signer().sign(&claims)))
        .clock(SettledClock)
        .usage_journal(&journal)
        .instance_slots(
            InstanceSlots::new("acme")
                .pod_name("web")
                .pod_uid("uid-web")
                .client(kube::Client::try_from(config).unwrap()),
        )
        .start()
        .await
        .unwrap();
    for _ in 0..200 {
        if monitor.instance_slot().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(monitor.instance_slot(), Some(0));
    // As axum's graceful shutdown polls it: the signal handler is in place before the
    // signal comes.
    let signal = tokio::spawn(monitor.shutdown_signal());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!signal.is_finished());
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM)
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), signal)
        .await
        .expect("the signal future completes")
        .unwrap();
    // The Lease is gone: a new pod creates it at once.
    assert_eq!(monitor.instance_slot(), None);
    assert!(api.leases("shop").is_empty(), "{:?}", api.holders("shop"));
    // The usage journal stays open while the server drains (what it serves is metered)...
    let held = || {
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.path().join("usage.jsonl.lock"))
            .unwrap();
        lock.try_lock().is_err()
    };
    assert!(held(), "the journal was closed at the signal");
    // ...and `shutdown`, once the server has stopped, closes it.
    monitor.shutdown().await;
    assert!(!held(), "the journal is still held after shutdown");
}
