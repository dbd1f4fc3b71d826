//! The issuer's HTTP endpoints: discovery, keys, the token endpoint and the sign-in page.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use access::Role;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::Deserialize;

use crate::{default_subject, Issuer, DEFAULT_LIFETIME, PAGE_CLIENT_ID, SERVICE_CLIENT_ID};

/// An authorization code not yet exchanged for a token.
pub(crate) struct PendingCode {
    redirect_uri: String,
    challenge: String,
    subject: String,
    role: Role,
    expires: Instant,
}

const CODE_LIFETIME: Duration = Duration::from_secs(60);

/// Serves the issuer on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    issuer: Issuer,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(issuer))
        .with_graceful_shutdown(shutdown)
        .await
}

pub fn router(issuer: Issuer) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route(
            "/jwks",
            get(|State(i): State<Issuer>| async move { Json(i.jwks()) }),
        )
        .route("/authorize", get(authorize_page).post(authorize_chosen))
        .route("/token", axum::routing::post(token))
        // The page on another origin reads discovery and redeems its code from the browser.
        .layer(axum::middleware::map_response(
            |mut response: Response| async move {
                response.headers_mut().insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
                response
            },
        ))
        .with_state(issuer)
}

async fn discovery(State(issuer): State<Issuer>) -> Json<serde_json::Value> {
    let url = issuer.url();
    Json(serde_json::json!({
        "issuer": url,
        "authorization_endpoint": format!("{url}/authorize"),
        "token_endpoint": format!("{url}/token"),
        "jwks_uri": format!("{url}/jwks"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic", "none"],
    }))
}

/// The parameters of an authorization request (RFC 6749 §4.1.1, RFC 7636).
#[derive(Deserialize)]
struct AuthorizeRequest {
    #[serde(default)]
    response_type: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    code_challenge: String,
    #[serde(default)]
    code_challenge_method: String,
    #[serde(default)]
    login_hint: String,
    /// From the role picker.
    #[serde(default)]
    role: String,
    #[serde(default)]
    customer_id: String,
}

fn bad_request(why: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Html(format!("<p>{}</p>", escape(why))),
    )
        .into_response()
}

/// Loopback only: the development issuer hands codes to nobody else.
fn loopback(uri: &str) -> bool {
    ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|base| {
            uri.strip_prefix(base)
                .is_some_and(|rest| rest.starts_with(':') || rest.starts_with('/'))
        })
}

impl AuthorizeRequest {
    /// What makes the request acceptable at all; errors before a redirect go to the person.
    fn check(&self) -> Result<(), Response> {
        if self.client_id != PAGE_CLIENT_ID {
            return Err(bad_request(&format!(
                "unknown client_id; this issuer knows {PAGE_CLIENT_ID}"
            )));
        }
        if !loopback(&self.redirect_uri) {
            return Err(bad_request("redirect_uri must be a loopback http address"));
        }
        Ok(())
    }

    /// The code, or the error, sent back to the client's redirect URI.
    fn answer(&self, issuer: &Issuer, chosen: Result<(String, Role), &str>) -> Response {
        let mut target = format!(
            "{}{}",
            self.redirect_uri,
            if self.redirect_uri.contains('?') {
                '&'
            } else {
                '?'
            }
        );
        let state = form_encode(&self.state);
        let result = if self.response_type != "code" {
            Err("unsupported_response_type")
        } else if self.code_challenge_method != "S256" || self.code_challenge.len() < 43 {
            Err("invalid_request")
        } else {
            chosen.map_err(|_| "access_denied")
        };
        match result {
            Ok((subject, role)) => {
                let code = crate::keys::random_secret();
                if let Ok(mut codes) = issuer.inner.codes.lock() {
                    codes.retain(|_, c| c.expires > Instant::now());
                    codes.insert(
                        code.clone(),
                        PendingCode {
                            redirect_uri: self.redirect_uri.clone(),
                            challenge: self.code_challenge.clone(),
                            subject,
                            role,
                            expires: Instant::now() + CODE_LIFETIME,
                        },
                    );
                }
                target.push_str(&format!("code={code}&state={state}"));
            }
            Err(error) => target.push_str(&format!("error={error}&state={state}")),
        }
        Redirect::to(&target).into_response()
    }
}

