//! What a connection carries: the settings every connection of a server
//! shares ([`Shared`]), the connection's own context ([`Connection`]), the
//! limits of a WebSocket session ([`WsSettings`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderName;

use super::docs::DocsPage;
use super::enforce::PolicyCell;
use super::lifecycle::{DrainSwitch, Ready};
use super::pipeline::Pipeline;
use super::proxy::ClientAddrs;
use super::slots::{ConnectionSlots, Slot};
use crate::security::ConnectionInfo;

/// What every connection of a server shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The headers the security schemes read (always `Authorization`).
    pub credential_headers: Vec<HeaderName>,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Time a request body has to arrive, from the end of its head.
    pub body_timeout: Duration,
    /// WebSocket session limits.
    pub ws: WsSettings,
    /// The policy in force, whose document `GET /openrpc.json` answers.
    pub policy: Arc<PolicyCell>,
    /// The docs page, when it is on.
    pub docs: Option<DocsPage>,
    /// The embedder's extra resources.
    pub resources: Vec<super::ExtraResource>,
    /// What executes JSON-RPC messages.
    pub pipeline: Pipeline,
    /// Where connections and sessions are counted.
    pub metrics: crate::metrics::Metrics,
    /// How clients' addresses are found behind trusted proxies.
    pub clients: ClientAddrs,
    /// The connection slots (a trusted proxy's clients take theirs per
    /// request).
    pub slots: Arc<ConnectionSlots>,
    /// What `GET /ready` consults.
    pub ready: Ready,
    /// Whether the server is draining.
    pub drain: Arc<DrainSwitch>,
    /// The share of the cores WebSocket sessions give way to, if any.
    pub cpu_share: Option<super::CpuShare>,
}

/// One connection's context: its peer, its slot, and the shared settings.
#[derive(Debug)]
pub(crate) struct Connection {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether the peer is a trusted proxy (its header names the client).
    pub trusted: bool,
    /// What its calls share (the peer, the drain, the deadline).
    pub info: Arc<ConnectionInfo>,
    /// The connection's slot, held until the connection (or the WebSocket
    /// session it became) ends.
    pub _slot: Slot,
    /// Counts the connection in the metrics while it is open.
    pub _counted: crate::metrics::GaugeGuard,
    /// The server's settings.
    pub shared: Arc<Shared>,
    /// Where WebSocket sessions are spawned, so that shutdown waits for them.
    pub tasks: tokio_util::task::TaskTracker,
    /// The server's stop signal.
    pub stop: jsonrpsee::server::StopHandle,
}

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
