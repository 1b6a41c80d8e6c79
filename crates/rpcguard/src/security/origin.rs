//! Where a call came from: the client and connection behind it
//! ([`RemoteAddr`], [`ConnectionInfo`]) and the id of its request
//! ([`RequestId`]).

use std::net::SocketAddr;
use std::sync::Arc;

/// Where a call came from, in the request extensions of every call: the
/// client's address (resolved behind a trusted proxy, see
/// [`crate::server::TrustedProxies`]) and its connection's
/// [`ConnectionInfo`].
#[derive(Debug, Clone)]
pub(crate) struct RemoteAddr {
    /// The client: the TCP peer, or the address a trusted proxy named.
    pub client: SocketAddr,
    /// The connection it came on.
    pub conn: Arc<ConnectionInfo>,
    /// The id of the HTTP request (or WebSocket upgrade). Kept here rather
    /// than as an extension of its own: one more entry would make every
    /// call's extension map grow (rehash) when the guard adds the caller.
    pub request_id: RequestId,
}

/// What a connection's calls share, made once at accept: a request clones
/// this connection's own handle, never a counter every connection shares.
#[derive(Debug)]
pub(crate) struct ConnectionInfo {
    /// The TCP peer (the proxy, behind one).
    pub peer: SocketAddr,
    /// The server's drain switch.
    pub drain: Arc<crate::server::lifecycle::DrainSwitch>,
    /// Cancelled at the shutdown deadline: calls still running are cut
    /// off.
    pub deadline: tokio_util::sync::CancellationToken,
}

/// The id of the HTTP request (or WebSocket upgrade) a call came in:
/// taken from a trusted proxy's `X-Request-Id`, else made by the server;
/// echoed in the answer's `X-Request-Id` header and written in the call's
/// log line and audit events ([`crate::CallContext::request_id`]).
///
/// An id the server makes is held inline (no allocation per request); one
/// a proxy gave is shared.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestId(IdText);

/// The longest id the server makes: 8 hex digits, `-`, 16 hex digits.
const MADE_MAX: usize = 25;

#[derive(Clone, PartialEq, Eq)]
enum IdText {
    /// Made by the server: ASCII, `len` bytes of `bytes`.
    Made { len: u8, bytes: [u8; MADE_MAX] },
    /// Taken from a trusted proxy.
    Given(Arc<str>),
}

impl RequestId {
    /// The id `PREFIX-N` (`prefix` as 8 hex digits, `n` in hex), made
    /// without an allocation.
    pub(crate) fn made(prefix: u32, n: u64) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bytes = [0u8; MADE_MAX];
        for (i, byte) in bytes.iter_mut().take(8).enumerate() {
            *byte = HEX[((prefix >> (28 - 4 * i)) & 0xf) as usize];
        }
        bytes[8] = b'-';
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
        for i in 0..digits {
            let shift = 4 * (digits - 1 - i);
            bytes[9 + i] = HEX[((n >> shift) & 0xf) as usize];
        }
        RequestId(IdText::Made {
            len: (9 + digits) as u8,
            bytes,
        })
    }

    /// An id given by a trusted proxy (already checked to be a sane token).
    pub(crate) fn given(text: &str) -> Self {
        RequestId(IdText::Given(Arc::from(text)))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            IdText::Made { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or("-")
            }
            IdText::Given(text) => text,
        }
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RequestId").field(&self.as_str()).finish()
    }
}
