//! Test harness: real `redis-server` processes and real `distsync serve queue` processes on
//! loopback, each with its own temp dir; readiness is awaited (PING, /readyz), never slept on.

#![allow(dead_code)] // each test binary module uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use distsync_client::ClientError;
pub use distsync_client::queue::QueueClient;

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
        let child = self.child.as_ref().expect("redis is running");
        crate::process::signal(child, signal, "redis-server");
    }

    /// Starts again on the same port and directory (recovering from the AOF).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running redis");
        self.spawn();
    }

    /// Runs one command on a fresh connection, for checks that need Redis's own view (the
    /// pending list of one consumer) rather than what the queue service reports.
    pub fn command(&self, args: &[&str]) -> Resp {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connecting to redis");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream
            .write_all(request.as_bytes())
            .expect("sending a redis command");
        read_resp(&mut BufReader::new(stream))
    }
}

/// A Redis reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<String>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    pub fn items(&self) -> &[Resp] {
        match self {
            Resp::Array(Some(items)) => items,
            _ => &[],
        }
    }

    pub fn text(&self) -> Option<&str> {
        match self {
            Resp::Simple(s) | Resp::Bulk(Some(s)) => Some(s),
            _ => None,
        }
    }
}

fn read_resp(reader: &mut impl BufRead) -> Resp {
    let mut line = String::new();
    reader.read_line(&mut line).expect("reading a redis reply");
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1);
    let number = || rest.parse::<i64>().expect("a RESP length or integer");
    match kind {
        "+" => Resp::Simple(rest.to_owned()),
        "-" => Resp::Error(rest.to_owned()),
        ":" => Resp::Integer(number()),
        "$" if number() < 0 => Resp::Bulk(None),
        "$" => {
            let mut bytes = vec![0u8; number() as usize + 2];
            reader
                .read_exact(&mut bytes)
                .expect("reading a bulk string");
            bytes.truncate(bytes.len() - 2);
            Resp::Bulk(Some(String::from_utf8(bytes).expect("UTF-8 bulk string")))
        }
        "*" if number() < 0 => Resp::Array(None),
        "*" => Resp::Array(Some((0..number()).map(|_| read_resp(reader)).collect())),
        _ => panic!("not a RESP reply: {line:?}"),
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

    /// SIGTERM, then waits for a clean exit: the node stops accepting and finishes the
    /// requests it has, long-polls included.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::process::terminate(child, &self.addr);
        }
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

    /// The Redis server behind the shard the nodes call `shard` (e.g. "r1").
    pub fn redis_for(&self, shard: &str) -> &RedisProc {
        let url = self
            .shards
            .split(',')
            .find_map(|spec| spec.strip_prefix(&format!("{shard}=")))
            .unwrap_or_else(|| panic!("no shard {shard} in {}", self.shards));
        self.redis
            .iter()
            .find(|r| r.url() == url)
            .unwrap_or_else(|| panic!("{shard} is not a Redis shard of this cluster"))
    }
}

/// `GET /v1/ring` of the node at `addr`: the partition → shard placement it computes.
pub async fn ring(addr: &str) -> distsync_api::RingView {
    reqwest::get(format!("http://{addr}/v1/ring"))
        .await
        .expect("GET /v1/ring")
        .json()
        .await
        .expect("ring JSON")
}

pub use crate::metrics::metric;

/// One JSON line a consumer process printed, stamped when the test read it (or, for what
/// was left in the pipe of a consumer killed mid-batch, when the consumer was seen blocked).
#[derive(Debug, Clone)]
pub struct Printed {
    pub at: Instant,
    pub consumer: String,
    /// Which start of that consumer printed it (0 for the first).
    pub incarnation: usize,
    pub message: distsync_api::ReceivedMessage,
}

/// What every consumer process of a test printed, in the order the test read it.
#[derive(Debug, Default)]
pub struct PrintLog {
    pub lines: Vec<Printed>,
    /// Lines that were not a message (a kill cannot cut a line short, so these are bugs).
    pub garbled: Vec<String>,
}

/// A `distsync queue consume --follow --ack` child: prints each message as a JSON line, then
/// acks it. A reader thread moves the lines into the shared [`PrintLog`] as they come.
pub struct ConsumerProc {
    pub name: String,
    pub incarnation: usize,
    args: Vec<String>,
    log: std::sync::Arc<std::sync::Mutex<PrintLog>>,
    child: Option<Child>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Set: the reader stops reading after its next line, until `resume_reading` sends (the
    /// moment by which what is left in the pipe was printed) or is dropped.
    hold_reading: std::sync::Arc<std::sync::atomic::AtomicBool>,
    resume_reading: Option<std::sync::mpsc::Sender<Instant>>,
}

impl ConsumerProc {
    /// Starts `distsync queue consume queue --group group --consumer name --ack --follow`
    /// against `nodes` with `flags` (e.g. `--max`, `--visibility-ms`).
    pub fn start(
        nodes: &[String],
        queue: &str,
        group: &str,
        name: &str,
        flags: &[&str],
        log: &std::sync::Arc<std::sync::Mutex<PrintLog>>,
    ) -> ConsumerProc {
        let mut args: Vec<String> = vec![
            "queue".into(),
            "--addr".into(),
            nodes.join(","),
            "consume".into(),
            queue.into(),
            "--group".into(),
            group.into(),
            "--consumer".into(),
            name.into(),
            "--ack".into(),
            "--follow".into(),
        ];
        args.extend(flags.iter().map(|s| s.to_string()));
        let mut consumer = ConsumerProc {
            name: name.to_owned(),
            incarnation: 0,
            args,
            log: log.clone(),
            child: None,
            reader: None,
            hold_reading: Default::default(),
            resume_reading: None,
        };
        consumer.spawn();
        consumer
    }

    fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_distsync"))
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting distsync queue consume");
        let stdout = child.stdout.take().expect("piped stdout");
        let (log, consumer, incarnation) = (self.log.clone(), self.name.clone(), self.incarnation);
        let hold = self.hold_reading.clone();
        hold.store(false, std::sync::atomic::Ordering::SeqCst);
        let (resume_reading, resumed) = std::sync::mpsc::channel::<Instant>();
        self.resume_reading = Some(resume_reading);
        self.reader = Some(std::thread::spawn(move || {
            let mut printed_by = None;
            // Ends at EOF, i.e. when the process is gone.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let at = printed_by.unwrap_or_else(Instant::now);
                {
                    let mut log = log.lock().expect("print log lock");
                    match serde_json::from_str(&line) {
                        Ok(message) => log.lines.push(Printed {
                            at,
                            consumer: consumer.clone(),
                            incarnation,
                            message,
                        }),
                        Err(_) => log.garbled.push(line),
                    }
                }
                if hold.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    // Returns after the kill.
                    printed_by = resumed.recv().ok();
                }
            }
        }));
        self.child = Some(child);
    }

    /// Lines this incarnation printed so far.
    pub fn printed(&self) -> usize {
        let log = self.log.lock().expect("print log lock");
        log.lines
            .iter()
            .filter(|p| p.consumer == self.name && p.incarnation == self.incarnation)
            .count()
    }

    /// Whether the process is still running (a consumer exits on its own only on an error).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("polling a consumer").is_none())
    }

    /// SIGKILL: whatever it received and did not ack stays pending under its name. Returns
    /// once every line it printed is in the log, with the moment of the signal.
    pub fn kill(&mut self) -> Instant {
        self.kill_then_read_the_rest(None)
    }

    /// [`Self::kill`]; a reader held by [`Self::kill_mid_batch`] then logs what is left in the
    /// pipe as printed at `printed_by`.
    fn kill_then_read_the_rest(&mut self, printed_by: Option<Instant>) -> Instant {
        let at = Instant::now();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // it may have exited on its own; `running` reports that
            child.wait().expect("reaping a consumer");
        }
        if let (Some(resume), Some(printed_by)) = (self.resume_reading.take(), printed_by) {
            let _ = resume.send(printed_by); // the reader may have ended at EOF already
        }
        if let Some(reader) = self.reader.take() {
            reader.join().expect("consumer reader thread");
        }
        at
    }

    /// SIGKILLs the consumer in the middle of printing a batch, i.e. while it holds messages
    /// it received, printed in part, and has not acked (it acks a batch after printing all of
    /// it). The reader stops reading after its next line, so the consumer's output pipe fills
    /// and its next write blocks: a write of a batch being printed, never the ack. Kills once
    /// a thread of the consumer sleeps in a pipe write, or after `limit` anyway; returns
    /// whether it was caught there. Blocks the thread: call it from `block_in_place`.
    pub fn kill_mid_batch(&mut self, limit: Duration) -> (bool, Instant) {
        self.hold_reading
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let pid = self.child.as_ref().expect("a running consumer").id();
        let deadline = Instant::now() + limit;
        let caught = loop {
            if blocked_writing_a_pipe(pid) {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            // No event tells that another process fell asleep in a write: this polls /proc.
            std::thread::sleep(Duration::from_millis(1));
        };
        // The consumer prints nothing more while the reader holds: all that is in the pipe
        // was printed by now.
        let printed_by = Instant::now();
        (caught, self.kill_then_read_the_rest(Some(printed_by)))
    }

    /// Starts again under the same consumer name.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running consumer");
        self.incarnation += 1;
        self.spawn();
    }
}

/// Whether a thread of process `pid` sleeps in a pipe write (its wchan names the kernel's pipe
/// write path: `pipe_write`, or `anon_pipe_write` on newer kernels).
fn blocked_writing_a_pipe(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("wchan"))
            .is_ok_and(|wchan| wchan.contains("pipe_write"))
    })
}

impl Drop for ConsumerProc {
    fn drop(&mut self) {
        self.kill();
    }
}
