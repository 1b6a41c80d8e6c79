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
//! The price is the trade-off itself: while jobs run, the API gets
//! `api_workers` of the cores, so its throughput drops to about that share
//! and its latency grows accordingly; the jobs finish in about the time
//! they take on the cores they were given.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

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
}

impl CpuShare {
    /// A share that leaves the API `api_workers` workers (at least 1) while
    /// jobs are busy, e.g. `cores - cores / 2` to give the jobs half of the
    /// cores.
    pub fn new(api_workers: usize) -> Self {
        CpuShare {
            inner: Arc::new(Inner {
                api_workers: api_workers.max(1),
                busy: AtomicUsize::new(0),
                running: AtomicUsize::new(0),
                waiting: Mutex::new(Vec::new()),
            }),
        }
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

impl Inner {
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
}
