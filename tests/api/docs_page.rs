//! `GET /docs`: the interactive docs page. Its headers, files and switch
//! over HTTP here; the page itself in a real headless Chromium
//! (`tests/clients/browser/docs-page.mjs`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rpcguard::{CallContext, Example, Method, NoParams, RpcError};
use rpcguard_accounts::methods::accounts::Accounts;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::helpers::*;

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.http
        .get(format!("http://{}{path}", app.addr))
        .send()
        .await
        .expect("GET")
}

/// The `src` and `href` values of an HTML text.
fn linked_urls(html: &str) -> Vec<String> {
    let mut urls = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(at) = rest.find(attr) {
            rest = &rest[at + attr.len()..];
            let end = rest.find('"').expect("closing quote");
            urls.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    urls
}

#[tokio::test]
async fn docs_page_is_served_with_a_strict_policy() {
    let app = TestApp::spawn().await;
    let page = get(&app, "/docs").await;
    assert_eq!(page.status(), 200);
    assert_eq!(
        header(&page, "content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        header(&page, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(header(&page, "cache-control").as_deref(), Some("no-cache"));
    assert_eq!(
        header(&page, "referrer-policy").as_deref(),
        Some("no-referrer")
    );
    let csp = header(&page, "content-security-policy").expect("CSP");
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    assert!(directives.contains(&"default-src 'none'"), "{csp}");
    assert!(directives.contains(&"script-src 'self'"), "{csp}");
    assert!(directives.contains(&"frame-ancestors 'none'"), "{csp}");
    let host = app.addr.to_string();
    assert!(
        directives.contains(&format!("connect-src 'self' ws://{host} wss://{host}").as_str()),
        "the WebSocket origin of the page's own host is allowed: {csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");
    // No third-party origin: every source is a keyword, `data:` (the
    // empty favicon) or this host's WebSocket origin.
    for source in directives.iter().flat_map(|d| d.split_whitespace().skip(1)) {
        assert!(
            source.starts_with('\'')
                || source == "data:"
                || source == format!("ws://{host}")
                || source == format!("wss://{host}"),
            "unexpected source {source} in {csp}"
        );
    }

    let etag = header(&page, "etag").expect("etag");
    let html = page.text().await.expect("body");
    assert!(html.contains("<script src=\"docs/app.js\""), "{html}");
    assert!(!html.contains("<script>"), "no inline script");
    let again = app
        .http
        .get(format!("http://{}/docs", app.addr))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("conditional GET");
    assert_eq!(again.status(), 304);

    for (path, kind) in [
        ("/docs/app.js", "text/javascript; charset=utf-8"),
        ("/docs/app.css", "text/css; charset=utf-8"),
    ] {
        let asset = get(&app, path).await;
        assert_eq!(asset.status(), 200, "{path}");
        assert_eq!(header(&asset, "content-type").as_deref(), Some(kind));
        assert_eq!(
            header(&asset, "x-content-type-options").as_deref(),
            Some("nosniff")
        );
        assert!(header(&asset, "etag").is_some());
    }

    let head = app
        .http
        .head(format!("http://{}/docs", app.addr))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), 200);
    let post = app
        .http
        .post(format!("http://{}/docs", app.addr))
        .send()
        .await
        .expect("POST");
    assert_eq!(post.status(), 405);
    assert_eq!(get(&app, "/docs/nothing.js").await.status(), 404);
    assert_eq!(get(&app, "/docsx").await.status(), 404);
}

#[tokio::test]
async fn docs_slash_redirects_relatively_to_the_page() {
    let app = TestApp::spawn().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let answer = client
        .get(format!("http://{}/docs/", app.addr))
        .send()
        .await
        .expect("GET");
    assert_eq!(answer.status(), 308);
    // Relative, so that a path prefix added by a proxy is kept.
    assert_eq!(header(&answer, "location").as_deref(), Some("../docs"));
}

#[tokio::test]
async fn docs_files_are_relative_small_and_their_size_is_in_the_readme() {
    let app = TestApp::spawn().await;
    let page_url = format!("http://{}/docs", app.addr);
    let html = get(&app, "/docs").await.text().await.expect("html");
    let mut total = html.len();
    let mut files = 0;
    for url in linked_urls(&html) {
        if url.starts_with("data:") {
            continue;
        }
        assert!(
            !url.starts_with('/') && !url.contains("//"),
            "{url} is not relative to the page"
        );
        let absolute = reqwest::Url::parse(&page_url)
            .and_then(|base| base.join(&url))
            .expect("url");
        let body = app
            .http
            .get(absolute)
            .send()
            .await
            .expect("GET")
            .bytes()
            .await
            .expect("body");
        total += body.len();
        files += 1;
    }
    assert_eq!(files, 2, "app.js and app.css");
    assert!(total < 1024 * 1024, "{total} bytes");

    // The guide states the size, rounded up to a KiB.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/docs-page.md"))
        .expect("docs/docs-page.md");
    let kib = total.div_ceil(1024);
    let stated = format!("{kib} KiB of assets");
    assert!(
        readme.contains(&stated),
        "docs/docs-page.md should say \"{stated}\" ({total} bytes)"
    );
}

#[tokio::test]
async fn docs_can_be_turned_off() {
    let app = TestApp::spawn_with(StoreKind::Sqlite, |c| c.server.docs_page = false)
        .await
        .expect("sqlite");
    for path in ["/docs", "/docs/", "/docs/app.js", "/docs/app.css"] {
        assert_eq!(get(&app, path).await.status(), 404, "{path}");
    }
    // The rest of the server is unchanged.
    assert_eq!(get(&app, "/openrpc.json").await.status(), 200);
    assert_eq!(get(&app, "/health").await.status(), 200);
}

#[tokio::test]
async fn serve_docs_flag_turns_the_page_off() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data").display().to_string();
    let http = reqwest::Client::new();
    for (flag, expected) in [(None, 200), (Some("off"), 404), (Some("on"), 200)] {
        let mut args = vec!["--data-dir", data.as_str()];
        if let Some(value) = flag {
            args.extend(["--docs", value]);
        }
        let server = ServerProcess::start(&args, &[]);
        let answer = http
            .get(format!("http://{}/docs", server.addr))
            .send()
            .await
            .expect("GET /docs");
        assert_eq!(answer.status(), expected, "--docs {flag:?}");
    }
}

