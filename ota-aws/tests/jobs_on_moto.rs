//! A rollout started through the service on moto becomes an IoT job whose document and
//! configurations read back exactly; cancelling it cancels the job.

mod moto;

use ota_core::auth::{Caller, Role};
use ota_core::device::Device;
use ota_core::names::{DeviceType, NamingConvention, ThingName};
use ota_core::rollout::RolloutStatus;
use ota_core::service::{FleetManager, PublishRequest, Settings};
use ota_core::targeting::{Filters, Target, UpdateAction, UpdateRequest};
use ota_core::version::{FirmwareVersion, VersionRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_rollout_is_a_job_with_its_configuration() {
    let Some(server) = moto::start() else { return };
    let settings = server.settings("jobs");
    let clients = server.clients().await;
    ota_aws::provision::create_resources(&clients, &settings).await.unwrap();
    let backend = ota_aws::backend(&clients, &settings, None);
    let svc = FleetManager::new(backend.clone(), Settings::default()).expect("valid settings");
    let admin = Caller::new("admin", [Role::Admin]);
    let ty = DeviceType::parse("pet_feeder").unwrap();
    for v in ["1.0.0", "2.0.0"] {
        let req = PublishRequest {
            device_type: ty.clone(),
            version: FirmwareVersion::parse(v).unwrap(),
            image: vec![7; 4096],
            release_notes: String::new(),
            built_at: None,
            extra: Default::default(),
        };
        svc.publish_firmware(&admin, req).await.unwrap();
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
    svc.set_ota_enabled(&admin, &ty, true).await.unwrap();
    let req = UpdateRequest {
        action: UpdateAction::Update,
        version: VersionRequest::Latest,
        target: Target { device_types: [ty.clone()].into(), ..Default::default() },
        filters: Filters::default(),
        revert_on_abort: false,
    };
    let started = svc.start(&admin, &req, None).await.unwrap();
    let id = started.rollouts[0].id.clone();

    let job = clients.iot.describe_job().job_id(id.as_str()).send().await.unwrap();
    let job = job.job().unwrap();
    let targets = job.targets();
    assert_eq!(targets.len(), 2);
    assert!(
        targets[0].starts_with("arn:aws:iot:us-east-1:") && targets[0].ends_with(":thing/pet_feeder-01"),
        "{targets:?}"
    );
    assert_eq!(job.target_selection(), Some(&aws_sdk_iot::types::TargetSelection::Snapshot));
    assert_eq!(job.presigned_url_config().and_then(|p| p.role_arn()), settings.presign_role_arn.as_deref());
    assert_eq!(
        job.job_executions_rollout_config().and_then(|r| r.maximum_per_minute()),
        Some(2),
        "10 in flight at 5 min each"
    );
    let abort = &job.abort_config().unwrap().criteria_list()[0];
    assert_eq!((abort.threshold_percentage(), abort.min_number_of_executed_things()), (5.0, 10));
    assert_eq!(job.timeout_config().and_then(|t| t.in_progress_timeout_in_minutes()), Some(30));

    let doc = clients.iot.get_job_document().job_id(id.as_str()).send().await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(doc.document().unwrap()).unwrap();
    assert_eq!(doc["operation"], "ota_update");
    assert_eq!(
        (doc["deviceType"].as_str(), doc["version"].as_str(), doc["rollback"].as_bool()),
        (Some("pet_feeder"), Some("2.0.0"), Some(false))
    );
    assert_eq!(
        doc["firmware"]["url"],
        "${aws:iot:s3-presigned-url-v2:https://s3.amazonaws.com/jobs-firmware/firmwares/v2.0.0/pet_feeder/firmware.bin}"
    );
    assert_eq!(
        (doc["firmware"]["size"].as_u64(), doc["firmware"]["sha256"].as_str()),
        (Some(4096), Some(started.rollouts[0].sha256.to_hex().as_str()))
    );

    // Repeating finds the job; a second create of the same id is refused by IoT as well.
    let again = svc.start(&admin, &req, None).await.unwrap();
    assert_eq!(again.existing, vec![id.clone()]);

    let canceled = svc.cancel(&admin, &id, "operator stop").await.unwrap();
    assert_eq!(canceled.status, RolloutStatus::Canceled);
    let job = clients.iot.describe_job().job_id(id.as_str()).send().await.unwrap();
    assert_eq!(job.job().and_then(|j| j.status()), Some(&aws_sdk_iot::types::JobStatus::Canceled));
    assert_eq!(job.job().and_then(|j| j.comment()), Some("operator stop"));
}
