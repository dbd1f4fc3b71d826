//! The projector: rebuild throughput (events/s into PostgreSQL) over a log seeded with a million
//! events, and the live lag from an acknowledged command to the read-model checkpoint covering
//! it, under a steady command load.
//!
//! The log: per reservation, `PaymentApproved` in its payment stream, and `CleaningRequested`
//! (personal data sealed with one of 10,000 customers' keys), `CleaningStarted` and
//! `CleaningCompleted` in its reservation stream: four events, two appends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api_contract::reservation_service_client::ReservationServiceClient;
use customer_keys::PostgresKeys;
use domain::payment::PaymentEvent;
use domain::reservation::{CleaningRequested, ReservationEvent};
use domain::{CustomerId, Money, PaymentId, PaymethodKind, Personal, ReservationId};
use events::{Event, KeyStore, Metadata};
use kurrentdb::{AppendToStreamOptions, EventData, StreamState};
use projector::{BatchSettings, Projector};
use tonic::transport::Channel;

use crate::processes::{free_port, start, start_event_store};
use crate::stats::{median, ms, percentile};

#[derive(clap::Args)]
pub struct Options {
    /// Events in the seeded log (four per reservation).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Commands per second during the lag measurement.
    #[arg(long, default_value_t = 300)]
    rate: u64,
    /// Seconds the lag measurement lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

const CUSTOMERS: usize = 10_000;

pub fn run(options: Options, runs: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let dir = tempfile::tempdir_in(".")?;
        let (_store, store_port, _) = start_event_store(dir.path())?;
        let url = format!("esdb://127.0.0.1:{store_port}?tls=false");
        let client = kurrentdb::Client::new(url.parse()?)
            .map_err(|e| anyhow::anyhow!("event store client: {e}"))?;
        let keys_pool = database("bench_projector_keys").await?;
        let keys = Arc::new(PostgresKeys::with_pool(keys_pool).await?);

        let started = Instant::now();
        let seeded = seed(&client, &keys, options.events).await?;
        println!(
            "seeded {seeded} events in {:.1} s ({:.0} events/s)",
            started.elapsed().as_secs_f64(),
            seeded as f64 / started.elapsed().as_secs_f64()
        );

        let (mut rates, mut ratios) = (Vec::new(), Vec::new());
        for run in 0..runs {
            let name = format!("bench_projector_{run}");
            let pool = database(&name).await?;
            let projector = Projector {
                client: client.clone(),
                pool,
                keys: keys.clone(),
                batches: BatchSettings::default(),
                on_poison: Default::default(),
            };
            let started = Instant::now();
            let applied = std::sync::atomic::AtomicU64::new(0);
            projector
                .catch_up(&projector::ReadModel::ALL, &|_, events| {
                    applied.fetch_add(events, std::sync::atomic::Ordering::Relaxed);
                })
                .await?;
            let seconds = started.elapsed().as_secs_f64();
            let applied = applied.into_inner();
            anyhow::ensure!(
                applied as usize == seeded,
                "applied {applied} of {seeded} events"
            );
            rates.push(applied as f64 / seconds);
            let (copy_seconds, rows) =
                copy_baseline(&projector.pool, &format!("bench_projector_copy_{run}")).await?;
            ratios.push(seconds / copy_seconds);
            println!(
                "  rebuild run {run}: {applied} events in {seconds:.1} s; the same {rows} rows by COPY in {copy_seconds:.1} s ({:.1}x)",
                seconds / copy_seconds
            );
        }
        let list = |values: &[f64], format: fn(f64) -> String| {
            values.iter().map(|v| format(*v)).collect::<Vec<_>>().join(", ")
        };
        println!(
            "rebuild: {:.0} events/s into PostgreSQL (runs: {})",
            median(&mut rates.clone()),
            list(&rates, |r| format!("{r:.0}"))
        );
        println!(
            "rebuild time / COPY of its rows: {:.1}x (runs: {})",
            median(&mut ratios.clone()),
            list(&ratios, |r| format!("{r:.1}"))
        );

        // Live lag: the last rebuilt database's projector runs live while commands arrive.
        let live_database = format!("bench_projector_{}", runs - 1);
        let pool = database(&live_database).await?;
        let mut listening = read_models::config_from_env()?;
        listening.dbname(&live_database);
        let projector = Arc::new(Projector {
            client: client.clone(),
            pool: pool.clone(),
            keys: keys.clone(),
            batches: BatchSettings::default(),
            on_poison: Default::default(),
        });
        let live = tokio::spawn({
            let projector = projector.clone();
            async move { projector.run(std::future::pending()).await }
        });
        let port = free_port()?;
        let issuer = crate::processes::issuer().await?;
        let mut env = crate::processes::auth_env(&issuer);
        env.push(("COMMAND_LISTEN", format!("127.0.0.1:{port}")));
        env.push(("EVENT_STORE_URL", url.clone()));
        env.push(("PGDATABASE", "bench_projector_keys".to_string()));
        let (_payment, endpoint) = crate::processes::start_payment(&env)?;
        env.push(endpoint);
        let (_commands, _) = start("command-side", &[], &env, port)?;
        let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))?
            .connect()
            .await?;
        let channel = crate::processes::as_admin(channel, &issuer)?;
        let lags = lag(
            channel,
            &listening,
            options.rate,
            Duration::from_secs(options.seconds),
        )
        .await?;
        live.abort();
        println!(
            "live lag at {} commands/s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} commands)",
            options.rate,
            ms(percentile(&lags, 50.0)),
            ms(percentile(&lags, 99.0)),
            ms(percentile(&lags, 100.0)),
            lags.len()
        );
        Ok(())
    })
}

