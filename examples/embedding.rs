//! Secure your own JSON-RPC methods with rpcguard: a public method, a
//! method that needs the Bearer scope `reports`, and a method behind a
//! security function written here from scratch (robots send
//! `X-Robot-Key`), next to the account methods (`sign_up`, `sign_in`,
//! `refresh`, `sign_out`, `change_password`, `authenticate`, `get_caller`,
//! `require_scopes`), on one state of your own.
//!
//! ```sh
//! ROBOT_KEY=change-me cargo run --example embedding -- ./example-data
//! ```

use std::sync::Arc;

use rpcguard::openrpc::DocInfo;
use rpcguard::{
    async_trait, AnySecurity, Api, AuthFailure, CallContext, Caller, Credentials, Method,
    MethodSecurity, NoParams, RpcError, SchemeDoc, SecurityFunction, ServerConfig, SharedSecurity,
};
use rpcguard_accounts::config::Config;
use rpcguard_accounts::methods::accounts::{self, Accounts};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The service's state: the accounts, and its own data.
struct App {
    accounts: Accounts,
    motd: String,
}

impl AsRef<Accounts> for App {
    fn as_ref(&self) -> &Accounts {
        &self.accounts
    }
}

/// A security function of our own: robots send `X-Robot-Key: <key>` and
/// get the scope `ingest` in the scheme `Robot`.
struct RobotKey {
    key_digest: [u8; 32],
}

#[async_trait]
impl SecurityFunction for RobotKey {
    async fn authenticate(&self, credentials: &Credentials) -> Result<Option<Caller>, RpcError> {
        let Some(key) = credentials.headers().get("x-robot-key") else {
            return Ok(None); // not ours: another scheme may know the caller
        };
        // Comparing digests keeps the comparison's time independent of the key.
        if <[u8; 32]>::from(Sha256::digest(key.as_bytes())) == self.key_digest {
            Ok(Some(Caller::new("robot", "Robot", ["ingest"])))
        } else {
            Err(RpcError::Unauthenticated(AuthFailure::InvalidToken))
        }
    }

    fn schemes(&self) -> Vec<SchemeDoc> {
        vec![SchemeDoc::api_key(
            "Robot",
            "X-Robot-Key",
            "The robots' shared key.",
        )]
    }
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
    /// Who asked for it.
    requested_by: String,
}

/// Params of `ingest`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct IngestParams {
    /// The readings to store.
    readings: Vec<f64>,
}

fn declare(api: &mut Api<App>) -> Result<(), rpcguard::api::ApiError> {
    accounts::declare(api)?;
    api.method(
        Method::new("motd").summary("The message of the day (public)"),
        |_: NoParams, ctx: CallContext<App>| async move { Ok::<_, RpcError>(ctx.state.motd.clone()) },
    )?
    .method(
        Method::new("monthly_report")
            .summary("A monthly report (Bearer scope `reports`)")
            .security(MethodSecurity::bearer(["reports"])),
        |params: ReportParams, ctx: CallContext<App>| async move {
            let caller = ctx.caller()?;
            Ok::<_, RpcError>(Report {
                month: params.month,
                requested_by: caller.subject.clone(),
            })
        },
    )?
    .method(
        Method::new("ingest")
            .summary("Stores readings (robots only: scheme `Robot`, scope `ingest`)")
            .security(MethodSecurity::scheme("Robot", ["ingest"])),
        |params: IngestParams, _: CallContext<App>| async move {
            Ok::<_, RpcError>(params.readings.len())
        },
    )?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data_dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "./example-data".to_owned());
    let robot_key = std::env::var("ROBOT_KEY").map_err(|_| "set ROBOT_KEY")?;
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:8090".to_owned());

    // Accounts (SQLite in data_dir, a generated signing key) and the Bearer
    // security function over them.
    let mut config = Config::new(data_dir);
    if let Ok(cost) = std::env::var("BCRYPT_COST") {
        config.bcrypt_cost = cost.parse()?; // tests use a cheap cost
    }
    let kit = rpcguard_accounts::app::accounts(&config).await?;
    let state = Arc::new(App {
        accounts: (*kit.accounts).clone(),
        motd: "Hello from the reports service".to_owned(),
    });
    let robots = RobotKey {
        key_digest: Sha256::digest(robot_key.as_bytes()).into(),
    };
    let security: SharedSecurity = Arc::new(AnySecurity::new(vec![kit.security, Arc::new(robots)]));

    let mut api = Api::new();
    declare(&mut api)?;
    let config = ServerConfig {
        doc: DocInfo::new("reports service", "1.0.0"),
        ..ServerConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let server = rpcguard::server::spawn(listener, api, state, security, config)?;
    println!("listening on http://{}/", server.local_addr());
    rpcguard::server::run_until(server, rpcguard::server::shutdown_signal()).await;
    Ok(())
}
