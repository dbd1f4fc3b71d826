//! The gRPC services. Each handler checks every field, runs the command through the
//! [`Executor`](crate::execute::Executor), and answers with a [`CommandReply`].

pub mod customer;
pub mod message;
pub mod payment;
pub mod paymethod;
pub mod reservation;

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::errors::Violations;
use crate::proto::CommandReply;
use crate::store::{RequestContext, Written};

/// The correlation id travels in this metadata key, in and out.
pub const CORRELATION_HEADER: &str = "x-correlation-id";
/// A policy acting on an event names that event as the cause of what it asks for.
pub const CAUSATION_HEADER: &str = "x-causation-id";

/// The request's context: its id (for idempotency) and its correlation id.
pub fn context<T>(
    request: &Request<T>,
    request_id: &str,
    violations: &mut Violations,
) -> RequestContext {
    let request_id = if request_id.trim().is_empty() {
        // No id: the command still runs, but a retry cannot be recognised.
        Uuid::new_v4()
    } else {
        violations
            .check(
                "request_id",
                Uuid::parse_str(request_id.trim()).map_err(|_| "must be a UUID"),
            )
            .unwrap_or_default()
    };
    let header = |name: &str| {
        request
            .metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Uuid::parse_str(v.trim()).ok())
    };
    RequestContext {
        request_id,
        correlation_id: header(CORRELATION_HEADER).unwrap_or_else(Uuid::new_v4),
        causation_id: header(CAUSATION_HEADER).unwrap_or(request_id),
    }
}

/// A stable id derived from the request, so that a retry addresses the same aggregate.
pub fn derived_id(context: &RequestContext, what: &str) -> Uuid {
    Uuid::new_v5(&context.request_id, what.as_bytes())
}

pub fn reply(
    id: impl ToString,
    written: Written,
    context: &RequestContext,
) -> Response<CommandReply> {
    let mut response = Response::new(CommandReply {
        id: id.to_string(),
        revision: written.revision,
        position: written.position,
        correlation_id: context.correlation_id.to_string(),
    });
    with_correlation(&mut response, context);
    response
}

pub fn with_correlation<T>(response: &mut Response<T>, context: &RequestContext) {
    if let Ok(value) = MetadataValue::try_from(context.correlation_id.to_string()) {
        response.metadata_mut().insert(CORRELATION_HEADER, value);
    }
}

/// Runs the handler's work and turns a command error into its status.
pub type Reply<T> = Result<Response<T>, Status>;
