//! The rollout monitor Lambda: on every EventBridge event (a one-minute schedule in
//! `deploy/template.yaml`) it checks every active rollout, aborts those past the absolute
//! failure limit, records jobs that ended in IoT, and publishes to SNS on every abort.
//! Resources come from the same `OTA_AWS_*` variables as the CLI.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use ota_aws::monitor::Monitor;
use ota_aws::{AwsSettings, connect};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let settings = AwsSettings::from_env()?;
    let (clients, backend) = connect(&settings).await?;
    // Reverts on abort go through the service, with every rule of a start and the deployment's
    // policies (a policy file that does not validate stops the function here).
    let service = std::sync::Arc::new(ota_aws::policies::service(&clients, &settings, backend.clone()).await?);
    let monitor = Monitor {
        backend,
        iot: clients.iot,
        sns: clients.sns,
        topic_arn: settings.alert_topic_arn,
        service: Some(service),
    };
    let monitor = &monitor;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<EventBridgeEvent>| async move {
        let checked = monitor.check_active(chrono::Utc::now()).await?;
        // One line per run in CloudWatch Logs: what was checked and what was done.
        println!("{}", serde_json::json!({ "event": event.payload.detail_type, "checked": checked }));
        Ok::<_, Error>(serde_json::json!({ "checked": checked }))
    }))
    .await
}
