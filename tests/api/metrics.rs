//! Metrics (issue 25): `/metrics` on a listener of its own, read by a real
//! Prometheus (Debian's `prometheus` package, started here) while a
//! scripted load runs; its query API must count what the load did, and
//! `promtool check metrics` must accept the output. Marked `ignored` when
//! Prometheus is not installed, unless `RPCGUARD_REQUIRE_PROMETHEUS=1`
//! (CI), where it is required.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;

/// The metrics address a server printed (`rpcguard metrics on http://…`).
fn metrics_url(server: &ServerProcess) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log();
        if let Some(url) = log
            .lines()
            .find_map(|line| line.strip_prefix("rpcguard metrics on "))
        {
            return url.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "no metrics line in:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A Prometheus server scraping `target` (host:port) every 500 ms; killed
/// on drop.
struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    async fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\n\
                 scrape_configs:\n  - job_name: rpcguard\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("config");
        let port = free_port();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = http
                .get(format!("{}/-/ready", prometheus.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return prometheus;
            }
            assert!(Instant::now() < deadline, "Prometheus did not become ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The value of an instant query's single sample (None: no sample).
    async fn value(&self, query: &str) -> Option<f64> {
        let answer: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        answer["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
    }

    /// Waits until `query` answers `expected`.
    async fn wait_for(&self, query: &str, expected: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let value = self.value(query).await;
            if value == Some(expected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{query}: {value:?}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_prometheus,
    ignore = "Prometheus: install Debian's prometheus package (prometheus and promtool on PATH)"
)]
async fn prometheus_scrapes_what_the_load_did() {
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().to_str().expect("utf-8");
    let mut args = vec!["--data-dir", data_dir, "--metrics-addr", "127.0.0.1:0"];
    args.extend(NO_SIGNIN_THROTTLE);
    let server = ServerProcess::start(&args, &[]);
    let url = metrics_url(&server);
    let target = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    let prometheus = Prometheus::start(&target).await;

    // The scripted load.
    let client = server.client(None);
    for name in ["ann", "ben", "cyd"] {
        call(
            &client,
            "sign_up",
            json!({ "username": name, "password": PASSWORD }),
        )
        .await
        .expect("sign_up");
    }
    let token = call(
        &client,
        "sign_in",
        json!({ "username": "ann", "password": PASSWORD }),
    )
    .await
    .expect("sign_in")["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    for _ in 0..2 {
        let err = call(
            &client,
            "sign_in",
            json!({ "username": "ben", "password": "wrong password" }),
        )
        .await
        .expect_err("wrong password");
        assert_eq!(err.code(), -32002);
    }
    let signed_in = server.client(Some(&token));
    for _ in 0..5 {
        call(&signed_in, "get_caller", json!({}))
            .await
            .expect("get_caller");
    }
    for _ in 0..4 {
        call(&client, "get_caller", json!({}))
            .await
            .expect_err("no token");
    }
    for _ in 0..2 {
        call(&client, "no_such_method", json!({}))
            .await
            .expect_err("unknown");
    }

    for (query, expected) in [
        (
            r#"rpcguard_calls_total{method="get_caller",outcome="ok"}"#,
            5.0,
        ),
        (
            r#"rpcguard_calls_total{method="get_caller",outcome="-32001"}"#,
            4.0,
        ),
        (
            r#"rpcguard_calls_total{method="sign_up",outcome="ok"}"#,
            3.0,
        ),
        (
            r#"rpcguard_calls_total{method="sign_in",outcome="-32002"}"#,
            2.0,
        ),
        (
            r#"rpcguard_calls_total{method="<unknown>",outcome="-32601"}"#,
            2.0,
        ),
        (r#"rpcguard_sign_ins_total{outcome="ok"}"#, 1.0),
        (r#"rpcguard_sign_ins_total{outcome="failed"}"#, 2.0),
        (r#"rpcguard_sessions_opened_total"#, 1.0),
        (
            r#"rpcguard_auth_failures_total{reason="missing_token"}"#,
            4.0,
        ),
        (
            r#"rpcguard_call_duration_seconds_count{method="get_caller"}"#,
            9.0,
        ),
        (r#"rpcguard_build_info"#, 1.0),
        (
            r#"rpcguard_store_duration_seconds_count{op="create_user"}"#,
            3.0,
        ),
        (r#"rpcguard_store_errors_total"#, 0.0),
    ] {
        prometheus.wait_for(query, expected).await;
    }
    assert!(
        prometheus
            .value("process_resident_memory_bytes")
            .await
            .is_some_and(|rss| rss > 1e6),
        "process metrics"
    );

    // promtool accepts the text format; nothing secret is in it.
    let text = reqwest::get(&url)
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    let out = output_with_stdin(
        {
            let mut command = std::process::Command::new("promtool");
            command.args(["check", "metrics"]);
            command
        },
        &text,
    );
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in [PASSWORD, "wrong password", token.as_str(), "no_such_method"] {
        assert!(!text.contains(secret), "{secret} in the metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_not_on_the_api_port() {
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().to_str().expect("utf-8");
    let server = ServerProcess::start(
        &["--data-dir", data_dir, "--metrics-addr", "127.0.0.1:0"],
        &[],
    );
    let api = reqwest::get(format!("{}metrics", server.url))
        .await
        .expect("get");
    assert_ne!(api.status(), 200, "/metrics on the API port");
    let metrics = reqwest::get(metrics_url(&server)).await.expect("get");
    assert_eq!(metrics.status(), 200);
    assert!(metrics
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain; version=0.0.4")));
}
