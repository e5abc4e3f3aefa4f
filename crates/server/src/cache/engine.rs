//! The IO shell around one node's protocol core: its [`CacheNode`] and the [`Directory`] of the
//! keys it homes, behind one std `RwLock`: GET hits share it for reading, everything else holds
//! it for writing, only while the core runs. Effects the core returns are carried out after the
//! lock is released — messages through the peer transport, backing-store requests on spawned
//! tasks whose answers go back into the directory — except the two that are themselves core
//! calls or trivial: messages to this node itself (delivered at once, in order) and
//! completions (handed to the waiting request's oneshot).
//!
//! A request whose transaction cannot finish (its home or the owner of the only copy is dead
//! or cut off) is answered `node_unavailable` after `op_timeout`, and withdrawn from the core
//! unless it already took effect ([`CacheNode::withdraw`]): a failed write takes effect before
//! its answer or never. The transaction it waited behind goes on (retransmitted until
//! answered).
//!
//! A node serves only while a majority of its view confirms its coherence lease
//! ([`CacheNode::has_quorum`]), checked under the core lock when a request starts (a request
//! waits up to `op_timeout` for it) and again when it completes; so the minority side of a
//! partition serves nothing, while the majority moves on in a view without it.

use super::backing::BackingStore;
use super::membership::{AnnouncedMember, FailureDetector, Membership, MembershipView, ViewMember};
use super::metrics::CacheMetrics;
use super::pending_hits::PendingHits;
use distsync_api::{CacheTransitions, LineTransition};
use distsync_cache::{
    BackingRequestId, CacheConfig, CacheError, CacheNode, CoherenceMessage, Directory, Key,
    LineData, LineState, NodeId, OpId, OpResult, OpStep, Outbound, Value,
};
use distsync_wire::{Inbound, PeerTransport, TransportStats, serve_inbound};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockWriteGuard};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

/// A node learned at run time that has been out of the view and silent for this many failure
/// timeouts is forgotten.
const FORGET_AFTER_TIMEOUTS: u32 = 20;

/// Messages queued per peer before the transport drops (the protocol retransmits).
const PEER_QUEUE_CAPACITY: usize = 16 * 1024;

/// What travels between cache nodes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PeerMessage {
    /// A protocol message, for the receiver's node or directory, sent in the sender's view
    /// `epoch` (the receiver drops it unless that is its own).
    Coherence {
        /// The sender's view epoch when the core produced the message.
        epoch: u64,
        /// The message.
        message: CoherenceMessage,
    },
    /// The sender's current view, gossiped to every known node periodically; also the
    /// failure detector's heartbeat. Every node adopts a view with a higher epoch than its own.
    View {
        /// The view's epoch.
        epoch: u64,
        /// Its members, sorted by name.
        members: Vec<ViewMember>,
        /// The sender's incarnation (a restarted node has a new one).
        incarnation: u64,
        /// The addresses of the members and of the sender, so that a node hears of nodes
        /// that joined after it started (and a joining node announces itself).
        addresses: Vec<AnnouncedMember>,
    },
    /// The sender is shutting down: drop it from the view now rather than after the failure
    /// timeout (its Modified lines are already written back).
    Leaving {
        /// The incarnation that leaves (a message from an older life must not evict a newer).
        incarnation: u64,
    },
    /// "What state is your copy of `key` in?" (for `/v1/cache/{key}/coherence`).
    LineStateQuery {
        /// Correlates the answer.
        query: u64,
        /// The key.
        key: Key,
    },
    /// Answer to [`PeerMessage::LineStateQuery`].
    LineStateAnswer {
        /// The query answered.
        query: u64,
        /// The answering node's state of the key.
        state: LineState,
    },
}

/// Settings of one node's shell.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// This node's name (a member of the cluster).
    pub name: String,
    /// The protocol core's configuration.
    pub core: CacheConfig,
    /// Length of one protocol tick (retransmissions, leases and heartbeats count in ticks).
    pub tick: Duration,
    /// How long a request waits for its transaction before `node_unavailable`.
    pub op_timeout: Duration,
    /// How long `/coherence` waits for the other nodes' answers.
    pub query_timeout: Duration,
    /// A node not heard from for this long is suspected and left out of the next view.
    pub failure_timeout: Duration,
    /// Test only (negative controls): serve and issue views without a majority, as a
    /// partition's minority must never do. Always false outside tests.
    pub ignore_quorum: bool,
    /// Test only: keep a journal of line state changes, stamped with the wall clock, for a
    /// black-box test to check the single-writer invariant in real time across nodes.
    pub record_transitions: bool,
}

impl EngineConfig {
    /// How often a node gossips its view (several times per failure timeout, so one lost
    /// message does not make a node suspect).
    fn gossip_interval(&self) -> Duration {
        (self.failure_timeout / 5).max(self.tick)
    }
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The core refused it (value too large, too many pending operations).
    #[error(transparent)]
    Refused(#[from] CacheError),
    /// The transaction did not finish in time.
    #[error(
        "key {key}: no answer within {waited_ms} ms from its home {home} (or from the node holding its only copy); {outcome}"
    )]
    Unavailable {
        /// The key, for the message.
        key: String,
        /// The key's home.
        home: String,
        /// How long the request waited.
        waited_ms: u128,
        /// Whether the operation took effect (see [`CacheNode::withdraw`]).
        outcome: &'static str,
    },
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// Fewer than a majority of the view's members confirmed this node's coherence lease
    /// recently: it may be on the minority side of a partition, where the majority may already
    /// serve its keys in a view without it.
    #[error(
        "node {node} cannot confirm it is on the majority side of the cache cluster (fewer than a majority of the {members} members of view {epoch} answered it recently); {outcome}"
    )]
    NoQuorum {
        /// This node.
        node: String,
        /// Its view.
        epoch: u64,
        /// Members of that view.
        members: usize,
        /// Whether the operation took effect.
        outcome: &'static str,
    },
    /// The node is not in the current membership view (starting, restarted, or declared dead):
    /// it serves nothing until a view includes it.
    #[error(
        "node {node} is not in the current cache view (epoch {epoch}); it serves again once the cluster re-admits it"
    )]
    NotInView {
        /// This node.
        node: String,
        /// The view it last adopted.
        epoch: u64,
    },
}

