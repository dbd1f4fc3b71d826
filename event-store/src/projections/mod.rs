//! The system projections the real server ships, run natively: `$by_category` (`$ce-<category>`),
//! `$by_event_type` (`$et-<type>`), `$streams` and `$stream_by_category` (`$category-<category>`).
//!
//! Clients read category and event-type streams with `resolve_links`; these keep them written,
//! in the background, from `$all`. Each projection keeps a record (enabled, epoch, version,
//! checkpoint) in the store's records table, rewritten atomically with every batch of links it
//! writes, so that a `kill -9` neither loses a link nor writes one twice, and Enable, Disable
//! and Reset outlast a restart. No JavaScript engine runs here: user-defined projections are
//! refused by the gRPC service.
//!
//! - [`builtin`]: what each projection reads and writes.
//! - `link`: the shape of the events written.
//! - `record`: what is remembered of each projection.
//! - `runner`: one projection following `$all` and writing its batches.

pub mod builtin;
mod link;
mod record;
mod runner;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{watch, Mutex};

pub use builtin::Builtin;
pub use record::ProjectionRecord;

use crate::storage::{Store, StoreError};
use runner::{Runner, SharedProgress};

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("Projection '{0}' not found")]
    NotFound(String),
    #[error("the record of projection {projection} is unreadable: {reason}")]
    CorruptRecord {
        projection: &'static str,
        reason: String,
    },
    /// The projection cannot run until it is reset; the reason says why.
    #[error("Projection '{name}' is faulted: {reason}")]
    Faulted { name: &'static str, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which projections `Statistics` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    Named(String),
    All,
    Continuous,
    Transient,
    OneTime,
}

/// What `Statistics` says of one projection, in the real server's terms.
#[derive(Clone, Debug, PartialEq)]
pub struct Statistics {
    pub name: &'static str,
    /// `Running`, `Stopped`, `Aborted` or `Faulted`.
    pub status: &'static str,
    pub state_reason: String,
    pub mode: &'static str,
    /// How far it has read, as a checkpoint tag: `C:<commit>/P:<prepare>`.
    pub position: String,
    /// Percent of `$all` dealt with.
    pub progress: f32,
    /// The checkpoint saved last, as a tag; empty before the first.
    pub last_checkpoint: String,
    pub epoch: i64,
    pub version: i64,
    pub events_processed_after_restart: i64,
    pub core_processing_time_ms: i64,
    pub writes_in_progress: i32,
    pub partitions_cached: i32,
    pub checkpoint_status: &'static str,
}

const RUNNING: &str = "Running";
const STOPPED: &str = "Stopped";
const ABORTED: &str = "Aborted";
const FAULTED: &str = "Faulted";

/// One projection as the manager holds it.
struct Slot {
    record: ProjectionRecord,
    runner: Option<Runner>,
    progress: SharedProgress,
    /// How it reads while not running: stopped with its checkpoint, or aborted without.
    stopped_as: &'static str,
    /// Why it cannot run, until a reset.
    fault: Option<String>,
}

/// The built-in projections of one store; cheap to clone.
#[derive(Clone)]
pub struct SystemProjections {
    store: Store,
    shutdown: watch::Receiver<bool>,
    /// Held across every change, so that management calls take effect one at a time.
    slots: Arc<Mutex<BTreeMap<Builtin, Slot>>>,
}

impl SystemProjections {
    /// Loads each projection's record and starts those enabled. A store that never ran them
    /// starts all four from the beginning of `$all`.
    pub async fn start(
        store: Store,
        shutdown: watch::Receiver<bool>,
    ) -> Result<SystemProjections, ProjectionError> {
        let projections = SystemProjections {
            store,
            shutdown,
            slots: Arc::new(Mutex::new(BTreeMap::new())),
        };
        let mut slots = projections.slots.lock().await;
        projections.load(&mut slots)?;
        drop(slots);
        Ok(projections)
    }

    fn load(&self, slots: &mut BTreeMap<Builtin, Slot>) -> Result<(), ProjectionError> {
        for projection in Builtin::ALL {
            let progress = SharedProgress::default();
            let (record, fault) = match self.saved_record(projection) {
                Ok(record) => (record, None),
                Err(ProjectionError::CorruptRecord { reason, .. }) => {
                    tracing::error!(projection = projection.name(), %reason, "a projection's record is unreadable; it stays stopped until reset");
                    let stopped = ProjectionRecord {
                        enabled: false,
                        ..ProjectionRecord::fresh()
                    };
                    (stopped, Some(reason))
                }
                Err(other) => return Err(other),
            };
            let runner = (record.enabled && fault.is_none())
                .then(|| self.run(projection, record, &progress));
            slots.insert(
                projection,
                Slot {
                    record,
                    runner,
                    progress,
                    stopped_as: STOPPED,
                    fault,
                },
            );
        }
        Ok(())
    }

