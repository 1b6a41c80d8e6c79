//! Executes one JSON-RPC message (a request, a notification or a batch)
//! through the security middleware and the registered handlers.
//!
//! This is the part of jsonrpsee's HTTP service rpcguard needs, taken out
//! of its HTTP wrapping: `gateway.rs` has already read the body, checked
//! the limits and taken the caller's credentials, and a WebSocket session
//! has a message in hand, so building an HTTP request for jsonrpsee (which
//! clones its method table, copies the body once more and builds an HTTP
//! response that is then taken apart again) would only cost time on every
//! call. Both transports call [`Pipeline::answer`](super::pipeline::Pipeline::answer) directly.
//!
//! The handlers are rpcguard's own ([`Handlers`], made by
//! [`Api::method`](crate::Api::method)), not jsonrpsee's `Methods`, and a
//! successful answer is written once ([`respond`]); see [`Executor`] for
//! what jsonrpsee's own path cost on every call.
//!
//! What jsonrpsee 0.26 answers is kept byte for byte (its
//! `handle_rpc_call` and `RpcService`, read from its source): a body whose
//! first non-blank byte (within 128) is neither `{` nor `[` is a parse
//! error; a batch over the limit is `-32010`; an entry that is neither a
//! call nor a notification is `-32600` with its id when it has one; an
//! unknown method is `-32601`.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use jsonrpsee::core::middleware::{Batch, BatchEntry, Notification, RpcServiceT};
use jsonrpsee::core::server::MethodResponse;
use jsonrpsee::core::traits::ToJson;
use jsonrpsee::types::error::{reject_too_big_batch_response, ErrorCode};
use jsonrpsee::types::{ErrorObject, ErrorObjectOwned, Id, Request, TwoPointZero};
use jsonrpsee::{Extensions, ResponsePayload};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::RpcError;
use crate::schema::OpenRpcDocument;
use crate::security::RemoteAddr;

/// One handler with its state bound ([`Api::method`](crate::Api::method)
/// makes them): it reads the call's params and starts the handler, or
/// answers at once (params refused). The future borrows the request (its
/// id), so nothing of it is copied.
pub(crate) type Handler =
    Box<dyn for<'a> Fn(Request<'a>, usize) -> Result<BoxFuture<'a, Answer>, Answer> + Send + Sync>;

/// The handlers by method name.
pub(crate) type Handlers = rustc_hash::FxHashMap<Box<str>, Handler>;

/// Erases a handler's type (the bound makes the closure's lifetimes the
/// ones [`Handler`] names).
pub(crate) fn handler<F>(f: F) -> Handler
where
    F: for<'a> Fn(Request<'a>, usize) -> Result<BoxFuture<'a, Answer>, Answer>
        + Send
        + Sync
        + 'static,
{
    Box::new(f)
}

/// The innermost service: finds the handler of a call and runs it.
///
/// rpcguard keeps its own table rather than jsonrpsee's `Methods`: a
/// jsonrpsee async method clones its context, its callback and the whole
/// extension map (a hash map and each entry boxed anew) on every call, and
/// copies the params; here the handler takes the request as it is.
#[derive(Clone)]
pub(crate) struct Executor {
    handlers: Arc<Handlers>,
    max_response_bytes: usize,
}

impl Executor {
    /// Runs `handlers`, with answers capped at `max_response_bytes`. A
    /// handler still running when its connection's shutdown deadline
    /// ([`ConnectionInfo::deadline`](crate::security::ConnectionInfo)) is
    /// cancelled is dropped and its call answered [`shutting_down`].
    pub(crate) fn new(handlers: Handlers, max_response_bytes: usize) -> Self {
        Executor {
            handlers: Arc::new(handlers),
            max_response_bytes,
        }
    }
}

/// The answer to a call whose handler returned `result`: as jsonrpsee's
/// `MethodResponse::response` writes it, byte for byte, but written once:
/// jsonrpsee parses the text it has just written again to validate it
/// (`RawValue::from_string`), which serde_json's output never needs. An
/// error, an answer over `max_bytes` or a result that fails to serialize
/// goes through jsonrpsee's own path (its error answers).
pub(crate) fn respond<R: Serialize + Clone>(
    id: Id<'_>,
    result: Result<R, RpcError>,
    max_bytes: usize,
) -> Answer {
    let value = match result {
        Ok(value) => value,
        Err(error) => {
            return MethodResponse::response(
                id,
                ResponsePayload::<()>::error(ErrorObjectOwned::from(error)),
                max_bytes,
            )
            .into()
        }
    };
    let text = head_of(&id, 256).and_then(|mut text| {
        serde_json::to_writer(&mut text, &value)?;
        text.push(b'}');
        Ok(text)
    });
    let text = text.ok().and_then(|text| String::from_utf8(text).ok());
    if let Some(text) = text.filter(|text| text.len() <= max_bytes) {
        return Answer::Text(text);
    }
    MethodResponse::response(id, ResponsePayload::success(value), max_bytes).into()
}

