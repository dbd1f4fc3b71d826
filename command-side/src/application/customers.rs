//! Customers: forgetting one (crypto-shredding).

use std::sync::Arc;

use command_core::errors::CommandError;
use command_core::execute::{Executor, Target};
use command_core::store::{RequestContext, StoreError, Written};
use domain::customer::{Customer, CustomerError, ForgetCustomer};
use domain::CustomerId;
use events::KeyStore;

pub struct Customers<K> {
    pub executor: Arc<Executor<K>>,
}

impl<K: KeyStore> Customers<K> {
    /// Destroys the customer's key, then records that they were forgotten. The key goes first
    /// (destroying it twice is harmless): once this has answered, their data is unreadable even
    /// if recording the fact had failed.
    pub async fn forget(
        &self,
        context: &RequestContext,
        customer_id: CustomerId,
    ) -> Result<Written, CommandError> {
        self.executor
            .store
            .keys()
            .forget(customer_id)
            .await
            .map_err(|e| CommandError::from(StoreError::from(e)))?;
        let target = Target::<Customer> {
            stream: events::streams::customer(customer_id),
            safe_to_repeat: true,
            owner: None,
        };
        self.executor
            .execute(
                &target,
                &ForgetCustomer { customer_id },
                context,
                |e: CustomerError| CommandError::Refused(e.to_string()),
            )
            .await
    }
}
