//! A separate service that accepts rpcguard's access tokens with
//! rpcguard's public keys alone: no secret, no database, no call to
//! rpcguard per request. It fetches `GET /.well-known/jwks.json` of a
//! running rpcguard (started with an asymmetric `--jwt-alg`: `EdDSA`,
//! `ES256` or `RS256`), treats rpcguard as an external issuer
//! ([`OidcSecurity`]) and declares its methods with the same
//! requirements as rpcguard's own: `whoami` for any signed-in caller,
//! `monthly_report` for callers holding the Bearer scope `reports`.
//!
//! ```sh
//! rpcguard serve --jwt-alg EdDSA &                       # the issuer, on 127.0.0.1:8080
//! RPCGUARD_URL=http://127.0.0.1:8080/ cargo run --example resource_server
//! ```
//!
//! What it trusts: a token's signature (a key of the JWKS, by `kid`, in
//! that key's algorithm), `iss` and `aud` (`rpcguard` unless `ISSUER` /
//! `AUDIENCE` say otherwise: rpcguard's `Config::issuer`), `exp`, and the
//! `scope` claim (the scopes the user held at `sign_in` or `refresh`).
//! What it cannot see: a `sign_out`, a revoked scope or a deleted user
//! reach it only when the token expires (`--token-ttl`, 15 minutes by
//! default); rpcguard itself refuses such a token at once.

use rpcguard::openrpc::DocInfo;
use rpcguard::security::oidc::{JwksSource, OidcConfig, OidcSecurity};
use rpcguard::{Api, CallContext, Method, NoParams, RpcError, ServerConfig, BEARER};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who called, as the token says.
#[derive(Clone, Serialize, JsonSchema)]
struct WhoAmI {
    /// The token's `sub` (rpcguard's username).
    username: String,
    /// The scopes the token carries.
    scopes: Vec<String>,
}

/// Params of `monthly_report`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReportParams {
    /// The month, e.g. `2026-11`.
    month: String,
}

/// A monthly report.
#[derive(Clone, Serialize, JsonSchema)]
struct Report {
    /// The month it covers.
    month: String,
    /// Who asked.
    requested_by: String,
}

fn declare(api: &mut Api<()>) -> Result<(), rpcguard::api::ApiError> {
    api.method(
        Method::new("whoami")
            .summary("The caller, from its rpcguard token")
            .security(BEARER.require(())),
        |_: NoParams, ctx: CallContext<()>| async move {
            let caller = ctx.caller()?;
            Ok::<_, RpcError>(WhoAmI {
                username: caller.subject.clone(),
                scopes: caller.scopes.iter().cloned().collect(),
            })
        },
    )?
    .method(
        Method::new("monthly_report")
            .summary("A monthly report (Bearer scope `reports`)")
            .security(BEARER.require(["reports"])),
        |params: ReportParams, ctx: CallContext<()>| async move {
            Ok::<_, RpcError>(Report {
                month: params.month,
                requested_by: ctx.caller()?.subject.clone(),
            })
        },
    )?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let rpcguard_url = std::env::var("RPCGUARD_URL").map_err(|_| "set RPCGUARD_URL")?;
    let issuer = std::env::var("ISSUER").unwrap_or_else(|_| "rpcguard".to_owned());
    let audience = std::env::var("AUDIENCE").unwrap_or_else(|_| issuer.clone());
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:8091".to_owned());

    // rpcguard as an external issuer: its JWKS, its `scope` claim.
    let jwks = format!(
        "{}/.well-known/jwks.json",
        rpcguard_url.trim_end_matches('/')
    );
    let mut oidc = OidcConfig::new(issuer, audience, JwksSource::Url(jwks));
    oidc.scopes_claim = "scope".to_owned();
    let security = OidcSecurity::connect(oidc).await?;

    let mut api = Api::new();
    declare(&mut api)?;
    let config = ServerConfig {
        openrpc_info: DocInfo::new("reports (resource server)", "1.0.0"),
        ..ServerConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}/", listener.local_addr()?);
    rpcguard::serve(listener, api)
        .security(security)
        .config(config)
        .with_graceful_shutdown(rpcguard::server::shutdown_signal())
        .await?;
    Ok(())
}
