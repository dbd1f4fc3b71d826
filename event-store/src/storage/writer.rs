//! The single writer: group commit, concurrency checks, idempotent retries, deletes, and
//! atomic commits across streams (with records) for the store's own subsystems.
//!
//! Per event an append writes two entries, the event and its (stream, revision) index entry;
//! stream records are rewritten only on creation, metadata and deletion. The writer keeps the
//! state of recently written streams and the ids of recent events in memory (bounded), so the
//! common append reads nothing from disk.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use redb::{Database, ReadableTable, Table, WriteTransaction};
use tokio::sync::{mpsc, watch};

use super::journal::{non_durable, Journal, Ops};
use super::record::{
    is_metastream, now_ticks, StoredEvent, StreamInfo, StreamRecord, DELETED, TOMBSTONE_REVISION,
};
use super::snapshot::last_revision;
use super::{
    ExpectedRevision, Opener, ProposedEvent, SharedDatabase, StoreError, StreamAppend,
    WriteCommand, WriteOutcome, COUNTERS, EVENTS, RECORDS, STREAMS, STREAM_EVENTS,
};

/// How many waiting writes one transaction takes at most.
const MAX_GROUP: usize = 1024;
/// Streams whose state the writer keeps in memory.
const CACHED_STREAMS: usize = 100_000;
/// Event ids remembered for recognising a retried append with `any`/`stream_exists`. Like the
/// real server, such a retry is recognised only while it is recent; with an exact expected
/// revision it always is, from the stored events.
const REMEMBERED_IDS: usize = 200_000;

/// The writer's counters, persisted in the same transaction as the events they count.
#[derive(Clone, Copy, Debug)]
pub struct Counters {
    next_position: u64,
    next_stream_id: u64,
}

