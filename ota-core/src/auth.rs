//! Who is asking. Every service operation is decided by the policies in force
//! ([`crate::authz`]) from the caller's roles and groups; nothing a prompt says can add one.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A role, from least to most powerful. A higher role includes every lower one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads firmware, devices, plans of read-only requests and rollouts.
    Viewer,
    /// Plans, starts and cancels updates and rollbacks.
    Operator,
    /// Enables or disables OTA per type, publishes firmware, changes policy.
    Admin,
}

impl Role {
    /// Parses `viewer`, `operator` or `admin` (any case).
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err(Error::invalid("role", s, "expected viewer, operator or admin")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        })
    }
}

/// An authenticated caller. Front doors build it from a verified token or the local user;
/// the service trusts nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub subject: String,
    pub roles: BTreeSet<Role>,
    /// The token's groups that are not ota roles (`senior_operator`, ...): policies may use
    /// them (`principal.groups.contains("senior_operator")`); the default policies do not.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub groups: BTreeSet<String>,
}

impl Caller {
    /// A caller with the given roles and no other group.
    pub fn new(subject: impl Into<String>, roles: impl IntoIterator<Item = Role>) -> Self {
        Caller { subject: subject.into(), roles: roles.into_iter().collect(), groups: BTreeSet::new() }
    }

    /// With these groups as well.
    pub fn with_groups<S: Into<String>>(mut self, groups: impl IntoIterator<Item = S>) -> Self {
        self.groups.extend(groups.into_iter().map(Into::into));
        self
    }

    /// The caller's roles in words: `operator`, `viewer, admin`, or `no role`.
    pub fn describe_roles(&self) -> String {
        if self.roles.is_empty() {
            "no role".to_string()
        } else {
            self.roles.iter().map(Role::to_string).collect::<Vec<_>>().join(", ")
        }
    }

    /// Whether the caller holds `role` or a higher one.
    pub fn has(&self, role: Role) -> bool {
        self.roles.iter().any(|r| *r >= role)
    }

    /// Fails with [`Error::Forbidden`] naming the role `action` needs. The plain role check,
    /// for front doors that refuse early (before calling the service, which decides by the
    /// policies in force whatever a front door checked).
    pub fn require(&self, role: Role, action: &str) -> Result<()> {
        if self.has(role) {
            return Ok(());
        }
        Err(Error::Forbidden {
            action: action.to_string(),
            needed: role.to_string(),
            subject: self.subject.clone(),
            has: self.describe_roles(),
            reason: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_roles_include_lower_ones() {
        let op = Caller::new("ana", [Role::Operator]);
        assert!(op.has(Role::Viewer) && op.has(Role::Operator) && !op.has(Role::Admin));
        let err = op.require(Role::Admin, "enable OTA").unwrap_err().to_string();
        assert!(err.contains("admin") && err.contains("ana") && err.contains("operator"), "{err}");
        assert!(Caller::new("x", []).require(Role::Viewer, "read").unwrap_err().to_string().contains("no role"));
    }

    #[test]
    fn groups_default_to_none_and_round_trip() {
        let c: Caller = serde_json::from_str(r#"{"subject":"ana","roles":["operator"]}"#).unwrap();
        assert!(c.groups.is_empty());
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"subject":"ana","roles":["operator"]}"#);
        let g = c.with_groups(["senior_operator"]);
        let back: Caller = serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
        assert_eq!(back.groups.iter().collect::<Vec<_>>(), ["senior_operator"]);
    }
}
