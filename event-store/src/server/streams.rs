//! The `Streams` service: append, batch append, read/subscribe, delete and tombstone.

use std::pin::Pin;

use futures::Stream;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, identifier, AppendLimits};
use super::errors;
use super::read::{self, Plan};
use crate::proto::google::rpc::Status as RpcStatus;
use crate::proto::shared::{self, Empty};
use crate::proto::streams::streams_server::Streams;
use crate::proto::streams::*;
use crate::storage::{ExpectedRevision, ProposedEvent, Store, StoreError, WriteOutcome};

pub struct StreamsService {
    store: Store,
    limits: AppendLimits,
    shutdown: watch::Receiver<bool>,
}

impl StreamsService {
    pub fn new(store: Store, limits: AppendLimits, shutdown: watch::Receiver<bool>) -> Self {
        StreamsService {
            store,
            limits,
            shutdown,
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Streams for StreamsService {
    type ReadStream = BoxStream<ReadResp>;

    async fn read(&self, request: Request<ReadReq>) -> Result<Response<Self::ReadStream>, Status> {
        let plan = Plan::parse(request.into_inner().options)?;
        read::precheck(&self.store, &plan).await?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(read::run(
            self.store.clone(),
            plan,
            tx,
            self.shutdown.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn append(
        &self,
        request: Request<Streaming<AppendReq>>,
    ) -> Result<Response<AppendResp>, Status> {
        let mut requests = request.into_inner();
        let options = match requests.message().await? {
            Some(AppendReq {
                content: Some(append_req::Content::Options(options)),
            }) => options,
            _ => {
                return Err(Status::unknown(
                    "the first message of an append must be its options",
                ))
            }
        };
        let stream = convert::stream_name(options.stream_identifier)?;
        let expected = convert::expected(options.expected_stream_revision)?;
        let mut events = Vec::new();
        let mut total = 0usize;
        while let Some(message) = requests.message().await? {
            let Some(append_req::Content::ProposedMessage(m)) = message.content else {
                return Err(Status::unknown(
                    "an append carries one options message, then events",
                ));
            };
            let event =
                convert::proposed_event(m.id, m.metadata, m.custom_metadata, m.data, &self.limits)?;
            total += event.size();
            if total > self.limits.max_append_size {
                return Err(errors::append_too_large(self.limits.max_append_size));
            }
            events.push(event);
        }
        let result = match self.store.append(stream, expected, events).await {
            Ok(outcome) => append_resp::Result::Success(append_success(outcome)),
            Err(StoreError::WrongExpectedVersion { expected, current }) => {
                append_resp::Result::WrongExpectedVersion(append_wrong_version(expected, current))
            }
            Err(other) => return Err(errors::from_store(other)),
        };
        Ok(Response::new(AppendResp {
            result: Some(result),
        }))
    }

    type BatchAppendStream = BoxStream<BatchAppendResp>;

    async fn batch_append(
        &self,
        request: Request<Streaming<BatchAppendReq>>,
    ) -> Result<Response<Self::BatchAppendStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let store = self.store.clone();
        let limits = self.limits;
        tokio::spawn(async move {
            let mut pending = PendingBatches::default();
            let mut writes = tokio::task::JoinSet::new();
            while let Some(message) = requests.next().await {
                let Ok(message) = message else { break };
                if let Some(ready) = pending.add(message, &limits) {
                    let (store, tx) = (store.clone(), tx.clone());
                    // Batches are independent: each answers when its own write is durable.
                    writes.spawn(async move {
                        let response = ready.write(&store).await;
                        let _ = tx.send(Ok(response)).await;
                    });
                }
            }
            while writes.join_next().await.is_some() {}
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::required("options"))?;
        let expected = convert::expected(options.expected_stream_revision)?;
        let position = self
            .remove(options.stream_identifier, expected, false)
            .await?;
        Ok(Response::new(DeleteResp {
            position_option: Some(delete_resp::PositionOption::Position(
                delete_resp::Position {
                    commit_position: position,
                    prepare_position: position,
                },
            )),
        }))
    }

    async fn tombstone(
        &self,
        request: Request<TombstoneReq>,
    ) -> Result<Response<TombstoneResp>, Status> {
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::required("options"))?;
        let expected = convert::expected(options.expected_stream_revision)?;
        let position = self
            .remove(options.stream_identifier, expected, true)
            .await?;
        Ok(Response::new(TombstoneResp {
            position_option: Some(tombstone_resp::PositionOption::Position(
                tombstone_resp::Position {
                    commit_position: position,
                    prepare_position: position,
                },
            )),
        }))
    }
}

impl StreamsService {
    async fn remove(
        &self,
        identifier: Option<shared::StreamIdentifier>,
        expected: ExpectedRevision,
        tombstone: bool,
    ) -> Result<u64, Status> {
        let stream = convert::stream_name(identifier)?;
        match self.store.delete(stream.clone(), expected, tombstone).await {
            Ok(outcome) => Ok(outcome.position.unwrap_or(0)),
            Err(StoreError::WrongExpectedVersion { expected, current }) => {
                Err(errors::wrong_expected_version(&stream, expected, current))
            }
            Err(other) => Err(errors::from_store(other)),
        }
    }
}

fn append_success(outcome: WriteOutcome) -> append_resp::Success {
    use append_resp::success::{CurrentRevisionOption, PositionOption};
    append_resp::Success {
        current_revision_option: Some(match outcome.current_revision {
            Some(r) => CurrentRevisionOption::CurrentRevision(r),
            None => CurrentRevisionOption::NoStream(Empty {}),
        }),
        position_option: Some(match outcome.position {
            Some(p) => PositionOption::Position(append_resp::Position {
                commit_position: p,
                prepare_position: p,
            }),
            None => PositionOption::NoPosition(Empty {}),
        }),
    }
}

/// Both the legacy and the current fields are filled, as the real server does.
fn append_wrong_version(
    expected: ExpectedRevision,
    current: Option<u64>,
) -> append_resp::WrongExpectedVersion {
    use append_resp::wrong_expected_version::*;
    let (current_legacy, current_now) = match current {
        Some(r) => (
            CurrentRevisionOption2060::CurrentRevision2060(r),
            CurrentRevisionOption::CurrentRevision(r),
        ),
        None => (
            CurrentRevisionOption2060::NoStream2060(Empty {}),
            CurrentRevisionOption::CurrentNoStream(Empty {}),
        ),
    };
    let (expected_legacy, expected_now) = match expected {
        ExpectedRevision::Any => (
            ExpectedRevisionOption2060::Any2060(Empty {}),
            ExpectedRevisionOption::ExpectedAny(Empty {}),
        ),
        ExpectedRevision::StreamExists => (
            ExpectedRevisionOption2060::StreamExists2060(Empty {}),
            ExpectedRevisionOption::ExpectedStreamExists(Empty {}),
        ),
        ExpectedRevision::NoStream => (
            ExpectedRevisionOption2060::ExpectedRevision2060(u64::MAX),
            ExpectedRevisionOption::ExpectedNoStream(Empty {}),
        ),
        ExpectedRevision::Exact(r) => (
            ExpectedRevisionOption2060::ExpectedRevision2060(r),
            ExpectedRevisionOption::ExpectedRevision(r),
        ),
    };
    append_resp::WrongExpectedVersion {
        current_revision_option_20_6_0: Some(current_legacy),
        expected_revision_option_20_6_0: Some(expected_legacy),
        current_revision_option: Some(current_now),
        expected_revision_option: Some(expected_now),
    }
}

/// Batches being received, keyed by correlation id, until their final chunk arrives.
#[derive(Default)]
struct PendingBatches {
    open: std::collections::HashMap<u128, Batch>,
}

struct Batch {
    correlation: shared::Uuid,
    stream: shared::StreamIdentifier,
    outcome: Result<(String, ExpectedRevision, Vec<ProposedEvent>), RpcStatus>,
    size: usize,
}

impl PendingBatches {
    /// Adds a chunk; returns the batch once it is complete.
    fn add(&mut self, chunk: BatchAppendReq, limits: &AppendLimits) -> Option<Batch> {
        let correlation = chunk.correlation_id.clone().unwrap_or_default();
        let key = convert::uuid_from_proto(chunk.correlation_id).unwrap_or(0);
        if let Some(options) = chunk.options {
            let stream = options.stream_identifier.clone().unwrap_or_default();
            let parsed = batch_options(options).map_err(bad_request);
            self.open.insert(
                key,
                Batch {
                    correlation,
                    stream,
                    outcome: parsed.map(|(s, e)| (s, e, Vec::new())),
                    size: 0,
                },
            );
        }
        let batch = self.open.get_mut(&key)?;
        if let Ok((_, _, events)) = &mut batch.outcome {
            for m in chunk.proposed_messages {
                match convert::proposed_event(m.id, m.metadata, m.custom_metadata, m.data, limits) {
                    Ok(event) => {
                        batch.size += event.size();
                        events.push(event);
                    }
                    Err(status) => {
                        batch.outcome = Err(bad_request(status));
                        break;
                    }
                }
            }
            if batch.size > limits.max_append_size {
                batch.outcome = Err(rpc_status(
                    tonic::Code::InvalidArgument,
                    "MaximumAppendSizeExceeded",
                    "event_store.client.MaximumAppendSizeExceeded",
                    shared::MaximumAppendSizeExceeded {
                        max_append_size: limits.max_append_size as u32,
                    }
                    .encode_to_vec(),
                ));
            }
        }
        if chunk.is_final {
            self.open.remove(&key)
        } else {
            None
        }
    }
}

impl Batch {
    async fn write(self, store: &Store) -> BatchAppendResp {
        use batch_append_resp::success::{CurrentRevisionOption, PositionOption};
        let result = match self.outcome {
            Err(status) => batch_append_resp::Result::Error(status),
            Ok((stream, expected, events)) => {
                match store.append(stream.clone(), expected, events).await {
                    Ok(outcome) => batch_append_resp::Result::Success(batch_append_resp::Success {
                        current_revision_option: Some(match outcome.current_revision {
                            Some(r) => CurrentRevisionOption::CurrentRevision(r),
                            None => CurrentRevisionOption::NoStream(()),
                        }),
                        position_option: Some(match outcome.position {
                            Some(p) => PositionOption::Position(shared::AllStreamPosition {
                                commit_position: p,
                                prepare_position: p,
                            }),
                            None => PositionOption::NoPosition(()),
                        }),
                    }),
                    Err(StoreError::WrongExpectedVersion { expected, current }) => {
                        batch_append_resp::Result::Error(batch_wrong_version(expected, current))
                    }
                    Err(StoreError::StreamDeleted(name)) => {
                        batch_append_resp::Result::Error(rpc_status(
                            tonic::Code::NotFound,
                            "StreamDeleted",
                            "event_store.client.StreamDeleted",
                            shared::StreamDeleted {
                                stream_identifier: Some(identifier(&name)),
                            }
                            .encode_to_vec(),
                        ))
                    }
                    Err(other) => {
                        let status = errors::from_store(other);
                        batch_append_resp::Result::Error(RpcStatus {
                            code: status.code() as i32,
                            message: status.message().to_string(),
                            details: Vec::new(),
                        })
                    }
                }
            }
        };
        BatchAppendResp {
            correlation_id: Some(self.correlation),
            result: Some(result),
            stream_identifier: Some(self.stream),
            expected_stream_position: None,
        }
    }
}

fn batch_options(options: batch_append_req::Options) -> Result<(String, ExpectedRevision), Status> {
    let stream = convert::stream_name(options.stream_identifier)?;
    let expected = convert::expected(options.expected_stream_position)?;
    Ok((stream, expected))
}

fn rpc_status(code: tonic::Code, message: &str, type_name: &str, detail: Vec<u8>) -> RpcStatus {
    RpcStatus {
        code: code as i32,
        message: message.to_string(),
        details: vec![prost_types::Any {
            type_url: format!("type.googleapis.com/{type_name}"),
            value: detail,
        }],
    }
}

fn bad_request(status: Status) -> RpcStatus {
    rpc_status(
        tonic::Code::InvalidArgument,
        "BadRequest",
        "event_store.client.BadRequest",
        shared::BadRequest {
            message: status.message().to_string(),
        }
        .encode_to_vec(),
    )
}

fn batch_wrong_version(expected: ExpectedRevision, current: Option<u64>) -> RpcStatus {
    use shared::wrong_expected_version::{
        CurrentStreamRevisionOption as C, ExpectedStreamPositionOption as X,
    };
    let detail = shared::WrongExpectedVersion {
        current_stream_revision_option: Some(match current {
            Some(r) => C::CurrentStreamRevision(r),
            None => C::CurrentNoStream(()),
        }),
        expected_stream_position_option: Some(match expected {
            ExpectedRevision::Any => X::ExpectedAny(()),
            ExpectedRevision::NoStream => X::ExpectedNoStream(()),
            ExpectedRevision::StreamExists => X::ExpectedStreamExists(()),
            ExpectedRevision::Exact(r) => X::ExpectedStreamPosition(r),
        }),
    };
    rpc_status(
        tonic::Code::AlreadyExists,
        "WrongExpectedVersion",
        "event_store.client.WrongExpectedVersion",
        detail.encode_to_vec(),
    )
}
