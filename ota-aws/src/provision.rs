//! Creates the bucket and tables of a deployment where no template did: moto in tests, and
//! `ota aws seed-demo --create-resources` against an emulator. On AWS the SAM template
//! (`deploy/template.yaml`) owns these resources with encryption, versioning and backups;
//! the key schemas here are the same.

use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
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
    let tables: [(&str, &[KeyPart]); 4] = [
        ("config", &[("device_type", ScalarAttributeType::S, KeyType::Hash)]),
        ("rollouts", &[("id", ScalarAttributeType::S, KeyType::Hash)]),
        ("sessions", &[("id", ScalarAttributeType::S, KeyType::Hash)]),
        ("audit", &[("log", ScalarAttributeType::S, KeyType::Hash), ("seq", ScalarAttributeType::N, KeyType::Range)]),
    ];
    for (name, keys) in tables {
        let mut req =
            clients.dynamodb.create_table().table_name(settings.table(name)).billing_mode(BillingMode::PayPerRequest);
        for (attr, ty, kind) in keys {
            req = req
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(*attr)
                        .attribute_type(ty.clone())
                        .build()
                        .map_err(Error::storage)?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(*attr)
                        .key_type(kind.clone())
                        .build()
                        .map_err(Error::storage)?,
                );
        }
        match req.send().await {
            Ok(_) => {}
            Err(e) => match aws("dynamodb:CreateTable")(e) {
                f if f.kind == FailureKind::AlreadyExists => {}
                f => return Err(f.into_error()),
            },
        }
    }
    Ok(())
}
