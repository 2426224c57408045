//! Log setup: human text by default, one JSON object per line with `--log-format json`.
//!
//! Lines are collected in memory and written to stderr by a dedicated thread, not by the
//! thread that logs: every activation logs a line (the 12290 event), and a `write(2)` per line
//! on a runtime worker cost several µs per activation (docs/performance.md). A logger only
//! appends to a shared buffer; the first line into an empty buffer wakes the writer, which lets
//! lines gather for [`LINGER`] and then writes them all in one go, so a busy node makes a few
//! hundred writes a second and an idle one none. Nothing is dropped: a logger that finds the
//! buffer past [`MAX_BUFFERED`] (stderr slower than the node) writes it out itself and waits.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;
use crate::json_log::JsonEvent;
use crate::text_log::{TextEvent, TextFields};

/// How long the writer lets lines gather after the first one arrives.
const LINGER: Duration = Duration::from_millis(2);
/// Bytes past which a logger writes the buffer out itself.
const MAX_BUFFERED: usize = 4 << 20;

/// The levels a `--log-level` directive may name.
pub const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// The filter the subscriber is built with, from the operator's `--log-level`. The one place
/// where kmsd adds directives of its own.
fn effective_filter(user: &str) -> String {
    // openraft logs every failed heartbeat and replication attempt to an unreachable peer
    // (several a second for as long as the peer stays down); kmsd logs the outage itself, once
    // when it starts and once when it ends (events 40040/40041). Keep openraft's errors from
    // those modules — unless the operator names one of them, or asks openraft (or everything)
    // for debug or trace output.
    // (`openraft::core::raft_core` warns once per peer and attempt for votes, pre-votes and
    // leader transfers that could not be sent: two lines a second from a node cut off.)
    const RETRY_NOISE: [&str; 4] = [
        "openraft::core::heartbeat",
        "openraft::core::raft_core",
        "openraft::replication",
        "openraft::engine::handler::replication_handler",
    ];
    let directives: Vec<(&str, &str)> = user
        .split(',')
        .map(|d| {
            let d = d.trim();
            match d.rsplit_once('=') {
                Some((target, level)) => (target.split('[').next().unwrap_or(target), level),
                None => ("", d),
            }
        })
        .collect();
    let debugging = directives.iter().any(|(target, level)| {
        matches!(*target, "" | "openraft") && matches!(*level, "debug" | "trace")
    });
    if debugging {
        return user.to_string();
    }
    let names = |target: &str| directives.iter().any(|(t, _)| *t == target);
    let mut filter = user.to_string();
    for target in RETRY_NOISE.iter().filter(|t| !names(t)) {
        filter.push_str(&format!(",{target}=error"));
    }
    filter
}

#[cfg(test)]
mod effective_filter_tests {
    use super::effective_filter;

    #[test]
    fn retry_noise_is_quieted_unless_the_operator_asks_for_it() {
        let f = effective_filter("info,openraft=warn");
        assert!(f.starts_with("info,openraft=warn,"), "{f}");
        assert!(f.contains("openraft::core::heartbeat=error"), "{f}");
        assert!(f.contains("openraft::replication=error"), "{f}");
        assert_eq!(
            effective_filter("info,openraft=debug"),
            "info,openraft=debug"
        );
        assert_eq!(effective_filter("trace"), "trace");
        let f = effective_filter("info,openraft::replication=warn");
        assert!(!f.contains("openraft::replication=error"), "{f}");
        assert!(f.contains("openraft::core::heartbeat=error"), "{f}");
    }
}

/// The `EnvFilter` builder for `--log-level`: span field values (`kms_host[conn{peer=1}]`) are
/// matched literally, not as regular expressions. tracing-subscriber compiles a regex field
/// value into a DFA, and a 45-byte filter (`kmsd[conn{peer=..........n.............}]=off`,
/// found by the `config_parsers` fuzz target) took 14 s and hundreds of MB to check, larger
/// ones minutes and gigabytes, before the node started.
fn filter_builder() -> tracing_subscriber::filter::Builder {
    EnvFilter::builder().with_regex(false)
}

