//! How a command fails, and the gRPC status each failure becomes.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::store::StoreError;

#[derive(Debug)]
pub enum CommandError {
    /// Fields that are wrong: INVALID_ARGUMENT with a field violation for each.
    Invalid(Vec<(&'static str, String)>),
    /// The aggregate does not exist: NOT_FOUND.
    NotFound(String),
    /// The caller may not do this: PERMISSION_DENIED with the reason.
    Forbidden(String),
    /// The state refuses the command: FAILED_PRECONDITION with the reason.
    Refused(String),
    /// Lost a race and may not be repeated: ABORTED.
    Conflict,
    /// A dependency is slow or down: UNAVAILABLE, with when to retry.
    Unavailable {
        reason: String,
        retry_after: Duration,
    },
    Internal(String),
}

impl From<StoreError> for CommandError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => CommandError::Conflict,
            StoreError::Forgotten => {
                CommandError::Refused("the customer has been forgotten".into())
            }
            StoreError::Unavailable(reason) => CommandError::Unavailable {
                reason: format!("event store: {reason}"),
                retry_after: Duration::from_secs(1),
            },
            StoreError::Corrupt(reason) => CommandError::Internal(reason),
        }
    }
}

/// Field checks gathered in one pass, so that a client learns every problem at once.
#[derive(Default)]
pub struct Violations(Vec<(&'static str, String)>);

impl Violations {
    /// Keeps the value, or records why `field` is wrong.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &'static str,
        value: Result<T, E>,
    ) -> Option<T> {
        match value {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push((field, e.to_string()));
                None
            }
        }
    }

    pub fn add(&mut self, field: &'static str, description: impl Into<String>) {
        self.0.push((field, description.into()));
    }

    /// Ends the checks: `Ok(())` when every field was right.
    pub fn finish(self) -> Result<(), CommandError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(CommandError::Invalid(self.0))
        }
    }
}

/// A value whose check passed, after [`Violations::finish`]: only a mistake in the handler
/// leaves it missing, and that is an internal error, not the caller's.
pub fn checked<T>(value: Option<T>) -> Result<T, CommandError> {
    value.ok_or_else(|| CommandError::Internal("validation passed with a missing field".into()))
}

impl From<CommandError> for Status {
    fn from(error: CommandError) -> Status {
        match error {
            CommandError::Invalid(violations) => {
                let summary = violations
                    .iter()
                    .map(|(field, why)| format!("{field} {why}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                let mut details = ErrorDetails::new();
                for (field, why) in violations {
                    details.add_bad_request_violation(field, why);
                }
                Status::with_error_details(
                    Code::InvalidArgument,
                    format!("invalid request: {summary}"),
                    details,
                )
            }
            CommandError::NotFound(what) => Status::not_found(what),
            CommandError::Forbidden(why) => Status::permission_denied(why),
            CommandError::Refused(reason) => Status::failed_precondition(reason),
            CommandError::Conflict => {
                Status::aborted("the aggregate was changed concurrently; read it again and retry")
            }
            CommandError::Unavailable {
                reason,
                retry_after,
            } => {
                let mut details = ErrorDetails::new();
                details.set_retry_info(Some(retry_after));
                Status::with_error_details(
                    Code::Unavailable,
                    format!("{reason}; try again later"),
                    details,
                )
            }
            CommandError::Internal(reason) => {
                tracing::error!(%reason, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
