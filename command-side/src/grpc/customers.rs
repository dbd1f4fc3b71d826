//! `CustomerService`.

use std::sync::Arc;

use access::Action;
use command_core::errors::{checked, Violations};
use command_core::request::{acting_for, authorize, reply, Reply};
use events::KeyStore;
use tonic::Request;

use crate::application::customers::Customers;
use crate::proto::customer_service_server::CustomerService;
use crate::proto::*;

pub struct CustomersOverGrpc<K>(pub Arc<Customers<K>>);

#[tonic::async_trait]
impl<K: KeyStore> CustomerService for CustomersOverGrpc<K> {
    async fn forget_customer(
        &self,
        request: Request<ForgetCustomerRequest>,
    ) -> Reply<CommandReply> {
        let mut v = Violations::default();
        let r = request.get_ref();
        let context = authorize(&request, Action::ForgetCustomer, &r.request_id, &mut v)?;
        let customer_id = acting_for(&context, "customer_id", &r.customer_id, &mut v)?;
        v.finish()?;
        let customer_id = checked(customer_id)?;
        let written = self.0.forget(&context, customer_id).await?;
        Ok(reply(customer_id, written, &context))
    }
}
