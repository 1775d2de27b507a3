//! The judge's rules, as plain method calls.

use super::*;
use crate::clock::from_unix_seconds;
use crate::verdict::GraceReason;

const T0: i64 = 1_800_000_000;
pub(super) const HOUR: u64 = 3_600;

pub(super) fn config() -> JudgeConfig {
    JudgeConfig {
        grace_period: Duration::from_secs(HOUR),
        drain_period: Duration::from_secs(60),
        check_interval: Duration::from_secs(HOUR),
        fail_closed: false,
        built_at: None,
        source: "file:/test/license.key".into(),
        instance_settling: Duration::from_secs(120),
        state_file: true,
        boot_id: None,
    }
}

/// A reading `secs` into the run, with a wall clock that agrees.
pub(super) fn at(secs: u64) -> Reading {
    Reading {
        wall: from_unix_seconds(T0 + secs as i64),
        mono: Duration::from_secs(secs),
        provisional: false,
        boot_age: None,
    }
}

fn read(licenses: &[Claims]) -> Read {
    Read::Lines(
        licenses
            .iter()
            .enumerate()
            .map(|(i, c)| Line {
                line: i + 1,
                print: format!("{}-{}", c.customer, c.exp),
                verified: Ok(Arc::new(c.clone())),
            })
            .collect(),
        Vec::new(),
    )
}

fn full(licenses: &[Claims]) -> Observation {
    Observation::Full(read(licenses))
}

fn names(judge: &mut Judge) -> Vec<&'static str> {
    std::iter::from_fn(|| judge.poll_event())
        .map(|e| e.name())
        .collect()
}

fn license(exp_in: u64) -> Claims {
    Claims::new("Acme", T0 + exp_in as i64)
}

fn with_notices(licenses: &[Claims], notices: &[Notice]) -> Observation {
    let Read::Lines(lines, _) = read(licenses) else {
        unreachable!("read() always gives lines")
    };
    let notices = notices
        .iter()
        .enumerate()
        .map(|(i, n)| NoticeLine {
            line: licenses.len() + i + 1,
            print: format!("notice-{}-{}-{}", n.customer, n.seq, n.iat),
            verified: Ok(Arc::new(n.clone())),
        })
        .collect();
    Observation::Full(Read::Lines(lines, notices))
}

fn revoke(seq: u64, iat_in: u64, jtis: &[&str]) -> Notice {
    let mut n = Notice::new("Acme", T0 + iat_in as i64, seq);
    n.revoke = jtis.iter().map(|j| (*j).to_owned()).collect();
    n
}

fn attest(seq: u64, time: i64) -> Notice {
    let mut n = Notice::new("Acme", time, seq);
    n.time = Some(time);
    n.exp = Some(time + 86_400);
    n
}

fn with_jti(exp_in: u64, jti: &str) -> Claims {
    let mut c = license(exp_in);
    c.jti = Some(jti.into());
    c
}

fn restarted(judge: &Judge, reading: Reading) -> Judge {
    let mut next = Judge::new(config(), reading);
    next.handle_restored(Ok(judge.state_to_persist().expect("a firm mark")));
    next
}

#[test]
fn a_revocation_applies_from_the_notice_iat_with_the_license_own_grace() {
    let lic = [with_jti(300 * 24 * HOUR, "lic-1")];
    let mut judge = Judge::new(config(), at(0));
    assert!(judge.handle_check(at(0), full(&lic), false).is_valid());
    names(&mut judge);
    // Signed 10 minutes ago, installed now: in grace from its iat.
    let v = judge.handle_check(
        at(1200),
        with_notices(&lic, &[revoke(1, 600, &["lic-1"])]),
        false,
    );
    assert_eq!(v.state, LicenseState::Grace);
    assert_eq!(v.reason, Some(GraceReason::Revoked));
    assert_eq!(v.grace_started_at, Some(from_unix_seconds(T0 + 600)));
    assert_eq!(
        v.grace_ends_at,
        Some(from_unix_seconds(T0 + 600 + HOUR as i64))
    );
    assert_eq!((v.notice_seq, v.revocations), (Some(1), 1));
    assert_eq!(
        names(&mut judge),
        ["license.revoked", "license.grace_mode_entered"]
    );
    let cut = judge.handle_check(at(600 + HOUR), Observation::Transition, false);
    assert!(!cut.admits());
    assert_eq!(cut.reason.as_ref().map(GraceReason::code), Some("revoked"));
    // The same notice read again changes nothing and reports nothing.
    judge.handle_check(
        at(700 + HOUR),
        with_notices(&lic, &[revoke(1, 600, &["lic-1"])]),
        false,
    );
    assert!(names(&mut judge).iter().all(|n| *n != "license.revoked"));
}

