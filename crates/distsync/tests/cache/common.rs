//! Test harness: cache nodes and Redis as child processes, killed on drop; readiness is
//! awaited (/readyz, PING), never slept on.

#![allow(dead_code)] // each test module uses a different subset

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use distsync_client::ClientError;
pub use distsync_client::cache::CacheClient;

pub use crate::link::{Faults, Link, LinkState, LinkStats};
pub use crate::ports::port;

/// One operation's real-time interval and the value it wrote or read (0: absent).
#[derive(Clone, Copy, Debug)]
pub struct Interval {
    pub start: Instant,
    pub end: Instant,
    pub value: u64,
}

/// Freshness and monotonic reads over a history: no read returns a value older than a write
/// of its key that completed before the read began, and no reader sees a key's value go back.
/// Values of a key increase with every write. Returns how many reads were checked.
///
/// # Panics
/// At the first violation.
pub fn check_reads<K: Ord + std::fmt::Debug>(
    writes: &BTreeMap<K, Vec<Interval>>,
    reads_by_reader: &[Vec<(K, Interval)>],
) -> usize {
    let (checked, violations) = read_violations(writes, reads_by_reader);
    assert!(violations.is_empty(), "{}", violations[0]);
    checked
}

/// [`check_reads`] without the panic: how many reads were checked, and every violation
/// (negative controls count them).
pub fn read_violations<K: Ord + std::fmt::Debug>(
    writes: &BTreeMap<K, Vec<Interval>>,
    reads_by_reader: &[Vec<(K, Interval)>],
) -> (usize, Vec<String>) {
    let mut checked = 0;
    let mut violations = Vec::new();
    for reads in reads_by_reader {
        let mut last_seen: BTreeMap<&K, u64> = BTreeMap::new();
        for (key, read) in reads {
            let completed_before = writes
                .get(key)
                .into_iter()
                .flatten()
                .filter(|w| w.end < read.start)
                .map(|w| w.value)
                .max()
                .unwrap_or(0);
            if read.value < completed_before {
                violations.push(format!(
                    "stale read of {key:?}: {} although {completed_before} completed before it began",
                    read.value
                ));
            }
            let previous = last_seen.insert(key, read.value).unwrap_or(0);
            if read.value < previous {
                violations.push(format!("{key:?}: saw {previous} then {}", read.value));
            }
            checked += 1;
        }
    }
    (checked, violations)
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

/// A `redis-server` without persistence (the test reads it while it runs).
pub struct RedisProc {
    pub port: u16,
    child: Child,
}

impl RedisProc {
    /// # Panics
    /// If `redis-server` is not installed: these tests must never be skipped silently.
    pub fn start(dir: &Path) -> RedisProc {
        let port = port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir)
            .args(["--appendonly", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server ({e}); the cache tests need it"));
        let redis = RedisProc { port, child };
        wait_until("redis PING", Duration::from_secs(10), || {
            redis_command(port, &["PING"]).is_some_and(|r| r == "PONG")
        });
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one command with `redis-cli` and returns its raw output line.
pub fn redis_command(port: u16, args: &[&str]) -> Option<String> {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--raw"])
        .args(args)
        .output()
        .ok()?;
    output.status.success().then(|| {
        String::from_utf8_lossy(&output.stdout)
            .trim_end_matches('\n')
            .to_string()
    })
}

/// One RESP command frame.
pub fn command(words: &[&str]) -> Vec<u8> {
    let mut frame = format!("*{}\r\n", words.len()).into_bytes();
    for word in words {
        frame.extend_from_slice(format!("${}\r\n{word}\r\n", word.len()).as_bytes());
    }
    frame
}

/// One `distsync serve cache` child.
pub struct NodeProc {
    pub name: String,
    pub http: String,
    pub peer: String,
    pub resp: String,
    child: Option<Child>,
}

impl NodeProc {
    /// SIGTERM, then waits for a clean exit: the node writes back its Modified lines and
    /// tells the others it leaves.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::process::terminate(child, &self.name);
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the running node.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("a running node");
        crate::process::signal(child, signal, &self.name);
    }

    /// SIGKILL: no write-back, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL cache node");
            child.wait().expect("reaping cache node");
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `n` cache nodes named c1…cn, all started and ready.
pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    /// The `--cluster` each node was started with (by name): the same list for every node, or
    /// with proxied peer addresses when the cluster runs over a [`Mesh`].
    specs: BTreeMap<String, String>,
    /// The seeds at their own addresses, which a node joining later is given.
    seeds: String,
    store: String,
    extra: Vec<String>,
}

/// Starts one node. Its log goes to the test's stderr at `warn`, or at the level in
/// `DISTSYNC_TEST_NODE_LOG` (e.g. `info` to see every view a node adopts).
fn spawn_node(node: &NodeProc, spec: &str, store: &str, extra: &[String]) -> Child {
    let log = std::env::var("DISTSYNC_TEST_NODE_LOG").unwrap_or_else(|_| "warn".into());
    Command::new(env!("CARGO_BIN_EXE_distsync"))
        .args(["serve", "cache", "--id", &node.name, "--cluster", spec])
        .args(["--store", store, "--resp", &node.resp])
        .args(extra)
        .env("RUST_LOG", log)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting distsync serve cache")
}

/// `n` nodes named c1…cn on fresh ports, not started.
fn plan_nodes(n: usize) -> Vec<NodeProc> {
    (1..=n)
        .map(|i| NodeProc {
            name: format!("c{i}"),
            http: format!("127.0.0.1:{}", port()),
            peer: format!("127.0.0.1:{}", port()),
            resp: format!("127.0.0.1:{}", port()),
            child: None,
        })
        .collect()
}

/// `NAME=HTTP/PEER,…` with `peer_of(node)` as each node's peer address.
fn spec_of(nodes: &[NodeProc], peer_of: impl Fn(&NodeProc) -> String) -> String {
    nodes
        .iter()
        .map(|node| format!("{}={}/{}", node.name, node.http, peer_of(node)))
        .collect::<Vec<_>>()
        .join(",")
}

impl Cluster {
    /// Starts `n` nodes with `--store store` plus `extra` flags and waits until each has
    /// reached every other one.
    pub fn start(n: usize, store: &str, extra: &[&str]) -> Cluster {
        let nodes = plan_nodes(n);
        let spec = spec_of(&nodes, |node| node.peer.clone());
        let specs = nodes
            .iter()
            .map(|node| (node.name.clone(), spec.clone()))
            .collect();
        let cluster = Cluster::spawn_all(nodes, specs, store, extra);
        for node in &cluster.nodes {
            let addr = node.http.clone();
            wait_until(
                &format!("{} /readyz", node.name),
                Duration::from_secs(20),
                || http_status(&addr, "GET", "/readyz", None) == Some(200),
            );
        }
        cluster
    }

    /// Starts `n` nodes whose peer traffic all goes through the proxies of the returned
    /// [`Mesh`] (each node's `--cluster` names its peers at their proxies; a node's own entry
    /// is its real address), and waits until each is ready.
    pub async fn start_meshed(n: usize, store: &str, extra: &[&str]) -> (Cluster, Mesh) {
        let nodes = plan_nodes(n);
        let mesh = Mesh::new(&nodes).await;
        let specs = nodes
            .iter()
            .map(|me| {
                let spec = spec_of(&nodes, |peer| {
                    if peer.name == me.name {
                        peer.peer.clone()
                    } else {
                        mesh.links[&(me.name.clone(), peer.name.clone())]
                            .addr
                            .clone()
                    }
                });
                (me.name.clone(), spec)
            })
            .collect();
        let cluster = Cluster::spawn_all(nodes, specs, store, extra);
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &cluster.nodes {
            let addr = node.http.clone();
            loop {
                let probe = addr.clone();
                let status = tokio::task::spawn_blocking(move || {
                    http_status(&probe, "GET", "/readyz", None)
                })
                .await
                .expect("readiness probe");
                if status == Some(200) {
                    break;
                }
                assert!(Instant::now() < deadline, "{} not ready in time", node.name);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        (cluster, mesh)
    }

    fn spawn_all(
        mut nodes: Vec<NodeProc>,
        specs: BTreeMap<String, String>,
        store: &str,
        extra: &[&str],
    ) -> Cluster {
        let seeds = spec_of(&nodes, |node| node.peer.clone());
        let extra: Vec<String> = extra.iter().map(|flag| flag.to_string()).collect();
        for node in &mut nodes {
            node.child = Some(spawn_node(node, &specs[&node.name], store, &extra));
        }
        Cluster {
            nodes,
            specs,
            seeds,
            store: store.to_string(),
            extra,
        }
    }

    /// Starts node `name` again (after [`NodeProc::kill`]) with the flags it had; does not
    /// wait for it.
    pub fn restart(&mut self, name: &str) {
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.name == name)
            .expect("a node of the cluster");
        assert!(node.child.is_none(), "{name} is still running");
        node.child = Some(spawn_node(
            node,
            &self.specs[name],
            &self.store,
            &self.extra,
        ));
    }

    /// Starts a node `name` that is not in the seeds' `--cluster`: it announces itself at the
    /// addresses given with `--advertise` and joins the running cluster. Does not wait. It
    /// reaches the seeds at their own addresses, never through a [`Mesh`].
    pub fn join(&mut self, name: &str) -> &NodeProc {
        let mut node = NodeProc {
            name: name.to_string(),
            http: format!("127.0.0.1:{}", port()),
            peer: format!("127.0.0.1:{}", port()),
            resp: format!("127.0.0.1:{}", port()),
            child: None,
        };
        let mut extra = self.extra.clone();
        extra.extend([
            "--advertise".to_string(),
            format!("{}/{}", node.http, node.peer),
        ]);
        node.child = Some(spawn_node(&node, &self.seeds, &self.store, &extra));
        self.nodes.push(node);
        self.nodes.last().expect("just pushed")
    }

    /// A client with every node as `NAME=ADDR`.
    pub fn client(&self) -> CacheClient {
        let endpoints: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("{}={}", node.name, node.http))
            .collect();
        CacheClient::new(&endpoints)
    }

    /// `NAME=ADDR,…` for the CLI's --endpoints.
    pub fn endpoints(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("{}={}", node.name, node.http))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node(&self, name: &str) -> &NodeProc {
        self.nodes
            .iter()
            .find(|node| node.name == name)
            .expect("a node of the cluster")
    }
}

/// The proxies between the nodes of a cluster started with [`Cluster::start_meshed`]: one
/// framed [`Link`] per ordered pair, `(a, b)` carrying what `a` sends to `b`. Partitions and
/// message faults are set here.
pub struct Mesh {
    links: BTreeMap<(String, String), Link>,
}

impl Mesh {
    async fn new(nodes: &[NodeProc]) -> Mesh {
        let mut links = BTreeMap::new();
        for from in nodes {
            for to in nodes.iter().filter(|to| to.name != from.name) {
                links.insert(
                    (from.name.clone(), to.name.clone()),
                    Link::start_framed(to.peer.clone()).await,
                );
            }
        }
        Mesh { links }
    }

    /// Applies `faults` to every link (each link draws its own choices from `faults.seed`).
    pub fn set_faults(&self, faults: Faults) {
        for (index, link) in self.links.values().enumerate() {
            link.set_faults(Faults {
                seed: faults.seed.wrapping_add(index as u64 * 0x1000_0001),
                ..faults
            });
        }
    }

    /// Puts every link that crosses between `group` and the other nodes, both directions, in
    /// `state` (`Open` heals the partition).
    pub async fn partition(&self, group: &[&str], state: LinkState) {
        for ((from, to), link) in &self.links {
            if group.contains(&from.as_str()) != group.contains(&to.as_str()) {
                link.set(state).await;
            }
        }
    }

    /// Puts the links between `a` and `b`, both directions, in `state`, and no other: a partial
    /// partition, in which both still reach every other node.
    pub async fn cut_between(&self, a: &str, b: &str, state: LinkState) {
        for ((from, to), link) in &self.links {
            if (from == a && to == b) || (from == b && to == a) {
                link.set(state).await;
            }
        }
    }

    /// What every link did, summed.
    pub fn stats(&self) -> LinkStats {
        self.links
            .values()
            .map(Link::stats)
            .fold(LinkStats::default(), |sum, stats| sum + stats)
    }
}

/// Waits until every node in `nodes` reports a view with exactly `members`, all with the same
/// epoch; returns that epoch.
pub async fn await_view(
    client: &CacheClient,
    nodes: &[&str],
    members: &[&str],
    deadline: Instant,
) -> u64 {
    loop {
        let mut epochs = Vec::new();
        for node in nodes {
            if let Ok(stats) = client.stats(Some(node)).await
                && stats.in_view
                && stats.view_members == members
            {
                epochs.push(stats.view_epoch);
            }
        }
        if epochs.len() == nodes.len() && epochs.iter().all(|epoch| *epoch == epochs[0]) {
            return epochs[0];
        }
        assert!(
            Instant::now() < deadline,
            "{nodes:?} did not agree on the view {members:?} in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One raw HTTP/1.1 request; the status, or `None` when the node cannot be reached.
pub fn http_status(addr: &str, method: &str, path: &str, body: Option<&[u8]>) -> Option<u16> {
    http_request(addr, method, path, body).map(|(status, _)| status)
}

/// One raw HTTP/1.1 request; the status and body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    // The server may answer (413) before reading the whole body and close; that is fine.
    let _ = stream.write_all(body);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply.get(9..12)?.parse().ok()?;
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// A tiny deterministic PRNG (xorshift64*), so the tests need no extra crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// The SWMR check on one coherence view: at most one M/E, and then every other copy I. Unknown
/// states (a node that did not answer) are skipped.
pub fn assert_single_writer(states: &BTreeMap<String, String>) {
    if let Some(violation) = single_writer_violation(states) {
        panic!("{violation}");
    }
}

/// What [`assert_single_writer`] would panic with, if anything.
pub fn single_writer_violation(states: &BTreeMap<String, String>) -> Option<String> {
    let owners = states.values().filter(|s| *s == "M" || *s == "E").count();
    let sharers = states.values().filter(|s| *s == "S").count();
    if owners > 1 {
        Some(format!("more than one owner: {states:?}"))
    } else if owners == 1 && sharers > 0 {
        Some(format!("an owner next to a sharer: {states:?}"))
    } else {
        None
    }
}
