//! The checker's costs: verifying a token, and one check cycle with the token unchanged
//! (what the hourly check and each file poll that finds no change cost) or new.
//!
//! `cargo bench --bench verify`

mod common;

use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use iosetu_license::{Claims, LicenseMonitor, LicenseSigner, LicenseSource, LicenseVerifier};

fn verify(c: &mut Criterion) {
    let signer = LicenseSigner::from_seed([78; 32]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut claims = Claims::new("Bench Corp", now + 365 * 86_400);
    claims.iat = Some(now);
    claims.features = vec!["sso".into(), "audit".into()];
    let token = signer.sign(&claims);
    let verifier = LicenseVerifier::new(vec![signer.public_key()]);

    let mut group = c.benchmark_group("checker");
    group.bench_function("verify a token", |b| {
        b.iter(|| black_box(verifier.verify(black_box(&token)).unwrap()))
    });

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    std::fs::write(&path, &token).unwrap();
    let rt = common::runtime();
    let monitor = rt
        .block_on(
            LicenseMonitor::builder()
                .public_key(signer.public_key())
                .source(LicenseSource::File(path.clone()))
                .watch_file(false)
                .file_poll_interval(None)
                .start(),
        )
        .unwrap();
    group.bench_function("check cycle, file unchanged", |b| {
        b.iter(|| black_box(rt.block_on(monitor.check_now())))
    });

    let other = signer.sign(&Claims::new("Other Corp", now + 200 * 86_400));
    let tokens = [token.clone(), other];
    let mut i = 0;
    group.bench_function("check cycle, new license each time", |b| {
        b.iter(|| {
            i += 1;
            std::fs::write(&path, &tokens[i % 2]).unwrap();
            black_box(rt.block_on(monitor.check_now()))
        })
    });
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
