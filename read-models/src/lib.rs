//! The PostgreSQL read models: their schema (versioned migrations in `migrations/`, applied by
//! refinery) and the connection settings the projector and the query side share.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

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
/// `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD` and `PGDATABASE` variables (what `pg_virtualenv`
/// and most tools set).
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
    config.application_name("cleaning-park-projector");
    Ok(config)
}

pub fn pool(config: tokio_postgres::Config, size: usize) -> Result<Pool, DbError> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .build()
        .map_err(|e| DbError::Config(e.to_string()))
}

/// Applies the versioned migrations that are not applied yet; running it again does nothing.
pub async fn migrate(pool: &Pool) -> Result<(), DbError> {
    let mut client = pool.get().await?;
    let client: &mut tokio_postgres::Client = &mut client;
    let report = embedded::migrations::runner().run_async(client).await?;
    for migration in report.applied_migrations() {
        tracing::info!(migration = %migration, "applied");
    }
    Ok(())
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
