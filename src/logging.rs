//! Logging: the global `tracing` subscriber writing to stdout, as one JSON object per line
//! (SPEC.md "Logs") or as human-readable lines on a terminal, with a level filter that a
//! SIGHUP can change. Event names live in [`crate::events`]; what each event carries is up
//! to the code that emits it.

use std::io::{self, IsTerminal, Write};
use std::time::SystemTime;

use serde::ser::{SerializeMap, Serializer as _};
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry, reload};

use crate::progress::TerminalLines;

/// Why logging could not be set up or its level changed.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `logging.level` is not a valid filter.
    #[error(
        "logging.level: invalid filter {level:?}: {problem} (expected a level such as \"info\" \
         or directives such as \"remixd=debug,info\")"
    )]
    InvalidLevel {
        /// The filter as written.
        level: String,
        /// The parser's complaint.
        problem: String,
    },
    /// A global subscriber was already installed.
    #[error("logging: cannot install the log subscriber: {0}")]
    Install(String),
    /// The running subscriber is gone, so its filter cannot change.
    #[error("logging.level: cannot change the level: {0}")]
    Reload(String),
}

/// Changes the level filter of the installed subscriber (on SIGHUP).
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    inner: reload::Handle<EnvFilter, Registry>,
}

impl ReloadHandle {
    /// Replaces the level filter with `level` (`info`, `remixd=debug,info`, ...).
    ///
    /// # Errors
    /// [`LoggingError::InvalidLevel`] when `level` does not parse; the old filter stays.
    pub fn set_level(&self, level: &str) -> Result<(), LoggingError> {
        let filter = parse_level(level)?;
        self.inner
            .reload(filter)
            .map_err(|e| LoggingError::Reload(e.to_string()))
    }
}

/// Installs the global subscriber: JSON lines on stdout (`Auto` when stdout is not a
/// terminal), or compact human-readable lines, filtered by `level`.
///
/// # Errors
/// [`LoggingError::InvalidLevel`] for a bad filter, [`LoggingError::Install`] when a global
/// subscriber is already set.
pub fn init(format: LogFormat, level: &str) -> Result<ReloadHandle, LoggingError> {
    let (filter, inner) = reload::Layer::new(parse_level(level)?);
    let terminal = io::stdout().is_terminal();
    let registry = Registry::default().with(filter);
    // On a terminal, lines step around `--once`'s progress bar when stderr shares it.
    let human = tracing_subscriber::fmt::layer()
        .compact()
        .with_ansi(terminal);
    let installed = match (wants_json(format, terminal), terminal) {
        (true, false) => registry.with(JsonLayer::new(locked_stdout)).try_init(),
        (true, true) => registry.with(JsonLayer::new(TerminalLines)).try_init(),
        (false, false) => registry.with(human.with_writer(io::stdout)).try_init(),
        (false, true) => registry.with(human.with_writer(TerminalLines)).try_init(),
    };
    installed.map_err(|e| LoggingError::Install(e.to_string()))?;
    Ok(ReloadHandle { inner })
}

fn wants_json(format: LogFormat, stdout_is_terminal: bool) -> bool {
    match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !stdout_is_terminal,
    }
}

fn parse_level(level: &str) -> Result<EnvFilter, LoggingError> {
    let invalid = |problem: String| LoggingError::InvalidLevel {
        level: level.to_owned(),
        problem,
    };
    if level.trim().is_empty() {
        return Err(invalid("it is empty".to_owned()));
    }
    // notify reports, through the `log` bridge, watches it could not remove on folders that
    // are already gone (every finished job's); that is expected, not news. A level the user
    // sets for `notify` explicitly still wins, being later in the list.
    EnvFilter::try_new(format!("notify=error,{level}")).map_err(|e| invalid(e.to_string()))
}

/// `logging.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON unless stdout is a terminal.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Pretty,
}

/// Holding the lock for the whole line keeps lines from different threads whole.
fn locked_stdout() -> io::StdoutLock<'static> {
    io::stdout().lock()
}

/// A [`Layer`] writing each event as one JSON object per line: `timestamp`, `level`,
/// `event` (`"log"` when the event has none), `message`, the event's other fields, then the
/// fields of every enclosing span (innermost first), all at the top level.
#[derive(Debug)]
pub struct JsonLayer<W> {
    make_writer: W,
}

impl<W> JsonLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    /// A layer writing through `make_writer`, which is asked for a writer once per line.
    pub fn new(make_writer: W) -> Self {
        Self { make_writer }
    }
}

