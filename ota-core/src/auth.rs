//! Who is asking, and what they may do. Every service operation checks the caller's role;
//! nothing a prompt says can add one.

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
}

impl Caller {
    /// A caller with the given roles.
    pub fn new(subject: impl Into<String>, roles: impl IntoIterator<Item = Role>) -> Self {
        Caller { subject: subject.into(), roles: roles.into_iter().collect() }
    }

    /// Whether the caller holds `role` or a higher one.
    pub fn has(&self, role: Role) -> bool {
        self.roles.iter().any(|r| *r >= role)
    }

    /// Fails with [`Error::Forbidden`] naming the role `action` needs.
    pub fn require(&self, role: Role, action: &str) -> Result<()> {
        if self.has(role) {
            return Ok(());
        }
        let has = if self.roles.is_empty() {
            "no role".to_string()
        } else {
            self.roles.iter().map(Role::to_string).collect::<Vec<_>>().join(", ")
        };
        Err(Error::Forbidden {
            action: action.to_string(),
            needed: role.to_string(),
            subject: self.subject.clone(),
            has,
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
}
