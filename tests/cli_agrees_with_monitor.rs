//! The CLI's verdict is the monitor's. For random license sets (two customers, any order
//! of lines, windows and `nbf`s around now, signed grace, licenses that supersede others,
//! vendor notices with seqs that revoke some, in the source or a notice source of their
//! own, refused lines), `iosetu_license::preview` (what `verify`, `inspect` and
//! `timeline` show) and, for some, the `iosetu-license` binary itself reach the verdict a
//! real `LicenseMonitor` reaches on the same text: the same state, the same licenses in
//! force (by `jti`), the same reason.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{DAY, HOUR, T0, at, builder, signer};
use iosetu_license::preview::{Keys, preview};
use iosetu_license::{
    Claims, DEFAULT_GRACE_PERIOD, ExpiryBand, LicenseEvent, LicenseSigner, LicenseSource,
    LicenseState, LicenseVerifier, Notice, TestClock, Verdict,
};
use proptest::prelude::*;

const CUSTOMERS: [&str; 2] = ["Acme Corp", "Acme Inc"];

/// A license of the generated set; `jti` is `lic-{index}`.
#[derive(Debug, Clone)]
struct License {
    customer: usize,
    nbf: Option<i64>,
    exp: i64,
    iat: Option<i64>,
    grace: Option<u64>,
    feature: bool,
    supersedes: Option<usize>,
}

/// A vendor notice of the generated set.
#[derive(Debug, Clone)]
struct Note {
    customer: usize,
    seq: u64,
    iat: i64,
    revoke: Vec<usize>,
    /// An attested time (offset from now), with three days to install it.
    attest: Option<i64>,
}

/// One line of the source.
#[derive(Debug, Clone)]
enum Token {
    License(License),
    Notice(Note),
    /// Not a token at all.
    Garbage,
    /// A license signed by another key.
    Forged(License),
}

#[derive(Debug, Clone)]
struct Case {
    /// The lines, in the order they are written.
    tokens: Vec<Token>,
    /// The notices go to a notice source of their own.
    notice_source: bool,
    /// The service's grace period, in seconds.
    grace: u64,
}

/// An offset from now: a signed multiple of an hour, among the distances at which the
/// rules change (bands, grace periods, a month).
fn offset() -> impl Strategy<Value = i64> {
    let scale = prop::sample::select(vec![
        0,
        HOUR,
        23 * HOUR,
        DAY,
        2 * DAY,
        6 * DAY,
        8 * DAY,
        29 * DAY,
        31 * DAY,
        90 * DAY,
    ]);
    (scale, any::<bool>()).prop_map(|(s, negative)| if negative { -s } else { s })
}

fn license(n: usize, past_iat_only: bool) -> impl Strategy<Value = License> {
    let iat = if past_iat_only {
        prop::option::of(offset().prop_map(|o| -o.abs())).boxed()
    } else {
        prop::option::of(offset()).boxed()
    };
    (
        0..CUSTOMERS.len(),
        prop::option::weighted(0.35, offset()),
        offset(),
        iat,
        prop::option::weighted(0.3, prop::sample::select(vec![0u64, 7 * DAY as u64])),
        any::<bool>(),
        prop::option::weighted(0.25, 0..n),
    )
        .prop_map(
            |(customer, nbf, exp, iat, grace, feature, supersedes)| License {
                customer,
                nbf,
                exp,
                iat,
                grace,
                feature,
                supersedes,
            },
        )
}

fn note(n: usize, attestations: bool) -> impl Strategy<Value = Note> {
    let attest = if attestations {
        prop::option::weighted(0.25, prop::sample::select(vec![-HOUR, 0, HOUR])).boxed()
    } else {
        Just(None).boxed()
    };
    (
        prop::sample::select(vec![0usize, 0, 0, 1]),
        1u64..4,
        offset().prop_map(|o| -o.abs()),
        prop::collection::vec(0..n, 0..=2),
        attest,
    )
        .prop_map(|(customer, seq, iat, revoke, attest)| Note {
            customer,
            seq,
            iat,
            revoke,
            attest,
        })
}

