//! The local issuer's key file: created once with owner-only permissions, reused across restarts,
//! and never silently replaced when it is unsafe or unreadable.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use ota_auth::{AuthError, LocalIssuer, SIGNING_KEY_FILE};
use ota_core::auth::{Caller, Role};

#[test]
fn the_key_is_created_owner_only_and_reused_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("nested/data");
    let first = LocalIssuer::load_or_create(&data_dir).unwrap();
    let path = data_dir.join(SIGNING_KEY_FILE);
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let token = first.issue("ana", Role::Admin, Duration::from_secs(60)).unwrap();

    let second = LocalIssuer::load_or_create(&data_dir).unwrap();
    assert_eq!(first.kid(), second.kid());
    assert_eq!(second.verifier().verify(&token).unwrap(), Caller::new("ana", [Role::Admin]));
    assert_eq!(fs::read_dir(&data_dir).unwrap().count(), 1, "no temporary files are left behind");
}

#[test]
fn the_published_jwks_holds_only_the_public_key_with_its_kid() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = LocalIssuer::load_or_create(dir.path()).unwrap();
    let json = serde_json::to_value(issuer.jwks()).unwrap();
    let key = &json["keys"][0];
    assert_eq!(json["keys"].as_array().unwrap().len(), 1);
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["kid"], issuer.kid());
    assert!(key.get("d").is_none(), "the private scalar must not be published: {key}");
    let header =
        jsonwebtoken::decode_header(issuer.issue("ana", Role::Viewer, Duration::from_secs(60)).unwrap()).unwrap();
    assert_eq!(header.kid.as_deref(), Some(issuer.kid()));
}

#[test]
fn a_key_file_others_can_read_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let kid = LocalIssuer::load_or_create(dir.path()).unwrap().kid().to_string();
    let path = dir.path().join(SIGNING_KEY_FILE);
    let before = fs::read(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let err = LocalIssuer::load_or_create(dir.path()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("chmod 600"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), before);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(LocalIssuer::load_or_create(dir.path()).unwrap().kid(), kid);
}

#[test]
fn a_corrupt_key_file_is_an_error_not_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SIGNING_KEY_FILE);
    fs::write(&path, "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let err = LocalIssuer::load_or_create(dir.path()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains(SIGNING_KEY_FILE), "{err}");
    assert!(fs::read_to_string(&path).unwrap().contains("bm90IGEga2V5"), "the file was replaced");
}

#[test]
fn concurrent_first_starts_agree_on_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let kids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..8).map(|_| s.spawn(|| LocalIssuer::load_or_create(dir.path()).map(|i| i.kid().to_string()))).collect();
        handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    assert!(kids.iter().all(|k| *k == kids[0]), "{kids:?}");
}

#[test]
fn issuing_refuses_empty_subjects_and_unreasonable_lifetimes() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = LocalIssuer::load_or_create(dir.path()).unwrap();
    for (subject, ttl) in [
        ("", Duration::from_secs(60)),
        ("  ", Duration::from_secs(60)),
        ("ana\n", Duration::from_secs(60)),
        ("ana", Duration::ZERO),
        ("ana", Duration::from_secs(400 * 24 * 3600)),
    ] {
        assert!(matches!(issuer.issue(subject, Role::Viewer, ttl), Err(AuthError::Issue(_))), "{subject:?} {ttl:?}");
    }
}
