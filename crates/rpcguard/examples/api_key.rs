//! A JSON-RPC service secured by API keys, with the framework alone: a
//! public method, two methods for keys with a scope, an admin method, and
//! an error of its own whose `data` type the document describes.
//!
//! `cargo run -p rpcguard --example api_key`; `ADDR` sets the address,
//! `WRITER_KEY`/`ADMIN_KEY` the keys (random by default, printed).

use std::sync::Mutex;

use rpcguard::{Api, ApiKeySecurity, CallContext, ErrorCode, Method, NoParams, RpcError, Scheme};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The one security scheme: a key in the `X-Api-Key` header.
const KEY: Scheme = Scheme::api_key("ApiKey", "x-api-key");
/// Our own error: the note is longer than allowed.
const TOO_LONG: ErrorCode = ErrorCode::new(4001);
const MAX_CHARS: usize = 280;

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

/// The `data` of error 4001.
#[derive(Serialize, JsonSchema)]
struct TooLong {
    /// The longest note allowed, in characters.
    max_chars: usize,
}

type Notes = Mutex<Vec<Note>>;

async fn add_note(params: AddNote, ctx: CallContext<Notes>) -> Result<Note, RpcError> {
    if params.text.chars().count() > MAX_CHARS {
        let data = TooLong {
            max_chars: MAX_CHARS,
        };
        return Err(RpcError::custom(TOO_LONG, "Note too long", data));
    }
    let author = ctx.caller()?.subject.clone();
    let note = Note {
        author,
        text: params.text,
    };
    ctx.state.lock()?.push(note.clone());
    Ok(note)
}

async fn list_notes(_: NoParams, ctx: CallContext<Notes>) -> Result<Vec<Note>, RpcError> {
    Ok(ctx.state.lock()?.clone())
}

async fn clear_notes(_: NoParams, ctx: CallContext<Notes>) -> Result<usize, RpcError> {
    Ok(std::mem::take(&mut *ctx.state.lock()?).len())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let log = tracing_subscriber::fmt().with_env_filter("info");
    log.with_writer(std::io::stderr).init();
    let key =
        |var| std::env::var(var).unwrap_or_else(|_| format!("{:032x}", rand::random::<u128>()));
    let (writer, admin) = (key("WRITER_KEY"), key("ADMIN_KEY"));
    let security = ApiKeySecurity::new(&KEY)
        .key(&writer, "writer", ["notes:write", "notes:read"])
        .key(&admin, "admin", ["admin"]);

    let mut api: Api<Notes> = Api::new();
    api.secured_by(KEY.require(["notes:read"]));
    api.method(
        Method::new("version")
            .summary("The server's version")
            .public(),
        |_: NoParams, _| async { Ok::<_, RpcError>(env!("CARGO_PKG_VERSION")) },
    )?
    .method(
        Method::new("add_note")
            .summary("Adds a note")
            .security(KEY.require(["notes:write"]))
            .error_with_data::<TooLong>(TOO_LONG, "Note too long"),
        add_note,
    )?
    .method(
        Method::new("list_notes").summary("Lists every note"),
        list_notes,
    )?
    .method(
        Method::new("clear_notes")
            .summary("Deletes every note")
            .security(KEY.require(["admin"])),
        clear_notes,
    )?;

    let listener =
        tokio::net::TcpListener::bind(std::env::var("ADDR").as_deref().unwrap_or("127.0.0.1:8081"))
            .await?;
    println!("listening on http://{}/", listener.local_addr()?);
    println!("writer key: {writer}\nadmin key: {admin}");
    rpcguard::serve(listener, api)
        .state(Notes::default())
        .security(security)
        .with_graceful_shutdown(rpcguard::server::shutdown_signal())
        .await?;
    Ok(())
}
