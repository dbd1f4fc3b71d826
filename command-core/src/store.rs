//! The event store adapter: loads an aggregate's stream and appends its new events, through
//! the official `kurrentdb` client.

use std::sync::{Arc, RwLock};

use domain::Aggregate;
use events::{Event, KeyError, KeyStore, Metadata};
use kurrentdb::{AppendToStreamOptions, Client, EventData, ReadStreamOptions, StreamState};
use uuid::Uuid;

/// Who asked, and what for: ties every event to its request and its caller.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The client's request id: event ids derive from it, so a retry is recognised.
    pub request_id: Uuid,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    /// What the caller may reach; its subject and role are recorded as each event's actor.
    pub grant: access::Grant,
}

impl RequestContext {
    pub fn actor(&self) -> events::Actor {
        events::Actor {
            subject: self.grant.subject.clone(),
            role: self.grant.role.as_str().to_string(),
        }
    }
}

/// Where a write landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub revision: u64,
    pub position: u64,
}

/// An aggregate as loaded from its stream.
pub struct Loaded<A> {
    pub state: A,
    /// `None` while the stream does not exist.
    pub revision: Option<u64>,
    /// Ids of the stored events, with their revision and position, to recognise a retry.
    pub stored: Vec<(Uuid, u64, u64)>,
}

impl<A> Loaded<A> {
    /// The result of an earlier run of the same request, if its events are already stored.
    pub fn earlier_result(&self, request_id: Uuid, stream: &str) -> Option<Written> {
        let first = events::event_id(request_id, stream, 0);
        let start = self.stored.iter().position(|(id, ..)| *id == first)?;
        let mut last = self.stored[start];
        for (index, entry) in self.stored[start..].iter().enumerate() {
            if entry.0 != events::event_id(request_id, stream, index) {
                break;
            }
            last = *entry;
        }
        Some(Written {
            revision: last.1,
            position: last.2,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the stream changed since it was read")]
    Conflict,
    #[error("the customer has been forgotten")]
    Forgotten,
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    #[error("stored event cannot be read: {0}")]
    Corrupt(String),
}

impl From<KeyError> for StoreError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Forgotten => StoreError::Forgotten,
            KeyError::Store(message) => StoreError::Unavailable(message),
        }
    }
}

pub struct EventStore<K> {
    /// Replaced when the official client gives up (see [`EventStore::unavailable`]).
    client: Arc<RwLock<Client>>,
    keys: Arc<K>,
}

impl<K> Clone for EventStore<K> {
    fn clone(&self) -> Self {
        EventStore {
            client: self.client.clone(),
            keys: self.keys.clone(),
        }
    }
}

impl<K: KeyStore> EventStore<K> {
    pub fn new(client: Client, keys: Arc<K>) -> Self {
        EventStore {
            client: Arc::new(RwLock::new(client)),
            keys,
        }
    }

