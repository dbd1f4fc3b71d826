//! Rebuilding read models from the whole log, beside the live ones, then switching over in
//! one transaction, so that queries never see a half-built model. One model or all of them.
//!
//! 1. A schema of its own (`rebuild_<time>`) gets the read-model tables (the same migrations)
//!    and a projector fills the rebuilt models' from the start of the log, while the live
//!    projector goes on.
//! 2. The switch: one transaction takes the switch lock exclusively (the live projector's next
//!    batch waits for it), lets the rebuild catch up with the very head of the log, moves the
//!    rebuilt models' live tables out to `retired_<time>` and the rebuilt ones into `public`,
//!    and sets those models' checkpoints to the rebuild's. The live projector then goes on
//!    into the new tables (reading its checkpoints afresh on its next start; until then what
//!    it re-applies is idempotent).
//! 3. The retired tables and the rebuild schema are dropped.

use std::sync::Arc;

use deadpool_postgres::Pool;
use events::KeyStore;

use crate::{BatchSettings, OnPoison, Projector, ProjectorError, ReadModel};

/// The projector's own table besides the read models': replaced when every model is rebuilt.
/// Policy state and checkpoints stay where they are.
pub const POISON_EVENTS: &str = "poison_events";

/// Every table the projector writes.
pub fn all_tables() -> Vec<&'static str> {
    let models = ReadModel::ALL.iter().flat_map(|m| m.tables()).copied();
    models.chain([POISON_EVENTS]).collect()
}

/// How a rebuild went.
#[derive(Debug)]
pub struct Rebuilt {
    /// The log position the rebuilt tables start from.
    pub position: u64,
    /// Events applied, in all.
    pub events: u64,
}

/// Rebuilds `models`. `progress` hears each batch's last position and size.
#[allow(clippy::too_many_arguments)]
pub async fn rebuild<K: KeyStore>(
    models: &[ReadModel],
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
    projector.catch_up(models, &counting).await?;

    // The switch, in one transaction.
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('cleaning-park read-model switch'))",
        &[],
    )
    .await?;
    projector.catch_up(models, &counting).await?;
    let mut tables: Vec<&str> = models.iter().flat_map(|m| m.tables()).copied().collect();
    if models.len() == ReadModel::ALL.len() {
        tables.push(POISON_EVENTS);
    }
    let mut moves = format!("CREATE SCHEMA {retired};");
    for table in tables {
        moves.push_str(&format!(
            "ALTER TABLE public.{table} SET SCHEMA {retired}; ALTER TABLE {schema}.{table} SET SCHEMA public;"
        ));
    }
    tx.batch_execute(&moves).await?;
    let mut position = 0;
    for model in models {
        let at = projector.checkpoint_of(*model).await?.unwrap_or(0);
        position = position.max(at);
        tx.execute(
            "INSERT INTO public.checkpoints (projection, commit_position) VALUES ($1, $2)
             ON CONFLICT (projection) DO UPDATE SET commit_position = excluded.commit_position",
            &[&model.name(), &(at as i64)],
        )
        .await?;
    }
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
