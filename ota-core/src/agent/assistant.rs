//! The agent loop. See the module documentation of [`crate::agent`] for its rules.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::model::{ChatMessage, ChatModel, ChatRequest, ToolEffect, ToolSpec, Usage};
use super::session::{PendingAction, Session, SessionStore};
use super::{ToolOutput, Toolbox};
use crate::auth::{Caller, Role};
use crate::error::{Error, Result};
use crate::plan::{Action, Plan};
use crate::rollout::Rollout;
use crate::service::{FleetManager, StartItem, StartOutcome, StartResult};

/// What the model is told before every conversation. Roles and rules are enforced by the
/// service whatever the model makes of this.
pub const CHAT_INSTRUCTIONS: &str = "\
You are the assistant of ota, which manages the firmware of a fleet of ESP32 devices. \
Device types (e.g. pet_feeder) are firmware folders; their devices (things, e.g. pet_feeder-03) run semantic \
versions. Each type has an OTA gate; a disabled type is refused in every plan.
Use the tools to look things up and to plan; never invent device names, versions or numbers. \
To change anything (start or roll back a rollout, cancel one, open or close an OTA gate), call plan_update \
or the changing tool: the system never runs a change on your word; it shows the plan to the person with a \
Confirm button and runs it only when they confirm. Tell the person what the plan does (types, versions, \
device counts, refusals) and that they must confirm. If a tool refuses (a missing role, a disabled type, an \
unknown version), explain the refusal plainly; do not try to work around it. Answer briefly.";

/// Limits of the agent loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssistantOptions {
    /// Model calls per message before the assistant gives up.
    pub max_steps: usize,
    /// Characters of one tool result sent to the model; longer results are cut, with a note.
    pub max_tool_output: usize,
    /// Characters of one message from the person.
    pub max_message: usize,
    /// No new model call starts after this long (a Lambda behind API Gateway has 30 s in all);
    /// `None`: only the step cap bounds the loop.
    pub time_budget: Option<chrono::Duration>,
}

impl Default for AssistantOptions {
    fn default() -> Self {
        AssistantOptions { max_steps: 6, max_tool_output: 8_000, max_message: 4_000, time_budget: None }
    }
}

/// Who produced a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnsweredBy {
    /// The intent engine understood the request: no model call.
    Intent,
    /// The language model, with tools.
    Model,
    /// A confirmation (or a refusal to confirm) of the pending action.
    Confirmation,
    /// Nobody could: no model is configured or it failed; the reply says so.
    Fallback,
}

/// One tool call of a reply, for the person and the tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolTrace {
    pub name: String,
    /// False when the call was refused or malformed.
    pub ok: bool,
    /// False for changing tools: they wait for confirmation instead.
    pub executed: bool,
}

/// The answer to one chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatReply {
    pub session_id: String,
    pub reply: String,
    /// The plan to show (an update or rollback card), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    /// What confirming runs; `None` when nothing waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingAction>,
    /// Rollouts started, cancelled or asked about. After a confirmed start: only the active
    /// ones it started or found already running, never an ended rollout.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<Rollout>,
    /// After a confirmed start: what happened to each deployment (started, already running
    /// since, refused), as the service said it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<StartItem>,
    pub answered_by: AnsweredBy,
    /// The service's refusal kind (`forbidden`, `refused`, ...) when the request was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub model_calls: u32,
    pub usage: Usage,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolTrace>,
}

/// The chat assistant over one service.
#[derive(Debug, Clone)]
pub struct Assistant {
    svc: Arc<FleetManager>,
    model: Option<Arc<dyn ChatModel>>,
    tools: Option<Arc<dyn Toolbox>>,
    sessions: Arc<dyn SessionStore>,
    options: AssistantOptions,
    counter: Arc<AtomicU64>,
}

impl Assistant {
    /// An assistant answering from the intent engine only.
    pub fn new(svc: Arc<FleetManager>, sessions: Arc<dyn SessionStore>) -> Self {
        Assistant {
            svc,
            model: None,
            tools: None,
            sessions,
            options: AssistantOptions::default(),
            counter: Default::default(),
        }
    }

