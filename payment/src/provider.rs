//! The payment provider, simulated in-process with configurable declines, latency and failures.

use domain::{Money, PaymethodKind};
use rand::Rng;

use crate::config::ProviderRules;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approved,
    Declined(String),
}

/// The provider did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderDown;

pub struct Provider {
    rules: ProviderRules,
}

impl Provider {
    pub fn new(rules: ProviderRules) -> Provider {
        Provider { rules }
    }

    async fn answer_delay(&self) -> Result<(), ProviderDown> {
        if !self.rules.latency.is_zero() {
            tokio::time::sleep(self.rules.latency).await;
        }
        let fails =
            self.rules.failure_rate > 0.0 && rand::rng().random_bool(self.rules.failure_rate);
        if fails {
            Err(ProviderDown)
        } else {
            Ok(())
        }
    }

    pub async fn charge(
        &self,
        amount: Money,
        _kind: Option<PaymethodKind>,
    ) -> Result<Verdict, ProviderDown> {
        self.answer_delay().await?;
        if amount.cents() > self.rules.decline_over_cents {
            return Ok(Verdict::Declined(format!(
                "the amount exceeds the limit of {} cents",
                self.rules.decline_over_cents
            )));
        }
        Ok(Verdict::Approved)
    }

    /// Checks a payment method; the full number is only looked at here.
    pub async fn verify(
        &self,
        _kind: PaymethodKind,
        number: &str,
    ) -> Result<Verdict, ProviderDown> {
        self.answer_delay().await?;
        let digits: String = number
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        if !self.rules.refuse_number_suffix.is_empty()
            && digits.ends_with(&self.rules.refuse_number_suffix)
        {
            return Ok(Verdict::Declined(
                "the provider refused this payment method".into(),
            ));
        }
        Ok(Verdict::Approved)
    }
}
