//! `projector`: builds the read models in PostgreSQL from the event store.
//!
//! `projector` projects live; `projector rebuild <dashboard|messages|timeline|all>` rebuilds that
//! read model's tables from the whole log beside the live ones and switches over atomically,
//! with a progress bar.
//!
//! Settings (`projector --help`; each flag or its environment variable): `BATCH_MAX_EVENTS`,
//! `BATCH_MAX_WAIT_MS`, `ON_POISON`, `METRICS_LISTEN`; and, read as every service reads them,
//! `EVENT_STORE_URL` (esdb://127.0.0.1:2113?tls=false, or `EVENT_STORE_URL_FILE`),
//! `DATABASE_URL` or the `PG*` variables, `KEY_STORE_URL` (the same database).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use projector::{BatchSettings, OnPoison, Projector, ReadModel};

/// Connections to the read models' database: one applies the batches, one holds the projector
/// lock, and the rest serve checkpoint reads and a rebuild's switch.
const DATABASE_CONNECTIONS: usize = 4;
/// Connections to the key store: keys are looked up once per customer and then remembered.
const KEY_STORE_CONNECTIONS: usize = 2;

#[derive(clap::Parser)]
#[command(about = "Builds the read models in PostgreSQL from the event store")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Events applied in one transaction at most.
    #[arg(long, env = "BATCH_MAX_EVENTS", global = true,
          default_value_t = BatchSettings::default().max_events)]
    batch_max_events: usize,
    /// How long a batch waits for more events once it has one (milliseconds).
    #[arg(long, env = "BATCH_MAX_WAIT_MS", global = true,
          default_value_t = BatchSettings::default().max_wait.as_millis() as u64)]
    batch_max_wait_ms: u64,
    /// What an event that cannot be applied does: `stop` before it, or `park` it and go on.
    #[arg(long, env = "ON_POISON", global = true, default_value = "stop")]
    on_poison: OnPoison,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, env = "METRICS_LISTEN", default_value = "127.0.0.1:9091")]
    metrics_listen: std::net::SocketAddr,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Projects live (the default).
    Run,
    /// Rebuilds a projection's tables from the whole log, then switches over atomically.
    Rebuild {
        /// The read model to rebuild (dashboard, messages, timeline), or all of them.
        #[arg(value_parser = rebuilt_models)]
        projection: Models,
    },
}

/// The read models a rebuild replaces.
#[derive(Clone)]
struct Models(Vec<ReadModel>);

