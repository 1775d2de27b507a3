//! Trusted time's rules, as plain method calls.

use super::*;
use crate::clock::from_unix_seconds;
use std::time::{SystemTime, UNIX_EPOCH};

fn at(secs: i64) -> SystemTime {
    from_unix_seconds(secs)
}
fn read(wall: i64, mono: u64) -> Reading {
    Reading {
        wall: at(wall),
        mono: Duration::from_secs(mono),
        provisional: false,
        boot_age: None,
    }
}
fn early(wall: i64, mono: u64) -> Reading {
    Reading {
        provisional: true,
        ..read(wall, mono)
    }
}

#[test]
fn steady_clocks_report_nothing() {
    let mut t = TrustedTime::new(read(1000, 0));
    assert_eq!(t.sample(read(1100, 100)), None);
    assert_eq!(t.now_secs(), 1100);
    // Small NTP corrections either way are tolerated (catalog C1).
    assert_eq!(t.sample(read(1198, 200)), None);
    assert_eq!(t.now_secs(), 1200);
    assert_eq!(t.sample(read(1304, 300)), None);
    assert_eq!(t.now_secs(), 1304);
}

#[test]
fn backward_jump_is_detected_and_does_not_move_trusted_time() {
    let mut t = TrustedTime::new(read(10_000, 0));
    let anomaly = t.sample(read(10_060 - 7200, 60));
    assert_eq!(anomaly, Some(ClockAnomaly::BackwardJump { seconds: -7200 }));
    assert_eq!(t.now_secs(), 10_060);
    assert!(!t.wall_is_consistent());
    // Later samples: trusted time keeps advancing with the monotonic clock, and the
    // same manipulation is not reported again.
    assert_eq!(t.sample(read(10_120 - 7200, 120)), None);
    assert_eq!(t.now_secs(), 10_120);
    // A further step back is.
    assert_eq!(
        t.sample(read(10_180 - 9000, 180)),
        Some(ClockAnomaly::BackwardJump { seconds: -9000 })
    );
    // The clock is corrected: a step back to the truth is neither drift nor a jump.
    assert_eq!(t.sample(read(10_240, 240)), None);
    assert!(t.wall_is_consistent());
    assert_eq!(t.now_secs(), 10_240);
}

#[test]
fn a_creeping_rollback_is_reported_once_it_passes_the_threshold() {
    // Finding 5: 4 s back every 2 s never makes one step larger than 5 s.
    let mut t = TrustedTime::new(read(10_000, 0));
    let mut found = Vec::new();
    for i in 1..=1000u64 {
        let wall = 10_000 + 2 * i as i64 - 4 * i as i64;
        if let Some(a) = t.sample(read(wall, 2 * i)) {
            found.push((i, a));
        }
    }
    assert_eq!(
        found,
        vec![(2, ClockAnomaly::BackwardJump { seconds: -8 })],
        "reported once, when 8 s behind"
    );
    assert_eq!(t.now_secs(), 12_000, "trusted time never went back");
}

#[test]
fn forward_jump_is_drift_and_recovers_after_correction() {
    let mut t = TrustedTime::new(read(10_000, 0));
    let year = 365 * 86_400;
    let anomaly = t.sample(read(10_010 + year, 10));
    assert_eq!(
        anomaly,
        Some(ClockAnomaly::ForwardDrift {
            seconds: year as f64
        })
    );
    // Unconfirmed: judged at the mark, not at the wall a year ahead.
    assert_eq!(t.now_secs(), 10_010);
    // Corrected back to the truth: not manipulation (catalog C4), and trusted time is
    // real time.
    assert_eq!(t.sample(read(10_020, 20)), None);
    assert_eq!(t.now_secs(), 10_020);
    assert_eq!(t.persistable_mark(), Some(10_020));
}

#[test]
fn drift_of_ten_seconds_is_reported_with_its_size() {
    let mut t = TrustedTime::new(read(0, 0));
    assert_eq!(
        t.sample(read(70, 60)),
        Some(ClockAnomaly::ForwardDrift { seconds: 10.0 })
    );
}

#[test]
fn monotonic_going_backwards_rebaselines() {
    let mut t = TrustedTime::new(read(1000, 500));
    assert_eq!(t.sample(read(1003, 3)), None);
    assert_eq!(t.sample(read(1013, 13)), None);
    assert_eq!(t.now_secs(), 1013);
}

