//! Plans cache verification, but never past a change to the image: replacing
//! `firmware.bin` in place (same digest files) makes the next plan hash it again and refuse.

use ota_core::auth::{Caller, Role};
use ota_core::device::Device;
use ota_core::names::{DeviceType, NamingConvention, ThingName};
use ota_core::service::{FleetManager, PublishRequest, Settings};
use ota_core::targeting::{Filters, Target, UpdateAction, UpdateRequest};
use ota_core::version::{FirmwareVersion, VersionRequest};

#[tokio::test]
async fn an_image_replaced_in_place_is_hashed_again_by_the_next_plan() {
    let dir = tempfile::tempdir().unwrap();
    let backend = ota_local::open_backend(dir.path()).unwrap();
    let svc = FleetManager::new(backend.clone(), Settings::default()).expect("valid settings");
    let admin = Caller::new("admin", [Role::Admin]);
    let ty = DeviceType::parse("pet_feeder").unwrap();
    let publish = PublishRequest {
        device_type: ty.clone(),
        version: FirmwareVersion::parse("2.0.0").unwrap(),
        image: vec![3; 64 * 1024],
        release_notes: String::new(),
        built_at: None,
        extra: Default::default(),
    };
    svc.publish_firmware(&admin, publish).await.unwrap();
    let device = Device {
        firmware_version: Some(FirmwareVersion::new(1, 0, 0)),
        connected: true,
        last_seen: None,
        ..Device::new(
            ThingName::parse("pet_feeder-01").unwrap(),
            ty.clone(),
            NamingConvention::default().thing_group_of(&ty),
        )
    };
    backend.registry.upsert(device).await.unwrap();
    svc.set_ota_enabled(&admin, &ty, true).await.unwrap();
    let req = UpdateRequest {
        action: UpdateAction::Update,
        version: VersionRequest::Latest,
        target: Target { device_types: [ty.clone()].into(), ..Default::default() },
        filters: Filters::default(),
        revert_on_abort: false,
    };
    assert_eq!(svc.plan_update(&admin, &req).await.unwrap().deployments.len(), 1);
    let image = dir.path().join("firmwares/v2.0.0/pet_feeder/firmware.bin");
    std::fs::write(&image, vec![4u8; 64 * 1024 + 1]).unwrap();
    let plan = svc.plan_update(&admin, &req).await.unwrap();
    assert!(plan.deployments.is_empty(), "a tampered image must not be planned: {plan:?}");
    assert_eq!(plan.refusals.len(), 1, "{:?}", plan.refusals);
}
