//! The journal: what makes a commit durable between two checkpoints of the database.
//!
//! A durable redb commit writes every page it changed, each to its own place in the file, and
//! then syncs: about ten scattered page writes for a single appended event. The writer instead
//! writes what a commit puts in the tables (its [`Ops`]) as one entry at the end of this small,
//! preallocated file, syncs that one write, and commits to redb without syncing (the pages stay
//! in memory). When an entry no longer fits, that commit goes to redb durably, which covers
//! every earlier one, and the journal starts again from its beginning: a checkpoint.
//!
//! Each redb commit records the sequence number of the entry it applied (`journal_seq`), so on
//! opening, the database's durable state says where the journal takes over: the entries after
//! it, in order, are applied again. An entry is `len | crc32 | seq | ops`; reading stops at the
//! first one that is torn, stale (from before the last checkpoint) or out of sequence.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use redb::{Database, Durability, ReadableTable, WriteTransaction};

use super::{StoreError, COUNTERS, EVENTS, RECORDS, STREAMS, STREAM_EVENTS};

/// The journal's size unless told otherwise: its entries between two checkpoints. Larger
/// entries (a very large append) go straight to the database, durably.
///
/// A checkpoint writes every page changed since the last one, and a stream's record sits in a
/// table ordered by name, so new streams touch pages all over it: the page count of a
/// checkpoint grows with that table and much less than in proportion to the journal. A larger
/// journal means fewer checkpoints (fewer stalls of every append while one is written), at the
/// price of more to apply again when opening after a crash; BENCHMARKS.md measures both.
pub const DEFAULT_CAPACITY: u64 = 16 * 1024 * 1024;
/// Length, checksum and sequence number.
const HEADER: u64 = 16;
/// The counter naming the last journal entry the database holds.
const JOURNAL_SEQ: &str = "journal_seq";

/// What one commit put in the tables, in order, to be put again after a crash.
#[derive(Default)]
pub struct Ops(Vec<u8>);

/// The tables an op writes to.
const EVENT: u8 = 0;
const STREAM: u8 = 1;
const INDEX: u8 = 2;
const RECORD: u8 = 3;
const COUNTER: u8 = 4;

impl Ops {
    pub fn event(&mut self, position: u64, stored: &[u8]) {
        self.0.push(EVENT);
        self.u64(position);
        self.bytes(stored);
    }

    pub fn stream(&mut self, name: &str, record: &[u8]) {
        self.0.push(STREAM);
        self.bytes(name.as_bytes());
        self.bytes(record);
    }

    pub fn index(&mut self, stream_id: u64, revision: u64, position: u64) {
        self.0.push(INDEX);
        self.u64(stream_id);
        self.u64(revision);
        self.u64(position);
    }

    pub fn record(&mut self, key: &str, value: &[u8]) {
        self.0.push(RECORD);
        self.bytes(key.as_bytes());
        self.bytes(value);
    }

    pub fn counter(&mut self, name: &str, value: u64) {
        self.0.push(COUNTER);
        self.bytes(name.as_bytes());
        self.u64(value);
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.0
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.0.extend_from_slice(bytes);
    }
}

/// Puts `ops` (an entry's, checked by its checksum) in the tables of `txn`.
fn apply(txn: &WriteTransaction, ops: &[u8]) -> Result<(), StoreError> {
    let mut events = txn.open_table(EVENTS)?;
    let mut streams = txn.open_table(STREAMS)?;
    let mut index = txn.open_table(STREAM_EVENTS)?;
    let mut records = txn.open_table(RECORDS)?;
    let mut counters = txn.open_table(COUNTERS)?;
    let mut at = Cursor(ops);
    let corrupt = || StoreError::Storage("a journal entry does not decode".into());
    while let Some(tag) = at.u8() {
        match tag {
            EVENT => {
                let (position, stored) = at.u64().zip(at.bytes()).ok_or_else(corrupt)?;
                events.insert(position, stored)?;
            }
            STREAM => {
                let (name, record) = at.str().zip(at.bytes()).ok_or_else(corrupt)?;
                streams.insert(name, record)?;
            }
            INDEX => {
                let (stream_id, revision) = at.u64().zip(at.u64()).ok_or_else(corrupt)?;
                let position = at.u64().ok_or_else(corrupt)?;
                index.insert((stream_id, revision), position)?;
            }
            RECORD => {
                let (key, value) = at.str().zip(at.bytes()).ok_or_else(corrupt)?;
                records.insert(key, value)?;
            }
            COUNTER => {
                let (name, value) = at.str().zip(at.u64()).ok_or_else(corrupt)?;
                counters.insert(name, value)?;
            }
            _ => return Err(corrupt()),
        }
    }
    Ok(())
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
}