#[test]
fn a_deleted_notice_line_keeps_its_revocations_through_the_state_file() {
    let lic = [
        with_jti(300 * 24 * HOUR, "lic-1"),
        with_jti(200 * 24 * HOUR, "lic-2"),
    ];
    let mut judge = Judge::new(config(), at(0));
    judge.handle_check(
        at(0),
        with_notices(&lic, &[revoke(1, 0, &["lic-1", "lic-2"])]),
        false,
    );
    let later = at(2 * HOUR);
    let mut next = restarted(&judge, later);
    let v = next.handle_check(later, full(&lic), false);
    assert!(
        !v.admits(),
        "the notice's line is gone, its revocations are not"
    );
    assert_eq!(v.reason, Some(GraceReason::Revoked));
    // Without a state file a restart forgets: the vendor's notice must stay in place.
    let mut fresh = Judge::new(config(), later);
    assert!(fresh.handle_check(later, full(&lic), false).is_valid());
}

#[test]
fn a_renewal_keeps_a_customer_whose_old_license_was_revoked() {
    let old = with_jti(30 * 24 * HOUR, "lic-1");
    let mut judge = Judge::new(config(), at(0));
    let v = judge.handle_check(
        at(60),
        with_notices(std::slice::from_ref(&old), &[revoke(1, 0, &["lic-1"])]),
        false,
    );
    assert_eq!(v.reason, Some(GraceReason::Revoked));
    // The vendor issues a replacement: valid again, the revoked one never comes back.
    let renewal = with_jti(300 * 24 * HOUR, "lic-2");
    let v = judge.handle_check(at(120), full(&[old.clone(), renewal.clone()]), false);
    assert!(v.is_valid());
    assert_eq!(v.licenses.len(), 1);
    assert_eq!(v.licenses[0].jti.as_deref(), Some("lic-2"));
}

#[test]
fn a_superseding_license_revokes_from_when_it_starts() {
    let old = with_jti(300 * 24 * HOUR, "lic-1");
    let mut new = with_jti(400 * 24 * HOUR, "lic-2");
    new.nbf = Some(T0 + 2 * HOUR as i64);
    new.supersedes = vec!["lic-1".into()];
    new.features = vec!["new".into()];
    let mut judge = Judge::new(config(), at(0));
    let v = judge.handle_check(at(0), full(&[old.clone(), new.clone()]), false);
    assert!(
        v.is_valid(),
        "the old one is in force until the new one starts"
    );
    assert_eq!(v.licenses[0].jti.as_deref(), Some("lic-1"));
    let v = judge.handle_check(at(2 * HOUR), Observation::Transition, false);
    assert!(v.is_valid());
    assert_eq!(v.licenses.len(), 1);
    assert_eq!(v.licenses[0].jti.as_deref(), Some("lic-2"));
    // Dropping the new license does not bring the old one back.
    let v = judge.handle_check(at(3 * HOUR), full(&[old]), false);
    assert_eq!(v.reason, Some(GraceReason::Revoked));
}

#[test]
fn a_license_revoked_before_it_started_anchors_grace_at_the_revocation() {
    // Found by the simulation: a clock set ahead put a held renewal in force early,
    // and its revocation (before its nbf) then gave a fresh grace from "now".
    // (A wall set ahead is believed only once it has held for 15 minutes.)
    let mut held = with_jti(20 * HOUR, "renewal");
    held.nbf = Some(T0 + 2 * HOUR as i64);
    let ahead = |mono: u64| Reading {
        wall: from_unix_seconds(T0 + 2 * HOUR as i64 + mono as i64),
        ..at(mono)
    };
    let mut judge = Judge::new(config(), at(0));
    assert!(
        !judge
            .handle_check(ahead(60), full(std::slice::from_ref(&held)), false)
            .is_valid(),
        "not before the forward jump is confirmed"
    );
    let confirmed = ahead(60 + 16 * 60);
    assert!(
        judge
            .handle_check(confirmed, full(std::slice::from_ref(&held)), false)
            .is_valid()
    );
    let v = judge.handle_check(
        confirmed,
        with_notices(std::slice::from_ref(&held), &[revoke(1, 0, &["renewal"])]),
        false,
    );
    assert_eq!(v.reason, Some(GraceReason::Revoked));
    assert_eq!(v.grace_started_at, Some(from_unix_seconds(T0)));
    assert!(!v.admits(), "{v:?}");
}

