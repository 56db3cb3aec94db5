//! The device's signature and anti-rollback checks over the simulated world: a bad, unknown or
//! missing signature ends FAILED `signature_invalid` with the old slot running; an image
//! below the security floor is REJECTED `security_version_too_low` before a byte is fetched.

use serde_json::json;

use super::sim::*;
use super::*;
use crate::signing::{KeyRing, LocalSigningKey};

fn key(seed: u8) -> LocalSigningKey {
    LocalSigningKey::from_bytes(&[seed; 32]).unwrap()
}

/// A device that trusts `trusted`, offered `version` signed by `signer` (unsigned: `None`).
fn world(trusted: &LocalSigningKey, signer: Option<&LocalSigningKey>, tamper: bool) -> World {
    let mut w = World::new("1.0.0");
    w.config.trust = KeyRing::new(vec![trusted.trusted_key()], vec![]);
    let img = image("2.0.0", 10_000);
    let mut doc = document("2.0.0", &img);
    if let Some(s) = signer {
        doc["firmware"]["signature"] = s.sign_digest(&digest(&img)).unwrap().to_job_json();
    }
    let served = if tamper {
        // A man in the middle rewrites the image and the document's sha256 consistently.
        let evil: Vec<u8> = img.iter().map(|b| b ^ 0x5a).collect();
        doc["firmware"]["sha256"] = json!(digest(&evil).to_hex());
        evil
    } else {
        img
    };
    w.images.push((digest(&served), v("2.0.0")));
    w.served.push((doc["firmware"]["url"].as_str().unwrap().to_string(), served));
    w.offer_document("job-1", doc);
    w
}

#[test]
fn a_signed_image_from_a_trusted_key_installs() {
    let k = key(1);
    let mut w = world(&k, Some(&k), false);
    w.run_to_quiet(None);
    assert_eq!(w.running_version(), v("2.0.0"));
    assert_eq!(w.final_status("job-1").unwrap().0, "SUCCEEDED");
}

#[test]
fn tampered_unknown_or_unsigned_images_fail_and_the_old_slot_keeps_running() {
    let (k, stranger) = (key(1), key(2));
    for (name, mut w, key_id) in [
        ("tampered", world(&k, Some(&k), true), Some(k.key_id())),
        ("untrusted key", world(&k, Some(&stranger), false), Some(stranger.key_id())),
        ("unsigned", world(&k, None, false), None),
    ] {
        w.run_to_quiet(None);
        assert_eq!(w.running_version(), v("1.0.0"), "{name}");
        assert_eq!(w.executed(ActionKind::SetBootSlot), 0, "{name}: the boot slot never switched");
        let (status, details) = w.final_status("job-1").unwrap();
        assert_eq!((status.as_str(), &details["reason"]), ("FAILED", &json!("signature_invalid")), "{name}");
        assert_eq!(details.get("keyId").and_then(|k| k.as_str()), key_id.map(|k| k.to_hex()).as_deref(), "{name}");
    }
}

#[test]
fn an_image_below_the_security_floor_is_rejected_before_downloading() {
    let k = key(1);
    let mut w = world(&k, Some(&k), false);
    w.config.security_floor = 2;
    w.jobs[0].document["firmware"]["securityVersion"] = json!(1);
    w.run_to_quiet(None);
    assert_eq!(w.downloads, 0);
    let (status, details) = w.final_status("job-1").unwrap();
    assert_eq!((status.as_str(), &details["reason"]), ("REJECTED", &json!("security_version_too_low")));
    assert!(details["detail"].as_str().unwrap().contains("requires security version 2 or higher"), "{details}");
    assert_eq!(w.shadow.as_ref().unwrap()["securityVersion"], 2);
    // At the floor it installs.
    let mut w = world(&k, Some(&k), false);
    w.config.security_floor = 2;
    w.jobs[0].document["firmware"]["securityVersion"] = json!(2);
    w.run_to_quiet(None);
    assert_eq!(w.running_version(), v("2.0.0"));
}
