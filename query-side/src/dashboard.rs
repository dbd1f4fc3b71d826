//! `/dashboard` and `/reservations/{id}/timeline`: what a customer or the cleaning company
//! looks at.

use access::{Action, Principal};
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use read_models::ReadModel;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{customer_filter, grant};
use crate::consistency::{read_position, wait_for, Consistency};
use crate::params::{encode_cursor, id_from_path, Params};
use crate::{fetch, AppState, Page, Problem};

/// One dashboard row: every fact of a reservation. Personal fields are `null` only when erased.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct DashboardEntry {
    pub reservation_id: Uuid,
    pub customer_id: Uuid,
    pub customer_name: Option<String>,
    pub place: Option<String>,
    pub personal_data_erased: bool,
    pub request_date: NaiveDate,
    pub price_cents: i64,
    /// requested, cleaning_started, cleaning_completed or cancelled.
    pub status: String,
    pub cleaner: Option<String>,
    pub cancel_reason: Option<String>,
    pub payment_id: Uuid,
    pub payment_kind: String,
    pub payment_status: String,
    pub last_notification: String,
    pub requested_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns [`entry`] reads, in its order.
pub(crate) const COLUMNS: &str =
    "reservation_id, customer_id, customer_name, place, personal_erased, request_date,
    price_cents, status, cleaner, cancel_reason, payment_id, payment_kind, payment_status,
    last_notification, requested_at, updated_at";

fn entry(row: &tokio_postgres::Row) -> DashboardEntry {
    entry_from(row, 0)
}

/// A row whose [`COLUMNS`] start at column `at`.
pub(crate) fn entry_from(row: &tokio_postgres::Row, at: usize) -> DashboardEntry {
    DashboardEntry {
        reservation_id: row.get(at),
        customer_id: row.get(at + 1),
        customer_name: row.get(at + 2),
        place: row.get(at + 3),
        personal_data_erased: row.get(at + 4),
        request_date: row.get(at + 5),
        price_cents: row.get(at + 6),
        status: row.get(at + 7),
        cleaner: row.get(at + 8),
        cancel_reason: row.get(at + 9),
        payment_id: row.get(at + 10),
        payment_kind: row.get(at + 11),
        payment_status: row.get(at + 12),
        last_notification: row.get(at + 13),
        requested_at: row.get(at + 14),
        updated_at: row.get(at + 15),
    }
}

/// The statuses a reservation is listed by, as the domain names them.
pub const STATUSES: [&str; 4] = domain::reservation::ReservationStatus::NAMES;

/// Reservations, newest first.
#[utoipa::path(get, path = "/dashboard", tag = "dashboard",
    params(
        ("status" = Option<String>, Query, pattern = "^(requested|cleaning_started|cleaning_completed|cancelled)$", description = "requested, cleaning_started, cleaning_completed or cancelled"),
        ("customer_id" = Option<Uuid>, Query),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "page size, 1 to 200 (50)"),
        ("after" = Option<String>, Query, min_length = 1, description = "the `next` cursor of the previous page"),
        ("min_position" = Option<i64>, Query, minimum = 0, description = "wait until the read model has applied this position"),
    ),
    responses(
        (status = 200, body = Page<DashboardEntry>),
        (status = 400, description = "malformed parameter", content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles may not read the dashboard", content_type = "application/problem+json"),
        (status = 422, description = "parameter out of range", content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let grant = grant(&principal, Action::ReadDashboard)?;
    let params = Params::parse(
        query.as_deref(),
        &["status", "customer_id", "limit", "after", "min_position"],
    )?;
    let limit = params.limit()?;
    let status = params.one_of("status", &STATUSES)?;
    let asked = params.uuid("customer_id")?;
    let after = params.after()?;
    let consistency = wait_for(&state, ReadModel::Dashboard, &headers, &params).await?;
    // Read before the rows: the page follows the changes from here (`/dashboard/changes`
    // with this as `Last-Event-ID`), and sees every change the rows may have missed.
    let stands_at = read_position(&state, ReadModel::Dashboard).await?;
    // A customer sees only their own; asking for anyone else's finds nothing.
    let Some(customer) = customer_filter(&grant, asked) else {
        let response = Json(Page::<DashboardEntry>::empty()).into_response();
        return Ok(at_position(consistency.apply(response), stands_at));
    };

    // Newest first, keyset-paged on the reservation's place in the log: as fast on page 1,000
    // as on page one, and stable while rows are added.
    let rows = fetch(
        &state.pool,
        &format!(
            "SELECT {COLUMNS}, requested_position FROM dashboard
                 WHERE ($1::text IS NULL OR status = $1)
                   AND ($2::uuid IS NULL OR customer_id = $2)
                   AND ($3::bigint IS NULL OR requested_position < $3)
                 ORDER BY requested_position DESC
                 LIMIT $4"
        ),
        &[&status, &customer, &after, &(limit + 1)],
    )
    .await?;
    let page = Page::of(&rows, limit, entry, |r| r.get("requested_position"));
    Ok(at_position(
        consistency.apply(Json(page).into_response()),
        stands_at,
    ))
}

/// Says where the read models stood when the list was read (`x-read-model-position`),
/// unless a read-your-writes wait said it already.
fn at_position(mut response: Response, position: i64) -> Response {
    if let Ok(value) = axum::http::HeaderValue::from_str(&position.to_string()) {
        response
            .headers_mut()
            .entry("x-read-model-position")
            .or_insert(value);
    }
    response
}

/// One reservation.
#[utoipa::path(get, path = "/dashboard/{reservation_id}", tag = "dashboard",
    params(
        ("reservation_id" = Uuid, Path),
        ("min_position" = Option<i64>, Query, minimum = 0, description = "wait until the read model has applied this position"),
    ),
    responses(
        (status = 200, body = DashboardEntry),
        (status = 400, description = "malformed id", content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles may not read this", content_type = "application/problem+json"),
        (status = 404, description = "no such reservation (or not the caller's)", content_type = "application/problem+json"),
        (status = 422, description = "parameter out of range", content_type = "application/problem+json"),
    ))]
pub async fn one(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    Path(reservation_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let only = grant(&principal, Action::ReadDashboard)?.customer_filter();
    let (id, consistency) = one_reservation(
        &state,
        ReadModel::Dashboard,
        &headers,
        &reservation_id,
        query,
    )
    .await?;
    // Someone else's reservation is answered as one that does not exist.
    let rows = fetch(
        &state.pool,
        &format!(
            "SELECT {COLUMNS} FROM dashboard
                 WHERE reservation_id = $1 AND ($2::uuid IS NULL OR customer_id = $2)"
        ),
        &[&id, &only],
    )
    .await?;
    let row = rows
        .first()
        .ok_or_else(|| Problem::not_found(format!("no reservation {id}")))?;
    Ok(consistency.apply(Json(entry(row)).into_response()))
}

/// How every read of one reservation starts: the id from the path, then the read-your-writes
/// wait (the only parameter these reads take).
async fn one_reservation(
    state: &AppState,
    model: ReadModel,
    headers: &HeaderMap,
    reservation_id: &str,
    query: Option<String>,
) -> Result<(Uuid, Consistency), Problem> {
    let id = id_from_path("reservation_id", reservation_id)?;
    let params = Params::parse(query.as_deref(), &["min_position"])?;
    Ok((id, wait_for(state, model, headers, &params).await?))
}

/// One event of a reservation's history.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct TimelineEntry {
    pub position: i64,
    pub event_type: String,
    pub stream: String,
    pub occurred_at: DateTime<Utc>,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    pub summary: String,
    /// Who caused it: the caller's subject and role (absent on events from before callers
    /// were identified).
    pub actor: Option<Actor>,
}

/// Who caused an event.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Actor {
    pub subject: String,
    /// customer, cleaner, admin or service.
    pub role: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Timeline {
    pub reservation_id: Uuid,
    pub events: Vec<TimelineEntry>,
}

/// Every event the reservation caused, in log order, with the request behind each.
#[utoipa::path(get, path = "/reservations/{reservation_id}/timeline", tag = "dashboard",
    params(
        ("reservation_id" = Uuid, Path),
        ("min_position" = Option<i64>, Query, minimum = 0, description = "wait until the read model has applied this position"),
    ),
    responses(
        (status = 200, body = Timeline),
        (status = 400, description = "malformed id", content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles may not read this", content_type = "application/problem+json"),
        (status = 404, description = "no such reservation (or not the caller's)", content_type = "application/problem+json"),
        (status = 422, description = "parameter out of range", content_type = "application/problem+json"),
    ))]
