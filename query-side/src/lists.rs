//! `/messages`, `/paymethods` and `/payments`: newest first, keyset-paged on each row's place in
//! the log, filterable by customer or reservation.

use access::{Action, Principal};
use axum::extract::{Extension, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{customer_filter, grant};
use crate::consistency::wait_for;
use crate::params::Params;
use crate::{fetch, AppState, Page, Problem};
use read_models::ReadModel;

/// A message sent to a customer. Recipient and text are `null` only when erased.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Message {
    pub message_id: Uuid,
    pub customer_id: Uuid,
    pub reservation_id: Option<Uuid>,
    pub recipient: Option<String>,
    pub text: Option<String>,
    /// Why it was sent: the event or request behind it.
    pub cause: String,
    pub personal_data_erased: bool,
    pub sent_at: DateTime<Utc>,
}

/// Messages, newest first.
#[utoipa::path(get, path = "/messages", tag = "lists",
    params(
        ("customer_id" = Option<Uuid>, Query),
        ("reservation_id" = Option<Uuid>, Query),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "page size, 1 to 200 (50)"),
        ("after" = Option<String>, Query, min_length = 1, description = "the `next` cursor of the previous page"),
        ("min_position" = Option<i64>, Query, minimum = 0, description = "wait until the read models have applied this position"),
    ),
    responses(
        (status = 200, body = Page<Message>),
        (status = 400, description = "malformed parameter", content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles may not read this list", content_type = "application/problem+json"),
        (status = 422, description = "parameter out of range", content_type = "application/problem+json"),
    ))]
pub async fn messages(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let grant = grant(&principal, Action::ReadMessages)?;
    let params = Params::parse(
        query.as_deref(),
        &[
            "customer_id",
            "reservation_id",
            "limit",
            "after",
            "min_position",
        ],
    )?;
    let (asked, reservation) = (params.uuid("customer_id")?, params.uuid("reservation_id")?);
    let (limit, after) = (params.limit()?, params.after()?);
    let consistency = wait_for(&state, ReadModel::Messages, &headers, &params).await?;
    let Some(customer) = customer_filter(&grant, asked) else {
        return Ok(consistency.apply(Json(Page::<Message>::empty()).into_response()));
    };
    let rows = fetch(
        &state.pool,
        "SELECT message_id, customer_id, reservation_id, recipient, text, cause,
                    personal_erased, sent_at, position
             FROM messages
             WHERE ($1::uuid IS NULL OR customer_id = $1)
               AND ($2::uuid IS NULL OR reservation_id = $2)
               AND ($3::bigint IS NULL OR position < $3)
             ORDER BY position DESC
             LIMIT $4",
        &[&customer, &reservation, &after, &(limit + 1)],
    )
    .await?;
    let page = Page::of(
        &rows,
        limit,
        |r| Message {
            message_id: r.get(0),
            customer_id: r.get(1),
            reservation_id: r.get(2),
            recipient: r.get(3),
            text: r.get(4),
            cause: r.get(5),
            personal_data_erased: r.get(6),
            sent_at: r.get(7),
        },
        |r| r.get(8),
    );
    Ok(consistency.apply(Json(page).into_response()))
}

/// A payment method on file: its number masked, the holder's name `null` only when erased.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Paymethod {
    pub paymethod_id: Uuid,
    pub customer_id: Uuid,
    pub customer_name: Option<String>,
    pub personal_data_erased: bool,
    /// credit_card, debit_card or bank_account.
    pub kind: String,
    pub masked_number: String,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Payment methods, newest first.
#[utoipa::path(get, path = "/paymethods", tag = "lists",
    params(
        ("customer_id" = Option<Uuid>, Query),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "page size, 1 to 200 (50)"),
        ("after" = Option<String>, Query, min_length = 1, description = "the `next` cursor of the previous page"),
        ("min_position" = Option<i64>, Query, minimum = 0, description = "wait until the read models have applied this position"),
    ),
    responses(
        (status = 200, body = Page<Paymethod>),
        (status = 400, description = "malformed parameter", content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles may not read this list", content_type = "application/problem+json"),
        (status = 422, description = "parameter out of range", content_type = "application/problem+json"),
    ))]
