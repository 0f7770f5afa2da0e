//! Logging setup: `tracing` with pretty or JSON output.
//!
//! Rule: a log line is one line, whatever a value in it says. Values logged come from outside (UDIDs,
//! topics, SCEP transaction ids, error texts quoting a request), and a newline in one would forge a log line,
//! an ESC sequence would drive the operator's terminal. So control characters are escaped once, where fields
//! are formatted ([`EscapingFields`], every field and message of events and spans), not call site by call
//! site. JSON needs nothing more: serde_json escapes every control character in a string.

use crate::config::{LogConfig, LogFormat, TelemetryConfig};
use crate::traces::Traces;
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::Subscriber;
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

/// Install the log subscriber, and the trace exporter when `telemetry.otlp_endpoint` is set. Keep what is
/// returned until exit: dropping it flushes the spans not yet exported.
pub fn init(cfg: &LogConfig, telemetry: &TelemetryConfig) -> Traces {
    use std::io::IsTerminal;
    use tracing_subscriber::util::SubscriberInitExt;
    let spec = std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_else(|_| cfg.filter.clone());
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new(&cfg.filter));
    // The migrator logs each step at INFO, on every command that opens the database: the server logs
    // one line naming what it applied instead (`Storage::migrate`). A filter naming it still wins.
    let filter = if spec.contains("sea_orm_migration") {
        filter
    } else {
        filter.add_directive("sea_orm_migration=warn".parse().expect("a valid directive"))
    };
    let traces = Traces::start(telemetry).unwrap_or_else(|e| {
        eprintln!("{e}; traces are off");
        Traces::off()
    });
    // The trace layer has its own filter: the server's spans down to DEBUG (see `traces`), whatever
    // the log filter keeps.
    let spans = Targets::new()
        .with_target("mdm_server", LevelFilter::DEBUG)
        .with_default(LevelFilter::INFO);
    let trace_layer = (traces.tracer()).map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t)
            .with_filter(spans)
    });
    // Colours only for a person at a terminal: in a file or a journal they are noise.
    let ansi = std::io::stderr().is_terminal();
    let logs = fmt_layer(cfg.format, ansi, std::io::stderr).with_filter(filter);
    // try_init: a second call (tests) keeps the first subscriber instead of panicking.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(trace_layer)
        .try_init();
    traces
}

/// The log subscriber [`init`] installs (without traces), writing to `writer` (tests capture it).
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let logs = fmt_layer(format, ansi, writer).with_filter(filter);
    Box::new(tracing_subscriber::registry().with(logs))
}

/// Log lines in `format`: JSON lines carry the fields of the spans they were logged in (the request's
/// id, route and trace id), text lines have their control characters escaped.
fn fmt_layer<S, W>(format: LogFormat, ansi: bool, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(layer.json()),
        LogFormat::Pretty => Box::new(layer.fmt_fields(EscapingFields)),
    }
}

/// Formats fields as tracing-subscriber's default text format does, with every control character (and the
/// Unicode line separators and bidi overrides some viewers act on) in a value or message escaped.
#[derive(Debug, Default, Clone, Copy)]
pub struct EscapingFields;

impl<'a> MakeVisitor<Writer<'a>> for EscapingFields {
    type Visitor = Escaping<DefaultVisitor<'a>>;

    fn make_visitor(&self, target: Writer<'a>) -> Self::Visitor {
        Escaping(DefaultVisitor::new(target, true))
    }
}

/// A field visitor that hands `V` each value with its control characters escaped.
pub struct Escaping<V>(V);

impl<V: Visit> Visit for Escaping<V> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // Other fields' strings are Debug-quoted (already escaped) by the default visitor; the message is
        // written as it is, so it is escaped here. Escaping a quoted string again would double backslashes.
        if field.name() == "message" {
            self.0.record_str(field, &escape_controls(value));
        } else {
            self.0.record_str(field, value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        self.record_debug(field, &format_args!("{text}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        let escaped = escape_controls(&text);
        self.0.record_debug(field, &format_args!("{escaped}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.record_i64(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.record_u64(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.record_bool(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.record_f64(field, value);
    }
}

impl<V: VisitOutput<fmt::Result>> VisitOutput<fmt::Result> for Escaping<V> {
    fn finish(self) -> fmt::Result {
        self.0.finish()
    }
}

impl<V: VisitFmt> VisitFmt for Escaping<V> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        self.0.writer()
    }
}

/// `s` with each control character written as an escape (`\n`, `\r`, `\t`, else `\u{1b}`), as are U+2028/9
/// (line and paragraph separators) and the bidi embedding, override and isolate controls. Everything else,
/// backslashes included, is kept: the point is that no value can end or rewrite a line.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    let needs = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(needs) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    const HOSTILE: &str =
        "UDID-1\n2024-01-01T00:00:00Z  INFO forged: admin logged in\r\x1b[31mred\u{2028}end";

    #[derive(Debug)]
    struct Failure(String);
    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Failure {}

    /// Log one event whose every kind of value (Display, Debug, str, error, message, span field) carries
    /// `HOSTILE`, and return what was written.
    fn log_hostile(format: LogFormat) -> String {
        let out = Captured::default();
        let sub = subscriber(format, EnvFilter::new("info"), false, out.clone());
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("checkin", device = %HOSTILE);
            let _g = span.enter();
            let err = Failure(HOSTILE.to_string());
            tracing::info!(
                udid = %HOSTILE,
                topic = ?HOSTILE,
                raw = HOSTILE,
                error = &err as &(dyn std::error::Error + 'static),
                "device {HOSTILE} checked in"
            );
        });
        let written = out.0.lock().unwrap().clone();
        String::from_utf8(written).unwrap()
    }

    #[test]
    fn a_hostile_value_stays_on_its_line_in_the_text_format() {
        let text = log_hostile(LogFormat::Pretty);
        assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
        assert!(text.ends_with('\n'));
        for c in ['\r', '\x1b', '\u{2028}'] {
            assert!(!text.contains(c), "{c:?} written raw: {text:?}");
        }
        // The message and each field show the escapes, not the characters.
        assert!(text.contains("device UDID-1\\n2024-01-01"), "{text}");
        assert!(text.contains("udid=UDID-1\\n"), "{text}");
        assert!(text.contains("\\r\\u{1b}[31mred\\u{2028}end"), "{text}");
        assert!(text.contains("checkin{device=UDID-1\\n"), "{text}");
    }

    #[test]
    fn a_hostile_value_stays_on_its_line_in_json() {
        let text = log_hostile(LogFormat::Json);
        assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
        for c in ['\r', '\x1b'] {
            assert!(!text.contains(c), "{c:?} written raw: {text:?}");
        }
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["fields"]["udid"], HOSTILE, "the value survives, escaped");
        assert_eq!(
            v["fields"]["message"],
            format!("device {HOSTILE} checked in")
        );
    }

    #[test]
    fn plain_text_is_kept_as_it_is() {
        assert!(matches!(
            escape_controls("a\\nb é"),
            std::borrow::Cow::Borrowed("a\\nb é")
        ));
        assert_eq!(
            escape_controls("a\nb\tc\x07\u{202e}"),
            "a\\nb\\tc\\u{7}\\u{202e}"
        );
    }
}
