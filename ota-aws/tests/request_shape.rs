//! What moto cannot check, checked on the exact requests sent (aws-smithy-mocks): dynamic
//! thing groups for large deployments, Fleet Indexing queries on shadow fields, the monitor's
//! CancelJob and SNS Publish, and the messages for denied actions and exhausted retries.

use std::time::Duration;

use aws_sdk_iot::Client as Iot;
use aws_sdk_iot::operation::cancel_job::CancelJobOutput;
use aws_sdk_iot::operation::create_dynamic_thing_group::CreateDynamicThingGroupOutput;
use aws_sdk_iot::operation::create_job::CreateJobOutput;
use aws_sdk_iot::operation::describe_job::DescribeJobOutput;
use aws_sdk_iot::operation::search_index::SearchIndexOutput;
use aws_sdk_iot::types::{Job, JobProcessDetails, JobStatus, ThingConnectivity, ThingDocument};
use aws_sdk_s3::error::ErrorMetadata;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_sns::operation::publish::PublishOutput;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use ota_aws::{IotRegistry, JobSettings, JobsRolloutStore};
use ota_core::device::DeviceQuery;
use ota_core::names::{DeviceType, NamingConvention, ThingName};
use ota_core::ports::{DeviceRegistry, FirmwareCatalog, RolloutStore};
use ota_core::rollout::{Rollout, RolloutStatus};
use ota_core::version::VersionFilter;

fn rollout(things: usize) -> Rollout {
    let things: Vec<String> = (1..=things).map(|i| format!("pet_feeder-{i:03}")).collect();
    serde_json::from_value(serde_json::json!({
        "id": "update-pet_feeder-2_0_0-abc", "plan_id": "plan-1", "action": "update", "device_type": "pet_feeder",
        "thing_group": "PetFeederAWSDevice", "version": "2.0.0", "sha256": "ab".repeat(32), "size": 1000,
        "things": things, "fleet_query": "thingGroupNames:PetFeederAWSDevice AND NOT shadow.reported.firmwareVersion:2.0.0",
        "policy": {"max_in_flight": 10, "retries": {"failed": 1, "timed_out": 2}},
        "status": "IN_PROGRESS", "status_reason": null, "created_by": "op",
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
    }))
    .unwrap()
}

fn dynamo_ok() -> aws_sdk_dynamodb::Client {
    let tx = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .then_output(|| aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput::builder().build());
    mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &[&tx])
}

fn jobs(account: Option<&str>) -> JobSettings {
    JobSettings {
        bucket: "fw".into(),
        region: "eu-west-1".into(),
        account_id: account.map(str::to_string),
        presign_role_arn: Some("arn:aws:iam::111122223333:role/presign".into()),
        url_expiry_seconds: 3600,
        expected_update_minutes: 5,
    }
}

#[tokio::test]
async fn large_deployments_target_a_dynamic_group_from_the_fleet_query() {
    let group = mock!(Iot::create_dynamic_thing_group)
        .match_requests(|r| {
            r.thing_group_name() == Some("ota-update-pet_feeder-2_0_0-abc")
                && r.query_string()
                    == Some("thingGroupNames:PetFeederAWSDevice AND NOT shadow.reported.firmwareVersion:2.0.0")
        })
        .then_output(|| {
            CreateDynamicThingGroupOutput::builder()
                .thing_group_arn("arn:aws:iot:eu-west-1:111122223333:thinggroup/ota-update-pet_feeder-2_0_0-abc")
                .build()
        });
    let job = mock!(Iot::create_job)
        .match_requests(|r| {
            let retry = r.job_executions_retry_config().map(|c| c.criteria_list().len());
            r.targets() == ["arn:aws:iot:eu-west-1:111122223333:thinggroup/ota-update-pet_feeder-2_0_0-abc"]
                && r.target_selection() == Some(&aws_sdk_iot::types::TargetSelection::Snapshot)
                && r.presigned_url_config().and_then(|p| p.expires_in_sec()) == Some(3600)
                && r.job_executions_rollout_config().and_then(|c| c.maximum_per_minute()) == Some(2)
                && r.timeout_config().and_then(|t| t.in_progress_timeout_in_minutes()) == Some(30)
                && retry == Some(2)
        })
        .then_output(|| CreateJobOutput::builder().job_id("update-pet_feeder-2_0_0-abc").build());
    let iot = mock_client!(aws_sdk_iot, RuleMode::MatchAny, &[&group, &job]);
    let store = JobsRolloutStore::new(iot, dynamo_ok(), "ota-rollouts", jobs(Some("111122223333")));
    store.create(&rollout(150)).await.expect("created");
    assert_eq!((group.num_calls(), job.num_calls()), (1, 1));
}

