//! The whole request path on arbitrary bodies: a real rpcguard server on
//! loopback (HTTP layer, jsonrpsee parsing, the security middleware, the
//! handlers, SQLite) receives each input as a `POST /` body over one
//! keep-alive connection. A panic anywhere in the server aborts the process
//! (libFuzzer's panic hook), which libFuzzer reports as a crash; so does an
//! answer that is not HTTP 200/204/413.
#![no_main]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;

struct Loopback {
    _server: rpcguard::RunningServer,
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    stream: Mutex<BufReader<TcpStream>>,
}

fn server() -> &'static Loopback {
    static SERVER: OnceLock<Loopback> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("dir");
        let mut config = rpcguard_accounts::config::Config::new(dir.path());
        config.bcrypt_cost = 4;
        config.throttle = rpcguard_accounts::throttle::ThrottleConfig { per_account_and_ip: 0, per_ip: 0, per_account: 0 };
        let server = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            rpcguard_accounts::app::start(&config, listener).await.expect("start")
        });
        let stream = TcpStream::connect(server.local_addr()).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Loopback { _server: server, _runtime: runtime, _dir: dir, stream: Mutex::new(BufReader::new(stream)) }
    })
}

fuzz_target!(|body: &[u8]| {
    let server = server();
    let mut stream = server.stream.lock().expect("lock");
    let mut request = format!(
        "POST / HTTP/1.1\r\nhost: fuzz\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream.get_mut().write_all(&request).expect("write request");
    let mut status = String::new();
    stream.read_line(&mut status).expect("status line");
    assert!(
        status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.1 204") || status.starts_with("HTTP/1.1 413"),
        "unexpected status {status:?}"
    );
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).expect("header");
        if line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().expect("length");
        }
    }
    let mut answer = vec![0u8; length];
    stream.read_exact(&mut answer).expect("body");
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.contains("panicked") && !text.contains("$2b$"), "leak: {text}");
});
