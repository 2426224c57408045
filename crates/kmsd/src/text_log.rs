//! The text log: `2026-12-06T15:33:32.662627Z  INFO message key=value key="text" …`.
//!
//! The layout is tracing-subscriber's default one ([`Format<Full>`] without the target),
//! written without its per-field styling and `core::fmt` passes (which cost about a tenth of a
//! kept-alive renewal's CPU even with colours off: every activation logs one line of 19
//! fields). When colours are on (stderr is a terminal), and for events forwarded from the
//! `log` crate, the default formatter writes the line instead. Two differences from it, both
//! on purpose:
//!
//! * every value has its control characters escaped (`\n`, `\r`, `\t`, `\u{1b}` …), not only
//!   the message: a value such as a client's workstation name is untrusted text, and a newline
//!   in it must not start a line that looks like another log event;
//! * integers and the timestamp are written without `core::fmt`.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The text log's [`FormatEvent`] (see the module doc).
#[derive(Debug)]
pub struct TextEvent {
    ansi: bool,
    fallback: Format<Full>,
}

impl TextEvent {
    /// The formatter; `ansi` when the output is a terminal that shows colours.
    pub fn new(ansi: bool) -> TextEvent {
        TextEvent {
            ansi,
            fallback: Format::default().with_target(false).with_ansi(ansi),
        }
    }
}

impl<S, N> FormatEvent<S, N> for TextEvent
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        // `log` records carry their real level and target in fields the fallback decodes.
        if self.ansi || meta.fields().field("log.target").is_some() {
            return self.fallback.format_event(ctx, writer, event);
        }
        write_timestamp(&mut writer, std::time::SystemTime::now())?;
        writer.write_str(match *meta.level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        })?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                seen = true;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    writer.write_char('{')?;
                    writer.write_str(fields)?;
                    writer.write_char('}')?;
                }
                writer.write_char(':')?;
            }
            if seen {
                writer.write_char(' ')?;
            }
        }
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

/// `2026-12-06T15:33:32.662627Z` (UTC, microseconds), as tracing-subscriber writes it.
pub(crate) fn write_timestamp(w: &mut impl fmt::Write, now: std::time::SystemTime) -> fmt::Result {
    let d = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = crate::http::civil_from_days(days);
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y.clamp(0, 9999) as u64);
    put(5, 2, u64::from(m));
    put(8, 2, u64::from(day));
    put(11, 2, (rem / 3600) as u64);
    put(14, 2, (rem % 3600 / 60) as u64);
    put(17, 2, (rem % 60) as u64);
    put(20, 6, u64::from(d.subsec_micros()));
    // Only ASCII digits and separators were written.
    w.write_str(std::str::from_utf8(&b).map_err(|_| fmt::Error)?)
}

/// The text log's [`FormatFields`] (see the module doc).
#[derive(Debug, Default, Clone, Copy)]
pub struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = TextVisitor {
            out: writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'w> {
    out: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl TextVisitor<'_> {
    /// Writes the separator and `name=` (nothing for the message); `None` when the field is
    /// skipped (log-crate metadata, which the event's header already shows) or a write failed.
    fn start(&mut self, field: &Field) -> Option<()> {
        if self.result.is_err() {
            return None;
        }
        let name = field.name();
        if name.starts_with("log.") {
            return None;
        }
        let r = (|| {
            if !self.first {
                self.out.write_char(' ')?;
            }
            if name != "message" {
                self.out
                    .write_str(name.strip_prefix("r#").unwrap_or(name))?;
                self.out.write_char('=')?;
            }
            Ok(())
        })();
        self.first = false;
        self.result = r;
        r.ok()
    }
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.start(field).is_none() {
            return;
        }
        self.result = if field.name() == "message" {
            write_escaped(&mut self.out, value)
        } else {
            write_quoted(&mut self.out, value)
        };
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field).is_some() {
            self.result = self.out.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field).is_some() {
            self.result = self.out.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field).is_some() {
            self.result = self.out.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.start(field).is_none() {
            return;
        }
        let mut out = Escaping::new(&mut self.out, write_escaped);
        let mut r = write!(out, "{value}");
        let mut source = value.source();
        if source.is_some() {
            r = r.and_then(|()| write!(out, " {}.sources=[", field.name()));
            let mut first = true;
            while let Some(s) = source {
                if !first {
                    r = r.and_then(|()| out.write_str(", "));
                }
                first = false;
                r = r.and_then(|()| write!(out, "{s}"));
                source = s.source();
            }
            r = r.and_then(|()| out.write_char(']'));
        }
        self.result = r;
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.start(field).is_some() {
            self.result = write!(Escaping::new(&mut self.out, write_escaped), "{value:?}");
        }
    }
}

