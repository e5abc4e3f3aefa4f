//! Malformed input gets a JSON 4xx naming the problem, and the node keeps serving.

use crate::cluster::LockCluster;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_requests_get_json_errors_and_the_node_survives() {
    // Proves bad input never panics a node: each case gets the right status and code.
    let cluster = LockCluster::start(3).await;
    let node = cluster.nodes.values().next().unwrap().http.clone();
    let http = reqwest::Client::new();
    let post = |path: &str, body: Vec<u8>| {
        http.post(format!("http://{node}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .timeout(Duration::from_secs(10))
            .send()
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "/v1/sessions",
            b"{not json".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/v1/sessions",
            br#"{"ttl_ms": 5000, "extra": 1}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/v1/sessions",
            br#"{"ttl_ms": "soon"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/v1/sessions",
            br#"{"ttl_ms": 1}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/v1/locks/ok/acquire",
            br#"{"session_id": 1, "mode": "sideways"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/v1/locks/bad%20name/acquire",
            br#"{"session_id": 1, "mode": "shared"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/v1/locks/ok/acquire",
            br#"{"session_id": 424242, "mode": "shared"}"#.to_vec(),
            404,
            "session_not_found",
        ),
        (
            "/v1/locks/ok/release",
            br#"{"session_id": 424242}"#.to_vec(),
            404,
            "session_not_found",
        ),
        ("/v1/nowhere", Vec::new(), 404, "not_found"),
    ];
    for (path, body, status, code) in cases {
        let response = post(path, body).await.expect("node answers");
        assert_eq!(response.status().as_u16(), status, "{path}");
        let error: distsync_api::ErrorBody = response.json().await.expect("JSON error body");
        assert_eq!(
            serde_json::to_value(error.code).unwrap(),
            serde_json::json!(code),
            "{path}: {}",
            error.message
        );
    }
    // An oversized body is refused with a JSON 413, and the client gets the answer rather than
    // a reset connection.
    let oversized = http
        .post(format!("http://{node}/v1/sessions"))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("an answer, not a cut connection");
    assert_eq!(oversized.status().as_u16(), 413);
    let error: distsync_api::ErrorBody = oversized.json().await.expect("JSON error body");
    assert_eq!(error.code, distsync_api::ErrorCode::PayloadTooLarge);
    let long_name = "x".repeat(300);
    let response = post(
        &format!("/v1/locks/{long_name}/acquire"),
        br#"{"session_id": 1, "mode": "shared"}"#.to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    // Still alive and serving.
    let client = cluster.client();
    let session = client.create_session(Duration::from_secs(5)).await.unwrap();
    client
        .acquire(
            session.id(),
            "fine",
            distsync_api::LockMode::Shared,
            Duration::ZERO,
        )
        .await
        .expect("node still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_that_does_not_restore_is_refused_before_it_is_persisted() {
    // Proves a bad snapshot from a peer cannot stop a node: a fake node 2 sends node 1 an
    // InstallSnapshot at a far higher term whose data is garbage. Node 1 refuses it before its
    // Raft core sees it (its term does not jump, the refusal is counted), keeps serving, and
    // restarts cleanly afterwards (nothing of it was persisted). Without the check the node
    // persisted the snapshot and then failed to apply it, at every start.
    use distsync_raft::{LogIndex, Message, MessageBody, NodeId, Snapshot, SnapshotMeta, Term};
    let mut cluster = LockCluster::start(3).await;
    let (http, raft) = cluster.nodes[&1].clone_addresses();
    let mut peer = tokio::net::TcpStream::connect(&raft)
        .await
        .expect("dial node 1's peer port");
    distsync_wire::write_frame(&mut peer, &distsync_wire::Hello::new(2))
        .await
        .expect("hello");
    let garbage = Message {
        from: NodeId(2),
        to: NodeId(1),
        term: Term(1_000),
        body: MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    last_index: LogIndex(1_000_000),
                    last_term: Term(1_000),
                    ..SnapshotMeta::default()
                },
                data: bytes::Bytes::from_static(b"not a snapshot of anything"),
            },
        },
    };
    distsync_wire::write_frame(&mut peer, &garbage)
        .await
        .expect("send the snapshot");

    let http_client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = http_client
            .get(format!("http://{http}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        if metrics
            .lines()
            .any(|line| line.starts_with("distsync_raft_snapshots_rejected_total 1"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the garbage snapshot was never counted as refused: {}",
            metrics
                .lines()
                .filter(|line| line.contains("snapshot"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The refusal is counted before the driver moves on; a grant through node 1 proves it did
    // move on (a driver that had swallowed the snapshot would have stopped on it).
    grant_through(&cluster, 1, "after-bad-snapshot").await;
    let status = cluster.status(1).await.expect("node 1 answers");
    assert!(
        status.term < 1_000,
        "node 1 adopted the forged term: {status:?}"
    );

    cluster.kill(1);
    cluster.spawn(1);
    cluster.wait_ready(Duration::from_secs(20)).await;
    grant_through(&cluster, 1, "after-restart").await;
    let status = cluster
        .status(1)
        .await
        .expect("node 1 answers after a restart");
    assert!(
        status.term < 1_000,
        "node 1 restarted with the forged term: {status:?}"
    );
}

async fn grant_through(cluster: &LockCluster, id: u64, name: &str) {
    let client = cluster.client_of(id);
    let session = client
        .create_session(Duration::from_secs(10))
        .await
        .unwrap_or_else(|error| panic!("no session through node {id}: {error}"));
    client
        .acquire(
            session.id(),
            name,
            distsync_api::LockMode::Exclusive,
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|error| panic!("no grant of {name} through node {id}: {error}"));
}
