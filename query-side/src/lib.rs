//! The query side: a REST facade (JSON over HTTP) over the read models. It never reads the
//! event store.
//!
//! Read-your-writes: a command's reply carries the event store position of its write; a query
//! that passes it (`min_position` parameter or `x-min-position` header) waits, up to a bound,
//! until the read model has applied it, and says in `x-read-model-consistent` whether it did.

mod problem;

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use problem::Problem;

/// Largest page a client may ask for.
pub const MAX_PAGE: i64 = 200;
const DEFAULT_PAGE: i64 = 50;

#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    /// How long a read-your-writes query waits at most.
    pub max_wait: Duration,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/dashboard", get(list_dashboard))
        .route("/dashboard/{reservation_id}", get(one_reservation))
        .route("/reservations/{reservation_id}/timeline", get(timeline))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .fallback(|| async { Problem::not_found("no such resource") })
        .layer(tower_http::limit::RequestBodyLimitLayer::new(16 * 1024))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(10),
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// The dashboard page: plain HTML and a little JavaScript that polls the JSON endpoints, so
/// updates arrive without reloading and nothing needs a front-end build.
async fn page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../assets/index.html"))
}

/// One dashboard row: every fact of a reservation. Personal fields are `null` only when erased.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct DashboardEntry {
    pub reservation_id: Uuid,
    pub customer_id: Uuid,
    pub customer_name: Option<String>,
    pub place: Option<String>,
    pub personal_data_erased: bool,
    pub request_date: NaiveDate,
    pub price_cents: i64,
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

#[derive(Debug, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}

const COLUMNS: &str =
    "reservation_id, customer_id, customer_name, place, personal_erased, request_date,
    price_cents, status, cleaner, cancel_reason, payment_id, payment_kind, payment_status,
    last_notification, requested_at, updated_at";

fn entry(row: &tokio_postgres::Row) -> DashboardEntry {
    DashboardEntry {
        reservation_id: row.get(0),
        customer_id: row.get(1),
        customer_name: row.get(2),
        place: row.get(3),
        personal_data_erased: row.get(4),
        request_date: row.get(5),
        price_cents: row.get(6),
        status: row.get(7),
        cleaner: row.get(8),
        cancel_reason: row.get(9),
        payment_id: row.get(10),
        payment_kind: row.get(11),
        payment_status: row.get(12),
        last_notification: row.get(13),
        requested_at: row.get(14),
        updated_at: row.get(15),
    }
}

/// Raw parameters: everything arrives as text so that a bad value gets a 400 naming it.
#[derive(Debug, Deserialize)]
pub struct ListParams {
    status: Option<String>,
    customer_id: Option<String>,
    limit: Option<String>,
    after: Option<String>,
    min_position: Option<String>,
}

const STATUSES: [&str; 4] = [
    "requested",
    "cleaning_started",
    "cleaning_completed",
    "cancelled",
];

async fn list_dashboard(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<ListParams>,
) -> Result<Response, Problem> {
    let limit = match params.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(text) => {
            let n: i64 = text.parse().map_err(|_| {
                Problem::malformed("limit", format!("{text:?} is not a whole number"))
            })?;
            if !(1..=MAX_PAGE).contains(&n) {
                return Err(Problem::out_of_range(
                    "limit",
                    format!("must be between 1 and {MAX_PAGE}"),
                ));
            }
            n
        }
    };
    if let Some(status) = params.status.as_deref() {
        if !STATUSES.contains(&status) {
            return Err(Problem::out_of_range(
                "status",
                format!("must be one of {}", STATUSES.join(", ")),
            ));
        }
    }
    let customer = params
        .customer_id
        .as_deref()
        .map(|c| {
            Uuid::parse_str(c).map_err(|_| Problem::malformed("customer_id", "must be a UUID"))
        })
        .transpose()?;
    let after = params.after.as_deref().map(decode_cursor).transpose()?;
    let consistency = wait_for(&state, &headers, params.min_position.as_deref()).await?;

    // Newest first, keyset-paged on the reservation's place in the log: as fast on page 1,000
    // as on page one, and stable while rows are added.
    let client = state.pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS}, requested_position FROM dashboard
                 WHERE ($1::text IS NULL OR status = $1)
                   AND ($2::uuid IS NULL OR customer_id = $2)
                   AND ($3::bigint IS NULL OR requested_position < $3)
                 ORDER BY requested_position DESC
                 LIMIT $4"
            ),
            &[&params.status, &customer, &after, &(limit + 1)],
        )
        .await?;
    let next = if rows.len() as i64 > limit {
        rows.get(limit as usize - 1)
            .map(|r| encode_cursor(r.get("requested_position")))
    } else {
        None
    };
    let items: Vec<DashboardEntry> = rows.iter().take(limit as usize).map(entry).collect();
    Ok(consistency.apply(Json(Page { items, next }).into_response()))
}

