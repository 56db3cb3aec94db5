//! Remote commands in the CLI: `ota commands send` plans a command (each target, each refusal
//! with its reason) and sends it only when confirmed (`--yes`, or `--plan-id` for exactly the
//! plan shown); `list`, `show` and `cancel` read and stop command runs. Every rule (what a
//! firmware declares, settings' bounds, offline and held-back devices, the policies) is the
//! service's.

use clap::{Args, Subcommand};
use ota_core::auth::Caller;
use ota_core::commands::{
    CommandPlan, CommandQuery, CommandRun, CommandRunStatus, CommandSpec, DEFAULT_TIMEOUT_SECONDS,
};
use ota_core::device::{DeviceQuery, HealthStatus};
use ota_core::names::{DeviceType, ThingName};
use ota_core::policy::RolloutPolicy;
use ota_core::service::{CommandStart, FleetManager};
use ota_core::{Error, Result};
use serde_json::{Map, Value};

use crate::render::Output;
use crate::table::Table;

/// `ota commands`.
#[derive(Debug, Subcommand)]
pub enum CommandsCommand {
    /// Plan a command to devices: print each target and each device refused with why, and the
    /// plan id. Nothing is sent unless --yes (send what the plan is now) or --plan-id (send
    /// only if the plan is still exactly that one). Offline devices are never sent a command;
    /// devices in maintenance or retired are left out unless named with --thing.
    Send(SendArgs),
    /// Command runs, newest first.
    List {
        /// Only runs with an execution on this device.
        #[arg(long)]
        thing: Option<String>,
        /// Only runs in this status: in_progress, completed, aborted or canceled.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// One command run: its status, and each device's execution with its state and reason.
    Show { run_id: String },
    /// Cancel an active command run: executions not sent yet are never sent.
    Cancel {
        run_id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// `ota commands send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// reboot, identify, recalibrate, update_config, set_state, or a command the devices'
    /// firmware declares.
    pub command: String,
    /// A device by name (repeat for several).
    #[arg(long = "thing", value_name = "THING")]
    pub things: Vec<String>,
    /// Every device of this type (with --location and --health: those that match all).
    #[arg(long = "type", value_name = "TYPE")]
    pub device_type: Option<String>,
    /// Devices at this location or inside it (`factory-floor-1`, "line 7").
    #[arg(long)]
    pub location: Option<String>,
    /// Devices whose last health report is ok, warning or error.
    #[arg(long, value_name = "ok|warning|error")]
    pub health: Option<String>,
    /// A parameter (repeat for several). The value is read as JSON when it is JSON (10, true,
    /// "10", {"a": 1}), else as a string. update_config takes the settings to change
    /// (--param sample_rate_seconds=10); set_state takes --param state=maintenance.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Seconds each device has to answer (1 to 86400) [default: 300].
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Send what the plan is now, without showing it first.
    #[arg(long, conflicts_with = "plan_id")]
    pub yes: bool,
    /// Send only if the plan is still exactly this one (the plan id a plan printed).
    #[arg(long, value_name = "ID")]
    pub plan_id: Option<String>,
}

/// `--param KEY=VALUE`s as parameters: JSON values where they parse, else strings. A key given
/// twice or an empty key is refused.
pub fn parameters(params: &[String]) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            return Err(Error::invalid("--param", p, "expected KEY=VALUE, for example sample_rate_seconds=10"));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(Error::invalid("--param", p, "the key is empty; expected KEY=VALUE"));
        }
        let value = serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.to_string()));
        if out.insert(k.to_string(), value).is_some() {
            return Err(Error::invalid("--param", k, "given twice"));
        }
    }
    Ok(out)
}

impl SendArgs {
    /// The request the service plans.
    pub fn spec(&self) -> Result<CommandSpec> {
        let things = self.things.iter().map(|t| ThingName::parse(t)).collect::<Result<Vec<_>>>()?;
        let location = crate::devices::location(self.location.as_deref())?;
        let query = DeviceQuery {
            device_type: self.device_type.as_deref().map(DeviceType::parse).transpose()?,
            health: self.health.as_deref().map(HealthStatus::parse).transpose()?,
            location,
            ..Default::default()
        };
        let query = (query != DeviceQuery::default()).then_some(query);
        Ok(CommandSpec {
            command: self.command.clone(),
            parameters: parameters(&self.params)?,
            things,
            query,
            timeout_seconds: self.timeout,
        })
    }
}

