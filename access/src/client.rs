//! The services' own identity on their outgoing calls: access tokens from the issuer's token
//! endpoint (client-credentials grant), cached until shortly before they expire, put on every
//! request by a tower layer around a tonic channel.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::{AuthError, AuthSettings, ClientSettings};

/// An HTTP client trusting the system's roots, plus `ca_file` when given.
pub fn http_client(ca_file: Option<&Path>, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("TLS_CA_FILE {}: {e}", path.display()))?;
        for certificate in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("TLS_CA_FILE {}: {e}", path.display()))?
        {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().map_err(|e| e.to_string())
}

/// A gRPC endpoint for `url`; an `https` one verifies the server against the system's roots
/// and `ca_file` (a PEM bundle) when given.
pub fn grpc_endpoint(
    url: &str,
    ca_file: Option<&Path>,
) -> Result<tonic::transport::Endpoint, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("{url:?} is not an endpoint: {e}"))?;
    if !url.starts_with("https://") {
        return Ok(endpoint);
    }
    let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
    if let Some(path) = ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("TLS_CA_FILE {}: {e}", path.display()))?;
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
    }
    endpoint
        .tls_config(tls)
        .map_err(|e| format!("TLS for {url}: {e}"))
}

/// A JSON document from the issuer (discovery, keys); any failure means tokens cannot be
/// checked or had for now, and says which document (never the URL's query).
pub(crate) async fn fetch_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    what: &str,
) -> Result<T, AuthError> {
    let unavailable =
        |e: reqwest::Error| AuthError::Unavailable(format!("{what}: {}", e.without_url()));
    http.get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(unavailable)?
        .json()
        .await
        .map_err(unavailable)
}

/// A token is renewed once less than this is left of it.
const RENEW_BEFORE: Duration = Duration::from_secs(30);

/// The service's tokens; cheap to clone.
#[derive(Clone)]
pub struct ServiceToken {
    inner: Arc<TokenInner>,
}

struct TokenInner {
    settings: AuthSettings,
    client: ClientSettings,
    http: reqwest::Client,
    /// The token endpoint (from discovery) and the current token with its expiry.
    state: tokio::sync::Mutex<TokenState>,
}

#[derive(Default)]
struct TokenState {
    endpoint: Option<String>,
    token: Option<(String, Instant)>,
}

#[derive(Deserialize)]
struct Discovery {
    token_endpoint: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

impl ServiceToken {
    pub fn new(settings: AuthSettings, client: ClientSettings) -> Result<ServiceToken, AuthError> {
        let http = http_client(settings.ca_file.as_deref(), Duration::from_secs(5))
            .map_err(AuthError::Unavailable)?;
        Ok(ServiceToken {
            inner: Arc::new(TokenInner {
                settings,
                client,
                http,
                state: Default::default(),
            }),
        })
    }

    pub fn client_id(&self) -> &str {
        &self.inner.client.client_id
    }

    /// A valid access token, fetched when there is none or it is about to expire.
    pub async fn token(&self) -> Result<String, AuthError> {
        let mut state = self.inner.state.lock().await;
        if let Some((token, expires)) = &state.token {
            if expires.saturating_duration_since(Instant::now()) > RENEW_BEFORE {
                return Ok(token.clone());
            }
        }
        let unavailable = |what: &str, e: reqwest::Error| {
            AuthError::Unavailable(format!("{what}: {}", e.without_url()))
        };
        let endpoint = match &state.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => {
                let discovery: Discovery = fetch_json(
                    &self.inner.http,
                    &self.inner.settings.discovery_url,
                    "OIDC discovery",
                )
                .await?;
                state.endpoint = Some(discovery.token_endpoint.clone());
                discovery.token_endpoint
            }
        };
        let asked = Instant::now();
        let response = self
            .inner
            .http
            .post(&endpoint)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.inner.client.client_id.as_str()),
                ("client_secret", self.inner.client.client_secret.as_str()),
            ])
            .send()
            .await
            .map_err(|e| unavailable("the token endpoint", e))?;
        if !response.status().is_success() {
            // The body may say why (invalid_client...); it holds no secret.
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(AuthError::Unavailable(format!(
                "the token endpoint refused the service's credentials ({status}): {}",
                body.chars().take(200).collect::<String>()
            )));
        }
        let answer: TokenResponse = response
            .json()
            .await
            .map_err(|e| unavailable("the token endpoint", e))?;
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(60));
        state.token = Some((answer.access_token.clone(), asked + lifetime));
        Ok(answer.access_token)
    }
}

/// Where the bearer token of outgoing calls comes from.
#[derive(Clone)]
pub enum Credentials {
    /// The service's own, from the token endpoint.
    Service(ServiceToken),
    /// A token obtained elsewhere (tests, benchmarks, tools acting for a person).
    Bearer(Arc<str>),
}

impl Credentials {
    pub async fn token(&self) -> Result<String, AuthError> {
        match self {
            Credentials::Service(service) => service.token().await,
            Credentials::Bearer(token) => Ok(token.to_string()),
        }
    }
}

/// A tonic channel (or any HTTP service) whose every request carries a bearer token, and the
/// caller's trace context.
#[derive(Clone)]
pub struct WithToken<S> {
    inner: S,
    credentials: Credentials,
}

/// A tonic channel that authenticates its calls.
pub type AuthorizedChannel = WithToken<tonic::transport::Channel>;

impl<S> WithToken<S> {
    pub fn new(inner: S, credentials: Credentials) -> WithToken<S> {
        WithToken { inner, credentials }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> tower::Service<http::Request<B>> for WithToken<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The caller's trace goes along (W3C `traceparent`), when there is one.
        lifecycle::telemetry::inject(request.headers_mut());
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let credentials = self.credentials.clone();
        Box::pin(async move {
            // A token that cannot be had is the caller's UNAVAILABLE: try again later.
            let token = credentials
                .token()
                .await
                .map_err(|e| Box::new(tonic::Status::unavailable(e.to_string())) as BoxError)?;
            let mut value =
                http::HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
                    Box::new(tonic::Status::internal("malformed access token")) as BoxError
                })?;
            // Kept out of debug output and of HTTP/2 header compression tables.
            value.set_sensitive(true);
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, value);
            inner.call(request).await.map_err(Into::into)
        })
    }
}
