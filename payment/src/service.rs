//! `PaymentService`: asks the (simulated) provider and records its answer; refunds; checks
//! payment methods.

use std::sync::Arc;

use domain::payment::{
    Payment, PaymentCommand, PaymentError, PaymentStatus, ProviderAnswer, ProviderOutcome,
};
use domain::{Aggregate, Money, PaymentId, PaymethodKind, ReservationId};
use events::{Event, KeyStore};
use tonic::{Request, Response};

use access::Action;

use crate::provider::{Provider, Verdict};
use api_contract::payment_service_server::PaymentService;
use api_contract::*;
use command_core::errors::{CommandError, Violations};
use command_core::execute::{Executor, Target};
use command_core::request::{authorize, reply, with_correlation, Reply};
use command_core::store::{StoreError, Written};

pub struct Payments<K> {
    pub executor: Arc<Executor<K>>,
    pub provider: Arc<Provider>,
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

/// When a caller should try again after the provider failed to answer: a simulated provider's
/// outage is a blip, and the caller's circuit breaker takes over from longer ones.
const PROVIDER_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

fn provider_down() -> CommandError {
    CommandError::Unavailable {
        reason: "the payment provider did not answer".into(),
        retry_after: PROVIDER_RETRY_AFTER,
    }
}

#[tonic::async_trait]
impl<K: KeyStore> PaymentService for Payments<K> {
    async fn pay(&self, request: Request<PayRequest>) -> Reply<PayReply> {
        let mut v = Violations::default();
        let r = request.get_ref();
        let context = authorize(&request, Action::Pay, &r.request_id, &mut v)?;
        let payment_id = v.check("payment_id", PaymentId::parse(&r.payment_id));
        let reservation_id = v.check("reservation_id", ReservationId::parse(&r.reservation_id));
        let amount = v.check("amount_cents", Money::from_cents(r.amount_cents));
        let kind = match r.paymethod_kind.trim() {
            "" => None,
            text => v.check("paymethod_kind", PaymethodKind::parse(text)),
        };
        v.finish()?;
        let (Some(payment_id), Some(reservation_id), Some(amount)) =
            (payment_id, reservation_id, amount)
        else {
            return Err(
                CommandError::Internal("validation passed with a missing field".into()).into(),
            );
        };
        let target = target(payment_id);

        // A payment is decided once: asking again answers with the recorded decision.
        let loaded = self.executor.load(&target, &context, refusal).await?;
        if loaded.state.status != PaymentStatus::None {
            let (revision, position) = loaded.stored.last().map_or((0, 0), |s| (s.1, s.2));
            return Ok(pay_reply(
                payment_id,
                &loaded.state,
                Written { revision, position },
                &context,
            ));
        }

        let outcome = match self
            .provider
            .charge(amount, kind)
            .await
            .map_err(|_| provider_down())?
        {
            Verdict::Approved => ProviderOutcome::Approved,
            Verdict::Declined(reason) => ProviderOutcome::Declined { reason },
        };
        let command = PaymentCommand::Record(ProviderAnswer {
            payment_id,
            reservation_id,
            amount,
            paymethod_kind: kind,
            outcome,
        });
        // Appended right after the state loaded above: one read per payment, not two.
        let decided = loaded.state.decide(&command).map_err(refusal)?;
        let new: Vec<Event> = decided.iter().cloned().map(Event::from).collect();
        let store = &self.executor.store;
        match store
            .append(&target.stream, loaded.revision, &new, &context)
            .await
        {
            Ok(written) => Ok(pay_reply(
                payment_id,
                &Payment::replay(&decided),
                written,
                &context,
            )),
            // Decided at the same moment by a twin request: answer with what it recorded.
            Err(StoreError::Conflict) => {
                let recorded = self.executor.load(&target, &context, refusal).await?;
                let (revision, position) = recorded.stored.last().map_or((0, 0), |s| (s.1, s.2));
                let written = Written { revision, position };
                Ok(pay_reply(payment_id, &recorded.state, written, &context))
            }
            Err(e) => Err(CommandError::from(e).into()),
        }
    }

    async fn cancel_payment(&self, request: Request<CancelPaymentRequest>) -> Reply<CommandReply> {
        let mut v = Violations::default();
        let r = request.get_ref();
        let context = authorize(&request, Action::CancelPayment, &r.request_id, &mut v)?;
        let payment_id = v
            .check("payment_id", PaymentId::parse(&r.payment_id))
            .unwrap_or_default();
        v.finish()?;
        let written = self
            .executor
            .execute(
                &target(payment_id),
                &PaymentCommand::Cancel,
                &context,
                refusal,
            )
            .await?;
        Ok(reply(payment_id, written, &context))
    }

    async fn verify_paymethod(
        &self,
        request: Request<VerifyPaymethodRequest>,
    ) -> Reply<VerifyPaymethodReply> {
        access::grpc::grant(&request, Action::VerifyPaymethod)?;
        let mut v = Violations::default();
        let r = request.get_ref();
        let kind = v.check("kind", PaymethodKind::parse(&r.kind));
        if let Some(kind) = kind {
            v.check("number", domain::MaskedNumber::mask(kind, &r.number));
        }
        v.finish()?;
        let Some(kind) = kind else {
            return Err(
                CommandError::Internal("validation passed with a missing field".into()).into(),
            );
        };
        let verdict = self
            .provider
            .verify(kind, &r.number)
            .await
            .map_err(|_| provider_down())?;
        Ok(Response::new(match verdict {
            Verdict::Approved => VerifyPaymethodReply {
                accepted: true,
                reason: String::new(),
            },
            Verdict::Declined(reason) => VerifyPaymethodReply {
                accepted: false,
                reason,
            },
        }))
    }
}

fn pay_reply(
    payment_id: PaymentId,
    state: &Payment,
    written: Written,
    context: &command_core::store::RequestContext,
) -> Response<PayReply> {
    let result = reply(payment_id, written, context).into_inner();
    let mut response = Response::new(PayReply {
        result: Some(result),
        approved: matches!(
            state.status,
            PaymentStatus::Approved | PaymentStatus::Cancelled
        ),
        decline_reason: state.decline_reason.clone().unwrap_or_default(),
        refunded: state.status == PaymentStatus::Cancelled,
    });
    with_correlation(&mut response, context);
    response
}