#[test]
fn older_and_foreign_notices_are_refused_and_reported_once_per_interval() {
    let lic = [with_jti(300 * 24 * HOUR, "lic-1")];
    let mut judge = Judge::new(config(), at(0));
    judge.handle_check(at(0), with_notices(&lic, &[revoke(5, 0, &[])]), false);
    names(&mut judge);
    let mut foreign = revoke(9, 0, &["lic-1"]);
    foreign.customer = "Other".into();
    let stale = attest(4, T0);
    let notices = [revoke(5, 0, &[]), stale, foreign];
    let v = judge.handle_check(at(10), with_notices(&lic, &notices), false);
    assert!(v.is_valid(), "neither refused notice revokes anything");
    let events: Vec<LicenseEvent> = std::iter::from_fn(|| judge.poll_event()).collect();
    let reasons: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            LicenseEvent::NoticeRejected { error, .. } => Some(error.reason()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, ["stale_seq", "customer_mismatch"]);
    judge.handle_check(at(20), with_notices(&lic, &notices), false);
    assert!(names(&mut judge).is_empty());
    judge.handle_check(at(20 + HOUR), with_notices(&lic, &notices), false);
    assert_eq!(names(&mut judge), ["license.notice_rejected"; 2]);
}

#[test]
fn an_attestation_ends_manipulation_grace_and_rebases_the_stored_mark() {
    // The clock was set a year ahead for a day (a mark persisted there), then put right.
    let year = 365 * 24 * HOUR as i64;
    let lic = [with_jti(300 * 24 * HOUR, "lic-1")];
    let ahead = Reading {
        wall: from_unix_seconds(T0 + year),
        ..at(0)
    };
    let mut judge = Judge::new(config(), ahead);
    judge.handle_check(ahead, full(&lic), false);
    let mut next = restarted(&judge, at(60));
    let v = next.handle_check(at(60), full(&lic), false);
    assert!(!v.is_valid(), "the right clock now reads as set back");
    assert!(names(&mut next).contains(&"license.time_manipulation_detected"));
    // The vendor attests the time: valid at once, and the mark is re-based for good.
    let fix = [attest(1, T0 + 30)];
    let v = next.handle_check(at(90), with_notices(&lic, &fix), false);
    assert!(v.is_valid(), "{v:?}");
    let events: Vec<LicenseEvent> = std::iter::from_fn(|| next.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(
        e,
        LicenseEvent::ClockAttested { seq: 1, cleared_manipulation: true, trusted_time_moved_seconds, .. }
            if *trusted_time_moved_seconds < -(year - 100)
    )), "{events:?}");
    let stored = next.poll_persist().expect("written at once");
    assert!(stored.high_water <= T0 + 90 && stored.notice_seq["Acme"] == 1);
    next.handle_persisted(stored);
    // A restart with the notice still in place: the same attestation is not used
    // again, and nothing is wrong.
    let mut third = restarted(&next, at(200));
    assert!(
        third
            .handle_check(at(200), with_notices(&lic, &fix), false)
            .is_valid()
    );
    assert!(!names(&mut third).contains(&"license.clock_attested"));
}