    /// The client to call now.
    fn client(&self) -> Client {
        self.client
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// A failed call, as the caller hears it. The official client gives up for good when a
    /// connection attempt fails during its discovery (its first connection, made on the first
    /// call: a command side started while the event store is down) and answers every later
    /// call with `ConnectionClosed`; such a client is replaced here by a new one with the same
    /// settings, so the next call connects afresh. Later outages it rides out by itself.
    fn unavailable(&self, error: kurrentdb::Error) -> StoreError {
        if matches!(
            error,
            kurrentdb::Error::ConnectionClosed | kurrentdb::Error::GrpcConnectionError(_)
        ) {
            let mut current = self
                .client
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match Client::new(current.settings().clone()) {
                Ok(fresh) => *current = fresh,
                Err(e) => tracing::warn!(error = %e, "cannot make a new event store client"),
            }
        }
        StoreError::Unavailable(error.to_string())
    }

    pub fn keys(&self) -> &K {
        &self.keys
    }

    /// Folds the stream into the aggregate. Personal data is not needed to decide, so it is
    /// not unsealed here.
    #[tracing::instrument(name = "streams.read", skip_all, fields(
        otel.kind = "client",
        db.system.name = "kurrentdb",
        db.kurrentdb.stream = %stream,
    ))]
    pub async fn load<A: Aggregate>(&self, stream: &str) -> Result<Loaded<A>, StoreError>
    where
        A::Event: TryFrom<Event>,
    {
        let mut loaded = Loaded {
            state: A::default(),
            revision: None,
            stored: Vec::new(),
        };
        let options = ReadStreamOptions::default().max_count(usize::MAX);
        let mut read = match self.client().read_stream(stream, &options).await {
            Ok(read) => read,
            Err(kurrentdb::Error::ResourceNotFound) => return Ok(loaded),
            Err(e) => return Err(self.unavailable(e)),
        };
        loop {
            let resolved = match read.next().await {
                Ok(Some(resolved)) => resolved,
                Ok(None) => break,
                Err(kurrentdb::Error::ResourceNotFound) => return Ok(loaded),
                Err(e) => return Err(self.unavailable(e)),
            };
            let recorded = resolved.get_original_event();
            let (event, _) = events::decode_stored(
                &recorded.event_type,
                &recorded.data,
                &recorded.custom_metadata,
                None,
            )
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if let Ok(event) = A::Event::try_from(event) {
                loaded.state.apply(&event);
            }
            loaded.revision = Some(recorded.revision);
            loaded
                .stored
                .push((recorded.id, recorded.revision, recorded.position.commit));
        }
        Ok(loaded)
    }

    /// Appends `new` after `revision` (`None`: the stream must not exist), sealing personal
    /// data with its customer's key. The span's ids go into each event's metadata: whatever
    /// reacts to the events later continues this trace.
    #[tracing::instrument(name = "streams.append", skip_all, fields(
        otel.kind = "client",
        db.system.name = "kurrentdb",
        db.kurrentdb.stream = %stream,
        db.kurrentdb.event_types = %new.iter().map(Event::event_type).collect::<Vec<_>>().join(","),
        db.kurrentdb.position = tracing::field::Empty,
    ))]
    pub async fn append(
        &self,
        stream: &str,
        revision: Option<u64>,
        new: &[Event],
        context: &RequestContext,
    ) -> Result<Written, StoreError> {
        let metadata = Metadata::new(
            context.correlation_id,
            context.causation_id,
            Some(context.actor()),
        )
        .in_trace(lifecycle::telemetry::ids(&tracing::Span::current()));
        let mut data = Vec::with_capacity(new.len());
        for (index, event) in new.iter().enumerate() {
            let key = match event.sealing_customer() {
                // The benchmarks' baseline asks no key store.
                Some(customer) if cfg!(feature = "unsealed-baseline") => Some(
                    events::CustomerKey::from_bytes(events::sealing::key_id(customer), [0; 32]),
                ),
                Some(customer) => Some(self.keys.key_for_writing(customer).await?),
                None => None,
            };
            let encoded = events::encode(event, key.as_ref())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let payload =
                String::from_utf8(encoded.data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let raw = serde_json::value::RawValue::from_string(payload)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            // Each payload's own version, for the reader to upcast older ones.
            let metadata = Metadata {
                schema_version: encoded.version,
                ..metadata.clone()
            };
            let event_data = EventData::json(encoded.event_type, &raw)
                .and_then(|d| d.metadata_as_json(&metadata))
                .map_err(|e| StoreError::Corrupt(e.to_string()))?
                .id(events::event_id(context.request_id, stream, index));
            data.push(event_data);
        }
        let expected = match revision {
            Some(r) => StreamState::StreamRevision(r),
            None => StreamState::NoStream,
        };
        let options = AppendToStreamOptions::default().stream_state(expected);
        match self.client().append_to_stream(stream, &options, data).await {
            Ok(result) => {
                tracing::Span::current().record("db.kurrentdb.position", result.position.commit);
                for event in new {
                    metrics::counter!("events_appended_total", "event_type" => event.event_type())
                        .increment(1);
                }
                Ok(Written {
                    revision: result.next_expected_version,
                    position: result.position.commit,
                })
            }
            Err(kurrentdb::Error::WrongExpectedVersion { .. }) => Err(StoreError::Conflict),
            Err(e) => Err(self.unavailable(e)),
        }
    }
}
