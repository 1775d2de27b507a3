//! Clocks, and the trusted time the monitor judges licenses by.
//!
//! The wall clock can be set by whoever runs the service; a monotonic clock cannot. The
//! monitor samples both at every wake and keeps a high-water mark that only advances by
//! monotonic time, so that trusted time = max(wall, high-water mark):
//!
//! * the clock set back: the wall clock falls behind the high-water mark, trusted time
//!   keeps going, and the jump is reported (`license.time_manipulation_detected`);
//! * the clock set forward: trusted time follows the wall clock (a license can only look
//!   *older*), the jump is reported as drift, and the high-water mark does not absorb it,
//!   so correcting the clock afterwards recovers at once.

#[cfg(feature = "test-util")]
use std::fmt;
use std::sync::Arc;
#[cfg(feature = "test-util")]
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A jump of the wall clock against the monotonic clock larger than this, in either
/// direction, is reported.
pub const JUMP_THRESHOLD: Duration = Duration::from_secs(5);

/// A source of wall-clock and monotonic time.
///
/// The monitor reads its clock only in the checker task, never on the request path.
pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time: what the operator can set.
    fn wall(&self) -> SystemTime;
    /// Time elapsed on a monotonic clock since an arbitrary fixed origin. It must never go
    /// backwards and should keep counting while the machine is suspended.
    fn monotonic(&self) -> Duration;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn wall(&self) -> SystemTime {
        (**self).wall()
    }
    fn monotonic(&self) -> Duration {
        (**self).monotonic()
    }
}

/// The operating system's clocks, the default.
///
/// On Linux the monotonic side is `CLOCK_BOOTTIME`, which keeps counting through suspend,
/// so a laptop or VM resumed after hours reads as neither drift nor manipulation. Elsewhere
/// it is [`std::time::Instant`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn monotonic(&self) -> Duration {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        // The kernel returns non-negative values for this clock.
        Duration::new(
            ts.tv_sec.max(0) as u64,
            ts.tv_nsec.clamp(0, 999_999_999) as u32,
        )
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn monotonic(&self) -> Duration {
        use std::sync::OnceLock;
        use std::time::Instant;
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed()
    }
}

/// A clock for tests, driven by tokio's paused time.
///
/// Its monotonic side is [`tokio::time::Instant::now`], so `tokio::time::pause()` and
/// `advance()` drive it, also when it is read from a thread outside the runtime it was
/// created in. Its wall side is the `wall_at_start` given to [`TestClock::new`],
/// plus the tokio time elapsed since then, plus an offset that only
/// [`jump_wall`](TestClock::jump_wall) moves: that simulates someone setting the clock.
/// Clones share their state.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use std::time::{Duration, UNIX_EPOCH};
/// use iosetu_license::{Clock, TestClock};
///
/// let clock = TestClock::new(UNIX_EPOCH + Duration::from_secs(1_000_000));
/// tokio::time::advance(Duration::from_secs(10)).await;
/// clock.jump_wall(-3600);
/// assert_eq!(clock.wall(), UNIX_EPOCH + Duration::from_secs(1_000_000 + 10 - 3600));
/// assert_eq!(clock.monotonic(), Duration::from_secs(10));
/// # }
/// ```
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
#[derive(Clone)]
pub struct TestClock {
    inner: Arc<TestClockInner>,
}

#[cfg(feature = "test-util")]
struct TestClockInner {
    wall_at_start: SystemTime,
    origin: tokio::time::Instant,
    offset_secs: Mutex<i64>,
    /// The runtime whose (paused) clock drives this one, for reads from other threads
    /// (a metrics exporter's, say), where `tokio::time::Instant::now()` would otherwise
    /// fall back to the real clock.
    runtime: Option<tokio::runtime::Handle>,
}

#[cfg(feature = "test-util")]
impl TestClock {
    /// A clock whose wall side reads `wall_at_start` now.
    pub fn new(wall_at_start: SystemTime) -> Self {
        Self {
            inner: Arc::new(TestClockInner {
                wall_at_start,
                origin: tokio::time::Instant::now(),
                offset_secs: Mutex::new(0),
                runtime: tokio::runtime::Handle::try_current().ok(),
            }),
        }
    }

    /// Moves the wall clock alone by `seconds` (negative: backwards), as `date -s` would.
    pub fn jump_wall(&self, seconds: i64) {
        let mut offset = self
            .inner
            .offset_secs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *offset = offset.saturating_add(seconds);
    }
}

#[cfg(feature = "test-util")]
impl Clock for TestClock {
    fn wall(&self) -> SystemTime {
        let offset = *self
            .inner
            .offset_secs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let base = self.inner.wall_at_start + self.monotonic();
        if offset >= 0 {
            base + Duration::from_secs(offset as u64)
        } else {
            base.checked_sub(Duration::from_secs(offset.unsigned_abs()))
                .unwrap_or(UNIX_EPOCH)
        }
    }

