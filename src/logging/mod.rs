//! The log writer of the `rpcguard` command: standard error, in batches.
//!
//! Every call writes one log line (method, caller, outcome, latency). Written
//! straight to standard error, that is one `write` system call per call,
//! made on an async worker; through a channel to a writer thread (as
//! `tracing-appender` does), it is one wake-up of that thread per call.
//! Either cost more than a tenth of a call's CPU time in the benchmark.
//! One buffer shared by every thread costs less, but the two cores then
//! pass its lock and its bytes back and forth on every line, and a thread
//! that fills it writes it while the other waits for the lock.
//!
//! So each thread appends its lines to a buffer of its own, under a lock
//! that only a flush contends, each line stamped by the monotonic clock as
//! it is logged (a call line's timestamp comes from the same reading). A
//! flush reads the clock first (its *fence*), then takes every thread's
//! buffer and writes, in one `write`, the lines stamped before the fence,
//! merged in the order of their stamps; a line stamped after the fence
//! waits for the next flush. So a line logged once another was appended is
//! never written before it, whichever threads wrote them: it is stamped
//! after the first, and if the first missed a flush (appended after the
//! flush took its buffer), the second was stamped after that flush's fence
//! and waits too. The lines of one connection come out in the order of its
//! calls, whichever worker ran them, and every line logged before a warning
//! comes out before it.
//!
//! The flusher thread flushes every [`FLUSH_EVERY`], and at once when a
//! thread's buffer reaches [`FLUSH_AT`] bytes, so the async workers never
//! make the `write` themselves. Lines at `WARN` and `ERROR` and the plain
//! lines of [`BatchedStderr::say`] are flushed by their own thread at once,
//! after every line logged before them, so a warning is never late. The
//! price: an `INFO` line can reach the log up to [`FLUSH_EVERY`] after its
//! event, and a process killed with `SIGKILL` loses at most that much of it;
//! a normal exit (including `SIGTERM`) writes everything (the guard returned
//! by [`BatchedStderr::start`]), and a line logged after the guard is
//! dropped is written at once.

mod call_lines;

pub use call_lines::{write_line, CallLines, LineFormat, CALL_TARGET};

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// A thread's buffer is flushed when it holds this many bytes ...
pub const FLUSH_AT: usize = 32 * 1024;
/// ... and every buffer at least this often.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// A thread whose buffer reaches this size (the flusher is behind) flushes
/// it itself, so the buffers stay bounded.
const FLUSH_HERE_AT: usize = 16 * FLUSH_AT;

/// A [`MakeWriter`] for `tracing_subscriber::fmt` that batches lines to
/// standard error (see the module documentation).
#[derive(Clone, Debug)]
pub struct BatchedStderr {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Tells this writer's buffers from another's in a thread's [`SLOTS`].
    id: u64,
    /// Stamps are nanoseconds since this instant ...
    epoch: Instant,
    /// ... which was this many nanoseconds after the Unix epoch (read
    /// again at every flush, so that the time of day follows the system
    /// clock when it is set).
    epoch_unix_nanos: AtomicU64,
    /// Every thread's buffer.
    slots: Mutex<Vec<Arc<Slot>>>,
    /// Held by a flush, so flushes write one after another.
    output: Mutex<Output>,
    flusher: Flusher,
    sink: Sink,
}

/// What the flusher thread and the threads that wake it share.
#[derive(Debug, Default)]
struct Flusher {
    /// A thread's buffer reached [`FLUSH_AT`]: flush now.
    wanted: AtomicBool,
    /// The flusher thread runs (else a full buffer is flushed by its thread).
    running: AtomicBool,
    /// The guard has flushed: every line is written at once.
    closed: AtomicBool,
    stopping: Mutex<bool>,
    wake: Condvar,
}

/// Where the lines go.
#[derive(Debug)]
enum Sink {
    Stderr,
    /// Kept, for the tests.
    #[cfg(test)]
    Memory(Mutex<Vec<u8>>),
}

/// One thread's buffer.
#[derive(Debug, Default)]
struct Slot {
    lines: Mutex<Lines>,
}

