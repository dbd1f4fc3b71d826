//! Sealing personal data with a key per customer (crypto-shredding).
//!
//! Each personal field is encrypted with XChaCha20-Poly1305 under its customer's key; the key id
//! travels beside the ciphertext, and the event type, field name and key id are bound in as
//! associated data, so a sealed value cannot be moved to another field or event. Keys live
//! outside the event store behind [`KeyStore`]; destroying one makes every value sealed with it
//! unreadable for good, whatever copies of the log exist.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use domain::CustomerId;
use serde::{Deserialize, Serialize};

/// A customer's data key. Its bytes never print.
#[derive(Clone)]
pub struct CustomerKey {
    pub key_id: String,
    bytes: [u8; 32],
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustomerKey({})", self.key_id)
    }
}

impl CustomerKey {
    /// A fresh random key for `customer`.
    pub fn generate(customer: CustomerId) -> CustomerKey {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        CustomerKey {
            key_id: key_id(customer),
            bytes: key.into(),
        }
    }

    pub fn from_bytes(key_id: String, bytes: [u8; 32]) -> CustomerKey {
        CustomerKey { key_id, bytes }
    }

    /// For the key store that keeps it; never log it.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
}

/// One key per customer, named after them.
pub fn key_id(customer: CustomerId) -> String {
    customer.to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the customer has been forgotten")]
    Forgotten,
    #[error("the key store failed: {0}")]
    Store(String),
}

/// Where customer keys live: outside the event store, narrow on purpose.
pub trait KeyStore: Send + Sync + 'static {
    /// The customer's key, created on first use; refused once the customer is forgotten.
    fn key_for_writing(
        &self,
        customer: CustomerId,
    ) -> impl Future<Output = Result<CustomerKey, KeyError>> + Send;

    /// Whether the customer was forgotten; creates nothing (a cheap check before any work).
    fn is_forgotten(
        &self,
        customer: CustomerId,
    ) -> impl Future<Output = Result<bool, KeyError>> + Send;

    /// The key with this id, or `None` when it was destroyed (or never existed).
    fn key_for_reading(
        &self,
        key_id: &str,
    ) -> impl Future<Output = Result<Option<CustomerKey>, KeyError>> + Send;

    /// Destroys the customer's key for good; true when there was one to destroy.
    fn forget(&self, customer: CustomerId) -> impl Future<Output = Result<bool, KeyError>> + Send;
}

/// For a service whose events carry no personal data (payment): it holds no keys, and asking
/// for one is an error rather than a key made up and lost.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoKeys;

impl NoKeys {
    fn refused() -> KeyError {
        KeyError::Store("this service writes no personal data and holds no keys".into())
    }
}

impl KeyStore for NoKeys {
    async fn key_for_writing(&self, _: CustomerId) -> Result<CustomerKey, KeyError> {
        Err(Self::refused())
    }

    async fn is_forgotten(&self, _: CustomerId) -> Result<bool, KeyError> {
        Err(Self::refused())
    }

    async fn key_for_reading(&self, _: &str) -> Result<Option<CustomerKey>, KeyError> {
        Err(Self::refused())
    }

    async fn forget(&self, _: CustomerId) -> Result<bool, KeyError> {
        Err(Self::refused())
    }
}

/// Keys in memory: for tests and throwaway runs (a restart forgets everyone).
#[derive(Default)]
pub struct InMemoryKeys {
    keys: Mutex<HashMap<String, Option<CustomerKey>>>,
}

impl KeyStore for InMemoryKeys {
    async fn key_for_writing(&self, customer: CustomerId) -> Result<CustomerKey, KeyError> {
        let mut keys = self
            .keys
            .lock()
            .map_err(|_| KeyError::Store("poisoned".into()))?;
        match keys
            .entry(key_id(customer))
            .or_insert_with(|| Some(CustomerKey::generate(customer)))
        {
            Some(key) => Ok(key.clone()),
            None => Err(KeyError::Forgotten),
        }
    }

