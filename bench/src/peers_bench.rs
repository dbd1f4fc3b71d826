//! The embedded event store beside what a user would pick instead, in the same run on the same
//! machine: UmaDB (the Rust event store on crates.io, its release server driven by its own Rust
//! client) and PostgreSQL used as an event store the way postgres-es and Marten use it (one
//! table, `unique (stream, version)`, the conflict on that key as the optimistic-concurrency
//! check).
//!
//! All get the same workload: single-event conditional appends (the stream's current version
//! as the expected one; for UmaDB, nothing newer in the appender's boundary than its last
//! event), one stream per appender, the same JSON payload, durable commits (PostgreSQL under
//! `pg_virtualenv -o fsync=on`, `synchronous_commit` on; the store and UmaDB fsync every
//! commit), one connection per appender for PostgreSQL (a pool as large as the load) and one
//! shared client for the store and for UmaDB (both multiplex over HTTP/2). Each run measures
//! all three, one after the other, on fresh data.
//!
//! Then the command path: `ApplyReservation` through the command side (with the payment
//! service and the event store, as `bench commands` runs it) against the same flow written on
//! cqrs-es with postgres-es (`bench/peers/cqrs-es-peer`), the same load generator, alternated
//! run by run. UmaDB, its driver and the cqrs-es peer are installed by `bench/peers/install`
//! into `target/peers`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kurrentdb::{AppendToStreamOptions, Client, EventData, StreamState};

use crate::event_store_bench::payload_json as payload;
use crate::stats::{median, ms, percentile};

#[derive(clap::Args)]
pub struct Options {
    /// Seconds each measurement lasts.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

pub fn run(options: Options, runs: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let length = Duration::from_secs(options.seconds);
        println!(
            "event store against UmaDB and PostgreSQL as an event store: conditional single-event appends, \
             median of {runs} runs, {} s each, durable",
            options.seconds
        );
        // Say what PostgreSQL's durability was, rather than assume it.
        let settings = read_models::pool(read_models::config_from_env()?, 1)?;
        let client = settings.get().await?;
        let mut durability = Vec::new();
        for name in ["fsync", "synchronous_commit", "wal_sync_method"] {
            let row = client.query_one(&format!("SHOW {name}"), &[]).await?;
            durability.push(format!("{name}={}", row.get::<_, String>(0)));
        }
        println!("PostgreSQL: {}", durability.join(", "));
        let umadb = peer(&["bin", "umadb"])?;
        let driver = peer(&["release", "umadb-load"])?;
        let cqrs_es = peer(&["release", "cqrs-es-peer"])?;
        let command_side = crate::processes::beside("command-side")?;
        println!(
            "| appenders | embedded store | UmaDB | PostgreSQL | store / UmaDB | store / PostgreSQL | \
             store p99 | UmaDB p99 | PostgreSQL p99 |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for appenders in [1usize, 16, 64] {
            let (mut ours, mut uma, mut pg) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..runs {
                ours.push(embedded_store(appenders, length).await?);
                uma.push(umadb_peer(&umadb, &driver, appenders, length).await?);
                pg.push(postgres(appenders, length).await?);
            }
            let (ours, uma, pg) = (Runs::of(&ours), Runs::of(&uma), Runs::of(&pg));
            println!(
                "| {appenders} | {} | {} | {} | {:.2}x | {:.2}x | {:.2} ms | {:.2} ms | {:.2} ms |",
                ours.cell("events/s"),
                uma.cell("events/s"),
                pg.cell("events/s"),
                ours.rate() / uma.rate(),
                ours.rate() / pg.rate(),
                ours.p99(),
                uma.p99(),
                pg.p99(),
            );
        }
        println!();
        println!(
            "ApplyReservation: the command side (with the payment service and the event store) \
             against cqrs-es + postgres-es, the same load generator"
        );
        println!(
            "| clients | command side | cqrs-es + postgres-es | ratio | command side p99 | peer p99 |"
        );
        println!("| --- | --- | --- | --- | --- | --- |");
        for clients in [1usize, 16, 64] {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                ours.push(
                    crate::commands_bench::measure(&command_side, clients, options.seconds, 0)
                        .await?,
                );
                theirs.push(
                    crate::commands_bench::measure_cqrs_es_peer(&cqrs_es, clients, options.seconds)
                        .await?,
                );
            }
            // (commands/s, p50, p99) -> (commands/s, p99)
            let rate_and_p99 = |r: &[(f64, f64, f64)]| r.iter().map(|x| (x.0, x.2)).collect::<Vec<_>>();
            let ours = Runs::of(&rate_and_p99(&ours));
            let theirs = Runs::of(&rate_and_p99(&theirs));
            println!(
                "| {clients} | {} | {} | {:.2}x | {:.2} ms | {:.2} ms |",
                ours.cell("commands/s"),
                theirs.cell("commands/s"),
                ours.rate() / theirs.rate(),
                ours.p99(),
                theirs.p99(),
            );
        }
        Ok(())
    })
}

