//! A development OpenID Connect issuer: what `park` runs beside the system so that every call
//! can carry a real bearer token, and what the tests sign their tokens with. It publishes
//! discovery and a JWKS for an ES256 key it keeps under its data directory, and issues access
//! tokens for any role: to the services by the client-credentials grant, to the page by the
//! authorization-code flow with PKCE (a role picker stands in for a password), and to a person
//! at the terminal (`park token`).
//!
//! The services never depend on this crate: they only know `AUTH_ISSUER`, so in production
//! they trust the company's identity provider instead, unchanged.

mod keys;
mod server;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use access::Role;
use serde::Serialize;

pub use keys::SigningKey;
pub use server::serve;

/// The public client the dashboard page signs in with.
pub const PAGE_CLIENT_ID: &str = "cleaning-park-page";
/// The confidential client the services authenticate as.
pub const SERVICE_CLIENT_ID: &str = "cleaning-park-services";
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("the issuer's files in {path}: {message}")]
    Files { path: String, message: String },
    #[error("signing: {0}")]
    Signing(String),
}

/// The issuer: its keys, its two clients, and the codes handed out but not yet redeemed.
#[derive(Clone)]
pub struct Issuer {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    audience: String,
    /// Every published key; the last one signs.
    keys: RwLock<Vec<SigningKey>>,
    service_secret: String,
    codes: Mutex<HashMap<String, server::PendingCode>>,
}

/// The claims of the access tokens this issuer signs (RFC 9068's, with the roles).
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    iat: u64,
    nbf: u64,
    jti: String,
    client_id: &'a str,
    roles: Vec<&'static str>,
}

impl Issuer {
    /// An issuer whose key and service secret live in `dir` (made on first start, readable
    /// by the owner only), so that tokens stay valid across restarts and `park token` can sign
    /// for the running park.
    pub fn open(dir: &Path, url: impl Into<String>, audience: &str) -> Result<Issuer, IssuerError> {
        let (key, secret) = keys::load_or_create(dir)?;
        Ok(Issuer::with(url.into(), audience, key, secret))
    }

    /// An issuer that keeps nothing, served on a free loopback port until the runtime ends:
    /// what tests and benchmarks run their services against.
    pub async fn on_loopback(audience: &str) -> std::io::Result<Issuer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let issuer = Issuer::ephemeral(format!("http://{}", listener.local_addr()?), audience);
        tokio::spawn(serve(listener, issuer.clone(), std::future::pending()));
        Ok(issuer)
    }

    /// An issuer that keeps nothing (tests).
    pub fn ephemeral(url: impl Into<String>, audience: &str) -> Issuer {
        Issuer::with(
            url.into(),
            audience,
            SigningKey::generate().expect("a new key"),
            keys::random_secret(),
        )
    }

    fn with(url: String, audience: &str, key: SigningKey, service_secret: String) -> Issuer {
        Issuer {
            inner: Arc::new(Inner {
                url: url.trim_end_matches('/').to_string(),
                audience: audience.to_string(),
                keys: RwLock::new(vec![key]),
                service_secret,
                codes: Mutex::default(),
            }),
        }
    }

    /// The issuer identifier (`iss`), also the base of every endpoint.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub fn audience(&self) -> &str {
        &self.inner.audience
    }

    /// The service client's credentials, for the services' settings.
    pub fn service_client(&self) -> access::ClientSettings {
        access::ClientSettings {
            client_id: SERVICE_CLIENT_ID.into(),
            client_secret: self.inner.service_secret.clone(),
        }
    }

    /// The settings under which a service trusts this issuer.
    pub fn auth_settings(&self) -> access::AuthSettings {
        let mut settings = access::AuthSettings::for_issuer(self.url());
        settings.audience = self.inner.audience.clone();
        settings
    }

    /// A new signing key, published beside the old ones (which keep verifying).
    pub fn rotate(&self) -> Result<String, IssuerError> {
        let key = SigningKey::generate()?;
        let kid = key.kid.clone();
        if let Ok(mut keys) = self.inner.keys.write() {
            keys.push(key);
        }
        Ok(kid)
    }

    /// An access token for `subject` with `roles`, valid for `lifetime`.
    pub fn token(
        &self,
        subject: &str,
        roles: &[Role],
        lifetime: Duration,
    ) -> Result<String, IssuerError> {
        self.token_for_client(subject, roles, lifetime, PAGE_CLIENT_ID)
    }

    fn token_for_client(
        &self,
        subject: &str,
        roles: &[Role],
        lifetime: Duration,
        client_id: &str,
    ) -> Result<String, IssuerError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            iss: &self.inner.url,
            sub: subject,
            aud: &self.inner.audience,
            exp: now + lifetime.as_secs(),
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            client_id,
            roles: roles.iter().map(|r| r.as_str()).collect(),
        };
        let keys = self
            .inner
            .keys
            .read()
            .map_err(|_| IssuerError::Signing("key lock poisoned".into()))?;
        let key = keys
            .last()
            .ok_or_else(|| IssuerError::Signing("no key".into()))?;
        key.sign(&claims)
    }

    /// The JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        let keys = self
            .inner
            .keys
            .read()
            .map(|k| k.clone())
            .unwrap_or_default();
        serde_json::json!({ "keys": keys.iter().map(SigningKey::jwk).collect::<Vec<_>>() })
    }

    /// Signs `claims` with the current key, whatever they are: for tests of what the
    /// services refuse (wrong issuer, expired, ...).
    pub fn sign_claims(&self, claims: &serde_json::Value) -> Result<String, IssuerError> {
        let keys = self
            .inner
            .keys
            .read()
            .map_err(|_| IssuerError::Signing("key lock poisoned".into()))?;
        keys.last()
            .ok_or_else(|| IssuerError::Signing("no key".into()))?
            .sign(claims)
    }
}

/// The subject `park token` and the role picker use for a role without a customer id.
pub fn default_subject(role: Role) -> &'static str {
    match role {
        Role::Customer => "",
        Role::Cleaner => "cleaner-1",
        Role::Admin => "admin-1",
        Role::Service => SERVICE_CLIENT_ID,
    }
}
