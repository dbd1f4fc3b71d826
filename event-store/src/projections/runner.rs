//! One built-in projection at work: it follows `$all` from its checkpoint, in the background,
//! and writes the events it emits in batches.
//!
//! Each batch (the links of up to a page of source events, any `$tb` metadata a reset calls
//! for, and the projection's record with the new checkpoint) is one atomic [`Store::commit`]:
//! after a crash the checkpoint names exactly the events already linked, so none is lost and
//! none is linked twice. Batches ride the writer's group commit with the appends they follow,
//! so an append pays nothing for them but the room they take in the transaction.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use super::builtin::Builtin;
use super::link;
use super::record::{parse_link_version, ProjectionRecord};
use crate::storage::{
    Direction, ExpectedRevision, ProposedEvent, Snapshot, Store, StoreError, StreamAppend,
};

/// Source events a batch links at most.
const PAGE: usize = 512;
/// Source events a batch examines at most, whether it links them or not.
const SCAN: usize = 4096;
/// Events passed over without a link before the checkpoint is saved anyway, so that a restart
/// does not examine them again (the real server's checkpoint threshold).
const CHECKPOINT_EVERY: u64 = 4000;
/// How long a failed batch waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Target streams whose links are known to be of the current epoch, remembered at most.
const VERIFIED_STREAMS: usize = 100_000;

/// How a projection is getting on; the manager reads it for `Statistics`.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// The last position dealt with (written or passed over).
    pub position: u64,
    /// The last position saved with the record.
    pub saved: u64,
    pub events_processed: u64,
    pub processing_time: Duration,
    pub writing: bool,
    /// Why the last batch failed, while it keeps failing.
    pub failure: Option<String>,
}

pub type SharedProgress = Arc<Mutex<Progress>>;

/// A running projection, stopped by [`Runner::stop`].
pub struct Runner {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// How long a stopping projection may take to finish the batch it is writing.
const STOP_WAIT: Duration = Duration::from_secs(10);

impl Runner {
    pub fn start(
        projection: Builtin,
        record: ProjectionRecord,
        store: Store,
        shutdown: watch::Receiver<bool>,
        progress: SharedProgress,
    ) -> Runner {
        if let Ok(mut p) = progress.lock() {
            *p = Progress {
                position: record.checkpoint,
                saved: record.checkpoint,
                ..Progress::default()
            };
        }
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(
            Batcher::new(projection, record),
            store,
            stopped,
            shutdown,
            progress,
        ));
        Runner { stop, task }
    }

    /// Stops it after the batch in hand; what it saved is in the store.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(STOP_WAIT, &mut task).await.is_err() {
            // Stuck on storage: a batch cut short is not committed, so nothing is half-written.
            task.abort();
        }
    }
}

/// A batch ready to commit.
struct Batch {
    appends: Vec<StreamAppend>,
    /// The last position examined; `None` when there was nothing to examine.
    scanned_to: Option<u64>,
    processed: u64,
}

/// Builds batches from storage; owns what the projection remembers between them.
struct Batcher {
    projection: Builtin,
    record: ProjectionRecord,
    /// Target streams already checked for links of an earlier epoch in this run.
    verified: HashSet<String>,
    /// Tombstoned target streams already reported.
    reported_deleted: HashSet<String>,
}

impl Batcher {
    fn new(projection: Builtin, record: ProjectionRecord) -> Batcher {
        Batcher {
            projection,
            record,
            verified: HashSet::new(),
            reported_deleted: HashSet::new(),
        }
    }

