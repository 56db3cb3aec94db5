//! Enrolling a real device on AWS IoT Core: the thing (with its `deviceType` and `thingGroup`
//! attributes and the operator's own, in its type's thing group, as [`IotRegistry`] registers
//! devices), an active certificate and private key made by IoT (`CreateKeysAndCertificate`),
//! the device policy attached to the certificate and the certificate attached to the thing.
//! [`DeviceBundle`] holds exactly what the firmware's provisioning writes: `ca.pem`,
//! `cert.pem`, `key.pem` and the MQTT endpoint (`DescribeEndpoint`, `iot:Data-ATS`).
//! [`Enroller::revoke`] sets the device's certificates INACTIVE (IoT refuses connections with
//! them from then on) and detaches them from the thing and the policy.
//!
//! One shared policy, not one per device: its resources use
//! `${iot:Connection.Thing.ThingName}` and `Connect` requires
//! `iot:Connection.Thing.IsAttached`, so a certificate can connect only as the thing it is
//! attached to (client id = thing name) and publish, subscribe and receive only under
//! `$aws/things/{thing}/` (its jobs and shadow topics). The confinement is the same as a
//! per-device policy's, but there is one document to review and to change for the fleet (a
//! new policy version reaches every device at once, where per-device policies would need a
//! version per device, each capped at five versions), and revoking or deleting a device leaves
//! no policy behind. The name is `{table_prefix}-device` (`ota-device`); an existing policy of
//! that name (a template may own it) is used as it is.

use std::collections::BTreeMap;
use std::fmt;

use aws_sdk_iot::types::{AttributePayload, CertificateStatus};
use ota_core::device::Device;
use ota_core::names::{DeviceType, ThingName};
use ota_core::ports::DeviceRegistry;
use ota_core::{Error, Result};
use serde_json::{Value, json};

use crate::errors::{FailureKind, aws, fail};
use crate::{AwsClients, AwsSettings, IotRegistry};

/// Amazon Root CA 1, the root of the `iot:Data-ATS` endpoints' server certificates
/// (<https://www.amazontrust.com/repository/AmazonRootCA1.pem>, serial
/// 06:6c:9f:cf:99:bf:8c:0a:39:e2:f0:78:8a:43:e6:96:36:5b:ca, valid to 2038-01-17).
pub const AMAZON_ROOT_CA_1: &str = "-----BEGIN CERTIFICATE-----\n\
MIIDQTCCAimgAwIBAgITBmyfz5m/jAo54vB4ikPmljZbyjANBgkqhkiG9w0BAQsF\n\
ADA5MQswCQYDVQQGEwJVUzEPMA0GA1UEChMGQW1hem9uMRkwFwYDVQQDExBBbWF6\n\
b24gUm9vdCBDQSAxMB4XDTE1MDUyNjAwMDAwMFoXDTM4MDExNzAwMDAwMFowOTEL\n\
MAkGA1UEBhMCVVMxDzANBgNVBAoTBkFtYXpvbjEZMBcGA1UEAxMQQW1hem9uIFJv\n\
b3QgQ0EgMTCCASIwDQYJKoZIhvcNAQEBBQADggEPADCCAQoCggEBALJ4gHHKeNXj\n\
ca9HgFB0fW7Y14h29Jlo91ghYPl0hAEvrAIthtOgQ3pOsqTQNroBvo3bSMgHFzZM\n\
9O6II8c+6zf1tRn4SWiw3te5djgdYZ6k/oI2peVKVuRF4fn9tBb6dNqcmzU5L/qw\n\
IFAGbHrQgLKm+a/sRxmPUDgH3KKHOVj4utWp+UhnMJbulHheb4mjUcAwhmahRWa6\n\
VOujw5H5SNz/0egwLX0tdHA114gk957EWW67c4cX8jJGKLhD+rcdqsq08p8kDi1L\n\
93FcXmn/6pUCyziKrlA4b9v7LWIbxcceVOF34GfID5yHI9Y/QCB/IIDEgEw+OyQm\n\
jgSubJrIqg0CAwEAAaNCMEAwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8BAf8EBAMC\n\
AYYwHQYDVR0OBBYEFIQYzIU07LwMlJQuCFmcx7IQTgoIMA0GCSqGSIb3DQEBCwUA\n\
A4IBAQCY8jdaQZChGsV2USggNiMOruYou6r4lK5IpDB/G/wkjUu0yKGX9rbxenDI\n\
U5PMCCjjmCXPI6T53iHTfIUJrU6adTrCC2qJeHZERxhlbI1Bjjt/msv0tadQ1wUs\n\
N+gDS63pYaACbvXy8MWy7Vu33PqUXHeeE6V/Uq2V8viTO96LXFvKWlJbYK8U90vv\n\
o/ufQJVtMVT8QtPHRh8jrdkPSHCa2XV4cdFyQzR1bldZwgJcJmApzyMZFo6IQ6XU\n\
5MsI+yMRQ+hDKXJioaldXgjUkK642M4UwtBV8ob2xJNDd2ZhwLnoQdeXeGADbkpy\n\
rqXRfboQnoZsG4q5WTP468SQvvG5\n\
-----END CERTIFICATE-----\n";

