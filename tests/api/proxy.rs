//! Behind a real nginx: `deploy/nginx.conf` (its addresses, ports and
//! certificate paths replaced) terminates TLS with a certificate made here
//! and balances two instances on one PostgreSQL database, which trust it
//! (`--trusted-proxies 127.0.0.1`). Clients at different source addresses
//! (127.0.0.2, 127.0.0.3, …) get their own sign-in budgets through it; a
//! forged `X-Forwarded-For` changes nothing, through nginx or straight to
//! an instance.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

const SECRET: &str = "a-shared-signing-key-of-at-least-32-bytes!";
/// The instances' per-address sign-in budget (per minute).
const PER_IP: u32 = 4;

/// nginx running `deploy/nginx.conf` in a temp dir, in the foreground;
/// stopped on drop.
struct Nginx {
    child: std::process::Child,
    dir: tempfile::TempDir,
    port: u16,
}

fn nginx_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("RPCGUARD_NGINX") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("nginx"))
                .find(|path| path.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"))
}

/// A port free now on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A self-signed certificate for 127.0.0.1 and localhost: (cert, key).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        // Not a CA: rustls refuses a CA certificate as a server's.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// `deploy/nginx.conf` with its example values replaced; each must be
/// there, so the file cannot drift from what this test runs.
fn deploy_config(upstreams: &[SocketAddr], port: u16, cert: &Path, key: &Path) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf");
    let mut config = std::fs::read_to_string(&file).expect("deploy/nginx.conf");
    let servers: String = upstreams
        .iter()
        .map(|addr| format!("    server {addr} max_fails=1 fail_timeout=5s;\n"))
        .collect();
    for (example, ours) in [
        (
            "    server 127.0.0.1:8080 max_fails=1 fail_timeout=5s;\n    server 127.0.0.1:8081 max_fails=1 fail_timeout=5s;\n",
            servers,
        ),
        ("listen 443 ssl;", format!("listen 127.0.0.1:{port} ssl;")),
        ("/etc/ssl/rpcguard/fullchain.pem", cert.display().to_string()),
        ("/etc/ssl/rpcguard/privkey.pem", key.display().to_string()),
    ] {
        assert!(config.contains(example), "deploy/nginx.conf lost {example:?}");
        config = config.replace(example, &ours);
    }
    config
}

impl Nginx {
    fn start(upstreams: &[SocketAddr]) -> (Nginx, Vec<u8>) {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = self_signed(dir.path());
        let port = free_port();
        let site = dir.path().join("rpcguard.conf");
        std::fs::write(&site, deploy_config(upstreams, port, &cert, &key)).expect("write");
        let d = dir.path().display();
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;" // workers write their temp files in our dir
        } else {
            ""
        };
        let main = format!(
            "{user}\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  \
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {site};\n}}\n",
            site = site.display()
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, main).expect("write");
        let child = std::process::Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx { child, dir, port };
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}): {}", nginx.error_log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not listen: {}",
                nginx.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let pem = std::fs::read(&cert).expect("cert");
        (nginx, pem)
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.port)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: graceful stop (the workers go with the master).
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGQUIT) };
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTPS client trusting `pem`, connecting from `source`.
fn client_from(source: &str, pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem).expect("pem"))
        .local_address(source.parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client")
}

/// Calls `method` and returns the JSON-RPC answer.
async fn rpc(
    client: &reqwest::Client,
    url: &str,
    method: &str,
    params: Value,
    forged: Option<&str>,
) -> Value {
    let mut request = client
        .post(url)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}));
    if let Some(forged) = forged {
        request = request.header("x-forwarded-for", forged);
    }
    let response = request.send().await.expect("send");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

fn sign_in(password: &str) -> Value {
    json!({"username": "alice", "password": password})
}

