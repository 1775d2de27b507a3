//! Soak: two threads send requests through the layer while the checker reloads 10,000
//! times and the test clock jumps back and forth. No panic, no lost transition, and no
//! request admitted once the cut-off has been published. Bounded: well under a minute.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, UNIX_EPOCH};

use http::{Request, Response, StatusCode};
use iosetu_license::{
    Claims, GraceReason, LicenseMonitor, LicenseSigner, LicenseSource, LicenseState, TestClock,
};
use tower::{Layer, Service};

const T0: u64 = 1_800_000_000;

#[derive(Clone, Copy)]
struct Ok200;

impl Service<Request<()>> for Ok200 {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<()>) -> Self::Future {
        ready(Ok(Response::new(())))
    }
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_reloads_under_load() {
    let signer = LicenseSigner::from_seed([81; 32]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let exp = (T0 + 365 * 86_400) as i64;
    let a = signer.sign(&Claims::new("Alpha", exp));
    let b = signer.sign(&Claims::new("Beta", exp));
    std::fs::write(&path, &a).unwrap();
    let clock = TestClock::new(UNIX_EPOCH + Duration::from_secs(T0));
    let builder = LicenseMonitor::builder()
        .public_key(signer.public_key())
        .source(LicenseSource::File(path.clone()))
        .watch_file(false)
        .file_poll_interval(None)
        .clock(clock.clone());
    let mut events = builder.subscribe();
    let monitor = builder.start().await.unwrap();
    while events.try_recv().is_ok() {}

    let stop = Arc::new(AtomicBool::new(false));
    let cut_off = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let mut service = monitor.layer().layer(Ok200);
            let (stop, cut_off, served) =
                (Arc::clone(&stop), Arc::clone(&cut_off), Arc::clone(&served));
            std::thread::spawn(move || {
                let mut cx = Context::from_waker(Waker::noop());
                while !stop.load(Ordering::Relaxed) {
                    let published = cut_off.load(Ordering::Acquire);
                    assert!(service.poll_ready(&mut cx).is_ready());
                    let response = match pin!(service.call(Request::new(()))).poll(&mut cx) {
                        Poll::Ready(Ok(response)) => response,
                        _ => panic!("not ready"),
                    };
                    if published {
                        assert_eq!(
                            response.status(),
                            StatusCode::SERVICE_UNAVAILABLE,
                            "admitted after the cut-off"
                        );
                    }
                    // Leave the checker's thread some CPU on a small machine.
                    if served.fetch_add(1, Ordering::Relaxed) % 64 == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            })
        })
        .collect();

    let (mut entered, mut exited) = (0u32, 0u32);
    let started = std::time::Instant::now();
    for i in 0..10_000u32 {
        let expect = match i % 4 {
            0 => {
                let customer = if (i / 4) % 2 == 0 { "Beta" } else { "Alpha" };
                std::fs::write(&path, if customer == "Beta" { &b } else { &a }).unwrap();
                (LicenseState::Valid, customer)
            }
            1 => {
                clock.jump_wall(-3600);
                (LicenseState::Grace, "")
            }
            2 => {
                clock.jump_wall(3600);
                (LicenseState::Valid, "")
            }
            _ => {
                std::fs::write(&path, "garbage").unwrap();
                (LicenseState::Valid, "")
            }
        };
        tokio::time::advance(Duration::from_secs(1)).await;
        let verdict = monitor.check_now().await;
        assert_eq!(verdict.state, expect.0, "step {i}");
        if !expect.1.is_empty() {
            assert_eq!(
                verdict.claims.as_ref().unwrap().customer,
                expect.1,
                "step {i}"
            );
        }
        if expect.0 == LicenseState::Grace {
            assert_eq!(
                verdict.reason,
                Some(GraceReason::ClockManipulation),
                "step {i}"
            );
        }
        while let Ok(event) = events.try_recv() {
            match event.name() {
                "license.grace_mode_entered" => entered += 1,
                "license.grace_mode_exited" => exited += 1,
                _ => {}
            }
        }
    }
    // Every transition was reported, once.
    assert_eq!((entered, exited), (2500, 2500));

    // Now the cut-off: the clock set back again and left there for a day.
    clock.jump_wall(-3600);
    monitor.check_now().await;
    tokio::time::advance(Duration::from_secs(25 * 3600)).await;
    let verdict = monitor.check_now().await;
    assert_eq!(verdict.state, LicenseState::GraceExpired);
    cut_off.store(true, Ordering::Release);
    let before = served.load(Ordering::Relaxed);
    while served.load(Ordering::Relaxed) < before + 10_000 {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("a request thread panicked");
    }
    println!(
        "soak: 10,000 reloads and {} requests in {:?}",
        served.load(Ordering::Relaxed),
        started.elapsed()
    );
}
