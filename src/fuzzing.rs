//! Entry points shared by the fuzz targets (`fuzz/`) and the test that replays their
//! corpus in CI, so both exercise exactly the same code. Not a stable API.

use crate::{Claims, LicenseSigner, LicenseSource, LicenseVerifier};

fn signer() -> LicenseSigner {
    LicenseSigner::from_seed([0x5a; 32]).with_kid("fuzz")
}

/// Arbitrary bytes as a token, three ways: as the whole token text, as a correctly signed
/// token's claims (so the claim parser is reached), and as its header. Nothing may panic,
/// and whatever verifies must be what was signed.
pub fn token(data: &[u8]) {
    let signer = signer();
    let verifier = LicenseVerifier::new(vec![signer.public_key()]).audience("svc");
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = verifier.verify(text);
        let _ = crate::token::decode_unverified(text);
    }
    let signed = signer.sign_raw(br#"{"alg":"EdDSA","kid":"fuzz"}"#, data);
    if let Ok(claims) = verifier.verify(&signed) {
        // A token that verified round-trips through its own claims.
        let again = signer.sign(&claims);
        let back = verifier.verify(&again).ok();
        assert_eq!(back.as_ref(), Some(&claims), "claims did not round-trip");
        let _ = claims.check_at(std::time::SystemTime::now());
    }
    let as_header = signer.sign_raw(data, br#"{"customer":"fuzz","exp":4102444800}"#);
    if let Ok(claims) = verifier.verify(&as_header) {
        assert_eq!(
            claims,
            Claims::new("fuzz", 4_102_444_800),
            "a header changed the claims"
        );
    }
}

/// Arbitrary bytes as a schedule for the judge (crate feature `fuzzing`): a host's clocks,
/// an operator's and a tamperer's steps, the license source and the vendor's notices,
/// driven through the judge with the simulation's oracles (honest customers are never
/// refused, what any schedule gains past coverage and grace stays within the
/// allowances, a wall kept behind is reported, alerts do not flood, the set laws). A
/// broken oracle panics with what it found.
#[cfg(feature = "fuzzing")]
#[expect(
    clippy::panic,
    reason = "the fuzzer learns of a broken oracle by a panic"
)]
pub fn judge(data: &[u8]) {
    if let Err(finding) = crate::judge::simulation::run_bytes(data) {
        panic!("{finding}");
    }
}

/// Arbitrary bytes as a license file, read through the same path the monitor uses.
pub fn source(data: &[u8]) {
    thread_local! {
        static DIR: Option<tempfile_like::Dir> = tempfile_like::Dir::new();
    }
    DIR.with(|dir| {
        let Some(dir) = dir else { return };
        let path = dir.path.join("license.key");
        if std::fs::write(&path, data).is_err() {
            return;
        }
        if let Ok(text) = LicenseSource::File(path).read() {
            let verifier = LicenseVerifier::new(vec![signer().public_key()]);
            let _ = verifier.verify(&text);
        }
    });
}

/// A scratch directory removed on drop (without pulling a dependency into the library).
mod tempfile_like {
    use std::path::PathBuf;

    pub(super) struct Dir {
        pub(super) path: PathBuf,
    }

    impl Dir {
        pub(super) fn new() -> Option<Self> {
            let path = std::env::temp_dir().join(format!("iosetu-fuzz-{}", std::process::id()));
            std::fs::create_dir_all(&path).ok()?;
            Some(Self { path })
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