/// Fields recorded on a span, kept in its extensions.
#[derive(Debug, Default)]
struct SpanFields(Vec<(&'static str, Value)>);

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::default();
        attrs.record(&mut fields);
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(fields);
        } else {
            let mut fields = SpanFields::default();
            values.record(&mut fields);
            extensions.insert(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => self.write_event(&mut line, event, &ctx),
            // A field's Debug that logs while this line is built: it gets its own buffers.
            Err(_) => self.write_event(&mut LineBuffers::default(), event, &ctx),
        });
    }
}

impl<W> JsonLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn write_event<S>(&self, line: &mut LineBuffers, event: &Event<'_>, ctx: &Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        line.clear();
        let mut lead = Lead {
            event: &mut line.event,
            message: &mut line.message,
        };
        event.record(&mut lead);
        // Serializing into memory cannot fail; if it ever did, there is nowhere to report it
        // but the log itself.
        if render_line(
            &mut line.out,
            &mut line.scratch,
            &line.event,
            &line.message,
            event,
            ctx,
        )
        .is_err()
        {
            return;
        }
        line.out.push(b'\n');
        let out = crate::secrets::scrub_line(&line.out);
        // A closed or full stdout must not stop the daemon; the line is lost either way.
        let _ = self.make_writer.make_writer().write_all(&out);
    }
}

thread_local! {
    /// Each thread's buffers for the line it is writing, reused so that a line costs no
    /// allocation once they have grown to fit.
    static LINE: std::cell::RefCell<LineBuffers> = std::cell::RefCell::default();
}

#[derive(Default)]
struct LineBuffers {
    out: Vec<u8>,
    event: String,
    message: String,
    scratch: String,
}

impl LineBuffers {
    fn clear(&mut self) {
        self.out.clear();
        self.event.clear();
        self.message.clear();
        self.scratch.clear();
    }
}

/// The two fields that lead every line: `event` and `message`.
struct Lead<'a> {
    event: &'a mut String,
    message: &'a mut String,
}

impl Visit for Lead<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "event" => self.event.push_str(value),
            "message" => self.message.push_str(value),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let target = match field.name() {
            "event" => &mut *self.event,
            "message" => &mut *self.message,
            _ => return,
        };
        let _ = write!(target, "{value:?}");
    }
}

/// One log line, into `out`. Keys appear once: the common ones first, then the event's
/// fields, then span fields from the innermost span out. Nothing is copied: event fields
/// are written as they are visited, span fields from the span's own record.
fn render_line<S>(
    out: &mut Vec<u8>,
    scratch: &mut String,
    event_name: &str,
    message: &str,
    event: &Event<'_>,
    ctx: &Context<'_, S>,
) -> Result<(), serde_json::Error>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let mut ser = serde_json::Serializer::new(out);
    let mut map = ser.serialize_map(None)?;
    let timestamp = humantime::format_rfc3339_millis(SystemTime::now());
    map.serialize_entry("timestamp", &Displayed(&timestamp))?;
    map.serialize_entry("level", level_name(*event.metadata().level()))?;
    map.serialize_entry(
        "event",
        if event_name.is_empty() {
            "log"
        } else {
            event_name
        },
    )?;
    map.serialize_entry("message", message)?;
    let mut seen = Seen::default();
    let mut fields = FieldWriter {
        map: &mut map,
        scratch,
        seen: &mut seen,
        error: None,
    };
    event.record(&mut fields);
    if let Some(e) = fields.error {
        return Err(e);
    }
    if let Some(scope) = ctx.event_scope(event) {
        for span in scope {
            if let Some(recorded) = span.extensions().get::<SpanFields>() {
                for (key, value) in &recorded.0 {
                    if seen.insert(key) {
                        map.serialize_entry(key, value)?;
                    }
                }
            }
        }
    }
    map.end()
}

/// The keys a line already has (a few; kept on the stack).
struct Seen {
    keys: [&'static str; 32],
    len: usize,
}

impl Default for Seen {
    fn default() -> Self {
        let mut keys = [""; 32];
        keys[..4].copy_from_slice(&["timestamp", "level", "event", "message"]);
        Self { keys, len: 4 }
    }
}

impl Seen {
    /// Whether `key` is new (and now seen).
    fn insert(&mut self, key: &'static str) -> bool {
        if self.keys[..self.len].contains(&key) {
            return false;
        }
        if self.len < self.keys.len() {
            self.keys[self.len] = key;
            self.len += 1;
        }
        true
    }
}

/// Writes an event's fields (but `event` and `message`) straight into the line.
struct FieldWriter<'a, M> {
    map: &'a mut M,
    scratch: &'a mut String,
    seen: &'a mut Seen,
    error: Option<serde_json::Error>,
}