/// Whole lines, each with its stamp.
#[derive(Debug, Default)]
struct Lines {
    bytes: Vec<u8>,
    /// Each line's stamp and where it ends in `bytes`.
    ends: Vec<(u64, usize)>,
}

/// A flush's own buffers, kept from one flush to the next.
#[derive(Debug, Default)]
struct Output {
    /// Lines taken by a flush but stamped after its fence.
    later: Lines,
    /// The threads' buffers taken by the flush under way.
    taken: Vec<Lines>,
    /// Emptied buffers, handed to the threads at the next flush.
    spare: Vec<Lines>,
    /// Where the flush is in each of `taken` (and in `later`, last).
    next: Vec<usize>,
    /// What the flush writes.
    text: Vec<u8>,
}

/// Up to which stamp a flush writes.
#[derive(Clone, Copy, Debug)]
enum Fence {
    /// The lines stamped before the clock's reading now ...
    Now,
    /// ... and at least those stamped up to this one (a line just appended).
    After(u64),
    /// Every line (the end).
    Everything,
}

/// Writes what is buffered and stops the flusher thread when dropped.
#[derive(Debug)]
#[must_use = "dropping the guard stops the flusher; keep it until exit"]
pub struct FlushGuard {
    shared: Arc<Shared>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

thread_local! {
    /// This thread's buffer of each writer, by the writer's id.
    static SLOTS: RefCell<Vec<(u64, Arc<Slot>)>> = const { RefCell::new(Vec::new()) };
}

impl BatchedStderr {
    /// The writer, and the guard that flushes it at the end.
    pub fn start() -> (Self, FlushGuard) {
        Self::start_to(Sink::Stderr)
    }

    fn start_to(sink: Sink) -> (Self, FlushGuard) {
        let shared = Arc::new(Shared::new(sink));
        shared.flusher.running.store(true, Ordering::Release);
        let flusher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("rpcguard-log".to_owned())
                .spawn(move || shared.flush_periodically())
                .ok()
        };
        if flusher.is_none() {
            shared.flusher.running.store(false, Ordering::Release);
        }
        (
            BatchedStderr {
                shared: shared.clone(),
            },
            FlushGuard { shared, flusher },
        )
    }

    /// Writes `text` and a newline to standard error now, after every line
    /// logged before it (the order of lines is kept): for the plain lines
    /// the command prints for people and scripts (where it listens, an
    /// error that stops it).
    pub fn say(&self, text: &str) {
        let mut line = Vec::with_capacity(text.len() + 1);
        line.extend_from_slice(text.as_bytes());
        line.push(b'\n');
        self.shared.append(&line, None, true);
    }

    /// Appends a whole line (with its newline); written at once, after
    /// every line logged before it, when `urgent`.
    pub fn append(&self, line: &[u8], urgent: bool) {
        self.shared.append(line, None, urgent);
    }

    /// The clock, read once for a line: its place in the order and its
    /// time of day.
    pub(crate) fn now(&self) -> Now {
        self.shared.now()
    }

    /// [`BatchedStderr::append`] for a line logged at `now` (read before
    /// the line was written).
    pub(crate) fn append_at(&self, line: &[u8], now: Now, urgent: bool) {
        self.shared.append(line, Some(now.stamp), urgent);
    }
}

/// A reading of the writer's clock (see [`BatchedStderr::now`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Now {
    stamp: u64,
    time_of_day: SystemTime,
}

impl Now {
    /// The time of day of the reading: the monotonic clock plus the system
    /// clock's offset as last read (at the last flush).
    pub(crate) fn time_of_day(&self) -> SystemTime {
        self.time_of_day
    }
}

impl Shared {
    fn new(sink: Sink) -> Self {
        static IDS: AtomicU64 = AtomicU64::new(0);
        let shared = Shared {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            epoch: Instant::now(),
            epoch_unix_nanos: AtomicU64::new(0),
            slots: Mutex::default(),
            output: Mutex::default(),
            flusher: Flusher::default(),
            sink,
        };
        shared.read_time_of_day();
        shared
    }

