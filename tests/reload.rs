//! Hot reload with real files in real time: every way a license file changes in
//! deployments, kubelet's AtomicWriter swap step by step first. Waits are bounded polls of
//! the verdict, never fixed sleeps. Unix only: the layouts under test are symlinks and FIFOs.

#![cfg(unix)]

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::now;

use http::{Request, Response, StatusCode};
use iosetu_license::{
    Claims, LicenseEvent, LicenseMonitor, LicenseSigner, LicenseSource, LicenseState,
};
use tokio::sync::broadcast;
use tower::{Layer as _, ServiceExt as _};

const DAY: i64 = 86_400;
/// The product's promise: a replaced file is live within 5 s.
const LIVE_WITHIN: Duration = Duration::from_secs(5);

fn signer() -> LicenseSigner {
    LicenseSigner::from_seed([31; 32])
}

fn token(customer: &str, exp: i64) -> String {
    signer().sign(&Claims::new(customer, exp)) + "\n"
}

/// A secret volume as kubelet's AtomicWriter lays it out: `license.key` is a symlink to
/// `..data/license.key`, `..data` a symlink to a timestamped directory.
struct SecretVolume {
    dir: tempfile::TempDir,
    generation: u32,
}

impl SecretVolume {
    fn new(content: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let volume = Self { dir, generation: 0 };
        let first = volume.write_generation(content);
        std::os::unix::fs::symlink(&first, volume.dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/license.key", volume.path()).unwrap();
        volume
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("license.key")
    }

    fn write_generation(&self, content: &str) -> String {
        let name = format!(
            "..2026_11_28_14_30_{:02}.{}",
            self.generation,
            1000 + self.generation
        );
        let generation_dir = self.dir.path().join(&name);
        std::fs::create_dir(&generation_dir).unwrap();
        let file = generation_dir.join("license.key");
        std::fs::write(&file, content).unwrap();
        std::fs::File::open(&file).unwrap().sync_all().unwrap();
        name
    }

    /// One update, in AtomicWriter's order: new directory, `..data_tmp` symlink, rename
    /// over `..data`, remove the old directory.
    fn update(&mut self, content: &str) {
        let old = std::fs::read_link(self.dir.path().join("..data")).unwrap();
        self.generation += 1;
        let new = self.write_generation(content);
        let tmp = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&new, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
        std::fs::remove_dir_all(self.dir.path().join(old)).unwrap();
    }
}

async fn start(path: &Path, watch: bool) -> (LicenseMonitor, broadcast::Receiver<LicenseEvent>) {
    let builder = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::File(path.to_path_buf()))
        .clock(common::SettledClock)
        .watch_file(watch);
    let rx = builder.subscribe();
    (builder.start().await.unwrap(), rx)
}

/// Polls until `done` holds, at most `limit`; returns how long it took.
async fn within(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done().then(|| started.elapsed())
}

/// Waits (bounded) for an event named `name`; returns it.
async fn event_named(rx: &mut broadcast::Receiver<LicenseEvent>, name: &str) -> LicenseEvent {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(event) if event.name() == name => return event,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("closed waiting for {name}"),
            }
        }
    };
    tokio::time::timeout(LIVE_WITHIN, wait)
        .await
        .unwrap_or_else(|_| panic!("no {name} within {LIVE_WITHIN:?}"))
}

fn customer(monitor: &LicenseMonitor) -> Option<String> {
    monitor
        .verdict()
        .claims
        .as_ref()
        .map(|c| c.customer.clone())
}

