//! `GET /openrpc.json`: the OpenRPC document over plain HTTP.
//!
//! Tools that take a document by URL fetch it with a GET
//! (`open-rpc-generator generate -d URL`, the playground, …), and a
//! JSON-RPC path answers a GET with 405. So the document has a path of its
//! own, on the same port, answering the same bytes `rpc.discover` answers:
//! both come from the one serialization made at start-up.
//!
//! Caching: `Cache-Control: no-cache` with a strong `ETag` (a digest of the
//! bytes). A client may keep the document but asks again each time, and a
//! conditional request (`If-None-Match`) is answered `304` with no body. The
//! document changes only when the server restarts with other methods or
//! settings, so a `max-age` would save one small request at the price of a
//! client holding a stale document after a deployment.
//!
//! `GET /` keeps answering 405: content negotiation on a JSON-RPC path
//! (`Accept: application/json`) would not help the tools above, which send
//! `Accept: */*`, and would make the WebSocket upgrade's path mean two
//! things.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderMap, HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, StatusCode};
use jsonrpsee::server::{HttpBody, HttpResponse};
use sha2::{Digest, Sha256};

/// The path that answers the OpenRPC document to a `GET`.
pub const DOCUMENT_PATH: &str = "/openrpc.json";

/// The serialized document and its entity tag, made once per server.
#[derive(Debug, Clone)]
pub(crate) struct DocumentResource {
    body: Bytes,
    etag: HeaderValue,
}

impl DocumentResource {
    /// Serves `body`, the serialized document (the bytes `rpc.discover`
    /// answers).
    pub(crate) fn new(body: Bytes) -> Self {
        let digest = Sha256::digest(&body);
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        let etag = HeaderValue::from_str(&format!("\"{hex}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("\"openrpc\""));
        DocumentResource { body, etag }
    }

    /// Answers a request for [`DOCUMENT_PATH`]: the document to `GET` and
    /// `HEAD` (`304` when `If-None-Match` names its tag), `405` otherwise.
    pub(crate) fn respond(&self, method: &Method, headers: &HeaderMap) -> HttpResponse {
        if method != Method::GET && method != Method::HEAD {
            let mut response = HttpResponse::new(HttpBody::from(""));
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let (status, body) = if self.matches(headers) {
            (StatusCode::NOT_MODIFIED, Bytes::new())
        } else {
            (StatusCode::OK, self.body.clone())
        };
        let mut response = HttpResponse::new(HttpBody::new(Full::new(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        if status == StatusCode::OK {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        }
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(ETAG, self.etag.clone());
        response
    }

    /// Whether `If-None-Match` names the document's tag (or is `*`). The
    /// comparison is the weak one RFC 9110 §13.1.2 asks for: `W/` ignored.
    fn matches(&self, headers: &HeaderMap) -> bool {
        let ours = self.etag.as_bytes();
        headers
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == ours)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource() -> DocumentResource {
        DocumentResource::new(Bytes::from_static(br#"{"openrpc":"1.3.2"}"#))
    }

    fn if_none_match(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(IF_NONE_MATCH, HeaderValue::from_str(value).expect("value"));
        headers
    }

    #[test]
    fn etag_is_a_quoted_digest_of_the_bytes() {
        let tag = resource().etag.to_str().expect("ascii").to_owned();
        assert_eq!(tag.len(), 34);
        assert!(tag.starts_with('"') && tag.ends_with('"'));
        let other = DocumentResource::new(Bytes::from_static(b"{}"));
        assert_ne!(other.etag, resource().etag);
    }

    #[test]
    fn conditional_requests() {
        let doc = resource();
        let tag = doc.etag.to_str().expect("ascii").to_owned();
        assert!(doc.matches(&if_none_match(&tag)));
        assert!(doc.matches(&if_none_match(&format!("W/{tag}"))));
        assert!(doc.matches(&if_none_match(&format!("\"other\", {tag}"))));
        assert!(doc.matches(&if_none_match("*")));
        assert!(!doc.matches(&if_none_match("\"other\"")));
        assert!(!doc.matches(&HeaderMap::new()));
        let answer = doc.respond(&Method::GET, &if_none_match(&tag));
        assert_eq!(answer.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(answer.headers()[ETAG], doc.etag);
    }

    #[test]
    fn other_methods_are_not_allowed() {
        let answer = resource().respond(&Method::POST, &HeaderMap::new());
        assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(answer.headers()[ALLOW], "GET, HEAD");
    }
}
