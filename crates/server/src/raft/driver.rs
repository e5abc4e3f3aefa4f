//! The Raft driver task and its handle.

use super::cluster::{ClusterSpec, MemberAddress};
use super::envelope::{Envelope, SnapshotData};
use super::state_machine::{Responder, StateMachine};
use crate::metrics::RaftMetrics;
use bytes::Bytes;
use distsync_raft::{
    Entry, EntryPayload, LogIndex, Membership, MembershipChange, Message, NodeId, RaftConfig,
    RaftNode, ReadId, Role, Term,
};
use distsync_wal::{NodeIdentity, RaftStorage, WalOptions, check_or_record_identity};
use distsync_wire::{Inbound, PeerTransport, serve_inbound};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

/// How a node runs its Raft group.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// This node's id.
    pub id: u64,
    /// Bootstrap members and their addresses (for a joining node: the members to dial).
    pub cluster: ClusterSpec,
    /// Start with no membership and wait to be added by the leader (`--join`).
    pub join: bool,
    /// Where the WAL and snapshots live.
    pub data_dir: PathBuf,
    /// Length of one Raft tick.
    pub tick: Duration,
    /// Minimum election timeout (randomized in `[t, 2t)`).
    pub election_timeout: Duration,
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// Take a snapshot after this many applied entries.
    pub snapshot_interval_entries: u64,
    /// fsync the WAL (turning it off is unsafe; for benchmarks only).
    pub fsync: bool,
    /// Zeros written ahead of the WAL's records (`WalOptions::preallocate_bytes`; 0 = off).
    pub wal_preallocate_bytes: u64,
    /// How long the leader may hold back a proposal that can join the next batch
    /// (`StateMachine::may_join_next_batch`) while waiting for that batch; zero proposes every
    /// command at once.
    pub batch_join_max: Duration,
}

impl DriverConfig {
    fn raft_config(&self) -> RaftConfig {
        let ticks = |duration: Duration| {
            (duration.as_micros() / self.tick.as_micros().max(1)).max(1) as u64
        };
        let mut config = RaftConfig::new(NodeId(self.id));
        config.election_timeout_ticks = ticks(self.election_timeout).max(2);
        config.heartbeat_interval_ticks = ticks(self.heartbeat)
            .min(config.election_timeout_ticks - 1)
            .max(1);
        config
    }
}

/// The node's view of its Raft group, published after every step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node.
    pub id: u64,
    /// Its role.
    pub role: Role,
    /// Its term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Highest index known committed.
    pub commit: u64,
    /// Highest index applied to the state machine.
    pub applied: u64,
    /// The membership in force.
    pub membership: Membership,
    /// Where every known node can be reached.
    pub addresses: BTreeMap<u64, MemberAddress>,
    /// False once the driver stopped (storage failure or shutdown).
    pub running: bool,
}

impl NodeStatus {
    /// Whether this node leads.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// The leader's client API address, if known.
    pub fn leader_http(&self) -> Option<&str> {
        self.leader
            .and_then(|id| self.addresses.get(&id))
            .map(|address| address.http.as_str())
    }
}

/// Why a request to the Raft group did not complete.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum DriverError {
    /// This node does not lead; `leader` is the one it knows of.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<u64>,
    },
    /// Leadership changed before the proposal or read completed; it may or may not have taken
    /// effect, so retry idempotently.
    #[error("leadership changed before the request completed")]
    Dropped,
    /// The driver has stopped.
    #[error("the raft driver stopped")]
    Stopped,
    /// The request was refused (for example a membership change while another is pending).
    #[error("{0}")]
    Rejected(String),
}

type ReadFn<SM> = Box<dyn FnOnce(Result<&SM, DriverError>) + Send>;
type LocalFn<SM> = Box<dyn FnOnce(&mut SM, &NodeStatus) + Send>;

