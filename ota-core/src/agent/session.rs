//! Conversation state: the messages of one session, the action waiting for confirmation and
//! the last plan shown. Bounded in sessions, messages and idle time.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::model::ChatMessage;
use crate::error::{Error, Result};
use crate::names::{DeviceType, JobId};
use crate::plan::Plan;
use crate::targeting::UpdateRequest;

/// An action shown to the person and waiting for their explicit confirmation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PendingAction {
    /// Start the rollouts of plan `plan_id` (an update or a rollback). A plan of several
    /// changes carries each in `requests` (and the first in `request`); one confirmation
    /// starts them all. Sessions saved before `requests` existed read it as empty.
    Start {
        plan_id: String,
        request: Box<UpdateRequest>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        requests: Vec<UpdateRequest>,
    },
    /// Cancel these active rollouts.
    Cancel { rollouts: Vec<JobId> },
    /// Open or close the OTA gate of these types.
    SetOta { device_types: Vec<DeviceType>, enabled: bool },
}

impl PendingAction {
    /// The start of plan `plan_id` of `requests` (those of [`Plan::update_requests`]); `None`
    /// without any.
    pub fn start(plan_id: impl Into<String>, mut requests: Vec<UpdateRequest>) -> Option<Self> {
        let first = requests.first()?.clone();
        if requests.len() == 1 {
            requests.clear();
        }
        Some(PendingAction::Start { plan_id: plan_id.into(), request: Box::new(first), requests })
    }

    /// The start of `plan`, when it has a plan id and requests to start.
    pub fn start_of(plan: &Plan) -> Option<Self> {
        Self::start(plan.plan_id.clone()?, plan.update_requests())
    }

    /// The requests a start re-plans: all of a plan of several changes, else the one.
    pub fn start_requests(&self) -> Vec<UpdateRequest> {
        match self {
            PendingAction::Start { request, requests, .. } if requests.is_empty() => vec![(**request).clone()],
            PendingAction::Start { requests, .. } => requests.clone(),
            _ => Vec::new(),
        }
    }

    /// The plan id this action starts, if it starts one.
    pub fn plan_id(&self) -> Option<&str> {
        match self {
            PendingAction::Start { plan_id, .. } => Some(plan_id),
            _ => None,
        }
    }
}

/// One conversation. It belongs to the subject who started it: another caller naming the
/// same id gets a fresh session, never this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub subject: String,
    pub messages: Vec<ChatMessage>,
    pub pending: Option<PendingAction>,
    /// The last update or rollback plan shown, for the confirmation card.
    pub last_plan: Option<Plan>,
    pub updated_at: DateTime<Utc>,
}

impl Session {
    pub fn new(id: impl Into<String>, subject: impl Into<String>, now: DateTime<Utc>) -> Self {
        Session {
            id: id.into(),
            subject: subject.into(),
            messages: Vec::new(),
            pending: None,
            last_plan: None,
            updated_at: now,
        }
    }

    /// Drops the oldest messages beyond `max`, cutting only before a user message so a tool
    /// call is never separated from its result.
    pub fn trim(&mut self, max: usize) {
        if self.messages.len() <= max {
            return;
        }
        let excess = self.messages.len() - max;
        let cut = self.messages[excess..]
            .iter()
            .position(|m| matches!(m, ChatMessage::User { .. }))
            .map(|i| i + excess)
            .unwrap_or(self.messages.len());
        self.messages.drain(..cut);
    }
}

/// How much conversation state is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Sessions kept at once; the least recently used goes first.
    pub max_sessions: usize,
    /// Messages kept per session (user, assistant and tool messages).
    pub max_messages: usize,
    /// A session idle this long is forgotten, with its pending action.
    pub idle: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits { max_sessions: 1_000, max_messages: 40, idle: Duration::minutes(30) }
    }
}

/// Where sessions live between requests.
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// The session `id` of `subject`, if it exists, belongs to them and is not idle past the
    /// limit at `now`. `Conflict` ([`not_yours`]) when a live session `id` belongs to another
    /// subject: it is neither returned nor touched.
    async fn load(&self, id: &str, subject: &str, now: DateTime<Utc>) -> Result<Option<Session>>;

    /// Stores the session (trimmed to the limits). Never replaces a live session of another
    /// subject: `Conflict` ([`not_yours`]) then, atomically with the write.
    async fn save(&self, session: Session) -> Result<()>;
}

/// The error for a session id that belongs to another subject.
pub fn not_yours(id: &str) -> Error {
    Error::Conflict(format!(
        "chat session {id} belongs to another user; it was neither read nor changed (start a new session)"
    ))
}

/// Sessions in this process's memory: right for `ota serve`, and for a warm Lambda instance
/// (a confirmation from the page carries its plan, so it does not depend on this state).
#[derive(Debug, Default)]
pub struct MemorySessions {
    limits: SessionLimits,
    sessions: Mutex<HashMap<String, Session>>,
}

