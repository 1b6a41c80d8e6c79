//! What executes one JSON-RPC message, on HTTP and WebSocket alike: the
//! security middleware over the handlers ([`Pipeline`]), with the batch
//! limit, and [`execute`], which normalises the ids jsonrpsee cannot carry
//! ([`super::ids`]) before and puts them back after.

use bytes::Bytes;
use jsonrpsee::core::middleware::{Batch, BatchEntry, BatchEntryErr, Notification, RpcServiceT};
use jsonrpsee::core::server::helpers::prepare_error;
use jsonrpsee::core::server::MethodResponse;
use jsonrpsee::types::error::{reject_too_big_batch_request, ErrorCode};
use jsonrpsee::types::{ErrorObject, Id, InvalidRequest, Request};
use jsonrpsee::Extensions;
use serde_json::value::RawValue;

use super::dispatch::{self, start, Answer, DocumentAnswer, Executor};
use super::guard::SecurityService;
use super::ids::{self, Normalized, Restore};

/// The security middleware over the handlers, and the batch limit.
pub(crate) struct Pipeline {
    service: SecurityService<Executor>,
    max_batch_len: usize,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("max_batch_len", &self.max_batch_len)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// `service` answers every call; a batch may hold `max_batch_len`.
    pub(crate) fn new(service: SecurityService<Executor>, max_batch_len: usize) -> Self {
        Pipeline {
            service,
            max_batch_len,
        }
    }

    /// The answer to one message; every call in it carries `extensions`
    /// (the caller's credentials and address).
    pub(crate) async fn answer(&self, body: &[u8], extensions: Extensions) -> Answer {
        match start(body) {
            Some((b'{', message)) => self.single(message, extensions).await,
            Some((b'[', message)) => self.batch(message, extensions).await,
            _ => MethodResponse::error(Id::Null, ErrorObject::from(ErrorCode::ParseError)).into(),
        }
    }

    /// The answer to one call already parsed from a message that
    /// [`start`]s with `{`.
    pub(crate) async fn call(&self, mut req: Request<'_>, extensions: Extensions) -> Answer {
        req.extensions = extensions;
        self.service.answer(req).await
    }

    async fn single(&self, body: &[u8], extensions: Extensions) -> Answer {
        if let Ok(req) = serde_json::from_slice::<Request>(body) {
            self.call(req, extensions).await
        } else if let Ok(mut notification) = serde_json::from_slice::<Notification>(body) {
            notification.extensions = extensions;
            self.service.notification(notification).await.into()
        } else {
            let (id, code) = prepare_error(body);
            MethodResponse::error(id, ErrorObject::from(code)).into()
        }
    }

    async fn batch(&self, body: &[u8], extensions: Extensions) -> Answer {
        let Ok(entries) = serde_json::from_slice::<Vec<&RawValue>>(body) else {
            return MethodResponse::error(Id::Null, ErrorObject::from(ErrorCode::ParseError))
                .into();
        };
        if entries.len() > self.max_batch_len {
            return MethodResponse::error(
                Id::Null,
                reject_too_big_batch_request(self.max_batch_len),
            )
            .into();
        }
        let batch: Vec<_> = entries
            .into_iter()
            .map(|entry| {
                let text = entry.get();
                if let Ok(mut req) = serde_json::from_str::<Request>(text) {
                    req.extensions = extensions.clone();
                    Ok(BatchEntry::Call(req))
                } else if let Ok(mut notification) = serde_json::from_str::<Notification>(text) {
                    notification.extensions = extensions.clone();
                    Ok(BatchEntry::Notification(notification))
                } else {
                    let id = serde_json::from_str::<InvalidRequest>(text)
                        .map_or(Id::Null, |invalid| invalid.id);
                    Err(BatchEntryErr::new(id, ErrorCode::InvalidRequest.into()))
                }
            })
            .collect();
        self.service.batch(Batch::from(batch)).await
    }
}

/// What one JSON-RPC message (a request or a batch) came to.
pub(crate) enum Outcome {
    /// The answer (every JSON-RPC answer, errors included, goes with
    /// HTTP 200), with the ids jsonrpsee cannot carry put back.
    Answer(String),
    /// The OpenRPC document's answer, its pieces not joined yet.
    Document(DocumentAnswer),
    /// Answered here, nothing executed (an id of an invalid type, …).
    Refused(&'static str),
    /// Notifications only: nothing to send back.
    Nothing,
}

/// Runs one message through the pipeline, for HTTP and WebSocket alike:
/// ids normalised first ([`super::ids`]), every call carrying the caller's
/// `extensions`.
pub(crate) async fn execute(pipeline: &Pipeline, body: Bytes, extensions: Extensions) -> Outcome {
    // The common message, one call whose id jsonrpsee can carry, is parsed
    // once: `ids::normalize` would leave it as it is.
    if let Some((b'{', message)) = dispatch::start(&body) {
        if let Some(req) = dispatch::plain_call(message) {
            return finish(pipeline.call(req, extensions).await, None);
        }
    }
    let (body, restore) = match ids::normalize(body) {
        Normalized::AsIs(body) => (body, None),
        Normalized::Rewritten(body, restore) => (body, Some(restore)),
        Normalized::Invalid(answer) => return Outcome::Refused(answer),
    };
    finish(pipeline.answer(&body, extensions).await, restore)
}

/// The outcome of `response`, with the ids of `restore` put back.
fn finish(response: Answer, restore: Option<Restore>) -> Outcome {
    if response.is_notification() {
        return Outcome::Nothing;
    }
    let response = match (response, &restore) {
        (Answer::Document(answer), None) => return Outcome::Document(answer),
        (response, _) => response,
    };
    let answer = response.into_text();
    Outcome::Answer(match restore {
        Some(restore) => restore.apply(answer),
        None => answer,
    })
}
