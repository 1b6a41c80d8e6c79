//! The per-call log line (target `rpcguard::call`), formatted here rather
//! than by `tracing-subscriber`'s formatter.
//!
//! Every call writes one line, so what the line costs is paid on every
//! call. `tracing-subscriber`'s `fmt` layer spends most of it in general
//! machinery: each field goes through `core::fmt` (names wrapped in ANSI
//! style objects even when colours are off, strings through `Debug`), and
//! the timestamp is recomputed from the Unix time for every event. Measured
//! with callgrind on the reference server (get_caller over HTTP), the line
//! cost about 12,400 instructions per call, a quarter of the call.
//!
//! [`CallLines`] wraps the `fmt` layer: an event of the call target with no
//! span around it is written by [`write_line`] straight into a reused byte
//! buffer (strings copied when they need no escaping, numbers by `itoa`,
//! the date part of the timestamp kept per thread and per second, one
//! clock reading for both the timestamp and the writer's order), then
//! appended to the same batched writer as every other line, so the order
//! of lines is unchanged. Every other event, and every span, goes to the
//! `fmt` layer as before. The bytes are those the `fmt`
//! layer writes, in both formats (checked by the tests below against the
//! `fmt` layer itself): text as `Format<Full>` without colours, JSON as
//! `json().flatten_event(true)` without spans. With colours on (a person at
//! a terminal) the wrapper is not used.

use std::any::TypeId;
use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span;
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::BatchedStderr;

/// The target of the per-call log line.
pub const CALL_TARGET: &str = "rpcguard::call";

/// How a line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    /// `tracing-subscriber`'s default text format, without colours.
    Text,
    /// One JSON object per line, the event's fields flattened.
    Json,
}

/// A layer that writes the call line itself and hands everything else to
/// `inner` (see the module documentation).
#[derive(Debug)]
pub struct CallLines<L> {
    inner: L,
    writer: BatchedStderr,
    format: LineFormat,
}

impl<L> CallLines<L> {
    /// Wraps `inner`, the `fmt` layer writing to `writer` in `format`.
    pub fn new(inner: L, writer: BatchedStderr, format: LineFormat) -> Self {
        CallLines {
            inner,
            writer,
            format,
        }
    }
}

thread_local! {
    /// The line being written (kept, so a line makes no allocation).
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
    /// The second and the date part of the timestamp last written.
    static DATE: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

impl<S, L> Layer<S> for CallLines<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        self.inner.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.inner.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.enabled(metadata, ctx)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, span: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.inner.on_record(span, values, ctx);
    }

    fn on_follows_from(&self, span: &span::Id, follows: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_follows_from(span, follows, ctx);
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // The text format names the spans around an event; the JSON one is
        // set up without them.
        let ours = event.metadata().target() == CALL_TARGET
            && (self.format == LineFormat::Json || ctx.event_span(event).is_none());
        if !ours {
            return self.inner.on_event(event, ctx);
        }
        let written = LINE.with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                return false;
            };
            line.clear();
            let now = self.writer.now();
            write_line(&mut line, event, self.format, now.time_of_day());
            let urgent = *event.metadata().level() <= Level::WARN;
            self.writer.append_at(&line, now, urgent);
            true
        });
        if !written {
            self.inner.on_event(event, ctx);
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx);
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &span::Id, new: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx);
    }

    unsafe fn downcast_raw(&self, id: TypeId) -> Option<*const ()> {
        if id == TypeId::of::<Self>() {
            return Some(self as *const Self as *const ());
        }
        // SAFETY: the caller's contract is passed on unchanged; the inner
        // layer answers only for its own types.
        unsafe { self.inner.downcast_raw(id) }
    }
}

