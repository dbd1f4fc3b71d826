//! TLS to PostgreSQL: with `sslmode=require` in the connection settings (`DATABASE_URL`,
//! `KEY_STORE_URL`, or `PGSSLMODE`), the connection is encrypted and the server verified as
//! libpq's `verify-full` does: its certificate must chain to the system's roots or
//! `TLS_CA_FILE`, for the host name connected to. Without it (the default `prefer`, or
//! `disable`), connections are plain, as on a developer's machine and in the tests.

use std::path::Path;

use tokio_postgres::config::SslMode;

use crate::DbError;

/// A verifying TLS connector, when the settings ask for TLS.
pub fn connector(
    config: &tokio_postgres::Config,
    ca_file: Option<&Path>,
) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, DbError> {
    if matches!(config.get_ssl_mode(), SslMode::Disable | SslMode::Prefer) {
        return Ok(None);
    }
    lifecycle::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_native_certs::load_native_certs().certs {
        // A system certificate rustls cannot use is passed over, as browsers do.
        let _ = roots.add(certificate);
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| DbError::Config(format!("TLS_CA_FILE {}: {e}", path.display())))?;
        for certificate in rustls_pemfile_certs(&pem, path)? {
            roots
                .add(certificate)
                .map_err(|e| DbError::Config(format!("TLS_CA_FILE {}: {e}", path.display())))?;
        }
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
}

fn rustls_pemfile_certs(
    pem: &[u8],
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, DbError> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DbError::Config(format!("TLS_CA_FILE {}: {e}", path.display())))
}
