//! The one place where AWS SDK errors become [`ota_core::Error`]. Every SDK call site names
//! its action (`s3:GetObject`) and what a missing resource means there; the classification
//! of AWS error codes lives only here, so "access denied", "throttled" and "not found" read
//! the same whichever service said them.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use ota_core::Error;

/// What kind of failure an AWS error is, independent of the service that raised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    NotFound,
    AlreadyExists,
    /// A conditional write lost (DynamoDB condition, S3 `If-None-Match`).
    ConditionFailed,
    Denied,
    Throttled,
    /// The request was refused because the resource is in the wrong state (IoT).
    InvalidState,
    Other,
}

/// A classified AWS failure: the action, the AWS error code and message.
#[derive(Debug, Clone)]
pub struct AwsFailure {
    pub kind: FailureKind,
    pub action: &'static str,
    pub code: String,
    pub message: String,
}

const NOT_FOUND: &[&str] = &["NoSuchKey", "NotFound", "ResourceNotFoundException", "NoSuchEntity"];
const EXISTS: &[&str] = &["ResourceAlreadyExistsException", "BucketAlreadyOwnedByYou", "ResourceInUseException"];
const CONDITION: &[&str] = &[
    "ConditionalCheckFailedException",
    "PreconditionFailed",
    "TransactionCanceledException",
    "ConditionalRequestConflict",
];
const DENIED: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedException",
    "UnauthorizedOperation",
    "AuthorizationError",
    "Forbidden",
];
const THROTTLED: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
    "RequestThrottled",
    "RequestThrottledException",
];
const INVALID_STATE: &[&str] = &["InvalidStateTransitionException", "ConflictException", "VersionConflictException"];

/// Classifies any SDK error (the type is shared by every `aws-sdk-*` crate).
pub fn classify<E, R>(action: &'static str, err: SdkError<E, R>) -> AwsFailure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let (code, message) = match &err {
        SdkError::ServiceError(e) => {
            (e.err().code().unwrap_or_default().to_string(), e.err().message().unwrap_or_default().to_string())
        }
        other => (String::new(), DisplayErrorContext(other).to_string()),
    };
    let kind = match &err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => FailureKind::Other,
        _ if NOT_FOUND.contains(&code.as_str()) => FailureKind::NotFound,
        _ if EXISTS.contains(&code.as_str()) => FailureKind::AlreadyExists,
        _ if CONDITION.contains(&code.as_str()) => FailureKind::ConditionFailed,
        _ if DENIED.contains(&code.as_str()) => FailureKind::Denied,
        _ if THROTTLED.contains(&code.as_str()) => FailureKind::Throttled,
        _ if INVALID_STATE.contains(&code.as_str()) => FailureKind::InvalidState,
        _ => FailureKind::Other,
    };
    let message = if message.is_empty() { DisplayErrorContext(&err).to_string() } else { message };
    AwsFailure { kind, action, code, message }
}

impl AwsFailure {
    /// The domain error for a failure no call site handled specially. `NotFound` and
    /// `AlreadyExists` need a name, so call sites that expect them use [`Self::not_found`] and
    /// friends; here they fall back to storage errors that say what AWS answered.
    pub fn into_error(self) -> Error {
        let AwsFailure { kind, action, code, message } = self;
        match kind {
            FailureKind::Denied => Error::Storage(format!(
                "AWS denied {action} ({code}): {message}; grant {action} to the role or user ota runs as"
            )),
            FailureKind::Throttled => Error::Storage(format!(
                "AWS throttled {action} ({code}) and the SDK's retries were exhausted; try again later or raise the service quota"
            )),
            FailureKind::ConditionFailed | FailureKind::InvalidState => {
                Error::Conflict(format!("{action} was refused by a concurrent change ({code}): {message}"))
            }
            _ if code.is_empty() => Error::Storage(format!("{action} failed: {message}")),
            _ => Error::Storage(format!("{action} failed ({code}): {message}")),
        }
    }

    /// `NotFound { what, name }` when AWS said the resource is missing, otherwise [`Self::into_error`].
    pub fn not_found(self, what: &'static str, name: impl Into<String>) -> Error {
        if self.kind == FailureKind::NotFound { Error::not_found(what, name) } else { self.into_error() }
    }
}

/// Shorthand at call sites: `.map_err(aws("s3:GetObject"))?` then `.into_error()`.
pub fn aws<E, R>(action: &'static str) -> impl FnOnce(SdkError<E, R>) -> AwsFailure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    move |e| classify(action, e)
}

/// Shorthand for call sites with nothing special to handle.
pub fn fail<E, R>(action: &'static str) -> impl FnOnce(SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    move |e| classify(action, e).into_error()
}