/// Attributes ota itself writes on every thing ([`IotRegistry`]).
const RESERVED: [&str; 2] = ["deviceType", "thingGroup"];
/// IoT allows 50 attributes per thing; ota's two included.
const MAX_ATTRIBUTES: usize = 48;

/// What a device needs to connect, as the firmware's provisioning expects it. The private key
/// exists only here: IoT does not keep it, so it cannot be fetched again.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceBundle {
    pub thing: ThingName,
    pub device_type: DeviceType,
    /// The server's root (`ca.pem`): Amazon Root CA 1 for the ATS endpoint.
    pub ca_pem: Option<String>,
    /// The device certificate (`cert.pem`).
    pub cert_pem: String,
    /// The device's private key (`key.pem`); never printed by `Debug`.
    pub key_pem: String,
    /// The MQTT endpoint host (`xxxx-ats.iot.REGION.amazonaws.com`).
    pub endpoint: String,
    pub certificate_id: String,
    pub certificate_arn: String,
    pub policy: String,
}

impl DeviceBundle {
    /// The firmware's `mqtt_url` setting.
    pub fn mqtt_url(&self) -> String {
        format!("mqtts://{}:8883", self.endpoint)
    }
}

impl fmt::Debug for DeviceBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceBundle")
            .field("thing", &self.thing)
            .field("device_type", &self.device_type)
            .field("endpoint", &self.endpoint)
            .field("certificate_id", &self.certificate_id)
            .field("policy", &self.policy)
            .field("key_pem", &"(not shown)")
            .finish_non_exhaustive()
    }
}

/// What [`Enroller::revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub thing: ThingName,
    /// The certificates set INACTIVE and detached (ARNs); empty when the thing had none left.
    pub certificates: Vec<String>,
}

/// Enrolls and revokes devices of one deployment.
#[derive(Debug, Clone)]
pub struct Enroller {
    iot: aws_sdk_iot::Client,
    registry: IotRegistry,
    settings: AwsSettings,
    region: String,
    account_id: Option<String>,
}

impl Enroller {
    /// `account_id` narrows the policy's resources to the account (`*` without it; the
    /// certificate's own account is the only one it can connect to either way).
    pub fn new(clients: &AwsClients, settings: &AwsSettings, account_id: Option<String>) -> Self {
        Enroller {
            iot: clients.iot.clone(),
            registry: IotRegistry::new(
                clients.iot.clone(),
                clients.iot_data.clone(),
                settings.naming.clone(),
                settings.fleet_index,
            ),
            settings: settings.clone(),
            region: clients.region.clone(),
            account_id,
        }
    }

    /// The device policy's name.
    pub fn policy_name(&self) -> String {
        format!("{}-device", self.settings.table_prefix)
    }

    /// The device policy's document.
    pub fn policy_document(&self) -> Value {
        device_policy(&self.region, self.account_id.as_deref().unwrap_or("*"))
    }