#[test]
fn a_replayed_attestation_is_refused() {
    // A customer used attestation 1 in January; in June, after expiry, the clock is
    // set back to January and the old notice put back: it gains nothing.
    let lic = [with_jti(30 * 24 * HOUR, "lic-1")];
    let mut judge = Judge::new(config(), at(0));
    judge.handle_check(at(0), with_notices(&lic, &[attest(1, T0)]), false);
    names(&mut judge);
    let june = at(150 * 24 * HOUR);
    judge.handle_check(june, full(&lic), false);
    let mut next = restarted(&judge, june);
    let set_back = Reading {
        wall: from_unix_seconds(T0 + 60),
        ..at(150 * 24 * HOUR + 60)
    };
    let v = next.handle_check(set_back, with_notices(&lic, &[attest(1, T0)]), false);
    assert!(!v.admits(), "{v:?}");
    assert!(!names(&mut next).contains(&"license.clock_attested"));
    // Once a later notice was installed, the old one is refused outright.
    judge.handle_check(june, with_notices(&lic, &[revoke(2, 0, &[])]), false);
    let mut second = restarted(&judge, set_back);
    let v = second.handle_check(set_back, with_notices(&lic, &[attest(1, T0)]), false);
    assert!(!v.admits());
    let events: Vec<LicenseEvent> = std::iter::from_fn(|| second.poll_event()).collect();
    assert!(
        events.iter().any(|e| matches!(
            e,
            LicenseEvent::NoticeRejected {
                error: LicenseError::StaleSequence { seq: 1, highest: 2 },
                ..
            }
        )),
        "{events:?}"
    );
}

#[test]
fn an_attestation_from_a_vendor_minutes_fast_never_makes_a_right_clock_look_set_back() {
    let lic = [with_jti(300 * 24 * HOUR, "lic-1")];
    let mut judge = Judge::new(config(), at(0));
    let fast = attest(1, T0 + 60 + 240);
    assert!(
        judge
            .handle_check(at(60), with_notices(&lic, &[fast]), false)
            .is_valid()
    );
    for s in (120..HOUR).step_by(60) {
        assert!(
            judge
                .handle_check(at(s), Observation::Transition, false)
                .is_valid()
        );
    }
    let names = names(&mut judge);
    assert!(names.contains(&"license.clock_attested"), "{names:?}");
    assert!(
        !names.contains(&"license.time_manipulation_detected"),
        "{names:?}"
    );
}

#[test]
fn an_expired_attestation_is_refused() {
    let lic = [with_jti(300 * 24 * HOUR, "lic-1")];
    let mut judge = Judge::new(config(), at(0));
    let old = attest(1, T0 - 8 * 86_400);
    judge.handle_check(at(0), with_notices(&lic, &[old]), false);
    let events: Vec<LicenseEvent> = std::iter::from_fn(|| judge.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(
        e,
        LicenseEvent::NoticeRejected {
            error: LicenseError::Expired { .. },
            ..
        }
    )));
    assert!(judge.notices.seq.is_empty());
}

#[test]
fn an_alert_repeats_at_most_once_per_check_interval_whatever_wakes_the_judge() {
    let lic = [license(10 * 24 * HOUR)];
    let mut judge = Judge::new(config(), at(0));
    judge.handle_check(at(0), full(&lic), false);
    assert!(names(&mut judge).contains(&"license.expiring_30d"));
    // A storm of full checks (SIGHUP, check_now) within the hour: nothing more.
    for s in 1..200 {
        judge.handle_check(at(s), full(&lic), false);
        assert!(names(&mut judge).is_empty(), "at +{s} s");
    }
    judge.handle_check(at(HOUR), Observation::Transition, false);
    assert!(
        names(&mut judge).is_empty(),
        "only a full check repeats an alert"
    );
    judge.handle_check(at(HOUR), full(&lic), false);
    assert_eq!(names(&mut judge), ["license.expiring_30d"]);
}

#[test]
fn an_unchanged_bad_source_is_reported_at_most_once_per_check_interval() {
    let bad = || Observation::Full(Read::Failed(LicenseError::BadSignature));
    let mut judge = Judge::new(config(), at(0));
    judge.handle_check(at(0), bad(), false);
    assert!(names(&mut judge).contains(&"license.verification_failed"));
    for s in 1..100 {
        judge.handle_check(at(s), bad(), false);
        assert!(!names(&mut judge).contains(&"license.verification_failed"));
    }
    // A different problem is news at once.
    judge.handle_check(
        at(100),
        Observation::Changed(Read::Failed(LicenseError::Missing {
            detail: "gone".into(),
        })),
        false,
    );
    assert!(names(&mut judge).contains(&"license.missing"));
    judge.handle_check(at(100 + HOUR), bad(), false);
    assert!(names(&mut judge).contains(&"license.verification_failed"));
    assert_eq!(judge.problem(), Some("bad_signature"));
}

