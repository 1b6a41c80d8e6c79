//! Password hashing with bcrypt, off the async workers.
//!
//! bcrypt at cost 12 takes a few hundred milliseconds of CPU. Running it on a
//! tokio worker would stall every other caller on that worker, so hashes and
//! verifies run on a small pool of dedicated threads, one per core (more
//! would only make each one slower), at the normal priority.
//!
//! When bcrypt and ordinary calls compete for the cores, bcrypt gets a
//! bounded share of them ([`PasswordHasher::share_cpu`], a
//! [`CpuShare`]): from the moment a job is queued until it ends, the
//! server's connections run on fewer async workers (the reference server
//! leaves them half of the cores), so a sign-in made while the API is
//! saturated finishes in about twice its own time instead of waiting
//! seconds, and the API keeps the rest. While the API is saturated, each
//! job's thread also keeps to the cores the API leaves it
//! ([`CpuShare::place_job_thread`]), so that calls do not wait out a
//! bcrypt time slice on a shared core. (Before, the threads ran at nice 19:
//! the API always won, and a sign-in under load got a quarter of the
//! cores it needed.)
//!
//! Two bounded queues feed the threads, so that `sign_up` cannot take the
//! capacity `sign_in` needs:
//! - **verifications** (`sign_in`) go first: a free thread always takes a
//!   waiting verification before any hash;
//! - **hashes** (`sign_up`, re-hashing) may occupy at most `workers - 1`
//!   threads at once (1 when there is a single thread), so with two or more
//!   threads a verification never waits for a hash to finish.
//!
//! A place in a queue is reserved *before* the caller spends anything else
//! (a throttle budget, a database read): [`PasswordHasher::reserve_verify`]
//! and [`PasswordHasher::reserve_hash`] answer [`PasswordError::Busy`] at
//! once when that queue is full (`-32005`), and a [`Reservation`] dropped
//! unused gives its place back. A full hash queue therefore refuses
//! `sign_up`, never `sign_in`.
//!
//! Unknown users are verified against a *dummy hash* so that they take as
//! long as a real user. Its cost follows [`PasswordHasher::set_dummy_cost`]
//! (the server sets it to the cost most stored hashes have, see
//! [`prevailing_cost`]); a dummy at a cost not seen before is made by the
//! unknown-user job itself (`bcrypt::hash` at that cost takes as long as a
//! verify at that cost), and kept for the next ones.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use crate::user::Password;
use rpcguard::error::RpcError;
use rpcguard::server::CpuShare;

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

impl PasswordError {
    /// The error a caller gets: `-32005` when the bcrypt queue is full,
    /// else `-32603` (the detail logged where the call is answered).
    /// Explicit rather than `?`: `?` would make `Busy` `-32603`.
    pub fn into_rpc(self) -> RpcError {
        match self {
            PasswordError::Busy => RpcError::TooManyRequests { retry_after_s: 1 },
            other => RpcError::internal(other),
        }
    }
}

/// The bcrypt cost of a stored hash (`$2b$12$…` → 12), or `None` when it is
/// not a bcrypt hash.
pub fn hash_cost(hash: &str) -> Option<u32> {
    let mut parts = hash.split('$');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(""), Some(_version), Some(cost)) if cost.len() == 2 => cost.parse().ok(),
        _ => None,
    }
}

/// The cost most of `counts` (cost, number of stored hashes) have; ties go
/// to `fallback` when it is among them, else to the higher cost; `fallback`
/// when there are no hashes.
pub fn prevailing_cost(counts: &[(u32, u64)], fallback: u32) -> u32 {
    let most = counts.iter().map(|&(_, n)| n).max().unwrap_or(0);
    if most == 0 {
        return fallback;
    }
    let tied = counts.iter().filter(|&&(_, n)| n == most).map(|&(c, _)| c);
    if tied.clone().any(|c| c == fallback) {
        fallback
    } else {
        tied.max().unwrap_or(fallback)
    }
}

/// Settings of a [`PasswordHasher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HasherConfig {
    /// bcrypt cost of new hashes (4 to 31).
    pub cost: u32,
    /// Worker threads (at least 1).
    pub workers: usize,
    /// Verifications (`sign_in`) allowed to wait (at least 1).
    pub verify_queue: usize,
    /// Hashes (`sign_up`, re-hashing) allowed to wait (at least 1).
    pub hash_queue: usize,
}