    fn monotonic(&self) -> Duration {
        let now = match (&self.inner.runtime, tokio::runtime::Handle::try_current()) {
            (Some(runtime), Err(_)) => {
                let _in_runtime = runtime.enter();
                tokio::time::Instant::now()
            }
            _ => tokio::time::Instant::now(),
        };
        now.saturating_duration_since(self.inner.origin)
    }
}

#[cfg(feature = "test-util")]
impl fmt::Debug for TestClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestClock")
            .field("wall", &humantime::format_rfc3339(self.wall()))
            .finish()
    }
}

/// Seconds since the Unix epoch, floored; negative before 1970 (a clock can be set there).
pub(crate) fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if d.subsec_nanos() > 0 {
                -secs - 1
            } else {
                -secs
            }
        }
    }
}

/// Nanoseconds since the Unix epoch; negative before 1970.
fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// The instant `secs` seconds after the epoch (before it when negative).
pub(crate) fn from_unix_seconds(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// What one sample of the clocks found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ClockAnomaly {
    /// The wall clock fell more than the threshold behind trusted time.
    BackwardJump {
        /// How far the wall clock moved against monotonic time, in seconds (negative).
        seconds: i64,
    },
    /// The wall clock ran ahead of monotonic time by more than the threshold.
    ForwardDrift {
        /// By how much, in seconds.
        seconds: f64,
    },
}

/// Trusted time: a high-water mark that advances only by monotonic time.
#[derive(Debug, Clone)]
pub(crate) struct TrustedTime {
    last_wall: i128,
    last_mono: Duration,
    high_water: i128,
    wall: i128,
}

const THRESHOLD_NANOS: i128 = JUMP_THRESHOLD.as_nanos() as i128;
const NANOS: i128 = 1_000_000_000;

impl TrustedTime {
    /// Starts tracking at the first sample.
    pub(crate) fn new(wall: SystemTime, mono: Duration) -> Self {
        let wall = unix_nanos(wall);
        Self {
            last_wall: wall,
            last_mono: mono,
            high_water: wall,
            wall,
        }
    }

    /// Takes a sample of both clocks and reports a jump, if any.
    pub(crate) fn sample(&mut self, wall: SystemTime, mono: Duration) -> Option<ClockAnomaly> {
        let wall = unix_nanos(wall);
        // A monotonic clock that went backwards (a restored checkpoint, C6) gives no
        // information: re-baseline without judging.
        let Some(mono_elapsed) = mono.checked_sub(self.last_mono) else {
            self.last_wall = wall;
            self.last_mono = mono;
            self.wall = wall;
            return None;
        };
        let mono_elapsed = mono_elapsed.as_nanos() as i128;
        let skew = (wall - self.last_wall) - mono_elapsed;
        let projected = self.high_water + mono_elapsed;
        self.high_water = projected;
        // Small forward differences (NTP slew, timer jitter) are absorbed so the mark stays
        // close to real time; large ones are not, so a clock set far ahead and then
        // corrected does not leave trusted time in the future.
        if wall > projected && wall - projected <= THRESHOLD_NANOS {
            self.high_water = wall;
        }
        self.last_wall = wall;
        self.last_mono = mono;
        self.wall = wall;
        if skew < -THRESHOLD_NANOS && wall < self.high_water - THRESHOLD_NANOS {
            Some(ClockAnomaly::BackwardJump {
                seconds: round_secs(skew),
            })
        } else if skew > THRESHOLD_NANOS && wall > projected + THRESHOLD_NANOS {
            // (A forward step that lands back on trusted time is a correction, not drift.)
            Some(ClockAnomaly::ForwardDrift {
                seconds: (skew as f64 / NANOS as f64 * 10.0).round() / 10.0,
            })
        } else {
            None
        }
    }

    /// Raises the high-water mark to a signed `iat` (or a persisted mark). Reports a
    /// backward jump when the wall clock is more than `tolerance` before it.
    pub(crate) fn raise_floor(
        &mut self,
        floor_secs: i64,
        tolerance: Duration,
    ) -> Option<ClockAnomaly> {
        let floor = floor_secs as i128 * NANOS;
        if floor > self.high_water {
            self.high_water = floor;
        }
        let behind = floor - self.wall;
        (behind > tolerance.as_nanos() as i128).then(|| ClockAnomaly::BackwardJump {
            seconds: -round_secs(behind),
        })
    }

    /// The high-water mark in whole seconds (floored), for persisting.
    pub(crate) fn high_water_secs(&self) -> i64 {
        i64::try_from(self.high_water.div_euclid(NANOS)).unwrap_or(i64::MAX)
    }

    /// The monotonic reading of the last sample.
    pub(crate) fn last_mono(&self) -> Duration {
        self.last_mono
    }

    /// Trusted now, in nanoseconds since the epoch.
    pub(crate) fn now_nanos(&self) -> i128 {
        self.wall.max(self.high_water)
    }

