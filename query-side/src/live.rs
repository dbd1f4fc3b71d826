//! `GET /dashboard/changes`: the dashboard as it changes, pushed to open pages as Server-Sent
//! Events; and `GET /summary`, the business at a glance.
//!
//! The projector sends a notice (PostgreSQL `NOTIFY`, see [`read_models::changes`]) with each
//! batch it commits. One task here listens and fans the notices out to every open stream. A
//! stream then reads the rows changed since the position it has sent, as its caller may see
//! them, sends each, and then that position as the event id. A client that reconnects sends the
//! id back (`Last-Event-ID`) and gets every row changed meanwhile: nothing is lost, because each
//! row carries the position of the last event applied to it.
//!
//! Events: `reservation` (a [`DashboardEntry`]), `summary` (a [`Summary`], to those who may
//! read it), `position` (the stream is complete up to this position; also the event id), and
//! `expired` (the token ran out: sign in again and reconnect).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use access::{Action, Principal};
use axum::extract::{Extension, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::NaiveDate;
use read_models::changes::Changed;
use read_models::ReadModel;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch, Semaphore};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{customer_filter, grant};
use crate::consistency::read_position;
use crate::dashboard::{entry_from, COLUMNS};
use crate::params::Params;
use crate::{fetch, AppState, Problem};

/// Open streams at most by default (`MAX_LIVE_STREAMS`); more are refused with 503.
pub const DEFAULT_MAX_STREAMS: usize = 1_000;

/// Rows sent per read; a stream with more to send reads again at once.
const ROWS_PER_READ: i64 = 500;

/// How often a stream checks that its token is still good, and sends a comment to keep
/// proxies from closing an idle connection.
const RECHECK: Duration = Duration::from_secs(15);

/// Notices kept for a stream that is slow to read them; past that it reads everything
/// changed since its position instead, which is correct, only slower.
const NOTICES_BUFFERED: usize = 256;

/// A batch the projector committed, as the listener saw it.
#[derive(Debug, Clone)]
struct Notice {
    /// The position of the notice before, when the listener saw it: rows changed after that
    /// position are then exactly the ones `changed` names.
    after: Option<i64>,
    changed: Changed,
}

/// The notices, fanned out to every open stream.
#[derive(Clone)]
pub struct Live {
    notices: broadcast::Sender<Notice>,
    /// Whether the listener is following the projector (a stream refuses to start otherwise).
    following: watch::Receiver<bool>,
    streams: Arc<Semaphore>,
    /// Set when the server stops: open streams end, so that the connections can close.
    stopping: watch::Sender<bool>,
}

impl Live {
    /// Not following anything: streams are refused with 503 until [`Live::follow`].
    pub fn idle() -> Live {
        let (_, following) = watch::channel(false);
        Live {
            notices: broadcast::channel(NOTICES_BUFFERED).0,
            following,
            streams: Arc::new(Semaphore::new(DEFAULT_MAX_STREAMS)),
            stopping: watch::channel(false).0,
        }
    }

