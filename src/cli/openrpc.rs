//! `rpcguard openrpc`: the OpenRPC document (the content of openrpc.json),
//! as a server with the given policy serves it.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use rpcguard::policy::Policy;
use rpcguard_accounts::config::reference_doc;

#[derive(Debug, Args)]
pub(crate) struct OpenrpcArgs {
    /// URL the document gives in `servers`.
    #[arg(
        long,
        env = "RPCGUARD_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080/"
    )]
    public_url: String,
    /// Show the document as a server with this policy file serves it.
    #[arg(long, env = "RPCGUARD_POLICY")]
    policy: Option<PathBuf>,
}

pub(crate) fn openrpc(args: OpenrpcArgs) -> anyhow::Result<()> {
    let api: rpcguard::Api<rpcguard_accounts::methods::accounts::Accounts> =
        rpcguard_accounts::app::reference_api()?;
    let schemes = [rpcguard_accounts::BearerSecurity::published_scheme(
        rpcguard_accounts::auth::token::TokenKeys::DEFAULT_ISSUER,
        &args.public_url,
    )];
    let info = reference_doc(&args.public_url);
    let document = match &args.policy {
        None => rpcguard::openrpc::document(&api, &schemes, &info)?,
        Some(path) => {
            let policy = Policy::load(path).map_err(|err| anyhow::anyhow!("{err}"))?;
            rpcguard::server::document_with_policy(&api, &schemes, &info, &policy)
                .map_err(|err| anyhow::anyhow!("{err}"))?
        }
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &document)?;
    writeln!(out)?;
    Ok(())
}
