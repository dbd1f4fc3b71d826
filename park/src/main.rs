//! `park`: Cleaning Service Park on one machine, on its embedded defaults.
//!
//! Starts, in this process, the embedded event store, the development issuer (OpenID Connect,
//! for the bearer tokens every call needs), the command side, the projector, the policies and
//! the query side, on a PostgreSQL of its own under the data directory unless `DATABASE_URL`
//! (or `PGHOST`) names one; prints where each listens with ready-to-paste calls; and stops
//! everything cleanly on Ctrl-C or SIGTERM (the command side drains first, the database last).
//!
//! `park token --role customer|cleaner|admin|service [--customer-id UUID]` prints a token of
//! the same issuer (the same data directory) for pasting into grpcurl and curl.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(about = "Runs Cleaning Service Park locally")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: Args,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Prints an access token of park's development issuer, for grpcurl and curl.
    Token {
        /// customer, cleaner, admin or service.
        #[arg(long, value_parser = ["customer", "cleaner", "admin", "service"])]
        role: String,
        /// The customer's id (a customer's token has it as its subject); a new one if absent.
        #[arg(long)]
        customer_id: Option<uuid::Uuid>,
        /// How long the token is valid.
        #[arg(long, default_value_t = 60)]
        minutes: u64,
    },
}

#[derive(clap::Args, Debug)]
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
    /// The query side's HTTP address (the dashboard page is at its root).
    #[arg(long, env = "QUERY_LISTEN", default_value = "127.0.0.1:8080")]
    queries: SocketAddr,
    /// The port of the local PostgreSQL started when no database is given.
    #[arg(long, env = "PARK_PG_PORT", default_value_t = 55432)]
    pg_port: u16,
    /// The development issuer's address (OIDC discovery, keys, tokens, the sign-in page).
    #[arg(long, env = "PARK_ISSUER_LISTEN", default_value = "127.0.0.1:8180")]
    issuer: SocketAddr,
}

impl Args {
    /// The development issuer, its key kept under the data directory.
    fn issuer(&self) -> anyhow::Result<dev_issuer::Issuer> {
        Ok(dev_issuer::Issuer::open(
            &self.data_dir.join("issuer"),
            format!("http://{}", self.issuer),
            access::DEFAULT_AUDIENCE,
        )?)
    }
}

