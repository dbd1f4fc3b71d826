//! What defines a group: the source it reads, its settings, and how both are kept in the
//! configuration stream so that they survive a restart.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::PersistentError;
use crate::server::filter::EventFilter;

/// What a group reads: one stream, or the whole log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Stream(String),
    All,
}

impl Source {
    /// The name the protocol shows: the stream's, or `$all`.
    pub fn name(&self) -> &str {
        match self {
            Source::Stream(name) => name,
            Source::All => "$all",
        }
    }

    pub fn from_name(name: &str) -> Source {
        match name {
            "$all" => Source::All,
            other => Source::Stream(other.to_string()),
        }
    }

    /// A place in the source as the protocol writes it: a revision, or `C:x/P:x` on `$all`.
    pub fn format_place(&self, place: u64) -> String {
        match self {
            Source::Stream(_) => place.to_string(),
            Source::All => format!("C:{place}/P:{place}"),
        }
    }

    /// Reads back what [`Source::format_place`] wrote (also the quoted JSON form).
    pub fn parse_place(&self, text: &str) -> Option<u64> {
        let text = text.trim().trim_matches('"');
        match self {
            Source::Stream(_) => text.parse().ok(),
            Source::All => {
                let (commit, _) = text.strip_prefix("C:")?.split_once("/P:")?;
                commit.parse().ok()
            }
        }
    }
}

/// A group is named by its source and its name; the real server joins them as `stream::group`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId {
    pub source: Source,
    pub group: String,
}

impl GroupId {
    pub fn new(source: Source, group: impl Into<String>) -> GroupId {
        GroupId {
            source,
            group: group.into(),
        }
    }

    /// `stream::group`: the id consumers are told and the stem of the group's own streams.
    pub fn subscription_id(&self) -> String {
        format!("{}::{}", self.source.name(), self.group)
    }

    /// Where the group's progress is written (the real server's name).
    pub fn checkpoint_stream(&self) -> String {
        format!(
            "$persistentsubscription-{}-checkpoint",
            self.subscription_id()
        )
    }

    /// Where parked events are linked (the real server's name).
    pub fn parked_stream(&self) -> String {
        format!("$persistentsubscription-{}-parked", self.subscription_id())
    }
}

/// How a group shares events among its consumers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Each event to the next consumer with room, in turn.
    RoundRobin,
    /// Every event to the first consumer with room; the others take over when it is full or gone.
    DispatchToSingle,
    /// The events of one stream always to the same consumer, so that each stream stays in order.
    Pinned,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "RoundRobin",
            Strategy::DispatchToSingle => "DispatchToSingle",
            Strategy::Pinned => "Pinned",
        }
    }

    pub fn parse(name: &str) -> Result<Strategy, PersistentError> {
        match name {
            "RoundRobin" => Ok(Strategy::RoundRobin),
            "DispatchToSingle" => Ok(Strategy::DispatchToSingle),
            "Pinned" => Ok(Strategy::Pinned),
            other => Err(PersistentError::Invalid(format!(
                "Consumer strategy {other} does not exist."
            ))),
        }
    }
}

/// Where a new group starts: a revision of its stream, or a position in `$all` (inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    Start,
    End,
    At(u64),
}

/// A group's settings, the protocol's units made into types.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub start_from: StartFrom,
    pub resolve_links: bool,
    pub extra_statistics: bool,
    /// An event not acknowledged within this is handed out again; zero waits for ever.
    pub message_timeout: Duration,
    /// Hand-outs after the first before an event is parked.
    pub max_retry_count: u32,
    pub live_buffer_size: u32,
    pub read_batch_size: u32,
    pub history_buffer_size: u32,
    pub checkpoint_after: Duration,
    pub min_checkpoint_count: u32,
    pub max_checkpoint_count: u32,
    /// Zero for no limit.
    pub max_subscriber_count: u32,
    pub strategy: Strategy,
}

impl Default for Settings {
    /// The clients' defaults, which the real server also applies.
    fn default() -> Settings {
        Settings {
            start_from: StartFrom::End,
            resolve_links: false,
            extra_statistics: false,
            message_timeout: Duration::from_secs(30),
            max_retry_count: 10,
            live_buffer_size: 500,
            read_batch_size: 20,
            history_buffer_size: 500,
            checkpoint_after: Duration::from_secs(2),
            min_checkpoint_count: 10,
            max_checkpoint_count: 1000,
            max_subscriber_count: 0,
            strategy: Strategy::RoundRobin,
        }
    }
}

