//! The single writer: group commit, concurrency checks, idempotent retries and deletes.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use redb::{Database, ReadableTable, Table, WriteTransaction};
use tokio::sync::{mpsc, watch};

use super::record::{is_metastream, now_ticks, StoredEvent, StreamInfo, DELETED, TOMBSTONE_REVISION};
use super::{
    ExpectedRevision, ProposedEvent, StoreError, WriteCommand, WriteOutcome, COUNTERS, EVENTS,
    EVENT_IDS, STREAMS, STREAM_EVENTS,
};

/// How many waiting writes one transaction takes at most.
const MAX_GROUP: usize = 512;

/// The writer's counters, persisted in the same transaction as the events they count.
#[derive(Clone, Copy, Debug)]
pub struct Counters {
    next_position: u64,
    next_stream_id: u64,
}

impl Counters {
    /// Creates the tables on first use and reads the counters back.
    pub fn initialise(db: &Database) -> Result<Counters, StoreError> {
        let txn = db.begin_write()?;
        let counters = {
            txn.open_table(EVENTS)?;
            txn.open_table(STREAMS)?;
            txn.open_table(STREAM_EVENTS)?;
            txn.open_table(EVENT_IDS)?;
            let table = txn.open_table(COUNTERS)?;
            let get = |name: &str| -> Result<Option<u64>, StoreError> {
                Ok(table.get(name)?.map(|v| v.value()))
            };
            Counters {
                next_position: get("next_position")?.unwrap_or(1),
                next_stream_id: get("next_stream_id")?.unwrap_or(1),
            }
        };
        txn.commit()?;
        Ok(counters)
    }

    pub fn head(&self) -> u64 {
        self.next_position - 1
    }

    fn save(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        let mut table = txn.open_table(COUNTERS)?;
        table.insert("next_position", self.next_position)?;
        table.insert("next_stream_id", self.next_stream_id)?;
        Ok(())
    }
}

/// Runs until every [`super::Store`] handle is gone.
pub fn run(
    db: Arc<Database>,
    mut counters: Counters,
    mut commands: mpsc::Receiver<WriteCommand>,
    head: watch::Sender<u64>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = commands.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match commands.try_recv() {
                Ok(command) => group.push(command),
                Err(_) => break,
            }
        }
        let mut next = counters;
        match commit_group(&db, &mut next, &group) {
            Ok(outcomes) => {
                counters = next;
                head.send_if_modified(|h| {
                    let moved = *h != counters.head();
                    *h = counters.head();
                    moved
                });
                for (command, outcome) in group.drain(..).zip(outcomes) {
                    reply(command, outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "a commit failed; its writes are refused");
                for command in group.drain(..) {
                    reply(command, Err(e.clone()));
                }
            }
        }
    }
}

fn reply(command: WriteCommand, outcome: Result<WriteOutcome, StoreError>) {
    let reply = match command {
        WriteCommand::Append { reply, .. } | WriteCommand::Delete { reply, .. } => reply,
    };
    // The caller may have gone (deadline, disconnect); the write stands all the same.
    let _ = reply.send(outcome);
}

/// Applies every command of the group in one transaction and commits it durably. A command
/// refused by a check writes nothing; a storage failure aborts the whole group.
fn commit_group(
    db: &Database,
    counters: &mut Counters,
    group: &[WriteCommand],
) -> Result<Vec<Result<WriteOutcome, StoreError>>, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    let outcomes = {
        let mut tables = Tables {
            events: txn.open_table(EVENTS)?,
            streams: txn.open_table(STREAMS)?,
            stream_events: txn.open_table(STREAM_EVENTS)?,
            event_ids: txn.open_table(EVENT_IDS)?,
            counters,
            now: now_ticks(),
        };
        let mut outcomes = Vec::with_capacity(group.len());
        for command in group {
            outcomes.push(match command {
                WriteCommand::Append {
                    stream,
                    expected,
                    events,
                    ..
                } => tables.append(stream, *expected, events)?,
                WriteCommand::Delete {
                    stream,
                    expected,
                    tombstone,
                    ..
                } => tables.delete(stream, *expected, *tombstone)?,
            });
        }
        outcomes
    };
    counters.save(&txn)?;
    txn.commit()?;
    Ok(outcomes)
}

/// The tables of one write transaction. Methods return `Err` only for storage failures; a
/// refused command is an inner `Err`.
struct Tables<'txn, 'c> {
    events: Table<'txn, u64, &'static [u8]>,
    streams: Table<'txn, &'static str, &'static [u8]>,
    stream_events: Table<'txn, (u64, u64), u64>,
    event_ids: Table<'txn, (u64, u128), u64>,
    counters: &'c mut Counters,
    now: i64,
}

type Checked = Result<WriteOutcome, StoreError>;

impl Tables<'_, '_> {
    fn stream_info(&self, stream: &str) -> Result<Option<StreamInfo>, StoreError> {
        match self.streams.get(stream)? {
            Some(bytes) => StreamInfo::decode(bytes.value())
                .map(Some)
                .map_err(|e| StoreError::Storage(format!("corrupt stream record {stream}: {e}"))),
            None => Ok(None),
        }
    }

