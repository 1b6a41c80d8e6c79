//! The key set in PostgreSQL: one set for every instance sharing the
//! database (table `signing_keys`, migration 0005), so that a token signed
//! by one instance verifies on every other, and a rotation made anywhere
//! (`rpcguard key rotate --database-url …`, or an instance started with
//! another `--jwt-alg`) reaches all of them without a restart.
//!
//! - Same rules as `keys.json` ([`set`](super::set)): one signing key, the
//!   retired ones verify until `retired + token TTL +`
//!   [`RELOAD_SLACK`](super::RELOAD_SLACK), then are pruned (at the next
//!   start or rotation).
//! - Every change runs in one transaction under a transaction-scoped
//!   advisory lock, so instances starting together on an empty database
//!   make one set (the second one finds the first's), and two rotations at
//!   once retire each other's keys in order; a unique index allows at most
//!   one signing key.
//! - First start on a database without keys: the set is imported, so that
//!   tokens already issued keep verifying — from the given secret
//!   (`RPCGUARD_SECRET` / `--secret-file`, how instances on one database
//!   shared a key before), else from the data dir's `keys.json`, else from
//!   its `secret.key`; with none of them a new key of `--jwt-alg` is made.
//!   Once the database has a set, those are no longer read.
//! - Watching: [`watch_key_table`] reads a stamp of the set (each key's
//!   `kid` and retirement, no material) when the change feed announces a
//!   change (`k:` on `rpcguard_users`, [`CachedStore::key_changes`]) and at
//!   least every period (1 s) in case a notification is lost, and swaps a
//!   changed set into the running [`TokenKeys`].
//! - Private: the material is selected only to build keys; never logged,
//!   never answered ([`StoredKey`]'s `Debug` redacts it).
//!
//! [`CachedStore::key_changes`]: crate::store::CachedStore::key_changes

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;
use tokio::sync::Notify;

use super::file::{first_key_set, read_key_set, KEYS_FILE_NAME};
use super::set::{KeyAlg, KeySet, StoredKey};
use crate::auth::token::TokenKeys;
use crate::clock::Clock;
use crate::config::ConfigError;
use crate::store::StoreError;

/// The advisory lock every change of the set takes (`rpcgkeys` in ASCII).
const KEYS_LOCK: i64 = 0x7270_6367_6b65_7973;

const SELECT_KEYS: &str = "SELECT kid, alg, created, retired, signs_from, legacy, material \
     FROM signing_keys ORDER BY seq";

/// How long a key rotated in on the database is published before it signs
/// (and the key it replaces keeps signing): longer than an instance takes
/// to see a change (the feed: milliseconds; the poll: 1 s), so a token of
/// the new key verifies on every instance from its first use.
pub const PUBLISH_DELAY: Duration = Duration::from_secs(3);

/// The stamp of the set: what [`stamp_of`] computes from a [`KeySet`].
const SELECT_STAMP: &str =
    "SELECT COALESCE(string_agg(kid || '/' || COALESCE(retired::text, '-'), \
     ',' ORDER BY seq), '') FROM signing_keys";

fn database(err: impl Into<StoreError>) -> ConfigError {
    ConfigError::KeyDatabase(err.into())
}

/// The key set in a PostgreSQL database (a small pool of its own).
#[derive(Debug, Clone)]
pub struct DbKeySet {
    pool: PgPool,
    clock: Clock,
}

impl DbKeySet {
    /// Connects to `url` (two connections) and migrates the schema.
    pub async fn connect(url: &str) -> Result<Self, ConfigError> {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(database)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(database)?;
        Ok(DbKeySet {
            pool,
            clock: Clock::System,
        })
    }

    /// The same set, its keys made, retired and pruned at `clock`'s time
    /// (the server's [`Config::clock`](crate::config::Config::clock));
    /// the system clock otherwise.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The set in the database; `None` when it has no keys.
    pub async fn load(&self) -> Result<Option<KeySet>, ConfigError> {
        let keys = read_keys(&self.pool).await?;
        checked(keys)
    }

    /// Opens the set like [`open_key_set`](super::open_key_set) opens
    /// `keys.json`: creates it when the database has none (from `import`,
    /// see the module docs), rotates it to `alg` when given and the
    /// signing key has another algorithm, and prunes keys whose grace (for
    /// tokens living `ttl`) has ended.
    pub async fn open(
        &self,
        alg: Option<KeyAlg>,
        ttl: Duration,
        import: Import<'_>,
    ) -> Result<KeySet, ConfigError> {
        self.change(|current, now| {
            let (mut set, created) = match current {
                Some(set) => (set, false),
                None => (import.key_set(alg, now)?, true),
            };
            let changed = set.settle(alg, now, ttl, PUBLISH_DELAY)?;
            Ok((set, created || changed))
        })
        .await
    }

