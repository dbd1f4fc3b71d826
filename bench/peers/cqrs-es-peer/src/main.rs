//! `ApplyReservation` as a Rust user would otherwise build it: `cqrs-es` aggregates persisted
//! by `postgres-es` (its `events` table, `(aggregate_type, aggregate_id, sequence)` as the
//! concurrency check), behind the project's own gRPC contract so that `bench peers` drives it
//! with the same load generator as the command side.
//!
//! The same flow and validation: the request's fields checked with the project's `domain`
//! values (the same limits and messages), a payment decided and stored (`PaymentApproved`),
//! then the reservation (`CleaningRequested`): two durable appends per command. What it does
//! not do, and the project does: check bearer tokens, seal personal data with the customer's
//! key, check that the customer has not been forgotten, call payment over the network, and
//! recognise a retried request. Each of those costs the project something this peer skips.
//!
//! `cqrs-es-peer <listen address> <postgres url>`; creates its table if missing.

use std::net::SocketAddr;

use api_contract::reservation_service_server::{ReservationService, ReservationServiceServer};
use api_contract::*;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, AggregateError, DomainEvent};
use domain::{CustomerId, Money, PaymentId, PaymethodKind, Personal, ReservationId};
use postgres_es::{postgres_cqrs, PostgresCqrs};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use domain::reservation::{MAX_NAME, MAX_PLACE};

// ---- the payment aggregate ----

#[derive(Default, Serialize, Deserialize)]
struct Payment {
    approved: bool,
}

