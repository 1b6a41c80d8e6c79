//! `GET /docs`: an interactive page for the API, built in the browser from
//! the live `rpc.discover`, served from inside the binary.
//!
//! The page lists every method (summary, description, params, result,
//! errors, examples, the scopes it needs; schemas unfold from
//! `components.schemas`; descriptions in a small Markdown subset), has an
//! **Authorize** dialog for every scheme of the document (sign in with
//! `sign_in`, sign up with `sign_up`, paste a token, or paste an API key)
//! and a form per method that sends the call over HTTP or a WebSocket
//! session and shows the exact request, the answer and a curl command.
//! After `sign_in` it keeps the session: it calls `refresh` before the
//! access token's `exp` and on `expired_token` (then sends the call once
//! more), and says "Signed out: the session ended" when the server ends it.
//!
//! # Why a small dependency-free page
//!
//! Three files (`index.html`, `app.js`, `app.css`), plain JavaScript with no
//! framework and no build step, compiled in with `include_str!`:
//!
//! - nothing to fetch: no CDN, no network, so it works on an air-gapped
//!   host and under a strict Content-Security-Policy;
//! - nothing to rebuild: the files in the repository are the files served,
//!   so a fresh machine builds the same page with `cargo build` alone, and
//!   there is no bundled output that could go stale;
//! - small (tens of KiB, against several hundred for a bundled JSON-Schema
//!   form library) and readable in one sitting by a reviewer; the OpenRPC
//!   parts it needs (params as content descriptors, `$ref` into
//!   `components.schemas`, `x-security`) are a few hundred lines.
//!
//! # Security of the page
//!
//! - Server data (names, descriptions, examples, answers) is put into the
//!   page as text (`textContent`), never parsed as HTML: a description with
//!   `<script>` or `<img onerror>` is shown, not run.
//! - `Content-Security-Policy`: `script-src 'self'` (no inline script, no
//!   `eval`), no third-party origin anywhere, `connect-src` limited to this
//!   host over HTTP(S) and WebSocket (the `ws:`/`wss:` origins of the
//!   request's `Host` are named, since not every browser counts them in
//!   `'self'`), `frame-ancestors 'none'`, `form-action 'none'`,
//!   `base-uri 'none'`; plus `X-Content-Type-Options: nosniff` and
//!   `Referrer-Policy: no-referrer`.
//! - The token lives in the tab only (`sessionStorage`, never
//!   `localStorage` or a cookie) and is sent as `Authorization: Bearer …`;
//!   a browser's WebSocket cannot set headers, so a WebSocket session
//!   carries it as the upgrade's `access_token` query parameter, which the
//!   server never logs.
//!
//! # Paths
//!
//! Every URL in the page is relative: the page is `docs`, its files are
//! `docs/app.js` and `docs/app.css`, and the JSON-RPC endpoint is the
//! page's directory (`./`). So the page works unchanged when a proxy serves
//! the server under a path prefix (`https://example.com/rpc/docs`).
//! `/docs/` redirects to `../docs` for the same reason.
//!
//! Caching as for the OpenRPC document ([`DOCUMENT_PATH`](super::DOCUMENT_PATH)):
//! `Cache-Control: no-cache` and a strong `ETag`, `304` to `If-None-Match`.
//! [`ServerConfig::docs_page`](super::ServerConfig::docs_page) turns the page off
//! (every path under it then answers 404).

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST, LOCATION, X_CONTENT_TYPE_OPTIONS};
use hyper::{Method, StatusCode};
use jsonrpsee::server::{HttpBody, HttpResponse};

use super::resource::Resource;

/// The path of the docs page.
pub const DOCS_PATH: &str = "/docs";

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// The page's files, made once per server.
#[derive(Debug, Clone)]
pub(crate) struct DocsPage {
    index: Resource,
    script: Resource,
    style: Resource,
}

