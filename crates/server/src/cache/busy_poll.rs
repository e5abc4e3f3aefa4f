//! Busy polling for a RESP thread: after a request, the thread keeps polling its sockets for
//! a short window instead of going to sleep in `epoll_wait`.
//!
//! A client's write to a socket whose reader sleeps pays, in the client's own system call, for
//! waking that reader (scheduler wake-up, often an inter-processor interrupt). When the thread
//! serving the socket is already running, the write only queues the data. Under a steady
//! request stream that is a few microseconds less CPU per request for the client, which is
//! what limits throughput when clients and server share a machine; the price is one core kept
//! busy while requests keep coming, and nothing once they stop for longer than the window.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Shared by a RESP thread's connections and its poller.
#[derive(Debug)]
pub struct BusyPoll {
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
    pub fn new(window: Duration) -> Arc<Self> {
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
    pub fn on_request(&self) {
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

    /// Runs on the RESP thread's runtime for as long as the thread serves. While requests keep
    /// coming it yields in a loop, and every yield makes the current-thread scheduler poll its
    /// sockets without blocking; once no request came for a window it sleeps until one does.
    pub async fn run(self: Arc<Self>) {
        if !self.enabled() {
            return;
        }
        loop {
            self.wake.notified().await;
            while self.quiet_for() < self.window {
                tokio::task::yield_now().await;
            }
            self.idle.store(true, Ordering::Relaxed);
            // A request that came between the last check and `idle` found the poller busy and
            // did not wake it: look once more so it is not left waiting for the next one.
            if self.quiet_for() < self.window && self.idle.swap(false, Ordering::Relaxed) {
                self.wake.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn the_poller_sleeps_until_a_request_and_again_once_requests_stop() {
        let busy = BusyPoll::new(Duration::from_millis(5));
        let poller = tokio::spawn(Arc::clone(&busy).run());
        tokio::task::yield_now().await;
        assert!(busy.idle.load(Ordering::Relaxed), "no request yet");

        let started = Instant::now();
        busy.on_request();
        assert!(!busy.idle.load(Ordering::Relaxed));
        // The poller yields rather than blocks, so this task keeps being scheduled while it
        // polls, and sees it go idle once the window has passed without a request.
        while !busy.idle.load(Ordering::Relaxed) {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the poller never went idle"
            );
            tokio::task::yield_now().await;
        }
        assert!(started.elapsed() >= Duration::from_millis(5));

        busy.on_request();
        assert!(
            !busy.idle.load(Ordering::Relaxed),
            "a new request wakes it again"
        );
        poller.abort();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_zero_window_never_polls() {
        let busy = BusyPoll::new(Duration::ZERO);
        busy.on_request();
        Arc::clone(&busy).run().await;
        assert_eq!(busy.last_request.load(Ordering::Relaxed), 0);
    }
}