impl Counters {
    /// Creates the tables on first use and reads the counters back.
    pub fn initialise(db: &Database) -> Result<Counters, StoreError> {
        let mut txn = db.begin_write()?;
        // Creating the tables is done again on the next start if it is lost: no sync needed.
        non_durable(&mut txn)?;
        let counters = {
            txn.open_table(EVENTS)?;
            txn.open_table(STREAMS)?;
            txn.open_table(STREAM_EVENTS)?;
            txn.open_table(RECORDS)?;
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

    fn save(&self, txn: &WriteTransaction, ops: &mut Ops) -> Result<(), StoreError> {
        let mut table = txn.open_table(COUNTERS)?;
        table.insert("next_position", self.next_position)?;
        table.insert("next_stream_id", self.next_stream_id)?;
        ops.counter("next_position", self.next_position);
        ops.counter("next_stream_id", self.next_stream_id);
        Ok(())
    }
}

/// What the writer remembers between transactions. After a failed commit it is dropped, since
/// it may describe writes that never happened.
#[derive(Default)]
struct Memory {
    streams: HashMap<String, StreamInfo>,
    ids: HashMap<(u64, u128), u64>,
    id_order: VecDeque<(u64, u128)>,
}

impl Memory {
    fn remember_id(&mut self, stream_id: u64, event_id: u128, revision: u64) {
        if self.ids.insert((stream_id, event_id), revision).is_none() {
            self.id_order.push_back((stream_id, event_id));
        }
        while self.id_order.len() > REMEMBERED_IDS {
            if let Some(old) = self.id_order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    fn remember_stream(&mut self, name: &str, info: &StreamInfo) {
        if self.streams.len() >= CACHED_STREAMS && !self.streams.contains_key(name) {
            self.streams.clear();
        }
        self.streams.insert(name.to_string(), info.clone());
    }
}

/// How often a database whose writes failed is tried again: each try reopens it.
const REOPEN_EVERY: Duration = Duration::from_millis(500);

/// Runs until every [`super::Store`] handle is gone.
pub fn run(
    shared: SharedDatabase,
    opener: Opener,
    mut journal: Journal,
    mut counters: Counters,
    mut commands: mpsc::Receiver<WriteCommand>,
    head: watch::Sender<u64>,
) {
    let mut memory = Memory::default();
    let mut ops = Ops::default();
    let mut group = Vec::with_capacity(MAX_GROUP);
    // The database could not be reopened after a failed write: why, and when it was tried.
    let mut broken: Option<(StoreError, Instant)> = None;
    // The last commit failed for want of space: writes wait until the disk has room again.
    let mut full = false;
    while let Some(first) = commands.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match commands.try_recv() {
                Ok(command) => group.push(command),
                Err(_) => break,
            }
        }
        let refusal = match &broken {
            Some((cause, tried)) if tried.elapsed() < REOPEN_EVERY => Some(cause.clone()),
            Some(_) => match reopen(&shared, &opener, &mut journal) {
                Ok(reopened) => {
                    counters = reopened;
                    broken = None;
                    None
                }
                Err(e) => {
                    broken = Some((e.clone(), Instant::now()));
                    Some(e)
                }
            },
            // Refused without trying while the disk has no room: trying would only fail again.
            None if full && !opener.has_room() => Some(StoreError::DiskFull),
            None => None,
        };
        let db = shared.read().ok().and_then(|db| db.clone());
        let (Some(db), None) = (db, &refusal) else {
            let refusal = refusal.unwrap_or(StoreError::Closed);
            for command in group.drain(..) {
                refuse(command, refusal.clone());
            }
            continue;
        };
        full = false;
        let mut next = counters;
        match commit_group(&db, &mut next, &mut memory, &mut journal, &mut ops, &group) {
            Ok((outcomes, unapplied)) => {
                counters = next;
                head.send_if_modified(|h| {
                    let moved = *h != counters.head();
                    *h = counters.head();
                    moved
                });
                for (command, outcome) in group.drain(..).zip(outcomes) {
                    answer(command, outcome);
                }
                if let Some(e) = unapplied {
                    // Durable in the journal, but the database refused it: reopening applies
                    // the journal again.
                    tracing::error!(error = %e, "a journaled commit failed in the database; reopening it");
                    memory = Memory::default();
                    drop(db);
                    match reopen(&shared, &opener, &mut journal) {
                        Ok(reopened) => counters = reopened,
                        Err(failed) => broken = Some((failed, Instant::now())),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "a commit failed; its writes are refused");
                memory = Memory::default();
                if e.needs_reopen() {
                    // redb refuses reads and writes after a failed write until it is reopened:
                    // reopen at once, so that reads go on.
                    drop(db);
                    full = e == StoreError::DiskFull;
                    match reopen(&shared, &opener, &mut journal) {
                        Ok(reopened) => counters = reopened,
                        Err(failed) => broken = Some((failed, Instant::now())),
                    }
                }
                for command in group.drain(..) {
                    refuse(command, e.clone());
                }
            }
        }
    }
    // Stopping: everything into the database, so that the next start has nothing to apply.
    let db = shared.read().ok().and_then(|db| db.clone());
    if let (Some(db), None) = (db, &broken) {
        if let Err(e) = checkpoint(&db, &mut journal) {
            tracing::warn!(error = %e, "the last checkpoint failed; the journal keeps the commits");
        }
    }
}

/// A durable commit of everything so far, after which the journal starts again.
fn checkpoint(db: &Database, journal: &mut Journal) -> Result<(), StoreError> {
    commit_durably(db.begin_write()?, journal)
}

/// Commits `txn` to the database durably: it then holds every commit before it, and the
/// journal starts again.
fn commit_durably(txn: WriteTransaction, journal: &mut Journal) -> Result<(), StoreError> {
    journal.save_seq(&txn, None)?;
    txn.commit()?;
    journal.checkpointed();
    Ok(())
}

/// Closes the database and opens it again, as redb requires after a failed write: opening
/// repairs it to its last durable commit, and the journal's later entries are applied again.
/// Readers are refused for the moment it takes; their snapshots of the old file must end
/// before it closes.
fn reopen(
    shared: &SharedDatabase,
    opener: &Opener,
    journal: &mut Journal,
) -> Result<Counters, StoreError> {
    let old = shared.write().map_err(|_| StoreError::Closed)?.take();
    drop(old);
    let deadline = Instant::now() + Duration::from_secs(5);
    let db = loop {
        match opener.open() {
            Ok(db) => break db,
            // A snapshot of the old file still holds it open: it ends within a read.
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                // Not reopened: keep serving reads from whatever opens, if anything does.
                return Err(StoreError::from(e));
            }
        }
    };
    journal.recover(&db)?;
    let counters = Counters::initialise(&db);
    *shared.write().map_err(|_| StoreError::Closed)? = Some(Arc::new(db));
    counters
}

/// What one command of a group came to.
enum Answer {
    Single(Checked),
    Several(Result<Vec<WriteOutcome>, StoreError>),
}

fn answer(command: WriteCommand, outcome: Answer) {
    // The caller may have gone (deadline, disconnect); the write stands all the same.
    match (command, outcome) {
        (
            WriteCommand::Append { reply, .. } | WriteCommand::Delete { reply, .. },
            Answer::Single(outcome),
        ) => {
            let _ = reply.send(outcome);
        }
        (WriteCommand::Commit { reply, .. }, Answer::Several(outcome)) => {
            let _ = reply.send(outcome);
        }
        (command, _) => refuse(
            command,
            StoreError::Storage("a write was answered in the wrong shape".into()),
        ),
    }
}

fn refuse(command: WriteCommand, error: StoreError) {
    match command {
        WriteCommand::Append { reply, .. } | WriteCommand::Delete { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        WriteCommand::Commit { reply, .. } => {
            let _ = reply.send(Err(error));
        }
    }
}

/// Applies every command of the group in one transaction and makes it durable: in the journal
/// when it fits there, else (a checkpoint) in the database itself. A command refused by a check
/// writes nothing; a storage failure before the commit is durable aborts the whole group. Also
/// returns the database's failure to take a commit already durable in the journal.
fn commit_group(
    db: &Database,
    counters: &mut Counters,
    memory: &mut Memory,
    journal: &mut Journal,
    ops: &mut Ops,
    group: &[WriteCommand],
) -> Result<(Vec<Answer>, Option<StoreError>), StoreError> {
    let mut txn = db.begin_write()?;
    ops.clear();
    // A checkpoint is redb's default one-phase commit: the pages and the new header (with the
    // checksums that tell a torn commit) go out with one fsync. Quick-repair (the allocator
    // state recorded with every commit) would make opening after a crash immediate, but forces
    // a two-phase commit and a second fsync. Opening after a crash instead walks the file to
    // rebuild the allocator state, about 0.3 s per million events, within the bounded page
    // cache.
    let outcomes = {
        let mut tables = Tables {
            events: txn.open_table(EVENTS)?,
            streams: txn.open_table(STREAMS)?,
            stream_events: txn.open_table(STREAM_EVENTS)?,
            // Opened only when a command sets records: most groups are plain appends.
            records: if group
                .iter()
                .any(|c| matches!(c, WriteCommand::Commit { records, .. } if !records.is_empty()))
            {
                Some(txn.open_table(RECORDS)?)
            } else {
                None
            },
            counters,
            memory,
            ops,
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
                } => Answer::Single(tables.append(stream, *expected, events)?),
                WriteCommand::Delete {
                    stream,
                    expected,
                    tombstone,
                    ..
                } => Answer::Single(tables.delete(stream, *expected, *tombstone)?),
                WriteCommand::Commit {
                    appends, records, ..
                } => Answer::Several(tables.commit(appends, records)?),
            });
        }
        outcomes
    };
    counters.save(&txn, ops)?;
    if !journal.fits(ops) {
        commit_durably(txn, journal)?;
        return Ok((outcomes, None));
    }
    journal.save_seq(&txn, Some(journal.next_seq()))?;
    if let Err(refused) = journal.append(ops) {
        // Not durable: the group is refused, and a durable commit marks the entry, which may
        // have reached the disk all the same, as never to be applied.
        drop(txn);
        checkpoint(db, journal)?;
        return Err(refused);
    }
    // Durable now. The database keeps it in memory until the next checkpoint.
    let applied = non_durable(&mut txn).and_then(|()| Ok(txn.commit()?));
    Ok((outcomes, applied.err()))
}