    /// Trusted now, in whole seconds since the epoch (floored).
    pub(crate) fn now_secs(&self) -> i64 {
        i64::try_from(self.now_nanos().div_euclid(NANOS)).unwrap_or(i64::MAX)
    }

    /// Whether the wall clock agrees with trusted time (within the threshold).
    pub(crate) fn wall_is_consistent(&self) -> bool {
        self.high_water - self.wall <= THRESHOLD_NANOS
    }

    /// How long until trusted time reaches `secs`.
    pub(crate) fn until(&self, secs: i64) -> Duration {
        let delta = secs as i128 * NANOS - self.now_nanos();
        if delta <= 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(u64::try_from(delta).unwrap_or(u64::MAX))
        }
    }
}

fn round_secs(nanos: i128) -> i64 {
    let rounded = (nanos + nanos.signum() * NANOS / 2) / NANOS;
    i64::try_from(rounded).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> SystemTime {
        from_unix_seconds(secs)
    }
    fn mono(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn unix_seconds_floors_and_handles_pre_epoch() {
        assert_eq!(unix_seconds(at(5) + Duration::from_millis(900)), 5);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_millis(1)), -1);
        assert_eq!(unix_seconds(at(-30)), -30);
        assert_eq!(from_unix_seconds(-30), UNIX_EPOCH - Duration::from_secs(30));
    }

    #[test]
    fn steady_clocks_report_nothing() {
        let mut t = TrustedTime::new(at(1000), mono(0));
        assert_eq!(t.sample(at(1100), mono(100)), None);
        assert_eq!(t.now_secs(), 1100);
        // Small NTP corrections either way are tolerated (catalog C1).
        assert_eq!(t.sample(at(1198), mono(200)), None);
        assert_eq!(t.now_secs(), 1200);
        assert_eq!(t.sample(at(1304), mono(300)), None);
        assert_eq!(t.now_secs(), 1304);
    }

    #[test]
    fn backward_jump_is_detected_and_does_not_move_trusted_time() {
        let mut t = TrustedTime::new(at(10_000), mono(0));
        let anomaly = t.sample(at(10_060 - 7200), mono(60));
        assert_eq!(anomaly, Some(ClockAnomaly::BackwardJump { seconds: -7200 }));
        assert_eq!(t.now_secs(), 10_060);
        assert!(!t.wall_is_consistent());
        // Later samples: trusted time keeps advancing with the monotonic clock.
        assert_eq!(t.sample(at(10_120 - 7200), mono(120)), None);
        assert_eq!(t.now_secs(), 10_120);
        // The clock is corrected: a step back to the truth is neither drift nor a jump.
        assert_eq!(t.sample(at(10_180), mono(180)), None);
        assert!(t.wall_is_consistent());
        assert_eq!(t.now_secs(), 10_180);
    }

    #[test]
    fn forward_jump_is_drift_and_recovers_after_correction() {
        let mut t = TrustedTime::new(at(10_000), mono(0));
        let year = 365 * 86_400;
        let anomaly = t.sample(at(10_010 + year), mono(10));
        assert_eq!(
            anomaly,
            Some(ClockAnomaly::ForwardDrift {
                seconds: year as f64
            })
        );
        assert_eq!(t.now_secs(), 10_010 + year);
        // Corrected back to the truth: not manipulation (catalog C4), and trusted time is
        // real time again.
        assert_eq!(t.sample(at(10_020), mono(20)), None);
        assert_eq!(t.now_secs(), 10_020);
    }

    #[test]
    fn drift_of_ten_seconds_is_reported_with_its_size() {
        let mut t = TrustedTime::new(at(0), mono(0));
        assert_eq!(
            t.sample(at(70), mono(60)),
            Some(ClockAnomaly::ForwardDrift { seconds: 10.0 })
        );
    }

    #[test]
    fn monotonic_going_backwards_rebaselines() {
        let mut t = TrustedTime::new(at(1000), mono(500));
        assert_eq!(t.sample(at(1010), mono(3)), None);
        assert_eq!(t.sample(at(1020), mono(13)), None);
        assert_eq!(t.now_secs(), 1020);
    }

    #[test]
    fn iat_floor_raises_trusted_time_and_flags_far_behind_clocks() {
        let mut t = TrustedTime::new(at(1000), mono(0));
        assert_eq!(t.raise_floor(1200, Duration::from_secs(300)), None);
        assert_eq!(t.now_secs(), 1200);
        assert_eq!(
            t.raise_floor(5000, Duration::from_secs(300)),
            Some(ClockAnomaly::BackwardJump { seconds: -4000 })
        );
        assert_eq!(t.now_secs(), 5000);
    }

    #[test]
    fn pre_epoch_clock_does_not_panic() {
        let mut t = TrustedTime::new(UNIX_EPOCH - Duration::from_secs(86_400), mono(0));
        assert!(t.now_secs() < 0);
        t.sample(UNIX_EPOCH - Duration::from_secs(86_000), mono(400));
        assert_eq!(t.until(10), Duration::from_secs(86_010));
    }
}
