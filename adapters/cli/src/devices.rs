//! Device management in the CLI: `ota devices show` (a device's whole status), the filters of
//! `ota devices list`, `ota devices set-state` and `ota telemetry`. Each is one call into the
//! service, which decides and checks everything; this module parses flags and prints.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use clap::Args;
use ota_core::auth::Caller;
use ota_core::device::{DeviceQuery, HealthStatus, OperationalState};
use ota_core::names::ThingName;
use ota_core::ports::{TelemetryPoint, TelemetryQuery};
use ota_core::service::{DeviceStatus, FleetManager};
use ota_core::{Error, Result};
use serde_json::Value;

use crate::render::Output;
use crate::table::Table;

/// The filters `ota devices list` adds to `--type` and `--version`.
#[derive(Debug, Clone, Default, Args)]
pub struct DeviceFilters {
    /// Only devices at this location or inside it: `factory-floor-1`, `factory-floor-1/line-7`,
    /// or one part of it such as "line 7" (case, spaces and hyphens do not matter).
    #[arg(long)]
    pub location: Option<String>,
    /// Only devices whose last health report is ok, warning or error.
    #[arg(long, value_name = "ok|warning|error")]
    pub health: Option<String>,
    /// Only devices in this operational state.
    #[arg(long, value_name = "active|maintenance|retired")]
    pub state: Option<String>,
    /// Only devices connected now.
    #[arg(long, conflicts_with = "offline")]
    pub online: bool,
    /// Only devices not connected now.
    #[arg(long)]
    pub offline: bool,
}

impl DeviceFilters {
    /// Narrows `query` by these filters; a health or state that is not one of the names is
    /// refused with the service's words.
    pub fn apply(&self, query: &mut DeviceQuery) -> Result<()> {
        query.location = location(self.location.as_deref())?;
        query.health = self.health.as_deref().map(HealthStatus::parse).transpose()?;
        query.state = self.state.as_deref().map(OperationalState::parse).transpose()?;
        query.connected = match (self.online, self.offline) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        };
        Ok(())
    }
}

/// A location filter, refused when it has nothing in it ("", "/").
pub fn location(l: Option<&str>) -> Result<Option<String>> {
    match l {
        None => Ok(None),
        Some(l) if ota_core::device::normalize_location(l).is_empty() => {
            Err(Error::invalid("--location", l, "name a location, for example factory-floor-1/line-7 or \"line 7\""))
        }
        Some(l) => Ok(Some(l.to_string())),
    }
}

/// `ota telemetry`.
#[derive(Debug, Args)]
pub struct TelemetryArgs {
    /// The device (thing name).
    pub thing: String,
    /// Only this metric (for example co2_ppm); points without it are left out.
    #[arg(long)]
    pub metric: Option<String>,
    /// How far back: 90m, 24h, 7d, 3600s, or a time (RFC 3339, 2026-01-05T08:00:00Z).
    /// [default: everything kept, 7 days]
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many points: the newest (still printed oldest first).
    #[arg(long)]
    pub limit: Option<usize>,
}

/// `--since`: a duration back from `now` (`90m`, `24h`, `7d`, `3600s`) or an RFC 3339 time.
pub fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || {
        Error::invalid(
            "--since",
            s,
            "expected how far back, a number with s, m, h or d (90m, 24h, 7d), or an RFC 3339 time",
        )
    };
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(Error::invalid("--since", s, "must reach back more than 0"));
    }
    let back = seconds.and_then(Duration::try_seconds).ok_or_else(bad)?;
    now.checked_sub_signed(back).ok_or_else(bad)
}

/// `ota devices show`: the device's whole status. A name that is not a device gets the
/// registry's close matches.
pub async fn show(svc: &FleetManager, me: &Caller, thing: &str, out: &Output) -> Result<()> {
    let thing = ThingName::parse(thing)?;
    let status = match svc.device_status(me, &thing).await {
        Ok(s) => s,
        // The plain read names close matches ("did you mean pet_feeder-03?").
        Err(Error::NotFound { .. }) => {
            svc.device(me, &thing).await?;
            return Err(Error::not_found("device", thing.as_str()));
        }
        Err(e) => return Err(e),
    };
    print_status(&status, out);
    Ok(())
}

/// The status as JSON: the `DeviceStatus`, with the device's own fields also at the top (what
/// `devices show --json` printed before the status existed: `firmware_version`, `thing`, ...).
fn status_json(status: &DeviceStatus) -> Value {
    let mut v = serde_json::to_value(status).unwrap_or_default();
    if let (Some(obj), Ok(Value::Object(device))) = (v.as_object_mut(), serde_json::to_value(&status.device)) {
        for (k, field) in device {
            obj.entry(k).or_insert(field);
        }
    }
    v
}

fn json(v: &impl serde::Serialize) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => outln!("{s}"),
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}

