//! WebSocket sessions.
//!
//! rpcguard runs the WebSocket transport itself (tokio-tungstenite) and
//! hands every message, with the session's credentials, to the same
//! pipeline that answers HTTP POSTs ([`super::dispatch`]). So one path
//! executes calls on both transports, and the session has limits
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
//! - **credentials**: every session gets its own [`SessionCredentials`]
//!   slot in the extensions its calls share, so a method may bind newer
//!   credentials for the session's later calls (see that type);
//! - **shutdown**: on stop the session reads nothing more, lets the calls in
//!   flight finish and be written, then closes with code 1001.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use jsonrpsee::server::HttpResponse;
use jsonrpsee::Extensions;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::connection::Connection;
use super::pipeline::{execute, Outcome, Pipeline};
use super::reply::plain;
use super::slots::Slot;
use crate::security::SessionCredentials;

/// Answers a WebSocket upgrade request (RFC 6455 §4.2.2) and starts the
/// session once hyper hands over the connection.
pub(crate) fn upgrade(
    mut req: Request<Incoming>,
    extensions: Extensions,
    conn: Arc<Connection>,
    client_slot: Option<Slot>,
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
    let share = conn.shared.cpu_share.clone();
    let session = async move {
        match on_upgrade.await {
            Ok(upgraded) => run(upgraded, extensions, &conn).await,
            Err(err) => tracing::debug!(error = %err, "WebSocket upgrade failed"),
        }
        // `conn` (and with it the connection slot), and the slot of the
        // client a trusted proxy named, live as long as the session.
        drop(conn);
        drop(client_slot);
    };
    match share {
        Some(share) => tasks.spawn(share.gate(session)),
        None => tasks.spawn(session),
    };
    let mut response = plain(StatusCode::SWITCHING_PROTOCOLS, "");
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// Runs one session until the client leaves, the session idles out, a
/// protocol error, or the server stops.
///
/// One task does everything: it reads messages, drives their calls
/// (at most `max_in_flight`, polled here rather than spawned, so a call
/// costs no task and no hand-over to a writer task) and writes each answer
/// as soon as its call is done. While an answer is being written (the
/// client may not be reading) nothing else moves, and while
/// `max_in_flight` calls are unanswered the next message is not read.
async fn run(upgraded: Upgraded, mut extensions: Extensions, conn: &Connection) {
    let _counted = conn.shared.metrics.ws_session();
    extensions.insert(SessionCredentials::default());
    let settings = conn.shared.ws;
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(settings.max_message_bytes))
        .max_frame_size(Some(settings.max_message_bytes));
    let socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let (mut sink, mut stream) = socket.split();
    let max_in_flight = settings.max_in_flight.max(1);
    let mut calls = FuturesUnordered::new();
    let mut pings = tokio::time::interval_at(
        tokio::time::Instant::now() + settings.ping_interval,
        settings.ping_interval,
    );
    let idle = tokio::time::sleep(settings.idle_timeout);
    tokio::pin!(idle);
    let stopped = conn.stop.clone().shutdown();
    tokio::pin!(stopped);
    let going_away = || close_frame(CloseCode::Away, "server shutting down");
    // `Some(close)` once reading has ended: the close frame to send (if
    // any) after the calls in flight are answered.
    let mut ending: Option<Option<CloseFrame>> = None;
    loop {
        let reading = ending.is_none();
        tokio::select! {
            biased;
            Some(answer) = calls.next(), if !calls.is_empty() => {
                if let Some(text) = answer {
                    if sink.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
                idle.as_mut().reset(tokio::time::Instant::now() + settings.idle_timeout);
            }
            _ = pings.tick() => {
                if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
            _ = &mut stopped, if reading => ending = Some(Some(going_away())),
            () = &mut idle, if reading && calls.len() < max_in_flight => {
                ending = Some(Some(close_frame(CloseCode::Away, "idle timeout")));
            }
            next = stream.next(), if reading && calls.len() < max_in_flight => {
                idle.as_mut().reset(tokio::time::Instant::now() + settings.idle_timeout);
                let data = match next {
                    None | Some(Ok(Message::Close(_))) => {
                        ending = Some(None);
                        None
                    }
                    Some(Ok(Message::Text(text))) => Some(Bytes::from(text)),
                    Some(Ok(Message::Binary(data))) => Some(data),
                    // Pings are answered by tungstenite; pongs only prove liveness.
                    Some(Ok(_)) => None,
                    Some(Err(WsError::Capacity(err))) => {
                        tracing::debug!(error = %err, "WebSocket message over the limit");
                        ending = Some(Some(close_frame(CloseCode::Size, "message too big")));
                        None
                    }
                    Some(Err(err)) => {
                        tracing::debug!(error = %err, "WebSocket session ended by an error");
                        ending = Some(None);
                        None
                    }
                };
                if let Some(data) = data {
                    calls.push(call(&conn.shared.pipeline, extensions.clone(), data));
                }
            }
        }
        if let Some(close) = &ending {
            if calls.is_empty() {
                if let Some(frame) = close.clone() {
                    let _ = sink.send(Message::Close(Some(frame))).await;
                }
                let _ = sink.close().await;
                return;
            }
        }
    }
}

/// Executes one message; the answer, or `None` for notifications.
async fn call(pipeline: &Pipeline, extensions: Extensions, body: Bytes) -> Option<Utf8Bytes> {
    match execute(pipeline, body, extensions).await {
        Outcome::Answer(answer) => Some(Utf8Bytes::from(answer)),
        Outcome::Document(answer) => Some(Utf8Bytes::from(answer.into_text())),
        Outcome::Refused(answer) => Some(Utf8Bytes::from_static(answer)),
        Outcome::Nothing => None,
    }
}

fn close_frame(code: CloseCode, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }
}
