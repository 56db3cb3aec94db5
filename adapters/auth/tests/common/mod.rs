//! Token building blocks shared by the test files: a local issuer in a temp dir, its raw signing
//! key for hand-made claims, and base64url.

#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ota_auth::{LocalIssuer, SIGNING_KEY_FILE};
use serde_json::{Value, json};

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A local issuer with its key on disk, and that key for signing hand-made claims.
pub struct Local {
    pub dir: tempfile::TempDir,
    pub issuer: LocalIssuer,
    pub key: EncodingKey,
}

impl Local {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let issuer = LocalIssuer::load_or_create(dir.path()).unwrap();
        let pem = std::fs::read(dir.path().join(SIGNING_KEY_FILE)).unwrap();
        let key = EncodingKey::from_ec_pem(&pem).unwrap();
        Local { dir, issuer, key }
    }

    /// Claims a genuine local operator token would carry, valid for ten minutes.
    pub fn claims(&self) -> Value {
        let now = now();
        json!({"iss": "ota-local", "aud": "ota", "sub": "ana", "roles": ["operator"], "iat": now, "nbf": now, "exp": now + 600})
    }

    /// `claims` signed with the real local key under its real kid.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.issuer.kid().to_string());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

pub fn decode_b64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}
