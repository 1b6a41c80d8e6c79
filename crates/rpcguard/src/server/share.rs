//! A share of the cores for work that runs beside the server's calls.
//!
//! Some work an application does is long and CPU-bound and runs on threads
//! of its own (the reference server's bcrypt verifications: ~250 ms each).
//! When the API is saturated, the operating system splits the cores
//! between those threads and the async workers roughly evenly per thread,
//! and the load generator or proxy on the same machine takes its part: the
//! long jobs get far less than the cores they need, and a user signing in
//! while the API is busy waits seconds. Lowering their priority (nice)
//! makes that worse; raising it needs privileges a service does not have.
//!
//! A [`CpuShare`] gives that work a bounded share instead: while any such
//! job is waiting or running ([`CpuShare::busy`]), at most
//! [`CpuShare::api_workers`] async workers run connection code at the same
//! time (each HTTP connection's and WebSocket session's task is polled
//! only with a slot, [`CpuShare::gate`]); the workers left idle park, and
//! their cores go to the jobs. When no job waits, the gate is open and
//! costs one relaxed atomic load per poll.
//!
//! The jobs' threads also keep off the API's cores while the API is
//! saturated ([`CpuShare::place_job_thread`], called by a job thread before
//! each job): when the gate has turned work away in the last
//! [`CONTENDED_FOR`], the thread runs only on the last `cores −
//! api_workers` cores the process may use, so the kernel moves the API's
//! running worker to the others. Without that, the kernel time-slices the
//! API worker with the jobs on the same core, and a call waits out a job's
//! slice (milliseconds): measured on 2 cores with a sign_in flood beside
//! get_caller at full load, get_caller's p99 went from 10 × its p99 without
//! the flood to about 2 ×. When the API is not saturated, a job runs on any
//! core, so a burst of sign-ins on a quiet server uses every core.
//!
//! The price is the trade-off itself: while jobs run, the API gets
//! `api_workers` of the cores, so its throughput drops to about that share
//! and its latency grows accordingly; the jobs finish in about the time
//! they take on the cores they were given.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How long after the gate last turned work away the API counts as
/// saturated, for [`CpuShare::place_job_thread`].
pub const CONTENDED_FOR: Duration = Duration::from_millis(100);

/// A bounded share of the cores for work outside the async workers (see
/// the module documentation). Cheap to clone (one `Arc`).
#[derive(Clone, Debug)]
pub struct CpuShare {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Async workers allowed to run connection code while jobs are busy.
    api_workers: usize,
    /// Jobs waiting or running.
    busy: AtomicUsize,
    /// Connection tasks holding a slot now.
    running: AtomicUsize,
    /// Tasks waiting for a slot.
    waiting: Mutex<Vec<Waker>>,
    /// When the share was made (the origin of `turned_away`).
    origin: Instant,
    /// Milliseconds after `origin` when the gate last turned work away
    /// (0: never).
    turned_away: AtomicU64,
    /// The cores the jobs' threads keep to while the API is saturated:
    /// the last `cores − api_workers` of those the process may use (empty:
    /// unknown, or no core to spare).
    job_cores: Vec<usize>,
    /// Every core the process may use (a job thread's set otherwise).
    all_cores: Vec<usize>,
}

impl CpuShare {
    /// A share that leaves the API `api_workers` workers (at least 1) while
    /// jobs are busy, e.g. `cores - cores / 2` to give the jobs half of the
    /// cores.
    pub fn new(api_workers: usize) -> Self {
        let api_workers = api_workers.max(1);
        let all_cores = affinity::allowed();
        let job_cores = all_cores
            .get(api_workers..)
            .map(<[usize]>::to_vec)
            .unwrap_or_default();
        CpuShare {
            inner: Arc::new(Inner {
                api_workers,
                busy: AtomicUsize::new(0),
                running: AtomicUsize::new(0),
                waiting: Mutex::new(Vec::new()),
                origin: Instant::now(),
                turned_away: AtomicU64::new(0),
                job_cores,
                all_cores,
            }),
        }
    }

    /// Whether the gate turned work away in the last [`CONTENDED_FOR`]:
    /// the API wanted more cores than its share.
    pub fn api_saturated(&self) -> bool {
        let last = self.inner.turned_away.load(Ordering::Relaxed);
        last != 0 && self.inner.millis().saturating_sub(last) <= CONTENDED_FOR.as_millis() as u64
    }

