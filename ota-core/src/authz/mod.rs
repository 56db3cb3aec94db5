//! Authorization as policy: every service operation is decided by Cedar policies evaluated
//! here, inside the service, so no front door and no prompt can go around them.
//!
//! - principal: the caller, a `User` with its subject, its ota roles and its token's other
//!   groups;
//! - action: the operation ([`Action`], `Action::"StartRollout"`, ...);
//! - resource: what it reaches ([`Resource`]: the fleet, a device type, a device with its type,
//!   location and state, a rollout);
//! - context: the request ([`Context`]: device count, command and parameters, the time of day
//!   in UTC from the service's clock, the weekday).
//!
//! The schema ([`SCHEMA`], `ota.cedarschema`) says all of this to Cedar; every policy file is
//! parsed and validated against it (strict mode) before it is used, and one that does not
//! parse or validate is an error with its line and column, never a fallback to allow.
//! [`DEFAULT_POLICIES`] reproduce the role matrix (viewer reads; operator plans, starts,
//! cancels and sends commands; admin opens gates, publishes, signs and sets policy; a higher
//! role includes every lower one). What no policy permits is denied, and so is a request
//! whose evaluation raised an error (fail closed, where Cedar would skip the policy).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use cedar_policy as cedar;
use chrono::{DateTime, Datelike, Timelike, Utc};
use miette::Diagnostic;

use crate::auth::{Caller, Role};
use crate::error::Error;

/// The Cedar schema every policy file is validated against (`ota.cedarschema`).
pub const SCHEMA: &str = include_str!("ota.cedarschema");

/// The default policies (`default.cedar`): exactly the role matrix.
pub const DEFAULT_POLICIES: &str = include_str!("default.cedar");

/// The annotation whose text a refusal quotes: `@reason("a change freeze is on")`.
pub const REASON_ANNOTATION: &str = "reason";

/// The annotation that names a policy (`@id("freeze-floor-1")`); without it a policy is
/// `policy0`, `policy1`, ... by its place in the file.
pub const ID_ANNOTATION: &str = "id";

/// One service operation, as Cedar's `Action::"Name"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    ListDeviceTypes,
    ListFirmware,
    VerifyFirmware,
    ReadFleet,
    ReadDevice,
    ReadTelemetry,
    ListRollouts,
    ReadRollout,
    ReadCommand,
    Ask,
    PlanUpdate,
    StartRollout,
    CancelRollout,
    SendCommand,
    CancelCommand,
    SetDeviceState,
    ReadAudit,
    SetOtaEnabled,
    SetPolicy,
    PublishFirmware,
    SignFirmware,
}

impl Action {
    /// Every action, in the order of the role matrix.
    pub const ALL: [Action; 21] = [
        Action::ListDeviceTypes,
        Action::ListFirmware,
        Action::VerifyFirmware,
        Action::ReadFleet,
        Action::ReadDevice,
        Action::ReadTelemetry,
        Action::ListRollouts,
        Action::ReadRollout,
        Action::ReadCommand,
        Action::Ask,
        Action::PlanUpdate,
        Action::StartRollout,
        Action::CancelRollout,
        Action::SendCommand,
        Action::CancelCommand,
        Action::SetDeviceState,
        Action::ReadAudit,
        Action::SetOtaEnabled,
        Action::SetPolicy,
        Action::PublishFirmware,
        Action::SignFirmware,
    ];

