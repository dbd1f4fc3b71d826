//! `Operations` and `Monitoring`: running a node. A single node answers the cluster calls as
//! the real one does when it is alone (resigning and priorities change nothing), scavenges what
//! deleted streams and `$maxCount`/`$tb` truncations left behind, shuts down on request, and
//! streams its figures.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::Stream;
use tokio::sync::{mpsc, watch, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use super::errors;
use crate::persistent::Subsystem;
use crate::proto::monitoring::monitoring_server::Monitoring;
use crate::proto::monitoring::{StatsReq, StatsResp};
use crate::proto::operations::operations_server::Operations;
use crate::proto::operations::scavenge_resp::ScavengeResult;
use crate::proto::operations::{
    ScavengeResp, SetNodePriorityReq, StartScavengeReq, StopScavengeReq,
};
use crate::proto::shared::Empty;
use crate::storage::Store;

/// The scavenge that runs or ran last: its id, and whether it is still going.
#[derive(Default)]
struct Scavenges {
    current: Option<(String, watch::Receiver<bool>)>,
}

pub struct OperationsService {
    store: Store,
    subsystem: Subsystem,
    /// Notified to stop the server, as SIGTERM would.
    shutdown: Arc<Notify>,
    scavenges: Arc<Mutex<Scavenges>>,
}

impl OperationsService {
    pub fn new(store: Store, subsystem: Subsystem, shutdown: Arc<Notify>) -> Self {
        OperationsService {
            store,
            subsystem,
            shutdown,
            scavenges: Arc::default(),
        }
    }
}

fn scavenge_answer(id: &str, result: ScavengeResult) -> Response<ScavengeResp> {
    Response::new(ScavengeResp {
        scavenge_id: id.to_string(),
        scavenge_result: result as i32,
    })
}

#[tonic::async_trait]
impl Operations for OperationsService {
    /// Starts a scavenge in the background; one already running is reported instead.
    async fn start_scavenge(
        &self,
        request: Request<StartScavengeReq>,
    ) -> Result<Response<ScavengeResp>, Status> {
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::required("options"))?;
        if options.thread_count <= 0 {
            return Err(Status::invalid_argument(
                "Thread count must be greater than 0.",
            ));
        }
        if options.start_from_chunk < 0 {
            return Err(Status::invalid_argument(
                "Start from chunk must be greater than or equal to 0.",
            ));
        }
        let mut scavenges = self
            .scavenges
            .lock()
            .map_err(|_| Status::internal("lock"))?;
        if let Some((id, running)) = &scavenges.current {
            if *running.borrow() {
                return Ok(scavenge_answer(id, ScavengeResult::InProgress));
            }
        }
        let id = uuid::Uuid::new_v4().to_string();
        let (running_tx, running_rx) = watch::channel(true);
        scavenges.current = Some((id.clone(), running_rx));
        let (store, scavenge_id) = (self.store.clone(), id.clone());
        tokio::spawn(async move {
            match store.scavenge().await {
                Ok(report) => tracing::info!(
                    scavenge = %scavenge_id,
                    events_removed = report.events_removed,
                    streams = report.streams_scavenged,
                    "scavenge completed"
                ),
                Err(e) => tracing::error!(scavenge = %scavenge_id, error = %e, "scavenge failed"),
            }
            let _ = running_tx.send(false);
        });
        Ok(scavenge_answer(&id, ScavengeResult::Started))
    }

    /// Stops the named scavenge: what it removed stays removed. One that has finished is
    /// reported stopped; an unknown id is not found.
    async fn stop_scavenge(
        &self,
        request: Request<StopScavengeReq>,
    ) -> Result<Response<ScavengeResp>, Status> {
        let id = request
            .into_inner()
            .options
            .map(|o| o.scavenge_id)
            .unwrap_or_default();
        let scavenges = self
            .scavenges
            .lock()
            .map_err(|_| Status::internal("lock"))?;
        match &scavenges.current {
            Some((current, _)) if *current == id => {
                self.store.stop_scavenge();
                Ok(scavenge_answer(&id, ScavengeResult::Stopped))
            }
            _ => Err(Status::new(
                Code::NotFound,
                format!("Scavenge with id {id} is not running."),
            )),
        }
    }

    async fn shutdown(&self, _request: Request<Empty>) -> Result<Response<Empty>, Status> {
        tracing::info!("shutdown requested through the Operations service");
        self.shutdown.notify_one();
        Ok(Response::new(Empty {}))
    }

    /// The index has one level and is always merged: nothing to do.
    async fn merge_indexes(&self, _request: Request<Empty>) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }

    /// Alone, a node that resigns is elected again at once: it stays the leader.
    async fn resign_node(&self, _request: Request<Empty>) -> Result<Response<Empty>, Status> {
        tracing::info!("asked to resign; as the only node it stays the leader");
        Ok(Response::new(Empty {}))
    }

    /// A priority decides between nodes in an election; alone, it changes nothing.
    async fn set_node_priority(
        &self,
        request: Request<SetNodePriorityReq>,
    ) -> Result<Response<Empty>, Status> {
        tracing::info!(
            priority = request.into_inner().priority,
            "node priority set; as the only node it stays the leader"
        );
        Ok(Response::new(Empty {}))
    }

    async fn restart_persistent_subscriptions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Empty>, Status> {
        self.subsystem
            .restart()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(Empty {}))
    }
}

pub struct MonitoringService {
    pub store: Store,
    pub started: SystemTime,
    /// Streams end when the server stops, so that it need not wait for their clients.
    pub shutdown: watch::Receiver<bool>,
}

type StatsStream = Pin<Box<dyn Stream<Item = Result<StatsResp, Status>> + Send + 'static>>;

/// Shortest refresh period taken: a client cannot make the node spin.
const MIN_REFRESH: Duration = Duration::from_millis(100);

#[tonic::async_trait]
impl Monitoring for MonitoringService {
    type StatsStream = StatsStream;

    /// The figures now, then again every refresh period while the client listens.
    async fn stats(
        &self,
        request: Request<StatsReq>,
    ) -> Result<Response<Self::StatsStream>, Status> {
        let period =
            Duration::from_millis(request.into_inner().refresh_time_period_in_ms).max(MIN_REFRESH);
        let (tx, rx) = mpsc::channel(1);
        let (store, started) = (self.store.clone(), self.started);
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let stats = StatsResp {
                    stats: figures(&store, started),
                };
                if tx.send(Ok(stats)).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = shutdown.changed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The figures under the real server's names where it has the same one.
fn figures(store: &Store, started: SystemTime) -> HashMap<String, String> {
    let mut out = HashMap::new();
    out.insert("proc-id".into(), std::process::id().to_string());
    if let Ok(since) = started.duration_since(SystemTime::UNIX_EPOCH) {
        out.insert("proc-startTime".into(), since.as_secs().to_string());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    if let Some(kib) = field("VmRSS:") {
        out.insert("proc-mem".into(), (kib * 1024).to_string());
    }
    if let Some(threads) = field("Threads:") {
        out.insert("proc-threadsCount".into(), threads.to_string());
    }
    let head = store.head();
    // The real server's writer checkpoint: how far the log is written (and flushed).
    out.insert("es-checksum".into(), head.to_string());
    out.insert("es-checksumNonFlushed".into(), head.to_string());
    out
}
