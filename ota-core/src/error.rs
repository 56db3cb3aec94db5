//! One error type for the whole domain. Variants say *what* went wrong, never which backend
//! raised it; each backend maps its own failures into these once.

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything an operation of ota can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Input that does not parse or breaks a rule (name, version, policy value, file content).
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid { what: &'static str, value: String, reason: String },
    /// The named thing does not exist. `hint` lists what does (may be empty).
    #[error("{what} {name:?} not found{}", hint_suffix(.hint))]
    NotFound { what: &'static str, name: String, hint: String },
    /// Creating something that must be unique (a published version, a rollout id).
    #[error("{what} {name:?} already exists{}", hint_suffix(.hint))]
    AlreadyExists { what: &'static str, name: String, hint: String },
    /// The firmware's digest, its `firmware.sha256` and its `metadata.json` disagree, or a
    /// file of the artifact is missing or malformed.
    #[error("integrity check failed for {artifact}: {detail}")]
    Integrity { artifact: String, detail: String },
    /// The policies do not allow the caller the operation. `needed` is the role the default
    /// policies want for it; `reason` is empty when the caller lacks that role and nothing
    /// permitted it (then the message names the role), otherwise it says why (the policy that
    /// forbade it and its `@reason`).
    #[error("permission denied: {}", forbidden_text(.action, .needed, .subject, .has, .reason))]
    Forbidden { action: String, needed: String, subject: String, has: String, reason: String },
    /// The operation is refused by a safety rule (OTA disabled, nothing to do, ...).
    #[error("refused: {0}")]
    Refused(String),
    /// The operation conflicts with the current state (an active rollout for the type, a
    /// rollout that already ended, a concurrent change).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The storage behind a port failed; the message is the backend's.
    #[error("storage error: {0}")]
    Storage(String),
}

fn forbidden_text(action: &str, needed: &str, subject: &str, has: &str, reason: &str) -> String {
    if reason.is_empty() {
        format!("{action} needs the {needed} role, and {subject} has {has}")
    } else {
        format!("{action} is not allowed to {subject} ({has}): {reason}")
    }
}

fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() { String::new() } else { format!("; {hint}") }
}

impl Error {
    /// Builds [`Error::Invalid`].
    pub fn invalid(what: &'static str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid { what, value: value.into(), reason: reason.into() }
    }

    /// Builds [`Error::NotFound`] with no hint.
    pub fn not_found(what: &'static str, name: impl Into<String>) -> Self {
        Error::NotFound { what, name: name.into(), hint: String::new() }
    }

    /// Builds [`Error::NotFound`] with a hint such as "available: 1.0.0, 2.0.0".
    pub fn not_found_hint(what: &'static str, name: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::NotFound { what, name: name.into(), hint: hint.into() }
    }

    /// Builds [`Error::AlreadyExists`] with no hint.
    pub fn already_exists(what: &'static str, name: impl Into<String>) -> Self {
        Error::AlreadyExists { what, name: name.into(), hint: String::new() }
    }

    /// The error every catalog returns when publishing over an existing artifact.
    pub fn published_is_immutable(artifact: &impl std::fmt::Display) -> Self {
        Error::AlreadyExists {
            what: "firmware",
            name: artifact.to_string(),
            hint: "published versions are immutable; publish a new version".into(),
        }
    }

    /// The conflict every rollout store reports for a second active rollout on a type.
    pub fn active_rollout(active: &impl std::fmt::Display, device_type: &impl std::fmt::Display) -> Self {
        Error::Conflict(format!(
            "rollout {active} is already active for {device_type}; cancel it or wait for it to finish"
        ))
    }

    /// Builds [`Error::Storage`] from any displayable backend error.
    pub fn storage(err: impl std::fmt::Display) -> Self {
        Error::Storage(err.to_string())
    }

    /// The variant as a stable `snake_case` name, for machine-readable error answers
    /// (`invalid`, `not_found`, `already_exists`, `integrity`, `forbidden`, `refused`,
    /// `conflict`, `storage`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "invalid",
            Error::NotFound { .. } => "not_found",
            Error::AlreadyExists { .. } => "already_exists",
            Error::Integrity { .. } => "integrity",
            Error::Forbidden { .. } => "forbidden",
            Error::Refused(_) => "refused",
            Error::Conflict(_) => "conflict",
            Error::Storage(_) => "storage",
        }
    }
}
