//! `bench`: measures the system through its real interfaces. Each figure is the median of
//! several runs, because the machine is shared and noisy.
//!
//! Build first: `cargo build --release -p event-store -p command-side -p payment -p bench`.
//!
//! `target/release/bench event-store` measures the embedded event store through the
//! official `kurrentdb` client: durable append throughput at 1, 16 and 64 concurrent appenders,
//! `$all` read throughput, and live subscription delivery latency.
//!
//! `target/release/bench peers` puts the event store beside UmaDB and PostgreSQL used as an
//! event store (one table, `unique (stream, version)`), the same conditional appends in the
//! same run, then `ApplyReservation` beside the same flow written on cqrs-es with postgres-es
//! (under `pg_virtualenv -o fsync=on`; the peers installed by `bench/peers/install`).
//!
//! `target/release/bench tracing` measures `ApplyReservation` with traces exported over OTLP
//! against without, alternated run by run (under `pg_virtualenv -o fsync=on`).
//!
//! `target/release/bench commands` measures `ApplyReservation` end to end (client, command side,
//! payment service, event store, all durable) at concurrency 1, 16 and 64. The command side
//! reaches its key store in PostgreSQL: run it under `pg_virtualenv -o fsync=on`.
//!
//! `target/release/bench sealing` compares that with a command side built without sealing
//! (`--features unsealed-baseline`, into `target/unsealed`), to show what privacy costs.
//!
//! `target/release/bench queries` loads the release `query-side` with wrk over a million
//! dashboard rows (under `pg_virtualenv -o fsync=on`).
//!
//! `target/release/bench auth` compares `ApplyReservation` and `GET /dashboard/{id}` with
//! every token checked against the services built with `--features no-auth-baseline` (into
//! `target/no-auth`), to show what checking tokens costs.
//!
//! `target/release/bench overload` drives `ApplyReservation` open-loop at 1x, 2x and 4x the
//! rate 64 closed-loop clients get: accepted throughput, shed share, latency of the accepted
//! calls and peak memory of the command side (under `pg_virtualenv -o fsync=on`).
//!
//! `target/release/bench projector` seeds a million events, rebuilds the read models from them
//! (events/s into PostgreSQL), then measures the live lag under a steady command load.

mod auth_bench;
mod commands_bench;
mod event_store_bench;
mod overload_bench;
mod peers_bench;
mod processes;
mod projector_bench;
mod queries_bench;
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
    /// Persistent subscriptions of the embedded event store: acknowledged events/s with 1 and
    /// 4 consumers, and live delivery latency.
    Persistent(event_store_bench::PersistentOptions),
    /// The event store beside UmaDB and PostgreSQL used as an event store, and ApplyReservation
    /// beside cqrs-es with postgres-es, in one run (needs PostgreSQL, `pg_virtualenv -o
    /// fsync=on`, and `bench/peers/install`).
    Peers(peers_bench::Options),
    /// ApplyReservation end to end: client -> command side -> payment -> event store.
    Commands(commands_bench::Options),
    /// ApplyReservation with traces exported over OTLP and without (needs PostgreSQL).
    Tracing(commands_bench::Options),
    /// ApplyReservation with and without sealing personal data (needs the baseline build).
    Sealing(commands_bench::SealingOptions),
    /// The query side under wrk, over a million reservations (needs wrk and PostgreSQL).
    Queries(queries_bench::Options),
    /// The projector: rebuild throughput over a million events, live lag under load.
    Projector(projector_bench::Options),
    /// ApplyReservation and GET /dashboard/{id} with tokens checked and without (needs the
    /// baseline build, wrk and PostgreSQL).
    Auth(auth_bench::Options),
    /// ApplyReservation open-loop at 1x, 2x and 4x capacity: what is shed, what is served,
    /// at what latency and memory (needs PostgreSQL).
    Overload(overload_bench::Options),
    /// GET /dashboard/{id} open-loop at 1x, 2x and 4x the query side's capacity (needs wrk
    /// and PostgreSQL).
    OverloadQueries {
        #[command(flatten)]
        options: overload_bench::Options,
        /// Reservations in the dashboard.
        #[arg(long, default_value_t = 100_000)]
        rows: i64,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.target {
        Target::EventStore(options) => event_store_bench::run(options, args.runs),
        Target::Persistent(options) => event_store_bench::run_persistent(options, args.runs),
        Target::Peers(options) => peers_bench::run(options, args.runs),
        Target::Commands(options) => commands_bench::run(options, args.runs),
        Target::Tracing(options) => commands_bench::run_tracing(options, args.runs),
        Target::Sealing(options) => commands_bench::run_sealing(options, args.runs),
        Target::Queries(options) => queries_bench::run(options, args.runs),
        Target::Projector(options) => projector_bench::run(options, args.runs),
        Target::Auth(options) => auth_bench::run(options, args.runs),
        Target::Overload(options) => overload_bench::run(options, args.runs),
        Target::OverloadQueries { options, rows } => {
            overload_bench::run_queries(options, rows, args.runs)
        }
    }
}
