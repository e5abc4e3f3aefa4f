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
