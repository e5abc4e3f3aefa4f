//! `distsync demo` end to end: a real `distsync up` on free loopback ports, the demo run
//! against it, its evidence checked, and `up`'s supervision seen healing the crashed leader.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/ports.rs"]
mod ports;

const BIN: &str = env!("CARGO_BIN_EXE_distsync");

/// Lock base (HTTP BASE..BASE+2, peer BASE+100..), queue port, cache base (HTTP BASE..BASE+2,
/// peer BASE+100.., RESP BASE+300..).
fn free_ports() -> (u16, u16, u16) {
    let lock = ports::block(&[0, 1, 2, 100, 101, 102]);
    let queue = ports::port();
    let cache = ports::block(&[0, 1, 2, 100, 101, 102, 300, 301, 302]);
    (lock, queue, cache)
}

/// `distsync up` as a child; stopped with SIGTERM (which stops its nodes) on drop.
struct Up {
    child: Child,
    log: PathBuf,
}

impl Up {
    fn start(base: u16, queue: u16, cache: u16, data: &Path, log: PathBuf) -> Up {
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(BIN)
            .args(["up", "--base-port", &base.to_string()])
            .args(["--queue-port", &queue.to_string()])
            .args(["--cache-base-port", &cache.to_string()])
            .arg("--data-dir")
            .arg(data)
            .stdout(out.try_clone().expect("log file handle"))
            .stderr(out)
            .spawn()
            .expect("start distsync up");
        Up { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answers_ready(address: &str) -> bool {
    // A minimal HTTP/1.0 GET, so the test needs no async runtime.
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: test\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the binary with `args`, killing it after `limit`; (exit success, stdout + stderr).
fn run_bounded(args: &[String], limit: Duration) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("out");
    let out = std::fs::File::create(&path).expect("output file");
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(out.try_clone().expect("output handle"))
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .expect("start distsync");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&path).unwrap_or_default();
    (status.is_some_and(|status| status.success()), output)
}

#[test]
fn demo_tours_a_running_system_and_up_heals_the_crashed_leader() {
    // Proves the demo's claims against real processes: a new leader after the crash, a deadlock
    // refused with its cycle, a redelivery after a consumer's crash, a dead-lettered poison
    // message, MESI states across the cache nodes (a writer's copy in M); and that `up` restarts the node the demo killed (3 nodes answer afterwards).
    let dir = tempfile::tempdir().expect("temp dir");
    let (base, queue, cache) = free_ports();
    let up = Up::start(
        base,
        queue,
        cache,
        &dir.path().join("data"),
        dir.path().join("up.log"),
    );
    let locks: Vec<String> = (0..3).map(|n| format!("127.0.0.1:{}", base + n)).collect();
    let queue_addr = format!("127.0.0.1:{queue}");
    let caches: Vec<String> = (0..3).map(|n| format!("127.0.0.1:{}", cache + n)).collect();
    wait_until("every node ready", Duration::from_secs(30), || {
        locks
            .iter()
            .chain([&queue_addr])
            .chain(&caches)
            .all(|a| answers_ready(a))
    });
    let cache_endpoints = caches
        .iter()
        .enumerate()
        .map(|(n, addr)| format!("c{}={addr}", n + 1))
        .collect::<Vec<_>>()
        .join(",");

    let started = Instant::now();
    let (ok, output) = run_bounded(
        &[
            "demo".into(),
            "--step-delay-ms".into(),
            "0".into(),
            "--lock-endpoints".into(),
            locks.join(","),
            "--queue-addr".into(),
            queue_addr.clone(),
            "--cache-endpoints".into(),
            cache_endpoints,
        ],
        Duration::from_secs(45),
    );
    println!("{output}");
    assert!(ok, "demo failed after {:?}:\n{output}", started.elapsed());
    for evidence in [
        "new leader elected: node",
        "deadlock refused: 409 deadlock, cycle session",
        "redelivered to worker-c after",
        "with delivery_count 2",
        "dead-lettered after",
        "MESI states of",
        "demo finished",
    ] {
        assert!(
            output.contains(evidence),
            "missing `{evidence}` in:\n{output}"
        );
    }

    assert!(
        output
            .lines()
            .any(|line| line.contains("MESI states of") && line.contains("=M")),
        "no cache node was shown holding a line in M:\n{output}"
    );

    // `up` saw the crash and restarted the node; the cluster is back to 3 answering nodes.
    let log = up.log();
    assert!(log.contains("exited unexpectedly"), "up log:\n{log}");
    assert!(log.contains("restarted (pid"), "up log:\n{log}");
    let mut status = String::new();
    wait_until(
        "3 lock nodes in cluster status",
        Duration::from_secs(15),
        || {
            let (ok, output) = run_bounded(
                &[
                    "cluster".into(),
                    "--endpoints".into(),
                    locks.join(","),
                    "status".into(),
                ],
                Duration::from_secs(10),
            );
            status = output;
            let rows = status
                .lines()
                .filter(|line| {
                    matches!(line.split_whitespace().nth(2), Some("leader" | "follower"))
                })
                .count();
            ok && rows == 3 && !status.contains("unreachable")
        },
    );
    println!("{status}");
}
