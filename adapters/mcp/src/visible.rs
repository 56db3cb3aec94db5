//! Which tools `tools/list` shows a caller: those the policies can allow it. Each tool names
//! the service actions it performs ([`actions_of`]); the tool is listed when the policies in
//! force (Cedar, through [`ota_core::authz::Authorizer`]) allow the caller at least one of them
//! on the whole fleet, in the request's context (now, by the service's clock). So a viewer
//! does not see `send_command` or `start_rollout`, and a policy that forbids an action to a
//! caller hides the tools that need it. Hiding is a courtesy to the model: every call is still
//! decided by the service, so a hidden tool called anyway is refused with the policy's reason.

use ota_core::auth::Caller;
use ota_core::authz::{Action, Context, Resource};
use ota_core::service::FleetManager;
use rmcp::model::Tool;

/// The service actions a tool performs. A tool that plans and then starts names the action it
/// needs first (planning), so a caller who may plan sees it.
pub fn actions_of(tool: &str) -> &'static [Action] {
    match tool {
        "list_device_types" => &[Action::ListDeviceTypes],
        "list_firmware" => &[Action::ListFirmware],
        "fleet_status" | "list_devices" => &[Action::ReadFleet],
        "get_device" | "get_device_status" => &[Action::ReadDevice],
        "get_telemetry" => &[Action::ReadTelemetry],
        "plan_update" | "rollback" => &[Action::PlanUpdate],
        "start_rollout" => &[Action::StartRollout],
        "get_rollout" => &[Action::ReadRollout],
        "list_rollouts" => &[Action::ListRollouts],
        "cancel_rollout" => &[Action::CancelRollout],
        "set_ota_enabled" => &[Action::SetOtaEnabled],
        "ask" => &[Action::Ask],
        // set_state is decided as SetDeviceState, every other command as SendCommand.
        "send_command" => &[Action::SendCommand, Action::SetDeviceState],
        "get_command" => &[Action::ReadCommand],
        // A tool nobody mapped is shown to nobody (a test keeps the map whole).
        _ => &[],
    }
}

/// Whether the policies allow `caller` some action of `tool` on the fleet now.
pub fn allowed(svc: &FleetManager, caller: &Caller, tool: &str) -> bool {
    let context = Context::at(svc.now());
    actions_of(tool).iter().any(|a| svc.authorizer().is_authorized(caller, *a, &Resource::Fleet, &context).allowed)
}

/// The tools of `all` that `caller` may use.
pub fn for_caller(svc: &FleetManager, caller: &Caller, all: Vec<Tool>) -> Vec<Tool> {
    all.into_iter().filter(|t| allowed(svc, caller, &t.name)).collect()
}

/// The longest `since` reaches back: a year (history is kept for days; this only bounds the
/// arithmetic).
const MAX_SINCE_SECONDS: u64 = 366 * 86_400;

/// How far back `since` reaches from `now`: `90m`, `24h`, `7d`, `3600s`, or an RFC 3339 time.
/// Generic over the time type (the service's `DateTime<Utc>`), which it parses and subtracts.
pub fn since<T>(s: &str, now: T) -> ota_core::Result<T>
where
    T: serde::de::DeserializeOwned + std::ops::Sub<std::time::Duration, Output = T>,
{
    let s = s.trim();
    let bad = || {
        ota_core::Error::invalid(
            "since",
            s,
            "expected how far back, a number with s, m, h or d (\"90m\", \"24h\", \"7d\", at most a year), or an RFC 3339 time",
        )
    };
    if s.contains('T')
        && let Ok(t) = serde_json::from_value::<T>(serde_json::Value::String(s.to_string()))
    {
        return Ok(t);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    };
    let seconds = seconds.filter(|s| (1..=MAX_SINCE_SECONDS).contains(s)).ok_or_else(bad)?;
    Ok(now - std::time::Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_names_its_actions() {
        for t in crate::OtaMcp::tool_router().list_all() {
            assert!(!actions_of(&t.name).is_empty(), "{} names no action, so nobody would see it", t.name);
        }
    }

    #[test]
    fn since_reads_durations_and_times() {
        let svc = FleetManager::new(ota_core::memory::backend(), Default::default()).unwrap();
        let now = svc.now();
        let secs = |n: u64| std::time::Duration::from_secs(n);
        assert_eq!(since("24h", now).unwrap(), now - secs(86_400));
        assert_eq!(since("90m", now).unwrap(), now - secs(5_400));
        assert_eq!(since("7d", now).unwrap(), now - secs(7 * 86_400));
        assert_eq!(since("2026-02-01T00:00:00Z", now).unwrap().to_rfc3339(), "2026-02-01T00:00:00+00:00");
        for bad in
            ["", "24", "0h", "1.5h", "-1h", "yesterday", "367d", "9999999999999999999999d", "2026-13-01T00:00:00Z"]
        {
            assert!(since(bad, now).is_err(), "{bad:?}");
        }
    }
}
