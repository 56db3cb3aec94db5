//! A large catalog is not re-hashed on every plan: on S3, a second plan in the same process
//! (a warm Lambda, a long-running server) does not download the image again, while starting a
//! rollout always does. Image downloads are counted on the wire by an SDK interceptor.

mod moto;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use ota_core::auth::{Caller, Role};
use ota_core::device::Device;
use ota_core::names::{DeviceType, NamingConvention, ThingName};
use ota_core::service::{FleetManager, PublishRequest, Settings};
use ota_core::targeting::{Filters, Target, UpdateAction, UpdateRequest};
use ota_core::version::{FirmwareVersion, VersionRequest};

/// Counts GET requests for `firmware.bin` objects.
#[derive(Debug, Clone, Default)]
struct ImageGets(Arc<AtomicUsize>);

impl Intercept for ImageGets {
    fn name(&self) -> &'static str {
        "ImageGets"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let req = context.request();
        if req.method() == "GET" && req.uri().split('?').next().is_some_and(|p| p.ends_with("/firmware.bin")) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// Firmware `versions` of pet_feeder (64 KiB images of 3s) published through the service,
/// pet_feeder-01 on 1.0.0, OTA enabled; returns the service, the admin and the request to
/// update the type to its latest.
async fn world(
    clients: &ota_aws::AwsClients,
    settings: &ota_aws::AwsSettings,
    versions: &[&str],
) -> (FleetManager, Caller, UpdateRequest) {
    ota_aws::provision::create_resources(clients, settings).await.unwrap();
    let backend = ota_aws::backend(clients, settings, Some(moto::ACCOUNT.into()));
    let svc = FleetManager::new(backend.clone(), Settings::default()).expect("valid settings");
    let admin = Caller::new("admin", [Role::Admin]);
    let ty = DeviceType::parse("pet_feeder").unwrap();
    for v in versions {
        let req = PublishRequest {
            device_type: ty.clone(),
            version: FirmwareVersion::parse(v).unwrap(),
            image: vec![3; 64 * 1024],
            release_notes: String::new(),
            built_at: None,
            extra: Default::default(),
        };
        svc.publish_firmware(&admin, req).await.unwrap();
    }
    backend
        .registry
        .upsert(Device {
            firmware_version: Some(FirmwareVersion::new(1, 0, 0)),
            connected: true,
            last_seen: None,
            ..Device::new(
                ThingName::parse("pet_feeder-01").unwrap(),
                ty.clone(),
                NamingConvention::default().thing_group_of(&ty),
            )
        })
        .await
        .unwrap();
    svc.set_ota_enabled(&admin, &ty, true).await.unwrap();
    let req = UpdateRequest {
        action: UpdateAction::Update,
        version: VersionRequest::Latest,
        target: Target { device_types: [ty].into(), ..Default::default() },
        filters: Filters::default(),
        revert_on_abort: false,
    };
    (svc, admin, req)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_plan_does_not_download_the_image_again() {
    let Some(server) = moto::start() else { return };
    let settings = server.settings("cache");
    let mut clients = server.clients().await;
    let gets = ImageGets::default();
    clients.s3 = aws_sdk_s3::Client::from_conf(clients.s3.config().to_builder().interceptor(gets.clone()).build());
    let (svc, admin, req) = world(&clients, &settings, &["1.0.0", "2.0.0"]).await;
    let images = || gets.0.load(Ordering::SeqCst);
    assert_eq!(images(), 0, "publishing uploads, it does not download");

    let first = svc.plan_update(&admin, &req).await.unwrap();
    assert_eq!(first.deployments.len(), 1);
    assert_eq!(images(), 1, "the first plan hashes the 2.0.0 image");
    let second = svc.plan_update(&admin, &req).await.unwrap();
    assert_eq!(second.plan_id, first.plan_id);
    assert_eq!(images(), 1, "the second plan reuses the verification");

    // Starting never trusts the cache: the image is hashed again before the job exists.
    svc.start(&admin, &req, first.plan_id.as_deref()).await.unwrap();
    assert_eq!(images(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_replaced_in_place_is_hashed_again_by_the_next_plan() {
    let Some(server) = moto::start() else { return };
    let settings = server.settings("etag");
    let clients = server.clients().await;
    let (svc, admin, req) = world(&clients, &settings, &["2.0.0"]).await;
    assert_eq!(svc.plan_update(&admin, &req).await.unwrap().deployments.len(), 1);
    // Someone overwrites the image behind the catalog's back; the digest files still match
    // the old one, so only the ETag tells.
    clients
        .s3
        .put_object()
        .bucket(&settings.bucket)
        .key("firmwares/v2.0.0/pet_feeder/firmware.bin")
        .body(vec![4u8; 64 * 1024].into())
        .send()
        .await
        .unwrap();
    let plan = svc.plan_update(&admin, &req).await.unwrap();
    assert!(plan.deployments.is_empty(), "a tampered image must not be planned: {plan:?}");
    assert!(
        plan.refusals.iter().any(|r| r.reason.contains("sha") || r.reason.contains("integrity")),
        "{:?}",
        plan.refusals
    );
}
