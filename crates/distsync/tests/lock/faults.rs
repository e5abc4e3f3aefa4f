//! Leader crash, leader pause, partitions and full restarts under a contended workload
//! (TESTING.md L-01, L-02, L-04, L-06, L-09).

use crate::cluster::{
    FencedResource, Hold, LockCluster, assert_exclusive_history, exclusive_turns,
};
use distsync_api::{ErrorCode, LockMode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs `clients` workers that take turns on one exclusive lock until `stop` is set, writing
/// to the fenced resource while holding. Returns the holds they saw.
async fn contended_workload(
    cluster: &LockCluster,
    clients: usize,
    run_for: Duration,
    resource: Arc<FencedResource>,
) -> Vec<Hold> {
    let holds = Arc::new(Mutex::new(Vec::new()));
    let stop_at = Instant::now() + run_for;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = cluster.client();
        let holds = Arc::clone(&holds);
        let resource = Arc::clone(&resource);
        tasks.push(tokio::spawn(async move {
            exclusive_turns(&client, "hot", &resource, &holds, || {
                Instant::now() < stop_at
            })
            .await;
        }));
    }
    for task in tasks {
        task.await.expect("worker finished without panicking");
    }
    Arc::try_unwrap(holds).unwrap().into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_sigkill_during_contention_never_double_grants_and_grants_again_within_bound() {
    // Proves L-01/L-06 on 3 nodes: SIGKILL of the leader in the middle of a contended workload
    // yields no overlapping exclusive holds, strictly increasing fencing tokens accepted by the
    // fenced resource, and a new grant within 5 s of the kill.
    let mut cluster = LockCluster::start(3).await;
    let resource = Arc::new(FencedResource::default());
    let leader = cluster.leader(Duration::from_secs(5)).await;
    let (mut holds, killed_at) = {
        let workload = contended_workload(&cluster, 6, Duration::from_secs(7), resource);
        tokio::pin!(workload);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = &mut workload => panic!("workload ended before the kill"),
        }
        cluster.signal(leader, "KILL");
        let killed_at = Instant::now();
        (workload.await, killed_at)
    };
    cluster.kill(leader);
    assert!(holds.len() > 10, "too little progress: {}", holds.len());
    let first_after_kill = holds
        .iter()
        .filter(|hold| hold.granted > killed_at)
        .map(|hold| hold.granted)
        .min()
        .expect("no grant after the leader was killed");
    let failover = first_after_kill - killed_at;
    assert!(
        failover < Duration::from_secs(5),
        "next grant took {failover:?}"
    );
    eprintln!("failover: next grant {failover:?} after SIGKILL of leader {leader}");
    assert_exclusive_history(&mut holds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_leader_steps_down_and_nothing_is_granted_twice() {
    // Proves L-04: a leader SIGSTOPped past the election timeout is replaced; after SIGCONT it
    // follows the new leader, and the old holder's lock is never granted to two sessions.
    let cluster = LockCluster::start(3).await;
    let old_leader = cluster.leader(Duration::from_secs(5)).await;
    let client = cluster.client();
    let holder = client
        .create_session(Duration::from_secs(10))
        .await
        .expect("session");
    let first = client
        .acquire(holder.id(), "paused", LockMode::Exclusive, Duration::ZERO)
        .await
        .expect("first grant");
    cluster.pause(old_leader);
    let survivors: Vec<u64> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|&id| id != old_leader)
        .collect();
    let other = cluster.client_of(survivors[0]);
    let mut config = distsync_client::ClientConfig::new(
        survivors
            .iter()
            .map(|id| cluster.nodes[id].http.clone())
            .collect::<Vec<_>>(),
    );
    config.retry_deadline = Duration::from_secs(10);
    let survivors_client = distsync_client::Client::new(config).unwrap();
    let contender = survivors_client
        .create_session(Duration::from_secs(10))
        .await
        .expect("session on the new leader");
    let refused = survivors_client
        .acquire(
            contender.id(),
            "paused",
            LockMode::Exclusive,
            Duration::ZERO,
        )
        .await
        .expect_err("the lock is still held by the first session");
    assert_eq!(refused.code(), Some(ErrorCode::Timeout));
    cluster.resume(old_leader);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = cluster.status(old_leader).await;
        if status
            .as_ref()
            .is_some_and(|status| status.role != "leader")
        {
            break;
        }
        assert!(Instant::now() < deadline, "old leader did not step down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let state = survivors_client.lock_state("paused").await.expect("state");
    assert_eq!(state.holders.len(), 1);
    assert_eq!(state.holders[0].session_id, holder.id());
    assert_eq!(state.holders[0].fencing_token, first.fencing_token);
    drop(other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minority_side_of_a_partition_answers_no_leader_and_grants_nothing() {
    // Proves L-09: the isolated node refuses with 503 no_leader while the majority keeps
    // granting; after healing every node agrees on the holder.
    let cluster = LockCluster::start(3).await;
    let leader = cluster.leader(Duration::from_secs(5)).await;
    let client = cluster.client();
    let session = client
        .create_session(Duration::from_secs(10))
        .await
        .expect("session");
    cluster.partition(&[leader], true).await;
    let isolated = cluster.client_of(leader);
    let refused = isolated
        .acquire(session.id(), "split", LockMode::Exclusive, Duration::ZERO)
        .await
        .expect_err("the isolated old leader must not grant");
    assert_eq!(
        refused.code(),
        None,
        "expected retries to run out: {refused:?}"
    );
    let majority: Vec<String> = cluster
        .nodes
        .values()
        .filter(|node| node.id != leader)
        .map(|node| node.http.clone())
        .collect();
    let majority_client =
        distsync_client::Client::new(distsync_client::ClientConfig::new(majority.clone())).unwrap();
    let grant = majority_client
        .acquire(
            session.id(),
            "split",
            LockMode::Exclusive,
            Duration::from_secs(5),
        )
        .await
        .expect("the majority keeps granting");
    cluster.partition(&[leader], false).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = isolated.lock_state("split").await;
        if let Ok(state) = state {
            assert_eq!(state.holders.len(), 1);
            assert_eq!(state.holders[0].fencing_token, grant.fencing_token);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "healed node never served the state"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_leader_answers_no_leader_when_it_steps_down_not_at_the_commit_timeout() {
    // A write the old leader accepted just before being cut off cannot commit; once CheckQuorum
    // makes it step down (about one election timeout) it must answer 503 no_leader at once, not
    // hold the client until the commit timeout (3 s by default).
    let cluster = LockCluster::start(3).await;
    let leader = cluster.leader(Duration::from_secs(5)).await;
    let session = cluster
        .client()
        .create_session(Duration::from_secs(10))
        .await
        .expect("session");
    let isolated_http = cluster.nodes[&leader].http.clone();
    cluster.partition(&[leader], true).await;
    let started = Instant::now();
    let answer = reqwest::Client::new()
        .post(format!("http://{isolated_http}/v1/locks/cut-off/acquire"))
        .json(&serde_json::json!({"session_id": session.id(), "mode": "exclusive", "wait_ms": 0}))
        .send()
        .await
        .expect("the cut-off node answers");
    let elapsed = started.elapsed();
    assert_eq!(answer.status().as_u16(), 503);
    let body: serde_json::Value = answer.json().await.expect("JSON error body");
    assert_eq!(body["code"], "no_leader", "{body}");
    assert!(
        elapsed < Duration::from_millis(2_500),
        "answered after {elapsed:?}: the pending proposal outlived the step-down"
    );
    cluster.partition(&[leader], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_cluster_sigkill_and_restart_keeps_sessions_and_locks() {
    // Proves durability: every node killed at once comes back from its WAL and snapshots with
    // the sessions and holds it had acknowledged.
    let mut cluster = LockCluster::start(3).await;
    let client = cluster.client();
    let session = client
        .create_session(Duration::from_secs(30))
        .await
        .expect("session");
    let mut tokens = Vec::new();
    // More entries than the snapshot interval (200), so recovery uses snapshot + log.
    for i in 0..150 {
        let name = format!("durable-{i}");
        let grant = client
            .acquire(session.id(), &name, LockMode::Shared, Duration::ZERO)
            .await
            .expect("grant");
        client
            .release(session.id(), &name, Some(grant.fencing_token))
            .await
            .expect("release");
        tokens.push(grant.fencing_token);
    }
    let kept = client
        .acquire(session.id(), "kept", LockMode::Exclusive, Duration::ZERO)
        .await
        .expect("grant");
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    for &id in &ids {
        cluster.kill(id);
    }
    for &id in &ids {
        cluster.spawn(id);
    }
    cluster.wait_ready(Duration::from_secs(20)).await;
    let state = client
        .lock_state("kept")
        .await
        .expect("state after restart");
    assert_eq!(state.holders.len(), 1);
    assert_eq!(state.holders[0].session_id, session.id());
    assert_eq!(state.holders[0].fencing_token, kept.fencing_token);
    client
        .keep_alive(session.id())
        .await
        .expect("the session survived the restart");
    let next = client
        .acquire(
            session.id(),
            "after-restart",
            LockMode::Exclusive,
            Duration::ZERO,
        )
        .await
        .expect("grant after restart");
    assert!(
        next.fencing_token > kept.fencing_token,
        "tokens went backwards after restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_added_at_run_time_catches_up_by_snapshot_and_votes() {
    // Proves POST /v1/cluster/members: a fresh node joins as a learner, catches up (past a
    // compacted log, so by InstallSnapshot), becomes a voter, and serves the same state.
    let mut cluster = LockCluster::start_with_spares(3, 1).await;
    let client = cluster.client();
    let session = client
        .create_session(Duration::from_secs(30))
        .await
        .unwrap();
    for i in 0..120 {
        let name = format!("pre-join-{i}");
        let grant = client
            .acquire(session.id(), &name, LockMode::Exclusive, Duration::ZERO)
            .await
            .unwrap();
        client
            .release(session.id(), &name, Some(grant.fencing_token))
            .await
            .unwrap();
    }
    let held = client
        .acquire(session.id(), "kept", LockMode::Exclusive, Duration::ZERO)
        .await
        .unwrap();
    cluster.spawn(4);
    let joiner = cluster.nodes[&4].clone_addresses();
    let leader = cluster.leader(Duration::from_secs(5)).await;
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/cluster/members",
            cluster.nodes[&leader].http
        ))
        .json(&serde_json::json!({"id": 4, "http_addr": joiner.0, "raft_addr": joiner.1}))
        .timeout(Duration::from_secs(40))
        .send()
        .await
        .expect("leader answers");
    expect_200(response).await;
    let status: distsync_api::ClusterStatus = cluster.status(leader).await.unwrap();
    assert!(
        status
            .members
            .iter()
            .any(|member| member.id == 4 && member.voter),
        "node 4 is not a voter: {status:?}"
    );
    let joined = cluster.client_of(4);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(state) = joined.lock_state("kept").await {
            assert_eq!(state.holders[0].fencing_token, held.fencing_token);
            break;
        }
        assert!(Instant::now() < deadline, "node 4 never served the state");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let node4 = cluster.status(4).await.unwrap();
    assert!(node4.applied_index >= status.commit_index.min(node4.commit_index));

    // And out again: DELETE /v1/cluster/members/4 shrinks the configuration back to three
    // voters, after which the cluster grants with node 4 gone.
    let leader = cluster.leader(Duration::from_secs(5)).await;
    let response = reqwest::Client::new()
        .delete(format!(
            "http://{}/v1/cluster/members/4",
            cluster.nodes[&leader].http
        ))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("leader answers");
    expect_200(response).await;
    let status: distsync_api::ClusterStatus = cluster.status(leader).await.unwrap();
    assert!(
        status.members.iter().all(|member| member.id != 4),
        "node 4 is still a member: {status:?}"
    );
    cluster.kill(4);
    client
        .acquire(
            session.id(),
            "after-removal",
            LockMode::Exclusive,
            Duration::ZERO,
        )
        .await
        .expect("three voters grant without node 4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_with_a_wrong_cluster_keeps_the_recorded_voters_and_another_nodes_dir_is_refused()
{
    // Proves the data directory, not the command line, decides a node's configuration: node 1
    // restarted with a --cluster naming only itself still counts three voters (it cannot elect
    // itself alone beside the real cluster: no split brain), and a process started as node 2
    // on node 1's directory exits with an error naming the owner instead of reusing its votes.
    let mut cluster = LockCluster::start(3).await;
    let own = cluster.nodes[&1].clone_addresses();
    cluster.kill(1);
    cluster.spawn_with_cluster(1, &format!("1={}/{}", own.0, own.1));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = cluster.status(1).await {
            break status;
        }
        assert!(Instant::now() < deadline, "node 1 did not come back");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let voters: Vec<u64> = status
        .members
        .iter()
        .filter(|member| member.voter)
        .map(|member| member.id)
        .collect();
    assert_eq!(voters, vec![1, 2, 3], "{status:?}");
    cluster.kill(1);

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_distsync"))
        .args(["serve", "lock", "--id", "2", "--cluster"])
        .arg(format!("2={}/{}", own.0, own.1))
        .arg("--data-dir")
        .arg(cluster.data_dir(1))
        .output()
        .expect("run distsync");
    assert!(
        !output.status.success(),
        "node 2 started on node 1's data dir"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("belongs to node 1"),
        "the error does not name the owner: {stderr}"
    );
}

/// Asserts a 200 answer, showing the body of any other.
async fn expect_200(response: reqwest::Response) {
    let status = response.status().as_u16();
    assert_eq!(status, 200, "{}", response.text().await.unwrap_or_default());
}
