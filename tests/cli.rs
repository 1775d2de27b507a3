//! The `iosetu-license` tool, run as a vendor would run it.

use std::path::Path;

use assert_cmd::Command;
use iosetu_license::{
    Claims, LicenseMonitor, LicenseSigner, LicenseSource, LicenseState, PublicKey,
};

thread_local! {
    /// Each test's current directory for the tool (libtest runs each test on a thread of
    /// its own): `issue`, `notice` and `usage verify` keep their ledger
    /// (`iosetu-ledger.db`) there, never in the repository, and no test sees another's.
    static SCRATCH: tempfile::TempDir = tempfile::tempdir().unwrap();
}

/// The tool, run in this test's scratch directory.
fn cli() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_iosetu-license"));
    SCRATCH.with(|dir| command.current_dir(dir.path()));
    command
}

/// The ledger the tool keeps by default in this test's scratch directory.
fn default_ledger() -> std::path::PathBuf {
    SCRATCH.with(|dir| dir.path().join(iosetu_license::ledger::DEFAULT_PATH))
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// keygen into `dir` with `kid`; returns (private, public) paths.
/// A 30-day license for "Acme" from `private`, with `extra` options.
fn issue_30d(private: &Path, extra: &[&str]) -> String {
    stdout(
        cli()
            .args(["issue", "--key"])
            .arg(private)
            .args(["--customer", "Acme", "--valid-for", "30d"])
            .args(extra),
    )
}

fn keygen(dir: &Path, kid: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    cli()
        .args(["keygen", "--out"])
        .arg(dir)
        .args(["--kid", kid])
        .assert()
        .success();
    (
        dir.join(format!("{kid}.key.pem")),
        dir.join(format!("{kid}.pub.pem")),
    )
}

#[tokio::test]
async fn keygen_issue_verify_round_trip_and_the_monitor_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keygen(dir.path(), "2026-a");
    let token = stdout(cli().args(["issue", "--key"]).arg(&private).args([
        "--customer",
        "Acme Corp",
        "--valid-for",
        "365d",
        "--kid",
        "2026-a",
        "--feature",
        "sso",
        "--claim",
        "seats=25",
        "--claim",
        "tier=gold",
    ]));
    let token = token.trim().to_owned();

    let out = stdout(
        cli()
            .args(["verify", "--public-key"])
            .arg(&public)
            .args(["--kid", "2026-a", "--json", &token]),
    );
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["valid"], true);
    assert_eq!(json["customer"], "Acme Corp");
    assert_eq!(json["claims"]["seats"], 25);
    assert_eq!(json["claims"]["tier"], "gold");
    assert!(json["claims"]["jti"].as_str().unwrap().len() == 32);
    assert!(json["claims"]["iat"].is_i64());
    // Recorded in the ledger, as issued.
    let recorded = iosetu_license::ledger::Ledger::open(default_ledger())
        .unwrap()
        .licenses("Acme Corp")
        .unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].token, token);
    assert_eq!(
        Some(recorded[0].jti.as_str()),
        json["claims"]["jti"].as_str()
    );

    // What the tool issues, the monitor accepts (with the key under its kid).
    let key = PublicKey::from_pem(&std::fs::read_to_string(&public).unwrap())
        .unwrap()
        .with_kid("2026-a");
    let monitor = LicenseMonitor::builder()
        .public_key(key)
        .source(LicenseSource::Static(token))
        .start()
        .await
        .unwrap();
    let verdict = monitor.verdict();
    assert_eq!(verdict.state, LicenseState::Valid);
    let claims = verdict.claims.as_ref().unwrap();
    assert_eq!(claims.customer, "Acme Corp");
    assert!(claims.has_feature("sso"));
    assert!(matches!(verdict.days_remaining(), Some(364..=365)));
}

#[test]
fn a_tampered_token_is_a_bad_signature() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keygen(dir.path(), "k");
    let token = issue_30d(&private, &[]);
    // One character of the payload changed.
    let (header, rest) = token.trim().split_once('.').unwrap();
    let mut payload: Vec<char> = rest.chars().collect();
    payload[5] = if payload[5] == 'A' { 'B' } else { 'A' };
    let tampered = format!("{header}.{}", payload.into_iter().collect::<String>());
    cli()
        .args(["verify", "--public-key"])
        .arg(&public)
        .arg(&tampered)
        .assert()
        .code(1)
        .stdout(predicates::str::contains("bad_signature"));
}

