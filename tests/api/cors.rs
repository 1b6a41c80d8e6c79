//! CORS (`ServerConfig::cors_origins`, `--cors-origin`): the headers over
//! plain HTTP here, and a real headless Chromium calling the API from a
//! page on a listed origin and on another
//! (`tests/clients/browser/cors.mjs`).

use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::docs_page::chromium;
use crate::helpers::*;

/// A tiny static server on 127.0.0.1 answering every request with one
/// empty page; its origin (`http://127.0.0.1:PORT`).
async fn page_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let origin = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let page = "<!doctype html><title>an app</title><p>an app on another origin</p>";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    origin
}

async fn app_with_cors(origins: &[&str]) -> TestApp {
    let origins: Vec<String> = origins.iter().map(|o| (*o).to_owned()).collect();
    TestApp::spawn_with(StoreKind::Sqlite, |config| {
        config.server.cors_origins = origins;
    })
    .await
    .expect("sqlite")
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.http
        .request(reqwest::Method::OPTIONS, &app.url)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("preflight")
}

#[tokio::test]
async fn only_listed_origins_get_cors_headers() {
    let app = app_with_cors(&["https://app.example.com/"]).await;
    let allowed = preflight(&app, "https://app.example.com").await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        header(&allowed, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    let methods = header(&allowed, "access-control-allow-methods").expect("methods");
    assert!(methods.contains("POST"), "{methods}");
    let headers = header(&allowed, "access-control-allow-headers").expect("headers");
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    assert_eq!(header(&allowed, "access-control-allow-credentials"), None);

    // The document is readable from the listed origin.
    let doc = app
        .http
        .get(format!("{}openrpc.json", app.url))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("GET");
    assert_eq!(
        header(&doc, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );

    // Another origin (a look-alike too) gets no CORS header at all.
    for other in [
        "https://evil.example.com",
        "https://app.example.com.evil.net",
        "null",
    ] {
        let refused = preflight(&app, other).await;
        assert_eq!(refused.status(), 405, "{other}");
        let cors_headers: Vec<_> = refused
            .headers()
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .collect();
        assert!(cors_headers.is_empty(), "{other}: {cors_headers:?}");
        let call = app
            .http
            .post(&app.url)
            .header("origin", other)
            .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "rpc.discover"}))
            .send()
            .await
            .expect("POST");
        assert_eq!(
            header(&call, "access-control-allow-origin"),
            None,
            "{other}"
        );
    }

    // Off by default: not even the preflight is answered.
    let plain = TestApp::spawn().await;
    let refused = preflight(&plain, "https://app.example.com").await;
    assert_eq!(refused.status(), 405);
    assert_eq!(header(&refused, "access-control-allow-origin"), None);
}

#[test]
fn a_malformed_origin_stops_the_server() {
    for bad in ["*", "app.example.com", "https://app.example.com/path"] {
        let stderr = serve_refused(&["--cors-origin", bad], &[]);
        assert!(stderr.contains("CORS origin"), "{bad}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_chromium,
    ignore = "Chromium: apt-get install chromium; npm ci --prefix tests/clients/browser"
)]
async fn a_page_on_a_listed_origin_calls_the_api_in_chromium() {
    let Some((chromium, dir)) = chromium() else {
        return;
    };
    let (allowed, other) = (page_server().await, page_server().await);
    let app = app_with_cors(&[allowed.as_str()]).await;
    let token = app.signed_in("cors_user").await;
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(dir.join("cors.mjs"))
            .arg(format!("http://{}/", app.addr))
            .arg(&chromium)
            .arg(format!("{allowed}/"))
            .arg(format!("{other}/"))
            .arg(&token)
            .current_dir(dir)
            .output()
            .expect("run node")
    })
    .await
    .expect("join");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && transcript.contains("OK cors: all checks passed"),
        "the browser flow failed ({}):\n{transcript}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{transcript}");
}
