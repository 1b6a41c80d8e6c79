//! Configuration values of the reference server, the data dir, and loading
//! the signing key.
//!
//! Files are private to the server's user (Unix):
//! - the data dir is created mode 0700; an existing one that group or others
//!   may enter is tightened to 0700 at start, with a warning in the log
//!   (refusing would stop every server upgraded from a version that left it
//!   0755, for a fix the server can make itself);
//! - a key file (the generated `<data-dir>/secret.key` and `--secret-file`
//!   alike) must be a regular file, not a symbolic link, owned by the
//!   server's user and with no permission for group or others; anything else
//!   stops the server at start with a message naming the file and the fix.
//!   It is opened with `O_NOFOLLOW` and checked on the open descriptor, so
//!   nothing can be swapped in between the check and the read. Where the key
//!   cannot live in such a file (a Kubernetes secret volume is a tree of
//!   links), give it in `RPCGUARD_SECRET`.
//!
//! The library never reads the environment: the binary's clap structs (in
//! `src/cli/`, every flag also from `RPCGUARD_*`) fill a [`Config`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::token::MIN_KEY_BYTES;
use crate::clock::Clock;
use crate::throttle::ThrottleConfig;
use rpcguard::openrpc::DocInfo;
use rpcguard::server::ServerConfig;

/// Name of the generated key file in the data dir.
pub const SECRET_FILE_NAME: &str = "secret.key";
/// Default lifetime of an access token: 15 minutes.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 900;
/// Default lifetime of a refresh token: 30 days.
pub const DEFAULT_REFRESH_TTL_SECS: u64 = 30 * 24 * 3600;
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
    /// The signing key's source (on PostgreSQL only imported into the
    /// database's key set on the first start).
    pub secret: SecretSource,
    /// `--jwt-alg`: the algorithm new tokens are signed with. `None` keeps
    /// the key set's signing key (HS256 for a new set); another algorithm
    /// than the signing key's rotates the set at start (see
    /// [`open_key_set`](crate::keys::open_key_set)).
    pub jwt_alg: Option<crate::keys::KeyAlg>,
    /// How often the server looks at `keys.json` (SQLite), or at the
    /// database's key set (PostgreSQL, besides the change feed), for a
    /// rotation (default 1 s; keep it below
    /// [`PUBLISH_DELAY`](crate::keys::PUBLISH_DELAY)).
    pub keys_check_every: Duration,
    /// Token issuer and audience.
    pub issuer: String,
    /// Lifetime of issued access tokens (default 900 s).
    pub token_ttl: Duration,
    /// Lifetime of a refresh token (default 30 days); each `refresh`
    /// issues one that lives this long.
    pub refresh_ttl: Duration,
    /// Users the exact in-memory auth state keeps at most (least recently
    /// used go first; see [`CachedStore`](crate::store::CachedStore)).
    pub auth_cache_users: usize,
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
    /// `refresh` budgets (per client address and per session).
    pub refresh_throttle: crate::throttle::RefreshConfig,
    /// What a caller can make the server keep per session and account.
    pub session_limits: crate::session::SessionLimits,
    /// An external issuer whose Bearer tokens are accepted beside the
    /// server's own (`--oidc-issuer` and friends); its `issuer` must differ
    /// from [`Config::issuer`], which routes the server's own tokens.
    #[cfg(feature = "oidc")]
    pub oidc: Option<rpcguard::security::oidc::OidcConfig>,
    /// Server limits and identity.
    pub server: ServerConfig,
    /// Where the server reads the time: token `iat`/`exp` and their
    /// expiry, session and refresh-token times, account creation, password
    /// changes, key rotations at start, purges. The system clock by
    /// default; a test gives a [`ManualClock`](crate::clock::ManualClock)
    /// to move time instead of sleeping.
    pub clock: Clock,
}