/// The settings as the protocol sends them, before they are checked.
#[derive(Clone, Debug, Default)]
pub struct RawSettings {
    pub start_from: Option<StartFrom>,
    pub resolve_links: bool,
    pub extra_statistics: bool,
    pub message_timeout_ms: i64,
    pub max_retry_count: i32,
    pub live_buffer_size: i32,
    pub read_batch_size: i32,
    pub history_buffer_size: i32,
    pub checkpoint_after_ms: i64,
    pub min_checkpoint_count: i32,
    pub max_checkpoint_count: i32,
    pub max_subscriber_count: i32,
    pub strategy: String,
}

impl RawSettings {
    /// Checks each setting, naming the first that is out of range.
    pub fn check(self) -> Result<Settings, PersistentError> {
        fn non_negative(name: &str, value: i64) -> Result<u32, PersistentError> {
            u32::try_from(value).map_err(|_| {
                PersistentError::Invalid(format!("'{name}' must not be negative (got {value})"))
            })
        }
        fn positive(name: &str, value: i32) -> Result<u32, PersistentError> {
            match value {
                v if v > 0 => Ok(v as u32),
                v => Err(PersistentError::Invalid(format!(
                    "'{name}' must be greater than 0 (got {v})"
                ))),
            }
        }
        let message_timeout = non_negative("messageTimeoutMilliseconds", self.message_timeout_ms)?;
        let checkpoint_after =
            non_negative("checkPointAfterMilliseconds", self.checkpoint_after_ms)?;
        let min_checkpoint_count =
            non_negative("minCheckPointCount", self.min_checkpoint_count.into())?;
        let max_checkpoint_count =
            non_negative("maxCheckPointCount", self.max_checkpoint_count.into())?;
        let read_batch_size = positive("readBatchSize", self.read_batch_size)?;
        let history_buffer_size = positive("historyBufferSize", self.history_buffer_size)?;
        // The real server's words, from the argument check that refuses it.
        if read_batch_size >= history_buffer_size {
            return Err(PersistentError::Invalid(
                "Specified argument was out of the range of valid values. (Parameter \
                 'ReadBatchSize may not be greater than or equal to BufferSize')"
                    .into(),
            ));
        }
        Ok(Settings {
            start_from: self.start_from.unwrap_or(StartFrom::End),
            resolve_links: self.resolve_links,
            extra_statistics: self.extra_statistics,
            message_timeout: Duration::from_millis(message_timeout.into()),
            max_retry_count: non_negative("maxRetryCount", self.max_retry_count.into())?,
            live_buffer_size: positive("liveBufferSize", self.live_buffer_size)?,
            read_batch_size,
            history_buffer_size,
            checkpoint_after: Duration::from_millis(checkpoint_after.into()),
            min_checkpoint_count,
            max_checkpoint_count,
            max_subscriber_count: non_negative(
                "maxSubscriberCount",
                self.max_subscriber_count.into(),
            )?,
            strategy: Strategy::parse(&self.strategy)?,
        })
    }
}

/// A filter on `$all`, kept as given so that it can be compiled again after a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterSpec {
    /// True to match stream names, false to match event types.
    pub on_stream_name: bool,
    pub regex: String,
    pub prefixes: Vec<String>,
}

impl FilterSpec {
    pub fn compile(&self) -> Result<EventFilter, PersistentError> {
        EventFilter::new(self.on_stream_name, &self.regex, self.prefixes.clone(), 1)
            .map_err(PersistentError::Invalid)
    }

    fn stored(&self) -> StoredFilter {
        let (kind, data) = if self.regex.is_empty() {
            ("prefix", self.prefixes.join(","))
        } else {
            ("regex", self.regex.clone())
        };
        StoredFilter {
            context: if self.on_stream_name {
                "streamid"
            } else {
                "eventtype"
            }
            .into(),
            kind: kind.into(),
            data,
            is_all_stream: true,
        }
    }

    fn from_stored(stored: StoredFilter) -> Option<FilterSpec> {
        let on_stream_name = match stored.context.as_str() {
            "streamid" => true,
            "eventtype" => false,
            _ => return None,
        };
        let (regex, prefixes) = match stored.kind.as_str() {
            "regex" => (stored.data, Vec::new()),
            "prefix" => (
                String::new(),
                stored.data.split(',').map(str::to_string).collect(),
            ),
            _ => return None,
        };
        Some(FilterSpec {
            on_stream_name,
            regex,
            prefixes,
        })
    }
}

/// A filter as the real server writes it in the configuration.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredFilter {
    context: String,
    #[serde(rename = "type")]
    kind: String,
    data: String,
    #[serde(default)]
    is_all_stream: bool,
}

/// Everything that defines one group.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupConfig {
    pub id: GroupId,
    pub settings: Settings,
    pub filter: Option<FilterSpec>,
}

/// The configuration stream holds one event per change, each with every group: the newest is
/// the truth. Stream and event type are the real server's.
pub const CONFIG_STREAM: &str = "$persistentSubscriptionConfig";
pub const CONFIG_EVENT_TYPE: &str = "$PersistentConfig";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredConfig {
    version: String,
    updated: String,
    updated_by: String,
    entries: Vec<StoredEntry>,
}

