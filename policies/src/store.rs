//! What the policies look up in the event store: the facts an event does not carry (whose
//! reservation, which payment), read from the aggregate's own stream. The write side is the
//! truth and is there before any event that follows from it, so a policy needs no state of its
//! own to know them, and any replica may handle any event in any order.

use events::{Event, Metadata};
use kurrentdb::ReadStreamOptions;
use uuid::Uuid;

use crate::PolicyError;

/// A stored event as a policy sees it: personal data stays sealed.
pub struct Stored {
    pub event: Event,
    pub id: Uuid,
    pub metadata: Option<Metadata>,
}

impl Stored {
    /// The request that started the chain.
    pub fn correlation_id(&self) -> Uuid {
        self.metadata.as_ref().map_or(self.id, |m| m.correlation_id)
    }
}

/// The events of a stream, oldest first, up to `max`; none when it does not exist. An event
/// that cannot be read is left out (it is logged where it is projected).
pub async fn read(
    events: &kurrentdb::Client,
    stream: &str,
    max: usize,
) -> Result<Vec<Stored>, PolicyError> {
    let options = ReadStreamOptions::default().max_count(max);
    let mut read = match events.read_stream(stream, &options).await {
        Ok(read) => read,
        Err(kurrentdb::Error::ResourceNotFound) => return Ok(Vec::new()),
        Err(e) => return Err(PolicyError::EventStore(e.to_string())),
    };
    let mut out = Vec::new();
    loop {
        let next = match read.next().await {
            Ok(Some(next)) => next,
            Ok(None) | Err(kurrentdb::Error::ResourceNotFound) => break,
            Err(e) => return Err(PolicyError::EventStore(e.to_string())),
        };
        let recorded = next.get_original_event();
        let stored = events::decode_stored(
            &recorded.event_type,
            &recorded.data,
            &recorded.custom_metadata,
            None,
        );
        if let Ok((event, metadata)) = stored {
            out.push(Stored {
                event,
                id: recorded.id,
                metadata,
            });
        }
    }
    Ok(out)
}

/// The first event of a stream: the one that created its aggregate.
pub async fn first(
    events: &kurrentdb::Client,
    stream: &str,
) -> Result<Option<Stored>, PolicyError> {
    Ok(read(events, stream, 1).await?.into_iter().next())
}
