//! Signed firmware and anti-rollback through the service, over the in-memory backend: what
//! is refused at publish, plan and start, with the key and the reason, and that a refusal
//! changes nothing.

use std::sync::Arc;

use ota_core::Error;
use ota_core::auth::{Caller, Role};
use ota_core::catalog::{ArtifactRef, CatalogFile, FirmwareMetadata, sha256_file_content};
use ota_core::device::Device;
use ota_core::integrity::Sha256Verifier;
use ota_core::memory::{MemoryAudit, MemoryCatalog, MemoryConfig, MemoryRegistry, MemoryRollouts};
use ota_core::names::{DeviceType, NamingConvention, ThingName};
use ota_core::ports::Backend;
use ota_core::rollout::RolloutQuery;
use ota_core::service::{FleetManager, PublishOptions, PublishRequest, Settings, SigningSettings, TrustedKeySetting};
use ota_core::signing::{KeyId, LocalSigningKey};
use ota_core::targeting::{Filters, Target, UpdateAction, UpdateRequest};
use ota_core::version::{FirmwareVersion, VersionRequest};

fn admin() -> Caller {
    Caller::new("root", [Role::Admin])
}
fn ty() -> DeviceType {
    DeviceType::parse("pet_feeder").unwrap()
}
fn ver(s: &str) -> FirmwareVersion {
    FirmwareVersion::parse(s).unwrap()
}
fn key(seed: u8) -> LocalSigningKey {
    LocalSigningKey::from_bytes(&[seed; 32]).unwrap()
}
fn trusted(k: &LocalSigningKey) -> TrustedKeySetting {
    TrustedKeySetting { key_id: k.key_id(), name: None, public_key: k.public_key_pem().unwrap() }
}
fn signing(require: bool, keys: &[&LocalSigningKey], revoked: &[KeyId]) -> Settings {
    Settings {
        signing: SigningSettings {
            require_signed: require,
            trusted_keys: keys.iter().map(|k| trusted(k)).collect(),
            revoked_keys: revoked.to_vec(),
        },
        ..Settings::default()
    }
}

struct World {
    svc: FleetManager,
    backend: Backend,
    catalog: Arc<MemoryCatalog>,
}

fn world(settings: Settings) -> World {
    let catalog = Arc::new(MemoryCatalog::default());
    let backend = Backend {
        catalog: catalog.clone(),
        registry: Arc::new(MemoryRegistry::default()),
        config: Arc::new(MemoryConfig::default()),
        rollouts: Arc::new(MemoryRollouts::default()),
        audit: Arc::new(MemoryAudit::default()),
        telemetry: Arc::new(ota_core::memory::MemoryTelemetry::default()),
        commands: Arc::new(ota_core::memory::MemoryCommands::default()),
    };
    let svc = FleetManager::new(backend.clone(), settings).expect("valid settings");
    World { svc, backend, catalog }
}

/// The same world's storage seen through other settings (a restart with new trust).
fn reconfigured(w: &World, settings: Settings) -> FleetManager {
    FleetManager::new(w.backend.clone(), settings).unwrap()
}

fn request(v: &str) -> PublishRequest {
    PublishRequest {
        device_type: ty(),
        version: ver(v),
        image: format!("pet feeder image {v}").into_bytes(),
        release_notes: String::new(),
        built_at: None,
        extra: Default::default(),
    }
}

async fn publish(w: &World, v: &str, signer: Option<&LocalSigningKey>, security_version: u32) -> ota_core::Result<()> {
    let options = PublishOptions { signer: signer.map(|s| s as _), security_version };
    w.svc.publish_firmware_signed(&admin(), request(v), options).await.map(|_| ())
}

