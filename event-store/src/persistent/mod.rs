//! Persistent subscriptions: consumer groups that the store keeps for its clients.
//!
//! A group reads a stream or `$all`, hands each event to one of its connected consumers, and
//! remembers how far it got. Its definition lives in the configuration stream, its progress in
//! its checkpoint stream and the events it gave up on in its parked stream, all in the store
//! itself under the real server's names, so that a group comes back as it was after a restart
//! or a `kill -9`. [`Subsystem`] keeps the groups; [`group`] is one group at work.

pub mod group;
pub mod settings;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, Mutex};

pub use group::{
    Consumer, ConsumerInfo, Delivery, DropReason, GroupInfo, NackAction, ToConsumer,
    MAX_CONSUMER_SLOTS,
};
pub use settings::{
    FilterSpec, GroupConfig, GroupId, RawSettings, Settings, Source, StartFrom, Strategy,
};

use crate::storage::{Direction, ExpectedRevision, ProposedEvent, Store, StoreError};
use group::Command;
use settings::{CONFIG_EVENT_TYPE, CONFIG_STREAM};

#[derive(Debug, thiserror::Error)]
pub enum PersistentError {
    #[error("Subscription group {} on stream {} exists.", .0.group, .0.source.name())]
    Exists(GroupId),
    #[error("Subscription group {} on stream {} does not exist.", .0.group, .0.source.name())]
    NotFound(GroupId),
    #[error("Maximum subscriptions reached for subscription group {} on stream {}.", .0.group, .0.source.name())]
    MaximumSubscribersReached(GroupId),
    /// A setting or filter the group cannot have; the text names it.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the persistent subscription subsystem is stopping")]
    Stopping,
}

/// A consumer's line to its group: acknowledgements go this way.
#[derive(Clone)]
pub struct Connection {
    consumer: u64,
    group: mpsc::Sender<Command>,
}

impl Connection {
    pub async fn ack(&self, ids: Vec<u128>) {
        let _ = self.group.send(Command::Ack { ids }).await;
    }

    pub async fn nack(&self, ids: Vec<u128>, action: NackAction, reason: String) {
        let _ = self
            .group
            .send(Command::Nack {
                ids,
                action,
                reason,
            })
            .await;
    }

    /// The consumer is gone: what it held is handed out again.
    pub async fn disconnect(&self) {
        let _ = self
            .group
            .send(Command::Disconnect {
                consumer: self.consumer,
            })
            .await;
    }
}

struct Running {
    config: GroupConfig,
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

/// The groups of one store; cheap to clone.
#[derive(Clone)]
pub struct Subsystem {
    store: Store,
    /// Held across every change of the set of groups, so that changes and their configuration
    /// events follow one another.
    groups: Arc<Mutex<BTreeMap<GroupId, Running>>>,
    /// Sources that have had a group since the start: listing another is "not found".
    known_sources: Arc<std::sync::Mutex<std::collections::HashSet<Source>>>,
    shutdown: watch::Receiver<bool>,
}

impl Subsystem {
    /// Loads the groups from the configuration stream and starts each.
    pub async fn start(
        store: Store,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Subsystem, PersistentError> {
        let subsystem = Subsystem {
            store,
            groups: Arc::new(Mutex::new(BTreeMap::new())),
            known_sources: Arc::default(),
            shutdown,
        };
        let mut groups = subsystem.groups.lock().await;
        subsystem.load(&mut groups).await?;
        drop(groups);
        Ok(subsystem)
    }

    async fn load(&self, groups: &mut BTreeMap<GroupId, Running>) -> Result<(), PersistentError> {
        let store = self.store.clone();
        let newest = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let s = store.snapshot()?;
            let Some(info) = s.stream(CONFIG_STREAM)? else {
                return Ok(None);
            };
            let Some(last) = info.last_revision else {
                return Ok(None);
            };
            Ok(
                s.read_stream(CONFIG_STREAM, &info, last, Direction::Backwards, 1)?
                    .into_iter()
                    .next(),
            )
        })
        .await
        .map_err(|_| StoreError::Storage("a read task failed".into()))??;
        let Some(newest) = newest else {
            return Ok(());
        };
        let (configs, skipped) = match settings::decode_config(&newest.event.data) {
            Ok(decoded) => decoded,
            Err(e) => {
                tracing::error!(error = %e, "the persistent subscriptions' configuration is unreadable; no group is started");
                return Ok(());
            }
        };
        for name in skipped {
            tracing::error!(group = %name, "a persistent subscription's configuration is unreadable; it is not started");
        }
        for config in configs {
            let name = config.id.subscription_id();
            if let Err(e) = self.run_group(groups, config) {
                tracing::error!(group = %name, error = %e, "a persistent subscription cannot start");
            }
        }
        Ok(())
    }

