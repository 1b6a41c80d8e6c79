//! The JSON-RPC requests the scenarios send, and the answers they expect.
//!
//! The baseline gets the same `Authorization` header as rpcguard (and
//! ignores it), so both servers parse the same bytes.

use crate::account::{PASSWORD, USER};
use crate::load::{Expect, Target, Transport};
use crate::server::ServerProcess;

/// `{"jsonrpc":"2.0","id":1,"method":METHOD}`, with no params.
fn call(method: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}"}}"#)
}

/// The answer of `get_caller` (and of the baseline's look-alike `ping`).
fn the_user() -> Expect {
    Expect::Result(format!(r#""username":"{USER}""#))
}

fn target(
    server: &ServerProcess,
    transport: Transport,
    method: &str,
    bearer: Option<&str>,
    expect: Expect,
) -> Target {
    Target {
        addr: server.addr,
        transport,
        body: call(method),
        bearer: bearer.map(str::to_owned),
        headers: String::new(),
        expect,
    }
}

/// The baseline's `ping`, with `token` in the header it ignores.
pub fn baseline_ping(baseline: &ServerProcess, transport: Transport, token: &str) -> Target {
    target(baseline, transport, "ping", Some(token), the_user())
}

/// rpcguard's `get_caller` with a valid token (over WebSocket the token is
/// sent at the upgrade).
pub fn get_caller(rpcguard: &ServerProcess, transport: Transport, token: &str) -> Target {
    target(rpcguard, transport, "get_caller", Some(token), the_user())
}

/// `require_scopes` with a token lacking the scopes: denied with -32099.
pub fn require_scopes_denied(rpcguard: &ServerProcess, token: &str) -> Target {
    require_scopes(rpcguard, Transport::Http, token, false)
}

/// `require_scopes` with `token`: `true` when its user holds `scope1`
/// (`granted`), else denied with -32099.
pub fn require_scopes(
    rpcguard: &ServerProcess,
    transport: Transport,
    token: &str,
    granted: bool,
) -> Target {
    let expect = if granted {
        Expect::Result(r#""result":true"#.to_owned())
    } else {
        Expect::Error(-32099)
    };
    target(rpcguard, transport, "require_scopes", Some(token), expect)
}

/// `get_caller` with a token whose signature is wrong: refused with -32001.
pub fn get_caller_invalid_token(rpcguard: &ServerProcess, invalid_token: &str) -> Target {
    target(
        rpcguard,
        Transport::Http,
        "get_caller",
        Some(invalid_token),
        Expect::Error(-32001),
    )
}

/// `rpc.discover`, anonymous: the OpenRPC document.
pub fn discover(rpcguard: &ServerProcess) -> Target {
    target(
        rpcguard,
        Transport::Http,
        "rpc.discover",
        None,
        Expect::Result(r#""openrpc":"1.3.2""#.to_owned()),
    )
}

/// `get_caller` with a valid token through a trusted proxy: the request
/// carries `X-Forwarded-For` naming the client.
pub fn get_caller_via_proxy(rpcguard: &ServerProcess, token: &str) -> Target {
    let mut target = get_caller(rpcguard, Transport::Http, token);
    target.headers = "X-Forwarded-For: 203.0.113.7\r\n".to_owned();
    target
}

/// `refresh` of `refresh_token`: a new access and refresh token.
pub fn refresh(rpcguard: &ServerProcess, refresh_token: &str) -> Target {
    Target {
        addr: rpcguard.addr,
        transport: Transport::Http,
        body: format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"refresh","params":["{refresh_token}"]}}"#
        ),
        bearer: None,
        headers: String::new(),
        expect: Expect::Result(r#""refresh_token":"#.to_owned()),
    }
}

/// `sign_in` of `username` with [`PASSWORD`] (a bcrypt verify).
pub fn sign_in_as(rpcguard: &ServerProcess, username: &str) -> Target {
    Target {
        addr: rpcguard.addr,
        transport: Transport::Http,
        body: format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"sign_in","params":["{username}","{PASSWORD}"]}}"#
        ),
        bearer: None,
        headers: String::new(),
        expect: Expect::Result(r#""access_token":"#.to_owned()),
    }
}
