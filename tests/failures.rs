//! Reports of a bad license source: at the first failed read, again at most once per
//! check interval while it stays the same (a SIGHUP or `check_now` storm is not an event
//! storm), at once when it changes, and once when it is fixed.

mod common;

use std::time::Duration;

use common::{HOUR, T0, builder, drain, names, run_for, signer, start};
use iosetu_license::{Claims, LicenseSource, TestClock};

#[tokio::test(start_paused = true)]
async fn an_unchanged_bad_source_is_reported_once_per_check_interval() {
    let clock = TestClock::new(common::t0());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let good = signer().sign(&Claims::new("Acme", T0 + 100 * 86_400));
    std::fs::write(&path, &good).unwrap();
    let (monitor, mut rx) = start(
        builder(&clock, LicenseSource::File(path.clone()))
            .watch_file(false)
            .file_poll_interval(None)
            .check_interval(Duration::from_secs(HOUR as u64)),
    )
    .await;
    drain(&mut rx);
    let failures = |rx: &mut _| {
        names(&drain(rx))
            .iter()
            .filter(|n| **n == "license.verification_failed")
            .count()
    };

    std::fs::write(&path, "garbage").unwrap();
    for _ in 0..20 {
        monitor.check_now().await;
    }
    assert_eq!(
        failures(&mut rx),
        1,
        "a storm of checks reports an unchanged failure once"
    );
    assert_eq!(monitor.metrics().check_failing, Some("malformed"));

    // Another bad content is news.
    std::fs::write(&path, "other garbage").unwrap();
    monitor.check_now().await;
    monitor.check_now().await;
    assert_eq!(failures(&mut rx), 1);

    // A check interval later, the hourly check reports it again.
    run_for(HOUR + 1).await;
    assert_eq!(failures(&mut rx), 1);

    // Fixed: recovered once; broken again the same way: reported at once.
    std::fs::write(&path, &good).unwrap();
    monitor.check_now().await;
    assert!(names(&drain(&mut rx)).contains(&"license.recovered"));
    std::fs::write(&path, "other garbage").unwrap();
    monitor.check_now().await;
    assert_eq!(failures(&mut rx), 1);
}
