//! Tokens an attacker or a misconfigured client would send, each refused with the error that says
//! why; and the genuine ones (local tokens for every role, a Cognito-style RS256 access token)
//! accepted with the right caller.

mod common;

use std::time::Duration;

use common::{Local, b64, now};
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ota_auth::{AuthError, JwtVerifier, LocalIssuer, VerifierConfig};
use ota_core::auth::{Caller, Role};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{Value, json};
use sha2::Sha256;

/// Header and claims hand-encoded, with whatever signature bytes the attack needs.
fn hand_built(header: &Value, claims: &Value, signature: &[u8]) -> String {
    let message = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    format!("{message}.{}", b64(signature))
}

/// An HS256 token whose HMAC key is `secret`: what a verifier that trusts the header's `alg`
/// would check against the public key it holds.
fn hs256_token(kid: &str, claims: &Value, secret: &[u8]) -> String {
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let message = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap();
    mac.update(message.as_bytes());
    format!("{message}.{}", b64(&mac.finalize().into_bytes()))
}

fn refused(verifier: &JwtVerifier, token: &str) -> AuthError {
    match verifier.verify(token) {
        Ok(caller) => panic!("accepted as {caller:?}"),
        Err(e) => {
            assert!(!e.to_string().contains(token) || token.is_empty(), "the message echoes the token: {e}");
            e
        }
    }
}

#[test]
fn a_fresh_local_token_for_each_role_is_accepted_with_that_role() {
    let local = Local::new();
    let verifier = local.issuer.verifier();
    for role in [Role::Viewer, Role::Operator, Role::Admin] {
        let token = local.issuer.issue("ana", role, Duration::from_secs(3600)).unwrap();
        assert_eq!(verifier.verify(&token).unwrap(), Caller::new("ana", [role]));
    }
}

#[test]
fn an_expired_token_is_refused() {
    let local = Local::new();
    let mut claims = local.claims();
    claims["iat"] = json!(now() - 7200);
    claims["nbf"] = json!(now() - 7200);
    claims["exp"] = json!(now() - 3600);
    assert_eq!(refused(&local.issuer.verifier(), &local.sign(&claims)), AuthError::Expired);
}

#[test]
fn expiry_within_the_leeway_is_tolerated_and_beyond_it_refused() {
    let local = Local::new();
    let verifier = local.issuer.verifier();
    let mut claims = local.claims();
    claims["exp"] = json!(now() - 5);
    assert!(verifier.verify(&local.sign(&claims)).is_ok(), "5 s of clock skew is within the 30 s leeway");
    claims["exp"] = json!(now() - 120);
    assert_eq!(refused(&verifier, &local.sign(&claims)), AuthError::Expired);
}

#[test]
fn a_token_without_expiry_is_refused() {
    let local = Local::new();
    let mut claims = local.claims();
    claims.as_object_mut().unwrap().remove("exp");
    assert!(
        matches!(refused(&local.issuer.verifier(), &local.sign(&claims)), AuthError::Malformed(m) if m.contains("exp"))
    );
}

#[test]
fn a_token_not_valid_yet_is_refused() {
    let local = Local::new();
    let mut claims = local.claims();
    claims["nbf"] = json!(now() + 3600);
    claims["exp"] = json!(now() + 7200);
    assert_eq!(refused(&local.issuer.verifier(), &local.sign(&claims)), AuthError::NotYetValid);
}

#[test]
fn a_token_from_another_issuer_is_refused() {
    let local = Local::new();
    let mut claims = local.claims();
    claims["iss"] = json!("https://evil.example");
    let err = refused(&local.issuer.verifier(), &local.sign(&claims));
    assert_eq!(err, AuthError::WrongIssuer { expected: "ota-local".into() });
    assert!(err.to_string().contains("ota-local"), "{err}");
    claims.as_object_mut().unwrap().remove("iss");
    assert!(
        matches!(refused(&local.issuer.verifier(), &local.sign(&claims)), AuthError::Malformed(m) if m.contains("iss"))
    );
}

