//! `ApplyReservation` end to end: a gRPC client, the command side, its synchronous call to the
//! payment service, and durable appends to the event store; all as separate processes.

use std::time::{Duration, Instant};

use command_side::proto::reservation_service_client::ReservationServiceClient;
use command_side::proto::ApplyReservationRequest;
use tonic::transport::Channel;

use crate::processes::{free_port, start, start_event_store};
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
        println!("ApplyReservation end to end: median of {runs} runs, {} s each", options.seconds);
        for concurrency in [1usize, 16, 64] {
            let (mut rates, mut p50s, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..runs {
                let dir = tempfile::tempdir_in(".")?;
                let (_store, store_port, _) = start_event_store(dir.path())?;
                let port = free_port()?;
                let (_commands, _) = start(
                    "command-side",
                    &[],
                    &[
                        ("COMMAND_LISTEN", format!("127.0.0.1:{port}")),
                        ("EVENT_STORE_URL", format!("esdb://127.0.0.1:{store_port}?tls=false")),
                    ],
                    port,
                )?;
                let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))?.connect().await?;
                // Warm up (connections, first reads), then measure.
                load(channel.clone(), concurrency, Duration::from_secs(1)).await?;
                let (rate, p50, p99) = load(channel, concurrency, Duration::from_secs(options.seconds)).await?;
                rates.push(rate);
                p50s.push(p50);
                p99s.push(p99);
            }
            println!(
                "concurrency {concurrency:>2}: {:>7.0} commands/s (runs: {}), p50 {:.2} ms, p99 {:.2} ms (p99 runs: {})",
                median(&mut rates.clone()),
                rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "),
                median(&mut p50s),
                median(&mut p99s.clone()),
                p99s.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", "),
            );
        }
        Ok(())
    })
}

/// Commands/s, p50 and p99 in ms. Every command must succeed.
async fn load(
    channel: Channel,
    concurrency: usize,
    length: Duration,
) -> anyhow::Result<(f64, f64, f64)> {
    let date = (chrono::Utc::now().date_naive() + chrono::Days::new(7))
        .format("%Y-%m-%d")
        .to_string();
    let deadline = Instant::now() + length;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut client = ReservationServiceClient::new(channel.clone());
        let date = date.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let request = ApplyReservationRequest {
                    request_id: uuid::Uuid::new_v4().to_string(),
                    customer_id: uuid::Uuid::new_v4().to_string(),
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
