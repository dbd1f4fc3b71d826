//! `GET /health/live`: what test harnesses and orchestrators poll, over HTTP/1.1 or HTTP/2 on
//! the same port as gRPC, answered `204 No Content` as the real server answers it.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http::{self, Method, StatusCode};

/// Routed by tonic under `/health/`; open to everyone, like the real server's.
#[derive(Clone, Copy, Debug, Default)]
pub struct Health;

impl tonic::server::NamedService for Health {
    const NAME: &'static str = "health";
}

impl tonic::codegen::Service<http::Request<Body>> for Health {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let status = match (request.method(), request.uri().path()) {
            (&Method::GET | &Method::HEAD, "/health/live") => StatusCode::NO_CONTENT,
            (_, "/health/live") => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::NOT_FOUND,
        };
        let mut response = http::Response::new(Body::empty());
        *response.status_mut() = status;
        ready(Ok(response))
    }
}
