//! The device registry on AWS IoT: one thing per device, one thing group per device type by
//! the naming convention, and the firmware version the device reports in its classic shadow
//! (`state.reported.firmwareVersion`, read through iot-data).
//!
//! Each thing carries the attributes `deviceType` and `thingGroup`, so a device round-trips
//! whatever the naming settings. Listing goes through Fleet Indexing `SearchIndex` when
//! indexing is on (one call per 500 devices, connectivity from the index). With it off
//! (moto, or an account without indexing) the registry is walked with `ListThingsInThingGroup`
//! / `ListThings` and each shadow read; connectivity then comes from the `connected` and
//! `lastSeen` fields that registration wrote into the shadow. Either way the whole
//! [`DeviceQuery`] is applied again to the results, so the semantics are exactly the domain's
//! (Fleet Indexing compares versions as strings; `<2.0.0` is filtered here).
//!
//! A device's configuration is its named shadow `config` (desired written by the service,
//! reported by the device): `get` reads it and `upsert` writes it when the record has one;
//! listings leave it empty (Fleet Indexing indexes named shadows only when configured to).

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use aws_sdk_iot::Client as Iot;
use aws_sdk_iotdataplane::Client as IotData;
use aws_sdk_iotdataplane::primitives::Blob;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use ota_core::Result;
use ota_core::device::{Device, DeviceQuery, Health, OperationalState, Telemetry};
use ota_core::names::{DeviceType, NamingConvention, ThingGroupName, ThingName};
use ota_core::ports::DeviceRegistry;
use ota_core::topics::CONFIG_SHADOW;
use ota_core::version::{FirmwareVersion, VersionFilter};
use serde_json::{Value, json};

use crate::errors::{FailureKind, aws, fail};

/// Shadow reads in flight at once when walking the registry.
const SHADOW_CONCURRENCY: usize = 16;
const ATTR_TYPE: &str = "deviceType";
const ATTR_GROUP: &str = "thingGroup";
/// The operational state operators set (`active` when absent).
const ATTR_STATE: &str = "otaState";

/// The registry on IoT Core.
#[derive(Debug, Clone)]
pub struct IotRegistry {
    iot: Iot,
    data: IotData,
    naming: NamingConvention,
    fleet_index: bool,
}

impl IotRegistry {
    pub fn new(iot: Iot, data: IotData, naming: NamingConvention, fleet_index: bool) -> Self {
        IotRegistry { iot, data, naming, fleet_index }
    }

    /// The Fleet Indexing query for the parts of `query` the index can answer.
    pub fn index_query(&self, query: &DeviceQuery) -> String {
        let mut parts = vec![format!("attributes.{ATTR_TYPE}:*")];
        if let Some(t) = &query.device_type {
            parts.push(format!("thingGroupNames:{}", self.naming.thing_group_of(t)));
        }
        match &query.version {
            Some(VersionFilter::Exact(v)) => parts.push(format!("shadow.reported.firmwareVersion:{v}")),
            Some(VersionFilter::Prefix { major, minor: None }) => {
                parts.push(format!("shadow.reported.firmwareVersion:{major}.*"))
            }
            Some(VersionFilter::Prefix { major, minor: Some(m) }) => {
                parts.push(format!("shadow.reported.firmwareVersion:{major}.{m}.*"))
            }
            // String order is not semver order: filtered after the query.
            Some(VersionFilter::Below(_)) | None => {}
        }
        if let Some(c) = query.connected {
            parts.push(format!("connectivity.connected:{c}"));
        }
        // Things registered before the attribute existed have none and are active, so only
        // the other states narrow in the index; location and health are filtered after.
        if let Some(s) = query.state.filter(|s| *s != OperationalState::Active) {
            parts.push(format!("attributes.{ATTR_STATE}:{s}"));
        }
        parts.join(" AND ")
    }