/// Writes `event` as one line (with its newline) in `format`, stamped `now`.
pub fn write_line(out: &mut Vec<u8>, event: &Event<'_>, format: LineFormat, now: SystemTime) {
    let meta = event.metadata();
    match format {
        LineFormat::Text => {
            write_timestamp(out, now);
            out.extend_from_slice(match *meta.level() {
                Level::TRACE => b" TRACE ",
                Level::DEBUG => b" DEBUG ",
                Level::INFO => b"  INFO ",
                Level::WARN => b"  WARN ",
                Level::ERROR => b" ERROR ",
            });
            out.extend_from_slice(meta.target().as_bytes());
            out.extend_from_slice(b": ");
            event.record(&mut TextFields { out, first: true });
        }
        LineFormat::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            write_timestamp(out, now);
            out.extend_from_slice(b"\",\"level\":\"");
            out.extend_from_slice(meta.level().as_str().as_bytes());
            out.extend_from_slice(b"\",");
            event.record(&mut JsonFields { out });
            out.extend_from_slice(b"\"target\":");
            json_str(out, meta.target());
            out.push(b'}');
        }
    }
    out.push(b'\n');
}

/// `2026-12-05T18:16:01.886501Z`, as `tracing-subscriber`'s `SystemTime`
/// writes it; the part up to the second is computed once per second.
fn write_timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (cached, mut date) = DATE.get();
    if cached != secs {
        date = date_part(secs);
        DATE.set((secs, date));
    }
    let mut text = [0u8; 27];
    text[..19].copy_from_slice(&date);
    text[19] = b'.';
    let mut rest = since.subsec_micros();
    for digit in text[20..26].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    text[26] = b'Z';
    out.extend_from_slice(&text);
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix second (UTC).
fn date_part(secs: u64) -> [u8; 19] {
    let mut text = [0u8; 19];
    let when = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut cursor = std::io::Cursor::new(&mut text[..]);
    let _ = std::io::Write::write_fmt(
        &mut cursor,
        format_args!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            when.year(),
            u8::from(when.month()),
            when.day(),
            when.hour(),
            when.minute(),
            when.second()
        ),
    );
    text
}

/// `write!` into a byte buffer.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

/// The fields as the default text format writes them: the message as it
/// is, then ` name=value` with strings as `Debug` shows them.
struct TextFields<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl TextFields<'_> {
    /// The space before every field but the first.
    fn space(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.out.push(b' ');
        }
    }

    fn name(&mut self, field: &Field) {
        self.space();
        let name = field.name();
        self.out
            .extend_from_slice(name.strip_prefix("r#").unwrap_or(name).as_bytes());
        self.out.push(b'=');
    }
}

impl Visit for TextFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.space();
            return self.out.extend_from_slice(value.as_bytes());
        }
        self.name(field);
        debug_str(self.out, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.name(field);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.name(field);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.space();
        } else {
            self.name(field);
        }
        let _ = write!(Bytes(self.out), "{value:?}");
    }
}

/// Whether `value` is written as it is between quotes, by `Debug` (printable
/// ASCII but `"` and `\\`) or as a JSON string (`json`: no control character,
/// `"` or `\\`). Eight bytes are looked at a time, without a branch per
/// byte (the call line checks a dozen short strings: names and values).
fn needs_no_escape(value: &str, json: bool) -> bool {
    plain_bytes(value.as_bytes(), json)
}

/// [`needs_no_escape`] on bytes.
fn plain_bytes(bytes: &[u8], json: bool) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Non-zero when a byte of `x` is zero (exactly when one is).
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let has_byte = |x: u64, b: u8| has_zero(x ^ (ONES * u64::from(b)));
    // Non-zero when a byte of `x` is below 0x20 (exactly when one is).
    let has_control = |x: u64| x.wrapping_sub(ONES * 0x20) & !x & HIGH;
    let mut chunks = bytes.chunks_exact(8);
    let mut bad = 0;
    for chunk in &mut chunks {
        // Eight bytes always; a zero word would only take the slow path.
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        bad |= has_control(x) | has_byte(x, b'"') | has_byte(x, b'\\');
        if !json {
            bad |= (x & HIGH) | has_byte(x, 0x7f);
        }
    }
    let top = if json { 0xff } else { 0x7e };
    bad == 0
        && chunks.remainder().iter().fold(true, |plain, &b| {
            plain & (b >= 0x20) & (b <= top) & (b != b'"') & (b != b'\\')
        })
}

/// A string as `Debug` writes it: copied between quotes when it has
/// nothing to escape.
fn debug_str(out: &mut Vec<u8>, value: &str) {
    if needs_no_escape(value, false) {
        quoted(out, value);
    } else {
        let _ = write!(Bytes(out), "{value:?}");
    }
}

