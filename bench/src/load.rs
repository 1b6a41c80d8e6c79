//! The load generator: a fixed number of connections, each a closed loop
//! (send one JSON-RPC request, wait for its answer, send the next), with a
//! warm-up and a fixed measured duration.
//!
//! The clients are hand-written and minimal so that they cost the shared
//! CPU as little as possible: HTTP/1.1 keep-alive over a raw `TcpStream`,
//! and WebSocket (RFC 6455) frames over a raw `TcpStream` after a normal
//! upgrade. Each request's bytes are built once per run.
//!
//! A request counts when its answer arrives inside the measured window.
//! Every answer is checked: HTTP status 200 (or a WebSocket text frame) and
//! the expected `result` (a substring of it) or the expected error `code`;
//! anything else is counted as `unexpected`, and I/O failures (the
//! connection is reopened) as `io_errors`.

#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How requests travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// HTTP/1.1 POST with keep-alive.
    Http,
    /// One WebSocket session per connection, authorized at the upgrade.
    Ws,
}

/// What a correct answer looks like.
#[derive(Clone, Debug)]
pub enum Expect {
    /// A `result` whose JSON text contains this substring.
    Result(String),
    /// An `error` with this code.
    Error(i64),
}

/// One kind of request sent over and over.
#[derive(Clone, Debug)]
pub struct Target {
    /// The server.
    pub addr: SocketAddr,
    /// HTTP or WebSocket.
    pub transport: Transport,
    /// The JSON-RPC request.
    pub body: String,
    /// Sent as `Authorization: Bearer …` (on each HTTP request, or at the
    /// WebSocket upgrade).
    pub bearer: Option<String>,
    /// More header lines, each ending in `\r\n` (e.g. a proxy's
    /// `X-Forwarded-For`), on each HTTP request or at the upgrade.
    pub headers: String,
    /// The answer expected.
    pub expect: Expect,
}

/// The shape of a run.
#[derive(Clone, Copy, Debug)]
pub struct LoadConfig {
    /// Connections (or WebSocket sessions), each with one request in flight.
    pub connections: usize,
    /// Time before measuring.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
}

/// Figures of one run.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    /// Answers received in the measured window (expected or not).
    pub requests: u64,
    /// Answers that were not the expected result / error code.
    pub unexpected: u64,
    /// Connection failures (each followed by a reconnect).
    pub io_errors: u64,
    /// `requests` per second of measured time.
    pub rps: f64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 90th percentile latency, microseconds.
    pub p90_us: u64,
    /// 99th percentile latency, microseconds.
    pub p99_us: u64,
    /// Highest latency, microseconds.
    pub max_us: u64,
}

impl LoadResult {
    /// One line for the console.
    pub fn line(&self) -> String {
        format!(
            "{:>9.0} req/s  p50 {:>7.3} ms  p90 {:>7.3} ms  p99 {:>7.3} ms  max {:>8.3} ms  ({} answers, {} unexpected, {} io errors)",
            self.rps,
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.max_us),
            self.requests,
            self.unexpected,
            self.io_errors
        )
    }
}

/// Microseconds as milliseconds.
pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Per-connection tallies of the measured window.
#[derive(Default)]
pub struct ConnStats {
    /// Latency of each answer, microseconds.
    pub latencies_us: Vec<u32>,
    /// Answers that were not the expected one.
    pub unexpected: u64,
    /// Connection failures.
    pub io_errors: u64,
}

/// Runs `config.connections` closed loops against `target` and returns the
/// figures of the measured window.
pub async fn run(target: &Target, config: LoadConfig) -> LoadResult {
    let prepared = Arc::new(Prepared::new(target));
    let start = Instant::now();
    let measure_from = start + config.warmup;
    let end = measure_from + config.duration;
    let mut tasks = Vec::with_capacity(config.connections);
    for _ in 0..config.connections {
        let prepared = prepared.clone();
        tasks.push(tokio::spawn(async move {
            let mut stats = ConnStats::default();
            // A request still unanswered long after the end is abandoned.
            let hard_end = tokio::time::Instant::from_std(end + Duration::from_secs(5));
            let _ = tokio::time::timeout_at(
                hard_end,
                conn_loop(measure_from, end, &mut stats, || &*prepared, |_| ()),
            )
            .await;
            stats
        }));
    }
    let mut all = ConnStats::default();
    for task in tasks {
        if let Ok(stats) = task.await {
            all.latencies_us.extend_from_slice(&stats.latencies_us);
            all.unexpected += stats.unexpected;
            all.io_errors += stats.io_errors;
        }
    }
    LoadResult::from_answers(
        all.latencies_us,
        all.unexpected,
        all.io_errors,
        config.duration,
    )
}