/// `all`, or one read model by its name.
fn rebuilt_models(name: &str) -> Result<Models, String> {
    match name {
        "all" => Ok(Models(ReadModel::ALL.to_vec())),
        name => ReadModel::from_name(name)
            .map(|m| Models(vec![m]))
            .ok_or_else(|| {
                let names: Vec<&str> = ReadModel::ALL.iter().map(|m| m.name()).collect();
                format!("{name:?} is none of {}, all", names.join(", "))
            }),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = lifecycle::init_logging("projector", "info");
    let args = <Args as clap::Parser>::parse();
    let url = lifecycle::secret_from_env("EVENT_STORE_URL", "EVENT_STORE_URL_FILE")
        .map_err(anyhow::Error::msg)?
        .unwrap_or_else(|| "esdb://127.0.0.1:2113?tls=false".into());
    let client = kurrentdb::Client::new(
        url.parse()
            .map_err(|e| anyhow::anyhow!("EVENT_STORE_URL: {e}"))?,
    )
    .map_err(|e| anyhow::anyhow!("event store client: {e}"))?;
    let database = read_models::config_from_env()?;
    let pool = read_models::pool(database.clone(), DATABASE_CONNECTIONS)?;
    read_models::migrate(&pool)
        .await
        .context("cannot migrate the read models")?;
    let batches = BatchSettings {
        max_events: args.batch_max_events,
        max_wait: Duration::from_millis(args.batch_max_wait_ms),
    };
    // The same key store the command side seals with: `KEY_STORE_URL`, else the database above.
    let keys = customer_keys::PostgresKeys::connect(
        customer_keys::config_from_env()?,
        KEY_STORE_CONNECTIONS,
    )
    .await
    .context("cannot reach the key store")?;
    let keys = Arc::new(keys);
    let on_poison = args.on_poison;
    if let Some(Command::Rebuild { projection }) = args.command {
        return rebuild(
            &projection.0,
            client,
            pool,
            database,
            keys,
            batches,
            on_poison,
        )
        .await;
    }
    let projector = Projector {
        client,
        pool,
        keys,
        batches,
        on_poison,
    };
    lifecycle::serve_operations(&args.metrics_listen.to_string()).await?;
    tracing::info!(event_store = %lifecycle::without_credentials(&url), checkpoint = ?projector.checkpoint().await?, "projecting the dashboard");
    // The event store or PostgreSQL going away is waited out (not ready meanwhile), and
    // projecting resumes from the checkpoint; a poison event still stops it, as configured.
    let stop = lifecycle::stop_on_signal();
    lifecycle::keep_running(
        projector::READINESS,
        &stop,
        |e| !matches!(e, projector::ProjectorError::Poison { .. }),
        || {
            // Each attempt after a failure gets a new event store client: the official client
            // gives up for good when a connection attempt fails (its first connection, if the
            // store is away then), and answers every later call with "Connection is closed".
            let attempt = Projector {
                client: kurrentdb::Client::new(projector.client.settings().clone())
                    .unwrap_or_else(|_| projector.client.clone()),
                pool: projector.pool.clone(),
                keys: projector.keys.clone(),
                ..projector
            };
            let stop = &stop;
            async move { attempt.run(stop.requested()).await }
        },
    )
    .await?;
    tracing::info!("projector stopped");
    Ok(())
}

/// `projector rebuild`: the rebuild with a progress bar (positions of the log, events/s, ETA).
async fn rebuild(
    models: &[ReadModel],
    client: kurrentdb::Client,
    pool: deadpool_postgres::Pool,
    database: tokio_postgres::Config,
    keys: Arc<customer_keys::PostgresKeys>,
    batches: BatchSettings,
    on_poison: OnPoison,
) -> anyhow::Result<()> {
    let head = head_of_log(&client).await?;
    let bar = indicatif::ProgressBar::new(head);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} log positions, {msg}, ETA {eta}",
        )?
        .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let events = std::sync::atomic::AtomicU64::new(0);
    let progress = |position: u64, batch: u64| {
        let total = events.fetch_add(batch, std::sync::atomic::Ordering::Relaxed) + batch;
        let rate = total as f64 / started.elapsed().as_secs_f64().max(0.001);
        if position > bar.length().unwrap_or(0) {
            bar.set_length(position);
        }
        bar.set_position(position);
        bar.set_message(format!("{total} events, {rate:.0} events/s"));
    };
    let rebuilt = projector::rebuild::rebuild(
        models, client, pool, database, keys, batches, on_poison, &progress,
    )
    .await?;
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "Rebuilt {}: {} events in {seconds:.1} s ({:.0} events/s); now at log position {}.",
        models
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", "),
        rebuilt.events,
        rebuilt.events as f64 / seconds.max(0.001),
        rebuilt.position
    );
    Ok(())
}

/// The position of the last event in the log (0 when it is empty).
async fn head_of_log(client: &kurrentdb::Client) -> anyhow::Result<u64> {
    let options = kurrentdb::ReadAllOptions::default()
        .position(kurrentdb::StreamPosition::End)
        .backwards()
        .max_count(1);
    let mut read = client
        .read_all(&options)
        .await
        .map_err(|e| anyhow::anyhow!("event store: {e}"))?;
    Ok(match read.next().await {
        Ok(Some(event)) => event.get_original_event().position.commit,
        Ok(None) => 0,
        Err(e) => anyhow::bail!("event store: {e}"),
    })
}
