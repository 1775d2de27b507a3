//! Two threads sending requests through the gate while the checker publishes a new
//! verdict every millisecond, against one thread alone: the per-thread cost should not
//! move, because the request path writes no shared memory and the flag it reads sits on
//! a cache line the checker writes only when admission changes. The "pending once" rows
//! are requests whose handler waits once: such a response registers to be woken at the
//! end of a drain period, which does write shared memory (a waiter list, sharded).
//!
//! `cargo bench --bench contention`

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Hello, PendOnce, State, monitor, one_pending_request, one_request};
use criterion::{Criterion, criterion_group, criterion_main};
use tower::Layer;

/// Runs `threads` threads of `iters` requests each through a service `make` builds;
/// returns the slowest thread's time.
fn run<S, F>(make: F, threads: usize, iters: u64) -> Duration
where
    F: Fn() -> S,
    S: tower::Service<common::Req> + Send,
    S::Error: std::fmt::Debug,
    S::Response: Send,
{
    run_with(make, threads, iters, one_request)
}

fn run_with<S, F>(make: F, threads: usize, iters: u64, one: fn(&mut S) -> S::Response) -> Duration
where
    F: Fn() -> S,
    S: tower::Service<common::Req> + Send,
    S::Error: std::fmt::Debug,
    S::Response: Send,
{
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let mut service = make();
                scope.spawn(move || {
                    let started = Instant::now();
                    for _ in 0..iters {
                        black_box(one(&mut service));
                    }
                    started.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    })
}

fn contention(c: &mut Criterion) {
    // The monitor lives on a runtime thread of its own, which also plays the writer.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let rt = common::runtime();
            let monitor = monitor(&rt, State::Valid);
            tx.send(monitor.clone()).unwrap();
            rt.block_on(async {
                while !stop.load(Ordering::Relaxed) {
                    // A full check: read, evaluate, store a new verdict.
                    monitor.check_now().await;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
        })
    };
    let monitor = rx.recv().unwrap();

    let mut group = c.benchmark_group("contention");
    // The control: no shared state at all. Whatever two threads lose here against one is
    // the machine's, not the gate's.
    group.bench_function("bare, 1 thread", |b| {
        b.iter_custom(|iters| run(|| Hello, 1, iters))
    });
    group.bench_function("bare, 2 threads", |b| {
        b.iter_custom(|iters| run(|| Hello, 2, iters))
    });
    group.bench_function("layer, 1 thread, writer every 1 ms", |b| {
        b.iter_custom(|iters| run(|| monitor.layer().layer(Hello), 1, iters))
    });
    group.bench_function("layer, 2 threads, writer every 1 ms", |b| {
        b.iter_custom(|iters| run(|| monitor.layer().layer(Hello), 2, iters))
    });
    for threads in [1, 2] {
        group.bench_function(format!("bare, pending once, {threads} thread(s)"), |b| {
            b.iter_custom(|iters| run_with(|| PendOnce, threads, iters, one_pending_request))
        });
        group.bench_function(format!("layer, pending once, {threads} thread(s)"), |b| {
            b.iter_custom(|iters| {
                run_with(
                    || monitor.layer().layer(PendOnce),
                    threads,
                    iters,
                    one_pending_request,
                )
            })
        });
    }
    group.finish();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

criterion_group!(benches, contention);
criterion_main!(benches);
