//! Lock semantics through the HTTP API of a real cluster: modes, FIFO, expiry, idempotency,
//! stale releases (TESTING.md L-14, L-15).

use crate::cluster::LockCluster;
use crate::metrics;
use distsync_api::{ErrorCode, LockMode};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_holders_coexist_and_block_exclusive_until_released() {
    // Proves mode compatibility and that a waiting exclusive is granted on the last release.
    let cluster = LockCluster::start(3).await;
    let client = cluster.client();
    let reader_a = client
        .create_session(Duration::from_secs(10))
        .await
        .unwrap();
    let reader_b = client
        .create_session(Duration::from_secs(10))
        .await
        .unwrap();
    let writer = client
        .create_session(Duration::from_secs(10))
        .await
        .unwrap();
    let a = reader_a
        .lock("doc", LockMode::Shared, Duration::ZERO)
        .await
        .unwrap();
    let b = reader_b
        .lock("doc", LockMode::Shared, Duration::ZERO)
        .await
        .unwrap();
    let busy = client
        .acquire(writer.id(), "doc", LockMode::Exclusive, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(
        busy.code(),
        Some(ErrorCode::Timeout),
        "try-lock must fail: {busy:?}"
    );
    let waiting = {
        let client = client.clone();
        let writer_id = writer.id();
        tokio::spawn(async move {
            client
                .acquire(
                    writer_id,
                    "doc",
                    LockMode::Exclusive,
                    Duration::from_secs(10),
                )
                .await
        })
    };
    // The writer is queued (visible in the linearizable state) before the readers leave.
    for _ in 0..200 {
        if !client.lock_state("doc").await.unwrap().waiters.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let state = client.lock_state("doc").await.unwrap();
    assert_eq!(state.holders.len(), 2);
    assert_eq!(state.waiters.len(), 1);
    let last_shared = a.fencing_token().max(b.fencing_token());
    a.release().await.unwrap();
    b.release().await.unwrap();
    let grant = waiting
        .await
        .unwrap()
        .expect("writer granted after both readers left");
    assert_eq!(grant.mode, LockMode::Exclusive);
    assert!(grant.fencing_token > last_shared);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_are_served_in_arrival_order() {
    // Proves FIFO: three queued sessions are granted in the order they asked.
    let cluster = LockCluster::start(3).await;
    let client = cluster.client();
    let holder = client
        .create_session(Duration::from_secs(10))
        .await
        .unwrap();
    let held = holder
        .lock("fifo", LockMode::Exclusive, Duration::ZERO)
        .await
        .unwrap();
    let mut sessions = Vec::new();
    let mut tasks = Vec::new();
    for position in 0..3 {
        let session = client
            .create_session(Duration::from_secs(10))
            .await
            .unwrap();
        let id = session.id();
        sessions.push(session);
        let waiter = client.clone();
        tasks.push(tokio::spawn(async move {
            let grant = waiter
                .acquire(id, "fifo", LockMode::Exclusive, Duration::from_secs(10))
                .await
                .expect("granted eventually");
            (position, grant.fencing_token, id)
        }));
        // Each waiter is queued before the next one asks.
        loop {
            let state = client.lock_state("fifo").await.unwrap();
            if state.waiters.len() == position + 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    held.release().await.unwrap();
    let mut order = Vec::new();
    for task in tasks {
        let (position, token, id) = task.await.unwrap();
        order.push((token, position));
        client.release(id, "fifo", Some(token)).await.unwrap();
    }
    order.sort();
    let positions: Vec<usize> = order.iter().map(|(_, position)| *position).collect();
    assert_eq!(positions, vec![0, 1, 2], "grants out of arrival order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_acquires_held_back_by_the_leader_ride_with_the_release_in_arrival_order() {
    // Proves that the leader's holding back of acquires that will queue (so they share the next
    // proposal's fsync) changes only when they are proposed: with the hold-back window set to a
    // minute, three such acquires stay out of the log (not even waiting) until the holder's
    // release is proposed, go into the log ahead of it in the order they arrived, and the
    // release grants the first of them at once.
    let cluster = LockCluster::start_with_env(
        3,
        &[
            ("DISTSYNC_QUEUED_ACQUIRE_BATCH_MS", "60000"),
            // Held-back acquires must not time out while the test lines them up.
            ("DISTSYNC_COMMIT_TIMEOUT_MS", "120000"),
        ],
    )
    .await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let leader_http = cluster.nodes[&leader].http.clone();
    let client = cluster.client_of(leader);
    let held_back = || metrics::metric(&leader_http, "distsync_raft_proposals_held_back_total");
    let holder = client
        .create_session(Duration::from_secs(30))
        .await
        .unwrap();
    let held = holder
        .lock("batched", LockMode::Exclusive, Duration::ZERO)
        .await
        .unwrap();
    // Sessions first: creating one is a proposal, which would carry the held-back acquires
    // into the log.
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(
            client
                .create_session(Duration::from_secs(30))
                .await
                .unwrap(),
        );
    }
    let before = held_back().await;
    let mut tasks = Vec::new();
    for (position, session) in sessions.iter().enumerate() {
        let id = session.id();
        let waiter = client.clone();
        tasks.push(tokio::spawn(async move {
            let grant = waiter
                .acquire(id, "batched", LockMode::Exclusive, Duration::from_secs(30))
                .await
                .expect("granted eventually");
            (position, grant.fencing_token, id)
        }));
        // Each acquire reaches the leader (and is held back) before the next one is sent.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while held_back().await < before + position as u64 + 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "acquire {position} was not held back"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let state = client.lock_state("batched").await.unwrap();
    assert!(
        state.waiters.is_empty(),
        "held-back acquires are not in the log yet, so nobody waits: {state:?}"
    );
    let released_token = held.fencing_token();
    held.release().await.unwrap();
    // The release is answered once applied; the acquires went into the log ahead of it, so by
    // then the first holds the lock and the other two wait behind it, in arrival order.
    let state = client.lock_state("batched").await.unwrap();
    let holders: Vec<u64> = state.holders.iter().map(|h| h.session_id).collect();
    let waiters: Vec<u64> = state.waiters.iter().map(|w| w.session_id).collect();
    assert_eq!(holders, vec![sessions[0].id()], "{state:?}");
    assert_eq!(
        waiters,
        vec![sessions[1].id(), sessions[2].id()],
        "{state:?}"
    );
    let mut order = Vec::new();
    for task in tasks {
        let (position, token, id) = task.await.unwrap();
        assert!(token > released_token);
        order.push((token, position));
        client.release(id, "batched", Some(token)).await.unwrap();
    }
    order.sort();
    let positions: Vec<usize> = order.iter().map(|(_, position)| *position).collect();
    assert_eq!(positions, vec![0, 1, 2], "grants out of arrival order");
    assert_eq!(
        held_back().await,
        before + 3,
        "only the three queued acquires are held back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_back_acquire_with_nothing_to_ride_on_is_proposed_when_its_window_ends() {
    // Proves the bound on holding back: with a 400 ms window and no other proposal, a queued
    // acquire enters the log (and shows as a waiter) by itself — never before the window has
    // run since the request was sent, and well within a generous bound after it.
    const WINDOW: Duration = Duration::from_millis(400);
    let cluster = LockCluster::start_with_env(
        3,
        &[(
            "DISTSYNC_QUEUED_ACQUIRE_BATCH_MS",
            &WINDOW.as_millis().to_string(),
        )],
    )
    .await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let client = cluster.client_of(leader);
    let holder = client
        .create_session(Duration::from_secs(30))
        .await
        .unwrap();
    let _held = holder
        .lock("window", LockMode::Exclusive, Duration::ZERO)
        .await
        .unwrap();
    let waiter = client
        .create_session(Duration::from_secs(30))
        .await
        .unwrap();
    let waiter_id = waiter.id();
    let sent = std::time::Instant::now();
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .acquire(
                    waiter_id,
                    "window",
                    LockMode::Exclusive,
                    Duration::from_secs(30),
                )
                .await
        })
    };
    await_waiters(&client, "window", &[waiter_id]).await;
    // The leader cannot have held the acquire before it was sent, so its window cannot have
    // ended sooner than this after `sent`.
    assert!(
        sent.elapsed() >= WINDOW,
        "queued after {:?}, before the {WINDOW:?} window ended",
        sent.elapsed()
    );
    waiting.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_expiry_releases_locks_and_wakes_the_next_waiter() {
    // Proves that a session that stops keeping alive loses its locks and the waiter gets them
    // (the holder's client is simulated by never sending keep-alives).
    let cluster = LockCluster::start(3).await;
    let client = cluster.client();
    // Dropping the session handle stops its keep-alives; the server still has the session.
    let silent = client
        .create_session(Duration::from_millis(800))
        .await
        .unwrap();
    let silent_id = silent.id();
    drop(silent);
    let silent = silent_id;
    client
        .acquire(silent, "lease", LockMode::Exclusive, Duration::ZERO)
        .await
        .unwrap();
    let waiter = client
        .create_session(Duration::from_secs(10))
        .await
        .unwrap();
    let grant = client
        .acquire(
            waiter.id(),
            "lease",
            LockMode::Exclusive,
            Duration::from_secs(10),
        )
        .await
        .expect("granted once the silent session expired");
    let expired = client.keep_alive(silent).await.unwrap_err();
    assert_eq!(expired.code(), Some(ErrorCode::SessionNotFound));
    let state = client.lock_state("lease").await.unwrap();
    assert_eq!(state.holders[0].session_id, waiter.id());
    assert_eq!(state.holders[0].fencing_token, grant.fencing_token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_release_after_a_regrant_is_rejected() {
    // Proves L-15: a release carrying the token of an earlier hold cannot drop a later one. The
    // session's own delayed release is answered as the retry it may be (released, with the old
    // token); another session's release is refused. The later hold stays either way.
    let cluster = LockCluster::start(3).await;
    let client = cluster.client();
    let session = client
        .create_session(Duration::from_secs(10))
        .await
        .unwrap();
    let first = client
        .acquire(session.id(), "stale", LockMode::Exclusive, Duration::ZERO)
        .await
        .unwrap();
    client
        .release(session.id(), "stale", Some(first.fencing_token))
        .await
        .unwrap();
    let second = client
        .acquire(session.id(), "stale", LockMode::Exclusive, Duration::ZERO)
        .await
        .unwrap();
    let delayed = client
        .release(session.id(), "stale", Some(first.fencing_token))
        .await
        .expect("a retry of the session's own release");
    assert_eq!(delayed.fencing_token, first.fencing_token);
    let other = client
        .create_session(Duration::from_secs(10))
        .await
        .unwrap();
    let refused = client
        .release(other.id(), "stale", Some(second.fencing_token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::NotHeld));
    let state = client.lock_state("stale").await.unwrap();
    let holders: Vec<(u64, u64)> = state
        .holders
        .iter()
        .map(|h| (h.session_id, h.fencing_token))
        .collect();
    assert_eq!(holders, vec![(session.id(), second.fencing_token)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_acquire_returns_the_same_grant() {
    // Proves acquire is idempotent per (session, lock): a retry never makes a second grant.
    let cluster = LockCluster::start(3).await;
    let client = cluster.client();
    let session = client
        .create_session(Duration::from_secs(10))
        .await
        .unwrap();
    let first = client
        .acquire(session.id(), "again", LockMode::Exclusive, Duration::ZERO)
        .await
        .unwrap();
    let second = client
        .acquire(
            session.id(),
            "again",
            LockMode::Exclusive,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert_eq!(first.fencing_token, second.fencing_token);
    let state = client.lock_state("again").await.unwrap();
    assert_eq!(state.holders.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_relays_to_the_leader_and_names_it() {
    // Proves "any node accepts any request": a session created through a follower is created
    // (relayed to the leader), and the answer names the leader in `x-distsync-leader` so that
    // clients send the next request there directly.
    let cluster = LockCluster::start(3).await;
    let leader = cluster.leader(Duration::from_secs(5)).await;
    let follower = *cluster
        .nodes
        .keys()
        .find(|&&id| id != leader)
        .expect("a follower");
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/sessions",
            cluster.nodes[&follower].http
        ))
        .json(&serde_json::json!({"ttl_ms": 5000}))
        .send()
        .await
        .expect("the follower answers");
    assert_eq!(response.status().as_u16(), 201);
    let named = response
        .headers()
        .get(distsync_api::LEADER_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    assert_eq!(named.as_deref(), Some(cluster.nodes[&leader].http.as_str()));
}

/// Plays a client that asks for `name` exclusively with a 30 s wait, straight to `http`, and
/// goes away once its wait is queued (the connection closes with the request unanswered);
/// returns once the node has withdrawn the wait.
async fn wait_then_vanish(client: &distsync_client::Client, http: &str, session: u64, name: &str) {
    let url = format!("http://{http}/v1/locks/{name}/acquire");
    let body = serde_json::json!({"session_id": session, "mode": "exclusive", "wait_ms": 30_000});
    let request = tokio::spawn(async move {
        let _ = reqwest::Client::new().post(url).json(&body).send().await;
    });
    await_waiters(client, name, &[session]).await;
    request.abort();
    await_waiters(client, name, &[]).await;
}

async fn await_waiters(client: &distsync_client::Client, name: &str, waiting: &[u64]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let state = client.lock_state(name).await.unwrap();
        let mut sessions: Vec<u64> = state.waiters.iter().map(|w| w.session_id).collect();
        sessions.sort_unstable();
        if sessions == waiting {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waiters of {name} are {sessions:?}, expected {waiting:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_gone_mid_wait_is_withdrawn_and_an_abandoned_upgrade_keeps_the_shared_hold() {
    // Proves the withdrawal of an abandoned acquire through real processes: a waiter whose
    // client closes the connection is withdrawn long before its 30 s wait would end, so the
    // lock is free once its holder releases; an upgrader that goes away keeps the shared hold
    // (and token) it had, and is not made exclusive when the other reader leaves.
    let cluster = LockCluster::start(3).await;
    let leader = cluster.leader(Duration::from_secs(5)).await;
    let http = cluster.nodes[&leader].http.clone();
    let client = cluster.client();
    let session = || client.create_session(Duration::from_secs(30));
    let (holder, waiter, third) = (
        session().await.unwrap(),
        session().await.unwrap(),
        session().await.unwrap(),
    );

    let held = holder
        .lock("gone", LockMode::Exclusive, Duration::ZERO)
        .await
        .unwrap();
    wait_then_vanish(&client, &http, waiter.id(), "gone").await;
    held.release().await.unwrap();
    let state = client.lock_state("gone").await.unwrap();
    assert!(
        state.holders.is_empty(),
        "granted to a vanished client: {state:?}"
    );

    let reader = holder
        .lock("upgrade", LockMode::Shared, Duration::ZERO)
        .await
        .unwrap();
    let shared = client
        .acquire(waiter.id(), "upgrade", LockMode::Shared, Duration::ZERO)
        .await
        .unwrap();
    wait_then_vanish(&client, &http, waiter.id(), "upgrade").await;
    reader.release().await.unwrap();
    let state = client.lock_state("upgrade").await.unwrap();
    let holders: Vec<(u64, LockMode, u64)> = state
        .holders
        .iter()
        .map(|h| (h.session_id, h.mode, h.fencing_token))
        .collect();
    assert_eq!(
        holders,
        vec![(waiter.id(), LockMode::Shared, shared.fencing_token)],
        "the abandoned upgrade changed the upgrader's hold"
    );
    // The lock is shared, not exclusive: a third reader gets in at once.
    client
        .acquire(third.id(), "upgrade", LockMode::Shared, Duration::ZERO)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wait_abandoned_on_a_cut_off_leader_is_withdrawn_by_the_next_leader() {
    // Proves that withdrawal follows leadership: the waiter's client goes away while the node
    // that queued its wait is cut off and has lost leadership. The wait lives on in the
    // majority's log; once the cut heals, the old leader has the new one withdraw it, so the
    // lock is free when its holder releases instead of passing to a client that left.
    let cluster = LockCluster::start(3).await;
    let old_leader = cluster.leader(Duration::from_secs(5)).await;
    let http = cluster.nodes[&old_leader].http.clone();
    let client = cluster.client();
    let holder = client
        .create_session(Duration::from_secs(60))
        .await
        .unwrap();
    let waiter = client
        .create_session(Duration::from_secs(60))
        .await
        .unwrap();
    let held = holder
        .lock("moved", LockMode::Exclusive, Duration::ZERO)
        .await
        .unwrap();
    let url = format!("http://{http}/v1/locks/moved/acquire");
    let body =
        serde_json::json!({"session_id": waiter.id(), "mode": "exclusive", "wait_ms": 60_000});
    let request = tokio::spawn(async move {
        let _ = reqwest::Client::new().post(url).json(&body).send().await;
    });
    await_waiters(&client, "moved", &[waiter.id()]).await;

    cluster.partition(&[old_leader], true).await;
    let others: Vec<u64> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|&id| id != old_leader)
        .collect();
    let majority = distsync_client::Client::new(distsync_client::ClientConfig::new(
        others.iter().map(|id| cluster.nodes[id].http.clone()),
    ))
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut leaders = Vec::new();
        for &id in &others {
            if let Some(status) = cluster.status(id).await
                && status.role == "leader"
            {
                leaders.push(id);
            }
        }
        if !leaders.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the majority elected no leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let old_view = cluster
        .status(old_leader)
        .await
        .expect("the cut-off node answers");
    request.abort(); // the client leaves while its node cannot reach the leader
    // The abandonment cannot be delivered yet; the wait is still queued on the majority.
    assert_eq!(
        majority.lock_state("moved").await.unwrap().waiters.len(),
        1,
        "withdrawn while cut off (cut-off node's view: {old_view:?})"
    );
    cluster.partition(&[old_leader], false).await;

    await_waiters(&majority, "moved", &[]).await;
    held.release().await.unwrap();
    let state = majority.lock_state("moved").await.unwrap();
    assert!(
        state.holders.is_empty(),
        "granted to a client that left: {state:?}"
    );
}
