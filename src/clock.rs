//! Clocks, and the trusted time the monitor judges licenses by.
//!
//! The wall clock can be set by whoever runs the service; a monotonic clock cannot. The
//! monitor samples both at every wake (at least once a minute) and judges licenses by
//! *trusted now* = max(wall, mark, vendor floors):
//!
//! * **The mark** is our own evidence: a high-water mark of this run that advances only by
//!   monotonic time (absorbing small forward drift), and the mark stored in the state file
//!   by an earlier run. A wall clock more than 5 s behind it, by one step or by many small
//!   ones, was set back: `license.time_manipulation_detected`, and trusted time keeps going.
//! * **Vendor floors** are other machines' clocks: the build time
//!   ([`built_at`](crate::LicenseMonitorBuilder::built_at)) and a license's signed `iat`.
//!   Real time is at least that, so a license is judged there; but the vendor's clock may be
//!   the wrong one, so a wall behind a floor is reported as drift, never as manipulation,
//!   and a floor never raises the mark.
//! * **Provisional readings** (the first 15 minutes after the host booted, when NTP may not
//!   have corrected the clock yet, see [`Clock::provisional`]) do not count as evidence: a
//!   backward step that corrects one re-bases the mark (`license.time_drift_detected`,
//!   `type: clock_corrected`), they are never persisted, and they alone never cut a
//!   service off.
//! * The clock set forward: trusted time follows the wall clock (a license can only look
//!   *older*), the jump is reported as drift, and the mark does not absorb it, so
//!   correcting the clock afterwards recovers at once.

use std::borrow::Cow;
#[cfg(feature = "test-util")]
use std::fmt;
use std::sync::Arc;
#[cfg(feature = "test-util")]
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A jump of the wall clock against the monotonic clock larger than this, in either
/// direction, is reported.
pub const JUMP_THRESHOLD: Duration = Duration::from_secs(5);

/// How long after the host booted clock readings count as provisional: long enough for
/// NTP (or chrony, or systemd-timesyncd) to step a clock that booted wrong.
pub const BOOT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// A source of wall-clock and monotonic time.
///
/// The monitor reads its clock only in the checker task, never on the request path.
pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time: what the operator can set.
    fn wall(&self) -> SystemTime;
    /// Time elapsed on a monotonic clock since an arbitrary fixed origin. It must never go
    /// backwards and should keep counting while the machine is suspended.
    fn monotonic(&self) -> Duration;
    /// Whether the wall clock may not have been synchronized yet (the host booted moments
    /// ago). Provisional readings are not trusted as evidence: a backward correction of
    /// one is not manipulation, they are never persisted, and they alone never cut a
    /// service off. Defaults to `false`.
    fn provisional(&self) -> bool {
        false
    }
    /// How long ago the host booted, where the clock can tell (`CLOCK_BOOTTIME` on Linux).
    /// The honest drift budget grows with it (500 ppm of the boot's age, at most 30 days):
    /// a host that ran unsynchronized for days before the service started may need a
    /// correction that large. `None` (the default): the budget grows with the service's
    /// own running time only.
    fn boot_age(&self) -> Option<Duration> {
        None
    }
    /// An identity of the host's current boot (`/proc/sys/kernel/random/boot_id` on
    /// Linux): restarts on the same boot share one drift budget through the state file,
    /// a new boot starts a new one. `None` (the default): every restart is taken as the
    /// same boot, the safe side.
    fn boot_id(&self) -> Option<String> {
        None
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn wall(&self) -> SystemTime {
        (**self).wall()
    }
    fn monotonic(&self) -> Duration {
        (**self).monotonic()
    }
    fn provisional(&self) -> bool {
        (**self).provisional()
    }
    fn boot_age(&self) -> Option<Duration> {
        (**self).boot_age()
    }
    fn boot_id(&self) -> Option<String> {
        (**self).boot_id()
    }
}

