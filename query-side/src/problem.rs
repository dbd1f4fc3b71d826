//! Errors as `application/problem+json` (RFC 9457), naming what was wrong.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameter: Option<std::borrow::Cow<'static, str>>,
    /// The `WWW-Authenticate` challenge of a 401.
    #[serde(skip)]
    challenge: Option<String>,
}

impl Problem {
    /// 400: a parameter that cannot be read at all.
    pub fn malformed(parameter: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank",
            title: "Malformed parameter",
            status: 400,
            detail: detail.into(),
            parameter: Some(parameter.into()),
            challenge: None,
        }
    }

    /// 400 for a parameter named by the client (an unknown one).
    pub fn malformed_owned(parameter: String, detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank",
            title: "Malformed parameter",
            status: 400,
            detail: detail.into(),
            parameter: Some(parameter.into()),
            challenge: None,
        }
    }

    /// 422: a well-formed value out of range.
    pub fn out_of_range(parameter: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank",
            title: "Parameter out of range",
            status: 422,
            detail: detail.into(),
            parameter: Some(parameter.into()),
            challenge: None,
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank",
            title: "Not found",
            status: 404,
            detail: detail.into(),
            parameter: None,
            challenge: None,
        }
    }

    /// 401: no acceptable bearer token; `challenge` goes in `WWW-Authenticate`.
    pub fn unauthorized(detail: impl Into<String>, challenge: String) -> Problem {
        Problem {
            kind: "about:blank",
            title: "Unauthorized",
            status: 401,
            detail: detail.into(),
            parameter: None,
            challenge: Some(challenge),
        }
    }

    /// 403: the caller's roles may not use this at all.
    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank",
            title: "Forbidden",
            status: 403,
            detail: detail.into(),
            parameter: None,
            challenge: None,
        }
    }

    pub fn unavailable(detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank",
            title: "Read models unavailable",
            status: 503,
            detail: detail.into(),
            parameter: None,
            challenge: None,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Every 503 is temporary (an outage, overload, a restart): say when to come back.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        if let Some(challenge) = self.challenge.and_then(|c| c.parse().ok()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

impl From<deadpool_postgres::PoolError> for Problem {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        tracing::warn!(error = %e, "database unavailable");
        Problem::unavailable("the database is not answering")
    }
}

impl From<tokio_postgres::Error> for Problem {
    fn from(e: tokio_postgres::Error) -> Self {
        tracing::warn!(error = %e, "query failed");
        Problem::unavailable("the query failed")
    }
}
