//! Checking bearer tokens against the issuer's published keys.
//!
//! The keys come from OIDC discovery (`jwks_uri`) and are cached. A token signed with a key
//! the cache does not know makes the verifier fetch the key set again (key rotation works
//! without a restart), but at most once per [`Verifier::refetch_interval`], and one fetch at
//! a time: a flood of tokens with made-up key ids costs the issuer nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::client::fetch_json;
use crate::{AuthSettings, Principal, Role};

/// Longer tokens are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Asymmetric algorithms only: no `none`, and no HMAC, so a public key can never be used as
/// a shared secret (algorithm confusion).
pub const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
/// Keys are fetched again after this long even when none is unknown, so that a key the
/// issuer withdrew stops being accepted.
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(10 * 60);
pub const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// A token whose signature verified is taken at its word again for at most this long (and
/// never past its `exp`): clients send the same token call after call, and the signature check
/// is most of what a call's authentication costs. Short, so that a key the issuer withdraws
/// stops being honoured soon.
pub const VERIFIED_FOR_AT_MOST: Duration = Duration::from_secs(60);
/// Verified tokens remembered at most; past that, the expired ones go, then all.
pub const VERIFIED_MAX: usize = 10_000;
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call is not let through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token at all.
    #[error("a bearer access token is required")]
    Missing,
    /// A token that is not acceptable; the text says why (never the token itself).
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The issuer's keys cannot be had, so no token can be checked now.
    #[error("tokens cannot be checked now: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// The `WWW-Authenticate` challenge of RFC 6750 for this refusal.
    pub fn challenge(&self) -> String {
        match self {
            AuthError::Missing => "Bearer realm=\"cleaning-park\"".into(),
            AuthError::Invalid(why) => format!(
                "Bearer realm=\"cleaning-park\", error=\"invalid_token\", error_description=\"{}\"",
                why.replace(['"', '\\'], "'")
            ),
            AuthError::Unavailable(_) => "Bearer realm=\"cleaning-park\"".into(),
        }
    }
}

fn invalid(why: impl Into<String>) -> AuthError {
    AuthError::Invalid(why.into())
}

/// Checks tokens; cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    settings: AuthSettings,
    http: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// When the key set was last asked for (successfully or not); held while fetching, so
    /// that there is one fetch at a time.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    refetch_interval: Duration,
    fetches: AtomicU64,
    /// Tokens that verified, with their principal and until when they may be reused.
    verified: Mutex<HashMap<Box<str>, (Principal, Instant)>>,
}

#[derive(Default)]
struct KeySet {
    by_id: HashMap<String, Key>,
    /// Keys published without a `kid` (some issuers publish a single unnamed key).
    unnamed: Vec<Key>,
    fetched: Option<Instant>,
}

#[derive(Clone)]
struct Key {
    key: DecodingKey,
    /// The JWK's `alg`, when the issuer pins one.
    algorithm: Option<Algorithm>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
}

impl Verifier {
    pub fn new(settings: AuthSettings) -> Result<Verifier, AuthError> {
        Verifier::with_refetch_interval(settings, DEFAULT_REFETCH_INTERVAL)
    }

    /// A verifier that asks the issuer for its keys at most once per `interval`.
    pub fn with_refetch_interval(
        settings: AuthSettings,
        interval: Duration,
    ) -> Result<Verifier, AuthError> {
        let http = crate::client::http_client(settings.ca_file.as_deref(), HTTP_TIMEOUT)
            .map_err(AuthError::Unavailable)?;
        Ok(Verifier {
            inner: Arc::new(Inner {
                settings,
                http,
                keys: RwLock::default(),
                last_attempt: tokio::sync::Mutex::new(None),
                refetch_interval: interval,
                fetches: AtomicU64::new(0),
                verified: Mutex::default(),
            }),
        })
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.inner.settings
    }

    /// How many verified tokens are remembered (for tests of the cache).
    pub fn remembered_tokens(&self) -> usize {
        self.inner.verified.lock().map_or(0, |v| v.len())
    }

    /// How often the key set was fetched so far (for tests of the refetch bound).
    pub fn key_fetches(&self) -> u64 {
        self.inner.fetches.load(Ordering::Relaxed)
    }

