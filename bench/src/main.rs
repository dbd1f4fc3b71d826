//! `bench`: measures the system through its real interfaces. Each figure is the median of
//! several runs, because the machine is shared and noisy.
//!
//! `cargo run --release -p bench -- event-store` measures the embedded event store through the
//! official `kurrentdb` client: durable append throughput at 1, 16 and 64 concurrent appenders,
//! `$all` read throughput, and live subscription delivery latency.

mod event_store_bench;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Benchmarks of Cleaning Service Park")]
struct Args {
    #[command(subcommand)]
    target: Target,
    /// How many times each measurement is repeated; the median is reported.
    #[arg(long, default_value_t = 3, global = true)]
    runs: usize,
}

#[derive(Subcommand)]
enum Target {
    /// The embedded event store, through the kurrentdb client.
    EventStore(event_store_bench::Options),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.target {
        Target::EventStore(options) => event_store_bench::run(options, args.runs),
    }
}