/// The escape of a character that must not appear raw in a log line, if it is one.
fn escape(c: char) -> Option<EscapedChar> {
    match c {
        '\n' => Some(EscapedChar::Short('n')),
        '\r' => Some(EscapedChar::Short('r')),
        '\t' => Some(EscapedChar::Short('t')),
        c if c.is_control() => Some(EscapedChar::Unicode(c as u32)),
        _ => None,
    }
}

enum EscapedChar {
    Short(char),
    Unicode(u32),
}

impl fmt::Display for EscapedChar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EscapedChar::Short(c) => write!(f, "\\{c}"),
            EscapedChar::Unicode(u) => write!(f, "\\u{{{u:x}}}"),
        }
    }
}

/// Whether `s` may hold a control character: a byte below 0x20, DEL, or the lead byte of
/// U+0080–U+00BF (which holds the C1 controls). One pass over the bytes, so a clean value is
/// written as it is.
fn may_need_escaping(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2)
}

/// `s` with control characters escaped; the clean runs in between are written in one piece.
fn write_escaped(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    if !may_need_escaping(s) {
        return out.write_str(s);
    }
    let mut clean_from = 0;
    for (i, c) in s.char_indices() {
        if let Some(e) = escape(c) {
            out.write_str(&s[clean_from..i])?;
            write!(out, "{e}")?;
            clean_from = i + c.len_utf8();
        }
    }
    out.write_str(&s[clean_from..])
}

/// `s` in double quotes, with `"` and `\` escaped as well as control characters (the form
/// tracing-subscriber gives text values).
fn write_quoted(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    if !may_need_escaping(s) && !s.bytes().any(|b| b == b'"' || b == b'\\') {
        out.write_str(s)?;
        return out.write_char('"');
    }
    let mut clean_from = 0;
    for (i, c) in s.char_indices() {
        let escaped = escape(c);
        if escaped.is_none() && !matches!(c, '"' | '\\') {
            continue;
        }
        out.write_str(&s[clean_from..i])?;
        match escaped {
            Some(e) => write!(out, "{e}")?,
            None => {
                out.write_char('\\')?;
                out.write_char(c)?;
            }
        }
        clean_from = i + c.len_utf8();
    }
    out.write_str(&s[clean_from..])?;
    out.write_char('"')
}

/// A writer that passes everything written through it to `escape` (the text log's
/// [`write_escaped`], the JSON log's string escaping), for values formatted with `core::fmt`.
pub(crate) struct Escaping<'a, W: fmt::Write> {
    out: &'a mut W,
    escape: fn(&mut W, &str) -> fmt::Result,
}

