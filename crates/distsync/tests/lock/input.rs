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
    // An oversized body is refused from its declared length, before it is sent.
    let mut socket = tokio::net::TcpStream::connect(&node).await.unwrap();
    let head = format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: {node}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        2 << 20
    );
    tokio::io::AsyncWriteExt::write_all(&mut socket, head.as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut socket, &mut answer),
    )
    .await
    .expect("answered before the body was sent")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
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