    /// Adds a model and the tools it may call, for what the intent engine does not understand.
    pub fn with_model(mut self, model: Arc<dyn ChatModel>, tools: Arc<dyn Toolbox>) -> Self {
        self.model = Some(model);
        self.tools = Some(tools);
        self
    }

    pub fn with_options(mut self, options: AssistantOptions) -> Self {
        self.options = options;
        self
    }

    /// The configured model, described.
    pub fn model(&self) -> Option<String> {
        self.model.as_ref().map(|m| m.describe())
    }

    pub fn service(&self) -> &Arc<FleetManager> {
        &self.svc
    }

    /// Answers one message of `caller` in session `session_id` (a new session when `None`).
    /// Service refusals are answers (the reply explains them); only storage failures and
    /// malformed input are errors.
    pub async fn chat(&self, caller: &Caller, session_id: Option<&str>, message: &str) -> Result<ChatReply> {
        caller.require(Role::Viewer, "chat")?;
        let message = message.trim();
        if message.is_empty() {
            return Err(Error::invalid("message", "", "say what you want, e.g. \"List firmware\""));
        }
        if message.chars().count() > self.options.max_message {
            return Err(Error::invalid(
                "message",
                format!("{}…", message.chars().take(40).collect::<String>()),
                format!("longer than {} characters", self.options.max_message),
            ));
        }
        let mut session = self.session(caller, session_id).await?;
        let mut reply = if session.pending.is_some() && is_confirmation(message) {
            let pending = session.pending.take().expect("checked");
            let mut r = self.run_pending(caller, &session.id, pending).await?;
            r.answered_by = AnsweredBy::Confirmation;
            r
        } else if session.pending.is_some() && is_decline(message) {
            session.pending = None;
            self.reply(&session.id, "OK, nothing was started or changed.", AnsweredBy::Confirmation)
        } else if is_confirmation(message) || is_decline(message) {
            // Consent to nothing in particular is never passed on (to a model least of all).
            self.reply(
                &session.id,
                "Nothing is waiting for your confirmation in this conversation, so nothing was started or changed. Ask again for a new plan.",
                AnsweredBy::Confirmation,
            )
        } else {
            // A new request replaces any unconfirmed action: "yes" only ever confirms what
            // was shown last.
            session.pending = None;
            self.answer(caller, &mut session, message).await?
        };
        session.messages.push(ChatMessage::user(message));
        session.messages.push(ChatMessage::assistant(reply.reply.clone()));
        if reply.pending.is_some() {
            session.pending = reply.pending.clone();
        }
        if let Some(p) = &reply.plan {
            session.last_plan = Some(p.clone());
        }
        session.updated_at = self.svc.now();
        reply.session_id = session.id.clone();
        self.sessions.save(session).await?;
        Ok(reply)
    }

    /// Runs the plan `plan_id` confirmed by a button: the session's pending plan when it is
    /// that one, else `requests` (those of the plan the page was shown, one or each change of
    /// a plan of several, re-planned and checked against `plan_id` by the service, so a page
    /// cannot start anything but what the id names).
    pub async fn start_plan(
        &self,
        caller: &Caller,
        session_id: Option<&str>,
        plan_id: &str,
        requests: Vec<crate::targeting::UpdateRequest>,
    ) -> Result<ChatReply> {
        let mut session = self.session(caller, session_id).await?;
        let pending = match session.pending.take() {
            Some(p) if p.plan_id() == Some(plan_id) => p,
            other => {
                session.pending = other;
                match PendingAction::start(plan_id, requests) {
                    Some(start) => start,
                    None => {
                        return Err(Error::not_found_hint(
                            "pending plan",
                            plan_id,
                            "nothing waits for confirmation under this id in this session; ask again to get a new plan",
                        ));
                    }
                }
            }
        };
        let mut reply = self.run_pending(caller, &session.id, pending).await?;
        reply.answered_by = AnsweredBy::Confirmation;
        session.messages.push(ChatMessage::user(format!("(confirmed plan {plan_id})")));
        session.messages.push(ChatMessage::assistant(reply.reply.clone()));
        session.updated_at = self.svc.now();
        self.sessions.save(session).await?;
        Ok(reply)
    }