    /// Reads the system clock beside the monotonic one.
    fn read_time_of_day(&self) {
        let stamp = self.stamp();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            });
        self.epoch_unix_nanos
            .store(unix.saturating_sub(stamp), Ordering::Relaxed);
    }

    fn now(&self) -> Now {
        let stamp = self.stamp();
        let unix = self
            .epoch_unix_nanos
            .load(Ordering::Relaxed)
            .saturating_add(stamp);
        Now {
            stamp,
            time_of_day: UNIX_EPOCH + Duration::from_nanos(unix),
        }
    }

    /// Nanoseconds since `epoch`, by the monotonic clock.
    fn stamp(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// Appends `line`, stamped `at` or, if `None`, now.
    fn append(&self, line: &[u8], at: Option<u64>, urgent: bool) {
        let appended = SLOTS.try_with(|slots| {
            let mut slots = slots.try_borrow_mut().ok()?;
            let slot = self.slot_of_this_thread(&mut slots);
            let mut lines = lock(&slot.lines);
            let stamp = at.unwrap_or_else(|| self.stamp());
            lines.push(stamp, line);
            Some((stamp, lines.bytes.len()))
        });
        let Ok(Some((stamp, buffered))) = appended else {
            // This thread is ending (its buffers are gone) or is inside
            // an append already: the line goes out now, after the others.
            return self.flush_then(Fence::Now, line);
        };
        let flusher = &self.flusher;
        if urgent || flusher.closed.load(Ordering::Acquire) || buffered >= FLUSH_HERE_AT {
            self.flush(Fence::After(stamp));
        } else if buffered >= FLUSH_AT {
            if !flusher.running.load(Ordering::Acquire) {
                self.flush(Fence::After(stamp));
            } else if !flusher.wanted.swap(true, Ordering::AcqRel) {
                flusher.wake.notify_one();
            }
        }
    }

    /// This thread's buffer for this writer, made on its first line.
    fn slot_of_this_thread<'s>(&self, slots: &'s mut Vec<(u64, Arc<Slot>)>) -> &'s Slot {
        let index = match slots.iter().position(|(id, _)| *id == self.id) {
            Some(index) => index,
            None => {
                // The buffers of writers that are gone (only this thread
                // holds them) go too.
                slots.retain(|(_, slot)| Arc::strong_count(slot) > 1);
                let slot = Arc::new(Slot::default());
                lock(&self.slots).push(slot.clone());
                slots.push((self.id, slot));
                slots.len() - 1
            }
        };
        &slots[index].1
    }

    fn flush(&self, fence: Fence) {
        self.flush_then(fence, &[]);
    }

    /// Writes, in one `write`, every buffered line stamped before `fence`
    /// in the order of their stamps, then `last`.
    fn flush_then(&self, fence: Fence, last: &[u8]) {
        let mut output = lock(&self.output);
        self.read_time_of_day();
        // Read before any buffer is taken: see the module documentation.
        let fence = match fence {
            Fence::Now => self.stamp(),
            Fence::After(stamp) => self.stamp().max(stamp.saturating_add(1)),
            Fence::Everything => u64::MAX,
        };
        let Output {
            later,
            taken,
            spare,
            next,
            text,
        } = &mut *output;
        {
            let mut slots = lock(&self.slots);
            for slot in slots.iter() {
                let mut buffer = spare.pop().unwrap_or_default();
                std::mem::swap(&mut *lock(&slot.lines), &mut buffer);
                taken.push(buffer);
            }
            // A buffer only this list holds was its thread's, which ended:
            // it goes once empty (its thread may have appended after the
            // take above, then ended).
            slots.retain(|slot| Arc::strong_count(slot) > 1 || !lock(&slot.lines).ends.is_empty());
        }
        let earlier = std::mem::replace(later, spare.pop().unwrap_or_default());
        taken.push(earlier);
        merge(taken, next, fence, text, later);
        text.extend_from_slice(last);
        self.sink.write(text);
        text.clear();
        for mut buffer in taken.drain(..) {
            buffer.clear();
            spare.push(buffer);
        }
    }

    fn flush_periodically(&self) {
        let flusher = &self.flusher;
        loop {
            {
                let mut stopping = lock(&flusher.stopping);
                if !*stopping && !flusher.wanted.load(Ordering::Acquire) {
                    stopping = match flusher.wake.wait_timeout(stopping, FLUSH_EVERY) {
                        Ok((guard, _)) => guard,
                        Err(poisoned) => poisoned.into_inner().0,
                    };
                }
                if *stopping {
                    // The guard writes the rest.
                    return;
                }
            }
            flusher.wanted.store(false, Ordering::Release);
            self.flush(Fence::Now);
        }
    }
}