/// A case: 1 to 4 licenses, up to 2 notices, sometimes a refused line, shuffled.
/// `binary`: fit for the binary, which judges at its own "now" a moment later (no
/// instant of the vendor's after now, no attestation).
fn case(binary: bool) -> impl Strategy<Value = Case> {
    (1usize..=4)
        .prop_flat_map(move |n| {
            (
                prop::collection::vec(license(n, binary), n),
                prop::collection::vec(note(n, !binary), 0..=2),
                prop::option::weighted(
                    0.2,
                    prop_oneof![
                        Just(Token::Garbage),
                        license(n, binary).prop_map(Token::Forged)
                    ],
                ),
                any::<bool>(),
                prop::sample::select(vec![0u64, HOUR as u64, DAY as u64, 7 * DAY as u64]),
            )
        })
        .prop_flat_map(|(licenses, notes, refused, notice_source, grace)| {
            let mut tokens: Vec<Token> = licenses.into_iter().map(Token::License).collect();
            tokens.extend(notes.into_iter().map(Token::Notice));
            tokens.extend(refused);
            Just(tokens).prop_shuffle().prop_map(move |tokens| Case {
                tokens,
                notice_source,
                grace,
            })
        })
}

/// The claims of license `index` (its `jti` is `lic-{index}`), instants from `now`.
fn claims(l: &License, index: usize, now: i64) -> Claims {
    let mut c = Claims::new(CUSTOMERS[l.customer], now + l.exp);
    c.jti = Some(format!("lic-{index}"));
    c.nbf = l.nbf.map(|o| now + o);
    c.iat = l.iat.map(|o| now + o);
    c.grace_period_seconds = l.grace;
    if l.feature {
        c.features = vec!["sso".into()];
    }
    if let Some(other) = l.supersedes.filter(|&o| o != index) {
        c.supersedes = vec![format!("lic-{other}")];
    }
    c
}

/// The case's source text and notice source text (if the notices have one), at `now`.
fn texts(case: &Case, now: i64) -> (String, Option<String>) {
    let forger = LicenseSigner::from_seed([9; 32]);
    let mut source = Vec::new();
    let mut notices = Vec::new();
    let mut index = 0;
    for token in &case.tokens {
        match token {
            Token::License(l) => {
                // (`jti`s by the order written: `supersedes` and `revoke` name them.)
                source.push(signer().sign(&claims(l, index, now)));
                index += 1;
            }
            Token::Notice(n) => {
                let mut notice = Notice::new(CUSTOMERS[n.customer], now + n.iat, n.seq);
                notice.revoke = n.revoke.iter().map(|i| format!("lic-{i}")).collect();
                if let Some(o) = n.attest {
                    notice.time = Some(now + o);
                    notice.exp = Some(now + o + 3 * DAY);
                }
                let token = signer().sign_notice(&notice);
                if case.notice_source {
                    notices.push(token);
                } else {
                    source.push(token);
                }
            }
            Token::Garbage => source.push("not-a-token".into()),
            Token::Forged(l) => source.push(forger.sign(&claims(l, 99, now))),
        }
    }
    let notices = (!notices.is_empty()).then(|| notices.join("\n") + "\n");
    (source.join("\n") + "\n", notices)
}

/// What the CLI and the monitor must agree on.
#[derive(Debug, PartialEq)]
struct Summary {
    state: LicenseState,
    in_force: Option<String>,
    licenses: Vec<String>,
    upcoming: Vec<String>,
    reason: Option<&'static str>,
    expires_at: Option<SystemTime>,
    grace_started_at: Option<SystemTime>,
    grace_ends_at: Option<SystemTime>,
    notice_seq: Option<u64>,
    revocations: usize,
}

fn jtis(licenses: &[Arc<Claims>]) -> Vec<String> {
    let mut jtis: Vec<String> = licenses.iter().filter_map(|c| c.jti.clone()).collect();
    jtis.sort();
    jtis
}

fn summary(v: &Verdict) -> Summary {
    Summary {
        state: v.state,
        in_force: v.claims.as_ref().and_then(|c| c.jti.clone()),
        licenses: jtis(&v.licenses),
        upcoming: jtis(&v.upcoming),
        reason: v.reason.as_ref().map(|r| r.code()),
        expires_at: v.expires_at,
        grace_started_at: v.grace_started_at,
        grace_ends_at: v.grace_ends_at,
        notice_seq: v.notice_seq,
        revocations: v.revocations,
    }
}

/// The monitor's verdicts on `source` (and `notices`) at `now`: after its start, and once
/// it stands (its next full checks of the same text, until one changes nothing).
fn monitor(
    source: &str,
    notices: Option<&str>,
    now: SystemTime,
    grace: Duration,
) -> (Arc<Verdict>, Arc<Verdict>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let clock = TestClock::new(now);
        let mut builder = builder(&clock, LicenseSource::Static(source.to_owned()))
            .grace_period(grace)
            .reload_on_sighup(false);
        if let Some(notices) = notices {
            builder = builder.notice_source(LicenseSource::Static(notices.to_owned()));
        }
        let monitor = builder.start().await.expect("start");
        let first = monitor.verdict();
        let mut settled = monitor.check_now().await;
        for _ in 0..8 {
            let next = monitor.check_now().await;
            if summary(&next) == summary(&settled) {
                break;
            }
            settled = next;
        }
        (first, settled)
    })
}

