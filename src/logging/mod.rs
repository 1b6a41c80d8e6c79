//! The log writer of the `rpcguard` command: standard error, in batches.
//!
//! Every call writes one log line (method, caller, outcome, latency). Written
//! straight to standard error, that is one `write` system call per call,
//! made on an async worker; through a channel to a writer thread (as
//! `tracing-appender` does), it is one wake-up of that thread per call.
//! Either cost more than a tenth of a call's CPU time in the benchmark.
//!
//! Here a formatted line is appended to one shared buffer under a short
//! lock, and the buffer goes to standard error with one `write` when it
//! reaches [`FLUSH_AT`] bytes or every [`FLUSH_EVERY`] (a flusher thread),
//! whichever comes first. Lines at `WARN` and `ERROR` are written at once,
//! after whatever is buffered, so the order of lines is kept and a warning
//! is never late. The price: an `INFO` line can reach the log up to
//! [`FLUSH_EVERY`] after its event, and a process killed with `SIGKILL`
//! loses at most that much of it; a normal exit (including `SIGTERM`)
//! writes everything (the guard returned by [`BatchedStderr::start`]).

mod call_lines;

pub use call_lines::{write_line, CallLines, LineFormat, CALL_TARGET};

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The buffer is written when it holds this many bytes.
pub const FLUSH_AT: usize = 32 * 1024;
/// ... and at least this often.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// A [`MakeWriter`] for `tracing_subscriber::fmt` that batches lines to
/// standard error (see the module documentation).
#[derive(Clone, Debug)]
pub struct BatchedStderr {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    buffer: Mutex<Vec<u8>>,
    stopping: Mutex<bool>,
    wake: Condvar,
}

/// Writes what is buffered and stops the flusher thread when dropped.
#[derive(Debug)]
#[must_use = "dropping the guard stops the flusher; keep it until exit"]
pub struct FlushGuard {
    shared: Arc<Shared>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

impl BatchedStderr {
    /// The writer, and the guard that flushes it at the end.
    pub fn start() -> (Self, FlushGuard) {
        let shared = Arc::new(Shared::default());
        let flusher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("rpcguard-log".to_owned())
                .spawn(move || shared.flush_periodically())
                .ok()
        };
        (
            BatchedStderr {
                shared: shared.clone(),
            },
            FlushGuard { shared, flusher },
        )
    }
}

impl BatchedStderr {
    /// Writes `text` and a newline to standard error now, after every line
    /// buffered before it (the order of lines is kept): for the plain lines
    /// the command prints for people and scripts (where it listens, an
    /// error that stops it).
    pub fn say(&self, text: &str) {
        let mut buffer = self.shared.lock();
        buffer.extend_from_slice(text.as_bytes());
        buffer.push(b'\n');
        write_out(&mut buffer);
    }

    /// Appends a whole line (with its newline); written at once with what
    /// is buffered when `urgent`.
    pub fn append(&self, line: &[u8], urgent: bool) {
        self.shared.append(line, urgent);
    }
}

impl Shared {
    fn append(&self, bytes: &[u8], urgent: bool) {
        let mut buffer = self.lock();
        buffer.extend_from_slice(bytes);
        if urgent || buffer.len() >= FLUSH_AT {
            write_out(&mut buffer);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic while holding the lock leaves at worst a partial line.
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn flush_periodically(&self) {
        let mut stopping = self.stopping.lock().unwrap_or_else(|e| e.into_inner());
        while !*stopping {
            stopping = match self.wake.wait_timeout(stopping, FLUSH_EVERY) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
            write_out(&mut self.lock());
        }
    }
}

/// Writes `buffer` to standard error and empties it. A failed write (a
/// closed pipe) drops the lines: logging must never stop the server.
fn write_out(buffer: &mut Vec<u8>) {
    if !buffer.is_empty() {
        let _ = std::io::stderr().lock().write_all(buffer);
        buffer.clear();
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        *self
            .shared
            .stopping
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.wake.notify_all();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        write_out(&mut self.shared.lock());
    }
}

/// One line on its way to the buffer.
#[derive(Debug)]
pub struct Line<'a> {
    shared: &'a Shared,
    urgent: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.shared.append(bytes, self.urgent);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            shared: &self.shared,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line<'a> {
        Line {
            shared: &self.shared,
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_in_the_buffer_until_it_is_full_or_urgent() {
        // No flusher thread: only size and urgency write.
        let writer = BatchedStderr {
            shared: Arc::new(Shared::default()),
        };
        let mut line = writer.make_writer();
        line.write_all(b"one info line\n").expect("write");
        assert_eq!(writer.shared.lock().len(), 14, "kept");
        let mut urgent = Line {
            shared: &writer.shared,
            urgent: true,
        };
        urgent.write_all(b"a warning\n").expect("write");
        assert!(writer.shared.lock().is_empty(), "written with the warning");
        let big = vec![b'x'; FLUSH_AT];
        line.write_all(&big).expect("write");
        assert!(writer.shared.lock().is_empty(), "written when full");
    }

    #[test]
    fn the_flusher_writes_within_its_period_and_the_guard_at_the_end() {
        let (writer, guard) = BatchedStderr::start();
        writer
            .make_writer()
            .write_all(b"rpcguard logging test line\n")
            .expect("write");
        let started = std::time::Instant::now();
        while !guard.shared.lock().is_empty() {
            assert!(started.elapsed() < Duration::from_secs(10), "never flushed");
            std::thread::sleep(Duration::from_millis(5));
        }
        writer
            .make_writer()
            .write_all(b"rpcguard logging test line 2\n")
            .expect("write");
        let shared = guard.shared.clone();
        drop(guard);
        assert!(shared.lock().is_empty(), "flushed at the end");
    }
}