/// `{"jsonrpc":"2.0","id":ID,"result":`, the start of a successful answer
/// as jsonrpsee's `Response` serializes it, with room for `more` bytes.
fn head_of(id: &Id<'_>, more: usize) -> Result<Vec<u8>, serde_json::Error> {
    let mut head = Vec::with_capacity(HEAD.len() + 20 + MIDDLE.len() + more);
    head.extend_from_slice(HEAD.as_bytes());
    serde_json::to_writer(&mut head, id)?;
    head.extend_from_slice(MIDDLE.as_bytes());
    Ok(head)
}

/// The start of every successful answer, and what comes between its id
/// and its result (as jsonrpsee's `Response` serializes them).
const HEAD: &str = "{\"jsonrpc\":\"2.0\",\"id\":";
const MIDDLE: &str = ",\"result\":";

/// The answer to a call whose handler was still running at the shutdown
/// deadline: `-32603 Internal error`, `data {"reason":"shutting_down"}`.
fn shutting_down(id: Id<'_>) -> MethodResponse {
    MethodResponse::error(
        id,
        ErrorObject::owned(
            ErrorCode::InternalError.code(),
            ErrorCode::InternalError.message(),
            Some(serde_json::json!({ "reason": "shutting_down" })),
        ),
    )
}

/// The answer to a call or a batch: jsonrpsee's [`MethodResponse`], or
/// text written here.
///
/// jsonrpsee makes a `MethodResponse` by serializing the result and then
/// parsing the whole text again to validate it (`RawValue::from_string`),
/// and a batch's answers are parsed once more when they are joined. For the
/// OpenRPC document (~25 KB, already valid JSON) that parse cost more than
/// a whole `get_caller`; so `rpc.discover` is answered with the document's
/// prepared text ([`Answer::prepared`]), which an HTTP answer sends as it
/// is (no copy into a new string), and batches are joined here, without a
/// parse.
#[derive(Debug)]
pub(crate) enum Answer {
    /// jsonrpsee's answer.
    Response(MethodResponse),
    /// A successful answer (or a batch of answers) written here: valid
    /// JSON by construction.
    Text(String),
    /// A successful answer whose result is the OpenRPC document.
    Document(DocumentAnswer),
}

/// A successful answer whose result is the OpenRPC document: `head`
/// (`{"jsonrpc":"2.0","id":ID,"result":`), the document, then `}`. An
/// HTTP answer sends the three as they are ([`DocumentAnswer::into_pieces`]).
#[derive(Debug)]
pub(crate) struct DocumentAnswer {
    head: String,
    document: OpenRpcDocument,
}

impl DocumentAnswer {
    /// The answer's length in bytes.
    fn len(&self) -> usize {
        self.head.len() + self.document.json().len() + 1
    }

    /// Appends the answer's text to `out`.
    fn push_to(&self, out: &mut String) {
        out.push_str(&self.head);
        out.push_str(self.document.json());
        out.push('}');
    }

    /// The answer's text, joined.
    pub(crate) fn into_text(self) -> String {
        let mut text = String::with_capacity(self.len());
        self.push_to(&mut text);
        text
    }

    /// The answer as the pieces of an HTTP body: the head, the document's
    /// shared bytes (not copied) and the closing brace.
    pub(crate) fn into_pieces(self) -> [Bytes; 3] {
        [
            Bytes::from(self.head),
            self.document.bytes().clone(),
            Bytes::from_static(b"}"),
        ]
    }
}

impl Answer {
    /// `{"jsonrpc":"2.0","id":ID,"result":DOCUMENT}`, byte for byte what
    /// jsonrpsee writes; an answer longer than `max_bytes` becomes
    /// jsonrpsee's oversized-answer error, as before.
    pub(crate) fn prepared(id: Id<'_>, document: &OpenRpcDocument, max_bytes: usize) -> Answer {
        let head = head_of(&id, 0)
            .ok()
            .and_then(|head| String::from_utf8(head).ok());
        let Some(head) = head else {
            return Answer::Response(MethodResponse::error(
                id,
                ErrorObject::from(ErrorCode::InternalError),
            ));
        };
        let answer = DocumentAnswer {
            head,
            document: document.clone(),
        };
        if answer.len() > max_bytes {
            // jsonrpsee's own error for an answer over the limit.
            return Answer::Response(MethodResponse::response(
                id,
                jsonrpsee::ResponsePayload::success(document.raw()),
                max_bytes,
            ));
        }
        Answer::Document(answer)
    }

