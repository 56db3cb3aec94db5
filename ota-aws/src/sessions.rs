//! Chat conversations on DynamoDB, so a confirmation typed in the chat ("yes") reaches the
//! plan it confirms whichever Lambda instance answers.
//!
//! Table `{prefix}-sessions` (created by `deploy/template.yaml`, or by
//! [`crate::provision`] in tests): key `id` (S); `subject` (S, the owner), `session` (S, the
//! [`Session`] as JSON), `expires_at` (N, epoch seconds: DynamoDB's TTL attribute, set to the
//! last use plus the idle limit). Reads are consistent and check the owner and the expiry
//! themselves, since TTL deletion lags. A session is trimmed to the message limit, and further
//! (oldest first) if its JSON would come near DynamoDB's 400 KB item limit.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use ota_core::Result;
use ota_core::agent::{Session, SessionLimits, SessionStore, not_yours};

use crate::errors::{FailureKind, aws, fail};
use crate::tables::{get_s, parse_json, s};

/// The largest session JSON stored; DynamoDB items may be 400 KB in all.
const MAX_SESSION_BYTES: usize = 300 * 1024;

/// Chat sessions in `{prefix}-sessions`.
#[derive(Debug, Clone)]
pub struct DynamoSessions {
    db: Client,
    table: String,
    limits: SessionLimits,
}

impl DynamoSessions {
    pub fn new(db: Client, table: impl Into<String>, limits: SessionLimits) -> Self {
        DynamoSessions { db, table: table.into(), limits }
    }
}

#[async_trait]
impl SessionStore for DynamoSessions {
    async fn load(&self, id: &str, subject: &str, now: DateTime<Utc>) -> Result<Option<Session>> {
        let out = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("id", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(fail("dynamodb:GetItem"))?;
        let Some(item) = out.item() else { return Ok(None) };
        let session: Session = parse_json("chat session", get_s(item, "session")?)?;
        if now - session.updated_at > self.limits.idle {
            return Ok(None);
        }
        if get_s(item, "subject")? != subject {
            return Err(not_yours(id));
        }
        Ok(Some(session))
    }

    async fn save(&self, mut session: Session) -> Result<()> {
        session.trim(self.limits.max_messages);
        let mut json = serde_json::to_string(&session).map_err(ota_core::Error::storage)?;
        while json.len() > MAX_SESSION_BYTES && !session.messages.is_empty() {
            let keep = session.messages.len() / 2;
            session.trim(keep);
            if keep == 0 {
                session.messages.clear();
            }
            json = serde_json::to_string(&session).map_err(ota_core::Error::storage)?;
        }
        let expires_at = (session.updated_at + self.limits.idle).timestamp();
        let written = self
            .db
            .put_item()
            .table_name(&self.table)
            .item("id", s(&session.id))
            .item("subject", s(&session.subject))
            .item("session", s(json))
            .item("expires_at", AttributeValue::N(expires_at.to_string()))
            // Never replace a live session of another subject (TTL deletion lags: an expired
            // one may be taken over).
            .condition_expression("attribute_not_exists(id) OR subject = :subject OR expires_at < :now")
            .expression_attribute_values(":subject", s(&session.subject))
            .expression_attribute_values(":now", AttributeValue::N(session.updated_at.timestamp().to_string()))
            .send()
            .await
            .map_err(aws("dynamodb:PutItem"));
        match written {
            Ok(_) => Ok(()),
            Err(f) if f.kind == FailureKind::ConditionFailed => Err(not_yours(&session.id)),
            Err(f) => Err(f.into_error()),
        }
    }
}
