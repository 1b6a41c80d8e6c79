//! `rpcguard key rotate|list`: the token signing keys, in the data dir's
//! key set or the database's.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use rpcguard_accounts::clock::Clock;
use rpcguard_accounts::keys::KeyAlg;

#[derive(Debug, Args)]
pub(crate) struct KeyArgs {
    /// Directory of the key set (keys.json), for a server on SQLite.
    #[arg(long, env = "RPCGUARD_DATA_DIR", default_value = "./rpcguard-data")]
    data_dir: PathBuf,
    /// PostgreSQL URL (postgres://…): the key set every instance on that database shares.
    #[arg(long, env = "RPCGUARD_DATABASE_URL")]
    database_url: Option<String>,
    /// Token lifetime in seconds, as the server runs with: a retired key verifies this long
    /// (plus 5 s) after its rotation, then drops out.
    #[arg(long, env = "RPCGUARD_TOKEN_TTL", default_value_t = rpcguard_accounts::config::DEFAULT_TOKEN_TTL_SECS)]
    token_ttl: u64,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Makes a new signing key; older keys verify their tokens until those expire. A running
    /// server on the same data dir, or every instance on the same database, sees the new key
    /// within seconds.
    Rotate {
        /// Algorithm of the new key (default: the current signing key's).
        #[arg(long, value_parser = parse_alg)]
        alg: Option<KeyAlg>,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Lists the keys: kid, algorithm and state (signing, verifying until, expired).
    List {
        #[command(flatten)]
        keys: KeyArgs,
    },
}

pub(crate) fn parse_alg(raw: &str) -> Result<KeyAlg, String> {
    raw.parse()
        .map_err(|e: rpcguard_accounts::keys::set::UnknownAlg| e.to_string())
}

/// Refuses a data dir that is missing, unreadable or holds no key set.
fn existing_key_set(dir: &std::path::Path) -> anyhow::Result<()> {
    use rpcguard::error::io_cause;
    use rpcguard_accounts::keys::KEYS_FILE_NAME;
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => bail!("{} is not a directory", dir.display()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "no data dir {}: pass the server's --data-dir (`rpcguard serve` creates it at its first start)",
            dir.display()
        ),
        Err(err) => bail!("cannot open the data dir {}: {}", dir.display(), io_cause(&err)),
    }
    let keys = dir.join(KEYS_FILE_NAME);
    let legacy = dir.join(rpcguard_accounts::config::SECRET_FILE_NAME);
    match (std::fs::metadata(&keys), legacy.is_file()) {
        (Ok(_), _) | (_, true) => Ok(()),
        (Err(err), false) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "no key set in {} ({KEYS_FILE_NAME}): `rpcguard serve` makes one at its first start",
            dir.display()
        ),
        (Err(err), false) => bail!(
            "cannot read {}: {} (run this as the user the server runs as)",
            keys.display(),
            io_cause(&err)
        ),
    }
}

pub(crate) async fn key(command: KeyCommand) -> anyhow::Result<()> {
    use rpcguard_accounts::config::ConfigError;
    use rpcguard_accounts::keys::DbKeySet;
    // The key set must exist already: a mistyped --data-dir is an error,
    // never a new data dir with a new key set.
    let prepare = |args: &KeyArgs| -> anyhow::Result<Duration> {
        if args.database_url.is_none() {
            existing_key_set(&args.data_dir)?;
            rpcguard_accounts::config::prepare_data_dir(&args.data_dir)?;
        }
        Ok(Duration::from_secs(args.token_ttl))
    };
    match command {
        KeyCommand::Rotate { alg, keys } => {
            let ttl = prepare(&keys)?;
            let set = match &keys.database_url {
                Some(url) => DbKeySet::connect(url).await?.rotate(alg, ttl).await?,
                None => rpcguard_accounts::keys::rotate_key_set(
                    &keys.data_dir,
                    alg,
                    ttl,
                    &Clock::System,
                )?,
            };
            let signing = set.signing()?;
            let now = rpcguard_accounts::clock::unix_now().unwrap_or(0);
            match signing.state(now, ttl) {
                rpcguard_accounts::keys::KeyState::Next { .. } => println!(
                    "new signing key: {} ({}), published; {}",
                    signing.kid,
                    signing.alg,
                    signing.state(now, ttl)
                ),
                _ => println!("new signing key: {} ({})", signing.kid, signing.alg),
            }
        }
        KeyCommand::List { keys } => {
            let ttl = prepare(&keys)?;
            let set = match &keys.database_url {
                Some(url) => DbKeySet::connect(url)
                    .await?
                    .load()
                    .await?
                    .ok_or(ConfigError::NoKeySet)?,
                None => rpcguard_accounts::keys::open_key_set(
                    &keys.data_dir,
                    None,
                    ttl,
                    &Clock::System,
                )?,
            };
            let now = rpcguard_accounts::clock::unix_now().unwrap_or(0);
            for key in &set.keys {
                println!("{}\t{}\t{}", key.kid, key.alg, key.state(now, ttl));
            }
        }
    }
    Ok(())
}
