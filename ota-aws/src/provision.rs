//! Creates the bucket and tables of a deployment where no template did: moto in tests, and
//! `ota aws seed-demo --create-resources` against an emulator. On AWS the SAM template
//! (`deploy/template.yaml`) owns these resources with encryption, versioning and backups;
//! the key schemas here are the same.

use aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use ota_core::{Error, Result};

use crate::errors::{FailureKind, aws};
use crate::{AwsClients, AwsSettings};

/// One key attribute: name, type, role.
type KeyPart = (&'static str, ScalarAttributeType, KeyType);

/// Creates what is missing; existing resources are left as they are.
pub async fn create_resources(clients: &AwsClients, settings: &AwsSettings) -> Result<()> {
    match clients.s3.create_bucket().bucket(&settings.bucket).send().await {
        Ok(_) => {}
        Err(e) => match aws("s3:CreateBucket")(e) {
            f if f.kind == FailureKind::AlreadyExists || f.code == "BucketAlreadyExists" => {}
            f => return Err(f.into_error()),
        },
    }
    let tables: [(&str, &[KeyPart]); 6] = [
        ("config", &[("device_type", ScalarAttributeType::S, KeyType::Hash)]),
        ("rollouts", &[("id", ScalarAttributeType::S, KeyType::Hash)]),
        ("sessions", &[("id", ScalarAttributeType::S, KeyType::Hash)]),
        ("audit", &[("log", ScalarAttributeType::S, KeyType::Hash), ("seq", ScalarAttributeType::N, KeyType::Range)]),
        (
            "commands",
            &[("run_id", ScalarAttributeType::S, KeyType::Hash), ("idx", ScalarAttributeType::N, KeyType::Range)],
        ),
        (
            "telemetry",
            &[("thing", ScalarAttributeType::S, KeyType::Hash), ("at", ScalarAttributeType::N, KeyType::Range)],
        ),
    ];
    for (name, keys) in tables {
        let mut req =
            clients.dynamodb.create_table().table_name(settings.table(name)).billing_mode(BillingMode::PayPerRequest);
        for (attr, ty, kind) in keys {
            req = req.attribute_definitions(attribute(attr, ty)?).key_schema(key(attr, kind)?);
        }
        if name == "commands" {
            req = command_indexes(req)?;
        }
        match req.send().await {
            Ok(_) => {}
            Err(e) => match aws("dynamodb:CreateTable")(e) {
                f if f.kind == FailureKind::AlreadyExists => continue,
                f => return Err(f.into_error()),
            },
        }
        if name == "telemetry" {
            let ttl = TimeToLiveSpecification::builder()
                .attribute_name("expires_at")
                .enabled(true)
                .build()
                .map_err(Error::storage)?;
            clients
                .dynamodb
                .update_time_to_live()
                .table_name(settings.table(name))
                .time_to_live_specification(ttl)
                .send()
                .await
                .map_err(aws("dynamodb:UpdateTimeToLive"))
                .map_err(|f| f.into_error())?;
        }
    }
    Ok(())
}

fn attribute(name: &str, ty: &ScalarAttributeType) -> Result<AttributeDefinition> {
    AttributeDefinition::builder().attribute_name(name).attribute_type(ty.clone()).build().map_err(Error::storage)
}

fn key(name: &str, kind: &KeyType) -> Result<KeySchemaElement> {
    KeySchemaElement::builder().attribute_name(name).key_type(kind.clone()).build().map_err(Error::storage)
}

/// The commands table's indexes (ota-aws/src/commands.rs): `by_created` (run headers, newest
/// first) and `by_thing` (executions of a device), keys only.
fn command_indexes(mut req: CreateTableFluentBuilder) -> Result<CreateTableFluentBuilder> {
    let indexes: [(&str, KeyPart, KeyPart); 2] = [
        (
            "by_created",
            ("kind", ScalarAttributeType::S, KeyType::Hash),
            ("created_at", ScalarAttributeType::S, KeyType::Range),
        ),
        (
            "by_thing",
            ("thing", ScalarAttributeType::S, KeyType::Hash),
            ("run_id", ScalarAttributeType::S, KeyType::Range),
        ),
    ];
    for (index, hash, range) in indexes {
        for (attr, ty, _) in [&hash, &range] {
            if *attr != "run_id" {
                req = req.attribute_definitions(attribute(attr, ty)?);
            }
        }
        let gsi = GlobalSecondaryIndex::builder()
            .index_name(index)
            .key_schema(key(hash.0, &hash.2)?)
            .key_schema(key(range.0, &range.2)?)
            .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
            .build()
            .map_err(Error::storage)?;
        req = req.global_secondary_indexes(gsi);
    }
    Ok(req)
}