type Job = Box<dyn FnOnce() + Send>;

/// Which queue a job waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Verify,
    Hash,
}

/// The queues, under one lock.
#[derive(Default)]
struct Queues {
    verify: VecDeque<Job>,
    hash: VecDeque<Job>,
    /// Verifications reserved or queued, not yet started.
    verify_waiting: usize,
    /// Hashes reserved or queued, not yet started.
    hash_waiting: usize,
    /// Hashes running now.
    hashing: usize,
    closed: bool,
}

/// What the worker threads and the reservations share.
struct Shared {
    queues: Mutex<Queues>,
    wake: Condvar,
    verify_cap: usize,
    hash_cap: usize,
    /// Most hashes running at once.
    hash_threads: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        // A job never runs under the lock, so a poisoned lock still holds
        // consistent counters.
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reserve(&self, kind: Kind) -> Result<(), PasswordError> {
        let mut q = self.lock();
        if q.closed {
            return Err(PasswordError::Workers("the hasher is stopped".into()));
        }
        let (waiting, cap) = match kind {
            Kind::Verify => (&mut q.verify_waiting, self.verify_cap),
            Kind::Hash => (&mut q.hash_waiting, self.hash_cap),
        };
        if *waiting >= cap {
            return Err(PasswordError::Busy);
        }
        *waiting += 1;
        Ok(())
    }

    fn release(&self, kind: Kind) {
        let mut q = self.lock();
        match kind {
            Kind::Verify => q.verify_waiting = q.verify_waiting.saturating_sub(1),
            Kind::Hash => q.hash_waiting = q.hash_waiting.saturating_sub(1),
        }
    }

    fn submit(&self, kind: Kind, job: Job) -> Result<(), PasswordError> {
        let mut q = self.lock();
        if q.closed {
            return Err(PasswordError::Workers("the hasher is stopped".into()));
        }
        match kind {
            Kind::Verify => q.verify.push_back(job),
            Kind::Hash => q.hash.push_back(job),
        }
        drop(q);
        self.wake.notify_one();
        Ok(())
    }

    /// The next job for a worker: a verification first, else a hash if
    /// fewer than `hash_threads` are running; `None` once closed.
    fn next(&self) -> Option<(Kind, Job)> {
        let mut q = self.lock();
        loop {
            if q.closed {
                return None;
            }
            if let Some(job) = q.verify.pop_front() {
                q.verify_waiting = q.verify_waiting.saturating_sub(1);
                return Some((Kind::Verify, job));
            }
            if q.hashing < self.hash_threads {
                if let Some(job) = q.hash.pop_front() {
                    q.hash_waiting = q.hash_waiting.saturating_sub(1);
                    q.hashing += 1;
                    return Some((Kind::Hash, job));
                }
            }
            q = self.wake.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn finished(&self, kind: Kind) {
        if kind == Kind::Hash {
            let mut q = self.lock();
            q.hashing = q.hashing.saturating_sub(1);
            drop(q);
            // A worker idle because of the hash limit may take a hash now.
            self.wake.notify_all();
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }
}

/// Hashes and verifies passwords on a bounded pool of dedicated threads.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    cost: u32,
    workers: usize,
    config: HasherConfig,
    shared: Arc<Shared>,
    /// The cost of the dummy hash unknown users are verified against.
    dummy_cost: AtomicU32,
    /// Dummy hashes (of random passwords) by cost.
    dummies: Arc<Mutex<HashMap<u32, String>>>,
    /// Where the queue's depth and wait are recorded, once set.
    metrics: std::sync::OnceLock<QueueMetrics>,
    /// The share of the cores the jobs get while they wait or run, once
    /// set.
    share: std::sync::OnceLock<CpuShare>,
}

/// The bcrypt queue's depth (jobs waiting for a thread) and the time each
/// job waited.
#[derive(Debug, Clone)]
pub struct QueueMetrics {
    /// Jobs waiting for a thread.
    pub depth: prometheus_client::metrics::gauge::Gauge,
    /// Time from a job's submission to a thread taking it.
    pub wait: rpcguard::metrics::AtomicHistogram,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("config", &self.inner.config)
            .field("dummy_cost", &self.dummy_cost())
            .finish()
    }
}

/// A random password, never used for anything but a dummy hash.
fn random_password() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// A place reserved in one of the hasher's queues; use it with
/// [`Reservation::verify`] or [`Reservation::hash`] (by the kind it was
/// reserved for), or drop it to give the place back.
pub struct Reservation {
    hasher: PasswordHasher,
    kind: Kind,
    held: bool,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("kind", &self.kind)
            .finish()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.held {
            self.hasher.inner.shared.release(self.kind);
        }
    }
}