    /// Places the calling thread, one that runs jobs, before a job: on the
    /// jobs' cores while the API is saturated, on any core otherwise (see
    /// the module documentation). A system call only when the placement
    /// changes; where the process's cores cannot be read or set, nothing
    /// is done.
    pub fn place_job_thread(&self) {
        let keep_off = self.api_saturated() && !self.inner.job_cores.is_empty();
        PLACED.with(|placed| {
            if placed.get() != Some(keep_off) {
                let cores = if keep_off {
                    &self.inner.job_cores
                } else {
                    &self.inner.all_cores
                };
                if affinity::set_this_thread(cores) {
                    placed.set(Some(keep_off));
                }
            }
        });
    }

    /// Workers the API keeps while jobs are busy.
    pub fn api_workers(&self) -> usize {
        self.inner.api_workers
    }

    /// Whether jobs are waiting or running now (the API is limited).
    pub fn is_limited(&self) -> bool {
        self.inner.busy.load(Ordering::Relaxed) > 0
    }

    /// Marks one job as waiting or running until the guard is dropped.
    pub fn busy(&self) -> BusyGuard {
        self.inner.busy.fetch_add(1, Ordering::SeqCst);
        BusyGuard {
            inner: self.inner.clone(),
        }
    }

    /// `future`, polled only with a slot while jobs are busy.
    pub fn gate<F: Future>(&self, future: F) -> Gated<F> {
        Gated {
            future,
            inner: self.inner.clone(),
        }
    }
}

/// A job counted by [`CpuShare::busy`] until it is dropped.
#[derive(Debug)]
#[must_use = "the job counts as busy only while the guard lives"]
pub struct BusyGuard {
    inner: Arc<Inner>,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if self.inner.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            // The last job ended: the gate opens for everyone waiting.
            self.inner.wake_all();
        }
    }
}

thread_local! {
    /// Whether this job thread is kept to the jobs' cores now (`None`:
    /// never placed).
    static PLACED: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// The process's cores, read and set through the system calls.
mod affinity {
    /// The cores this thread may run on now, in order (empty if unknown).
    pub(super) fn allowed() -> Vec<usize> {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: a zeroed cpu_set_t is a valid empty set, and the size
            // passed is its own.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            let read = unsafe {
                libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set)
            };
            if read != 0 {
                return Vec::new();
            }
            (0..libc::CPU_SETSIZE as usize)
                // SAFETY: `cpu` is below CPU_SETSIZE.
                .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
                .collect()
        }
        #[cfg(not(target_os = "linux"))]
        Vec::new()
    }

    /// Lets the calling thread run only on `cores`; whether it was done.
    pub(super) fn set_this_thread(cores: &[usize]) -> bool {
        #[cfg(target_os = "linux")]
        {
            if cores.is_empty() {
                return false;
            }
            // SAFETY: as above; every core set is below CPU_SETSIZE (they
            // were read from a set of that size).
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            for &cpu in cores {
                unsafe { libc::CPU_SET(cpu, &mut set) };
            }
            let done =
                unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
            if done != 0 {
                tracing::debug!(error = %std::io::Error::last_os_error(), "could not place a job thread");
            }
            done == 0
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = cores;
            false
        }
    }
}