impl<'a, W: fmt::Write> Escaping<'a, W> {
    pub(crate) fn new(out: &'a mut W, escape: fn(&mut W, &str) -> fmt::Result) -> Self {
        Escaping { out, escape }
    }
}

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        (self.escape)(self.out, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::capture::logged;

    /// The line `f` logs, through a text subscriber with [`TextFields`] (no time, no level).
    fn line(f: impl FnOnce()) -> String {
        let format = Format::default()
            .without_time()
            .with_level(false)
            .with_target(false)
            .with_ansi(false);
        logged(TextFields, format, f)
    }

    #[derive(Debug)]
    struct Outer(Inner);
    #[derive(Debug)]
    struct Inner;
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer failed")
        }
    }
    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("inner\ncause")
        }
    }
    impl std::error::Error for Inner {}
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn same_layout_as_the_default_formatter() {
        let ws = "DESKTOP-1";
        let got = line(|| {
            tracing::info!(
                event_id = 12290u32,
                delta = -3i64,
                hresult = format_args!("0x{:08X}", 0xC004_F042u32),
                syntax = "ndr64",
                workstation = %ws,
                is_vm = false,
                r#type = "x",
                "activation request processed"
            )
        });
        assert_eq!(
            got,
            "activation request processed event_id=12290 delta=-3 hresult=0xC004F042 \
             syntax=\"ndr64\" workstation=DESKTOP-1 is_vm=false type=\"x\"\n"
        );
    }

    #[test]
    fn event_lines_match_the_default_format_with_spans_and_levels() {
        let log = || {
            let outer = tracing::info_span!("raft", node = 2u64);
            let _o = outer.enter();
            let inner = tracing::info_span!("append", term = "t3");
            let _i = inner.enter();
            tracing::warn!(peer = 3u64, "lagging");
            tracing::error!("gone");
        };
        let ours = logged(TextFields, TextEvent::new(false), log);
        let default = logged(
            TextFields,
            Format::default().with_target(false).with_ansi(false),
            log,
        );
        // Equal after each line's timestamp (27 characters), which differs by the microsecond.
        let strip = |s: &str| -> Vec<String> { s.lines().map(|l| l[27..].to_string()).collect() };
        assert_eq!(strip(&ours), strip(&default));
        assert_eq!(
            strip(&ours),
            [
                "  WARN raft{node=2}:append{term=\"t3\"}: lagging peer=3",
                " ERROR raft{node=2}:append{term=\"t3\"}: gone"
            ]
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let at = |secs: u64, micros: u32| {
            let mut s = String::new();
            let t = std::time::UNIX_EPOCH + std::time::Duration::new(secs, micros * 1000);
            write_timestamp(&mut s, t).unwrap();
            s
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(1_796_571_212, 662_627), "2026-12-06T15:33:32.662627Z");
        assert_eq!(at(951_782_399, 999_999), "2000-02-28T23:59:59.999999Z");
        assert_eq!(at(951_868_800, 1), "2000-03-01T00:00:00.000001Z");
    }

    #[test]
    fn untrusted_text_cannot_start_another_line() {
        let evil = "PC\nINFO activation request processed event_id=12290\r\u{1b}[31m\"q\\";
        let got = line(|| tracing::info!(shown = %evil, quoted = evil, "m\nx"));
        assert_eq!(got.lines().count(), 1, "{got:?}");
        assert_eq!(
            got,
            "m\\nx shown=PC\\nINFO activation request processed event_id=12290\\r\\u{1b}[31m\"q\\ \
             quoted=\"PC\\nINFO activation request processed event_id=12290\\r\\u{1b}[31m\\\"q\\\\\"\n"
        );
    }

    #[test]
    fn c1_controls_are_escaped_and_other_text_is_kept() {
        let ws = "caf\u{e9}\u{85}\u{a1}\u{9f}\u{7f}";
        let got = line(|| tracing::info!(shown = %ws, quoted = ws, "m"));
        assert_eq!(
            got,
            "m shown=caf\u{e9}\\u{85}\u{a1}\\u{9f}\\u{7f} quoted=\"caf\u{e9}\\u{85}\u{a1}\\u{9f}\\u{7f}\"\n"
        );
    }

    #[test]
    fn errors_show_their_sources_on_the_same_line() {
        let e = Outer(Inner);
        let err: &(dyn std::error::Error + 'static) = &e;
        let got = line(|| tracing::warn!(error = err, "write failed"));
        assert_eq!(
            got,
            "write failed error=outer failed error.sources=[inner\\ncause]\n"
        );
    }
}