/// A status as `--status` gives it: any case, `-` or `_`.
fn parse_status(s: &str) -> Result<CommandRunStatus> {
    CommandRunStatus::parse(&s.trim().to_ascii_uppercase().replace('-', "_"))
        .ok_or_else(|| Error::invalid("--status", s, "one of in_progress, completed, aborted, canceled"))
}

/// Runs `ota commands ...`.
pub async fn run(svc: &FleetManager, me: &Caller, command: CommandsCommand, out: &Output) -> Result<()> {
    match command {
        CommandsCommand::Send(args) => {
            let spec = args.spec()?;
            if args.yes || args.plan_id.is_some() {
                let started = svc.start_command(me, &spec, args.plan_id.as_deref()).await?;
                print_started(&started, out);
            } else {
                let plan = svc.plan_command(me, &spec).await?;
                print_plan(&plan, out);
            }
        }
        CommandsCommand::List { thing, status, limit } => {
            let query = CommandQuery {
                thing: thing.as_deref().map(ThingName::parse).transpose()?,
                status: status.as_deref().map(parse_status).transpose()?,
                plan_id: None,
                limit,
            };
            print_runs(&svc.list_commands(me, &query).await?, out);
        }
        CommandsCommand::Show { run_id } => print_run(&svc.command_run(me, &run_id).await?, out),
        CommandsCommand::Cancel { run_id, reason } => {
            let run = svc.cancel_command(me, &run_id, &reason).await?;
            if !out.json {
                outln!("canceled {}", run.summary());
            }
            print_run(&run, out);
        }
    }
    Ok(())
}

fn json(v: &impl serde::Serialize) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => outln!("{s}"),
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}

/// What of a rollout policy paces a command run: the in-flight limit, the start rate and the
/// abort thresholds (its timeout is the run's own, not the policy's).
fn pacing(p: &RolloutPolicy) -> String {
    let mut s = format!("at most {} at a time", p.max_in_flight);
    if let Some(m) = p.max_per_minute {
        s.push_str(&format!(", {m}/min"));
    }
    s.push_str(&format!(
        "; abort above {} % failed (after {} executed)",
        p.abort.failure_percent, p.abort.min_executed
    ));
    if let Some(n) = p.abort.max_failures {
        s.push_str(&format!(" or above {n} failures"));
    }
    s
}

fn params_text(p: &Map<String, Value>) -> String {
    if p.is_empty() { String::new() } else { format!(" {}", Value::Object(p.clone())) }
}

/// Lines of a table under a heading, indented by two.
fn indented(t: &Table) -> String {
    t.render().lines().map(|l| format!("  {l}\n")).collect()
}

fn print_plan(plan: &CommandPlan, out: &Output) {
    if out.json {
        return json(plan);
    }
    let id = plan.plan_id.as_deref().map(|i| format!(" {i}")).unwrap_or_default();
    outln!("Command plan{id}: {}{}", plan.command, params_text(&plan.parameters));
    if !plan.targets.is_empty() {
        let mut t = Table::new(&["THING", "DEVICE TYPE", "FIRMWARE", "LOCATION", "STATE"]);
        for d in &plan.targets {
            t.row(vec![
                d.thing.to_string(),
                d.device_type.to_string(),
                d.firmware_version.clone().unwrap_or_else(|| "-".into()),
                d.location.clone().unwrap_or_else(|| "-".into()),
                d.state.clone(),
            ]);
        }
        out!("{}", t.render());
        if plan.command != ota_core::commands::SET_STATE {
            let timeout = if plan.timeout_seconds == DEFAULT_TIMEOUT_SECONDS { " (the default)" } else { "" };
            outln!("Pacing: {}; each device answers within {} s{timeout}", pacing(&plan.policy), plan.timeout_seconds);
        }
    }
    if !plan.refusals.is_empty() {
        outln!("Refused:");
        let mut t = Table::new(&["TARGET", "REASON"]);
        for r in &plan.refusals {
            t.row(vec![r.target.clone(), r.reason.clone()]);
        }
        out!("{}", indented(&t).lines().skip(1).map(|l| format!("{l}\n")).collect::<String>());
    }
    outln!("{}", plan.message);
    match (&plan.plan_id, &plan.running) {
        (Some(_), Some(run)) => outln!("It runs already as {run} (ota commands show {run})."),
        (Some(id), None) => {
            outln!("Nothing was sent. To send it, run the same command again with --plan-id {id} (or --yes).")
        }
        (None, _) => outln!("Nothing to send."),
    }
}

