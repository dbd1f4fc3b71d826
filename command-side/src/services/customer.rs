//! `CustomerService`: forgetting a customer (crypto-shredding).

use std::sync::Arc;

use domain::customer::{Customer, CustomerError, ForgetCustomer};
use events::KeyStore;
use tonic::Request;

use access::Action;

use api_contract::customer_service_server::CustomerService;
use api_contract::*;
use command_core::errors::{CommandError, Violations};
use command_core::execute::{Executor, Target};
use command_core::request::{acting_for, authorize, reply, Reply};
use command_core::store::StoreError;

pub struct Customers<K> {
    pub executor: Arc<Executor<K>>,
}

#[tonic::async_trait]
impl<K: KeyStore> CustomerService for Customers<K> {
    async fn forget_customer(
        &self,
        request: Request<ForgetCustomerRequest>,
    ) -> Reply<CommandReply> {
        let mut v = Violations::default();
        let r = request.get_ref();
        let context = authorize(&request, Action::ForgetCustomer, &r.request_id, &mut v)?;
        let customer_id = acting_for(&context, "customer_id", &r.customer_id, &mut v)?;
        v.finish()?;
        let customer_id = customer_id.unwrap_or_default();
        // The key goes first (destroying it twice is harmless): once this call has answered,
        // the data is unreadable even if recording the fact had failed.
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
        let written = self
            .executor
            .execute(
                &target,
                &ForgetCustomer { customer_id },
                &context,
                |e: CustomerError| CommandError::Refused(e.to_string()),
            )
            .await?;
        Ok(reply(customer_id, written, &context))
    }
}
