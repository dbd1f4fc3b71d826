//! Optional basic authentication: one user, checked on every call but discovery.

use base64::Engine;
use tonic::{Request, Status};

use super::errors;

#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    /// Parses `user:password`.
    pub fn parse(text: &str) -> Option<Credentials> {
        let (username, password) = text.split_once(':')?;
        Some(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        })
    }
}

/// The user named by a request's basic credentials (checked by [`Authenticate`] already).
pub fn username(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    basic_credentials(metadata).map(|c| c.username)
}

fn basic_credentials(metadata: &tonic::metadata::MetadataMap) -> Option<Credentials> {
    metadata
        .get("authorization")?
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|text| Credentials::parse(&text))
}

/// An interceptor that lets every call through when no credentials are configured.
#[derive(Clone)]
pub struct Authenticate(pub Option<Credentials>);

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.0 else {
            return Ok(request);
        };
        if request.metadata().get("authorization").is_none() {
            return Err(errors::access_denied());
        }
        match basic_credentials(request.metadata()) {
            Some(c) if c.username == expected.username && c.password == expected.password => {
                Ok(request)
            }
            _ => Err(Status::unauthenticated("Bad credentials")),
        }
    }
}