enum Request<SM: StateMachine> {
    Propose {
        command: Vec<u8>,
        respond: Responder<SM::Response>,
    },
    ProposeRaw {
        envelope: Envelope,
        respond: oneshot::Sender<Result<(), DriverError>>,
    },
    Membership {
        change: MembershipChange,
        respond: oneshot::Sender<Result<(), DriverError>>,
    },
    Read {
        run: ReadFn<SM>,
    },
    Local {
        run: LocalFn<SM>,
    },
    FollowerMatch {
        id: u64,
        respond: oneshot::Sender<Option<u64>>,
    },
}

/// A cheap, cloneable handle for talking to the driver task.
pub struct RaftHandle<SM: StateMachine> {
    requests: mpsc::Sender<Request<SM>>,
    status: watch::Receiver<NodeStatus>,
}

impl<SM: StateMachine> Clone for RaftHandle<SM> {
    fn clone(&self) -> Self {
        RaftHandle {
            requests: self.requests.clone(),
            status: self.status.clone(),
        }
    }
}

impl<SM: StateMachine> RaftHandle<SM> {
    /// The latest published status.
    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// A receiver that wakes on every status change.
    pub fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }

    /// Proposes a command of the state machine and waits for its response.
    ///
    /// # Errors
    /// [`DriverError::NotLeader`] off the leader, [`DriverError::Dropped`] when leadership
    /// changed first, [`DriverError::Stopped`] after shutdown.
    pub async fn propose(&self, command: Vec<u8>) -> Result<SM::Response, DriverError> {
        let (respond, response) = oneshot::channel();
        self.send(Request::Propose { command, respond }).await?;
        response.await.map_err(|_| DriverError::Dropped)?
    }

    /// Runs `read` on the state machine once a linearizable read point is confirmed (ReadIndex):
    /// the result reflects every write committed before this call.
    ///
    /// # Errors
    /// As [`RaftHandle::propose`].
    pub async fn read<R: Send + 'static>(
        &self,
        read: impl FnOnce(&SM) -> R + Send + 'static,
    ) -> Result<R, DriverError> {
        let (respond, response) = oneshot::channel();
        let run: ReadFn<SM> = Box::new(move |state| {
            let _ = respond.send(state.map(read));
        });
        self.send(Request::Read { run }).await?;
        response.await.map_err(|_| DriverError::Dropped)?
    }

    /// Runs `local` on this node's state machine in the driver task, without consensus (for
    /// leader-local bookkeeping such as keep-alives).
    ///
    /// # Errors
    /// [`DriverError::Stopped`] after shutdown.
    pub async fn with_local<R: Send + 'static>(
        &self,
        local: impl FnOnce(&mut SM, &NodeStatus) -> R + Send + 'static,
    ) -> Result<R, DriverError> {
        let (respond, response) = oneshot::channel();
        let run: LocalFn<SM> = Box::new(move |state, status| {
            let _ = respond.send(local(state, status));
        });
        self.send(Request::Local { run }).await?;
        response.await.map_err(|_| DriverError::Stopped)
    }

    /// Adds a node: records its address, adds it as a learner, waits until it has caught up,
    /// then makes it a voter.
    ///
    /// # Errors
    /// [`DriverError::Rejected`] when another change is pending or the node exists, plus the
    /// errors of [`RaftHandle::propose`].
    pub async fn add_member(
        &self,
        id: u64,
        address: MemberAddress,
        catch_up_timeout: Duration,
    ) -> Result<(), DriverError> {
        let membership = self.status().membership;
        if membership.is_voter(NodeId(id)) {
            return Err(DriverError::Rejected(format!(
                "node {id} is already a voter"
            )));
        }
        self.propose_raw(Envelope::SetAddress { id, address })
            .await?;
        // A learner left behind by an earlier attempt that timed out goes straight to catch-up.
        if !membership.contains(NodeId(id)) {
            self.change_membership(MembershipChange::AddLearner(NodeId(id)))
                .await?;
        }
        let deadline = Instant::now() + catch_up_timeout;
        loop {
            let target = self.status().commit;
            let (respond, matched) = oneshot::channel();
            self.send(Request::FollowerMatch { id, respond }).await?;
            let matched = matched.await.map_err(|_| DriverError::Stopped)?;
            match matched {
                Some(index) if index >= target => break,
                None if !self.status().is_leader() => {
                    return Err(DriverError::NotLeader {
                        leader: self.status().leader,
                    });
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(DriverError::Rejected(format!(
                    "node {id} did not catch up within {catch_up_timeout:?}; it stays a learner"
                )));
            }
            let mut status = self.watch_status();
            let _ = tokio::time::timeout(Duration::from_millis(50), status.changed()).await;
        }
        self.change_membership(MembershipChange::AddVoter(NodeId(id)))
            .await
    }

    /// Removes a node from the membership.
    ///
    /// # Errors
    /// As [`RaftHandle::add_member`].
    pub async fn remove_member(&self, id: u64) -> Result<(), DriverError> {
        self.change_membership(MembershipChange::Remove(NodeId(id)))
            .await
    }

    async fn change_membership(&self, change: MembershipChange) -> Result<(), DriverError> {
        let (respond, response) = oneshot::channel();
        self.send(Request::Membership { change, respond }).await?;
        Self::await_commit(response).await
    }

    async fn propose_raw(&self, envelope: Envelope) -> Result<(), DriverError> {
        let (respond, response) = oneshot::channel();
        self.send(Request::ProposeRaw { envelope, respond }).await?;
        Self::await_commit(response).await
    }

    /// A leader cut off from its majority never commits: give up after a bound rather than
    /// waiting for the partition to heal.
    async fn await_commit(
        response: oneshot::Receiver<Result<(), DriverError>>,
    ) -> Result<(), DriverError> {
        match tokio::time::timeout(MEMBERSHIP_COMMIT_TIMEOUT, response).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(DriverError::Dropped),
        }
    }

    async fn send(&self, request: Request<SM>) -> Result<(), DriverError> {
        self.requests
            .send(request)
            .await
            .map_err(|_| DriverError::Stopped)
    }
}