#[tokio::test]
async fn small_deployments_target_thing_arns() {
    let job = mock!(Iot::create_job)
        .match_requests(|r| {
            r.targets().len() == 3 && r.targets()[0] == "arn:aws:iot:eu-west-1:111122223333:thing/pet_feeder-001"
        })
        .then_output(|| CreateJobOutput::builder().build());
    let iot = mock_client!(aws_sdk_iot, RuleMode::MatchAny, &[&job]);
    let store = JobsRolloutStore::new(iot, dynamo_ok(), "ota-rollouts", jobs(Some("111122223333")));
    store.create(&rollout(3)).await.expect("created");
    assert_eq!(job.num_calls(), 1);
}

#[tokio::test]
async fn a_signed_rollout_sends_its_signature_in_the_job_document_and_records_it() {
    let mut r = rollout(2);
    let key = ota_core::signing::LocalSigningKey::from_bytes(&[3; 32]).unwrap();
    r.signature = Some(key.sign_digest(&r.sha256).unwrap());
    r.security_version = 2;
    let expected = r.signature.clone().unwrap();
    let document_carries_it = move |doc: &str| {
        let doc: serde_json::Value = serde_json::from_str(doc).unwrap();
        let sig = &doc["firmware"]["signature"];
        sig["keyId"] == expected.key_id.to_hex().as_str()
            && sig["value"] == expected.value.as_str()
            && sig["alg"] == "ecdsa-p256-sha256"
            && doc["firmware"]["securityVersion"] == 2
    };
    let job = mock!(Iot::create_job)
        .match_requests(move |req| req.document().is_some_and(&document_carries_it))
        .then_output(|| CreateJobOutput::builder().build());
    let recorded = r.clone();
    let record = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(move |req| {
            req.transact_items().iter().filter_map(|i| i.put()).any(|p| {
                p.item().get("rollout").and_then(|v| v.as_s().ok()).is_some_and(|json| {
                    serde_json::from_str::<Rollout>(json).is_ok_and(|back| {
                        back.signature == recorded.signature && back.security_version == recorded.security_version
                    })
                })
            })
        })
        .then_output(|| aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput::builder().build());
    let iot = mock_client!(aws_sdk_iot, RuleMode::MatchAny, &[&job]);
    let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &[&record]);
    let store = JobsRolloutStore::new(iot, db, "ota-rollouts", jobs(Some("111122223333")));
    store.create(&r).await.expect("created");
    assert_eq!((job.num_calls(), record.num_calls()), (1, 1));
}

#[tokio::test]
async fn version_queries_go_to_fleet_indexing_with_shadow_fields() {
    let search = mock!(Iot::search_index)
        .match_requests(|r| {
            r.query_string()
                == Some(
                    "attributes.deviceType:* AND thingGroupNames:PetFeederAWSDevice AND shadow.reported.firmwareVersion:1.* AND connectivity.connected:true",
                )
        })
        .then_output(|| {
            SearchIndexOutput::builder()
                .things(
                    ThingDocument::builder()
                        .thing_name("pet_feeder-01")
                        .attributes("deviceType", "pet_feeder")
                        .attributes("thingGroup", "PetFeederAWSDevice")
                        .shadow(r#"{"reported":{"firmwareVersion":"1.2.0"},"version":3}"#)
                        .connectivity(ThingConnectivity::builder().connected(true).timestamp(1_767_225_600_000).build())
                        .build(),
                )
                .build()
        });
    let iot = mock_client!(aws_sdk_iot, RuleMode::MatchAny, &[&search]);
    let data = mock_client!(aws_sdk_iotdataplane, RuleMode::MatchAny, &[] as &[&aws_smithy_mocks::Rule]);
    let registry = IotRegistry::new(iot, data, NamingConvention::default(), true);
    let q = DeviceQuery {
        device_type: Some(DeviceType::parse("pet_feeder").unwrap()),
        version: Some(VersionFilter::parse("1.x").unwrap()),
        connected: Some(true),
        ..Default::default()
    };
    let found = registry.list(&q).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].thing, ThingName::parse("pet_feeder-01").unwrap());
    assert_eq!(found[0].firmware_version.as_ref().map(|v| v.to_string()).as_deref(), Some("1.2.0"));
    assert!(found[0].connected && found[0].last_seen.is_some(), "connectivity comes from the index");
}