/// Who a `login_hint` or the picker names: `admin`, `cleaner`, `customer` (a new customer)
/// or `customer:<uuid>`.
fn chosen(role: &str, customer_id: &str) -> Result<(String, Role), &'static str> {
    let role = Role::parse(role.trim()).ok_or("choose a role")?;
    match role {
        Role::Service => Err("services use the client-credentials grant"),
        Role::Customer => {
            let id = match customer_id.trim() {
                "" => uuid::Uuid::new_v4(),
                text => uuid::Uuid::parse_str(text).map_err(|_| "a customer id is a UUID")?,
            };
            Ok((id.to_string(), role))
        }
        other => Ok((default_subject(other).to_string(), other)),
    }
}

async fn authorize_page(
    State(issuer): State<Issuer>,
    Query(request): Query<AuthorizeRequest>,
) -> Response {
    if let Err(refusal) = request.check() {
        return refusal;
    }
    // A hint signs in at once, as an identity provider does for a person already signed in.
    if !request.login_hint.is_empty() {
        let (role, customer) = request
            .login_hint
            .split_once(':')
            .unwrap_or((request.login_hint.as_str(), ""));
        return request.answer(&issuer, chosen(role, customer));
    }
    let hidden: String = [
        ("response_type", &request.response_type),
        ("client_id", &request.client_id),
        ("redirect_uri", &request.redirect_uri),
        ("state", &request.state),
        ("code_challenge", &request.code_challenge),
        ("code_challenge_method", &request.code_challenge_method),
    ]
    .iter()
    .map(|(name, value)| {
        format!(
            r#"<input type="hidden" name="{name}" value="{}">"#,
            escape(value)
        )
    })
    .collect();
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in (development issuer)</title>
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;color:#1d2730}}
label{{display:block;margin:.6rem 0}}input,select,button{{font:inherit;padding:.3rem .5rem}}
.note{{color:#56636f;font-size:.85rem}}</style></head><body>
<h1>Sign in</h1><p class="note">The development issuer of Cleaning Service Park: pick who you are. No password; never deployed.</p>
<form method="post" action="/authorize">{hidden}
<label>Role <select name="role"><option value="customer">customer</option><option value="cleaner">cleaner</option><option value="admin">admin</option></select></label>
<label>Customer id (customers only) <input name="customer_id" size="38" value="{customer}"></label>
<button type="submit">Sign in</button></form></body></html>"#,
        customer = uuid::Uuid::new_v4()
    ))
    .into_response()
}

async fn authorize_chosen(
    State(issuer): State<Issuer>,
    Form(request): Form<AuthorizeRequest>,
) -> Response {
    if let Err(refusal) = request.check() {
        return refusal;
    }
    let who = chosen(&request.role, &request.customer_id);
    request.answer(&issuer, who)
}

/// The token endpoint's errors (RFC 6749 §5.2).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

async fn token(
    State(issuer): State<Issuer>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    match field("grant_type") {
        "client_credentials" => {
            let (id, secret) = basic_credentials(&headers).unwrap_or_else(|| {
                (
                    field("client_id").to_string(),
                    field("client_secret").to_string(),
                )
            });
            if id != SERVICE_CLIENT_ID
                || !same(secret.as_bytes(), issuer.inner.service_secret.as_bytes())
            {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "unknown client or wrong secret",
                );
            }
            issued(issuer.token_for_client(
                SERVICE_CLIENT_ID,
                &[Role::Service],
                DEFAULT_LIFETIME,
                SERVICE_CLIENT_ID,
            ))
        }
        "authorization_code" => {
            let pending = issuer
                .inner
                .codes
                .lock()
                .ok()
                .and_then(|mut codes| codes.remove(field("code")));
            let Some(pending) = pending.filter(|p| p.expires > Instant::now()) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "unknown, used or expired code",
                );
            };
            let verifier = field("code_verifier");
            let challenge = B64.encode(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                verifier.as_bytes(),
            ));
            if field("client_id") != PAGE_CLIENT_ID
                || field("redirect_uri") != pending.redirect_uri
                || !(43..=128).contains(&verifier.len())
                || !same(challenge.as_bytes(), pending.challenge.as_bytes())
            {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the code does not match this client, redirect_uri or code_verifier",
                );
            }
            issued(issuer.token(&pending.subject, &[pending.role], DEFAULT_LIFETIME))
        }
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "authorization_code or client_credentials",
        ),
    }
}

fn issued(token: Result<String, crate::IssuerError>) -> Response {
    match token {
        Ok(token) => (
            [(header::CACHE_CONTROL, "no-store")],
            Json(serde_json::json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": DEFAULT_LIFETIME.as_secs(),
            })),
        )
            .into_response(),
        Err(e) => oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &e.to_string(),
        ),
    }
}

/// `Authorization: Basic` client credentials (client_secret_basic).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

/// Compares secrets in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