impl<M: SerializeMap<Error = serde_json::Error>> FieldWriter<'_, M> {
    fn put(&mut self, field: &Field, value: &impl serde::Serialize) {
        let name = field.name();
        if self.error.is_some() || is_log_origin(name) || !self.seen.insert(name) {
            return;
        }
        if let Err(e) = self.map.serialize_entry(name, value) {
            self.error = Some(e);
        }
    }
}

impl<M: SerializeMap<Error = serde_json::Error>> Visit for FieldWriter<'_, M> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, &value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, &value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, &value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, &value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, &value);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, &Displayed(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if matches!(field.name(), "event" | "message") {
            return;
        }
        self.scratch.clear();
        let _ = write!(self.scratch, "{value:?}");
        if let Some(list) = debug_list(self.scratch) {
            return self.put(field, &list);
        }
        let text = std::mem::take(self.scratch);
        self.put(field, &text.as_str());
        *self.scratch = text;
    }
}

/// Whether a field is one of the origin fields (`log.target`, ...) that records bridged from
/// the `log` crate carry: noise, not facts about the job.
fn is_log_origin(name: &str) -> bool {
    name.starts_with("log.")
}

/// A list logged with `?` (e.g. `changed = ?keys`) prints as a JSON array of strings; it is
/// kept a list so `jq '.changed[]'` works.
fn debug_list(text: &str) -> Option<Value> {
    if !(text.starts_with('[') && text.ends_with(']')) {
        return None;
    }
    serde_json::from_str::<Value>(text)
        .ok()
        .filter(Value::is_array)
}

/// Serializes anything `Display` as a JSON string, without an intermediate `String`.
struct Displayed<'a, T: ?Sized>(&'a T);

impl<T: std::fmt::Display + ?Sized> serde::Serialize for Displayed<'_, T> {
    fn serialize<Z: serde::Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        serializer.collect_str(self.0)
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

impl SpanFields {
    fn set(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if is_log_origin(name) {
            return;
        }
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }
}