/// Opens the node's storage, restores its state machine, starts the peer transport on
/// `raft_listener`, and spawns the driver task.
///
/// # Errors
/// When the WAL cannot be opened or recovered, or the snapshot does not restore.
pub fn spawn_driver<SM: StateMachine>(
    config: DriverConfig,
    mut state_machine: SM,
    raft_listener: TcpListener,
    metrics: Arc<RaftMetrics>,
) -> anyhow::Result<(RaftHandle<SM>, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let options = WalOptions {
        sync: config.fsync,
        preallocate_bytes: config.wal_preallocate_bytes,
        ..WalOptions::default()
    };
    let (storage, persisted) = RaftStorage::open(&config.data_dir, options).map_err(|error| {
        anyhow::anyhow!("opening the WAL in {}: {error}", config.data_dir.display())
    })?;
    let mut addresses: BTreeMap<u64, MemberAddress> = config.cluster.members.clone();
    if let Some(snapshot) = &persisted.snapshot {
        let data = SnapshotData::decode(&snapshot.data)
            .map_err(|error| anyhow::anyhow!("decoding the snapshot: {error}"))?;
        state_machine.restore(&data.service)?;
        addresses.extend(data.addresses);
    }
    let proposed = NodeIdentity {
        node_id: config.id,
        bootstrap_voters: if config.join {
            Vec::new()
        } else {
            config.cluster.members.keys().copied().collect()
        },
    };
    let identity = check_or_record_identity(&config.data_dir, &proposed)
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    if identity.bootstrap_voters != proposed.bootstrap_voters {
        // The configuration comes from this node's history; --cluster only supplies addresses
        // (and the first configuration of a new node). Membership changes go through
        // POST/DELETE /v1/cluster/members.
        tracing::warn!(
            recorded = ?identity.bootstrap_voters,
            given = ?proposed.bootstrap_voters,
            "--cluster names other voters than this data directory was bootstrapped with; keeping the recorded ones"
        );
    }
    let membership =
        Membership::with_voters(identity.bootstrap_voters.iter().map(|&id| NodeId(id)));
    let seed = config.id
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let last_snapshot_index = persisted
        .snapshot
        .as_ref()
        .map_or(LogIndex(0), |snapshot| snapshot.meta.last_index);
    let node = RaftNode::restore(config.raft_config(), membership, persisted, seed)?;
    let status = node.status();
    let initial = NodeStatus {
        id: config.id,
        role: status.role,
        term: status.term.0,
        leader: status.leader.map(|id| id.0),
        commit: status.commit.0,
        applied: status.applied.0,
        membership: status.membership,
        addresses: effective_addresses(&addresses, &config.cluster.members),
        running: true,
    };
    let (status_tx, status_rx) = watch::channel(initial);
    let (request_tx, request_rx) = mpsc::channel(4096);
    let (inbound_tx, inbound_rx) = mpsc::channel(8192);
    let transport = PeerTransport::new(config.id, 4096);
    let stats = transport.stats();
    metrics.attach_transport(Arc::clone(&stats));
    tokio::spawn(serve_inbound::<Message>(raft_listener, inbound_tx, stats));
    let mut driver = Driver {
        id: config.id,
        tick: config.tick,
        snapshot_interval_entries: config.snapshot_interval_entries.max(1),
        node,
        storage,
        state_machine,
        transport,
        addresses,
        dial_overrides: config.cluster.members.clone(),
        pending: BTreeMap::new(),
        reads: HashMap::new(),
        reads_waiting_apply: BTreeMap::new(),
        next_read_id: 0,
        last_snapshot_index,
        batch_join_max: config.batch_join_max,
        held_back: Vec::new(),
        held_back_until: None,
        was_leader: false,
        status: status_tx,
        metrics,
    };
    driver.sync_peers();
    let task = tokio::spawn(async move {
        let result = driver.run(request_rx, inbound_rx).await;
        driver.status.send_modify(|status| status.running = false);
        if let Err(error) = &result {
            tracing::error!(%error, "raft driver stopped");
        }
        result
    });
    Ok((
        RaftHandle {
            requests: request_tx,
            status: status_rx,
        },
        task,
    ))
}

