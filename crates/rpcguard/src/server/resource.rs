//! A fixed body served over plain HTTP `GET`/`HEAD` with a strong `ETag`:
//! the OpenRPC document ([`super::document`]) and the docs page's files
//! ([`super::docs`]).
//!
//! Caching: `Cache-Control: no-cache` with a strong `ETag` (a digest of the
//! bytes). A client may keep the body but asks again each time, and a
//! conditional request (`If-None-Match`) is answered `304` with no body.
//! These bodies change only when the server restarts with another build or
//! other settings, so a `max-age` would save one small request at the price
//! of a client holding a stale copy after a deployment.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderMap, HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, StatusCode};
use jsonrpsee::server::{HttpBody, HttpResponse};
use sha2::{Digest, Sha256};

/// A body, its media type and its entity tag, made once per server.
#[derive(Debug, Clone)]
pub(crate) struct Resource {
    body: Bytes,
    content_type: HeaderValue,
    etag: HeaderValue,
}

impl Resource {
    /// Serves `body` as `content_type`.
    pub(crate) fn new(body: Bytes, content_type: &'static str) -> Self {
        let digest = Sha256::digest(&body);
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        let etag = HeaderValue::from_str(&format!("\"{hex}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("\"resource\""));
        Resource {
            body,
            content_type: HeaderValue::from_static(content_type),
            etag,
        }
    }

    /// The body's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.body.len()
    }

    /// Answers a request: the body to `GET` and `HEAD` (`304` when
    /// `If-None-Match` names its tag), `405` otherwise.
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
            headers.insert(CONTENT_TYPE, self.content_type.clone());
        }
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(ETAG, self.etag.clone());
        response
    }

    /// Whether `If-None-Match` names the tag (or is `*`). The comparison is
    /// the weak one RFC 9110 §13.1.2 asks for: `W/` ignored.
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

    fn resource() -> Resource {
        Resource::new(
            Bytes::from_static(br#"{"openrpc":"1.3.2"}"#),
            "application/json",
        )
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
        let other = Resource::new(Bytes::from_static(b"{}"), "application/json");
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