/// Appends to `text`, in the order of their stamps, the lines of `sources`
/// stamped before `fence`; the others go to `later`. Each source is in
/// order already; of lines with the same stamp, the earlier source's first.
fn merge(
    sources: &[Lines],
    next: &mut Vec<usize>,
    fence: u64,
    text: &mut Vec<u8>,
    later: &mut Lines,
) {
    next.clear();
    next.resize(sources.len(), 0);
    loop {
        let mut first: Option<(u64, usize)> = None;
        for (source, lines) in sources.iter().enumerate() {
            if let Some(&(stamp, _)) = lines.ends.get(next[source]) {
                if first.is_none_or(|(earliest, _)| stamp < earliest) {
                    first = Some((stamp, source));
                }
            }
        }
        let Some((stamp, source)) = first else {
            return;
        };
        let line = sources[source].line(next[source]);
        if stamp < fence {
            text.extend_from_slice(line);
        } else {
            later.push(stamp, line);
        }
        next[source] += 1;
    }
}

impl Lines {
    fn push(&mut self, stamp: u64, line: &[u8]) {
        self.bytes.extend_from_slice(line);
        self.ends.push((stamp, self.bytes.len()));
    }

    /// The `index`th line.
    fn line(&self, index: usize) -> &[u8] {
        let start = index
            .checked_sub(1)
            .and_then(|before| self.ends.get(before))
            .map_or(0, |&(_, end)| end);
        let end = self.ends.get(index).map_or(start, |&(_, end)| end);
        self.bytes.get(start..end).unwrap_or_default()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

impl Sink {
    /// Writes `text`. A failed write (a closed pipe) drops the lines:
    /// logging must never stop the server.
    fn write(&self, text: &[u8]) {
        if text.is_empty() {
            return;
        }
        match self {
            Sink::Stderr => {
                let _ = std::io::stderr().lock().write_all(text);
            }
            #[cfg(test)]
            Sink::Memory(kept) => lock(kept).extend_from_slice(text),
        }
    }
}

/// A lock even if a thread panicked while holding it: at worst a line is
/// partial.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        let flusher = &self.shared.flusher;
        *lock(&flusher.stopping) = true;
        flusher.wake.notify_all();
        if let Some(thread) = self.flusher.take() {
            let _ = thread.join();
        }
        flusher.running.store(false, Ordering::Release);
        flusher.closed.store(true, Ordering::Release);
        self.shared.flush(Fence::Everything);
    }
}

