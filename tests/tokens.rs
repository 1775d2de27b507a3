//! The attack catalog's J and E rows that concern the token, as a table: each hostile
//! input and the stable reason code it must be refused with. Nothing may panic.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use iosetu_license::token::is_notice;
use iosetu_license::{
    Claims, KeyError, LicenseError, LicenseSigner, LicenseVerifier, Notice, PublicKey,
};

/// RFC 8037 Appendix A.1 private key `d`.
const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const RFC8037_SPKI: &str = "-----BEGIN PUBLIC KEY-----\n\
    MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n\
    -----END PUBLIC KEY-----\n";
/// RFC 8037 Appendix A.4: the JWS over "Example of Ed25519 signing".
const RFC8037_A4: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
/// A.4 with S replaced by S + L: the same signature, non-canonically encoded (catalog E2).
const RFC8037_A4_S_PLUS_L: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6KLa6_pyZkOh9Vg8wkiO1VhVsPt9g7sVvpAr_MuM0KEg";
/// Catalog "good license G": signed by the RFC key, but with `sub` instead of `customer`.
const CATALOG_G: &str = "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhY21lIiwiZXhwIjo0MTAyNDQ0ODAwfQ.PGcfDeMpgT0DBl_1ZsZzVFuurSJVyUM0dgN6hSNQsR336CZ0OkeIg2hppUJqmZsEu2ySw4l_w8cHVx21Nah8BQ";
/// Catalog J2: HS256 keyed with the raw public key.
const CATALOG_HS256: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhY21lIiwiZXhwIjo0MTAyNDQ0ODAwfQ.HqGW2-tAeim9_9s6tOrXIxEG8p3xXQePLlgOOENfkSI";

const GOOD_CLAIMS: &str = r#"{"customer":"acme","exp":4102444800}"#;
const HEADER: &str = r#"{"alg":"EdDSA","typ":"JWT"}"#;

fn rfc_signer() -> LicenseSigner {
    let seed: [u8; 32] = B64.decode(RFC8037_D).unwrap().try_into().unwrap();
    LicenseSigner::from_seed(seed)
}

fn verifier() -> LicenseVerifier {
    LicenseVerifier::new(vec![PublicKey::from_pem(RFC8037_SPKI).unwrap()])
}

fn signed(header: &str, payload: &str) -> String {
    rfc_signer().sign_raw(header.as_bytes(), payload.as_bytes())
}

fn reason(token: &str) -> &'static str {
    match verifier().verify(token) {
        Ok(_) => "accepted",
        Err(e) => e.reason(),
    }
}

fn b64(text: &str) -> String {
    B64.encode(text)
}

