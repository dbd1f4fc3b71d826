//! Rebuilding the read models from the whole log, beside the live ones, then switching over in
//! one transaction, so that queries never see a half-built model.
//!
//! 1. A schema of its own (`rebuild_<time>`) gets the read-model tables (the same migrations)
//!    and a projector fills them from the start of the log, while the live projector goes on.
//! 2. The switch: one transaction takes the switch lock exclusively (the live projector's next
//!    batch waits for it), lets the rebuild catch up with the very head of the log, moves the
//!    live tables out to `retired_<time>` and the rebuilt ones into `public`, and sets the
//!    checkpoint to the rebuild's. The live projector then goes on into the new tables;
//!    anything it re-applies is idempotent.
//! 3. The retired tables and the rebuild schema are dropped.

use std::sync::Arc;

use deadpool_postgres::Pool;
use events::KeyStore;

use crate::{BatchSettings, OnPoison, Projector, ProjectorError, DASHBOARD};

/// The tables the projector maintains. Policy state and checkpoints stay where they are.
pub const READ_MODEL_TABLES: [&str; 8] = [
    "dashboard",
    "reservations_by_status",
    "payments",
    "payments_by_day",
    "timeline",
    "messages",
    "paymethods",
    "poison_events",
];

/// How a rebuild went.
#[derive(Debug)]
pub struct Rebuilt {
    /// The log position the rebuilt tables start from.
    pub position: u64,
    /// Events applied, in all.
    pub events: u64,
}

/// Rebuilds every read model. `progress` hears each batch's last position and size.
pub async fn rebuild<K: KeyStore>(
    client: kurrentdb::Client,
    pool: Pool,
    database: tokio_postgres::Config,
    keys: Arc<K>,
    batches: BatchSettings,
    on_poison: OnPoison,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Rebuilt, ProjectorError> {
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
    let schema = format!("rebuild_{stamp}");
    let retired = format!("retired_{stamp}");
    pool.get()
        .await?
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await?;

    // Every connection of the rebuild's pool works in its schema.
    let mut config = database;
    config.options(format!("-c search_path={schema}"));
    let rebuild_pool = read_models::pool(config, 4)?;
    read_models::migrate(&rebuild_pool).await?;
    let projector = Projector {
        client,
        pool: rebuild_pool.clone(),
        keys,
        batches,
        on_poison,
    };
    let applied = std::sync::atomic::AtomicU64::new(0);
    let counting = |position: u64, events: u64| {
        applied.fetch_add(events, std::sync::atomic::Ordering::Relaxed);
        progress(position, events);
    };
    projector.catch_up(&counting).await?;

    // The switch, in one transaction.
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('cleaning-park read-model switch'))",
        &[],
    )
    .await?;
    projector.catch_up(&counting).await?;
    let position = projector.checkpoint().await?.unwrap_or(0);
    let mut moves = format!("CREATE SCHEMA {retired};");
    for table in READ_MODEL_TABLES {
        moves.push_str(&format!(
            "ALTER TABLE public.{table} SET SCHEMA {retired}; ALTER TABLE {schema}.{table} SET SCHEMA public;"
        ));
    }
    tx.batch_execute(&moves).await?;
    tx.execute(
        "INSERT INTO public.checkpoints (projection, commit_position) VALUES ($1, $2)
         ON CONFLICT (projection) DO UPDATE SET commit_position = excluded.commit_position",
        &[&DASHBOARD, &(position as i64)],
    )
    .await?;
    tx.commit().await?;
    drop(rebuild_pool);
    client
        .batch_execute(&format!(
            "DROP SCHEMA {retired} CASCADE; DROP SCHEMA {schema} CASCADE;"
        ))
        .await?;
    Ok(Rebuilt {
        position,
        events: applied.into_inner(),
    })
}
