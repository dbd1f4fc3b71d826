//! Read-your-writes: a command's reply carries the event store position of its write; a query
//! that passes it (`min_position` parameter or `x-min-position` header) waits, up to a bound,
//! until the read models have applied it, and says in `x-read-model-consistent` whether they had.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;

use read_models::ReadModel;

use crate::params::Params;
use crate::{AppState, Problem};

/// Whether the read models had reached the position the client asked for.
pub struct Consistency(Option<(bool, i64)>);

impl Consistency {
    pub fn apply(self, mut response: Response) -> Response {
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

/// Waits (bounded) until `model`, the read model the query reads, has applied the position
/// asked for.
pub async fn wait_for(
    state: &AppState,
    model: ReadModel,
    headers: &HeaderMap,
    params: &Params,
) -> Result<Consistency, Problem> {
    let text = match (params.text("min_position"), headers.get("x-min-position")) {
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
        let current = read_position(state, model).await?;
        if current >= wanted {
            return Ok(Consistency(Some((true, current))));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Consistency(Some((false, current))));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The log position `model` has applied (0 before its first batch).
pub async fn read_position(state: &AppState, model: ReadModel) -> Result<i64, Problem> {
    Ok(crate::fetch(
        &state.pool,
        "SELECT commit_position FROM checkpoints WHERE projection = $1",
        &[&model.name()],
    )
    .await?
    .first()
    .map_or(0, |r| r.get(0)))
}
