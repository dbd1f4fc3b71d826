//! The customers' data keys, kept in PostgreSQL and never in the event store.
//!
//! The command side seals personal fields with a customer's key and the projector opens them;
//! both reach this one table. `forget` replaces the key with nothing and keeps the row, so the
//! key is never made again and new personal data for that customer is refused.
//!
//! What "destroyed" means here: the key is gone from the live table at once. Like any row
//! PostgreSQL overwrote, the old bytes may linger in dead tuples until vacuum, in the WAL and in
//! backups until they rotate; keep this database's backups on a short retention.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use batch::Batcher;
use deadpool_postgres::Pool;
use domain::CustomerId;
use events::sealing::key_id;
use events::{CustomerKey, KeyError, KeyStore};

mod batch;

mod embedded {
    refinery::embed_migrations!("migrations");
}

pub use read_models::DbError;

/// The key store in PostgreSQL.
#[derive(Clone)]
pub struct PostgresKeys {
    pool: Pool,
    /// Keys handed out for writing in the last [`RECENT`]: a command asks twice (is the
    /// customer forgotten? then: seal), and a customer's commands come in bursts.
    recent: Arc<Mutex<HashMap<String, (CustomerKey, Instant)>>>,
    /// Fresh keys in, the key that stands (or `None`: forgotten) out.
    writes: Batcher<CustomerKey, Option<CustomerKey>>,
    /// Key ids in, whether forgotten out.
    checks: Batcher<String, bool>,
}

/// How long a key handed out for writing is reused without asking PostgreSQL again. A
/// `forget` served by this process takes effect at once; one served by another replica is seen
/// here within this time, and anything sealed meanwhile is sealed with the destroyed key,
/// hence unreadable: the delay can refuse a command late, never reveal data.
pub const RECENT: Duration = Duration::from_secs(1);
const RECENT_MAX: usize = 10_000;

impl std::fmt::Debug for PostgresKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresKeys")
    }
}

/// `KEY_STORE_URL` (or the file `KEY_STORE_URL_FILE` names) when set; otherwise the read models' database (`DATABASE_URL` or `PG*`).
/// A separate database lets the keys have their own access rights and backup retention.
pub fn config_from_env() -> Result<tokio_postgres::Config, DbError> {
    match lifecycle::secret_from_env("KEY_STORE_URL", "KEY_STORE_URL_FILE")
        .map_err(DbError::Config)?
    {
        Some(url) => url
            .parse()
            .map_err(|e| DbError::Config(format!("KEY_STORE_URL: {e}"))),
        None => read_models::config_from_env(),
    }
}

impl PostgresKeys {
    /// Connects and brings the key table up to date (idempotent).
    pub async fn connect(
        config: tokio_postgres::Config,
        pool_size: usize,
    ) -> Result<Self, DbError> {
        let keys = PostgresKeys::new(read_models::pool(config, pool_size)?);
        keys.migrate().await?;
        Ok(keys)
    }

    /// On a pool the caller already has (tests, or one database for everything).
    pub async fn with_pool(pool: Pool) -> Result<Self, DbError> {
        let keys = PostgresKeys::new(pool);
        keys.migrate().await?;
        Ok(keys)
    }

    fn new(pool: Pool) -> Self {
        let writer = pool.clone();
        let checker = pool.clone();
        PostgresKeys {
            pool,
            recent: Arc::default(),
            writes: Batcher::start(move |fresh| write_keys(writer.clone(), fresh)),
            checks: Batcher::start(move |ids| check_keys(checker.clone(), ids)),
        }
    }

    fn recent_key(&self, key_id: &str) -> Option<CustomerKey> {
        let recent = self.recent.lock().ok()?;
        let (key, at) = recent.get(key_id)?;
        (at.elapsed() < RECENT).then(|| key.clone())
    }

    fn remember(&self, key: &CustomerKey) {
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() >= RECENT_MAX {
                recent.retain(|_, (_, at)| at.elapsed() < RECENT);
            }
            recent.insert(key.key_id.clone(), (key.clone(), Instant::now()));
        }
    }

    fn drop_recent(&self, key_id: &str) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.remove(key_id);
        }
    }

    async fn migrate(&self) -> Result<(), DbError> {
        let mut client = self.pool.get().await?;
        // Its own history table, so that it can share a database with the read models.
        let mut runner = embedded::migrations::runner();
        runner.set_migration_table_name("customer_keys_schema_history");
        read_models::migrate_exclusively(&mut client, runner).await?;
        Ok(())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, KeyError> {
        self.pool.get().await.map_err(store_error)
    }
}

