//! The log on standard error, text or JSON, and the plain lines `serve`
//! prints for people and scripts after it.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The plain lines `serve` prints for people and scripts (where it
/// listens, a policy reload), in text format only, after every log line
/// written before them.
#[derive(Clone)]
pub(crate) struct Say {
    out: rpcguard_accounts::logging::BatchedStderr,
    on: bool,
}

impl Say {
    /// Lines to `out`, in the text format only.
    pub(crate) fn new(out: rpcguard_accounts::logging::BatchedStderr, format: LogFormat) -> Say {
        Say {
            out,
            on: format == LogFormat::Text,
        }
    }

    /// Prints `line` (in the text format).
    pub(crate) fn line(&self, line: String) {
        if self.on {
            self.out.say(&line);
        }
    }
}

/// The log's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logs to standard error in batches ([`rpcguard_accounts::logging`]), so
/// that the per-call log line costs no system call on the request path.
/// The returned guard writes what is left when dropped, at the end of
/// `main`.
pub(crate) fn start_logging(
    format: LogFormat,
) -> (
    rpcguard_accounts::logging::BatchedStderr,
    rpcguard_accounts::logging::FlushGuard,
) {
    use rpcguard_accounts::logging::{BatchedStderr, CallLines, LineFormat};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let (writer, guard) = BatchedStderr::start();
    let out = writer.clone();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let layer = tracing_subscriber::fmt::layer().with_writer(writer.clone());
    match format {
        // Colours only for a person at a terminal, never in a file or pipe;
        // the per-call line is written by `CallLines` (the same bytes,
        // for a fraction of the cost) unless colours are on.
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let layer = layer.with_ansi(ansi);
            if ansi {
                registry.with(layer).init();
            } else {
                registry
                    .with(CallLines::new(layer, writer, LineFormat::Text))
                    .init();
            }
        }
        // The event's fields beside timestamp, level, target and message;
        // no span list (calls log no spans).
        LogFormat::Json => {
            let layer = layer
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false);
            registry
                .with(CallLines::new(layer, writer, LineFormat::Json))
                .init();
        }
    }
    (out, guard)
}