/// One group as the real server writes it, field for field; absent fields read as defaults.
#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct StoredEntry {
    stream: String,
    group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    filter: Option<StoredFilter>,
    resolve_link_tos: bool,
    extra_statistics: bool,
    message_timeout: u64,
    /// The real server's older field: the start as a revision (`long.MinValue` on `$all`).
    start_from: i64,
    start_position: Option<String>,
    live_buffer_size: u32,
    history_buffer_size: u32,
    max_retry_count: u32,
    read_batch_size: u32,
    check_point_after: u64,
    min_check_point_count: u32,
    max_check_point_count: u32,
    max_subscriber_count: u32,
    named_consumer_strategy: String,
}

/// How a start is shown: `-1` for the end and `0` for the start, as the clients read it.
pub fn format_start(source: &Source, start: StartFrom) -> String {
    match (source, start) {
        (Source::Stream(_), StartFrom::Start) => "0".into(),
        (Source::Stream(_), StartFrom::End) => "-1".into(),
        (Source::All, StartFrom::Start) => "C:0/P:0".into(),
        (Source::All, StartFrom::End) => "C:-1/P:-1".into(),
        (source, StartFrom::At(place)) => source.format_place(place),
    }
}

fn parse_start(source: &Source, text: &str) -> Option<StartFrom> {
    match text {
        "-1" | "C:-1/P:-1" => Some(StartFrom::End),
        "0" | "C:0/P:0" => Some(StartFrom::Start),
        other => source.parse_place(other).map(StartFrom::At),
    }
}

/// The body of a configuration event holding `groups`.
pub fn encode_config(groups: &[GroupConfig], now: &str) -> Vec<u8> {
    let entries = groups
        .iter()
        .map(|g| StoredEntry {
            stream: g.id.source.name().to_string(),
            group: g.id.group.clone(),
            filter: g.filter.as_ref().map(FilterSpec::stored),
            resolve_link_tos: g.settings.resolve_links,
            extra_statistics: g.settings.extra_statistics,
            message_timeout: g.settings.message_timeout.as_millis() as u64,
            start_from: match (&g.id.source, g.settings.start_from) {
                (Source::All, _) => i64::MIN,
                (_, StartFrom::Start) => 0,
                (_, StartFrom::End) => -1,
                (_, StartFrom::At(r)) => i64::try_from(r).unwrap_or(i64::MAX),
            },
            start_position: Some(format_start(&g.id.source, g.settings.start_from)),
            live_buffer_size: g.settings.live_buffer_size,
            history_buffer_size: g.settings.history_buffer_size,
            max_retry_count: g.settings.max_retry_count,
            read_batch_size: g.settings.read_batch_size,
            check_point_after: g.settings.checkpoint_after.as_millis() as u64,
            min_check_point_count: g.settings.min_checkpoint_count,
            max_check_point_count: g.settings.max_checkpoint_count,
            max_subscriber_count: g.settings.max_subscriber_count,
            named_consumer_strategy: g.settings.strategy.name().to_string(),
        })
        .collect();
    let config = StoredConfig {
        version: "2".into(),
        updated: now.to_string(),
        updated_by: "$system".into(),
        entries,
    };
    serde_json::to_vec(&config).unwrap_or_default()
}

