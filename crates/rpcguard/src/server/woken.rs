//! A future that is polled only when its own waker fired.
//!
//! A connection task waits on its HTTP connection and, beside it, on the
//! header deadline and the server's stop signal. `tokio::select!` polls
//! every branch each time the task wakes, and the task wakes once or twice
//! per request: the deadline's timer and the stop signal's `Notified` (whose
//! poll takes the waiter list's lock, shared by every connection) were
//! polled for every request although neither had changed. Measured with
//! `perf` on get_caller over keep-alive HTTP, those two polls were about
//! 2 % of the server's CPU. [`WhenWoken`] gives the side future a waker of
//! its own and polls it only after that waker fired (and once at the
//! start, so that it registers).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures::task::{waker_ref, ArcWake};

pin_project_lite::pin_project! {
    /// `inner`, polled only when its own waker fired since its last poll.
    pub(crate) struct WhenWoken<F> {
        #[pin]
        inner: F,
        flag: Arc<Flag>,
        // The task's waker as last registered: registered again only when
        // the task polls with another one.
        registered: Option<Waker>,
    }
}

/// Set by the inner future's waker; wakes the task that polls.
struct Flag {
    woken: AtomicBool,
    /// The task's waker: kept (not taken) when it wakes, so that it is
    /// registered again only when the task's waker changes. The lock is
    /// taken on a wake of the inner future and on such a change, never on
    /// the common poll.
    task: Mutex<Option<Waker>>,
}

impl ArcWake for Flag {
    fn wake_by_ref(flag: &Arc<Self>) {
        flag.woken.store(true, Ordering::Release);
        let task = flag.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl<F: Future> WhenWoken<F> {
    /// Wraps `inner`; its first poll always polls `inner`.
    pub(crate) fn new(inner: F) -> Self {
        WhenWoken {
            inner,
            flag: Arc::new(Flag {
                woken: AtomicBool::new(true),
                task: Mutex::new(None),
            }),
            registered: None,
        }
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if !this
            .registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            let mut task = this.flag.task.lock().unwrap_or_else(|e| e.into_inner());
            *task = Some(cx.waker().clone());
            *this.registered = Some(cx.waker().clone());
        }
        // A plain load first: the common poll (woken by something else)
        // writes nothing.
        if !this.flag.woken.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        this.flag.woken.store(false, Ordering::Release);
        let waker = waker_ref(this.flag);
        this.inner.poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Waker};

    use super::WhenWoken;

    /// Counts its polls; ready once `done` is set, pending (its waker kept
    /// in `waker`) before.
    #[derive(Default)]
    struct Probe {
        polls: AtomicUsize,
        done: AtomicBool,
        waker: Mutex<Option<Waker>>,
    }

    struct Probed(Arc<Probe>);

    impl Future for Probed {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0.polls.fetch_add(1, Ordering::SeqCst);
            if self.0.done.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.0.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn the_inner_future_is_polled_only_when_its_waker_fires() {
        let probe = Arc::new(Probe::default());
        let side = WhenWoken::new(Probed(probe.clone()));
        tokio::pin!(side);
        // The task polls the side future after each of 50 wakes by others.
        for _ in 0..50 {
            tokio::task::yield_now().await;
            assert!(futures::poll!(side.as_mut()).is_pending());
        }
        // Polled once, to register, not once per poll of the task.
        assert_eq!(probe.polls.load(Ordering::SeqCst), 1);
        // Its own waker fired: polled again.
        let waker = probe.waker.lock().unwrap().take().expect("registered");
        waker.wake_by_ref();
        assert!(futures::poll!(side.as_mut()).is_pending());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2);
        assert!(futures::poll!(side.as_mut()).is_pending());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2);
        // Woken and ready: it finishes.
        probe.done.store(true, Ordering::SeqCst);
        let waker = probe.waker.lock().unwrap().take().expect("registered");
        waker.wake();
        assert!(futures::poll!(side.as_mut()).is_ready());
    }

    #[tokio::test]
    async fn its_waker_wakes_the_task() {
        let notify = Arc::new(tokio::sync::Notify::new());
        let waiting = notify.clone();
        let side = tokio::spawn(WhenWoken::new(async move { waiting.notified().await }));
        tokio::task::yield_now().await;
        notify.notify_one();
        tokio::time::timeout(std::time::Duration::from_secs(5), side)
            .await
            .expect("the task was woken")
            .expect("no panic");
    }

    /// Every wake of the inner future wakes the task, not only the first
    /// (a waker taken on its first wake would leave the task asleep).
    #[tokio::test]
    async fn a_timer_inside_wakes_the_task_at_every_tick() {
        let side = super::WhenWoken::new(async {
            let mut ticks = tokio::time::interval_at(
                tokio::time::Instant::now() + std::time::Duration::from_millis(20),
                std::time::Duration::from_millis(20),
            );
            for _ in 0..3 {
                ticks.tick().await;
            }
        });
        let started = std::time::Instant::now();
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            tokio::select! {
                biased;
                () = std::future::pending::<()>() => {}
                () = side => {}
            }
        })
        .await
        .expect("the side future ran");
        // Each tick woke the task: not waiting for another wake.
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
