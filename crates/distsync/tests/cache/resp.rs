//! A smoke test of the RESP port under concurrent pipelined clients, on one thread that
//! busy-polls and holds each reply back to the end of its scheduler round: every connection
//! still gets exactly its own replies, in the order of its requests, and none waits forever.
//! Whether the replies really go out together is a matter of CPU per request, measured by
//! `scripts/cache-get-vs-redis.sh`, not asserted here.

use super::common::{Cluster, command};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const CONNECTIONS: usize = 16;
const BATCHES: usize = 20;
const PAIRS_PER_BATCH: usize = 32;

/// Pipelines batches of SET then GET of keys only this connection writes, and checks the
/// replies byte for byte.
fn pipelining_client(addr: &str, connection: usize) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for batch in 0..BATCHES {
        let mut request = Vec::new();
        let mut expected = Vec::new();
        for pair in 0..PAIRS_PER_BATCH {
            let key = format!("k{connection}-{pair}");
            let value = format!("v{connection}-{batch}-{pair}");
            request.extend(command(&["SET", &key, &value]));
            request.extend(command(&["GET", &key]));
            expected.extend_from_slice(b"+OK\r\n");
            expected.extend_from_slice(format!("${}\r\n{value}\r\n", value.len()).as_bytes());
        }
        stream.write_all(&request).unwrap();
        let mut reply = vec![0; expected.len()];
        stream
            .read_exact(&mut reply)
            .unwrap_or_else(|error| panic!("connection {connection}, batch {batch}: {error}"));
        assert_eq!(
            String::from_utf8_lossy(&reply),
            String::from_utf8_lossy(&expected),
            "connection {connection}, batch {batch}"
        );
    }
}

#[test]
fn concurrent_pipelined_connections_each_get_their_own_replies_in_order() {
    let cluster = Cluster::start(
        1,
        "memory",
        &["--resp-threads", "1", "--resp-busy-poll-us", "500"],
    );
    let addr = cluster.node("c1").resp.clone();
    std::thread::scope(|scope| {
        for connection in 0..CONNECTIONS {
            let addr = &addr;
            scope.spawn(move || pipelining_client(addr, connection));
        }
    });
}