#[test]
fn a_token_for_another_audience_is_refused() {
    let local = Local::new();
    let verifier = local.issuer.verifier();
    for aud in [json!("grafana"), json!(["grafana", "billing"]), Value::Null] {
        let mut claims = local.claims();
        claims["aud"] = aud;
        assert!(matches!(refused(&verifier, &local.sign(&claims)), AuthError::WrongAudience { .. }));
    }
    let mut claims = local.claims();
    claims["aud"] = json!(["grafana", "ota"]);
    assert!(verifier.verify(&local.sign(&claims)).is_ok(), "an audience array that includes ota is fine");
}

#[test]
fn a_token_signed_by_another_key_under_the_same_kid_is_refused() {
    let local = Local::new();
    let impostor = Local::new();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(local.issuer.kid().to_string());
    let token = jsonwebtoken::encode(&header, &local.claims(), &impostor.key).unwrap();
    assert_eq!(refused(&local.issuer.verifier(), &token), AuthError::BadSignature);
}

#[test]
fn a_genuine_token_with_edited_claims_is_refused() {
    let local = Local::new();
    let token = local.issuer.issue("ana", Role::Viewer, Duration::from_secs(600)).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = local.claims();
    claims["roles"] = json!(["admin"]);
    let forged = format!("{}.{}.{}", parts[0], b64(claims.to_string().as_bytes()), parts[2]);
    assert_eq!(refused(&local.issuer.verifier(), &forged), AuthError::BadSignature);
}

#[test]
fn alg_none_is_refused() {
    let local = Local::new();
    let verifier = local.issuer.verifier();
    for header in [
        json!({"alg": "none", "typ": "JWT"}),
        json!({"alg": "none", "typ": "JWT", "kid": local.issuer.kid()}),
        json!({"alg": "None", "kid": local.issuer.kid()}),
    ] {
        let alg = header["alg"].as_str().unwrap().to_string();
        for signature in [&b""[..], b"x"] {
            let token = hand_built(&header, &local.claims(), signature);
            assert_eq!(refused(&verifier, &token), AuthError::UnsupportedAlgorithm(alg.clone()));
        }
    }
    // A header without any alg is no better.
    let token = hand_built(&json!({"kid": local.issuer.kid()}), &local.claims(), b"");
    assert!(matches!(refused(&verifier, &token), AuthError::Malformed(_)));
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let local = Local::new();
    let verifier = local.issuer.verifier();
    let jwks = local.issuer.jwks();
    let jwk = &jwks.keys[0];
    let jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec) = &jwk.algorithm else { panic!("not EC") };
    let mut sec1 = vec![4u8];
    sec1.extend(common::decode_b64(&ec.x));
    sec1.extend(common::decode_b64(&ec.y));
    let public = p256::PublicKey::from_sec1_bytes(&sec1).unwrap();
    let pem = public.to_public_key_pem(LineEnding::LF).unwrap();
    let der = public.to_public_key_der().unwrap();
    // Every form a confused verifier might feed HMAC: the JWK JSON, the JWKS, the PEM, DER, raw point.
    let secrets: Vec<Vec<u8>> = vec![
        serde_json::to_vec(jwk).unwrap(),
        serde_json::to_vec(&jwks).unwrap(),
        pem.into_bytes(),
        der.as_bytes().to_vec(),
        sec1,
    ];
    for secret in secrets {
        let token = hs256_token(local.issuer.kid(), &local.claims(), &secret);
        assert_eq!(refused(&verifier, &token), AuthError::UnsupportedAlgorithm("HS256".into()));
    }
}

