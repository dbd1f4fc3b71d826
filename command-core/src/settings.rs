//! Settings every command service reads alike, from environment variables only (so that a
//! ConfigMap can set them). Each has a default that works on a developer's machine, except who
//! issues the tokens accepted: there is no way to serve without authentication.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use access::AuthSettings;

/// Calls served at once by default: past what the store's group commit absorbs, admitted calls
/// only wait in memory, so 64 sustains as much as 256 did with a third of the p99 at four
/// times the load (`bench overload`, BENCHMARKS.md).
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 64;

/// A call still running after this is cut (DEADLINE_EXCEEDED): every command, the payment
/// included, finishes well within it, so only a stuck one reaches it.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a decision lost to a concurrent write is taken again before ABORTED: a few, since
/// a stream written by many at once is a hot spot to be told about, not hidden.
pub const DEFAULT_CONCURRENCY_RETRIES: u32 = 3;

/// What a command service needs to serve, whichever commands it serves.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Where the gRPC services listen (the variable is the service's own: `COMMAND_LISTEN`,
    /// `PAYMENT_LISTEN`).
    pub listen: SocketAddr,
    /// `EVENT_STORE_URL` (or the file `EVENT_STORE_URL_FILE` names, as it may hold
    /// credentials): a KurrentDB connection string.
    pub event_store_url: String,
    /// `CONCURRENCY_RETRIES`: how often a command that lost a race is decided again.
    pub concurrency_retries: u32,
    /// `SHUTDOWN_DRAIN_DELAY_MS`: how long to keep serving after reporting NOT_SERVING on
    /// SIGTERM, while load balancers stop sending (a few seconds in Kubernetes).
    pub drain_delay: Duration,
    /// `SHUTDOWN_GRACE_MS`: how long in-flight calls may take to finish on SIGTERM.
    pub shutdown_grace: Duration,
    /// `MAX_CONCURRENT_CALLS`: calls served at once (payments have as many again); more are
    /// refused with RESOURCE_EXHAUSTED at once rather than queued.
    pub max_concurrent_calls: usize,
    /// `CALL_TIMEOUT_MS`: see [`DEFAULT_CALL_TIMEOUT`].
    pub call_timeout: Duration,
    /// Which bearer tokens are accepted (`AUTH_ISSUER`, `AUTH_AUDIENCE`, ...): required.
    pub auth: AuthSettings,
    /// `GRPC_REFLECTION`: whether server reflection is served (to anyone, like health).
    pub reflection: bool,
    /// `TLS_CERT_FILE` and `TLS_KEY_FILE`: serve TLS with this certificate chain and key.
    pub tls: Option<TlsFiles>,
    /// `METRICS_LISTEN`: where `/metrics`, `/healthz` and `/readyz` are served; unset, nowhere
    /// (replicas on one machine would otherwise contend for one default port).
    pub metrics_listen: Option<SocketAddr>,
}

impl ServerSettings {
    /// Reads the settings through `lookup`; the service listens where `listen_variable` says,
    /// else on `default_listen`.
    pub fn from_lookup(
        lookup: &impl Fn(&str) -> Option<String>,
        listen_variable: &'static str,
        default_listen: SocketAddr,
    ) -> Result<ServerSettings, ConfigError> {
        let max_concurrent_calls =
            parse(lookup, "MAX_CONCURRENT_CALLS", DEFAULT_MAX_CONCURRENT_CALLS)?;
        if max_concurrent_calls == 0 {
            return Err(ConfigError::new(
                "MAX_CONCURRENT_CALLS",
                "must be at least 1",
            ));
        }
        let reflection = match lookup("GRPC_REFLECTION").as_deref().map(str::trim) {
            None | Some("") | Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            Some(other) => {
                return Err(ConfigError::new(
                    "GRPC_REFLECTION",
                    format!("{other:?} is neither true nor false"),
                ))
            }
        };
        let event_store_url = lifecycle::secret(lookup, "EVENT_STORE_URL", "EVENT_STORE_URL_FILE")
            .map_err(|message| ConfigError::new("EVENT_STORE_URL_FILE", message))?
            .unwrap_or_else(|| "esdb://127.0.0.1:2113?tls=false".into());
        let metrics_listen = match lookup("METRICS_LISTEN").filter(|v| !v.trim().is_empty()) {
            None => None,
            Some(text) => Some(text.trim().parse().map_err(|e| {
                ConfigError::new("METRICS_LISTEN", format!("cannot parse {text:?}: {e}"))
            })?),
        };
        Ok(ServerSettings {
            listen: parse(lookup, listen_variable, default_listen)?,
            event_store_url,
            concurrency_retries: parse(lookup, "CONCURRENCY_RETRIES", DEFAULT_CONCURRENCY_RETRIES)?,
            drain_delay: millis(lookup, "SHUTDOWN_DRAIN_DELAY_MS", Duration::ZERO)?,
            shutdown_grace: millis(lookup, "SHUTDOWN_GRACE_MS", Duration::from_secs(20))?,
            max_concurrent_calls,
            call_timeout: millis(lookup, "CALL_TIMEOUT_MS", DEFAULT_CALL_TIMEOUT)?,
            auth: AuthSettings::from_lookup(lookup)?,
            reflection,
            tls: TlsFiles::from_lookup(lookup)?,
            metrics_listen,
        })
    }

