//! Per-request cost of the license gate, beside what it is compared with.
//!
//! `cargo bench --bench overhead`. Every variant wraps the same inner service (a
//! `Hello` that answers at once), so the differences are the gates' own cost.

mod common;

use std::hint::black_box;
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;
use common::{ArcSwapGate, Hello, MutexGate, RwLockGate, State, monitor, one_request, runtime};
use criterion::{Criterion, criterion_group, criterion_main};
use tower::Layer;
use tower::layer::util::Identity;

fn overhead(c: &mut Criterion) {
    let rt = runtime();
    let valid = monitor(&rt, State::Valid);
    let grace = monitor(&rt, State::Grace);
    let rejecting = monitor(&rt, State::Rejecting);

    let mut group = c.benchmark_group("per_request");
    let mut bare = Hello;
    group.bench_function("bare service", |b| {
        b.iter(|| black_box(one_request(&mut bare)))
    });
    let mut identity = Identity::new().layer(Hello);
    group.bench_function("Identity layer", |b| {
        b.iter(|| black_box(one_request(&mut identity)))
    });
    let mut licensed = valid.layer().layer(Hello);
    group.bench_function("LicenseLayer, valid", |b| {
        b.iter(|| black_box(one_request(&mut licensed)))
    });
    let mut in_grace = grace.layer().layer(Hello);
    group.bench_function("LicenseLayer, grace", |b| {
        b.iter(|| black_box(one_request(&mut in_grace)))
    });
    let mut refusing = rejecting.layer().layer(Hello);
    group.bench_function("LicenseLayer, rejecting", |b| {
        b.iter(|| black_box(one_request(&mut refusing)))
    });
    let mut arcswap = ArcSwapGate(Arc::new(ArcSwap::new(valid.verdict())), Hello);
    group.bench_function("ArcSwap load gate", |b| {
        b.iter(|| black_box(one_request(&mut arcswap)))
    });
    let mut rwlock = RwLockGate(Arc::new(RwLock::new(valid.verdict())), Hello);
    group.bench_function("RwLock gate", |b| {
        b.iter(|| black_box(one_request(&mut rwlock)))
    });
    let mut mutex = MutexGate(Arc::new(Mutex::new(valid.verdict())), Hello);
    group.bench_function("Mutex gate", |b| {
        b.iter(|| black_box(one_request(&mut mutex)))
    });
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
