//! Licenses, vendor notices and license files for the tests of notices and of faults
//! beside the license source (`tests/notices.rs`, `tests/faults.rs`, `tests/adversary.rs`).

use std::path::Path;

use iosetu_license::{Claims, LicenseEvent, LicenseMonitor, LicenseSource, Notice, TestClock};
use tokio::sync::broadcast;

use super::{DAY, T0, builder, signer, start};

/// An "Acme" license `jti`, ending at `exp`, issued a day before [`T0`].
pub fn license(jti: &str, exp: i64) -> String {
    let mut claims = Claims::new("Acme", exp);
    claims.jti = Some(jti.into());
    claims.iat = Some(T0 - DAY);
    signer().sign(&claims)
}

/// The vendor's notice `seq` for "Acme", signed at `iat`, revoking `jtis`.
pub fn revocation(seq: u64, iat: i64, jtis: &[&str]) -> String {
    let mut notice = Notice::new("Acme", iat, seq);
    notice.revoke = jtis.iter().map(|j| (*j).to_owned()).collect();
    signer().sign_notice(&notice)
}

/// The vendor's notice `seq` for "Acme" attesting `time` (by the vendor's clock), to be
/// installed within three days.
pub fn attestation(seq: u64, time: i64) -> String {
    let mut notice = Notice::new("Acme", time, seq);
    notice.time = Some(time);
    notice.exp = Some(time + 3 * DAY);
    signer().sign_notice(&notice)
}

/// Writes `lines` to `path`, one a line.
pub fn write(path: &Path, lines: &[&str]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

pub fn file(path: &Path) -> LicenseSource {
    LicenseSource::File(path.to_path_buf())
}

/// A monitor on `clock` for the license file `path` with the notice source `notices`,
/// polled (no file watch), with a receiver holding the first check's events.
pub async fn start_with_notices(
    clock: &TestClock,
    path: &Path,
    notices: &Path,
) -> (LicenseMonitor, broadcast::Receiver<LicenseEvent>) {
    start(
        builder(clock, file(path))
            .notice_source(file(notices))
            .watch_file(false),
    )
    .await
}