    /// Rotates the set to a new key of `alg` (default: the signing key's
    /// algorithm) that signs [`PUBLISH_DELAY`] from now, and prunes keys
    /// past their grace; every instance on the database learns the new key
    /// before that. [`ConfigError::NoKeySet`] when the database has no set
    /// yet.
    pub async fn rotate(&self, alg: Option<KeyAlg>, ttl: Duration) -> Result<KeySet, ConfigError> {
        self.change(|current, now| {
            let mut set = current.ok_or(ConfigError::NoKeySet)?;
            let alg = match alg {
                Some(alg) => alg,
                None => set.signing()?.alg,
            };
            let kid = set
                .rotate_at(alg, now, now + PUBLISH_DELAY.as_secs())?
                .kid
                .clone();
            set.prune(now, ttl);
            tracing::info!(%kid, %alg, signs_in_s = PUBLISH_DELAY.as_secs(), "rotated the signing key in the database");
            Ok((set, true))
        })
        .await
    }

    /// Reads the set under the lock, lets `edit` change it, and writes
    /// what changed, in one transaction.
    async fn change(
        &self,
        edit: impl FnOnce(Option<KeySet>, u64) -> Result<(KeySet, bool), ConfigError>,
    ) -> Result<KeySet, ConfigError> {
        let mut tx = self.pool.begin().await.map_err(database)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(KEYS_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(database)?;
        let before = read_keys(&mut *tx).await?;
        let current = checked(before.clone())?;
        let now = self.clock.unix_now().ok_or(ConfigError::Clock)?;
        let (set, changed) = edit(current, now)?;
        set.check()?;
        if changed {
            write_changes(&mut tx, &before, &set).await?;
        }
        tx.commit().await.map_err(database)?;
        Ok(set)
    }

    /// The stamp of the set now (see [`stamp_of`]).
    async fn stamp(&self) -> Result<String, sqlx::Error> {
        sqlx::query_scalar(SELECT_STAMP).fetch_one(&self.pool).await
    }
}

/// Where the first set on an empty database comes from (see the module
/// docs).
pub struct Import<'a> {
    /// The secret given to this instance (`RPCGUARD_SECRET` /
    /// `--secret-file`), if any.
    pub given_secret: Option<&'a [u8]>,
    /// The instance's data dir (its `keys.json` or `secret.key`).
    pub data_dir: &'a Path,
}

impl Import<'_> {
    fn key_set(&self, alg: Option<KeyAlg>, now: u64) -> Result<KeySet, ConfigError> {
        if let Some(secret) = self.given_secret {
            let key = StoredKey::legacy_hs256(secret, now);
            tracing::info!(kid = %key.kid, "imported the given secret (RPCGUARD_SECRET or --secret-file) as the database's first key");
            return Ok(KeySet::of(vec![key]));
        }
        let path = self.data_dir.join(KEYS_FILE_NAME);
        match read_key_set(&path) {
            Ok(mut set) => {
                // The database allows one signing key: any other unretired
                // key (a hand-edited file) retires now.
                let signing = set.signing()?.kid.clone();
                for key in &mut set.keys {
                    if key.kid != signing {
                        key.retired.get_or_insert(now);
                    }
                }
                tracing::info!(path = %path.display(), keys = set.keys.len(), "imported keys.json as the database's key set");
                Ok(set)
            }
            Err(ConfigError::Io { cause: source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                first_key_set(self.data_dir, alg, now, "the database")
            }
            Err(other) => Err(other),
        }
    }
}

fn checked(keys: Vec<StoredKey>) -> Result<Option<KeySet>, ConfigError> {
    if keys.is_empty() {
        return Ok(None);
    }
    let set = KeySet::of(keys);
    set.check()?;
    Ok(Some(set))
}

/// What tells two versions of a set apart without their material: each
/// key's `kid` and retirement, in order (the same text [`SELECT_STAMP`]
/// makes in the database).
fn stamp_of(set: &KeySet) -> String {
    set.keys
        .iter()
        .map(|key| match key.retired {
            Some(retired) => format!("{}/{retired}", key.kid),
            None => format!("{}/-", key.kid),
        })
        .collect::<Vec<_>>()
        .join(",")
}

async fn read_keys(db: impl sqlx::PgExecutor<'_>) -> Result<Vec<StoredKey>, ConfigError> {
    let rows = sqlx::query(SELECT_KEYS)
        .fetch_all(db)
        .await
        .map_err(database)?;
    rows.iter().map(key_of_row).collect()
}

fn key_of_row(row: &sqlx::postgres::PgRow) -> Result<StoredKey, ConfigError> {
    let kid: String = row.try_get("kid").map_err(database)?;
    let bad = |reason: &str| ConfigError::KeyRow {
        kid: kid.clone(),
        reason: reason.to_owned(),
    };
    let alg: String = row.try_get("alg").map_err(database)?;
    let alg: KeyAlg = alg.parse().map_err(|_| bad("unknown algorithm"))?;
    let created: i64 = row.try_get("created").map_err(database)?;
    let created = u64::try_from(created).map_err(|_| bad("negative `created`"))?;
    let optional = |column: &str| -> Result<Option<u64>, ConfigError> {
        let value: Option<i64> = row.try_get(column).map_err(database)?;
        value
            .map(u64::try_from)
            .transpose()
            .map_err(|_| bad("negative time"))
    };
    let (retired, signs_from) = (optional("retired")?, optional("signs_from")?);
    let legacy: bool = row.try_get("legacy").map_err(database)?;
    let material: String = row.try_get("material").map_err(database)?;
    Ok(StoredKey::from_stored(
        kid.clone(),
        alg,
        (created, retired, signs_from),
        legacy,
        material,
    ))
}

