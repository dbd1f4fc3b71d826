//! The PostgreSQL read models: their schema (versioned migrations in `migrations/`, applied by
//! refinery) and the connection settings the projector and the query side share.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

pub mod changes;
pub mod models;
mod tls;

pub use models::ReadModel;

mod embedded {
    refinery::embed_migrations!("migrations");
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database settings: {0}")]
    Config(String),
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("migrations: {0}")]
    Migration(#[from] refinery::Error),
}

/// `DATABASE_URL` (or the file `DATABASE_URL_FILE` names) when set, else the standard
/// `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE` and `PGSSLMODE` variables (what
/// `pg_virtualenv` and most tools set).
pub fn config_from_env() -> Result<tokio_postgres::Config, DbError> {
    if let Some(url) =
        lifecycle::secret_from_env("DATABASE_URL", "DATABASE_URL_FILE").map_err(DbError::Config)?
    {
        return url
            .parse()
            .map_err(|e| DbError::Config(format!("DATABASE_URL: {e}")));
    }
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut config = tokio_postgres::Config::new();
    config.host(var("PGHOST").as_deref().unwrap_or("localhost"));
    if let Some(port) = var("PGPORT") {
        config.port(
            port.parse()
                .map_err(|_| DbError::Config(format!("PGPORT: {port:?} is not a port")))?,
        );
    }
    config.user(var("PGUSER").as_deref().unwrap_or("postgres"));
    if let Some(password) = var("PGPASSWORD") {
        config.password(password);
    }
    config.dbname(var("PGDATABASE").as_deref().unwrap_or("postgres"));
    match var("PGSSLMODE").as_deref() {
        None | Some("prefer") => {}
        Some("disable") => {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        Some("require") | Some("verify-ca") | Some("verify-full") => {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        Some(other) => {
            return Err(DbError::Config(format!(
                "PGSSLMODE: {other:?} is not disable, prefer, require, verify-ca or verify-full"
            )))
        }
    }
    config.application_name("cleaning-park-projector");
    Ok(config)
}

/// A pool on `config`; TLS (verified) when its `sslmode` is `require`, trusting the system's
/// roots and `TLS_CA_FILE`.
pub fn pool(config: tokio_postgres::Config, size: usize) -> Result<Pool, DbError> {
    let ca_file = std::env::var_os("TLS_CA_FILE").filter(|v| !v.is_empty());
    pool_with_ca(config, size, ca_file.as_deref().map(std::path::Path::new))
}

/// [`pool`], trusting `ca_file` beside the system's roots.
pub fn pool_with_ca(
    config: tokio_postgres::Config,
    size: usize,
    ca_file: Option<&std::path::Path>,
) -> Result<Pool, DbError> {
    let settings = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls::connector(&config, ca_file)? {
        Some(tls) => Manager::from_config(config, tls, settings),
        None => Manager::from_config(config, NoTls, settings),
    };
    Pool::builder(manager)
        .max_size(size)
        .build()
        .map_err(|e| DbError::Config(e.to_string()))
}

/// Applies the versioned migrations that are not applied yet; running it again does nothing.
pub async fn migrate(pool: &Pool) -> Result<(), DbError> {
    let mut client = pool.get().await?;
    let report = migrate_exclusively(&mut client, embedded::migrations::runner()).await?;
    for migration in report.applied_migrations() {
        tracing::info!(migration = %migration, "applied");
    }
    Ok(())
}

/// Runs `runner` while holding the database's migration lock, so that replicas starting
/// together (as Kubernetes starts them) migrate one after the other: the later ones find
/// nothing left to do instead of failing on a table the first has just created. The lock is a
/// session advisory lock, released with the connection should the process die.
pub async fn migrate_exclusively(
    client: &mut tokio_postgres::Client,
    runner: refinery::Runner,
) -> Result<refinery::Report, DbError> {
    const LOCK: &str = "SELECT pg_advisory_lock(hashtext('cleaning-park migrations'))";
    const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtext('cleaning-park migrations'))";
    client.batch_execute(LOCK).await?;
    let report = runner.run_async(client).await;
    client.batch_execute(UNLOCK).await?;
    Ok(report?)
}

/// Creates the database `name` on the cluster `admin` reaches, unless it exists.
pub async fn create_database(admin: &tokio_postgres::Config, name: &str) -> Result<(), DbError> {
    let (client, connection) = admin.connect(NoTls).await?;
    tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
    }
    Ok(())
}