/// The monitor's verdicts on `case` at `T0` (see [`monitor`]).
fn monitor_of(case: &Case) -> (Arc<Verdict>, Arc<Verdict>) {
    let (source, notices) = texts(case, T0);
    monitor(
        &source,
        notices.as_deref(),
        at(T0),
        Duration::from_secs(case.grace),
    )
}

fn verifier() -> LicenseVerifier {
    LicenseVerifier::new(vec![signer().public_key()])
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// `preview` (the library function the CLI's `verify`, `inspect` and `timeline` use)
    /// reaches the monitor's verdict: the one it keeps, and the one of its first check.
    #[test]
    fn preview_reaches_the_monitors_verdict(case in case(false)) {
        let (source, notices) = texts(&case, T0);
        let grace = Duration::from_secs(case.grace);
        let (start, settled) = monitor(&source, notices.as_deref(), at(T0), grace);
        let seen = preview(&source, Keys::Verify(&verifier()), notices.as_deref(), at(T0), grace);
        prop_assert_eq!(summary(&seen.verdict), summary(&settled), "kept: {:#?}\n{}", case, source);
        prop_assert_eq!(summary(&seen.start), summary(&start), "at start: {:#?}\n{}", case, source);
    }
}

/// Whole seconds of the system clock now.
fn real_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// What `iosetu-license verify --json` says of `source` (and `notices`), by the real
/// binary: (valid, state, reason, the jti of the license in force).
fn binary_verify(
    dir: &Path,
    source: &str,
    notices: Option<&str>,
    grace: u64,
) -> (bool, String, Option<String>, Option<String>) {
    let key = dir.join("key.pub.pem");
    std::fs::write(&key, signer().public_key_pem()).unwrap();
    let file = dir.join("license.key");
    std::fs::write(&file, source).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_iosetu-license"));
    command
        .args(["verify", "--json", "--public-key"])
        .arg(&key)
        .arg("--file")
        .arg(&file)
        .args(["--grace", &format!("{grace}s")]);
    if let Some(notices) = notices {
        let path = dir.join("notices");
        std::fs::write(&path, notices).unwrap();
        command.arg("--notices").arg(&path);
    }
    let out = command.output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let valid = json["valid"].as_bool().unwrap();
    assert_eq!(out.status.code(), Some(if valid { 0 } else { 1 }), "{json}");
    (
        valid,
        json["state"].as_str().unwrap().to_owned(),
        json["reason"].as_str().map(str::to_owned),
        json["claims"]["jti"].as_str().map(str::to_owned),
    )
}

