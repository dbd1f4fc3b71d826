//! The guard of a tonic server: every call but health and reflection needs a valid bearer
//! token, whose [`Principal`] the handlers then find in the request's extensions.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::Status;

use crate::{Action, AuthError, Grant, Principal, Verifier};

/// Reachable without a token: what orchestrators and tools poll or ask before they call.
pub const OPEN_SERVICES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The layer: `Server::builder().layer(RequireToken::new(verifier))`.
#[derive(Clone)]
pub struct RequireToken {
    verifier: Verifier,
}

impl RequireToken {
    pub fn new(verifier: Verifier) -> RequireToken {
        RequireToken { verifier }
    }
}

impl<S> tower::Layer<S> for RequireToken {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    verifier: Verifier,
}

impl<S, B, R> tower::Service<http::Request<B>> for Guarded<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path();
        if OPEN_SERVICES.iter().any(|open| path.starts_with(open)) {
            return Box::pin(inner.call(request));
        }
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match verifier.verify_header(header).await {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(refusal) => Ok(refused(refusal)),
            }
        })
    }
}

/// UNAUTHENTICATED with the RFC 6750 challenge in `www-authenticate`, or UNAVAILABLE when
/// tokens cannot be checked at the moment.
fn refused<R: Default>(refusal: AuthError) -> http::Response<R> {
    let mut status = match &refusal {
        AuthError::Unavailable(_) => Status::unavailable(refusal.to_string()),
        _ => Status::unauthenticated(refusal.to_string()),
    };
    if let Ok(challenge) = refusal.challenge().parse() {
        status.metadata_mut().insert("www-authenticate", challenge);
    }
    status.into_http()
}

/// The caller of a request that passed the guard. Without the guard in front there is none,
/// and every call is refused: forgetting the layer cannot open the service.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<&Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .ok_or_else(|| Status::unauthenticated(AuthError::Missing.to_string()))
}

/// What the caller may reach for `action`; PERMISSION_DENIED when its roles may not take it.
pub fn grant<T>(request: &tonic::Request<T>, action: Action) -> Result<Grant, Status> {
    principal(request)?
        .may(action)
        .map_err(|denied| Status::permission_denied(denied.0))
}