    async fn session(&self, caller: &Caller, id: Option<&str>) -> Result<Session> {
        let now = self.svc.now();
        let id = match id {
            Some(id) => {
                if id.is_empty()
                    || id.len() > 64
                    || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(Error::invalid("session_id", id, "1 to 64 letters, digits, '-' or '_'"));
                }
                id.to_string()
            }
            None => {
                let n = self.counter.fetch_add(1, Ordering::Relaxed);
                let digest =
                    Sha256::digest(format!("{}|{}|{n}", caller.subject, now.timestamp_nanos_opt().unwrap_or(0)));
                format!("s-{}", &hex::encode(digest)[..20])
            }
        };
        Ok(self
            .sessions
            .load(&id, &caller.subject, now)
            .await?
            .unwrap_or_else(|| Session::new(id, &caller.subject, now)))
    }

    fn reply(&self, session_id: &str, text: impl Into<String>, by: AnsweredBy) -> ChatReply {
        ChatReply {
            session_id: session_id.to_string(),
            reply: text.into(),
            plan: None,
            pending: None,
            rollouts: Vec::new(),
            items: Vec::new(),
            answered_by: by,
            error: None,
            model_calls: 0,
            usage: Usage::default(),
            tool_calls: Vec::new(),
        }
    }

    /// A refusal by the service, as an answer.
    fn refused(&self, session_id: &str, e: Error, by: AnsweredBy) -> Result<ChatReply> {
        if matches!(e, Error::Storage(_)) {
            return Err(e);
        }
        let mut r = self.reply(session_id, format!("Refused, nothing changed: {e}"), by);
        r.error = Some(e.kind().to_string());
        Ok(r)
    }

    /// A new request: the intent engine first, the model when the engine did not understand.
    async fn answer(&self, caller: &Caller, session: &mut Session, message: &str) -> Result<ChatReply> {
        // Sure: the engine understood. A question it could answer only with a listing (advice,
        // reasons, or nothing named: "any advice?") goes to the model when there is one.
        let planned = if self.model.is_some() {
            self.svc.plan_prompt_noting_open_questions(caller, message).await
        } else {
            self.svc.plan_prompt(caller, message).await.map(|p| (p, false))
        };
        let (plan, open_question) = match planned {
            Ok(p) => p,
            Err(e) => return self.refused(&session.id, e, AnsweredBy::Intent),
        };
        if plan.action != Action::Unknown && !open_question {
            return self.plan_reply(caller, &session.id, plan).await;
        }
        match (&self.model, &self.tools) {
            (Some(model), Some(tools)) => self.ask_model(caller, session, message, model.clone(), tools.clone()).await,
            _ => {
                let mut r = self.reply(
                    &session.id,
                    format!(
                        "{} (No language model is configured, so I understand only requests like these.)",
                        plan.message
                    ),
                    AnsweredBy::Fallback,
                );
                r.plan = None;
                Ok(r)
            }
        }
    }

    /// The reply for a plan of the intent engine; changes become pending actions.
    async fn plan_reply(&self, caller: &Caller, session_id: &str, plan: Plan) -> Result<ChatReply> {
        let mut r = self.reply(session_id, plan.message.clone(), AnsweredBy::Intent);
        match plan.action {
            Action::Update | Action::Rollback => {
                let running = plan.deployments.iter().filter(|d| d.running_since.is_some()).count();
                if let Some(start) = PendingAction::start_of(&plan)
                    && plan.deployments.len() > running
                {
                    r.pending = Some(start);
                    r.reply = if running == 0 {
                        format!("{} Nothing has started: confirm to start it.", plan.message)
                    } else {
                        format!(
                            "{} Nothing new has started: confirm to start the rest; what is already running is left as it is.",
                            plan.message
                        )
                    };
                } else if running > 0 {
                    // Everything it asks for is already running: there is nothing to confirm.
                    r.reply = format!("{} Nothing new would start.", plan.message);
                }
                r.plan = Some(plan);
            }
            Action::Cancel if !plan.rollouts.is_empty() => {
                r.pending = Some(PendingAction::Cancel { rollouts: plan.rollouts.clone() });
                r.reply = format!("{} Confirm to cancel.", plan.message);
            }
            Action::EnableOta | Action::DisableOta if !plan.device_types.is_empty() => {
                r.pending = Some(PendingAction::SetOta {
                    device_types: plan.device_types.clone(),
                    enabled: plan.action == Action::EnableOta,
                });
                r.reply = format!("{} Confirm to apply.", plan.message);
            }
            Action::RolloutStatus => {
                for id in &plan.rollouts {
                    if let Ok(ro) = self.svc.rollout(caller, id).await {
                        r.rollouts.push(ro);
                    }
                }
            }
            _ => {}
        }
        Ok(r)
    }

    /// Runs a confirmed action through the service, as `caller`.
    async fn run_pending(&self, caller: &Caller, session_id: &str, pending: PendingAction) -> Result<ChatReply> {
        match pending {
            start @ PendingAction::Start { .. } => {
                match self.svc.start_requests(caller, &start.start_requests(), start.plan_id()).await {
                    Ok(o) => {
                        let mut r = self.reply(session_id, start_words(&o), AnsweredBy::Confirmation);
                        if o.nothing_changed() {
                            r.error = Some("refused".to_string());
                        }
                        r.plan = Some(o.plan);
                        r.rollouts = o.rollouts;
                        r.items = o.items;
                        Ok(r)
                    }
                    Err(e) => self.refused(session_id, e, AnsweredBy::Confirmation),
                }
            }
            PendingAction::Cancel { rollouts } => {
                let mut r = self.reply(session_id, String::new(), AnsweredBy::Confirmation);
                let reason = format!("cancelled from the chat by {}", caller.subject);
                // Each rollout is cancelled on its own; one that cannot be (it ended meanwhile)
                // is reported and does not stop the others.
                let mut failed: Vec<String> = Vec::new();
                let mut first_error = None;
                for id in rollouts {
                    match self.svc.cancel(caller, &id, &reason).await {
                        Ok(ro) => r.rollouts.push(ro),
                        Err(e @ Error::Storage(_)) => return Err(e),
                        Err(e) => {
                            failed.push(format!("{id} ({e})"));
                            first_error.get_or_insert(e);
                        }
                    }
                }
                if r.rollouts.is_empty()
                    && let Some(e) = first_error
                {
                    return self.refused(session_id, e, AnsweredBy::Confirmation);
                }
                let ids: Vec<&str> = r.rollouts.iter().map(|ro| ro.id.as_str()).collect();
                r.reply = format!("Cancelled {}; queued devices will not start.", ids.join(", "));
                if !failed.is_empty() {
                    // Some were cancelled, so the request as a whole was not refused.
                    r.reply.push_str(&format!(" Not cancelled: {}.", failed.join("; ")));
                }
                Ok(r)
            }
            PendingAction::SetOta { device_types, enabled } => {
                for t in &device_types {
                    if let Err(e) = self.svc.set_ota_enabled(caller, t, enabled).await {
                        return self.refused(session_id, e, AnsweredBy::Confirmation);
                    }
                }
                let names: Vec<&str> = device_types.iter().map(|t| t.as_str()).collect();
                Ok(self.reply(
                    session_id,
                    format!("OTA is now {} for {}.", if enabled { "enabled" } else { "disabled" }, names.join(", ")),
                    AnsweredBy::Confirmation,
                ))
            }
        }
    }

    /// The agent loop: the model with tools, up to the step cap.
    async fn ask_model(
        &self,
        caller: &Caller,
        session: &Session,
        message: &str,
        model: Arc<dyn ChatModel>,
        tools: Arc<dyn Toolbox>,
    ) -> Result<ChatReply> {
        let specs: Vec<ToolSpec> = tools.specs();
        let roles: Vec<String> = caller.roles.iter().map(ToString::to_string).collect();
        let system = format!(
            "{CHAT_INSTRUCTIONS}\nThe person is {} with the role{} {}.",
            caller.subject,
            if roles.len() == 1 { "" } else { "s" },
            if roles.is_empty() { "none".to_string() } else { roles.join(", ") }
        );
        let mut messages = session.messages.clone();
        messages.push(ChatMessage::user(message));
        let mut r = self.reply(&session.id, String::new(), AnsweredBy::Model);
        let started = self.svc.now();
        for _ in 0..self.options.max_steps {
            if let Some(budget) = self.options.time_budget
                && self.svc.now() - started > budget
            {
                r.reply = format!(
                    "I ran out of time after {} model step{} without a final answer. {}Try a more specific request.",
                    r.model_calls,
                    if r.model_calls == 1 { "" } else { "s" },
                    nothing_changed(&r),
                );
                r.error = Some("time_budget".to_string());
                return Ok(r);
            }
            r.model_calls += 1;
            let response = match model
                .complete(ChatRequest { system: &system, messages: &messages, tools: &specs })
                .await
            {
                Ok(resp) => resp,
                Err(e) => {
                    r.answered_by = AnsweredBy::Fallback;
                    r.error = Some("model".to_string());
                    r.reply = format!(
                        "{e}. Nothing was started or changed{}.",
                        if r.pending.is_some() { " (the plan above still waits for your confirmation)" } else { "" }
                    );
                    return Ok(r);
                }
            };
            r.usage += response.usage;
            messages
                .push(ChatMessage::Assistant { text: response.text.clone(), tool_calls: response.tool_calls.clone() });
            if response.tool_calls.is_empty() {
                r.reply = if response.text.trim().is_empty() {
                    "The model gave no answer.".to_string()
                } else {
                    response.text.trim().to_string()
                };
                return Ok(r);
            }
            for call in response.tool_calls {
                let (output, executed) =
                    self.run_tool(caller, &*tools, &specs, &call.name, &call.arguments, &mut r).await;
                r.tool_calls.push(ToolTrace { name: call.name.clone(), ok: output.ok, executed });
                let mut content = output.text;
                if content.chars().count() > self.options.max_tool_output {
                    content = content.chars().take(self.options.max_tool_output).collect::<String>()
                        + "\n[cut: the result was longer; narrow the request]";
                }
                messages.push(ChatMessage::Tool { call_id: call.id, name: call.name, content, is_error: !output.ok });
            }
        }
        r.reply = format!(
            "I stopped after {} model steps without a final answer (the step cap), so I cannot say more. {}Try a more specific request.",
            self.options.max_steps,
            nothing_changed(&r),
        );
        r.error = Some("step_cap".to_string());
        Ok(r)
    }

    /// One tool call of the model: read tools run; changing tools are previewed (checked by
    /// the service, nothing changes) and become the pending action. Returns the output for
    /// the model and whether the call ran.
    async fn run_tool(
        &self,
        caller: &Caller,
        tools: &dyn Toolbox,
        specs: &[ToolSpec],
        name: &str,
        arguments: &str,
        r: &mut ChatReply,
    ) -> (ToolOutput, bool) {
        let Some(spec) = specs.iter().find(|s| s.name == name) else {
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            return (
                ToolOutput::error(format!("There is no tool named {name:?}. Tools: {}.", names.join(", "))),
                false,
            );
        };
        let args: Value = match serde_json::from_str::<Value>(if arguments.trim().is_empty() {
            "{}"
        } else {
            arguments
        }) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return (ToolOutput::error("The arguments must be a JSON object matching the tool's schema."), false);
            }
            Err(e) => {
                return (
                    ToolOutput::error(format!(
                        "The arguments are not valid JSON ({e}); call {name} again with a JSON object matching its schema."
                    )),
                    false,
                );
            }
        };
        match spec.effect {
            ToolEffect::Read => {
                let out = tools.call(caller, name, &args).await;
                if out.ok
                    && let Some(plan) = startable_plan(&out.data)
                {
                    r.pending = PendingAction::start_of(&plan);
                    r.plan = Some(plan);
                }
                (out, true)
            }
            ToolEffect::Change => {
                let (mut out, pending) = tools.preview(caller, name, &args).await;
                if let Some(p) = pending {
                    if let Some(plan) = startable_plan(&out.data) {
                        r.plan = Some(plan);
                    }
                    r.pending = Some(p);
                    out.text = format!(
                        "NOT RUN YET: this change waits for the person's explicit confirmation (the page shows a Confirm button; they may also answer \"yes\"). Tell them what it will do. What it would do:\n{}",
                        out.text
                    );
                }
                (out, false)
            }
        }
    }
}