/// Replicated addresses, with this node's command-line addresses taking precedence.
fn effective_addresses(
    replicated: &BTreeMap<u64, MemberAddress>,
    overrides: &BTreeMap<u64, MemberAddress>,
) -> BTreeMap<u64, MemberAddress> {
    let mut addresses = replicated.clone();
    addresses.extend(overrides.iter().map(|(&id, address)| (id, address.clone())));
    addresses
}

/// Who is waiting for the entry at an index, and for which term.
enum Pending<R> {
    Service(Term, Responder<R>),
    Raw(Term, oneshot::Sender<Result<(), DriverError>>),
}

struct Driver<SM: StateMachine> {
    id: u64,
    tick: Duration,
    snapshot_interval_entries: u64,
    node: RaftNode,
    storage: RaftStorage,
    state_machine: SM,
    transport: PeerTransport<Message>,
    /// Addresses as replicated through the log and snapshots.
    addresses: BTreeMap<u64, MemberAddress>,
    /// Addresses given on this node's command line: they win for dialing, because addresses are
    /// a local matter (a proxy or NAT may sit between this node and a peer).
    dial_overrides: BTreeMap<u64, MemberAddress>,
    pending: BTreeMap<u64, Pending<SM::Response>>,
    reads: HashMap<u64, ReadFn<SM>>,
    reads_waiting_apply: BTreeMap<u64, Vec<ReadFn<SM>>>,
    next_read_id: u64,
    last_snapshot_index: LogIndex,
    batch_join_max: Duration,
    /// Commands held back to join the next proposal's batch, in arrival order: whatever is
    /// proposed next goes after them, so the log keeps the order requests reached the leader.
    held_back: Vec<(Vec<u8>, Responder<SM::Response>)>,
    /// When the oldest held-back command must be proposed even if nothing else comes.
    held_back_until: Option<tokio::time::Instant>,
    was_leader: bool,
    status: watch::Sender<NodeStatus>,
    metrics: Arc<RaftMetrics>,
}