    /// The stream's state, or a fresh one (with a new id) when the stream is unknown. A stream
    /// is known once it has had an event or metadata.
    fn stream_info_or_new(&mut self, stream: &str) -> Result<(StreamInfo, bool), StoreError> {
        if let Some(info) = self.stream_info(stream)? {
            return Ok((info, true));
        }
        let id = self.counters.next_stream_id;
        self.counters.next_stream_id += 1;
        let info = StreamInfo {
            id,
            ..StreamInfo::default()
        };
        Ok((info, false))
    }

    fn save_stream_info(&mut self, stream: &str, info: &StreamInfo) -> Result<(), StoreError> {
        self.streams.insert(stream, info.encode_to_vec().as_slice())?;
        Ok(())
    }

    fn append(
        &mut self,
        stream: &str,
        expected: ExpectedRevision,
        events: &[ProposedEvent],
    ) -> Result<Checked, StoreError> {
        let (mut info, known) = self.stream_info_or_new(stream)?;
        if info.tombstoned {
            return Ok(Err(StoreError::StreamDeleted(stream.to_string())));
        }
        match self.find_retry(&info, expected, events)? {
            Retry::NotARetry => {}
            Retry::Original(original) => return Ok(Ok(original)),
            Retry::Partial => {
                return Ok(Err(StoreError::WrongExpectedVersion {
                    expected,
                    current: info.last_revision,
                }))
            }
        }
        if let Err(refused) = check_expected(stream, &info, known, expected) {
            return Ok(Err(refused));
        }
        if events.is_empty() {
            // Nothing is written; the answer names the newest committed position.
            return Ok(Ok(WriteOutcome {
                current_revision: info.last_revision,
                position: Some(self.counters.head()),
            }));
        }

        let first = info.last_revision.map_or(0, |r| r + 1);
        let mut position = 0;
        for (offset, event) in events.iter().enumerate() {
            let revision = first + offset as u64;
            position = self.write_event(stream, info.id, revision, event)?;
        }
        info.last_revision = Some(first + events.len() as u64 - 1);

        // Writing to a soft-deleted stream brings it back, showing only the new events.
        if info.is_soft_deleted() {
            info.truncate_before = Some(first);
            self.save_stream_info(stream, &info)?;
            self.rewrite_metadata(stream, |meta| {
                meta.insert("$tb".into(), first.into());
            })?;
        } else {
            self.save_stream_info(stream, &info)?;
        }

        if let (Some(target), Some(last)) = (stream.strip_prefix("$$"), events.last()) {
            if last.event_type == "$metadata" {
                self.apply_metadata(target, &last.data)?;
            }
        }

        Ok(Ok(WriteOutcome {
            current_revision: info.last_revision,
            position: Some(position),
        }))
    }

    fn write_event(
        &mut self,
        stream: &str,
        stream_id: u64,
        revision: u64,
        event: &ProposedEvent,
    ) -> Result<u64, StoreError> {
        let position = self.counters.next_position;
        self.counters.next_position += 1;
        let stored = StoredEvent {
            stream: stream.to_string(),
            revision,
            id: Bytes::copy_from_slice(&event.id.to_be_bytes()),
            event_type: event.event_type.clone(),
            content_type: event.content_type.clone(),
            created: self.now,
            custom_metadata: event.custom_metadata.clone(),
            data: event.data.clone(),
        };
        self.events
            .insert(position, stored.encode_to_vec().as_slice())?;
        self.stream_events.insert((stream_id, revision), position)?;
        if revision != TOMBSTONE_REVISION {
            self.event_ids.insert((stream_id, event.id), revision)?;
        }
        Ok(position)
    }

    /// An append whose events are already in the stream, in order, right where the retried
    /// request would have put them, returns the original result instead of writing twice.
    ///
    /// With an exact expectation the events must sit right after it; with `Any` or
    /// `StreamExists`, wherever the first one is. A retry that matches only in part is refused.
    fn find_retry(
        &self,
        info: &StreamInfo,
        expected: ExpectedRevision,
        events: &[ProposedEvent],
    ) -> Result<Retry, StoreError> {
        let Some(first_event) = events.first() else {
            return Ok(Retry::NotARetry);
        };
        let start = match expected {
            ExpectedRevision::Exact(revision) if info.last_revision > Some(revision) => {
                revision + 1
            }
            ExpectedRevision::NoStream if info.last_revision.is_some() && !info.is_soft_deleted() => 0,
            ExpectedRevision::Any | ExpectedRevision::StreamExists => {
                match self.event_ids.get((info.id, first_event.id))? {
                    Some(revision) => revision.value(),
                    None => return Ok(Retry::NotARetry),
                }
            }
            _ => return Ok(Retry::NotARetry),
        };
        let mut position = 0;
        for (offset, event) in events.iter().enumerate() {
            let revision = start + offset as u64;
            let at_place = match self.event_ids.get((info.id, event.id))? {
                Some(found) => found.value() == revision,
                None => false,
            };
            let stored_at = self.stream_events.get((info.id, revision))?.map(|p| p.value());
            match (at_place, stored_at) {
                (true, Some(p)) => position = p,
                _ if offset == 0 && matches!(expected, ExpectedRevision::Exact(_) | ExpectedRevision::NoStream) => {
                    return Ok(Retry::NotARetry)
                }
                _ => return Ok(Retry::Partial),
            }
        }
        Ok(Retry::Original(WriteOutcome {
            current_revision: Some(start + events.len() as u64 - 1),
            position: Some(position),
        }))
    }