    /// The principal of an `authorization` header value (`Bearer <token>`).
    pub async fn verify_header(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        if cfg!(feature = "no-auth-baseline") {
            // The benchmarks' baseline: the same call, without the check.
            return Ok(Principal::new("baseline-admin", [Role::Admin]));
        }
        let Some(value) = header else {
            return Err(AuthError::Missing);
        };
        let value = value.trim();
        let Some((scheme, token)) = value.split_once(' ') else {
            return Err(AuthError::Missing);
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Missing);
        }
        self.verify(token.trim()).await
    }

    /// Checks one access token: its shape and size, the algorithm, the key, the signature,
    /// `iss`, `aud`, `exp` and `nbf`, then reads the subject and the roles.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid(format!(
                "the token is longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        if let Some(principal) = self.remembered(token) {
            return Ok(principal);
        }
        let header = raw_header(token)?;
        let algorithm = header
            .alg
            .parse::<Algorithm>()
            .ok()
            .filter(|a| ALGORITHMS.contains(a))
            .ok_or_else(|| {
                invalid(format!(
                    "the algorithm {:?} is not accepted (asymmetric signatures only)",
                    header.alg
                ))
            })?;
        let key = self.key(header.kid.as_deref(), algorithm).await?;
        if key.algorithm.is_some_and(|pinned| pinned != algorithm) {
            return Err(invalid("the token's algorithm does not match its key"));
        }
        let settings = &self.inner.settings;
        let mut validation = Validation::new(algorithm);
        validation.leeway = settings.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation)
            .map_err(|e| invalid(explain(e.kind())))?;
        let principal = principal(&data.claims, &settings.roles_claim)?;
        self.remember(
            token,
            &principal,
            data.claims.get("exp").and_then(|e| e.as_u64()),
        );
        Ok(principal)
    }

    fn remembered(&self, token: &str) -> Option<Principal> {
        let verified = self.inner.verified.lock().ok()?;
        let (principal, until) = verified.get(token)?;
        (Instant::now() < *until).then(|| principal.clone())
    }

    fn remember(&self, token: &str, principal: &Principal, exp: Option<u64>) {
        let left = Duration::from_secs(
            exp.unwrap_or(0)
                .saturating_sub(jsonwebtoken::get_current_timestamp()),
        );
        if left.is_zero() {
            return;
        }
        let Ok(mut verified) = self.inner.verified.lock() else {
            return;
        };
        let now = Instant::now();
        if verified.len() >= VERIFIED_MAX {
            verified.retain(|_, (_, until)| *until > now);
            if verified.len() >= VERIFIED_MAX {
                verified.clear();
            }
        }
        let until = now + left.min(VERIFIED_FOR_AT_MOST);
        verified.insert(token.into(), (principal.clone(), until));
    }

    fn current(&self) -> Arc<KeySet> {
        self.inner
            .keys
            .read()
            .map(|k| k.clone())
            .unwrap_or_default()
    }

    /// The key for `kid`, fetching the key set when it is unknown or old. While the issuer
    /// cannot be reached, the keys already known go on working.
    async fn key(&self, kid: Option<&str>, algorithm: Algorithm) -> Result<Key, AuthError> {
        let unknown = || invalid("the token is signed with an unknown key");
        let keys = self.current();
        let fresh = keys.fetched.is_some_and(|at| at.elapsed() <= KEYS_MAX_AGE);
        if let (true, Some(key)) = (fresh, keys.find(kid, algorithm)) {
            return Ok(key);
        }
        let mut last_attempt = self.inner.last_attempt.lock().await;
        // Someone else may have fetched while this call waited.
        let keys = self.current();
        if last_attempt.is_some_and(|at| at.elapsed() < self.inner.refetch_interval) {
            return match (keys.find(kid, algorithm), keys.fetched) {
                (Some(key), _) => Ok(key),
                (None, Some(_)) => Err(unknown()),
                (None, None) => Err(AuthError::Unavailable(
                    "the issuer's keys could not be fetched".into(),
                )),
            };
        }
        *last_attempt = Some(Instant::now());
        match self.fetch_and_keep().await {
            Ok(fetched) => fetched.find(kid, algorithm).ok_or_else(unknown),
            Err(e) if keys.fetched.is_none() => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "cannot refresh the issuer's keys; keeping the known ones");
                keys.find(kid, algorithm).ok_or_else(unknown)
            }
        }
    }

    /// Fetches the issuer's keys ahead of the first call, so that the first caller does not
    /// wait for them (and a short deadline, such as the payment call's, is not spent on them).
    pub async fn prefetch(&self) {
        let mut last_attempt = self.inner.last_attempt.lock().await;
        if self.current().fetched.is_some() {
            return;
        }
        *last_attempt = Some(Instant::now());
        if let Err(e) = self.fetch_and_keep().await {
            tracing::warn!(error = %e, "cannot fetch the issuer's keys yet");
        }
    }

    /// Fetches the key set and keeps it as the current one.
    async fn fetch_and_keep(&self) -> Result<Arc<KeySet>, AuthError> {
        self.inner.fetches.fetch_add(1, Ordering::Relaxed);
        let fetched = Arc::new(self.fetch().await?);
        if let Ok(mut slot) = self.inner.keys.write() {
            *slot = fetched.clone();
        }
        Ok(fetched)
    }

    /// Discovery, then the key set it names.
    async fn fetch(&self) -> Result<KeySet, AuthError> {
        let settings = &self.inner.settings;
        let http = &self.inner.http;
        let discovery: Discovery =
            fetch_json(http, &settings.discovery_url, "OIDC discovery").await?;
        if discovery.issuer.trim_end_matches('/') != settings.issuer.trim_end_matches('/') {
            return Err(AuthError::Unavailable(format!(
                "the discovery document names the issuer {:?}, not AUTH_ISSUER {:?}",
                discovery.issuer, settings.issuer
            )));
        }
        let set: JwkSet = fetch_json(http, &discovery.jwks_uri, "the issuer's key set").await?;
        let mut keys = KeySet {
            fetched: Some(Instant::now()),
            ..KeySet::default()
        };
        for jwk in &set.keys {
            if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
                continue;
            }
            let algorithm = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            // Symmetric keys in a key set are never used: only public keys verify here.
            if matches!(
                jwk.algorithm,
                jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
            ) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let key = Key { key, algorithm };
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.by_id.insert(kid.clone(), key);
                }
                None => keys.unnamed.push(key),
            }
        }
        tracing::debug!(
            keys = keys.by_id.len() + keys.unnamed.len(),
            "fetched the issuer's keys"
        );
        Ok(keys)
    }
}