#[test]
fn an_expired_token_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keygen(dir.path(), "k");
    // The tool refuses to issue an expired license, so sign one with the same key here.
    let signer =
        LicenseSigner::from_pkcs8_pem(&std::fs::read_to_string(&private).unwrap()).unwrap();
    let expired = signer.sign(&Claims::new("Acme", 946_684_800));
    let out = cli()
        .args(["verify", "--json", "--public-key"])
        .arg(&public)
        .arg(&expired)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["valid"], false);
    assert_eq!(json["reason"], "expired");
    cli()
        .args(["issue", "--key"])
        .arg(&private)
        .args(["--customer", "Acme", "--expires", "2001-01-01"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("already be expired"));
}

#[test]
fn a_different_key_is_a_bad_signature() {
    let dir = tempfile::tempdir().unwrap();
    let (private, _) = keygen(dir.path(), "mine");
    let (_, other_public) = keygen(dir.path(), "theirs");
    let token = issue_30d(&private, &[]);
    cli()
        .args(["verify", "--public-key"])
        .arg(&other_public)
        .arg(token.trim())
        .assert()
        .code(1)
        .stdout(predicates::str::contains("bad_signature"));
}

#[test]
fn missing_files_and_bad_usage_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli()
        .args(["verify", "--public-key", "/nonexistent/key.pem", "x.y.z"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/key.pem"));
    assert!(!err.contains("panicked") && !err.contains("backtrace"));

    cli()
        .args(["issue", "--key"])
        .arg(dir.path().join("missing.pem"))
        .args(["--customer", "A", "--valid-for", "1d"])
        .assert()
        .code(2);
    cli()
        .args([
            "verify",
            "--public-key",
            "/nonexistent",
            "--file",
            "/nonexistent/license.key",
        ])
        .assert()
        .code(2);
    cli().args(["issue", "--customer", "A"]).assert().code(2); // no --key, no expiry
    cli()
        .args(["timeline", "--file"])
        .arg(dir.path().join("none"))
        .assert()
        .code(2);
    for args in [
        &["frobnicate"][..],
        &["verify", "x.y.z"],
        &["issue", "--customer", "A"],
    ] {
        let out = cli().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn keygen_refuses_to_overwrite_and_the_private_key_is_0600() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keygen(dir.path(), "k");
    let before = std::fs::read(&private).unwrap();
    cli()
        .args(["keygen", "--kid", "k", "--out"])
        .arg(dir.path())
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--force"));
    assert_eq!(
        std::fs::read(&private).unwrap(),
        before,
        "the key was overwritten"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&private).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(&public).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }
    cli()
        .args(["keygen", "--kid", "k", "--force", "--out"])
        .arg(dir.path())
        .assert()
        .success();
    assert_ne!(std::fs::read(&private).unwrap(), before);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&private).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

#[test]
fn inspect_labels_unverified_and_verifies_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keygen(dir.path(), "k");
    let file = dir.path().join("license.key");
    cli()
        .args(["issue", "--key"])
        .arg(&private)
        .args(["--customer", "Acme", "--valid-for", "10d", "--out"])
        .arg(&file)
        .assert()
        .success();
    let out = stdout(cli().args(["inspect", "--file"]).arg(&file));
    assert!(out.starts_with("UNVERIFIED"), "{out}");
    assert!(out.contains("\"customer\": \"Acme\""));
    assert!(out.contains("days remaining"));
    let out = stdout(
        cli()
            .args(["inspect", "--public-key"])
            .arg(&public)
            .arg("--file")
            .arg(&file),
    );
    assert!(out.starts_with("VERIFIED"), "{out}");
    // From stdin too.
    let token = std::fs::read_to_string(&file).unwrap();
    let out = stdout(cli().args(["inspect", "-"]).write_stdin(token));
    assert!(out.contains("\"alg\": \"EdDSA\""));
}

