//! `PaymentService` over gRPC: each call's fields checked, the application asked, its answer
//! as the reply.

use std::sync::Arc;

use access::Action;
use api_contract::payment_service_server::PaymentService;
use api_contract::*;
use command_core::errors::{checked, Violations};
use command_core::request::{authorize, reply, with_correlation, Reply};
use domain::payment::PaymentStatus;
use domain::{Money, PaymentId, PaymethodKind, ReservationId};
use events::KeyStore;
use tonic::{Request, Response};

use crate::application::{Charge, Payments};
use crate::provider::Verdict;

pub struct PaymentsOverGrpc<K>(pub Arc<Payments<K>>);

#[tonic::async_trait]
impl<K: KeyStore> PaymentService for PaymentsOverGrpc<K> {
    async fn pay(&self, request: Request<PayRequest>) -> Reply<PayReply> {
        let mut v = Violations::default();
        let r = request.get_ref();
        let context = authorize(&request, Action::Pay, &r.request_id, &mut v)?;
        let payment_id = v.check("payment_id", PaymentId::parse(&r.payment_id));
        let reservation_id = v.check("reservation_id", ReservationId::parse(&r.reservation_id));
        let amount = v.check("amount_cents", Money::from_cents(r.amount_cents));
        let paymethod_kind = match r.paymethod_kind.trim() {
            "" => None,
            text => v.check("paymethod_kind", PaymethodKind::parse(text)),
        };
        v.finish()?;
        let charge = Charge {
            payment_id: checked(payment_id)?,
            reservation_id: checked(reservation_id)?,
            amount: checked(amount)?,
            paymethod_kind,
        };
        let payment_id = charge.payment_id;
        let paid = self.0.pay(&context, charge).await?;
        let state = &paid.state;
        let mut response = Response::new(PayReply {
            result: Some(reply(payment_id, paid.written, &context).into_inner()),
            approved: matches!(
                state.status,
                PaymentStatus::Approved | PaymentStatus::Cancelled
            ),
            decline_reason: state.decline_reason.clone().unwrap_or_default(),
            refunded: state.status == PaymentStatus::Cancelled,
        });
        with_correlation(&mut response, &context);
        Ok(response)
    }

    async fn cancel_payment(&self, request: Request<CancelPaymentRequest>) -> Reply<CommandReply> {
        let mut v = Violations::default();
        let r = request.get_ref();
        let context = authorize(&request, Action::CancelPayment, &r.request_id, &mut v)?;
        let payment_id = v.check("payment_id", PaymentId::parse(&r.payment_id));
        v.finish()?;
        let payment_id = checked(payment_id)?;
        let written = self.0.cancel(&context, payment_id).await?;
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
        let verdict = self.0.verify(checked(kind)?, &r.number).await?;
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