/// Wrong passwords from `client` until the budget says -32005; how many
/// were refused with -32002 first.
async fn exhaust(
    client: &reqwest::Client,
    url: &str,
    forged: impl Fn(u32) -> Option<String>,
) -> u32 {
    for attempt in 0..=PER_IP + 2 {
        let answer = rpc(
            client,
            url,
            "sign_in",
            sign_in("wrong password!"),
            forged(attempt).as_deref(),
        )
        .await;
        match answer["error"]["code"].as_i64() {
            Some(-32002) => continue,
            Some(-32005) => return attempt,
            _ => panic!("unexpected answer {answer}"),
        }
    }
    panic!("never throttled after {} attempts", PER_IP + 2);
}

fn code(answer: &Value) -> Option<i64> {
    answer["error"]["code"].as_i64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(rpcguard_no_nginx, rpcguard_no_postgres),
    ignore = "nginx and openssl (Debian's packages) and PostgreSQL (RPCGUARD_TEST_DATABASE_URL) needed"
)]
async fn behind_nginx_each_client_has_its_own_budget() {
    let Some(db) = fresh_postgres_database().await else {
        return;
    };
    let env = [
        ("RPCGUARD_SECRET", SECRET),
        ("RPCGUARD_DATABASE_URL", db.as_str()),
    ];
    let per_ip = PER_IP.to_string();
    let args = [
        "--trusted-proxies",
        "127.0.0.1",
        "--signin-per-ip",
        per_ip.as_str(),
        "--signin-per-account-ip",
        "0",
        "--signin-per-account",
        "0",
        "--drain-delay",
        "0",
    ];
    let a = ServerProcess::start(&args, &env);
    let b = ServerProcess::start(&args, &env);
    let (nginx, pem) = Nginx::start(&[a.addr, b.addr]);
    let url = nginx.url();

    let alice = client_from("127.0.0.2", &pem);
    let bob = client_from("127.0.0.3", &pem);
    let signed_up = rpc(&alice, &url, "sign_up", sign_in(PASSWORD), None).await;
    assert!(signed_up["result"].is_object(), "{signed_up}");
    let ready = alice
        .get(format!("{url}ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);

    // 127.0.0.2 spends its budget (shared by both instances) ...
    let refused = exhaust(&alice, &url, |_| None).await;
    assert!(
        refused >= PER_IP - 1,
        "throttled after {refused} wrong passwords"
    );
    let answer = rpc(&alice, &url, "sign_in", sign_in(PASSWORD), None).await;
    assert_eq!(code(&answer), Some(-32005), "{answer}");
    // ... and forging the header through nginx does not get it a new one:
    // nginx appends the real address, the right-most untrusted.
    let answer = rpc(
        &alice,
        &url,
        "sign_in",
        sign_in(PASSWORD),
        Some("203.0.113.9"),
    )
    .await;
    assert_eq!(code(&answer), Some(-32005), "{answer}");

    // 127.0.0.3 still has its own, on both instances.
    for _ in 0..2 {
        let answer = rpc(&bob, &url, "sign_in", sign_in(PASSWORD), None).await;
        let token = answer["result"]["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("bob signs in: {answer}"));
        let me = bob
            .post(&url)
            .bearer_auth(token)
            .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "get_caller"}))
            .send()
            .await
            .expect("get_caller")
            .json::<Value>()
            .await
            .expect("json");
        assert_eq!(me["result"]["username"], "alice", "{me}");
    }
    // Both instances answered through the proxy (their call lines are
    // written up to 50 ms later: the whole exchange above can take less).
    for server in [&a, &b] {
        server.log_when(|log| log.contains("sign_in"));
    }

    // Straight to an instance, from an untrusted peer, the header is
    // ignored: a new forged address per attempt still spends one budget,
    // 127.0.0.4's.
    let direct = reqwest::Client::builder()
        .local_address("127.0.0.4".parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client");
    let refused = exhaust(&direct, &a.url, |n| Some(format!("198.51.100.{n}"))).await;
    assert!(refused >= PER_IP - 1, "throttled after {refused}");
    // Naming a client that still has budget does not borrow it either.
    let answer = rpc(
        &direct,
        &b.url,
        "sign_in",
        sign_in(PASSWORD),
        Some("127.0.0.3"),
    )
    .await;
    assert_eq!(code(&answer), Some(-32005), "{answer}");
    drop(nginx);
}
