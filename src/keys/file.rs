//! `<data-dir>/keys.json`: the key set on disk.
//!
//! - Private like every key file ([`crate::config`]): read with
//!   `O_NOFOLLOW`, must be a regular file owned by this user with mode 0600;
//!   written as a new 0600 file next to it and renamed over it, so a reader
//!   never sees half a set.
//! - Upgrade: when there is no `keys.json` but a `secret.key` (rpcguard
//!   before key sets), that secret becomes the set's first key, an HS256
//!   key marked `legacy` that also verifies tokens without a `kid` — the
//!   tokens issued before the upgrade keep working until they expire.
//!   `secret.key` is left in place (an older binary can still start) but no
//!   longer read once `keys.json` exists.
//! - Watching: [`watch_key_file`] checks the file's modification time, size
//!   and inode once per period (off the request path) and swaps the new set
//!   into the running [`TokenKeys`] when they change; a file that cannot be
//!   read or parsed is logged and the keys in use are kept.
//!
//! The set is per data dir, for one instance on SQLite; instances on one
//! PostgreSQL database keep theirs in the database instead
//! ([`db`](super::db)), where this file (or `secret.key`) is imported on the
//! first start.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::set::{KeyAlg, KeySet, StoredKey};
use crate::auth::token::TokenKeys;
use crate::clock::Clock;
use crate::config::{read_key_file, ConfigError, SECRET_FILE_NAME};

/// Name of the key set file in the data dir.
pub const KEYS_FILE_NAME: &str = "keys.json";

/// Opens the data dir's key set, creating it when missing (from
/// `secret.key` when there is one), and makes it match `alg` when given: if
/// the signing key has another algorithm, the set is rotated to a new key of
/// `alg`. Keys whose grace (for tokens living `ttl`) has ended are removed.
/// New keys are made, and old ones retired, at `clock`'s time (the
/// server's [`Config::clock`](crate::config::Config::clock)). The data dir
/// must exist ([`crate::config::prepare_data_dir`]).
pub fn open_key_set(
    data_dir: &Path,
    alg: Option<KeyAlg>,
    ttl: Duration,
    clock: &Clock,
) -> Result<KeySet, ConfigError> {
    let path = data_dir.join(KEYS_FILE_NAME);
    let now = clock.unix_now().ok_or(ConfigError::Clock)?;
    let (mut set, mut changed) = match read_key_set(&path) {
        Ok(set) => (set, false),
        Err(ConfigError::Io { cause: source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            let place = path.display().to_string();
            (first_key_set(data_dir, alg, now, &place)?, true)
        }
        Err(other) => return Err(other),
    };
    changed |= set.settle(alg, now, ttl, Duration::ZERO)?;
    if changed {
        write_key_set(&path, &set)?;
    }
    Ok(set)
}

/// Rotates the data dir's key set to a new key of `alg` (default: the
/// signing key's algorithm), removes keys past their grace, saves it and
/// returns it, at `clock`'s time. A running server on this data dir picks
/// it up within seconds ([`watch_key_file`]).
pub fn rotate_key_set(
    data_dir: &Path,
    alg: Option<KeyAlg>,
    ttl: Duration,
    clock: &Clock,
) -> Result<KeySet, ConfigError> {
    let mut set = open_key_set(data_dir, None, ttl, clock)?;
    let now = clock.unix_now().ok_or(ConfigError::Clock)?;
    let alg = match alg {
        Some(alg) => alg,
        None => set.signing()?.alg,
    };
    let kid = set.rotate(alg, now)?.kid.clone();
    set.prune(now, ttl);
    write_key_set(&data_dir.join(KEYS_FILE_NAME), &set)?;
    tracing::info!(%kid, %alg, "rotated the signing key");
    Ok(set)
}

/// The first key set of `data_dir`, to be kept at `place` (the file, or
/// the database): from its `secret.key` when there is one (rotated to
/// `alg` when that is not HS256), else a new key of `alg` (default HS256).
pub(crate) fn first_key_set(
    data_dir: &Path,
    alg: Option<KeyAlg>,
    now: u64,
    place: &str,
) -> Result<KeySet, ConfigError> {
    let legacy = data_dir.join(SECRET_FILE_NAME);
    let mut set = match read_key_file(&legacy) {
        Ok(secret) => {
            tracing::info!(path = %legacy.display(), into = %place, "imported secret.key as the key set's first (HS256) key");
            KeySet::of(vec![StoredKey::legacy_hs256(&secret, now)])
        }
        Err(ConfigError::Io { cause: source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            let set = KeySet::generate(alg.unwrap_or(KeyAlg::HS256), now)?;
            if let Ok(key) = set.signing() {
                tracing::info!(into = %place, kid = %key.kid, alg = %key.alg, "generated a new signing key");
            }
            return Ok(set);
        }
        Err(other) => return Err(other),
    };
    if let Some(alg) = alg.filter(|alg| *alg != KeyAlg::HS256) {
        set.rotate(alg, now)?;
    }
    Ok(set)
}

/// Reads and checks a key set file (private, see the module docs).
pub fn read_key_set(path: &Path) -> Result<KeySet, ConfigError> {
    let bytes = read_key_file(path)?;
    // The reason names the place, never the text there (it may be key
    // material).
    let set: KeySet = serde_json::from_slice(&bytes).map_err(|e| ConfigError::KeysJson {
        path: path.to_owned(),
        reason: format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ),
    })?;
    set.check()?;
    Ok(set)
}

/// Writes `set` to `path` atomically: a new 0600 file beside it, synced,
/// then renamed over it.
pub fn write_key_set(path: &Path, set: &KeySet) -> Result<(), ConfigError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| ConfigError::Io {
            what,
            path,
            cause: source,
        }
    };
    let tmp = path.with_extension("json.tmp");
    // A leftover of an interrupted write (or anything planted there) goes;
    // `remove_file` removes a link itself, never its target.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io("cannot remove", &tmp)(e));
        }
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let json = serde_json::to_vec_pretty(set).map_err(|e| ConfigError::KeysJson {
        path: path.to_owned(),
        reason: format!("cannot serialize ({:?})", e.classify()),
    })?;
    let mut file = options
        .open(&tmp)
        .map_err(io("cannot create key file", &tmp))?;
    file.write_all(&json)
        .and_then(|_| file.sync_all())
        .map_err(io("cannot write key file", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("cannot replace key file", path))
}

