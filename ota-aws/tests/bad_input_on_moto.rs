//! Bad input on moto: a firmware type folder with no thing group, and a rollout whose IoT job
//! was deleted outside ota (it still reads back; cancelling it and the monitor's abort are
//! checked on the request shapes, because moto answers CancelJob for a deleted job with a 500).

mod moto;

use ota_core::auth::{Caller, Role};
use ota_core::device::{Device, DeviceQuery};
use ota_core::names::{DeviceType, JobId, NamingConvention, ThingName};
use ota_core::ports::Backend;
use ota_core::rollout::RolloutStatus;
use ota_core::service::{FleetManager, PublishRequest, Settings};
use ota_core::targeting::{Filters, Target, UpdateAction, UpdateRequest};
use ota_core::version::{FirmwareVersion, VersionRequest};

fn admin() -> Caller {
    Caller::new("admin", [Role::Admin])
}

fn publish(ty: &DeviceType, version: &str) -> PublishRequest {
    PublishRequest {
        device_type: ty.clone(),
        version: FirmwareVersion::parse(version).unwrap(),
        image: vec![7; 2048],
        release_notes: String::new(),
        built_at: None,
        extra: Default::default(),
    }
}

fn update_all(ty: &DeviceType) -> UpdateRequest {
    UpdateRequest {
        action: UpdateAction::Update,
        version: VersionRequest::Latest,
        target: Target { device_types: [ty.clone()].into(), ..Default::default() },
        filters: Filters::default(),
        revert_on_abort: false,
    }
}

/// Firmware for `soil_sensor`, its OTA gate open, and no thing and no thing group.
async fn orphan_type_world(backend: Backend) -> serde_json::Value {
    let svc = FleetManager::new(backend, Settings::default()).expect("valid settings");
    let ty = DeviceType::parse("soil_sensor").unwrap();
    svc.publish_firmware(&admin(), publish(&ty, "1.0.0")).await.unwrap();
    svc.set_ota_enabled(&admin(), &ty, true).await.unwrap();
    let plan = svc.plan_update(&admin(), &update_all(&ty)).await.unwrap();
    let prompt = svc.plan_prompt(&admin(), "Update all soil_sensor devices to v1.0.0").await.unwrap();
    let status =
        svc.fleet_status(&admin(), &DeviceQuery { device_type: Some(ty.clone()), ..Default::default() }).await.unwrap();
    let types = svc.device_types(&admin()).await.unwrap();
    serde_json::json!({ "plan": plan, "prompt": prompt, "status": status, "types": types })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_folder_with_no_thing_group_plans_nothing_like_the_reference_backend() {
    let Some(server) = moto::start() else { return };
    let settings = server.settings("orphan");
    let clients = server.clients().await;
    ota_aws::provision::create_resources(&clients, &settings).await.unwrap();
    let on_aws = orphan_type_world(ota_aws::backend(&clients, &settings, Some(moto::ACCOUNT.into()))).await;
    let reference = orphan_type_world(ota_core::memory::backend()).await;
    // Not an error and not a crash: an empty plan that says why, exactly as the embedded
    // backends answer (the memory backend is the conformance suite's reference).
    assert_eq!(on_aws, reference);
    assert_eq!(on_aws["plan"]["message"], "Nothing to update.", "{on_aws}");
    assert!(on_aws["plan"]["deployments"].as_array().unwrap().is_empty(), "{on_aws}");
    assert!(on_aws["plan"]["plan_id"].is_null(), "nothing can be started: {on_aws}");
    let types = on_aws["types"].as_array().unwrap();
    assert_eq!(types.len(), 1, "the folder is a type: {on_aws}");
    assert_eq!((types[0]["device_type"].as_str(), types[0]["devices"].as_u64()), (Some("soil_sensor"), Some(0)));
}

/// A started rollout of `pet_feeder` 2.0.0 to two devices, on a fresh deployment.
async fn started(server: &moto::Moto, prefix: &str) -> (ota_aws::AwsClients, Backend, FleetManager, JobId) {
    let settings = server.settings(prefix);
    let clients = server.clients().await;
    ota_aws::provision::create_resources(&clients, &settings).await.unwrap();
    let backend = ota_aws::backend(&clients, &settings, Some(moto::ACCOUNT.into()));
    let svc = FleetManager::new(backend.clone(), Settings::default()).expect("valid settings");
    let ty = DeviceType::parse("pet_feeder").unwrap();
    for v in ["1.0.0", "2.0.0"] {
        svc.publish_firmware(&admin(), publish(&ty, v)).await.unwrap();
    }
    for n in ["pet_feeder-01", "pet_feeder-02"] {
        backend
            .registry
            .upsert(Device {
                firmware_version: Some(FirmwareVersion::new(1, 0, 0)),
                connected: true,
                last_seen: None,
                ..Device::new(ThingName::parse(n).unwrap(), ty.clone(), NamingConvention::default().thing_group_of(&ty))
            })
            .await
            .unwrap();
    }
    svc.set_ota_enabled(&admin(), &ty, true).await.unwrap();
    let id = svc.start(&admin(), &update_all(&ty), None).await.unwrap().rollouts[0].id.clone();
    (clients, backend, svc, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_whose_job_was_deleted_still_reads_back() {
    let Some(server) = moto::start() else { return };
    let (clients, _backend, svc, id) = started(&server, "deleted").await;
    clients.iot.delete_job().job_id(id.as_str()).force(true).send().await.expect("moto deletes the job");
    let gone = clients.iot.describe_job().job_id(id.as_str()).send().await.map(|_| ()).map_err(|e| {
        let f = ota_aws::errors::classify("iot:DescribeJob", e);
        (f.kind, f.code)
    });
    assert_eq!(
        gone,
        Err((ota_aws::errors::FailureKind::NotFound, "ResourceNotFoundException".to_string())),
        "what the monitor reads as a deleted job"
    );

    // The record is the rollout: it still reads back and lists as active (the type stays
    // locked) until it is cancelled or the monitor records it as aborted. Both of those call
    // CancelJob, which moto answers with a 500 for a deleted job: request_shape.rs checks them.
    let r = svc.rollout(&admin(), &id).await.unwrap();
    assert_eq!(r.status, RolloutStatus::InProgress);
    let active = svc
        .list_rollouts(&admin(), &ota_core::rollout::RolloutQuery { active_only: true, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(active.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), vec![id]);
    let unknown = svc.rollout(&admin(), &JobId::parse("update-pet_feeder-9_9_9-0000000000").unwrap()).await;
    assert!(matches!(unknown, Err(ota_core::Error::NotFound { .. })), "{unknown:?}");
}