/// The journal file and where the next entry goes.
pub struct Journal {
    file: File,
    /// Where entries stop fitting. The file may be longer (written with a larger setting).
    capacity: u64,
    /// Where the next entry is written.
    offset: u64,
    /// The sequence number of the next entry.
    next_seq: u64,
    /// An entry whose write failed: it is never applied again.
    refused: Option<u64>,
    entry: Vec<u8>,
}

fn io_error(what: &str, e: std::io::Error) -> StoreError {
    if super::is_disk_full(&e) {
        StoreError::DiskFull
    } else {
        StoreError::Io(format!("journal {what}: {e}"))
    }
}

impl Journal {
    /// Opens the journal at `path`, creating it zero-filled to its full size: syncing a write
    /// into blocks the file already has does not also commit file-system metadata.
    pub fn open(path: &Path, capacity: u64) -> Result<Journal, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io_error("open", e))?;
        let len = file.metadata().map_err(|e| io_error("open", e))?.len();
        if len < capacity {
            let zeros = vec![0u8; 64 * 1024];
            let mut at = len;
            while at < capacity {
                let n = zeros.len().min((capacity - at) as usize);
                file.write_all_at(&zeros[..n], at)
                    .map_err(|e| io_error("creation", e))?;
                at += n as u64;
            }
            file.sync_all().map_err(|e| io_error("creation", e))?;
            if let Some(dir) = path.parent() {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io_error("creation", e))?;
            }
        }
        Ok(Journal {
            file,
            capacity,
            offset: 0,
            next_seq: 1,
            refused: None,
            entry: Vec::new(),
        })
    }

    /// Applies to a freshly opened `db` the entries its durable state lacks, without syncing
    /// (they stay in the journal), and places the journal after them. Returns how many.
    pub fn recover(&mut self, db: &Database) -> Result<u64, StoreError> {
        // The whole file: entries written before a restart with a smaller journal count too.
        let len = self.file.metadata().map_err(|e| io_error("read", e))?.len();
        let len = usize::try_from(len)
            .map_err(|_| StoreError::Storage(format!("a journal of {len} bytes is too large")))?;
        let mut contents = vec![0u8; len];
        self.file
            .read_exact_at(&mut contents, 0)
            .map_err(|e| io_error("read", e))?;
        let mut txn = db.begin_write()?;
        non_durable(&mut txn)?;
        let durable = txn
            .open_table(COUNTERS)?
            .get(JOURNAL_SEQ)?
            .map_or(0, |v| v.value());
        // Entries run in sequence from the start of the file: first those the database already
        // holds (a durable commit other than a checkpoint may have covered some), then those
        // it lacks. Stale entries of an earlier round are all covered, and out of sequence
        // with what follows them.
        let mut offset = 0u64;
        let mut last = None;
        let mut applied = 0;
        while let Some((seq, ops)) = entry_at(&contents, offset) {
            let in_sequence = last.is_none_or(|l: u64| seq == l + 1);
            let refused = self.refused.is_some_and(|r| seq >= r);
            if !in_sequence || refused {
                break;
            }
            if seq > durable {
                apply(&txn, ops)?;
                applied += 1;
            }
            offset += HEADER + ops.len() as u64;
            last = Some(seq);
        }
        if applied > 0 {
            save_seq(&txn, last.unwrap_or(durable))?;
            self.offset = offset;
            self.next_seq = last.unwrap_or(durable) + 1;
        } else {
            // The database holds everything: a new round.
            self.offset = 0;
            self.next_seq = durable + 1;
        }
        txn.commit()?;
        Ok(applied)
    }

    /// Whether `ops` fit as one entry before the journal is full.
    pub fn fits(&self, ops: &Ops) -> bool {
        self.offset + HEADER + ops.0.len() as u64 <= self.capacity
    }

    /// The sequence number the next entry takes.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Writes `ops` as the next entry and syncs it: once this returns, the commit is durable.
    /// When it fails, the entry may still have reached the disk: it is refused (never applied
    /// again, see [`Journal::checkpointed`]) and its number is taken by the next entry.
    pub fn append(&mut self, ops: &Ops) -> Result<(), StoreError> {
        let seq = self.next_seq;
        self.entry.clear();
        self.entry
            .extend_from_slice(&(ops.0.len() as u32).to_le_bytes());
        self.entry
            .extend_from_slice(&checksum(seq, &ops.0).to_le_bytes());
        self.entry.extend_from_slice(&seq.to_le_bytes());
        self.entry.extend_from_slice(&ops.0);
        if let Err(e) = self
            .file
            .write_all_at(&self.entry, self.offset)
            .and_then(|()| self.file.sync_data())
        {
            self.refused = Some(seq);
            return Err(io_error("write", e));
        }
        self.refused = None;
        self.next_seq += 1;
        self.offset += self.entry.len() as u64;
        Ok(())
    }

    /// Marks, in `txn`, the last entry the database holds once `txn` commits: `seq` for a
    /// journaled commit; for a durable one, the last entry written, or a refused one, so that
    /// it is never applied even if it reached the disk.
    pub fn save_seq(&self, txn: &WriteTransaction, seq: Option<u64>) -> Result<(), StoreError> {
        let covered = self.refused.unwrap_or(self.next_seq - 1);
        save_seq(txn, seq.unwrap_or(covered))
    }

    /// Records that a durable commit marked with `save_seq(txn, None)` holds everything: the
    /// journal starts again from its beginning.
    pub fn checkpointed(&mut self) {
        if let Some(refused) = self.refused.take() {
            self.next_seq = refused + 1;
        }
        self.offset = 0;
    }
}

