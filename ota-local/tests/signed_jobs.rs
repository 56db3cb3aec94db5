//! Signed firmware through the local engine, on real SQLite and the firmware folder: a
//! rollout started from a signed image records the signature start verified, and every job
//! document the engine delivers (notify-next and `$next/get`) carries it, so a device that
//! trusts only the publishing key's public half accepts the job and verifies the image.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ota_core::auth::{Caller, Role};
use ota_core::device::Device;
use ota_core::integrity::Sha256Verifier;
use ota_core::job::validate;
use ota_core::names::{DeviceType, NamingConvention, ThingName};
use ota_core::ports::{DeviceRegistry, RolloutStore};
use ota_core::service::{FleetManager, PublishOptions, PublishRequest, Settings, SigningSettings, TrustedKeySetting};
use ota_core::signing::{KeyRing, LocalSigningKey};
use ota_core::targeting::{Filters, Target, UpdateAction, UpdateRequest};
use ota_core::version::{FirmwareVersion, VersionRequest};
use ota_local::{EngineContext, SqliteStore};
use serde_json::{Value, json};

fn ty() -> DeviceType {
    DeviceType::parse("pet_feeder").unwrap()
}

fn thing() -> ThingName {
    ThingName::parse("pet_feeder-01").unwrap()
}

/// The service stamps the rollout with the real clock; the engine runs after it.
fn now() -> DateTime<Utc> {
    Utc::now()
}

fn image(v: &str) -> Vec<u8> {
    format!("pet feeder image {v} ").repeat(500).into_bytes()
}

fn ctx() -> EngineContext {
    EngineContext {
        firmware_url: Arc::new(|v: &FirmwareVersion, t: &DeviceType, _| {
            format!("http://127.0.0.1:8080/firmwares/v{v}/{t}/firmware.bin")
        }),
    }
}

async fn signed_world(dir: &std::path::Path, k: &LocalSigningKey) -> (FleetManager, Arc<SqliteStore>) {
    let (backend, store) = ota_local::open_local(dir).unwrap();
    let settings = Settings {
        signing: SigningSettings {
            require_signed: true,
            trusted_keys: vec![TrustedKeySetting {
                key_id: k.key_id(),
                name: Some("release".into()),
                public_key: k.public_key_pem().unwrap(),
            }],
            revoked_keys: Vec::new(),
        },
        ..Settings::default()
    };
    let svc = FleetManager::new(backend, settings).unwrap();
    let admin = Caller::new("root", [Role::Admin]);
    for (v, security_version) in [("1.0.0", 1), ("2.0.0", 2)] {
        let req = PublishRequest {
            device_type: ty(),
            version: FirmwareVersion::parse(v).unwrap(),
            image: image(v),
            release_notes: String::new(),
            built_at: None,
            extra: Default::default(),
        };
        svc.publish_firmware_signed(&admin, req, PublishOptions { signer: Some(k), security_version }).await.unwrap();
    }
    svc.set_ota_enabled(&admin, &ty(), true).await.unwrap();
    store
        .upsert(Device {
            firmware_version: Some(FirmwareVersion::parse("1.0.0").unwrap()),
            connected: true,
            last_seen: None,
            ..Device::new(thing(), ty(), NamingConvention::default().thing_group_of(&ty()))
        })
        .await
        .unwrap();
    (svc, store)
}

fn update_to(v: &str) -> UpdateRequest {
    UpdateRequest {
        target: Target { device_types: [ty()].into(), ..Default::default() },
        version: VersionRequest::parse(v).unwrap(),
        filters: Filters::default(),
        action: UpdateAction::Update,
        revert_on_abort: false,
    }
}

fn json_of(p: &[u8]) -> Value {
    serde_json::from_slice(p).unwrap()
}

#[tokio::test]
async fn the_engine_delivers_the_signature_that_verifies_against_the_publishing_key() {
    let dir = tempfile::tempdir().unwrap();
    let k = LocalSigningKey::from_bytes(&[7; 32]).unwrap();
    let (svc, store) = signed_world(dir.path(), &k).await;
    let admin = Caller::new("root", [Role::Admin]);
    let started = svc.start(&admin, &update_to("2.0.0"), None).await.unwrap();
    let id = started.rollouts[0].id.clone();
    let stored = RolloutStore::get(store.as_ref(), &id).await.unwrap();
    assert_eq!(stored.security_version, 2);
    assert_eq!(stored.signature.as_ref().map(|s| s.key_id), Some(k.key_id()), "{stored:?}");

    // The device's side: it knows the public key only, and the digest is of the bytes it
    // would download (hashed here from the firmware folder itself).
    let ring = KeyRing::new(vec![k.trusted_key()], Vec::new());
    let served = std::fs::read(dir.path().join("firmwares/v2.0.0/pet_feeder/firmware.bin")).unwrap();
    let mut hasher = Sha256Verifier::new();
    hasher.update(&served);
    let (digest, size) = hasher.finish();
    let accept = |doc: &Value| {
        let job = validate(id.clone(), doc, &ty(), 1 << 24).unwrap_or_else(|e| panic!("{e}: {doc}"));
        assert_eq!((job.firmware.sha256, job.firmware.size), (digest, size));
        assert_eq!(job.firmware.security_version, 2);
        assert_eq!(job.version, FirmwareVersion::parse("2.0.0").unwrap());
        let signature = job.firmware.signature.as_ref().expect("the document carries the signature");
        assert_eq!(ring.verify(&digest, signature), Ok(k.key_id()));
        // Any other digest does not verify: the signature is over this image.
        let mut other = digest;
        other.0[0] ^= 1;
        assert!(ring.verify(&other, signature).is_err());
    };

    // notify-next, as the engine offers the job.
    let out = store.engine_tick(ctx(), now()).await.unwrap();
    let (_, payload) = out
        .publish
        .iter()
        .find(|(t, p)| t == "$aws/things/pet_feeder-01/jobs/notify-next" && json_of(p).get("execution").is_some())
        .unwrap_or_else(|| panic!("no offer: {out:?}"));
    let offered = json_of(payload)["execution"]["jobDocument"].clone();
    assert_eq!(offered["firmware"]["signature"]["keyId"], json!(k.key_id().to_hex()), "{offered}");
    accept(&offered);

    // `$next/get`, as a device that reconnects asks for it.
    let out = store
        .handle_device_message(
            ctx(),
            thing(),
            "$aws/things/pet_feeder-01/jobs/$next/get".into(),
            br#"{"clientToken":"t"}"#.to_vec(),
            now(),
        )
        .await
        .unwrap();
    let (_, payload) = out.publish.iter().find(|(t, _)| t.ends_with("$next/get/accepted")).unwrap();
    let asked = json_of(payload)["execution"]["jobDocument"].clone();
    assert_eq!(asked, offered, "both paths deliver the same document");
    accept(&asked);

    // And after a restart the rollout still has it.
    drop(store);
    let (_, reopened) = ota_local::open_local(dir.path()).unwrap();
    assert_eq!(RolloutStore::get(reopened.as_ref(), &id).await.unwrap(), stored);
}