pub async fn timeline(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    Path(reservation_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let only = grant(&principal, Action::ReadTimeline)?.customer_filter();
    let (id, consistency) = one_reservation(
        &state,
        ReadModel::Timeline,
        &headers,
        &reservation_id,
        query,
    )
    .await?;
    let rows = fetch(
        &state.pool,
        "SELECT position, event_type, stream, occurred_at, correlation_id, causation_id, summary,
                actor_subject, actor_role
             FROM timeline t
             WHERE reservation_id = $1
               AND ($2::uuid IS NULL OR EXISTS (
                   SELECT 1 FROM dashboard d WHERE d.reservation_id = $1 AND d.customer_id = $2))
             ORDER BY position",
        &[&id, &only],
    )
    .await?;
    if rows.is_empty() {
        return Err(Problem::not_found(format!("no reservation {id}")));
    }
    let events = rows
        .iter()
        .map(|r| TimelineEntry {
            position: r.get(0),
            event_type: r.get(1),
            stream: r.get(2),
            occurred_at: r.get(3),
            correlation_id: r.get(4),
            causation_id: r.get(5),
            summary: r.get(6),
            actor: match (r.get(7), r.get(8)) {
                (Some(subject), Some(role)) => Some(Actor { subject, role }),
                _ => None,
            },
        })
        .collect();
    let body = Timeline {
        reservation_id: id,
        events,
    };
    Ok(consistency.apply(Json(body).into_response()))
}

impl<T> Page<T> {
    /// What a caller finds where there is nothing for it.
    pub fn empty() -> Page<T> {
        Page {
            items: Vec::new(),
            next: None,
        }
    }

    /// A page from `limit + 1` rows: the extra row only tells that there is a next page.
    pub fn of(
        rows: &[tokio_postgres::Row],
        limit: i64,
        item: impl Fn(&tokio_postgres::Row) -> T,
        position: impl Fn(&tokio_postgres::Row) -> i64,
    ) -> Page<T> {
        let limit = limit as usize;
        let next = if rows.len() > limit {
            rows.get(limit - 1).map(|r| encode_cursor(position(r)))
        } else {
            None
        };
        Page {
            items: rows.iter().take(limit).map(item).collect(),
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    #[test]
    fn the_documented_statuses_are_the_domains() {
        let doc = serde_json::to_value(crate::ApiDoc::openapi()).unwrap();
        let parameters = doc["paths"]["/dashboard"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let status = parameters.iter().find(|p| p["name"] == "status").unwrap();
        assert_eq!(
            status["schema"]["pattern"],
            format!("^({})$", super::STATUSES.join("|"))
        );
    }
}
