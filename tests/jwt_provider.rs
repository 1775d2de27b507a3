//! The library installs no process-global jsonwebtoken provider (it does not use
//! jsonwebtoken at all): an application that
//! uses jsonwebtoken itself installs its own, before or after a monitor starts.
//!
//! One test in this binary, so that the process-global state is this test's alone.

mod common;

use common::{T0, builder, signer, start};
use iosetu_license::{Claims, LicenseSource, LicenseState, TestClock};
use jsonwebtoken::crypto::CryptoProvider;

#[tokio::test(start_paused = true)]
async fn an_applications_own_jsonwebtoken_provider_is_left_alone() {
    let clock = TestClock::new(common::t0());
    let token = signer().sign(&Claims::new("Acme", T0 + 86_400));

    // Before: the monitor verifies with no provider installed, and installs none.
    let (first, _rx) = start(builder(&clock, LicenseSource::Static(token.clone()))).await;
    assert_eq!(first.verdict().state, LicenseState::Valid);

    // After: the application installs its own, which is accepted (`install_default`
    // succeeds once per process: had the monitor installed one, this would fail)...
    let own_provider = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
    own_provider
        .install_default()
        .expect("the monitor installed a process-global jsonwebtoken provider");
    assert!(std::ptr::eq(
        CryptoProvider::try_get_default().expect("installed"),
        own_provider
    ));
    // ...and works for the application's own tokens.
    let key = b"the application's own HMAC secret";
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), "user-1".into());
    claims.insert("exp".into(), (4_000_000_000_i64).into());
    let own = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key).expect("an HMAC key"),
    )
    .expect("the application signs with its provider");
    let decoded = jsonwebtoken::decode::<serde_json::Value>(
        &own,
        &jsonwebtoken::DecodingKey::from_secret(key).expect("an HMAC key"),
        &jsonwebtoken::Validation::default(),
    )
    .expect("the application verifies with its provider");
    assert_eq!(decoded.claims["sub"], "user-1");

    // The running monitor keeps verifying, and one started afterwards does too.
    assert_eq!(first.check_now().await.state, LicenseState::Valid);
    let (second, _rx) = start(builder(&clock, LicenseSource::Static(token))).await;
    assert_eq!(second.verdict().state, LicenseState::Valid);
}