    /// The batch for the events from `from` on; `head` is a committed position the snapshot
    /// taken here includes.
    fn next_batch(&mut self, store: &Store, from: u64, head: u64) -> Result<Batch, StoreError> {
        let snapshot = store.snapshot()?;
        let projection = self.projection;
        let page = snapshot.read_all(from, Direction::Forwards, PAGE, SCAN, &|e| {
            projection.reads(e)
        })?;
        let processed = page.events.len() as u64;
        let link_version = self.record.link_version(projection);
        // One append per target stream, in the order of the sources.
        let mut appends: Vec<StreamAppend> = Vec::new();
        let mut index = std::collections::HashMap::new();
        for recorded in page.events {
            let Some(emitted) = projection.emit(&recorded.event) else {
                continue;
            };
            let stream = emitted.stream.clone();
            let event = link::proposed(emitted, &recorded.event, recorded.position, &link_version);
            let at = *index.entry(stream.clone()).or_insert_with(|| {
                appends.push(StreamAppend {
                    stream,
                    expected: ExpectedRevision::Any,
                    events: Vec::new(),
                });
                appends.len() - 1
            });
            appends[at].events.push(event);
        }
        let mut ready = Vec::with_capacity(appends.len());
        for append in appends {
            match self.prepare_target(&snapshot, &append.stream)? {
                Target::Ready => ready.push(append),
                Target::Truncate(metadata) => {
                    ready.push(StreamAppend {
                        stream: format!("$${}", append.stream),
                        expected: ExpectedRevision::Any,
                        events: vec![metadata],
                    });
                    ready.push(append);
                }
                Target::Deleted => {
                    if self.reported_deleted.insert(append.stream.clone()) {
                        tracing::warn!(
                            projection = projection.name(),
                            stream = %append.stream,
                            "the stream is deleted; the projection writes nothing more to it"
                        );
                    }
                }
            }
        }
        // Having read to the end of the log, it has dealt with everything up to the head, even
        // where no event is left to read (scavenged away).
        let scanned_to = match (page.exhausted, page.scanned_to) {
            (true, scanned) => Some(scanned.unwrap_or(0).max(head)),
            (false, scanned) => scanned,
        };
        Ok(Batch {
            appends: ready,
            scanned_to,
            processed,
        })
    }

    /// Whether links can be appended to `stream` as they are. After a reset, the first write to
    /// a stream that still ends with links of an earlier epoch hides them first (`$tb` at the
    /// stream's next revision), as the real server does, so that the stream shows the new
    /// epoch's links alone.
    fn prepare_target(&mut self, snapshot: &Snapshot, stream: &str) -> Result<Target, StoreError> {
        let info = snapshot.stream(stream)?;
        if info.as_ref().is_some_and(|i| i.tombstoned) {
            return Ok(Target::Deleted);
        }
        if self.record.epoch < 0 || self.verified.contains(stream) {
            return Ok(Target::Ready);
        }
        if self.verified.len() >= VERIFIED_STREAMS {
            self.verified.clear();
        }
        self.verified.insert(stream.to_string());
        let Some((info, last)) = info.and_then(|i| i.last_revision.map(|last| (i, last))) else {
            return Ok(Target::Ready);
        };
        let Some(newest) = snapshot.stream_event(&info, last)? else {
            return Ok(Target::Ready);
        };
        let written_by = serde_json::from_slice::<serde_json::Value>(&newest.event.custom_metadata)
            .ok()
            .and_then(|m| m.get("$v")?.as_str().and_then(parse_link_version));
        let stale = written_by.is_some_and(|(id, version)| {
            id == self.projection.projection_id() && version < self.record.epoch
        });
        if !stale {
            return Ok(Target::Ready);
        }
        Ok(Target::Truncate(truncating_metadata(
            snapshot,
            stream,
            last + 1,
        )?))
    }

    /// Forgets what a failed batch may have assumed was written.
    fn forget(&mut self) {
        self.verified.clear();
    }
}

enum Target {
    Ready,
    /// Append this metadata to the stream's metastream first.
    Truncate(ProposedEvent),
    Deleted,
}

/// The stream's newest metadata with `$tb` set to `truncate_before`.
fn truncating_metadata(
    snapshot: &Snapshot,
    stream: &str,
    truncate_before: u64,
) -> Result<ProposedEvent, StoreError> {
    let mut metadata = serde_json::Map::new();
    if let Some(info) = snapshot.stream(&format!("$${stream}"))? {
        if let Some(last) = info.last_revision {
            if let Some(newest) = snapshot.stream_event(&info, last)? {
                if let Ok(serde_json::Value::Object(existing)) =
                    serde_json::from_slice(&newest.event.data)
                {
                    metadata = existing;
                }
            }
        }
    }
    metadata.insert("$tb".into(), truncate_before.into());
    Ok(ProposedEvent {
        id: uuid::Uuid::new_v4().as_u128(),
        event_type: "$metadata".into(),
        content_type: "application/json".into(),
        custom_metadata: Bytes::new(),
        data: Bytes::from(serde_json::Value::Object(metadata).to_string()),
    })
}