/// `park token`: one bare token on standard output; who it is for on standard error.
fn print_token(
    args: &Args,
    role: &str,
    customer: Option<uuid::Uuid>,
    minutes: u64,
) -> anyhow::Result<()> {
    let role = access::Role::parse(role).context("unknown role")?;
    let issuer = args.issuer()?;
    let subject = match role {
        access::Role::Customer => customer.unwrap_or_else(uuid::Uuid::new_v4).to_string(),
        other => dev_issuer::default_subject(other).to_string(),
    };
    let token = issuer.token(
        &subject,
        &[role],
        std::time::Duration::from_secs(minutes * 60),
    )?;
    eprintln!(
        "{role} {subject}, valid for {minutes} minutes, issued by {}",
        issuer.url()
    );
    println!("{token}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = lifecycle::init_logging("park", "warn");
    let cli = Cli::parse();
    let args = cli.args;
    if let Some(Command::Token {
        role,
        customer_id,
        minutes,
    }) = cli.command
    {
        return print_token(&args, &role, customer_id, minutes);
    }
    let (stop_tx, stop) = watch::channel(false);

    // The development issuer: the services trust it as they would the company's.
    let issuer = args.issuer()?;
    let issuer_listener = tokio::net::TcpListener::bind(args.issuer)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is something else using it?)",
                args.issuer
            )
        })?;
    let mut issuer_stop = stop.clone();
    let issuing = tokio::spawn(dev_issuer::serve(
        issuer_listener,
        issuer.clone(),
        async move {
            let _ = issuer_stop.wait_for(|s| *s).await;
        },
    ));
    let client = issuer.service_client();

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
    // The event store stops last, once nothing reads from it any more.
    let (store_stop_tx, mut store_stop) = watch::channel(false);
    let event_store = tokio::spawn(event_store::server::serve(
        store_listener,
        store,
        Default::default(),
        async move {
            let _ = store_stop.wait_for(|s| *s).await;
        },
    ));

    // The environment, with the development issuer and its service client filled in.
    let lookup = |name: &str| match name {
        "AUTH_ISSUER" => Some(issuer.url().to_string()),
        "AUTH_AUDIENCE" => Some(issuer.audience().to_string()),
        "AUTH_DISCOVERY_URL" => None,
        "AUTH_CLIENT_ID" => Some(client.client_id.clone()),
        "AUTH_CLIENT_SECRET" => Some(client.client_secret.clone()),
        "AUTH_CLIENT_SECRET_FILE" => None,
        other => std::env::var(other).ok(),
    };
    let mut config = command_side::config::Config::from_lookup(lookup)?;
    config.server.listen = args.commands;
    config.server.event_store_url = format!("esdb://{}?tls=false", args.event_store);
    // Payment is served beside the command side, on the same address, unless it is elsewhere.
    let serve_payment = std::env::var_os("PAYMENT_ENDPOINT").is_none();
    if serve_payment {
        config.payment_endpoint = format!("http://{}", args.commands);
    }
    let payment_endpoint = config.payment_endpoint.clone();
    let payment = payment::config::Config {
        server: config.server.clone(),
        provider: payment::config::ProviderRules::from_lookup(&lookup)?,
    };
    let command_listener = tokio::net::TcpListener::bind(args.commands)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is something else using it?)",
                args.commands
            )
        })?;
    // The read models: the given database, or a local one of our own.
    let given = std::env::var_os("DATABASE_URL").is_some() || std::env::var_os("PGHOST").is_some();
    let (local_pg, db_config) = if given {
        (None, read_models::config_from_env()?)
    } else {
        let local =
            local_postgres::LocalPostgres::start(&args.data_dir.join("postgres"), args.pg_port)?;
        read_models::create_database(&local.config("postgres"), "park").await?;
        let config = local.config("park");
        (Some(local), config)
    };
    let pool = read_models::pool(db_config.clone(), 8)?;
    let closing = pool.clone();
    read_models::migrate(&pool)
        .await
        .context("cannot migrate the read models")?;

    // Customers' data keys: `KEY_STORE_URL` when given, else beside the read models.
    let keys = match std::env::var("KEY_STORE_URL") {
        Ok(url) if !url.is_empty() => {
            customer_keys::PostgresKeys::connect(customer_keys::config_from_env()?, 8).await
        }
        _ => customer_keys::PostgresKeys::with_pool(pool.clone()).await,
    }
    .context("cannot reach the key store")?;
    let keys = Arc::new(keys);
    let mut commands_stop = stop.clone();
    let mut services = command_side::services(&config, keys.clone(), Default::default())?;
    if serve_payment {
        services = payment::services(&payment, services)?;
    }
    let commands = tokio::spawn(async move {
        command_core::serve(&config.server, services, command_listener, async move {
            let _ = commands_stop.wait_for(|s| *s).await;
        })
        .await
    });

    let projector = projector::Projector {
        client: kurrentdb::Client::new(format!("esdb://{}?tls=false", args.event_store).parse()?)
            .map_err(|e| anyhow::anyhow!("event store client: {e}"))?,
        pool: pool.clone(),
        keys: keys.clone(),
        batches: Default::default(),
        on_poison: Default::default(),
    };
    let mut projector_stop = stop.clone();
    let projecting = tokio::spawn(async move {
        projector
            .run(async move {
                let _ = projector_stop.wait_for(|s| *s).await;
            })
            .await
    });

    // The policies act through the command side, like any client, with their own identity.
    let policies_identity =
        access::client::ServiceToken::new(issuer.auth_settings(), issuer.service_client())?;
    let command_channel = access::client::WithToken::new(
        tonic::transport::Channel::from_shared(format!("http://{}", args.commands))?.connect_lazy(),
        access::client::Credentials::Service(policies_identity),
    );
    let events = kurrentdb::Client::new(format!("esdb://{}?tls=false", args.event_store).parse()?)
        .map_err(|e| anyhow::anyhow!("event store client: {e}"))?;
    // Payment where the command side calls it: beside it here, unless PAYMENT_ENDPOINT says.
    let payment_channel = if serve_payment {
        command_channel.clone()
    } else {
        access::client::WithToken::new(
            tonic::transport::Channel::from_shared(payment_endpoint)?.connect_lazy(),
            access::client::Credentials::Service(access::client::ServiceToken::new(
                issuer.auth_settings(),
                issuer.service_client(),
            )?),
        )
    };
    let payments =
        command_side::proto::payment_service_client::PaymentServiceClient::new(payment_channel);
    let refunds = policies::RefundOnCancel {
        events: events.clone(),
        payments: payments.clone(),
    };
    let notify = policies::NotifyCustomer {
        events: events.clone(),
        messages: command_side::proto::message_service_client::MessageServiceClient::new(
            command_channel.clone(),
        ),
    };
    let reservations_channel = command_channel;
    let orphans = policies::RefundOrphanedPayments {
        events: events.clone(),
        payments,
        reservations:
            command_side::proto::reservation_service_client::ReservationServiceClient::new(
                reservations_channel,
            ),
        pool: pool.clone(),
        orphan_after: std::time::Duration::from_secs(60),
    };
    let policy_pool = pool.clone();
    let policy_stop = stop.clone();
    let policing = tokio::spawn(async move {
        let until_stopped = || {
            let mut stop = policy_stop.clone();
            async move {
                let _ = stop.wait_for(|s| *s).await;
            }
        };
        tokio::try_join!(
            policies::consume(&refunds, &events, &policy_pool, until_stopped()),
            policies::consume(&notify, &events, &policy_pool, until_stopped()),
            orphans.run(until_stopped()),
        )
    });

    let query_listener = tokio::net::TcpListener::bind(args.queries)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is something else using it?)",
                args.queries
            )
        })?;
    let query_state = query_side::AppState::new(
        pool,
        std::time::Duration::from_secs(2),
        access::Verifier::new(issuer.auth_settings())?,
        dev_issuer::PAGE_CLIENT_ID,
    )
    .with_live_changes(db_config);
    let live = query_state.live.clone();
    let app = query_side::router(query_state);
    let mut query_stop = stop.clone();
    let queries = tokio::spawn(async move {
        axum::serve(query_listener, app)
            .with_graceful_shutdown(async move {
                let _ = query_stop.wait_for(|s| *s).await;
                // Open live dashboards never end by themselves.
                live.stop();
            })
            .await
    });

    print_welcome(
        &args,
        &store_dir,
        local_pg.as_ref().map(|p| (p.port, p.dir.clone())),
    );
    let (mut projecting, mut policing) = (projecting, policing);
    tokio::select! {
        _ = lifecycle::shutdown_signal() => {}
        result = &mut projecting => {
            eprintln!("the projector stopped: {result:?}");
        }
        result = &mut policing => {
            eprintln!("the policies stopped: {result:?}");
        }
    }
    println!("\nStopping: the command side drains, then the read side and the event store close.");
    let _ = stop_tx.send(true);
    let outcome = async {
        commands.await??;
        queries.await??;
        // Readers stop between two events; then the event store can close under nobody.
        let wait = std::time::Duration::from_secs(5);
        if !projecting.is_finished() && tokio::time::timeout(wait, &mut projecting).await.is_err() {
            projecting.abort();
        }
        if !policing.is_finished() && tokio::time::timeout(wait, &mut policing).await.is_err() {
            policing.abort();
        }
        let _ = store_stop_tx.send(true);
        event_store.await??;
        issuing.await??;
        anyhow::Ok(())
    }
    .await;
    // Close the database connections before the database itself, so that none of them is cut.
    closing.close();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    if let Some(local) = local_pg {
        local.stop();
    }
    outcome?;
    println!("Stopped.");
    Ok(())
}