/// Check a `--log-level` filter strictly: every comma-separated directive is a level
/// (`info`) or `TARGET=LEVEL` (`openraft=warn`, spans allowed: `kms_host[conn]=debug`, field
/// values compared literally), with a level among [`LEVELS`], and the whole parses as a tracing
/// `EnvFilter`. A misspelt level would otherwise be taken for a target name and silence the
/// log. Returns the filter with the blanks around directives removed (`warn, kmsd=debug` →
/// `warn,kmsd=debug`).
pub fn check_filter(filter: &str) -> Result<String, String> {
    let valid = LEVELS.join(", ");
    let directives: Vec<&str> = filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Err(format!(
            "empty filter: give a level ({valid}), optionally per target, e.g. \
             \"info,openraft=warn\""
        ));
    }
    for &d in &directives {
        // The level follows the last `=` after any span part (`target[span{f=v}]=level`).
        let tail_start = d.rfind(']').map_or(0, |i| i + 1);
        let level = match d[tail_start..].rsplit_once('=') {
            Some((_, level)) => level,
            None if tail_start == 0 => d,
            None => {
                return Err(format!(
                    "'{d}' gives no level: write '{d}=LEVEL' with LEVEL one of {valid}"
                ));
            }
        };
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level.trim())) {
            return Err(format!(
                "'{}' in '{d}' is not a log level: use one of {valid}, optionally per target \
                 (e.g. \"info,openraft=warn\")",
                level.trim()
            ));
        }
    }
    let filter = directives.join(",");
    filter_builder()
        .parse(effective_filter(&filter))
        .map(|_| filter.clone())
        .map_err(|e| format!("'{filter}': {e} (levels: {valid})"))
}

/// Install the global subscriber (once; later calls return a guard that flushes nothing new).
/// Keep the guard until the process ends: dropping it writes out every buffered line.
/// `filter` is the `--log-level` checked by [`check_filter`].
pub fn init(format: LogFormat, filter: &str) -> LogGuard {
    let filter = filter_builder()
        .parse(effective_filter(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = Buffered::start(Box::new(std::io::stderr()));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder
            .fmt_fields(TextFields)
            .event_format(TextEvent::new(ansi))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .event_format(JsonEvent::default())
            .try_init(),
    };
    guard
}

type Sink = Box<dyn Write + Send>;

struct Inner {
    /// Lines not yet written.
    buf: Mutex<Vec<u8>>,
    /// Signalled when `buf` turns non-empty.
    ready: Condvar,
    /// The output. Held while a taken buffer is written, and taken before `buf`, so chunks
    /// reach the output in the order they were taken.
    out: Mutex<Sink>,
    /// No writer thread could be started: loggers write their lines themselves.
    direct: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a log lock leaves plain bytes behind: keep logging.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    /// Write out everything buffered so far.
    fn drain(&self) {
        let mut out = lock(&self.out);
        let chunk = std::mem::take(&mut *lock(&self.buf));
        if !chunk.is_empty() {
            let _ = out.write_all(&chunk);
            let _ = out.flush();
        }
    }

    fn write_loop(&self) {
        loop {
            {
                let mut buf = lock(&self.buf);
                while buf.is_empty() {
                    buf = self.ready.wait(buf).unwrap_or_else(PoisonError::into_inner);
                }
            }
            std::thread::sleep(LINGER);
            self.drain();
        }
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inner { .. }")
    }
}

/// A [`MakeWriter`] whose writers append to the shared buffer.
#[derive(Clone, Debug)]
struct Buffered {
    inner: Arc<Inner>,
}

impl Buffered {
    fn start(out: Sink) -> (Buffered, LogGuard) {
        let inner = Arc::new(Inner {
            buf: Mutex::new(Vec::with_capacity(64 * 1024)),
            ready: Condvar::new(),
            out: Mutex::new(out),
            direct: AtomicBool::new(false),
        });
        let for_thread = inner.clone();
        let spawned = std::thread::Builder::new()
            .name("kmsd-log".into())
            .spawn(move || for_thread.write_loop());
        if let Err(e) = spawned {
            // No writer thread: every line is written by its logger (see LineWriter's drop).
            eprintln!("kmsd: cannot start the log writer thread ({e}); writing logs directly");
            inner.direct.store(true, Ordering::Relaxed);
        }
        (
            Buffered {
                inner: inner.clone(),
            },
            LogGuard { inner },
        )
    }
}

/// One event, appended to the shared buffer as the formatter writes it. The buffer stays
/// locked while the event is formatted, so a field whose `Display`/`Debug` itself logged would
/// wait on itself; kmsd's event fields are plain values and strings.
#[derive(Debug)]
struct LineWriter<'a> {
    inner: &'a Inner,
    /// Held while the event is formatted; released first thing in `drop`.
    buf: Option<MutexGuard<'a, Vec<u8>>>,
    was_empty: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Some(buf) = self.buf.as_mut() {
            buf.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter<'_> {
    fn drop(&mut self) {
        let Some(buf) = self.buf.take() else { return };
        let len = buf.len();
        drop(buf);
        if len >= MAX_BUFFERED || self.inner.direct.load(Ordering::Relaxed) {
            self.inner.drain();
        } else if self.was_empty && len > 0 {
            self.inner.ready.notify_one();
        }
    }
}

impl<'a> MakeWriter<'a> for Buffered {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        let buf = lock(&self.inner.buf);
        LineWriter {
            inner: &self.inner,
            was_empty: buf.is_empty(),
            buf: Some(buf),
        }
    }
}