/// The operating system's clocks, the default.
///
/// On Linux the monotonic side is `CLOCK_BOOTTIME`, which keeps counting through suspend,
/// so a laptop or VM resumed after hours reads as neither drift nor manipulation, and
/// readings are [provisional](Clock::provisional) while `CLOCK_BOOTTIME` is below 15
/// minutes. Elsewhere the monotonic side is [`std::time::Instant`] and no reading is
/// provisional.
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

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn provisional(&self) -> bool {
        // CLOCK_BOOTTIME counts from boot, so it is the time since the host booted.
        self.monotonic() < BOOT_WINDOW
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn boot_age(&self) -> Option<Duration> {
        Some(self.monotonic())
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn boot_id(&self) -> Option<String> {
        use std::sync::OnceLock;
        // Read once per process: it cannot change while the process runs, and the clock
        // is read on every wake.
        static BOOT_ID: OnceLock<Option<String>> = OnceLock::new();
        BOOT_ID
            .get_or_init(|| {
                let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
                let id = id.trim();
                (!id.is_empty() && id.len() <= 64).then(|| id.to_owned())
            })
            .clone()
    }
}

/// A clock for tests, driven by tokio's paused time.
///
/// Its monotonic side is [`tokio::time::Instant::now`], so `tokio::time::pause()` and
/// `advance()` drive it, also when it is read from a thread outside the runtime it was
/// created in. Its wall side is the `wall_at_start` given to [`TestClock::new`],
/// plus the tokio time elapsed since then, plus an offset that only
/// [`jump_wall`](TestClock::jump_wall) moves: that simulates someone setting the clock.
/// [`suspend`](TestClock::suspend) moves both sides without tokio time, as a machine
/// resumed from sleep sees it, and [`set_provisional`](TestClock::set_provisional)
/// simulates a host that booted moments ago. Clones share their state.
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
/// clock.suspend(Duration::from_secs(100));
/// assert_eq!(clock.monotonic(), Duration::from_secs(110));
/// # }
/// ```
///
/// Needs the crate feature **`test-util`** (as a dev-dependency:
/// `iosetu-license = { version = "…", features = ["test-util"] }`).
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
#[derive(Clone)]
pub struct TestClock {
    inner: Arc<TestClockInner>,
}

#[cfg(feature = "test-util")]
#[derive(Default)]
struct Offsets {
    /// Nanoseconds the wall clock alone was moved.
    wall_nanos: i128,
    /// Time spent suspended: both clocks moved, tokio's did not.
    suspended: Duration,
    provisional: bool,
    /// The host's boot age when the clock was made (its monotonic origin).
    booted_before: Duration,
    boot_id: Option<String>,
}

#[cfg(feature = "test-util")]
struct TestClockInner {
    wall_at_start: SystemTime,
    origin: tokio::time::Instant,
    offsets: Mutex<Offsets>,
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
                // The simulated host booted half an hour before: past its boot window and
                // the 15 minutes that confirm the first reading after it.
                offsets: Mutex::new(Offsets {
                    booted_before: BOOT_WINDOW.saturating_mul(2),
                    ..Offsets::default()
                }),
                runtime: tokio::runtime::Handle::try_current().ok(),
            }),
        }
    }

    fn offsets(&self) -> std::sync::MutexGuard<'_, Offsets> {
        // Plain numbers: a panic elsewhere cannot leave them inconsistent.
        self.inner
            .offsets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves the wall clock alone by `seconds` (negative: backwards), as `date -s` would.
    pub fn jump_wall(&self, seconds: i64) {
        let mut offsets = self.offsets();
        offsets.wall_nanos = offsets
            .wall_nanos
            .saturating_add(i128::from(seconds) * 1_000_000_000);
    }

    /// Moves the wall clock alone by a fraction of a second or more (negative:
    /// backwards), as NTP's step or a tamperer creeping it back a little at a time would.
    /// Non-finite values move nothing.
    pub fn jump_wall_by(&self, seconds: f64) {
        if !seconds.is_finite() {
            return;
        }
        // (Saturating: `as` clamps a float out of range to the integer's bounds.)
        let nanos = (seconds * 1e9).round() as i128;
        let mut offsets = self.offsets();
        offsets.wall_nanos = offsets.wall_nanos.saturating_add(nanos);
    }

    /// Simulates a suspend of `duration`: the wall and monotonic sides both move ahead,
    /// tokio's timers do not (as `CLOCK_MONOTONIC` stops while `CLOCK_BOOTTIME` counts).
    pub fn suspend(&self, duration: Duration) {
        let mut offsets = self.offsets();
        offsets.suspended = offsets.suspended.saturating_add(duration);
    }

    /// Marks readings as [provisional](Clock::provisional) (the host booted moments ago)
    /// or not.
    pub fn set_provisional(&self, provisional: bool) {
        self.offsets().provisional = provisional;
    }

    /// Sets how long ago the simulated host booted, as of now (by default, half an hour
    /// before the clock was made). The honest drift budget grows with it, and a service
    /// started within half an hour of boot takes its first reading as unconfirmed.
    pub fn set_boot_age(&self, age: Duration) {
        let elapsed = self.monotonic();
        self.offsets().booted_before = age.saturating_sub(elapsed);
    }

    /// Sets the simulated host's boot identity (`None` by default: restarts are taken as
    /// the same boot). A new one simulates a reboot for the state file's drift budget.
    pub fn set_boot_id(&self, id: impl Into<String>) {
        self.offsets().boot_id = Some(id.into());
    }
}

