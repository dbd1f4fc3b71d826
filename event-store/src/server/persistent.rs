//! The `PersistentSubscriptions` service: the protocol in, [`crate::persistent`] behind.
//!
//! Each handler parses its request into the subsystem's types, calls it, and shapes the answer
//! and the errors as the real server does (the `exception` trailer tells the clients which).

use std::pin::Pin;

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status, Streaming};

use super::convert::{self, uuid_from_proto, UuidFormat};
use super::errors;
use crate::persistent::{
    Consumer, Delivery, DropReason, FilterSpec, GroupConfig, GroupId, GroupInfo, NackAction,
    PersistentError, RawSettings, Source, StartFrom, Subsystem, ToConsumer,
};
use crate::proto::persistent::persistent_subscriptions_server::PersistentSubscriptions;
use crate::proto::persistent::*;
use crate::proto::shared::{Empty, StreamIdentifier};
use crate::storage::Recorded;

pub struct PersistentService {
    subsystem: Subsystem,
    shutdown: watch::Receiver<bool>,
}

impl PersistentService {
    pub fn new(subsystem: Subsystem, shutdown: watch::Receiver<bool>) -> Self {
        PersistentService {
            subsystem,
            shutdown,
        }
    }
}

fn with_trailers(code: Code, message: String, trailers: &[(&'static str, &str)]) -> Status {
    let mut metadata = MetadataMap::new();
    for (key, value) in trailers {
        if let Ok(value) = MetadataValue::try_from(*value) {
            metadata.insert(*key, value);
        }
    }
    Status::with_metadata(code, message, metadata)
}

/// A status naming the group in its trailers, as the real server's do.
fn about_group(code: Code, message: String, exception: &str, id: &GroupId) -> Status {
    with_trailers(
        code,
        message,
        &[
            ("exception", exception),
            ("stream-name", id.source.name()),
            ("group-name", &id.group),
        ],
    )
}

/// The subsystem's errors as the real server reports them.
fn status(error: PersistentError) -> Status {
    let message = error.to_string();
    match error {
        PersistentError::Exists(id) => about_group(
            Code::AlreadyExists,
            message,
            "persistent-subscription-exists",
            &id,
        ),
        PersistentError::NotFound(id) => about_group(
            Code::NotFound,
            message,
            "persistent-subscription-does-not-exist",
            &id,
        ),
        PersistentError::MaximumSubscribersReached(id) => about_group(
            Code::FailedPrecondition,
            message,
            "maximum-subscribers-reached",
            &id,
        ),
        // Without a group to name (cannot happen from the handlers, which use `failed`).
        PersistentError::Invalid(_) => Status::invalid_argument(message),
        PersistentError::Store(e) => errors::from_store(e),
        PersistentError::Stopping => Status::unavailable("Server Is Shutting Down"),
    }
}

/// A setting the group cannot have: the real server answers INTERNAL with the reason (the
/// clients raise their "internal error" for it, so the code is kept for them).
fn failed(id: &GroupId, error: PersistentError) -> Status {
    let PersistentError::Invalid(reason) = error else {
        return status(error);
    };
    with_trailers(
        Code::Internal,
        format!(
            "Subscription group {} on stream {} failed: '{reason}'",
            id.group,
            id.source.name()
        ),
        &[
            ("exception", "persistent-subscription-failed"),
            ("stream-name", id.source.name()),
            ("group-name", &id.group),
            ("reason", &reason),
        ],
    )
}

/// A consumer let go: CANCELLED with `persistent-subscription-dropped` whether the group was
/// deleted, updated or restarted, as on the real server; UNAVAILABLE when the store stops.
fn dropped(reason: DropReason, id: &GroupId) -> Status {
    match reason {
        DropReason::ShuttingDown => Status::unavailable("Server Is Shutting Down"),
        DropReason::Deleted | DropReason::Updated | DropReason::Restarted => about_group(
            Code::Cancelled,
            format!(
                "Subscription group {} on stream {} was dropped.",
                id.group,
                id.source.name()
            ),
            "persistent-subscription-dropped",
            id,
        ),
    }
}

fn group_name(name: String) -> Result<String, Status> {
    if name.is_empty() {
        return Err(errors::required("groupName"));
    }
    Ok(name)
}

fn stream_source(identifier: Option<StreamIdentifier>) -> Result<Source, Status> {
    Ok(Source::Stream(convert::stream_name(identifier)?))
}

/// The protocol gives timeouts in milliseconds or in 100 ns ticks.
fn millis(ms: Option<i32>, ticks: Option<i64>) -> i64 {
    match (ms, ticks) {
        (Some(ms), _) => ms.into(),
        (None, Some(ticks)) => ticks / 10_000,
        (None, None) => 0,
    }
}

fn strategy_name(value: i32) -> String {
    match value {
        0 => "DispatchToSingle".into(),
        1 => "RoundRobin".into(),
        2 => "Pinned".into(),
        other => format!("strategy #{other}"),
    }
}

/// Create and Update send the same settings under two message types.
macro_rules! raw_settings {
    ($settings:expr, $module:ident, $strategy:expr) => {{
        let s = $settings;
        use $module::settings::{CheckpointAfter, MessageTimeout};
        let (timeout_ms, timeout_ticks) = match s.message_timeout {
            Some(MessageTimeout::MessageTimeoutMs(ms)) => (Some(ms), None),
            Some(MessageTimeout::MessageTimeoutTicks(t)) => (None, Some(t)),
            None => (None, None),
        };
        let (after_ms, after_ticks) = match s.checkpoint_after {
            Some(CheckpointAfter::CheckpointAfterMs(ms)) => (Some(ms), None),
            Some(CheckpointAfter::CheckpointAfterTicks(t)) => (None, Some(t)),
            None => (None, None),
        };
        RawSettings {
            start_from: None,
            resolve_links: s.resolve_links,
            extra_statistics: s.extra_statistics,
            message_timeout_ms: millis(timeout_ms, timeout_ticks),
            max_retry_count: s.max_retry_count,
            live_buffer_size: s.live_buffer_size,
            read_batch_size: s.read_batch_size,
            history_buffer_size: s.history_buffer_size,
            checkpoint_after_ms: millis(after_ms, after_ticks),
            min_checkpoint_count: s.min_checkpoint_count,
            max_checkpoint_count: s.max_checkpoint_count,
            max_subscriber_count: s.max_subscriber_count,
            strategy: $strategy(&s),
        }
    }};
}

fn create_strategy(s: &create_req::Settings) -> String {
    if s.consumer_strategy.is_empty() {
        #[allow(deprecated)]
        strategy_name(s.named_consumer_strategy)
    } else {
        s.consumer_strategy.clone()
    }
}

fn update_strategy(s: &update_req::Settings) -> String {
    strategy_name(s.named_consumer_strategy)
}

fn start_from_revision<T>(option: Option<T>, get: impl Fn(T) -> StartFrom) -> StartFrom {
    option.map_or(StartFrom::End, get)
}

fn parse_create(request: CreateReq) -> Result<GroupConfig, Status> {
    use create_req::{all_options, options::StreamOption, stream_options::RevisionOption};
    let options = request.options.ok_or_else(|| errors::required("options"))?;
    let group = group_name(options.group_name)?;
    let settings = options
        .settings
        .ok_or_else(|| errors::required("settings"))?;
    let mut raw = raw_settings!(settings.clone(), create_req, create_strategy);
    let (source, start, filter) = match options.stream_option {
        Some(StreamOption::Stream(stream)) => {
            let start = start_from_revision(stream.revision_option, |r| match r {
                RevisionOption::Start(_) => StartFrom::Start,
                RevisionOption::End(_) => StartFrom::End,
                RevisionOption::Revision(r) => StartFrom::At(r),
            });
            (stream_source(stream.stream_identifier)?, start, None)
        }
        Some(StreamOption::All(all)) => {
            let start = start_from_revision(all.all_option, |a| match a {
                all_options::AllOption::Start(_) => StartFrom::Start,
                all_options::AllOption::End(_) => StartFrom::End,
                all_options::AllOption::Position(p) if p.commit_position == u64::MAX => {
                    StartFrom::End
                }
                all_options::AllOption::Position(p) => StartFrom::At(p.commit_position),
            });
            (Source::All, start, all.filter_option)
        }
        // Older clients: the stream in the deprecated field, the start in `settings.revision`.
        None => {
            #[allow(deprecated)]
            let (identifier, revision) = (options.stream_identifier, settings.revision);
            let start = match revision {
                0 => StartFrom::Start,
                u64::MAX => StartFrom::End,
                r => StartFrom::At(r),
            };
            (stream_source(identifier)?, start, None)
        }
    };
    raw.start_from = Some(start);
    let id = GroupId::new(source, group);
    let settings = raw.check().map_err(|e| failed(&id, e))?;
    let filter = all_filter(filter).map_err(|e| failed(&id, e))?;
    Ok(GroupConfig {
        id,
        settings,
        filter,
    })
}

fn all_filter(
    option: Option<create_req::all_options::FilterOption>,
) -> Result<Option<FilterSpec>, PersistentError> {
    use create_req::all_options::filter_options::Filter;
    use create_req::all_options::FilterOption;
    let Some(FilterOption::Filter(options)) = option else {
        return Ok(None);
    };
    let (on_stream_name, expression) = match options.filter {
        Some(Filter::StreamIdentifier(e)) => (true, e),
        Some(Filter::EventType(e)) => (false, e),
        None => {
            return Err(PersistentError::Invalid(
                "'filter' is a required argument".into(),
            ))
        }
    };
    let spec = FilterSpec {
        on_stream_name,
        regex: expression.regex,
        prefixes: expression.prefix,
    };
    spec.compile()?;
    Ok(Some(spec))
}

fn parse_update(request: UpdateReq) -> Result<(GroupId, crate::persistent::Settings), Status> {
    use update_req::{all_options, options::StreamOption, stream_options::RevisionOption};
    let options = request.options.ok_or_else(|| errors::required("options"))?;
    let group = group_name(options.group_name)?;
    let settings = options
        .settings
        .ok_or_else(|| errors::required("settings"))?;
    let mut raw = raw_settings!(settings, update_req, update_strategy);
    let (source, start) = match options.stream_option {
        Some(StreamOption::Stream(stream)) => {
            let start = start_from_revision(stream.revision_option, |r| match r {
                RevisionOption::Start(_) => StartFrom::Start,
                RevisionOption::End(_) => StartFrom::End,
                RevisionOption::Revision(r) => StartFrom::At(r),
            });
            (stream_source(stream.stream_identifier)?, start)
        }
        Some(StreamOption::All(all)) => {
            let start = start_from_revision(all.all_option, |a| match a {
                all_options::AllOption::Start(_) => StartFrom::Start,
                all_options::AllOption::End(_) => StartFrom::End,
                all_options::AllOption::Position(p) if p.commit_position == u64::MAX => {
                    StartFrom::End
                }
                all_options::AllOption::Position(p) => StartFrom::At(p.commit_position),
            });
            (Source::All, start)
        }
        None => {
            #[allow(deprecated)]
            let (identifier, revision) = (options.stream_identifier, settings.revision);
            let start = match revision {
                0 => StartFrom::Start,
                u64::MAX => StartFrom::End,
                r => StartFrom::At(r),
            };
            (stream_source(identifier)?, start)
        }
    };
    raw.start_from = Some(start);
    let id = GroupId::new(source, group);
    let settings = raw.check().map_err(|e| failed(&id, e))?;
    Ok((id, settings))
}

/// The protocol's description of a group.
fn subscription_info(info: GroupInfo) -> SubscriptionInfo {
    let source = &info.config.id.source;
    let settings = &info.config.settings;
    let place = |p: Option<u64>| p.map(|p| source.format_place(p)).unwrap_or_default();
    let clamp = |n: u64| n.min(i32::MAX as u64) as i32;
    SubscriptionInfo {
        event_source: source.name().to_string(),
        group_name: info.config.id.group.clone(),
        status: info.status.to_string(),
        connections: info
            .consumers
            .iter()
            .map(|c| subscription_info::ConnectionInfo {
                from: c.from.clone(),
                username: c.username.clone(),
                average_items_per_second: c.average_items_per_second as i32,
                total_items: c.total_items as i64,
                count_since_last_measurement: c.count_since_last_measurement as i64,
                observed_measurements: Vec::new(),
                available_slots: c.available_slots as i32,
                in_flight_messages: c.in_flight as i32,
                connection_name: c.connection_name.clone(),
            })
            .collect(),
        average_per_second: info.average_per_second as i32,
        total_items: info.total_items as i64,
        count_since_last_measurement: info.count_since_last_measurement as i64,
        last_checkpointed_event_position: place(info.last_checkpointed),
        last_known_event_position: place(info.last_known),
        resolve_link_tos: settings.resolve_links,
        start_from: crate::persistent::settings::format_start(source, settings.start_from),
        message_timeout_milliseconds: clamp(settings.message_timeout.as_millis() as u64),
        extra_statistics: settings.extra_statistics,
        max_retry_count: settings.max_retry_count as i32,
        live_buffer_size: settings.live_buffer_size as i32,
        buffer_size: settings.history_buffer_size as i32,
        read_batch_size: settings.read_batch_size as i32,
        check_point_after_milliseconds: clamp(settings.checkpoint_after.as_millis() as u64),
        min_check_point_count: settings.min_checkpoint_count as i32,
        max_check_point_count: settings.max_checkpoint_count as i32,
        read_buffer_count: clamp(info.read_buffer_count as u64),
        live_buffer_count: info.live_buffer_count as i64,
        retry_buffer_count: clamp(info.retry_buffer_count as u64),
        total_in_flight_messages: clamp(info.in_flight as u64),
        outstanding_messages_count: clamp(info.in_flight as u64),
        named_consumer_strategy: settings.strategy.name().to_string(),
        max_subscriber_count: settings.max_subscriber_count as i32,
        parked_message_count: info.parked_count as i64,
    }
}

fn recorded(recorded: &Recorded, format: UuidFormat) -> read_resp::read_event::RecordedEvent {
    let e = convert::recorded_event(recorded, format);
    read_resp::read_event::RecordedEvent {
        id: e.id,
        stream_identifier: e.stream_identifier,
        stream_revision: e.stream_revision,
        prepare_position: e.prepare_position,
        commit_position: e.commit_position,
        metadata: e.metadata,
        custom_metadata: e.custom_metadata,
        data: e.data,
    }
}

fn read_event(delivery: Delivery, format: UuidFormat) -> ReadResp {
    use read_resp::read_event::{Count, Position};
    let original = delivery.link.as_ref().or(delivery.event.as_ref());
    let position = original.map(|r| Position::CommitPosition(r.position));
    ReadResp {
        content: Some(read_resp::Content::Event(read_resp::ReadEvent {
            event: delivery.event.as_ref().map(|e| recorded(e, format)),
            link: delivery.link.as_ref().map(|l| recorded(l, format)),
            position: position.or(Some(Position::NoPosition(Empty {}))),
            count: Some(Count::RetryCount(delivery.retry_count as i32)),
        })),
    }
}

fn ids(list: Vec<crate::proto::shared::Uuid>) -> Result<Vec<u128>, Status> {
    list.into_iter()
        .map(|id| uuid_from_proto(Some(id)))
        .collect()
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl PersistentSubscriptions for PersistentService {
    async fn create(&self, request: Request<CreateReq>) -> Result<Response<CreateResp>, Status> {
        let config = parse_create(request.into_inner())?;
        let id = config.id.clone();
        self.subsystem
            .create(config)
            .await
            .map_err(|e| failed(&id, e))?;
        Ok(Response::new(CreateResp {}))
    }

    async fn update(&self, request: Request<UpdateReq>) -> Result<Response<UpdateResp>, Status> {
        let (id, settings) = parse_update(request.into_inner())?;
        self.subsystem
            .update(id.clone(), settings)
            .await
            .map_err(|e| failed(&id, e))?;
        Ok(Response::new(UpdateResp {}))
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        use delete_req::options::StreamOption;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::required("options"))?;
        let source = match options.stream_option {
            Some(StreamOption::StreamIdentifier(s)) => stream_source(Some(s))?,
            Some(StreamOption::All(_)) => Source::All,
            None => return Err(errors::required("streamOption")),
        };
        let id = GroupId::new(source, group_name(options.group_name)?);
        self.subsystem.delete(id).await.map_err(status)?;
        Ok(Response::new(DeleteResp {}))
    }

    type ReadStream = BoxStream<ReadResp>;

    async fn read(
        &self,
        request: Request<Streaming<ReadReq>>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        use read_req::options::{uuid_option, StreamOption};
        let from = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let connection_name = request
            .metadata()
            .get("connection-name")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("<unknown>")
            .to_string();
        let username =
            super::auth::username(request.metadata()).unwrap_or_else(|| "anonymous".to_string());
        let mut requests = request.into_inner();
        let options = match requests.message().await? {
            Some(ReadReq {
                content: Some(read_req::Content::Options(options)),
            }) => options,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of a persistent subscription read must be its options",
                ))
            }
        };
        let source = match options.stream_option {
            Some(StreamOption::StreamIdentifier(s)) => stream_source(Some(s))?,
            Some(StreamOption::All(_)) => Source::All,
            None => return Err(errors::required("streamOption")),
        };
        let id = GroupId::new(source, group_name(options.group_name)?);
        let format = match options.uuid_option.and_then(|u| u.content) {
            Some(uuid_option::Content::Structured(_)) => UuidFormat::Structured,
            Some(uuid_option::Content::String(_)) => UuidFormat::String,
            None => return Err(errors::required("uuidOption")),
        };
        if options.buffer_size <= 0 {
            return Err(Status::invalid_argument(
                "'bufferSize' must be greater than 0",
            ));
        }
        let slots = (options.buffer_size as u32).min(crate::persistent::MAX_CONSUMER_SLOTS);
        // Room for every event the consumer may hold, and the reason it is let go.
        let (to_consumer, mut from_group) = mpsc::channel(slots as usize + 1);
        let connection = self
            .subsystem
            .connect(
                &id,
                Consumer {
                    tx: to_consumer,
                    slots,
                    from,
                    username,
                    connection_name,
                },
            )
            .await
            .map_err(status)?;
        let (tx, rx) = mpsc::channel(64);
        let confirmation = ReadResp {
            content: Some(read_resp::Content::SubscriptionConfirmation(
                read_resp::SubscriptionConfirmation {
                    subscription_id: id.subscription_id(),
                },
            )),
        };
        let _ = tx.send(Ok(confirmation)).await;
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut requests_open = true;
            loop {
                tokio::select! {
                    message = requests.message(), if requests_open => match message {
                        Ok(Some(ReadReq { content: Some(read_req::Content::Ack(ack)) })) => {
                            match ids(ack.ids) {
                                Ok(ids) => connection.ack(ids).await,
                                Err(e) => { let _ = tx.send(Err(e)).await; break; }
                            }
                        }
                        Ok(Some(ReadReq { content: Some(read_req::Content::Nack(nack)) })) => {
                            let action = match read_req::nack::Action::try_from(nack.action) {
                                Ok(read_req::nack::Action::Park) => NackAction::Park,
                                Ok(read_req::nack::Action::Retry) => NackAction::Retry,
                                Ok(read_req::nack::Action::Skip) => NackAction::Skip,
                                Ok(read_req::nack::Action::Stop) => NackAction::Stop,
                                _ => NackAction::Unknown,
                            };
                            match ids(nack.ids) {
                                Ok(ids) => connection.nack(ids, action, nack.reason).await,
                                Err(e) => { let _ = tx.send(Err(e)).await; break; }
                            }
                        }
                        Ok(Some(_)) => {
                            let _ = tx.send(Err(Status::invalid_argument(
                                "after its options, a persistent subscription read takes only acks and nacks",
                            ))).await;
                            break;
                        }
                        // The consumer stopped sending; it may still receive.
                        Ok(None) => requests_open = false,
                        Err(_) => break,
                    },
                    delivery = from_group.recv() => match delivery {
                        Some(ToConsumer::Event(delivery)) => {
                            if tx.send(Ok(read_event(delivery, format))).await.is_err() {
                                break;
                            }
                        }
                        Some(ToConsumer::Dropped(reason)) => {
                            let _ = tx.send(Err(dropped(reason, &id))).await;
                            return;
                        }
                        None => {
                            let _ = tx.send(Err(dropped(DropReason::Restarted, &id))).await;
                            return;
                        }
                    },
                    _ = tx.closed() => break,
                    _ = shutdown.changed() => {
                        let _ = tx.send(Err(dropped(DropReason::ShuttingDown, &id))).await;
                        break;
                    }
                }
            }
            connection.disconnect().await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_info(
        &self,
        request: Request<GetInfoReq>,
    ) -> Result<Response<GetInfoResp>, Status> {
        use get_info_req::options::StreamOption;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::required("options"))?;
        let source = match options.stream_option {
            Some(StreamOption::StreamIdentifier(s)) => stream_source(Some(s))?,
            Some(StreamOption::All(_)) => Source::All,
            None => return Err(errors::required("streamOption")),
        };
        let id = GroupId::new(source, group_name(options.group_name)?);
        let info = self.subsystem.info(&id).await.map_err(status)?;
        Ok(Response::new(GetInfoResp {
            subscription_info: Some(subscription_info(info)),
        }))
    }

    async fn replay_parked(
        &self,
        request: Request<ReplayParkedReq>,
    ) -> Result<Response<ReplayParkedResp>, Status> {
        use replay_parked_req::options::{StopAtOption, StreamOption};
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::required("options"))?;
        let source = match options.stream_option {
            Some(StreamOption::StreamIdentifier(s)) => stream_source(Some(s))?,
            Some(StreamOption::All(_)) => Source::All,
            None => return Err(errors::required("streamOption")),
        };
        let stop_at = match options.stop_at_option {
            Some(StopAtOption::StopAt(n)) if n < 0 => {
                return Err(Status::invalid_argument("'stopAt' must not be negative"))
            }
            Some(StopAtOption::StopAt(n)) => Some(n as u64),
            Some(StopAtOption::NoLimit(_)) | None => None,
        };
        let id = GroupId::new(source, group_name(options.group_name)?);
        self.subsystem
            .replay_parked(&id, stop_at)
            .await
            .map_err(status)?;
        Ok(Response::new(ReplayParkedResp {}))
    }

    async fn list(&self, request: Request<ListReq>) -> Result<Response<ListResp>, Status> {
        use list_req::options::ListOption;
        use list_req::stream_option::StreamOption;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::required("options"))?;
        let source = match options.list_option {
            Some(ListOption::ListAllSubscriptions(_)) | None => None,
            Some(ListOption::ListForStream(s)) => match s.stream_option {
                Some(StreamOption::Stream(s)) => Some(stream_source(Some(s))?),
                Some(StreamOption::All(_)) => Some(Source::All),
                None => return Err(errors::required("streamOption")),
            },
        };
        let infos = self.subsystem.list(source.as_ref()).await.map_err(status)?;
        Ok(Response::new(ListResp {
            subscriptions: infos.into_iter().map(subscription_info).collect(),
        }))
    }

    async fn restart_subsystem(&self, _request: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.subsystem.restart().await.map_err(status)?;
        Ok(Response::new(Empty {}))
    }
}