impl DocsPage {
    /// The page and its files.
    pub(crate) fn new() -> Self {
        DocsPage {
            index: Resource::new(
                Bytes::from_static(INDEX_HTML.as_bytes()),
                "text/html; charset=utf-8",
            ),
            script: Resource::new(
                Bytes::from_static(APP_JS.as_bytes()),
                "text/javascript; charset=utf-8",
            ),
            style: Resource::new(
                Bytes::from_static(APP_CSS.as_bytes()),
                "text/css; charset=utf-8",
            ),
        }
    }

    /// The size of the page's files together, bytes.
    pub(crate) fn size(&self) -> usize {
        self.index.len() + self.script.len() + self.style.len()
    }

    /// Whether `path` belongs to the page (`/docs` and everything under
    /// `/docs/`).
    pub(crate) fn owns(path: &str) -> bool {
        path == DOCS_PATH
            || path
                .strip_prefix(DOCS_PATH)
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// Answers a request for a path [`owns`](Self::owns) accepts.
    pub(crate) fn respond(&self, path: &str, method: &Method, headers: &HeaderMap) -> HttpResponse {
        let resource = match path.strip_prefix(DOCS_PATH) {
            Some("") => Some(&self.index),
            Some("/app.js") => Some(&self.script),
            Some("/app.css") => Some(&self.style),
            _ => None,
        };
        let mut response = match resource {
            Some(resource) => resource.respond(method, headers),
            None if path == "/docs/" => {
                let mut response = HttpResponse::new(HttpBody::from(""));
                *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
                response
                    .headers_mut()
                    .insert(LOCATION, HeaderValue::from_static("../docs"));
                response
            }
            None => {
                let mut response = HttpResponse::new(HttpBody::from(""));
                *response.status_mut() = StatusCode::NOT_FOUND;
                response
            }
        };
        add_security_headers(response.headers_mut(), headers.get(HOST));
        response
    }
}

/// The Content-Security-Policy of the page for a request that named
/// `host`: only this server's own files and endpoint, over HTTP(S) and
/// WebSocket.
pub(crate) fn content_security_policy(host: Option<&HeaderValue>) -> String {
    let ws = host
        .and_then(|h| h.to_str().ok())
        .filter(|h| is_plain_host(h))
        .map(|h| format!(" ws://{h} wss://{h}"))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'{ws}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// Whether a `Host` value is a host name, an IPv4 address or a bracketed
/// IPv6 address, with an optional port, and nothing that could end or add
/// a CSP directive.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

fn add_security_headers(headers: &mut HeaderMap, host: Option<&HeaderValue>) {
    if let Ok(csp) = HeaderValue::from_str(&content_security_policy(host)) {
        headers.insert(hyper::header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        hyper::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        hyper::header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owns_the_page_and_its_files_only() {
        for path in ["/docs", "/docs/", "/docs/app.js", "/docs/x"] {
            assert!(DocsPage::owns(path), "{path}");
        }
        for path in ["/doc", "/docsx", "/", "/api/v1/docs"] {
            assert!(!DocsPage::owns(path), "{path}");
        }
    }

    #[test]
    fn csp_names_the_websocket_origin_of_a_plain_host_only() {
        let csp = content_security_policy(Some(&HeaderValue::from_static("127.0.0.1:8080")));
        assert!(csp.contains("connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080;"));
        let csp = content_security_policy(Some(&HeaderValue::from_static("[::1]:80")));
        assert!(csp.contains("ws://[::1]:80 "));
        for evil in ["a; script-src *", "a b", "x'y", ""] {
            let csp = content_security_policy(Some(&HeaderValue::from_str(evil).expect("value")));
            assert!(csp.contains("connect-src 'self'; "), "{evil}: {csp}");
        }
        assert!(!content_security_policy(None).contains("unsafe"));
    }

    #[test]
    fn assets_are_small_and_reference_nothing_absolute() {
        let page = DocsPage::new();
        assert!(page.size() < 1024 * 1024);
        for asset in [INDEX_HTML, APP_JS, APP_CSS] {
            // The SVG namespace is a name, never fetched.
            let asset = asset.replace("'http://www.w3.org/2000/svg'", "");
            for absolute in ["src=\"/", "href=\"/", "http://", "https://", "url(/"] {
                assert!(!asset.contains(absolute), "{absolute}");
            }
        }
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        }
    }
}