impl Inner {
    /// Milliseconds since `origin`, at least 1 (0 means never).
    fn millis(&self) -> u64 {
        (self.origin.elapsed().as_millis() as u64).max(1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waker>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake_all(&self) {
        let waiting = std::mem::take(&mut *self.lock());
        for waker in waiting {
            waker.wake();
        }
    }

    fn wake_one(&self) {
        let next = self.lock().pop();
        if let Some(waker) = next {
            waker.wake();
        }
    }

    /// Takes a slot if one is free.
    fn try_enter(&self) -> bool {
        let mut running = self.running.load(Ordering::SeqCst);
        while running < self.api_workers {
            match self.running.compare_exchange_weak(
                running,
                running + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(now) => running = now,
            }
        }
        false
    }

    fn leave(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.wake_one();
    }
}

pin_project_lite::pin_project! {
    /// A future polled only with a slot of its [`CpuShare`] while jobs are
    /// busy ([`CpuShare::gate`]).
    #[derive(Debug)]
    pub struct Gated<F> {
        #[pin]
        future: F,
        inner: Arc<Inner>,
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let inner = &**this.inner;
        if inner.busy.load(Ordering::Relaxed) == 0 {
            return this.future.poll(cx);
        }
        if !inner.try_enter() {
            let now = inner.millis();
            if inner.turned_away.load(Ordering::Relaxed) != now {
                inner.turned_away.store(now, Ordering::Relaxed);
            }
            inner.lock().push(cx.waker().clone());
            // A slot freed (or the last job ended) between the first try
            // and the registration would have found no waker: try again.
            if inner.busy.load(Ordering::SeqCst) == 0 {
                return this.future.poll(cx);
            }
            if !inner.try_enter() {
                return Poll::Pending;
            }
        }
        let output = this.future.poll(cx);
        inner.leave();
        output
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn while_busy_at_most_the_share_runs_at_once() {
        let share = CpuShare::new(1);
        let busy = share.busy();
        let inside = Arc::new(AtomicUsize::new(0));
        let overlap = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (inside, overlap) = (inside.clone(), overlap.clone());
                tokio::spawn(share.gate(async move {
                    for _ in 0..50 {
                        if inside.fetch_add(1, Ordering::SeqCst) > 0 {
                            overlap.store(true, Ordering::SeqCst);
                        }
                        // Busy for a while inside one poll.
                        let until =
                            std::time::Instant::now() + std::time::Duration::from_micros(200);
                        while std::time::Instant::now() < until {}
                        inside.fetch_sub(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                    }
                }))
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        assert!(!overlap.load(Ordering::SeqCst), "two polls ran at once");
        drop(busy);
        assert!(!share.is_limited());
    }

    #[tokio::test]
    async fn the_gate_opens_when_the_last_job_ends() {
        let share = CpuShare::new(1);
        let busy = share.busy();
        let slot = share.inner.try_enter();
        assert!(slot, "the one slot");
        let waiting = tokio::spawn(share.gate(async { 7 }));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no slot while busy");
        drop(busy);
        assert_eq!(waiting.await.expect("task"), 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_thread_keeps_off_the_api_cores_only_while_the_api_is_saturated() {
        let share = CpuShare::new(1);
        let all = affinity::allowed();
        let job_cores = all.get(1..).map(<[usize]>::to_vec).unwrap_or_default();
        // A job thread, placed before each of three jobs.
        let (jobs, placed) = (
            std::sync::mpsc::channel::<()>(),
            std::sync::mpsc::channel::<Vec<usize>>(),
        );
        let (next, go) = jobs;
        let (report, reports) = placed;
        let thread_share = share.clone();
        let thread = std::thread::spawn(move || {
            while go.recv().is_ok() {
                thread_share.place_job_thread();
                let _ = report.send(affinity::allowed());
            }
        });
        let place = || {
            next.send(()).expect("job thread");
            reports.recv().expect("placement")
        };
        assert!(!share.api_saturated());
        assert_eq!(place(), all, "a quiet API leaves every core to the job");

        // The API wants more than its one worker while a job is busy.
        let busy = share.busy();
        let release = Arc::new(AtomicBool::new(false));
        let spinners: Vec<_> = (0..2)
            .map(|_| {
                let release = release.clone();
                tokio::spawn(share.gate(async move {
                    while !release.load(Ordering::SeqCst) {
                        // Busy for a while inside one poll, as a call is.
                        let until = Instant::now() + Duration::from_micros(500);
                        while Instant::now() < until {}
                        tokio::task::yield_now().await;
                    }
                }))
            })
            .collect();
        // Two workers poll the two tasks: one is turned away.
        for _ in 0..1_000 {
            if share.api_saturated() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(share.api_saturated(), "the gate turned work away");
        if job_cores.is_empty() {
            assert_eq!(place(), all, "one core: nowhere else to go");
        } else {
            assert_eq!(
                place(),
                job_cores,
                "off the API's core while it is saturated"
            );
        }

        release.store(true, Ordering::SeqCst);
        for spinner in spinners {
            spinner.await.expect("task");
        }
        drop(busy);
        // Saturation is forgotten after CONTENDED_FOR.
        share.inner.turned_away.store(1, Ordering::Relaxed);
        tokio::time::sleep(CONTENDED_FOR + Duration::from_millis(10)).await;
        assert!(!share.api_saturated());
        assert_eq!(place(), all, "every core again once the API is quiet");
        drop(next);
        thread.join().expect("job thread");
    }
}
