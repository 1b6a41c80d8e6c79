//! Password hashing with bcrypt, off the async workers.
//!
//! bcrypt at cost 12 takes a few hundred milliseconds of CPU. Running it on a
//! tokio worker would stall every other caller on that worker, so each hash
//! or verify runs on the blocking pool, and a semaphore sized to the cores
//! keeps at most that many running at once (more would only make each one
//! slower). Callers beyond that wait in a bounded queue; when the queue is
//! full the call is refused at once with `-32005` rather than piling up
//! unbounded work (a `sign_up` flood then cannot starve `sign_in` forever).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::error::RpcError;
use crate::user::Password;

/// Errors of the password hasher.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Too many hash/verify jobs are already queued.
    #[error("bcrypt queue is full")]
    Busy,
    /// bcrypt itself failed (bad stored hash, bad cost, …).
    #[error("bcrypt failed: {0}")]
    Bcrypt(#[from] bcrypt::BcryptError),
    /// The blocking task panicked or was cancelled.
    #[error("bcrypt task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl From<PasswordError> for RpcError {
    fn from(err: PasswordError) -> Self {
        match err {
            PasswordError::Busy => RpcError::TooManyRequests { retry_after_s: 1 },
            other => RpcError::internal(other),
        }
    }
}

/// Hashes and verifies passwords on a bounded pool of blocking threads.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    cost: u32,
    workers: usize,
    running: Semaphore,
    queued: AtomicUsize,
    max_queued: usize,
    /// A hash of a random password at the configured cost; `verify` of an
    /// unknown user runs against it so that it takes as long as a real one.
    dummy_hash: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("cost", &self.inner.cost)
            .field("workers", &self.workers())
            .field("max_queued", &self.inner.max_queued)
            .finish()
    }
}

impl PasswordHasher {
    /// Creates a hasher at bcrypt `cost` running at most `workers` jobs at
    /// once, with at most `max_queued` jobs waiting. Computes the dummy hash
    /// (one bcrypt run) on the blocking pool.
    pub async fn new(cost: u32, workers: usize, max_queued: usize) -> Result<Self, PasswordError> {
        let workers = workers.max(1);
        let dummy_hash = tokio::task::spawn_blocking(move || {
            let random: [u8; 16] = rand::random();
            bcrypt::hash(hex::encode(random), cost)
        })
        .await??;
        Ok(PasswordHasher {
            inner: Arc::new(Inner {
                cost,
                workers,
                running: Semaphore::new(workers),
                queued: AtomicUsize::new(0),
                max_queued,
                dummy_hash,
            }),
        })
    }

    /// The number of bcrypt jobs that may run at once.
    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    /// The configured bcrypt cost.
    pub fn cost(&self) -> u32 {
        self.inner.cost
    }

    /// Hashes a password for storage.
    pub async fn hash(&self, password: &Password) -> Result<String, PasswordError> {
        let password = password.expose().to_owned();
        let cost = self.inner.cost;
        self.run(move || bcrypt::hash(password, cost)).await
    }

    /// Verifies a password against a stored hash, or against the dummy hash
    /// when there is no user (`None`), which always fails but takes as long.
    pub async fn verify(
        &self,
        password: &Password,
        hash: Option<&str>,
    ) -> Result<bool, PasswordError> {
        let password = password.expose().to_owned();
        let (hash, real) = match hash {
            Some(h) => (h.to_owned(), true),
            None => (self.inner.dummy_hash.clone(), false),
        };
        let ok = self.run(move || bcrypt::verify(password, &hash)).await?;
        Ok(ok && real)
    }

    async fn run<T, F>(&self, job: F) -> Result<T, PasswordError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
    {
        let _slot = QueueSlot::take(&self.inner)?;
        let _permit = self
            .inner
            .running
            .acquire()
            .await
            .map_err(|_| PasswordError::Busy)?;
        Ok(tokio::task::spawn_blocking(job).await??)
    }
}

/// One place in the bounded queue, released on drop (also when the caller
/// goes away while waiting).
struct QueueSlot<'a>(&'a AtomicUsize);

impl<'a> QueueSlot<'a> {
    fn take(inner: &'a Inner) -> Result<Self, PasswordError> {
        let queued = &inner.queued;
        let mut current = queued.load(Ordering::Relaxed);
        loop {
            if current >= inner.max_queued {
                return Err(PasswordError::Busy);
            }
            match queued.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(QueueSlot(queued)),
                Err(now) => current = now,
            }
        }
    }
}

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let hasher = PasswordHasher::new(4, 2, 8).await.expect("hasher");
        let pw = Password::parse("correct horse").expect("valid");
        let hash = hasher.hash(&pw).await.expect("hash");
        assert!(hasher.verify(&pw, Some(&hash)).await.expect("verify"));
        let wrong = Password::parse("wrong horse").expect("valid");
        assert!(!hasher.verify(&wrong, Some(&hash)).await.expect("verify"));
        assert!(!hasher.verify(&pw, None).await.expect("dummy verify"));
    }

    #[tokio::test]
    async fn full_queue_is_refused() {
        let hasher = PasswordHasher::new(4, 1, 0).await.expect("hasher");
        let pw = Password::parse("correct horse").expect("valid");
        assert!(matches!(hasher.hash(&pw).await, Err(PasswordError::Busy)));
    }
}