#[test]
fn the_drain_ends_a_drain_period_after_the_cut_off_and_a_renewal_stops_it() {
    let mut trial = license(HOUR);
    trial.grace_period_seconds = Some(0);
    let mut judge = Judge::new(config(), at(0));
    assert!(
        judge
            .handle_check(at(0), full(&[trial.clone()]), false)
            .is_valid()
    );
    let cut = judge.handle_check(at(HOUR), Observation::Transition, false);
    assert!(!cut.admits());
    assert!(!judge.drained());
    assert_eq!(
        judge.decision_timeout(),
        Some(Duration::from_secs(HOUR + 60))
    );
    judge.handle_check(at(HOUR + 59), Observation::Transition, false);
    assert!(!judge.drained());
    judge.handle_check(at(HOUR + 60), Observation::Transition, false);
    assert!(judge.drained());

    // Renewed during the drain: nothing is cut.
    let mut judge = Judge::new(config(), at(0));
    judge.handle_check(at(0), full(&[trial.clone()]), false);
    judge.handle_check(at(HOUR), Observation::Transition, false);
    let renewal = license(400 * 24 * HOUR);
    let v = judge.handle_check(at(HOUR + 30), full(&[trial, renewal]), false);
    assert!(v.is_valid());
    judge.handle_check(at(HOUR + 90), Observation::Transition, false);
    assert!(!judge.drained());
}

#[test]
fn a_feature_a_renewal_takes_away_drains_its_routes_and_coming_back_stops_it() {
    let mut with_sso = license(400 * 24 * HOUR);
    with_sso.features = vec!["sso".into(), "audit".into()];
    let mut without = license(400 * 24 * HOUR);
    without.features = vec!["audit".into()];
    let mut judge = Judge::new(config(), at(0));
    judge.handle_check(at(0), full(std::slice::from_ref(&with_sso)), false);
    assert!(!judge.feature_drained("sso"));

    // The renewal without "sso": its routes' open responses get the drain period.
    let v = judge.handle_check(at(HOUR), full(std::slice::from_ref(&without)), false);
    assert!(v.is_valid() && !v.has_feature("sso"));
    assert!(!judge.feature_drained("sso") && !judge.feature_drained("audit"));
    assert_eq!(
        judge.decision_timeout(),
        Some(Duration::from_secs(HOUR + 60))
    );
    judge.handle_check(at(HOUR + 59), Observation::Transition, false);
    assert!(!judge.feature_drained("sso"));
    judge.handle_check(at(HOUR + 60), Observation::Transition, false);
    assert!(judge.feature_drained("sso"));
    assert!(!judge.feature_drained("audit") && !judge.drained());
    assert!(judge.decision_timeout() > Some(Duration::from_secs(HOUR + 60)));

    // Back in a later renewal: its routes are open again, and nothing is drained.
    judge.handle_check(at(2 * HOUR), full(std::slice::from_ref(&with_sso)), false);
    assert!(!judge.feature_drained("sso"));

    // Taken away and given back within the drain period: nothing is cut.
    judge.handle_check(at(3 * HOUR), full(std::slice::from_ref(&without)), false);
    judge.handle_check(
        at(3 * HOUR + 30),
        full(std::slice::from_ref(&with_sso)),
        false,
    );
    judge.handle_check(at(3 * HOUR + 90), Observation::Transition, false);
    assert!(!judge.feature_drained("sso"));
}

#[test]
fn without_an_instance_slot_grace_runs_from_when_it_was_lost_then_cuts_off() {
    let mut limited = license(400 * 24 * HOUR);
    limited.max_instances = Some(2);
    let mut judge = Judge::new(config(), at(0));
    assert!(
        judge
            .handle_check(at(0), full(&[limited]), false)
            .is_valid()
    );
    assert_eq!(judge.instance_limit(), Some(2));
    let v = judge.handle_check(at(10), Observation::Transition, true);
    assert_eq!(v.reason, Some(crate::GraceReason::InstanceLimit));
    assert_eq!(v.grace_started_at, Some(from_unix_seconds(T0 + 10)));
    assert!(
        judge
            .handle_check(at(10 + HOUR - 1), Observation::Transition, true)
            .admits()
    );
    assert!(
        !judge
            .handle_check(at(10 + HOUR), Observation::Transition, true)
            .admits()
    );
    // A slot again: valid at once.
    assert!(
        judge
            .handle_check(at(20 + HOUR), Observation::Transition, false)
            .is_valid()
    );
}