    /// The error code, when the answer is an error.
    pub(crate) fn as_error_code(&self) -> Option<i32> {
        match self {
            Answer::Response(response) => response.as_error_code(),
            Answer::Text(_) | Answer::Document(_) => None,
        }
    }

    /// Whether there is nothing to send (notifications only).
    pub(crate) fn is_notification(&self) -> bool {
        match self {
            Answer::Response(response) => response.is_notification(),
            Answer::Text(_) | Answer::Document(_) => false,
        }
    }

    /// The answer's length in bytes.
    pub(crate) fn len(&self) -> usize {
        match self {
            Answer::Response(response) => response.as_json().get().len(),
            Answer::Text(text) => text.len(),
            Answer::Document(answer) => answer.len(),
        }
    }

    /// Appends the answer's text to `out`.
    pub(crate) fn push_to(&self, out: &mut String) {
        match self {
            Answer::Response(response) => out.push_str(response.as_json().get()),
            Answer::Text(text) => out.push_str(text),
            Answer::Document(answer) => answer.push_to(out),
        }
    }

    /// The answer's text, owned.
    pub(crate) fn into_text(self) -> String {
        match self {
            Answer::Response(response) => String::from(Box::<str>::from(response.into_json())),
            Answer::Text(text) => text,
            Answer::Document(answer) => answer.into_text(),
        }
    }
}

impl From<MethodResponse> for Answer {
    fn from(response: MethodResponse) -> Self {
        Answer::Response(response)
    }
}

impl ToJson for Answer {
    fn to_json(&self) -> Result<Box<RawValue>, serde_json::Error> {
        match self {
            Answer::Response(response) => Ok(response.to_json()),
            answer => {
                let mut text = String::with_capacity(answer.len());
                answer.push_to(&mut text);
                RawValue::from_string(text)
            }
        }
    }
}

impl RpcServiceT for Executor {
    type MethodResponse = Answer;
    type BatchResponse = Answer;
    type NotificationResponse = MethodResponse;

    fn call<'a>(&self, req: Request<'a>) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        // The connection's own handle (no counter every connection shares).
        let conn = req.extensions.get::<RemoteAddr>().map(|r| r.conn.clone());
        let (id, method) = (req.id.clone(), req.method.clone());
        let running = match self.handlers.get(method.as_ref()) {
            Some(handler) => handler(req, self.max_response_bytes),
            None => Err(MethodResponse::error(
                id.clone(),
                ErrorObject::from(ErrorCode::MethodNotFound),
            )
            .into()),
        };
        // What the deadline needs is cheap: `id` borrows the message (no
        // copy), and the token is watched only when the handler does not
        // finish at its first poll.
        async move {
            match (running, conn) {
                (Err(answer), _) => answer,
                (Ok(future), None) => future.await,
                (Ok(future), Some(conn)) => tokio::select! {
                    biased;
                    answer = future => answer,
                    () = conn.deadline.cancelled() => {
                        tracing::warn!(method = %method, "call cut off at the shutdown deadline");
                        shutting_down(id).into()
                    }
                },
            }
        }
    }

    fn batch<'a>(&self, batch: Batch<'a>) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        // The security layer runs each entry through its own `call`; this
        // is for a stack without it.
        let this = self.clone();
        async move { each_entry(&this, batch, this.max_response_bytes).await }
    }

    fn notification<'a>(
        &self,
        n: Notification<'a>,
    ) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        // jsonrpsee does not run handlers for notifications either.
        std::future::ready(MethodResponse::notification().with_extensions(n.extensions))
    }
}