    async fn is_forgotten(&self, customer: CustomerId) -> Result<bool, KeyError> {
        let keys = self
            .keys
            .lock()
            .map_err(|_| KeyError::Store("poisoned".into()))?;
        Ok(matches!(keys.get(&key_id(customer)), Some(None)))
    }

    async fn key_for_reading(&self, key_id: &str) -> Result<Option<CustomerKey>, KeyError> {
        let keys = self
            .keys
            .lock()
            .map_err(|_| KeyError::Store("poisoned".into()))?;
        Ok(keys.get(key_id).cloned().flatten())
    }

    async fn forget(&self, customer: CustomerId) -> Result<bool, KeyError> {
        let mut keys = self
            .keys
            .lock()
            .map_err(|_| KeyError::Store("poisoned".into()))?;
        let previous = keys.insert(key_id(customer), None);
        Ok(matches!(previous, Some(Some(_))))
    }
}

/// A sealed personal value as it appears in an event payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Which customer key sealed it.
    pub key: String,
    pub nonce: String,
    pub data: String,
}

/// Where a sealed value sits: bound into the ciphertext.
pub struct Context<'a> {
    pub event_type: &'a str,
    pub field: &'a str,
}

pub fn seal(key: &CustomerKey, context: Context<'_>, plaintext: &str) -> Sealed {
    if cfg!(feature = "unsealed-baseline") {
        // The benchmarks' baseline: the same shape, no cipher.
        return Sealed {
            key: key.key_id.clone(),
            nonce: String::new(),
            data: B64.encode(plaintext),
        };
    }
    let cipher = XChaCha20Poly1305::new((&key.bytes).into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let aad = associated_data(&context, &key.key_id);
    // Encryption with a valid key and nonce cannot fail for in-memory buffers.
    let data = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext.as_bytes(),
                aad: &aad,
            },
        )
        .unwrap_or_default();
    Sealed {
        key: key.key_id.clone(),
        nonce: B64.encode(nonce),
        data: B64.encode(data),
    }
}

/// The plaintext, or `None` when the key is gone or the value does not open (tampered or
/// moved): either way, the data is unreadable and shown as erased.
pub fn open(key: Option<&CustomerKey>, context: Context<'_>, sealed: &Sealed) -> Option<String> {
    if cfg!(feature = "unsealed-baseline") {
        let plain = B64.decode(&sealed.data).ok()?;
        return String::from_utf8(plain).ok();
    }
    let key = key.filter(|k| k.key_id == sealed.key)?;
    let nonce = B64.decode(&sealed.nonce).ok()?;
    if nonce.len() != 24 {
        return None;
    }
    let data = B64.decode(&sealed.data).ok()?;
    let cipher = XChaCha20Poly1305::new((&key.bytes).into());
    let aad = associated_data(&context, &key.key_id);
    let plain = cipher
        .decrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &data,
                aad: &aad,
            },
        )
        .ok()?;
    String::from_utf8(plain).ok()
}

fn associated_data(context: &Context<'_>, key_id: &str) -> Vec<u8> {
    format!("{}/{}/{}", context.event_type, context.field, key_id).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(field: &str) -> Context<'_> {
        Context {
            event_type: "CleaningRequested",
            field,
        }
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_place() {
        let customer = CustomerId::new();
        let key = CustomerKey::generate(customer);
        let sealed = seal(&key, context("place"), "12 Analytical Row");
        assert!(!sealed.data.contains("Analytical"));
        assert_eq!(
            open(Some(&key), context("place"), &sealed).as_deref(),
            Some("12 Analytical Row")
        );
        // Moved to another field: refused.
        assert_eq!(open(Some(&key), context("customer_name"), &sealed), None);
        // Another customer's key, or no key: unreadable.
        let other = CustomerKey::generate(CustomerId::new());
        assert_eq!(open(Some(&other), context("place"), &sealed), None);
        assert_eq!(open(None, context("place"), &sealed), None);
    }
}