/// How long a membership-related proposal may take to commit.
const MEMBERSHIP_COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests handled per loop turn before the node's output is flushed, so a burst of proposals
/// shares one fsync without starving ticks and peer messages.
const REQUESTS_PER_TURN_MAX: usize = 4096;

impl<SM: StateMachine> Driver<SM> {
    async fn run(
        &mut self,
        mut requests: mpsc::Receiver<Request<SM>>,
        mut inbound: mpsc::Receiver<Inbound<Message>>,
    ) -> anyhow::Result<()> {
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let held_back_until = self.held_back_until;
            let held_back_due = async move {
                match held_back_until {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = held_back_due => self.propose_held_back(),
                _ = ticker.tick() => {
                    self.node.tick();
                    let status = self.status.borrow().clone();
                    for command in self.state_machine.on_tick(Instant::now(), &status) {
                        self.propose(Envelope::Service(command).encode(), None);
                    }
                }
                Some(message) = inbound.recv() => {
                    self.step(message);
                    while let Ok(message) = inbound.try_recv() {
                        self.step(message);
                    }
                }
                request = requests.recv() => {
                    let Some(request) = request else {
                        return Ok(());
                    };
                    self.handle(request);
                    for _ in 0..REQUESTS_PER_TURN_MAX {
                        match requests.try_recv() {
                            Ok(request) => self.handle(request),
                            Err(_) => break,
                        }
                    }
                }
            }
            self.process_ready()?;
            self.publish_status();
        }
    }

    fn step(&mut self, inbound: Inbound<Message>) {
        if inbound.message.from.0 != inbound.from {
            tracing::warn!(claimed = %inbound.message.from, connection = inbound.from, "message with a spoofed sender dropped");
            return;
        }
        if let distsync_raft::MessageBody::InstallSnapshot { snapshot } = &inbound.message.body
            && let Err(error) = SnapshotData::decode(&snapshot.data)
                .map_err(anyhow::Error::from)
                .and_then(|data| self.state_machine.validate_snapshot(&data.service))
        {
            // Refused before the core sees it, so it is never persisted; the leader retries,
            // and a leader that keeps sending a bad snapshot shows up in this warning.
            tracing::warn!(from = inbound.from, %error, "snapshot that does not restore dropped");
            self.metrics.snapshots_rejected.inc();
            return;
        }
        self.node.step(inbound.message);
    }

    fn handle(&mut self, request: Request<SM>) {
        match request {
            Request::Propose { command, respond } => {
                if self.may_hold_back(&command) {
                    if self.held_back.is_empty() {
                        self.held_back_until =
                            Some(tokio::time::Instant::now() + self.batch_join_max);
                    }
                    self.held_back.push((command, respond));
                    self.metrics.proposals_held_back.inc();
                } else {
                    self.propose(Envelope::Service(command).encode(), Some(respond));
                }
            }
            Request::ProposeRaw { envelope, respond } => {
                self.propose_held_back();
                match self.node.propose(Bytes::from(envelope.encode())) {
                    Ok(proposal) => {
                        self.pending
                            .insert(proposal.index.0, Pending::Raw(proposal.term, respond));
                    }
                    Err(error) => {
                        let _ = respond.send(Err(self.not_leader_or(error.to_string())));
                    }
                }
            }
            Request::Membership { change, respond } => {
                self.propose_held_back();
                match self.node.propose_membership(change) {
                    Ok(proposal) => {
                        self.pending
                            .insert(proposal.index.0, Pending::Raw(proposal.term, respond));
                    }
                    Err(error) => {
                        let _ = respond.send(Err(self.not_leader_or(error.to_string())));
                    }
                }
            }
            Request::Read { run } => {
                self.next_read_id += 1;
                let id = self.next_read_id;
                match self.node.read_index(ReadId(id)) {
                    Ok(()) => {
                        self.reads.insert(id, run);
                    }
                    Err(_) => run(Err(DriverError::NotLeader {
                        leader: self.node.status().leader.map(|id| id.0),
                    })),
                }
            }
            Request::Local { run } => {
                let status = self.status.borrow().clone();
                run(&mut self.state_machine, &status);
            }
            Request::FollowerMatch { id, respond } => {
                let _ = respond.send(self.node.follower_match(NodeId(id)).map(|index| index.0));
            }
        }
    }