#[test]
fn a_wall_far_ahead_after_a_monotonic_step_back_is_a_forward_jump() {
    let mut t = TrustedTime::new(read(1_000_000, 10_000));
    // A checkpoint restored (monotonic back), the wall a day ahead of our mark: real time
    // may have gone on that far, or the wall was set ahead; unconfirmed for 15 minutes.
    assert_eq!(t.sample(read(1_086_400, 5_000)), None);
    assert_eq!(t.now_secs(), 1_000_000);
    assert_eq!(t.sample(read(1_086_400 + 600, 5_600)), None);
    assert_eq!(t.now_secs(), 1_000_600);
    // Held for 15 minutes: believed.
    assert_eq!(t.sample(read(1_086_400 + 900, 5_900)), None);
    assert_eq!(t.now_secs(), 1_087_300);
    // A wall a little ahead is taken at once.
    let mut t = TrustedTime::new(read(1_000_000, 10_000));
    assert_eq!(t.sample(read(1_000_003, 5_000)), None);
    assert_eq!(t.now_secs(), 1_000_003);
}

#[test]
fn a_wall_creeping_back_after_a_monotonic_step_back_is_reported_again() {
    // No boot age: the budget is 5 s + 500 ppm of this run's 10,000 s = 10 s.
    let mut t = TrustedTime::new(read(1_000_000, 0));
    assert_eq!(t.sample(read(1_010_000, 10_000)), None);
    // Creeps back 6 s: a correction within the budget (6 of it spent)...
    assert_eq!(
        t.sample(read(1_010_054, 10_060)),
        Some(ClockAnomaly::Corrected { seconds: -6.0 })
    );
    // ... and 6 s more: more than is left, manipulation.
    assert!(matches!(
        t.sample(read(1_010_114 - 6, 10_120)),
        Some(ClockAnomaly::BackwardJump { .. })
    ));
    // A restored checkpoint steps the monotonic clock back; the wall comes within the
    // threshold of our evidence again (the judge ends manipulation grace on that).
    assert_eq!(t.sample(read(1_010_114 - 3, 10_100)), None);
    assert!(t.wall_is_consistent());
    // Creeping back 3 s more from there (too little to report as a further step) is
    // judged afresh: 6 s behind, with 4 s of budget left.
    assert!(matches!(
        t.sample(read(1_010_174 - 6, 10_160)),
        Some(ClockAnomaly::BackwardJump { .. })
    ));
}

#[test]
fn suspend_moves_both_clocks_and_is_nothing() {
    // Catalog C5: BOOTTIME counts through the suspend, so wall and mono agree.
    let mut t = TrustedTime::new(read(1000, 0));
    assert_eq!(t.sample(read(1000 + 8 * 3600, 8 * 3600)), None);
    assert_eq!(t.now_secs(), 1000 + 8 * 3600);
}

#[test]
fn a_clock_ahead_at_boot_corrected_by_ntp_is_a_correction() {
    // Finding 3: started a year ahead while provisional, then corrected.
    let year = 365 * 86_400;
    let mut t = TrustedTime::new(early(10_000 + year, 30));
    assert_eq!(
        t.persistable_mark(),
        None,
        "provisional marks are not persisted"
    );
    assert_eq!(t.sample(early(10_060 + year, 90)), None);
    assert_eq!(
        t.sample(early(10_120, 150)),
        Some(ClockAnomaly::Corrected {
            seconds: -(year as f64)
        })
    );
    assert_eq!(t.now_secs(), 10_120);
    assert!(t.wall_is_consistent());
    // The window closes: the first firm reading is confirmed by one 15 min later.
    assert_eq!(t.sample(read(11_000, 1030)), None);
    assert_eq!(t.persistable_mark(), None);
    assert_eq!(t.sample(read(12_000, 2030)), None);
    assert_eq!(t.persistable_mark(), Some(12_000));
    // An RTC kept in local time (5 h 30 min ahead), corrected once not provisional:
    // still a correction, as no firm reading ever saw the wrong time.
    let mut t = TrustedTime::new(early(10_000 + 19_800, 10));
    assert!(matches!(
        t.sample(read(10_100, 110)),
        Some(ClockAnomaly::Corrected { .. })
    ));
    assert_eq!(t.sample(read(11_100, 1110)), None);
    assert_eq!(t.persistable_mark(), Some(11_100));
}