/// Reads a configuration event back; an entry that no longer makes sense is left out, named.
pub fn decode_config(data: &[u8]) -> Result<(Vec<GroupConfig>, Vec<String>), String> {
    let config: StoredConfig =
        serde_json::from_slice(data).map_err(|e| format!("unreadable configuration: {e}"))?;
    let mut groups = Vec::with_capacity(config.entries.len());
    let mut skipped = Vec::new();
    for entry in config.entries {
        let source = Source::from_name(&entry.stream);
        let name = format!("{}::{}", entry.stream, entry.group);
        let start = entry
            .start_position
            .clone()
            .unwrap_or_else(|| entry.start_from.to_string());
        let start_from = parse_start(&source, &start);
        let strategy = Strategy::parse(&entry.named_consumer_strategy).ok();
        let filter = match entry.filter {
            Some(stored) => match FilterSpec::from_stored(stored) {
                Some(filter) => Some(filter),
                None => {
                    skipped.push(name);
                    continue;
                }
            },
            None => None,
        };
        let (Some(start_from), Some(strategy)) = (start_from, strategy) else {
            skipped.push(name);
            continue;
        };
        groups.push(GroupConfig {
            id: GroupId::new(source, entry.group),
            filter,
            settings: Settings {
                start_from,
                resolve_links: entry.resolve_link_tos,
                extra_statistics: entry.extra_statistics,
                message_timeout: Duration::from_millis(entry.message_timeout),
                max_retry_count: entry.max_retry_count,
                live_buffer_size: entry.live_buffer_size,
                read_batch_size: entry.read_batch_size,
                history_buffer_size: entry.history_buffer_size,
                checkpoint_after: Duration::from_millis(entry.check_point_after),
                min_checkpoint_count: entry.min_check_point_count,
                max_checkpoint_count: entry.max_check_point_count,
                max_subscriber_count: entry.max_subscriber_count,
                strategy,
            },
        });
    }
    Ok((groups, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_round_trips() {
        let groups = vec![
            GroupConfig {
                id: GroupId::new(Source::Stream("orders".into()), "billing"),
                settings: Settings {
                    start_from: StartFrom::At(7),
                    strategy: Strategy::Pinned,
                    ..Settings::default()
                },
                filter: None,
            },
            GroupConfig {
                id: GroupId::new(Source::All, "policies"),
                settings: Settings {
                    start_from: StartFrom::Start,
                    ..Settings::default()
                },
                filter: Some(FilterSpec {
                    on_stream_name: false,
                    regex: "^Reservation".into(),
                    prefixes: vec![],
                }),
            },
        ];
        let data = encode_config(&groups, "2026-12-07T00:00:00Z");
        let (back, skipped) = decode_config(&data).unwrap();
        assert_eq!(back, groups);
        assert!(skipped.is_empty());
    }

    #[test]
    fn a_configuration_written_by_the_real_server_is_read() {
        // Its shape: camelCase, defaults left out, filters as context/type/data.
        let data = br#"{"version":"2","updated":"2026-12-07T10:00:00+00:00","updatedBy":"admin",
          "entries":[
            {"stream":"orders","group":"g1","messageTimeout":30000,"startFrom":0,
             "startPosition":"0","liveBufferSize":500,"historyBufferSize":500,"maxRetryCount":10,
             "readBatchSize":20,"checkPointAfter":2000,"minCheckPointCount":10,
             "maxCheckPointCount":1000,"namedConsumerStrategy":"RoundRobin"},
            {"stream":"$all","group":"g2","filter":{"context":"eventtype","type":"prefix",
             "data":"Order,Invoice","isAllStream":true},"resolveLinkTos":true,
             "messageTimeout":10000,"startFrom":-9223372036854775808,
             "startPosition":"C:-1/P:-1","liveBufferSize":500,"historyBufferSize":500,
             "readBatchSize":20,"checkPointAfter":2000,"maxCheckPointCount":1000,
             "maxSubscriberCount":5,"namedConsumerStrategy":"Pinned"},
            {"stream":"old","group":"g3","startFrom":-1,"historyBufferSize":500,
             "namedConsumerStrategy":"PinnedByCorrelation"}]}"#;
        let (groups, skipped) = decode_config(data).unwrap();
        assert_eq!(skipped, vec!["old::g3".to_string()]);
        assert_eq!(groups[0].settings.start_from, StartFrom::Start);
        assert_eq!(groups[1].id.source, Source::All);
        assert_eq!(groups[1].settings.start_from, StartFrom::End);
        assert_eq!(groups[1].settings.max_retry_count, 0);
        assert_eq!(groups[1].settings.strategy, Strategy::Pinned);
        assert_eq!(
            groups[1].filter.as_ref().map(|f| f.prefixes.clone()),
            Some(vec!["Order".to_string(), "Invoice".to_string()])
        );
    }

    #[test]
    fn places_and_starts_are_written_as_the_clients_read_them() {
        let all = Source::All;
        let stream = Source::Stream("s".into());
        assert_eq!(format_start(&stream, StartFrom::End), "-1");
        assert_eq!(format_start(&all, StartFrom::Start), "C:0/P:0");
        assert_eq!(all.format_place(42), "C:42/P:42");
        assert_eq!(all.parse_place("\"C:42/P:42\""), Some(42));
        assert_eq!(stream.parse_place("\"5\""), Some(5));
        assert_eq!(parse_start(&all, "C:9/P:9"), Some(StartFrom::At(9)));
    }

    #[test]
    fn out_of_range_settings_are_named() {
        let raw = RawSettings {
            read_batch_size: 20,
            history_buffer_size: 500,
            live_buffer_size: 500,
            strategy: "RoundRobin".into(),
            ..RawSettings::default()
        };
        assert!(raw.clone().check().is_ok());
        let bad = RawSettings {
            live_buffer_size: 0,
            ..raw.clone()
        };
        assert!(bad
            .check()
            .unwrap_err()
            .to_string()
            .contains("liveBufferSize"));
        let bad = RawSettings {
            strategy: "Random".into(),
            ..raw
        };
        assert!(bad.check().unwrap_err().to_string().contains("Random"));
    }
}
