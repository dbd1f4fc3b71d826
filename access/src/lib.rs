//! Identity and access, as an OAuth 2.0 resource server does it: every call carries a bearer
//! access token (RFC 6750, RFC 9068) from the company's identity provider, checked here against
//! the issuer's published keys, and the [`rules`] say what its roles may do.
//!
//! - [`Verifier`]: OIDC discovery, the JWKS cached and refetched (boundedly) on an unknown key,
//!   signature, issuer, audience and lifetime checked, asymmetric algorithms only.
//! - [`Principal`] and [`Role`]: who is calling, from the token's subject and roles.
//! - [`rules`]: the one table of who may do what, and the [`Grant`] a call gets.
//! - [`grpc`]: the tower layer that guards a tonic server, and [`client`]: the services' own
//!   tokens (client-credentials grant) on their outgoing calls.

pub mod client;
pub mod grpc;
mod principal;
pub mod rules;
mod settings;
mod verifier;

pub use principal::{Principal, Role};
pub use rules::{Action, Denied, Grant, Scope};
pub use settings::{AuthSettings, ClientSettings, SettingsError, DEFAULT_AUDIENCE};
pub use verifier::{AuthError, Verifier};