/// `value` between double quotes, as it is.
fn quoted(out: &mut Vec<u8>, value: &str) {
    out.reserve(value.len() + 2);
    out.push(b'"');
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
}

/// The fields as `"name":value,` pairs, as the JSON format flattens them:
/// strings and `Debug` output as JSON strings, integers as numbers.
struct JsonFields<'a> {
    out: &'a mut Vec<u8>,
}

impl JsonFields<'_> {
    fn name(&mut self, field: &Field) {
        json_str(self.out, field.name());
        self.out.push(b':');
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.name(field);
        json_str(self.out, value);
        self.out.push(b',');
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.name(field);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self.out.push(b',');
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.name(field);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self.out.push(b',');
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.name(field);
        self.out
            .extend_from_slice(if value { b"true," } else { b"false," });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.name(field);
        match serde_json::to_string(&value) {
            Ok(number) => self.out.extend_from_slice(number.as_bytes()),
            Err(_) => self.out.extend_from_slice(b"null"),
        }
        self.out.push(b',');
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.name(field);
        // Written in place; quoted again through serde_json only when it
        // turns out to need escaping.
        let start = self.out.len();
        self.out.push(b'"');
        let _ = write!(Bytes(self.out), "{value:?}");
        let written = self.out.get(start + 1..).unwrap_or_default();
        let plain = written.iter().fold(true, |plain, &b| {
            plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
        });
        if plain {
            self.out.push(b'"');
        } else {
            let text = String::from_utf8_lossy(written).into_owned();
            self.out.truncate(start);
            json_str(self.out, &text);
        }
        self.out.push(b',');
    }
}

/// A JSON string as `serde_json` writes it: copied between quotes when it
/// has nothing to escape.
fn json_str(out: &mut Vec<u8>, value: &str) {
    if needs_no_escape(value, true) {
        quoted(out, value);
    } else {
        match serde_json::to_string(value) {
            Ok(escaped) => out.extend_from_slice(escaped.as_bytes()),
            Err(_) => out.extend_from_slice(b"\"\""),
        }
    }
}