    fn saved_record(&self, projection: Builtin) -> Result<ProjectionRecord, ProjectionError> {
        match self.store.record(&ProjectionRecord::key(projection))? {
            Some(bytes) => ProjectionRecord::decode(projection, &bytes),
            None => Ok(ProjectionRecord::fresh()),
        }
    }

    async fn save(
        &self,
        projection: Builtin,
        record: ProjectionRecord,
    ) -> Result<(), ProjectionError> {
        self.store
            .commit(
                Vec::new(),
                vec![(ProjectionRecord::key(projection), record.encode())],
            )
            .await?;
        Ok(())
    }

    fn run(
        &self,
        projection: Builtin,
        record: ProjectionRecord,
        progress: &SharedProgress,
    ) -> Runner {
        Runner::start(
            projection,
            record,
            self.store.clone(),
            self.shutdown.clone(),
            Arc::clone(progress),
        )
    }

    /// Stops a slot's runner, if it runs, and returns its record as the store has it, with the
    /// checkpoint moved up to where it got when `keep_position`: past the last saved checkpoint
    /// it only passed over events that call for no link.
    async fn halt(
        &self,
        projection: Builtin,
        slot: &mut Slot,
        keep_position: bool,
    ) -> Result<ProjectionRecord, ProjectionError> {
        if let Some(runner) = slot.runner.take() {
            runner.stop().await;
        }
        let mut record = self.saved_record(projection)?;
        if keep_position {
            let position = slot.progress.lock().map(|p| p.position).unwrap_or(0);
            record.checkpoint = record.checkpoint.max(position);
        }
        Ok(record)
    }

    fn named(name: &str) -> Result<Builtin, ProjectionError> {
        Builtin::from_name(name).ok_or_else(|| ProjectionError::NotFound(name.to_string()))
    }

    /// Whether `name` is one of the built-in projections.
    pub fn is_builtin(name: &str) -> bool {
        Builtin::from_name(name).is_some()
    }

    /// A projection's state (and result): the built-ins keep none, so it is empty.
    pub fn state(&self, name: &str) -> Result<(), ProjectionError> {
        Self::named(name).map(|_| ())
    }

    pub async fn statistics(
        &self,
        selection: Selection,
    ) -> Result<Vec<Statistics>, ProjectionError> {
        let slots = self.slots.lock().await;
        let head = self.store.head();
        let chosen: Vec<Builtin> = match &selection {
            Selection::Named(name) => vec![Self::named(name)?],
            // All four are continuous; none is transient or one-time.
            Selection::All | Selection::Continuous => Builtin::ALL.to_vec(),
            Selection::Transient | Selection::OneTime => Vec::new(),
        };
        Ok(chosen
            .into_iter()
            .filter_map(|p| slots.get(&p).map(|slot| statistics(p, slot, head)))
            .collect())
    }

    /// Starts a stopped projection from its checkpoint; a running one is left as it is.
    pub async fn enable(&self, name: &str) -> Result<(), ProjectionError> {
        let projection = Self::named(name)?;
        let mut slots = self.slots.lock().await;
        let Some(slot) = slots.get_mut(&projection) else {
            return Err(ProjectionError::NotFound(name.to_string()));
        };
        if let Some(reason) = &slot.fault {
            return Err(ProjectionError::Faulted {
                name: projection.name(),
                reason: reason.clone(),
            });
        }
        if slot.runner.is_some() {
            return Ok(());
        }
        let record = ProjectionRecord {
            enabled: true,
            ..self.saved_record(projection)?
        }
        .next_version();
        self.save(projection, record).await?;
        slot.record = record;
        slot.runner = Some(self.run(projection, record, &slot.progress));
        Ok(())
    }

