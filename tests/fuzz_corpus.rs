//! Replays the fuzz corpora (and every crash input ever found, under
//! `tests/fuzz_regressions/`) through the same entry points the fuzz targets use, so CI
//! keeps what fuzzing learned without running a fuzzer.

use std::path::Path;

fn replay(dir: &Path, target: fn(&[u8])) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut count = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_file() {
            target(&std::fs::read(&path).unwrap());
            count += 1;
        }
    }
    count
}

#[test]
fn token_corpus_replays_without_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let n = replay(
        &root.join("fuzz/corpus/token"),
        iosetu_license::fuzzing::token,
    );
    assert!(n > 0, "the token corpus is empty");
    replay(
        &root.join("tests/fuzz_regressions/token"),
        iosetu_license::fuzzing::token,
    );
}

#[test]
fn judge_corpus_replays_without_a_broken_oracle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let n = replay(
        &root.join("fuzz/corpus/judge"),
        iosetu_license::fuzzing::judge,
    );
    assert!(n > 0, "the judge corpus is empty");
    replay(
        &root.join("tests/fuzz_regressions/judge"),
        iosetu_license::fuzzing::judge,
    );
}

#[test]
fn source_corpus_replays_without_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let n = replay(
        &root.join("fuzz/corpus/source"),
        iosetu_license::fuzzing::source,
    );
    assert!(n > 0, "the source corpus is empty");
    replay(
        &root.join("tests/fuzz_regressions/source"),
        iosetu_license::fuzzing::source,
    );
}
