//! For tests only: the real parts of the system, started on loopback ports inside the test's
//! runtime, and a throwaway PostgreSQL database per test.

use std::sync::Arc;
use std::time::Duration;

use access::client::{AuthorizedChannel, Credentials, WithToken};
use access::Role;
use command_side::proto::ApplyReservationRequest;
use customer_keys::PostgresKeys;
use deadpool_postgres::Pool;
use dev_issuer::Issuer;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// The embedded event store, and the command side and payment in one server, with the PostgreSQL key store in a database of
/// its own (as deployed: the projector under test reaches the same keys), and the development
/// issuer whose tokens the command side accepts.
pub struct Running {
    pub event_store_url: String,
    /// The command side's address (`http://127.0.0.1:port`), for child processes.
    pub command_url: String,
    /// The command side, as an administrator (who may do everything).
    pub commands: AuthorizedChannel,
    /// The command side without a token.
    pub channel: Channel,
    pub keys: Arc<PostgresKeys>,
    pub issuer: Issuer,
    _stops: Vec<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

/// A development issuer on a loopback port, serving until the test's runtime ends.
pub async fn issuer() -> Issuer {
    Issuer::on_loopback(access::DEFAULT_AUDIENCE)
        .await
        .expect("bind")
}

/// Command-side settings trusting `issuer`, with its service client as the own identity.
pub fn command_config(issuer: &Issuer) -> command_side::config::Config {
    command_side::config::Config::from_lookup(|name| trusting(issuer, name)).expect("config")
}

/// Payment settings trusting `issuer`.
pub fn payment_config(issuer: &Issuer) -> payment::config::Config {
    payment::config::Config::from_lookup(|name| trusting(issuer, name)).expect("config")
}

fn trusting(issuer: &Issuer, name: &str) -> Option<String> {
    let client = issuer.service_client();
    match name {
        "AUTH_ISSUER" => Some(issuer.url().to_string()),
        "AUTH_CLIENT_ID" => Some(client.client_id.clone()),
        "AUTH_CLIENT_SECRET" => Some(client.client_secret.clone()),
        _ => None,
    }
}

/// The command side and payment in one server on `listener`, as park runs them, payment with
/// the command side's server settings and `provider`'s rules; the command side calls payment
/// there. Serves until `shutdown` completes.
pub async fn serve_commands_and_payment<K: events::KeyStore>(
    mut commands: command_side::config::Config,
    provider: payment::config::ProviderRules,
    keys: Arc<K>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let address = listener.local_addr()?;
    commands.server.listen = address;
    commands.payment_endpoint = format!("http://{address}");
    let payments = payment::config::Config {
        server: commands.server.clone(),
        provider,
    };
    let services = command_side::services(&commands, keys, command_core::Services::default())?;
    let services = payment::services(&payments, services)?;
    command_core::serve(&commands.server, services, listener, shutdown).await
}

/// `channel` with every call carrying a token of `issuer` for `subject` in `role`.
pub fn as_role(channel: &Channel, issuer: &Issuer, role: Role, subject: &str) -> AuthorizedChannel {
    let token = issuer
        .token(subject, &[role], Duration::from_secs(3600))
        .expect("token");
    WithToken::new(channel.clone(), Credentials::Bearer(token.into()))
}

/// `channel` as an administrator.
pub fn as_admin(channel: &Channel, issuer: &Issuer) -> AuthorizedChannel {
    as_role(channel, issuer, Role::Admin, "admin-1")
}

impl Running {
    /// The command side as `subject` in `role`.
    pub fn commands_as(&self, role: Role, subject: &str) -> AuthorizedChannel {
        as_role(&self.channel, &self.issuer, role, subject)
    }
}

impl Running {
    pub async fn start() -> Running {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = event_store::storage::Store::open(dir.path()).expect("event store");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let event_store_url = format!("esdb://{}?tls=false", listener.local_addr().expect("addr"));
        let (stop_store, stopped) = oneshot::channel::<()>();
        tokio::spawn(event_store::server::serve(
            listener,
            store,
            Default::default(),
            async {
                let _ = stopped.await;
            },
        ));

        let keys = Arc::new(
            PostgresKeys::with_pool(fresh_database().await)
                .await
                .expect("key store"),
        );
        let issuer = issuer().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("addr");
        let mut config = command_config(&issuer);
        config.server.event_store_url = event_store_url.clone();
        // Tests run many systems at once on a few cores: a payment may take longer than the
        // production deadline without anything being wrong (the deadline has tests of its own).
        config.payment_timeout = std::time::Duration::from_secs(5);
        let (stop_commands, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve_commands_and_payment(
            config,
            Default::default(),
            keys.clone(),
            listener,
            async {
                let _ = stopped.await;
            },
        ));
        let channel = Channel::from_shared(format!("http://{address}"))
            .expect("url")
            .connect()
            .await
            .expect("command side");
        Running {
            event_store_url,
            command_url: format!("http://{address}"),
            commands: as_admin(&channel, &issuer),
            channel,
            keys,
            issuer,
            _stops: vec![stop_store, stop_commands],
            _dir: dir,
        }
    }

