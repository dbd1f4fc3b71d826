//! Consistent reads over committed data.

use prost::Message;
use redb::{Database, ReadOnlyTable, ReadableDatabase, ReadableTable};

use super::record::{StoredEvent, StreamInfo, StreamRecord, TOMBSTONE_REVISION};
use super::{StoreError, EVENTS, STREAMS, STREAM_EVENTS};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forwards,
    Backwards,
}

/// An event with its global position.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub position: u64,
    pub event: StoredEvent,
}

/// A page of `$all`: the events that passed the filter, and how far the scan went.
#[derive(Debug, Default)]
pub struct AllPage {
    pub events: Vec<Recorded>,
    /// The last position examined, matching or not; `None` when nothing was left to examine.
    pub scanned_to: Option<u64>,
    /// True when the scan reached the end of the log in its direction.
    pub exhausted: bool,
}

/// A read-only view of the store as of one commit.
pub struct Snapshot {
    events: ReadOnlyTable<u64, &'static [u8]>,
    streams: ReadOnlyTable<&'static str, &'static [u8]>,
    stream_events: ReadOnlyTable<(u64, u64), u64>,
}

impl Snapshot {
    pub(super) fn open(db: &Database) -> Result<Snapshot, StoreError> {
        let txn = db.begin_read()?;
        Ok(Snapshot {
            events: txn.open_table(EVENTS)?,
            streams: txn.open_table(STREAMS)?,
            stream_events: txn.open_table(STREAM_EVENTS)?,
        })
    }

    pub fn stream(&self, name: &str) -> Result<Option<StreamInfo>, StoreError> {
        let Some(bytes) = self.streams.get(name)? else {
            return Ok(None);
        };
        let record = StreamRecord::decode(bytes.value())
            .map_err(|e| StoreError::Storage(format!("corrupt stream record {name}: {e}")))?;
        let last = last_revision(&self.stream_events, record.id)?;
        Ok(Some(StreamInfo::from_record(record, last)))
    }

    pub fn event_at(&self, position: u64) -> Result<Option<StoredEvent>, StoreError> {
        match self.events.get(position)? {
            Some(bytes) => Ok(Some(StoredEvent::decode(bytes.value()).map_err(|e| {
                StoreError::Storage(format!("corrupt event at {position}: {e}"))
            })?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` visible events of a stream, from revision `from` (inclusive) on.
    pub fn read_stream(
        &self,
        name: &str,
        info: &StreamInfo,
        from: u64,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Recorded>, StoreError> {
        let first = info.first_visible(name);
        let Some(last) = info.last_revision else {
            return Ok(Vec::new());
        };
        let id = info.id;
        let range = match direction {
            Direction::Forwards if from > last => return Ok(Vec::new()),
            Direction::Forwards => self
                .stream_events
                .range((id, from.max(first))..=(id, last))?,
            Direction::Backwards if from < first => return Ok(Vec::new()),
            Direction::Backwards => self
                .stream_events
                .range((id, first)..=(id, from.min(last)))?,
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        let now = super::now_ticks();
        for entry in in_direction(range, direction) {
            if out.len() >= limit {
                break;
            }
            let position = entry?.1.value();
            if let Some(event) = self.event_at(position)? {
                // `$maxAge`: events past it are not there for readers.
                if !info.is_expired(&event, now) {
                    out.push(Recorded { position, event });
                }
            }
        }
        Ok(out)
    }

    /// Scans `$all` from `from` (inclusive) in `direction`, keeping up to `limit` events that
    /// pass `keep`, and examining at most `max_scan` events.
    pub fn read_all(
        &self,
        from: u64,
        direction: Direction,
        limit: usize,
        max_scan: usize,
        keep: &dyn Fn(&StoredEvent) -> bool,
    ) -> Result<AllPage, StoreError> {
        let mut page = AllPage::default();
        let range = match direction {
            Direction::Forwards => self.events.range(from..)?,
            Direction::Backwards => self.events.range(..=from)?,
        };
        page.exhausted = true;
        for (scanned, entry) in in_direction(range, direction).enumerate() {
            if page.events.len() >= limit || scanned >= max_scan {
                page.exhausted = false;
                break;
            }
            let (position, bytes) = entry?;
            let position = position.value();
            let event = StoredEvent::decode(bytes.value())
                .map_err(|e| StoreError::Storage(format!("corrupt event at {position}: {e}")))?;
            page.scanned_to = Some(position);
            if keep(&event) {
                page.events.push(Recorded { position, event });
            }
        }
        Ok(page)
    }

    /// The newest position in `$all` (0 when empty).
    pub fn head(&self) -> Result<u64, StoreError> {
        Ok(self.events.last()?.map(|(k, _)| k.value()).unwrap_or(0))
    }
}

impl Snapshot {
    /// One event of a stream by revision, if it is stored (visibility is the caller's concern).
    pub fn stream_event(
        &self,
        info: &StreamInfo,
        revision: u64,
    ) -> Result<Option<Recorded>, StoreError> {
        let Some(position) = self.stream_events.get((info.id, revision))? else {
            return Ok(None);
        };
        let position = position.value();
        Ok(self
            .event_at(position)?
            .map(|event| Recorded { position, event }))
    }
}

/// A range walked forwards or backwards.
fn in_direction<'a, I>(range: I, direction: Direction) -> Box<dyn Iterator<Item = I::Item> + 'a>
where
    I: DoubleEndedIterator + 'a,
{
    match direction {
        Direction::Forwards => Box::new(range),
        Direction::Backwards => Box::new(range.rev()),
    }
}

/// The newest revision of a stream, from the index (a tombstone's marker revision excluded).
pub(super) fn last_revision(
    index: &impl ReadableTable<(u64, u64), u64>,
    id: u64,
) -> Result<Option<u64>, StoreError> {
    let mut newest = index.range((id, 0)..(id, TOMBSTONE_REVISION))?;
    Ok(match newest.next_back() {
        Some(entry) => Some(entry?.0.value().1),
        None => None,
    })
}