    /// The Cedar name (`StartRollout`).
    pub fn name(self) -> &'static str {
        match self {
            Action::ListDeviceTypes => "ListDeviceTypes",
            Action::ListFirmware => "ListFirmware",
            Action::VerifyFirmware => "VerifyFirmware",
            Action::ReadFleet => "ReadFleet",
            Action::ReadDevice => "ReadDevice",
            Action::ReadTelemetry => "ReadTelemetry",
            Action::ListRollouts => "ListRollouts",
            Action::ReadRollout => "ReadRollout",
            Action::ReadCommand => "ReadCommand",
            Action::Ask => "Ask",
            Action::PlanUpdate => "PlanUpdate",
            Action::StartRollout => "StartRollout",
            Action::CancelRollout => "CancelRollout",
            Action::SendCommand => "SendCommand",
            Action::CancelCommand => "CancelCommand",
            Action::SetDeviceState => "SetDeviceState",
            Action::ReadAudit => "ReadAudit",
            Action::SetOtaEnabled => "SetOtaEnabled",
            Action::SetPolicy => "SetPolicy",
            Action::PublishFirmware => "PublishFirmware",
            Action::SignFirmware => "SignFirmware",
        }
    }

    /// The action named `name` (its Cedar name, exactly).
    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The least role the default policies permit this action to: the role a refusal names
    /// when no policy permitted the request.
    pub fn default_role(self) -> Role {
        match self {
            Action::ListDeviceTypes
            | Action::ListFirmware
            | Action::VerifyFirmware
            | Action::ReadFleet
            | Action::ReadDevice
            | Action::ReadTelemetry
            | Action::ListRollouts
            | Action::ReadRollout
            | Action::ReadCommand
            | Action::Ask => Role::Viewer,
            Action::PlanUpdate
            | Action::StartRollout
            | Action::CancelRollout
            | Action::SendCommand
            | Action::CancelCommand
            | Action::SetDeviceState => Role::Operator,
            Action::ReadAudit
            | Action::SetOtaEnabled
            | Action::SetPolicy
            | Action::PublishFirmware
            | Action::SignFirmware => Role::Admin,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an operation reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// The whole fleet: operations that name no one type, device or rollout.
    Fleet,
    /// One device type.
    DeviceType(String),
    /// One device with what the registry knows of it.
    Device { thing: String, device_type: String, location: Option<String>, state: Option<String> },
    /// One rollout; its type when it is known.
    Rollout { id: String, device_type: Option<String> },
}

impl Resource {
    /// A device type.
    pub fn device_type(name: impl Into<String>) -> Self {
        Resource::DeviceType(name.into())
    }

    /// A device of `device_type` with no location or state known.
    pub fn device(thing: impl Into<String>, device_type: impl Into<String>) -> Self {
        Resource::Device { thing: thing.into(), device_type: device_type.into(), location: None, state: None }
    }
}

/// The request around an operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// When the request is decided (the service's clock); Cedar sees its UTC hour, minute,
    /// minute of the day and weekday.
    pub at: DateTime<Utc>,
    /// How many devices the operation reaches (0 when none or not known yet).
    pub device_count: u64,
    /// The command sent (`reboot`, ...), for commands.
    pub command: Option<String>,
    /// The command's parameters; Cedar sees their JSON text with sorted keys.
    pub parameters: Option<serde_json::Value>,
    /// The gate asked for (SetOtaEnabled).
    pub ota_enabled: Option<bool>,
    /// The firmware version (PublishFirmware, SignFirmware).
    pub version: Option<String>,
}

impl Context {
    /// A context at `at` with nothing else known.
    pub fn at(at: DateTime<Utc>) -> Self {
        Context { at, device_count: 0, command: None, parameters: None, ota_enabled: None, version: None }
    }

    /// With a device count.
    pub fn devices(mut self, n: usize) -> Self {
        self.device_count = n as u64;
        self
    }

    /// With a command and its parameters.
    pub fn command(mut self, command: impl Into<String>, parameters: serde_json::Value) -> Self {
        self.command = Some(command.into());
        self.parameters = Some(parameters);
        self
    }

    fn to_cedar(&self) -> Result<cedar::Context, String> {
        let weekday = match self.at.weekday() {
            chrono::Weekday::Mon => "monday",
            chrono::Weekday::Tue => "tuesday",
            chrono::Weekday::Wed => "wednesday",
            chrono::Weekday::Thu => "thursday",
            chrono::Weekday::Fri => "friday",
            chrono::Weekday::Sat => "saturday",
            chrono::Weekday::Sun => "sunday",
        };
        let (hour, minute) = (i64::from(self.at.hour()), i64::from(self.at.minute()));
        // serde_json's maps are sorted (no preserve_order feature), so the text is canonical.
        let parameters = self.parameters.as_ref().map_or_else(|| "{}".to_string(), |p| p.to_string());
        let mut pairs = vec![
            ("device_count".to_string(), long(i64::try_from(self.device_count).unwrap_or(i64::MAX))),
            ("command".to_string(), string(self.command.clone().unwrap_or_default())),
            ("parameters".to_string(), string(parameters)),
            ("hour".to_string(), long(hour)),
            ("minute".to_string(), long(minute)),
            ("minute_of_day".to_string(), long(hour * 60 + minute)),
            ("weekday".to_string(), string(weekday.to_string())),
        ];
        if let Some(on) = self.ota_enabled {
            pairs.push(("ota_enabled".to_string(), cedar::RestrictedExpression::new_bool(on)));
        }
        if let Some(v) = &self.version {
            pairs.push(("version".to_string(), string(v.clone())));
        }
        cedar::Context::from_pairs(pairs).map_err(|e| e.to_string())
    }
}