#[test]
fn timeline_lists_each_alert_grace_and_cut_off_at_its_instant() {
    // exp = 2100-01-01T00:00:00Z
    let token = LicenseSigner::from_seed([1; 32]).sign(&Claims::new("Acme", 4_102_444_800));
    let out = stdout(cli().args(["timeline", "--grace", "48h", &token]));
    let line = |what: &str| {
        out.lines()
            .find(|l| l.starts_with(what))
            .unwrap_or_else(|| panic!("no {what} in\n{out}"))
            .to_owned()
    };
    assert!(line("license.expiring_30d ").contains("2099-12-02T00:00:01Z"));
    assert!(line("license.expiring_7d ").contains("2099-12-25T00:00:01Z"));
    assert!(line("license.expiring_24h ").contains("2099-12-31T00:00:01Z"));
    assert!(line("license.expiring_1h ").contains("2099-12-31T23:00:01Z"));
    assert!(line("license.grace_mode_entered").contains("2100-01-01T00:00:00Z"));
    assert!(line("license.grace_period_expired").contains("2100-01-03T00:00:00Z"));
    // "From now" to the second: the 1 s after each band's start shows.
    let from_now = |what: &str| line(what).rsplit(' ').next().unwrap().to_owned();
    for what in ["license.expiring_30d ", "license.grace_mode_entered"] {
        let last = from_now(what);
        assert!(
            last.len() == 3 && last.ends_with('s') && last[..2].parse::<u8>().is_ok(),
            "{what}: {}",
            line(what)
        );
    }
    let seconds = |what: &str| from_now(what)[..2].parse::<i64>().unwrap();
    assert_eq!(
        (seconds("license.expiring_30d ") - seconds("license.grace_mode_entered")).rem_euclid(60),
        1
    );
}

#[test]
fn issue_refuses_reserved_claims_and_never_prints_the_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let (private, _) = keygen(dir.path(), "k");
    let pem = std::fs::read_to_string(&private).unwrap();
    let body = pem.lines().nth(1).unwrap().to_owned();
    let out = cli()
        .args(["issue", "--key"])
        .arg(&private)
        .args([
            "--customer",
            "Acme",
            "--valid-for",
            "1d",
            "--claim",
            "exp=1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    for stream in [&out.stdout, &out.stderr] {
        assert!(!String::from_utf8_lossy(stream).contains(&body));
    }
}

/// Every `--option` a message names exists in `issue --help`.
fn options_exist(message: &str, help: &str) {
    for word in message.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
        if let Some(option) = word.strip_prefix("--")
            && !option.is_empty()
            && option != "help"
        {
            assert!(
                help.contains(&format!("--{option}")),
                "{message:?} names --{option}, which `issue` does not have"
            );
        }
    }
}

#[test]
fn newcomer_errors_name_what_is_missing_and_only_options_that_exist() {
    let help = stdout(cli().args(["issue", "--help"]));
    let one_line_error = |args: &[&str]| {
        let out = cli().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        err
    };
    // No --key and no expiry: both are named, and both ways to give an expiry.
    let err = one_line_error(&["issue", "--customer", "A"]);
    for named in ["--key", "--expires", "--valid-for"] {
        assert!(err.contains(named), "{err}");
    }
    options_exist(&err, &help);
    let err = one_line_error(&["issue", "--key", "k.pem", "--valid-for", "1d"]);
    assert!(err.contains("--customer"), "{err}");
    let err = one_line_error(&["verify", "x.y.z"]);
    assert!(err.contains("--public-key"), "{err}");

    // A reserved claim says what to do instead, naming only real options, and is
    // reported before the (absent) key file is read.
    for claim in [
        "customer", "exp", "nbf", "iss", "aud", "features", "iat", "jti", "sub",
    ] {
        let err = one_line_error(&[
            "issue",
            "--key",
            "/nonexistent/k.pem",
            "--customer",
            "A",
            "--valid-for",
            "1d",
            "--claim",
            &format!("{claim}=1"),
        ]);
        assert!(err.contains(&format!("--claim {claim}=")), "{err}");
        assert!(!err.contains("dedicated option"), "{err}");
        assert!(!err.contains("nonexistent"), "{err}");
        options_exist(&err, &help);
    }
}