/// The confirmation's answer: each item in the service's words ("started X (type)", "already
/// running X (type), started at …", "refused X (type), nothing changed for it: …"), and
/// "Refused, nothing changed" only when nothing was started or found running.
fn start_words(o: &StartOutcome) -> String {
    let list = o.summary();
    if o.nothing_changed() {
        return format!("Refused, nothing changed: {list}.");
    }
    let any_started = o.items.iter().any(|i| matches!(i.result, StartResult::Started));
    let tail =
        if any_started { "Progress follows below." } else { "Nothing new was started; its progress follows below." };
    let mut text = format!("{list}. {tail}");
    if let Some(first) = text.get(..1) {
        text = first.to_uppercase() + &text[1..];
    }
    text
}

/// What a model turn that ended without an answer left behind, for its reply.
fn nothing_changed(r: &ChatReply) -> &'static str {
    if r.pending.is_some() {
        "The plan above still waits for your confirmation; nothing else was started or changed. "
    } else {
        "Nothing was started or changed. "
    }
}

/// A plan in a tool's structured output that can be started.
fn startable_plan(data: &Value) -> Option<Plan> {
    let plan: Plan = serde_json::from_value(data.clone()).ok()?;
    (matches!(plan.action, Action::Update | Action::Rollback)
        && !plan.deployments.is_empty()
        && plan.plan_id.is_some()
        && !plan.update_requests().is_empty())
    .then_some(plan)
}

