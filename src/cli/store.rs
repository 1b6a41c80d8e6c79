//! What the commands that open the user store share: its flags
//! ([`StoreArgs`]), where an error says the users were looked for, and the
//! audit announcement of an operator's change.

use std::path::PathBuf;

use clap::Args;
use rpcguard::audit::Event;
use rpcguard_accounts::config::Config;

#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// Directory of the SQLite database and the generated signing key.
    #[arg(long, env = "RPCGUARD_DATA_DIR", default_value = "./rpcguard-data")]
    data_dir: PathBuf,
    /// PostgreSQL URL (postgres://…); without it the embedded SQLite store is used.
    #[arg(long, env = "RPCGUARD_DATABASE_URL")]
    database_url: Option<String>,
    /// Database connections in the pool.
    #[arg(long, env = "RPCGUARD_DB_POOL_SIZE", default_value_t = 8)]
    db_pool_size: u32,
}

pub(crate) fn store_config(store: StoreArgs) -> Config {
    let mut config = Config::new(store.data_dir);
    config.database_url = store.database_url;
    config.db_pool_size = store.db_pool_size;
    config
}

/// Where an admin command looked for users (never a password in a URL).
pub(crate) fn where_users_live(config: &Config) -> String {
    match &config.database_url {
        Some(url) => match url.rsplit_once('@') {
            Some((_, host_and_db)) => format!("the PostgreSQL database {host_and_db}"),
            None => "the PostgreSQL database".to_owned(),
        },
        None => config.database(),
    }
}

/// Tells the running servers what an operator changed, for their audit
/// stream; the change itself is done whatever happens here.
pub(crate) async fn announce(
    store: &dyn rpcguard_accounts::store::UserStore,
    event: Event,
    username: &str,
    detail: &str,
) {
    let change = rpcguard_accounts::store::AdminChange {
        event,
        username,
        detail,
    };
    if let Err(err) = store.announce(&change).await {
        tracing::warn!(error = %err, "the change is done, but the servers' audit stream will not show it");
    }
}
