//! License sets, licenses held for later, entitlements and signed grace, through the
//! monitor in tokio's paused time, at exact seconds: one second before and after each
//! `nbf`, each end of coverage and each end of grace.

mod common;

use std::time::Duration;

use common::{DAY, HOUR, T0, builder, drain, find, names, run_for, secs, signer, start};
use iosetu_license::{Claims, GraceReason, LicenseEvent, LicenseSource, LicenseState, TestClock};

fn claims(exp: i64) -> Claims {
    Claims::new("Acme", exp)
}

fn token(c: &Claims) -> String {
    signer().sign(c)
}

fn set(tokens: &[String]) -> String {
    tokens.join("\n") + "\n"
}

/// Seconds from the test's start to `at`.
fn until(at: i64) -> i64 {
    at - T0
}

/// Jumps `secs` ahead at once (the checker wakes once, late), for the long stretches
/// between the edges a test looks at; the edges themselves are crossed with `run_for`.
async fn skip(secs: i64) {
    tokio::time::advance(Duration::from_secs(secs as u64)).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_renewal_installed_ahead_takes_over_at_its_exact_nbf_second() {
    let clock = TestClock::new(common::t0());
    let current_exp = T0 + 31 * DAY;
    let current = claims(current_exp);
    // Next year's, starting a month before this one ends: one coverage, no gap.
    let mut renewal = claims(current_exp + 365 * DAY);
    renewal.nbf = Some(current_exp - 30 * DAY);
    renewal.features = vec!["sso".into()];
    let source = LicenseSource::Static(set(&[token(&current), token(&renewal)]));
    let (monitor, mut rx) =
        start(builder(&clock, source).grace_period(Duration::from_secs(DAY as u64))).await;

    let v = monitor.verdict();
    assert_eq!(v.state, LicenseState::Valid);
    assert_eq!(v.licenses.len(), 1);
    assert_eq!(v.upcoming.len(), 1);
    // Coverage runs to the renewal's end: that is what alerts count down to.
    assert_eq!(secs(v.expires_at.unwrap()), current_exp + 365 * DAY);
    assert_eq!(v.band, None);
    assert!(!v.has_feature("sso"));
    let first = drain(&mut rx);
    assert_eq!(
        names(&first)
            .iter()
            .filter(|n| **n == "license.loaded")
            .count(),
        1,
        "only the license in force is announced: {first:?}"
    );

    // One second before the renewal's nbf: the current license alone, no alert although
    // it ends in 30 days and a second (the coverage does not).
    run_for(until(current_exp - 30 * DAY) - 1).await;
    let v = monitor.verdict();
    assert_eq!(v.licenses.len(), 1);
    assert!(!v.has_feature("sso"));
    assert!(
        !names(&drain(&mut rx))
            .iter()
            .any(|n| n.starts_with("license.expiring")),
        "no expiry alert for a license whose renewal is installed"
    );

    // One second after: the checker woke at the nbf second itself, with no check.
    run_for(2).await;
    let v = monitor.verdict();
    assert_eq!(secs(v.evaluated_at), current_exp - 30 * DAY);
    assert_eq!(v.licenses.len(), 2);
    assert!(v.upcoming.is_empty());
    assert!(v.has_feature("sso"));
    let events = drain(&mut rx);
    let LicenseEvent::Loaded { expires_at, .. } = find(&events, "license.loaded") else {
        unreachable!()
    };
    assert_eq!(secs(*expires_at), current_exp + 365 * DAY);
    let LicenseEvent::EntitlementsChanged { added, removed, .. } =
        find(&events, "license.entitlements_changed")
    else {
        unreachable!()
    };
    assert_eq!(
        (added.as_slice(), removed.len()),
        (&["sso".to_owned()][..], 0)
    );

    // The first license's own end inside the coverage: still valid, one license left.
    skip(30 * DAY - 3).await;
    run_for(1).await;
    assert_eq!(monitor.verdict().licenses.len(), 2);
    // A license alone would be in its 24 h band now: the coverage is not.
    assert!(
        !names(&drain(&mut rx))
            .iter()
            .any(|n| n.starts_with("license.expiring")),
        "no expiry alert while a renewal continues the coverage"
    );
    run_for(2).await;
    let v = monitor.verdict();
    assert_eq!(v.state, LicenseState::Valid);
    assert_eq!(v.licenses.len(), 1);
    assert!(!names(&drain(&mut rx)).contains(&"license.grace_mode_entered"));

    // A restart in between changes nothing: both tokens are in the source.
    let (again, _rx) = start(builder(
        &clock,
        LicenseSource::Static(set(&[token(&current), token(&renewal)])),
    ))
    .await;
    assert_eq!(again.verdict().expires_at, v.expires_at);
    assert_eq!(again.verdict().licenses.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_gap_between_licenses_is_grace_ended_by_the_held_one_at_its_nbf() {
    let clock = TestClock::new(common::t0());
    let first_exp = T0 + 10 * DAY;
    let mut later = claims(first_exp + 100 * DAY);
    later.nbf = Some(first_exp + 5 * DAY);
    let source = LicenseSource::Static(set(&[token(&claims(first_exp)), token(&later)]));
    let (monitor, mut rx) =
        start(builder(&clock, source).grace_period(Duration::from_secs(30 * DAY as u64))).await;
    // The held license starts before the first one's cut-off (its end plus 30 days of
    // grace): it continues the coverage, and alerts count down to its end.
    assert_eq!(
        secs(monitor.verdict().expires_at.unwrap()),
        first_exp + 100 * DAY
    );

    run_for(until(first_exp) - 1).await;
    assert_eq!(monitor.verdict().state, LicenseState::Valid);
    let before = names(&drain(&mut rx));
    assert!(
        !before.iter().any(|n| n.starts_with("license.expiring")),
        "a renewal installed ahead means no alerts: {before:?}"
    );
    run_for(2).await;
    let v = monitor.verdict();
    assert_eq!(v.state, LicenseState::Grace);
    assert_eq!(v.reason, Some(GraceReason::Expired));
    // The gap is grace at most: it ends when the held license comes in, if not before.
    assert!(secs(v.grace_ends_at.unwrap()) >= first_exp + 5 * DAY);
    assert_eq!(secs(v.grace_started_at.unwrap()), first_exp);
    assert!(names(&drain(&mut rx)).contains(&"license.grace_mode_entered"));

    run_for(5 * DAY - 2).await; // first_exp + 5 d - 1
    assert_eq!(monitor.verdict().state, LicenseState::Grace);
    run_for(2).await;
    let v = monitor.verdict();
    assert_eq!(v.state, LicenseState::Valid);
    assert_eq!(secs(v.evaluated_at), first_exp + 5 * DAY);
    assert_eq!(secs(v.expires_at.unwrap()), first_exp + 100 * DAY);
    let events = names(&drain(&mut rx));
    assert!(events.contains(&"license.grace_mode_exited"), "{events:?}");
    assert!(events.contains(&"license.loaded"), "{events:?}");
}

#[tokio::test(start_paused = true)]
async fn only_a_held_license_is_grace_until_its_nbf() {
    let clock = TestClock::new(common::t0());
    let mut held = claims(T0 + 100 * DAY);
    held.nbf = Some(T0 + HOUR);
    let (monitor, mut rx) = start(builder(&clock, LicenseSource::Static(token(&held)))).await;
    let v = monitor.verdict();
    assert_eq!(v.state, LicenseState::Grace);
    assert_eq!(
        v.reason.as_ref().map(GraceReason::code),
        Some("not_yet_valid")
    );
    assert_eq!(v.upcoming.len(), 1);
    // Held, not refused: no failure is reported.
    assert!(!names(&drain(&mut rx)).contains(&"license.verification_failed"));
    assert_eq!(monitor.metrics().check_failing, None);
    run_for(HOUR - 1).await;
    assert_eq!(monitor.verdict().state, LicenseState::Grace);
    run_for(2).await;
    assert_eq!(monitor.verdict().state, LicenseState::Valid);
}

#[tokio::test(start_paused = true)]
async fn a_bad_line_is_reported_with_its_line_and_fingerprint_and_the_rest_counts() {
    let clock = TestClock::new(common::t0());
    let good = token(&claims(T0 + 100 * DAY));
    // Another customer's license that ends earlier: the set is the customer's whose
    // license ends last (Acme's), so Globex's line is refused.
    let other_customer = signer().sign(&Claims::new("Globex", T0 + 50 * DAY));
    let text = format!("{good}\n\nnot-a-token\n{other_customer}\n");
    let (monitor, mut rx) = start(builder(&clock, LicenseSource::Static(text))).await;
    let v = monitor.verdict();
    assert_eq!(v.state, LicenseState::Valid);
    assert_eq!(v.licenses.len(), 1);
    let failures: Vec<(usize, &'static str, bool, usize)> = drain(&mut rx)
        .iter()
        .filter_map(|e| match e {
            LicenseEvent::VerificationFailed {
                error,
                line: Some(line),
                fingerprint: Some(print),
                kept_previous,
                ..
            } => Some((*line, error.reason(), *kept_previous, print.len())),
            _ => None,
        })
        .collect();
    assert_eq!(
        failures,
        [
            (3, "malformed", true, 16),
            (4, "customer_mismatch", true, 16)
        ]
    );
    // The source still has bad lines: the failing state says so, with the same reason
    // whatever the order of the lines (the smallest reason code).
    assert_eq!(monitor.metrics().check_failing, Some("customer_mismatch"));
}

#[tokio::test(start_paused = true)]
async fn a_wholly_bad_read_keeps_the_last_good_set() {
    let clock = TestClock::new(common::t0());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let mut sso = claims(T0 + 100 * DAY);
    sso.features = vec!["sso".into()];
    sso.limits.insert("seats".into(), 25);
    std::fs::write(&path, set(&[token(&sso), token(&claims(T0 + 50 * DAY))])).unwrap();
    let (monitor, _rx) = start(
        builder(&clock, LicenseSource::File(path.clone()))
            .watch_file(false)
            .file_poll_interval(None),
    )
    .await;
    assert_eq!(monitor.verdict().licenses.len(), 2);
    std::fs::write(&path, "garbage\nmore garbage\n").unwrap();
    let v = monitor.check_now().await;
    assert_eq!(v.state, LicenseState::Valid);
    assert_eq!(v.licenses.len(), 2);
    assert!(v.has_feature("sso"));
    assert_eq!(v.limit("seats"), Some(25));

    // Over the cap of tokens: too_large, and the set still stands.
    let many = vec![token(&claims(T0 + DAY)); 33].join("\n");
    std::fs::write(&path, many).unwrap();
    let v = monitor.check_now().await;
    assert_eq!(v.licenses.len(), 2);
    assert_eq!(monitor.metrics().check_failing, Some("too_large"));
}

#[tokio::test(start_paused = true)]
async fn features_and_limits_apply_valid_and_in_grace_never_after_the_cut_off() {
    let clock = TestClock::new(common::t0());
    let exp = T0 + 10 * DAY;
    let mut a = claims(exp);
    a.features = vec!["sso".into(), "audit".into()];
    a.limits.insert("seats".into(), 10);
    let mut b = claims(exp);
    b.features = vec!["audit".into()];
    b.limits.insert("seats".into(), 25);
    b.limits.insert("nodes".into(), 3);
    let source = LicenseSource::Static(set(&[token(&a), token(&b)]));
    let (monitor, _rx) =
        start(builder(&clock, source).grace_period(Duration::from_secs(DAY as u64))).await;
    let check = |state: LicenseState, features: &[&str], seats: Option<u64>| {
        let v = monitor.verdict();
        assert_eq!(v.state, state);
        assert_eq!(v.features(), features);
        assert_eq!(v.has_feature("sso"), features.contains(&"sso"));
        assert!(!v.has_feature("nope"));
        assert_eq!(v.limit("seats"), seats);
        assert_eq!(v.limit("missing"), None);
    };
    check(LicenseState::Valid, &["audit", "sso"], Some(25));
    assert_eq!(monitor.verdict().limit("nodes"), Some(3));
    run_for(until(exp) + 1).await;
    check(LicenseState::Grace, &["audit", "sso"], Some(25));
    run_for(DAY - 2).await; // exp + grace - 1
    check(LicenseState::Grace, &["audit", "sso"], Some(25));
    run_for(2).await;
    check(LicenseState::GraceExpired, &[], None);
}

#[tokio::test(start_paused = true)]
async fn the_vendors_signed_grace_overrides_the_builders() {
    for (signed, grace_end) in [(Some(0), 0), (Some(7 * DAY), 7 * DAY), (None, DAY)] {
        let clock = TestClock::new(common::t0());
        let exp = T0 + HOUR;
        let mut c = claims(exp);
        c.grace_period_seconds = signed.map(|s| s as u64);
        let (monitor, mut rx) = start(
            builder(&clock, LicenseSource::Static(token(&c)))
                .grace_period(Duration::from_secs(DAY as u64)),
        )
        .await;
        run_for(HOUR - 1).await;
        assert_eq!(monitor.verdict().state, LicenseState::Valid, "{signed:?}");
        drain(&mut rx);
        if grace_end == 0 {
            // A trial: the cut-off falls at `exp` itself.
            run_for(2).await;
            let v = monitor.verdict();
            assert_eq!(v.state, LicenseState::GraceExpired, "{signed:?}");
            assert_eq!(secs(v.grace_ends_at.unwrap()), exp);
        } else {
            run_for(1 + grace_end - 1).await; // exp + grace - 1... plus the 1 s above
            let v = monitor.verdict();
            assert_eq!(v.state, LicenseState::Grace, "{signed:?}");
            assert_eq!(secs(v.grace_ends_at.unwrap()), exp + grace_end);
            let events = drain(&mut rx);
            let LicenseEvent::GraceModeEntered {
                grace_period_seconds,
                ..
            } = find(&events, "license.grace_mode_entered")
            else {
                unreachable!()
            };
            assert_eq!(*grace_period_seconds, grace_end as u64);
            run_for(2).await;
            assert_eq!(
                monitor.verdict().state,
                LicenseState::GraceExpired,
                "{signed:?}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_changes_entitlements_says_what_changed() {
    let clock = TestClock::new(common::t0());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let mut basic = claims(T0 + 100 * DAY);
    basic.features = vec!["audit".into()];
    basic.limits.insert("seats".into(), 10);
    std::fs::write(&path, token(&basic)).unwrap();
    let (monitor, mut rx) = start(
        builder(&clock, LicenseSource::File(path.clone()))
            .watch_file(false)
            .file_poll_interval(None),
    )
    .await;
    assert!(!names(&drain(&mut rx)).contains(&"license.entitlements_changed"));

    let mut upgraded = claims(T0 + 100 * DAY);
    upgraded.features = vec!["sso".into()];
    upgraded.limits.insert("seats".into(), 25);
    upgraded.limits.insert("nodes".into(), 3);
    std::fs::write(&path, token(&upgraded)).unwrap();
    monitor.check_now().await;
    let events = drain(&mut rx);
    let LicenseEvent::EntitlementsChanged {
        added,
        removed,
        limits,
    } = find(&events, "license.entitlements_changed")
    else {
        unreachable!()
    };
    assert_eq!(added, &["sso"]);
    assert_eq!(removed, &["audit"]);
    assert_eq!(
        limits,
        &[
            ("nodes".to_owned(), None, Some(3)),
            ("seats".to_owned(), Some(10), Some(25))
        ]
    );
    // The same entitlements in a new token: nothing to say.
    let mut same = upgraded.clone();
    same.exp += DAY;
    std::fs::write(&path, token(&same)).unwrap();
    monitor.check_now().await;
    assert!(!names(&drain(&mut rx)).contains(&"license.entitlements_changed"));
}

#[tokio::test(start_paused = true)]
async fn require_feature_opens_at_the_renewals_nbf_second_without_a_check() {
    use tower::{Layer, ServiceExt};
    let clock = TestClock::new(common::t0());
    let mut upgrade = claims(T0 + 100 * DAY);
    upgrade.nbf = Some(T0 + HOUR);
    upgrade.features = vec!["sso".into()];
    let source = LicenseSource::Static(set(&[token(&claims(T0 + 50 * DAY)), token(&upgrade)]));
    let (monitor, _rx) = start(builder(&clock, source)).await;
    let paid =
        monitor
            .require_feature("sso")
            .layer(tower::service_fn(|_: http::Request<()>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(()))
            }));
    macro_rules! status {
        () => {
            paid.clone()
                .oneshot(http::Request::new(()))
                .await
                .unwrap()
                .status()
        };
    }
    assert_eq!(status!(), http::StatusCode::FORBIDDEN);
    run_for(HOUR - 1).await;
    assert_eq!(status!(), http::StatusCode::FORBIDDEN);
    run_for(2).await;
    assert_eq!(status!(), http::StatusCode::OK);
}
