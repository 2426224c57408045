//! Log setup: human text by default, one JSON object per line with `--log-format json`.
//!
//! Lines are written to stderr by a dedicated thread, not by the thread that logs: every
//! activation logs a line (the 12290 event), and a `write(2)` per line on a runtime worker cost
//! several µs per activation (docs/performance.md). The thread writes whatever has queued up in
//! one buffered write and flushes as soon as the queue is empty, so a line still appears at
//! once on an idle node. The queue is bounded and lossless: when it is full (stderr slower
//! than the node), loggers wait for room rather than drop events.

use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Lines that may wait for the writer thread.
const QUEUE_LINES: usize = 16 * 1024;

/// Install the global subscriber (once; later calls return a guard that flushes nothing new).
/// Keep the guard until the process ends: dropping it waits until every queued line is out.
pub fn init(format: LogFormat, filter: &str) -> LogGuard {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = QueuedStderr::start();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    guard
}

enum Msg {
    Line(Vec<u8>),
    /// Answer once everything queued before this message is written and flushed.
    Flush(SyncSender<()>),
}

/// A [`MakeWriter`] whose writers queue their bytes for the writer thread.
#[derive(Clone, Debug)]
struct QueuedStderr {
    tx: SyncSender<Msg>,
}

impl QueuedStderr {
    fn start() -> (QueuedStderr, LogGuard) {
        let (tx, rx) = sync_channel(QUEUE_LINES);
        let spawned = std::thread::Builder::new()
            .name("kmsd-log".into())
            .spawn(move || write_loop(rx, std::io::stderr()));
        if let Err(e) = spawned {
            // No thread: the receiver is gone and every line falls back to a direct write.
            eprintln!("kmsd: cannot start the log writer thread ({e}); writing logs directly");
        }
        (QueuedStderr { tx: tx.clone() }, LogGuard { tx: Some(tx) })
    }
}

fn write_loop(rx: Receiver<Msg>, out: impl Write) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let handle = |msg: Msg, out: &mut std::io::BufWriter<_>| match msg {
        Msg::Line(bytes) => {
            let _ = out.write_all(&bytes);
        }
        Msg::Flush(done) => {
            let _ = out.flush();
            let _ = done.send(());
        }
    };
    while let Ok(first) = rx.recv() {
        handle(first, &mut out);
        while let Ok(more) = rx.try_recv() {
            handle(more, &mut out);
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}

/// One event's bytes, queued when the formatter drops it.
#[derive(Debug)]
struct LineWriter {
    tx: SyncSender<Msg>,
    buf: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.buf);
        if let Err(std::sync::mpsc::SendError(Msg::Line(line))) = self.tx.send(Msg::Line(line)) {
            // The writer thread is gone: write it ourselves rather than lose it.
            let _ = std::io::stderr().write_all(&line);
        }
    }
}

impl<'a> MakeWriter<'a> for QueuedStderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            tx: self.tx.clone(),
            buf: Vec::with_capacity(512),
        }
    }
}

/// Flushes the log queue: [`LogGuard::flush`] on demand, and when dropped.
#[derive(Debug)]
pub struct LogGuard {
    tx: Option<SyncSender<Msg>>,
}

impl LogGuard {
    /// Wait (at most a few seconds) until every line logged so far is written to stderr.
    pub fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done_tx, done_rx) = sync_channel(1);
        if tx.send(Msg::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.flush();
        self.tx.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn queued_lines_come_out_in_order_and_flush_waits_for_them() {
        let sink = Sink::default();
        let (tx, rx) = sync_channel(4); // smaller than the line count: senders wait, none lost
        let out = sink.clone();
        let thread = std::thread::spawn(move || write_loop(rx, out));
        let writer = QueuedStderr { tx: tx.clone() };
        let guard = LogGuard { tx: Some(tx) };
        let senders: Vec<_> = (0..4)
            .map(|t| {
                let w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..250 {
                        let mut line = w.make_writer();
                        writeln!(line, "t{t} {i}").unwrap();
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        guard.flush();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1000);
        for t in 0..4 {
            let mine: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("t{t} ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(
                mine,
                (0..250).collect::<Vec<_>>(),
                "thread {t}'s lines in order"
            );
        }
        drop(guard);
        drop(writer);
        thread.join().unwrap();
    }
}