/// A replica new to the fleet, without a slot.
fn new_without(fleet_waited: Option<(Duration, Duration)>) -> SlotWord {
    SlotWord {
        without: true,
        ever_held: false,
        fleet_waited,
        fleet_turning_over: false,
    }
}

#[test]
fn a_replica_new_to_the_fleet_settles_quietly_before_instance_grace() {
    let mut limited = license(400 * 24 * HOUR);
    limited.max_instances = Some(1);
    let mut judge = Judge::new(config(), at(0));
    judge.handle_check(at(0), full(&[limited]), SlotWord::default());
    while judge.poll_event().is_some() {}
    // Without a slot from 10 s: valid, settling until 130 s, and a wake then.
    let v = judge.handle_check(at(10), Observation::Transition, new_without(None));
    assert!(v.is_valid());
    assert_eq!(v.instance_settling_until, Some(from_unix_seconds(T0 + 130)));
    assert_eq!(judge.decision_timeout(), Some(Duration::from_secs(130)));
    assert!(judge.poll_event().is_none(), "settling is quiet");
    let v = judge.handle_check(at(129), Observation::Transition, new_without(None));
    assert!(v.is_valid());
    // Settled: grace from the end of settling, with its events.
    let v = judge.handle_check(at(130), Observation::Transition, new_without(None));
    assert_eq!(v.reason, Some(crate::GraceReason::InstanceLimit));
    assert_eq!(v.grace_started_at, Some(from_unix_seconds(T0 + 130)));
    assert_eq!(v.instance_settling_until, None);
    let mut names = Vec::new();
    while let Some(e) = judge.poll_event() {
        names.push(e.name());
    }
    assert!(names.contains(&"license.grace_mode_entered"), "{names:?}");
    // Settling is had once: a slot, then none again, starts grace at once.
    judge.handle_check(at(200), Observation::Transition, SlotWord::default());
    // (The word of a replica that held a slot and lost it.)
    let v = judge.handle_check(at(210), Observation::Transition, true);
    assert_eq!(v.grace_started_at, Some(from_unix_seconds(T0 + 210)));
}

#[test]
fn a_surge_replica_that_gets_a_slot_while_settling_never_enters_grace() {
    let mut limited = license(400 * 24 * HOUR);
    limited.max_instances = Some(1);
    let mut judge = Judge::new(config(), at(0));
    judge.handle_check(at(0), full(&[limited]), new_without(None));
    for s in (10..100).step_by(10) {
        assert!(
            judge
                .handle_check(at(s), Observation::Transition, new_without(None))
                .is_valid()
        );
    }
    // (The word of a replica that holds a slot.)
    let v = judge.handle_check(at(100), Observation::Transition, false);
    assert!(v.is_valid() && v.instance_settling_until.is_none());
    while let Some(e) = judge.poll_event() {
        assert!(
            e.level() != tracing::Level::ERROR,
            "an error event in a rollout: {e:?}"
        );
    }
}

#[test]
fn the_fleets_overuse_record_anchors_grace_and_ends_settling() {
    let mut limited = license(400 * 24 * HOUR);
    limited.max_instances = Some(1);
    let mut judge = Judge::new(config(), at(0));
    judge.handle_check(at(0), full(&[limited]), SlotWord::default());
    let v = judge.handle_check(at(1000), Observation::Transition, new_without(None));
    assert!(v.instance_settling_until.is_some());
    // The cluster records the fleet as over its limit since the judge's monotonic
    // clock read 0 (at T0), with no waiter getting a slot since: the fleet's settling
    // ended at T0 + 120, and grace runs from then.
    let record = new_without(Some((Duration::ZERO, Duration::ZERO)));
    let v = judge.handle_check(at(1010), Observation::Transition, record);
    assert_eq!(v.reason, Some(crate::GraceReason::InstanceLimit));
    assert_eq!(v.grace_started_at, Some(from_unix_seconds(T0 + 120)));
    // A grace period (an hour) after that: cut off, though this replica is only
    // minutes old.
    assert!(
        judge
            .handle_check(at(HOUR + 119), Observation::Transition, record)
            .admits()
    );
    assert!(
        !judge
            .handle_check(at(HOUR + 120), Observation::Transition, record)
            .admits()
    );
    // The record gone stale does not give the time back.
    assert!(
        !judge
            .handle_check(at(HOUR + 200), Observation::Transition, new_without(None))
            .admits()
    );
}

