//! TESTING.md L-02 (lock-set with fencing) and its negative control L-03 (the same resource
//! ignoring tokens). A holder that goes silent past its session's TTL — to the lock service a
//! paused process and a client cut off by the network look the same: its keep-alives stop
//! arriving — loses its lock to a waiter, then "resumes" and writes what it read before the
//! pause. Locks alone cannot stop that write; the fencing token can.

use crate::cluster::LockCluster;
use crate::link::{Link, LinkState};
use distsync_api::LockMode;
use distsync_client::{Client, ClientConfig};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LOCK: &str = "the-set";
const PAUSED_TTL: Duration = Duration::from_millis(1_000);
const ROUNDS: u64 = 3;

/// The protected resource: a set that clients replace whole (read, add, write back), as in
/// Jepsen's lock-set workload.
struct SetServer {
    fenced: bool,
    state: Mutex<SetState>,
}

#[derive(Default)]
struct SetState {
    members: BTreeSet<u64>,
    highest_token: u64,
    acknowledged_adds: BTreeSet<u64>,
    rejected_writes: u64,
}

impl SetServer {
    fn new(fenced: bool) -> Self {
        SetServer {
            fenced,
            state: Mutex::default(),
        }
    }

    fn read(&self) -> BTreeSet<u64> {
        self.state.lock().unwrap().members.clone()
    }

    /// Replaces the set with `members` (which adds `added`) under `token`; a fenced server
    /// refuses a token below the highest it has accepted.
    fn write(&self, members: BTreeSet<u64>, added: u64, token: u64) -> bool {
        let mut state = self.state.lock().unwrap();
        if self.fenced && token < state.highest_token {
            state.rejected_writes += 1;
            return false;
        }
        state.highest_token = state.highest_token.max(token);
        state.members = members;
        state.acknowledged_adds.insert(added);
        true
    }

    fn highest_token(&self) -> u64 {
        self.state.lock().unwrap().highest_token
    }
}

/// What a run of the workload left behind.
struct Outcome {
    lost_adds: Vec<u64>,
    rejected_writes: u64,
    acknowledged: usize,
}

/// Two well-behaved clients add values in a loop while, `ROUNDS` times, a third client takes
/// the lock, reads the set, goes silent until a waiter has been granted the lock and written,
/// then writes its stale read plus its own value with its old token.
async fn lock_set_with_a_paused_holder(fenced: bool) -> Outcome {
    let cluster = LockCluster::start(3).await;
    let server = Arc::new(SetServer::new(fenced));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..2u64 {
        let (client, server, stop) = (cluster.client(), Arc::clone(&server), Arc::clone(&stop));
        workers.push(tokio::spawn(async move {
            let session = client.create_session(Duration::from_secs(5)).await.unwrap();
            let mut next = 0;
            while !stop.load(Ordering::Relaxed) {
                // A wait longer than the paused holder's TTL: the waiter gets the lock when the
                // holder's session expires.
                let Ok(grant) = client
                    .acquire(
                        session.id(),
                        LOCK,
                        LockMode::Exclusive,
                        Duration::from_secs(5),
                    )
                    .await
                else {
                    continue;
                };
                next += 1;
                let value = (worker + 1) * 1_000_000 + next;
                let mut members = server.read();
                members.insert(value);
                server.write(members, value, grant.fencing_token);
                client
                    .release(session.id(), LOCK, Some(grant.fencing_token))
                    .await
                    .unwrap();
            }
        }));
    }

    let node = cluster.endpoints()[0].clone();
    for round in 0..ROUNDS {
        // The paused client reaches the lock service through a link the test can silence.
        let link = Link::start(node.clone()).await;
        let mut config = ClientConfig::new([link.addr.clone()]);
        config.retry_deadline = Duration::from_millis(300);
        let paused = Client::new(config).unwrap();
        let session = paused.create_session(PAUSED_TTL).await.unwrap();
        let grant = paused
            .acquire(
                session.id(),
                LOCK,
                LockMode::Exclusive,
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        let mut stale_read = server.read();

        link.set(LinkState::Blackhole).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.highest_token() <= grant.fencing_token {
            assert!(
                Instant::now() < deadline,
                "no waiter was granted the lock after the silent holder's TTL"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        link.set(LinkState::Open).await;

        let value = 9_000_000 + round;
        stale_read.insert(value);
        server.write(stale_read, value, grant.fencing_token);
        drop(session);
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }

    let state = server.state.lock().unwrap();
    Outcome {
        lost_adds: state
            .acknowledged_adds
            .difference(&state.members)
            .copied()
            .collect(),
        rejected_writes: state.rejected_writes,
        acknowledged: state.acknowledged_adds.len(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fenced_resource_loses_no_add_when_a_silent_holder_resumes() {
    // L-02: every add the resource acknowledged is in the final set, and each silent holder's
    // late write was refused (the pause scenario was exercised every round).
    let outcome = lock_set_with_a_paused_holder(true).await;
    assert!(
        outcome.lost_adds.is_empty(),
        "lost adds: {:?}",
        outcome.lost_adds
    );
    assert_eq!(outcome.rejected_writes, ROUNDS, "stale writes refused");
    assert!(outcome.acknowledged >= ROUNDS as usize);
    eprintln!(
        "fenced: {} adds acknowledged, none lost, {} stale writes refused",
        outcome.acknowledged, outcome.rejected_writes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_fencing_the_same_workload_loses_adds() {
    // L-03, the negative control: the same schedule against a resource that ignores tokens
    // must lose adds — otherwise the fenced test above would prove nothing.
    let outcome = lock_set_with_a_paused_holder(false).await;
    assert!(
        !outcome.lost_adds.is_empty(),
        "no add was lost without fencing: the schedule does not exercise the pause"
    );
    eprintln!(
        "unfenced: {} adds acknowledged, {} lost: {:?}",
        outcome.acknowledged,
        outcome.lost_adds.len(),
        outcome.lost_adds
    );
}