    /// Registers `thing` as a device of `device_type` with `attributes`, creates its active
    /// certificate and key, and returns them with the endpoint. Bad input, a thing already
    /// registered as another type, and a thing that still has a certificate are refused
    /// before anything is created.
    pub async fn enroll(
        &self,
        thing: &ThingName,
        device_type: &DeviceType,
        attributes: &BTreeMap<String, String>,
    ) -> Result<DeviceBundle> {
        validate_attributes(attributes)?;
        self.refuse_enrolled(thing, device_type).await?;
        let endpoint = self.endpoint().await?;
        let policy = self.ensure_policy().await?;

        let device = Device {
            firmware_version: None,
            connected: false,
            last_seen: None,
            ..Device::new(thing.clone(), device_type.clone(), self.settings.naming.thing_group_of(device_type))
        };
        self.registry.upsert(device).await?;
        if !attributes.is_empty() {
            let mut payload = AttributePayload::builder().merge(true);
            for (k, v) in attributes {
                payload = payload.attributes(k, v);
            }
            self.iot
                .update_thing()
                .thing_name(thing.as_str())
                .attribute_payload(payload.build())
                .send()
                .await
                .map_err(fail("iot:UpdateThing"))?;
        }

        let created = self
            .iot
            .create_keys_and_certificate()
            .set_as_active(true)
            .send()
            .await
            .map_err(fail("iot:CreateKeysAndCertificate"))?;
        let (Some(arn), Some(id), Some(cert_pem), Some(key_pem)) = (
            created.certificate_arn(),
            created.certificate_id(),
            created.certificate_pem(),
            created.key_pair().and_then(|k| k.private_key()),
        ) else {
            return Err(Error::storage("iot:CreateKeysAndCertificate returned no certificate or key"));
        };
        let bundle = DeviceBundle {
            thing: thing.clone(),
            device_type: device_type.clone(),
            ca_pem: Some(AMAZON_ROOT_CA_1.to_string()),
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            endpoint,
            certificate_id: id.to_string(),
            certificate_arn: arn.to_string(),
            policy,
        };
        if let Err(e) = self.attach(&bundle).await {
            // No usable certificate is left behind: it is deactivated and detached; the thing
            // stays registered, without a certificate, so enrolling it again works.
            self.retire(thing, &bundle.certificate_arn).await.ok();
            return Err(e);
        }
        Ok(bundle)
    }

    /// Sets every certificate of `thing` INACTIVE and detaches it from the thing and the
    /// device policy. The thing stays registered; enrolling it again issues a new certificate.
    pub async fn revoke(&self, thing: &ThingName) -> Result<Revocation> {
        let principals = self.principals(thing).await?;
        let mut certificates = Vec::new();
        for arn in principals {
            if certificate_id(&arn).is_none() {
                continue; // not an X.509 certificate (a Cognito identity): not ours to revoke
            }
            self.retire(thing, &arn).await?;
            certificates.push(arn);
        }
        Ok(Revocation { thing: thing.clone(), certificates })
    }

    /// The `iot:Data-ATS` endpoint host.
    pub async fn endpoint(&self) -> Result<String> {
        let out = self
            .iot
            .describe_endpoint()
            .endpoint_type("iot:Data-ATS")
            .send()
            .await
            .map_err(fail("iot:DescribeEndpoint"))?;
        out.endpoint_address()
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .ok_or_else(|| Error::storage("iot:DescribeEndpoint returned no endpoint address"))
    }

    async fn refuse_enrolled(&self, thing: &ThingName, device_type: &DeviceType) -> Result<()> {
        let described = match self.iot.describe_thing().thing_name(thing.as_str()).send().await {
            Ok(d) => d,
            Err(e) => match aws("iot:DescribeThing")(e) {
                f if f.kind == FailureKind::NotFound => return Ok(()),
                f => return Err(f.into_error()),
            },
        };
        if let Some(other) = described.attributes().and_then(|a| a.get(RESERVED[0]))
            && other != device_type.as_str()
        {
            return Err(Error::invalid(
                "device type",
                device_type.as_str(),
                format!("{thing} is registered as a {other}; enroll it with --type {other}"),
            ));
        }
        let principals = self.principals(thing).await?;
        if principals.iter().any(|p| certificate_id(p).is_some()) {
            return Err(Error::AlreadyExists {
                what: "enrolled device",
                name: thing.to_string(),
                hint: format!(
                    "it has a certificate ({}); revoke it first (ota devices revoke {thing}) to issue a new one",
                    principals.join(", ")
                ),
            });
        }
        Ok(())
    }

