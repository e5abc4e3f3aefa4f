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