    /// A new `kurrentdb` client on this event store.
    pub fn event_store_client(&self) -> kurrentdb::Client {
        kurrentdb::Client::new(self.event_store_url.parse().expect("url")).expect("client")
    }
}

/// A database of its own, migrated, on the cluster the environment names (`pg_virtualenv`).
pub async fn fresh_database() -> Pool {
    fresh_named_database().await.1
}

/// [`fresh_database`], with its name, for a child process (`PGDATABASE`).
pub async fn fresh_named_database() -> (String, Pool) {
    let admin_config = read_models::config_from_env().expect("database settings");
    let (admin, connection) = admin_config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL is not reachable: run the tests under pg_virtualenv (see README)");
    tokio::spawn(connection);
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let mut config = admin_config.clone();
    config.dbname(&name);
    let pool = read_models::pool(config, 8).expect("pool");
    read_models::migrate(&pool).await.expect("migrations");
    (name, pool)
}

/// A valid `ApplyReservation` request, a few days ahead, with a fresh request id.
pub fn apply_request(customer_id: &str, price_cents: i64) -> ApplyReservationRequest {
    ApplyReservationRequest {
        request_id: uuid::Uuid::new_v4().to_string(),
        customer_id: customer_id.to_string(),
        customer_name: "Ada Lovelace".into(),
        place: "12 Analytical Row".into(),
        request_date: (chrono::Utc::now().date_naive() + chrono::Days::new(3))
            .format("%Y-%m-%d")
            .to_string(),
        price_cents,
        paymethod_kind: "debit_card".into(),
    }
}

/// Every row of `tables`, as JSON text in a stable order: two databases hold the same read
/// models exactly when their dumps are equal.
pub async fn dump(pool: &Pool, tables: &[&str]) -> Vec<String> {
    let client = pool.get().await.expect("database");
    let mut out = Vec::new();
    for table in tables {
        let rows = client
            .query(
                &format!(
                    "SELECT '{table} ' || row_to_json(t)::text AS row FROM {table} t ORDER BY row"
                ),
                &[],
            )
            .await
            .expect("dump");
        out.extend(rows.iter().map(|r| r.get::<_, String>(0)));
    }
    out
}

/// A TCP proxy on loopback whose link can be cut and restored: an outage of whatever is
/// behind it, as its clients see one.
pub struct Link {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Link {
    pub async fn to(target: u16) -> Link {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> =
            Arc::default();
        let (flag, open) = (up.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: refused while the link is down
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                open.lock().unwrap().push(task);
            }
        });
        Link {
            port,
            up,
            connections,
        }
    }

    /// Every connection dropped, new ones refused: the other side is gone.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Connections go through again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