fn print_started(s: &CommandStart, out: &Output) {
    if out.json {
        return json(s);
    }
    outln!("{}", s.message);
    print_executions(&s.run);
    print_refused(&s.run);
    if s.run.is_active() {
        outln!(
            "Follow it with `ota commands show {}`; `ota commands cancel {}` stops what is not sent.",
            s.run.id,
            s.run.id
        );
    }
}

fn print_executions(run: &CommandRun) {
    if run.executions.is_empty() {
        return;
    }
    outln!("executions:");
    let mut t = Table::new(&["THING", "EXECUTION ID", "STATE", "REASON"]);
    for e in &run.executions {
        let reason = match (&e.reason_code, &e.reason) {
            (Some(c), Some(r)) => format!("{c}: {r}"),
            (None, Some(r)) => r.clone(),
            (Some(c), None) => c.clone(),
            (None, None) => String::new(),
        };
        t.row(vec![e.thing.to_string(), e.execution_id.clone(), e.state.to_string(), reason]);
    }
    out!("{}", indented(&t));
}

fn print_refused(run: &CommandRun) {
    if run.refusals.is_empty() {
        return;
    }
    outln!("refused when planned:");
    for r in &run.refusals {
        outln!("  {}: {}", r.target, r.reason);
    }
}

fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn print_run(run: &CommandRun, out: &Output) {
    if out.json {
        return json(run);
    }
    outln!("command run:  {}", run.id);
    outln!("status:       {}{}", run.status, run.reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default());
    outln!("command:      {}{}", run.command, params_text(&run.parameters));
    outln!("plan:         {}", run.plan_id);
    outln!("pacing:       {}", pacing(&run.policy));
    outln!("timeout:      {} s", run.timeout_seconds);
    outln!("created:      {} by {}", when(run.created_at), run.created_by);
    if let Some(t) = run.ended_at {
        outln!("ended:        {}", when(t));
    }
    let results: Vec<String> = run
        .executions
        .iter()
        .filter_map(|e| e.result.as_ref().map(|r| format!("  {}: {}", e.thing, Value::Object(r.clone()))))
        .collect();
    print_executions(run);
    if !results.is_empty() {
        outln!("results:");
        for r in results {
            outln!("{r}");
        }
    }
    print_refused(run);
}

fn print_runs(runs: &[CommandRun], out: &Output) {
    if out.json {
        return json(&runs);
    }
    let mut t = Table::new(&["RUN ID", "STATUS", "COMMAND", "DEVICES", "EXECUTIONS", "CREATED", "BY"]);
    for r in runs {
        let mut by: std::collections::BTreeMap<String, usize> = Default::default();
        for e in &r.executions {
            *by.entry(e.state.to_string()).or_default() += 1;
        }
        let counts: Vec<String> = by.iter().map(|(s, n)| format!("{n} {s}")).collect();
        t.row(vec![
            r.id.clone(),
            r.status.to_string(),
            format!("{}{}", r.command, params_text(&r.parameters)),
            r.executions.len().to_string(),
            counts.join(", "),
            r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            r.created_by.clone(),
        ]);
    }
    out!("{}", t.render());
    outln!("{} command run{}", runs.len(), if runs.len() == 1 { "" } else { "s" });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameters_are_json_where_they_parse_and_strings_otherwise() {
        let p = parameters(&[
            "sample_rate_seconds=10".into(),
            "log_level=debug".into(),
            "quoted=\"10\"".into(),
            "on=true".into(),
            "nested={\"a\": 1}".into(),
            "empty=".into(),
            "eq=a=b".into(),
        ])
        .unwrap();
        assert_eq!(
            Value::Object(p),
            json!({"sample_rate_seconds": 10, "log_level": "debug", "quoted": "10", "on": true,
                   "nested": {"a": 1}, "empty": "", "eq": "a=b"})
        );
        for bad in [&["nokey"][..], &["=1"], &["a=1", "a=2"]] {
            let bad: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(parameters(&bad).unwrap_err().to_string().contains("--param"), "{bad:?}");
        }
    }

    #[test]
    fn statuses_read_in_any_case() {
        assert_eq!(parse_status("in-progress").unwrap(), CommandRunStatus::InProgress);
        assert_eq!(parse_status("CANCELED").unwrap(), CommandRunStatus::Canceled);
        assert!(parse_status("done").unwrap_err().to_string().contains("completed"));
    }
}
