//! Reservations: apply (pay, then record), cancel, start and complete cleaning.

use std::sync::Arc;

use chrono::NaiveDate;
use command_core::errors::CommandError;
use command_core::execute::{Executor, Owner, Target};
use command_core::request::derived_id;
use command_core::store::{RequestContext, Written};
use domain::reservation::{
    RequestCleaning, Reservation, ReservationCommand, ReservationError, ReservationStatus,
};
use domain::{CustomerId, Money, PaymentId, PaymethodKind, Personal, ReservationId};
use events::KeyStore;

use crate::payments::PaymentGateway;
use crate::proto::PayRequest;

pub struct Reservations<K> {
    pub executor: Arc<Executor<K>>,
    pub payments: Arc<PaymentGateway>,
}

/// An application for a cleaning, its fields checked.
pub struct NewReservation {
    pub customer_id: CustomerId,
    pub customer_name: Personal<String>,
    pub place: Personal<String>,
    pub request_date: NaiveDate,
    pub price: Money,
    pub paymethod_kind: PaymethodKind,
    /// The caller's today: a cleaning is booked for today or later.
    pub today: NaiveDate,
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
    /// Pays, then records the reservation. A retried request pays nothing twice (the payment
    /// answers with its recorded decision) and records nothing twice (the reservation's stream
    /// must not exist yet; when it does, the retry gets its original result); a forgotten
    /// customer is refused before any money moves; the customer's key is made (a durable write)
    /// while the payment runs. A new request reads no stream of the command side's own.
    pub async fn apply(
        &self,
        context: &RequestContext,
        new: NewReservation,
    ) -> Result<(ReservationId, Written), CommandError> {
        let reservation_id = ReservationId::from(derived_id(context, "reservation"));
        let payment_id = PaymentId::from(derived_id(context, "payment"));
        let customer_id = new.customer_id;
        let command = ReservationCommand::Request(RequestCleaning {
            reservation_id,
            customer_id,
            customer_name: new.customer_name,
            place: new.place,
            request_date: new.request_date,
            price: new.price,
            payment_id,
            today: new.today,
        });
        let pay = PayRequest {
            request_id: derived_id(context, "pay").to_string(),
            payment_id: payment_id.to_string(),
            reservation_id: reservation_id.to_string(),
            amount_cents: new.price.cents() as i64,
            paymethod_kind: new.paymethod_kind.as_str().to_string(),
        };
        let step = |_: &Reservation| {
            let (pay, command) = (pay.clone(), command.clone());
            async move {
                self.executor.ensure_not_forgotten(customer_id).await?;
                let (paid, _) = tokio::try_join!(
                    self.payments.pay(pay, context),
                    self.executor.prepare_key(customer_id),
                )?;
                if !paid.approved {
                    return Err(CommandError::Refused(format!(
                        "payment declined: {}",
                        paid.decline_reason
                    )));
                }
                if paid.refunded {
                    // Unless this request was recorded and refunded since (then the refusal
                    // gives way to its original result, found in its stream), its reservation
                    // was never recorded and the payment was refunded as an orphan. It must not
                    // be reused.
                    return Err(CommandError::Refused(
                        "the payment of this request was refunded, as its reservation was not \
                         recorded in time; apply again with a new request_id"
                            .into(),
                    ));
                }
                Ok(Some(command))
            }
        };
        let target = target(reservation_id, false);
        let executed = self
            .executor
            .execute_new(&target, context, refusal, step)
            .await?;
        Ok((reservation_id, executed.written))
    }

    /// Runs a lifecycle command (start, complete, cancel) on an existing reservation.
    pub async fn change(
        &self,
        context: &RequestContext,
        reservation_id: ReservationId,
        command: ReservationCommand,
    ) -> Result<Written, CommandError> {
        self.executor
            .execute(&target(reservation_id, true), &command, context, refusal)
            .await
    }
}