/// A local operation.
#[derive(Clone, Debug)]
pub enum CacheOp {
    /// Read a key.
    Get(Key),
    /// Write a key.
    Put(Key, Value),
    /// Delete a key.
    Delete(Key),
}

impl CacheOp {
    fn key(&self) -> &Key {
        match self {
            CacheOp::Get(key) | CacheOp::Put(key, _) | CacheOp::Delete(key) => key,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            CacheOp::Get(_) => "get",
            CacheOp::Put(..) => "put",
            CacheOp::Delete(_) => "delete",
        }
    }
}

/// The protocol state of one node: everything the mutex guards.
struct Core {
    node: CacheNode<Membership>,
    directory: Directory,
    /// Per pending request, where to send its result and the view epoch it completed in.
    waiters: HashMap<OpId, oneshot::Sender<(OpResult, u64)>>,
    /// Line state changes, when `record_transitions` is on.
    journal: Option<TransitionJournal>,
    /// Ticks the cores have been given (see [`CacheEngine::catch_up`]).
    ticks_done: u64,
}

/// Bound of the transition journal: a test run records far fewer; a node left recording stops
/// growing here and says how many it dropped.
const JOURNAL_ENTRIES_MAX: usize = 2_000_000;

/// The line state changes of one node (test only): what `/v1/internal/transitions` returns.
#[derive(Debug, Default)]
struct TransitionJournal {
    entries: Vec<LineTransition>,
    dropped: u64,
}

/// One cache node's shell. Shared by the HTTP handlers, the RESP connections, the tick task and
/// the peer inbound task.
pub struct CacheEngine {
    id: NodeId,
    config: EngineConfig,
    /// Written under the write lock, always through [`CacheEngine::core_mut`]; GET hits share
    /// the read lock (see `pending_hits.rs`).
    core: RwLock<Core>,
    /// Hits served under the read lock whose uses and metrics are not applied yet.
    pending_hits: PendingHits,
    membership: Membership,
    transport: Mutex<PeerTransport<PeerMessage>>,
    transport_stats: Arc<TransportStats>,
    backing: Arc<BackingStore>,
    /// Backing-store requests being carried out. The directory sends a request again on its
    /// tick until it is answered, as it must over a network that loses messages; but the
    /// backing store answers or fails every request within its response timeout, so a copy of
    /// one still in flight only adds load. A node flushing 17,300 dirty lines into a Redis that
    /// stalled for 1.5 s (`DEBUG SLEEP`) had it run 47,600 writes; with this, 18,400.
    backing_in_flight: Mutex<HashSet<BackingRequestId>>,
    /// Prometheus metrics.
    pub metrics: CacheMetrics,
    queries: Mutex<HashMap<u64, oneshot::Sender<LineState>>>,
    next_query: AtomicU64,
    /// This process's start stamp: a restarted node is a new member.
    incarnation: u64,
    detector: Mutex<FailureDetector>,
    last_gossip: Mutex<Option<Instant>>,
    /// In the current view (with this incarnation): serves operations and sends coherence
    /// messages. Changed only under the core lock, together with the view.
    serving: AtomicBool,
    /// Whether a majority of the view confirmed this node's lease ([`CacheNode::has_quorum`]),
    /// as of the last tick: what waiting requests watch. Serving decisions read the core itself,
    /// under its lock.
    quorum: watch::Sender<bool>,
    /// Latched once this node served in a view of the whole cluster.
    ready: AtomicBool,
    /// Tick 0 of the protocol's clock.
    clock_start: Instant,
    shutting_down: AtomicBool,
}