impl Reservation {
    /// Runs `work` on a worker in this reservation's queue.
    async fn run<T, F>(mut self, work: F) -> Result<T, PasswordError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
    {
        let (answer, result) = oneshot::channel();
        let metrics = self.hasher.inner.metrics.get().cloned();
        let queued = std::time::Instant::now();
        if let Some(metrics) = &metrics {
            metrics.depth.inc();
        }
        let taken = metrics.clone();
        // Counted as busy from now until the job ends (the API gives way).
        let share = self.hasher.inner.share.get().cloned();
        let busy = share.as_ref().map(CpuShare::busy);
        let job: Job = Box::new(move || {
            if let Some(metrics) = taken {
                metrics.depth.dec();
                metrics.wait.observe(queued.elapsed());
            }
            // Off the API's cores while the API is saturated.
            if let Some(share) = &share {
                share.place_job_thread();
            }
            let outcome = work();
            drop(busy);
            let _ = answer.send(outcome);
        });
        // From here the place is the queued job's; a worker frees it when it
        // takes the job.
        if let Err(err) = self.hasher.inner.shared.submit(self.kind, job) {
            if let Some(metrics) = &metrics {
                metrics.depth.dec();
            }
            return Err(err);
        }
        self.held = false;
        let outcome = result
            .await
            .map_err(|_| PasswordError::Workers("a worker dropped its job".into()))?;
        Ok(outcome?)
    }

    /// Verifies a password against a stored hash, or against the dummy hash
    /// when there is no user (`None`), which always fails but takes as long.
    /// Meant for a reservation from [`PasswordHasher::reserve_verify`].
    pub async fn verify(
        self,
        password: &Password,
        hash: Option<&str>,
    ) -> Result<bool, PasswordError> {
        let password = password.expose().to_owned();
        match hash {
            Some(hash) => {
                let hash = hash.to_owned();
                self.run(move || bcrypt::verify(password, &hash)).await
            }
            None => {
                let cost = self.hasher.dummy_cost();
                let dummies = self.hasher.inner.dummies.clone();
                let known = dummies
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&cost)
                    .cloned();
                self.run(move || {
                    match known {
                        Some(dummy) => {
                            bcrypt::verify(password, &dummy)?;
                        }
                        None => {
                            // As long as a verify at this cost; kept for
                            // the next unknown user.
                            let dummy = bcrypt::hash(random_password(), cost)?;
                            dummies
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .insert(cost, dummy);
                        }
                    }
                    Ok(false)
                })
                .await
            }
        }
    }

    /// Hashes a password for storage at the configured cost. Meant for a
    /// reservation from [`PasswordHasher::reserve_hash`].
    pub async fn hash(self, password: &Password) -> Result<String, PasswordError> {
        let password = password.expose().to_owned();
        let cost = self.hasher.inner.cost;
        self.run(move || bcrypt::hash(password, cost)).await
    }
}

impl PasswordHasher {
    /// Creates a hasher at bcrypt `cost` with `workers` threads and at most
    /// `max_queued` jobs waiting in each queue, and computes the dummy hash
    /// (one bcrypt run).
    pub async fn new(cost: u32, workers: usize, max_queued: usize) -> Result<Self, PasswordError> {
        Self::start(HasherConfig {
            cost,
            workers,
            verify_queue: max_queued,
            hash_queue: max_queued,
        })
        .await
    }

