//! `event-store --listen 127.0.0.1:2113 --data-dir DIR`: the embedded KurrentDB-compatible store.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use event_store::server::{self, AppendLimits, Credentials, ServerOptions};
use event_store::storage::{Store, StoreSizes};

/// The unit of the size options.
const MIB: u64 = 1024 * 1024;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "An event store that speaks the KurrentDB gRPC protocol"
)]
struct Args {
    /// Address to listen on (plaintext HTTP/2 unless TLS files are given).
    #[arg(long, env = "EVENT_STORE_LISTEN", default_value = "127.0.0.1:2113")]
    listen: SocketAddr,
    /// Directory holding the data; created when missing.
    #[arg(long, env = "EVENT_STORE_DATA_DIR", default_value = "data/event-store")]
    data_dir: PathBuf,
    /// PEM certificate for TLS (with --tls-key).
    #[arg(long, env = "EVENT_STORE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with --tls-cert).
    #[arg(long, env = "EVENT_STORE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require basic authentication as `user:password`.
    #[arg(long, env = "EVENT_STORE_CREDENTIALS", hide_env_values = true)]
    credentials: Option<String>,
    /// Memory for the storage page cache, in MiB.
    #[arg(long, env = "EVENT_STORE_CACHE_MIB", default_value_t = StoreSizes::default().cache_bytes / MIB as usize)]
    cache_mib: usize,
    /// The journal's size in MiB: what is written between two checkpoints of the database
    /// (fewer checkpoints when larger; more to apply again when opening after a crash).
    #[arg(long, env = "EVENT_STORE_JOURNAL_MIB", default_value_t = StoreSizes::default().journal_bytes / MIB,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    journal_mib: u64,
    /// Largest event accepted, in bytes.
    #[arg(long, env = "EVENT_STORE_MAX_EVENT_SIZE", default_value_t = AppendLimits::default().max_event_size)]
    max_event_size: usize,
    /// Largest append accepted (all its events together), in bytes.
    #[arg(long, env = "EVENT_STORE_MAX_APPEND_SIZE", default_value_t = AppendLimits::default().max_append_size)]
    max_append_size: usize,
    /// Run the system projections ($by_category, $by_event_type, $streams, $stream_by_category)
    /// and serve the Projections service (off by default, as on the real server; like its
    /// `--run-projections=System --start-standard-projections=true` when on).
    #[arg(
        long,
        env = "EVENT_STORE_SYSTEM_PROJECTIONS",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    system_projections: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = lifecycle::init_logging("event-store", "info");
    let args = Args::parse();
    let credentials = match &args.credentials {
        Some(text) => {
            Some(Credentials::parse(text).context("--credentials must be user:password")?)
        }
        None => None,
    };
    let sizes = StoreSizes {
        cache_bytes: args.cache_mib * MIB as usize,
        journal_bytes: args.journal_mib * MIB,
    };
    let store = Store::open_with(&args.data_dir, sizes)
        .with_context(|| format!("cannot open the store in {}", args.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let tls = args.tls_cert.clone().zip(args.tls_key.clone());
    tracing::info!(
        listen = %listener.local_addr()?,
        data_dir = %args.data_dir.display(),
        tls = tls.is_some(),
        authentication = credentials.is_some(),
        system_projections = args.system_projections,
        head = store.head(),
        "event store serving the KurrentDB protocol (version {})",
        server::SERVER_VERSION
    );
    let options = ServerOptions {
        tls,
        credentials,
        limits: AppendLimits {
            max_event_size: args.max_event_size,
            max_append_size: args.max_append_size,
        },
        system_projections: args.system_projections,
    };
    server::serve(listener, store, options, lifecycle::shutdown_signal()).await?;
    tracing::info!("event store stopped");
    Ok(())
}
