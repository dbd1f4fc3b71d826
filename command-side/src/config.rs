//! The command side's settings: the server's (see [`command_core::settings`]), where payment
//! is and how long it may take, and this service's own identity for calling it.

use std::time::Duration;

use access::ClientSettings;
use command_core::settings::{millis, parse, ConfigError, ServerSettings};

/// Where the command side listens unless `COMMAND_LISTEN` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Where payment is called unless `PAYMENT_ENDPOINT` says otherwise: where the `payment`
/// binary listens by default (its `DEFAULT_LISTEN`; a test of the payment crate keeps the two
/// equal).
pub const DEFAULT_PAYMENT_ADDRESS: &str = "127.0.0.1:50052";
/// The deadline of a call to payment: the provider answers in tens of milliseconds when well,
/// so a call this slow means it is not, and the caller is better told so.
pub const DEFAULT_PAYMENT_TIMEOUT: Duration = Duration::from_millis(800);
/// Consecutive payment failures that open the circuit: a few, so that one lost packet does
/// not, and a dead payment service stops costing callers a deadline each almost at once.
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// How long an open circuit refuses before letting one trial call through.
pub const DEFAULT_BREAKER_OPEN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Config {
    /// `COMMAND_LISTEN` and the settings every command service shares.
    pub server: ServerSettings,
    /// `PAYMENT_ENDPOINT`: where `PaymentService` is reached (by default where the `payment`
    /// binary listens on this machine).
    pub payment_endpoint: String,
    /// `PAYMENT_TIMEOUT_MS`: the deadline of a call to the payment service.
    pub payment_timeout: Duration,
    /// `BREAKER_FAILURES`: consecutive payment failures that open the circuit.
    pub breaker_failures: u32,
    /// `BREAKER_OPEN_MS`: how long the circuit stays open before one trial call.
    pub breaker_open: Duration,
    /// This service's own identity for its call to `PaymentService` (`AUTH_CLIENT_ID`,
    /// `AUTH_CLIENT_SECRET` or `AUTH_CLIENT_SECRET_FILE`): required.
    pub client: ClientSettings,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so that tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let default_listen = DEFAULT_LISTEN.parse().expect("the default address parses");
        let server = ServerSettings::from_lookup(&lookup, "COMMAND_LISTEN", default_listen)?;
        let payment_endpoint = lookup("PAYMENT_ENDPOINT")
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| format!("{}://{DEFAULT_PAYMENT_ADDRESS}", server.scheme()));
        let payment_timeout = millis(&lookup, "PAYMENT_TIMEOUT_MS", DEFAULT_PAYMENT_TIMEOUT)?;
        if payment_timeout >= server.call_timeout {
            return Err(ConfigError::new(
                "PAYMENT_TIMEOUT_MS",
                "must be shorter than CALL_TIMEOUT_MS: an application waits for its payment",
            ));
        }
        Ok(Config {
            payment_endpoint,
            payment_timeout,
            breaker_failures: parse(&lookup, "BREAKER_FAILURES", DEFAULT_BREAKER_FAILURES)?,
            breaker_open: millis(&lookup, "BREAKER_OPEN_MS", DEFAULT_BREAKER_OPEN)?,
            client: ClientSettings::from_lookup(&lookup)?,
            server,
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
        assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.payment_endpoint, "http://127.0.0.1:50052");
        assert_eq!(config.payment_timeout, DEFAULT_PAYMENT_TIMEOUT);
        let err = Config::from_lookup(|n| {
            required(n).or_else(|| (n == "BREAKER_FAILURES").then(|| "many".into()))
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("BREAKER_FAILURES"));
        let err = Config::from_lookup(|n| {
            required(n).or_else(|| (n == "PAYMENT_TIMEOUT_MS").then(|| "60000".into()))
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("PAYMENT_TIMEOUT_MS"), "{err}");
    }
}
