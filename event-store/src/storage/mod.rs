//! Durable storage for the event store, on the `redb` embedded database.
//!
//! One writer thread owns every write and batches whatever appends are waiting into a single
//! transaction (group commit), made durable by one synced write to the journal (see
//! [`journal`]); a reply is sent only after that sync, so an acknowledged event survives a
//! crash. Readers work on snapshots and never block the writer, and see a commit only once it
//! is durable. Nothing at start-up scans the log: counters are kept in a small table, and the
//! journal holds at most the commits since the last checkpoint.

mod journal;
mod record;
mod scavenge;
mod snapshot;
mod writer;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use redb::{Database, TableDefinition};
use tokio::sync::{mpsc, oneshot, watch};

pub use record::{is_metastream, now_ticks, StoredEvent, StreamInfo, DELETED, TOMBSTONE_REVISION};
pub use scavenge::ScavengeReport;
pub use snapshot::{AllPage, Direction, Recorded, Snapshot};

/// Global position → encoded [`StoredEvent`]. Positions are dense and start at 1.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Stream name → encoded [`record::StreamRecord`].
const STREAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("streams");
/// (stream id, revision) → global position.
const STREAM_EVENTS: TableDefinition<(u64, u64), u64> = TableDefinition::new("stream_events");
/// Counters that would otherwise need a scan at start-up.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// Small records that the store's own subsystems keep (a projection's checkpoint and state),
/// written in the same transaction as the events they describe.
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");

/// The page cache used unless told otherwise.
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The memory and disk the store may use besides the log itself.
#[derive(Clone, Copy, Debug)]
pub struct StoreSizes {
    /// The page cache: memory stays within it however long the log grows.
    pub cache_bytes: usize,
    /// The journal: how much is written between two checkpoints of the database.
    pub journal_bytes: u64,
}

impl Default for StoreSizes {
    fn default() -> StoreSizes {
        StoreSizes {
            cache_bytes: DEFAULT_CACHE_BYTES,
            journal_bytes: journal::DEFAULT_CAPACITY,
        }
    }
}

/// The optimistic-concurrency check of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedRevision {
    Any,
    NoStream,
    StreamExists,
    Exact(u64),
}

/// An event a client asks to append.
#[derive(Clone, Debug)]
pub struct ProposedEvent {
    pub id: u128,
    pub event_type: String,
    pub content_type: String,
    pub custom_metadata: Bytes,
    pub data: Bytes,
}

impl ProposedEvent {
    /// What the event weighs against the append size limit.
    pub fn size(&self) -> usize {
        self.data.len() + self.custom_metadata.len() + self.event_type.len()
    }
}

/// One stream's part of an atomic [`Store::commit`].
#[derive(Clone, Debug)]
pub struct StreamAppend {
    pub stream: String,
    pub expected: ExpectedRevision,
    pub events: Vec<ProposedEvent>,
}

/// The result of a write that went through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The stream's revision after the write; `None` while it has no event.
    pub current_revision: Option<u64>,
    /// The global position of the last event written; `None` when nothing was written.
    pub position: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("wrong expected version: expected {expected:?}, current {current:?}")]
    WrongExpectedVersion {
        expected: ExpectedRevision,
        current: Option<u64>,
    },
    #[error("event stream '{0}' is deleted")]
    StreamDeleted(String),
    #[error("storage failure: {0}")]
    Storage(String),
    /// The disk is full: writes are refused until there is space again; reads go on.
    #[error("the disk is full")]
    DiskFull,
    /// A write to disk failed: the database is reopened before the next write.
    #[error("storage I/O failure: {0}")]
    Io(String),
    #[error("the event store is shutting down")]
    Closed,
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::Io(io) if is_disk_full(&io) => StoreError::DiskFull,
            redb::Error::Io(io) => StoreError::Io(io.to_string()),
            // redb refuses every write after a failed one until it is reopened.
            redb::Error::PreviousIo => StoreError::Io("an earlier write failed".into()),
            other => StoreError::Storage(other.to_string()),
        }
    }
}

impl StoreError {
    /// Whether the database must be reopened before it takes writes again.
    fn needs_reopen(&self) -> bool {
        matches!(self, StoreError::DiskFull | StoreError::Io(_))
    }
}

fn is_disk_full(e: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
}

macro_rules! storage_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::from(redb::Error::from(e))
            }
        }
    )*};
}
storage_error_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::DatabaseError
);

/// A write waiting for the writer thread.
enum WriteCommand {
    Append {
        stream: String,
        expected: ExpectedRevision,
        events: Vec<ProposedEvent>,
        reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
    },
    Delete {
        stream: String,
        expected: ExpectedRevision,
        tombstone: bool,
        reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
    },
    /// Appends to several streams and record updates, all or nothing.
    Commit {
        appends: Vec<StreamAppend>,
        records: Vec<(String, Bytes)>,
        reply: oneshot::Sender<Result<Vec<WriteOutcome>, StoreError>>,
    },
}

