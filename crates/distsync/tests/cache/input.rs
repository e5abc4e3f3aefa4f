//! Bad input: oversized values, bad keys, unknown fields, malformed RESP, a peer that vanishes
//! mid-frame. The node answers each with an error naming the problem and keeps serving.

use super::common::{Cluster, http_request};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Sends `request` and reads until the server closes (every request here ends in a close:
/// QUIT or a protocol error); `closed` is false when it did not close within 5 s.
fn resp_exchange(addr: &str, request: &[u8]) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut reply = Vec::new();
    let closed = stream.read_to_end(&mut reply).is_ok();
    (reply, closed)
}

fn varint(mut value: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_errors_and_the_nodes_keep_serving() {
    let cluster = Cluster::start(3, "memory", &["--value-bytes-max", "1024"]);
    let c1 = &cluster.node("c1").http;

    // A value above --value-bytes-max, and a body above the HTTP limit: 413.
    let big = format!("{{\"value\":\"{}\"}}", "x".repeat(2000));
    let (status, body) = http_request(c1, "PUT", "/v1/cache/k", Some(big.as_bytes())).unwrap();
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
    let huge = format!("{{\"value\":\"{}\"}}", "x".repeat(2 << 20));
    let (status, body) = http_request(c1, "PUT", "/v1/cache/k", Some(huge.as_bytes())).unwrap();
    assert_eq!(status, 413, "{body}");

    // Bad keys and bodies: 400 invalid_request naming the problem.
    let long_key = "k".repeat(251);
    for (path, body) in [
        (format!("/v1/cache/{long_key}"), r#"{"value":"v"}"#),
        ("/v1/cache/a%20b".to_string(), r#"{"value":"v"}"#),
        ("/v1/cache/a%0Ab".to_string(), r#"{"value":"v"}"#),
        ("/v1/cache/k".to_string(), r#"{"value":"v","ttl":5}"#),
        ("/v1/cache/k".to_string(), r#"{"valu":"v"}"#),
        ("/v1/cache/k".to_string(), r#"not json"#),
    ] {
        let (status, reply) = http_request(c1, "PUT", &path, Some(body.as_bytes())).unwrap();
        assert_eq!(status, 400, "{path} {body}: {reply}");
        assert!(reply.contains("invalid_request"), "{reply}");
    }
    let (status, reply) = http_request(c1, "GET", &format!("/v1/cache/{long_key}"), None).unwrap();
    assert_eq!(
        (status, reply.contains("at most 250")),
        (400, true),
        "{reply}"
    );

    // Malformed RESP frames: an error reply, then the connection closes.
    let resp = &cluster.node("c2").resp;
    for frame in [
        &b"*1\r\n$-7\r\n"[..],
        b"*2\r\n$3\r\nGET\r\n:1\r\n",
        b"*x\r\n",
    ] {
        let (reply, closed) = resp_exchange(resp, frame);
        assert!(
            reply.starts_with(b"-ERR Protocol error"),
            "{:?}",
            String::from_utf8_lossy(&reply)
        );
        assert!(closed, "connection left open after {frame:?}");
    }
    let (reply, _) = resp_exchange(resp, b"*3\r\n$3\r\nSET\r\n$1\r\nr\r\n$2\r\nok\r\n*2\r\n$3\r\nGET\r\n$1\r\nr\r\n*1\r\n$4\r\nQUIT\r\n");
    assert_eq!(
        reply, b"+OK\r\n$2\r\nok\r\n+OK\r\n",
        "pipelined SET, GET, QUIT"
    );

    // A peer that says hello and vanishes in the middle of a frame, and one that sends garbage.
    let peer = &cluster.node("c3").peer;
    let mut hello = Vec::new();
    varint(0x4453_594e, &mut hello);
    varint(1, &mut hello);
    varint(424_242, &mut hello);
    let mut stream = TcpStream::connect(peer).unwrap();
    stream
        .write_all(&(hello.len() as u32).to_le_bytes())
        .unwrap();
    stream.write_all(&hello).unwrap();
    stream.write_all(&200u32.to_le_bytes()).unwrap();
    stream.write_all(&[0u8; 17]).unwrap();
    drop(stream);
    let mut garbage = TcpStream::connect(peer).unwrap();
    garbage
        .write_all(b"\xff\xff\xff\xffGET / HTTP/1.1\r\n\r\n")
        .unwrap();
    drop(garbage);

    // Every node still serves, coherently.
    let client = cluster.client();
    client.put("after", "still", Some("c3")).await.unwrap();
    for node in ["c1", "c2", "c3"] {
        let entry = client.get("after", Some(node)).await.unwrap().unwrap();
        assert_eq!(entry.value, "still", "{node}");
    }
    let (reply, _) = resp_exchange(
        resp,
        b"*2\r\n$3\r\nGET\r\n$5\r\nafter\r\n*1\r\n$4\r\nQUIT\r\n",
    );
    assert_eq!(reply, b"$5\r\nstill\r\n+OK\r\n");
}
