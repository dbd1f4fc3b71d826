//! Settings, from environment variables only (so that a ConfigMap can set them); every one
//! has a default that works on a developer's machine, except who issues the tokens it accepts
//! and its own identity: there is no way to run it without authentication.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use access::{AuthSettings, ClientSettings};

/// Calls served at once by default: past what the store's group commit absorbs, admitted calls
/// only wait in memory, so 64 sustains as much as 256 did with a third of the p99 at four
/// times the load (`bench overload`, BENCHMARKS.md).
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 64;

#[derive(Debug, Clone)]
pub struct Config {
    /// `COMMAND_LISTEN`: where the gRPC services listen.
    pub listen: SocketAddr,
    /// `EVENT_STORE_URL` (or the file `EVENT_STORE_URL_FILE` names, as it may hold
    /// credentials): a KurrentDB connection string.
    pub event_store_url: String,
    /// `PAYMENT_ENDPOINT`: where `PaymentService` is reached (this process by default).
    pub payment_endpoint: String,
    /// `PAYMENT_TIMEOUT_MS`: the deadline of a call to the payment service.
    pub payment_timeout: Duration,
    /// `BREAKER_FAILURES`: consecutive payment failures that open the circuit.
    pub breaker_failures: u32,
    /// `BREAKER_OPEN_MS`: how long the circuit stays open before one trial call.
    pub breaker_open: Duration,
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
    pub provider: ProviderRules,
    /// Which bearer tokens are accepted (`AUTH_ISSUER`, `AUTH_AUDIENCE`, ...): required.
    pub auth: AuthSettings,
    /// This service's own identity for its call to `PaymentService` (`AUTH_CLIENT_ID`,
    /// `AUTH_CLIENT_SECRET` or `AUTH_CLIENT_SECRET_FILE`): required.
    pub client: ClientSettings,
    /// `GRPC_REFLECTION`: whether server reflection is served (to anyone, like health).
    pub reflection: bool,
    /// `TLS_CERT_FILE` and `TLS_KEY_FILE`: serve TLS with this certificate chain and key.
    pub tls: Option<TlsFiles>,
    /// `METRICS_LISTEN`: where `/metrics`, `/healthz` and `/readyz` are served; unset, nowhere
    /// (replicas on one machine would otherwise contend for one default port).
    pub metrics_listen: Option<SocketAddr>,
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
            (Some(_), None) => Err(ConfigError {
                name: "TLS_KEY_FILE",
                message: "is required with TLS_CERT_FILE".into(),
            }),
            (None, Some(_)) => Err(ConfigError {
                name: "TLS_CERT_FILE",
                message: "is required with TLS_KEY_FILE".into(),
            }),
        }
    }
}

/// How the simulated payment provider behaves, so that declines, timeouts and an open
/// circuit can be shown and tested.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRules {
    /// `PAYMENT_DECLINE_OVER_CENTS`: amounts above this are declined.
    pub decline_over_cents: u64,
    /// `PAYMENT_LATENCY_MS`: how long the provider takes to answer.
    pub latency: Duration,
    /// `PAYMENT_FAILURE_RATE`: the share of calls (0 to 1) on which the provider fails.
    pub failure_rate: f64,
    /// `PAYMENT_REFUSE_NUMBER_SUFFIX`: payment methods whose number ends so are refused.
    pub refuse_number_suffix: String,
}