/// The tables of one write transaction. Methods return `Err` only for storage failures; a
/// refused command is an inner `Err`.
struct Tables<'txn, 'w> {
    events: Table<'txn, u64, &'static [u8]>,
    streams: Table<'txn, &'static str, &'static [u8]>,
    stream_events: Table<'txn, (u64, u64), u64>,
    records: Option<Table<'txn, &'static str, &'static [u8]>>,
    counters: &'w mut Counters,
    memory: &'w mut Memory,
    /// What the transaction puts in the tables, for the journal.
    ops: &'w mut Ops,
    now: i64,
}

type Checked = Result<WriteOutcome, StoreError>;

enum Retry {
    Fresh,
    Original(WriteOutcome),
    Partial,
}

impl Tables<'_, '_> {
    /// The stream's state, or a fresh one (with a new id) when the stream is unknown. A stream
    /// is known once it has had an event or metadata.
    fn stream(&mut self, name: &str) -> Result<(StreamInfo, bool), StoreError> {
        if let Some(info) = self.known_stream(name)? {
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

    /// The state of a stream that has had an event or metadata.
    fn known_stream(&mut self, name: &str) -> Result<Option<StreamInfo>, StoreError> {
        if let Some(info) = self.memory.streams.get(name) {
            return Ok(Some(info.clone()));
        }
        let Some(bytes) = self.streams.get(name)? else {
            return Ok(None);
        };
        let record = StreamRecord::decode(bytes.value())
            .map_err(|e| StoreError::Storage(format!("corrupt stream record {name}: {e}")))?;
        let last = last_revision(&self.stream_events, record.id)?;
        let info = StreamInfo::from_record(record, last);
        self.memory.remember_stream(name, &info);
        Ok(Some(info))
    }

    /// Keeps the new state in memory; writes the stream record when it changed (or is new).
    fn save_stream(
        &mut self,
        name: &str,
        info: &StreamInfo,
        record_changed: bool,
    ) -> Result<(), StoreError> {
        if record_changed {
            let record = info.record().encode_to_vec();
            self.streams.insert(name, record.as_slice())?;
            self.ops.stream(name, &record);
        }
        self.memory.remember_stream(name, info);
        Ok(())
    }

    fn append(
        &mut self,
        stream: &str,
        expected: ExpectedRevision,
        events: &[ProposedEvent],
    ) -> Result<Checked, StoreError> {
        let (info, known) = self.stream(stream)?;
        if info.tombstoned {
            return Ok(Err(StoreError::StreamDeleted(stream.to_string())));
        }
        match self.find_retry(&info, expected, events)? {
            Retry::Fresh => {}
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
        self.write_append(stream, info, known, events).map(Ok)
    }

    /// Writes events whose checks have passed after the stream's newest revision.
    fn write_append(
        &mut self,
        stream: &str,
        mut info: StreamInfo,
        known: bool,
        events: &[ProposedEvent],
    ) -> Result<WriteOutcome, StoreError> {
        if events.is_empty() {
            return Ok(WriteOutcome {
                current_revision: info.last_revision,
                position: None,
            });
        }
        let first = info.last_revision.map_or(0, |r| r + 1);
        let mut position = 0;
        for (offset, event) in events.iter().enumerate() {
            position = self.write_event(stream, info.id, first + offset as u64, event)?;
        }
        info.last_revision = Some(first + events.len() as u64 - 1);

        // Writing to a soft-deleted stream brings it back, showing only the new events.
        if info.is_soft_deleted() {
            info.truncate_before = Some(first);
            self.save_stream(stream, &info, true)?;
            self.rewrite_metadata(stream, |meta| {
                meta.insert("$tb".into(), first.into());
            })?;
        } else {
            self.save_stream(stream, &info, !known)?;
        }

        if let (Some(target), Some(last)) = (stream.strip_prefix("$$"), events.last()) {
            if last.event_type == "$metadata" {
                self.apply_metadata(target, &last.data)?;
            }
        }

        Ok(WriteOutcome {
            current_revision: info.last_revision,
            position: Some(position),
        })
    }

    /// An atomic [`WriteCommand::Commit`]: every append is checked first, against the streams as
    /// the appends before it leave them, so that a refusal writes nothing; then all is written.
    /// Retries are not recognised here: the caller keeps its own progress in `records`.
    fn commit(
        &mut self,
        appends: &[StreamAppend],
        records: &[(String, Bytes)],
    ) -> Result<Result<Vec<WriteOutcome>, StoreError>, StoreError> {
        if let Err(refused) = self.check_all(appends)? {
            return Ok(Err(refused));
        }
        let mut outcomes = Vec::with_capacity(appends.len());
        for append in appends {
            let (info, known) = self.stream(&append.stream)?;
            outcomes.push(self.write_append(&append.stream, info, known, &append.events)?);
        }
        if !records.is_empty() {
            let table = self
                .records
                .as_mut()
                .ok_or_else(|| StoreError::Storage("the records table is not open".into()))?;
            for (key, value) in records {
                table.insert(key.as_str(), value.as_ref())?;
                self.ops.record(key, value);
            }
        }
        Ok(Ok(outcomes))
    }

    fn check_all(
        &mut self,
        appends: &[StreamAppend],
    ) -> Result<Result<(), StoreError>, StoreError> {
        // Each stream as the appends checked so far would leave it.
        let mut planned: HashMap<&str, (StreamInfo, bool)> = HashMap::new();
        for append in appends {
            let name = append.stream.as_str();
            let (mut info, mut known) = match planned.remove(name) {
                Some(state) => state,
                None => match self.known_stream(name)? {
                    Some(info) => (info, true),
                    None => (StreamInfo::default(), false),
                },
            };
            if info.tombstoned {
                return Ok(Err(StoreError::StreamDeleted(name.to_string())));
            }
            if let Err(refused) = check_expected(name, &info, known, append.expected) {
                return Ok(Err(refused));
            }
            if !append.events.is_empty() {
                let first = info.last_revision.map_or(0, |r| r + 1);
                info.last_revision = Some(first + append.events.len() as u64 - 1);
                if info.is_soft_deleted() {
                    info.truncate_before = Some(first);
                }
                known = true;
            }
            planned.insert(name, (info, known));
        }
        Ok(Ok(()))
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
        let stored = stored.encode_to_vec();
        self.events.insert(position, stored.as_slice())?;
        self.stream_events.insert((stream_id, revision), position)?;
        self.ops.event(position, &stored);
        self.ops.index(stream_id, revision, position);
        self.memory.remember_id(stream_id, event.id, revision);
        Ok(position)
    }

    /// The id and position of a stored event of a stream.
    fn stored_id(&self, stream_id: u64, revision: u64) -> Result<Option<(u128, u64)>, StoreError> {
        let Some(position) = self.stream_events.get((stream_id, revision))? else {
            return Ok(None);
        };
        let position = position.value();
        let Some(bytes) = self.events.get(position)? else {
            return Ok(None);
        };
        let event = StoredEvent::decode(bytes.value())
            .map_err(|e| StoreError::Storage(format!("corrupt event at {position}: {e}")))?;
        Ok(Some((event.id_u128(), position)))
    }

    /// An append whose events are already in the stream, in order, right where the retried
    /// request would have put them, returns the original result instead of writing twice.
    ///
    /// With an exact expectation the events must sit right after it; with `Any` or
    /// `StreamExists`, wherever the first one is (if it is recent). A retry that matches only
    /// in part is refused.
    fn find_retry(
        &self,
        info: &StreamInfo,
        expected: ExpectedRevision,
        events: &[ProposedEvent],
    ) -> Result<Retry, StoreError> {
        let Some(first_event) = events.first() else {
            return Ok(Retry::Fresh);
        };
        let (start, exact) = match expected {
            ExpectedRevision::Exact(revision) if info.last_revision > Some(revision) => {
                (revision + 1, true)
            }
            ExpectedRevision::NoStream
                if info.last_revision.is_some() && !info.is_soft_deleted() =>
            {
                (0, true)
            }
            ExpectedRevision::Any | ExpectedRevision::StreamExists => {
                match self.memory.ids.get(&(info.id, first_event.id)) {
                    Some(revision) => (*revision, false),
                    None => return Ok(Retry::Fresh),
                }
            }
            _ => return Ok(Retry::Fresh),
        };
        let mut position = 0;
        for (offset, event) in events.iter().enumerate() {
            match self.stored_id(info.id, start + offset as u64)? {
                Some((id, p)) if id == event.id => position = p,
                _ if offset == 0 && exact => return Ok(Retry::Fresh),
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
        let (mut info, known) = self.stream(stream)?;
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
            self.save_stream(stream, &info, true)?;
            position
        } else {
            info.truncate_before = Some(DELETED);
            self.save_stream(stream, &info, true)?;
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
        let (mut meta_info, known) = self.stream(&meta_stream)?;
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
        self.save_stream(&meta_stream, &meta_info, !known)?;
        self.apply_metadata(stream, &event.data)?;
        Ok(position)
    }

    /// Keeps the reading rules of `$tb` and `$maxCount` on the stream itself.
    fn apply_metadata(&mut self, stream: &str, data: &[u8]) -> Result<(), StoreError> {
        if is_metastream(stream) {
            return Ok(());
        }
        let meta: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
        let (mut info, _) = self.stream(stream)?;
        info.truncate_before = meta.get("$tb").and_then(|v| v.as_u64());
        info.max_count = meta.get("$maxCount").and_then(|v| v.as_u64());
        info.max_age = meta.get("$maxAge").and_then(|v| v.as_u64());
        self.save_stream(stream, &info, true)
    }
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
