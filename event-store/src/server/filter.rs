//! Server-side filters on `$all`: by stream name or by event type, with a regex or prefixes.

use fancy_regex::{Regex, RegexBuilder};
use tonic::Status;

use crate::proto::streams::read_req::options::{filter_options, FilterOption, FilterOptions};
use crate::storage::StoredEvent;

/// Backtracking steps a filter's regular expression may take on one stream name or event type.
const BACKTRACK_LIMIT: usize = 100_000;

/// The window when the client asks for `count`: pages stop after this many events considered.
const DEFAULT_WINDOW: u64 = 32;

#[derive(Debug, Clone)]
pub struct EventFilter {
    on_stream: bool,
    regex: Option<Regex>,
    prefixes: Vec<String>,
    /// A filtered subscription sends a checkpoint each time this many events have been
    /// considered, so a client can save progress through events it never sees.
    pub checkpoint_interval: u64,
}

impl EventFilter {
    pub fn from_proto(option: Option<FilterOption>) -> Result<Option<EventFilter>, Status> {
        let options: FilterOptions = match option {
            Some(FilterOption::Filter(options)) => options,
            Some(FilterOption::NoFilter(_)) | None => return Ok(None),
        };
        let (on_stream, expression) = match options.filter {
            Some(filter_options::Filter::StreamIdentifier(e)) => (true, e),
            Some(filter_options::Filter::EventType(e)) => (false, e),
            None => return Err(Status::invalid_argument("'filter' is a required argument")),
        };
        let window = match options.window {
            Some(filter_options::Window::Max(max)) if max > 0 => max as u64,
            Some(filter_options::Window::Max(_)) => {
                return Err(Status::invalid_argument(
                    "the filter window 'max' must be positive",
                ))
            }
            _ => DEFAULT_WINDOW,
        };
        if options.checkpoint_interval_multiplier == 0 {
            return Err(Status::invalid_argument(
                "'checkpointIntervalMultiplier' must be greater than 0",
            ));
        }
        EventFilter::new(
            on_stream,
            &expression.regex,
            expression.prefix,
            window * options.checkpoint_interval_multiplier as u64,
        )
        .map(Some)
        .map_err(Status::invalid_argument)
    }

    /// A filter on stream names (`on_stream`) or event types: the regex decides when given,
    /// otherwise any of the prefixes. The error names what is wrong with the regex.
    pub fn new(
        on_stream: bool,
        regex: &str,
        prefixes: Vec<String>,
        checkpoint_interval: u64,
    ) -> Result<EventFilter, String> {
        let regex = if regex.is_empty() {
            None
        } else {
            // The real server's filters are .NET regular expressions, and clients send what
            // .NET accepts: look-ahead and look-behind (the Python client's default filter is
            // a negative look-ahead), backreferences, atomic groups. A backtracking engine
            // reads them; its limits keep a hostile pattern from running away.
            let compiled = RegexBuilder::new(regex)
                .delegate_size_limit(1 << 20)
                .backtrack_limit(BACKTRACK_LIMIT)
                .build()
                .map_err(|e| format!("invalid filter regex: {e}"))?;
            Some(compiled)
        };
        Ok(EventFilter {
            on_stream,
            regex,
            prefixes,
            checkpoint_interval,
        })
    }

    /// A regex, when given, decides; otherwise any prefix does.
    pub fn matches(&self, event: &StoredEvent) -> bool {
        let subject = if self.on_stream {
            event.stream.as_str()
        } else {
            event.event_type.as_str()
        };
        match &self.regex {
            // A subject on which the pattern exceeds its backtracking budget does not match.
            Some(regex) => regex.is_match(subject).unwrap_or(false),
            None => self
                .prefixes
                .iter()
                .any(|p| subject.starts_with(p.as_str())),
        }
    }
}