    fn delete(
        &mut self,
        stream: &str,
        expected: ExpectedRevision,
        tombstone: bool,
    ) -> Result<Checked, StoreError> {
        let (mut info, known) = self.stream_info_or_new(stream)?;
        if info.tombstoned {
            return Ok(Err(StoreError::StreamDeleted(stream.to_string())));
        }
        if let Err(refused) = check_expected(stream, &info, known, expected) {
            return Ok(Err(refused));
        }
        // Only a stream that was ever written can be soft-deleted.
        if !tombstone && !known {
            return Ok(Err(StoreError::WrongExpectedVersion {
                expected,
                current: None,
            }));
        }
        let position = if tombstone {
            let marker = ProposedEvent {
                id: ::uuid::Uuid::new_v4().as_u128(),
                event_type: "$streamDeleted".into(),
                content_type: "application/octet-stream".into(),
                custom_metadata: Bytes::new(),
                data: Bytes::new(),
            };
            let position = self.write_event(stream, info.id, TOMBSTONE_REVISION, &marker)?;
            info.tombstoned = true;
            self.save_stream_info(stream, &info)?;
            position
        } else {
            info.truncate_before = Some(DELETED);
            self.save_stream_info(stream, &info)?;
            // A soft delete replaces the stream's metadata with the deletion mark alone.
            self.rewrite_metadata(stream, |meta| {
                meta.clear();
                meta.insert("$tb".into(), DELETED.into());
            })?
        };
        Ok(Ok(WriteOutcome {
            current_revision: info.last_revision,
            position: Some(position),
        }))
    }

    /// Writes a new `$metadata` event to `$$stream`: the latest metadata with `change` applied.
    fn rewrite_metadata(
        &mut self,
        stream: &str,
        change: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
    ) -> Result<u64, StoreError> {
        let meta_stream = format!("$${stream}");
        let (mut meta_info, _) = self.stream_info_or_new(&meta_stream)?;
        let mut meta = serde_json::Map::new();
        if let Some(last) = meta_info.last_revision {
            if let Some(position) = self.stream_events.get((meta_info.id, last))? {
                if let Some(bytes) = self.events.get(position.value())? {
                    let event = StoredEvent::decode(bytes.value())
                        .map_err(|e| StoreError::Storage(format!("corrupt event: {e}")))?;
                    if let Ok(serde_json::Value::Object(existing)) =
                        serde_json::from_slice(&event.data)
                    {
                        meta = existing;
                    }
                }
            }
        }
        change(&mut meta);
        let data = serde_json::to_vec(&meta).unwrap_or_default();
        let event = ProposedEvent {
            id: ::uuid::Uuid::new_v4().as_u128(),
            event_type: "$metadata".into(),
            content_type: "application/json".into(),
            custom_metadata: Bytes::new(),
            data: Bytes::from(data),
        };
        let revision = meta_info.last_revision.map_or(0, |r| r + 1);
        let position = self.write_event(&meta_stream, meta_info.id, revision, &event)?;
        meta_info.last_revision = Some(revision);
        self.save_stream_info(&meta_stream, &meta_info)?;
        self.apply_metadata(stream, &event.data)?;
        Ok(position)
    }

    /// Keeps the reading rules of `$tb` and `$maxCount` on the stream itself.
    fn apply_metadata(&mut self, stream: &str, data: &[u8]) -> Result<(), StoreError> {
        if is_metastream(stream) {
            return Ok(());
        }
        let meta: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
        let (mut info, _) = self.stream_info_or_new(stream)?;
        info.truncate_before = meta.get("$tb").and_then(|v| v.as_u64());
        info.max_count = meta.get("$maxCount").and_then(|v| v.as_u64());
        self.save_stream_info(stream, &info)
    }
}

enum Retry {
    NotARetry,
    Original(WriteOutcome),
    Partial,
}

/// The optimistic-concurrency rule. A soft-deleted stream may be written as if new, but does
/// not "exist"; a stream with only metadata does.
fn check_expected(
    stream: &str,
    info: &StreamInfo,
    known: bool,
    expected: ExpectedRevision,
) -> Result<(), StoreError> {
    let current = info.last_revision;
    let holds = match expected {
        ExpectedRevision::Any => true,
        ExpectedRevision::NoStream => current.is_none() || info.is_soft_deleted(),
        ExpectedRevision::StreamExists if info.is_soft_deleted() => {
            return Err(StoreError::StreamDeleted(stream.to_string()))
        }
        ExpectedRevision::StreamExists => known,
        ExpectedRevision::Exact(revision) => current == Some(revision),
    };
    if holds {
        Ok(())
    } else {
        Err(StoreError::WrongExpectedVersion { expected, current })
    }
}