async fn one_reservation(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(reservation_id): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, Problem> {
    let id = reservation_id_from_path(&reservation_id)?;
    let consistency = wait_for(&state, &headers, params.min_position.as_deref()).await?;
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM dashboard WHERE reservation_id = $1"),
            &[&id],
        )
        .await?
        .ok_or_else(|| Problem::not_found(format!("no reservation {id}")))?;
    Ok(consistency.apply(Json(entry(&row)).into_response()))
}

/// One event of a reservation's history.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct TimelineEntry {
    pub position: i64,
    pub event_type: String,
    pub stream: String,
    pub occurred_at: DateTime<Utc>,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    pub summary: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Timeline {
    pub reservation_id: Uuid,
    pub events: Vec<TimelineEntry>,
}

/// Every event the reservation caused, in log order, with the request behind each.
async fn timeline(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(reservation_id): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, Problem> {
    let id = reservation_id_from_path(&reservation_id)?;
    let consistency = wait_for(&state, &headers, params.min_position.as_deref()).await?;
    let client = state.pool.get().await?;
    let rows = client
        .query(
            "SELECT position, event_type, stream, occurred_at, correlation_id, causation_id, summary
             FROM timeline WHERE reservation_id = $1 ORDER BY position",
            &[&id],
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
        })
        .collect();
    let body = Timeline {
        reservation_id: id,
        events,
    };
    Ok(consistency.apply(Json(body).into_response()))
}

fn reservation_id_from_path(text: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(text).map_err(|_| Problem::malformed("reservation_id", "must be a UUID"))
}

async fn ready(State(state): State<AppState>) -> Response {
    match state.pool.get().await {
        Ok(client) => match client.query_one("SELECT 1", &[]).await {
            Ok(_) => "ready".into_response(),
            Err(e) => Problem::from(e).into_response(),
        },
        Err(e) => Problem::from(e).into_response(),
    }
}

/// Cursors are opaque to clients: the log position of the last row of a page.
fn encode_cursor(position: i64) -> String {
    B64.encode(format!("p{position}"))
}

fn decode_cursor(text: &str) -> Result<i64, Problem> {
    let bad = || Problem::malformed("after", "is not a cursor this service gave");
    let raw = B64.decode(text).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    raw.strip_prefix('p')
        .and_then(|p| p.parse().ok())
        .ok_or_else(bad)
}

/// Whether the read model had reached the position the client asked for.
struct Consistency(Option<(bool, i64)>);

impl Consistency {
    fn apply(self, mut response: Response) -> Response {
        if let Some((reached, position)) = self.0 {
            let headers = response.headers_mut();
            headers.insert(
                "x-read-model-consistent",
                HeaderValue::from_static(if reached { "true" } else { "false" }),
            );
            if let Ok(value) = HeaderValue::from_str(&position.to_string()) {
                headers.insert("x-read-model-position", value);
            }
        }
        response
    }
}

/// Waits (bounded) until the dashboard has applied `min_position`.
async fn wait_for(
    state: &AppState,
    headers: &HeaderMap,
    param: Option<&str>,
) -> Result<Consistency, Problem> {
    let text = match (param, headers.get("x-min-position")) {
        (Some(text), _) => text.to_string(),
        (None, Some(header)) => header
            .to_str()
            .map_err(|_| Problem::malformed("x-min-position", "must be a number"))?
            .to_string(),
        (None, None) => return Ok(Consistency(None)),
    };
    let wanted: i64 = text
        .trim()
        .parse()
        .map_err(|_| Problem::malformed("min_position", format!("{text:?} is not a position")))?;
    if wanted < 0 {
        return Err(Problem::out_of_range(
            "min_position",
            "must not be negative",
        ));
    }
    let deadline = tokio::time::Instant::now() + state.max_wait;
    loop {
        let client = state.pool.get().await?;
        let current: i64 = client
            .query_opt(
                "SELECT commit_position FROM checkpoints WHERE projection = 'dashboard'",
                &[],
            )
            .await?
            .map_or(0, |r| r.get(0));
        drop(client);
        if current >= wanted {
            return Ok(Consistency(Some((true, current))));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Consistency(Some((false, current))));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