#[cfg(feature = "test-util")]
impl Clock for TestClock {
    fn wall(&self) -> SystemTime {
        let offset = self.offsets().wall_nanos;
        let base = add_saturating(self.inner.wall_at_start, self.monotonic());
        let by = Duration::from_nanos(u64::try_from(offset.unsigned_abs()).unwrap_or(u64::MAX));
        if offset >= 0 {
            add_saturating(base, by)
        } else {
            base.checked_sub(by).unwrap_or(base)
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
        let suspended = self.offsets().suspended;
        now.saturating_duration_since(self.inner.origin)
            .saturating_add(suspended)
    }

    fn provisional(&self) -> bool {
        self.offsets().provisional
    }

    fn boot_age(&self) -> Option<Duration> {
        let before = self.offsets().booted_before;
        Some(before.saturating_add(self.monotonic()))
    }

    fn boot_id(&self) -> Option<String> {
        self.offsets().boot_id.clone()
    }
}

#[cfg(feature = "test-util")]
impl fmt::Debug for TestClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestClock")
            .field("wall", &rfc3339(unix_seconds(self.wall())))
            .field("provisional", &self.provisional())
            .finish()
    }
}

#[cfg(feature = "test-util")]
fn add_saturating(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d).unwrap_or(t)
}

/// Seconds since the Unix epoch, floored; negative before 1970 (a clock can be set there).
pub(crate) fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if d.subsec_nanos() > 0 {
                secs.saturating_neg().saturating_sub(1)
            } else {
                secs.saturating_neg()
            }
        }
    }
}

/// Nanoseconds since the Unix epoch; negative before 1970.
pub(crate) fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// The instant `secs` seconds after the epoch (before it when negative), saturating where
/// the platform's `SystemTime` cannot represent it.
pub(crate) fn from_unix_seconds(secs: i64) -> SystemTime {
    let far = Duration::from_secs(secs.unsigned_abs());
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(far)
    } else {
        UNIX_EPOCH.checked_sub(far)
    };
    // Every platform we build for holds ±2^63 s; the fallback only avoids a panic.
    t.unwrap_or(UNIX_EPOCH)
}

/// The earliest second [`rfc3339`] spells out (0000-01-01T00:00:00Z).
pub(crate) const MIN_RFC3339: i64 = -62_167_219_200;
/// The last second [`rfc3339`] spells out (9999-12-31T23:59:59Z).
pub(crate) const MAX_RFC3339: i64 = 253_402_300_799;

/// RFC 3339 (UTC, whole seconds) of `secs` since the epoch, clamped to the years 0000 to
/// 9999 that the format can spell: never a panic, whatever the clock or a file says.
pub(crate) fn rfc3339(secs: i64) -> String {
    let secs = secs.clamp(MIN_RFC3339, MAX_RFC3339);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since the epoch (H. Hinnant's algorithm, proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `text` with every control character (newlines included) escaped, so operator-supplied
/// text (a path, an environment variable's value) cannot forge log lines.
pub(crate) fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One sample of a [`Clock`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Reading {
    pub(crate) wall: SystemTime,
    pub(crate) mono: Duration,
    pub(crate) provisional: bool,
    /// The host's boot age, where the clock tells it.
    pub(crate) boot_age: Option<Duration>,
}

impl Reading {
    pub(crate) fn of(clock: &dyn Clock) -> Self {
        // Provisional first: a reading taken as the boot window closes counts as
        // provisional, never the other way round.
        let provisional = clock.provisional();
        Self {
            wall: clock.wall(),
            mono: clock.monotonic(),
            provisional,
            boot_age: clock.boot_age(),
        }
    }
}

/// Adds without the panic `Instant + Duration` has on overflow (a grace period of
/// `Duration::MAX`).
pub(crate) fn later(at: tokio::time::Instant, by: Duration) -> tokio::time::Instant {
    at.checked_add(by)
        .unwrap_or_else(|| at + Duration::from_secs(100 * 365 * 86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> SystemTime {
        from_unix_seconds(secs)
    }
    #[test]
    fn unix_seconds_floors_and_handles_pre_epoch() {
        assert_eq!(unix_seconds(at(5) + Duration::from_millis(900)), 5);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_millis(1)), -1);
        assert_eq!(unix_seconds(at(-30)), -30);
        assert_eq!(from_unix_seconds(-30), UNIX_EPOCH - Duration::from_secs(30));
        // Any i64 converts without a panic.
        for secs in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX] {
            let _ = unix_seconds(from_unix_seconds(secs));
        }
    }

    #[test]
    fn rfc3339_spells_every_year_and_clamps_the_rest() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_773_151_200), "2026-03-10T14:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        // A clock set to 1965 (finding 1 of the trusted-time review).
        assert_eq!(rfc3339(-157_766_400), "1965-01-01T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(MAX_RFC3339), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(MAX_RFC3339 + 86_400), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(i64::MIN), "0000-01-01T00:00:00Z");
        // Agrees with humantime wherever humantime can format.
        for secs in [1, 86_399, 4_102_444_800, 253_402_214_400, 1_000_000_007] {
            assert_eq!(
                rfc3339(secs),
                humantime::format_rfc3339_seconds(at(secs)).to_string()
            );
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_control("/etc/license.key"), "/etc/license.key");
        assert_eq!(
            escape_control("/x\nlicense.grace_mode_exited\r\t\u{1b}[0m"),
            "/x\\nlicense.grace_mode_exited\\r\\t\\u{1b}[0m"
        );
    }
}
