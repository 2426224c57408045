//! The JSON log (`--log-format json`, the container image's default): one object per line,
//! `{"timestamp":"…","level":"INFO","message":"…","key":value,…}`.
//!
//! The same object tracing-subscriber's JSON formatter writes with `flatten_event(true)` and
//! no target, written directly instead of through serde's map serializer (which cost about a
//! fifth of a kept-alive renewal's CPU: every activation logs one 19-field event). Events
//! inside a span, and events forwarded from the `log` crate, are written by tracing-subscriber's
//! formatter itself (they carry span lists and log metadata this writer does not reproduce).
//! Values are escaped as JSON requires (`"`, `\` and control characters).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent};
use tracing_subscriber::registry::LookupSpan;

use crate::text_log::{Escaping, write_timestamp};

/// The JSON log's [`FormatEvent`] (see the module doc). Use it with [`JsonFields`].
#[derive(Debug)]
pub struct JsonEvent {
    fallback: Format<Json>,
}

impl Default for JsonEvent {
    fn default() -> JsonEvent {
        JsonEvent {
            fallback: tracing_json(),
        }
    }
}

/// tracing-subscriber's own JSON formatter as kmsd configures it: fields at the top level, no
/// target.
fn tracing_json() -> Format<Json> {
    Format::default()
        .json()
        .flatten_event(true)
        .with_target(false)
}

impl<S> FormatEvent<S, JsonFields> for JsonEvent
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if ctx.event_scope().is_some() || meta.fields().field("log.target").is_some() {
            return self.fallback.format_event(ctx, writer, event);
        }
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer, std::time::SystemTime::now())?;
        writer.write_str(match *meta.level() {
            Level::TRACE => "\",\"level\":\"TRACE\"",
            Level::DEBUG => "\",\"level\":\"DEBUG\"",
            Level::INFO => "\",\"level\":\"INFO\"",
            Level::WARN => "\",\"level\":\"WARN\"",
            Level::ERROR => "\",\"level\":\"ERROR\"",
        })?;
        let mut visitor = JsonVisitor {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut visitor);
        visitor.result?;
        writer.write_str("}\n")
    }
}

/// Writes `,"name":value` for every field.
struct JsonVisitor<'a, 'w> {
    out: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl JsonVisitor<'_, '_> {
    fn key(&mut self, field: &Field) -> Option<()> {
        if self.result.is_err() {
            return None;
        }
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = self
            .out
            .write_char(',')
            .and_then(|()| write_json_string(self.out, name))
            .and_then(|()| self.out.write_char(':'));
        self.result.ok()
    }
}

impl Visit for JsonVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field).is_some() {
            self.result = write_json_string(self.out, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field).is_some() {
            self.result = self.out.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field).is_some() {
            self.result = self.out.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field).is_some() {
            self.result = self.out.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field).is_some() {
            // serde_json writes non-finite numbers as null; `{:?}` keeps the ".0" it keeps.
            self.result = if value.is_finite() {
                write!(self.out, "{value:?}")
            } else {
                self.out.write_str("null")
            };
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.key(field).is_some() {
            self.result = self
                .out
                .write_char('"')
                .and_then(|()| {
                    write!(
                        Escaping::new(&mut *self.out, write_json_escaped),
                        "{value:?}"
                    )
                })
                .and_then(|()| self.out.write_char('"'));
        }
    }
}

/// `s` as a JSON string literal.
fn write_json_string(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    write_json_escaped(out, s)?;
    out.write_char('"')
}