pub async fn paymethods(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let grant = grant(&principal, Action::ReadPaymethods)?;
    let params = Params::parse(
        query.as_deref(),
        &["customer_id", "limit", "after", "min_position"],
    )?;
    let asked = params.uuid("customer_id")?;
    let (limit, after) = (params.limit()?, params.after()?);
    let consistency = wait_for(&state, ReadModel::Dashboard, &headers, &params).await?;
    let Some(customer) = customer_filter(&grant, asked) else {
        return Ok(consistency.apply(Json(Page::<Paymethod>::empty()).into_response()));
    };
    let rows = fetch(
        &state.pool,
        "SELECT paymethod_id, customer_id, customer_name, personal_erased, kind, masked_number,
                    registered_at, updated_at, registered_position
             FROM paymethods
             WHERE ($1::uuid IS NULL OR customer_id = $1)
               AND ($2::bigint IS NULL OR registered_position < $2)
             ORDER BY registered_position DESC
             LIMIT $3",
        &[&customer, &after, &(limit + 1)],
    )
    .await?;
    let page = Page::of(
        &rows,
        limit,
        |r| Paymethod {
            paymethod_id: r.get(0),
            customer_id: r.get(1),
            customer_name: r.get(2),
            personal_data_erased: r.get(3),
            kind: r.get(4),
            masked_number: r.get(5),
            registered_at: r.get(6),
            updated_at: r.get(7),
        },
        |r| r.get(8),
    );
    Ok(consistency.apply(Json(page).into_response()))
}

/// A payment and where it stands.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Payment {
    pub payment_id: Uuid,
    pub reservation_id: Uuid,
    /// Known once the reservation is recorded; a declined payment has none.
    pub customer_id: Option<Uuid>,
    pub amount_cents: i64,
    pub paymethod_kind: String,
    /// approved, declined or refunded.
    pub status: String,
    pub decline_reason: Option<String>,
    pub updated_at: DateTime<Utc>,
}

pub const PAYMENT_STATUSES: [&str; 3] = ["approved", "declined", "refunded"];

/// Payments, newest first.
#[utoipa::path(get, path = "/payments", tag = "lists",
    params(
        ("status" = Option<String>, Query, pattern = "^(approved|declined|refunded)$", description = "approved, declined or refunded"),
        ("customer_id" = Option<Uuid>, Query),
        ("reservation_id" = Option<Uuid>, Query),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "page size, 1 to 200 (50)"),
        ("after" = Option<String>, Query, min_length = 1, description = "the `next` cursor of the previous page"),
        ("min_position" = Option<i64>, Query, minimum = 0, description = "wait until the read models have applied this position"),
    ),
    responses(
        (status = 200, body = Page<Payment>),
        (status = 400, description = "malformed parameter", content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles may not read this list", content_type = "application/problem+json"),
        (status = 422, description = "parameter out of range", content_type = "application/problem+json"),
    ))]
pub async fn payments(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let grant = grant(&principal, Action::ReadPayments)?;
    let params = Params::parse(
        query.as_deref(),
        &[
            "status",
            "customer_id",
            "reservation_id",
            "limit",
            "after",
            "min_position",
        ],
    )?;
    let status = params.one_of("status", &PAYMENT_STATUSES)?;
    let (asked, reservation) = (params.uuid("customer_id")?, params.uuid("reservation_id")?);
    let (limit, after) = (params.limit()?, params.after()?);
    let consistency = wait_for(&state, ReadModel::Dashboard, &headers, &params).await?;
    let Some(customer) = customer_filter(&grant, asked) else {
        return Ok(consistency.apply(Json(Page::<Payment>::empty()).into_response()));
    };
    let rows = fetch(
        &state.pool,
        "SELECT payment_id, reservation_id, customer_id, amount_cents, paymethod_kind, status,
                    decline_reason, updated_at, first_position
             FROM payments
             WHERE ($1::text IS NULL OR status = $1)
               AND ($2::uuid IS NULL OR customer_id = $2)
               AND ($3::uuid IS NULL OR reservation_id = $3)
               AND ($4::bigint IS NULL OR first_position < $4)
             ORDER BY first_position DESC
             LIMIT $5",
        &[&status, &customer, &reservation, &after, &(limit + 1)],
    )
    .await?;
    let page = Page::of(
        &rows,
        limit,
        |r| Payment {
            payment_id: r.get(0),
            reservation_id: r.get(1),
            customer_id: r.get(2),
            amount_cents: r.get(3),
            paymethod_kind: r.get(4),
            status: r.get(5),
            decline_reason: r.get(6),
            updated_at: r.get(7),
        },
        |r| r.get(8),
    );
    Ok(consistency.apply(Json(page).into_response()))
}
