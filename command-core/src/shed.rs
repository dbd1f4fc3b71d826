//! Overload: at most so many calls at once per instance, and the rest refused at once with
//! RESOURCE_EXHAUSTED and a retry hint, instead of queueing without bound; memory stays
//! bounded and the accepted calls keep their latency. Health checks are never refused.
//!
//! `PaymentService` has permits of its own: `ApplyReservation` holds one while it pays, and
//! with a shared pool a full house of applications would refuse its own payments.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// How long a refused caller is told to wait.
const RETRY_AFTER: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub struct Shed {
    commands: Arc<Semaphore>,
    payments: Arc<Semaphore>,
}

impl Shed {
    /// At most `limit` calls at once, and as many payments beside them.
    pub fn new(limit: usize) -> Shed {
        Shed {
            commands: Arc::new(Semaphore::new(limit)),
            payments: Arc::new(Semaphore::new(limit)),
        }
    }
}

impl<S> tower::Layer<S> for Shed {
    type Service = Shedding<S>;

    fn layer(&self, inner: S) -> Shedding<S> {
        Shedding {
            inner,
            shed: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Shedding<S> {
    inner: S,
    shed: Shed,
}

impl<S, B, R> tower::Service<http::Request<B>> for Shedding<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if path.starts_with("/grpc.health.") {
            return Box::pin(self.inner.call(request));
        }
        let pool = if path.starts_with("/cleaning.v1.PaymentService/") {
            &self.shed.payments
        } else {
            &self.shed.commands
        };
        match pool.clone().try_acquire_owned() {
            Ok(permit) => {
                let response = self.inner.call(request);
                Box::pin(async move {
                    let result = response.await;
                    drop(permit);
                    result
                })
            }
            Err(_) => {
                metrics::counter!("grpc_calls_shed_total").increment(1);
                let mut details = ErrorDetails::new();
                details.set_retry_info(Some(RETRY_AFTER));
                let status = Status::with_error_details(
                    Code::ResourceExhausted,
                    "overloaded: too many calls at once; try again later",
                    details,
                );
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
