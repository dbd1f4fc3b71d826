//! `ApplyReservation` end to end: a gRPC client, the command side, its synchronous call to the
//! payment service, and durable appends to the event store; all as separate processes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_contract::reservation_service_client::ReservationServiceClient;
use api_contract::ApplyReservationRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::transport::Channel;

use std::path::{Path, PathBuf};

use crate::processes::{beside, free_port, start_binary, start_event_store};
use crate::stats::{median, ms, percentile, report};

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
    let command_side = beside("command-side")?;
    runtime.block_on(async move {
        println!(
            "ApplyReservation end to end: median of {runs} runs, {} s each",
            options.seconds
        );
        for concurrency in [1usize, 16, 64] {
            let mut results = Vec::new();
            for _ in 0..runs {
                results.push(measure(&command_side, concurrency, options.seconds, 0).await?);
            }
            report(
                &format!("concurrency {concurrency:>2}"),
                "commands/s",
                &results,
            );
        }
        Ok(())
    })
}

/// What sealing personal data costs: the shipped command side against one built with the
/// `unsealed-baseline` feature (no key store, no cipher), alternated run by run so that both
/// see the same machine.
pub fn run_sealing(options: SealingOptions, runs: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let sealed = beside("command-side")?;
    anyhow::ensure!(
        options.baseline.exists(),
        "{} is missing: build it with `cargo build --release -p command-side --features unsealed-baseline --target-dir target/unsealed`",
        options.baseline.display()
    );
    runtime.block_on(async move {
        println!(
            "ApplyReservation with and without sealing: median of {runs} runs, {} s each",
            options.seconds
        );
        for concurrency in [1usize, 16, 64] {
            let (mut with, mut without) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                with.push(measure(&sealed, concurrency, options.seconds, options.customers).await?);
                without.push(
                    measure(
                        &options.baseline,
                        concurrency,
                        options.seconds,
                        options.customers,
                    )
                    .await?,
                );
            }
            report(
                &format!("concurrency {concurrency:>2}, sealed  "),
                "commands/s",
                &with,
            );
            report(
                &format!("concurrency {concurrency:>2}, baseline"),
                "commands/s",
                &without,
            );
            let rate =
                |r: &[(f64, f64, f64)]| median(&mut r.iter().map(|x| x.0).collect::<Vec<_>>());
            println!(
                "concurrency {concurrency:>2}: sealed runs at {:.1}% of the baseline's rate",
                100.0 * rate(&with) / rate(&without)
            );
        }
        Ok(())
    })
}

#[derive(clap::Args)]
pub struct SealingOptions {
    /// Seconds each measurement lasts.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Customers the commands are spread over; 0 (the default, the worst case): a new
    /// customer, hence a new key, for every command.
    #[arg(long, default_value_t = 0)]
    customers: usize,
    /// The command side built with `--features unsealed-baseline`.
    #[arg(long, default_value = "target/unsealed/release/command-side")]
    baseline: PathBuf,
}

/// What tracing costs `ApplyReservation`: the same command side with its spans exported over
/// OTLP to a receiver in this process (every call sampled: each is a new trace) and with no
/// exporter, alternated run by run so that both see the same machine.
pub fn run_tracing(options: Options, runs: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let command_side = beside("command-side")?;
    runtime.block_on(async move {
        let spans = Arc::new(AtomicU64::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let collector = format!("http://{}", listener.local_addr()?);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Collector(spans.clone())))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", collector)];
        println!(
            "ApplyReservation with traces exported and without: median of {runs} runs, {} s each",
            options.seconds
        );
        for concurrency in [1usize, 16, 64] {
            let (mut traced, mut untraced) = (Vec::new(), Vec::new());
            let before = spans.load(Ordering::Relaxed);
            for _ in 0..runs {
                let seconds = options.seconds;
                traced.push(measure_with(&command_side, concurrency, seconds, 0, &on).await?);
                untraced.push(measure_with(&command_side, concurrency, seconds, 0, &[]).await?);
            }
            report(
                &format!("concurrency {concurrency:>2}, traced  "),
                "commands/s",
                &traced,
            );
            report(
                &format!("concurrency {concurrency:>2}, untraced"),
                "commands/s",
                &untraced,
            );
            let rate =
                |r: &[(f64, f64, f64)]| median(&mut r.iter().map(|x| x.0).collect::<Vec<_>>());
            println!(
                "concurrency {concurrency:>2}: traced runs at {:.1}% of the untraced rate; {} spans received",
                100.0 * rate(&traced) / rate(&untraced),
                spans.load(Ordering::Relaxed) - before
            );
        }
        Ok(())
    })
}

