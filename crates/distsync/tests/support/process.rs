//! Stopping the processes a test started. Shared by the black-box test targets.

#![allow(dead_code)] // each test binary uses a different subset

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How long a node may take to exit cleanly after SIGTERM (it finishes its requests, long
/// polls included, and a cache node writes back its Modified lines) before the test fails.
const EXIT_AFTER_SIGTERM: Duration = Duration::from_secs(30);

/// Sends `signal` (`STOP`, `CONT`, `KILL`, …) to `child` (named `what` in failures).
pub fn signal(child: &Child, signal: &str, what: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{signal} {what} failed");
}

/// Sends SIGTERM to `child` (named `what` in failures) and waits for it to exit successfully.
pub fn terminate(mut child: Child, what: &str) {
    signal(&child, "TERM", what);
    let deadline = Instant::now() + EXIT_AFTER_SIGTERM;
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("polling the child") {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {EXIT_AFTER_SIGTERM:?} of SIGTERM");
        }
        // A child's exit cannot be awaited from synchronous code without a reaper thread;
        // polling every 10 ms costs nothing next to a node's shutdown.
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(exit.success(), "{what} exited with {exit} after SIGTERM");
}