/// Params of the embedder's method whose docs carry markup.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ProbeParams {
    /// A note. <b onmouseover="window.__xss='param'">bold?</b>
    note: String,
    /// How many.
    count: u32,
    /// Shout?
    loud: bool,
    /// Some tags.
    tags: Vec<String>,
}

/// A method description that tries to run script in the docs page.
pub const XSS_DESCRIPTION: &str = "Echoes its params. <script>window.__xss='script'</script> \
    <img src=x onerror=\"window.__xss='img'\"> <a href=\"javascript:window.__xss='link'\">click</a>\n\n\
    Markdown: `note` is **echoed**, *as is*; see [the spec](https://www.jsonrpc.org/specification), \
    not [this](javascript:window.__xss='md').";

/// The reference server plus an embedder's method whose summary,
/// description and param docs contain markup, on a temp data dir (for
/// `rpcguard user grant`). When the reference server has no `sign_out`
/// yet, a stand-in that counts its calls is declared, so that the page's
/// Sign out is seen calling it; the count is returned (`None` when the
/// real one is there).
async fn server_with_markup_in_its_docs(
) -> (rpcguard::RunningServer, TestApp, Option<Arc<AtomicUsize>>) {
    let app = TestApp::spawn().await;
    let mut parts = rpcguard_accounts::app::reference(&app.config)
        .await
        .expect("parts");
    parts
        .api
        .method(
            Method::new("xss_probe")
                .public()
                .summary("<img src=x onerror=\"window.__xss='summary'\"> echo")
                .description(XSS_DESCRIPTION)
                .example(Example::new(
                    "echo",
                    json!({"note": "<b>hi</b>", "count": 3, "loud": true, "tags": ["a", "b"]}),
                    json!({"note": "<b>hi</b>", "count": 3, "loud": true, "tags": ["a", "b"]}),
                )),
            |params: ProbeParams, _: CallContext<Accounts>| async move { Ok::<_, RpcError>(params) },
        )
        .expect("declare xss_probe");
    let mut sign_outs = None;
    if !parts.api.names().any(|name| name == "sign_out") {
        let count = Arc::new(AtomicUsize::new(0));
        sign_outs = Some(count.clone());
        parts
            .api
            .method(
                Method::new("sign_out")
                    .summary("Stand-in for sign_out (sessions): counts its calls")
                    .security(rpcguard::BEARER.require(())),
                move |_: NoParams, _: CallContext<Accounts>| {
                    let count = count.clone();
                    async move {
                        count.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, RpcError>(true)
                    }
                },
            )
            .expect("declare the sign_out stand-in");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = rpcguard_accounts::app::serve(parts, &app.config, listener).expect("serve");
    (server, app, sign_outs)
}

/// Chromium for the browser test, or `None` (after saying why); CI sets
/// RPCGUARD_REQUIRE_CHROMIUM=1 to make that a failure.
pub(crate) fn chromium() -> Option<(PathBuf, &'static Path)> {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/browser"
    ));
    let binary = match std::env::var_os("RPCGUARD_CHROMIUM") {
        Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("chromium"))
                .find(|p| p.is_file())
        }),
    };
    let driver = dir.join("node_modules/playwright-core").is_dir();
    match binary {
        Some(binary) if driver => Some((binary, dir)),
        _ => {
            if std::env::var("RPCGUARD_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1") {
                panic!("RPCGUARD_REQUIRE_CHROMIUM=1 but Chromium ({binary:?}) or {}/node_modules/playwright-core is missing", dir.display());
            }
            eprintln!("SKIPPED (Chromium): apt-get install chromium; npm ci --prefix tests/clients/browser");
            None
        }
    }
}

