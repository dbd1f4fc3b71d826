//! `ReservationService`: apply (pay, then record), cancel, start and complete cleaning.

use std::sync::Arc;

use chrono::NaiveDate;
use domain::reservation::{
    RequestCleaning, Reservation, ReservationCommand, ReservationError, ReservationStatus,
    MAX_NAME, MAX_PLACE, MAX_REASON,
};
use domain::{Money, PaymentId, PaymethodKind, Personal, ReservationId};
use events::KeyStore;
use tonic::{Request, Response};

use access::Action;

use crate::payments::PaymentGateway;
use api_contract::reservation_service_server::ReservationService;
use api_contract::*;
use command_core::errors::{CommandError, Violations};
use command_core::execute::{Executor, Owner, Target};
use command_core::request::{acting_for, authorize, derived_id, reply, Reply};
use command_core::store::RequestContext;

pub struct Reservations<K> {
    pub executor: Arc<Executor<K>>,
    pub payments: Arc<PaymentGateway>,
}

fn target(id: ReservationId, safe_to_repeat: bool) -> Target<Reservation> {
    Target {
        stream: events::streams::reservation(id),
        safe_to_repeat,
        owner: Some(Owner {
            of: |r| (r.status != ReservationStatus::None).then_some(r.customer_id),
            missing: || ReservationError::NotFound,
        }),
    }
}

fn refusal(error: ReservationError) -> CommandError {
    match error {
        ReservationError::NotFound => CommandError::NotFound("there is no such reservation".into()),
        other => CommandError::Refused(other.to_string()),
    }
}

impl<K: KeyStore> Reservations<K> {
    /// Runs a lifecycle command (start, complete, cancel) on an existing reservation.
    async fn lifecycle(
        &self,
        context: RequestContext,
        reservation_id: ReservationId,
        command: ReservationCommand,
    ) -> Result<Response<CommandReply>, CommandError> {
        let written = self
            .executor
            .execute(&target(reservation_id, true), &command, &context, refusal)
            .await?;
        Ok(reply(reservation_id, written, &context))
    }
}

fn reservation_id(violations: &mut Violations, text: &str) -> ReservationId {
    violations
        .check("reservation_id", ReservationId::parse(text))
        .unwrap_or_default()
}