fn string(s: String) -> cedar::RestrictedExpression {
    cedar::RestrictedExpression::new_string(s)
}

fn long(n: i64) -> cedar::RestrictedExpression {
    cedar::RestrictedExpression::new_long(n)
}

/// The outcome of one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The ids of the policies that decided: the permits that allowed, or the forbids that
    /// denied (empty when nothing permitted the request).
    pub reasons: Vec<String>,
    /// The `@reason` annotation of each policy in `reasons` that has one.
    pub messages: Vec<String>,
    /// Errors met while deciding; any error denies.
    pub errors: Vec<String>,
}

impl Decision {
    fn deny_with(error: String) -> Self {
        Decision { allowed: false, reasons: Vec::new(), messages: Vec::new(), errors: vec![error] }
    }

    /// `Ok` when allowed; otherwise [`Error::Forbidden`] for `caller` doing `what` (the
    /// operation in words): it names the role the default policies want when no policy
    /// permitted it and the caller lacks that role (today's refusal, word for word), and the
    /// policies' reasons when a forbid matched.
    pub fn into_result(self, caller: &Caller, action: Action, what: &str) -> crate::error::Result<()> {
        if self.allowed {
            return Ok(());
        }
        let needed = action.default_role();
        let reason = if !self.reasons.is_empty() {
            let why = if self.messages.is_empty() { self.reasons.join(", ") } else { self.messages.join("; ") };
            format!("forbidden by policy {}: {why}", self.reasons.join(", "))
        } else if !self.errors.is_empty() {
            format!("the policies could not decide ({})", self.errors.join("; "))
        } else if caller.has(needed) {
            format!("no policy permits {action}")
        } else {
            String::new()
        };
        Err(Error::Forbidden {
            action: what.to_string(),
            needed: needed.to_string(),
            subject: caller.subject.clone(),
            has: caller.describe_roles(),
            reason,
        })
    }
}

/// A policy file that cannot be used: each problem with its line and column (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// Where the text came from (a path, or `policies`).
    pub source: String,
    pub problems: Vec<PolicyProblem>,
}

/// One problem of a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> =
            self.problems.iter().map(|p| format!("{}:{}:{}: {}", self.source, p.line, p.column, p.message)).collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for PolicyError {}

impl From<PolicyError> for Error {
    /// `invalid policy file "PATH": line 3, column 16: unexpected end of input; ...`
    fn from(e: PolicyError) -> Self {
        let parts: Vec<String> =
            e.problems.iter().map(|p| format!("line {}, column {}: {}", p.line, p.column, p.message)).collect();
        Error::invalid("policy file", e.source, parts.join("; "))
    }
}

/// Policies validated against the schema, ready to decide.
#[derive(Clone)]
pub struct Authorizer {
    schema: cedar::Schema,
    policies: cedar::PolicySet,
    /// The action entities of the schema (with their groups), added to every request.
    /// Per action name: its entity and those of the groups it is in, the only action
    /// entities a decision of that action needs (building all of them into every request's
    /// entity set cost most of a decision).
    actions: std::collections::HashMap<String, Vec<cedar::Entity>>,
    text: String,
    source: String,
    authorizer: cedar::Authorizer,
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorizer")
            .field("source", &self.source)
            .field("policies", &self.policy_ids())
            .finish_non_exhaustive()
    }
}

impl Default for Authorizer {
    /// The default policies ([`DEFAULT_POLICIES`]).
    fn default() -> Self {
        // Both files ship in the crate and a test parses and validates them.
        Authorizer::from_text(DEFAULT_POLICIES, "default.cedar").expect("the default policies validate")
    }
}

impl Authorizer {
    /// Policies from a file's text, parsed and validated against [`SCHEMA`]; errors name
    /// `policies` as their source (see [`Authorizer::from_text`]).
    pub fn from_files(policies_text: &str) -> Result<Self, PolicyError> {
        Self::from_text(policies_text, "policies")
    }

