//! The PostgreSQL change feed of the [`CachedStore`]: a task that LISTENs
//! on [`CHANGES_CHANNEL`] and drops what the notifications name (see the
//! parent module).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{CachedStore, Freshness, CHANGES_CHANNEL, KEYS_CHANGED_KEY};
use crate::store::{AdminChange, SharedStore, ADMIN_KEY_PREFIX};

pub(super) struct PgFeed {
    pub(super) live: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PgFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CachedStore {
    /// Wraps the PostgreSQL store at `url`, listening for changes on
    /// [`CHANGES_CHANNEL`] in a background task (stopped when the store is
    /// dropped).
    pub fn postgres(inner: SharedStore, url: &str, capacity: usize) -> Arc<Self> {
        let live = Arc::new(AtomicBool::new(false));
        let url = url.to_owned();
        Arc::new_cyclic(|me: &Weak<CachedStore>| {
            let task = tokio::spawn(listen(url, me.clone(), live.clone()));
            Self::new(inner, capacity, Freshness::Postgres(PgFeed { live, task }))
        })
    }
}

/// Listens for changes until the store is dropped, reconnecting with a
/// growing pause (100 ms to 2 s) after a lost connection.
async fn listen(url: String, store: Weak<CachedStore>, live: Arc<AtomicBool>) {
    let mut pause = Duration::from_millis(100);
    loop {
        match sqlx::postgres::PgListener::connect(&url).await {
            Ok(mut listener) => match listener.listen(CHANGES_CHANNEL).await {
                Ok(()) => {
                    // Anything may have changed while nobody listened.
                    let Some(cache) = store.upgrade() else { return };
                    cache.forget_all();
                    cache.keys_changed.notify_one();
                    live.store(true, Ordering::Release);
                    drop(cache);
                    pause = Duration::from_millis(100);
                    tracing::debug!("listening for account changes");
                    // `Ok(None)` or an error: the connection is gone.
                    while let Ok(Some(note)) = listener.try_recv().await {
                        let Some(cache) = store.upgrade() else { return };
                        match note.payload() {
                            "" => cache.forget_all(),
                            KEYS_CHANGED_KEY => cache.keys_changed.notify_one(),
                            key if key.starts_with(ADMIN_KEY_PREFIX) => {
                                AdminChange::emit_from_key(key)
                            }
                            key => cache.forget(key),
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cannot LISTEN for account changes"),
            },
            Err(err) => {
                tracing::warn!(error = %err, "cannot connect to LISTEN for account changes")
            }
        }
        live.store(false, Ordering::Release);
        match store.upgrade() {
            Some(cache) => cache.forget_all(),
            None => return,
        }
        tracing::warn!(
            "lost the account-change feed; reading the store on every call until it is back"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}