#[test]
fn an_hmac_key_published_in_the_jwks_is_never_used() {
    let local = Local::new();
    let secret = b"shared-secret-that-leaked-in-a-jwks";
    let mut jwks = local.issuer.jwks();
    let oct: Jwk =
        serde_json::from_value(json!({"kty": "oct", "kid": "hmac-1", "alg": "HS256", "k": b64(secret)})).unwrap();
    jwks.keys.push(oct);
    let verifier = JwtVerifier::new(LocalIssuer::config(), jwks).unwrap();
    let token = hs256_token("hmac-1", &local.claims(), secret);
    assert_eq!(refused(&verifier, &token), AuthError::UnsupportedAlgorithm("HS256".into()));
    // Claiming ES256 for that kid finds no key either: oct keys are not loaded at all.
    let token = hand_built(&json!({"alg": "ES256", "kid": "hmac-1"}), &local.claims(), &[0; 64]);
    assert_eq!(refused(&verifier, &token), AuthError::UnknownKey);
}

#[test]
fn an_algorithm_that_does_not_fit_the_key_is_refused() {
    let local = Local::new();
    let rsa = cognito_key();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(local.issuer.kid().to_string());
    let token = jsonwebtoken::encode(&header, &local.claims(), &rsa).unwrap();
    let err = refused(&local.issuer.verifier(), &token);
    assert!(matches!(&err, AuthError::UnsupportedAlgorithm(m) if m.contains("RS256")), "{err:?}");
    // ES384 and PS256 are outside the allow-list whatever the key.
    for alg in ["ES384", "PS256", "RS512", "EdDSA"] {
        let token = hand_built(&json!({"alg": alg, "kid": local.issuer.kid()}), &local.claims(), &[1; 64]);
        assert_eq!(refused(&local.issuer.verifier(), &token), AuthError::UnsupportedAlgorithm(alg.into()));
    }
}

#[test]
fn a_token_without_any_role_is_refused() {
    let local = Local::new();
    let mut claims = local.claims();
    claims.as_object_mut().unwrap().remove("roles");
    let err = refused(&local.issuer.verifier(), &local.sign(&claims));
    assert_eq!(err, AuthError::NoRole { claim: "roles".into(), found: vec![] });
    assert!(err.to_string().contains("viewer, operator or admin"), "{err}");
    claims["roles"] = json!([]);
    assert!(matches!(refused(&local.issuer.verifier(), &local.sign(&claims)), AuthError::NoRole { .. }));
}

#[test]
fn a_token_with_only_unknown_roles_is_refused_and_says_which_it_saw() {
    let local = Local::new();
    let mut claims = local.claims();
    claims["roles"] = json!(["superuser", "root"]);
    let err = refused(&local.issuer.verifier(), &local.sign(&claims));
    assert_eq!(err, AuthError::NoRole { claim: "roles".into(), found: vec!["root".into(), "superuser".into()] });
    assert!(err.to_string().contains("superuser"), "{err}");
}

#[test]
fn roles_in_a_separated_string_are_read_and_other_names_kept_as_groups() {
    let local = Local::new();
    let mut claims = local.claims();
    claims["roles"] = json!("billing viewer,Admin");
    let caller = local.issuer.verifier().verify(&local.sign(&claims)).unwrap();
    assert_eq!(caller, Caller::new("ana", [Role::Viewer, Role::Admin]).with_groups(["billing"]));
}

#[test]
fn a_tokens_other_groups_reach_the_policies_but_grant_no_role() {
    let local = Local::new();
    let policies = include_str!("../../../examples/senior_operator_reboot.cedar");
    let authz = ota_core::authz::Authorizer::from_text(policies, "senior_operator_reboot.cedar").unwrap();
    let device = ota_core::authz::Resource::device("pet_feeder-03", "pet_feeder");
    let reboot = ota_core::authz::Context::at(chrono::Utc::now()).command("reboot", json!({}));
    let send = ota_core::authz::Action::SendCommand;
    let mut claims = local.claims();
    claims["roles"] = json!(["operator", "senior_operator"]);
    let senior = local.issuer.verifier().verify(&local.sign(&claims)).unwrap();
    assert_eq!(senior.groups.iter().collect::<Vec<_>>(), ["senior_operator"]);
    assert!(authz.is_authorized(&senior, send, &device, &reboot).allowed);
    claims["roles"] = json!(["operator"]);
    let plain = local.issuer.verifier().verify(&local.sign(&claims)).unwrap();
    assert!(!authz.is_authorized(&plain, send, &device, &reboot).allowed);
    // A group alone is still no role: refused at sign-in, as before.
    claims["roles"] = json!(["senior_operator"]);
    let err = refused(&local.issuer.verifier(), &local.sign(&claims));
    assert_eq!(err, AuthError::NoRole { claim: "roles".into(), found: vec!["senior_operator".into()] });
}