/// What the binary must say, from the monitor's verdict.
fn expected(v: &Verdict) -> (bool, String, Option<String>, Option<String>) {
    let valid = v.state == LicenseState::Valid;
    (
        valid,
        v.state.as_str().to_owned(),
        v.reason.as_ref().map(|r| r.code().to_owned()),
        v.claims
            .as_ref()
            .filter(|_| valid)
            .and_then(|c| c.jti.clone()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The binary's `verify --json` says what the monitor decides (its "now" is the
    /// system clock's: every instant of the set is a whole number of hours from the
    /// monitor's now, so the moment between them changes nothing).
    #[test]
    fn the_binary_says_what_the_monitor_decides(case in case(true)) {
        let now = real_now();
        let (source, notices) = texts(&case, now);
        let dir = tempfile::tempdir().unwrap();
        let (_, settled) = monitor(&source, notices.as_deref(), at(now), Duration::from_secs(case.grace));
        let said = binary_verify(dir.path(), &source, notices.as_deref(), case.grace);
        prop_assert_eq!(said, expected(&settled), "{:#?}\n{}", case, source);
    }
}

/// An expired "Acme Corp" license and its renewal under the customer's new name, "Acme
/// Inc": valid in both orders, the renewal in force, by the binary as by the monitor.
/// (The CLI's own copy of the set rules said `invalid: customer_mismatch` for one order.)
#[test]
fn a_renamed_renewal_verifies_valid_in_both_orders() {
    let now = real_now();
    let mut old = Claims::new("Acme Corp", now - 10 * DAY);
    old.jti = Some("old".into());
    let mut renewal = Claims::new("Acme Inc", now + 355 * DAY);
    renewal.jti = Some("renewal".into());
    let (old, renewal) = (signer().sign(&old), signer().sign(&renewal));
    let dir = tempfile::tempdir().unwrap();
    for source in [format!("{old}\n{renewal}\n"), format!("{renewal}\n{old}\n")] {
        let (_, monitor) = monitor(&source, None, at(now), DEFAULT_GRACE_PERIOD);
        assert_eq!(monitor.state, LicenseState::Valid);
        let said = binary_verify(dir.path(), &source, None, DEFAULT_GRACE_PERIOD.as_secs());
        assert_eq!(
            said,
            (true, "valid".to_owned(), None, Some("renewal".to_owned())),
            "{source}"
        );
        assert_eq!(said, expected(&monitor));
        // And in words, as a support engineer reads it.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_iosetu-license"))
            .args(["verify", "--public-key"])
            .arg(dir.path().join("key.pub.pem"))
            .arg(&source)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with("valid: Acme Inc until"), "{text}");
        assert!(
            text.contains("customer_mismatch"),
            "the old line is listed as refused: {text}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// `preview` never panics, whatever the text (tokens, notices, garbage, extreme
    /// instants) and the instant, verified or not.
    #[test]
    fn preview_never_panics(
        lines in prop::collection::vec(
            prop_oneof![
                "[ -~]{0,40}",
                (any::<i64>(), prop::option::of(any::<i64>()), any::<bool>())
                    .prop_map(|(exp, nbf, notice)| if notice {
                        let mut n = Notice::new("Acme", exp, 1);
                        n.time = nbf;
                        n.exp = nbf.map(|t| t.saturating_add(DAY));
                        signer().sign_notice(&n)
                    } else {
                        let mut c = Claims::new("Acme", exp);
                        c.nbf = nbf;
                        signer().sign(&c)
                    }),
            ],
            0..6,
        ),
        notices in prop::option::of("[ -~\n]{0,40}"),
        now in -100_000_000_000i64..100_000_000_000,
        grace in any::<u64>(),
        verified in any::<bool>(),
    ) {
        let text = lines.join("\n");
        let verifier = verifier();
        let keys = if verified { Keys::Verify(&verifier) } else { Keys::Unverified };
        let seen = preview(&text, keys, notices.as_deref(), at(now), Duration::from_secs(grace));
        prop_assert!(seen.lines.len() <= lines.len() + 40);
    }
}

/// What the monitor's verdict shows from a scheduled instant on, and not a second before.
#[derive(Debug, Clone, Copy)]
enum Shows {
    Band(ExpiryBand),
    Grace,
    Valid,
    CutOff,
}

impl Shows {
    fn holds(self, v: &Verdict) -> bool {
        match self {
            Shows::Band(band) => v.state == LicenseState::Valid && v.band == Some(band),
            Shows::Grace => v.state != LicenseState::Valid,
            Shows::Valid => v.state == LicenseState::Valid,
            Shows::CutOff => v.state == LicenseState::GraceExpired,
        }
    }
}

/// Whether what the preview schedules for `case` (what `timeline` lists: the judge woken
/// by its own timers as time alone moves on) is when a running monitor's verdict changes:
/// each alert band, grace entered and left, and the cut-off hold from their instant and
/// not a second before (for two customers, within the minute after: see below).
fn timeline_agrees(case: &Case) -> Result<(), String> {
    let (source, notices) = texts(case, T0);
    let grace = Duration::from_secs(case.grace);
    let seen = preview(
        &source,
        Keys::Verify(&verifier()),
        notices.as_deref(),
        at(T0),
        grace,
    );
    let marks: Vec<(i64, Shows)> = seen
        .schedule
        .iter()
        .filter_map(|s| {
            let shows = match &s.event {
                LicenseEvent::Expiring { band, .. } => Shows::Band(*band),
                LicenseEvent::GraceModeEntered { .. } => Shows::Grace,
                LicenseEvent::GraceModeExited { .. } => Shows::Valid,
                LicenseEvent::GracePeriodExpired { .. } => Shows::CutOff,
                _ => return None,
            };
            Some((common::secs(s.at), shows))
        })
        .collect();
    let mut customers: Vec<&str> = seen
        .licenses()
        .filter_map(|l| l.claims.as_ref())
        .map(|c| c.customer.as_str())
        .collect();
    customers.dedup();
    let two_customers = customers.iter().any(|c| *c != customers[0]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let clock = TestClock::new(at(T0));
        let mut builder = builder(&clock, LicenseSource::Static(source.clone()))
            .grace_period(grace)
            .reload_on_sighup(false);
        if let Some(notices) = &notices {
            builder = builder.notice_source(LicenseSource::Static(notices.clone()));
        }
        let monitor = builder.start().await.expect("start");
        // (Settled, as the preview is.)
        for _ in 0..8 {
            monitor.check_now().await;
        }
        let ms = Duration::from_millis(1);
        let mut elapsed = Duration::ZERO;
        for (i, (secs, shows)) in marks.iter().enumerate() {
            let at = Duration::from_secs((secs - T0) as u64);
            // A change of customer is not on the judge's wake table: the monitor makes it
            // at its next wake, within a minute (see `preview`'s `next_choice`). It is
            // looked at after that minute, where nothing else is due.
            let late = if two_customers {
                if marks.get(i + 1).is_some_and(|(next, _)| next - secs <= 61) {
                    continue;
                }
                Duration::from_secs(61)
            } else {
                ms
            };
            let before = at.saturating_sub(Duration::from_secs(1));
            if before >= elapsed && before > Duration::ZERO {
                // The long stretch at once (the checker wakes once, late), the last second
                // in paused time, where the checker's own timer is what wakes it.
                tokio::time::advance(before - elapsed).await;
                tokio::time::sleep(ms).await;
                elapsed = before + ms;
                if shows.holds(&monitor.verdict()) {
                    return Err(format!(
                        "{shows:?} a second before {secs}: {:?}\n{marks:?}",
                        monitor.verdict()
                    ));
                }
            }
            if at + late > elapsed {
                tokio::time::sleep(at + late - elapsed).await;
                elapsed = at + late;
            }
            if !shows.holds(&monitor.verdict()) {
                return Err(format!(
                    "not {shows:?} at {secs}: {:?}\n{marks:?}",
                    monitor.verdict()
                ));
            }
        }
        Ok(())
    })
}

/// `case` with every license and notice for one customer.
fn one_customer(mut case: Case) -> Case {
    for token in &mut case.tokens {
        match token {
            Token::License(l) | Token::Forged(l) => l.customer = 0,
            Token::Notice(n) => n.customer = 0,
            Token::Garbage => {}
        }
    }
    case
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// What `timeline` lists is when a running monitor's verdict changes, to the second,
    /// for sets of one customer (with notices, revocations, supersession, attestations).
    #[test]
    fn the_timeline_is_when_the_monitor_changes(case in case(false).prop_map(one_customer)) {
        let agrees = timeline_agrees(&case);
        prop_assert!(agrees.is_ok(), "{}\n{:#?}", agrees.unwrap_err(), case);
    }

    /// The same for sets of two customers (a renamed renewal beside the old name, each
    /// with its notices). Once ignored as a judge finding: the first check learned one
    /// customer's revocations only and the other's came with the next full check, so
    /// what a service decided depended on whether a read happened in between.
    #[test]
    fn the_timeline_of_two_customers_is_when_the_monitor_changes(case in case(false)) {
        let agrees = timeline_agrees(&case);
        prop_assert!(agrees.is_ok(), "{}\n{:#?}", agrees.unwrap_err(), case);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2048,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// What a service decides at its first check is what it keeps: whether it admits, and
    /// until when (the end of grace, or the expiry in force), with attestations and every
    /// customer's notices. (Which license the verdict shows may still change with the
    /// next full check: see the ignored test below.)
    #[test]
    fn the_monitor_keeps_the_decision_of_its_first_check(case in case(false)) {
        let (start, settled) = monitor_of(&case);
        let decision = |v: &Verdict| {
            (v.state, v.grace_ends_at, v.is_valid().then_some(v.expires_at).flatten())
        };
        prop_assert_eq!(decision(&start), decision(&settled), "{:#?}", case);
    }

    /// A monitor's first check reaches the whole verdict it keeps. Ignored: a finding
    /// about the judge, not the CLI. Its decision is kept (the test above; the first
    /// check once judged only one customer's revocations, and a service could start
    /// valid and be cut off an hour later, its source unchanged), but for some sets of two
    /// customers both in grace or cut off, which one the verdict shows changes at the next
    /// full check: the customer is chosen by `set::select` at a read and by
    /// `Judge::best_set` at every check, and the grace the first choice started is then
    /// the anchor of both. `preview` shows both (`Preview::start`, `Preview::verdict`)
    /// and `verify` warns.
    #[test]
    #[ignore = "judge finding: which customer's license a verdict shows can change at the next full check"]
    fn the_monitor_keeps_the_verdict_of_its_first_check(case in case(false)) {
        let (start, settled) = monitor_of(&case);
        prop_assert_eq!(summary(&start), summary(&settled), "{:#?}", case);
    }
}
