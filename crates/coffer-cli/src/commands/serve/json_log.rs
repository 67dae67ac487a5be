//! `--log-format json`: one JSON object per line, flat.
//!
//! tracing-subscriber's own JSON format nests the fields of the event (`fields`) and of its
//! spans (`span`, `spans`). A request's fields are recorded in two places, though: the request
//! span holds `request_id`, `route`, `method`, `path` and, on the control-plane API, `token_id`;
//! the response event holds `status`, `latency_us` and, on the runtime API, `token_id` (a span
//! field recorded late costs the read path; see `coffer_server::request_log`). So a collector
//! would have to look for the same field in two places. This format puts every field at the
//! top level: `timestamp` (RFC 3339, UTC), `level`, `target`, then every other field in name
//! order, the fields of the spans the event is in and the event's own (`message` among them).
//! Where two have the same name the innermost wins: the event's over its spans', an inner
//! span's over an outer one's (the spans are merged outermost first for that alone).
//!
//! A command that logs JSON also writes its fatal error ([`error_line`]) and any panic
//! ([`log_panics_as_json`]) as such a line, so that standard error stays all JSON.
//!
//! Only the assembly is ours: the spans' fields are formatted by tracing-subscriber's
//! [`JsonFields`] (kept in each span's extensions, as its JSON format does) and the event's by
//! its [`JsonVisitor`], and the time by its [`SystemTime`] timer.

use std::fmt;
use std::io::Write;

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

/// The line that ends a command logging JSON when it fails: like every log line, at `ERROR`,
/// target `coffer` (text mode writes `error: MESSAGE` instead).
pub(crate) fn error_line(message: &str) -> String {
    let mut fields = Map::new();
    fields.insert("message".to_owned(), message.into());
    line(&timestamp(), "ERROR", "coffer", fields)
}

/// From now on a panic writes one JSON line (target `coffer::panic`, its location and thread)
/// instead of the default hook's text. Its message goes in only if it is a literal of the code
/// (`panic!("...")`): a formatted one (`expect`, `unwrap` on an error) may quote what was being
/// parsed, a secret among others; the location names the line that panicked.
pub(crate) fn log_panics_as_json() {
    std::panic::set_hook(Box::new(|info| {
        let literal = info.payload().downcast_ref::<&'static str>().copied();
        let location = info.location().map(ToString::to_string);
        let thread = std::thread::current();
        let text = panic_line(literal, location, thread.name());
        // One write of the whole line, as the log writer's lines are.
        let _ = std::io::stderr()
            .lock()
            .write_all(format!("{text}\n").as_bytes());
    }));
}

fn panic_line(literal: Option<&str>, location: Option<String>, thread: Option<&str>) -> String {
    let mut fields = Map::new();
    let message = match literal {
        Some(text) => format!("panicked: {text}"),
        None => "panicked (its message is not logged in JSON: it may quote input)".to_owned(),
    };
    fields.insert("message".to_owned(), message.into());
    if let Some(location) = location {
        fields.insert("location".to_owned(), location.into());
    }
    if let Some(thread) = thread {
        fields.insert("thread".to_owned(), thread.into());
    }
    line(&timestamp(), "ERROR", "coffer::panic", fields)
}

/// Adds the fields of `object` (a JSON object as [`JsonFields`] and [`JsonVisitor`] write it)
/// to `fields`, replacing any of the same name.
fn merge(fields: &mut Map<String, Value>, object: &str) {
    // tracing-subscriber's JSON visitor wrote `object`, so it parses. Should it not (a field
    // formatter that failed midway leaves a partial object), its fields are left out and the
    // line is still written: losing the line, or the event, would be worse.
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

    /// A record of the `log` crate arrives as tracing-log makes it (target `log`, `log.*`
    /// fields) and is written with its own target and no `log.*` field.
    #[test]
    fn a_log_crate_record_keeps_its_own_target() {
        let lines = logged(|| {
            tracing_log::format_trace(
                &log::Record::builder()
                    .args(format_args!("sending ClientHello"))
                    .level(log::Level::Warn)
                    .target("rustls::client::hs")
                    .module_path_static(Some("rustls::client::hs"))
                    .file_static(Some("src/client/hs.rs"))
                    .line(Some(12))
                    .build(),
            )
            .unwrap();
        });
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["target"], "rustls::client::hs", "{line:?}");
        assert_eq!(line["level"], "WARN", "{line:?}");
        assert_eq!(line["message"], "sending ClientHello", "{line:?}");
        assert_eq!(line.len(), 4, "{line:?}");
    }

    #[test]
    fn the_fatal_error_line_is_a_log_line() {
        let text = error_line("data dir /d: not \"initialised\"\nat all");
        assert_eq!(text.lines().count(), 1, "{text}");
        let Ok(Value::Object(line)) = serde_json::from_str::<Value>(&text) else {
            panic!("{text}");
        };
        assert_eq!(line["level"], "ERROR");
        assert_eq!(line["target"], "coffer");
        assert_eq!(line["message"], "data dir /d: not \"initialised\"\nat all");
        assert!(
            coffer_types::Timestamp::parse_rfc3339(line["timestamp"].as_str().unwrap()).is_some()
        );
    }

    /// The test binary runs itself with `COFFER_TEST_PANIC` set, and that run panics under
    /// [`log_panics_as_json`]: with a message formatted from a value (`formatted`), which is
    /// left out, or a literal one (`literal`), which is kept.
    #[test]
    fn a_panic_is_one_json_line_without_a_formatted_message() {
        const SECRET: &str = "s3cret-in-a-panic";
        match std::env::var("COFFER_TEST_PANIC").as_deref() {
            Ok("formatted") => {
                log_panics_as_json();
                let value = String::from(SECRET);
                panic!("cannot parse {value}");
            }
            Ok("literal") => {
                log_panics_as_json();
                panic!("a literal message");
            }
            _ => {}
        }
        let name = concat!(
            module_path!(),
            "::a_panic_is_one_json_line_without_a_formatted_message"
        );
        let name = name.split_once("::").unwrap().1;
        for (mode, message) in [
            (
                "formatted",
                "panicked (its message is not logged in JSON: it may quote input)",
            ),
            ("literal", "panicked: a literal message"),
        ] {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--nocapture", "--test-threads=1"])
                .env("COFFER_TEST_PANIC", mode)
                .output()
                .unwrap();
            assert!(!out.status.success());
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                !stderr.contains(SECRET) && !stdout.contains(SECRET),
                "{stderr}{stdout}"
            );
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(lines.len(), 1, "one line, JSON: {stderr}");
            let Ok(Value::Object(line)) = serde_json::from_str::<Value>(lines[0]) else {
                panic!("not JSON: {stderr}");
            };
            assert_eq!(line["level"], "ERROR", "{line:?}");
            assert_eq!(line["target"], "coffer::panic", "{line:?}");
            assert_eq!(line["message"], message, "{line:?}");
            assert!(
                line["location"].as_str().unwrap().contains("json_log.rs:"),
                "{line:?}"
            );
        }
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