/// What tells a changed file apart: modification time, size, inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Option<std::time::SystemTime>, u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp(meta.modified().ok(), meta.len(), inode))
}

/// Watches `path` every `period` and swaps a changed key set into `keys`
/// (see the module docs). Stops when every other holder of `keys` is gone.
/// A key added to the set (its `kid` is new) counts as a rotation in
/// `metrics` and the audit stream.
pub fn watch_key_file(
    path: PathBuf,
    keys: TokenKeys,
    period: Duration,
    metrics: crate::metrics::AccountMetrics,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = stamp(&path);
        let mut newest = read_key_set(&path).ok().and_then(|set| newest_kid(&set));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if keys.unused_elsewhere() {
                return;
            }
            let now = stamp(&path);
            if now == seen {
                continue;
            }
            seen = now;
            let read = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || read_key_set(&path)).await
            };
            match read {
                Ok(Ok(set)) => match keys.replace_keys(&set) {
                    Ok(()) => {
                        tracing::info!(
                            path = %path.display(),
                            keys = set.keys.len(),
                            "key set changed on disk; now in use"
                        );
                        let kid = newest_kid(&set);
                        if kid.is_some() && kid != newest {
                            metrics.key_rotation(kid.as_deref().unwrap_or_default());
                            newest = kid;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "key set changed on disk but is unusable; keeping the keys in use")
                    }
                },
                Ok(Err(e)) => {
                    tracing::warn!(path = %path.display(), error = %e, "key set changed on disk but cannot be read; keeping the keys in use")
                }
                Err(e) => tracing::warn!(error = %e, "key set reload failed"),
            }
        }
    })
}

/// The `kid` of the set's newest key.
pub(crate) fn newest_kid(set: &KeySet) -> Option<String> {
    set.keys.last().map(|key| key.kid.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).expect("meta").permissions().mode() & 0o777
    }

    #[test]
    fn a_new_data_dir_gets_a_private_set_of_the_asked_algorithm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let set = open_key_set(dir.path(), Some(KeyAlg::ES256), TTL, &Clock::System).expect("open");
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.signing().expect("signing").alg, KeyAlg::ES256);
        #[cfg(unix)]
        assert_eq!(mode(&dir.path().join(KEYS_FILE_NAME)), 0o600);
        // Reopened without --jwt-alg: the same set, unchanged.
        assert_eq!(
            open_key_set(dir.path(), None, TTL, &Clock::System).expect("reopen"),
            set
        );
    }

    #[test]
    fn secret_key_becomes_the_first_key_on_upgrade() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = crate::config::load_secret(&crate::config::SecretSource::DataDir, dir.path())
            .expect("old secret.key");
        let set = open_key_set(dir.path(), None, TTL, &Clock::System).expect("open");
        assert_eq!(set.keys.len(), 1);
        let key = set.signing().expect("signing");
        assert!(key.legacy);
        assert_eq!(key.material().expect("material"), secret);
        // Upgrading straight to EdDSA keeps the old key verifying.
        let dir = tempfile::tempdir().expect("tempdir");
        crate::config::load_secret(&crate::config::SecretSource::DataDir, dir.path())
            .expect("old secret.key");
        let set = open_key_set(dir.path(), Some(KeyAlg::EdDSA), TTL, &Clock::System).expect("open");
        assert_eq!(set.keys.len(), 2);
        assert!(set.keys[0].legacy && set.keys[0].retired.is_some());
        assert_eq!(set.signing().expect("signing").alg, KeyAlg::EdDSA);
    }

    #[test]
    fn rotation_is_saved_and_a_changed_alg_rotates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = open_key_set(dir.path(), None, TTL, &Clock::System).expect("open");
        assert_eq!(first.signing().expect("signing").alg, KeyAlg::HS256);
        let rotated = rotate_key_set(dir.path(), None, TTL, &Clock::System).expect("rotate");
        assert_eq!(rotated.keys.len(), 2);
        assert_eq!(rotated.signing().expect("signing").alg, KeyAlg::HS256);
        let read = read_key_set(&dir.path().join(KEYS_FILE_NAME)).expect("read");
        assert_eq!(read, rotated);
        let switched =
            open_key_set(dir.path(), Some(KeyAlg::RS256), TTL, &Clock::System).expect("switch");
        assert_eq!(switched.keys.len(), 3);
        assert_eq!(switched.signing().expect("signing").alg, KeyAlg::RS256);
        #[cfg(unix)]
        assert_eq!(mode(&dir.path().join(KEYS_FILE_NAME)), 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn an_open_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        open_key_set(dir.path(), None, TTL, &Clock::System).expect("open");
        let path = dir.path().join(KEYS_FILE_NAME);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = open_key_set(dir.path(), None, TTL, &Clock::System).unwrap_err();
        assert!(matches!(err, ConfigError::KeyFileMode { .. }), "{err}");
    }
}