impl MemorySessions {
    pub fn new(limits: SessionLimits) -> Self {
        MemorySessions { limits, sessions: Mutex::new(HashMap::new()) }
    }

    /// Sessions held now.
    pub fn len(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }
}

#[async_trait]
impl SessionStore for MemorySessions {
    async fn load(&self, id: &str, subject: &str, now: DateTime<Utc>) -> Result<Option<Session>> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let idle = self.limits.idle;
        sessions.retain(|_, s| now - s.updated_at <= idle);
        match sessions.get(id) {
            Some(s) if s.subject != subject => Err(not_yours(id)),
            found => Ok(found.cloned()),
        }
    }

    async fn save(&self, mut session: Session) -> Result<()> {
        session.trim(self.limits.max_messages);
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = sessions.get(&session.id)
            && held.subject != session.subject
            && session.updated_at - held.updated_at <= self.limits.idle
        {
            return Err(not_yours(&session.id));
        }
        sessions.insert(session.id.clone(), session);
        while sessions.len() > self.limits.max_sessions {
            let Some(oldest) = sessions.values().min_by_key(|s| s.updated_at).map(|s| s.id.clone()) else { break };
            sessions.remove(&oldest);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(min: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap() + Duration::minutes(min)
    }

    #[tokio::test]
    async fn sessions_are_bounded_owned_and_forgotten_when_idle() {
        let store =
            MemorySessions::new(SessionLimits { max_sessions: 2, max_messages: 3, idle: Duration::minutes(10) });
        let mut a = Session::new("a", "ana", at(0));
        for i in 0..5 {
            a.messages.push(ChatMessage::user(format!("q{i}")));
            a.messages.push(ChatMessage::assistant(format!("a{i}")));
        }
        store.save(a).await.unwrap();
        let a = store.load("a", "ana", at(1)).await.unwrap().unwrap();
        // Trimmed to at most 3, starting at a user message.
        assert_eq!(a.messages, vec![ChatMessage::user("q4"), ChatMessage::assistant("a4")]);
        // Another subject never gets ana's session, nor replaces it.
        assert!(matches!(store.load("a", "bob", at(1)).await, Err(Error::Conflict(_))));
        assert!(matches!(store.save(Session::new("a", "bob", at(1))).await, Err(Error::Conflict(_))));
        assert_eq!(store.load("a", "ana", at(1)).await.unwrap().unwrap().messages.len(), 2, "ana's is intact");
        store.save(Session::new("b", "bob", at(2))).await.unwrap();
        store.save(Session::new("c", "cy", at(3))).await.unwrap();
        assert_eq!(store.len(), 2, "the least recently used session went");
        assert!(store.load("a", "ana", at(3)).await.unwrap().is_none());
        assert!(store.load("c", "cy", at(20)).await.unwrap().is_none(), "idle sessions are forgotten");
    }

    #[test]
    fn a_start_saved_before_several_changes_still_reads_as_its_one_request() {
        let req = UpdateRequest {
            action: crate::targeting::UpdateAction::Update,
            version: crate::version::VersionRequest::parse("2.0.0").unwrap(),
            target: crate::targeting::Target {
                device_types: [DeviceType::parse("pet_feeder").unwrap()].into(),
                ..Default::default()
            },
            filters: Default::default(),
            revert_on_abort: false,
        };
        let old = serde_json::json!({ "kind": "start", "plan_id": "plan-0123456789ab", "request": req });
        let read: PendingAction = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(read.start_requests(), std::slice::from_ref(&req));
        // One request serializes as before; several carry each.
        assert_eq!(serde_json::to_value(PendingAction::start("plan-0123456789ab", vec![req.clone()])).unwrap(), old);
        let mut other = req.clone();
        other.version = crate::version::VersionRequest::Latest;
        let both = PendingAction::start("plan-0123456789ab", vec![req.clone(), other.clone()]).unwrap();
        assert_eq!(both.start_requests(), [req, other]);
        let back: PendingAction = serde_json::from_value(serde_json::to_value(&both).unwrap()).unwrap();
        assert_eq!(back, both);
    }

    #[test]
    fn trim_never_separates_a_tool_call_from_its_result() {
        let mut s = Session::new("s", "ana", at(0));
        s.messages = vec![
            ChatMessage::user("q"),
            ChatMessage::Assistant {
                text: String::new(),
                tool_calls: vec![super::super::ToolCall { id: "1".into(), name: "x".into(), arguments: "{}".into() }],
            },
            ChatMessage::Tool { call_id: "1".into(), name: "x".into(), content: "r".into(), is_error: false },
            ChatMessage::assistant("done"),
            ChatMessage::user("q2"),
            ChatMessage::assistant("a2"),
        ];
        s.trim(3);
        assert_eq!(s.messages, vec![ChatMessage::user("q2"), ChatMessage::assistant("a2")]);
    }
}
