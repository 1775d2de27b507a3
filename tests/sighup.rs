//! `kill -HUP` makes the monitor re-read its license (Unix, opt-in). In a test binary of
//! its own, because it signals its own process.

#![cfg(unix)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use iosetu_license::{Claims, LicenseMonitor, LicenseSigner, LicenseSource};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_license() {
    let signer = LicenseSigner::from_seed([41; 32]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    std::fs::write(&path, signer.sign(&Claims::new("Old", now() + 86_400))).unwrap();
    // No watch and no poll: only the signal (or the hourly check) can pick a change up.
    let monitor = LicenseMonitor::builder()
        .public_key(signer.public_key())
        .source(LicenseSource::File(path.clone()))
        .watch_file(false)
        .file_poll_interval(None)
        .reload_on_sighup(true)
        .start()
        .await
        .unwrap();
    std::fs::write(
        &path,
        signer.sign(&Claims::new("New", now() + 365 * 86_400)),
    )
    .unwrap();
    let customer = || {
        monitor
            .verdict()
            .claims
            .as_ref()
            .map(|c| c.customer.clone())
    };
    // Nothing re-reads the file by itself.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(customer().as_deref(), Some("Old"));

    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::HUP).unwrap();
    let started = Instant::now();
    while customer().as_deref() != Some("New") {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "SIGHUP did not reload the license"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