async fn kubelet_swap_revives_a_cut_off_service(watch: bool) -> Duration {
    let mut volume = SecretVolume::new(&token("Old", now() - 10 * DAY));
    let (monitor, mut rx) = start(&volume.path(), watch).await;
    assert_eq!(monitor.verdict().state, LicenseState::GraceExpired);
    while rx.try_recv().is_ok() {} // the start-up events

    volume.update(&token("New", now() + 365 * DAY));
    let latency = within(LIVE_WITHIN, || monitor.verdict().is_valid())
        .await
        .unwrap_or_else(|| panic!("the swapped license was not live within {LIVE_WITHIN:?}"));
    match event_named(&mut rx, "license.loaded").await {
        LicenseEvent::Loaded { customer, .. } => assert_eq!(customer, "New"),
        other => panic!("unexpected {other:?}"),
    }
    event_named(&mut rx, "license.grace_mode_exited").await;
    // And again: the watch must survive the first swap (a watch on the file would not).
    volume.update(&token("Newer", now() + 400 * DAY));
    within(LIVE_WITHIN, || {
        customer(&monitor).as_deref() == Some("Newer")
    })
    .await
    .expect("the second swap was not seen");
    latency
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_atomic_writer_swap_with_the_watch() {
    let latency = kubelet_swap_revives_a_cut_off_service(true).await;
    println!("reload latency, kubelet swap, directory watch: {latency:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_atomic_writer_swap_with_polling_only() {
    let latency = kubelet_swap_revives_a_cut_off_service(false).await;
    println!("reload latency, kubelet swap, 2 s poll only: {latency:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_into_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    std::fs::write(&path, token("Old", now() + 5 * DAY)).unwrap();
    let (monitor, _rx) = start(&path, true).await;
    let tmp = dir.path().join(".license.key.tmp");
    std::fs::write(&tmp, token("New", now() + 365 * DAY)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let latency = within(LIVE_WITHIN, || customer(&monitor).as_deref() == Some("New")).await;
    println!("reload latency, rename into place: {latency:?}");
    assert!(latency.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_and_rewrite_is_never_judged_half_written() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    std::fs::write(&path, token("Old", now() + 5 * DAY)).unwrap();
    let (monitor, mut rx) = start(&path, true).await;

    // An editor's save: truncate, write half, pause, write the rest.
    let new = token("New", now() + 365 * DAY);
    let (first, second) = new.split_at(new.len() / 2);
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(first.as_bytes()).unwrap();
    file.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    file.write_all(second.as_bytes()).unwrap();
    drop(file);

    within(LIVE_WITHIN, || customer(&monitor).as_deref() == Some("New"))
        .await
        .expect("the rewritten license was not live");
    let seen: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert!(
        !seen.iter().any(|e| matches!(
            e,
            LicenseEvent::VerificationFailed { .. } | LicenseEvent::Missing { .. }
        )),
        "a half-written file was judged: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_then_recreate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    std::fs::write(&path, token("Old", now() + 5 * DAY)).unwrap();
    let (monitor, mut rx) = start(&path, true).await;

    std::fs::remove_file(&path).unwrap();
    match event_named(&mut rx, "license.missing").await {
        LicenseEvent::Missing { kept_previous, .. } => assert!(kept_previous),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(monitor.verdict().state, LicenseState::Valid);

    std::fs::write(&path, token("New", now() + 365 * DAY)).unwrap();
    within(LIVE_WITHIN, || customer(&monitor).as_deref() == Some("New"))
        .await
        .expect("the re-created license was not live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_replacements_keep_the_valid_license_and_name_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let exp = now() + 20 * DAY;
    std::fs::write(&path, token("Acme", exp)).unwrap();
    let (monitor, mut rx) = start(&path, true).await;

    let mut random = vec![0u8; 1024 * 1024];
    getrandom::fill(&mut random).unwrap();
    let forged = LicenseSigner::from_seed([99; 32]).sign(&Claims::new("Acme", exp + 365 * DAY));
    type Change = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Change, &str, &str)> = vec![
        (
            "garbage",
            Box::new(|p| std::fs::write(p, "not a license at all").unwrap()),
            "license.verification_failed",
            "malformed",
        ),
        (
            "1 MiB random",
            Box::new(move |p| std::fs::write(p, &random).unwrap()),
            "license.verification_failed",
            "too_large",
        ),
        (
            "forged",
            Box::new(move |p| std::fs::write(p, &forged).unwrap()),
            "license.verification_failed",
            "bad_signature",
        ),
        (
            "a directory",
            Box::new(|p| {
                std::fs::remove_file(p).unwrap();
                std::fs::create_dir(p).unwrap();
            }),
            "license.verification_failed",
            "unreadable",
        ),
        (
            "a FIFO",
            Box::new(|p| {
                std::fs::remove_dir(p).unwrap();
                rustix::fs::mkfifoat(rustix::fs::CWD, p, rustix::fs::Mode::from_raw_mode(0o600))
                    .unwrap();
            }),
            "license.verification_failed",
            "unreadable",
        ),
        (
            "deleted",
            Box::new(|p| std::fs::remove_file(p).unwrap()),
            "license.missing",
            "missing",
        ),
    ];
    for (what, change, name, reason) in cases {
        change(&path);
        match event_named(&mut rx, name).await {
            LicenseEvent::VerificationFailed {
                error,
                kept_previous,
                ..
            }
            | LicenseEvent::Missing {
                error,
                kept_previous,
                ..
            } => {
                assert_eq!(error.reason(), reason, "{what}");
                assert!(kept_previous, "{what}");
            }
            other => panic!("{what}: unexpected {other:?}"),
        }
        let verdict = monitor.verdict();
        assert_eq!(verdict.state, LicenseState::Valid, "{what}");
        assert_eq!(verdict.claims.as_ref().unwrap().exp, exp, "{what}");
    }
    // The checker is not stuck on any of them: a good file is picked up again.
    std::fs::write(&path, token("Renewed", exp + 100 * DAY)).unwrap();
    within(LIVE_WITHIN, || {
        customer(&monitor).as_deref() == Some("Renewed")
    })
    .await
    .expect("the checker did not recover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_denied_is_unreadable_when_not_root() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    std::fs::write(&path, token("Acme", now() + 20 * DAY)).unwrap();
    let (monitor, mut rx) = start(&path, true).await;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    if rustix::process::geteuid().is_root() {
        // Root reads a 0000 file anyway (CAP_DAC_OVERRIDE): nothing changes at all.
        assert_eq!(monitor.check_now().await.state, LicenseState::Valid);
        println!("running as root: EACCES cannot be provoked; checked that nothing broke");
        return;
    }
    match event_named(&mut rx, "license.verification_failed").await {
        LicenseEvent::VerificationFailed { error, .. } => assert_eq!(error.reason(), "unreadable"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(monitor.verdict().state, LicenseState::Valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_swaps_under_load_never_mix_two_licenses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let a = ("Alpha", now() + 100 * DAY);
    let b = ("Beta", now() + 200 * DAY);
    std::fs::write(&path, token(a.0, a.1)).unwrap();
    // Reloads are driven by check_now here, so each swap is known to be judged before the
    // next; the watch would only add wakes.
    let monitor = LicenseMonitor::builder()
        .public_key(signer().public_key())
        .source(LicenseSource::File(path.clone()))
        .clock(common::SettledClock)
        .watch_file(false)
        .file_poll_interval(None)
        .start()
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let service = monitor
            .layer()
            .layer(tower::service_fn(|_: Request<String>| async {
                Ok::<_, Infallible>(Response::new(String::new()))
            }));
        let monitor = monitor.clone();
        let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let response = service
                    .clone()
                    .oneshot(Request::new(String::new()))
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                let verdict = monitor.verdict();
                let claims = verdict.claims.as_ref().unwrap();
                let pair = (claims.customer.as_str(), claims.exp);
                assert!(pair == a || pair == b, "a mixed verdict: {pair:?}");
                served.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }));
    }
    for i in 0..500 {
        let (name, exp) = if i % 2 == 0 { b } else { a };
        std::fs::write(&path, token(name, exp)).unwrap();
        let verdict = monitor.check_now().await;
        let claims = verdict.claims.as_ref().unwrap();
        assert_eq!(
            (claims.customer.as_str(), claims.exp),
            (name, exp),
            "swap {i} lost"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    // The last write (i = 499) was Alpha.
    assert_eq!(customer(&monitor).as_deref(), Some("Alpha"));
    assert!(served.load(Ordering::Relaxed) > 0);
}