    /// Follows the projector's notices on the database `config` names (a connection of its
    /// own; TLS as for the pool, with `TLS_CA_FILE`), reconnecting after a failure.
    pub fn follow(mut self, config: tokio_postgres::Config) -> Live {
        let (ready, following) = watch::channel(false);
        self.following = following;
        let notices = self.notices.clone();
        let ca_file = std::env::var_os("TLS_CA_FILE")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from);
        // Following ends with the server (`stop`), not with its database going first.
        let mut stopping = self.stopping.subscribe();
        let following = async move {
            let mut pause = Duration::from_millis(100);
            loop {
                let (tx, mut rx) = mpsc::channel(NOTICES_BUFFERED);
                let listening = read_models::changes::listen(&config, ca_file.as_deref(), tx);
                let forwarding = async {
                    let mut last = None;
                    while let Some(changed) = rx.recv().await {
                        let notice = Notice {
                            after: last,
                            changed,
                        };
                        last = Some(notice.changed.position);
                        // No stream open is fine.
                        let _ = notices.send(notice);
                    }
                };
                // Listening before the first notice is not known to have worked; a stream
                // opened meanwhile reads everything since its position at its first notice.
                let _ = ready.send(true);
                let (result, ()) = tokio::join!(listening, forwarding);
                let _ = ready.send(false);
                match result {
                    Ok(()) => pause = Duration::from_millis(100),
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?pause, "cannot hear the projector's notices");
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                }
                // Notices may have been missed: every open stream reads all it has not sent.
                let _ = notices.send(Notice {
                    after: None,
                    changed: Changed::new(0, None),
                });
                tokio::time::sleep(pause).await;
            }
        };
        tokio::spawn(async move {
            tokio::select! {
                () = following => {}
                _ = stopping.wait_for(|stop| *stop) => {}
            }
        });
        self
    }

    /// At most `limit` open streams.
    pub fn with_stream_limit(mut self, limit: usize) -> Live {
        self.streams = Arc::new(Semaphore::new(limit.max(1)));
        self
    }

    /// Ends every open stream (the server is stopping).
    pub fn stop(&self) {
        let _ = self.stopping.send(true);
    }
}

/// The business at a glance.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Summary {
    /// Reservations by their current status (every status, zero included).
    pub reservations_by_status: Vec<StatusCount>,
    /// Payments approved and refunded per day (UTC), the last 14 days with any, oldest first.
    pub payments_by_day: Vec<DayOfPayments>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct StatusCount {
    pub status: String,
    pub reservations: i64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct DayOfPayments {
    pub day: NaiveDate,
    pub approved: i64,
    pub approved_cents: i64,
    pub refunded: i64,
    pub refunded_cents: i64,
}

async fn read_summary(state: &AppState) -> Result<Summary, Problem> {
    let counts = fetch(
        &state.pool,
        "SELECT status, reservations FROM reservations_by_status",
        &[],
    )
    .await?;
    let reservations_by_status = crate::dashboard::STATUSES
        .iter()
        .map(|status| StatusCount {
            status: status.to_string(),
            reservations: counts
                .iter()
                .find(|r| r.get::<_, &str>(0) == *status)
                .map_or(0, |r| r.get(1)),
        })
        .collect();
    let days = fetch(
        &state.pool,
        "SELECT day, approved, approved_cents, refunded, refunded_cents
             FROM (SELECT * FROM payments_by_day ORDER BY day DESC LIMIT 14) recent
             ORDER BY day",
        &[],
    )
    .await?;
    let payments_by_day = days
        .iter()
        .map(|r| DayOfPayments {
            day: r.get(0),
            approved: r.get(1),
            approved_cents: r.get(2),
            refunded: r.get(3),
            refunded_cents: r.get(4),
        })
        .collect();
    Ok(Summary {
        reservations_by_status,
        payments_by_day,
    })
}

/// Reservations by status, and payments and refunds per day: for the company.
#[utoipa::path(get, path = "/summary", tag = "dashboard",
    responses(
        (status = 200, body = Summary),
        (status = 401, description = "no valid bearer token", content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles may not read the summary", content_type = "application/problem+json"),
    ))]
pub async fn summary(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Summary>, Problem> {
    grant(&principal, Action::ReadSummary)?;
    Ok(Json(read_summary(&state).await?))
}

/// The dashboard rows as they change, as Server-Sent Events (see the module's documentation).
#[utoipa::path(get, path = "/dashboard/changes", tag = "dashboard",
    params(
        ("since" = Option<i64>, Query, minimum = 0, description = "send every row changed after this position first (as `Last-Event-ID` does); without either, only what changes from now"),
        ("Last-Event-ID" = Option<i64>, Header, description = "the last `position` event's id received: resume after it"),
    ),
    responses(
        (status = 200, description = "events: reservation, summary, position, expired", content_type = "text/event-stream"),
        (status = 400, description = "malformed position", content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles may not read the dashboard", content_type = "application/problem+json"),
        (status = 503, description = "too many open streams, or the projector's notices cannot be heard", content_type = "application/problem+json"),
    ))]