#[test]
fn allow_past_issues_an_expired_license_for_support_clearly_labelled() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keygen(dir.path(), "k");
    let issue = |extra: &[&str]| {
        cli()
            .args(["issue", "--key"])
            .arg(&private)
            .args(["--customer", "Support", "--expires", "2001-01-01"])
            .args(extra)
            .output()
            .unwrap()
    };
    // Without the flag: refused, and the message says how to do it on purpose.
    let refused = issue(&[]);
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8(refused.stderr).unwrap();
    assert!(
        err.contains("already be expired") && err.contains("--allow-past"),
        "{err}"
    );

    let issued = issue(&["--allow-past"]);
    assert!(issued.status.success());
    let warning = String::from_utf8(issued.stderr).unwrap();
    assert!(
        warning.contains("warning") && warning.contains("2001-01-01T00:00:00Z"),
        "{warning}"
    );
    let token = String::from_utf8(issued.stdout).unwrap();
    let out = cli()
        .args(["verify", "--json", "--public-key"])
        .arg(&public)
        .arg(token.trim())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["reason"], "expired");
}

#[test]
fn sets_round_trip_issue_verify_inspect_and_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keygen(dir.path(), "k");
    let issue = |extra: &[&str]| {
        stdout(
            cli()
                .args(["issue", "--key"])
                .arg(&private)
                .args(["--customer", "Acme"])
                .args(extra),
        )
    };
    let current = issue(&[
        "--valid-for",
        "30d",
        "--feature",
        "sso",
        "--limit",
        "seats=10",
        "--grace",
        "7d",
    ]);
    // A renewal that starts before the current one ends, issued ahead.
    let renewal = issue(&[
        "--expires",
        "2099-01-01",
        "--not-before",
        "2020-01-01T00:00:00Z",
        "--feature",
        "audit",
        "--limit",
        "seats=25",
        "--grace",
        "0s",
    ]);
    let path = dir.path().join("license.key");
    std::fs::write(&path, format!("{current}{renewal}not-a-token\n")).unwrap();

    // verify: valid now (line 3 is refused and reported; the others count).
    let out = cli()
        .args(["verify", "--json", "--public-key"])
        .arg(&public)
        .arg("--file")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["valid"], true);
    assert_eq!(json["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(json["features"], serde_json::json!(["audit", "sso"]));
    assert_eq!(json["limits"]["seats"], 25);
    let tokens = json["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 3);
    assert_eq!(tokens[2]["line"], 3);
    assert_eq!(tokens[2]["reason"], "malformed");

    // timeline: each window, the merged coverage, and the cut-off at the end of coverage
    // plus the signed grace of the license that ends it (0 s here).
    let out = stdout(cli().args(["timeline", "--file"]).arg(&path));
    assert!(
        out.contains("line 1:") && out.contains("grace 7d (signed)"),
        "{out}"
    );
    assert!(
        out.contains("line 2: 2020-01-01T00:00:00Z to 2099-01-01T00:00:00Z"),
        "{out}"
    );
    assert!(out.contains("line 3: skipped"), "{out}");
    assert!(out.contains("coverage: - to 2099-01-01T00:00:00Z"), "{out}");
    let line = |what: &str| {
        out.lines()
            .find(|l| l.starts_with(what))
            .unwrap()
            .to_owned()
    };
    assert!(line("license.grace_mode_entered").contains("2099-01-01T00:00:00Z"));
    assert!(line("license.grace_period_expired").contains("2099-01-01T00:00:00Z"));

    // inspect: every line, and a refusal exits 1.
    let out = cli()
        .args(["inspect", "--public-key"])
        .arg(&public)
        .arg("--file")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.matches("VERIFIED: the signature is good").count(),
        2,
        "{text}"
    );
    assert!(text.contains("\"grace_period_seconds\": 604800"), "{text}");
    assert!(text.contains("\"seats\": 10"), "{text}");

    // A set with nothing in force now is not valid: held for later, or expired. Its
    // reason is the monitor's, whatever the order of lines: an expired license's grace
    // runs (`expired`) until the held one starts. (This test used to expect
    // `not_yet_valid`, the first line's own problem: the other order said `expired`.)
    let mut held = Claims::new("Acme", 4_102_444_800);
    held.nbf = Some(4_000_000_000);
    let signer =
        LicenseSigner::from_pkcs8_pem(&std::fs::read_to_string(&private).unwrap()).unwrap();
    let (held, expired) = (
        signer.sign(&held),
        signer.sign(&Claims::new("Acme", 946_684_800)),
    );
    let reason = |text: &str| {
        let out = cli()
            .args(["verify", "--json", "--public-key"])
            .arg(&public)
            .arg(text)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["valid"], false);
        json["reason"].as_str().unwrap().to_owned()
    };
    assert_eq!(reason(&format!("{held}\n{expired}\n")), "expired");
    assert_eq!(reason(&format!("{expired}\n{held}\n")), "expired");
    // Held for later alone: not yet valid.
    assert_eq!(reason(&held), "not_yet_valid");
}