    async fn list_indexed(&self, query: &DeviceQuery) -> Result<Vec<Device>> {
        let q = self.index_query(query);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .iot
                .search_index()
                .query_string(&q)
                .max_results(500)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(fail("iot:SearchIndex"))?;
            for doc in page.things() {
                let Some(name) = doc.thing_name().and_then(|n| ThingName::parse(n).ok()) else { continue };
                let shadow = doc.shadow().and_then(|s| serde_json::from_str::<Value>(s).ok());
                let Some(mut d) = self.device_from(name, doc.attributes(), shadow.as_ref()) else { continue };
                if let Some(c) = doc.connectivity() {
                    d.connected = c.connected().unwrap_or(false);
                    d.last_seen = c.timestamp().and_then(DateTime::from_timestamp_millis).or(d.last_seen);
                }
                out.push(d);
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn list_walked(&self, query: &DeviceQuery) -> Result<Vec<Device>> {
        let names: Vec<String> = match &query.device_type {
            Some(t) => {
                let group = self.naming.thing_group_of(t);
                let mut items = self
                    .iot
                    .list_things_in_thing_group()
                    .thing_group_name(group.as_str())
                    .into_paginator()
                    .items()
                    .send();
                let mut names = Vec::new();
                while let Some(item) = items.next().await {
                    match item {
                        Ok(n) => names.push(n),
                        // A type with no thing group has no devices.
                        Err(e) => match aws("iot:ListThingsInThingGroup")(e) {
                            f if f.kind == FailureKind::NotFound => return Ok(Vec::new()),
                            f => return Err(f.into_error()),
                        },
                    }
                }
                names
            }
            None => {
                let mut pages = self.iot.list_things().into_paginator().send();
                let mut names = Vec::new();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(fail("iot:ListThings"))?;
                    names.extend(page.things().iter().filter_map(|t| t.thing_name().map(str::to_string)));
                }
                names
            }
        };
        let devices: Vec<Option<Device>> = futures::stream::iter(names)
            .filter_map(|n| async move { ThingName::parse(&n).ok() })
            .map(|name| async move { self.get(&name).await })
            .buffer_unordered(SHADOW_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(devices.into_iter().flatten().collect())
    }

    /// Builds a device from the thing's attributes and its shadow (`{"state":{"reported"}}`
    /// from iot-data, or `{"reported"}` from the index). `None` for a thing ota does not manage.
    fn device_from(
        &self,
        thing: ThingName,
        attributes: Option<&HashMap<String, String>>,
        shadow: Option<&Value>,
    ) -> Option<Device> {
        let attr = |k: &str| attributes.and_then(|a| a.get(k));
        let device_type = match attr(ATTR_TYPE).and_then(|t| DeviceType::parse(t).ok()) {
            Some(t) => t,
            None => thing.conventional_parts()?.0,
        };
        let thing_group = attr(ATTR_GROUP)
            .and_then(|g| ThingGroupName::parse(g).ok())
            .unwrap_or_else(|| self.naming.thing_group_of(&device_type));
        let reported = shadow.and_then(|s| s.pointer("/state/reported").or_else(|| s.get("reported")));
        let field = |k: &str| reported.and_then(|r| r.get(k));
        // Every other thing attribute is the device's (`location` among them).
        let free = attributes
            .map(|a| {
                a.iter()
                    .filter(|(k, _)| ![ATTR_TYPE, ATTR_GROUP, ATTR_STATE].contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Some(Device {
            firmware_version: field("firmwareVersion")
                .and_then(Value::as_str)
                .and_then(|v| FirmwareVersion::parse(v).ok()),
            connected: field("connected").and_then(Value::as_bool).unwrap_or(false),
            last_seen: field("lastSeen")
                .and_then(Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
            attributes: free,
            state: attr(ATTR_STATE).and_then(|s| OperationalState::parse(s).ok()).unwrap_or_default(),
            health: field("health").and_then(Health::from_reported),
            telemetry: field("telemetry").and_then(|t| Telemetry::from_reported(t, Utc::now())),
            ..Device::new(thing, device_type, thing_group)
        })
    }

    async fn shadow(&self, thing: &ThingName) -> Result<Option<Value>> {
        self.named_shadow(thing, None).await
    }

    /// The classic shadow (`name` `None`) or a named one, `None` when it does not exist.
    async fn named_shadow(&self, thing: &ThingName, name: Option<&str>) -> Result<Option<Value>> {
        match self
            .data
            .get_thing_shadow()
            .thing_name(thing.as_str())
            .set_shadow_name(name.map(str::to_string))
            .send()
            .await
        {
            Ok(out) => Ok(out.payload().and_then(|p| serde_json::from_slice(p.as_ref()).ok())),
            Err(e) => match aws("iot:GetThingShadow")(e) {
                f if f.kind == FailureKind::NotFound => Ok(None),
                f => Err(f.into_error()),
            },
        }
    }

    async fn ensure_group(&self, group: &ThingGroupName, device_type: &DeviceType) -> Result<()> {
        let result = self
            .iot
            .create_thing_group()
            .thing_group_name(group.as_str())
            .thing_group_properties(
                aws_sdk_iot::types::ThingGroupProperties::builder()
                    .thing_group_description(format!("ota devices of type {device_type}"))
                    .build(),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match aws("iot:CreateThingGroup")(e) {
                f if f.kind == FailureKind::AlreadyExists => Ok(()),
                f => Err(f.into_error()),
            },
        }
    }
}

#[async_trait]
impl DeviceRegistry for IotRegistry {
    async fn list(&self, query: &DeviceQuery) -> Result<Vec<Device>> {
        let mut devices =
            if self.fleet_index { self.list_indexed(query).await? } else { self.list_walked(query).await? };
        devices.retain(|d| query.matches(d));
        devices.sort_by(|a, b| a.thing.cmp(&b.thing));
        devices.dedup_by(|a, b| a.thing == b.thing);
        Ok(devices)
    }

    async fn get(&self, thing: &ThingName) -> Result<Option<Device>> {
        let described = match self.iot.describe_thing().thing_name(thing.as_str()).send().await {
            Ok(d) => d,
            Err(e) => {
                return match aws("iot:DescribeThing")(e) {
                    f if f.kind == FailureKind::NotFound => Ok(None),
                    f => Err(f.into_error()),
                };
            }
        };
        let shadow = self.shadow(thing).await?;
        let Some(mut device) = self.device_from(thing.clone(), described.attributes(), shadow.as_ref()) else {
            return Ok(None);
        };
        // The configuration: the named shadow `config` (desired by operators, reported by the device).
        if let Some(config) = self.named_shadow(thing, Some(CONFIG_SHADOW)).await? {
            let part = |k: &str| config.pointer(&format!("/state/{k}")).and_then(Value::as_object).cloned();
            device.config.desired = part("desired").unwrap_or_default();
            device.config.reported = part("reported").unwrap_or_default();
        }
        Ok(Some(device))
    }

    /// The state is a thing attribute: one UpdateThing merging it, the shadow untouched.
    async fn set_state(&self, thing: &ThingName, state: OperationalState) -> Result<Device> {
        let mut device = self.get(thing).await?.ok_or_else(|| ota_core::Error::not_found("device", thing.as_str()))?;
        let attributes =
            aws_sdk_iot::types::AttributePayload::builder().attributes(ATTR_STATE, state.as_str()).merge(true).build();
        self.iot
            .update_thing()
            .thing_name(thing.as_str())
            .attribute_payload(attributes)
            .send()
            .await
            .map_err(fail("iot:UpdateThing"))?;
        device.state = state;
        Ok(device)
    }

    async fn upsert(&self, device: Device) -> Result<()> {
        self.ensure_group(&device.thing_group, &device.device_type).await?;
        let mut attributes = aws_sdk_iot::types::AttributePayload::builder()
            .attributes(ATTR_TYPE, device.device_type.as_str())
            .attributes(ATTR_GROUP, device.thing_group.as_str())
            .attributes(ATTR_STATE, device.state.as_str());
        for (k, v) in &device.attributes {
            attributes = attributes.attributes(k, v);
        }
        let attributes = attributes.merge(true).build();
        let previous = match self.iot.describe_thing().thing_name(device.thing.as_str()).send().await {
            Ok(d) => Some(d.attributes().and_then(|a| a.get(ATTR_GROUP).cloned())),
            Err(e) => match aws("iot:DescribeThing")(e) {
                f if f.kind == FailureKind::NotFound => None,
                f => return Err(f.into_error()),
            },
        };
        match &previous {
            None => {
                self.iot
                    .create_thing()
                    .thing_name(device.thing.as_str())
                    .attribute_payload(attributes)
                    .send()
                    .await
                    .map_err(fail("iot:CreateThing"))?;
            }
            Some(_) => {
                self.iot
                    .update_thing()
                    .thing_name(device.thing.as_str())
                    .attribute_payload(attributes)
                    .send()
                    .await
                    .map_err(fail("iot:UpdateThing"))?;
            }
        }
        // A device whose type changed leaves its old group: group membership is the type.
        if let Some(Some(old)) = &previous
            && old != device.thing_group.as_str()
        {
            self.iot
                .remove_thing_from_thing_group()
                .thing_group_name(old)
                .thing_name(device.thing.as_str())
                .send()
                .await
                .map_err(fail("iot:RemoveThingFromThingGroup"))?;
        }
        self.iot
            .add_thing_to_thing_group()
            .thing_group_name(device.thing_group.as_str())
            .thing_name(device.thing.as_str())
            .send()
            .await
            .map_err(fail("iot:AddThingToThingGroup"))?;
        // No `version` in the document: a versioned first update is refused by some
        // emulators, and registration must overwrite whatever the shadow held.
        let doc = json!({ "state": { "reported": {
            "firmwareVersion": device.firmware_version.as_ref().map(|v| v.to_string()),
            "deviceType": device.device_type.as_str(),
            "connected": device.connected,
            "lastSeen": device.last_seen.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)),
            "health": device.health,
            "telemetry": device.telemetry,
        }}});
        self.data
            .update_thing_shadow()
            .thing_name(device.thing.as_str())
            .payload(Blob::new(doc.to_string()))
            .send()
            .await
            .map_err(fail("iot:UpdateThingShadow"))?;
        if !device.config.desired.is_empty() || !device.config.reported.is_empty() {
            let mut state = serde_json::Map::new();
            if !device.config.desired.is_empty() {
                state.insert("desired".into(), Value::Object(device.config.desired.clone()));
            }
            if !device.config.reported.is_empty() {
                state.insert("reported".into(), Value::Object(device.config.reported.clone()));
            }
            self.data
                .update_thing_shadow()
                .thing_name(device.thing.as_str())
                .shadow_name(CONFIG_SHADOW)
                .payload(Blob::new(json!({ "state": state }).to_string()))
                .send()
                .await
                .map_err(fail("iot:UpdateThingShadow"))?;
        }
        Ok(())
    }

    async fn device_types(&self) -> Result<Vec<DeviceType>> {
        // One call per group, not per device: the types are the groups that follow the naming
        // convention and have at least one member.
        let mut groups = Vec::new();
        let mut pages = self.iot.list_thing_groups().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(fail("iot:ListThingGroups"))?;
            for g in page.thing_groups() {
                let Some(name) = g.group_name().and_then(|n| ThingGroupName::parse(n).ok()) else { continue };
                if let Ok(t) = self.naming.device_type_of(&name) {
                    groups.push((name, t));
                }
            }
        }
        let mut types = BTreeSet::new();
        for (group, t) in groups {
            let members = self
                .iot
                .list_things_in_thing_group()
                .thing_group_name(group.as_str())
                .max_results(1)
                .send()
                .await
                .map_err(fail("iot:ListThingsInThingGroup"))?;
            if !members.things().is_empty() {
                types.insert(t);
            }
        }
        Ok(types.into_iter().collect())
    }
}