#[cfg(test)]
mod tests {
    /// The word-at-a-time check agrees with the byte-at-a-time one for
    /// every byte value at every place of strings of 1 to 24 bytes.
    #[test]
    fn the_escape_check_agrees_byte_by_byte() {
        for json in [true, false] {
            let top = if json { 0xff } else { 0x7e };
            let reference = |bytes: &[u8]| {
                bytes
                    .iter()
                    .all(|&b| b >= 0x20 && b <= top && b != b'"' && b != b'\\')
            };
            for len in 1..=24 {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut bytes = vec![b'a'; len];
                        bytes[at] = b;
                        assert_eq!(
                            super::plain_bytes(&bytes, json),
                            reference(&bytes),
                            "json {json}, byte {b:#x} at {at} of {len}"
                        );
                    }
                }
            }
            // Neighbours that make a borrow run through the word.
            for bytes in [
                &b"\x00\x01\x1f\x20\x21\x7f\x80\xff"[..],
                b"  !!!!!!!!",
                b"\x20\x20\x20\x20\x20\x20\x20\x1f",
            ] {
                assert_eq!(
                    super::plain_bytes(bytes, json),
                    reference(bytes),
                    "{bytes:?}"
                );
            }
        }
    }

    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// What the `fmt` layer and `write_line` wrote for the same events.
    #[derive(Clone, Default)]
    struct Capture {
        fmt: Arc<Mutex<Vec<u8>>>,
        ours: Arc<Mutex<Vec<u8>>>,
    }

    impl std::io::Write for &Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.fmt
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A layer that writes each event with `write_line` beside the `fmt`
    /// layer; both see one event at a time.
    struct Ours(Capture, LineFormat);

    impl<S: Subscriber> Layer<S> for Ours {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let mut line = Vec::new();
            write_line(&mut line, event, self.1, SystemTime::now());
            self.0
                .ours
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(&line);
        }
    }

    fn emit_calls() {
        for (caller, addr) in [
            ("benchuser", Some("127.0.0.1")),
            ("we\"ird\\ é\n", None),
            ("-", Some("::1")),
        ] {
            // As the security layer writes it: the message a plain string.
            tracing::info!(
                target: "rpcguard::call",
                message = "call",
                method = "get_caller",
                caller,
                outcome = -32001,
                latency_us = 12_u64,
                client_addr = %addr.unwrap_or("-"),
                request_id = "0a1b2c3d-2f",
            );
        }
        tracing::warn!(target: "rpcguard::call", flag = true, "odd \"message\"");
    }

    /// Strips the timestamps (the two writers read the clock apart).
    fn without_times(text: &str, format: LineFormat) -> Vec<String> {
        text.lines()
            .map(|line| match format {
                LineFormat::Text => line.get(27..).unwrap_or("").to_owned(),
                LineFormat::Json => {
                    let at = line.find("\",\"level\"").unwrap_or(0);
                    line.get(at..).unwrap_or("").to_owned()
                }
            })
            .collect()
    }

    /// `tracing-subscriber`'s `fmt` layer without colours, writing into
    /// `capture`.
    fn fmt_layer<S>(
        capture: &Capture,
    ) -> tracing_subscriber::fmt::Layer<
        S,
        tracing_subscriber::fmt::format::DefaultFields,
        tracing_subscriber::fmt::format::Format,
        impl Fn() -> &'static Capture + 'static,
    > {
        let writer = capture.clone();
        let make = move || {
            let w: &'static Capture = Box::leak(Box::new(writer.clone()));
            w
        };
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(make)
    }

    fn compare(format: LineFormat) {
        let capture = Capture::default();
        let fmt = fmt_layer(&capture);
        let subscriber = tracing_subscriber::registry().with(Ours(capture.clone(), format));
        match format {
            LineFormat::Text => {
                tracing::subscriber::with_default(subscriber.with(fmt), emit_calls);
            }
            LineFormat::Json => {
                let fmt = fmt
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false);
                tracing::subscriber::with_default(subscriber.with(fmt), emit_calls);
            }
        }
        let theirs = String::from_utf8(capture.fmt.lock().expect("lock").clone()).expect("utf-8");
        let ours = String::from_utf8(capture.ours.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(ours.lines().count(), 4, "{ours}");
        assert_eq!(
            without_times(&ours, format),
            without_times(&theirs, format),
            "\nours:\n{ours}\ntheirs:\n{theirs}"
        );
    }

    #[test]
    fn text_lines_are_those_of_the_fmt_layer() {
        compare(LineFormat::Text);
    }

    #[test]
    fn json_lines_are_those_of_the_fmt_layer() {
        compare(LineFormat::Json);
    }

    #[test]
    fn a_message_given_as_a_string_is_written_as_a_formatted_one() {
        // The security layer gives the call line's message as a string
        // field: the `fmt` layer must write it as the macro's message.
        for format in [LineFormat::Text, LineFormat::Json] {
            let capture = Capture::default();
            let fmt = fmt_layer(&capture);
            let emit = || {
                tracing::info!(target: "rpcguard::call", message = "call", outcome = 0);
                tracing::info!(target: "rpcguard::call", outcome = 0, "call");
            };
            match format {
                LineFormat::Text => {
                    let subscriber = tracing_subscriber::registry().with(fmt);
                    tracing::subscriber::with_default(subscriber, emit);
                }
                LineFormat::Json => {
                    let fmt = fmt.json().flatten_event(true).with_current_span(false);
                    let subscriber = tracing_subscriber::registry().with(fmt);
                    tracing::subscriber::with_default(subscriber, emit);
                }
            }
            let text = String::from_utf8(capture.fmt.lock().expect("lock").clone()).expect("utf-8");
            let lines = without_times(&text, format);
            assert_eq!(lines.len(), 2, "{text}");
            assert_eq!(lines[0], lines[1], "{format:?}");
        }
    }

    #[test]
    fn timestamps_are_written_as_tracing_subscriber_writes_them() {
        let at = UNIX_EPOCH + std::time::Duration::from_micros(1_764_958_561_886_501);
        let mut ours = Vec::new();
        write_timestamp(&mut ours, at);
        assert_eq!(ours, b"2025-12-05T18:16:01.886501Z");
        let mut again = Vec::new();
        write_timestamp(&mut again, at + std::time::Duration::from_micros(7));
        assert_eq!(again, b"2025-12-05T18:16:01.886508Z", "the cached second");
    }
}
