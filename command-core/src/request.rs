//! A request as the application sees it: who asks, what for, and how a retry is recognised;
//! and the reply every command gives (the id, the stream revision and the position written).

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use domain::CustomerId;

use crate::errors::{CommandError, Violations};
use crate::store::{RequestContext, Written};
use api_contract::CommandReply;

/// The correlation id travels in this metadata key, in and out.
pub const CORRELATION_HEADER: &str = "x-correlation-id";
/// A policy acting on an event names that event as the cause of what it asks for.
pub const CAUSATION_HEADER: &str = "x-causation-id";

/// The caller's grant for `action` (PERMISSION_DENIED when its roles may not take it at all),
/// and the request's context: its id (for idempotency), its correlation id, the grant.
pub fn authorize<T>(
    request: &Request<T>,
    action: access::Action,
    request_id: &str,
    violations: &mut Violations,
) -> Result<RequestContext, Status> {
    let grant = access::grpc::grant(request, action)?;
    Ok(context(request, request_id, grant, violations))
}

fn context<T>(
    request: &Request<T>,
    request_id: &str,
    grant: access::Grant,
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
        grant,
    }
}

/// The customer a command acts for. A customer acts for themself: the field may be left
/// empty, and naming anyone else is PERMISSION_DENIED. Staff name the customer.
pub fn acting_for(
    context: &RequestContext,
    field: &'static str,
    text: &str,
    violations: &mut Violations,
) -> Result<Option<CustomerId>, CommandError> {
    let Some(own) = context.grant.only.map(CustomerId::from) else {
        return Ok(violations.check(field, CustomerId::parse(text)));
    };
    match text.trim() {
        "" => Ok(Some(own)),
        text => match CustomerId::parse(text) {
            Ok(named) if named == own => Ok(Some(own)),
            Ok(_) => Err(CommandError::Forbidden(format!(
                "a customer acts only for themself: {field} must be empty or the token's subject"
            ))),
            Err(e) => {
                violations.add(field, e.to_string());
                Ok(None)
            }
        },
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
