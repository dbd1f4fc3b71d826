//! Settings, from environment variables only (so that a ConfigMap can set them); every one
//! has a default that works on a developer's machine.

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// `COMMAND_LISTEN`: where the gRPC services listen.
    pub listen: SocketAddr,
    /// `EVENT_STORE_URL`: a KurrentDB connection string.
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
    pub provider: ProviderRules,
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
        Ok(Config {
            listen,
            event_store_url: lookup("EVENT_STORE_URL")
                .unwrap_or_else(|| "esdb://127.0.0.1:2113?tls=false".into()),
            payment_endpoint: lookup("PAYMENT_ENDPOINT")
                .unwrap_or_else(|| format!("http://{listen}")),
            payment_timeout: ms("PAYMENT_TIMEOUT_MS", 800)?,
            breaker_failures: parse(&lookup, "BREAKER_FAILURES", 5)?,
            breaker_open: ms("BREAKER_OPEN_MS", 5_000)?,
            concurrency_retries: parse(&lookup, "CONCURRENCY_RETRIES", 3)?,
            drain_delay: ms("SHUTDOWN_DRAIN_DELAY_MS", 0)?,
            shutdown_grace: ms("SHUTDOWN_GRACE_MS", 20_000)?,
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

    #[test]
    fn defaults_work_locally_and_bad_values_name_the_variable() {
        let config = Config::from_lookup(|_| None).unwrap();
        assert_eq!(config.payment_endpoint, "http://127.0.0.1:50051");
        assert_eq!(config.payment_timeout, Duration::from_millis(800));
        let err =
            Config::from_lookup(|n| (n == "BREAKER_FAILURES").then(|| "many".into())).unwrap_err();
        assert!(err.to_string().starts_with("BREAKER_FAILURES"));
        let err =
            Config::from_lookup(|n| (n == "PAYMENT_FAILURE_RATE").then(|| "2".into())).unwrap_err();
        assert!(err.to_string().contains("between 0 and 1"));
    }
}
