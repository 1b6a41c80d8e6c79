//! WebSocket sessions.
//!
//! rpcguard runs the WebSocket transport itself (tokio-tungstenite) and
//! hands every message to the same jsonrpsee service that answers HTTP
//! POSTs, as an in-memory request carrying the session's credentials. So
//! one path executes calls on both transports, and the session has limits
//! that jsonrpsee 0.26's own transport lacks (it spawns a task per message
//! with no bound, so a client that never reads its answers grows the
//! server's memory without limit):
//!
//! - **calls in flight**: at most `max_in_flight` messages are being
//!   answered or waiting to be written. The session reads the next message
//!   only when one of them has been written to the socket, so a client that
//!   does not read its answers stops being read (TCP back-pressure) and
//!   holds at most `max_in_flight` × (request + answer) bytes;
//! - **message size**: a message (all its fragments together) over the
//!   request body limit closes the session with code 1009, instead of
//!   leaving the rest of its frames to be read as the next message;
//! - **liveness**: a ping every `ping_interval`; a session from which
//!   nothing (no message, no pong) has arrived for `idle_timeout` while the
//!   server waited to read is closed with code 1001;
//! - **shutdown**: on stop the session reads nothing more, lets the calls in
//!   flight finish and be written, then closes with code 1001.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use jsonrpsee::server::HttpResponse;
use jsonrpsee::Extensions;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::gateway::{execute, plain, Connection, Outcome, RpcService};

/// Limits of a WebSocket session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WsSettings {
    /// Largest message (all fragments), bytes.
    pub max_message_bytes: usize,
    /// Messages being answered or waiting to be written, at most.
    pub max_in_flight: usize,
    /// Time between pings.
    pub ping_interval: Duration,
    /// Time without any frame from the client after which it is closed.
    pub idle_timeout: Duration,
}

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// An answer ready to be written, with the in-flight permit of its call.
struct Outgoing {
    text: Utf8Bytes,
    _permit: OwnedSemaphorePermit,
}

/// Answers a WebSocket upgrade request (RFC 6455 §4.2.2) and starts the
/// session once hyper hands over the connection.
pub(crate) fn upgrade<S: RpcService>(
    mut req: Request<Incoming>,
    rpc: S,
    extensions: Extensions,
    conn: Arc<Connection>,
) -> HttpResponse {
    if req.method() != Method::GET {
        return plain(StatusCode::BAD_REQUEST, "");
    }
    if req
        .headers()
        .get(SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        let mut response = plain(StatusCode::UPGRADE_REQUIRED, "");
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    }
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
        return plain(StatusCode::BAD_REQUEST, "");
    };
    let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) else {
        return plain(StatusCode::BAD_REQUEST, "");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let tasks = conn.tasks.clone();
    tasks.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => run(upgraded, rpc, extensions, &conn).await,
            Err(err) => tracing::debug!(error = %err, "WebSocket upgrade failed"),
        }
        // `conn` (and with it the connection slot) lives as long as the session.
        drop(conn);
    });
    let mut response = plain(StatusCode::SWITCHING_PROTOCOLS, "");
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// Runs one session until the client leaves, the session idles out, a
/// protocol error, or the server stops.
async fn run<S: RpcService>(upgraded: Upgraded, rpc: S, extensions: Extensions, conn: &Connection) {
    let settings = conn.shared.ws;
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(settings.max_message_bytes))
        .max_frame_size(Some(settings.max_message_bytes));
    let socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let (sink, mut stream) = socket.split();
    let (answers, to_write) = mpsc::unbounded_channel();
    let (close_tx, close_rx) = oneshot::channel();
    let writer = tokio::spawn(write_answers(
        sink,
        to_write,
        close_rx,
        settings.ping_interval,
    ));
    let in_flight = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
    let close = read_calls(&mut stream, &rpc, &extensions, &answers, &in_flight, conn).await;
    // The writer ends once every call in flight has sent its answer (each
    // holds a clone of `answers`), then sends the close frame.
    drop(answers);
    let _ = close_tx.send(close);
    let _ = writer.await;
}

/// Reads messages and starts a call for each, at most `max_in_flight` at a
/// time. Returns the close frame to send, if any.
async fn read_calls<S: RpcService>(
    stream: &mut SplitStream<Socket>,
    rpc: &S,
    extensions: &Extensions,
    answers: &mpsc::UnboundedSender<Outgoing>,
    in_flight: &Arc<Semaphore>,
    conn: &Connection,
) -> Option<CloseFrame> {
    let settings = conn.shared.ws;
    let stopped = conn.stop.clone().shutdown();
    tokio::pin!(stopped);
    let going_away = || close_frame(CloseCode::Away, "server shutting down");
    loop {
        let permit = tokio::select! {
            permit = in_flight.clone().acquire_owned() => permit.ok()?,
            _ = &mut stopped => return Some(going_away()),
        };
        let next = tokio::select! {
            next = tokio::time::timeout(settings.idle_timeout, stream.next()) => next,
            _ = &mut stopped => return Some(going_away()),
        };
        let data = match next {
            Err(_) => return Some(close_frame(CloseCode::Away, "idle timeout")),
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return None,
            Ok(Some(Ok(Message::Text(text)))) => Bytes::from(text),
            Ok(Some(Ok(Message::Binary(data)))) => data,
            // Pings are answered by tungstenite; pongs only prove liveness.
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(WsError::Capacity(err)))) => {
                tracing::debug!(error = %err, "WebSocket message over the limit");
                return Some(close_frame(CloseCode::Size, "message too big"));
            }
            Ok(Some(Err(err))) => {
                tracing::debug!(error = %err, "WebSocket session ended by an error");
                return None;
            }
        };
        let rpc = rpc.clone();
        let extensions = extensions.clone();
        let answers = answers.clone();
        tokio::spawn(async move {
            if let Some(text) = call(rpc, extensions, data).await {
                let _ = answers.send(Outgoing {
                    text,
                    _permit: permit,
                });
            }
        });
    }
}

/// Writes answers (releasing their permits once written) and pings; at the
/// end, the close frame the reader chose.
async fn write_answers(
    mut sink: SplitSink<Socket, Message>,
    mut to_write: mpsc::UnboundedReceiver<Outgoing>,
    close: oneshot::Receiver<Option<CloseFrame>>,
    ping_interval: Duration,
) {
    let start = tokio::time::Instant::now() + ping_interval;
    let mut pings = tokio::time::interval_at(start, ping_interval);
    loop {
        tokio::select! {
            answer = to_write.recv() => match answer {
                Some(answer) => {
                    if sink.send(Message::Text(answer.text)).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            _ = pings.tick() => {
                if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
        }
    }
    if let Ok(Some(frame)) = close.await {
        let _ = sink.send(Message::Close(Some(frame))).await;
    }
    let _ = sink.close().await;
}

/// Executes one message through the JSON-RPC service; the answer, or
/// `None` for notifications.
async fn call<S: RpcService>(rpc: S, extensions: Extensions, body: Bytes) -> Option<Utf8Bytes> {
    let mut head = Request::new(());
    *head.method_mut() = Method::POST;
    head.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let (parts, ()) = head.into_parts();
    match execute(rpc, parts, body, extensions).await {
        Outcome::Answer(response) => {
            let body = response.into_body().collect().await.ok()?.to_bytes();
            if body.is_empty() {
                return None;
            }
            Utf8Bytes::try_from(body).ok()
        }
        Outcome::Refused(answer) => Some(Utf8Bytes::from_static(answer)),
        Outcome::Nothing | Outcome::Failed => None,
    }
}

fn close_frame(code: CloseCode, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }
}