/// One statement for a batch of first uses: inserts each fresh key unless its customer has a
/// row, and answers with the key that stands (the inserted or the existing one; `None` for a
/// forgotten customer), in the order asked.
async fn write_keys(
    pool: Pool,
    fresh: Vec<CustomerKey>,
) -> Result<Vec<Option<CustomerKey>>, KeyError> {
    let ids: Vec<&str> = fresh.iter().map(|k| k.key_id.as_str()).collect();
    let bytes: Vec<&[u8]> = fresh.iter().map(|k| k.bytes().as_slice()).collect();
    let client = pool.get().await.map_err(store_error)?;
    let statement = client
        .prepare_cached(
            "WITH input AS (
                 SELECT DISTINCT ON (key_id) key_id, key
                 FROM unnest($1::text[], $2::bytea[]) AS i(key_id, key)),
             inserted AS (
                 INSERT INTO customer_keys (key_id, key) SELECT key_id, key FROM input
                 ON CONFLICT (key_id) DO NOTHING
                 RETURNING key_id, key)
             SELECT key_id, key FROM inserted
             UNION ALL
             SELECT c.key_id, c.key FROM customer_keys c JOIN input USING (key_id)",
        )
        .await
        .map_err(store_error)?;
    let rows = client
        .query(&statement, &[&ids, &bytes])
        .await
        .map_err(store_error)?;
    let mut standing = HashMap::new();
    for row in &rows {
        let key_id: String = row.get(0);
        let key = match row.get::<_, Option<&[u8]>>(1) {
            Some(bytes) => Some(key_from_row(&key_id, bytes)?),
            None => None,
        };
        standing.insert(key_id, key);
    }
    fresh
        .iter()
        .map(|k| {
            standing
                .get(&k.key_id)
                .cloned()
                .ok_or_else(|| KeyError::Store("a key was neither written nor found".into()))
        })
        .collect()
}

/// One statement for a batch of checks: which of these customers are forgotten.
async fn check_keys(pool: Pool, ids: Vec<String>) -> Result<Vec<bool>, KeyError> {
    let client = pool.get().await.map_err(store_error)?;
    let statement = client
        .prepare_cached("SELECT key_id FROM customer_keys WHERE key_id = ANY($1) AND key IS NULL")
        .await
        .map_err(store_error)?;
    let rows = client
        .query(&statement, &[&ids])
        .await
        .map_err(store_error)?;
    let forgotten: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(ids.iter().map(|id| forgotten.contains(id)).collect())
}

/// Errors say what failed, never which key or its bytes.
fn store_error(e: impl std::fmt::Display) -> KeyError {
    KeyError::Store(e.to_string())
}

fn key_from_row(key_id: &str, bytes: &[u8]) -> Result<CustomerKey, KeyError> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| KeyError::Store("a stored key is not 32 bytes".into()))?;
    Ok(CustomerKey::from_bytes(key_id.to_string(), bytes))
}

impl KeyStore for PostgresKeys {
    async fn key_for_writing(&self, customer: CustomerId) -> Result<CustomerKey, KeyError> {
        if let Some(key) = self.recent_key(&key_id(customer)) {
            return Ok(key);
        }
        match self.writes.call(CustomerKey::generate(customer)).await? {
            Some(key) => {
                self.remember(&key);
                Ok(key)
            }
            None => Err(KeyError::Forgotten),
        }
    }

    async fn is_forgotten(&self, customer: CustomerId) -> Result<bool, KeyError> {
        let key_id = key_id(customer);
        if self.recent_key(&key_id).is_some() {
            return Ok(false);
        }
        self.checks.call(key_id).await
    }

    async fn key_for_reading(&self, key_id: &str) -> Result<Option<CustomerKey>, KeyError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT key FROM customer_keys WHERE key_id = $1")
            .await
            .map_err(store_error)?;
        let row = client
            .query_opt(&statement, &[&key_id])
            .await
            .map_err(store_error)?;
        match row.and_then(|r| r.get::<_, Option<Vec<u8>>>(0)) {
            Some(bytes) => key_from_row(key_id, &bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn forget(&self, customer: CustomerId) -> Result<bool, KeyError> {
        let key_id = key_id(customer);
        self.drop_recent(&key_id);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(store_error)?;
        let previous = tx
            .query_opt(
                "SELECT key IS NOT NULL FROM customer_keys WHERE key_id = $1 FOR UPDATE",
                &[&key_id],
            )
            .await
            .map_err(store_error)?;
        // A customer who never had a key gets a forgotten row too: none is ever made for them.
        tx.execute(
            "INSERT INTO customer_keys (key_id, key, forgotten_at) VALUES ($1, NULL, now())
             ON CONFLICT (key_id) DO UPDATE
                 SET key = NULL,
                     forgotten_at = coalesce(customer_keys.forgotten_at, excluded.forgotten_at)",
            &[&key_id],
        )
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        self.drop_recent(&key_id);
        Ok(previous.is_some_and(|row| row.get::<_, bool>(0)))
    }
}
