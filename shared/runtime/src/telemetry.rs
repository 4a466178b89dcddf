//! Structured JSON logs on stdout, one line per decision; Lambda's JSON log format keeps them as they are.
//!
//! Every line written during an invocation carries its Lambda request id as `requestId` (top level, as Lambda's
//! own JSON logs name it), so that one invocation's lines can be pulled out of a log group. lambda_runtime wraps
//! each invocation in a span `Lambda runtime invoke` with a `requestId` field (its `layers/trace.rs`); this module
//! keeps that span enabled whatever the log level, remembers its request id, and writes it into each line.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::{LookupSpan, Registry};
use tracing_subscriber::util::SubscriberInitExt;

/// The field of lambda_runtime's invocation span, and of every log line and metric line of an invocation.
pub const REQUEST_ID: &str = "requestId";

/// The target of lambda_runtime's invocation span (an INFO span): enabled at every log level, or a WARN filter
/// would drop the span and with it the request id of the warnings.
const RUNTIME_SPAN_TARGET: &str = "lambda_runtime::layers::trace";

/// Installs the JSON subscriber. The level comes from `RUST_LOG`, else Lambda's `AWS_LAMBDA_LOG_LEVEL`, else info.
pub fn init() {
    let spec = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().map(|l| l.to_lowercase()))
        .filter(|spec| EnvFilter::try_new(spec).is_ok())
        .unwrap_or_else(|| "info".to_owned());
    let filter =
        EnvFilter::try_new(format!("{spec},{RUNTIME_SPAN_TARGET}=info")).unwrap_or_else(|_| EnvFilter::new("info"));
    let format = tracing_subscriber::fmt::format()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false);
    let lines = tracing_subscriber::fmt::layer().fmt_fields(JsonFields::new()).event_format(WithRequestId(format));
    // A second init (tests) keeps the first subscriber.
    let _ = Registry::default().with(filter).with(RequestIdLayer).with(lines).try_init();
}

/// The request id of the invocation being run: the nearest enclosing span with a `requestId` field.
pub fn request_id() -> Option<String> {
    tracing::Span::current()
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            let span = registry.span(id)?;
            span.scope().find_map(|s| s.extensions().get::<RequestId>().map(|r| r.0.clone()))
        })
        .flatten()
}

/// A span's request id, kept in its extensions when the span is created.
struct RequestId(String);

struct RequestIdLayer;

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for RequestIdLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut visitor = RequestIdVisitor(None);
        attrs.record(&mut visitor);
        if let (Some(request_id), Some(span)) = (visitor.0, ctx.span(id)) {
            span.extensions_mut().insert(RequestId(request_id));
        }
    }
}

struct RequestIdVisitor(Option<String>);

impl Visit for RequestIdVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == REQUEST_ID {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == REQUEST_ID {
            self.0 = Some(format!("{value:?}").trim_matches('"').to_owned());
        }
    }
}

/// tracing-subscriber's JSON line, with `"requestId"` first when the event happens inside an invocation.
struct WithRequestId(Format<Json>);

impl<S, N> FormatEvent<S, N> for WithRequestId
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let request_id = ctx
            .event_scope()
            .and_then(|mut scope| scope.find_map(|s| s.extensions().get::<RequestId>().map(|r| r.0.clone())));
        let Some(request_id) = request_id else { return self.0.format_event(ctx, writer, event) };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        // The JSON formatter writes one object; the id goes in as its first member.
        let Some(rest) = line.strip_prefix('{') else { return writer.write_str(&line) };
        let id = serde_json::to_string(&request_id).map_err(|_| fmt::Error)?;
        let separator = if rest.starts_with('}') { "" } else { "," };
        write!(writer, "{{\"{REQUEST_ID}\":{id}{separator}{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines(buffer: &Buffer) -> Vec<serde_json::Value> {
        let bytes = buffer.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// The same layers as [`init`], writing into `buffer`, with `filter`.
    fn subscriber(buffer: &Buffer, filter: &str) -> impl Subscriber + Send + Sync {
        let buffer = buffer.clone();
        let format = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(false);
        let lines = tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(WithRequestId(format))
            .with_writer(move || buffer.clone());
        Registry::default()
            .with(EnvFilter::new(format!("{filter},{RUNTIME_SPAN_TARGET}=info")))
            .with(RequestIdLayer)
            .with(lines)
    }

    /// lambda_runtime's span, as its `layers/trace.rs` makes it (same target, name, level and field).
    fn runtime_span(request_id: &str) -> tracing::Span {
        tracing::info_span!(target: "lambda_runtime::layers::trace", "Lambda runtime invoke", requestId = request_id)
    }

    #[test]
    fn lines_inside_an_invocation_carry_its_request_id_at_every_level() {
        for filter in ["info", "warn"] {
            let buffer = Buffer::default();
            tracing::subscriber::with_default(subscriber(&buffer, filter), || {
                tracing::warn!("before any invocation");
                let span = runtime_span("req-1");
                let _entered = span.enter();
                tracing::warn!(thing = "t", "inside");
                let inner = tracing::info_span!("inner");
                let _inner = inner.enter();
                tracing::error!("nested");
                assert_eq!(request_id().as_deref(), Some("req-1"));
            });
            let lines = lines(&buffer);
            assert_eq!(lines.len(), 3, "{filter}: {lines:?}");
            assert!(lines[0].get(REQUEST_ID).is_none(), "{}", lines[0]);
            for line in &lines[1..] {
                assert_eq!(line[REQUEST_ID], "req-1", "{filter}: {line}");
                assert!(line["level"].is_string() && line["timestamp"].is_string(), "{line}");
            }
            assert_eq!(lines[1]["thing"], "t");
            assert_eq!(lines[1]["message"], "inside");
        }
    }

    #[test]
    fn no_request_id_outside_an_invocation() {
        let buffer = Buffer::default();
        tracing::subscriber::with_default(subscriber(&buffer, "info"), || {
            assert_eq!(request_id(), None);
        });
    }
}