/// Runs `rpcguard user grant USER SCOPE` on `app`'s data dir.
fn cli_grant(app: &TestApp, user: &str, scope: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_rpcguard"))
        .args(["user", "grant", user, scope, "--data-dir"])
        .arg(app.data_dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run rpcguard user grant");
    assert!(
        out.status.success(),
        "rpcguard user grant failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_chromium,
    ignore = "Chromium: apt-get install chromium; npm ci --prefix tests/clients/browser"
)]
async fn docs_page_in_headless_chromium() {
    let Some((chromium, dir)) = chromium() else {
        return;
    };
    let (server, app, sign_outs) = server_with_markup_in_its_docs().await;
    let url = format!("http://{}/", server.local_addr());
    let mut command = Command::new("node");
    command
        .arg(dir.join("docs-page.mjs"))
        .arg(&url)
        .arg(&chromium)
        .current_dir(dir);
    // RPCGUARD_SCREENSHOTS=1 rewrites the README's screenshots in docs/.
    if std::env::var("RPCGUARD_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&shots).expect("docs/");
        command.arg(shots);
    }
    let flow = node_flow(command, "the browser flow", |user, scope| {
        let app = &app;
        async move { tokio::task::block_in_place(|| cli_grant(app, &user, &scope)) }
    })
    .await;
    let (status, transcript, errors) = (flow.status, flow.transcript, flow.errors);
    assert!(
        status.success(),
        "the browser flow failed ({status}):\n{transcript}\n{errors}"
    );
    assert!(
        transcript.contains("OK docs page: all checks passed"),
        "{transcript}"
    );
    eprintln!("{transcript}");
    if let Some(count) = sign_outs {
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "Sign out called sign_out once"
        );
    }
    server.stop().await;
}

/// Runs `tests/clients/browser/docs-session.mjs` against `url` in `mode`
/// (with `extra` arguments) and checks it passed.
async fn session_flow(chromium: &Path, dir: &Path, url: &str, mode: &[&str]) {
    let mut command = Command::new("node");
    command
        .arg(dir.join("docs-session.mjs"))
        .arg(url)
        .arg(chromium)
        .args(mode)
        .current_dir(dir);
    let flow = node_flow(command, "the browser session flow", |_, _| async {}).await;
    assert!(
        flow.status.success(),
        "the browser session flow failed ({}):\n{}\n{}",
        flow.status,
        flow.transcript,
        flow.errors
    );
    assert!(
        flow.transcript
            .contains("OK docs session: all checks passed"),
        "{}",
        flow.transcript
    );
    eprintln!("{}", flow.transcript);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_chromium,
    ignore = "Chromium: apt-get install chromium; npm ci --prefix tests/clients/browser"
)]
async fn docs_page_keeps_the_session_through_expiry_and_shows_its_end() {
    let Some((chromium, dir)) = chromium() else {
        return;
    };
    let data = tempfile::tempdir().expect("temp dir");
    let data_dir = data.path().display().to_string();
    let server = ServerProcess::start(&["--data-dir", &data_dir, "--token-ttl", "3"], &[]);
    session_flow(&chromium, dir, &server.url, &["expiry"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_chromium,
    ignore = "Chromium: apt-get install chromium; npm ci --prefix tests/clients/browser"
)]
async fn docs_page_authorizes_an_api_key_scheme() {
    let Some((chromium, dir)) = chromium() else {
        return;
    };
    build_api_key_example();
    let key = "writer-key-for-the-docs-page";
    let example = ExampleProcess::start("api_key", |command| {
        command
            .env("ADDR", "127.0.0.1:0")
            .env("WRITER_KEY", key)
            .env("RUST_LOG", "warn")
    });
    session_flow(&chromium, dir, &example.url, &["api-key", key]).await;
}