#[test]
fn issue_refuses_bad_limits_and_graces() {
    let dir = tempfile::tempdir().unwrap();
    let (private, _) = keygen(dir.path(), "k");
    for extra in [
        &["--limit", "seats=-1"][..],
        &["--limit", "seats=2.5"],
        &["--limit", "=3"],
        &["--limit", "seats"],
        &["--grace", "367d"],
        &["--grace", "soon"],
        &["--claim", "limits={}"],
        &["--claim", "grace_period_seconds=5"],
        &["--not-before", "2099-01-01"],
        &["--max-instances", "0"],
        &["--max-instances", "-2"],
        &["--max-instances", "many"],
        &["--claim", "max_instances=3"],
    ] {
        let out = cli()
            .args(["issue", "--key"])
            .arg(&private)
            .args(["--customer", "A", "--valid-for", "1d"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{extra:?}: {err}");
    }
}

#[test]
fn max_instances_is_issued_inspected_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keygen(dir.path(), "k");
    let token = issue_30d(&private, &["--max-instances", "3"]);
    let file = dir.path().join("license.key");
    std::fs::write(&file, &token).unwrap();
    let inspected = stdout(cli().args(["inspect", "--file"]).arg(&file));
    assert!(inspected.contains("\"max_instances\": 3"), "{inspected}");
    let verified = stdout(
        cli()
            .args(["verify", "--json", "--public-key"])
            .arg(&public)
            .args(["--file"])
            .arg(&file),
    );
    let json: serde_json::Value = serde_json::from_str(&verified).unwrap();
    assert_eq!(json["max_instances"], 3);
    let timeline = stdout(cli().args(["timeline", "--file"]).arg(&file));
    assert!(timeline.contains(", 3 instances,"), "{timeline}");
}

/// The `jti` the tool put in a token.
fn jti_of(token: &str) -> String {
    let claims = iosetu_license::token::decode_unverified(token)
        .unwrap()
        .claims;
    claims["jti"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn notices_revoke_and_attest_through_the_tool_and_the_monitor_obeys() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keygen(dir.path(), "2026-a");
    let license = issue_30d(&private, &["--kid", "2026-a"]);
    let jti = jti_of(&license);
    let notice = |extra: &[&str]| {
        stdout(
            cli()
                .args(["notice", "--key"])
                .arg(&private)
                .args(["--kid", "2026-a", "--customer", "Acme"])
                .args(extra),
        )
    };
    let revocation = notice(&["--seq", "1", "--revoke", &jti]);
    // Without --seq: the next from the ledger.
    let attestation = notice(&["--time", "now", "--revoke", &jti]);
    let recorded = iosetu_license::ledger::Ledger::open(default_ledger())
        .unwrap()
        .notices("Acme")
        .unwrap();
    assert_eq!(recorded.iter().map(|n| n.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(recorded[1].token, attestation.trim());
    let set = dir.path().join("license.key");
    std::fs::write(&set, format!("{license}{revocation}{attestation}")).unwrap();

    // verify: the license is revoked; the older notice is listed as such.
    let out = cli()
        .args(["verify", "--public-key"])
        .arg(&public)
        .args(["--kid", "2026-a", "--file"])
        .arg(&set)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("invalid: revoked"), "{text}");
    assert!(text.contains(&format!("revokes {jti}")), "{text}");
    assert!(text.contains("older than the newest"), "{text}");
    assert!(text.contains("attests the time"), "{text}");
    let json = cli()
        .args(["verify", "--json", "--public-key"])
        .arg(&public)
        .args(["--kid", "2026-a", "--file"])
        .arg(&set)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["reason"], "revoked");
    assert_eq!(json["tokens"][2]["notice"], true);
    assert_eq!(json["tokens"][2]["seq"], 2);
    assert_eq!(json["tokens"][2]["newest"], true);

    // inspect says it is a notice, verified, and what it does; timeline marks the license.
    let shown = stdout(
        cli()
            .args(["inspect", "--public-key"])
            .arg(&public)
            .arg(attestation.trim()),
    );
    assert!(
        shown.contains("VERIFIED") && shown.contains("a vendor NOTICE"),
        "{shown}"
    );
    assert!(shown.contains("\"typ\": \"iosetu-notice\""), "{shown}");
    let timeline = stdout(cli().args(["timeline", "--file"]).arg(&set));
    assert!(timeline.contains("REVOKED from"), "{timeline}");
    assert!(timeline.contains("notices:"), "{timeline}");

    // The monitor judges the same file the same way.
    let monitor = LicenseMonitor::builder()
        .public_key(
            PublicKey::from_pem(&std::fs::read_to_string(&public).unwrap())
                .unwrap()
                .with_kid("2026-a"),
        )
        .source(LicenseSource::File(set.clone()))
        .start()
        .await
        .unwrap();
    let verdict = monitor.verdict();
    assert_eq!(verdict.state, LicenseState::Grace);
    assert_eq!(verdict.reason.as_ref().map(|r| r.code()), Some("revoked"));
    assert_eq!(verdict.notice_seq, Some(2));
}

#[test]
fn notice_usage_errors_are_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (private, _) = keygen(dir.path(), "k");
    let run = |extra: &[&str]| {
        let out = cli()
            .args(["notice", "--key"])
            .arg(&private)
            .args(["--customer", "Acme"])
            .args(extra)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stderr).unwrap())
    };
    // Neither --revoke nor --time: a notice that says nothing.
    let (code, err) = run(&["--seq", "1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--revoke") && err.contains("--time"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (code, err) = run(&["--seq", "0", "--time", "now"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&["--seq", "1", "--time", "now", "--valid-for", "8d"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("at most 7d"), "{err}");
    let (code, err) = run(&["--seq", "1", "--time", "yesterday"]);
    assert_eq!(code, Some(2), "{err}");
    // A license superseding another: signed into the license.
    let token = issue_30d(&private, &["--supersedes", "old-jti"]);
    let claims = iosetu_license::token::decode_unverified(&token)
        .unwrap()
        .claims;
    assert_eq!(claims["supersedes"], serde_json::json!(["old-jti"]));
    let out = cli()
        .args(["issue", "--key"])
        .arg(&private)
        .args([
            "--customer",
            "Acme",
            "--valid-for",
            "30d",
            "--claim",
            "supersedes=[1]",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Writes a journal of `hours` hours with the library (paused time, the test clock),
/// metering `seats`.
fn write_journal(journal: &Path, hours: u64, seats: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let signer = LicenseSigner::from_seed([5; 32]);
        let mut claims = Claims::new("Acme", 1_900_000_000);
        claims.limits.insert("seats".into(), 10);
        let monitor = LicenseMonitor::builder()
            .public_key(signer.public_key())
            .source(LicenseSource::Static(signer.sign(&claims)))
            .clock(iosetu_license::TestClock::new(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
            ))
            .usage_journal(journal)
            .start()
            .await
            .unwrap();
        monitor.usage().set("seats", seats).unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(hours * 3600)).await;
        monitor.shutdown().await;
    });
}

#[test]
fn usage_export_and_verify_as_the_readme_runs_them() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    write_journal(&a, 5, 6);
    write_journal(&b, 5, 7);
    for (journal, report) in [(&a, "a.json"), (&b, "b.json")] {
        let said = stdout(
            cli()
                .args(["usage", "export", "--journal"])
                .arg(journal)
                .arg("--out")
                .arg(dir.path().join(report)),
        );
        assert!(said.contains("records"), "{said}");
    }
    let reports = [dir.path().join("a.json"), dir.path().join("b.json")];
    let table = stdout(cli().args(["usage", "verify"]).args(&reports));
    assert!(table.contains("no tampering"), "{table}");
    // The ledger's first true-up of the customer: both keys are new to it (honest).
    assert_eq!(table.matches("new_key").count(), 2, "{table}");
    assert!(table.contains("true-up 1 of Acme recorded"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("seats") && l.contains("13") && l.contains("OVER")),
        "{table}"
    );
    let csv = stdout(cli().args(["usage", "verify", "--csv"]).args(&reports));
    assert!(
        csv.starts_with("month,metric,measure,value,limit,over,instance_peaks,over_hours\n"),
        "{csv}"
    );
    assert!(csv.contains(",seats,peak,13,10,true"), "{csv}");
    // An export refuses to overwrite a report; a missing journal is a usage error.
    let again = cli()
        .args(["usage", "export", "--journal"])
        .arg(&a)
        .arg("--out")
        .arg(&reports[0])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    let missing = cli()
        .args(["usage", "export", "--journal"])
        .arg(dir.path().join("none.jsonl"))
        .arg("--out")
        .arg(dir.path().join("x.json"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("missing"));
    // A record edited: exit 1, the finding named.
    let text = std::fs::read_to_string(&reports[0]).unwrap();
    let edited = text.replacen("\"seats\": 6", "\"seats\": 1", 1);
    assert_ne!(text, edited);
    std::fs::write(&reports[0], edited).unwrap();
    let out = cli()
        .args(["usage", "verify"])
        .args(&reports)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("TAMPERED") && said.contains("signature"),
        "{said}"
    );
    // Not a report at all.
    std::fs::write(&reports[1], "{}").unwrap();
    let out = cli()
        .args(["usage", "verify"])
        .args(&reports)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn usage_verify_signs_a_receipt_on_request_and_refuses_receipt_options_alone() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("a.jsonl");
    write_journal(&journal, 3, 2);
    let report = dir.path().join("a.json");
    stdout(
        cli()
            .args(["usage", "export", "--journal"])
            .arg(&journal)
            .arg("--out")
            .arg(&report),
    );
    // The key the journal's license was signed with.
    let signer = LicenseSigner::from_seed([5; 32]);
    let key = dir.path().join("vendor.key.pem");
    std::fs::write(&key, signer.private_key_pem().unwrap()).unwrap();
    let out = stdout(
        cli()
            .args(["usage", "verify", "--receipt", "--key"])
            .arg(&key)
            .arg(&report),
    );
    // The receipt comes last on stdout, after the table: a notice of the customer with
    // the journal's head.
    let token = out.lines().last().unwrap();
    let notice = iosetu_license::LicenseVerifier::new(vec![signer.public_key()])
        .verify_notice(token)
        .unwrap();
    assert_eq!((notice.customer.as_str(), notice.seq), ("Acme", 1));
    let head = iosetu_license::usage::Report::read(&report).unwrap();
    assert_eq!(notice.receipt.len(), 1);
    assert_eq!(
        (notice.receipt[0].n, notice.receipt[0].link.as_str()),
        (head.head_n.unwrap(), head.head_link.as_deref().unwrap())
    );
    let one_line_error = |args: &[&str], about: &str| {
        let out = cli().args(args).arg(&report).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(about), "{args:?}: {err}");
    };
    let key = key.to_str().unwrap();
    one_line_error(&["usage", "verify", "--receipt"], "--key");
    one_line_error(&["usage", "verify", "--key", key], "--receipt");
    one_line_error(&["usage", "verify", "--out", "r.notice"], "--receipt");
    one_line_error(
        &["usage", "verify", "--receipt", "--key", key, "--csv"],
        "--out",
    );
    one_line_error(&["usage", "verify", "--customer", "Globex"], "Globex");
    // Nothing of those was recorded: the one true-up, the one receipt.
    let ledger = iosetu_license::ledger::Ledger::open(default_ledger()).unwrap();
    assert_eq!(ledger.notices("Acme").unwrap().len(), 1);
    assert_eq!(ledger.instances("Acme").unwrap()[0].last_true_up, 1);
}