    /// `http` or `https`, as this server's own clients must call it.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// `TLS_CERT_FILE` and `TLS_KEY_FILE`, both or neither.
    pub fn from_lookup(
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<Option<TlsFiles>, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        match (get("TLS_CERT_FILE"), get("TLS_KEY_FILE")) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.trim().into(),
                key: key.trim().into(),
            })),
            (Some(_), None) => Err(ConfigError::new(
                "TLS_KEY_FILE",
                "is required with TLS_CERT_FILE",
            )),
            (None, Some(_)) => Err(ConfigError::new(
                "TLS_CERT_FILE",
                "is required with TLS_KEY_FILE",
            )),
        }
    }
}

/// A setting that cannot be used, named by its variable.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {message}")]
pub struct ConfigError {
    name: &'static str,
    message: String,
}

impl ConfigError {
    pub fn new(name: &'static str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            name,
            message: message.into(),
        }
    }
}

impl From<access::SettingsError> for ConfigError {
    fn from(e: access::SettingsError) -> Self {
        ConfigError::new(e.name, e.message)
    }
}

/// The variable `name` parsed, or `default` when it is unset.
pub fn parse<T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match lookup(name) {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse()
            .map_err(|e: T::Err| ConfigError::new(name, format!("cannot parse {text:?}: {e}"))),
    }
}

/// The variable `name` as milliseconds, or `default` when it is unset.
pub fn millis(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    parse(lookup, name, default.as_millis() as u64).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn required(name: &str) -> Option<String> {
        (name == "AUTH_ISSUER").then(|| "http://127.0.0.1:8180".into())
    }

    const HERE: &str = "127.0.0.1:50051";

    #[test]
    fn defaults_work_locally_and_bad_values_name_the_variable() {
        let err =
            ServerSettings::from_lookup(&|_| None, "X_LISTEN", HERE.parse().unwrap()).unwrap_err();
        assert!(err.to_string().starts_with("AUTH_ISSUER"), "{err}");
        let settings =
            ServerSettings::from_lookup(&required, "X_LISTEN", HERE.parse().unwrap()).unwrap();
        assert!(settings.reflection);
        assert_eq!(settings.listen.to_string(), HERE);
        assert_eq!(settings.call_timeout, DEFAULT_CALL_TIMEOUT);
        assert_eq!(settings.metrics_listen, None);
        for (name, value, says) in [
            ("X_LISTEN", "here", "X_LISTEN: cannot parse"),
            (
                "CONCURRENCY_RETRIES",
                "many",
                "CONCURRENCY_RETRIES: cannot parse",
            ),
            (
                "MAX_CONCURRENT_CALLS",
                "0",
                "MAX_CONCURRENT_CALLS: must be at least 1",
            ),
            ("GRPC_REFLECTION", "maybe", "GRPC_REFLECTION"),
            (
                "METRICS_LISTEN",
                "everywhere",
                "METRICS_LISTEN: cannot parse",
            ),
            ("TLS_CERT_FILE", "cert.pem", "TLS_KEY_FILE: is required"),
        ] {
            let err = ServerSettings::from_lookup(
                &|n| required(n).or_else(|| (n == name).then(|| value.to_string())),
                "X_LISTEN",
                HERE.parse().unwrap(),
            )
            .unwrap_err();
            assert!(err.to_string().starts_with(says), "{name}: {err}");
        }
    }
}