impl Config {
    /// Defaults with this data dir.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            database_url: None,
            db_pool_size: 8,
            secret: SecretSource::DataDir,
            jwt_alg: None,
            keys_check_every: Duration::from_secs(1),
            issuer: crate::auth::token::TokenKeys::DEFAULT_ISSUER.to_owned(),
            token_ttl: Duration::from_secs(DEFAULT_TOKEN_TTL_SECS),
            refresh_ttl: Duration::from_secs(DEFAULT_REFRESH_TTL_SECS),
            auth_cache_users: crate::store::DEFAULT_CAPACITY,
            bcrypt_cost: 12,
            bcrypt_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            bcrypt_queue: 256,
            bcrypt_signup_queue: None,
            throttle: ThrottleConfig::default(),
            sign_up_per_ip: crate::throttle::DEFAULT_SIGN_UP_PER_IP,
            throttle_max_keys: crate::throttle::DEFAULT_MAX_KEYS,
            refresh_throttle: crate::throttle::RefreshConfig::default(),
            session_limits: crate::session::SessionLimits::default(),
            #[cfg(feature = "oidc")]
            oidc: None,
            server: ServerConfig {
                openrpc_info: reference_doc("http://127.0.0.1:8080/"),
                cpu_share: Some(bcrypt_share(DEFAULT_BCRYPT_SHARE)),
                ..ServerConfig::default()
            },
            clock: Clock::System,
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

/// What the reference server's OpenRPC document says about itself.
pub fn reference_doc(server_url: &str) -> DocInfo {
    DocInfo::new("rpcguard", env!("CARGO_PKG_VERSION"))
        .description(
            "A JSON-RPC 2.0 server framework with real authentication (bcrypt + JWT scopes) \
             and a generated OpenRPC document",
        )
        .server_url(server_url)
}

/// Errors of loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The key is too short.
    #[error("the signing key must be at least {MIN_KEY_BYTES} bytes (256 bits); got {0} bytes")]
    KeyTooShort(usize),
    /// The key file is a symbolic link (which could point at a key planted
    /// by someone else).
    #[error(
        "key file {0} is a symbolic link; refusing to follow it (a planted link would swap in \
         another key). Put the key file itself there, owned by this server's user with \
         mode 0600, or give the key in RPCGUARD_SECRET"
    )]
    KeyFileIsLink(PathBuf),
    /// The key file is not a regular file.
    #[error("key file {0} is not a regular file")]
    KeyFileNotRegular(PathBuf),
    /// The key file belongs to another user.
    #[error(
        "key file {path} is owned by uid {owner}, not by this server's user (uid {user}): \
         run `chown {user} {path}` (and `chmod 600 {path}`), or give the key in RPCGUARD_SECRET"
    )]
    KeyFileOwner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The server's effective user.
        user: u32,
    },
    /// Group or others may read or change the key file.
    #[error(
        "key file {path} has mode {mode:03o}: group or others may read or change it; \
         run `chmod 600 {path}`, or give the key in RPCGUARD_SECRET"
    )]
    KeyFileMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// `keys.json` is not a key set.
    #[error("key set {path} is not valid: {reason}")]
    KeysJson {
        /// The file.
        path: PathBuf,
        /// What is wrong (never any key material).
        reason: String,
    },
    /// The key set is unusable (no signing key, twin `kid`s, bad material).
    #[error(transparent)]
    Keys(#[from] crate::keys::set::KeyError),
    /// A given secret (`RPCGUARD_SECRET`, `--secret-file`) is an HS256 key;
    /// another algorithm needs the data dir's key set.
    #[error(
        "--jwt-alg {0} needs the key set in the data dir, but a secret was given \
         (RPCGUARD_SECRET or --secret-file), which is an HS256 key: drop it, or use --jwt-alg HS256"
    )]
    GivenSecretIsHs256(crate::keys::KeyAlg),
    /// The key set in the database (PostgreSQL) could not be read or
    /// written.
    #[error("the key set in the database: {0}")]
    KeyDatabase(#[source] crate::store::StoreError),
    /// A key row in the database is not usable.
    #[error("key {kid} in the database is not valid: {reason}")]
    KeyRow {
        /// The key's id.
        kid: String,
        /// What is wrong (never any key material).
        reason: String,
    },
    /// An admin command found no key set in the database.
    #[error(
        "no key set in the database: start `rpcguard serve` on it once (that creates the set)"
    )]
    NoKeySet,
    /// The external issuer has the server's own `iss`: tokens are routed
    /// by `iss`, so the two could not be told apart.
    #[cfg(feature = "oidc")]
    #[error(
        "--oidc-issuer {0:?} is this server's own token issuer; an external issuer needs its own `iss`"
    )]
    OidcIssuerIsOurs(String),
    /// The clock is before 1970.
    #[error("system clock is before the Unix epoch")]
    Clock,
    /// Reading or writing a file failed.
    #[error("{what} {}: {}", path.display(), rpcguard::error::io_cause(cause))]
    Io {
        /// What was being done.
        what: &'static str,
        /// Which file.
        path: PathBuf,
        /// Why it failed (in the message, not a `source`: said once).
        cause: std::io::Error,
    },
}

fn io_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ConfigError + 'a {
    move |source| ConfigError::Io {
        what,
        path: path.to_owned(),
        cause: source,
    }
}

/// Creates the data dir (mode 0700, parents too) or, when it exists and
/// group or others have any permission on it, tightens it to 0700 and logs a
/// warning.
pub fn prepare_data_dir(dir: &Path) -> Result<(), ConfigError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(io_error("cannot create the data dir", dir))?;
    crate::files::tighten_mode(dir, 0o700, "data dir").map_err(io_error(
        "cannot make the data dir private (chmod 700)",
        dir,
    ))
}