    /// Policies from `text`, read from `source` (a path, for messages). Refused with every
    /// problem's line and column when the text does not parse, holds a template, repeats an
    /// `@id`, or does not validate against the schema.
    pub fn from_text(text: &str, source: &str) -> Result<Self, PolicyError> {
        let fail = |problems: Vec<PolicyProblem>| PolicyError { source: source.to_string(), problems };
        let schema = schema();
        let parsed = cedar::PolicySet::from_str(text).map_err(|e| fail(problems_of(text, e.iter())))?;
        if let Some(t) = parsed.templates().next() {
            let (line, column) = line_column(text, text.find(&t.to_string()).unwrap_or(0));
            return Err(fail(vec![PolicyProblem {
                line,
                column,
                message: "templates (policies with ?principal or ?resource) are not supported".into(),
            }]));
        }
        // Name each policy by its @id, so a refusal says which policy refused.
        // Parsed ids are `policy{n}`, n the place in the file: walk them in that order to find
        // where each one's text starts.
        let mut in_order: Vec<&cedar::Policy> = parsed.policies().collect();
        in_order.sort_by_key(|p| p.id().to_string().trim_start_matches("policy").parse::<usize>().unwrap_or(0));
        let mut policies = cedar::PolicySet::new();
        let mut problems = Vec::new();
        let mut cursor = 0;
        for p in in_order {
            let own = p.to_string();
            let start = text.get(cursor..).and_then(|rest| rest.find(&own)).map_or(cursor, |at| cursor + at);
            cursor = start + own.len().min(text.len() - start);
            let p = match p.annotation(ID_ANNOTATION) {
                Some(id) => p.new_id(cedar::PolicyId::new(id)),
                None => p.clone(),
            };
            let (line, column) = line_column(text, start);
            let id = p.id().to_string();
            if let Err(e) = policies.add(p) {
                problems.push(PolicyProblem { line, column, message: format!("policy {id:?}: {e}") });
            }
        }
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        let result = cedar::Validator::new(schema.clone()).validate(&policies, cedar::ValidationMode::Strict);
        if !result.validation_passed() {
            let mut problems = problems_of(text, result.validation_errors());
            problems.sort_by(|a, b| (a.line, a.column, &a.message).cmp(&(b.line, b.column, &b.message)));
            return Err(fail(problems));
        }
        let mut actions = std::collections::HashMap::new();
        if let Ok(all) = schema.action_entities() {
            for e in all.iter() {
                let uid = e.uid();
                let mut needed = vec![e.clone()];
                if let Some(groups) = all.ancestors(&uid) {
                    needed.extend(groups.filter_map(|g| all.get(g).cloned()));
                }
                actions.insert(uid.id().unescaped().to_string(), needed);
            }
        }
        Ok(Authorizer {
            schema,
            policies,
            actions,
            text: text.to_string(),
            source: source.to_string(),
            authorizer: cedar::Authorizer::new(),
        })
    }

    /// The text of the policies in force.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Where the policies came from (`default.cedar`, a path).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The ids of the policies, sorted.
    pub fn policy_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.policies.policies().map(|p| p.id().to_string()).collect();
        ids.sort();
        ids
    }

    /// Decides whether `caller` may do `action` on `resource` in `context`.
    pub fn is_authorized(&self, caller: &Caller, action: Action, resource: &Resource, context: &Context) -> Decision {
        self.is_authorized_named(caller, action.name(), resource, context)
    }

    /// [`Authorizer::is_authorized`] for an action given by its Cedar name: one the schema
    /// does not declare is denied, with an error that says so.
    pub fn is_authorized_named(
        &self,
        caller: &Caller,
        action: &str,
        resource: &Resource,
        context: &Context,
    ) -> Decision {
        match self.decide(caller, action, resource, context) {
            Ok(d) => d,
            Err(e) => Decision::deny_with(e),
        }
    }

    fn decide(
        &self,
        caller: &Caller,
        action: &str,
        resource: &Resource,
        context: &Context,
    ) -> Result<Decision, String> {
        if Action::parse(action).is_none() {
            return Err(format!("unknown action {action:?}"));
        }
        let action_uid = uid("Action", action)?;
        let mut entities = self.actions.get(action).cloned().unwrap_or_default();
        let principal = user(caller)?;
        let principal_uid = principal.uid();
        entities.push(principal);
        let resource_uid = resource_entities(resource, &mut entities)?;
        let context = context.to_cedar()?;
        let request = cedar::Request::new(principal_uid, action_uid, resource_uid, context, Some(&self.schema))
            .map_err(|e| e.to_string())?;
        let entities = cedar::Entities::from_entities(entities, None).map_err(|e| e.to_string())?;
        let response = self.authorizer.is_authorized(&request, &self.policies, &entities);
        let reasons: Vec<String> = response.diagnostics().reason().map(ToString::to_string).collect();
        let messages = reasons
            .iter()
            .filter_map(|id| self.policies.policy(&cedar::PolicyId::new(id)))
            .filter_map(|p| p.annotation(REASON_ANNOTATION).map(str::to_string))
            .collect();
        let errors: Vec<String> = response.diagnostics().errors().map(ToString::to_string).collect();
        let allowed = response.decision() == cedar::Decision::Allow && errors.is_empty();
        Ok(Decision { allowed, reasons, messages, errors })
    }
}

