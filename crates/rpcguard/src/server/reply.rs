//! The plain HTTP answers of the server's own paths, on both transports.

use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::StatusCode;
use jsonrpsee::server::{HttpBody, HttpResponse};

/// A response with a fixed body (JSON when not empty).
pub(crate) fn plain(status: StatusCode, body: &'static str) -> HttpResponse {
    let mut response = HttpResponse::new(HttpBody::from(body));
    *response.status_mut() = status;
    if !body.is_empty() {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    response
}