/// Loads (or, for [`SecretSource::DataDir`], creates) the signing key and
/// refuses one shorter than 256 bits, or a key file that is not private
/// (see the module docs).
pub fn load_secret(source: &SecretSource, data_dir: &Path) -> Result<Vec<u8>, ConfigError> {
    let key = match source {
        SecretSource::Value(key) => key.clone(),
        SecretSource::File(path) => read_key_file(path)?,
        SecretSource::DataDir => {
            let path = data_dir.join(SECRET_FILE_NAME);
            match create_key_file(&path) {
                Ok(key) => key,
                Err(ConfigError::Io { cause: source, .. })
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

/// Reads a key file that is private to this user: opened without following
/// a symbolic link (and without blocking on a FIFO), then checked on the
/// open descriptor (regular file, our owner, no group/other bits).
pub(crate) fn read_key_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let mut file = match options.open(path) {
        Ok(file) => file,
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(ConfigError::KeyFileIsLink(path.to_owned()))
        }
        Err(e) => return Err(io_error("cannot read key file", path)(e)),
    };
    let meta = file
        .metadata()
        .map_err(io_error("cannot read key file", path))?;
    if !meta.is_file() {
        return Err(ConfigError::KeyFileNotRegular(path.to_owned()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let user = unsafe { libc::geteuid() };
        if meta.uid() != user {
            return Err(ConfigError::KeyFileOwner {
                path: path.to_owned(),
                owner: meta.uid(),
                user,
            });
        }
        if meta.mode() & 0o077 != 0 {
            return Err(ConfigError::KeyFileMode {
                path: path.to_owned(),
                mode: meta.mode() & 0o7777,
            });
        }
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(io_error("cannot read key file", path))?;
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    Ok(bytes)
}

/// Writes 32 random bytes, hex-encoded, to a new file of mode 0600.
/// `create_new` (`O_CREAT | O_EXCL`) never follows a symbolic link: a link
/// at `path` makes it fail with `AlreadyExists`, and the checked read then
/// refuses the link.
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

/// The share of the cores bcrypt gets while sign-ins wait, by default.
pub const DEFAULT_BCRYPT_SHARE: f64 = 0.5;

/// The [`CpuShare`](rpcguard::server::CpuShare) that gives bcrypt `fraction`
/// of this machine's cores while a job waits or runs (the API keeps the
/// rest, at least one worker).
pub fn bcrypt_share(fraction: f64) -> rpcguard::server::CpuShare {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let reserved = (cores as f64 * fraction.clamp(0.0, 1.0)).round() as usize;
    rpcguard::server::CpuShare::new(cores.saturating_sub(reserved))
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

    #[cfg(unix)]
    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[cfg(unix)]
    #[test]
    fn key_files_must_be_private_regular_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key");
        std::fs::write(&key, "k".repeat(40)).expect("write");
        chmod(&key, 0o600);
        let file = SecretSource::File(key.clone());
        assert_eq!(
            load_secret(&file, dir.path()).expect("private"),
            vec![b'k'; 40]
        );
        for mode in [0o644, 0o640, 0o604, 0o620] {
            chmod(&key, mode);
            let err = load_secret(&file, dir.path()).unwrap_err();
            assert!(
                matches!(err, ConfigError::KeyFileMode { .. }),
                "{mode:o}: {err}"
            );
            assert!(err
                .to_string()
                .contains(&format!("chmod 600 {}", key.display())));
        }
        chmod(&key, 0o600);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&key, &link).expect("symlink");
        let err = load_secret(&SecretSource::File(link), dir.path()).unwrap_err();
        assert!(matches!(err, ConfigError::KeyFileIsLink(_)), "{err}");
        let err = load_secret(&SecretSource::File(dir.path().to_owned()), dir.path()).unwrap_err();
        assert!(matches!(err, ConfigError::KeyFileNotRegular(_)), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn planted_link_in_the_data_dir_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let planted = dir.path().join("planted");
        std::fs::write(&planted, "p".repeat(64)).expect("write");
        chmod(&planted, 0o600);
        std::os::unix::fs::symlink(&planted, dir.path().join(SECRET_FILE_NAME)).expect("symlink");
        let err = load_secret(&SecretSource::DataDir, dir.path()).unwrap_err();
        assert!(matches!(err, ConfigError::KeyFileIsLink(_)), "{err}");
        // A dangling link is not followed to create a key elsewhere either.
        std::fs::remove_file(&planted).expect("rm");
        let err = load_secret(&SecretSource::DataDir, dir.path()).unwrap_err();
        assert!(matches!(err, ConfigError::KeyFileIsLink(_)), "{err}");
        assert!(!planted.exists());
    }

    #[cfg(unix)]
    #[test]
    fn data_dir_is_created_or_tightened_to_0700() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("a").join("b");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        prepare_data_dir(&dir).expect("create");
        assert_eq!(mode(&dir), 0o700);
        chmod(&dir, 0o755);
        prepare_data_dir(&dir).expect("tighten");
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn short_key_is_refused() {
        let err = load_secret(&SecretSource::Value(vec![1; 31]), Path::new(".")).unwrap_err();
        assert!(matches!(err, ConfigError::KeyTooShort(31)));
    }
}