/// One line on its way to this thread's buffer: each `write` is one line
/// (the `fmt` layer writes an event with one `write_all`).
#[derive(Debug)]
pub struct Line<'a> {
    shared: &'a Shared,
    urgent: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.shared.append(bytes, None, self.urgent);
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

    fn kept(shared: &Shared) -> String {
        match &shared.sink {
            Sink::Memory(kept) => String::from_utf8(lock(kept).clone()).expect("utf-8"),
            Sink::Stderr => String::new(),
        }
    }

    fn memory() -> Sink {
        Sink::Memory(Mutex::default())
    }

    #[test]
    fn lines_wait_until_a_buffer_is_full_or_a_line_is_urgent() {
        // No flusher thread: only size and urgency write.
        let writer = BatchedStderr {
            shared: Arc::new(Shared::new(memory())),
        };
        let mut line = writer.make_writer();
        line.write_all(b"one info line\n").expect("write");
        assert_eq!(kept(&writer.shared), "", "kept");
        let mut urgent = Line {
            shared: &writer.shared,
            urgent: true,
        };
        urgent.write_all(b"a warning\n").expect("write");
        assert_eq!(
            kept(&writer.shared),
            "one info line\na warning\n",
            "written with the warning, after the line before it"
        );
        let big = vec![b'x'; FLUSH_AT];
        line.write_all(&big).expect("write");
        assert_eq!(
            kept(&writer.shared).len(),
            24 + FLUSH_AT,
            "written when full"
        );
    }

    #[test]
    fn lines_of_every_thread_come_out_once_in_the_order_they_were_logged() {
        // A baton passed round the threads, as a connection's calls move
        // between workers: its lines must come out in the order of its
        // steps, whichever buffer they sat in, with flushes all the while
        // and each thread's own lines around them.
        const THREADS: usize = 4;
        const STEPS: usize = 20_000;
        let (writer, guard) = BatchedStderr::start_to(memory());
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS)
            .map(|_| std::sync::mpsc::channel::<usize>())
            .unzip();
        let threads: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(thread, baton)| {
                let writer = writer.clone();
                let next = senders[(thread + 1) % THREADS].clone();
                std::thread::spawn(move || {
                    let mut own = 0;
                    while let Ok(step) = baton.recv() {
                        if step == STEPS {
                            break;
                        }
                        writer.append(format!("step {step}\n").as_bytes(), false);
                        for _ in 0..3 {
                            writer
                                .append(format!("thread {thread} line {own}\n").as_bytes(), false);
                            own += 1;
                        }
                        let _ = next.send(step + 1);
                    }
                    // Wakes the next thread to stop too.
                    let _ = next.send(STEPS);
                })
            })
            .collect();
        // Flushes all the time, so that flushes fall between a line and
        // the next one of the baton on another thread.
        let done = Arc::new(AtomicBool::new(false));
        let eager = {
            let (shared, done) = (writer.shared.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Acquire) {
                    shared.flush(Fence::Now);
                }
            })
        };
        senders[0].send(0).expect("start");
        for thread in threads {
            thread.join().expect("thread");
        }
        done.store(true, Ordering::Release);
        eager.join().expect("flushing thread");
        let shared = guard.shared.clone();
        drop(guard);
        let text = kept(&shared);
        let steps: Vec<usize> = text
            .lines()
            .filter_map(|l| l.strip_prefix("step ")?.parse().ok())
            .collect();
        assert_eq!(
            steps,
            (0..STEPS).collect::<Vec<_>>(),
            "every step, in order"
        );
        for thread in 0..THREADS {
            let prefix = format!("thread {thread} line ");
            let own: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&prefix)?.parse().ok())
                .collect();
            assert_eq!(own, (0..own.len()).collect::<Vec<_>>(), "thread {thread}");
        }
        assert_eq!(text.lines().count(), STEPS * 4, "no line lost or doubled");
    }

    #[test]
    fn the_flusher_writes_within_its_period_and_the_guard_at_the_end() {
        let (writer, guard) = BatchedStderr::start_to(memory());
        writer.append(b"rpcguard logging test line\n", false);
        let started = Instant::now();
        while kept(&writer.shared).is_empty() {
            assert!(started.elapsed() < Duration::from_secs(10), "never flushed");
            std::thread::sleep(Duration::from_millis(5));
        }
        writer.append(b"rpcguard logging test line 2\n", false);
        drop(guard);
        assert!(
            kept(&writer.shared).ends_with("line 2\n"),
            "flushed at the end"
        );
        writer.append(b"after the end\n", false);
        assert!(kept(&writer.shared).ends_with("after the end\n"), "at once");
    }

    #[test]
    fn a_thread_that_ended_leaves_its_lines_not_its_buffer() {
        let writer = BatchedStderr {
            shared: Arc::new(Shared::new(memory())),
        };
        let other = writer.clone();
        std::thread::spawn(move || other.append(b"from a thread that ends\n", false))
            .join()
            .expect("thread");
        assert_eq!(lock(&writer.shared.slots).len(), 1);
        writer.shared.flush(Fence::Now);
        assert_eq!(kept(&writer.shared), "from a thread that ends\n");
        assert_eq!(lock(&writer.shared.slots).len(), 0, "its buffer is gone");
    }
}
