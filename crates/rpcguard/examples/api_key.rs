//! Embedding rpcguard: your own methods, secured by your own security
//! function (an API key instead of the built-in JWT Bearer scheme).
//!
//! Run: `cargo run --example api_key` (`ADDR` sets the address,
//! `127.0.0.1:8081` by default; `WRITER_KEY` and `READER_KEY` set the keys,
//! random by default), then, with the key it prints:
//!
//! ```text
//! curl -s localhost:8081 -H 'content-type: application/json' -H "x-api-key: $KEY" \
//!      -d '{"jsonrpc":"2.0","id":1,"method":"add_note","params":["hello"]}'
//! curl -s localhost:8081 -H 'content-type: application/json' \
//!      -d '{"jsonrpc":"2.0","id":2,"method":"rpc.discover"}'
//! ```
//!
//! The two methods appear in `rpc.discover` with their schemas and
//! `x-security`, and the `ApiKey` scheme in `x-securitySchemes`, with no
//! second list anywhere.

use std::sync::{Arc, Mutex};

use rpcguard::security::ApiKeySecurity;
use rpcguard::{
    Api, CallContext, Example, Method, MethodSecurity, NoParams, RpcError, ServerConfig,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The application's state: an in-memory list of notes.
#[derive(Default)]
struct Notes(Mutex<Vec<Note>>);

/// A note.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Note {
    /// Who wrote it.
    author: String,
    /// What it says.
    text: String,
}

/// Params of `add_note`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AddNote {
    /// The note's text (1 to 280 characters).
    #[schemars(length(min = 1, max = 280))]
    text: String,
}

async fn add_note(params: AddNote, ctx: CallContext<Notes>) -> Result<Note, RpcError> {
    let len = params.text.chars().count();
    if !(1..=280).contains(&len) {
        return Err(RpcError::InvalidParams(
            "text must be 1 to 280 characters".into(),
        ));
    }
    let note = Note {
        author: ctx.caller()?.subject.clone(),
        text: params.text,
    };
    let mut notes = ctx
        .state
        .0
        .lock()
        .map_err(|_| RpcError::internal("notes lock poisoned"))?;
    notes.push(note.clone());
    Ok(note)
}

async fn list_notes(_: NoParams, ctx: CallContext<Notes>) -> Result<Vec<Note>, RpcError> {
    let notes = ctx
        .state
        .0
        .lock()
        .map_err(|_| RpcError::internal("notes lock poisoned"))?;
    Ok(notes.clone())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(std::io::stderr)
        .init();

    let key =
        |var: &str| std::env::var(var).unwrap_or_else(|_| hex::encode(rand::random::<[u8; 16]>()));
    let writer_key = key("WRITER_KEY");
    let reader_key = key("READER_KEY");
    let security = ApiKeySecurity::new("ApiKey", "x-api-key")
        .key(&writer_key, "writer", ["notes:write", "notes:read"])
        .key(&reader_key, "reader", ["notes:read"]);

    let mut api: Api<Notes> = Api::new();
    api.method(
        Method::new("add_note")
            .summary("Adds a note")
            .security(MethodSecurity::scheme("ApiKey", ["notes:write"]))
            .example(Example::new(
                "hello",
                json!({"text": "hello"}),
                json!({"author": "writer", "text": "hello"}),
            )),
        add_note,
    )?
    .method(
        Method::new("list_notes")
            .summary("Lists every note")
            .security(MethodSecurity::scheme("ApiKey", ["notes:read"]))
            .example(Example::new("all", json!({}), json!([]))),
        list_notes,
    )?;

    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:8081".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let mut config = ServerConfig::default();
    config.doc.title = "notes".to_owned();
    config.doc.server_url = format!("http://{}/", listener.local_addr()?);
    let server = rpcguard::server::spawn(
        listener,
        api,
        Arc::new(Notes::default()),
        Arc::new(security),
        config,
    )?;
    println!("listening on http://{}/", server.local_addr());
    println!("writer key: {writer_key}");
    println!("reader key: {reader_key}");
    rpcguard::server::run_until(server, rpcguard::server::shutdown_signal()).await;
    Ok(())
}
