//! The issuer's ES256 key and the service client's secret, made once and kept on disk.

use std::io::Write;
use std::path::Path;

use aws_lc_rs::rand::SecureRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::IssuerError;

const KEY_FILE: &str = "signing-key.p8";
const SECRET_FILE: &str = "service-client-secret";

/// An ES256 key pair and what the JWKS publishes of it.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pkcs8: Vec<u8>,
    x: String,
    y: String,
}

impl SigningKey {
    pub fn generate() -> Result<SigningKey, IssuerError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| IssuerError::Signing(e.to_string()))?;
        SigningKey::from_pkcs8(document.as_ref())
    }

    fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey, IssuerError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|e| IssuerError::Signing(format!("the signing key is unreadable: {e}")))?;
        // Uncompressed point: 0x04, then x and y, 32 bytes each.
        let point = pair.public_key().as_ref();
        if point.len() != 65 {
            return Err(IssuerError::Signing("unexpected public key shape".into()));
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, point);
        Ok(SigningKey {
            kid: B64.encode(&digest.as_ref()[..12]),
            pkcs8: pkcs8.to_vec(),
            x: B64.encode(&point[1..33]),
            y: B64.encode(&point[33..]),
        })
    }

    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
            "kid": self.kid, "x": self.x, "y": self.y,
        })
    }

    pub fn sign(&self, claims: &impl serde::Serialize) -> Result<String, IssuerError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.pkcs8))
            .map_err(|e| IssuerError::Signing(e.to_string()))
    }
}

pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    // The system's generator does not fail on a working machine; all zeros would be refused
    // by nobody, so fall back to a v4 UUID's randomness rather than panic.
    if aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .is_err()
    {
        bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    B64.encode(bytes)
}

/// The key and secret in `dir`, made on first use.
pub fn load_or_create(dir: &Path) -> Result<(SigningKey, String), IssuerError> {
    let files = |e: std::io::Error| IssuerError::Files {
        path: dir.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(files)?;
    let key_path = dir.join(KEY_FILE);
    let key = match std::fs::read(&key_path) {
        Ok(der) => SigningKey::from_pkcs8(&der)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate()?;
            write_private(&key_path, &key.pkcs8).map_err(files)?;
            key
        }
        Err(e) => return Err(files(e)),
    };
    let secret_path = dir.join(SECRET_FILE);
    let secret = match std::fs::read_to_string(&secret_path) {
        Ok(text) => text.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = random_secret();
            write_private(&secret_path, secret.as_bytes()).map_err(files)?;
            secret
        }
        Err(e) => return Err(files(e)),
    };
    Ok((key, secret))
}

/// Written for the owner's eyes only, and durably.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
