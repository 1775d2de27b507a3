//! What the adversarial tests (`tests/adversary.rs`, `tests/redteam.rs`) share: licenses
//! as lines of a static source, and paused time jumped ahead at once.

use std::time::Duration;

use iosetu_license::{Claims, LicenseMonitorBuilder, LicenseSource};

use super::{HOUR, signer};

/// `claims` signed by the tests' signer.
pub fn token(claims: &Claims) -> String {
    signer().sign(claims)
}

/// A static source with `tokens`, one a line.
pub fn lines(tokens: &[String]) -> LicenseSource {
    LicenseSource::Static(tokens.join("\n") + "\n")
}

/// A license of `customer` ending at `exp`, revocable by `jti`.
pub fn with_jti(customer: &str, exp: i64, jti: &str) -> Claims {
    let mut claims = Claims::new(customer, exp);
    claims.jti = Some(jti.into());
    claims
}

/// Jumps paused time ahead at once (the checker wakes once, late: no replay).
pub async fn skip(secs: i64) {
    tokio::time::advance(Duration::from_secs(secs as u64)).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// The builder's grace for these tests: an hour, so that "past exp + grace" comes soon.
pub fn hour_of_grace(b: LicenseMonitorBuilder) -> LicenseMonitorBuilder {
    b.grace_period(Duration::from_secs(HOUR as u64))
}
