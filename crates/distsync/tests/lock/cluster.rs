//! Test harness: a lock cluster of real processes, with every peer link through a proxy the
//! test can cut, and a fenced resource that refuses stale tokens.

use crate::link::Link;
use crate::ports::port;
use distsync_client::{Client, ClientConfig};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ELECTION_TIMEOUT_MS: u64 = 300;

pub struct Node {
    pub id: u64,
    pub http: String,
    raft: String,
    data_dir: PathBuf,
    process: Option<Child>,
}

impl Node {
    /// (HTTP address, peer address).
    pub fn clone_addresses(&self) -> (String, String) {
        (self.http.clone(), self.raft.clone())
    }
}

pub struct LockCluster {
    pub nodes: BTreeMap<u64, Node>,
    /// Nodes of the bootstrap membership; the others start with `--join`.
    bootstrap: u64,
    /// `links[(from, to)]`: how `from` dials `to`.
    links: BTreeMap<(u64, u64), Link>,
    /// Extra `DISTSYNC_*` settings every node starts with.
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl LockCluster {
    pub async fn start(size: u64) -> LockCluster {
        Self::start_with_spares(size, 0).await
    }

    /// `size` bootstrap members running, plus `spares` nodes that are wired up (addresses,
    /// proxies) but not started and not members; `spawn` starts one with `--join`.
    pub async fn start_with_spares(size: u64, spares: u64) -> LockCluster {
        Self::start_configured(size, spares, &[]).await
    }

    /// `size` nodes, each also given the `DISTSYNC_*` settings in `env`.
    pub async fn start_with_env(size: u64, env: &[(&str, &str)]) -> LockCluster {
        Self::start_configured(size, 0, env).await
    }

    async fn start_configured(size: u64, spares: u64, env: &[(&str, &str)]) -> LockCluster {
        let total = size + spares;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = BTreeMap::new();
        for id in 1..=total {
            nodes.insert(
                id,
                Node {
                    id,
                    http: format!("127.0.0.1:{}", port()),
                    raft: format!("127.0.0.1:{}", port()),
                    data_dir: dir.path().join(format!("node{id}")),
                    process: None,
                },
            );
        }
        let mut links = BTreeMap::new();
        for &from in nodes.keys() {
            for (&to, node) in &nodes {
                if from != to {
                    links.insert((from, to), Link::start(node.raft.clone()).await);
                }
            }
        }
        let mut cluster = LockCluster {
            nodes,
            bootstrap: size,
            links,
            env: env
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            _dir: dir,
        };
        for id in 1..=size {
            cluster.spawn(id);
        }
        cluster.wait_ready(Duration::from_secs(20)).await;
        cluster
    }

    /// The `--cluster` argument as node `id` sees it: its peers through their proxies.
    fn spec_for(&self, id: u64) -> String {
        let joining = id > self.bootstrap;
        self.nodes
            .values()
            .filter(|node| joining || node.id <= self.bootstrap)
            .map(|node| {
                let raft = if node.id == id {
                    node.raft.clone()
                } else {
                    self.links[&(id, node.id)].addr.clone()
                };
                format!("{}={}/{}", node.id, node.http, raft)
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn spawn(&mut self, id: u64) {
        let spec = self.spec_for(id);
        self.spawn_with_cluster(id, &spec);
    }

    /// Starts node `id` with `--cluster spec` (e.g. a wrong one, as an operator might).
    pub fn spawn_with_cluster(&mut self, id: u64, spec: &str) {
        let join = id > self.bootstrap;
        let node = self.nodes.get_mut(&id).expect("node exists");
        let log = std::fs::File::create(node.data_dir.with_extension("log"))
            .or_else(|_| std::fs::File::create("/dev/null"))
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_distsync"));
        if join {
            command.env("DISTSYNC_JOIN", "true");
        }
        command.envs(self.env.iter().map(|(name, value)| (name, value)));
        let child = command
            .args([
                "serve",
                "lock",
                "--id",
                &id.to_string(),
                "--cluster",
                spec,
                "--data-dir",
                node.data_dir.to_str().expect("utf-8 path"),
                "--election-timeout-ms",
                &ELECTION_TIMEOUT_MS.to_string(),
                "--heartbeat-ms",
                "50",
                "--snapshot-interval",
                "200",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn distsync serve lock");
        node.process = Some(child);
    }

    pub fn data_dir(&self, id: u64) -> &std::path::Path {
        &self.nodes[&id].data_dir
    }

    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).and_then(|node| node.process.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether node `id` was started and has not exited.
    pub fn running(&mut self, id: u64) -> bool {
        self.nodes
            .get_mut(&id)
            .and_then(|node| node.process.as_mut())
            .is_some_and(|child| child.try_wait().expect("polling a node").is_none())
    }

    /// The process id of node `id`, if it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes[&id].process.as_ref().map(Child::id)
    }

    pub fn signal(&self, id: u64, signal: &str) {
        if let Some(child) = self.nodes[&id].process.as_ref() {
            crate::process::signal(child, signal, &format!("lock node {id}"));
        }
    }

    pub fn pause(&self, id: u64) {
        self.signal(id, "STOP");
    }

    pub fn resume(&self, id: u64) {
        self.signal(id, "CONT");
    }

    /// Cuts (or heals) every link between `group` and the other nodes, both directions.
    pub async fn partition(&self, group: &[u64], cut: bool) {
        for ((from, to), link) in &self.links {
            if group.contains(from) != group.contains(to) {
                link.set_cut(cut).await;
            }
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(|node| node.http.clone()).collect()
    }

    pub fn client(&self) -> Client {
        Client::new(ClientConfig::new(self.endpoints())).expect("client")
    }

    pub fn client_of(&self, id: u64) -> Client {
        let mut config = ClientConfig::new([self.nodes[&id].http.clone()]);
        config.retry_deadline = Duration::from_millis(500);
        Client::new(config).expect("client")
    }

    pub async fn status(&self, id: u64) -> Option<distsync_api::ClusterStatus> {
        self.client_of(id)
            .cluster_status_of(&self.nodes[&id].http)
            .await
            .ok()
    }

    /// Waits until every running node is ready (knows a leader, applied what is committed).
    pub async fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let http = reqwest::Client::new();
        for node in self.nodes.values().filter(|node| node.process.is_some()) {
            loop {
                let url = format!("http://{}/readyz", node.http);
                let ready = http
                    .get(&url)
                    .timeout(Duration::from_millis(500))
                    .send()
                    .await
                    .is_ok_and(|response| response.status().is_success());
                if ready {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} not ready in {limit:?}",
                    node.id
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    }

    /// The leader all reachable nodes agree on, waiting up to `limit`.
    pub async fn leader(&self, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            for &id in self.nodes.keys() {
                if self.nodes[&id].process.is_none() {
                    continue;
                }
                if let Some(status) = self.status(id).await
                    && status.role == "leader"
                {
                    return id;
                }
            }
            assert!(Instant::now() < deadline, "no leader within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for LockCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in self.nodes.values() {
                let log = std::fs::read_to_string(node.data_dir.with_extension("log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- node {} log (last 40 lines) ----", node.id);
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.process.take() {
                let _ = Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .status();
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A protected resource that remembers the highest fencing token it has seen per key and refuses
/// lower ones — on every request, reads included (TESTING.md L-02).
#[derive(Default)]
pub struct FencedResource {
    highest: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl FencedResource {
    /// The highest token accepted for `key` (0 before any).
    pub fn highest(&self, key: &str) -> u64 {
        let highest = self.highest.lock().expect("not poisoned");
        highest.get(key).copied().unwrap_or(0)
    }

    /// Accepts the request if `token` is at least the highest seen.
    pub fn access(&self, key: &str, token: u64) -> bool {
        let mut highest = self.highest.lock().expect("not poisoned");
        let seen = highest.entry(key.to_string()).or_insert(0);
        if token < *seen {
            return false;
        }
        *seen = token;
        true
    }
}

/// One client taking turns on the exclusive lock `name` until `keep_going` says stop (at most
/// 10,000 turns): acquire (waiting up to 3 s), access the fenced resource with the token — which
/// must accept a current holder — record the hold, release. Opens and closes its own session.
pub async fn exclusive_turns(
    client: &Client,
    name: &str,
    resource: &FencedResource,
    holds: &std::sync::Mutex<Vec<Hold>>,
    keep_going: impl Fn() -> bool,
) {
    let session = client
        .create_session(Duration::from_secs(10))
        .await
        .expect("session");
    for _ in 0..10_000 {
        if !keep_going() {
            break;
        }
        let Ok(grant) = client
            .acquire(
                session.id(),
                name,
                distsync_api::LockMode::Exclusive,
                Duration::from_secs(3),
            )
            .await
        else {
            continue;
        };
        let granted = Instant::now();
        assert!(
            resource.access(name, grant.fencing_token),
            "the fenced resource refused a current holder's token {}",
            grant.fencing_token
        );
        tokio::task::yield_now().await;
        let releasing = Instant::now();
        holds.lock().expect("holds lock").push(Hold {
            token: grant.fencing_token,
            granted,
            releasing,
        });
        let _ = client
            .release(session.id(), name, Some(grant.fencing_token))
            .await;
    }
    let _ = session.close().await;
}

/// One exclusive hold as a client saw it.
#[derive(Clone, Debug)]
pub struct Hold {
    pub token: u64,
    pub granted: Instant,
    pub releasing: Instant,
}

/// No two exclusive holds overlap in real time, and tokens increase in grant order.
pub fn assert_exclusive_history(holds: &mut [Hold]) {
    holds.sort_by_key(|hold| hold.granted);
    for pair in holds.windows(2) {
        assert!(
            pair[0].releasing <= pair[1].granted,
            "overlapping exclusive holds: {:?} and {:?}",
            pair[0],
            pair[1]
        );
        assert!(
            pair[0].token < pair[1].token,
            "fencing token did not increase: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
}