/// A JSON value for people: strings bare, the rest as JSON.
pub fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn when(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn print_status(s: &DeviceStatus, out: &Output) {
    if out.json {
        return json(&status_json(s));
    }
    let d = &s.device;
    outln!("{}", s.summary);
    out.device(d);
    outln!("location:     {}", s.location.as_deref().unwrap_or("-"));
    match &s.health {
        Some(h) if h.message.is_empty() => outln!("health:       {}", h.status),
        Some(h) => outln!("health:       {} ({})", h.status, h.message),
        None => outln!("health:       not reported"),
    }
    outln!("state:        {}", s.state);
    match &s.telemetry {
        Some(t) => {
            let values: Vec<String> = t.values.iter().map(|(k, v)| format!("{k}={}", plain(v))).collect();
            outln!("telemetry:    {} at {}", values.join(" "), when(t.at));
        }
        None => outln!("telemetry:    none yet"),
    }
    let keys: BTreeSet<&String> = s.config.reported.keys().chain(s.config.desired.keys()).collect();
    if keys.is_empty() {
        outln!("config:       none reported or asked for");
        return;
    }
    outln!("config:");
    let mut t = Table::new(&["  SETTING", "REPORTED", "DESIRED"]);
    for k in keys {
        let reported = s.config.reported.get(k);
        let desired = s.config.desired.get(k);
        let mut wanted = desired.map_or_else(|| "-".to_string(), plain);
        if desired.is_some() && desired != reported {
            wanted.push_str(" (pending)");
        }
        t.row(vec![format!("  {k}"), reported.map_or_else(|| "-".to_string(), plain), wanted]);
    }
    out!("{}", t.render());
}

/// `ota devices set-state`: the state the service set, and what it was.
pub async fn set_state(
    svc: &FleetManager,
    me: &Caller,
    thing: &str,
    state: &str,
    reason: &str,
    out: &Output,
) -> Result<()> {
    let thing = ThingName::parse(thing)?;
    let state = OperationalState::parse(state)?;
    let before = svc.device_status(me, &thing).await.ok().map(|s| s.state);
    let device = svc.set_device_state(me, &thing, state, reason).await?;
    if out.json {
        json(&device);
        return Ok(());
    }
    match before {
        Some(b) if b == device.state => outln!("{thing} is already {}; nothing changed", device.state),
        Some(b) => outln!("{thing}: {b} -> {}", device.state),
        None => outln!("{thing}: now {}", device.state),
    }
    if device.state != OperationalState::Active {
        outln!("rollouts and commands leave it out unless they name it");
    }
    Ok(())
}

/// `ota telemetry`.
pub async fn telemetry(svc: &FleetManager, me: &Caller, args: &TelemetryArgs, out: &Output) -> Result<()> {
    let thing = ThingName::parse(&args.thing)?;
    let since = args.since.as_deref().map(|s| parse_since(s, svc.now())).transpose()?;
    if let Some(m) = &args.metric
        && m.trim().is_empty()
    {
        return Err(Error::invalid("--metric", m, "name a metric, for example co2_ppm"));
    }
    if args.limit == Some(0) {
        return Err(Error::invalid("--limit", "0", "at least 1"));
    }
    let query = TelemetryQuery { metric: args.metric.clone(), since, limit: args.limit, ..TelemetryQuery::of(thing) };
    let points = svc.telemetry(me, &query).await?;
    print_telemetry(&query, &points, out);
    Ok(())
}

fn print_telemetry(q: &TelemetryQuery, points: &[TelemetryPoint], out: &Output) {
    if out.json {
        return json(&points);
    }
    let range = q.since.map(|s| format!(" since {}", when(s))).unwrap_or_default();
    let what = q.metric.as_deref().map(|m| format!(" of {m}")).unwrap_or_default();
    if points.is_empty() {
        outln!("no telemetry{what} from {}{range}", q.thing);
        return;
    }
    let metrics: BTreeSet<&String> = points.iter().flat_map(|p| p.values.keys()).collect();
    let mut header = vec!["AT"];
    header.extend(metrics.iter().map(|m| m.as_str()));
    let mut t = Table::new(&header);
    for p in points {
        let mut row = vec![when(p.at)];
        row.extend(metrics.iter().map(|m| p.values.get(*m).map_or_else(|| "-".to_string(), plain)));
        t.row(row);
    }
    out!("{}", t.render());
    outln!("{} point{}{what} from {}{range}", points.len(), if points.len() == 1 { "" } else { "s" }, q.thing);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_durations_and_times_and_refuses_the_rest() {
        let now = DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_since("90m", now).unwrap(), now - Duration::minutes(90));
        assert_eq!(parse_since("24h", now).unwrap(), now - Duration::hours(24));
        assert_eq!(parse_since("7d", now).unwrap(), now - Duration::days(7));
        assert_eq!(parse_since("30s", now).unwrap(), now - Duration::seconds(30));
        assert_eq!(parse_since("2026-02-28T00:00:00Z", now).unwrap().to_rfc3339(), "2026-02-28T00:00:00+00:00");
        for bad in ["", "h", "24", "24x", "-3h", "1.5h", "0h", "99999999999999999999d", "9999999999999d", "yesterday"] {
            let e = parse_since(bad, now).unwrap_err().to_string();
            assert!(e.contains("--since"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn an_empty_location_is_refused() {
        assert!(location(Some(" / ")).is_err());
        assert_eq!(location(Some("line 7")).unwrap().as_deref(), Some("line 7"));
        assert_eq!(location(None).unwrap(), None);
    }
}
