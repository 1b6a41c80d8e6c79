//! One way to start a real server for a test: [`TestApp::spawn`].
//!
//! Each app listens on `127.0.0.1:0` with its own temp data dir (SQLite) or
//! its own fresh PostgreSQL database, and is driven through jsonrpsee's real
//! HTTP and WebSocket clients or raw HTTP (reqwest).
//!
//! Every store-dependent test is written once and run against both stores
//! by [`both_stores!`]: the PostgreSQL variant needs
//! `RPCGUARD_TEST_DATABASE_URL` (an admin URL; each test creates its own
//! database). Without it that variant is marked `ignored` at build time
//! (see build.rs), unless `RPCGUARD_REQUIRE_POSTGRES=1` (set by CI), where
//! it fails.
//!
//! Time: a test that waits for a token to expire or for the second to
//! change puts its app on a manual clock ([`manual_clock`] in its config
//! tweak) and moves it ([`TestApp::clock`]) instead of sleeping.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::params::ArrayParams;
use jsonrpsee::core::ClientError;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use rpcguard::RunningServer;
use rpcguard_accounts::clock::{Clock, ManualClock};
use rpcguard_accounts::config::Config;
use rpcguard_accounts::store::SharedStore;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Which store a test app runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// A SQLite file in the temp data dir.
    Sqlite,
    /// A fresh database on the server of `RPCGUARD_TEST_DATABASE_URL`.
    Postgres,
}

/// The environment variable naming the PostgreSQL admin URL for tests.
pub const PG_URL_VAR: &str = "RPCGUARD_TEST_DATABASE_URL";

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    pub addr: SocketAddr,
    pub url: String,
    pub ws_url: String,
    pub config: Config,
    /// The server's store (writes through it are in-process writes).
    pub store: SharedStore,
    /// The same store, with its in-memory auth state.
    pub users: std::sync::Arc<rpcguard_accounts::store::CachedStore>,
    /// The state of the server's account methods (its store, keys, clock).
    pub accounts: std::sync::Arc<rpcguard_accounts::methods::accounts::Accounts>,
    pub data_dir: TempDir,
    server: Option<RunningServer>,
    pub http: reqwest::Client,
}

/// `rpcguard serve` flags that turn every sign-in budget off, for tests
/// that sign in many times from one address.
pub const NO_SIGNIN_THROTTLE: [&str; 6] = [
    "--signin-per-account-ip",
    "0",
    "--signin-per-ip",
    "0",
    "--signin-per-account",
    "0",
];

/// The password every helper uses unless told otherwise.
pub const PASSWORD: &str = "correct horse battery";

/// Config for tests: cheap bcrypt, a temp data dir, no `sign_up` budget
/// (tests sign many accounts up from 127.0.0.1; the budget has its own
/// tests in `signin_path.rs`).
pub fn test_config(data_dir: &std::path::Path) -> Config {
    let mut config = Config::new(data_dir);
    config.bcrypt_cost = 4;
    config.sign_up_per_ip = 0;
    config
}

/// Puts the server on a manual clock standing at the system clock's second
/// now: it moves only when the test moves it ([`TestApp::clock`]).
pub fn manual_clock(config: &mut Config) {
    config.clock = Clock::Manual(ManualClock::starting_now());
}

/// Starts, once per test process, dropping the databases of earlier runs.
static STALE: std::sync::Once = std::sync::Once::new();

/// Drops the test databases of test processes that have ended (their
/// process id is in the name; names from before that rule count as
/// ended), unless someone is connected to them, so that a developer's
/// PostgreSQL does not fill up run after run. CI starts empty every time.
async fn drop_stale_databases(admin: &str) {
    use sqlx::Connection;
    let Ok(mut conn) = sqlx::PgConnection::connect(admin).await else {
        return;
    };
    let conn = &mut conn;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'rpcguard\\_t\\_%' \
         AND datname NOT IN (SELECT datname FROM pg_stat_activity WHERE datname IS NOT NULL)",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default();
    for name in names {
        let pid = name
            .strip_prefix("rpcguard_t_")
            .and_then(|rest| rest.split_once('_'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
            continue; // a test process still running
        }
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name}"
        )))
        .execute(&mut *conn)
        .await;
    }
}

