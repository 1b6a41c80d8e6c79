//! The `rpcguard` command line: what each command and flag is ([`Cli`]),
//! parsed with clap, one file per command group (`serve`, `user`, `key`,
//! `backup`, `openrpc`); [`log`] starts the log all of them write to, and
//! [`store`] holds the flags and helpers of the commands that open the
//! user store.
//!
//! Every flag can also be set from the environment as `RPCGUARD_<FLAG>`
//! (e.g. `--data-dir` ↔ `RPCGUARD_DATA_DIR`). The signing key may be given
//! as `RPCGUARD_SECRET` (never as a flag, so it stays out of `ps`).

pub(crate) mod backup;
pub(crate) mod key;
pub(crate) mod log;
pub(crate) mod openrpc;
pub(crate) mod serve;
pub(crate) mod store;
pub(crate) mod user;

use clap::{Parser, Subcommand};

use backup::BackupArgs;
use key::KeyCommand;
use log::LogFormat;
use openrpc::OpenrpcArgs;
use serve::ServeArgs;
use user::UserCommand;

#[derive(Debug, Parser)]
#[command(
    name = "rpcguard",
    version,
    about = "A JSON-RPC 2.0 server with bcrypt accounts, JWT scopes and OpenRPC"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// Log format on standard error: text (for a person) or json (one JSON object per line:
    /// timestamp, level, target, message and the event's fields).
    #[arg(long, global = true, env = "RPCGUARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Runs the server (HTTP + WebSocket on one port).
    Serve(Box<ServeArgs>),
    /// Prints the OpenRPC document (the content of openrpc.json).
    Openrpc(OpenrpcArgs),
    /// Manages accounts directly in the store.
    #[command(subcommand)]
    User(UserCommand),
    /// Manages the token signing keys (`<data-dir>/keys.json`, or the database's with
    /// --database-url).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Backs up a live SQLite store and its key set into DIR (SQLite's online backup: safe
    /// while the server writes; files mode 0600). On PostgreSQL, use pg_dump.
    Backup(BackupArgs),
}

/// The command line, or an error that names the environment variable when
/// the bad value came from one (clap names only the flag).
pub(crate) fn parse() -> Cli {
    let err = match Cli::try_parse() {
        Ok(cli) => return cli,
        Err(err) => err,
    };
    let flag = match err.get(clap::error::ContextKind::InvalidArg) {
        Some(clap::error::ContextValue::String(arg)) => arg.split(' ').next().map(str::to_owned),
        _ => None,
    };
    let given_on_the_line =
        |flag: &str| std::env::args().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    if let Some(flag) = flag.filter(|f| f.starts_with("--") && !given_on_the_line(f)) {
        let mut command = <Cli as clap::CommandFactory>::command();
        command.build();
        let var = std::iter::once(&command)
            .chain(command.get_subcommands())
            .flat_map(|c| c.get_arguments())
            .find(|a| a.get_long() == flag.strip_prefix("--"))
            .and_then(|a| a.get_env())
            .map(|v| v.to_string_lossy().into_owned())
            .filter(|var| std::env::var_os(var).is_some());
        if let Some(var) = var {
            let text = err.to_string();
            let first = text.lines().next().unwrap_or_default();
            let named = match first.split_once(&format!("for '{flag}")) {
                Some((before, after)) => {
                    let rest = after.split_once("':").map_or("", |(_, rest)| rest);
                    format!("{before}in {var} (the environment variable of {flag}):{rest}")
                }
                None => format!("{first} (from {var})"),
            };
            eprintln!("{named}");
            std::process::exit(2);
        }
    }
    err.exit()
}