impl std::fmt::Debug for CacheEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheEngine")
            .field("name", &self.config.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A backing-store request in [`CacheEngine::backing_in_flight`] until this is dropped, also
/// when its task is cancelled or panics: a request left marked would never be sent again.
struct BackingInFlight {
    engine: Arc<CacheEngine>,
    id: BackingRequestId,
}

impl Drop for BackingInFlight {
    fn drop(&mut self) {
        lock(&self.engine.backing_in_flight).remove(&self.id);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside the core is a broken protocol invariant; the process is going down anyway
    // (panic = abort is not set, so keep serving what can be served rather than cascading).
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Name of a message kind, for metric labels.
fn kind_of(message: &CoherenceMessage) -> &'static str {
    match message {
        CoherenceMessage::GetShared { .. } => "get_shared",
        CoherenceMessage::GetModified { .. } => "get_modified",
        CoherenceMessage::Upgrade { .. } => "upgrade",
        CoherenceMessage::PutModified { .. } => "put_modified",
        CoherenceMessage::PutShared { .. } => "put_shared",
        CoherenceMessage::PutExclusive { .. } => "put_exclusive",
        CoherenceMessage::GrantAck { .. } => "grant_ack",
        CoherenceMessage::InvalidateAck { .. } => "invalidate_ack",
        CoherenceMessage::FetchResponse { .. } => "fetch_response",
        CoherenceMessage::WriteBack { .. } => "write_back",
        CoherenceMessage::Heartbeat { .. } => "heartbeat",
        CoherenceMessage::Grant { .. } => "grant",
        CoherenceMessage::Invalidate { .. } => "invalidate",
        CoherenceMessage::Fetch { .. } => "fetch",
        CoherenceMessage::PutAck { .. } => "put_ack",
        CoherenceMessage::WriteBackAck { .. } => "write_back_ack",
        CoherenceMessage::HeartbeatAck { .. } => "heartbeat_ack",
        CoherenceMessage::Holdings { .. } => "holdings",
        CoherenceMessage::HoldingsAck => "holdings_ack",
    }
}

impl Core {
    /// Runs a node-side core call on behalf of `key`, counting the state change of `key` and
    /// the lines the call evicted (each eviction leaves a `Put*` notice or write-back request).
    fn node_call<R>(
        &mut self,
        key: Option<&Key>,
        metrics: &CacheMetrics,
        call: impl FnOnce(&mut CacheNode<Membership>) -> (R, Vec<Outbound>),
    ) -> (R, Vec<Outbound>) {
        let before = key.map(|key| self.node.state_of(key));
        let (result, out) = call(&mut self.node);
        if let (Some(key), Some(before)) = (key, before) {
            let after = self.node.state_of(key);
            if before != after {
                self.note_transition(key, before.letter(), after.letter(), metrics);
            }
        }
        for effect in &out {
            let Outbound::Send { message, .. } = effect else {
                continue;
            };
            let from = match message {
                CoherenceMessage::PutModified { .. } => 'M',
                CoherenceMessage::PutExclusive { .. } => 'E',
                CoherenceMessage::PutShared { .. } => 'S',
                _ => continue,
            };
            if let Some(evicted) = message.key().filter(|evicted| Some(*evicted) != key) {
                metrics.evictions.inc();
                self.note_transition(evicted, from, 'I', metrics);
            }
        }
        (result, out)
    }

    /// Counts a line's state change, and journals it when recording.
    fn note_transition(&mut self, key: &Key, from: char, to: char, metrics: &CacheMetrics) {
        metrics.transition(from, to);
        if let Some(journal) = &mut self.journal {
            if journal.entries.len() >= JOURNAL_ENTRIES_MAX {
                journal.dropped += 1;
                return;
            }
            let at_unix_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_micros() as u64);
            journal.entries.push(LineTransition {
                at_unix_us,
                key: String::from_utf8_lossy(key).into_owned(),
                from: from.to_string(),
                to: to.to_string(),
            });
        }
    }

    fn count_directory_out(out: &[Outbound], metrics: &CacheMetrics) {
        for effect in out {
            match effect {
                Outbound::Send { message, .. } => {
                    if matches!(message, CoherenceMessage::Invalidate { .. }) {
                        metrics.invalidations_sent.inc();
                    }
                    metrics.directory_message("out", kind_of(message));
                }
                Outbound::Backing(request) => {
                    if matches!(request.op, distsync_cache::BackingOp::Write(_)) {
                        metrics.write_backs.inc();
                    }
                }
                Outbound::Complete(_) => {}
            }
        }
    }

    /// Delivers a protocol message to the directory or the node.
    fn deliver(
        &mut self,
        from: NodeId,
        epoch: u64,
        message: CoherenceMessage,
        metrics: &CacheMetrics,
    ) -> Vec<Outbound> {
        if message.is_for_directory() {
            metrics.directory_message("in", kind_of(&message));
            let out = self.directory.handle_at(from, epoch, message);
            Self::count_directory_out(&out, metrics);
            out
        } else {
            if matches!(message, CoherenceMessage::Invalidate { .. }) {
                metrics.invalidations_received.inc();
            }
            let key = message.key().cloned();
            self.node_call(key.as_ref(), metrics, |node| {
                ((), node.on_message_at(from, epoch, message))
            })
            .1
        }
    }
}

enum Started {
    Done(OpResult),
    Pending(OpId, oneshot::Receiver<(OpResult, u64)>),
}

impl CacheEngine {
    /// A node named `config.name` of `membership`, not yet connected (see [`CacheEngine::start`]).
    ///
    /// # Errors
    /// The name is not a member, or the core refuses the configuration.
    pub fn new(
        config: EngineConfig,
        membership: Membership,
        backing: BackingStore,
    ) -> anyhow::Result<Arc<Self>> {
        let view = membership.current();
        let own = membership
            .roster()
            .into_iter()
            .find(|member| member.name == config.name)
            .ok_or_else(|| anyhow::anyhow!("node {} is not listed in the cluster", config.name))?;
        let id = own.id;
        let node = CacheNode::new(id, config.core.clone(), membership.clone(), view.ids())?;
        let directory = Directory::new(id, config.core.clone())?;
        let transport = PeerTransport::new(id.0, PEER_QUEUE_CAPACITY);
        let transport_stats = transport.stats();
        // Nanoseconds since 1970: distinct for every start of a node on any sane clock.
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| since.as_nanos() as u64)
            .max(1);
        let mut detector = FailureDetector::new(
            &config.name,
            incarnation,
            membership.seed_names(),
            config.failure_timeout,
            Instant::now(),
        );
        if config.ignore_quorum {
            detector = detector.ignoring_majority();
        }
        let journal = config.record_transitions.then(TransitionJournal::default);
        Ok(Arc::new(CacheEngine {
            id,
            config,
            core: RwLock::new(Core {
                node,
                directory,
                waiters: HashMap::new(),
                journal,
                ticks_done: 0,
            }),
            pending_hits: PendingHits::default(),
            membership,
            transport: Mutex::new(transport),
            transport_stats,
            backing: Arc::new(backing),
            metrics: CacheMetrics::new(),
            backing_in_flight: Mutex::new(HashSet::new()),
            queries: Mutex::new(HashMap::new()),
            next_query: AtomicU64::new(1),
            incarnation,
            detector: Mutex::new(detector),
            last_gossip: Mutex::new(None),
            serving: AtomicBool::new(false),
            quorum: watch::channel(false).0,
            ready: AtomicBool::new(false),
            clock_start: Instant::now(),
            shutting_down: AtomicBool::new(false),
        }))
    }

    /// The core, exclusively, with every hit served under the read lock since it was last held
    /// so applied first: the only way to the write lock.
    fn core_mut(&self) -> RwLockWriteGuard<'_, Core> {
        let mut core = self
            .core
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let core_ref = &mut *core;
        self.pending_hits.apply(|used, seconds| {
            core_ref.node.count_hit(used);
            self.metrics.hits.inc();
            self.metrics.observe_op("get", seconds);
        });
        core
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The line state changes recorded so far (`None` unless started with
    /// `record_transitions`).
    pub fn transitions(&self) -> Option<CacheTransitions> {
        let core = self.core_mut();
        core.journal.as_ref().map(|journal| CacheTransitions {
            transitions: journal.entries.clone(),
            dropped: journal.dropped,
        })
    }

    /// The shell's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The membership every lookup uses.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The backing store.
    pub fn backing(&self) -> &BackingStore {
        &self.backing
    }

    /// Peer transport counters.
    pub fn transport_stats(&self) -> &TransportStats {
        &self.transport_stats
    }

    /// Dials every other member, serves inbound peer connections on `peer_listener` and runs
    /// the tick task. Returns the two tasks (abort them to stop).
    pub fn start(self: &Arc<Self>, peer_listener: TcpListener) -> Vec<tokio::task::JoinHandle<()>> {
        self.connect_peers();
        let (inbound_tx, inbound_rx) = mpsc::channel(PEER_QUEUE_CAPACITY);
        let stats = Arc::clone(&self.transport_stats);
        let listener = tokio::spawn(serve_inbound(peer_listener, inbound_tx, stats));
        let engine = Arc::clone(self);
        let inbound = tokio::spawn(async move { engine.run_inbound(inbound_rx).await });
        let engine = Arc::clone(self);
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(engine.config.tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                engine.tick();
                engine.run_failure_detector(Instant::now());
            }
        });
        vec![listener, inbound, ticker]
    }

    /// Dials every known node, in the view or not: an excluded node must still hear the views
    /// (to learn it is excluded, or re-admitted) and be heard (to be re-admitted).
    fn connect_peers(&self) {
        let mut transport = lock(&self.transport);
        for member in self.membership.roster() {
            if member.id != self.id {
                transport.add_peer_if_changed(member.id.0, member.peer);
            }
        }
    }

    /// Takes in the nodes a `View` names that this node has not heard of (a node that joined).
    fn learn_nodes(&self, addresses: &[AnnouncedMember]) {
        let mut learned = false;
        for announced in addresses {
            if let Some(member) = self.membership.learn(announced) {
                tracing::info!(node = %self.config.name, joined = %member.name, peer = %member.peer, "learned of a node");
                lock(&self.detector).learn(&member.name, Instant::now());
                learned = true;
            }
        }
        if learned {
            self.connect_peers();
        }
    }

    /// Forgets nodes learned at run time that have been out of the view and silent for
    /// [`FORGET_AFTER_TIMEOUTS`] failure timeouts (a node scaled away), so they are no longer
    /// dialed and gossiped to. Seeds are never forgotten.
    fn forget_departed(&self, now: Instant) {
        let view = self.membership.current();
        let limit = self.config.failure_timeout * FORGET_AFTER_TIMEOUTS;
        let departed: Vec<String> = {
            let detector = lock(&self.detector);
            self.membership
                .roster()
                .into_iter()
                .filter(|member| member.id != self.id && view.member(member.id).is_none())
                .filter(|member| {
                    // A node learned but never heard yet is young, not departed.
                    detector
                        .last_sign_of_life(&member.name)
                        .is_none_or(|at| now.saturating_duration_since(at) > limit)
                })
                .map(|member| member.name)
                .collect()
        };
        for name in departed {
            if let Some(member) = self.membership.forget(&name) {
                tracing::info!(node = %self.config.name, forgotten = %name, "forgot a departed node");
                lock(&self.detector).forget(&name);
                lock(&self.transport).remove_peer(member.id.0);
            }
        }
    }

    /// Whether this node is in the current view and serves.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    /// Adopts `view` if its epoch is newer than the current one: publishes it to the home
    /// lookups and hands it to the core (node and directory) under one lock hold, so no
    /// message is produced or delivered between the two.
    fn adopt_view(self: &Arc<Self>, view: MembershipView) {
        let epoch = view.epoch();
        self.with_core(|core, _| {
            let current = self.membership.current();
            if epoch <= current.epoch() {
                return ((), Vec::new());
            }
            let in_view = view.includes(&self.config.name, self.incarnation);
            let ids = view.ids();
            tracing::info!(
                node = %self.config.name,
                epoch,
                members = ?view.names(),
                in_view,
                "adopting cache view"
            );
            self.membership.replace(view);
            lock(&self.detector).saw_epoch(epoch);
            // A view that lists this node's previous life (a restart) holds nothing of this
            // process; the core may take it as is, since nothing is sent or delivered until a
            // view includes this incarnation.
            let mut out = core.node.set_members(epoch, ids.clone());
            out.extend(core.directory.set_members(epoch, ids));
            self.serving.store(in_view, Ordering::Relaxed);
            // Every lease was cleared: no quorum until the new view's members answer.
            self.publish_quorum(core);
            self.metrics
                .set_view(epoch, self.membership.current().members().count());
            if in_view {
                self.ready.store(true, Ordering::Relaxed);
            }
            ((), out)
        });
    }

    /// Suspects silent nodes, issues a view when this node coordinates and the view is not
    /// what it sees, and gossips the current view every gossip interval.
    fn run_failure_detector(self: &Arc<Self>, now: Instant) {
        let current = self.membership.current();
        // Only a coordinator whose lease a majority of the view confirmed lately may issue the
        // next view. The detector's own count of live nodes lags by up to the failure timeout
        // (longer than a lease): a minority coordinator that suspects the far side one node at
        // a time would otherwise still count the others, issue a view it thinks a majority
        // holds, and then shrink that view step by step to its own side. Cut off, it loses its
        // quorum within a lease, long before it suspects anyone. (The boot view has no leases:
        // there the detector's majority of the seeds decides.)
        let may_issue = current.epoch() == 0 || self.quorate(&self.core_mut());
        let proposal = if may_issue {
            lock(&self.detector).proposal(&current, now)
        } else {
            None
        };
        let mut gossip_now = false;
        if let Some((epoch, members)) = proposal {
            match self.membership.view(epoch, &members) {
                Ok(view) => {
                    self.adopt_view(view);
                    gossip_now = true;
                }
                Err(error) => tracing::error!(%error, "cannot build the proposed view"),
            }
        }
        let mut last = lock(&self.last_gossip);
        let due = last
            .is_none_or(|at| now.saturating_duration_since(at) >= self.config.gossip_interval());
        if gossip_now || due {
            *last = Some(now);
            drop(last);
            // Once per gossip round, not every tick: departures are judged in failure timeouts.
            self.forget_departed(now);
            self.gossip(None);
        }
    }

    /// Sends the current view to `to`, or to every other known node.
    fn gossip(&self, to: Option<NodeId>) {
        let view = self.membership.current();
        let roster = self.membership.roster();
        let addresses = roster
            .iter()
            .filter(|member| member.id == self.id || view.member(member.id).is_some())
            .map(AnnouncedMember::from)
            .collect();
        let message = PeerMessage::View {
            epoch: view.epoch(),
            members: view.view_members(),
            incarnation: self.incarnation,
            addresses,
        };
        let transport = lock(&self.transport);
        match to {
            Some(to) => transport.send(to.0, message),
            None => {
                for member in roster.iter().filter(|member| member.id != self.id) {
                    transport.send(member.id.0, message.clone());
                }
            }
        }
    }

    /// Tells every other known node that this node leaves, so the next view drops it at once
    /// rather than after the failure timeout, and waits at most `limit` for the words to go
    /// out. Call it last: the node sends nothing afterwards.
    pub async fn leave(&self, limit: Duration) {
        let tasks = {
            let mut transport = lock(&self.transport);
            for member in self.membership.roster() {
                if member.id != self.id {
                    transport.send(
                        member.id.0,
                        PeerMessage::Leaving {
                            incarnation: self.incarnation,
                        },
                    );
                }
            }
            transport.close()
        };
        let deadline = tokio::time::Instant::now() + limit;
        for task in tasks {
            // A peer that is down holds its task in the dial loop: give up on it at the deadline.
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
            }
        }
    }

    fn on_view(
        self: &Arc<Self>,
        from: &str,
        from_id: NodeId,
        epoch: u64,
        members: Vec<ViewMember>,
    ) {
        let current = self.membership.current().epoch();
        if epoch > current {
            match self.membership.view(epoch, &members) {
                Ok(view) => {
                    self.adopt_view(view);
                    // Say so at once: the coordinator admits a node left out of a view only
                    // once it adopted that view.
                    self.gossip(None);
                }
                Err(error) => tracing::warn!(%from, %error, "view from a peer refused"),
            }
        } else if epoch < current {
            // Catch a lagging (or restarted) node up at once rather than at the next gossip.
            self.gossip(Some(from_id));
        }
    }

    /// Runs `call` on the core under the lock, then delivers self-addressed messages and
    /// completions under the same lock, and carries out every other effect after releasing it.
    fn with_core<R>(
        self: &Arc<Self>,
        call: impl FnOnce(&mut Core, &CacheMetrics) -> (R, Vec<Outbound>),
    ) -> R {
        let (result, remote, epoch) = {
            let mut core = self.core_mut();
            let (result, out) = call(&mut core, &self.metrics);
            // Node and directory adopt views together, under this lock.
            let epoch = core.node.epoch();
            let mut queue: VecDeque<Outbound> = out.into();
            let mut remote = Vec::new();
            while let Some(effect) = queue.pop_front() {
                match effect {
                    Outbound::Send { to, message } if to == self.id => {
                        queue.extend(core.deliver(self.id, epoch, message, &self.metrics));
                    }
                    Outbound::Complete(completion) => {
                        if let Some(waiter) = core.waiters.remove(&completion.op) {
                            let _ = waiter.send((completion.result, epoch));
                        }
                    }
                    other => remote.push(other),
                }
            }
            (result, remote, epoch)
        };
        self.carry_out(remote, epoch);
        result
    }

    fn carry_out(self: &Arc<Self>, effects: Vec<Outbound>, epoch: u64) {
        if effects.is_empty() {
            return;
        }
        // A node outside the view says nothing: the others may still count its previous life
        // as a member, and must not take this process's (empty) word for it.
        let serving = self.is_serving();
        let transport = lock(&self.transport);
        for effect in effects {
            match effect {
                Outbound::Send { to, message } => {
                    if serving {
                        transport.send(to.0, PeerMessage::Coherence { epoch, message });
                    }
                }
                Outbound::Backing(request) => {
                    if !lock(&self.backing_in_flight).insert(request.id) {
                        continue;
                    }
                    let in_flight = BackingInFlight {
                        engine: Arc::clone(self),
                        id: request.id,
                    };
                    tokio::spawn(async move {
                        let engine = &in_flight.engine;
                        let key = request.key.clone();
                        match engine.backing.execute(request).await {
                            Ok(response) => engine.with_core(|core, metrics| {
                                let out = core.directory.on_backing(response);
                                Core::count_directory_out(&out, metrics);
                                ((), out)
                            }),
                            // The directory retransmits the request on a later tick.
                            Err(error) => tracing::warn!(
                                key = %String::from_utf8_lossy(&key),
                                %error,
                                "backing store request failed; will retry"
                            ),
                        }
                        // `in_flight` is dropped here, after the answer is delivered: a copy
                        // sent in between would only do again what no one waits for.
                    });
                }
                Outbound::Complete(_) => unreachable!("completions are delivered under the lock"),
            }
        }
    }

    fn tick(self: &Arc<Self>) {
        self.with_core(|core, metrics| ((), self.catch_up(core, metrics)));
    }

    /// Ticks due by `now` on the protocol's clock.
    fn ticks_due(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.clock_start).as_nanos();
        (elapsed / self.config.tick.as_nanos().max(1)) as u64
    }

    /// Gives the cores every tick due by now. The protocol's clock is the monotonic clock, not
    /// the count of timer firings: a process paused (SIGSTOP, a stalled VM) misses the firings
    /// but not the time, and a node that counted only firings would go on serving under a lease
    /// its home had already revoked, for as many ticks as the lease had left at the pause.
    /// Past `lease_ticks + lease_revoke_margin_ticks` every lease and revocation has run out,
    /// so a longer gap is given only that many ticks of work.
    fn catch_up(&self, core: &mut Core, metrics: &CacheMetrics) -> Vec<Outbound> {
        let due = self.ticks_due(Instant::now());
        let missing = due.saturating_sub(core.ticks_done);
        let lease = &self.config.core;
        let mut out = Vec::new();
        for _ in 0..missing.min(lease.lease_ticks + lease.lease_revoke_margin_ticks + 1) {
            out.extend(core.node.tick());
            let directory_out = core.directory.tick();
            Core::count_directory_out(&directory_out, metrics);
            out.extend(directory_out);
        }
        core.ticks_done = core.ticks_done.max(due);
        if missing > 0 {
            self.publish_quorum(core);
        }
        out
    }

    /// Whether this node may serve now: it is in its view and a majority of the view confirmed
    /// its lease (see [`CacheNode::has_quorum`]). Asked under the core lock, so that a lease
    /// that lapses at a tick stops every later hit.
    fn quorate(&self, core: &Core) -> bool {
        self.config.ignore_quorum || core.node.has_quorum()
    }

    /// Whether this node had a quorum at its last tick.
    pub fn has_quorum(&self) -> bool {
        *self.quorum.borrow()
    }

    fn no_quorum(&self, took_effect: bool) -> EngineError {
        let view = self.membership.current();
        EngineError::NoQuorum {
            node: self.config.name.clone(),
            epoch: view.epoch(),
            members: view.members().count(),
            outcome: if took_effect {
                "the operation took effect on this node, but may be missing from a view that went on without it"
            } else {
                "the operation did not take effect; the node serves again once they answer"
            },
        }
    }

    /// Publishes the core's quorum to the requests that wait for it (under the core lock).
    fn publish_quorum(&self, core: &Core) {
        let quorum = self.quorate(core);
        self.quorum.send_if_modified(|current| {
            let changed = *current != quorum;
            *current = quorum;
            changed
        });
    }

    /// Waits until `ready` holds under the core lock, checking whenever the published quorum
    /// turns true (a view change or a lost heartbeat leaves a node without one for a moment),
    /// and at least every tick; `Ok(false)` once `give_up` holds, `Err` at `deadline`.
    async fn await_core(
        &self,
        deadline: tokio::time::Instant,
        mut ready: impl FnMut(&Core) -> bool,
        mut give_up: impl FnMut(&Core) -> bool,
    ) -> Result<bool, ()> {
        let mut quorum = self.quorum.subscribe();
        loop {
            {
                let core = self.core_mut();
                if ready(&core) {
                    return Ok(true);
                }
                if give_up(&core) {
                    return Ok(false);
                }
            }
            let wait = async {
                let _ = quorum.wait_for(|q| *q).await;
                tokio::time::sleep(self.config.tick).await;
            };
            if tokio::time::timeout_at(deadline, wait).await.is_err() {
                return Err(());
            }
        }
    }

    async fn run_inbound(self: Arc<Self>, mut inbound: mpsc::Receiver<Inbound<PeerMessage>>) {
        while let Some(Inbound { from, message }) = inbound.recv().await {
            let from = NodeId(from);
            // A node joining announces itself in its `View`; anything else from a stranger is
            // dropped (its requests would make the directory wait on a node it cannot reach).
            if let PeerMessage::View { addresses, .. } = &message {
                self.learn_nodes(addresses);
            }
            let Some(sender) = self.membership.roster_member(from).map(|m| m.name) else {
                tracing::debug!(%from, "message from an unknown node dropped");
                continue;
            };
            let incarnation = match &message {
                PeerMessage::View { incarnation, .. } => Some(*incarnation),
                _ => None,
            };
            {
                let mut detector = lock(&self.detector);
                detector.heard(&sender, incarnation, Instant::now());
                if let PeerMessage::View {
                    epoch, incarnation, ..
                } = &message
                {
                    detector.reported_view(&sender, *incarnation, *epoch);
                }
            }
            match message {
                PeerMessage::Coherence { epoch, message } => {
                    if !self.is_serving() {
                        continue;
                    }
                    self.with_core(|core, metrics| {
                        ((), core.deliver(from, epoch, message, metrics))
                    });
                }
                PeerMessage::View { epoch, members, .. } => {
                    self.on_view(&sender, from, epoch, members);
                }
                PeerMessage::Leaving { incarnation } => {
                    tracing::info!(node = %self.config.name, leaving = %sender, "a node leaves");
                    lock(&self.detector).left(&sender, incarnation);
                }
                PeerMessage::LineStateQuery { query, key } => {
                    let state = self.core_mut().node.state_of(&key);
                    lock(&self.transport)
                        .send(from.0, PeerMessage::LineStateAnswer { query, state });
                }
                PeerMessage::LineStateAnswer { query, state } => {
                    if let Some(waiter) = lock(&self.queries).remove(&query) {
                        let _ = waiter.send(state);
                    }
                }
            }
        }
    }

    /// Ready once this node served in a view of the whole cluster (it stays ready when one
    /// node dies later: the survivors take over its keys).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.is_serving() && self.has_quorum()
    }

    /// Waits until the node [`is_ready`](CacheEngine::is_ready) (for an embedding program
    /// that serves only once it can); false if it is not by `limit`.
    pub async fn until_ready(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        self.await_core(deadline, |_| self.is_ready(), |_| false)
            .await
            .is_ok()
    }

    /// Runs one read, write or delete; answers within `op_timeout` (waiting for a quorum,
    /// then for its transaction).
    ///
    /// # Errors
    /// [`EngineError`].
    pub async fn execute(self: &Arc<Self>, op: CacheOp) -> Result<OpResult, EngineError> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(EngineError::ShuttingDown);
        }
        if !self.is_serving() {
            self.metrics.errors.inc();
            return Err(EngineError::NotInView {
                node: self.config.name.clone(),
                epoch: self.membership.current().epoch(),
            });
        }
        if let CacheOp::Get(key) = &op
            && let Some(hit) = self.read_hit(key)
        {
            return Ok(hit);
        }
        let started_at = Instant::now();
        let label = op.label();
        let result = self
            .run_op(op, tokio::time::Instant::now() + self.config.op_timeout)
            .await;
        match &result {
            Ok(_) => self
                .metrics
                .observe_op(label, started_at.elapsed().as_secs_f64()),
            Err(_) => {
                self.metrics.errors.inc();
            }
        }
        result
    }

    /// Runs `op` once this node has a quorum, and answers it only under a quorum in the view
    /// it completed in: a write acknowledged without one may be missing from a view that went
    /// on without this node. Everything within `deadline`.
    async fn run_op(
        self: &Arc<Self>,
        op: CacheOp,
        deadline: tokio::time::Instant,
    ) -> Result<OpResult, EngineError> {
        let key = op.key().clone();
        let started = loop {
            let quorate = self.await_core(deadline, |core| self.quorate(core), |_| false);
            if quorate.await.is_err() {
                return Err(self.no_quorum(false));
            }
            // None: the quorum lapsed in between; wait for it again.
            if let Some(started) = self.start_op(op.clone())? {
                break started;
            }
        };
        let (op_id, receiver) = match started {
            // Checked under the same lock hold as the operation ran.
            Started::Done(result) => return Ok(result),
            Started::Pending(op_id, receiver) => (op_id, receiver),
        };
        let (result, epoch) = self.await_op(&key, op_id, receiver, deadline).await?;
        let confirmed = self.await_core(
            deadline,
            |core| core.node.epoch() == epoch && self.quorate(core),
            |core| core.node.epoch() != epoch,
        );
        match confirmed.await {
            Ok(true) => Ok(result),
            Ok(false) | Err(()) => Err(self.no_quorum(true)),
        }
    }

    /// The hot path of a read: serves `key` if this node holds it under a valid lease with no
    /// transaction in flight, holding the core lock for one lookup; `None` when the read needs
    /// [`CacheEngine::execute`] (a miss, a lapsed lease, a node not serving). Borrowing the key
    /// lets a caller try a hit before it copies the key for a transaction.
    pub fn read_hit(&self, key: &Key) -> Option<OpResult> {
        self.read_hit_with(key, |data| OpResult::Read(data.clone()))
    }

    /// [`CacheEngine::read_hit`] that hands the line's data to `serve` under the core lock, so
    /// that a reply can be built from it without taking a reference on the value (one more
    /// cache line touched per hit, and two atomic operations). `serve` runs under the read lock,
    /// with every write to the node waiting: it should copy, not compute.
    pub fn read_hit_with<R>(&self, key: &[u8], serve: impl FnOnce(&LineData) -> R) -> Option<R> {
        if self.shutting_down.load(Ordering::Relaxed) || !self.is_serving() {
            return None;
        }
        let started_at = Instant::now();
        let (served, stripe_full) = {
            let core = self
                .core
                .read()
                .unwrap_or_else(|poison| poison.into_inner());
            // Behind the clock (just resumed from a pause), the leases may have run out
            // unseen: the slow path catches up first.
            if self.ticks_due(started_at) > core.ticks_done + 1 || !self.quorate(&core) {
                return None;
            }
            let (served, used) = core.node.peek_hit_with(key, serve)?;
            let stripe_full = self
                .pending_hits
                .note(used, started_at.elapsed().as_secs_f64());
            (served, stripe_full)
        };
        if stripe_full {
            drop(self.core_mut());
        }
        Some(served)
    }

    /// The synchronous part of an operation: a hit finishes here, on the caller's task.
    /// `None` when the node has no quorum (nothing happened).
    fn start_op(self: &Arc<Self>, op: CacheOp) -> Result<Option<Started>, EngineError> {
        let is_read = matches!(op, CacheOp::Get(_));
        let started = self.with_core(|core, metrics| {
            let caught_up = self.catch_up(core, metrics);
            if !self.quorate(core) {
                self.publish_quorum(core);
                return (Ok(None), caught_up);
            }
            let key = op.key().clone();
            let (step, out) = core.node_call(Some(&key), metrics, |node| {
                let step = match op {
                    CacheOp::Get(key) => node.read(key),
                    CacheOp::Put(key, value) => node.write(key, value),
                    CacheOp::Delete(key) => node.delete(key),
                };
                match step {
                    Err(error) => (Err(error), Vec::new()),
                    Ok(OpStep::Done { result, outbound }) => (Ok(Ok(result)), outbound),
                    Ok(OpStep::Pending { op, outbound }) => (Ok(Err(op)), outbound),
                }
            });
            let started = step.map_err(EngineError::Refused).map(|step| match step {
                Ok(result) => Some(Started::Done(result)),
                Err(op) => {
                    // Registered before the effects run: a self-delivered grant may finish it.
                    let (sender, receiver) = oneshot::channel();
                    core.waiters.insert(op, sender);
                    Some(Started::Pending(op, receiver))
                }
            });
            let mut effects = caught_up;
            effects.extend(out);
            (started, effects)
        });
        if is_read {
            match &started {
                Ok(Some(Started::Done(_))) => {
                    self.metrics.hits.inc();
                }
                Ok(Some(Started::Pending(..))) => {
                    self.metrics.misses.inc();
                }
                _ => {}
            }
        }
        started
    }

    /// Waits for a pending operation's result and the view epoch it completed in; withdraws
    /// it at `deadline`.
    async fn await_op(
        &self,
        key: &Key,
        op: OpId,
        receiver: oneshot::Receiver<(OpResult, u64)>,
        deadline: tokio::time::Instant,
    ) -> Result<(OpResult, u64), EngineError> {
        match tokio::time::timeout_at(deadline, receiver).await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(_)) => Err(EngineError::ShuttingDown),
            Err(_) => {
                let withdrawn = {
                    let mut core = self.core_mut();
                    core.waiters.remove(&op);
                    core.node.withdraw(op)
                };
                let view = self.membership.current();
                Err(EngineError::Unavailable {
                    key: String::from_utf8_lossy(key).into_owned(),
                    home: view.name_of(view.home_of(key)),
                    waited_ms: self.config.op_timeout.as_millis(),
                    outcome: if withdrawn {
                        "it did not take effect and never will"
                    } else {
                        "it took effect on this node; its write to the backing store is still in flight"
                    },
                })
            }
        }
    }

    /// The state of this node's copy of `key`.
    pub fn local_state(&self, key: &Key) -> LineState {
        self.core_mut().node.state_of(key)
    }

    /// Every member's state of `key` (`None` for a member that did not answer in time), by
    /// member name, and the key's home.
    pub async fn coherence(&self, key: &Key) -> (String, Vec<(String, Option<LineState>)>) {
        let view = self.membership.current();
        let deadline = tokio::time::Instant::now() + self.config.query_timeout;
        let mut pending = Vec::new();
        for member in view.members() {
            if member.id == self.id {
                pending.push((member.name.clone(), Err(self.local_state(key))));
                continue;
            }
            let query = self.next_query.fetch_add(1, Ordering::Relaxed);
            let (sender, receiver) = oneshot::channel();
            lock(&self.queries).insert(query, sender);
            lock(&self.transport).send(
                member.id.0,
                PeerMessage::LineStateQuery {
                    query,
                    key: key.clone(),
                },
            );
            pending.push((member.name.clone(), Ok((query, receiver))));
        }
        let mut states = Vec::new();
        for (name, waiting) in pending {
            let state = match waiting {
                Err(local) => Some(local),
                Ok((query, receiver)) => {
                    let answer = tokio::time::timeout_at(deadline, receiver).await;
                    lock(&self.queries).remove(&query);
                    answer.ok().and_then(Result::ok)
                }
            };
            states.push((name, state));
        }
        (view.name_of(view.home_of(key)), states)
    }

    /// Store occupancy and pending work: `(lines, bytes, directory entries, transactions)`.
    pub fn occupancy(&self) -> (usize, usize, usize, usize) {
        let core = self.core_mut();
        (
            core.node.store().len(),
            core.node.store().bytes(),
            core.directory.entries().count(),
            core.node.load().transactions,
        )
    }

    /// Shutdown: refuses new operations and writes back every Modified line, waiting at most
    /// `limit`. Returns whether every write-back was acknowledged.
    pub async fn flush(self: &Arc<Self>, limit: Duration) -> bool {
        self.shutting_down.store(true, Ordering::Relaxed);
        let receiver = self.with_core(|core, _| match core.node.flush() {
            OpStep::Done { outbound, .. } => (None, outbound),
            OpStep::Pending { op, outbound } => {
                let (sender, receiver) = oneshot::channel();
                core.waiters.insert(op, sender);
                (Some(receiver), outbound)
            }
        });
        match receiver {
            None => true,
            Some(receiver) => matches!(
                tokio::time::timeout(limit, receiver).await,
                Ok(Ok((OpResult::Flushed, _)))
            ),
        }
    }
}
