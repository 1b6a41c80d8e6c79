//! Password hashing with bcrypt, off the async workers.
//!
//! bcrypt at cost 12 takes a few hundred milliseconds of CPU. Running it on a
//! tokio worker would stall every other caller on that worker, so hashes and
//! verifies run on a small pool of dedicated threads, one per core (more
//! would only make each one slower). The threads run at a lower scheduling
//! priority (nice 19), so that when bcrypt and ordinary calls compete for
//! the cores, the ordinary calls win and a sign-in flood cannot push their
//! latency up; when nothing else runs, bcrypt still gets every core. Jobs
//! wait in a bounded queue; when it is full the call is refused at once with
//! `-32005` rather than piling up unbounded work (a `sign_up` flood then
//! cannot starve `sign_in` forever).

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

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
    /// The worker threads are gone (or could not be started).
    #[error("bcrypt workers unavailable: {0}")]
    Workers(String),
}

impl From<PasswordError> for RpcError {
    fn from(err: PasswordError) -> Self {
        match err {
            PasswordError::Busy => RpcError::TooManyRequests { retry_after_s: 1 },
            other => RpcError::internal(other),
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Hashes and verifies passwords on a bounded pool of dedicated threads.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    cost: u32,
    workers: usize,
    max_queued: usize,
    jobs: SyncSender<Job>,
    /// A hash of a random password at the configured cost; `verify` of an
    /// unknown user runs against it so that it takes as long as a real one.
    dummy_hash: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("cost", &self.inner.cost)
            .field("workers", &self.inner.workers)
            .field("max_queued", &self.inner.max_queued)
            .finish()
    }
}

/// Lowers the calling thread's scheduling priority (Linux: per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority has no memory-safety preconditions; `who = 0`
    // names the calling thread on Linux.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

impl PasswordHasher {
    /// Creates a hasher at bcrypt `cost` with `workers` threads and at most
    /// `max_queued` jobs waiting, and computes the dummy hash (one bcrypt
    /// run).
    pub async fn new(cost: u32, workers: usize, max_queued: usize) -> Result<Self, PasswordError> {
        let workers = workers.max(1);
        let (jobs, queue) = sync_channel::<Job>(max_queued);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..workers {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("bcrypt-{n}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = match queue.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // the hasher was dropped
                        }
                    }
                })
                .map_err(|e| PasswordError::Workers(e.to_string()))?;
        }
        // One bcrypt run at start-up, on tokio's blocking pool.
        let random: [u8; 16] = rand::random();
        let dummy_hash =
            tokio::task::spawn_blocking(move || bcrypt::hash(hex::encode(random), cost))
                .await
                .map_err(|e| PasswordError::Workers(e.to_string()))??;
        Ok(PasswordHasher {
            inner: Arc::new(Inner {
                cost,
                workers,
                max_queued,
                jobs,
                dummy_hash,
            }),
        })
    }

    /// The number of bcrypt worker threads.
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

    /// Queues `work` for a worker; `Busy` at once when the queue is full.
    async fn run<T, F>(&self, work: F) -> Result<T, PasswordError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
    {
        let (answer, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = answer.send(work());
        });
        match self.inner.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(PasswordError::Busy),
            Err(TrySendError::Disconnected(_)) => {
                return Err(PasswordError::Workers("the queue is closed".into()))
            }
        }
        let outcome = result
            .await
            .map_err(|_| PasswordError::Workers("a worker dropped its job".into()))?;
        Ok(outcome?)
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
        // One worker, no waiting room: while the worker is busy, the next
        // job is refused at once.
        let hasher = PasswordHasher::new(12, 1, 0).await.expect("hasher");
        let pw = Password::parse("correct horse").expect("valid");
        let busy = {
            let hasher = hasher.clone();
            let pw = pw.clone();
            tokio::spawn(async move { hasher.hash(&pw).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(matches!(hasher.hash(&pw).await, Err(PasswordError::Busy)));
        busy.await.expect("join").expect("the first job completes");
    }
}
