//! The payment service's settings: the server's (see [`command_core::settings`]) and how the
//! simulated provider behaves.

use std::time::Duration;

use command_core::settings::{millis, parse, ConfigError, ServerSettings};

/// Where the payment service listens unless `PAYMENT_LISTEN` says otherwise, and where its
/// callers look for it by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50052";

#[derive(Debug, Clone)]
pub struct Config {
    /// `PAYMENT_LISTEN` and the settings every command service shares.
    pub server: ServerSettings,
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

impl ProviderRules {
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let defaults = ProviderRules::default();
        let failure_rate: f64 = parse(lookup, "PAYMENT_FAILURE_RATE", defaults.failure_rate)?;
        if !(0.0..=1.0).contains(&failure_rate) {
            return Err(ConfigError::new(
                "PAYMENT_FAILURE_RATE",
                "must be between 0 and 1",
            ));
        }
        Ok(ProviderRules {
            decline_over_cents: parse(
                lookup,
                "PAYMENT_DECLINE_OVER_CENTS",
                defaults.decline_over_cents,
            )?,
            latency: millis(lookup, "PAYMENT_LATENCY_MS", defaults.latency)?,
            failure_rate,
            refuse_number_suffix: lookup("PAYMENT_REFUSE_NUMBER_SUFFIX")
                .unwrap_or(defaults.refuse_number_suffix),
        })
    }
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so that tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let default_listen = DEFAULT_LISTEN.parse().expect("the default address parses");
        Ok(Config {
            server: ServerSettings::from_lookup(&lookup, "PAYMENT_LISTEN", default_listen)?,
            provider: ProviderRules::from_lookup(&lookup)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn required(name: &str) -> Option<String> {
        (name == "AUTH_ISSUER").then(|| "http://127.0.0.1:8180".into())
    }

    #[test]
    fn defaults_work_locally_and_bad_values_name_the_variable() {
        let config = Config::from_lookup(required).unwrap();
        assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.provider, ProviderRules::default());
        // Where the command side looks for payment by default is where it listens.
        assert_eq!(
            command_side::config::DEFAULT_PAYMENT_ADDRESS,
            DEFAULT_LISTEN
        );
        let err = Config::from_lookup(|n| {
            required(n).or_else(|| (n == "PAYMENT_FAILURE_RATE").then(|| "2".into()))
        })
        .unwrap_err();
        assert!(err.to_string().contains("between 0 and 1"), "{err}");
        let err = Config::from_lookup(|n| {
            required(n).or_else(|| (n == "PAYMENT_LATENCY_MS").then(|| "slow".into()))
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("PAYMENT_LATENCY_MS"), "{err}");
    }
}
