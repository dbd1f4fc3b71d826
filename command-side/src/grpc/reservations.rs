//! `ReservationService`.

use std::sync::Arc;

use access::Action;
use chrono::NaiveDate;
use command_core::errors::{checked, Violations};
use command_core::request::{acting_for, authorize, reply, Reply};
use domain::reservation::{ReservationCommand, MAX_NAME, MAX_PLACE, MAX_REASON};
use domain::{Money, PaymethodKind, Personal, ReservationId};
use events::KeyStore;
use tonic::Request;

use crate::application::reservations::{NewReservation, Reservations};
use crate::proto::reservation_service_server::ReservationService;
use crate::proto::*;

pub struct ReservationsOverGrpc<K>(pub Arc<Reservations<K>>);

fn reservation_id(violations: &mut Violations, text: &str) -> Option<ReservationId> {
    violations.check("reservation_id", ReservationId::parse(text))
}

#[tonic::async_trait]
impl<K: KeyStore> ReservationService for ReservationsOverGrpc<K> {
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
        let new = NewReservation {
            customer_id: checked(customer_id)?,
            customer_name: checked(customer_name)?,
            place: checked(place)?,
            request_date: checked(request_date)?,
            price: checked(price)?,
            paymethod_kind: checked(kind)?,
            today,
        };
        let (id, written) = self.0.apply(&context, new).await?;
        Ok(reply(id, written, &context))
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
        let (id, reason) = (checked(id)?, checked(reason)?);
        let command = ReservationCommand::Cancel { reason };
        let written = self.0.change(&context, id, command).await?;
        Ok(reply(id, written, &context))
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
        let id = checked(id)?;
        let command = ReservationCommand::StartCleaning { cleaner };
        let written = self.0.change(&context, id, command).await?;
        Ok(reply(id, written, &context))
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
        let id = checked(id)?;
        let command = ReservationCommand::CompleteCleaning;
        let written = self.0.change(&context, id, command).await?;
        Ok(reply(id, written, &context))
    }
}