    /// Starts a group and keeps it in `groups`.
    fn run_group(
        &self,
        groups: &mut BTreeMap<GroupId, Running>,
        config: GroupConfig,
    ) -> Result<(), PersistentError> {
        let (commands, task) =
            group::spawn(config.clone(), self.store.clone(), self.shutdown.clone())?;
        self.remember_source(&config.id.source);
        groups.insert(
            config.id.clone(),
            Running {
                config,
                commands,
                task,
            },
        );
        Ok(())
    }

    fn remember_source(&self, source: &Source) {
        if let Ok(mut known) = self.known_sources.lock() {
            known.insert(source.clone());
        }
    }

    /// Writes the whole set of groups as the newest configuration event.
    async fn save(&self, configs: Vec<GroupConfig>) -> Result<(), PersistentError> {
        let data = settings::encode_config(&configs, &group::chrono_like_now());
        let event = ProposedEvent {
            id: uuid::Uuid::new_v4().as_u128(),
            event_type: CONFIG_EVENT_TYPE.into(),
            content_type: "application/json".into(),
            custom_metadata: Bytes::new(),
            data: Bytes::from(data),
        };
        self.store
            .append(CONFIG_STREAM.into(), ExpectedRevision::Any, vec![event])
            .await?;
        Ok(())
    }

    fn configs_with(
        groups: &BTreeMap<GroupId, Running>,
        change: Option<&GroupConfig>,
        without: Option<&GroupId>,
    ) -> Vec<GroupConfig> {
        let mut configs: Vec<GroupConfig> = groups
            .values()
            .map(|r| r.config.clone())
            .filter(|c| Some(&c.id) != without && Some(&c.id) != change.map(|c| &c.id))
            .collect();
        configs.extend(change.cloned());
        configs
    }

    pub async fn create(&self, config: GroupConfig) -> Result<(), PersistentError> {
        // A filter that does not compile is refused before anything is written.
        if let Some(filter) = &config.filter {
            filter.compile()?;
        }
        let mut groups = self.groups.lock().await;
        if groups.contains_key(&config.id) {
            return Err(PersistentError::Exists(config.id));
        }
        self.save(Self::configs_with(&groups, Some(&config), None))
            .await?;
        self.run_group(&mut groups, config)
    }

    /// Replaces a group's settings (and start); its consumers are let go and reconnect.
    pub async fn update(&self, id: GroupId, settings: Settings) -> Result<(), PersistentError> {
        let mut groups = self.groups.lock().await;
        let Some(running) = groups.get(&id) else {
            return Err(PersistentError::NotFound(id));
        };
        let config = GroupConfig {
            id: id.clone(),
            settings,
            filter: running.config.filter.clone(),
        };
        self.save(Self::configs_with(&groups, Some(&config), None))
            .await?;
        if let Some(old) = groups.remove(&id) {
            stop(old, DropReason::Updated).await;
        }
        self.run_group(&mut groups, config)
    }

