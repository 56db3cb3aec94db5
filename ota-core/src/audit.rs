//! The audit trail: who asked what, when, what plan it produced, and how it ended.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::Role;

/// One audited operation. Entries are append-only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Assigned by the log on append, increasing; 0 before that.
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub subject: String,
    pub roles: Vec<Role>,
    /// `plan`, `start`, `cancel`, `set_ota`, `publish`, ...
    pub operation: String,
    /// The request as given (prompt text or typed request).
    pub request: serde_json::Value,
    /// The plan it produced, when there was one.
    pub plan: Option<serde_json::Value>,
    pub outcome: AuditOutcome,
}

/// How an audited operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result", content = "detail")]
pub enum AuditOutcome {
    Ok(String),
    Refused(String),
    Error(String),
}