/// A fresh PostgreSQL database URL, or `None` (after saying why) when no
/// server is configured. Panics when CI requires PostgreSQL and it is
/// missing.
pub async fn fresh_postgres_database() -> Option<String> {
    let Ok(admin) = std::env::var(PG_URL_VAR) else {
        if std::env::var("RPCGUARD_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
            panic!("RPCGUARD_REQUIRE_POSTGRES=1 but {PG_URL_VAR} is not set");
        }
        eprintln!("SKIPPED (PostgreSQL): set {PG_URL_VAR}=postgres://user@host/db to run against PostgreSQL");
        return None;
    };
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to the PostgreSQL admin URL");
    STALE.call_once(|| {
        // Beside the tests, not before them: one DROP DATABASE takes a
        // checkpoint. The thread ends with the test process.
        let admin = admin.clone();
        std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(drop_stale_databases(&admin));
            }
        });
    });
    // The test process's id in the name lets a later run drop it.
    let name = format!(
        "rpcguard_t_{}_{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    Some(format!("{base}/{name}"))
}

impl TestApp {
    /// A server on SQLite with the test defaults.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(StoreKind::Sqlite, |_| {})
            .await
            .expect("sqlite always available")
    }

    /// A server on `kind` with `tweak` applied to the config; `None` when
    /// that store is not available here.
    pub async fn spawn_with(kind: StoreKind, tweak: impl FnOnce(&mut Config)) -> Option<TestApp> {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(data_dir.path());
        if kind == StoreKind::Postgres {
            config.database_url = Some(fresh_postgres_database().await?);
        }
        tweak(&mut config);
        Some(Self::start(config, data_dir).await)
    }

    /// Starts a server with exactly this config.
    pub async fn start(config: Config, data_dir: TempDir) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let parts = rpcguard_accounts::app::reference(&config)
            .await
            .expect("server parts");
        // The server's own store: writes through it are writes of the
        // server process and reach its auth state at once.
        let users = parts.users.clone();
        let accounts = parts.state.clone();
        let store: SharedStore = users.clone();
        let server =
            rpcguard_accounts::app::serve(parts, &config, listener).expect("server starts");
        let addr = server.local_addr();
        TestApp {
            addr,
            url: format!("http://{addr}/"),
            ws_url: format!("ws://{addr}/"),
            config,
            store,
            users,
            accounts,
            data_dir,
            server: Some(server),
            http: reqwest::Client::new(),
        }
    }

    /// The manual clock the server runs on (see [`manual_clock`]); panics
    /// when it runs on the system clock.
    pub fn clock(&self) -> &ManualClock {
        self.config
            .clock
            .as_manual()
            .expect("the app runs on the system clock: give it manual_clock in its config")
    }

    /// The time by the server's clock (Unix seconds).
    pub fn now(&self) -> u64 {
        self.config.clock.unix_now().expect("clock")
    }

    /// The running server's policy handle.
    pub fn policy(&self) -> rpcguard::server::PolicyHandle {
        self.server.as_ref().expect("running").policy()
    }

    /// Stops the server gracefully (calls in flight are answered first).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }

    /// Stops the server and starts a new one on the same config and data
    /// dir (a restart).
    pub async fn restart(self) -> TestApp {
        self.restart_with(|_| {}).await
    }

    /// [`restart`](Self::restart), with `tweak` applied to the config
    /// first.
    pub async fn restart_with(mut self, tweak: impl FnOnce(&mut Config)) -> TestApp {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        let mut config = self.config.clone();
        tweak(&mut config);
        Self::start(config, self.data_dir).await
    }

    /// A jsonrpsee HTTP client, with `Authorization: Bearer <token>` if given.
    pub fn client(&self, token: Option<&str>) -> HttpClient {
        HttpClientBuilder::default()
            .set_headers(bearer_headers(token))
            .request_timeout(Duration::from_secs(30))
            .build(&self.url)
            .expect("http client")
    }

    /// A jsonrpsee WebSocket client, authorized at the upgrade if a token is given.
    pub async fn ws(&self, token: Option<&str>) -> WsClient {
        WsClientBuilder::default()
            .set_headers(bearer_headers(token))
            .build(&self.ws_url)
            .await
            .expect("ws client connects")
    }

    /// Calls `method` over HTTP with params by name.
    pub async fn call(
        &self,
        token: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, ErrorObjectOwned> {
        call(&self.client(token), method, params).await
    }

    /// `sign_up` over HTTP.
    pub async fn sign_up(&self, username: &str, password: &str) -> Result<Value, ErrorObjectOwned> {
        self.call(
            None,
            "sign_up",
            json!({ "username": username, "password": password }),
        )
        .await
    }

    /// `sign_in` over HTTP.
    pub async fn sign_in(&self, username: &str, password: &str) -> Result<Value, ErrorObjectOwned> {
        self.call(
            None,
            "sign_in",
            json!({ "username": username, "password": password }),
        )
        .await
    }

    /// Signs `username` up with [`PASSWORD`], signs in, returns the token.
    pub async fn signed_in(&self, username: &str) -> String {
        self.sign_up(username, PASSWORD).await.expect("sign_up");
        let token = self.sign_in(username, PASSWORD).await.expect("sign_in");
        token["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// POSTs a raw body; returns status and parsed body (`Null` if empty).
    pub async fn post_raw(
        &self,
        body: impl Into<reqwest::Body>,
        headers: HeaderMap,
    ) -> (u16, Value) {
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .headers(headers)
            .body(body)
            .send()
            .await
            .expect("post");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }
}

/// Signs `username` up with [`PASSWORD`] and in through `client`; returns
/// the access token.
pub async fn signed_in_through(client: &impl ClientT, username: &str) -> String {
    let credentials = json!({"username": username, "password": PASSWORD});
    call(client, "sign_up", credentials.clone())
        .await
        .expect("sign_up");
    call(client, "sign_in", credentials).await.expect("sign_in")["access_token"]
        .as_str()
        .expect("token")
        .to_owned()
}

/// `Authorization: Bearer <token>` (or no header).
pub fn bearer_headers(token: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header value"),
        );
    }
    headers
}