#[tonic::async_trait]
impl<K: KeyStore> ReservationService for Reservations<K> {
    async fn apply_reservation(
        &self,
        request: Request<ApplyReservationRequest>,
    ) -> Reply<CommandReply> {
        let mut v = Violations::default();
        let r = request.get_ref();
        let context = authorize(&request, Action::ApplyReservation, &r.request_id, &mut v)?;
        let customer_id = acting_for(&context, "customer_id", &r.customer_id, &mut v)?;
        let customer_name = v.check("customer_name", Personal::text(&r.customer_name, MAX_NAME));
        let place = v.check("place", Personal::text(&r.place, MAX_PLACE));
        let request_date = v.check(
            "request_date",
            NaiveDate::parse_from_str(r.request_date.trim(), "%Y-%m-%d")
                .map_err(|_| "must be a date as YYYY-MM-DD"),
        );
        let price = v.check("price_cents", Money::from_cents(r.price_cents));
        let kind = v.check("paymethod_kind", PaymethodKind::parse(&r.paymethod_kind));
        let today = chrono::Utc::now().date_naive();
        if request_date.is_some_and(|d| d < today) {
            v.add("request_date", "must be today or later");
        }
        v.finish()?;
        let (
            Some(customer_id),
            Some(customer_name),
            Some(place),
            Some(request_date),
            Some(price),
            Some(kind),
        ) = (customer_id, customer_name, place, request_date, price, kind)
        else {
            return Err(
                CommandError::Internal("validation passed with a missing field".into()).into(),
            );
        };

        let reservation_id = ReservationId::from(derived_id(&context, "reservation"));
        let payment_id = PaymentId::from(derived_id(&context, "payment"));
        let target = target(reservation_id, false);

        // A forgotten customer is refused before any money moves. A retried request pays
        // nothing twice (the payment answers with its recorded decision) and records nothing
        // twice (the executor finds the original events).
        // The customer's key is made (a durable write) while the payment runs.
        if let Err(forgotten) = self.executor.ensure_not_forgotten(customer_id).await {
            // A retry of a request recorded before the customer was forgotten still gets its
            // original answer; only new work is refused.
            let loaded = self.executor.load(&target, &context, refusal).await?;
            if let Some(earlier) = loaded.earlier_result(context.request_id, &target.stream) {
                return Ok(reply(reservation_id, earlier, &context));
            }
            return Err(forgotten.into());
        }

        let (paid, _) = tokio::try_join!(
            self.payments.pay(
                PayRequest {
                    request_id: derived_id(&context, "pay").to_string(),
                    payment_id: payment_id.to_string(),
                    reservation_id: reservation_id.to_string(),
                    amount_cents: price.cents() as i64,
                    paymethod_kind: kind.as_str().to_string(),
                },
                &context,
            ),
            self.executor.prepare_key(customer_id),
        )?;
        if !paid.approved {
            return Err(CommandError::Refused(format!(
                "payment declined: {}",
                paid.decline_reason
            ))
            .into());
        }
        if paid.refunded {
            // Either this very request was recorded and its reservation cancelled since (a
            // retry: the original answer), or its reservation was never recorded and the
            // payment was refunded as an orphan: it must not be reused.
            let loaded = self.executor.load(&target, &context, refusal).await?;
            if let Some(earlier) = loaded.earlier_result(context.request_id, &target.stream) {
                return Ok(reply(reservation_id, earlier, &context));
            }
            return Err(CommandError::Refused(
                "the payment of this request was refunded, as its reservation was not recorded \
                 in time; apply again with a new request_id"
                    .into(),
            )
            .into());
        }

        let command = ReservationCommand::Request(RequestCleaning {
            reservation_id,
            customer_id,
            customer_name,
            place,
            request_date,
            price,
            payment_id,
            today,
        });
        let written = self
            .executor
            .execute(&target, &command, &context, refusal)
            .await?;
        Ok(reply(reservation_id, written, &context))
    }

    async fn cancel_reservation(
        &self,
        request: Request<CancelReservationRequest>,
    ) -> Reply<CommandReply> {
        let mut v = Violations::default();
        let r = request.get_ref();
        let context = authorize(&request, Action::CancelReservation, &r.request_id, &mut v)?;
        let id = reservation_id(&mut v, &r.reservation_id);
        let reason = v.check("reason", domain::values::text(&r.reason, MAX_REASON));
        v.finish()?;
        let command = ReservationCommand::Cancel {
            reason: reason.unwrap_or_default(),
        };
        Ok(self.lifecycle(context, id, command).await?)
    }

    async fn start_cleaning(&self, request: Request<StartCleaningRequest>) -> Reply<CommandReply> {
        let mut v = Violations::default();
        let r = request.get_ref();
        let context = authorize(&request, Action::StartCleaning, &r.request_id, &mut v)?;
        let id = reservation_id(&mut v, &r.reservation_id);
        let cleaner = match r.cleaner.trim() {
            "" => None,
            name if name.chars().count() > MAX_NAME => {
                v.add("cleaner", format!("must be at most {MAX_NAME} characters"));
                None
            }
            name => Some(name.to_string()),
        };
        v.finish()?;
        Ok(self
            .lifecycle(context, id, ReservationCommand::StartCleaning { cleaner })
            .await?)
    }

    async fn complete_cleaning(
        &self,
        request: Request<CompleteCleaningRequest>,
    ) -> Reply<CommandReply> {
        let mut v = Violations::default();
        let r = request.get_ref();
        let context = authorize(&request, Action::CompleteCleaning, &r.request_id, &mut v)?;
        let id = reservation_id(&mut v, &r.reservation_id);
        v.finish()?;
        Ok(self
            .lifecycle(context, id, ReservationCommand::CompleteCleaning)
            .await?)
    }
}