pub async fn changes(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let grant = grant(&principal, Action::ReadDashboard)?;
    let customer = customer_filter(&grant, None).flatten();
    let with_summary = principal.may(Action::ReadSummary).is_ok();
    let params = Params::parse(query.as_deref(), &["since"])?;
    let since = match (params.text("since"), headers.get("last-event-id")) {
        (Some(text), _) => Some(position("since", text)?),
        (None, Some(header)) => Some(position(
            "Last-Event-ID",
            header
                .to_str()
                .map_err(|_| Problem::malformed("Last-Event-ID", "must be a position"))?,
        )?),
        (None, None) => None,
    };
    let live = &state.live;
    if !*live.following.borrow() {
        return Err(Problem::unavailable(
            "live changes are not available at the moment; try again later",
        ));
    }
    let Ok(permit) = live.streams.clone().try_acquire_owned() else {
        metrics::counter!("http_requests_shed_total").increment(1);
        return Err(Problem::unavailable(
            "too many open streams; try again later",
        ));
    };
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // Subscribed before the first read: no notice falls between the two.
    let notices = live.notices.subscribe();
    let stopping = live.stopping.subscribe();
    let (tx, rx) = mpsc::channel(64);
    let stream = Stream {
        state: state.clone(),
        customer,
        with_summary,
        authorization,
        tx,
    };
    tokio::spawn(async move {
        let _permit = permit;
        metrics::gauge!("live_streams_open").increment(1.0);
        stream.run(since, notices, stopping).await;
        metrics::gauge!("live_streams_open").decrement(1.0);
    });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(RECHECK))
        .into_response())
}

fn position(name: &'static str, text: &str) -> Result<i64, Problem> {
    let value: i64 = text
        .trim()
        .parse()
        .map_err(|_| Problem::malformed(name, format!("{text:?} is not a position")))?;
    if value < 0 {
        return Err(Problem::out_of_range(name, "must not be negative"));
    }
    Ok(value)
}

/// One open stream.
struct Stream {
    state: AppState,
    /// The caller's own customer id when it may see only its own rows.
    customer: Option<Uuid>,
    with_summary: bool,
    /// Checked again now and then: the stream ends when the token does.
    authorization: String,
    tx: mpsc::Sender<Event>,
}

/// Why a stream stops.
enum Stop {
    /// The client went away, or the server is stopping.
    Closed,
    /// The database did not answer (the client reconnects and resumes).
    Failed(String),
}

impl From<Problem> for Stop {
    fn from(problem: Problem) -> Stop {
        Stop::Failed(format!("{problem:?}"))
    }
}

impl Stream {
    async fn run(
        self,
        since: Option<i64>,
        mut notices: broadcast::Receiver<Notice>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let result: Result<(), Stop> = async {
            // Where the stream stands: everything changed up to here has been sent.
            let mut sent = match since {
                Some(since) => self.send_changes(since, None).await?,
                None => read_position(&self.state, ReadModel::Dashboard).await?,
            };
            self.send_summary().await?;
            self.send_position(sent).await?;
            let mut recheck = tokio::time::interval(RECHECK);
            recheck.reset();
            loop {
                let notice = tokio::select! {
                    _ = self.tx.closed() => return Err(Stop::Closed),
                    _ = stopping.changed() => return Err(Stop::Closed),
                    _ = recheck.tick() => {
                        if self.state.verifier.verify_header(Some(&self.authorization)).await.is_err() {
                            let _ = self.tx.send(Event::default().event("expired").data("sign in again")).await;
                            return Err(Stop::Closed);
                        }
                        continue;
                    }
                    notice = notices.recv() => match notice {
                        Ok(notice) => notice,
                        // Too slow to keep up: read everything since instead.
                        Err(broadcast::error::RecvError::Lagged(_)) => Notice {
                            after: None,
                            changed: Changed::new(0, None),
                        },
                        Err(broadcast::error::RecvError::Closed) => return Err(Stop::Closed),
                    },
                };
                if notice.after.is_some() && notice.changed.position <= sent {
                    // Already covered by what this stream read.
                    continue;
                }
                // The notice names every row changed since `sent` only when it directly
                // follows the position this stream stands at.
                let named = match notice.changed.reservations {
                    Some(ids) if notice.after == Some(sent) => {
                        Some((ids, notice.changed.position))
                    }
                    _ => None,
                };
                let reached = self.send_changes(sent, named).await?;
                if reached != sent {
                    sent = reached;
                    self.send_summary().await?;
                    self.send_position(sent).await?;
                }
            }
        }
        .await;
        if let Err(Stop::Failed(why)) = result {
            tracing::warn!(reason = %why, "a live stream stopped");
        }
    }

