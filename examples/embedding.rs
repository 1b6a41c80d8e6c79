//! Your own methods on rpcguard's accounts: `list_notes` and `add_note`,
//! each with a Bearer scope of its own, beside the account methods
//! (`sign_up`, `sign_in`, `refresh`, `sign_out`, …), on one state.
//! `join` grants the scope `notes:read` from code; `notes:write` is granted
//! from the command line (`rpcguard user grant alice notes:write`).
//! `cargo run --example embedding -- ./example-data`.

use std::sync::{Arc, Mutex};

use rpcguard::{Api, CallContext, Method, NoParams, RpcError, BEARER};
use rpcguard_accounts::config::Config;
use rpcguard_accounts::methods::accounts::{self, Accounts};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The service's state: the accounts, and its own data.
struct App {
    accounts: Arc<Accounts>,
    notes: Mutex<Vec<Note>>,
}

impl AsRef<Accounts> for App {
    fn as_ref(&self) -> &Accounts {
        &self.accounts
    }
}

/// A note.
#[derive(Clone, Serialize, JsonSchema)]
struct Note {
    /// Who wrote it.
    author: String,
    /// What it says.
    text: String,
}

/// Params of `add_note`.
#[derive(Deserialize, JsonSchema)]
struct AddNote {
    /// The note's text.
    text: String,
}

async fn join(_: NoParams, ctx: CallContext<App>) -> Result<bool, RpcError> {
    let me = &ctx.caller()?.subject;
    ctx.state.accounts.grant(me, &["notes:read"]).await?;
    Ok(true)
}

async fn add_note(params: AddNote, ctx: CallContext<App>) -> Result<Note, RpcError> {
    let author = ctx.caller()?.subject.clone();
    let note = Note {
        author,
        text: params.text,
    };
    ctx.state.notes.lock()?.push(note.clone());
    Ok(note)
}

async fn list_notes(_: NoParams, ctx: CallContext<App>) -> Result<Vec<Note>, RpcError> {
    Ok(ctx.state.notes.lock()?.clone())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let log = tracing_subscriber::fmt().with_env_filter("info");
    log.with_writer(std::io::stderr).init();
    let data_dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "./example-data".into());
    let mut config = Config::new(data_dir);
    if let Ok(cost) = std::env::var("BCRYPT_COST") {
        config.bcrypt_cost = cost.parse()?; // tests use a cheap cost
    }
    let kit = rpcguard_accounts::app::accounts(&config).await?;
    let state = App {
        accounts: kit.accounts,
        notes: Mutex::default(),
    };

    let mut api: Api<App> = accounts::methods()?;
    api.method(
        Method::new("join")
            .summary("Grants you notes:read")
            .security(BEARER.require(())),
        join,
    )?
    .method(
        Method::new("add_note").security(BEARER.require(["notes:write"])),
        add_note,
    )?
    .method(
        Method::new("list_notes").security(BEARER.require(["notes:read"])),
        list_notes,
    )?;

    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}/", listener.local_addr()?);
    rpcguard::serve(listener, api)
        .state(state)
        .shared_security(kit.security)
        .with_graceful_shutdown(rpcguard::server::shutdown_signal())
        .await?;
    Ok(())
}