impl Default for ProviderRules {
    fn default() -> Self {
        ProviderRules {
            decline_over_cents: 100_000,
            latency: Duration::ZERO,
            failure_rate: 0.0,
            refuse_number_suffix: "0000".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{name}: {message}")]
pub struct ConfigError {
    name: &'static str,
    message: String,
}

impl From<access::SettingsError> for ConfigError {
    fn from(e: access::SettingsError) -> Self {
        ConfigError {
            name: e.name,
            message: e.message,
        }
    }
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so that tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        fn parse<T: std::str::FromStr>(
            lookup: &impl Fn(&str) -> Option<String>,
            name: &'static str,
            default: T,
        ) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            match lookup(name) {
                None => Ok(default),
                Some(text) => text.trim().parse().map_err(|e: T::Err| ConfigError {
                    name,
                    message: format!("cannot parse {text:?}: {e}"),
                }),
            }
        }
        let ms = |name, default| parse(&lookup, name, default).map(Duration::from_millis);
        let listen: SocketAddr = parse(
            &lookup,
            "COMMAND_LISTEN",
            "127.0.0.1:50051".parse().expect("address"),
        )?;
        let defaults = ProviderRules::default();
        let failure_rate: f64 = parse(&lookup, "PAYMENT_FAILURE_RATE", defaults.failure_rate)?;
        if !(0.0..=1.0).contains(&failure_rate) {
            return Err(ConfigError {
                name: "PAYMENT_FAILURE_RATE",
                message: "must be between 0 and 1".into(),
            });
        }
        let tls = TlsFiles::from_lookup(&lookup)?;
        let max_concurrent_calls: usize = parse(
            &lookup,
            "MAX_CONCURRENT_CALLS",
            DEFAULT_MAX_CONCURRENT_CALLS,
        )?;
        if max_concurrent_calls == 0 {
            return Err(ConfigError {
                name: "MAX_CONCURRENT_CALLS",
                message: "must be at least 1".into(),
            });
        }
        let reflection = match lookup("GRPC_REFLECTION").as_deref().map(str::trim) {
            None | Some("") | Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            Some(other) => {
                return Err(ConfigError {
                    name: "GRPC_REFLECTION",
                    message: format!("{other:?} is neither true nor false"),
                })
            }
        };
        let payment_endpoint = lookup("PAYMENT_ENDPOINT").unwrap_or_else(|| {
            let scheme = if tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{listen}")
        });
        let event_store_url = lifecycle::secret(&lookup, "EVENT_STORE_URL", "EVENT_STORE_URL_FILE")
            .map_err(|message| ConfigError {
                name: "EVENT_STORE_URL_FILE",
                message,
            })?
            .unwrap_or_else(|| "esdb://127.0.0.1:2113?tls=false".into());
        let metrics_listen = match lookup("METRICS_LISTEN").filter(|v| !v.trim().is_empty()) {
            None => None,
            Some(text) => Some(text.trim().parse().map_err(|e| ConfigError {
                name: "METRICS_LISTEN",
                message: format!("cannot parse {text:?}: {e}"),
            })?),
        };
        Ok(Config {
            metrics_listen,
            auth: AuthSettings::from_lookup(&lookup)?,
            client: ClientSettings::from_lookup(&lookup)?,
            reflection,
            tls,
            listen,
            event_store_url,
            payment_endpoint,
            payment_timeout: ms("PAYMENT_TIMEOUT_MS", 800)?,
            breaker_failures: parse(&lookup, "BREAKER_FAILURES", 5)?,
            breaker_open: ms("BREAKER_OPEN_MS", 5_000)?,
            concurrency_retries: parse(&lookup, "CONCURRENCY_RETRIES", 3)?,
            drain_delay: ms("SHUTDOWN_DRAIN_DELAY_MS", 0)?,
            shutdown_grace: ms("SHUTDOWN_GRACE_MS", 20_000)?,
            max_concurrent_calls,
            provider: ProviderRules {
                decline_over_cents: parse(
                    &lookup,
                    "PAYMENT_DECLINE_OVER_CENTS",
                    defaults.decline_over_cents,
                )?,
                latency: ms("PAYMENT_LATENCY_MS", 0)?,
                failure_rate,
                refuse_number_suffix: lookup("PAYMENT_REFUSE_NUMBER_SUFFIX")
                    .unwrap_or(defaults.refuse_number_suffix),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings that have no default: who issues tokens, and this service's identity.
    fn required(name: &str) -> Option<String> {
        match name {
            "AUTH_ISSUER" => Some("http://127.0.0.1:8180".into()),
            "AUTH_CLIENT_ID" => Some("cleaning-park-services".into()),
            "AUTH_CLIENT_SECRET" => Some("secret".into()),
            _ => None,
        }
    }

    #[test]
    fn defaults_work_locally_and_bad_values_name_the_variable() {
        let err = Config::from_lookup(|_| None).unwrap_err();
        assert!(err.to_string().starts_with("AUTH_ISSUER"), "{err}");
        let config = Config::from_lookup(required).unwrap();
        assert!(config.reflection);
        assert_eq!(config.payment_endpoint, "http://127.0.0.1:50051");
        assert_eq!(config.payment_timeout, Duration::from_millis(800));
        let err = Config::from_lookup(|n| {
            required(n).or_else(|| (n == "BREAKER_FAILURES").then(|| "many".into()))
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("BREAKER_FAILURES"));
        let err = Config::from_lookup(|n| {
            required(n).or_else(|| (n == "PAYMENT_FAILURE_RATE").then(|| "2".into()))
        })
        .unwrap_err();
        assert!(err.to_string().contains("between 0 and 1"));
    }
}