    /// Removes a group, lets its consumers go, and deletes its checkpoint and parked streams.
    pub async fn delete(&self, id: GroupId) -> Result<(), PersistentError> {
        let mut groups = self.groups.lock().await;
        if !groups.contains_key(&id) {
            return Err(PersistentError::NotFound(id));
        }
        self.save(Self::configs_with(&groups, None, Some(&id)))
            .await?;
        if let Some(old) = groups.remove(&id) {
            stop(old, DropReason::Deleted).await;
        }
        for stream in [id.checkpoint_stream(), id.parked_stream()] {
            match self
                .store
                .delete(stream, ExpectedRevision::Any, false)
                .await
            {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(group = %id.subscription_id(), error = %e, "cannot delete a stream of a deleted group")
                }
            }
        }
        Ok(())
    }

    async fn commands(&self, id: &GroupId) -> Result<mpsc::Sender<Command>, PersistentError> {
        self.groups
            .lock()
            .await
            .get(id)
            .map(|r| r.commands.clone())
            .ok_or_else(|| PersistentError::NotFound(id.clone()))
    }

    /// Joins a consumer to a group.
    pub async fn connect(
        &self,
        id: &GroupId,
        consumer: Consumer,
    ) -> Result<Connection, PersistentError> {
        let group = self.commands(id).await?;
        let (reply, answer) = oneshot::channel();
        group
            .send(Command::Connect { consumer, reply })
            .await
            .map_err(|_| PersistentError::Stopping)?;
        let consumer = answer.await.map_err(|_| PersistentError::Stopping)??;
        Ok(Connection { consumer, group })
    }

    pub async fn info(&self, id: &GroupId) -> Result<GroupInfo, PersistentError> {
        let group = self.commands(id).await?;
        ask_info(&group).await
    }

    /// Every group, or those of one source, in name order. Like the real server, a source
    /// that never had a group since the start is "not found"; one whose groups were all
    /// deleted lists none.
    pub async fn list(&self, source: Option<&Source>) -> Result<Vec<GroupInfo>, PersistentError> {
        if let Some(source) = source {
            let known = self
                .known_sources
                .lock()
                .map(|k| k.contains(source))
                .unwrap_or(true);
            if !known {
                return Err(PersistentError::NotFound(GroupId::new(source.clone(), "")));
            }
        }
        let senders: Vec<mpsc::Sender<Command>> = self
            .groups
            .lock()
            .await
            .iter()
            .filter(|(id, _)| source.is_none_or(|s| &id.source == s))
            .map(|(_, r)| r.commands.clone())
            .collect();
        let mut infos = Vec::with_capacity(senders.len());
        for group in senders {
            infos.push(ask_info(&group).await?);
        }
        Ok(infos)
    }

    /// Puts a group's parked events back in line (up to revision `stop_at` of its parked stream).
    pub async fn replay_parked(
        &self,
        id: &GroupId,
        stop_at: Option<u64>,
    ) -> Result<(), PersistentError> {
        let group = self.commands(id).await?;
        let (reply, answer) = oneshot::channel();
        group
            .send(Command::ReplayParked { stop_at, reply })
            .await
            .map_err(|_| PersistentError::Stopping)?;
        answer.await.map_err(|_| PersistentError::Stopping)?
    }

    /// Stops every group (their consumers are let go) and starts them again from the store.
    pub async fn restart(&self) -> Result<(), PersistentError> {
        let mut groups = self.groups.lock().await;
        for (_, running) in std::mem::take(&mut *groups) {
            stop(running, DropReason::Restarted).await;
        }
        self.load(&mut groups).await
    }
}

async fn ask_info(group: &mpsc::Sender<Command>) -> Result<GroupInfo, PersistentError> {
    let (reply, answer) = oneshot::channel();
    group
        .send(Command::Info { reply })
        .await
        .map_err(|_| PersistentError::Stopping)?;
    answer.await.map_err(|_| PersistentError::Stopping)
}

/// Stops a group, waiting for it to save its progress; one stuck on storage is ended.
async fn stop(running: Running, reason: DropReason) {
    let (done, stopped) = oneshot::channel();
    let asked = running.commands.send(Command::Stop { reason, done });
    let ask_and_wait = async {
        if asked.await.is_ok() {
            let _ = stopped.await;
        }
    };
    if tokio::time::timeout(STOP_WAIT, ask_and_wait).await.is_err() {
        running.task.abort();
    }
    let _ = running.task.await;
}

/// How long a stopping group may take to write its last checkpoint.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