impl LoadResult {
    /// The figures of answers with these latencies (microseconds, in any
    /// order), `unexpected` of them not the expected one, and `io_errors`
    /// failures, over `measured` time.
    pub fn from_answers(
        mut latencies_us: Vec<u32>,
        unexpected: u64,
        io_errors: u64,
        measured: Duration,
    ) -> LoadResult {
        latencies_us.sort_unstable();
        LoadResult {
            requests: latencies_us.len() as u64,
            unexpected,
            io_errors,
            rps: latencies_us.len() as f64 / measured.as_secs_f64(),
            p50_us: percentile(&latencies_us, 0.50),
            p90_us: percentile(&latencies_us, 0.90),
            p99_us: percentile(&latencies_us, 0.99),
            max_us: latencies_us.last().copied().unwrap_or(0) as u64,
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as u64
}

/// One connection's closed loop until `end`, tallying the answers from
/// `measure_from` on: `next` gives each request (the same bytes, or new
/// ones per call), `answered` sees the body of each expected answer.
pub async fn conn_loop<P, N, A>(
    measure_from: Instant,
    end: Instant,
    stats: &mut ConnStats,
    mut next: N,
    mut answered: A,
) where
    P: std::borrow::Borrow<Prepared>,
    N: FnMut() -> P,
    A: FnMut(&[u8]),
{
    let mut conn: Option<Conn> = None;
    while Instant::now() < end {
        let prepared = next();
        let prepared = prepared.borrow();
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(prepared).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    stats.io_errors += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let sent = Instant::now();
        match c.call(prepared).await {
            Ok(ok) => {
                let done = Instant::now();
                if ok {
                    answered(c.body());
                }
                if done >= measure_from && done <= end {
                    let us = done.duration_since(sent).as_micros().min(u32::MAX as u128) as u32;
                    stats.latencies_us.push(us);
                    if !ok {
                        stats.unexpected += 1;
                    }
                }
            }
            Err(_) => {
                stats.io_errors += 1;
                conn = None;
            }
        }
    }
}

/// A target's bytes, built once.
pub struct Prepared {
    addr: SocketAddr,
    transport: Transport,
    /// HTTP: the whole request. WS: the masked text frame.
    request: Vec<u8>,
    /// WS: the upgrade request.
    upgrade: Vec<u8>,
    expect: Expect,
    /// For `Expect::Error`: `"error":{"code":N`.
    error_needle: String,
}

impl Prepared {
    /// Builds the bytes of `target`.
    pub fn new(target: &Target) -> Self {
        let auth = target
            .bearer
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default()
            + &target.headers;
        let (request, upgrade) = match target.transport {
            Transport::Http => (
                format!(
                    "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{}",
                    target.addr,
                    target.body.len(),
                    target.body
                )
                .into_bytes(),
                Vec::new(),
            ),
            Transport::Ws => (
                ws_frame(0x1, target.body.as_bytes()),
                format!(
                    "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: cnBjZ3VhcmQtYmVuY2gtMQ==\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n",
                    target.addr
                )
                .into_bytes(),
            ),
        };
        let error_needle = match target.expect {
            Expect::Error(code) => format!("\"error\":{{\"code\":{code}"),
            Expect::Result(_) => String::new(),
        };
        Prepared {
            addr: target.addr,
            transport: target.transport,
            request,
            upgrade,
            expect: target.expect.clone(),
            error_needle,
        }
    }

    fn check(&self, body: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(body) else {
            return false;
        };
        // jsonrpsee writes `{"jsonrpc":"2.0","id":…,"result":…}` or
        // `…,"error":{"code":N,…}`: the member name is near the start.
        let head = &text[..floor_char_boundary(text, 64)];
        match &self.expect {
            Expect::Result(needle) => {
                head.contains("\"result\":") && text.contains(needle.as_str())
            }
            Expect::Error(_) => head.contains(self.error_needle.as_str()),
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A client frame (FIN set) with a zero masking key, so the payload is sent
/// as is.
fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// One open connection (HTTP keep-alive, or a WebSocket session).
pub struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
    /// The last answer's body / message.
    body: Vec<u8>,
    transport: Transport,
}

impl Conn {
    /// Connects (and for WS performs the upgrade, expecting 101).
    pub async fn open(prepared: &Prepared) -> io::Result<Conn> {
        let stream = TcpStream::connect(prepared.addr).await?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            buf: Vec::with_capacity(4096),
            body: Vec::with_capacity(4096),
            transport: prepared.transport,
        };
        if prepared.transport == Transport::Ws {
            conn.stream.write_all(&prepared.upgrade).await?;
            let (status, _) = conn.read_head().await?;
            if status != 101 {
                return Err(io::Error::other(format!("upgrade answered {status}")));
            }
            conn.buf.clear();
        }
        Ok(conn)
    }

    /// Sends the prepared request and reads its answer; `Ok(true)` when the
    /// answer is the expected one.
    pub async fn call(&mut self, prepared: &Prepared) -> io::Result<bool> {
        self.stream.write_all(&prepared.request).await?;
        let ok = match self.transport {
            Transport::Http => self.read_http().await? == 200,
            Transport::Ws => {
                self.read_ws_message().await?;
                true
            }
        };
        Ok(ok && prepared.check(&self.body))
    }

    /// The last answer's body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    async fn fill(&mut self) -> io::Result<()> {
        if self.buf.capacity() - self.buf.len() < 2048 {
            self.buf.reserve(8192);
        }
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// Reads a response head; returns the status and the head's length
    /// (the head stays in `buf`).
    async fn read_head(&mut self) -> io::Result<(u16, usize)> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                let status = std::str::from_utf8(self.buf.get(9..12).unwrap_or_default())
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| io::Error::other("bad status line"))?;
                return Ok((status, pos + 4));
            }
            if self.buf.len() > 64 * 1024 {
                return Err(io::Error::other("response head too large"));
            }
            self.fill().await?;
        }
    }

    /// Reads one HTTP response into `body`; returns its status.
    async fn read_http(&mut self) -> io::Result<u16> {
        let (status, head_len) = self.read_head().await?;
        let mut content_length = None;
        let mut chunked = false;
        for line in self.buf[..head_len].split(|&b| b == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
            if name.eq_ignore_ascii_case(b"content-length") {
                content_length = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok());
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = value.eq_ignore_ascii_case(b"chunked");
            }
        }
        self.body.clear();
        if chunked {
            let mut pos = head_len;
            loop {
                let line_end = loop {
                    if let Some(p) = find(&self.buf[pos..], b"\r\n") {
                        break pos + p;
                    }
                    self.fill().await?;
                };
                let size_text = std::str::from_utf8(&self.buf[pos..line_end])
                    .map_err(|_| io::Error::other("bad chunk size"))?;
                let size_text = size_text.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16)
                    .map_err(|_| io::Error::other("bad chunk size"))?;
                let data = line_end + 2;
                while self.buf.len() < data + size + 2 {
                    self.fill().await?;
                }
                if size == 0 {
                    // No trailers expected after the last chunk.
                    self.buf.drain(..data + 2);
                    break;
                }
                self.body.extend_from_slice(&self.buf[data..data + size]);
                pos = data + size + 2;
            }
        } else {
            let len = content_length.unwrap_or(0);
            while self.buf.len() < head_len + len {
                self.fill().await?;
            }
            self.body
                .extend_from_slice(&self.buf[head_len..head_len + len]);
            self.buf.drain(..head_len + len);
        }
        Ok(status)
    }

    /// Reads WebSocket frames until a whole text/binary message is in
    /// `body`, answering pings on the way.
    async fn read_ws_message(&mut self) -> io::Result<()> {
        self.body.clear();
        loop {
            while self.buf.len() < 2 {
                self.fill().await?;
            }
            let (b0, b1) = (self.buf[0], self.buf[1]);
            let fin = b0 & 0x80 != 0;
            let opcode = b0 & 0x0f;
            let masked = b1 & 0x80 != 0;
            let mut header = 2;
            let mut len = (b1 & 0x7f) as usize;
            if len == 126 {
                while self.buf.len() < 4 {
                    self.fill().await?;
                }
                len = u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize;
                header = 4;
            } else if len == 127 {
                while self.buf.len() < 10 {
                    self.fill().await?;
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[2..10]);
                len = u64::from_be_bytes(b) as usize;
                header = 10;
            }
            let mask_at = header;
            if masked {
                header += 4;
            }
            while self.buf.len() < header + len {
                self.fill().await?;
            }
            let mut payload = self.buf[header..header + len].to_vec();
            if masked {
                let key = [
                    self.buf[mask_at],
                    self.buf[mask_at + 1],
                    self.buf[mask_at + 2],
                    self.buf[mask_at + 3],
                ];
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= key[i % 4];
                }
            }
            self.buf.drain(..header + len);
            match opcode {
                0x9 => {
                    let pong = ws_frame(0xA, &payload);
                    self.stream.write_all(&pong).await?;
                }
                0xA => {}
                0x8 => return Err(io::Error::other("server closed the session")),
                _ => {
                    self.body.extend_from_slice(&payload);
                    if fin {
                        return Ok(());
                    }
                }
            }
        }
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One request on a fresh connection; returns the HTTP status and body.
pub async fn call_once(
    addr: SocketAddr,
    body: &str,
    bearer: Option<&str>,
) -> io::Result<(u16, String)> {
    let prepared = Prepared::new(&Target {
        addr,
        transport: Transport::Http,
        body: body.to_owned(),
        bearer: bearer.map(str::to_owned),
        headers: String::new(),
        expect: Expect::Result(String::new()),
    });
    let mut conn = Conn::open(&prepared).await?;
    conn.stream.write_all(&prepared.request).await?;
    let status = conn.read_http().await?;
    Ok((status, String::from_utf8_lossy(&conn.body).into_owned()))
}