    async fn principals(&self, thing: &ThingName) -> Result<Vec<String>> {
        let mut pages = self.iot.list_thing_principals().thing_name(thing.as_str()).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws("iot:ListThingPrincipals")(e).not_found("device", thing.as_str()))?;
            out.extend(page.principals().iter().cloned());
        }
        Ok(out)
    }

    async fn ensure_policy(&self) -> Result<String> {
        let name = self.policy_name();
        let created = self
            .iot
            .create_policy()
            .policy_name(&name)
            .policy_document(self.policy_document().to_string())
            .send()
            .await;
        match created {
            Ok(_) => Ok(name),
            Err(e) => match aws("iot:CreatePolicy")(e) {
                f if f.kind == FailureKind::AlreadyExists => Ok(name),
                f => Err(f.into_error()),
            },
        }
    }

    async fn attach(&self, bundle: &DeviceBundle) -> Result<()> {
        self.iot
            .attach_policy()
            .policy_name(&bundle.policy)
            .target(&bundle.certificate_arn)
            .send()
            .await
            .map_err(fail("iot:AttachPolicy"))?;
        self.iot
            .attach_thing_principal()
            .thing_name(bundle.thing.as_str())
            .principal(&bundle.certificate_arn)
            .send()
            .await
            .map_err(fail("iot:AttachThingPrincipal"))?;
        Ok(())
    }

    /// INACTIVE first, so the certificate stops working even if a detach below fails.
    async fn retire(&self, thing: &ThingName, arn: &str) -> Result<()> {
        let id = certificate_id(arn).ok_or_else(|| Error::invalid("certificate", arn, "not a certificate ARN"))?;
        self.iot
            .update_certificate()
            .certificate_id(id)
            .new_status(CertificateStatus::Inactive)
            .send()
            .await
            .map_err(fail("iot:UpdateCertificate"))?;
        let detached = self.iot.detach_thing_principal().thing_name(thing.as_str()).principal(arn).send().await;
        if let Err(e) = detached {
            match aws("iot:DetachThingPrincipal")(e) {
                f if f.kind == FailureKind::NotFound => {}
                f => return Err(f.into_error()),
            }
        }
        let detached = self.iot.detach_policy().policy_name(self.policy_name()).target(arn).send().await;
        if let Err(e) = detached {
            match aws("iot:DetachPolicy")(e) {
                f if f.kind == FailureKind::NotFound => {}
                f => return Err(f.into_error()),
            }
        }
        Ok(())
    }
}

/// The certificate id of an IoT certificate ARN (`arn:aws:iot:REGION:ACCOUNT:cert/ID`).
fn certificate_id(arn: &str) -> Option<&str> {
    let (_, id) = arn.split_once(":cert/")?;
    (!id.is_empty()).then_some(id)
}

