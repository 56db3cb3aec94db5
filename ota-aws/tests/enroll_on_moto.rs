//! Enrolling and revoking a device on moto: the thing with its attributes in its type's group,
//! an active certificate attached to the thing and to the shared device policy, the ATS
//! endpoint, and revocation setting the certificate INACTIVE and detaching it. What moto
//! cannot show (that IoT evaluates the policy and refuses an inactive certificate) is AWS's
//! own behaviour; the policy document itself is checked in `ota_aws::enroll`'s unit tests.

mod moto;

use std::collections::BTreeMap;

use aws_sdk_iot::types::CertificateStatus;
use ota_aws::enroll::{AMAZON_ROOT_CA_1, Enroller};
use ota_core::Error;
use ota_core::names::{DeviceType, NamingConvention, ThingName};

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_device_has_its_thing_certificate_and_policy_and_revoking_deactivates_it() {
    let Some(server) = moto::start() else { return };
    let settings = server.settings("enroll");
    let clients = server.clients().await;
    let enroller = Enroller::new(&clients, &settings, Some(moto::ACCOUNT.into()));
    let iot = &clients.iot;
    let thing = ThingName::parse("pet_feeder-05").unwrap();
    let ty = DeviceType::parse("pet_feeder").unwrap();

    let bundle = enroller.enroll(&thing, &ty, &attrs(&[("location", "kitchen")])).await.unwrap();
    assert!(bundle.endpoint.ends_with("-ats.iot.us-east-1.amazonaws.com"), "{}", bundle.endpoint);
    assert_eq!(bundle.mqtt_url(), format!("mqtts://{}:8883", bundle.endpoint));
    assert_eq!(bundle.ca_pem.as_deref(), Some(AMAZON_ROOT_CA_1));
    assert!(bundle.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"), "{}", bundle.cert_pem);
    assert!(bundle.key_pem.contains("PRIVATE KEY-----"));
    assert!(!format!("{bundle:?}").contains(&bundle.key_pem[40..80]), "Debug never shows the key");

    // The thing: ota's attributes and the operator's, in its type's group, read back by the registry.
    let described = iot.describe_thing().thing_name(thing.as_str()).send().await.unwrap();
    let a = described.attributes().unwrap();
    assert_eq!((a["deviceType"].as_str(), a["location"].as_str()), ("pet_feeder", "kitchen"));
    let group = NamingConvention::default().thing_group_of(&ty);
    let members = iot.list_things_in_thing_group().thing_group_name(group.as_str()).send().await.unwrap();
    assert_eq!(members.things(), ["pet_feeder-05"]);
    let registry = ota_aws::backend(&clients, &settings, None).registry;
    let device = registry.get(&thing).await.unwrap().expect("a registered device");
    assert_eq!((device.device_type, device.thing_group), (ty.clone(), group));

    // The certificate: active, attached to the thing, with the device policy attached.
    let cert = iot.describe_certificate().certificate_id(&bundle.certificate_id).send().await.unwrap();
    let desc = cert.certificate_description().unwrap();
    assert_eq!(desc.status(), Some(&CertificateStatus::Active));
    assert_eq!(desc.certificate_pem(), Some(bundle.cert_pem.as_str()));
    let principals = iot.list_thing_principals().thing_name(thing.as_str()).send().await.unwrap();
    assert_eq!(principals.principals(), std::slice::from_ref(&bundle.certificate_arn));
    let attached = iot.list_attached_policies().target(&bundle.certificate_arn).send().await.unwrap();
    let names: Vec<_> = attached.policies().iter().filter_map(|p| p.policy_name()).collect();
    assert_eq!(names, ["enroll-device"]);
    let policy = iot.get_policy().policy_name("enroll-device").send().await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(policy.policy_document().unwrap()).unwrap();
    assert_eq!(doc, enroller.policy_document());
    assert!(doc.to_string().contains(":123456789012:topic/$aws/things/${iot:Connection.Thing.ThingName}/*"));

    // Enrolling again while the certificate is attached is refused, and creates nothing.
    let err = enroller.enroll(&thing, &ty, &BTreeMap::new()).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert!(err.to_string().contains("ota devices revoke pet_feeder-05"), "{err}");
    let certs = iot.list_certificates().send().await.unwrap();
    assert_eq!(certs.certificates().len(), 1, "no second certificate");

    // Revoking: INACTIVE, detached from the thing and the policy; the thing stays.
    let revoked = enroller.revoke(&thing).await.unwrap();
    assert_eq!(revoked.certificates, std::slice::from_ref(&bundle.certificate_arn));
    let cert = iot.describe_certificate().certificate_id(&bundle.certificate_id).send().await.unwrap();
    assert_eq!(cert.certificate_description().unwrap().status(), Some(&CertificateStatus::Inactive));
    let principals = iot.list_thing_principals().thing_name(thing.as_str()).send().await.unwrap();
    assert!(principals.principals().is_empty());
    let attached = iot.list_attached_policies().target(&bundle.certificate_arn).send().await.unwrap();
    assert!(attached.policies().is_empty());
    assert!(registry.get(&thing).await.unwrap().is_some());
    // Again: nothing left to revoke.
    assert!(enroller.revoke(&thing).await.unwrap().certificates.is_empty());

    // Enrolling after revocation issues a new certificate; the shared policy is reused.
    let again = enroller.enroll(&thing, &ty, &BTreeMap::new()).await.unwrap();
    assert_ne!(again.certificate_id, bundle.certificate_id);
    assert_eq!(again.policy, bundle.policy);
    let described = iot.describe_thing().thing_name(thing.as_str()).send().await.unwrap();
    assert_eq!(described.attributes().unwrap()["location"], "kitchen", "attributes merge, never drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_enrollments_are_refused_and_change_nothing() {
    let Some(server) = moto::start() else { return };
    let settings = server.settings("badenroll");
    let clients = server.clients().await;
    let enroller = Enroller::new(&clients, &settings, None);
    let iot = &clients.iot;
    let ty = DeviceType::parse("pet_feeder").unwrap();
    let thing = ThingName::parse("pet_feeder-07").unwrap();

    for bad in [attrs(&[("deviceType", "lamp")]), attrs(&[("room", "a b")]), attrs(&[("", "x")])] {
        let err = enroller.enroll(&thing, &ty, &bad).await.unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
    }
    assert!(iot.list_things().send().await.unwrap().things().is_empty(), "no thing created");
    assert!(iot.list_certificates().send().await.unwrap().certificates().is_empty(), "no certificate");
    assert!(iot.list_policies().send().await.unwrap().policies().is_empty(), "no policy");

    // A thing registered as another type keeps its type.
    enroller.enroll(&thing, &ty, &BTreeMap::new()).await.unwrap();
    enroller.revoke(&thing).await.unwrap();
    let lamp = DeviceType::parse("lamp").unwrap();
    let err = enroller.enroll(&thing, &lamp, &BTreeMap::new()).await.unwrap_err().to_string();
    assert!(err.contains("registered as a pet_feeder") && err.contains("--type pet_feeder"), "{err}");
    assert_eq!(iot.list_certificates().send().await.unwrap().certificates().len(), 1);

    // Revoking a thing that does not exist names it.
    let ghost = ThingName::parse("pet_feeder-99").unwrap();
    let err = enroller.revoke(&ghost).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }) && err.to_string().contains("pet_feeder-99"), "{err}");
}