#[test]
fn a_provisional_step_back_below_firm_evidence_is_held_then_judged() {
    let mut t = TrustedTime::new(early(10_000, 10));
    assert_eq!(
        t.restore_mark(10_000, Duration::ZERO, Duration::ZERO, None),
        None
    );
    // Set back 30 days in the boot window: trusted time holds the stored mark.
    assert_eq!(t.sample(early(10_060 - 30 * 86_400, 70)), None);
    assert_eq!(t.now_secs(), 10_060);
    // The window closes with the wall still behind: manipulation.
    assert_eq!(
        t.sample(read(11_000 - 30 * 86_400, 1010)),
        Some(ClockAnomaly::BackwardJump {
            seconds: -30 * 86_400
        })
    );
    assert_eq!(t.now_secs(), 11_000);
}

#[test]
fn a_first_reading_still_ahead_is_unconfirmed_for_a_while() {
    // The boot window closes with the clock still 10 s ahead; NTP fixes it minutes
    // later. With a stored mark, that first firm reading is not yet hard evidence.
    let mut t = TrustedTime::new(early(10_000, 10));
    assert_eq!(
        t.restore_mark(10_000, Duration::ZERO, Duration::ZERO, None),
        None
    );
    assert_eq!(t.sample(read(10_910, 900)), None);
    assert_eq!(
        t.persistable_mark(),
        Some(10_890),
        "the stored mark, not the wall"
    );
    assert_eq!(
        t.sample(read(11_000, 1000)),
        Some(ClockAnomaly::Corrected { seconds: -10.0 })
    );
    assert!(t.wall_is_consistent());
    // Confirmed after 15 minutes: from then on, a step back is manipulation.
    assert_eq!(t.sample(read(12_000, 2000)), None);
    assert_eq!(t.persistable_mark(), Some(12_000));
    assert_eq!(
        t.sample(read(12_050, 2060)),
        Some(ClockAnomaly::BackwardJump { seconds: -10 })
    );
    // But never below the stored mark, confirmed or not.
    let mut t = TrustedTime::new(read(9_000, 0));
    assert!(
        t.restore_mark(10_000, Duration::ZERO, Duration::ZERO, None)
            .is_some()
    );
    assert_eq!(t.now_secs(), 10_000);
}

#[test]
fn a_stored_mark_ahead_of_the_wall_at_start_is_manipulation() {
    let mut t = TrustedTime::new(read(5_000, 0));
    assert_eq!(
        t.restore_mark(9_000, Duration::ZERO, Duration::ZERO, None),
        Some(ClockAnomaly::BackwardJump { seconds: -4000 })
    );
    assert_eq!(t.now_secs(), 9_000);
    let mut ok = TrustedTime::new(read(9_003, 0));
    assert_eq!(
        ok.restore_mark(9_000, Duration::ZERO, Duration::ZERO, None),
        None
    );
}

#[test]
fn the_build_floor_is_trusted_now_but_never_the_mark() {
    let mut t = TrustedTime::new(read(1_000, 0));
    t.set_build_floor(at(5_000));
    assert_eq!(t.now_secs(), 5_000);
    assert_eq!(t.behind_build_floor(), Some(-4000.0));
    assert_eq!(t.persistable_mark(), Some(1_000));
    assert_eq!(t.sample(read(1_060, 60)), None, "not manipulation");
    assert!(t.wall_is_consistent());
    assert_eq!(t.firm_now_secs(), Some(5_000));
}

#[test]
fn pre_epoch_clock_does_not_panic() {
    let mut t = TrustedTime::new(Reading {
        wall: UNIX_EPOCH - Duration::from_secs(86_400),
        mono: Duration::ZERO,
        provisional: false,
        boot_age: None,
    });
    assert!(t.now_secs() < 0);
    t.sample(read(-86_000, 400));
    assert_eq!(t.until(10), Duration::from_secs(86_010));
    // A stored mark at the limit of i64 is no reason to panic either.
    let _ = t.restore_mark(i64::MAX, Duration::MAX, Duration::MAX, None);
    let _ = t.restore_mark(i64::MIN, Duration::ZERO, Duration::ZERO, None);
    let _ = t.until(i64::MIN);
    let _ = t.until(i64::MAX);
}