/// An OTLP receiver that counts the spans it is sent, standing in for a local Collector.
struct Collector(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// One run on a fresh event store: commands/s, p50 and p99 in ms.
pub(crate) async fn measure(
    command_side: &Path,
    concurrency: usize,
    seconds: u64,
    customers: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    measure_with(command_side, concurrency, seconds, customers, &[]).await
}

/// [`measure`] with more settings for the command side.
async fn measure_with(
    command_side: &Path,
    concurrency: usize,
    seconds: u64,
    customers: usize,
    settings: &[(&'static str, String)],
) -> anyhow::Result<(f64, f64, f64)> {
    let dir = tempfile::tempdir_in(".")?;
    let (store, store_port, _) = start_event_store(dir.path())?;
    let port = free_port()?;
    let issuer = crate::processes::issuer().await?;
    let mut env = crate::processes::auth_env(&issuer);
    env.push(("COMMAND_LISTEN", format!("127.0.0.1:{port}")));
    env.extend(settings.iter().cloned());
    env.push((
        "EVENT_STORE_URL",
        format!("esdb://127.0.0.1:{store_port}?tls=false"),
    ));
    let (payment, endpoint) = crate::processes::start_payment(&env)?;
    env.push(endpoint);
    let (commands, _) = start_binary(command_side, &[], &env, port)?;
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect()
        .await?;
    let channel = crate::processes::as_admin(channel, &issuer)?;
    // Warm up (connections, first reads), then measure.
    let customers: Vec<String> = (0..customers)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    load(
        channel.clone(),
        concurrency,
        Duration::from_secs(1),
        &customers,
    )
    .await?;
    let measured = load(
        channel,
        concurrency,
        Duration::from_secs(seconds),
        &customers,
    )
    .await?;
    if concurrency >= PEAK_MEMORY_FROM {
        let peak = |p: &crate::processes::Process| {
            p.peak_resident_mib()
                .map_or("?".to_string(), |m| format!("{m:.0} MiB"))
        };
        println!(
            "    peak resident memory at {concurrency} clients: event-store {}, command-side {}, payment {}",
            peak(&store),
            peak(&commands),
            peak(&payment)
        );
    }
    Ok(measured)
}

/// The same load against `ApplyReservation` written on cqrs-es with postgres-es
/// (`bench/peers/cqrs-es-peer`), on a fresh table in the PostgreSQL of this run (it reads the
/// same `PG*` settings): commands/s, p50 and p99 in ms.
pub(crate) async fn measure_cqrs_es_peer(
    peer: &Path,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<(f64, f64, f64)> {
    let pool = read_models::pool(read_models::config_from_env()?, 1)?;
    pool.get()
        .await?
        .batch_execute("DROP TABLE IF EXISTS events")
        .await?;
    let port = free_port()?;
    let address = format!("127.0.0.1:{port}");
    // postgres-es's own default pool: ten connections.
    let server = crate::processes::start_peer(peer, &[&address, "postgres://", "10"], port)?;
    let channel = Channel::from_shared(format!("http://{address}"))?
        .connect()
        .await?;
    // It checks no token; the client sends one all the same, as to the command side.
    let issuer = crate::processes::issuer().await?;
    let channel = crate::processes::as_admin(channel, &issuer)?;
    load(channel.clone(), concurrency, Duration::from_secs(1), &[]).await?;
    let measured = load(channel, concurrency, Duration::from_secs(seconds), &[]).await?;
    if concurrency >= PEAK_MEMORY_FROM {
        println!(
            "    peak resident memory at {concurrency} clients: cqrs-es peer {}",
            server
                .peak_resident_mib()
                .map_or("?".to_string(), |m| format!("{m:.0} MiB"))
        );
    }
    Ok(measured)
}

/// From this many clients on, each measurement reports its processes' peak resident memory.
const PEAK_MEMORY_FROM: usize = 64;

/// Commands/s, p50 and p99 in ms. Every command must succeed.
/// `customers` empty: a new customer for every command; else commands spread over them.
async fn load(
    channel: access::client::AuthorizedChannel,
    concurrency: usize,
    length: Duration,
    customers: &[String],
) -> anyhow::Result<(f64, f64, f64)> {
    let date = (chrono::Utc::now().date_naive() + chrono::Days::new(7))
        .format("%Y-%m-%d")
        .to_string();
    let deadline = Instant::now() + length;
    let started = Instant::now();
    let mut tasks = Vec::new();
    let customers = std::sync::Arc::new(customers.to_vec());
    for task in 0..concurrency {
        let mut client = ReservationServiceClient::new(channel.clone());
        let date = date.clone();
        let customers = customers.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            // Each task walks the customers from its own place: a customer comes back now
            // and then, as in real life, not in lockstep.
            let mut sent_count = task * 7919;
            while Instant::now() < deadline {
                sent_count += 1;
                let request = ApplyReservationRequest {
                    request_id: uuid::Uuid::new_v4().to_string(),
                    customer_id: if customers.is_empty() {
                        uuid::Uuid::new_v4().to_string()
                    } else {
                        customers[sent_count % customers.len()].clone()
                    },
                    customer_name: "Ada Lovelace".into(),
                    place: "12 Analytical Row".into(),
                    request_date: date.clone(),
                    price_cents: 12_500,
                    paymethod_kind: "credit_card".into(),
                };
                let sent = Instant::now();
                client.apply_reservation(request).await?;
                latencies.push(sent.elapsed());
            }
            Ok::<_, tonic::Status>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    Ok((
        latencies.len() as f64 / elapsed,
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
    ))
}