/// Deletes the keys `set` no longer has, updates the ones it changed and
/// inserts the new ones (after the updates, so that the previous signing
/// key is retired before its successor arrives).
async fn write_changes(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    before: &[StoredKey],
    set: &KeySet,
) -> Result<(), ConfigError> {
    let seconds = |kid: &str, value: u64| {
        i64::try_from(value).map_err(|_| ConfigError::KeyRow {
            kid: kid.to_owned(),
            reason: "time out of range".to_owned(),
        })
    };
    let old: HashMap<&str, &StoredKey> = before.iter().map(|k| (k.kid.as_str(), k)).collect();
    for gone in before
        .iter()
        .filter(|old| !set.keys.iter().any(|key| key.kid == old.kid))
    {
        sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
            .bind(&gone.kid)
            .execute(&mut **tx)
            .await
            .map_err(database)?;
    }
    for key in &set.keys {
        let retired = key
            .retired
            .map(|retired| seconds(&key.kid, retired))
            .transpose()?;
        match old.get(key.kid.as_str()) {
            Some(old) if *old == key => {}
            Some(_) => {
                sqlx::query("UPDATE signing_keys SET retired = $2, legacy = $3 WHERE kid = $1")
                    .bind(&key.kid)
                    .bind(retired)
                    .bind(key.legacy)
                    .execute(&mut **tx)
                    .await
                    .map_err(database)?;
            }
            None => {}
        }
    }
    for key in set
        .keys
        .iter()
        .filter(|key| !old.contains_key(key.kid.as_str()))
    {
        let optional = |value: Option<u64>| value.map(|v| seconds(&key.kid, v)).transpose();
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, created, retired, signs_from, legacy, material) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.kid)
        .bind(key.alg.as_str())
        .bind(seconds(&key.kid, key.created)?)
        .bind(optional(key.retired)?)
        .bind(optional(key.signs_from)?)
        .bind(key.legacy)
        .bind(key.stored_material())
        .execute(&mut **tx)
        .await
        .map_err(database)?;
    }
    Ok(())
}

/// Watches the database's set (see the module docs) and swaps a changed
/// set into `keys`: when `changed` is woken (the change feed) and at least
/// every `period`. `current` is the set `keys` was built from. Stops when
/// every other holder of `keys` is gone.
pub fn watch_key_table(
    db: DbKeySet,
    keys: TokenKeys,
    current: &KeySet,
    period: Duration,
    changed: Arc<Notify>,
    metrics: crate::metrics::AccountMetrics,
) -> tokio::task::JoinHandle<()> {
    let mut seen = stamp_of(current);
    let mut newest = super::file::newest_kid(current);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = changed.notified() => {}
            }
            if keys.unused_elsewhere() {
                return;
            }
            let stamp = match db.stamp().await {
                Ok(stamp) => stamp,
                Err(e) => {
                    // Once per outage, not once per second.
                    if !failing {
                        tracing::warn!(error = %e, "cannot read the key set in the database; keeping the keys in use");
                    }
                    failing = true;
                    continue;
                }
            };
            if std::mem::replace(&mut failing, false) {
                tracing::info!("the key set in the database is readable again");
            }
            if stamp == seen {
                continue;
            }
            seen = stamp;
            match db.load().await {
                Ok(Some(set)) => match keys.replace_keys(&set) {
                    Ok(()) => {
                        seen = stamp_of(&set);
                        tracing::info!(
                            keys = set.keys.len(),
                            "key set changed in the database; now in use"
                        );
                        let kid = super::file::newest_kid(&set);
                        if kid.is_some() && kid != newest {
                            metrics.key_rotation(kid.as_deref().unwrap_or_default());
                            newest = kid;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "key set changed in the database but is unusable; keeping the keys in use")
                    }
                },
                Ok(None) => {
                    tracing::warn!("the database has no keys any more; keeping the keys in use")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "key set changed in the database but cannot be read; keeping the keys in use")
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_names_kids_and_retirements_only() {
        let mut set = KeySet::generate(KeyAlg::HS256, 10).expect("set");
        let first = set.keys[0].kid.clone();
        assert_eq!(stamp_of(&set), format!("{first}/-"));
        let second = set.rotate(KeyAlg::EdDSA, 20).expect("rotate").kid.clone();
        let stamp = stamp_of(&set);
        assert_eq!(stamp, format!("{first}/20,{second}/-"));
        let material = set.keys[0].stored_material().to_owned();
        assert!(!stamp.contains(&material));
    }
}