#[test]
fn the_fixture_key_is_rfc8037() {
    assert_eq!(
        rfc_signer().public_key(),
        PublicKey::from_pem(RFC8037_SPKI).unwrap()
    );
    // Re-signing A.4's input with d reproduces the RFC's signature exactly.
    assert_eq!(
        rfc_signer().sign_raw(br#"{"alg":"EdDSA"}"#, b"Example of Ed25519 signing"),
        RFC8037_A4
    );
}

#[test]
fn a_good_license_verifies() {
    let claims = verifier().verify(&signed(HEADER, GOOD_CLAIMS)).unwrap();
    assert_eq!(claims.customer, "acme");
    assert_eq!(claims.exp, 4_102_444_800);
}

#[test]
fn rfc8037_a4_verifies_but_is_not_a_license() {
    // E1: the signature is good; the payload is not JSON, so the refusal says so.
    let err = verifier().verify(RFC8037_A4).unwrap_err();
    assert_eq!(err.reason(), "malformed");
    assert!(err.to_string().contains("claims"), "{err}");
}

#[test]
fn catalog_g_is_refused_for_its_missing_customer() {
    assert_eq!(
        verifier().verify(CATALOG_G),
        Err(LicenseError::MissingClaim {
            claim: "customer".into()
        })
    );
}

#[test]
fn hostile_tokens_are_refused_with_their_reason() {
    let good = signed(HEADER, GOOD_CLAIMS);
    let (head, rest) = good.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let other = LicenseSigner::from_seed([42; 32]);
    let attacker_jwk = format!(
        r#"{{"alg":"EdDSA","jwk":{{"kty":"OKP","crv":"Ed25519","x":"{}"}}}}"#,
        B64.encode(other.public_key().to_bytes())
    );
    // A signature with R = identity (small order) and S = 0.
    let small_order_r = {
        let mut sig = [0u8; 64];
        sig[0] = 1;
        format!("{head}.{payload}.{}", B64.encode(sig))
    };
    let big_payload = format!(
        r#"{{"customer":"acme","exp":4102444800,"pad":"{}"}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    let deep = format!(
        r#"{{"customer":"acme","exp":4102444800,"n":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    // 64 bytes take 86 characters: the last one carries 4 unused bits. Setting its lowest
    // bit changes the spelling, not the bytes: a strict decoder must refuse it.
    let flipped = {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = *sig.as_bytes().last().unwrap();
        let value = ALPHABET.iter().position(|&c| c == last).unwrap();
        assert_eq!(
            value & 0b1111,
            0,
            "a canonical signature has zero trailing bits"
        );
        format!("{}{}", &sig[..sig.len() - 1], ALPHABET[value | 1] as char)
    };

    let cases: Vec<(&str, String, &str)> = vec![
        // J1: alg none, in any case, with an empty signature.
        (
            "J1 none",
            format!("{}.{payload}.", b64(r#"{"alg":"none"}"#)),
            "unsupported_algorithm",
        ),
        (
            "J1 None",
            format!("{}.{payload}.", b64(r#"{"alg":"None"}"#)),
            "unsupported_algorithm",
        ),
        (
            "J1 NONE",
            format!("{}.{payload}.", b64(r#"{"alg":"NONE"}"#)),
            "unsupported_algorithm",
        ),
        // J2: HMAC keyed with the public key, and every other family.
        (
            "J2 HS256",
            CATALOG_HS256.to_owned(),
            "unsupported_algorithm",
        ),
        (
            "J2 RS256",
            signed(r#"{"alg":"RS256"}"#, GOOD_CLAIMS),
            "unsupported_algorithm",
        ),
        (
            "J2 ES256",
            signed(r#"{"alg":"ES256"}"#, GOOD_CLAIMS),
            "unsupported_algorithm",
        ),
        (
            "J2 PS256",
            signed(r#"{"alg":"PS256"}"#, GOOD_CLAIMS),
            "unsupported_algorithm",
        ),
        (
            "J2 Ed448",
            signed(r#"{"alg":"Ed448"}"#, GOOD_CLAIMS),
            "unsupported_algorithm",
        ),
        // J3: only the exact spelling `EdDSA`.
        (
            "J3 Ed25519",
            signed(r#"{"alg":"Ed25519"}"#, GOOD_CLAIMS),
            "unsupported_algorithm",
        ),
        (
            "J3 eddsa",
            signed(r#"{"alg":"eddsa"}"#, GOOD_CLAIMS),
            "unsupported_algorithm",
        ),
        (
            "J3 EDDSA",
            signed(r#"{"alg":"EDDSA"}"#, GOOD_CLAIMS),
            "unsupported_algorithm",
        ),
        (
            "J3 array",
            signed(r#"{"alg":["EdDSA"]}"#, GOOD_CLAIMS),
            "unsupported_algorithm",
        ),
        (
            "J3 missing",
            signed(r#"{"typ":"JWT"}"#, GOOD_CLAIMS),
            "malformed",
        ),
        // J4: a kid is never a path or a query; with no key under it, unknown.
        (
            "J4 kid number",
            signed(r#"{"alg":"EdDSA","kid":7}"#, GOOD_CLAIMS),
            "malformed",
        ),
        // J5: an embedded or remote key is never used.
        (
            "J5 jwk",
            other.sign_raw(attacker_jwk.as_bytes(), GOOD_CLAIMS.as_bytes()),
            "bad_signature",
        ),
        (
            "J5 jku",
            other.sign_raw(
                br#"{"alg":"EdDSA","jku":"https://evil.example/k"}"#,
                GOOD_CLAIMS.as_bytes(),
            ),
            "bad_signature",
        ),
        (
            "J5 x5u",
            other.sign_raw(
                br#"{"alg":"EdDSA","x5u":"https://evil.example/c"}"#,
                GOOD_CLAIMS.as_bytes(),
            ),
            "bad_signature",
        ),
        // J6, J7, J15: crit, b64 and zip.
        (
            "J6 crit",
            signed(r#"{"alg":"EdDSA","crit":["exp"],"exp":1}"#, GOOD_CLAIMS),
            "unsupported_header",
        ),
        (
            "J6 crit empty",
            signed(r#"{"alg":"EdDSA","crit":[]}"#, GOOD_CLAIMS),
            "unsupported_header",
        ),
        (
            "J7 b64",
            signed(r#"{"alg":"EdDSA","b64":false,"crit":["b64"]}"#, GOOD_CLAIMS),
            "unsupported_header",
        ),
        (
            "J7 b64 odd",
            signed(r#"{"alg":"EdDSA","b64":"no"}"#, GOOD_CLAIMS),
            "unsupported_header",
        ),
        (
            "J15 zip",
            signed(r#"{"alg":"EdDSA","zip":"DEF"}"#, GOOD_CLAIMS),
            "unsupported_header",
        ),
        // J8: duplicate keys anywhere.
        (
            "J8 header",
            signed(r#"{"alg":"HS256","alg":"EdDSA"}"#, GOOD_CLAIMS),
            "malformed",
        ),
        (
            "J8 exp",
            signed(
                HEADER,
                r#"{"customer":"a","exp":946684800,"exp":4102444800}"#,
            ),
            "malformed",
        ),
        (
            "J8 tier",
            signed(
                HEADER,
                r#"{"customer":"a","exp":4102444800,"tier":"basic","tier":"enterprise"}"#,
            ),
            "malformed",
        ),
        // J9: exp must be an integer NumericDate.
        (
            "J9 string",
            signed(HEADER, r#"{"customer":"a","exp":"4102444800"}"#),
            "invalid_claim",
        ),
        (
            "J9 negative",
            signed(HEADER, r#"{"customer":"a","exp":-1}"#),
            "invalid_claim",
        ),
        (
            "J9 bool",
            signed(HEADER, r#"{"customer":"a","exp":true}"#),
            "invalid_claim",
        ),
        (
            "J9 null",
            signed(HEADER, r#"{"customer":"a","exp":null}"#),
            "invalid_claim",
        ),
        (
            "J9 array",
            signed(HEADER, r#"{"customer":"a","exp":[4102444800]}"#),
            "invalid_claim",
        ),
        (
            "J9 1e300",
            signed(HEADER, r#"{"customer":"a","exp":1e300}"#),
            "invalid_claim",
        ),
        (
            "J9 2^64",
            signed(HEADER, r#"{"customer":"a","exp":18446744073709551616}"#),
            "invalid_claim",
        ),
        (
            "J9 u64 max",
            signed(HEADER, r#"{"customer":"a","exp":18446744073709551615}"#),
            "invalid_claim",
        ),
        (
            "J9 float",
            signed(HEADER, r#"{"customer":"a","exp":4102444800.9}"#),
            "invalid_claim",
        ),
        (
            "J9 missing",
            signed(HEADER, r#"{"customer":"a"}"#),
            "missing_claim",
        ),
        // J10, J11: malformed time claims (their values are judged against trusted time).
        (
            "J10 nbf string",
            signed(HEADER, r#"{"customer":"a","exp":4102444800,"nbf":"1"}"#),
            "invalid_claim",
        ),
        (
            "J11 iat string",
            signed(HEADER, r#"{"customer":"a","exp":4102444800,"iat":"now"}"#),
            "invalid_claim",
        ),
        // J12: one spelling per token.
        (
            "J12 padding",
            format!("{head}.{payload}=.{sig}"),
            "malformed",
        ),
        (
            "J12 std alphabet",
            format!("{head}.{payload}.{}", sig.replace(['-', '_'], "+")),
            "malformed",
        ),
        (
            "J12 trailing bits",
            format!("{head}.{payload}.{flipped}"),
            "malformed",
        ),
        // J14: anything that is not exactly one compact JWS.
        (
            "J14 inner space",
            format!("{head}.{payload} .{sig}"),
            "malformed",
        ),
        ("J14 quoted", format!("\"{good}\""), "malformed"),
        ("J14 two tokens", format!("{good}\n{good}"), "malformed"),
        ("J14 empty", String::new(), "missing"),
        ("J14 two parts", format!("{head}.{payload}"), "malformed"),
        ("J14 four parts", format!("{good}.{sig}"), "malformed"),
        (
            "J14 JWE",
            format!("{head}.{payload}.{payload}.{payload}.{sig}"),
            "malformed",
        ),
        (
            "J14 utf16",
            String::from_utf16_lossy(&good.encode_utf16().flat_map(|u| [u, 0]).collect::<Vec<_>>()),
            "malformed",
        ),
        // J16: size caps before any decoding.
        (
            "J16 5 MB payload",
            signed(HEADER, &big_payload),
            "too_large",
        ),
        // J17: payloads and signatures of the wrong shape.
        ("J17 array payload", signed(HEADER, "[1,2]"), "malformed"),
        (
            "J17 trailing garbage",
            signed(HEADER, &format!("{GOOD_CLAIMS}x")),
            "malformed",
        ),
        (
            "J17 lone surrogate",
            signed(HEADER, r#"{"customer":"\ud800","exp":4102444800}"#),
            "malformed",
        ),
        ("J17 deep nesting", signed(HEADER, &deep), "malformed"),
        (
            "J17 sig 63 bytes",
            format!("{head}.{payload}.{}", B64.encode([1u8; 63])),
            "malformed",
        ),
        (
            "J17 sig 65 bytes",
            format!("{head}.{payload}.{}", B64.encode([1u8; 65])),
            "malformed",
        ),
        ("J17 sig empty", format!("{head}.{payload}."), "malformed"),
        (
            "J17 other key",
            other.sign_raw(HEADER.as_bytes(), GOOD_CLAIMS.as_bytes()),
            "bad_signature",
        ),
        (
            "J17 payload swapped",
            format!(
                "{head}.{}.{sig}",
                b64(r#"{"customer":"evil","exp":4102444800}"#)
            ),
            "bad_signature",
        ),
        // E2: S + L (non-canonical S) and E3: small-order R.
        ("E2 S+L", RFC8037_A4_S_PLUS_L.to_owned(), "bad_signature"),
        ("E3 small-order R", small_order_r, "bad_signature"),
    ];
    let mut failures = Vec::new();
    for (name, token, want) in &cases {
        let got = reason(token);
        if got != *want {
            failures.push(format!("{name}: want {want}, got {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn refusals_never_echo_the_token() {
    let token = signed(r#"{"alg":"HS256"}"#, GOOD_CLAIMS);
    let err = verifier().verify(&token).unwrap_err();
    let (_, payload_and_sig) = token.split_once('.').unwrap();
    assert!(!err.to_string().contains(payload_and_sig));
}

#[test]
fn kid_selects_the_key_and_never_widens_acceptance() {
    let a = LicenseSigner::from_seed([1; 32]).with_kid("2026-a");
    let b = LicenseSigner::from_seed([2; 32]).with_kid("2026-b");
    let both = LicenseVerifier::new(vec![a.public_key(), b.public_key()]);
    let claims = Claims::new("acme", 4_102_444_800);
    assert!(both.verify(&a.sign(&claims)).is_ok());
    assert!(both.verify(&b.sign(&claims)).is_ok());

    // J4: a kid no key is registered under.
    let traversal = a.clone().with_kid("../../../../dev/null");
    let err = both.verify(&traversal.sign(&claims)).unwrap_err();
    assert_eq!(err.reason(), "unknown_key_id");
    let sql = a.clone().with_kid("x' UNION SELECT 'AAAA'--");
    assert_eq!(
        both.verify(&sql.sign(&claims)).unwrap_err().reason(),
        "unknown_key_id"
    );

    // A token claiming b's kid but signed by a is not accepted under b.
    let forged = a.clone().with_kid("2026-b");
    assert_eq!(
        both.verify(&forged.sign(&claims)).unwrap_err().reason(),
        "bad_signature"
    );

    // Keys registered without a kid are tried for any token; the signature decides.
    let anonymous = LicenseVerifier::new(vec![LicenseSigner::from_seed([1; 32]).public_key()]);
    assert!(anonymous.verify(&traversal.sign(&claims)).is_ok());
    // No kid in the token: every key is tried.
    let plain = LicenseSigner::from_seed([2; 32]);
    assert!(both.verify(&plain.sign(&claims)).is_ok());
}

#[test]
fn whitespace_and_bom_around_a_token_are_trimmed() {
    // J13: what `kubectl create secret --from-file` and editors leave behind.
    let good = signed(HEADER, GOOD_CLAIMS);
    for wrapped in [
        format!("{good}\n"),
        format!("{good}\r\n"),
        format!("  {good}\t "),
        format!("\u{feff}{good}"),
        format!("\u{feff}{good}\r\n"),
    ] {
        assert_eq!(reason(&wrapped), "accepted", "{wrapped:?}");
    }
}

#[test]
fn issuer_and_audience_are_checked_only_when_configured() {
    let signer = rfc_signer();
    let mut claims = Claims::new("acme", 4_102_444_800);
    claims.iss = Some("vendor".into());
    claims.aud = vec!["svc".into(), "other".into()];
    let token = signer.sign(&claims);
    let bare = Claims::new("acme", 4_102_444_800);
    let bare_token = signer.sign(&bare);

    // J11: an `aud` nobody configured does not refuse the token.
    assert!(verifier().verify(&token).is_ok());
    assert!(
        verifier()
            .issuer("vendor")
            .audience("svc")
            .verify(&token)
            .is_ok()
    );
    assert_eq!(
        verifier().issuer("someone").verify(&token),
        Err(LicenseError::WrongIssuer)
    );
    assert_eq!(
        verifier().audience("nope").verify(&token),
        Err(LicenseError::WrongAudience)
    );
    let missing_iss = verifier().issuer("vendor").verify(&bare_token).unwrap_err();
    assert_eq!(missing_iss.reason(), "missing_claim");
    let missing_aud = verifier().audience("svc").verify(&bare_token).unwrap_err();
    assert_eq!(missing_aud.reason(), "missing_claim");
    // `iss` of the wrong type is refused as such.
    let odd = signed(
        HEADER,
        r#"{"customer":"a","exp":4102444800,"iss":["vendor"]}"#,
    );
    assert_eq!(
        verifier().verify(&odd).unwrap_err().reason(),
        "invalid_claim"
    );
}

#[test]
fn time_claims_are_judged_at_a_given_instant_not_by_the_verifier() {
    use std::time::{Duration, UNIX_EPOCH};
    // J10: nbf in the future verifies (the token is genuine) but is not yet valid.
    let token = signed(
        HEADER,
        r#"{"customer":"a","exp":4102444800,"nbf":4102444000}"#,
    );
    let claims = verifier().verify(&token).unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(4_102_443_000);
    assert_eq!(claims.check_at(now).unwrap_err().reason(), "not_yet_valid");
    // J11: iat in the future is evidence the clock is behind.
    let token = signed(
        HEADER,
        r#"{"customer":"a","exp":4102444800,"iat":4102440000}"#,
    );
    let claims = verifier().verify(&token).unwrap();
    assert_eq!(
        claims
            .check_at(now - Duration::from_secs(86_400))
            .unwrap_err()
            .reason(),
        "issued_in_future"
    );
    // An expired token is genuine; the verdict, not the verifier, decides what it means.
    let expired = signed(HEADER, r#"{"customer":"a","exp":946684800}"#);
    let claims = verifier().verify(&expired).unwrap();
    assert_eq!(claims.check_at(now).unwrap_err().reason(), "expired");
}

#[test]
fn weak_and_malformed_keys_are_refused_at_load() {
    // E3: the identity point, which "verifies" R = identity, S = 0 over anything.
    let identity = B64
        .decode("AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .unwrap();
    assert_eq!(PublicKey::from_bytes(&identity), Err(KeyError::Weak));
    // E4: wrong lengths never reach the verifier (jsonwebtoken's backend would panic on
    // short keys and silently truncate long ones).
    for len in [0, 31, 33] {
        assert_eq!(
            PublicKey::from_bytes(&vec![9u8; len]),
            Err(KeyError::Length(len))
        );
    }
    // Non-canonical y >= p (all ones): not a usable point.
    assert!(PublicKey::from_bytes(&[0xff; 32]).is_err());
}

#[test]
fn entitlement_and_grace_claims_of_the_wrong_type_are_invalid_claims() {
    let with = |extra: &str| {
        signed(
            HEADER,
            &format!(r#"{{"customer":"a","exp":4102444800,{extra}}}"#),
        )
    };
    for extra in [
        r#""features":"sso""#,
        r#""features":["sso",1]"#,
        r#""limits":[25]"#,
        r#""limits":{"seats":-1}"#,
        r#""limits":{"seats":2.5}"#,
        r#""limits":{"seats":"25"}"#,
        r#""limits":{"seats":null}"#,
        r#""limits":{"":1}"#,
        r#""limits":{"seats":18446744073709551616}"#,
        r#""grace_period_seconds":-1"#,
        r#""grace_period_seconds":1.5"#,
        r#""grace_period_seconds":"7d""#,
        r#""grace_period_seconds":31622401"#,
        r#""grace_period_seconds":null"#,
        // A window that never opens: nbf at or after exp.
        r#""nbf":4102444800"#,
        r#""nbf":4102444801"#,
    ] {
        assert_eq!(reason(&with(extra)), "invalid_claim", "{extra}");
    }
    let claims = verifier()
        .verify(&with(
            r#""features":["sso"],"limits":{"seats":25,"nodes":0},"grace_period_seconds":31622400"#,
        ))
        .unwrap();
    assert!(claims.has_feature("sso"));
    assert_eq!(claims.limit("seats"), Some(25));
    assert_eq!(claims.limit("nodes"), Some(0));
    assert_eq!(claims.grace_period_seconds, Some(366 * 86_400));
    // And they survive signing and verifying again.
    let again = verifier().verify(&rfc_signer().sign(&claims)).unwrap();
    assert_eq!(again, claims);
}

const NOTICE_HEADER: &str = r#"{"alg":"EdDSA","typ":"iosetu-notice"}"#;

fn notice_reason(token: &str) -> &'static str {
    match verifier().verify_notice(token) {
        Ok(_) => "accepted",
        Err(e) => e.reason(),
    }
}

#[test]
fn a_notice_is_never_a_license_and_a_license_never_a_notice() {
    let signer = rfc_signer();
    let mut notice = Notice::new("acme", 1_800_000_000, 1);
    notice.revoke = vec!["lic-1".into()];
    let notice = signer.sign_notice(&notice);
    let license = signer.sign(&Claims::new("acme", 4_102_444_800));
    assert!(is_notice(&notice) && !is_notice(&license));
    assert_eq!(notice_reason(&notice), "accepted");
    assert_eq!(reason(&license), "accepted");
    // Each refused as the other, by its signed header: both ways.
    assert_eq!(reason(&notice), "wrong_type");
    assert_eq!(notice_reason(&license), "wrong_type");
    // Claims that would make a license, under a notice header, are still no license;
    // and a notice's claims under a license header are no notice.
    let both = r#"{"customer":"acme","exp":4102444800,"iat":1800000000,"seq":1,"time":1800000000}"#;
    assert_eq!(reason(&signed(NOTICE_HEADER, both)), "wrong_type");
    assert_eq!(notice_reason(&signed(HEADER, both)), "wrong_type");
    // The header cannot be changed after signing.
    let parts: Vec<&str> = notice.split('.').collect();
    let relabelled = format!("{}.{}.{}", b64(HEADER), parts[1], parts[2]);
    assert_eq!(reason(&relabelled), "bad_signature");
    // A `typ` that is not a string is malformed, for both.
    let odd = signed(r#"{"alg":"EdDSA","typ":7}"#, GOOD_CLAIMS);
    assert_eq!(
        (reason(&odd), notice_reason(&odd)),
        ("malformed", "malformed")
    );
}

#[test]
fn hostile_notices_are_refused_with_their_reason() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"customer":"acme","iat":1800000000,"seq":1}"#,
            "accepted",
        ),
        (r#"{"iat":1800000000,"seq":1}"#, "missing_claim"),
        (
            r#"{"customer":"","iat":1800000000,"seq":1}"#,
            "invalid_claim",
        ),
        (r#"{"customer":"acme","seq":1}"#, "missing_claim"),
        (
            r#"{"customer":"acme","iat":"1800000000","seq":1}"#,
            "invalid_claim",
        ),
        (r#"{"customer":"acme","iat":1800000000}"#, "missing_claim"),
        (
            r#"{"customer":"acme","iat":1800000000,"seq":0}"#,
            "invalid_claim",
        ),
        (
            r#"{"customer":"acme","iat":1800000000,"seq":-1}"#,
            "invalid_claim",
        ),
        (
            r#"{"customer":"acme","iat":1800000000,"seq":1.5}"#,
            "invalid_claim",
        ),
        (
            r#"{"customer":"acme","iat":1800000000,"seq":9007199254740993}"#,
            "invalid_claim",
        ),
        (
            r#"{"customer":"acme","iat":1800000000,"seq":1,"revoke":"lic-1"}"#,
            "invalid_claim",
        ),
        (
            r#"{"customer":"acme","iat":1800000000,"seq":1,"revoke":[""]}"#,
            "invalid_claim",
        ),
        (
            r#"{"customer":"acme","iat":1800000000,"seq":1,"revoke":[7]}"#,
            "invalid_claim",
        ),
        // A revocation never lapses: no `exp` without a `time`.
        (
            r#"{"customer":"acme","iat":1800000000,"seq":1,"exp":1800086400}"#,
            "invalid_claim",
        ),
        (
            r#"{"customer":"acme","iat":1800000000,"seq":1,"time":1800000000}"#,
            "missing_claim",
        ),
        (
            r#"{"customer":"acme","iat":1800000000,"seq":1,"time":1800000000,"exp":1800604800}"#,
            "accepted",
        ),
        // An attestation is short-lived: at most 7 days, after its iat.
        (
            r#"{"customer":"acme","iat":1800000000,"seq":1,"time":1800000000,"exp":1800604801}"#,
            "invalid_claim",
        ),
        (
            r#"{"customer":"acme","iat":1800000000,"seq":1,"time":1800000000,"exp":1800000000}"#,
            "invalid_claim",
        ),
        (
            r#"{"customer":"acme","iat":1800000000,"seq":1,"time":1800086401,"exp":1800086400}"#,
            "invalid_claim",
        ),
        (
            r#"{"customer":"acme","iat":1800000000,"seq":1,"nbf":1800000000}"#,
            "invalid_claim",
        ),
        (
            r#"{"customer":"acme","iat":1800000000,"seq":1,"seq":2}"#,
            "malformed",
        ),
    ];
    for (claims, expected) in cases {
        assert_eq!(
            notice_reason(&signed(NOTICE_HEADER, claims)),
            *expected,
            "{claims}"
        );
    }
    let many: Vec<String> = (0..65).map(|i| format!("\"j{i}\"")).collect();
    let claims = format!(
        r#"{{"customer":"acme","iat":1800000000,"seq":1,"revoke":[{}]}}"#,
        many.join(",")
    );
    assert_eq!(
        notice_reason(&signed(NOTICE_HEADER, &claims)),
        "invalid_claim"
    );
    // A license's `supersedes` follows the same rules.
    let claims = format!(
        r#"{{"customer":"acme","exp":4102444800,"supersedes":[{}]}}"#,
        many.join(",")
    );
    assert_eq!(reason(&signed(HEADER, &claims)), "invalid_claim");
}

#[test]
fn issuer_and_audience_bind_notices_as_they_bind_licenses() {
    let strict = verifier().issuer("vendor").audience("svc");
    let bare = signed(
        NOTICE_HEADER,
        r#"{"customer":"acme","iat":1800000000,"seq":1}"#,
    );
    assert_eq!(
        strict.verify_notice(&bare).unwrap_err().reason(),
        "missing_claim"
    );
    let wrong = signed(
        NOTICE_HEADER,
        r#"{"customer":"acme","iat":1800000000,"seq":1,"iss":"other","aud":"svc"}"#,
    );
    assert_eq!(
        strict.verify_notice(&wrong).unwrap_err().reason(),
        "wrong_issuer"
    );
    let good = signed(
        NOTICE_HEADER,
        r#"{"customer":"acme","iat":1800000000,"seq":1,"iss":"vendor","aud":["svc"]}"#,
    );
    assert!(strict.verify_notice(&good).is_ok());
}