/// The shipped schema, parsed.
fn schema() -> cedar::Schema {
    // A test parses it; it never changes at run time.
    cedar::Schema::from_cedarschema_str(SCHEMA).map(|(s, _)| s).expect("ota.cedarschema parses")
}

fn uid(kind: &str, id: &str) -> Result<cedar::EntityUid, String> {
    let kind = cedar::EntityTypeName::from_str(kind).map_err(|e| e.to_string())?;
    Ok(cedar::EntityUid::from_type_name_and_id(kind, cedar::EntityId::new(id)))
}

fn entity(
    kind: &str,
    id: &str,
    attrs: Vec<(&str, cedar::RestrictedExpression)>,
    parents: Vec<cedar::EntityUid>,
) -> Result<cedar::Entity, String> {
    let attrs: HashMap<String, cedar::RestrictedExpression> =
        attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let parents: HashSet<cedar::EntityUid> = parents.into_iter().collect();
    cedar::Entity::new(uid(kind, id)?, attrs, parents).map_err(|e| e.to_string())
}

fn string_set<'a>(items: impl IntoIterator<Item = &'a str>) -> cedar::RestrictedExpression {
    let items: BTreeSet<&str> = items.into_iter().collect();
    cedar::RestrictedExpression::new_set(items.into_iter().map(|s| string(s.to_string())))
}

fn user(caller: &Caller) -> Result<cedar::Entity, String> {
    let roles: Vec<String> = caller.roles.iter().map(ToString::to_string).collect();
    entity(
        "User",
        &caller.subject,
        vec![
            ("subject", string(caller.subject.clone())),
            ("roles", string_set(roles.iter().map(String::as_str))),
            ("groups", string_set(caller.groups.iter().map(String::as_str))),
        ],
        Vec::new(),
    )
}

/// The fleet's one entity id.
const FLEET: &str = "fleet";

/// Adds the resource's entities (it, its type, the fleet) and returns its uid.
fn resource_entities(resource: &Resource, out: &mut Vec<cedar::Entity>) -> Result<cedar::EntityUid, String> {
    let fleet = uid("Fleet", FLEET)?;
    out.push(entity("Fleet", FLEET, Vec::new(), Vec::new())?);
    let with_type = |t: &str, out: &mut Vec<cedar::Entity>| -> Result<cedar::EntityUid, String> {
        out.push(entity("DeviceType", t, vec![("name", string(t.to_string()))], vec![fleet.clone()])?);
        uid("DeviceType", t)
    };
    match resource {
        Resource::Fleet => Ok(fleet.clone()),
        Resource::DeviceType(t) => with_type(t, out),
        Resource::Device { thing, device_type, location, state } => {
            let t = with_type(device_type, out)?;
            let mut attrs = vec![("thing", string(thing.clone())), ("type", string(device_type.clone()))];
            if let Some(l) = location {
                attrs.push(("location", string(l.clone())));
            }
            if let Some(s) = state {
                attrs.push(("state", string(s.clone())));
            }
            out.push(entity("Device", thing, attrs, vec![t, fleet])?);
            uid("Device", thing)
        }
        Resource::Rollout { id, device_type } => {
            let mut attrs = vec![("id", string(id.clone()))];
            let mut parents = vec![fleet.clone()];
            if let Some(t) = device_type {
                parents.push(with_type(t, out)?);
                attrs.push(("device_type", string(t.clone())));
            }
            out.push(entity("Rollout", id, attrs, parents)?);
            uid("Rollout", id)
        }
    }
}

