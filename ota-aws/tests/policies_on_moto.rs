//! The deployment's authorization policies on S3 (moto): no object means the default
//! policies; a valid object decides; an object that does not validate is an error naming the
//! object with its line and column, so no function starts on it (never a fallback to allow).

mod moto;

use aws_sdk_s3::primitives::ByteStream;
use ota_core::auth::{Caller, Role};
use ota_core::authz::{Action, Context, Resource};

const SENIOR_REBOOT: &str = include_str!("../../examples/senior_operator_reboot.cedar");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_object_decides_and_a_bad_one_stops_the_service() {
    let Some(server) = moto::start() else { return };
    let settings = server.settings("pol1");
    let clients = server.clients().await;
    ota_aws::provision::create_resources(&clients, &settings).await.unwrap();
    let backend = ota_aws::backend(&clients, &settings, Some("123456789012".into()));

    // No object: the default policies (an operator may reboot).
    assert!(ota_aws::policies::load(&clients, &settings).await.unwrap().is_none());
    let svc = ota_aws::policies::service(&clients, &settings, backend.clone()).await.unwrap();
    let operator = Caller::new("ana", [Role::Operator]);
    let device = Resource::device("pet_feeder-03", "pet_feeder");
    let reboot = Context::at(chrono::Utc::now()).command("reboot", serde_json::json!({}));
    assert!(svc.authorizer().is_authorized(&operator, Action::SendCommand, &device, &reboot).allowed);

    // The example: only a senior_operator may reboot.
    let put = |text: String| {
        clients
            .s3
            .put_object()
            .bucket(&settings.bucket)
            .key(ota_aws::policies::POLICIES_KEY)
            .body(ByteStream::from(text.into_bytes()))
            .send()
    };
    put(SENIOR_REBOOT.to_string()).await.unwrap();
    let svc = ota_aws::policies::service(&clients, &settings, backend.clone()).await.unwrap();
    let d = svc.authorizer().is_authorized(&operator, Action::SendCommand, &device, &reboot);
    assert!(!d.allowed);
    let senior = operator.clone().with_groups(["senior_operator"]);
    assert!(svc.authorizer().is_authorized(&senior, Action::SendCommand, &device, &reboot).allowed);

    // A policy that does not validate (an attribute the schema lacks): an error, twice.
    let bad = SENIOR_REBOOT.replace("context.command == \"reboot\"", "context.colour == \"red\"");
    put(bad).await.unwrap();
    for _ in 0..2 {
        let e = ota_aws::policies::service(&clients, &settings, backend.clone()).await.unwrap_err().to_string();
        assert!(e.contains(&format!("s3://{}/policies/policies.cedar", settings.bucket)), "{e}");
        assert!(e.contains("line ") && e.contains("column "), "{e}");
    }
}