#[test]
fn a_token_with_an_unknown_kid_is_refused() {
    let local = Local::new();
    let attacker = Local::new();
    let verifier = local.issuer.verifier();
    // The attacker's own valid token, its kid unknown here.
    let token = attacker.issuer.issue("mallory", Role::Admin, Duration::from_secs(600)).unwrap();
    assert_eq!(refused(&verifier, &token), AuthError::UnknownKey);
    // Embedding the attacker's public key in the header (`jwk`) changes nothing.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("attacker".into());
    header.jwk = Some(attacker.issuer.jwks().keys[0].clone());
    let token = jsonwebtoken::encode(&header, &local.claims(), &attacker.key).unwrap();
    assert_eq!(refused(&verifier, &token), AuthError::UnknownKey);
}

#[test]
fn garbage_is_refused_as_missing_or_malformed() {
    let local = Local::new();
    let verifier = local.issuer.verifier();
    assert_eq!(refused(&verifier, ""), AuthError::Missing);
    assert_eq!(refused(&verifier, "   "), AuthError::Missing);
    for garbage in [
        "not-a-jwt",
        "a.b",
        "a.b.c",
        "a.b.c.d.e",
        "!!!.???.###",
        "eyJhbGciOiJFUzI1NiJ9",
        "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbmEifQ",
        "W10.e30.",
        "\u{0}\u{1}\u{2}",
    ] {
        let err = refused(&verifier, garbage);
        assert!(matches!(err, AuthError::Malformed(_)), "{garbage:?} -> {err:?}");
    }
    // A well-formed header over a payload that is not JSON.
    let header = json!({"alg": "ES256", "kid": local.issuer.kid()});
    let token = format!("{}.{}.{}", b64(header.to_string().as_bytes()), b64(b"not json"), b64(&[0; 64]));
    assert!(matches!(refused(&verifier, &token), AuthError::Malformed(_) | AuthError::BadSignature));
}

#[test]
fn verifier_configuration_that_would_accept_too_much_is_refused() {
    let local = Local::new();
    let err = JwtVerifier::new(VerifierConfig::new("ota-local"), local.issuer.jwks()).unwrap_err();
    assert!(matches!(&err, AuthError::Config(m) if m.contains("audience")), "{err}");
    let only_hmac: JwkSet =
        serde_json::from_value(json!({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]})).unwrap();
    let err = JwtVerifier::new(LocalIssuer::config(), only_hmac).unwrap_err();
    assert!(matches!(&err, AuthError::Config(m) if m.contains("no RS256 or ES256")), "{err}");
    assert!(matches!(JwtVerifier::from_jwks_json(LocalIssuer::config(), "{not json"), Err(AuthError::Config(_))));
}

// ---- Cognito-style RS256 ----

const COGNITO_ISSUER: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Test1234";
const CLIENT_ID: &str = "3n4b5urk1ft4fl3mg5e62d9ado";
const COGNITO_KID: &str = "cognito-test-kid-1";

fn cognito_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(include_bytes!("fixtures/test-only-rsa-key.pem")).unwrap()
}

