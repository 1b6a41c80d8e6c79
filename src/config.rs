//! Configuration values of the reference server, and loading the signing
//! key.
//!
//! The library never reads the environment: the binary's clap struct (in
//! `main.rs`, every flag also from `RPCGUARD_*`) fills a [`Config`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::token::MIN_KEY_BYTES;
use crate::server::ServerConfig;
use crate::throttle::ThrottleConfig;

/// Name of the generated key file in the data dir.
pub const SECRET_FILE_NAME: &str = "secret.key";
/// Name of the SQLite database file in the data dir.
pub const DATABASE_FILE_NAME: &str = "rpcguard.db";

/// Where the JWT signing key comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The key itself (from `RPCGUARD_SECRET`).
    Value(Vec<u8>),
    /// A file holding the key (`--secret-file`); trailing whitespace is
    /// ignored.
    File(PathBuf),
    /// Generate a key into `<data dir>/secret.key` (mode 0600) on first
    /// start and reuse it afterwards, so tokens survive a restart.
    DataDir,
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Value(_) => f.write_str("Value(<redacted>)"),
            SecretSource::File(path) => write!(f, "File({})", path.display()),
            SecretSource::DataDir => f.write_str("DataDir"),
        }
    }
}

/// Everything the reference server needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory of the SQLite file and the generated key.
    pub data_dir: PathBuf,
    /// `postgres://…` to use PostgreSQL instead of SQLite.
    pub database_url: Option<String>,
    /// Database connections in the pool.
    pub db_pool_size: u32,
    /// The signing key's source.
    pub secret: SecretSource,
    /// Token issuer and audience.
    pub issuer: String,
    /// Lifetime of issued tokens.
    pub token_ttl: Duration,
    /// How long a user read may be reused by the Bearer check (zero, the
    /// default: never; each call reads the store).
    pub user_cache_ttl: Duration,
    /// bcrypt cost (4 to 31; default 12).
    pub bcrypt_cost: u32,
    /// bcrypt jobs running at once (default: the number of cores).
    pub bcrypt_workers: usize,
    /// bcrypt verifications (`sign_in`) allowed to wait (default 256).
    pub bcrypt_queue: usize,
    /// bcrypt hashes (`sign_up`, re-hashing) allowed to wait, in their own
    /// queue; `None` (the default): the same bound as `bcrypt_queue`.
    pub bcrypt_signup_queue: Option<usize>,
    /// Sign-in throttle budgets.
    pub throttle: ThrottleConfig,
    /// `sign_up` attempts per client address and minute; 0 disables
    /// (default 10).
    pub sign_up_per_ip: u32,
    /// Most keys each throttle limiter holds (default 100,000).
    pub throttle_max_keys: usize,
    /// Server limits and identity.
    pub server: ServerConfig,
}

impl Config {
    /// Defaults with this data dir.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            database_url: None,
            db_pool_size: 8,
            secret: SecretSource::DataDir,
            issuer: crate::auth::token::TokenKeys::DEFAULT_ISSUER.to_owned(),
            token_ttl: Duration::from_secs(3600),
            user_cache_ttl: Duration::ZERO,
            bcrypt_cost: 12,
            bcrypt_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            bcrypt_queue: 256,
            bcrypt_signup_queue: None,
            throttle: ThrottleConfig::default(),
            sign_up_per_ip: crate::throttle::DEFAULT_SIGN_UP_PER_IP,
            throttle_max_keys: crate::throttle::DEFAULT_MAX_KEYS,
            server: ServerConfig::default(),
        }
    }

    /// The hash (sign-up) queue's bound in force.
    pub fn signup_queue(&self) -> usize {
        self.bcrypt_signup_queue.unwrap_or(self.bcrypt_queue).max(1)
    }

    /// The database the store opens: the URL, or the SQLite file path.
    pub fn database(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => self.data_dir.join(DATABASE_FILE_NAME).display().to_string(),
        }
    }
}

/// Errors of loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The key is too short.
    #[error("the signing key must be at least {MIN_KEY_BYTES} bytes (256 bits); got {0} bytes")]
    KeyTooShort(usize),
    /// Reading or writing a file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Which file.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

fn io_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ConfigError + 'a {
    move |source| ConfigError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Loads (or, for [`SecretSource::DataDir`], creates) the signing key and
/// refuses one shorter than 256 bits.
pub fn load_secret(source: &SecretSource, data_dir: &Path) -> Result<Vec<u8>, ConfigError> {
    let key = match source {
        SecretSource::Value(key) => key.clone(),
        SecretSource::File(path) => read_key_file(path)?,
        SecretSource::DataDir => {
            let path = data_dir.join(SECRET_FILE_NAME);
            match create_key_file(&path) {
                Ok(key) => key,
                Err(ConfigError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    read_key_file(&path)?
                }
                Err(other) => return Err(other),
            }
        }
    };
    if key.len() < MIN_KEY_BYTES {
        return Err(ConfigError::KeyTooShort(key.len()));
    }
    Ok(key)
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let mut bytes = std::fs::read(path).map_err(io_error("cannot read key file", path))?;
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    Ok(bytes)
}

/// Writes 32 random bytes, hex-encoded, to a new file of mode 0600.
fn create_key_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(io_error("cannot create key file", path))?;
    let key = hex::encode(rand::random::<[u8; 32]>()).into_bytes();
    file.write_all(&key)
        .and_then(|_| file.sync_all())
        .map_err(io_error("cannot write key file", path))?;
    tracing::info!(path = %path.display(), "generated a new signing key");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_secret(&SecretSource::DataDir, dir.path()).expect("generate");
        let again = load_secret(&SecretSource::DataDir, dir.path()).expect("reuse");
        assert_eq!(first, again);
        assert_eq!(first.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SECRET_FILE_NAME))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn short_key_is_refused() {
        let err = load_secret(&SecretSource::Value(vec![1; 31]), Path::new(".")).unwrap_err();
        assert!(matches!(err, ConfigError::KeyTooShort(31)));
    }
}