/// The answer to `batch`, each entry run through `service`'s own `call`
/// or `notification` in turn (so a layer's checks apply to every entry),
/// the answers capped at `max_response_bytes` in all. As jsonrpsee: a batch
/// of notifications only is answered with nothing, an empty one with
/// -32600, one whose answers pass the cap with jsonrpsee's -32011 error.
/// The answers are joined as text, not parsed again (see [`Answer`]).
pub(crate) async fn each_entry<S>(
    service: &S,
    batch: Batch<'_>,
    max_response_bytes: usize,
) -> Answer
where
    S: RpcServiceT<NotificationResponse = MethodResponse>,
    S::MethodResponse: Into<Answer>,
{
    // As jsonrpsee's `BatchResponseBuilder`: `[`, then each answer and a
    // comma (the last one becomes `]`), the cap checked before each.
    let mut joined = String::with_capacity(2048);
    joined.push('[');
    let mut got_notification = false;
    for entry in batch.into_iter() {
        let answer: Answer = match entry {
            Ok(BatchEntry::Call(req)) => service.call(req).await.into(),
            Ok(BatchEntry::Notification(n)) => {
                got_notification = true;
                service.notification(n).await;
                continue;
            }
            Err(err) => {
                let (err, id) = err.into_parts();
                MethodResponse::error(id, err).into()
            }
        };
        if answer.len() + joined.len() + 1 > max_response_bytes {
            return MethodResponse::error(
                Id::Null,
                reject_too_big_batch_response(max_response_bytes),
            )
            .into();
        }
        answer.push_to(&mut joined);
        joined.push(',');
    }
    if joined.len() > 1 {
        joined.pop();
        joined.push(']');
        Answer::Text(joined)
    } else if got_notification {
        MethodResponse::notification().into()
    } else {
        MethodResponse::error(Id::Null, ErrorObject::from(ErrorCode::InvalidRequest)).into()
    }
}

/// The first byte of a message that is not blank, if it comes within the
/// first 128 bytes (as jsonrpsee reads it), and the message from there.
pub(crate) fn start(body: &[u8]) -> Option<(u8, &[u8])> {
    let at = body
        .iter()
        .take(128)
        .position(|b| !b.is_ascii_whitespace())?;
    Some((body[at], &body[at..]))
}

/// A call as jsonrpsee's `Request` reads it, with the id left raw.
#[derive(Deserialize)]
struct Call<'a> {
    jsonrpc: TwoPointZero,
    #[serde(borrow)]
    id: &'a RawValue,
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(borrow)]
    params: Option<Cow<'a, RawValue>>,
}

/// One call whose id is `null`, an unescaped string or an integer that
/// fits `u64`: the request jsonrpsee would make of `message`, read in one
/// pass. `None` for anything else (a notification, a batch, an unusual
/// id, invalid JSON), which takes the general path.
///
/// jsonrpsee reads the id as an untagged enum, which tries each variant in
/// turn and formats an error message for each miss; the common ids are
/// classified here from their text instead.
pub(crate) fn plain_call(message: &[u8]) -> Option<Request<'_>> {
    let call: Call = serde_json::from_slice(message).ok()?;
    let raw = call.id.get();
    let id = match raw.as_bytes().first()? {
        b'n' => Id::Null, // the only JSON value starting with n
        b'"' => Id::Str(Cow::Borrowed(serde_json::from_str::<&str>(raw).ok()?)),
        b'0'..=b'9' => Id::Number(raw.parse().ok()?),
        _ => return None,
    };
    Some(Request {
        jsonrpc: call.jsonrpc,
        id,
        method: call.method,
        params: call.params,
        extensions: Extensions::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::plain_call;
    use jsonrpsee::types::Request;

    /// Wherever `plain_call` reads a call, jsonrpsee reads the same one.
    #[test]
    fn plain_call_agrees_with_jsonrpsee() {
        let messages = [
            r#"{"jsonrpc":"2.0","id":1,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":0,"method":"m","params":[1,2]}"#,
            r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"m","params":{"a":1}}"#,
            r#"{"jsonrpc":"2.0","id":"abc","method":"m","params":null}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"m","extra":true}"#,
            r#"{"method":"m","id":"x","jsonrpc":"2.0"}"#,
            r#"{"jsonrpc":"2.0","id":"a\"b","method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":"é","method":"m\u0041"}"#,
            r#"{"jsonrpc":"2.0","id":-1,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":-0,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":1e3,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":18446744073709551616,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":{},"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":[1],"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":true,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"m"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"m"}"#,
            r#"{"id":1,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"m""#,
        ];
        let mut read = 0;
        for message in messages {
            let ours = plain_call(message.as_bytes());
            let theirs = serde_json::from_str::<Request>(message).ok();
            if let Some(ours) = ours {
                read += 1;
                let theirs = theirs.unwrap_or_else(|| panic!("jsonrpsee refuses {message}"));
                assert_eq!(ours.id, theirs.id, "{message}");
                assert_eq!(ours.method, theirs.method, "{message}");
                assert_eq!(
                    ours.params.map(|p| p.get().to_owned()),
                    theirs.params.map(|p| p.get().to_owned()),
                    "{message}"
                );
            }
        }
        assert_eq!(read, 7, "the common calls take the one-pass path");
    }
}
