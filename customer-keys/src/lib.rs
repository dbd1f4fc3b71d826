//! The customers' data keys, kept in PostgreSQL and never in the event store.
//!
//! The command side seals personal fields with a customer's key and the projector opens them;
//! both reach this one table. `forget` replaces the key with nothing and keeps the row, so the
//! key is never made again and new personal data for that customer is refused.
//!
//! What "destroyed" means here: the key is gone from the live table at once. Like any row
//! PostgreSQL overwrote, the old bytes may linger in dead tuples until vacuum, in the WAL and in
//! backups until they rotate; keep this database's backups on a short retention.

use deadpool_postgres::Pool;
use domain::CustomerId;
use events::sealing::key_id;
use events::{CustomerKey, KeyError, KeyStore};

mod embedded {
    refinery::embed_migrations!("migrations");
}

pub use read_models::DbError;

/// The key store in PostgreSQL.
#[derive(Clone)]
pub struct PostgresKeys {
    pool: Pool,
}

impl std::fmt::Debug for PostgresKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresKeys")
    }
}

/// `KEY_STORE_URL` when set; otherwise the read models' database (`DATABASE_URL` or `PG*`).
/// A separate database lets the keys have their own access rights and backup retention.
pub fn config_from_env() -> Result<tokio_postgres::Config, DbError> {
    match std::env::var("KEY_STORE_URL") {
        Ok(url) if !url.is_empty() => url
            .parse()
            .map_err(|e| DbError::Config(format!("KEY_STORE_URL: {e}"))),
        _ => read_models::config_from_env(),
    }
}

impl PostgresKeys {
    /// Connects and brings the key table up to date (idempotent).
    pub async fn connect(
        config: tokio_postgres::Config,
        pool_size: usize,
    ) -> Result<Self, DbError> {
        let keys = PostgresKeys {
            pool: read_models::pool(config, pool_size)?,
        };
        keys.migrate().await?;
        Ok(keys)
    }

    /// On a pool the caller already has (tests, or one database for everything).
    pub async fn with_pool(pool: Pool) -> Result<Self, DbError> {
        let keys = PostgresKeys { pool };
        keys.migrate().await?;
        Ok(keys)
    }

    async fn migrate(&self) -> Result<(), DbError> {
        let mut client = self.pool.get().await?;
        let client: &mut tokio_postgres::Client = &mut client;
        // Its own history table, so that it can share a database with the read models.
        embedded::migrations::runner()
            .set_migration_table_name("customer_keys_schema_history")
            .run_async(client)
            .await?;
        Ok(())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, KeyError> {
        self.pool.get().await.map_err(store_error)
    }
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
        let fresh = CustomerKey::generate(customer);
        let client = self.client().await?;
        // One round trip: insert the fresh key unless there is a row, and return whichever
        // row stands (the inserted one, or the existing one, possibly forgotten).
        let row = client
            .query_one(
                "WITH inserted AS (
                     INSERT INTO customer_keys (key_id, key) VALUES ($1, $2)
                     ON CONFLICT (key_id) DO NOTHING
                     RETURNING key)
                 SELECT key FROM inserted
                 UNION ALL
                 SELECT key FROM customer_keys WHERE key_id = $1
                 LIMIT 1",
                &[&fresh.key_id, &fresh.bytes().as_slice()],
            )
            .await
            .map_err(store_error)?;
        match row.get::<_, Option<&[u8]>>(0) {
            Some(bytes) => key_from_row(&fresh.key_id, bytes),
            None => Err(KeyError::Forgotten),
        }
    }

    async fn key_for_reading(&self, key_id: &str) -> Result<Option<CustomerKey>, KeyError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT key FROM customer_keys WHERE key_id = $1",
                &[&key_id],
            )
            .await
            .map_err(store_error)?;
        match row.and_then(|r| r.get::<_, Option<Vec<u8>>>(0)) {
            Some(bytes) => key_from_row(key_id, &bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn forget(&self, customer: CustomerId) -> Result<bool, KeyError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(store_error)?;
        let key_id = key_id(customer);
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
        Ok(previous.is_some_and(|row| row.get::<_, bool>(0)))
    }
}