/// Writes out the log buffer: [`LogGuard::flush`] on demand, and when dropped.
#[derive(Debug)]
pub struct LogGuard {
    inner: Arc<Inner>,
}

impl LogGuard {
    /// Write every line logged so far to stderr.
    pub fn flush(&self) {
        self.inner.drain();
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Test support shared by the log modules: an output that keeps what is written, and what a
/// subscriber with given formatters writes there.
#[cfg(test)]
pub(crate) mod capture {
    use super::*;
    use tracing_subscriber::fmt::{FormatEvent, FormatFields};

    /// Keeps every byte written to it (clones share the bytes).
    #[derive(Clone, Default)]
    pub(crate) struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        /// Everything written so far.
        pub(crate) fn text(&self) -> String {
            String::from_utf8(lock(&self.0).clone()).unwrap()
        }
    }

    /// What `f` logs through a subscriber (colours off) with these field and event formatters.
    pub(crate) fn logged<N, E>(fields: N, event: E, f: impl FnOnce()) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
        E: FormatEvent<tracing_subscriber::Registry, N> + Send + Sync + 'static,
    {
        let capture = Capture::default();
        let sink = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .fmt_fields(fields)
            .event_format(event)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        capture.text()
    }
}

#[cfg(test)]
mod tests {
    use super::capture::Capture;
    use super::*;

    /// Found by the `config_parsers` fuzz target: with regex field values this took 14 s (and
    /// longer variants minutes and gigabytes) in tracing-subscriber's DFA construction.
    #[test]
    fn span_field_values_are_not_compiled_as_regexes() {
        let start = std::time::Instant::now();
        let slow = "kmsd[conn{peer=..........n.............}]=off";
        assert_eq!(check_filter(slow).as_deref(), Ok(slow));
        let _ = check_filter(&format!(
            "kmsd[conn{{peer={}n{}}}]=off",
            ".".repeat(40),
            ".".repeat(40)
        ));
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn log_filters_are_checked_strictly() {
        for good in [
            "info",
            "INFO",
            "info,openraft=warn",
            "warn, kmsd=debug",
            "off",
            "error,kms_host=trace,openraft=off",
            "kms_host[conn]=debug",
            "kms_host[conn{peer=1}]=info",
        ] {
            assert!(
                check_filter(good).is_ok(),
                "{good}: {:?}",
                check_filter(good)
            );
        }
        for bad in [
            "inf0",
            "",
            " , ",
            "info,openraft=wrn",
            "openraft=",
            "verbose",
            "kms_host[conn]",
            "3",
        ] {
            let err = check_filter(bad).unwrap_err();
            assert!(
                err.contains("trace, debug, info, warn, error, off"),
                "{bad:?}: {err}"
            );
        }
        assert_eq!(
            check_filter(" warn, kmsd=debug ,").unwrap(),
            "warn,kmsd=debug"
        );
    }

    #[test]
    fn lines_from_many_threads_come_out_whole_in_order_and_flush_writes_them() {
        let capture = Capture::default();
        let (writer, guard) = Buffered::start(Box::new(capture.clone()));
        let senders: Vec<_> = (0..4)
            .map(|t| {
                let w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..2500 {
                        let mut line = w.make_writer();
                        write!(line, "t{t} ").unwrap();
                        writeln!(line, "{i}").unwrap();
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        guard.flush();
        let text = capture.text();
        assert_eq!(text.lines().count(), 10_000);
        for t in 0..4 {
            let mine: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("t{t} ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(
                mine,
                (0..2500).collect::<Vec<_>>(),
                "thread {t}'s lines in order"
            );
        }
    }

    #[test]
    fn the_writer_thread_writes_a_lone_line_without_a_flush() {
        let capture = Capture::default();
        let (writer, _guard) = Buffered::start(Box::new(capture.clone()));
        writeln!(writer.make_writer(), "kmsd serving").unwrap();
        let start = std::time::Instant::now();
        while !capture.text().contains("kmsd serving") {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "line never written"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_full_buffer_is_written_by_the_logger() {
        let capture = Capture::default();
        let (writer, _guard) = Buffered::start(Box::new(capture.clone()));
        let big = "x".repeat(MAX_BUFFERED);
        writeln!(writer.make_writer(), "{big}").unwrap();
        // Written out by the logger itself, within its own call: no wait for the writer thread.
        assert_eq!(capture.text().len(), MAX_BUFFERED + 1);
    }
}