impl KeySet {
    fn find(&self, kid: Option<&str>, algorithm: Algorithm) -> Option<Key> {
        let fits = |k: &&Key| {
            k.algorithm.is_none_or(|a| a == algorithm) && k.key.family() == algorithm.family()
        };
        match kid {
            Some(kid) => self.by_id.get(kid).filter(fits).cloned(),
            // Without a key id, only an unambiguous key will do.
            None => {
                let mut candidates = self.unnamed.iter().chain(self.by_id.values()).filter(fits);
                match (candidates.next(), candidates.next()) {
                    (Some(only), None) => Some(only.clone()),
                    _ => None,
                }
            }
        }
    }
}

/// The header, read before anything else so that `alg: none` and HMAC are refused by name.
fn raw_header(token: &str) -> Result<RawHeader, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(
            "the token is not a signed JWT (three dot-separated parts)",
        ));
    };
    let bytes = B64
        .decode(header)
        .map_err(|_| invalid("the token's header is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| invalid("the token's header is not a JWT header"))
}

fn explain(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "the token has expired".into(),
        K::ImmatureSignature => "the token is not valid yet".into(),
        K::InvalidIssuer => "the token is from another issuer".into(),
        K::InvalidAudience => "the token is meant for another audience".into(),
        K::InvalidSignature => "the token's signature does not verify".into(),
        K::MissingRequiredClaim(claim) => format!("the token has no {claim:?} claim"),
        K::InvalidClaimFormat(claim) => format!("the token's {claim:?} claim is malformed"),
        K::InvalidAlgorithm => "the token's algorithm does not match its key".into(),
        _ => "the token is malformed".into(),
    }
}

/// The subject and the known roles of checked claims.
fn principal(claims: &serde_json::Value, roles_claim: &str) -> Result<Principal, AuthError> {
    let subject = claims
        .get("sub")
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .ok_or_else(|| invalid("the token's subject is missing or malformed"))?;
    let mut roles = Vec::new();
    for path in [roles_claim, "realm_access.roles"] {
        let found = path
            .split('.')
            .try_fold(claims, |value, part| value.get(part));
        match found {
            Some(serde_json::Value::Array(items)) => roles.extend(
                items
                    .iter()
                    .filter_map(|r| r.as_str())
                    .filter_map(Role::parse),
            ),
            // Some issuers send a space-separated string.
            Some(serde_json::Value::String(text)) => {
                roles.extend(text.split_whitespace().filter_map(Role::parse))
            }
            _ => {}
        }
    }
    Ok(Principal::new(subject, roles))
}