/// Headers with a raw `Authorization` value.
pub fn authorization(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(value).expect("header value"),
    );
    headers
}

/// Calls `method` with params by name on any jsonrpsee client; a JSON-RPC
/// error comes back as `Err`, anything else panics.
pub async fn call(
    client: &impl ClientT,
    method: &str,
    params: Value,
) -> Result<Value, ErrorObjectOwned> {
    let mut object = jsonrpsee::core::params::ObjectParams::new();
    if let Value::Object(map) = params {
        for (key, value) in map {
            object.insert(&key, value).expect("param");
        }
    }
    match client.request::<Value, _>(method, object).await {
        Ok(value) => Ok(value),
        Err(ClientError::Call(err)) => Err(err),
        Err(other) => panic!("transport error calling {method}: {other}"),
    }
}

/// Calls `method` with params by position.
pub async fn call_positional(
    client: &impl ClientT,
    method: &str,
    params: Vec<Value>,
) -> Result<Value, ErrorObjectOwned> {
    let mut array = ArrayParams::new();
    for value in params {
        array.insert(value).expect("param");
    }
    match client.request::<Value, _>(method, array).await {
        Ok(value) => Ok(value),
        Err(ClientError::Call(err)) => Err(err),
        Err(other) => panic!("transport error calling {method}: {other}"),
    }
}

/// Valid token claims for `sub` (issued now by the system clock, 10
/// minutes to live, our issuer and audience), changed by `edit`: the base
/// of every forged token.
pub fn claims_for(sub: &str, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let now = rpcguard_accounts::clock::unix_now().expect("clock");
    claims_at(now, sub, edit)
}

