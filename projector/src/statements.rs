//! The statements a batch makes, collected in order and then sent together: tokio-postgres
//! pipelines them, so a batch of hundreds of events costs a few round trips instead of one per
//! statement, and each distinct statement is parsed and planned once per connection.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;

/// One owned parameter value.
pub type Param = Box<dyn ToSql + Sync + Send>;

/// Owned parameters: `params![a, b, c]`.
#[macro_export]
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        vec![$(Box::new($value) as $crate::statements::Param),*]
    };
}

/// Statements in the order they must run.
#[derive(Default)]
pub struct Statements(Vec<(&'static str, Vec<Param>)>);

impl Statements {
    pub fn push(&mut self, sql: &'static str, params: Vec<Param>) {
        self.0.push((sql, params));
    }

    /// Runs them all, in order, in `tx`.
    pub async fn run(
        self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<(), tokio_postgres::Error> {
        let mut prepared = HashMap::new();
        for (sql, _) in &self.0 {
            if !prepared.contains_key(sql) {
                prepared.insert(*sql, tx.prepare_cached(sql).await?);
            }
        }
        // Sent in order when first polled; answered in order.
        let pending = self.0.iter().map(|(sql, params)| {
            let statement = &prepared[sql];
            async move {
                let params: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                tx.execute(statement, &params).await
            }
        });
        futures::future::try_join_all(pending).await?;
        Ok(())
    }
}