struct Pay {
    reservation_id: String,
    amount_cents: u64,
    kind: PaymethodKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum PaymentEvent {
    PaymentApproved {
        reservation_id: String,
        amount_cents: u64,
        paymethod_kind: String,
    },
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> String {
        "PaymentApproved".into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

/// Why an aggregate refused a command.
#[derive(Debug)]
enum Refused {
    Already(&'static str),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Already(what) => write!(f, "{what}"),
        }
    }
}
impl std::error::Error for Refused {}

impl Aggregate for Payment {
    const TYPE: &'static str = "payment";
    type Command = Pay;
    type Event = PaymentEvent;
    type Error = Refused;
    type Services = ();

    async fn handle(&mut self, pay: Pay, _: &(), sink: &EventSink<Self>) -> Result<(), Refused> {
        if self.approved {
            return Err(Refused::Already("the payment is already decided"));
        }
        let event = PaymentEvent::PaymentApproved {
            reservation_id: pay.reservation_id,
            amount_cents: pay.amount_cents,
            paymethod_kind: pay.kind.as_str().into(),
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, PaymentEvent::PaymentApproved { .. }: PaymentEvent) {
        self.approved = true;
    }
}

// ---- the reservation aggregate ----

#[derive(Default, Serialize, Deserialize)]
struct Reservation {
    requested: bool,
}

struct RequestCleaning {
    customer_id: String,
    customer_name: String,
    place: String,
    request_date: chrono::NaiveDate,
    price_cents: u64,
    payment_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum ReservationEvent {
    CleaningRequested {
        customer_id: String,
        customer_name: String,
        place: String,
        request_date: chrono::NaiveDate,
        price_cents: u64,
        payment_id: String,
    },
}

impl DomainEvent for ReservationEvent {
    fn event_type(&self) -> String {
        "CleaningRequested".into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

impl Aggregate for Reservation {
    const TYPE: &'static str = "reservation";
    type Command = RequestCleaning;
    type Event = ReservationEvent;
    type Error = Refused;
    type Services = ();

    async fn handle(
        &mut self,
        c: RequestCleaning,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Refused> {
        if self.requested {
            return Err(Refused::Already("the reservation already exists"));
        }
        let event = ReservationEvent::CleaningRequested {
            customer_id: c.customer_id,
            customer_name: c.customer_name,
            place: c.place,
            request_date: c.request_date,
            price_cents: c.price_cents,
            payment_id: c.payment_id,
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, ReservationEvent::CleaningRequested { .. }: ReservationEvent) {
        self.requested = true;
    }
}

// ---- the gRPC adapter ----

struct Reservations {
    payments: PostgresCqrs<Payment>,
    reservations: PostgresCqrs<Reservation>,
}

fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

fn failed(e: AggregateError<Refused>) -> Status {
    match e {
        AggregateError::UserError(refused) => Status::failed_precondition(refused.to_string()),
        AggregateError::AggregateConflict => Status::aborted("a concurrent write won"),
        other => Status::unavailable(other.to_string()),
    }
}

#[tonic::async_trait]
impl ReservationService for Reservations {
    async fn apply_reservation(
        &self,
        request: Request<ApplyReservationRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        let r = request.into_inner();
        let customer_id =
            CustomerId::parse(&r.customer_id).map_err(|e| invalid("customer_id", e))?;
        let customer_name =
            Personal::text(&r.customer_name, MAX_NAME).map_err(|e| invalid("customer_name", e))?;
        let place = Personal::text(&r.place, MAX_PLACE).map_err(|e| invalid("place", e))?;
        let request_date = chrono::NaiveDate::parse_from_str(r.request_date.trim(), "%Y-%m-%d")
            .map_err(|_| invalid("request_date", "must be a date as YYYY-MM-DD"))?;
        if request_date < chrono::Utc::now().date_naive() {
            return Err(invalid("request_date", "must be today or later"));
        }
        let price = Money::from_cents(r.price_cents).map_err(|e| invalid("price_cents", e))?;
        let kind =
            PaymethodKind::parse(&r.paymethod_kind).map_err(|e| invalid("paymethod_kind", e))?;

        let (reservation_id, payment_id) = (ReservationId::new(), PaymentId::new());
        let (reservation, payment) = (reservation_id.to_string(), payment_id.to_string());
        self.payments
            .execute(
                &payment,
                Pay {
                    reservation_id: reservation.clone(),
                    amount_cents: price.cents(),
                    kind,
                },
            )
            .await
            .map_err(failed)?;
        self.reservations
            .execute(
                &reservation,
                RequestCleaning {
                    customer_id: customer_id.to_string(),
                    customer_name: customer_name.expose().cloned().unwrap_or_default(),
                    place: place.expose().cloned().unwrap_or_default(),
                    request_date,
                    price_cents: price.cents(),
                    payment_id: payment,
                },
            )
            .await
            .map_err(failed)?;
        Ok(Response::new(CommandReply {
            id: reservation,
            revision: 0,
            position: 0,
            correlation_id: r.request_id,
        }))
    }

    async fn cancel_reservation(
        &self,
        _: Request<CancelReservationRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        Err(Status::unimplemented(
            "the peer serves ApplyReservation only",
        ))
    }

    async fn start_cleaning(
        &self,
        _: Request<StartCleaningRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        Err(Status::unimplemented(
            "the peer serves ApplyReservation only",
        ))
    }

    async fn complete_cleaning(
        &self,
        _: Request<CompleteCleaningRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        Err(Status::unimplemented(
            "the peer serves ApplyReservation only",
        ))
    }
}

/// postgres-es's own schema (its `db/init.sql`).
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS events (
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text NOT NULL,
    event_version  text NOT NULL,
    payload        json NOT NULL,
    metadata       json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
)";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, database, connections] = args.as_slice() else {
        return Err("usage: cqrs-es-peer <listen address> <postgres url> <connections>".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections.parse()?)
        .connect(database)
        .await?;
    sqlx::query(SCHEMA).execute(&pool).await?;
    let service = Reservations {
        payments: postgres_cqrs(pool.clone(), vec![], ()),
        reservations: postgres_cqrs(pool, vec![], ()),
    };
    tonic::transport::Server::builder()
        .add_service(ReservationServiceServer::new(service))
        .serve_with_shutdown(listen, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
