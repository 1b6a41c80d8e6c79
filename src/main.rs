//! The `rpcguard` command: `serve`, `openrpc`, `user …`, `key …` and
//! `backup` ([`cli`] has one file per command group). This file parses the
//! command line, starts the log and the runtime, runs the command and
//! reports how it ended.

mod cli;

use std::process::ExitCode;

use cli::log::LogFormat;
use cli::Command;

fn main() -> ExitCode {
    let cli = cli::parse();
    let cli_log_format = cli.log_format;
    let (out, flush_log_at_exit) = cli::log::start_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let serve_out = out.clone();
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => cli::serve::serve(*args, cli.log_format, serve_out).await,
            Command::Openrpc(args) => cli::openrpc::openrpc(args),
            Command::User(command) => cli::user::user(command).await,
            Command::Key(command) => cli::key::key(command).await,
            Command::Backup(args) => cli::backup::backup(args),
        }
    });
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if cli_log_format == LogFormat::Json {
                tracing::error!(error = %format!("{err:#}"), "rpcguard stopped");
            }
            // After every log line written before it.
            if cli_log_format == LogFormat::Text {
                out.say(&format!("error: {err:#}"));
            }
            drop(flush_log_at_exit);
            return ExitCode::FAILURE;
        }
    };
    drop(flush_log_at_exit);
    code
}