fn update(progress: &SharedProgress, change: impl FnOnce(&mut Progress)) {
    if let Ok(mut p) = progress.lock() {
        change(&mut p);
    }
}

/// What a projection waits for when it has nothing to do.
enum Wake {
    Work,
    Stop,
}

async fn wait(
    head: &mut watch::Receiver<u64>,
    stop: &mut watch::Receiver<bool>,
    shutdown: &mut watch::Receiver<bool>,
    at_most: Option<Duration>,
) -> Wake {
    if *stop.borrow() || *shutdown.borrow() {
        return Wake::Stop;
    }
    let sleep = async {
        match at_most {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        changed = head.changed() => match changed {
            Ok(()) => Wake::Work,
            Err(_) => Wake::Stop,
        },
        _ = stop.changed() => Wake::Stop,
        _ = shutdown.changed() => Wake::Stop,
        _ = sleep => Wake::Work,
    }
}

/// Runs until stopped (or the store closes).
async fn run(
    mut batcher: Batcher,
    store: Store,
    mut stop: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
    progress: SharedProgress,
) {
    let projection = batcher.projection;
    let key = ProjectionRecord::key(projection);
    let mut head = store.watch_head();
    let mut position = batcher.record.checkpoint;
    loop {
        if *stop.borrow() || *shutdown.borrow() {
            return;
        }
        let target = *head.borrow_and_update();
        if position >= target {
            match wait(&mut head, &mut stop, &mut shutdown, None).await {
                Wake::Work => continue,
                Wake::Stop => return,
            }
        }
        let started = Instant::now();
        let reader = store.clone();
        let built = tokio::task::spawn_blocking(move || {
            let batch = batcher.next_batch(&reader, position + 1, target);
            (batcher, batch)
        })
        .await;
        let (returned, batch) = match built {
            Ok(built) => built,
            Err(_) => {
                tracing::error!(
                    projection = projection.name(),
                    "a projection's read failed; it stops"
                );
                update(&progress, |p| {
                    p.failure = Some(
                        "stopped after an internal failure; reset or restart the subsystem".into(),
                    )
                });
                return;
            }
        };
        batcher = returned;
        let batch = match batch {
            Ok(batch) => batch,
            Err(StoreError::Closed) => return,
            Err(e) => {
                fail(&progress, projection, &e);
                match wait(&mut head, &mut stop, &mut shutdown, Some(RETRY_AFTER)).await {
                    Wake::Work => continue,
                    Wake::Stop => return,
                }
            }
        };
        let Some(scanned_to) = batch.scanned_to else {
            // Nothing examined (not expected): wait for the head to move again.
            match wait(&mut head, &mut stop, &mut shutdown, Some(RETRY_AFTER)).await {
                Wake::Work => continue,
                Wake::Stop => return,
            }
        };
        let must_save =
            !batch.appends.is_empty() || scanned_to - batcher.record.checkpoint >= CHECKPOINT_EVERY;
        if must_save {
            let record = ProjectionRecord {
                checkpoint: scanned_to,
                ..batcher.record
            };
            update(&progress, |p| p.writing = true);
            let committed = store
                .commit(batch.appends, vec![(key.clone(), record.encode())])
                .await;
            update(&progress, |p| p.writing = false);
            match committed {
                Ok(_) => batcher.record = record,
                Err(StoreError::Closed) => return,
                Err(e) => {
                    batcher.forget();
                    fail(&progress, projection, &e);
                    match wait(&mut head, &mut stop, &mut shutdown, Some(RETRY_AFTER)).await {
                        Wake::Work => continue,
                        Wake::Stop => return,
                    }
                }
            }
        }
        position = scanned_to;
        let saved = batcher.record.checkpoint;
        update(&progress, |p| {
            p.position = position;
            p.saved = saved;
            p.events_processed += batch.processed;
            p.processing_time += started.elapsed();
            p.failure = None;
        });
    }
}

fn fail(progress: &SharedProgress, projection: Builtin, error: &StoreError) {
    tracing::warn!(projection = projection.name(), %error, "a projection's batch failed; it is tried again");
    update(progress, |p| p.failure = Some(error.to_string()));
}