    fn not_leader_or(&self, message: String) -> DriverError {
        if self.node.status().role == Role::Leader {
            DriverError::Rejected(message)
        } else {
            DriverError::NotLeader {
                leader: self.node.status().leader.map(|id| id.0),
            }
        }
    }

    fn may_hold_back(&self, command: &[u8]) -> bool {
        !self.batch_join_max.is_zero()
            && self.node.role() == Role::Leader
            && self.state_machine.may_join_next_batch(command)
    }

    /// Proposes every held-back command, oldest first.
    fn propose_held_back(&mut self) {
        self.held_back_until = None;
        for (command, respond) in std::mem::take(&mut self.held_back) {
            self.propose_now(Envelope::Service(command).encode(), Some(respond));
        }
    }

    /// Proposes the held-back commands once one of them no longer qualifies (the state it was
    /// judged against has changed: the lock it would have queued for was released meanwhile).
    fn propose_held_back_if_stale(&mut self) {
        if self
            .held_back
            .iter()
            .any(|(command, _)| !self.state_machine.may_join_next_batch(command))
        {
            self.propose_held_back();
        }
    }

    /// Proposes a command after whatever was held back, keeping arrival order in the log.
    fn propose(&mut self, envelope: Vec<u8>, respond: Option<Responder<SM::Response>>) {
        self.propose_held_back();
        self.propose_now(envelope, respond);
    }

    fn propose_now(&mut self, envelope: Vec<u8>, respond: Option<Responder<SM::Response>>) {
        self.metrics.proposals.inc();
        match self.node.propose(Bytes::from(envelope)) {
            Ok(proposal) => {
                if let Some(respond) = respond {
                    self.pending
                        .insert(proposal.index.0, Pending::Service(proposal.term, respond));
                }
            }
            Err(_) => {
                self.metrics.proposals_rejected.inc();
                if let Some(respond) = respond {
                    let _ = respond.send(Err(DriverError::NotLeader {
                        leader: self.node.status().leader.map(|id| id.0),
                    }));
                }
            }
        }
    }

