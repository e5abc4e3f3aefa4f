//! The command line as a shell user meets it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_distsync");

#[test]
fn a_simulator_trace_piped_into_a_reader_that_leaves_ends_cleanly() {
    // Proves `distsync sim … --trace | head` ends with success, not a broken-pipe panic: the
    // reader takes one line and closes the pipe while the replay still writes.
    for target in ["raft", "cache"] {
        let mut child = Command::new(BIN)
            .args(["--log", "error", "sim", target, "--seeds", "1", "--trace"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting distsync sim");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut first)
            .expect("reading the trace");
        assert!(!first.is_empty(), "{target}: no trace line");
        let output = child.wait_with_output().expect("waiting for distsync sim");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && !stderr.contains("panicked"),
            "{target}: {:?}\n{stderr}",
            output.status
        );
    }
}

#[test]
fn a_lock_node_refuses_a_hold_back_window_that_outlasts_the_commit_timeout() {
    // Proves the check at start-up: an acquire held back past its commit timeout would be
    // answered `no_leader` and retried forever, so such a setting is refused before anything
    // binds or writes, with the two flags named.
    let data_dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(BIN)
        .args(["serve", "lock", "--id", "1", "--cluster"])
        .arg("1=127.0.0.1:1/127.0.0.1:2")
        .arg("--data-dir")
        .arg(data_dir.path().join("node"))
        .args([
            "--queued-acquire-batch-ms",
            "3000",
            "--commit-timeout-ms",
            "3000",
        ])
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("running distsync serve lock");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started anyway: {stderr}");
    assert!(
        stderr
            .contains("--queued-acquire-batch-ms (3000) must be below --commit-timeout-ms (3000)"),
        "{stderr}"
    );
    assert!(
        !data_dir.path().join("node").exists(),
        "wrote a data dir before refusing"
    );
}