/// The release `event-store` on a fresh directory: events/s and p99 ms.
async fn embedded_store(appenders: usize, length: Duration) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir_in(".")?;
    let (_process, port, _) = crate::processes::start_event_store(dir.path())?;
    let client = Client::new(format!("esdb://127.0.0.1:{port}?tls=false").parse()?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Warm up: a connection, and one stream written.
    client
        .append_to_stream(
            "warm-up",
            &AppendToStreamOptions::default(),
            EventData::json("BenchEvent", &payload(0))?,
        )
        .await?;
    let deadline = Instant::now() + length;
    let mut tasks = Vec::new();
    for a in 0..appenders {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let expected = match n {
                    0 => StreamState::NoStream,
                    n => StreamState::StreamRevision(n - 1),
                };
                let event = EventData::json("BenchEvent", &payload(n)).expect("json");
                let started = Instant::now();
                client
                    .append_to_stream(
                        format!("bench-{a}"),
                        &AppendToStreamOptions::default().stream_state(expected),
                        event,
                    )
                    .await?;
                latencies.push(started.elapsed());
                n += 1;
            }
            Ok::<_, kurrentdb::Error>(latencies)
        }));
    }
    collect(tasks, Instant::now()).await
}

/// One system's runs of one measurement: each run's rate and p99 (ms).
struct Runs(Vec<(f64, f64)>);

impl Runs {
    fn of(runs: &[(f64, f64)]) -> Runs {
        Runs(runs.to_vec())
    }

    fn rate(&self) -> f64 {
        median(&mut self.0.iter().map(|r| r.0).collect::<Vec<_>>())
    }

    fn p99(&self) -> f64 {
        median(&mut self.0.iter().map(|r| r.1).collect::<Vec<_>>())
    }

    /// The median rate with every run's, as the table shows them.
    fn cell(&self, unit: &str) -> String {
        let runs: Vec<String> = self.0.iter().map(|r| format!("{:.0}", r.0)).collect();
        format!("{:.0} {unit} ({})", self.rate(), runs.join(", "))
    }
}

/// A peer's binary in `target/peers` (`bench/peers/install` puts them there).
fn peer(path: &[&str]) -> anyhow::Result<PathBuf> {
    // target/release/bench -> target/peers
    let exe = std::env::current_exe()?;
    let mut binary = exe
        .parent()
        .and_then(|release| release.parent())
        .ok_or_else(|| anyhow::anyhow!("cannot place target/peers beside {}", exe.display()))?
        .join("peers");
    binary.extend(path);
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: run bench/peers/install",
        binary.display()
    );
    Ok(binary)
}

/// UmaDB on a fresh database, loaded by its driver: events/s and p99 ms.
async fn umadb_peer(
    umadb: &std::path::Path,
    driver: &std::path::Path,
    appenders: usize,
    length: Duration,
) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir_in(".")?;
    let port = crate::processes::free_port()?;
    let address = format!("127.0.0.1:{port}");
    let db_path = dir.path().join("uma.db").to_string_lossy().to_string();
    let _server =
        crate::processes::start_peer(umadb, &["--listen", &address, "--db-path", &db_path], port)?;
    let output = tokio::process::Command::new(driver)
        .args([
            format!("http://{address}"),
            appenders.to_string(),
            length.as_secs().to_string(),
        ])
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "umadb-load failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout)?;
    let mut figures = printed.split_whitespace().map(str::parse::<f64>);
    match (figures.next(), figures.next()) {
        (Some(Ok(rate)), Some(Ok(p99))) => Ok((rate, p99)),
        _ => anyhow::bail!("umadb-load printed {printed:?}, not `<events/s> <p99 ms>`"),
    }
}

/// PostgreSQL as postgres-es and Marten use it: events/s and p99 ms.
async fn postgres(appenders: usize, length: Duration) -> anyhow::Result<(f64, f64)> {
    let config = read_models::config_from_env()?;
    let pool = read_models::pool(config, appenders)?;
    {
        let client = pool.get().await?;
        client
            .batch_execute(
                "DROP TABLE IF EXISTS peer_events;
                 CREATE TABLE peer_events (
                     position bigserial PRIMARY KEY,
                     stream text NOT NULL,
                     version bigint NOT NULL,
                     event_type text NOT NULL,
                     payload jsonb NOT NULL,
                     metadata jsonb NOT NULL,
                     created_at timestamptz NOT NULL DEFAULT now(),
                     UNIQUE (stream, version)
                 );",
            )
            .await?;
    }
    // Warm up: every connection open, the statement prepared on each.
    let mut warm = Vec::new();
    for _ in 0..appenders {
        warm.push(pool.get().await?);
    }
    drop(warm);
    let insert = "INSERT INTO peer_events (stream, version, event_type, payload, metadata)
                  VALUES ($1, $2, 'BenchEvent', $3, '{}')";
    let deadline = Instant::now() + length;
    let mut tasks = Vec::new();
    for a in 0..appenders {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let client = pool.get().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let statement = client.prepare_cached(insert).await?;
            let stream = format!("bench-{a}");
            let mut latencies = Vec::new();
            let mut n = 0i64;
            while Instant::now() < deadline {
                let started = Instant::now();
                // The next version: a writer that lost a race would meet the unique key.
                client
                    .execute(&statement, &[&stream, &n, &payload(n as u64)])
                    .await?;
                latencies.push(started.elapsed());
                n += 1;
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let result = collect(tasks, Instant::now()).await;
    pool.get()
        .await?
        .batch_execute("DROP TABLE peer_events")
        .await?;
    result
}

/// Waits for every appender; events/s over the measured time and p99 in ms.
async fn collect<E: Into<anyhow::Error>>(
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<Duration>, E>>>,
    started: Instant,
) -> anyhow::Result<(f64, f64)> {
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?.map_err(Into::into)?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    Ok((
        latencies.len() as f64 / elapsed,
        ms(percentile(&latencies, 99.0)),
    ))
}
