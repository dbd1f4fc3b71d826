//! The `Projections` service: statistics and control of the built-in system projections, with
//! the real server's answers; definitions of user projections are refused.
//!
//! A user projection is JavaScript and this store runs no JavaScript engine, so `Create` (and
//! `Update`/`Delete` of anything but a built-in) cannot succeed. The refusal is
//! FAILED_PRECONDITION with the reason in the message: it is the code the real server gives a
//! projection operation it refuses (its `OperationFailed`), both official clients keep the
//! message with it (the Rust client as `Error::Grpc`, the Python client as
//! `FailedPreconditionError`), and neither takes it for a failing node. UNIMPLEMENTED, the
//! alternative, is what a server without the projections subsystem answers, and the Rust client
//! turns it into `UnsupportedFeature`, dropping the reason.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::errors;
use crate::projections::{ProjectionError, Selection, Statistics, SystemProjections};
use crate::proto::projections::projections_server::Projections;
use crate::proto::projections::*;
use crate::proto::shared::Empty;

pub struct ProjectionsService {
    projections: SystemProjections,
}

impl ProjectionsService {
    pub fn new(projections: SystemProjections) -> Self {
        ProjectionsService { projections }
    }
}

/// Why a user projection cannot be defined here.
const NO_JAVASCRIPT: &str = "User-defined projections are not supported: this event store runs no \
     JavaScript engine. Only the built-in system projections run ($by_category, $by_event_type, \
     $stream_by_category, $streams).";

fn refused(reason: impl Into<String>) -> Status {
    Status::failed_precondition(reason)
}

fn from_projection(error: ProjectionError) -> Status {
    match error {
        ProjectionError::NotFound(name) => not_found(&name),
        ProjectionError::Faulted { .. } | ProjectionError::CorruptRecord { .. } => {
            refused(error.to_string())
        }
        ProjectionError::Store(e) => errors::from_store(e),
    }
}

fn not_found(name: &str) -> Status {
    Status::not_found(format!("Projection '{name}' not found"))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Projections for ProjectionsService {
    async fn create(&self, request: Request<CreateReq>) -> Result<Response<CreateResp>, Status> {
        use create_req::options::Mode;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::required("options"))?;
        match options.mode {
            None => Err(errors::required("mode")),
            // The real server's own answer for a transient projection.
            Some(Mode::Transient(_)) => Err(refused(
                "Transient projections are deprecated. Use the secondary indexing query API.",
            )),
            Some(Mode::Continuous(continuous)) if continuous.name.trim().is_empty() => {
                Err(refused("Projection name is required"))
            }
            Some(Mode::Continuous(continuous))
                if SystemProjections::is_builtin(&continuous.name) =>
            {
                Err(Status::already_exists(format!(
                    "Duplicate projection names : {}",
                    continuous.name
                )))
            }
            Some(Mode::Continuous(_)) | Some(Mode::OneTime(_)) => Err(refused(NO_JAVASCRIPT)),
        }
    }

    async fn update(&self, request: Request<UpdateReq>) -> Result<Response<UpdateResp>, Status> {
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::required("options"))?;
        if SystemProjections::is_builtin(&options.name) {
            // The real server lets the source of `$by_category` be edited (another separator);
            // here the built-ins are code with the default configuration.
            return Err(refused(format!(
                "The built-in projection '{}' runs natively with its default configuration, \
                 which cannot be changed: this event store runs no JavaScript engine.",
                options.name
            )));
        }
        Err(not_found(&options.name))
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::required("options"))?;
        if SystemProjections::is_builtin(&options.name) {
            return Err(refused(
                "We currently don't allow for the deletion of System Projections.",
            ));
        }
        Err(not_found(&options.name))
    }

    type StatisticsStream = BoxStream<StatisticsResp>;

    async fn statistics(
        &self,
        request: Request<StatisticsReq>,
    ) -> Result<Response<Self::StatisticsStream>, Status> {
        use statistics_req::options::Mode;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::required("options"))?;
        let selection = match options.mode {
            Some(Mode::Name(name)) if !name.is_empty() => Selection::Named(name),
            // An empty name, like no mode at all, means every projection.
            Some(Mode::Name(_)) | Some(Mode::All(_)) | None => Selection::All,
            Some(Mode::Continuous(_)) => Selection::Continuous,
            Some(Mode::Transient(_)) => Selection::Transient,
            Some(Mode::OneTime(_)) => Selection::OneTime,
        };
        let statistics = self
            .projections
            .statistics(selection)
            .await
            .map_err(from_projection)?;
        let responses: Vec<Result<StatisticsResp, Status>> = statistics
            .into_iter()
            .map(|s| {
                Ok(StatisticsResp {
                    details: Some(details(s)),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(responses))))
    }

    async fn disable(&self, request: Request<DisableReq>) -> Result<Response<DisableResp>, Status> {
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::required("options"))?;
        self.projections
            .disable(&options.name, options.write_checkpoint)
            .await
            .map_err(from_projection)?;
        Ok(Response::new(DisableResp {}))
    }

    async fn enable(&self, request: Request<EnableReq>) -> Result<Response<EnableResp>, Status> {
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::required("options"))?;
        self.projections
            .enable(&options.name)
            .await
            .map_err(from_projection)?;
        Ok(Response::new(EnableResp {}))
    }

    async fn reset(&self, request: Request<ResetReq>) -> Result<Response<ResetResp>, Status> {
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::required("options"))?;
        self.projections
            .reset(&options.name)
            .await
            .map_err(from_projection)?;
        Ok(Response::new(ResetResp {}))
    }

    async fn state(&self, request: Request<StateReq>) -> Result<Response<StateResp>, Status> {
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::required("options"))?;
        self.projections
            .state(&options.name)
            .map_err(from_projection)?;
        Ok(Response::new(StateResp {
            state: Some(empty_object()),
        }))
    }

    async fn result(&self, request: Request<ResultReq>) -> Result<Response<ResultResp>, Status> {
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::required("options"))?;
        self.projections
            .state(&options.name)
            .map_err(from_projection)?;
        Ok(Response::new(ResultResp {
            result: Some(empty_object()),
        }))
    }

    async fn restart_subsystem(&self, _request: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.projections.restart().await.map_err(from_projection)?;
        Ok(Response::new(Empty {}))
    }
}

/// The built-ins keep no state: the real server answers an empty object for them.
fn empty_object() -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StructValue(
            prost_types::Struct::default(),
        )),
    }
}

fn details(s: Statistics) -> statistics_resp::Details {
    statistics_resp::Details {
        core_processing_time: s.core_processing_time_ms,
        version: s.version,
        epoch: s.epoch,
        effective_name: s.name.to_string(),
        writes_in_progress: s.writes_in_progress,
        reads_in_progress: 0,
        partitions_cached: s.partitions_cached,
        status: s.status.to_string(),
        state_reason: s.state_reason,
        name: s.name.to_string(),
        mode: s.mode.to_string(),
        position: s.position,
        progress: s.progress,
        last_checkpoint: s.last_checkpoint,
        events_processed_after_restart: s.events_processed_after_restart,
        checkpoint_status: s.checkpoint_status.to_string(),
        buffered_events: 0,
        write_pending_events_before_checkpoint: 0,
        write_pending_events_after_checkpoint: 0,
    }
}