    /// Creates a hasher with these settings and computes the dummy hash at
    /// the configured cost (one bcrypt run).
    pub async fn start(config: HasherConfig) -> Result<Self, PasswordError> {
        let workers = config.workers.max(1);
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            wake: Condvar::new(),
            verify_cap: config.verify_queue.max(1),
            hash_cap: config.hash_queue.max(1),
            hash_threads: workers.saturating_sub(1).max(1),
        });
        // One bcrypt run at start-up, on tokio's blocking pool, before any
        // thread exists (nothing to stop if it fails).
        let cost = config.cost;
        let dummy = tokio::task::spawn_blocking(move || bcrypt::hash(random_password(), cost))
            .await
            .map_err(|e| PasswordError::Workers(e.to_string()))??;
        let hasher = PasswordHasher {
            inner: Arc::new(Inner {
                cost,
                workers,
                config,
                shared: shared.clone(),
                dummy_cost: AtomicU32::new(cost),
                dummies: Arc::new(Mutex::new(HashMap::from([(cost, dummy)]))),
                metrics: std::sync::OnceLock::new(),
                share: std::sync::OnceLock::new(),
            }),
        };
        for n in 0..workers {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("bcrypt-{n}"))
                .spawn(move || {
                    while let Some((kind, job)) = shared.next() {
                        job();
                        shared.finished(kind);
                    }
                })
                .map_err(|e| PasswordError::Workers(e.to_string()))?;
        }
        Ok(hasher)
    }

    /// Records the queue's depth and wait into `metrics` from now on (the
    /// first call wins).
    pub fn record_into(&self, metrics: QueueMetrics) {
        let _ = self.inner.metrics.set(metrics);
    }

    /// Gives the jobs `share` of the cores from now on: while one waits or
    /// runs, the server's connections give way (the first call wins).
    pub fn share_cpu(&self, share: CpuShare) {
        let _ = self.inner.share.set(share);
    }

    /// Verifications handed to the workers and not started yet (a
    /// verification is handed over once its sign-in has read the account).
    pub fn queued_verifications(&self) -> usize {
        self.inner.shared.lock().verify.len()
    }

    /// The number of bcrypt worker threads.
    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    /// The configured bcrypt cost.
    pub fn cost(&self) -> u32 {
        self.inner.cost
    }

    /// The cost of the dummy hash that unknown users are verified against.
    pub fn dummy_cost(&self) -> u32 {
        self.inner.dummy_cost.load(Ordering::Relaxed)
    }

    /// Makes unknown users take as long as a stored hash of this cost
    /// (ignored outside bcrypt's 4 to 31).
    pub fn set_dummy_cost(&self, cost: u32) {
        if (4..=31).contains(&cost) {
            self.inner.dummy_cost.store(cost, Ordering::Relaxed);
        }
    }

    /// Whether a stored hash should be replaced by one at the configured
    /// cost (its cost differs, or it is not a bcrypt hash we can read).
    pub fn needs_rehash(&self, hash: &str) -> bool {
        hash_cost(hash) != Some(self.inner.cost)
    }

    /// Reserves a place in the verification queue; [`PasswordError::Busy`]
    /// at once when it is full.
    pub fn reserve_verify(&self) -> Result<Reservation, PasswordError> {
        self.reserve(Kind::Verify)
    }

    /// Reserves a place in the hash queue; [`PasswordError::Busy`] at once
    /// when it is full.
    pub fn reserve_hash(&self) -> Result<Reservation, PasswordError> {
        self.reserve(Kind::Hash)
    }

    fn reserve(&self, kind: Kind) -> Result<Reservation, PasswordError> {
        self.inner.shared.reserve(kind)?;
        Ok(Reservation {
            hasher: self.clone(),
            kind,
            held: true,
        })
    }

    /// Hashes a password for storage (in the hash queue).
    pub async fn hash(&self, password: &Password) -> Result<String, PasswordError> {
        self.reserve_hash()?.hash(password).await
    }

    /// Verifies a password against a stored hash, or against the dummy hash
    /// when there is no user (`None`), which always fails but takes as long
    /// (in the verification queue).
    pub async fn verify(
        &self,
        password: &Password,
        hash: Option<&str>,
    ) -> Result<bool, PasswordError> {
        self.reserve_verify()?.verify(password, hash).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn hash_then_verify() {
        let hasher = PasswordHasher::new(4, 2, 8).await.expect("hasher");
        let pw = Password::parse("correct horse").expect("valid");
        let hash = hasher.hash(&pw).await.expect("hash");
        assert_eq!(hash_cost(&hash), Some(4));
        assert!(!hasher.needs_rehash(&hash));
        assert!(hasher.verify(&pw, Some(&hash)).await.expect("verify"));
        let wrong = Password::parse("wrong horse").expect("valid");
        assert!(!hasher.verify(&wrong, Some(&hash)).await.expect("verify"));
        assert!(!hasher.verify(&pw, None).await.expect("dummy verify"));
    }

    #[tokio::test]
    async fn full_queue_is_refused() {
        // One worker, one waiting place: while the worker is busy and one
        // job waits, the next is refused at once.
        let hasher = PasswordHasher::new(12, 1, 1).await.expect("hasher");
        let pw = Password::parse("correct horse").expect("valid");
        let spawn = |hasher: &PasswordHasher| {
            let (hasher, pw) = (hasher.clone(), pw.clone());
            tokio::spawn(async move { hasher.hash(&pw).await })
        };
        let running = spawn(&hasher);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let waiting = spawn(&hasher);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(matches!(hasher.hash(&pw).await, Err(PasswordError::Busy)));
        // An unused reservation gives its place back.
        drop(hasher.reserve_verify().expect("the other queue has room"));
        drop(hasher.reserve_verify().expect("and still has"));
        running
            .await
            .expect("join")
            .expect("the first job completes");
        waiting
            .await
            .expect("join")
            .expect("the second job completes");
    }

    #[tokio::test]
    async fn a_full_hash_queue_never_refuses_or_delays_verification() {
        // Two workers: hashes may use only one, so a verification finds a
        // free thread however many hashes wait.
        let hasher = PasswordHasher::start(HasherConfig {
            cost: 4,
            workers: 2,
            verify_queue: 4,
            hash_queue: 4,
        })
        .await
        .expect("hasher");
        let slow = Password::parse("correct horse").expect("valid");
        // Fill the hash side with slow (cost 10) work.
        let expensive = {
            let hasher = hasher.clone();
            move || {
                let reservation = hasher.reserve_hash()?;
                Ok::<_, PasswordError>(reservation.run(|| bcrypt::hash("x", 10)))
            }
        };
        let mut hashes = Vec::new();
        while let Ok(job) = expensive() {
            hashes.push(tokio::spawn(job));
        }
        assert_eq!(hashes.len(), 4, "the hash queue's bound");
        // One has started: its place is free; take it again.
        tokio::time::sleep(Duration::from_millis(50)).await;
        while let Ok(job) = expensive() {
            hashes.push(tokio::spawn(job));
        }
        assert_eq!(
            hashes.len(),
            5,
            "one running (hashes use 1 of 2 threads), 4 waiting"
        );
        assert!(matches!(hasher.reserve_hash(), Err(PasswordError::Busy)));
        let hash = bcrypt::hash(slow.expose(), 4).expect("hash");
        let started = Instant::now();
        assert!(hasher.verify(&slow, Some(&hash)).await.expect("verify"));
        let verify_took = started.elapsed();
        let started = Instant::now();
        for job in hashes {
            job.await.expect("join").expect("hash");
        }
        let hashes_took = started.elapsed();
        assert!(
            verify_took * 4 < hashes_took,
            "the verification waited for the hashes: {verify_took:?} vs {hashes_took:?}"
        );
    }

    #[tokio::test]
    async fn the_dummy_follows_the_set_cost() {
        let hasher = PasswordHasher::new(4, 1, 4).await.expect("hasher");
        let pw = Password::parse("correct horse").expect("valid");
        hasher.set_dummy_cost(6);
        assert_eq!(hasher.dummy_cost(), 6);
        assert!(!hasher.verify(&pw, None).await.expect("made at cost 6"));
        assert!(!hasher.verify(&pw, None).await.expect("verified at cost 6"));
        let dummies = hasher.inner.dummies.lock().expect("lock");
        assert_eq!(dummies.get(&6).and_then(|h| hash_cost(h)), Some(6));
        drop(dummies);
        hasher.set_dummy_cost(99);
        assert_eq!(hasher.dummy_cost(), 6, "out of range is ignored");
    }

    #[test]
    fn costs() {
        assert_eq!(hash_cost("$2b$12$abcdefghijklmnopqrstuv"), Some(12));
        assert_eq!(hash_cost("$2y$04$x"), Some(4));
        assert_eq!(hash_cost("plain"), None);
        assert_eq!(prevailing_cost(&[], 10), 10);
        assert_eq!(prevailing_cost(&[(12, 3), (10, 1)], 10), 12);
        assert_eq!(prevailing_cost(&[(12, 2), (10, 2)], 10), 10);
        assert_eq!(prevailing_cost(&[(12, 2), (11, 2)], 10), 12);
    }
}
