//! Test harness: real `redis-server` processes and real `distsync serve queue` processes on
//! loopback, each with its own temp dir; readiness is awaited (PING, /readyz), never slept on.

#![allow(dead_code)] // each test binary module uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../src/queue/client.rs"]
pub mod client;

pub use client::{ClientError, QueueClient};

/// Which backend a behavioural test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Redis,
    Embedded,
}

/// Polls `check` every 10 ms until it returns true or `limit` passes.
pub fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `redis-server` child with AOF `appendfsync always` (the durability the queue ships with).
pub struct RedisProc {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisProc {
    /// Starts a server in `dir` on a free port and waits for PING.
    ///
    /// # Panics
    ///
    /// If `redis-server` is not installed: these tests must never be skipped silently.
    pub fn start(dir: &Path) -> RedisProc {
        std::fs::create_dir_all(dir).expect("creating redis dir");
        let mut redis = RedisProc {
            port: crate::ports::port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); install it (apt-get install redis-server) — queue tests need a real Redis")
            });
        self.child = Some(child);
        let port = self.port;
        wait_until("redis PING", Duration::from_secs(20), || redis_ping(port));
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no shutdown, no final fsync.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL redis-server");
            child.wait().expect("reaping redis-server");
        }
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to the server with kill(1).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis is running").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Starts again on the same port and directory (recovering from the AOF).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running redis");
        self.spawn();
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn redis_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// A `distsync serve queue` child.
pub struct NodeProc {
    pub addr: String,
    args: Vec<String>,
    child: Option<Child>,
}

impl NodeProc {
    /// Starts a node with `--shards shards` plus `extra` flags and waits for /readyz.
    pub fn start(shards: &str, extra: &[&str]) -> NodeProc {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "queue".into(),
            "--shards".into(),
            shards.into(),
            "--shard-timeout-ms".into(),
            "1000".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut node = NodeProc {
            addr: String::new(),
            args,
            child: None,
        };
        node.spawn(&format!("127.0.0.1:{}", crate::ports::port()));
        node
    }

    fn spawn(&mut self, listen: &str) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_distsync"))
            .args(&self.args)
            .args(["--listen", listen])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting distsync serve queue");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the node's listen line");
        self.addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from node: {line:?}"))
            .to_owned();
        self.child = Some(child);
        let addr = self.addr.clone();
        wait_until("node /readyz", Duration::from_secs(20), || ready(&addr));
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL node");
            child.wait().expect("reaping node");
        }
    }

    /// Starts again on the same address.
    pub fn restart(&mut self) {
        let addr = self.addr.clone();
        self.spawn(&addr);
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ready(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.1 200")
}

/// Shards and nodes for one test; dropped (killed) at the end.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub redis: Vec<RedisProc>,
    pub nodes: Vec<NodeProc>,
    pub shards: String,
}

impl Cluster {
    /// `shards` Redis servers (or one embedded directory) and `nodes` queue nodes.
    pub fn start(backend: Backend, shards: usize, nodes: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut redis = Vec::new();
        let spec = match backend {
            Backend::Redis => {
                for i in 0..shards {
                    redis.push(RedisProc::start(&dir.path().join(format!("r{}", i + 1))));
                }
                redis
                    .iter()
                    .enumerate()
                    .map(|(i, r)| format!("r{}={}", i + 1, r.url()))
                    .collect::<Vec<_>>()
                    .join(",")
            }
            Backend::Embedded => {
                assert!(nodes == 1, "the embedded backend serves one node");
                (0..shards)
                    .map(|i| {
                        format!(
                            "e{}=embedded:{}",
                            i + 1,
                            dir.path().join(format!("e{}", i + 1)).display()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            }
        };
        let nodes = (0..nodes).map(|_| NodeProc::start(&spec, extra)).collect();
        Cluster {
            dir,
            redis,
            nodes,
            shards: spec,
        }
    }

    /// A client that knows every node (fails over between them).
    pub fn client(&self) -> QueueClient {
        let addrs: Vec<String> = self.nodes.iter().map(|n| n.addr.clone()).collect();
        QueueClient::new(&addrs)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.nodes[0].addr)
    }
}
