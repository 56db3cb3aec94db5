//! Device management in the service: a device's whole status, its telemetry history, and the
//! operational state operators set (audited; `maintenance` and `retired` devices are left
//! out of rollouts they are not named in).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{FleetManager, device_resource};
use crate::audit::AuditOutcome;
use crate::auth::Caller;
use crate::authz::Action;
use crate::device::{Device, DeviceConfig, Health, OperationalState, Telemetry};
use crate::error::{Error, Result};
use crate::names::ThingName;
use crate::ports::{TelemetryPoint, TelemetryQuery};

/// Everything the service knows of one device, in one answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeviceStatus {
    /// The registry's record, whole.
    pub device: Device,
    /// `online` or `offline`.
    pub connectivity: String,
    pub connected: bool,
    pub last_seen: Option<DateTime<Utc>>,
    pub location: Option<String>,
    /// The device's last health report; `None` until it reports.
    pub health: Option<Health>,
    pub state: OperationalState,
    /// The last telemetry; `None` until it sends some.
    pub telemetry: Option<Telemetry>,
    pub config: DeviceConfig,
    /// One line for people: "co2_monitor-01 at factory-floor-1/line-7: online, health ok, active, runs 1.0.0".
    pub summary: String,
}

impl DeviceStatus {
    /// The status of a record.
    pub fn of(device: Device) -> Self {
        let location = device.location().map(str::to_string);
        let mut summary = device.thing.to_string();
        if let Some(l) = &location {
            summary.push_str(&format!(" at {l}"));
        }
        summary.push_str(if device.connected { ": online" } else { ": offline" });
        if !device.connected
            && let Some(t) = device.last_seen
        {
            summary.push_str(&format!(" (last seen {})", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
        }
        match &device.health {
            Some(h) if h.message.is_empty() => summary.push_str(&format!(", health {}", h.status)),
            Some(h) => summary.push_str(&format!(", health {} ({})", h.status, h.message)),
            None => summary.push_str(", health not reported"),
        }
        summary.push_str(&format!(", {}", device.state));
        match &device.firmware_version {
            Some(v) => summary.push_str(&format!(", runs {v}")),
            None => summary.push_str(", firmware not reported"),
        }
        DeviceStatus {
            connectivity: if device.connected { "online" } else { "offline" }.into(),
            connected: device.connected,
            last_seen: device.last_seen,
            location,
            health: device.health.clone(),
            state: device.state,
            telemetry: device.telemetry.clone(),
            config: device.config.clone(),
            summary,
            device,
        }
    }
}

impl FleetManager {
    async fn known_device(&self, thing: &ThingName) -> Result<Device> {
        self.backend.registry.get(thing).await?.ok_or_else(|| Error::not_found("device", thing.as_str()))
    }

    /// The whole status of one device: record, health, state, location, last telemetry,
    /// configuration, connectivity and last seen (viewer). `NotFound` for an unknown thing.
    pub async fn device_status(&self, caller: &Caller, thing: &ThingName) -> Result<DeviceStatus> {
        let device = self.known_device(thing).await?;
        self.allow(caller, Action::ReadDevice, "read a device's status", device_resource(&device))?;
        Ok(DeviceStatus::of(device))
    }

    /// The telemetry history of one device (viewer): the points `query` selects, oldest first.
    pub async fn telemetry(&self, caller: &Caller, query: &TelemetryQuery) -> Result<Vec<TelemetryPoint>> {
        let device = self.known_device(&query.thing).await?;
        self.allow(caller, Action::ReadTelemetry, "read telemetry", device_resource(&device))?;
        if let (Some(s), Some(u)) = (query.since, query.until)
            && s > u
        {
            return Err(Error::invalid("telemetry range", format!("{s} .. {u}"), "the start is after the end"));
        }
        self.backend.telemetry.query(query).await
    }

    /// Sets a device's operational state (operator), audited with the reason. A device in
    /// `maintenance` or `retired` is left out of rollouts it is not named in. Setting the
    /// state it already has changes nothing and says so. `NotFound` for an unknown thing.
    pub async fn set_device_state(
        &self,
        caller: &Caller,
        thing: &ThingName,
        state: OperationalState,
        reason: &str,
    ) -> Result<Device> {
        let request = json!({ "thing": thing, "state": state, "reason": reason });
        let what = "set a device's state";
        let device = match self.backend.registry.get(thing).await? {
            Some(d) => d,
            None => {
                let e = Error::not_found("device", thing.as_str());
                self.audit(caller, what, request, None, AuditOutcome::Refused(e.to_string())).await?;
                return Err(e);
            }
        };
        let context = crate::authz::Context { parameters: Some(json!({ "state": state })), ..self.context() };
        self.require(caller, Action::SetDeviceState, what, device_resource(&device), context, &request).await?;
        let reason = if reason.trim().is_empty() { format!("set by {}", caller.subject) } else { reason.trim().into() };
        if device.state == state {
            self.audit(caller, what, request, None, AuditOutcome::Ok(format!("{thing} already {state}; {reason}")))
                .await?;
            return Ok(device);
        }
        let result = self.backend.registry.set_state(thing, state).await;
        let outcome = match &result {
            Ok(_) => AuditOutcome::Ok(format!("{thing}: {} -> {state}; {reason}", device.state)),
            Err(e) => AuditOutcome::Error(e.to_string()),
        };
        self.audit(caller, what, request, None, outcome).await?;
        result
    }
}