#[tokio::test]
async fn denied_actions_are_named_and_throttling_says_retries_ran_out() {
    let denied = mock!(aws_sdk_s3::Client::list_objects_v2).then_error(|| {
        aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error::generic(
            ErrorMetadata::builder()
                .code("AccessDenied")
                .message("User is not authorized to perform: s3:ListBucket")
                .build(),
        )
    });
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, &[&denied]);
    let err = ota_aws::S3Catalog::new(s3, "fw").artifacts().await.unwrap_err().to_string();
    assert!(err.contains("AWS denied s3:ListBucket") && err.contains("grant s3:ListBucket"), "{err}");

    let throttled = mock!(Iot::describe_thing)
        .sequence()
        .error(|| {
            aws_sdk_iot::operation::describe_thing::DescribeThingError::generic(
                ErrorMetadata::builder().code("ThrottlingException").message("Rate exceeded").build(),
            )
        })
        .repeatedly()
        .build();
    let iot = mock_client!(aws_sdk_iot, RuleMode::MatchAny, &[&throttled], |c| c.retry_config(
        aws_sdk_iot::config::retry::RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(Duration::from_millis(1))
    ));
    let data = mock_client!(aws_sdk_iotdataplane, RuleMode::MatchAny, &[] as &[&aws_smithy_mocks::Rule]);
    let registry = IotRegistry::new(iot, data, NamingConvention::default(), false);
    let err = registry.get(&ThingName::parse("pet_feeder-01").unwrap()).await.unwrap_err().to_string();
    assert!(err.contains("throttled iot:DescribeThing") && err.contains("retries were exhausted"), "{err}");
    assert_eq!(throttled.num_calls(), 3, "the SDK retried before giving up");
}

