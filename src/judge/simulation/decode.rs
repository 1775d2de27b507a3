//! Bytes as a schedule: the judge's fuzz target (`fuzz/fuzz_targets/judge.rs`) and the
//! test that replays its corpus drive the same world and the same oracles as the random
//! schedules, with a coverage-guided fuzzer choosing the steps instead of proptest.
//!
//! The first byte says the kind of case (honest or not, with a state file or not, which
//! twin, or a drifting host); each step is a byte choosing its kind and a few more for its
//! values, each mapped into the range the strategies draw from. Bytes that run out end
//! the schedule; no input is refused, so every input the fuzzer makes runs.

use super::{
    BOOT_WINDOW, DAY, Failure, HOUR, Lic, MINUTE, Step, Twin, World, run_case, run_drifting,
};

/// The most steps one input runs (as the strategies draw).
const MAX_STEPS: usize = 16;

/// A reader of the fuzzer's bytes.
struct Bytes<'a> {
    data: &'a [u8],
}

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&first, rest) = self.data.split_first()?;
        self.data = rest;
        Some(first)
    }

    fn u32(&mut self) -> Option<u32> {
        let mut bytes = [0u8; 4];
        for byte in &mut bytes {
            *byte = self.u8()?;
        }
        Some(u32::from_le_bytes(bytes))
    }

    /// A value in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> Option<i64> {
        let span = (hi - lo).unsigned_abs().saturating_add(1);
        Some(lo + (u64::from(self.u32()?) % span) as i64)
    }

    fn secs(&mut self, lo: i64, hi: i64) -> Option<u64> {
        self.range(lo, hi).map(|v| v.max(0) as u64)
    }
}

fn lic(b: &mut Bytes<'_>) -> Option<Lic> {
    Some(match b.u8()? % 15 {
        14 => Lic::Superseding,
        0 => Lic::Valid,
        1 => Lic::Renewed,
        2 => Lic::IatAhead(b.range(0, 300)?),
        3 => Lic::IatAhead(b.range(300, 5 * DAY)?),
        4 => Lic::HeldGap,
        5 => Lic::Expired,
        6 => Lic::WithRenewal,
        7 => Lic::WithGarbage,
        8 => Lic::Held,
        9 => Lic::ContractAndTrial,
        10 => Lic::OneSecondGap,
        11 => Lic::Renamed,
        12 => Lic::Garbage,
        _ => Lic::Deleted,
    })
}

fn first_source(b: &mut Bytes<'_>) -> Option<Lic> {
    Some(match b.u8()? % 8 {
        0 => Lic::ContractAndTrial,
        1 => Lic::OneSecondGap,
        2 => Lic::Renamed,
        3 => Lic::WithRenewal,
        _ => Lic::Valid,
    })
}

/// An ordinary step: faults an honest customer's service meets.
fn ordinary(b: &mut Bytes<'_>, kind: u8) -> Option<Step> {
    Some(match kind % 14 {
        12 => {
            let (x, y) = (
                b.secs(0, 2 * BOOT_WINDOW - MINUTE - 1)?,
                b.secs(1, 2 * BOOT_WINDOW - MINUTE - 1)?,
            );
            Step::LateStart {
                rtc: b.range(-365 * DAY, 365 * DAY)?,
                start_after: x.min(y),
                correct_after: x.max(y),
            }
        }
        0..=2 => Step::Run(b.secs(1, 4 * HOUR)?),
        3 => Step::Jitter(b.range(-2, 2)?),
        4 => Step::AheadFor {
            ahead: b.range(10, 2 * DAY)?,
            secs: b.secs(1, BOOT_WINDOW - 2)?,
        },
        5 => Step::Suspend(b.secs(1, 6 * HOUR)?),
        6 => Step::Reboot {
            rtc: b.range(-365 * DAY, 365 * DAY)?,
            correct_after: Some(b.secs(0, BOOT_WINDOW - MINUTE - 1)?),
        },
        7 => Step::Restart,
        8 => Step::Swap(lic(b)?),
        9 => Step::Storm(b.u8()? % 39 + 1),
        10 => Step::DiskFull(b.secs(1, 2 * HOUR)?),
        11 => Step::NoticeJunk,
        _ => Step::Swap(lic(b)?),
    })
}

/// A step of any kind: tampering too.
fn any(b: &mut Bytes<'_>, kind: u8) -> Option<Step> {
    Some(match kind % 20 {
        0..=12 => return ordinary(b, kind / 20),
        13 => Step::SetWall(b.range(-60 * DAY, 60 * DAY)?),
        14 => Step::SetWall(b.range(6 * HOUR, 30 * DAY)?),
        15 | 16 => Step::Creep {
            step_ms: b.range(-6_000, -1)?,
            every_ms: b.secs(100, 60_000)?,
            times: b.secs(1, 399)? as u32,
            sample: b.u8()? % 10 + 1,
        },
        17 => Step::Reboot {
            rtc: b.range(-365 * DAY, 365 * DAY)?,
            correct_after: None,
        },
        18 => Step::MonoJump(b.range(-DAY, DAY)?),
        19 if (kind / 20).is_multiple_of(2) => Step::AheadAcrossRestart {
            ahead: b.range(6 * HOUR, 30 * DAY)?,
            secs: b.secs(1, BOOT_WINDOW - 2)?,
        },
        _ => Step::Replay(usize::from(b.u8()? % 8)),
    })
}