/// Makes `txn` a commit kept in memory: the journal is what makes it durable.
pub fn non_durable(txn: &mut WriteTransaction) -> Result<(), StoreError> {
    txn.set_durability(Durability::None)
        .map_err(|e| StoreError::Storage(e.to_string()))
}

fn save_seq(txn: &WriteTransaction, seq: u64) -> Result<(), StoreError> {
    txn.open_table(COUNTERS)?.insert(JOURNAL_SEQ, seq)?;
    Ok(())
}

fn checksum(seq: u64, ops: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(ops);
    crc.finalize()
}

/// The sequence number and ops of the entry at `offset`, if it is whole.
fn entry_at(contents: &[u8], offset: u64) -> Option<(u64, &[u8])> {
    let start = usize::try_from(offset).ok()?;
    let mut header = Cursor(contents.get(start..)?);
    let len = header.u32()? as usize;
    let crc = header.u32()?;
    let seq = header.u64()?;
    let ops = header.take(len)?;
    (len > 0 && checksum(seq, ops) == crc).then_some((seq, ops))
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, ReadableTableMetadata};

    use super::*;

    fn database(dir: &Path) -> Database {
        Database::builder().create(dir.join("db")).unwrap()
    }

    fn event_count(db: &Database) -> u64 {
        let txn = db.begin_read().unwrap();
        txn.open_table(EVENTS).map_or(0, |t| t.len().unwrap())
    }

    fn ops_for(position: u64) -> Ops {
        let mut ops = Ops::default();
        ops.event(position, b"stored event");
        ops.index(1, position - 1, position);
        ops.counter("next_position", position + 1);
        ops
    }

    #[test]
    fn entries_after_the_durable_state_are_applied_again_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&dir.path().join("journal"), DEFAULT_CAPACITY).unwrap();
        {
            let db = database(dir.path());
            journal.recover(&db).unwrap();
            for position in 1..=3 {
                journal.append(&ops_for(position)).unwrap();
            }
            // A torn fourth entry: its checksum does not match.
            let mut torn = ops_for(4);
            torn.0.truncate(torn.0.len() - 3);
            journal.append(&torn).unwrap();
            let end = journal.offset;
            journal.file.write_all_at(&[0xff; 3], end - 3).unwrap();
        }
        let db = database(dir.path());
        let mut journal = Journal::open(&dir.path().join("journal"), DEFAULT_CAPACITY).unwrap();
        assert_eq!(journal.recover(&db).unwrap(), 3);
        assert_eq!(event_count(&db), 3);
        assert_eq!(journal.next_seq(), 4);
    }

    #[test]
    fn entries_beyond_a_smaller_journal_setting_are_applied_all_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut journal = Journal::open(&path, 64 * 1024).unwrap();
        {
            let db = database(dir.path());
            journal.recover(&db).unwrap();
            for position in 1..=100 {
                journal.append(&ops_for(position)).unwrap();
            }
            assert!(journal.offset > 4096);
        }
        // Restarted after a crash with a journal of 4 KiB: the entries past it count.
        let db = database(dir.path());
        let mut smaller = Journal::open(&path, 4096).unwrap();
        assert_eq!(smaller.recover(&db).unwrap(), 100);
        assert_eq!(event_count(&db), 100);
        assert!(
            !smaller.fits(&ops_for(101)),
            "the next commit is a checkpoint"
        );
    }

    #[test]
    fn after_a_checkpoint_stale_entries_are_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(dir.path());
        let mut journal = Journal::open(&dir.path().join("journal"), DEFAULT_CAPACITY).unwrap();
        journal.recover(&db).unwrap();
        for position in 1..=3 {
            journal.append(&ops_for(position)).unwrap();
        }
        // A durable commit holding entry 3 (and so 1 and 2): a checkpoint.
        let txn = db.begin_write().unwrap();
        apply(&txn, &ops_for(1).0).unwrap();
        journal.save_seq(&txn, None).unwrap();
        txn.commit().unwrap();
        journal.checkpointed();
        drop(db);

        let db = database(dir.path());
        let mut reopened = Journal::open(&dir.path().join("journal"), DEFAULT_CAPACITY).unwrap();
        assert_eq!(reopened.recover(&db).unwrap(), 0, "entries 1-3 are stale");
        assert_eq!(event_count(&db), 1);
        assert_eq!(reopened.next_seq(), 4);
        assert_eq!(reopened.offset, 0);
    }

    #[test]
    fn a_refused_entry_is_never_applied_even_when_it_reached_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&dir.path().join("journal"), DEFAULT_CAPACITY).unwrap();
        let db = database(dir.path());
        journal.recover(&db).unwrap();
        journal.append(&ops_for(1)).unwrap();
        // Entry 2 is on disk, but its sync failed: the commit was refused.
        journal.append(&ops_for(2)).unwrap();
        journal.next_seq -= 1;
        journal.offset = 0;
        journal.refused = Some(2);
        drop(db);

        // Reopened after the failure: entry 1 is applied again, entry 2 is not.
        let db = database(dir.path());
        journal.recover(&db).unwrap();
        assert_eq!(event_count(&db), 1);
        assert_eq!(journal.next_seq(), 2);

        // The durable commit that follows a refusal marks entry 2 as covered.
        let txn = db.begin_write().unwrap();
        journal.save_seq(&txn, None).unwrap();
        txn.commit().unwrap();
        journal.checkpointed();
        assert_eq!(journal.next_seq(), 3);
        drop(db);

        // Even a process that knows nothing of the refusal does not apply it.
        let db = database(dir.path());
        let mut fresh = Journal::open(&dir.path().join("journal"), DEFAULT_CAPACITY).unwrap();
        assert_eq!(fresh.recover(&db).unwrap(), 0);
        assert_eq!(event_count(&db), 1);
        assert_eq!(fresh.next_seq(), 3);
    }
}