    /// Stops a projection for good (until enabled). With `write_checkpoint` it saves how far it
    /// got and reads `Stopped`; without, it is aborted and reads `Aborted`.
    pub async fn disable(&self, name: &str, write_checkpoint: bool) -> Result<(), ProjectionError> {
        let projection = Self::named(name)?;
        let mut slots = self.slots.lock().await;
        let Some(slot) = slots.get_mut(&projection) else {
            return Err(ProjectionError::NotFound(name.to_string()));
        };
        let was_running = slot.runner.is_some();
        let halted = self.halt(projection, slot, write_checkpoint).await?;
        if !was_running && !halted.enabled {
            return Ok(());
        }
        let record = ProjectionRecord {
            enabled: false,
            ..halted
        }
        .next_version();
        if let Err(e) = self.save(projection, record).await {
            // Still enabled in the store: keep it running.
            if was_running {
                slot.runner = Some(self.run(projection, halted, &slot.progress));
            }
            return Err(e);
        }
        slot.record = record;
        slot.stopped_as = if write_checkpoint { STOPPED } else { ABORTED };
        Ok(())
    }

    /// Starts a projection over from the beginning of `$all` in a new epoch; it keeps running if
    /// it was. As on the real server, the links of the earlier epoch stay in the log but are
    /// hidden: before it first writes to a stream again, it sets that stream's `$tb` past them.
    pub async fn reset(&self, name: &str) -> Result<(), ProjectionError> {
        let projection = Self::named(name)?;
        let mut slots = self.slots.lock().await;
        let Some(slot) = slots.get_mut(&projection) else {
            return Err(ProjectionError::NotFound(name.to_string()));
        };
        let was_running = slot.runner.is_some();
        let current = match &slot.fault {
            Some(_) => slot.record,
            None => self.halt(projection, slot, false).await?,
        };
        let mut record = current.next_version();
        record.epoch = record.version;
        record.checkpoint = 0;
        if let Err(e) = self.save(projection, record).await {
            if was_running {
                slot.runner = Some(self.run(projection, current, &slot.progress));
            }
            return Err(e);
        }
        slot.record = record;
        slot.fault = None;
        slot.stopped_as = STOPPED;
        if record.enabled {
            slot.runner = Some(self.run(projection, record, &slot.progress));
        } else if let Ok(mut p) = slot.progress.lock() {
            *p = runner::Progress::default();
        }
        Ok(())
    }

    /// Stops every projection, saving how far each got, and starts them again from the store.
    pub async fn restart(&self) -> Result<(), ProjectionError> {
        let mut slots = self.slots.lock().await;
        for (projection, mut slot) in std::mem::take(&mut *slots) {
            if slot.runner.is_none() || slot.fault.is_some() {
                continue;
            }
            let saved = slot.progress.lock().map(|p| p.saved).unwrap_or(0);
            // A checkpoint that cannot be saved only means events examined again.
            match self.halt(projection, &mut slot, true).await {
                Ok(halted) if halted.checkpoint > saved => {
                    if let Err(e) = self.save(projection, halted).await {
                        tracing::warn!(projection = projection.name(), error = %e, "cannot save a projection's checkpoint");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(projection = projection.name(), error = %e, "cannot read a projection's record")
                }
            }
        }
        self.load(&mut slots)
    }
}

/// The real server's text for a position in `$all`; position 0 is its zero tag.
fn checkpoint_tag(position: u64) -> String {
    if position == 0 {
        "C:0/P:-1".into()
    } else {
        format!("C:{position}/P:{position}")
    }
}

fn statistics(projection: Builtin, slot: &Slot, head: u64) -> Statistics {
    let progress = slot.progress.lock().map(|p| p.clone()).unwrap_or_default();
    let running = slot.runner.is_some();
    let (position, saved) = if running {
        (progress.position, progress.saved)
    } else {
        (slot.record.checkpoint, slot.record.checkpoint)
    };
    let status = match (&slot.fault, running) {
        (Some(_), _) => FAULTED,
        (None, true) => RUNNING,
        (None, false) => slot.stopped_as,
    };
    let state_reason = slot
        .fault
        .clone()
        .or(progress.failure.filter(|_| running))
        .unwrap_or_default();
    let percent = if head == 0 || position >= head {
        100.0
    } else {
        (position as f64 * 100.0 / head as f64) as f32
    };
    Statistics {
        name: projection.name(),
        status,
        state_reason,
        mode: "Continuous",
        position: checkpoint_tag(position),
        progress: percent,
        last_checkpoint: if saved == 0 {
            String::new()
        } else {
            checkpoint_tag(saved)
        },
        epoch: slot.record.epoch,
        version: slot.record.version,
        events_processed_after_restart: progress.events_processed as i64,
        core_processing_time_ms: progress.processing_time.as_millis() as i64,
        writes_in_progress: i32::from(running && progress.writing),
        partitions_cached: i32::from(running),
        checkpoint_status: if running && progress.writing {
            "Requested"
        } else {
            ""
        },
    }
}
