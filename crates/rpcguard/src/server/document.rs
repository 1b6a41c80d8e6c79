//! `GET /openrpc.json`: the OpenRPC document over plain HTTP.
//!
//! Tools that take a document by URL fetch it with a GET
//! (`open-rpc-generator generate -d URL`, the playground, …), and a
//! JSON-RPC path answers a GET with 405. So the document has a path of its
//! own, on the same port, answering the same bytes `rpc.discover` answers:
//! both come from the one serialization made at start-up. It is served as a
//! [`Resource`]: `Cache-Control: no-cache` with a strong `ETag`, `304` to a
//! conditional request (see [`super::resource`] for why no `max-age`).
//!
//! `GET /` keeps answering 405: content negotiation on a JSON-RPC path
//! (`Accept: application/json`) would not help the tools above, which send
//! `Accept: */*`, and would make the WebSocket upgrade's path mean two
//! things.

use bytes::Bytes;

use super::resource::Resource;

/// The path that answers the OpenRPC document to a `GET`.
pub const DOCUMENT_PATH: &str = "/openrpc.json";

/// The serialized document (the bytes `rpc.discover` answers), served as
/// `application/json`.
pub(crate) fn document_resource(body: Bytes) -> Resource {
    Resource::new(body, "application/json")
}