/// `s` with what JSON requires escaped: `"`, `\` and U+0000–U+001F.
fn write_json_escaped(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    let needs = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    if !s.bytes().any(needs) {
        return out.write_str(s);
    }
    let mut clean_from = 0;
    for (i, b) in s.bytes().enumerate() {
        if !needs(b) {
            continue;
        }
        // `b` is ASCII, so `i` and `i + 1` are character boundaries.
        out.write_str(&s[clean_from..i])?;
        match b {
            b'"' => out.write_str("\\\"")?,
            b'\\' => out.write_str("\\\\")?,
            b'\n' => out.write_str("\\n")?,
            b'\r' => out.write_str("\\r")?,
            b'\t' => out.write_str("\\t")?,
            0x08 => out.write_str("\\b")?,
            0x0c => out.write_str("\\f")?,
            _ => write!(out, "\\u{b:04x}")?,
        }
        clean_from = i + 1;
    }
    out.write_str(&s[clean_from..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::capture::logged;

    /// The objects `f` logs with `event`, one per line.
    fn lines<E>(event: E, f: impl Fn()) -> Vec<serde_json::Value>
    where
        E: FormatEvent<tracing_subscriber::Registry, JsonFields> + Send + Sync + 'static,
    {
        let text = logged(JsonFields::new(), event, f);
        assert!(text.ends_with('\n'));
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Both formatters' objects, without the timestamps (they differ by the microsecond).
    fn both(f: impl Fn()) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
        let strip = |mut v: Vec<serde_json::Value>| {
            for o in &mut v {
                let ts = o.as_object_mut().unwrap().remove("timestamp").unwrap();
                assert_eq!(ts.as_str().unwrap().len(), 27, "{ts}");
            }
            v
        };
        let ours = strip(lines(JsonEvent::default(), &f));
        let default = strip(lines(tracing_json(), &f));
        (ours, default)
    }

    #[test]
    fn same_objects_as_tracing_subscriber() {
        let evil = "PC\n\"x\"\\\u{1}\u{1b}é";
        let e = std::io::Error::other("disk \"full\"");
        let err: &(dyn std::error::Error + 'static) = &e;
        let (ours, default) = both(|| {
            tracing::info!(
                event_id = 12290u32,
                delta = -3i64,
                ratio = 0.25f64,
                whole = 2.0f64,
                nan = f64::NAN,
                hresult = format_args!("0x{:08X}", 0xC004_F042u32),
                workstation = evil,
                shown = %evil,
                debugged = ?Some(evil),
                is_vm = false,
                error = err,
                r#type = "x",
                "activation request processed"
            );
            tracing::warn!("plain {}", 5);
            let span = tracing::info_span!("raft", node = 2u64);
            let _in = span.enter();
            tracing::error!(peer = 3u64, "in a span");
        });
        assert_eq!(ours, default);
        assert_eq!(ours.len(), 3);
        assert_eq!(ours[0]["workstation"], evil);
        assert_eq!(ours[0]["level"], "INFO");
        assert_eq!(ours[2]["span"]["name"], "raft");
    }

    /// The raw line, not only the object: the same keys in the same order.
    #[test]
    fn same_text_as_tracing_subscriber_after_the_timestamp() {
        let log = || {
            tracing::info!(
                event_id = 12290u32,
                hresult = format_args!("0x{:08X}", 0u32),
                workstation = "PC-1",
                cmid = %kms_wire::Guid([7; 16]),
                degraded = false,
                micros = 12u64,
                "activation request processed"
            )
        };
        // {"timestamp":"2026-12-06T15:33:32.662627Z", is 43 characters.
        let after_timestamp = |text: String| text[43..].to_string();
        let ours = after_timestamp(logged(JsonFields::new(), JsonEvent::default(), log));
        let default = after_timestamp(logged(JsonFields::new(), tracing_json(), log));
        assert_eq!(ours, default);
        assert!(ours.starts_with(
            "\"level\":\"INFO\",\"message\":\"activation request processed\",\"event_id\":12290,"
        ));
    }

    #[test]
    fn every_line_is_one_object_whatever_the_values() {
        let all_controls: String = (0u8..0x20).map(char::from).collect();
        let (ours, default) = both(
            || tracing::info!(a = all_controls.as_str(), b = %all_controls, "m{}", all_controls),
        );
        assert_eq!(ours, default);
        assert_eq!(ours[0]["a"], all_controls.as_str());
    }
}