/// A fresh, migrated database on the cluster the environment names.
/// The physical limit of PostgreSQL for the rebuild's data: the rows it produced, every
/// table of the projector's, loaded by `COPY` (binary) into a fresh database's empty tables,
/// indexes included, in one transaction. Only the loading is timed. Returns the seconds and
/// the rows.
async fn copy_baseline(
    rebuilt: &deadpool_postgres::Pool,
    name: &str,
) -> anyhow::Result<(f64, u64)> {
    use futures::{SinkExt, TryStreamExt};

    let target = database(name).await?;
    let source = rebuilt.get().await?;
    let mut dumps = Vec::new();
    for table in projector::rebuild::all_tables() {
        let out = source
            .copy_out(&format!("COPY {table} TO STDOUT (FORMAT binary)"))
            .await?;
        let chunks: Vec<bytes::Bytes> = out.try_collect().await?;
        dumps.push((table, chunks));
    }
    let mut client = target.get().await?;
    let started = Instant::now();
    let tx = client.transaction().await?;
    let mut rows = 0;
    for (table, chunks) in dumps {
        let sink = tx
            .copy_in::<_, bytes::Bytes>(&format!("COPY {table} FROM STDIN (FORMAT binary)"))
            .await?;
        futures::pin_mut!(sink);
        for chunk in chunks {
            sink.send(chunk).await?;
        }
        rows += sink.finish().await?;
    }
    tx.commit().await?;
    Ok((started.elapsed().as_secs_f64(), rows))
}

async fn database(name: &str) -> anyhow::Result<deadpool_postgres::Pool> {
    let admin = read_models::config_from_env()?;
    read_models::create_database(&admin, name).await?;
    let mut config = admin;
    config.dbname(name);
    let pool = read_models::pool(config, 8)?;
    read_models::migrate(&pool).await?;
    Ok(pool)
}

