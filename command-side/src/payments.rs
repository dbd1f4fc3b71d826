//! Calls to `PaymentService` over gRPC: with a deadline, behind a circuit breaker, so that a
//! slow or dead payment service makes callers fail fast with UNAVAILABLE instead of hanging.

use std::time::Duration;

use access::client::{AuthorizedChannel, Credentials, WithToken};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};
use tracing::Instrument;

use api_contract::payment_service_client::PaymentServiceClient;
use api_contract::{PayReply, PayRequest, VerifyPaymethodReply, VerifyPaymethodRequest};
use command_core::errors::CommandError;
use command_core::request::CORRELATION_HEADER;
use command_core::store::RequestContext;

use crate::breaker::Breaker;

/// When a caller should try again after payment failed or did not answer: soon, as most
/// failures are brief; a longer outage opens the circuit, which says its own time.
const RETRY_AFTER: Duration = Duration::from_secs(1);

pub struct PaymentGateway {
    client: PaymentServiceClient<AuthorizedChannel>,
    breaker: Breaker,
    timeout: Duration,
}

impl PaymentGateway {
    /// Connects lazily: the payment service may come up after its callers. The calls carry
    /// `credentials` (the command side's own identity, never a customer's), and an `https`
    /// endpoint is verified against the system's roots and `ca_file`.
    pub fn new(
        endpoint: &str,
        timeout: Duration,
        breaker: Breaker,
        credentials: Credentials,
        ca_file: Option<&std::path::Path>,
    ) -> anyhow::Result<PaymentGateway> {
        let endpoint = access::client::grpc_endpoint(endpoint, ca_file)
            .map_err(anyhow::Error::msg)?
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        Ok(PaymentGateway {
            client: PaymentServiceClient::new(WithToken::new(channel, credentials)),
            breaker,
            timeout,
        })
    }

    pub async fn pay(
        &self,
        request: PayRequest,
        context: &RequestContext,
    ) -> Result<PayReply, CommandError> {
        let mut client = self.client.clone();
        self.call(
            context,
            "Pay",
            request,
            |r| async move { client.pay(r).await },
        )
        .await
    }

    pub async fn verify(
        &self,
        request: VerifyPaymethodRequest,
        context: &RequestContext,
    ) -> Result<VerifyPaymethodReply, CommandError> {
        let mut client = self.client.clone();
        self.call(context, "VerifyPaymethod", request, |r| async move {
            client.verify_paymethod(r).await
        })
        .await
    }

    async fn call<Q, R, F, Fut>(
        &self,
        context: &RequestContext,
        method: &str,
        message: Q,
        send: F,
    ) -> Result<R, CommandError>
    where
        F: FnOnce(Request<Q>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        if let Err(open) = self.breaker.admit() {
            return Err(CommandError::Unavailable {
                reason: "the payment service is unavailable (circuit open)".into(),
                retry_after: open.retry_after,
            });
        }
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        if let Ok(value) = MetadataValue::try_from(context.correlation_id.to_string()) {
            request.metadata_mut().insert(CORRELATION_HEADER, value);
        }
        // The client side of the call; payment's own span is its child (`traceparent`).
        let span = tracing::info_span!(
            "grpc client",
            otel.name = %format_args!("cleaning.v1.PaymentService/{method}"),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = "cleaning.v1.PaymentService",
            rpc.method = %method,
        );
        let answer = tokio::time::timeout(self.timeout, send(request))
            .instrument(span)
            .await;
        match answer {
            Ok(Ok(response)) => {
                self.breaker.succeeded();
                Ok(response.into_inner())
            }
            Ok(Err(status)) if is_outage(status.code()) => {
                self.breaker.failed();
                Err(CommandError::Unavailable {
                    reason: format!("the payment service failed: {}", status.message()),
                    retry_after: RETRY_AFTER,
                })
            }
            Ok(Err(status)) => {
                // The service answered: it is up, the request itself was refused.
                self.breaker.succeeded();
                Err(CommandError::Internal(format!(
                    "payment service refused the call: {status}"
                )))
            }
            Err(_) => {
                self.breaker.failed();
                Err(CommandError::Unavailable {
                    reason: format!(
                        "the payment service did not answer within {} ms",
                        self.timeout.as_millis()
                    ),
                    retry_after: RETRY_AFTER,
                })
            }
        }
    }
}

fn is_outage(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
            | Code::ResourceExhausted
    )
}