/// [`claims_for`], issued at `now` (an app's time, [`TestApp::now`]).
pub fn claims_at(
    now: u64,
    sub: &str,
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> Value {
    let mut map = json!({
        "sub": sub, "iat": now, "exp": now + 600,
        "iss": "rpcguard", "aud": "rpcguard", "jti": "forged"
    })
    .as_object()
    .cloned()
    .expect("object");
    edit(&mut map);
    Value::Object(map)
}

/// The claims of a token, read without checking its signature (the test
/// reads what the server put in it).
pub fn token_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// Asserts a `-32001` with this reason.
pub fn assert_unauthenticated(result: Result<Value, ErrorObjectOwned>, reason: &str) {
    let err = result.expect_err("expected -32001");
    assert_eq!(err.code(), -32001, "{err:?}");
    assert_eq!(err.message(), "Unauthenticated");
    let data: Value = serde_json::from_str(err.data().expect("data").get()).expect("json");
    assert_eq!(data, json!({ "reason": reason }), "{err:?}");
}

/// Asserts an error with this code and message.
pub fn assert_error(
    result: Result<Value, ErrorObjectOwned>,
    code: i32,
    message: &str,
) -> ErrorObjectOwned {
    let err = result.expect_err("expected an error");
    assert_eq!((err.code(), err.message()), (code, message), "{err:?}");
    err
}

/// Writes one test per store: `NAME::sqlite` and `NAME::postgres`, with an
/// optional config tweak: `async fn name(app) config(c) { c.x = 1; } { body }`.
#[macro_export]
macro_rules! both_stores {
    ($(async fn $name:ident($app:ident) $(config($cfg:ident) $tweak:block)? $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[allow(unused_variables)]
                fn tweak(config: &mut rpcguard_accounts::config::Config) {
                    $( let $cfg = config; $tweak )?
                }

                async fn run($app: $crate::helpers::TestApp) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let app = $crate::helpers::TestApp::spawn_with(
                        $crate::helpers::StoreKind::Sqlite, tweak).await;
                    run(app.expect("sqlite")).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(rpcguard_no_postgres, ignore = "PostgreSQL: set RPCGUARD_TEST_DATABASE_URL=postgres://user:pw@host/db")]
                async fn postgres() {
                    let app = $crate::helpers::TestApp::spawn_with(
                        $crate::helpers::StoreKind::Postgres, tweak).await;
                    if let Some(app) = app {
                        run(app).await
                    }
                }
            }
        )*
    };
}

