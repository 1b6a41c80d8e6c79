//! `rpcguard backup DIR`: a live SQLite store and its key set, copied.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct BackupArgs {
    /// A new directory for the backup (created mode 0700).
    dir: PathBuf,
    /// The server's data dir (rpcguard.db and keys.json).
    #[arg(long, env = "RPCGUARD_DATA_DIR", default_value = "./rpcguard-data")]
    data_dir: PathBuf,
    /// A PostgreSQL store is backed up with pg_dump instead (this only says so).
    #[arg(long, env = "RPCGUARD_DATABASE_URL")]
    database_url: Option<String>,
}

pub(crate) fn backup(args: BackupArgs) -> anyhow::Result<()> {
    use rpcguard_accounts::backup::{backup_sqlite, BackupError};
    if args.database_url.is_some() {
        return Err(BackupError::Postgres.into());
    }
    let done = backup_sqlite(&args.data_dir, &args.dir)?;
    for file in &done.files {
        println!("{}", file.display());
    }
    Ok(())
}