/// Words that confirm the pending action, and nothing more: a sentence with a request in it
/// is a new request.
pub fn is_confirmation(text: &str) -> bool {
    let t = normalize(text);
    matches!(
        t.as_str(),
        "yes"
            | "y"
            | "yes please"
            | "yes start it"
            | "yes do it"
            | "yes go ahead"
            | "confirm"
            | "confirmed"
            | "i confirm"
            | "go"
            | "go ahead"
            | "do it"
            | "start"
            | "start it"
            | "proceed"
            | "ok"
            | "okay"
            | "ok go"
            | "ok start it"
            | "sure"
            | "approve"
            | "approved"
            | "run it"
    )
}

/// Words that decline the pending action. Not "stop" or "abort": those ask to cancel a
/// rollout, which the intent engine plans (and which then waits for its own confirmation).
pub fn is_decline(text: &str) -> bool {
    let t = normalize(text);
    matches!(t.as_str(), "no" | "n" | "nope" | "no thanks" | "not now" | "never mind" | "nevermind" | "dont" | "don't")
}

fn normalize(text: &str) -> String {
    let t: String =
        text.to_lowercase().chars().map(|c| if c.is_alphanumeric() || c == '\'' { c } else { ' ' }).collect();
    t.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bare_consent_confirms_and_a_request_with_yes_in_it_does_not() {
        for yes in ["yes", "Yes!", "  YES, start it ", "confirm", "go ahead", "OK"] {
            assert!(is_confirmation(yes), "{yes}");
        }
        for not in ["yes update the smart plugs too", "yes and roll back pet_feeder-03", "yesterday", "confirm?? no"] {
            assert!(!is_confirmation(not), "{not}");
        }
        for no in ["no", "No thanks", "never mind", "not now"] {
            assert!(is_decline(no), "{no}");
        }
        for cancel in ["stop", "abort", "stop it", "no, update smart_plug instead"] {
            assert!(!is_decline(cancel), "{cancel}: goes to the intent engine");
        }
    }
}