fn print_welcome(args: &Args, store_dir: &std::path::Path, local_pg: Option<(u16, PathBuf)>) {
    let date = (chrono::Utc::now().date_naive() + chrono::Days::new(3)).format("%Y-%m-%d");
    let request = uuid::Uuid::new_v4();
    let customer = uuid::Uuid::new_v4();
    println!(
        r#"Cleaning Service Park is up.

  event store   esdb://{store}?tls=false   (data in {dir})
  issuer        http://{issuer}   development OpenID Connect issuer (discovery, keys, sign-in)
  command side  {commands}   gRPC, package cleaning.v1 (payment served here too), with reflection and health
  read models   {database}
  query side    http://{queries}/   the dashboard page (sign in as any role); JSON at /dashboard

Every call needs a bearer token. Get one (in another terminal, same directory):

  TOKEN=$(cargo run -q --release -p park -- token --role customer --customer-id {customer})

Then (grpcurl lists everything through reflection: grpcurl -plaintext {commands} list):

  grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{"request_id":"{request}","customer_name":"Ada Lovelace","place":"12 Analytical Row","request_date":"{date}","price_cents":12500,"paymethod_kind":"credit_card"}}' {commands} cleaning.v1.ReservationService/ApplyReservation
  curl -H "authorization: Bearer $TOKEN" 'http://{queries}/dashboard'

Roles: customer (their own), cleaner (start and complete), admin (everything), service.
Ctrl-C stops everything."#,
        store = args.event_store,
        dir = store_dir.display(),
        issuer = args.issuer,
        commands = args.commands,
        queries = args.queries,
        database = match local_pg {
            Some((port, data)) => format!(
                "PostgreSQL on 127.0.0.1:{port}, started for this run (data in {})",
                data.display()
            ),
            None => "the PostgreSQL named by DATABASE_URL / PG*".to_string(),
        },
    );
}