#[test]
fn in_a_fleet_that_is_turning_over_a_new_replica_settles_on_its_own_clock() {
    let mut limited = license(400 * 24 * HOUR);
    limited.max_instances = Some(1);
    let mut judge = Judge::new(config(), at(0));
    judge.handle_check(at(0), full(&[limited]), SlotWord::default());
    // A rollout that began at T0: waiters have been getting slots.
    let rollout = SlotWord {
        without: true,
        ever_held: false,
        fleet_waited: Some((Duration::ZERO, Duration::ZERO)),
        fleet_turning_over: true,
    };
    let v = judge.handle_check(at(1000), Observation::Transition, rollout);
    assert!(v.is_valid());
    assert_eq!(
        v.instance_settling_until,
        Some(from_unix_seconds(T0 + 1120))
    );
}

#[test]
fn manipulation_clears_once_the_clock_is_right_and_a_license_is_in_force() {
    let lic = [license(400 * 24 * HOUR)];
    let mut judge = Judge::new(config(), at(0));
    judge.handle_check(at(0), full(&lic), false);
    let mut back = at(60);
    back.wall = from_unix_seconds(T0 + 60 - 3_600);
    let v = judge.handle_check(back, Observation::Transition, false);
    assert_eq!(v.reason, Some(crate::GraceReason::ClockManipulation));
    assert!(names(&mut judge).contains(&"license.time_manipulation_detected"));
    assert!(
        judge
            .handle_check(at(120), Observation::Transition, false)
            .is_valid()
    );
    assert!(names(&mut judge).contains(&"license.grace_mode_exited"));
}

#[test]
fn the_state_is_written_when_the_anchor_changes_and_the_mark_once_a_minute() {
    let mut judge = Judge::new(config(), at(0));
    judge.handle_check(
        at(0),
        Observation::Full(Read::Failed(LicenseError::BadSignature)),
        false,
    );
    let first = judge.poll_persist().expect("the first state");
    assert_eq!(first.grace_anchor, Some(T0));
    assert_eq!(first.high_water, T0);
    judge.handle_persisted(first);
    judge.handle_check(at(30), Observation::Transition, false);
    assert_eq!(
        judge.poll_persist(),
        None,
        "the mark moved, a minute has not"
    );
    judge.handle_check(at(60), Observation::Transition, false);
    let later = judge.poll_persist().expect("a minute on");
    assert_eq!((later.high_water, later.budget_age), (T0 + 60, 60));
    judge.handle_persisted(later);
    // A license: the anchor changes, written at once.
    judge.handle_check(at(61), full(&[license(400 * 24 * HOUR)]), false);
    assert_eq!(judge.poll_persist().map(|s| s.grace_anchor), Some(None));
}

#[test]
fn the_judge_is_woken_at_least_once_a_minute_and_at_each_change() {
    let lic = [license(10 * 24 * HOUR)];
    let mut judge = Judge::new(
        JudgeConfig {
            state_file: false,
            ..config()
        },
        at(0),
    );
    judge.handle_check(at(0), full(&lic), false);
    assert_eq!(judge.poll_timeout(), Duration::from_secs(60));
    // Seven days before the end: the next band edge, to the second.
    let near = 10 * 24 * HOUR - 7 * 24 * HOUR - 5;
    judge.handle_check(at(near), Observation::Transition, false);
    assert_eq!(
        judge.decision_timeout(),
        Some(Duration::from_secs(near + 6))
    );
    assert_eq!(judge.poll_timeout(), Duration::from_secs(near + 6));
}
