//! Human tables and JSON for every command. JSON is the service's own types, serialized.

use std::path::Path;

use ota_core::Error;
use ota_core::audit::AuditEntry;
use ota_core::config::TypeConfig;
use ota_core::device::Device;
use ota_core::integrity::VerifiedArtifact;
use ota_core::plan::Plan;
use ota_core::rollout::Rollout;
use ota_core::service::{DeviceTypeSummary, FirmwareEntry, FleetStatus, StartOutcome, VerifyReport};
use serde::Serialize;

use crate::demo::DemoSummary;
use crate::table::Table;

/// Prints results as tables or JSON.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

fn json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => outln!("{s}"),
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}

fn or_dash(s: Option<String>) -> String {
    s.unwrap_or_else(|| "-".into())
}

impl Output {
    /// The one place an error is printed: on stderr, and with --json also on stdout. Neither
    /// write may fail the process further (a closed stderr or stdout is ignored here).
    pub fn error(&self, e: &Error) {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "error: {e}");
        if self.json
            && let Ok(s) = serde_json::to_string_pretty(&serde_json::json!({ "error": e.to_string() }))
        {
            let _ = writeln!(std::io::stdout(), "{s}");
        }
    }

    pub fn init(&self, dir: &Path, demo: Option<&DemoSummary>) {
        if self.json {
            return json(&serde_json::json!({ "data_dir": dir, "demo": demo }));
        }
        outln!("data dir ready: {}", dir.display());
        if let Some(s) = demo {
            outln!(
                "demo world: {} device types, {} firmware builds ({} new), {} devices ({} new); OTA enabled for every type but {}",
                s.device_types,
                s.firmware,
                s.firmware_created,
                s.devices,
                s.devices_created,
                ota_core::demo::DISABLED_TYPE
            );
            outln!(
                "next: ota --data-dir {} plan \"Update all vision_ai_face_detector devices to v2.0.0\"",
                dir.display()
            );
        }
    }

    pub fn seeded(&self, s: &DemoSummary) {
        if self.json {
            return json(&serde_json::json!({ "demo": s }));
        }
        outln!(
            "AWS demo world: {} device types, {} firmware builds ({} uploaded), {} things ({} registered); OTA enabled for every type but {}",
            s.device_types,
            s.firmware,
            s.firmware_created,
            s.devices,
            s.devices_created,
            ota_core::demo::DISABLED_TYPE
        );
    }

    pub fn plan(&self, plan: &Plan) {
        if self.json {
            return json(plan);
        }
        let id = plan.plan_id.as_deref().map(|i| format!(" {i}")).unwrap_or_default();
        outln!("Plan{id}: {}", plan.action);
        if !plan.deployments.is_empty() {
            let mut t = Table::new(&["DEVICE TYPE", "THING GROUP", "VERSION", "DEVICES", "SHA256", "ROLLOUT ID"]);
            for d in &plan.deployments {
                t.row(vec![
                    d.device_type.to_string(),
                    d.thing_group.to_string(),
                    d.version.to_string(),
                    d.things.len().to_string(),
                    d.sha256.to_hex()[..12].to_string(),
                    d.rollout_id.to_string(),
                ]);
            }
            out!("{}", t.render());
            for d in &plan.deployments {
                let things: Vec<&str> = d.things.iter().map(|t| t.as_str()).collect();
                outln!("  {}: {}", d.device_type, things.join(", "));
                for h in &d.held_back {
                    outln!("    held back {}: {}", h.thing, h.reason);
                }
            }
            let policies: std::collections::BTreeSet<String> =
                plan.deployments.iter().map(|d| d.policy.to_string()).collect();
            for p in policies {
                outln!("Policy: {p}");
            }
        }
        if !plan.refusals.is_empty() {
            outln!("Refused:");
            let mut t = Table::new(&["  TARGET", "REASON"]);
            for r in &plan.refusals {
                t.row(vec![format!("  {}", r.target), r.reason.clone()]);
            }
            out!("{}", t.render().lines().skip(1).map(|l| format!("{l}\n")).collect::<String>());
        }
        outln!("{}", plan.message);
        if !plan.suggestions.is_empty() {
            outln!("Did you mean: {}", plan.suggestions.join(", "));
        }
    }

    pub fn firmware(&self, entries: &[FirmwareEntry]) {
        if self.json {
            return json(entries);
        }
        let mut t = Table::new(&["DEVICE TYPE", "VERSION", "SIZE", "SHA256", "BUILT", "NOTES"]);
        for e in entries {
            let (size, sha, built, notes) = match &e.metadata {
                Some(m) => (
                    m.size.to_string(),
                    m.sha256.to_hex()[..12].to_string(),
                    m.built_at.format("%Y-%m-%d").to_string(),
                    m.release_notes.clone(),
                ),
                None => {
                    ("-".into(), "-".into(), "-".into(), format!("PROBLEM: {}", e.problem.clone().unwrap_or_default()))
                }
            };
            t.row(vec![e.device_type.to_string(), e.version.to_string(), size, sha, built, notes]);
        }
        out!("{}", t.render());
    }

    pub fn published(&self, v: &VerifiedArtifact) {
        if self.json {
            return json(v);
        }
        outln!("published {} ({} bytes, sha256 {})", v.artifact, v.size, v.sha256);
    }

    pub fn signed(&self, v: &VerifiedArtifact) {
        if self.json {
            return json(v);
        }
        match v.signed_by {
            Some(k) => outln!("signed {} with key {k} (sha256 {})", v.artifact, v.sha256),
            None => outln!("{} is not signed", v.artifact),
        }
    }

    pub fn verified(&self, reports: &[VerifyReport]) {
        if self.json {
            return json(reports);
        }
        let mut t = Table::new(&["DEVICE TYPE", "VERSION", "RESULT"]);
        for r in reports {
            let result = match (&r.verified, &r.error) {
                (Some(v), _) => format!("ok sha256 {} ({} bytes)", v.sha256, v.size),
                (None, Some(e)) => format!("FAILED {e}"),
                (None, None) => "FAILED".into(),
            };
            t.row(vec![r.artifact.device_type.to_string(), r.artifact.version.to_string(), result]);
        }
        out!("{}", t.render());
        let bad = reports.iter().filter(|r| r.error.is_some()).count();
        outln!("{} checked, {} failed", reports.len(), bad);
    }

    pub fn devices(&self, status: &FleetStatus) {
        if self.json {
            return json(status);
        }
        let mut t = Table::new(&[
            "THING",
            "DEVICE TYPE",
            "THING GROUP",
            "FIRMWARE",
            "CONNECTED",
            "LOCATION",
            "HEALTH",
            "STATE",
        ]);
        for d in &status.devices {
            t.row(vec![
                d.thing.to_string(),
                d.device_type.to_string(),
                d.thing_group.to_string(),
                or_dash(d.firmware_version.as_ref().map(ToString::to_string)),
                if d.connected { "yes".into() } else { "no".into() },
                or_dash(d.location().map(str::to_string)),
                or_dash(d.health.as_ref().map(|h| h.status.to_string())),
                d.state.to_string(),
            ]);
        }
        out!("{}", t.render());
        outln!("{} devices", status.devices.len());
    }

    pub fn device(&self, d: &Device) {
        if self.json {
            return json(d);
        }
        outln!("thing:        {}", d.thing);
        outln!("device type:  {}", d.device_type);
        outln!("thing group:  {}", d.thing_group);
        outln!("firmware:     {}", or_dash(d.firmware_version.as_ref().map(ToString::to_string)));
        outln!("connected:    {}", if d.connected { "yes" } else { "no" });
        outln!("last seen:    {}", or_dash(d.last_seen.map(|t| t.to_rfc3339())));
    }

    pub fn config(&self, c: &TypeConfig) {
        if self.json {
            return json(c);
        }
        outln!("OTA {} for {}", if c.ota_enabled { "enabled" } else { "disabled" }, c.device_type);
        match &c.policy {
            Some(p) => outln!("policy: {p}"),
            None => outln!("policy: the default"),
        }
    }

    pub fn types(&self, types: &[DeviceTypeSummary]) {
        if self.json {
            return json(types);
        }
        let mut t = Table::new(&["DEVICE TYPE", "THING GROUP", "OTA", "LATEST", "VERSIONS", "DEVICES"]);
        for s in types {
            let versions: Vec<String> = s.versions.iter().rev().map(ToString::to_string).collect();
            t.row(vec![
                s.device_type.to_string(),
                s.thing_group.to_string(),
                if s.ota_enabled { "enabled".into() } else { "disabled".into() },
                or_dash(s.latest.as_ref().map(ToString::to_string)),
                versions.join(" "),
                s.devices.to_string(),
            ]);
        }
        out!("{}", t.render());
    }

    pub fn rollouts(&self, rollouts: &[Rollout]) {
        if self.json {
            return json(rollouts);
        }
        let mut t = Table::new(&["ROLLOUT ID", "STATUS", "DEVICE TYPE", "VERSION", "DEVICES", "CREATED", "BY"]);
        for r in rollouts {
            t.row(vec![
                r.id.to_string(),
                r.status.as_str().into(),
                r.device_type.to_string(),
                r.version.to_string(),
                r.things.len().to_string(),
                r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                r.created_by.clone(),
            ]);
        }
        out!("{}", t.render());
    }

    /// A rollout with each device's execution (`None` where the backend does not list them;
    /// JSON: the rollout's fields plus `executions`).
    pub fn rollout_with_executions(&self, r: &Rollout, executions: Option<&[ota_http::DeviceExecution]>) {
        if self.json {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            if let (Some(obj), Some(e)) = (v.as_object_mut(), executions) {
                obj.insert("executions".into(), serde_json::to_value(e).unwrap_or_default());
            }
            return json(&v);
        }
        self.rollout(r);
        if let Some(executions) = executions {
            outln!("executions:");
            for e in executions {
                let line = format!("  {:<28} {:<11} {}", e.thing.as_str(), e.status, e.reason.as_deref().unwrap_or(""));
                outln!("{}", line.trim_end());
            }
        }
    }

    pub fn rollout(&self, r: &Rollout) {
        if self.json {
            return json(r);
        }
        outln!("rollout:      {}", r.id);
        outln!(
            "status:       {}{}",
            r.status.as_str(),
            r.status_reason.as_ref().map(|s| format!(" ({s})")).unwrap_or_default()
        );
        outln!("action:       {}", r.action.as_str());
        outln!("device type:  {} ({})", r.device_type, r.thing_group);
        outln!("version:      {} ({} bytes, sha256 {})", r.version, r.size, r.sha256);
        outln!("devices:      {}", r.things.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", "));
        outln!("fleet query:  {}", r.fleet_query);
        outln!("policy:       {}", r.policy);
        outln!("created:      {} by {}", r.created_at.to_rfc3339(), r.created_by);
        if let Some(of) = &r.revert_of {
            outln!("reverts:      the devices {of} had moved when it aborted");
        }
    }

    /// What a start did, item by item, in the service's words.
    pub fn started(&self, s: &StartOutcome) {
        if self.json {
            return json(s);
        }
        if s.nothing_changed() {
            outln!("Refused, nothing changed:");
        }
        for item in &s.items {
            let line = item.summary();
            match s.rollouts.iter().find(|r| r.id == item.rollout_id) {
                Some(r) => outln!("{line}: {} -> {} ({} devices)", r.device_type, r.version, r.things.len()),
                None => outln!("{line}"),
            }
        }
        for r in &s.plan.refusals {
            outln!("not planned {}: {}", r.target, r.reason);
        }
    }

    /// A start that had nothing to start: the plan, which says why (JSON: the shape of a start
    /// with no items).
    pub fn nothing_started(&self, plan: &Plan) {
        if self.json {
            return json(&serde_json::json!({ "plan": plan, "rollouts": [], "existing": [], "items": [] }));
        }
        self.plan(plan);
        outln!("Nothing was started.");
    }

    pub fn audit(&self, entries: &[AuditEntry]) {
        if self.json {
            return json(entries);
        }
        let mut t = Table::new(&["SEQ", "AT", "WHO", "OPERATION", "OUTCOME"]);
        for e in entries {
            let outcome = serde_json::to_value(&e.outcome)
                .ok()
                .map(|v| format!("{}: {}", v["result"].as_str().unwrap_or(""), v["detail"].as_str().unwrap_or("")))
                .unwrap_or_default();
            t.row(vec![
                e.seq.to_string(),
                e.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                e.subject.clone(),
                e.operation.clone(),
                outcome,
            ]);
        }
        out!("{}", t.render());
    }
}