/// The database, shared by the writer and the readers. The writer replaces it when it must be
/// reopened; meanwhile (milliseconds) there is none and reads are refused as unavailable.
type SharedDatabase = Arc<std::sync::RwLock<Option<Arc<Database>>>>;

/// How to open the database file, again after a failure.
#[derive(Clone)]
struct Opener {
    path: std::path::PathBuf,
    cache_bytes: usize,
}

/// Free space below which writes refused for a full disk are not tried again yet.
const ROOM_TO_REOPEN: u64 = 4 * 1024 * 1024;

impl Opener {
    /// Whether the file system holding the database has room for writes again.
    fn has_room(&self) -> bool {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        match rustix::fs::statvfs(dir) {
            Ok(stats) => stats.f_bavail.saturating_mul(stats.f_frsize) >= ROOM_TO_REOPEN,
            // Unknown: try, as before.
            Err(_) => true,
        }
    }

    fn open(&self) -> Result<Database, redb::DatabaseError> {
        Database::builder()
            .set_cache_size(self.cache_bytes)
            .create(&self.path)
    }
}

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: SharedDatabase,
    writes: mpsc::Sender<WriteCommand>,
    head: watch::Receiver<u64>,
    /// Set to stop a running scavenge between two of its chunks.
    scavenge_stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Store {
    /// Opens (or creates) the store in `dir` with the default sizes and starts its writer.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, StoreSizes::default())
    }

    /// Opens the store with the given cache and journal sizes.
    pub fn open_with(dir: &Path, sizes: StoreSizes) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        let opener = Opener {
            path: dir.join("events.redb"),
            cache_bytes: sizes.cache_bytes,
        };
        let mut journal = journal::Journal::open(&dir.join("journal"), sizes.journal_bytes)?;
        let db = Arc::new(opener.open()?);
        journal.recover(&db)?;
        let counters = writer::Counters::initialise(&db)?;
        let (head_tx, head_rx) = watch::channel(counters.head());
        let (tx, rx) = mpsc::channel(4096);
        let db: SharedDatabase = Arc::new(std::sync::RwLock::new(Some(db)));
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("event-store-writer".into())
            .spawn(move || writer::run(writer_db, opener, journal, counters, rx, head_tx))
            .map_err(|e| StoreError::Storage(format!("cannot start the writer: {e}")))?;
        Ok(Store {
            db,
            writes: tx,
            head: head_rx,
            scavenge_stop: Arc::default(),
        })
    }

    /// Appends events to a stream, durably, if `expected` holds.
    pub async fn append(
        &self,
        stream: String,
        expected: ExpectedRevision,
        events: Vec<ProposedEvent>,
    ) -> Result<WriteOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteCommand::Append {
            stream,
            expected,
            events,
            reply,
        })
        .await?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Soft-deletes (`tombstone == false`) or tombstones a stream.
    pub async fn delete(
        &self,
        stream: String,
        expected: ExpectedRevision,
        tombstone: bool,
    ) -> Result<WriteOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteCommand::Delete {
            stream,
            expected,
            tombstone,
            reply,
        })
        .await?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Appends to several streams and sets records in one transaction: either every append
    /// passes its checks and everything is written, or nothing is and the first refusal is
    /// returned. It rides the writer's group commit like any append, so a subsystem can keep its
    /// progress exactly in step with what it wrote.
    pub async fn commit(
        &self,
        appends: Vec<StreamAppend>,
        records: Vec<(String, Bytes)>,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteCommand::Commit {
            appends,
            records,
            reply,
        })
        .await?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Removes what no reader can see any more (deleted streams' events, events before `$tb`,
    /// beyond `$maxCount` or past `$maxAge`), beside the writer, in chunks: their space is used
    /// again.
    pub async fn scavenge(&self) -> Result<ScavengeReport, StoreError> {
        self.scavenge_stop
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let (db, stop) = (self.db.clone(), self.scavenge_stop.clone());
        tokio::task::spawn_blocking(move || scavenge::run(&db, &stop))
            .await
            .map_err(|_| StoreError::Storage("the scavenge task failed".into()))?
    }

    /// Stops a running scavenge after its current chunk.
    pub fn stop_scavenge(&self) {
        self.scavenge_stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// A record kept with [`Store::commit`], as of the latest commit.
    pub fn record(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let db = self
            .db
            .read()
            .map_err(|_| StoreError::Closed)?
            .clone()
            .ok_or(StoreError::Closed)?;
        let txn = redb::ReadableDatabase::begin_read(db.as_ref())?;
        let table = txn.open_table(RECORDS)?;
        let value = table.get(key)?.map(|v| Bytes::copy_from_slice(v.value()));
        Ok(value)
    }

    async fn send(&self, command: WriteCommand) -> Result<(), StoreError> {
        self.writes
            .send(command)
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// A consistent read-only view of everything committed so far.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let db = self
            .db
            .read()
            .map_err(|_| StoreError::Closed)?
            .clone()
            .ok_or(StoreError::Closed)?;
        Snapshot::open(&db)
    }

    /// The position of the newest committed event (0 when the log is empty).
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// Wakes whoever holds it each time the head moves: live subscriptions wait on it.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }
}