/// An `rpcguard serve` child process (for tests that need real processes:
/// several instances, `kill -9`). Killed on drop.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub url: String,
    /// Everything the process wrote to stderr so far is appended here by a
    /// reader thread.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServerProcess {
    /// Starts `rpcguard serve --addr 127.0.0.1:0 ARGS` with `env`, and waits
    /// for its "listening" line. Unless ARGS say otherwise: `--bcrypt-cost 4`
    /// and `--signup-per-ip 0`.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        use std::io::BufRead;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rpcguard"));
        command
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("RPCGUARD_SECRET")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if !args.contains(&"--bcrypt-cost") {
            command.args(["--bcrypt-cost", "4"]);
        }
        // Tests sign many accounts up from one address: no sign-up budget
        // unless the test sets one.
        if !args.contains(&"--signup-per-ip") {
            command.args(["--signup-per-ip", "0"]);
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start rpcguard serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                // Text: the plain line; JSON: the "rpcguard listening" event.
                let listening = line
                    .strip_prefix("rpcguard listening on http://")
                    .map(|rest| rest.trim_end_matches('/').to_owned())
                    .or_else(|| {
                        let event: Value = serde_json::from_str(&line).ok()?;
                        (event["message"] == "rpcguard listening")
                            .then(|| event["addr"].as_str().map(str::to_owned))
                            .flatten()
                    });
                if let Some(addr) = listening {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                if let Ok(mut log) = sink.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        let addr: SocketAddr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "server did not start: {}",
                    log.lock().map(|l| l.clone()).unwrap_or_default()
                )
            })
            .parse()
            .expect("address");
        ServerProcess {
            child,
            addr,
            url: format!("http://{addr}/"),
            log,
        }
    }

    /// A jsonrpsee HTTP client for this process.
    pub fn client(&self, token: Option<&str>) -> HttpClient {
        HttpClientBuilder::default()
            .set_headers(bearer_headers(token))
            .build(&self.url)
            .expect("client")
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The log, once `done` holds for it (10 s at most): the server writes
    /// its `INFO` lines up to 50 ms after they happen (the batched log), so
    /// a test that looks for a line it just caused waits for it here.
    pub fn log_when(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if done(&log) {
                return log;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not so after 10 s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Sends SIGTERM and waits (blocking) up to 20 s for the exit; `None`
    /// if the process is still running then.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.sigterm();
        self.wait_for_exit()
    }

    /// Waits (blocking) up to 20 s for the process to exit.
    pub fn wait_for_exit(&mut self) -> Option<std::process::ExitStatus> {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            if started.elapsed() > Duration::from_secs(20) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `rpcguard serve --addr 127.0.0.1:0 ARGS` with `env` (and no
/// `RPCGUARD_SECRET` unless given) and expects it to refuse to start: it must
/// exit with a failure before it listens. Returns what it wrote to stderr.
/// A server that starts instead is killed and the test fails.
pub fn serve_refused(args: &[&str], env: &[(&str, &str)]) -> String {
    use std::io::Read;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rpcguard"));
    command
        .args(["serve", "--addr", "127.0.0.1:0", "--bcrypt-cost", "4"])
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RPCGUARD_SECRET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("start rpcguard serve");
    let mut stderr = child.stderr.take().expect("stderr");
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut buf) {
            if let Ok(mut log) = sink.lock() {
                log.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        let started = log
            .lock()
            .map(|l| l.contains("rpcguard listening"))
            .unwrap_or(false);
        if started || std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
            panic!(
                "rpcguard serve {args:?} started instead of refusing:\n{}",
                log.lock().map(|l| l.clone()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = reader.join();
    let stderr = log.lock().map(|l| l.clone()).unwrap_or_default();
    assert!(!status.success(), "exit status {status}: {stderr}");
    stderr
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens a WebSocket session by hand (so the test controls every byte and
/// can stop reading), with `extra` request headers.
pub async fn ws_connect(addr: SocketAddr, extra: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET / HTTP/1.1\r\nhost: {addr}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.expect("101 head");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// A client frame (masked, with a zero key so the payload reads as is).
pub fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// Reads one server frame: (opcode, payload).
pub async fn server_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await.expect("frame head");
    let len = match head[1] & 0x7f {
        126 => u64::from(stream.read_u16().await.expect("len16")),
        127 => stream.read_u64().await.expect("len64"),
        n => u64::from(n),
    };
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload).await.expect("payload");
    (head[0] & 0x0f, payload)
}

/// Sends `text` as one WebSocket message and returns the next text
/// message (pings skipped).
pub async fn ws_exchange(ws: &mut TcpStream, text: &str) -> String {
    ws.write_all(&client_frame(0x1, true, text.as_bytes()))
        .await
        .expect("send");
    loop {
        let (opcode, payload) = server_frame(ws).await;
        if opcode == 0x1 {
            return String::from_utf8(payload).expect("utf8");
        }
    }
}

impl TestApp {
    /// Grants `scope` to `user` through the server's own store (an
    /// in-process write).
    pub async fn grant(&self, user: &str, scope: &str) {
        let (user, scope) = user_and_scope(user, scope);
        self.store.grant(&user, &[scope]).await.expect("grant");
    }

    /// Revokes `scope` from `user` through the server's own store.
    pub async fn revoke(&self, user: &str, scope: &str) {
        let (user, scope) = user_and_scope(user, scope);
        self.store.revoke(&user, &[scope]).await.expect("revoke");
    }

    /// The answer to `method` after a write made by another process (the
    /// CLI): on SQLite the very next call must see it, so it is called
    /// once; on PostgreSQL the write arrives through the change feed
    /// within a bound, so it is called until `seen` holds (1 s at most).
    pub async fn after_external_write(
        &self,
        token: &str,
        method: &str,
        seen: impl Fn(&Result<Value, ErrorObjectOwned>) -> bool,
    ) -> Result<Value, ErrorObjectOwned> {
        let started = std::time::Instant::now();
        loop {
            let answer = self.call(Some(token), method, json!({})).await;
            if self.config.database_url.is_none()
                || seen(&answer)
                || started.elapsed() > Duration::from_secs(1)
            {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Calls `require_scopes` on `client` until it is allowed (or denied, as
/// `allowed` says), within `within`; returns how long that took. Every
/// other answer on the way must be the other outcome: `true`, or -32099.
pub async fn require_scopes_becomes(
    client: &impl ClientT,
    allowed: bool,
    within: Duration,
) -> Duration {
    let started = std::time::Instant::now();
    loop {
        let answer = call(client, "require_scopes", json!({})).await;
        match &answer {
            Ok(value) => assert_eq!(value, &json!(true)),
            Err(denied) => assert_eq!(denied.code(), -32099, "{denied:?}"),
        }
        if answer.is_ok() == allowed {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "not {} within {within:?}",
            if allowed { "allowed" } else { "denied" }
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Runs `command` with `stdin` written to its standard input and its
/// output captured.
pub fn output_with_stdin(mut command: std::process::Command, stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the command");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn user_and_scope(
    user: &str,
    scope: &str,
) -> (rpcguard_accounts::Username, rpcguard_accounts::Scope) {
    (
        rpcguard_accounts::Username::parse(user).expect("valid username"),
        rpcguard_accounts::Scope::parse(scope).expect("valid scope"),
    )
}

/// A Node script's run that asked for grants: how it ended, its stdout and
/// its stderr.
pub struct NodeFlow {
    pub status: std::process::ExitStatus,
    pub transcript: String,
    pub errors: String,
}

/// Runs `command` (a Node script driving a flow, stdio piped here) for at
/// most 180 s. Each `GRANT <user> <scope>` line it prints is handled by
/// `grant` and answered with `granted` on its stdin, so the script can go
/// on once the scope is held. `what` names the flow in a timeout's panic.
pub async fn node_flow<F, Fut>(
    mut command: std::process::Command,
    what: &str,
    mut grant: F,
) -> NodeFlow
where
    F: FnMut(String, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::Stdio;
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("node runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut transcript = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        match tokio::time::timeout_at(deadline, lines.recv()).await {
            Ok(Some(line)) => {
                if let Some(request) = line.strip_prefix("GRANT ") {
                    let (user, scope) = request.split_once(' ').expect("GRANT <user> <scope>");
                    grant(user.to_owned(), scope.to_owned()).await;
                    writeln!(stdin, "granted").expect("answer the flow");
                }
                transcript.push_str(&line);
                transcript.push('\n');
            }
            // stdout closed: the process is ending.
            Ok(None) => break,
            Err(_) => {
                let _ = child.kill();
                panic!("{what} did not end within 180 s:\n{transcript}");
            }
        }
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait for node");
    NodeFlow {
        status,
        transcript,
        errors: errors.join().unwrap_or_default(),
    }
}

/// The `kid` and private material of the signing key in `data_dir`'s key set.
pub fn signing_key(data_dir: &std::path::Path) -> (String, Vec<u8>) {
    let set = rpcguard_accounts::keys::file::read_key_set(
        &data_dir.join(rpcguard_accounts::keys::KEYS_FILE_NAME),
    )
    .expect("key set");
    let key = set.signing().expect("signing key");
    (key.kid.clone(), key.material().expect("material"))
}

/// The key set of the database at `url` (PostgreSQL), read on a thread of
/// its own so that sync test code can call it inside the runtime.
pub fn database_key_set(url: &str) -> rpcguard_accounts::keys::KeySet {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            rpcguard_accounts::keys::DbKeySet::connect(&url)
                .await
                .expect("connect")
                .load()
                .await
                .expect("read the key set")
                .expect("the database has a key set")
        })
    })
    .join()
    .expect("join")
}

/// The `kid` and private material of `app`'s signing key: from its data
/// dir's key set on SQLite, from its database's on PostgreSQL.
pub fn app_signing_key(app: &TestApp) -> (String, Vec<u8>) {
    match &app.config.database_url {
        None => signing_key(app.data_dir.path()),
        Some(url) => {
            let set = database_key_set(url);
            let key = set.signing().expect("signing key");
            (key.kid.clone(), key.material().expect("material"))
        }
    }
}

/// Builds the `api_key` example of the `rpcguard` crate (another package
/// of the workspace, so `cargo test` here does not build it; when it is
/// up to date this does nothing).
pub fn build_api_key_example() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let built = std::process::Command::new(cargo)
        .args(["build", "-q", "-p", "rpcguard", "--example", "api_key"])
        .status()
        .expect("cargo build --example api_key");
    assert!(built.success(), "cargo build -p rpcguard --example api_key");
}

/// An example program (`examples/NAME.rs`, built by `cargo test`) that
/// printed `listening on URL`; killed on drop.
pub struct ExampleProcess {
    child: std::process::Child,
    /// The URL it listens on.
    pub url: String,
}

impl ExampleProcess {
    /// Runs the example `name` with `command`'s arguments and environment
    /// set by `setup`, and waits for its `listening on` line.
    pub fn start(
        name: &str,
        setup: impl FnOnce(&mut std::process::Command) -> &mut std::process::Command,
    ) -> ExampleProcess {
        use std::io::BufRead;
        let exe = std::env::current_exe().expect("test exe");
        let profile = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target/<profile>");
        let mut command = std::process::Command::new(profile.join("examples").join(name));
        setup(&mut command)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("run examples/{name} (built by cargo test): {e}"));
        let mut line = String::new();
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        stdout.read_line(&mut line).expect("listening line");
        // Later lines (an example may print more) are read and dropped, so
        // that the example never writes to a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("examples/{name} did not say where it listens: {line:?}"))
            .to_owned();
        ExampleProcess { child, url }
    }

    /// The process id (to send it a signal).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `within` for the process to exit; its status, if it did.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ExampleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