/// The user pool's JWKS as Cognito publishes it: RSA keys with kid, alg and use.
fn cognito_jwks_json() -> String {
    let mut jwk = Jwk::from_encoding_key(&cognito_key(), Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(COGNITO_KID.into());
    jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let other = Local::new().issuer.jwks().keys[0].clone();
    serde_json::to_string(&JwkSet { keys: vec![other, jwk] }).unwrap()
}

fn cognito_config() -> VerifierConfig {
    VerifierConfig { client_id: Some(CLIENT_ID.into()), ..VerifierConfig::new(COGNITO_ISSUER) }
}

/// What a Cognito access token carries (no `aud`; the app client in `client_id`).
fn cognito_access_claims() -> Value {
    let now = now();
    json!({
        "sub": "7c4b1f2e-0d3a-4f5e-9a8b-112233445566",
        "cognito:groups": ["beta-testers", "operator"],
        "iss": COGNITO_ISSUER,
        "version": 2,
        "client_id": CLIENT_ID,
        "origin_jti": "1f2e3d4c-5b6a-4798-8a9b-0c1d2e3f4a5b",
        "token_use": "access",
        "scope": "openid profile",
        "auth_time": now - 60,
        "exp": now + 3600,
        "iat": now - 60,
        "jti": "a1b2c3d4-e5f6-4789-8abc-def012345678",
        "username": "ana",
    })
}

fn cognito_sign(claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(COGNITO_KID.into());
    jsonwebtoken::encode(&header, claims, &cognito_key()).unwrap()
}

#[test]
fn a_cognito_rs256_access_token_is_accepted_with_its_groups_as_roles() {
    let verifier = JwtVerifier::from_jwks_json(cognito_config(), &cognito_jwks_json()).unwrap();
    let caller = verifier.verify(&cognito_sign(&cognito_access_claims())).unwrap();
    assert_eq!(caller, Caller::new("ana", [Role::Operator]).with_groups(["beta-testers"]));

    // Without `username`, Cognito's other spellings name the caller.
    let mut claims = cognito_access_claims();
    claims.as_object_mut().unwrap().remove("username");
    claims["cognito:username"] = json!("bo");
    assert_eq!(verifier.verify(&cognito_sign(&claims)).unwrap().subject, "bo");
    claims.as_object_mut().unwrap().remove("cognito:username");
    assert_eq!(verifier.verify(&cognito_sign(&claims)).unwrap().subject, "7c4b1f2e-0d3a-4f5e-9a8b-112233445566");
}

#[test]
fn a_cognito_token_for_another_app_client_is_refused() {
    let verifier = JwtVerifier::from_jwks_json(cognito_config(), &cognito_jwks_json()).unwrap();
    let mut claims = cognito_access_claims();
    claims["client_id"] = json!("someotherappclient0000000");
    let err = refused(&verifier, &cognito_sign(&claims));
    assert_eq!(err, AuthError::WrongAudience { expected: format!("client_id `{CLIENT_ID}`") });
}

#[test]
fn with_audience_and_client_id_configured_either_is_enough() {
    let config = VerifierConfig { audience: Some("ota-api".into()), ..cognito_config() };
    let verifier = JwtVerifier::from_jwks_json(config, &cognito_jwks_json()).unwrap();
    let access = cognito_access_claims();
    assert!(verifier.verify(&cognito_sign(&access)).is_ok());
    let mut other = access.clone();
    other.as_object_mut().unwrap().remove("client_id");
    other["aud"] = json!(["ota-api"]);
    assert!(verifier.verify(&cognito_sign(&other)).is_ok());
    other["aud"] = json!("elsewhere");
    assert!(matches!(refused(&verifier, &cognito_sign(&other)), AuthError::WrongAudience { .. }));
}

#[test]
fn a_local_token_is_refused_by_the_cognito_verifier() {
    let verifier = JwtVerifier::from_jwks_json(cognito_config(), &cognito_jwks_json()).unwrap();
    let local = Local::new();
    let token = local.issuer.issue("ana", Role::Admin, Duration::from_secs(600)).unwrap();
    assert_eq!(refused(&verifier, &token), AuthError::UnknownKey);
}