impl Visit for SpanFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field, Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.set(field, Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() != "message" {
            if let Some(list) = debug_list(&text) {
                return self.set(field, list);
            }
        }
        self.set(field, Value::from(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what the layer writes, one `write_all` per line as in production.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("capture lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("capture lock").clone()).expect("utf-8")
        }
    }

    type Lines = Vec<serde_json::Map<String, Value>>;

    /// Runs `f` under a subscriber made of the JSON layer alone and returns its lines parsed.
    fn capture(f: impl FnOnce()) -> (String, Lines) {
        capture_filtered(None, f)
    }

    fn capture_filtered(
        filter: Option<reload::Layer<EnvFilter, Registry>>,
        f: impl FnOnce(),
    ) -> (String, Lines) {
        let out = Captured::default();
        let sink = out.clone();
        let layer = JsonLayer::new(move || sink.clone());
        tracing::subscriber::with_default(Registry::default().with(filter).with(layer), f);
        let text = out.text();
        let lines = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("every line is a JSON object"))
            .collect();
        (text, lines)
    }

    #[test]
    fn common_keys_come_first_with_lowercase_level() {
        let (text, lines) = capture(|| {
            tracing::info!(event = crate::events::JOB_CLAIMED, "claimed it");
            tracing::warn!("no event");
        });
        assert_eq!(lines.len(), 2);
        let first = text.lines().next().expect("a line");
        let at = |key: &str| first.find(&format!("\"{key}\":")).expect(key);
        assert_eq!(at("timestamp"), 1, "{first}");
        assert!(
            at("timestamp") < at("level") && at("level") < at("event"),
            "{first}"
        );
        assert!(at("event") < at("message"), "{first}");
        assert_eq!(lines[0]["level"], "info");
        assert_eq!(lines[0]["event"], "job.claimed");
        assert_eq!(lines[0]["message"], "claimed it");
        assert_eq!(lines[1]["level"], "warn");
        assert_eq!(lines[1]["event"], "log");
        assert_eq!(lines[1]["message"], "no event");
    }

    #[test]
    fn timestamp_is_rfc3339_utc_with_milliseconds() {
        let (_, lines) = capture(|| tracing::info!("x"));
        let ts = lines[0]["timestamp"].as_str().expect("a string");
        // 2024-05-01T12:34:56.789Z
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
        humantime::parse_rfc3339(ts).expect("parses as RFC 3339");
    }

    #[test]
    fn field_values_keep_their_json_types() {
        let (_, lines) = capture(|| {
            let path = std::path::Path::new("a/b.png");
            tracing::info!(
                count = 3_u64,
                delta = -2_i64,
                ok = true,
                ratio = 0.5_f64,
                name = "cat",
                path = ?path,
                shown = %path.display(),
                "typed"
            );
        });
        let line = &lines[0];
        assert_eq!(line["count"], Value::from(3_u64));
        assert_eq!(line["delta"], Value::from(-2_i64));
        assert_eq!(line["ok"], Value::Bool(true));
        assert_eq!(line["ratio"], Value::from(0.5_f64));
        assert_eq!(line["name"], "cat");
        assert_eq!(line["path"], "\"a/b.png\"");
        assert_eq!(line["shown"], "a/b.png");
    }

    #[test]
    fn span_fields_appear_at_the_top_level_innermost_first() {
        let (_, lines) = capture(|| {
            let outer = tracing::info_span!("daemon", worker = 2_u64, file = "outer");
            let _o = outer.enter();
            let job = tracing::info_span!("job", job_id = "01J", file = "a/cat.png", stage = 1);
            let _j = job.enter();
            job.record("stage", 2);
            tracing::info!(event = "job.submitted", attempt = 1, "sent");
        });
        let line = &lines[0];
        assert_eq!(line["job_id"], "01J");
        assert_eq!(line["file"], "a/cat.png", "the inner span wins");
        assert_eq!(line["worker"], 2);
        assert_eq!(line["stage"], 2, "on_record updates the span's field");
        assert_eq!(line["attempt"], 1);
    }

    #[test]
    fn event_fields_override_span_fields_and_keys_are_unique() {
        let (text, lines) = capture(|| {
            let span = tracing::info_span!("job", file = "span.png");
            let _s = span.enter();
            tracing::info!(file = "event.png", "x");
        });
        assert_eq!(lines[0]["file"], "event.png");
        assert_eq!(text.matches("\"file\"").count(), 1, "{text}");
    }

    #[test]
    fn strings_are_escaped_and_each_event_is_one_line() {
        let nasty = "two\nlines \"quoted\" \\ tab\t bell\u{7}";
        let (text, lines) = capture(|| {
            tracing::error!(error = nasty, "line one\nline two");
        });
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        assert_eq!(lines[0]["error"], nasty);
        assert_eq!(lines[0]["message"], "line one\nline two");
        assert!(text.contains("\\u0007"), "{text}");
    }

    #[test]
    fn lines_from_many_threads_never_interleave() {
        let (text, lines) = capture(|| {
            let dispatch = tracing::dispatcher::get_default(Clone::clone);
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    let dispatch = dispatch.clone();
                    std::thread::spawn(move || {
                        tracing::dispatcher::with_default(&dispatch, || {
                            for i in 0..50 {
                                tracing::info!(t, i, pad = "x".repeat(500), "m");
                            }
                        });
                    })
                })
                .collect();
            for thread in threads {
                thread.join().expect("logging thread");
            }
        });
        assert_eq!(lines.len(), 200);
        assert_eq!(text.lines().count(), 200);
    }

    #[test]
    fn reload_handle_changes_the_level_and_keeps_it_on_a_bad_filter() {
        let (filter, inner) = reload::Layer::new(parse_level("warn").expect("valid"));
        let handle = ReloadHandle { inner };
        let (_, lines) = capture_filtered(Some(filter), || {
            tracing::info!("hidden");
            handle.set_level("info").expect("valid level");
            tracing::info!("shown");
            assert!(handle.set_level("remixd=loud").is_err());
            tracing::debug!("still hidden");
            tracing::info!("still shown");
        });
        let messages: Vec<_> = lines.iter().map(|l| l["message"].clone()).collect();
        assert_eq!(messages, ["shown", "still shown"]);
    }

    #[test]
    fn auto_format_is_json_unless_stdout_is_a_terminal() {
        assert!(wants_json(LogFormat::Auto, false));
        assert!(!wants_json(LogFormat::Auto, true));
        assert!(wants_json(LogFormat::Json, true));
        assert!(!wants_json(LogFormat::Pretty, false));
    }

    #[test]
    fn level_filters_parse_or_name_the_key() {
        assert!(parse_level("debug").is_ok());
        assert!(parse_level("remixd=debug,info").is_ok());
        let err = parse_level("remixd=loud").expect_err("not a level");
        assert!(
            err.to_string().starts_with("logging.level: invalid filter"),
            "{err}"
        );
        assert!(parse_level("  ").is_err());
    }
}
