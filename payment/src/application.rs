//! The payment service's commands, free of any transport: pay (ask the provider once, record
//! its answer), refund, and check a payment method.

use std::sync::Arc;
use std::time::Duration;

use command_core::errors::CommandError;
use command_core::execute::{Executed, Executor, Target};
use command_core::store::{RequestContext, Written};
use domain::payment::{
    Payment, PaymentCommand, PaymentError, PaymentStatus, ProviderAnswer, ProviderOutcome,
};
use domain::{Money, PaymentId, PaymethodKind, ReservationId};
use events::KeyStore;

use crate::provider::{Provider, Verdict};

/// When a caller should try again after the provider failed to answer: a simulated provider's
/// outage is a blip, and the caller's circuit breaker takes over from longer ones.
const PROVIDER_RETRY_AFTER: Duration = Duration::from_secs(1);

pub struct Payments<K> {
    pub executor: Arc<Executor<K>>,
    pub provider: Arc<Provider>,
}

/// A charge asked for, its fields checked.
#[derive(Debug, Clone)]
pub struct Charge {
    pub payment_id: PaymentId,
    pub reservation_id: ReservationId,
    pub amount: Money,
    pub paymethod_kind: Option<PaymethodKind>,
}

fn target(id: PaymentId) -> Target<Payment> {
    Target {
        stream: events::streams::payment(id),
        safe_to_repeat: true,
        owner: None,
    }
}

fn refusal(error: PaymentError) -> CommandError {
    match error {
        PaymentError::NotFound => CommandError::NotFound("there is no such payment".into()),
        other => CommandError::Refused(other.to_string()),
    }
}

fn provider_down() -> CommandError {
    CommandError::Unavailable {
        reason: "the payment provider did not answer".into(),
        retry_after: PROVIDER_RETRY_AFTER,
    }
}

impl<K: KeyStore> Payments<K> {
    /// A payment is decided once: the provider is asked only while none is recorded, and asking
    /// again (or a twin deciding at the same moment) answers with the recorded decision.
    pub async fn pay(
        &self,
        context: &RequestContext,
        charge: Charge,
    ) -> Result<Executed<Payment>, CommandError> {
        let step = |payment: &Payment| {
            let decided = payment.status != PaymentStatus::None;
            let charge = charge.clone();
            async move {
                if decided {
                    return Ok(None);
                }
                let outcome = match self
                    .provider
                    .charge(charge.amount, charge.paymethod_kind)
                    .await
                    .map_err(|_| provider_down())?
                {
                    Verdict::Approved => ProviderOutcome::Approved,
                    Verdict::Declined(reason) => ProviderOutcome::Declined { reason },
                };
                Ok(Some(PaymentCommand::Record(ProviderAnswer {
                    payment_id: charge.payment_id,
                    reservation_id: charge.reservation_id,
                    amount: charge.amount,
                    paymethod_kind: charge.paymethod_kind,
                    outcome,
                })))
            }
        };
        self.executor
            .execute_with(&target(charge.payment_id), context, refusal, step)
            .await
    }

    /// Refunds the payment.
    pub async fn cancel(
        &self,
        context: &RequestContext,
        payment_id: PaymentId,
    ) -> Result<Written, CommandError> {
        self.executor
            .execute(
                &target(payment_id),
                &PaymentCommand::Cancel,
                context,
                refusal,
            )
            .await
    }

    /// Whether the provider accepts the payment method; the full number is only looked at there.
    pub async fn verify(&self, kind: PaymethodKind, number: &str) -> Result<Verdict, CommandError> {
        self.provider
            .verify(kind, number)
            .await
            .map_err(|_| provider_down())
    }
}
