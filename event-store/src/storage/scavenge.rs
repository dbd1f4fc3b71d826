//! Scavenging: removing the events no reader can see any more (those of deleted streams, and
//! those before a stream's `$tb`, beyond its `$maxCount` or older than its `$maxAge`), so that
//! their space is used again.
//!
//! It runs beside the writer, in transactions of its own of bounded size (redb takes write
//! transactions one at a time, so appends wait for at most one chunk). Each stream keeps its
//! newest event, which holds its revision: a stream written again continues where it was.

use std::sync::atomic::{AtomicBool, Ordering};

use prost::Message;
use redb::{ReadableDatabase, ReadableTable};

use super::record::{StoredEvent, StreamInfo, StreamRecord};
use super::snapshot::last_revision;
use super::{SharedDatabase, StoreError, EVENTS, STREAMS, STREAM_EVENTS};

/// Events removed per transaction: large enough to amortise the fsync, small enough that an
/// append never waits long behind it.
const CHUNK: usize = 4096;

/// What a scavenge did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScavengeReport {
    pub streams_scavenged: u64,
    pub events_removed: u64,
    /// It was stopped before the end; what it removed stays removed.
    pub stopped: bool,
}

fn database(shared: &SharedDatabase) -> Result<std::sync::Arc<redb::Database>, StoreError> {
    shared
        .read()
        .map_err(|_| StoreError::Closed)?
        .clone()
        .ok_or(StoreError::Closed)
}

pub(super) fn run(
    shared: &SharedDatabase,
    stop: &AtomicBool,
) -> Result<ScavengeReport, StoreError> {
    let names: Vec<String> = {
        let db = database(shared)?;
        let txn = db.begin_read()?;
        let streams = txn.open_table(STREAMS)?;
        let mut names = Vec::new();
        for entry in streams.iter()? {
            names.push(entry?.0.value().to_string());
        }
        names
    };
    let mut report = ScavengeReport::default();
    for name in names {
        loop {
            if stop.load(Ordering::Relaxed) {
                report.stopped = true;
                return Ok(report);
            }
            let (removed, more) = scavenge_chunk(shared, &name)?;
            report.events_removed += removed as u64;
            if removed > 0 && !more {
                report.streams_scavenged += 1;
            }
            if !more {
                break;
            }
        }
    }
    Ok(report)
}

/// Removes up to [`CHUNK`] invisible events of one stream in one transaction; whether more
/// remain. What is invisible is decided inside the transaction, against the stream as it is.
fn scavenge_chunk(shared: &SharedDatabase, name: &str) -> Result<(usize, bool), StoreError> {
    let db = database(shared)?;
    let txn = db.begin_write()?;
    let (removed, more) = {
        let streams = txn.open_table(STREAMS)?;
        let Some(bytes) = streams.get(name)? else {
            return Ok((0, false));
        };
        let record = StreamRecord::decode(bytes.value())
            .map_err(|e| StoreError::Storage(format!("corrupt stream record {name}: {e}")))?;
        drop(bytes);
        let mut index = txn.open_table(STREAM_EVENTS)?;
        let Some(last) = last_revision(&index, record.id)? else {
            return Ok((0, false));
        };
        let info = StreamInfo::from_record(record, Some(last));
        // Everything before the first visible revision goes, but never the newest event.
        let mut keep_from = info.first_visible(name).min(last);
        if info.max_age.is_some() {
            // Events are in time order: those past `$maxAge` come first.
            let events = txn.open_table(EVENTS)?;
            let now = super::now_ticks();
            for entry in index.range((info.id, keep_from)..(info.id, last))? {
                let (key, position) = entry?;
                let Some(bytes) = events.get(position.value())? else {
                    continue;
                };
                let event = StoredEvent::decode(bytes.value()).map_err(|e| {
                    StoreError::Storage(format!("corrupt event at {}: {e}", position.value()))
                })?;
                if !info.is_expired(&event, now) {
                    break;
                }
                keep_from = key.value().1 + 1;
            }
        }
        let doomed: Vec<(u64, u64)> = index
            .range((info.id, 0)..(info.id, keep_from))?
            .take(CHUNK + 1)
            .map(|entry| entry.map(|(key, position)| (key.value().1, position.value())))
            .collect::<Result<_, _>>()?;
        let more = doomed.len() > CHUNK;
        let mut events = txn.open_table(EVENTS)?;
        let mut removed = 0;
        for &(revision, position) in doomed.iter().take(CHUNK) {
            index.remove((info.id, revision))?;
            events.remove(position)?;
            removed += 1;
        }
        (removed, more)
    };
    if removed == 0 {
        txn.abort()?;
    } else {
        txn.commit()?;
    }
    Ok((removed, more))
}