async fn add_device(w: &World, n: u32, running: &str) {
    w.svc.set_ota_enabled(&admin(), &ty(), true).await.unwrap();
    let naming = NamingConvention::default();
    w.backend
        .registry
        .upsert(Device {
            firmware_version: Some(ver(running)),
            connected: true,
            last_seen: None,
            ..Device::new(ThingName::parse(&format!("pet_feeder-{n:02}")).unwrap(), ty(), naming.thing_group_of(&ty()))
        })
        .await
        .unwrap();
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

async fn refusal(w: &World, svc: &FleetManager, req: &UpdateRequest) -> String {
    let plan = svc.plan_update(&admin(), req).await.unwrap();
    assert!(plan.deployments.is_empty(), "{plan:?}");
    let refused = plan.refusals.iter().map(|r| r.reason.clone()).collect::<Vec<_>>().join("; ");
    let err = svc.start(&admin(), req, None).await.unwrap_err();
    assert!(matches!(err, Error::Refused(_) | Error::Integrity { .. }), "{err}");
    let rollouts = w.backend.rollouts.list(&RolloutQuery::default()).await.unwrap();
    assert!(rollouts.is_empty(), "a refusal starts nothing: {rollouts:?}");
    refused
}

#[tokio::test]
async fn a_signed_publish_writes_firmware_sig_and_verifies() {
    let k = key(1);
    let w = world(signing(true, &[&k], &[]));
    publish(&w, "1.0.0", Some(&k), 2).await.unwrap();
    let a = ArtifactRef::new(ty(), ver("1.0.0"));
    let verified = w.svc.verify_firmware(&admin(), &a).await.unwrap();
    assert_eq!((verified.signed_by, verified.security_version), (Some(k.key_id()), 2));
    let meta = FirmwareMetadata::parse(&a, &w.backend.catalog.read_metadata(&a).await.unwrap()).unwrap();
    let sig = meta.signature.expect("metadata names the signature");
    assert_eq!(w.backend.catalog.read_signature(&a).await.unwrap(), sig.der(), "firmware.sig holds the DER");
    // Publishing the same version again is refused as before: published is immutable.
    assert!(matches!(publish(&w, "1.0.0", Some(&k), 2).await, Err(Error::AlreadyExists { .. })));
    // Signing again with the same key changes nothing.
    let again = w.svc.sign_firmware(&admin(), &a, &k).await.unwrap();
    assert_eq!(again.signed_by, Some(k.key_id()));
}

#[tokio::test]
async fn publish_refuses_unsigned_untrusted_and_revoked_when_required() {
    let (good, stranger, old) = (key(1), key(2), key(3));
    let w = world(signing(true, &[&good, &old], &[old.key_id()]));
    let err = publish(&w, "1.0.0", None, 0).await.unwrap_err().to_string();
    assert!(err.contains("signing is required"), "{err}");
    let err = publish(&w, "1.0.0", Some(&stranger), 0).await.unwrap_err().to_string();
    assert!(err.contains(&stranger.key_id().to_hex()) && err.contains("not trusted"), "{err}");
    let err = publish(&w, "1.0.0", Some(&old), 0).await.unwrap_err().to_string();
    assert!(err.contains(&old.key_id().to_hex()) && err.contains("revoked"), "{err}");
    assert!(w.backend.catalog.artifacts().await.unwrap().is_empty(), "nothing was written");
    publish(&w, "1.0.0", Some(&good), 0).await.unwrap();
}

#[tokio::test]
async fn an_artifact_swapped_with_consistent_files_is_refused_at_plan_and_start() {
    let k = key(1);
    let w = world(signing(true, &[&k], &[]));
    publish(&w, "1.0.0", Some(&k), 0).await.unwrap();
    publish(&w, "2.0.0", Some(&k), 0).await.unwrap();
    add_device(&w, 1, "1.0.0").await;
    assert_eq!(w.svc.plan_update(&admin(), &update_to("2.0.0")).await.unwrap().deployments.len(), 1);
    // The attacker rewrites all three files so they agree; the signature no longer matches.
    let a = ArtifactRef::new(ty(), ver("2.0.0"));
    let evil = b"evil image".to_vec();
    let mut v = Sha256Verifier::new();
    v.update(&evil);
    let (digest, size) = v.finish();
    let mut meta = FirmwareMetadata::parse(&a, &w.backend.catalog.read_metadata(&a).await.unwrap()).unwrap();
    meta.sha256 = digest;
    meta.size = size;
    w.catalog.put_raw(&a, CatalogFile::Image, Some(evil));
    w.catalog.put_raw(&a, CatalogFile::Sha256, Some(sha256_file_content(&digest).into_bytes()));
    w.catalog.put_raw(&a, CatalogFile::Metadata, Some(meta.to_json()));
    let reason = refusal(&w, &w.svc, &update_to("2.0.0")).await;
    assert!(reason.contains("signature_invalid") && reason.contains(&k.key_id().to_hex()), "{reason}");
    // Dropping the signature too makes it unsigned, which signing-required refuses.
    meta.signature = None;
    w.catalog.put_raw(&a, CatalogFile::Metadata, Some(meta.to_json()));
    w.catalog.put_raw(&a, CatalogFile::Signature, None);
    let reason = refusal(&w, &w.svc, &update_to("2.0.0")).await;
    assert!(reason.contains("not signed"), "{reason}");
}

#[tokio::test]
async fn revoking_a_key_refuses_what_it_signed_and_rotation_re_signs() {
    let (old, new) = (key(1), key(2));
    let w = world(signing(true, &[&old], &[]));
    publish(&w, "1.0.0", Some(&old), 0).await.unwrap();
    publish(&w, "2.0.0", Some(&old), 0).await.unwrap();
    add_device(&w, 1, "1.0.0").await;
    // Rotation: trust both, revoke the old one (a restart with new settings).
    let svc = reconfigured(&w, signing(true, &[&old, &new], &[old.key_id()]));
    let reason = refusal(&w, &svc, &update_to("2.0.0")).await;
    assert!(reason.contains(&old.key_id().to_hex()) && reason.contains("revoked"), "{reason}");
    let err = svc.sign_firmware(&admin(), &ArtifactRef::new(ty(), ver("2.0.0")), &old).await.unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
    let signed = svc.sign_firmware(&admin(), &ArtifactRef::new(ty(), ver("2.0.0")), &new).await.unwrap();
    assert_eq!(signed.signed_by, Some(new.key_id()));
    let plan = svc.plan_update(&admin(), &update_to("2.0.0")).await.unwrap();
    assert_eq!(plan.deployments.len(), 1, "{plan:?}");
    // Plan again after the restart: the same answer.
    let svc = reconfigured(&w, signing(true, &[&old, &new], &[old.key_id()]));
    assert_eq!(svc.plan_update(&admin(), &update_to("2.0.0")).await.unwrap().deployments.len(), 1);
}

#[tokio::test]
async fn unsigned_artifacts_stay_usable_where_signing_is_not_required() {
    let w = world(Settings::default());
    publish(&w, "1.0.0", None, 0).await.unwrap();
    publish(&w, "2.0.0", None, 0).await.unwrap();
    add_device(&w, 1, "1.0.0").await;
    assert_eq!(w.svc.plan_update(&admin(), &update_to("2.0.0")).await.unwrap().deployments.len(), 1);
    // Turning the requirement on refuses them, naming what to do.
    let svc = reconfigured(&w, signing(true, &[], &[]));
    let reason = refusal(&w, &svc, &update_to("2.0.0")).await;
    assert!(reason.contains("not signed") && reason.contains("ota firmware sign"), "{reason}");
    // Settings whose key id does not match the key are refused when the service is built.
    let k = key(4);
    let mut bad = signing(true, &[&k], &[]);
    bad.signing.trusted_keys[0].key_id = key(5).key_id();
    assert!(FleetManager::new(w.backend.clone(), bad).is_err());
}

#[tokio::test]
async fn a_rollback_below_a_devices_security_floor_is_refused() {
    let k = key(1);
    let w = world(signing(true, &[&k], &[]));
    publish(&w, "1.0.0", Some(&k), 1).await.unwrap();
    publish(&w, "2.0.0", Some(&k), 2).await.unwrap();
    publish(&w, "2.1.0", Some(&k), 2).await.unwrap();
    add_device(&w, 3, "2.1.0").await;
    let mut back = update_to("1.0.0");
    back.action = UpdateAction::Rollback;
    let reason = refusal(&w, &w.svc, &back).await;
    assert_eq!(reason, "pet_feeder-03 requires security version 2 or higher; 1.0.0 has 1");
    // Rolling back to a version the device may still run is planned.
    let mut ok = update_to("2.0.0");
    ok.action = UpdateAction::Rollback;
    assert_eq!(w.svc.plan_update(&admin(), &ok).await.unwrap().deployments.len(), 1);
}

#[tokio::test]
async fn a_started_rollout_records_the_verified_signature_and_its_documents_carry_it() {
    let k = key(1);
    let w = world(signing(true, &[&k], &[]));
    publish(&w, "1.0.0", Some(&k), 1).await.unwrap();
    publish(&w, "2.0.0", Some(&k), 3).await.unwrap();
    add_device(&w, 1, "1.0.0").await;
    let started = w.svc.start(&admin(), &update_to("2.0.0"), None).await.unwrap();
    let a = ArtifactRef::new(ty(), ver("2.0.0"));
    let meta = FirmwareMetadata::parse(&a, &w.backend.catalog.read_metadata(&a).await.unwrap()).unwrap();
    let stored = w.backend.rollouts.get(&started.rollouts[0].id).await.unwrap();
    assert_eq!((stored.signature.as_ref(), stored.security_version), (meta.signature.as_ref(), 3));
    // The document a device gets validates to the signed digest, and the signature verifies
    // with the device's key ring (the public key only).
    let doc = stored.job_document("https://h/firmware.bin".into()).to_value();
    let job = ota_core::job::validate(stored.id.clone(), &doc, &ty(), u64::MAX).unwrap();
    let ring = ota_core::signing::KeyRing::new(vec![k.trusted_key()], vec![]);
    assert_eq!(ring.verify(&job.firmware.sha256, job.firmware.signature.as_ref().unwrap()), Ok(k.key_id()));
    assert_eq!(job.firmware.security_version, 3);
}

#[tokio::test]
async fn an_unsigned_rollout_records_no_signature() {
    let w = world(Settings::default());
    publish(&w, "1.0.0", None, 0).await.unwrap();
    publish(&w, "2.0.0", None, 0).await.unwrap();
    add_device(&w, 1, "1.0.0").await;
    let started = w.svc.start(&admin(), &update_to("2.0.0"), None).await.unwrap();
    let r = &started.rollouts[0];
    assert_eq!((r.signature.as_ref(), r.security_version), (None, 0));
    let json = serde_json::to_value(r).unwrap();
    assert!(json.get("signature").is_none() && json.get("security_version").is_none(), "{json}");
}