    /// Sends the rows changed after `since` up to the dashboard's checkpoint, read in one
    /// snapshot with them, and returns that checkpoint. With `named`, only those rows, changed
    /// up to the position the notice names (later changes are other notices'), and returns it.
    async fn send_changes(&self, since: i64, named: Option<(Vec<Uuid>, i64)>) -> Result<i64, Stop> {
        let (named, until) = match named {
            Some((ids, until)) => (Some(ids), until),
            None => (None, i64::MAX),
        };
        // Rows are read in (position, id) order, so that many rows at one position (a
        // forgotten customer's) page correctly.
        // Everything at `since` itself has been sent: start past its greatest id.
        let mut after = (since, Uuid::from_u128(u128::MAX));
        loop {
            let rows = fetch(
                &self.state.pool,
                &format!(
                    "SELECT c.commit_position, d.* FROM
                         (SELECT commit_position FROM checkpoints WHERE projection = $7) c
                     LEFT JOIN LATERAL (
                         SELECT {COLUMNS}, last_position FROM dashboard
                         WHERE (last_position, reservation_id) > ($1, $2)
                           AND last_position <= least(c.commit_position, $6)
                           AND ($3::uuid IS NULL OR customer_id = $3)
                           AND ($4::uuid[] IS NULL OR reservation_id = ANY($4))
                         ORDER BY last_position, reservation_id
                         LIMIT $5) d ON true"
                ),
                &[
                    &after.0,
                    &after.1,
                    &self.customer,
                    &named,
                    &ROWS_PER_READ,
                    &until,
                    &ReadModel::Dashboard.name(),
                ],
            )
            .await
            .map_err(Stop::from)?;
            let Some(first) = rows.first() else {
                // No checkpoint yet: nothing projected.
                return Ok(since);
            };
            let checkpoint = first.get::<_, i64>(0).min(until);
            let mut count = 0;
            for row in &rows {
                let Some(id) = row.get::<_, Option<Uuid>>(1) else {
                    break; // the LEFT JOIN found no row
                };
                let item = entry_from(row, 1);
                after = (row.get("last_position"), id);
                let event = Event::default()
                    .event("reservation")
                    .json_data(&item)
                    .map_err(|e| Stop::Failed(e.to_string()))?;
                self.send(event).await?;
                count += 1;
            }
            if count < ROWS_PER_READ {
                return Ok(checkpoint.max(since));
            }
        }
    }

    async fn send_summary(&self) -> Result<(), Stop> {
        if !self.with_summary {
            return Ok(());
        }
        let summary = read_summary(&self.state).await.map_err(Stop::from)?;
        let event = Event::default()
            .event("summary")
            .json_data(&summary)
            .map_err(|e| Stop::Failed(e.to_string()))?;
        self.send(event).await
    }

    async fn send_position(&self, position: i64) -> Result<(), Stop> {
        let text = position.to_string();
        self.send(Event::default().event("position").id(&text).data(text))
            .await
    }

    async fn send(&self, event: Event) -> Result<(), Stop> {
        self.tx.send(event).await.map_err(|_| Stop::Closed)
    }
}
