//! Deadlock detection over HTTP (TESTING.md D-01, D-02, D-06).

use crate::cluster::LockCluster;
use distsync_api::{ErrorCode, LockMode};
use distsync_client::Client;
use std::time::Duration;

async fn wait_until_queued(client: &Client, name: &str, waiters: usize) {
    for _ in 0..500 {
        if client.lock_state(name).await.unwrap().waiters.len() >= waiters {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{name} never had {waiters} waiters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_and_three_session_cycles_are_refused_with_the_cycle() {
    // Proves D-01/D-02: the wait that would close a cycle is refused at once with the cycle,
    // requester first; the other waits stay queued and nothing hangs.
    let cluster = LockCluster::start(3).await;
    let client = cluster.client();
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(
            client
                .create_session(Duration::from_secs(10))
                .await
                .unwrap(),
        );
    }
    let ids: Vec<u64> = sessions.iter().map(|session| session.id()).collect();
    for (index, name) in ["r1", "r2", "r3"].iter().enumerate() {
        client
            .acquire(ids[index], name, LockMode::Exclusive, Duration::ZERO)
            .await
            .unwrap();
    }
    // 2-cycle: 0 waits for r2 (held by 1); 1 asks for r1 (held by 0).
    let waiting = {
        let client = client.clone();
        let id = ids[0];
        tokio::spawn(async move {
            client
                .acquire(id, "r2", LockMode::Exclusive, Duration::from_secs(5))
                .await
        })
    };
    wait_until_queued(&client, "r2", 1).await;
    let refused = client
        .acquire(ids[1], "r1", LockMode::Exclusive, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Deadlock));
    let distsync_client::ClientError::Api { status, body } = refused else {
        unreachable!()
    };
    assert_eq!(status, 409);
    assert_eq!(body.cycle, Some(vec![ids[1], ids[0]]));
    // 3-cycle: 1 waits for r3 (held by 2); 2 asks for r1 (held by 0, who waits for 1).
    let waiting_two = {
        let client = client.clone();
        let id = ids[1];
        tokio::spawn(async move {
            client
                .acquire(id, "r3", LockMode::Exclusive, Duration::from_secs(5))
                .await
        })
    };
    wait_until_queued(&client, "r3", 1).await;
    let refused = client
        .acquire(ids[2], "r1", LockMode::Exclusive, Duration::from_secs(5))
        .await
        .unwrap_err();
    let distsync_client::ClientError::Api { body, .. } = refused else {
        panic!("expected a deadlock answer")
    };
    assert_eq!(body.code, ErrorCode::Deadlock);
    assert_eq!(body.cycle, Some(vec![ids[2], ids[0], ids[1]]));
    // Breaking the chain: session 2 releases r3, so 1 gets it, releases r2, so 0 gets it.
    client.release(ids[2], "r3", None).await.unwrap();
    let granted_to_one = waiting_two.await.unwrap().expect("1 granted r3");
    client.release(ids[1], "r2", None).await.unwrap();
    let granted_to_zero = waiting.await.unwrap().expect("0 granted r2");
    assert!(granted_to_zero.fencing_token > granted_to_one.fencing_token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_shared_holders_upgrading_is_a_deadlock_for_the_second() {
    // Proves D-06: the documented upgrade rule — the second upgrader is refused.
    let cluster = LockCluster::start(3).await;
    let client = cluster.client();
    let a = client
        .create_session(Duration::from_secs(10))
        .await
        .unwrap();
    let b = client
        .create_session(Duration::from_secs(10))
        .await
        .unwrap();
    let mut shared_tokens = Vec::new();
    for session in [&a, &b] {
        let grant = client
            .acquire(session.id(), "up", LockMode::Shared, Duration::ZERO)
            .await
            .unwrap();
        shared_tokens.push(grant.fencing_token);
    }
    let first_upgrade = {
        let client = client.clone();
        let id = a.id();
        tokio::spawn(async move {
            client
                .acquire(id, "up", LockMode::Exclusive, Duration::from_secs(5))
                .await
        })
    };
    wait_until_queued(&client, "up", 1).await;
    let refused = client
        .acquire(b.id(), "up", LockMode::Exclusive, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Deadlock));
    // The refusal must leave b's shared hold alone. A node once "withdrew" the refused request
    // after answering it, found b's shared hold and released it (a flake under load, when that
    // release won the race with the one below). Each repeated try-lock is a log entry after the
    // refusal: the same token every time shows the hold untouched while anything the refusal
    // set off would have been applied.
    for _ in 0..5 {
        let repeated = client
            .acquire(b.id(), "up", LockMode::Shared, Duration::ZERO)
            .await
            .expect("b still holds up shared after its upgrade was refused");
        assert_eq!(repeated.fencing_token, shared_tokens[1]);
    }
    client.release(b.id(), "up", None).await.unwrap();
    let upgraded = first_upgrade
        .await
        .unwrap()
        .expect("a upgraded once b left");
    assert_eq!(upgraded.mode, LockMode::Exclusive);
}