/// Each diagnostic's first label as a line and column of `text`, with its message.
fn problems_of<'a, D: Diagnostic + fmt::Display + 'a>(
    text: &str,
    diagnostics: impl Iterator<Item = &'a D>,
) -> Vec<PolicyProblem> {
    diagnostics
        .map(|d| {
            let offset = d.labels().and_then(|mut l| l.next()).map_or(0, |l| l.offset());
            let (line, column) = line_column(text, offset);
            let mut message = d.to_string();
            if let Some(help) = d.help() {
                message = format!("{message} ({help})");
            }
            PolicyProblem { line, column, message }
        })
        .collect()
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: u32, m: u32) -> Context {
        Context::at(chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 2, h, m, 0).unwrap())
    }

    #[test]
    fn the_schema_and_the_default_policies_validate() {
        let a = Authorizer::default();
        assert_eq!(a.policy_ids(), ["admin-administers", "operator-operates", "viewer-reads"]);
        assert_eq!(a.source(), "default.cedar");
        for action in Action::ALL {
            assert_eq!(Action::parse(action.name()), Some(action));
            assert!(SCHEMA.contains(action.name()), "{action} is missing from the schema");
        }
    }

    #[test]
    fn line_and_column_count_characters_from_one() {
        assert_eq!(line_column("ab\ncdé f", 0), (1, 1));
        assert_eq!(line_column("ab\ncdé f", 3), (2, 1));
        assert_eq!(line_column("ab\ncdé f", "ab\ncdé ".len()), (2, 5));
        assert_eq!(line_column("x", 99), (1, 2));
    }

    #[test]
    fn a_permit_names_itself_and_a_forbid_gives_its_reason() {
        let text = format!(
            "{DEFAULT_POLICIES}\n@id(\"no-sundays\")\n@reason(\"no rollouts on Sundays\")\nforbid (principal, action == Action::\"StartRollout\", resource) when {{ context.weekday == \"sunday\" }};"
        );
        let a = Authorizer::from_text(&text, "t.cedar").unwrap();
        let op = Caller::new("ana", [Role::Operator]);
        let d = a.is_authorized(&op, Action::StartRollout, &Resource::Fleet, &at(10, 0));
        assert!(d.allowed && d.reasons == ["operator-operates"] && d.errors.is_empty(), "{d:?}");
        // 2026-12-06 is a Sunday.
        let sunday = Context::at(chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 6, 10, 0, 0).unwrap());
        let d = a.is_authorized(&op, Action::StartRollout, &Resource::Fleet, &sunday);
        assert!(!d.allowed && d.reasons == ["no-sundays"] && d.messages == ["no rollouts on Sundays"], "{d:?}");
        let err = d.into_result(&op, Action::StartRollout, "start a rollout").unwrap_err().to_string();
        assert!(err.contains("no-sundays") && err.contains("no rollouts on Sundays") && err.contains("ana"), "{err}");
    }

    #[test]
    fn a_resource_of_the_wrong_kind_is_denied_with_an_error() {
        let a = Authorizer::default();
        let admin = Caller::new("root", [Role::Admin]);
        let d = a.is_authorized(&admin, Action::ReadAudit, &Resource::device("pet_feeder-01", "pet_feeder"), &at(1, 0));
        assert!(!d.allowed && !d.errors.is_empty(), "{d:?}");
    }

    #[test]
    fn templates_and_repeated_ids_are_refused_with_their_place() {
        let t = "permit (principal == ?principal, action, resource);";
        let e = Authorizer::from_files(t).unwrap_err();
        assert_eq!((e.problems[0].line, e.problems[0].column), (1, 1), "{e}");
        let twice =
            "@id(\"a\")\npermit (principal, action, resource);\n@id(\"a\")\npermit (principal, action, resource);";
        let e = Authorizer::from_files(twice).unwrap_err();
        assert!(e.to_string().contains("policies:3:1:") && e.to_string().contains("\"a\""), "{e}");
    }
}
