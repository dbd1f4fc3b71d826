//! `park`: Cleaning Service Park on one machine, on its embedded defaults.
//!
//! Starts the embedded event store and the command side in this process, prints where each
//! listens and a ready-to-paste `grpcurl` call, and stops everything cleanly on Ctrl-C or
//! SIGTERM (the command side drains first, then the store).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(about = "Runs Cleaning Service Park locally")]
struct Args {
    /// Where the data lives.
    #[arg(long, env = "PARK_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// The embedded event store's address.
    #[arg(long, env = "EVENT_STORE_LISTEN", default_value = "127.0.0.1:2113")]
    event_store: SocketAddr,
    /// The command side's gRPC address.
    #[arg(long, env = "COMMAND_LISTEN", default_value = "127.0.0.1:50051")]
    commands: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lifecycle::init_logging("warn");
    let args = Args::parse();
    let (stop_tx, stop) = watch::channel(false);

    // The event store first: its clients connect once, at their first call.
    let store_dir = args.data_dir.join("event-store");
    let store = event_store::storage::Store::open(&store_dir)
        .with_context(|| format!("cannot open the event store in {}", store_dir.display()))?;
    let store_listener = tokio::net::TcpListener::bind(args.event_store)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is something else using it?)",
                args.event_store
            )
        })?;
    let mut store_stop = stop.clone();
    let event_store = tokio::spawn(event_store::server::serve(
        store_listener,
        store,
        Default::default(),
        async move {
            let _ = store_stop.wait_for(|s| *s).await;
        },
    ));

    let mut config = command_side::config::Config::from_env()?;
    config.listen = args.commands;
    config.event_store_url = format!("esdb://{}?tls=false", args.event_store);
    if std::env::var_os("PAYMENT_ENDPOINT").is_none() {
        config.payment_endpoint = format!("http://{}", args.commands);
    }
    let command_listener = tokio::net::TcpListener::bind(args.commands)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is something else using it?)",
                args.commands
            )
        })?;
    let keys = Arc::new(events::InMemoryKeys::default());
    let mut commands_stop = stop.clone();
    let commands = tokio::spawn(command_side::serve(
        config,
        keys,
        command_listener,
        async move {
            let _ = commands_stop.wait_for(|s| *s).await;
        },
    ));

    print_welcome(&args, &store_dir);
    lifecycle::shutdown_signal().await;
    println!("\nStopping: the command side drains, then the event store closes.");
    let _ = stop_tx.send(true);
    commands.await??;
    event_store.await??;
    println!("Stopped.");
    Ok(())
}

fn print_welcome(args: &Args, store_dir: &std::path::Path) {
    let date = (chrono::Utc::now().date_naive() + chrono::Days::new(3)).format("%Y-%m-%d");
    let request = uuid::Uuid::new_v4();
    let customer = uuid::Uuid::new_v4();
    println!(
        r#"Cleaning Service Park is up.

  event store   esdb://{store}?tls=false   (data in {dir})
  command side  {commands}   gRPC, package cleaning.v1, with reflection and health

Try it (grpcurl lists everything through reflection: grpcurl -plaintext {commands} list):

  grpcurl -plaintext -d '{{"request_id":"{request}","customer_id":"{customer}","customer_name":"Ada Lovelace","place":"12 Analytical Row","request_date":"{date}","price_cents":12500,"paymethod_kind":"credit_card"}}' {commands} cleaning.v1.ReservationService/ApplyReservation

Ctrl-C stops everything."#,
        store = args.event_store,
        dir = store_dir.display(),
        commands = args.commands,
    );
}
