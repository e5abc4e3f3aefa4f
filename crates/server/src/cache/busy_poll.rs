//! Busy polling for a RESP thread: after a request, the thread keeps polling its sockets for
//! a short window instead of going to sleep in `epoll_wait`.
//!
//! A client's write to a socket whose reader sleeps pays, in the client's own system call, for
//! waking that reader (scheduler wake-up, often an inter-processor interrupt). When the thread
//! serving the socket is already running, the write only queues the data. With one request in
//! flight at a time that halves a GET's latency (docs/performance/cache.md); the price is one
//! core kept busy while requests keep coming, and nothing once they stop for longer than the
//! window.
//!
//! One `BusyPoll` belongs to one current-thread runtime: its connections and its poller run on
//! the same thread, so the poller's checks and a connection's `on_request` never interleave.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Shared by a RESP thread's connections and its poller.
#[derive(Debug)]
pub(crate) struct BusyPoll {
    window: Duration,
    epoch: Instant,
    /// Nanoseconds after `epoch` of the latest request.
    last_request: AtomicU64,
    /// The poller sleeps and must be woken by the next request.
    idle: AtomicBool,
    wake: Notify,
}

impl BusyPoll {
    /// Polls for `window` after each request; a zero window turns busy polling off.
    pub(crate) fn new(window: Duration) -> Arc<Self> {
        Arc::new(Self {
            window,
            epoch: Instant::now(),
            last_request: AtomicU64::new(0),
            idle: AtomicBool::new(true),
            wake: Notify::new(),
        })
    }

    fn enabled(&self) -> bool {
        !self.window.is_zero()
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A request arrived: keep polling for another window.
    pub(crate) fn on_request(&self) {
        if !self.enabled() {
            return;
        }
        self.last_request.store(self.now(), Ordering::Relaxed);
        if self.idle.swap(false, Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }

    fn quiet_for(&self) -> Duration {
        Duration::from_nanos(
            self.now()
                .saturating_sub(self.last_request.load(Ordering::Relaxed)),
        )
    }

    /// The poller, for a current-thread runtime: while requests keep coming it yields in a
    /// loop, and there every yield makes the scheduler poll its sockets without blocking (on a
    /// multi-thread runtime it would only keep a worker spinning); once no request came for a
    /// window, it sleeps until one does. Returns at once when busy polling is off.
    pub(crate) async fn run(self: Arc<Self>) {
        if !self.enabled() {
            return;
        }
        loop {
            self.wake.notified().await;
            while self.quiet_for() < self.window {
                tokio::task::yield_now().await;
            }
            self.idle.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(5);

    /// Yields until the poller has gone idle; the time from `since` until then.
    async fn until_idle(busy: &BusyPoll, since: Instant) -> Duration {
        // The poller yields rather than blocks, so this task keeps being scheduled while it
        // polls.
        while !busy.idle.load(Ordering::Relaxed) {
            assert!(
                since.elapsed() < Duration::from_secs(5),
                "the poller never went idle"
            );
            tokio::task::yield_now().await;
        }
        since.elapsed()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_poller_polls_for_a_window_after_each_request_then_sleeps() {
        let busy = BusyPoll::new(WINDOW);
        let poller = tokio::spawn(Arc::clone(&busy).run());
        tokio::task::yield_now().await;

        for request in 0..2 {
            let started = Instant::now();
            busy.on_request();
            assert!(!busy.idle.load(Ordering::Relaxed), "request {request}");
            let polled = until_idle(&busy, started).await;
            assert!(
                polled >= WINDOW,
                "request {request}: idle after {polled:?}, before the window ended"
            );
        }
        poller.abort();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_zero_window_never_polls() {
        let busy = BusyPoll::new(Duration::ZERO);
        busy.on_request();
        assert!(busy.idle.load(Ordering::Relaxed));
        // Returns instead of looping: the caller awaits it beside its accept loop.
        Arc::clone(&busy).run().await;
    }
}
