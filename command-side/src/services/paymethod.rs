//! `PaymethodService`: payment methods are checked with the payment service, then recorded
//! with their number masked.

use std::sync::Arc;

use domain::paymethod::{Paymethod, PaymethodCommand, PaymethodError};
use domain::reservation::MAX_NAME;
use domain::{MaskedNumber, PaymethodId, PaymethodKind, Personal};
use events::KeyStore;
use tonic::Request;

use access::Action;

use crate::payments::PaymentGateway;
use api_contract::paymethod_service_server::PaymethodService;
use api_contract::*;
use command_core::errors::{CommandError, Violations};
use command_core::execute::{Executor, Owner, Target};
use command_core::request::{acting_for, authorize, derived_id, reply, Reply};
use command_core::store::RequestContext;

pub struct Paymethods<K> {
    pub executor: Arc<Executor<K>>,
    pub payments: Arc<PaymentGateway>,
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

/// Checks kind and number; the number is masked at once and the full one goes only to the
/// payment service's check.
fn kind_and_number(
    v: &mut Violations,
    kind: &str,
    number: &str,
) -> Option<(PaymethodKind, MaskedNumber)> {
    let kind = v.check("kind", PaymethodKind::parse(kind))?;
    let masked = v.check("number", MaskedNumber::mask(kind, number))?;
    Some((kind, masked))
}

impl<K: KeyStore> Paymethods<K> {
    async fn verify(
        &self,
        kind: PaymethodKind,
        number: &str,
        context: &RequestContext,
    ) -> Result<(), CommandError> {
        let verdict = self
            .payments
            .verify(
                VerifyPaymethodRequest {
                    kind: kind.as_str().to_string(),
                    number: number.to_string(),
                },
                context,
            )
            .await?;
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

#[tonic::async_trait]
impl<K: KeyStore> PaymethodService for Paymethods<K> {
    async fn register_paymethod(
        &self,
        request: Request<RegisterPaymethodRequest>,
    ) -> Reply<CommandReply> {
        let mut v = Violations::default();
        let r = request.get_ref();
        let context = authorize(&request, Action::RegisterPaymethod, &r.request_id, &mut v)?;
        let customer_id = acting_for(&context, "customer_id", &r.customer_id, &mut v)?;
        let customer_name = v.check("customer_name", Personal::text(&r.customer_name, MAX_NAME));
        let checked = kind_and_number(&mut v, &r.kind, &r.number);
        v.finish()?;
        let (Some(customer_id), Some(customer_name), Some((kind, masked_number))) =
            (customer_id, customer_name, checked)
        else {
            return Err(
                CommandError::Internal("validation passed with a missing field".into()).into(),
            );
        };
        let paymethod_id = PaymethodId::from(derived_id(&context, "paymethod"));
        let target = target(paymethod_id);
        let loaded = self.executor.load(&target, &context, refusal).await?;
        if let Some(earlier) = loaded.earlier_result(context.request_id, &target.stream) {
            return Ok(reply(paymethod_id, earlier, &context));
        }
        self.executor.ensure_not_forgotten(customer_id).await?;
        self.verify(kind, &r.number, &context).await?;
        let command = PaymethodCommand::Register {
            paymethod_id,
            customer_id,
            customer_name,
            kind,
            masked_number,
        };
        let written = self
            .executor
            .execute(&target, &command, &context, refusal)
            .await?;
        Ok(reply(paymethod_id, written, &context))
    }

    async fn change_paymethod(
        &self,
        request: Request<ChangePaymethodRequest>,
    ) -> Reply<CommandReply> {
        let mut v = Violations::default();
        let r = request.get_ref();
        let context = authorize(&request, Action::ChangePaymethod, &r.request_id, &mut v)?;
        let paymethod_id = v.check("paymethod_id", PaymethodId::parse(&r.paymethod_id));
        let checked = kind_and_number(&mut v, &r.kind, &r.number);
        v.finish()?;
        let (Some(paymethod_id), Some((kind, masked_number))) = (paymethod_id, checked) else {
            return Err(
                CommandError::Internal("validation passed with a missing field".into()).into(),
            );
        };
        let target = target(paymethod_id);
        let loaded = self.executor.load(&target, &context, refusal).await?;
        if let Some(earlier) = loaded.earlier_result(context.request_id, &target.stream) {
            return Ok(reply(paymethod_id, earlier, &context));
        }
        if !loaded.state.registered {
            return Err(refusal(PaymethodError::NotFound).into());
        }
        self.verify(kind, &r.number, &context).await?;
        let command = PaymethodCommand::Change {
            kind,
            masked_number,
        };
        let written = self
            .executor
            .execute(&target, &command, &context, refusal)
            .await?;
        Ok(reply(paymethod_id, written, &context))
    }
}