    /// Carries out every pending `Ready`: persist and fsync, send, apply, advance.
    fn process_ready(&mut self) -> anyhow::Result<()> {
        while self.node.has_ready() {
            let ready = self.node.ready();
            // A configuration takes effect when appended, so the core already addresses a new
            // member in this batch: dial it before anything is sent.
            if ready
                .entries
                .iter()
                .chain(&ready.committed_entries)
                .any(|entry| matches!(entry.payload, EntryPayload::Membership(_)))
            {
                self.sync_peers();
            }
            // A leader's appends do not depend on its own log being durable: it counts itself
            // towards a commit only once `advance` confirms the fsync (Raft thesis §10.2.1), so
            // they go out before the fsync and the followers' writes overlap the leader's. Every
            // other message (votes, acknowledgements) waits for the fsync.
            let leading = self.node.status().role == Role::Leader;
            let sent_early = |message: &Message| {
                leading
                    && matches!(
                        message.body,
                        distsync_raft::MessageBody::AppendEntries { .. }
                    )
            };
            for message in ready.messages.iter().filter(|message| sent_early(message)) {
                self.transport.send(message.to.0, message.clone());
            }
            if ready.hard_state.is_some() || !ready.entries.is_empty() || ready.snapshot.is_some() {
                let started = Instant::now();
                tokio::task::block_in_place(|| {
                    self.storage.persist(
                        ready.hard_state.as_ref(),
                        &ready.entries,
                        ready.snapshot.as_ref(),
                    )
                })
                .map_err(|error| anyhow::anyhow!("persisting to the WAL: {error}"))?;
                self.metrics
                    .persist_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            for message in ready.messages.iter().filter(|message| !sent_early(message)) {
                self.transport.send(message.to.0, message.clone());
            }
            if let Some(snapshot) = &ready.snapshot {
                self.install_snapshot(&snapshot.data)?;
                self.last_snapshot_index = snapshot.meta.last_index;
                self.fail_pending_through(snapshot.meta.last_index.0);
            }
            for entry in &ready.committed_entries {
                self.apply(entry);
            }
            for read in &ready.read_states {
                if let Some(run) = self.reads.remove(&read.id.0) {
                    self.reads_waiting_apply
                        .entry(read.index.0)
                        .or_default()
                        .push(run);
                }
            }
            for id in &ready.aborted_reads {
                if let Some(run) = self.reads.remove(&id.0) {
                    run(Err(DriverError::Dropped));
                }
            }
            self.node.advance(ready);
            self.serve_applied_reads();
            self.maybe_snapshot()?;
            self.propose_held_back_if_stale();
        }
        let is_leader = self.node.status().role == Role::Leader;
        if is_leader != self.was_leader {
            self.was_leader = is_leader;
            self.state_machine
                .on_leadership_change(is_leader, Instant::now());
            if !is_leader {
                // Reads queued on a leader that lost its role would wait for nothing.
                for (_, run) in self.reads.drain() {
                    run(Err(DriverError::Dropped));
                }
                // So would its proposals: cut off from the majority, they commit only if another
                // leader happens to keep them, and this node learns that only after the partition
                // heals. Answer "outcome unknown, retry" now instead of holding every client
                // until its commit timeout; a retry is idempotent, and an entry that commits
                // anyway is applied with nobody left to answer.
                self.fail_pending_through(u64::MAX);
                self.held_back_until = None;
                let leader = self.node.status().leader.map(|id| id.0);
                for (_, respond) in self.held_back.drain(..) {
                    let _ = respond.send(Err(DriverError::NotLeader { leader }));
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, entry: &Entry) {
        let index = entry.index.0;
        let pending = self.pending.remove(&index);
        // Anything still pending below this index was overwritten by another leader's entry.
        self.fail_pending_through(index);
        let matches_term = |term: Term| term == entry.term;
        match &entry.payload {
            EntryPayload::Noop | EntryPayload::Membership(_) => {
                if let Some(Pending::Raw(term, respond)) = pending {
                    let result = if matches_term(term) {
                        Ok(())
                    } else {
                        Err(DriverError::Dropped)
                    };
                    let _ = respond.send(result);
                } else if let Some(Pending::Service(_, respond)) = pending {
                    let _ = respond.send(Err(DriverError::Dropped));
                }
            }
            EntryPayload::Command(bytes) => match Envelope::decode(bytes) {
                Ok(Envelope::Service(command)) => {
                    let responder = match pending {
                        Some(Pending::Service(term, respond)) if matches_term(term) => {
                            Some(respond)
                        }
                        Some(Pending::Service(_, respond)) => {
                            let _ = respond.send(Err(DriverError::Dropped));
                            None
                        }
                        Some(Pending::Raw(_, respond)) => {
                            let _ = respond.send(Err(DriverError::Dropped));
                            None
                        }
                        None => None,
                    };
                    self.state_machine.apply(entry.index, &command, responder);
                    self.metrics.applied.inc();
                }
                Ok(Envelope::SetAddress { id, address }) => {
                    self.addresses.insert(id, address);
                    self.sync_peers();
                    if let Some(Pending::Raw(term, respond)) = pending {
                        let result = if matches_term(term) {
                            Ok(())
                        } else {
                            Err(DriverError::Dropped)
                        };
                        let _ = respond.send(result);
                    }
                }
                Err(error) => {
                    // Every replica skips the same undecodable entry, so state stays identical.
                    tracing::error!(index, %error, "undecodable log entry skipped");
                }
            },
        }
    }

    fn fail_pending_through(&mut self, index: u64) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > index {
                break;
            }
            match entry.remove() {
                Pending::Service(_, respond) => {
                    let _ = respond.send(Err(DriverError::Dropped));
                }
                Pending::Raw(_, respond) => {
                    let _ = respond.send(Err(DriverError::Dropped));
                }
            }
        }
    }

    fn serve_applied_reads(&mut self) {
        let applied = self.node.status().applied.0;
        while let Some(entry) = self.reads_waiting_apply.first_entry() {
            if *entry.key() > applied {
                break;
            }
            for run in entry.remove() {
                run(Ok(&self.state_machine));
            }
        }
    }

    fn install_snapshot(&mut self, data: &[u8]) -> anyhow::Result<()> {
        let data = SnapshotData::decode(data)
            .map_err(|error| anyhow::anyhow!("decoding a snapshot from the leader: {error}"))?;
        self.state_machine.restore(&data.service)?;
        self.addresses.extend(data.addresses);
        self.sync_peers();
        Ok(())
    }

    fn maybe_snapshot(&mut self) -> anyhow::Result<()> {
        let applied = self.node.status().applied;
        if applied.0 < self.last_snapshot_index.0 + self.snapshot_interval_entries {
            return Ok(());
        }
        let data = SnapshotData {
            addresses: self.addresses.clone(),
            service: self.state_machine.snapshot(),
        }
        .encode();
        self.node.compact(applied, Bytes::from(data));
        if let Some(snapshot) = self.node.snapshot() {
            let started = Instant::now();
            tokio::task::block_in_place(|| self.storage.save_snapshot(snapshot))
                .map_err(|error| anyhow::anyhow!("saving a snapshot: {error}"))?;
            self.last_snapshot_index = snapshot.meta.last_index;
            self.metrics.snapshots.inc();
            tracing::debug!(index = applied.0, elapsed = ?started.elapsed(), "snapshot saved");
        }
        Ok(())
    }

    /// Dials every known node but this one, at its latest address.
    /// Dials the members of the current configuration and drops connections to everyone else
    /// (a removed node is no longer dialed). A node outside the configuration (joining, not yet
    /// caught up) dials every known address: it must be able to answer whoever replicates to it.
    fn sync_peers(&mut self) {
        let members = self.node.status().membership;
        let joining = !members.contains(NodeId(self.id));
        let addresses = effective_addresses(&self.addresses, &self.dial_overrides);
        let dialed = |id: u64| id != self.id && (joining || members.contains(NodeId(id)));
        for (&id, address) in &addresses {
            if dialed(id) {
                self.transport.add_peer_if_changed(id, address.raft.clone());
            }
        }
        let dropped: Vec<u64> = self
            .transport
            .peer_ids()
            .filter(|&id| !dialed(id) || !addresses.contains_key(&id))
            .collect();
        for id in dropped {
            self.transport.remove_peer(id);
        }
    }

    fn publish_status(&mut self) {
        let status = self.node.status();
        let next = NodeStatus {
            id: self.id,
            role: status.role,
            term: status.term.0,
            leader: status.leader.map(|id| id.0),
            commit: status.commit.0,
            applied: status.applied.0,
            membership: status.membership,
            addresses: effective_addresses(&self.addresses, &self.dial_overrides),
            running: true,
        };
        self.metrics.observe_status(&next);
        self.status.send_if_modified(|current| {
            if *current == next {
                false
            } else {
                *current = next;
                true
            }
        });
    }
}