/// Appends `events` events (rounded to whole reservations) with 64 concurrent writers.
async fn seed(
    client: &kurrentdb::Client,
    keys: &Arc<PostgresKeys>,
    events: usize,
) -> anyhow::Result<usize> {
    let customers: Vec<CustomerId> = (0..CUSTOMERS).map(|_| CustomerId::new()).collect();
    // All at once: the key store makes them in a few group-committed statements.
    let making: Vec<_> = customers
        .iter()
        .map(|customer| {
            let (keys, customer) = (keys.clone(), *customer);
            tokio::spawn(async move { keys.key_for_writing(customer).await })
        })
        .collect();
    let mut customer_keys = Vec::new();
    for made in making {
        customer_keys.push(made.await??);
    }
    let customers = Arc::new((customers, customer_keys));
    let reservations = events / 4;
    let writers = 64;
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let client = client.clone();
        let customers = customers.clone();
        tasks.push(tokio::spawn(async move {
            let today = chrono::Utc::now().date_naive();
            let metadata = Metadata::new(uuid::Uuid::new_v4(), uuid::Uuid::new_v4(), None);
            for i in (writer..reservations).step_by(writers) {
                let (reservation_id, payment_id) = (ReservationId::new(), PaymentId::new());
                let price = Money::from_stored_cents(1_000 + (i as u64 % 50_000));
                let customer = customers.0[i % CUSTOMERS];
                let key = &customers.1[i % CUSTOMERS];
                let approved = Event::Payment(PaymentEvent::PaymentApproved {
                    payment_id,
                    reservation_id,
                    amount: price,
                    paymethod_kind: Some(PaymethodKind::CreditCard),
                });
                let requested =
                    Event::Reservation(ReservationEvent::CleaningRequested(CleaningRequested {
                        reservation_id,
                        customer_id: customer,
                        customer_name: Personal::new(format!("Customer {}", i % CUSTOMERS)),
                        place: Personal::new(format!("{i} Analytical Row")),
                        request_date: today,
                        price,
                        payment_id,
                    }));
                let started = Event::Reservation(ReservationEvent::CleaningStarted {
                    reservation_id,
                    cleaner: None,
                });
                let completed =
                    Event::Reservation(ReservationEvent::CleaningCompleted { reservation_id });
                let data = |event: &Event, key| -> anyhow::Result<EventData> {
                    let encoded = events::encode(event, key)?;
                    let value: serde_json::Value = serde_json::from_slice(&encoded.data)?;
                    let metadata = Metadata {
                        schema_version: encoded.version,
                        ..metadata.clone()
                    };
                    Ok(EventData::json(encoded.event_type, &value)?.metadata_as_json(&metadata)?)
                };
                let no_stream =
                    AppendToStreamOptions::default().stream_state(StreamState::NoStream);
                client
                    .append_to_stream(
                        events::streams::payment(payment_id),
                        &no_stream,
                        data(&approved, None)?,
                    )
                    .await?;
                client
                    .append_to_stream(
                        events::streams::reservation(reservation_id),
                        &no_stream,
                        vec![
                            data(&requested, Some(key))?,
                            data(&started, None)?,
                            data(&completed, None)?,
                        ],
                    )
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(reservations * 4)
}

/// Sends `rate` ApplyReservation commands per second for `length`; for each, the time from
/// its reply (the append acknowledged) until the read models' checkpoint covers its position,
/// as a reader learns it: the projector's notice of each committed batch (PostgreSQL `NOTIFY`,
/// what the live page listens to). Commands sent one by one before the measured load.
const WARM_UP_COMMANDS: usize = 20;

async fn lag(
    channel: access::client::AuthorizedChannel,
    database: &tokio_postgres::Config,
    rate: u64,
    length: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let date = (chrono::Utc::now().date_naive() + chrono::Days::new(7))
        .format("%Y-%m-%d")
        .to_string();
    let request = move |date: String| api_contract::ApplyReservationRequest {
        request_id: uuid::Uuid::new_v4().to_string(),
        customer_id: uuid::Uuid::new_v4().to_string(),
        customer_name: "Ada Lovelace".into(),
        place: "12 Analytical Row".into(),
        request_date: date,
        price_cents: 12_500,
        paymethod_kind: "credit_card".into(),
    };
    // Warm up one after the other (tokens, keys, connections on every hop), then measure.
    let mut warming = ReservationServiceClient::new(channel.clone());
    for _ in 0..WARM_UP_COMMANDS {
        warming.apply_reservation(request(date.clone())).await?;
    }
    let failures = Arc::new(std::sync::Mutex::new(Vec::<tonic::Code>::new()));
    let failed = failures.clone();
    let sender = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
        let deadline = Instant::now() + length;
        let mut inflight = Vec::new();
        while Instant::now() < deadline {
            ticker.tick().await;
            let mut client = ReservationServiceClient::new(channel.clone());
            let sent_tx = sent_tx.clone();
            let (request, failed) = (request(date.clone()), failed.clone());
            inflight.push(tokio::spawn(async move {
                // A refused command is counted, not measured: the load keeps its rate.
                match client.apply_reservation(request).await {
                    Ok(reply) => {
                        let _ = sent_tx.send((reply.into_inner().position, Instant::now()));
                    }
                    Err(status) => failed.lock().expect("failures").push(status.code()),
                }
            }));
        }
        for task in inflight {
            task.await?;
        }
        anyhow::Ok(())
    });
    // The projector's notices, each naming the position every read model now stands at.
    // (Polling the checkpoint in a loop instead, as this bench did until 2026-12-07, kept a
    // core of the two busy and slowed what it measured.)
    let (notices_tx, mut notices) = tokio::sync::mpsc::channel(1024);
    let listener = tokio::spawn({
        let database = database.clone();
        async move { read_models::changes::listen(&database, None, notices_tx).await }
    });
    let mut committed = 0u64;
    let mut waiting: Vec<(u64, Instant)> = Vec::new();
    let mut lags = Vec::new();
    let mut sending = true;
    while sending || !waiting.is_empty() {
        tokio::select! {
            sent = sent_rx.recv(), if sending => match sent {
                Some((position, _)) if position <= committed => lags.push(Duration::ZERO),
                Some(sent) => waiting.push(sent),
                None => sending = false,
            },
            notice = notices.recv() => {
                let Some(notice) = notice else {
                    anyhow::bail!("the projector's notices stopped: {:?}", listener.await?);
                };
                committed = committed.max(notice.position as u64);
                let now = Instant::now();
                waiting.retain(|(position, acknowledged)| {
                    if *position <= committed {
                        lags.push(now.saturating_duration_since(*acknowledged));
                        false
                    } else {
                        true
                    }
                });
            }
        }
    }
    listener.abort();
    sender.await??;
    lags.sort();
    let failures = std::mem::take(&mut *failures.lock().expect("failures"));
    if !failures.is_empty() {
        println!(
            "  {} commands refused during the lag measurement: {:?}",
            failures.len(),
            failures
        );
    }
    Ok(lags)
}
