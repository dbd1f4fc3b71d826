//! Payment methods: checked with the payment service, then recorded with their number masked.

use std::sync::Arc;

use command_core::errors::CommandError;
use command_core::execute::{Executor, Owner, Target};
use command_core::request::derived_id;
use command_core::store::{RequestContext, Written};
use domain::paymethod::{Paymethod, PaymethodCommand, PaymethodError};
use domain::{CustomerId, MaskedNumber, PaymethodId, PaymethodKind, Personal};
use events::KeyStore;

use crate::payments::PaymentGateway;
use crate::proto::VerifyPaymethodRequest;

pub struct Paymethods<K> {
    pub executor: Arc<Executor<K>>,
    pub payments: Arc<PaymentGateway>,
}

/// A payment method: its kind, and its number masked (the full one goes only to the check).
pub struct Method {
    pub kind: PaymethodKind,
    pub masked_number: MaskedNumber,
}

fn target(id: PaymethodId) -> Target<Paymethod> {
    Target {
        stream: events::streams::paymethod(id),
        safe_to_repeat: true,
        owner: Some(Owner {
            of: |p| p.registered.then_some(p.customer_id),
            missing: || PaymethodError::NotFound,
        }),
    }
}

fn refusal(error: PaymethodError) -> CommandError {
    match error {
        PaymethodError::NotFound => {
            CommandError::NotFound("there is no such payment method".into())
        }
        other => CommandError::Refused(other.to_string()),
    }
}

impl<K: KeyStore> Paymethods<K> {
    /// Registers a payment method once the payment service accepts `number`.
    pub async fn register(
        &self,
        context: &RequestContext,
        customer_id: CustomerId,
        customer_name: Personal<String>,
        method: Method,
        number: &str,
    ) -> Result<(PaymethodId, Written), CommandError> {
        let paymethod_id = PaymethodId::from(derived_id(context, "paymethod"));
        let command = PaymethodCommand::Register {
            paymethod_id,
            customer_id,
            customer_name,
            kind: method.kind,
            masked_number: method.masked_number,
        };
        let step = |_: &Paymethod| {
            let command = command.clone();
            async move {
                self.executor.ensure_not_forgotten(customer_id).await?;
                self.verify(method.kind, number, context).await?;
                Ok(Some(command))
            }
        };
        let executed = self
            .executor
            .execute_with(&target(paymethod_id), context, refusal, step)
            .await?;
        Ok((paymethod_id, executed.written))
    }

    /// Changes an existing payment method once the payment service accepts `number`.
    pub async fn change(
        &self,
        context: &RequestContext,
        paymethod_id: PaymethodId,
        method: Method,
        number: &str,
    ) -> Result<Written, CommandError> {
        let command = PaymethodCommand::Change {
            kind: method.kind,
            masked_number: method.masked_number,
        };
        let step = |paymethod: &Paymethod| {
            let (registered, command) = (paymethod.registered, command.clone());
            async move {
                // Refused before the provider is asked about a method that is not there.
                if !registered {
                    return Err(refusal(PaymethodError::NotFound));
                }
                self.verify(method.kind, number, context).await?;
                Ok(Some(command))
            }
        };
        let executed = self
            .executor
            .execute_with(&target(paymethod_id), context, refusal, step)
            .await?;
        Ok(executed.written)
    }

    async fn verify(
        &self,
        kind: PaymethodKind,
        number: &str,
        context: &RequestContext,
    ) -> Result<(), CommandError> {
        let request = VerifyPaymethodRequest {
            kind: kind.as_str().to_string(),
            number: number.to_string(),
        };
        let verdict = self.payments.verify(request, context).await?;
        if verdict.accepted {
            Ok(())
        } else {
            Err(CommandError::Refused(format!(
                "payment method refused: {}",
                verdict.reason
            )))
        }
    }
}
