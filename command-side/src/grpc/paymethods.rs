//! `PaymethodService`.

use std::sync::Arc;

use access::Action;
use command_core::errors::{checked, Violations};
use command_core::request::{acting_for, authorize, reply, Reply};
use domain::reservation::MAX_NAME;
use domain::{MaskedNumber, PaymethodId, PaymethodKind, Personal};
use events::KeyStore;
use tonic::Request;

use crate::application::paymethods::{Method, Paymethods};
use crate::proto::paymethod_service_server::PaymethodService;
use crate::proto::*;

pub struct PaymethodsOverGrpc<K>(pub Arc<Paymethods<K>>);

/// Checks kind and number; the number is masked at once and the full one goes only to the
/// payment service's check.
fn method(v: &mut Violations, kind: &str, number: &str) -> Option<Method> {
    let kind = v.check("kind", PaymethodKind::parse(kind))?;
    let masked_number = v.check("number", MaskedNumber::mask(kind, number))?;
    Some(Method {
        kind,
        masked_number,
    })
}

#[tonic::async_trait]
impl<K: KeyStore> PaymethodService for PaymethodsOverGrpc<K> {
    async fn register_paymethod(
        &self,
        request: Request<RegisterPaymethodRequest>,
    ) -> Reply<CommandReply> {
        let mut v = Violations::default();
        let r = request.get_ref();
        let context = authorize(&request, Action::RegisterPaymethod, &r.request_id, &mut v)?;
        let customer_id = acting_for(&context, "customer_id", &r.customer_id, &mut v)?;
        let customer_name = v.check("customer_name", Personal::text(&r.customer_name, MAX_NAME));
        let method = method(&mut v, &r.kind, &r.number);
        v.finish()?;
        let (id, written) = self
            .0
            .register(
                &context,
                checked(customer_id)?,
                checked(customer_name)?,
                checked(method)?,
                &r.number,
            )
            .await?;
        Ok(reply(id, written, &context))
    }

    async fn change_paymethod(
        &self,
        request: Request<ChangePaymethodRequest>,
    ) -> Reply<CommandReply> {
        let mut v = Violations::default();
        let r = request.get_ref();
        let context = authorize(&request, Action::ChangePaymethod, &r.request_id, &mut v)?;
        let id = v.check("paymethod_id", PaymethodId::parse(&r.paymethod_id));
        let method = method(&mut v, &r.kind, &r.number);
        v.finish()?;
        let id = checked(id)?;
        let written = self
            .0
            .change(&context, id, checked(method)?, &r.number)
            .await?;
        Ok(reply(id, written, &context))
    }
}
