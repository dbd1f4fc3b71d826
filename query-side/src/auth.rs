//! Every data route needs a bearer token: checked here, in front of the handlers, which then
//! ask the rule table what the caller may see. A refusal is 401 with the RFC 6750 challenge
//! (`WWW-Authenticate: Bearer error="invalid_token" ...`) and a problem+json body.

use access::{Action, AuthError, Grant, Principal};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use uuid::Uuid;

use crate::{AppState, Problem};

/// Where the page signs in: the issuer and its public client (authorization code + PKCE).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PageSignIn {
    pub issuer: String,
    pub client_id: String,
    pub scope: String,
}

/// The default public client of the page (`AUTH_PAGE_CLIENT_ID`).
pub const PAGE_CLIENT_ID: &str = "cleaning-park-page";

/// Lets a request through with its [`Principal`], or refuses it.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.verifier.verify_header(header).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(refusal) => Problem::from(refusal).into_response(),
    }
}

impl From<AuthError> for Problem {
    fn from(refusal: AuthError) -> Problem {
        match &refusal {
            AuthError::Unavailable(why) => {
                tracing::warn!(reason = %why, "cannot check tokens");
                Problem::unavailable("tokens cannot be checked at the moment")
            }
            _ => Problem::unauthorized(refusal.to_string(), refusal.challenge()),
        }
    }
}

/// What the caller may see of `action`'s data: 403 when its roles may not see it at all.
pub fn grant(principal: &Principal, action: Action) -> Result<Grant, Problem> {
    principal
        .may(action)
        .map_err(|denied| Problem::forbidden(denied.0))
}

/// The customer a list is limited to: the caller's own when it may see only its own (asking
/// for anyone else's finds nothing, `None`), else the filter it asked for.
pub fn customer_filter(grant: &Grant, asked: Option<Uuid>) -> Option<Option<Uuid>> {
    match (grant.customer_filter(), asked) {
        (None, asked) => Some(asked),
        (Some(own), Some(asked)) if asked != own => None,
        (Some(own), _) => Some(Some(own)),
    }
}

/// Where the page signs in; public, like the page itself.
#[utoipa::path(get, path = "/auth/config", tag = "operations", security(()), responses((status = 200, body = PageSignIn)))]
pub async fn page_config(State(state): State<AppState>) -> Json<PageSignIn> {
    Json(state.sign_in.as_ref().clone())
}