/// A step of the notices' schedules: the vendor revokes and attests, honest or not.
fn with_notices(b: &mut Bytes<'_>, honest: bool) -> Option<Step> {
    let kind = b.u8()?;
    Some(match kind % 16 {
        0 => Step::Revoke,
        1 | 2 => Step::Attest {
            fast: b.range(0, 300)?,
        },
        3 => Step::WrongMark {
            ahead: b.range(HOUR, 400 * DAY)?,
            secs: b.secs(16 * MINUTE, 3 * HOUR - 1)?,
        },
        _ if honest => ordinary(b, kind)?,
        _ => any(b, kind)?,
    })
}

/// A step of a drifting host's schedule.
fn drifting(b: &mut Bytes<'_>) -> Option<Step> {
    Some(match b.u8()? % 8 {
        0..=2 => Step::Drift {
            ppm: b.range(-500, 500)?,
            secs: b.secs(1, 2 * DAY - 1)?,
        },
        3 => Step::Sync,
        4 => Step::Restart,
        5 => Step::Suspend(b.secs(1, 6 * HOUR - 1)?),
        6 => Step::Downtime {
            secs: b.secs(1, 2 * DAY - 1)?,
            ppm: b.range(-500, 500)?,
        },
        _ => Step::DiskFull(b.secs(1, 2 * HOUR - 1)?),
    })
}

/// Runs the schedule `data` decodes to through the simulation's oracles.
pub(crate) fn run_bytes(data: &[u8]) -> Result<(), Failure> {
    let mut b = Bytes { data };
    let Some(flags) = b.u8() else {
        return Ok(());
    };
    let honest = flags & 1 == 1;
    let with_state = flags & 2 == 2;
    let mut steps = Vec::new();
    match (flags >> 2) % 4 {
        // A drifting host: invariant 7, from a boot up to five days before the start.
        3 => {
            let (Some(booted_before), Some(ppm)) = (b.range(0, 5 * DAY), b.range(-500, 500)) else {
                return Ok(());
            };
            while steps.len() < MAX_STEPS {
                let Some(step) = drifting(&mut b) else { break };
                steps.push(step);
            }
            run_drifting(with_state, booted_before, ppm, &steps)
        }
        // The vendor's notices.
        2 => {
            let Some(first) = first_source(&mut b) else {
                return Ok(());
            };
            while steps.len() < MAX_STEPS {
                let Some(step) = with_notices(&mut b, honest) else {
                    break;
                };
                steps.push(step);
            }
            run_case(
                &mut World::new(honest, with_state, false, None),
                first,
                &steps,
            )
        }
        // A twin that adds a license, or reads the lines permuted and repeated.
        twin => {
            let twin = if twin == 0 {
                let (Some(license), Some(from)) = (b.u8(), b.u8()) else {
                    return Ok(());
                };
                Twin::Adds {
                    license,
                    from: usize::from(from % 16),
                }
            } else {
                let Some(seed) = b.u32() else {
                    return Ok(());
                };
                Twin::Permutes(u64::from(seed))
            };
            let Some(first) = first_source(&mut b) else {
                return Ok(());
            };
            while steps.len() < MAX_STEPS {
                let Some(kind) = b.u8() else { break };
                let step = if honest {
                    ordinary(&mut b, kind)
                } else {
                    any(&mut b, kind)
                };
                let Some(step) = step else { break };
                steps.push(step);
            }
            run_case(
                &mut World::new(honest, with_state, false, Some(twin)),
                first,
                &steps,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_bytes_decode_to_a_schedule_that_runs() {
        // No input is refused: short, empty and arbitrary inputs all run (and hold).
        for data in [
            &[][..],
            &[0],
            &[1, 7, 3],
            &[0xff; 64],
            b"iosetu judge fuzz seed: a few bytes of every kind",
        ] {
            run_bytes(data).unwrap();
        }
    }

    #[test]
    fn a_creep_decoded_from_bytes_is_caught() {
        // Tampering (flag bit 0 clear), no state file, a twin adding a license, then a
        // creep of 5.001 s every 5 s for 399 steps, sampled after each. (With the drift
        // budget granted afresh at each correction, it fails: the wall creeps 33 minutes
        // behind unreported.)
        let mut data = vec![0b0000_0000, 0, 15, 4];
        data.push(15);
        data.extend((5_999i32 - 5_000).to_le_bytes()); // step_ms -5001 ms (lo -6000)
        data.extend((5_000u32 - 100).to_le_bytes()); // every 5,000 ms (lo 100)
        data.extend(398u32.to_le_bytes()); // 399 times
        data.push(0); // sampled after every step
        data.push(0); // then two hours of running: the wall kept behind is reported
        data.extend(7_199u32.to_le_bytes());
        run_bytes(&data).unwrap();
    }
}
