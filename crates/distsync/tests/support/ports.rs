//! Loopback ports for the processes a test starts.
//!
//! A port found by binding port 0 and releasing it lies in the kernel's ephemeral range, where
//! the next outgoing connection of any process may take it before the node binds it: under load
//! this failed CI runs with "address in use". These ports come from below that range (Linux
//! default 32768-60999), so only listeners can hold them, and from a window of 1000 ports per
//! test process, so that concurrently running test binaries (nextest, side-by-side checkouts)
//! rarely meet; a port still bound by anyone is skipped.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};

const WINDOW: u16 = 1000;
const FIRST_WINDOW: u16 = 20_000;
const WINDOWS: u16 = 12; // 20000..32000, below the ephemeral range

/// Next port handed out (0: not yet initialised).
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// This process's window: `DISTSYNC_TEST_PORT_BASE` when set, else chosen by process id.
fn window_start() -> u16 {
    std::env::var("DISTSYNC_TEST_PORT_BASE")
        .ok()
        .and_then(|base| base.parse().ok())
        .unwrap_or_else(|| FIRST_WINDOW + (std::process::id() % u32::from(WINDOWS)) as u16 * WINDOW)
}

/// Reserves `len` consecutive port numbers of the window and returns the first.
fn reserve(len: u16) -> u16 {
    let start = window_start();
    let _ = NEXT_PORT.compare_exchange(0, start, Ordering::Relaxed, Ordering::Relaxed);
    let first = NEXT_PORT.fetch_add(len, Ordering::Relaxed);
    assert!(
        first + len <= start + WINDOW,
        "this test process ran out of its {WINDOW} loopback ports"
    );
    first
}

fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A loopback port no other test of this process gets and that nobody holds now.
pub fn port() -> u16 {
    loop {
        let port = reserve(1);
        if is_free(port) {
            return port;
        }
    }
}

/// A base port such that `base + offset` is free for every offset, for commands that derive
/// their ports from one base.
pub fn block(offsets: &[u16]) -> u16 {
    let span = offsets.iter().max().map_or(1, |last| last + 1);
    loop {
        let base = reserve(span);
        if offsets.iter().all(|offset| is_free(base + offset)) {
            return base;
        }
    }
}
