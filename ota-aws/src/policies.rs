//! Where the authorization policies live on AWS: one object in the firmware bucket,
//! `policies/policies.cedar` (`OTA_AWS_POLICIES_KEY` to move it), that both Lambdas and
//! `ota --backend aws` load before serving anything. No object: the default policies (the role
//! matrix). An object that does not parse or validate against the schema keeps the function
//! from starting, naming the object, line and column: never a fallback to allow.
//!
//! Write it with `ota policy check FILE` first, then
//! `aws s3 cp FILE s3://BUCKET/policies/policies.cedar`; functions read it at a cold start.
//! The presigning role cannot read it (it reads `firmwares/*` only), nor can devices.

use std::sync::Arc;

use ota_core::Result;
use ota_core::authz::Authorizer;
use ota_core::ports::Backend;
use ota_core::service::FleetManager;

use crate::errors::{FailureKind, aws};
use crate::{AwsClients, AwsSettings};

/// The default key of the policy object.
pub const POLICIES_KEY: &str = "policies/policies.cedar";

/// The policies of the deployment: `Some` when the object exists (and validates), `None` when
/// there is none (the default policies apply). A policy file that does not validate is the
/// error [`Authorizer::from_text`] gives, its source named `s3://{bucket}/{key}`.
pub async fn load(clients: &AwsClients, settings: &AwsSettings) -> Result<Option<Arc<Authorizer>>> {
    let key = settings.policies_key.as_str();
    let source = format!("s3://{}/{key}", settings.bucket);
    let object = match clients.s3.get_object().bucket(&settings.bucket).key(key).send().await {
        Ok(o) => o,
        Err(e) => {
            return match aws("s3:GetObject")(e) {
                // No object, or no bucket yet (a deployment being set up): the defaults.
                f if f.kind == FailureKind::NotFound || f.code == "NoSuchBucket" => Ok(None),
                f => Err(f.into_error()),
            };
        }
    };
    let bytes = object
        .body
        .collect()
        .await
        .map_err(|e| ota_core::Error::storage(format!("cannot read {source}: {e}")))?
        .into_bytes();
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|_| ota_core::Error::invalid("policy file", source.clone(), "not UTF-8 text"))?;
    Ok(Some(Arc::new(Authorizer::from_text(&text, &source)?)))
}

/// The service of a deployment, as every AWS front door builds it: `settings.service` over
/// `backend`, decided by the deployment's policies ([`load`]).
pub async fn service(clients: &AwsClients, settings: &AwsSettings, backend: Backend) -> Result<FleetManager> {
    let svc = FleetManager::new(backend, settings.service.clone())?;
    Ok(match load(clients, settings).await? {
        Some(policies) => svc.with_authorizer(policies),
        None => svc,
    })
}
