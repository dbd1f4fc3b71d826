//! The settings every service reads alike: which issuer to trust, for which audience.

use std::path::PathBuf;
use std::time::Duration;

/// Which tokens a service accepts.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `AUTH_ISSUER`: the issuer URL; tokens must carry exactly this `iss`.
    pub issuer: String,
    /// `AUTH_DISCOVERY_URL`: where OIDC discovery is fetched, by default
    /// `{AUTH_ISSUER}/.well-known/openid-configuration` (set it where the issuer's public
    /// address is not reachable from inside the network, as in docker-compose).
    pub discovery_url: String,
    /// `AUTH_AUDIENCE`: tokens must name this audience in `aud`.
    pub audience: String,
    /// `AUTH_ROLES_CLAIM`: the claim holding the roles, a dotted path (default `roles`);
    /// Keycloak's `realm_access.roles` is always read too.
    pub roles_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// `TLS_CA_FILE`: a PEM bundle trusted beside the system's roots, for the issuer.
    pub ca_file: Option<PathBuf>,
}

/// A service's own identity, for the client-credentials grant.
#[derive(Clone)]
pub struct ClientSettings {
    /// `AUTH_CLIENT_ID`.
    pub client_id: String,
    /// `AUTH_CLIENT_SECRET`, or the contents of the file `AUTH_CLIENT_SECRET_FILE` names.
    pub client_secret: String,
}

impl std::fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log.
        f.debug_struct("ClientSettings")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{name}: {message}")]
pub struct SettingsError {
    pub name: &'static str,
    pub message: String,
}

pub const DEFAULT_AUDIENCE: &str = "cleaning-park";
/// Small: clocks of well-run machines agree within seconds.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

impl AuthSettings {
    pub fn from_env() -> Result<AuthSettings, SettingsError> {
        AuthSettings::from_lookup(|name| std::env::var(name).ok())
    }

    /// There is no default issuer and no way to turn checking off: a service without
    /// `AUTH_ISSUER` does not start.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<AuthSettings, SettingsError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let issuer = get("AUTH_ISSUER").ok_or(SettingsError {
            name: "AUTH_ISSUER",
            message: "is required: the URL of the OpenID Connect issuer whose access tokens \
                      this service accepts"
                .into(),
        })?;
        if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
            return Err(SettingsError {
                name: "AUTH_ISSUER",
                message: format!("{issuer:?} is not an http(s) URL"),
            });
        }
        let discovery_url = get("AUTH_DISCOVERY_URL").unwrap_or_else(|| {
            format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            )
        });
        Ok(AuthSettings {
            issuer,
            discovery_url,
            audience: get("AUTH_AUDIENCE").unwrap_or_else(|| DEFAULT_AUDIENCE.into()),
            roles_claim: get("AUTH_ROLES_CLAIM").unwrap_or_else(|| "roles".into()),
            leeway: DEFAULT_LEEWAY,
            ca_file: get("TLS_CA_FILE").map(PathBuf::from),
        })
    }

    /// Settings for an issuer at `issuer` (tests and `park`).
    pub fn for_issuer(issuer: impl Into<String>) -> AuthSettings {
        let issuer = issuer.into();
        AuthSettings::from_lookup(|name| (name == "AUTH_ISSUER").then(|| issuer.clone()))
            .expect("an http(s) issuer")
    }
}

impl ClientSettings {
    pub fn from_env() -> Result<ClientSettings, SettingsError> {
        ClientSettings::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ClientSettings, SettingsError> {
        let client_id = lookup("AUTH_CLIENT_ID")
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or(SettingsError {
                name: "AUTH_CLIENT_ID",
                message: "is required: this service calls others with its own identity \
                          (client-credentials grant)"
                    .into(),
            })?;
        let client_secret =
            lifecycle::secret(&lookup, "AUTH_CLIENT_SECRET", "AUTH_CLIENT_SECRET_FILE")
                .map_err(|message| SettingsError {
                    name: "AUTH_CLIENT_SECRET_FILE",
                    message,
                })?
                .ok_or(SettingsError {
                    name: "AUTH_CLIENT_SECRET",
                    message: "is required (or AUTH_CLIENT_SECRET_FILE naming a file holding it)"
                        .into(),
                })?;
        Ok(ClientSettings {
            client_id,
            client_secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issuer_is_required_and_the_rest_has_defaults() {
        let err = AuthSettings::from_lookup(|_| None).unwrap_err();
        assert_eq!(err.name, "AUTH_ISSUER");
        let s = AuthSettings::for_issuer("http://127.0.0.1:8180/");
        assert_eq!(
            s.discovery_url,
            "http://127.0.0.1:8180/.well-known/openid-configuration"
        );
        assert_eq!(s.audience, "cleaning-park");
        assert_eq!(s.roles_claim, "roles");
        let err = ClientSettings::from_lookup(|n| (n == "AUTH_CLIENT_ID").then(|| "svc".into()))
            .unwrap_err();
        assert_eq!(err.name, "AUTH_CLIENT_SECRET");
        let debug = format!(
            "{:?}",
            ClientSettings {
                client_id: "svc".into(),
                client_secret: "hunter2".into()
            }
        );
        assert!(!debug.contains("hunter2"));
    }
}