// ---- Request shapes (no moto): a failure after the certificate exists. ----

mod shapes {
    use std::collections::BTreeMap;

    use aws_sdk_iot::Client as Iot;
    use aws_sdk_iot::error::ErrorMetadata;
    use aws_sdk_iot::operation::attach_thing_principal::AttachThingPrincipalError;
    use aws_sdk_iot::operation::create_keys_and_certificate::CreateKeysAndCertificateOutput;
    use aws_sdk_iot::operation::describe_endpoint::DescribeEndpointOutput;
    use aws_sdk_iot::operation::describe_thing::DescribeThingError;
    use aws_sdk_iot::types::{CertificateStatus, KeyPair};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use ota_aws::AwsClients;
    use ota_aws::enroll::Enroller;
    use ota_core::names::{DeviceType, ThingName};

    const CERT_ARN: &str = "arn:aws:iot:eu-west-1:111122223333:cert/c0ffee";

    #[tokio::test]
    async fn a_certificate_that_cannot_be_attached_is_deactivated_and_detached() {
        let not_found = mock!(Iot::describe_thing).then_error(|| {
            DescribeThingError::ResourceNotFoundException(
                aws_sdk_iot::types::error::ResourceNotFoundException::builder()
                    .meta(ErrorMetadata::builder().code("ResourceNotFoundException").build())
                    .build(),
            )
        });
        let principals = mock!(Iot::list_thing_principals).then_output(|| {
            aws_sdk_iot::operation::list_thing_principals::ListThingPrincipalsOutput::builder().build()
        });
        let endpoint =
            mock!(Iot::describe_endpoint).match_requests(|r| r.endpoint_type() == Some("iot:Data-ATS")).then_output(
                || DescribeEndpointOutput::builder().endpoint_address("abc-ats.iot.eu-west-1.amazonaws.com").build(),
            );
        let policy = mock!(Iot::create_policy)
            .match_requests(|r| r.policy_name() == Some("ota-device"))
            .then_output(|| aws_sdk_iot::operation::create_policy::CreatePolicyOutput::builder().build());
        let group = mock!(Iot::create_thing_group)
            .then_output(|| aws_sdk_iot::operation::create_thing_group::CreateThingGroupOutput::builder().build());
        let thing = mock!(Iot::create_thing)
            .then_output(|| aws_sdk_iot::operation::create_thing::CreateThingOutput::builder().build());
        let member = mock!(Iot::add_thing_to_thing_group).then_output(|| {
            aws_sdk_iot::operation::add_thing_to_thing_group::AddThingToThingGroupOutput::builder().build()
        });
        let keys = mock!(Iot::create_keys_and_certificate)
            .match_requests(|r| r.set_as_active() == Some(true))
            .then_output(|| {
                CreateKeysAndCertificateOutput::builder()
                    .certificate_arn(CERT_ARN)
                    .certificate_id("c0ffee")
                    .certificate_pem("-----BEGIN CERTIFICATE-----")
                    .key_pair(KeyPair::builder().private_key("-----BEGIN RSA PRIVATE KEY-----").build())
                    .build()
            });
        let attach_policy = mock!(Iot::attach_policy)
            .match_requests(|r| r.policy_name() == Some("ota-device") && r.target() == Some(CERT_ARN))
            .then_output(|| aws_sdk_iot::operation::attach_policy::AttachPolicyOutput::builder().build());
        let attach_thing = mock!(Iot::attach_thing_principal).then_error(|| {
            AttachThingPrincipalError::generic(
                ErrorMetadata::builder().code("AccessDeniedException").message("not authorized").build(),
            )
        });
        let deactivate = mock!(Iot::update_certificate)
            .match_requests(|r| {
                r.certificate_id() == Some("c0ffee") && r.new_status() == Some(&CertificateStatus::Inactive)
            })
            .then_output(|| aws_sdk_iot::operation::update_certificate::UpdateCertificateOutput::builder().build());
        let detach_thing =
            mock!(Iot::detach_thing_principal).match_requests(|r| r.principal() == Some(CERT_ARN)).then_output(|| {
                aws_sdk_iot::operation::detach_thing_principal::DetachThingPrincipalOutput::builder().build()
            });
        let detach_policy = mock!(Iot::detach_policy)
            .match_requests(|r| r.target() == Some(CERT_ARN))
            .then_output(|| aws_sdk_iot::operation::detach_policy::DetachPolicyOutput::builder().build());
        let iot = mock_client!(
            aws_sdk_iot,
            RuleMode::MatchAny,
            &[
                &not_found,
                &principals,
                &endpoint,
                &policy,
                &group,
                &thing,
                &member,
                &keys,
                &attach_policy,
                &attach_thing,
                &deactivate,
                &detach_thing,
                &detach_policy
            ]
        );
        let shadow = mock!(aws_sdk_iotdataplane::Client::update_thing_shadow).then_output(|| {
            aws_sdk_iotdataplane::operation::update_thing_shadow::UpdateThingShadowOutput::builder().build()
        });
        let iot_data = mock_client!(aws_sdk_iotdataplane, RuleMode::MatchAny, &[&shadow]);
        let shared = aws_config::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
        let mut clients = AwsClients::from_shared(&shared, false, "eu-west-1".into());
        clients.iot = iot;
        clients.iot_data = iot_data;
        let enroller = Enroller::new(&clients, &ota_aws::AwsSettings::new("fw"), Some("111122223333".into()));

        let thing_name = ThingName::parse("pet_feeder-05").unwrap();
        let ty = DeviceType::parse("pet_feeder").unwrap();
        let err = enroller.enroll(&thing_name, &ty, &BTreeMap::new()).await.unwrap_err().to_string();
        assert!(err.contains("iot:AttachThingPrincipal") && err.contains("AccessDeniedException"), "{err}");
        assert_eq!(keys.num_calls(), 1);
        assert_eq!(deactivate.num_calls(), 1, "the unattached certificate was set INACTIVE");
        assert_eq!((detach_thing.num_calls(), detach_policy.num_calls()), (1, 1), "and detached");
    }
}
