//! `--log-format json`: one JSON object per line, flat.
//!
//! tracing-subscriber's own JSON format nests the fields of the event (`fields`) and of its
//! spans (`span`, `spans`). A request's fields are recorded in two places, though: the request
//! span holds `request_id`, `route`, `method`, `path` and, on the control-plane API, `token_id`;
//! the response event holds `status`, `latency_us` and, on the runtime API, `token_id` (a span
//! field recorded late costs the read path; see `coffer_server::request_log`). So a collector
//! would have to look for the same field in two places. This format puts every field at the
//! top level: `timestamp` (RFC 3339, UTC), `level`, `target`, then the fields of the spans the
//! event is in, outermost first, then the event's own (`message` among them), a later one
//! replacing an earlier one of the same name.
//!
//! Only the assembly is ours: the spans' fields are formatted by tracing-subscriber's
//! [`JsonFields`] (kept in each span's extensions, as its JSON format does) and the event's by
//! its [`JsonVisitor`], and the time by its [`SystemTime`] timer.

use std::fmt;

use serde_json::{Map, Value};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::VisitOutput;
use tracing_subscriber::fmt::format::{JsonFields, JsonVisitor, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The keys every line starts with; a field of the same name is dropped rather than written
/// twice (no event or span of Coffer's has one).
const RESERVED: [&str; 3] = ["timestamp", "level", "target"];

/// The event formatter (with [`JsonFields`] as the field formatter).
pub(super) struct FlatJson;

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(recorded) = extensions.get::<FormattedFields<JsonFields>>() {
                    merge(&mut fields, recorded);
                }
            }
        }
        let mut own = String::new();
        let mut visitor = JsonVisitor::new(&mut own);
        event.record(&mut visitor);
        visitor.finish()?;
        merge(&mut fields, &own);

        let meta = event.metadata();
        // A record of the `log` crate (rustls, reqwest) arrives as an event of target `log`
        // naming its real target and location in `log.*` fields: its target is put back.
        let mut target = Value::from(meta.target());
        if let Some(real) = fields.remove("log.target") {
            target = real;
            fields.retain(|key, _| !key.starts_with("log."));
        }
        let target = target.as_str().unwrap_or_default();
        let line = line(&timestamp(), meta.level().as_str(), target, fields);
        writeln!(writer, "{line}")
    }
}

/// Adds the fields of `object` (a JSON object as [`JsonFields`] and [`JsonVisitor`] write it)
/// to `fields`, replacing any of the same name.
fn merge(fields: &mut Map<String, Value>, object: &str) {
    if let Ok(Value::Object(more)) = serde_json::from_str::<Value>(object) {
        fields.extend(more);
    }
}

/// The current time as RFC 3339 in UTC, with microseconds (`2026-12-06T21:09:44.123456Z`).
fn timestamp() -> String {
    let mut time = String::new();
    // Writing to a String cannot fail.
    let _ = SystemTime.format_time(&mut Writer::new(&mut time));
    time
}

/// One line: the reserved keys first, then `fields` (in name order).
fn line(timestamp: &str, level: &str, target: &str, fields: Map<String, Value>) -> String {
    let string = |s: &str| Value::from(s).to_string();
    let mut text = format!(
        "{{\"timestamp\":{},\"level\":{},\"target\":{}",
        string(timestamp),
        string(level),
        string(target)
    );
    for (key, value) in fields {
        if !RESERVED.contains(&key.as_str()) {
            text.push(',');
            text.push_str(&string(&key));
            text.push(':');
            text.push_str(&value.to_string());
        }
    }
    text.push('}');
    text
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    /// The lines `f` logs, each parsed.
    fn logged(f: impl FnOnce()) -> Vec<Map<String, Value>> {
        logged_text(f)
            .lines()
            .map(|line| match serde_json::from_str(line) {
                Ok(Value::Object(map)) => map,
                other => panic!("not a JSON object ({other:?}): {line}"),
            })
            .collect()
    }

    fn logged_text(f: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn span_and_event_fields_are_flat_and_typed() {
        let lines = logged(|| {
            let span = tracing::info_span!(
                "request",
                request_id = "abc",
                route = "/x/{id}",
                token_id = tracing::field::Empty
            );
            let _in = span.enter();
            span.record("token_id", "t1");
            tracing::info!(status = 200u16, latency_us = 17u64, "response");
        });
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], module_path!());
        assert_eq!(line["message"], "response");
        assert_eq!(line["request_id"], "abc");
        assert_eq!(line["route"], "/x/{id}");
        assert_eq!(line["token_id"], "t1");
        assert_eq!(line["status"], 200);
        assert_eq!(line["latency_us"], 17);
        let time = line["timestamp"].as_str().unwrap();
        assert!(
            coffer_types::Timestamp::parse_rfc3339(time).is_some(),
            "{time}"
        );
    }

    #[test]
    fn the_inner_span_and_then_the_event_win_a_name() {
        let lines = logged(|| {
            let outer = tracing::info_span!("outer", a = 1, b = 1, c = 1);
            let _o = outer.enter();
            let inner = tracing::info_span!("inner", b = 2, c = 2);
            let _i = inner.enter();
            tracing::warn!(c = 3, level = "mine", "x\n\"quoted\"");
        });
        let line = &lines[0];
        assert_eq!(
            (&line["a"], &line["b"], &line["c"]),
            (&1.into(), &2.into(), &3.into())
        );
        assert_eq!(line["level"], "WARN", "a field cannot replace the level");
        assert_eq!(line["message"], "x\n\"quoted\"");
    }

    #[test]
    fn lines_start_with_the_time_level_and_target() {
        let text = logged_text(|| tracing::info!(a = 1, "one"));
        assert!(text.starts_with("{\"timestamp\":\""), "{text}");
        let after_time = text.split_once("Z\",").unwrap().1;
        assert!(
            after_time.starts_with(&format!(
                "\"level\":\"INFO\",\"target\":\"{}\",\"a\":1,\"message\":\"one\"}}\n",
                module_path!()
            )),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn an_event_outside_any_span_has_its_own_fields_only() {
        let lines = logged(|| tracing::error!(path = "/d", "stopped"));
        let line = &lines[0];
        assert_eq!(line.len(), 5, "{line:?}");
        assert_eq!(line["level"], "ERROR");
        assert_eq!(line["path"], "/d");
    }
}
