//! The environment-variable source, read the way a container sets it: at process start.
//!
//! Changing the environment of a running multi-threaded test process is unsound, so each
//! case runs this test binary again as a child with the variables set (as Docker `-e` or a
//! Kubernetes `env` entry would), and the child does the checking.

use std::process::Command;

use iosetu_license::source::{LICENSE_FILE_VAR, LICENSE_KEY_VAR};
use iosetu_license::{Claims, LicenseSigner, LicenseSource, LicenseVerifier};

const CHILD: &str = "IOSETU_ENV_TEST_CHILD";

fn token() -> String {
    LicenseSigner::from_seed([8; 32]).sign(&Claims::new("Acme", 4_102_444_800))
}

/// Runs `case` in a child process with `vars` set; the child asserts, the parent checks it
/// passed.
fn in_child(case: &str, vars: &[(&str, &std::ffi::OsStr)]) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", case, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env_remove(LICENSE_FILE_VAR)
        .env_remove(LICENSE_KEY_VAR);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test:\n{stdout}"
    );
}

fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

#[test]
fn env_token_with_a_trailing_newline_verifies() {
    if !is_child() {
        let value = format!("{}\n", token());
        return in_child(
            "env_token_with_a_trailing_newline_verifies",
            &[(LICENSE_KEY_VAR, value.as_ref())],
        );
    }
    let source = LicenseSource::from_env();
    assert_eq!(source, LicenseSource::Env(LICENSE_KEY_VAR.into()));
    let text = source.read().unwrap();
    let verifier = LicenseVerifier::new(vec![LicenseSigner::from_seed([8; 32]).public_key()]);
    assert_eq!(verifier.verify(&text).unwrap().customer, "Acme");
}

#[test]
fn license_file_variable_takes_precedence_when_non_empty() {
    if !is_child() {
        let key = token();
        in_child(
            "license_file_variable_takes_precedence_when_non_empty",
            &[
                (LICENSE_FILE_VAR, "/etc/iosetu/license.key".as_ref()),
                (LICENSE_KEY_VAR, key.as_ref()),
            ],
        );
        // An empty file variable falls back to the key variable.
        return in_child(
            "license_file_variable_is_ignored_when_empty",
            &[
                (LICENSE_FILE_VAR, "".as_ref()),
                (LICENSE_KEY_VAR, key.as_ref()),
            ],
        );
    }
    assert_eq!(
        LicenseSource::from_env(),
        LicenseSource::File("/etc/iosetu/license.key".into())
    );
}

#[test]
fn license_file_variable_is_ignored_when_empty() {
    if !is_child() {
        return; // run by the test above
    }
    assert_eq!(
        LicenseSource::from_env(),
        LicenseSource::Env(LICENSE_KEY_VAR.into())
    );
}

#[test]
fn an_unset_variable_is_missing() {
    if !is_child() {
        in_child("an_unset_variable_is_missing", &[]);
        return;
    }
    let unset = LicenseSource::Env(LICENSE_KEY_VAR.into())
        .read()
        .unwrap_err();
    assert_eq!(unset.reason(), "missing");
    assert!(unset.to_string().contains("is not set"), "{unset}");
}

#[test]
fn empty_env_value_is_missing() {
    if !is_child() {
        return in_child(
            "empty_env_value_is_missing",
            &[(LICENSE_KEY_VAR, "  \n".as_ref())],
        );
    }
    let err = LicenseSource::from_env().read().unwrap_err();
    assert_eq!(err.reason(), "missing");
}

#[test]
fn oversized_env_value_is_too_large() {
    if !is_child() {
        let big = "a".repeat(17 * 1024);
        return in_child(
            "oversized_env_value_is_too_large",
            &[(LICENSE_KEY_VAR, big.as_ref())],
        );
    }
    // The variable may hold a license set (up to 64 KiB); one 17 KiB token is over a
    // token's own 16 KiB cap, which verification enforces.
    let text = LicenseSource::from_env().read().unwrap();
    let err = iosetu_license::LicenseVerifier::new(vec![])
        .verify(&text)
        .unwrap_err();
    assert_eq!(err.reason(), "too_large");
}

#[test]
fn env_value_over_the_source_cap_is_too_large() {
    if !is_child() {
        let big = "a".repeat(65 * 1024);
        return in_child(
            "env_value_over_the_source_cap_is_too_large",
            &[(LICENSE_KEY_VAR, big.as_ref())],
        );
    }
    let err = LicenseSource::from_env().read().unwrap_err();
    assert_eq!(err.reason(), "too_large");
}

#[cfg(unix)]
#[test]
fn non_utf8_env_value_is_malformed() {
    use std::os::unix::ffi::OsStrExt;
    if !is_child() {
        let bytes = std::ffi::OsStr::from_bytes(b"ey\xff\xfe.x.y");
        return in_child(
            "non_utf8_env_value_is_malformed",
            &[(LICENSE_KEY_VAR, bytes)],
        );
    }
    let err = LicenseSource::from_env().read().unwrap_err();
    assert_eq!(err.reason(), "malformed");
}