#[tokio::test]
async fn a_missing_object_is_not_found() {
    let missing = mock!(aws_sdk_s3::Client::get_object)
        .then_error(|| // As deserialized from a real 404: the modeled error carries its code.
        GetObjectError::NoSuchKey(
            aws_sdk_s3::types::error::NoSuchKey::builder().meta(ErrorMetadata::builder().code("NoSuchKey").build()).build(),
        ));
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, &[&missing]);
    let a = ota_core::catalog::ArtifactRef::new(DeviceType::parse("pet_feeder").unwrap(), "2.0.0".parse().unwrap());
    let err = ota_aws::S3Catalog::new(s3, "fw").read_metadata(&a).await.unwrap_err();
    assert!(matches!(err, ota_core::Error::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn the_monitor_cancels_and_alerts_past_the_absolute_limit() {
    let backend = ota_core::memory::backend();
    let r = rollout(3);
    backend.rollouts.create(&r).await.unwrap();
    let describe = mock!(Iot::describe_job).then_output(|| {
        DescribeJobOutput::builder()
            .job(
                Job::builder()
                    .status(JobStatus::InProgress)
                    .job_process_details(
                        JobProcessDetails::builder()
                            .number_of_succeeded_things(389)
                            .number_of_failed_things(11)
                            .number_of_queued_things(100)
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let cancel = mock!(Iot::cancel_job)
        .match_requests(|c| {
            c.job_id() == Some("update-pet_feeder-2_0_0-abc")
                && c.reason_code() == Some("ABORTED")
                && c.comment().is_some_and(|m| m.contains("11 devices failed"))
        })
        .then_output(|| CancelJobOutput::builder().build());
    let publish = mock!(aws_sdk_sns::Client::publish)
        .match_requests(|p| {
            p.topic_arn() == Some("arn:aws:sns:eu-west-1:111122223333:ota-alerts")
                && p.message().is_some_and(|m| m.contains("update-pet_feeder-2_0_0-abc") && m.contains("ABORTED"))
        })
        .then_output(|| PublishOutput::builder().message_id("m-1").build());
    let monitor = ota_aws::monitor::Monitor {
        backend: backend.clone(),
        iot: mock_client!(aws_sdk_iot, RuleMode::MatchAny, &[&describe, &cancel]),
        sns: mock_client!(aws_sdk_sns, RuleMode::MatchAny, &[&publish]),
        topic_arn: Some("arn:aws:sns:eu-west-1:111122223333:ota-alerts".into()),
        service: None,
    };
    let checked = monitor.check_active(chrono::Utc::now()).await.unwrap();
    assert_eq!(checked.len(), 1);
    assert!(checked[0].alerted);
    assert_eq!((cancel.num_calls(), publish.num_calls()), (1, 1));
    let after = backend.rollouts.get(&r.id).await.unwrap();
    assert_eq!(after.status, ota_core::rollout::RolloutStatus::Aborted);
    assert_eq!(backend.audit.recent(1).await.unwrap()[0].operation, "abort");
    // Nothing active any more: a second run does nothing.
    assert!(monitor.check_active(chrono::Utc::now()).await.unwrap().is_empty());
    assert_eq!(publish.num_calls(), 1);
}

/// A DynamoDB whose rollouts table holds `r` (active) and accepts every transaction.
fn dynamo_holding(r: &Rollout) -> (aws_sdk_dynamodb::Client, aws_smithy_mocks::Rule) {
    use aws_sdk_dynamodb::types::AttributeValue;
    let json = serde_json::to_string(r).unwrap();
    let get = mock!(aws_sdk_dynamodb::Client::get_item).then_output(move || {
        aws_sdk_dynamodb::operation::get_item::GetItemOutput::builder()
            .item("id", AttributeValue::S("update-pet_feeder-2_0_0-abc".into()))
            .item("kind", AttributeValue::S("rollout".into()))
            .item("status", AttributeValue::S("IN_PROGRESS".into()))
            .item("rollout", AttributeValue::S(json.clone()))
            .build()
    });
    let tx = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .then_output(|| aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput::builder().build());
    (mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &[&get, &tx]), tx)
}

fn cancel_ok() -> aws_smithy_mocks::Rule {
    mock!(Iot::cancel_job)
        .match_requests(|c| c.job_id() == Some("update-pet_feeder-2_0_0-abc") && c.reason_code() == Some("CANCELED"))
        .then_output(|| CancelJobOutput::builder().build())
}

fn delete_group() -> aws_smithy_mocks::Rule {
    mock!(Iot::delete_dynamic_thing_group)
        .match_requests(|d| d.thing_group_name() == Some("ota-update-pet_feeder-2_0_0-abc"))
        .then_output(|| {
            aws_sdk_iot::operation::delete_dynamic_thing_group::DeleteDynamicThingGroupOutput::builder().build()
        })
}

#[tokio::test]
async fn finishing_a_large_rollout_deletes_its_dynamic_group() {
    let r = rollout(150);
    let (db, tx) = dynamo_holding(&r);
    let (cancel, delete) = (cancel_ok(), delete_group());
    let iot = mock_client!(aws_sdk_iot, RuleMode::MatchAny, &[&cancel, &delete]);
    let store = JobsRolloutStore::new(iot, db, "ota-rollouts", jobs(Some("111122223333")));
    let done = store.finish(&r.id, RolloutStatus::Canceled, "operator stop", chrono::Utc::now()).await.unwrap();
    assert_eq!(done.status, RolloutStatus::Canceled);
    assert_eq!((cancel.num_calls(), delete.num_calls(), tx.num_calls()), (1, 1, 1));
}

#[tokio::test]
async fn finishing_a_small_rollout_deletes_no_group() {
    let r = rollout(3);
    let (db, tx) = dynamo_holding(&r);
    let (cancel, delete) = (cancel_ok(), delete_group());
    let iot = mock_client!(aws_sdk_iot, RuleMode::MatchAny, &[&cancel, &delete]);
    let store = JobsRolloutStore::new(iot, db, "ota-rollouts", jobs(Some("111122223333")));
    store.finish(&r.id, RolloutStatus::Canceled, "operator stop", chrono::Utc::now()).await.unwrap();
    assert_eq!((cancel.num_calls(), delete.num_calls(), tx.num_calls()), (1, 0, 1), "it targeted thing ARNs");
}

#[tokio::test]
async fn a_group_that_cannot_be_deleted_keeps_the_rollout_active() {
    let r = rollout(150);
    let (db, tx) = dynamo_holding(&r);
    let cancel = cancel_ok();
    let denied = mock!(Iot::delete_dynamic_thing_group).then_error(|| {
        aws_sdk_iot::operation::delete_dynamic_thing_group::DeleteDynamicThingGroupError::generic(
            ErrorMetadata::builder().code("AccessDeniedException").message("not authorized").build(),
        )
    });
    let iot = mock_client!(aws_sdk_iot, RuleMode::MatchAny, &[&cancel, &denied]);
    let store = JobsRolloutStore::new(iot, db, "ota-rollouts", jobs(Some("111122223333")));
    let err = store.finish(&r.id, RolloutStatus::Canceled, "stop", chrono::Utc::now()).await.unwrap_err().to_string();
    assert!(
        err.contains("still active")
            && err.contains("ota-update-pet_feeder-2_0_0-abc")
            && err.contains("iot:DeleteDynamicThingGroup"),
        "{err}"
    );
    assert_eq!(tx.num_calls(), 0, "the record was not moved out of IN_PROGRESS");
}

#[tokio::test]
async fn a_job_that_cannot_be_created_leaves_no_dynamic_group() {
    let group = mock!(Iot::create_dynamic_thing_group).then_output(|| {
        CreateDynamicThingGroupOutput::builder()
            .thing_group_arn("arn:aws:iot:eu-west-1:111122223333:thinggroup/ota-update-pet_feeder-2_0_0-abc")
            .build()
    });
    let refused = mock!(Iot::create_job).then_error(|| {
        aws_sdk_iot::operation::create_job::CreateJobError::generic(
            ErrorMetadata::builder().code("LimitExceededException").message("too many active jobs").build(),
        )
    });
    let delete = delete_group();
    let iot = mock_client!(aws_sdk_iot, RuleMode::MatchAny, &[&group, &refused, &delete]);
    let tx = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .then_output(|| aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput::builder().build());
    let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &[&tx]);
    let store = JobsRolloutStore::new(iot, db, "ota-rollouts", jobs(Some("111122223333")));
    let err = store.create(&rollout(150)).await.unwrap_err().to_string();
    assert!(err.contains("iot:CreateJob") && err.contains("LimitExceededException"), "{err}");
    assert_eq!(delete.num_calls(), 1, "the group made for the job was deleted");
    assert_eq!(tx.num_calls(), 2, "record and lock written, then removed");
}

fn job_not_found() -> aws_sdk_iot::types::error::ResourceNotFoundException {
    // As deserialized from IoT's 404: the modeled error carries its code.
    aws_sdk_iot::types::error::ResourceNotFoundException::builder()
        .message("Job update-pet_feeder-2_0_0-abc does not exist")
        .meta(ErrorMetadata::builder().code("ResourceNotFoundException").build())
        .build()
}

#[tokio::test]
async fn cancelling_a_rollout_whose_job_was_deleted_succeeds_and_says_so() {
    let r = rollout(3);
    let (db, tx) = dynamo_holding(&r);
    let cancel = mock!(Iot::cancel_job)
        .then_error(|| aws_sdk_iot::operation::cancel_job::CancelJobError::ResourceNotFoundException(job_not_found()));
    let iot = mock_client!(aws_sdk_iot, RuleMode::MatchAny, &[&cancel]);
    let store = JobsRolloutStore::new(iot, db, "ota-rollouts", jobs(Some("111122223333")));
    let done = store.finish(&r.id, RolloutStatus::Canceled, "operator stop", chrono::Utc::now()).await.unwrap();
    assert_eq!(done.status, RolloutStatus::Canceled);
    let reason = done.status_reason.unwrap_or_default();
    assert!(reason.starts_with("operator stop") && reason.contains("job no longer existed"), "{reason}");
    assert_eq!((cancel.num_calls(), tx.num_calls()), (1, 1), "the record ended and the type was unlocked");
}

#[tokio::test]
async fn the_monitor_aborts_a_rollout_whose_job_was_deleted() {
    let backend = ota_core::memory::backend();
    let r = rollout(3);
    backend.rollouts.create(&r).await.unwrap();
    let describe = mock!(Iot::describe_job).then_error(|| {
        aws_sdk_iot::operation::describe_job::DescribeJobError::ResourceNotFoundException(job_not_found())
    });
    let cancel = mock!(Iot::cancel_job).then_output(|| CancelJobOutput::builder().build());
    let publish = mock!(aws_sdk_sns::Client::publish)
        .match_requests(|p| p.message().is_some_and(|m| m.contains("no longer exists") && m.contains("ABORTED")))
        .then_output(|| PublishOutput::builder().message_id("m-2").build());
    let monitor = ota_aws::monitor::Monitor {
        backend: backend.clone(),
        iot: mock_client!(aws_sdk_iot, RuleMode::MatchAny, &[&describe, &cancel]),
        sns: mock_client!(aws_sdk_sns, RuleMode::MatchAny, &[&publish]),
        topic_arn: Some("arn:aws:sns:eu-west-1:111122223333:ota-alerts".into()),
        service: None,
    };
    let checked = monitor.check_active(chrono::Utc::now()).await.unwrap();
    assert_eq!(checked.len(), 1);
    assert!(checked[0].alerted);
    assert_eq!((describe.num_calls(), cancel.num_calls(), publish.num_calls()), (1, 0, 1), "nothing left to cancel");
    let after = backend.rollouts.get(&r.id).await.unwrap();
    assert_eq!(after.status, RolloutStatus::Aborted);
    assert!(after.status_reason.unwrap_or_default().contains("no longer exists in AWS IoT"));
}

#[tokio::test]
async fn the_monitor_starts_the_revert_of_an_aborted_rollout_that_asks_for_one() {
    use ota_core::auth::{Caller, Role};
    use ota_core::service::{FleetManager, Settings};
    let backend = ota_core::memory::backend();
    let svc = std::sync::Arc::new(FleetManager::new(backend.clone(), Settings::default()).unwrap());
    let admin = Caller::new("admin", [Role::Admin]);
    ota_core::demo::seed(&svc, &admin, &["pet_feeder"], 4, |t, v| format!("{t}/{v}").into_bytes()).await.unwrap();
    let operator = Caller::new("operator", [Role::Operator]);
    let asked = svc
        .ask(&operator, "update all pet feeders to 3.0.0 and roll back the updated ones if it aborts", true, None)
        .await
        .unwrap();
    let update = asked.started.unwrap().rollouts[0].clone();
    // pet_feeder-01 (was 1.0.0) and -03 (was 2.0.0) updated before the job crossed the limit.
    for n in [1, 3] {
        let mut d =
            backend.registry.get(&ThingName::parse(&format!("pet_feeder-0{n}")).unwrap()).await.unwrap().unwrap();
        d.firmware_version = Some(ota_core::version::FirmwareVersion::new(3, 0, 0));
        backend.registry.upsert(d).await.unwrap();
    }
    let describe = mock!(Iot::describe_job).then_output(|| {
        DescribeJobOutput::builder()
            .job(
                Job::builder()
                    .status(JobStatus::InProgress)
                    .job_process_details(
                        JobProcessDetails::builder().number_of_succeeded_things(2).number_of_failed_things(11).build(),
                    )
                    .build(),
            )
            .build()
    });
    let cancel = mock!(Iot::cancel_job).then_output(|| CancelJobOutput::builder().build());
    let monitor = ota_aws::monitor::Monitor {
        backend: backend.clone(),
        iot: mock_client!(aws_sdk_iot, RuleMode::MatchAny, &[&describe, &cancel]),
        sns: mock_client!(aws_sdk_sns, RuleMode::MatchAny, &[]),
        topic_arn: None,
        service: Some(svc.clone()),
    };
    let checked = monitor.check_active(chrono::Utc::now()).await.unwrap();
    assert_eq!(checked.len(), 1);
    let words = checked[0].reverting.clone().expect("a revert started");
    assert!(words.starts_with("started rollback-pet_feeder-"), "{words}");
    let all = backend.rollouts.list(&Default::default()).await.unwrap();
    let revert = all.iter().find(|r| r.revert_of.as_ref() == Some(&update.id)).expect("linked revert");
    // The larger group first would be a tie (one device each): the lower version goes first.
    assert_eq!(revert.version.to_string(), "1.0.0");
    assert_eq!(revert.things, [ThingName::parse("pet_feeder-01").unwrap()]);
    assert_eq!(backend.audit.recent(1).await.unwrap()[0].operation, "revert");
}

#[tokio::test]
async fn job_executions_list_every_page_and_read_the_reasons_of_failures() {
    use aws_sdk_iot::operation::describe_job_execution::DescribeJobExecutionOutput;
    use aws_sdk_iot::operation::list_job_executions_for_job::ListJobExecutionsForJobOutput;
    use aws_sdk_iot::types::{
        JobExecution, JobExecutionStatus, JobExecutionStatusDetails, JobExecutionSummary, JobExecutionSummaryForJob,
    };
    let summary = |n: u32, s: JobExecutionStatus| {
        JobExecutionSummaryForJob::builder()
            .thing_arn(format!("arn:aws:iot:eu-west-1:111122223333:thing/pet_feeder-0{n}"))
            .job_execution_summary(JobExecutionSummary::builder().status(s).build())
            .build()
    };
    let first = mock!(Iot::list_job_executions_for_job)
        .match_requests(|r| r.job_id() == Some("update-pet_feeder-2_0_0-abc") && r.next_token().is_none())
        .then_output(move || {
            ListJobExecutionsForJobOutput::builder()
                .execution_summaries(summary(2, JobExecutionStatus::Succeeded))
                .execution_summaries(summary(1, JobExecutionStatus::Failed))
                .next_token("page-2")
                .build()
        });
    let second = mock!(Iot::list_job_executions_for_job)
        .match_requests(|r| r.next_token() == Some("page-2"))
        .then_output(move || {
            ListJobExecutionsForJobOutput::builder().execution_summaries(summary(3, JobExecutionStatus::Queued)).build()
        });
    let describe = mock!(Iot::describe_job_execution)
        .match_requests(|r| r.thing_name() == Some("pet_feeder-01"))
        .then_output(|| {
            DescribeJobExecutionOutput::builder()
                .execution(
                    JobExecution::builder()
                        .status(JobExecutionStatus::Failed)
                        .status_details(
                            JobExecutionStatusDetails::builder().details_map("reason", "sha256_mismatch").build(),
                        )
                        .build(),
                )
                .build()
        });
    let iot = mock_client!(aws_sdk_iot, RuleMode::MatchAny, &[&first, &second, &describe]);
    let id = ota_core::names::JobId::parse("update-pet_feeder-2_0_0-abc").unwrap();
    let listed = ota_aws::monitor::job_executions(&iot, &id).await.unwrap().unwrap();
    let rows: Vec<(&str, &str, Option<&str>)> =
        listed.iter().map(|e| (e.thing.as_str(), e.status.as_str(), e.reason.as_deref())).collect();
    assert_eq!(
        rows,
        [
            ("pet_feeder-01", "FAILED", Some("sha256_mismatch")),
            ("pet_feeder-02", "SUCCEEDED", None),
            ("pet_feeder-03", "QUEUED", None)
        ]
    );
    assert_eq!(describe.num_calls(), 1, "only the failure's reason is read");
}