/// The device policy: connect only as the attached thing, and only its own `$aws/things/`
/// topics.
pub fn device_policy(region: &str, account: &str) -> Value {
    let arn = |kind: &str, rest: &str| format!("arn:aws:iot:{region}:{account}:{kind}/{rest}");
    let thing = "${iot:Connection.Thing.ThingName}";
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": arn("client", thing),
                "Condition": { "Bool": { "iot:Connection.Thing.IsAttached": "true" } }
            },
            {
                "Effect": "Allow",
                "Action": ["iot:Publish", "iot:Receive"],
                "Resource": arn("topic", &format!("$aws/things/{thing}/*"))
            },
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": arn("topicfilter", &format!("$aws/things/{thing}/*"))
            },
            // IoT Commands and telemetry, as deploy/template.yaml's DevicePolicy.
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": arn("topicfilter", &format!("$aws/commands/things/{thing}/executions/*"))
            },
            {
                "Effect": "Allow",
                "Action": "iot:Receive",
                "Resource": arn("topic", &format!("$aws/commands/things/{thing}/executions/*"))
            },
            {
                "Effect": "Allow",
                "Action": "iot:Publish",
                "Resource": [
                    arn("topic", &format!("$aws/commands/things/{thing}/executions/*/response/*")),
                    arn("topic", &format!("dt/ota/{thing}/telemetry"))
                ]
            }
        ]
    })
}

/// IoT's rules for attribute names and values, checked before anything is created.
fn validate_attributes(attributes: &BTreeMap<String, String>) -> Result<()> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(Error::invalid(
            "attributes",
            attributes.len().to_string(),
            format!("at most {MAX_ATTRIBUTES} per device (IoT allows 50, two of them ota's)"),
        ));
    }
    let name_ok = |c: char| c.is_ascii_alphanumeric() || "_.,@/:#-".contains(c);
    let value_ok = |c: char| name_ok(c) || "=[]".contains(c);
    for (k, v) in attributes {
        if RESERVED.contains(&k.as_str()) {
            return Err(Error::invalid("attribute", k, "is set by ota from --type; leave it out"));
        }
        if k.is_empty() || k.len() > 128 || !k.chars().all(name_ok) {
            return Err(Error::invalid(
                "attribute name",
                k,
                "expected 1-128 characters of letters, digits and _ . , @ / : # -",
            ));
        }
        if v.len() > 800 || !v.chars().all(value_ok) {
            return Err(Error::invalid(
                "attribute value",
                format!("{k}={v}"),
                "expected at most 800 characters of letters, digits and _ . , @ / : # - = [ ]",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_confines_a_certificate_to_its_own_thing() {
        let doc = device_policy("eu-west-1", "111122223333");
        let s = &doc["Statement"];
        assert_eq!(s[0]["Action"], "iot:Connect");
        assert_eq!(s[0]["Resource"], "arn:aws:iot:eu-west-1:111122223333:client/${iot:Connection.Thing.ThingName}");
        assert_eq!(s[0]["Condition"]["Bool"]["iot:Connection.Thing.IsAttached"], "true");
        assert_eq!(
            s[1]["Resource"],
            "arn:aws:iot:eu-west-1:111122223333:topic/$aws/things/${iot:Connection.Thing.ThingName}/*"
        );
        assert_eq!(
            s[2]["Resource"],
            "arn:aws:iot:eu-west-1:111122223333:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/*"
        );
        // Commands: its own executions only; telemetry: its own topic only.
        assert_eq!(
            s[3]["Resource"],
            "arn:aws:iot:eu-west-1:111122223333:topicfilter/$aws/commands/things/${iot:Connection.Thing.ThingName}/executions/*"
        );
        assert_eq!(
            s[5]["Resource"][1],
            "arn:aws:iot:eu-west-1:111122223333:topic/dt/ota/${iot:Connection.Thing.ThingName}/telemetry"
        );
        // Nothing else is allowed: no wildcard topic, no other action.
        assert_eq!(s.as_array().unwrap().len(), 6);
        assert!(!doc.to_string().contains("iot:*") && !doc.to_string().contains("topic/*"));
    }

    #[test]
    fn attributes_follow_iot_rules_and_ota_keeps_its_own() {
        let ok: BTreeMap<String, String> = [("location".into(), "kitchen/shelf-2".into())].into();
        assert!(validate_attributes(&ok).is_ok());
        for (k, v, says) in [
            ("deviceType", "x", "set by ota"),
            ("thingGroup", "x", "set by ota"),
            ("", "x", "attribute name"),
            ("has space", "x", "attribute name"),
            ("room", "a b", "attribute value"),
        ] {
            let bad: BTreeMap<String, String> = [(k.to_string(), v.to_string())].into();
            let err = validate_attributes(&bad).unwrap_err().to_string();
            assert!(err.contains(says), "{k}={v}: {err}");
        }
        let many: BTreeMap<String, String> = (0..49).map(|i| (format!("a{i}"), "v".to_string())).collect();
        assert!(validate_attributes(&many).is_err());
    }

    #[test]
    fn certificate_ids_come_from_certificate_arns_only() {
        assert_eq!(certificate_id("arn:aws:iot:us-east-1:123456789012:cert/abc123"), Some("abc123"));
        assert_eq!(certificate_id("us-east-1:1234-cognito-identity"), None);
        assert_eq!(certificate_id("arn:aws:iot:us-east-1:123456789012:cert/"), None);
    }

    #[test]
    fn the_bundle_never_prints_its_key() {
        assert!(AMAZON_ROOT_CA_1.starts_with("-----BEGIN CERTIFICATE-----\n"));
        let b = DeviceBundle {
            thing: ThingName::parse("pet_feeder-05").unwrap(),
            device_type: DeviceType::parse("pet_feeder").unwrap(),
            ca_pem: None,
            cert_pem: "CERT".into(),
            key_pem: "-----BEGIN RSA PRIVATE KEY-----SECRET".into(),
            endpoint: "abc-ats.iot.eu-west-1.amazonaws.com".into(),
            certificate_id: "id".into(),
            certificate_arn: "arn".into(),
            policy: "ota-device".into(),
        };
        assert!(!format!("{b:?}").contains("SECRET"));
        assert_eq!(b.mqtt_url(), "mqtts://abc-ats.iot.eu-west-1.amazonaws.com:8883");
    }
}
