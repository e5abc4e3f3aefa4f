//! The `StreamBackend` contract, checked against both implementations: the embedded
//! `FileStreams` and `RedisStreams` over a real `redis-server` started here (AOF, fsync always).

use distsync_queue::{
    BackendError, Delivery, FileStreams, NewEntry, RedisStreams, StreamBackend, StreamId,
};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// The workspace's one allocator of test ports (why not port 0: see there).
#[path = "../../distsync/tests/support/ports.rs"]
mod ports;

struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `redis-server` on a free port; panics (never skips) if it is not installed.
fn start_redis() -> Redis {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = ports::port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start redis-server ({e}); apt-get install redis-server")
        });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let mut reply = [0u8; 7];
            if s.write_all(b"PING\r\n").is_ok()
                && s.read_exact(&mut reply).is_ok()
                && &reply == b"+PONG\r\n"
            {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "redis-server did not answer PING"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Redis {
        child,
        port,
        _dir: dir,
    }
}

fn entry(body: &str) -> NewEntry {
    NewEntry {
        key: None,
        body: body.to_owned(),
        headers: BTreeMap::new(),
        published_at_ms: 1,
    }
}

async fn append(backend: &impl StreamBackend, stream: &str, n: usize) -> Vec<StreamId> {
    let entries = (0..n).map(|i| entry(&format!("m{i}"))).collect();
    backend
        .append(&[(stream.to_owned(), entries)])
        .await
        .expect("append")
        .remove(0)
}

async fn trim_never_removes_pending_or_undelivered_entries(backend: &impl StreamBackend) {
    let s = "dsq:trim:p0";
    let ids = append(backend, s, 10).await;
    assert_eq!(
        backend.trim_acknowledged(s).await.expect("trim"),
        0,
        "no group: nothing may go"
    );
    backend.ensure_group(s, "a").await.expect("group a");
    backend.ensure_group(s, "b").await.expect("group b");
    let got = backend.read_new(s, "a", "c", 6).await.expect("read a");
    assert_eq!(got.len(), 6);
    backend.ack(s, "a", &ids[..4]).await.expect("ack a");
    // Group b has read nothing: nothing is acknowledged by every group yet.
    assert_eq!(backend.trim_acknowledged(s).await.expect("trim"), 0);
    let got = backend.read_new(s, "b", "c", 10).await.expect("read b");
    assert_eq!(got.len(), 10);
    backend.ack(s, "b", &ids).await.expect("ack b");
    // Now a's first pending (ids[4]) bounds the trim.
    assert_eq!(backend.trim_acknowledged(s).await.expect("trim"), 4);
    let info = backend.info(s).await.expect("info").expect("exists");
    assert_eq!(info.length, 6);
    // Everything a still owes is still claimable and readable.
    let claimed = backend
        .claim_idle(s, "a", "c2", Duration::ZERO, 10)
        .await
        .expect("claim");
    assert_eq!(
        claimed.iter().map(|d| d.id).collect::<Vec<_>>(),
        ids[4..6].to_vec()
    );
    let rest = backend.read_new(s, "a", "c", 10).await.expect("read rest");
    assert_eq!(
        rest.iter().map(|d| d.id).collect::<Vec<_>>(),
        ids[6..].to_vec()
    );
}

async fn claims_count_deliveries_and_release_makes_entries_claimable(backend: &impl StreamBackend) {
    let s = "dsq:claim:p0";
    let ids = append(backend, s, 2).await;
    backend.ensure_group(s, "g").await.expect("group");
    backend
        .ensure_group(s, "g")
        .await
        .expect("group twice is fine");
    let first = backend.read_new(s, "g", "c1", 10).await.expect("read");
    assert!(first.iter().all(|d| d.delivery_count == 1));
    // Not idle long enough: nothing to claim.
    let none = backend
        .claim_idle(s, "g", "c2", Duration::from_secs(60), 10)
        .await
        .expect("claim");
    assert!(none.is_empty());
    // Released entries are claimable at once, with the count incremented by the claim only.
    assert_eq!(
        backend.release(s, "g", &ids[..1]).await.expect("release"),
        1
    );
    let claimed = backend
        .claim_idle(s, "g", "c2", Duration::from_secs(60), 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!((claimed[0].id, claimed[0].delivery_count), (ids[0], 2));
    // Dead-lettering acks it and records it once.
    backend
        .dead_letter(s, "g", &claimed[0])
        .await
        .expect("dead-letter");
    let dead = backend.dead_letters(s, 10).await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].source_id, dead[0].delivery_count), (ids[0], 2));
    let info = backend.info(s).await.expect("info").expect("exists");
    assert_eq!(info.groups[0].pending, 1);
    assert_eq!(info.dead_letters, 1);
    assert_eq!(backend.ack(s, "g", &ids).await.expect("ack"), 1);
}

async fn own_pending_entries_are_redelivered_to_their_consumer_only_and_counted(
    backend: &impl StreamBackend,
) {
    let s = "dsq:own:p0";
    let missing = backend.read_own_pending(s, "g", "c1", 10).await;
    assert!(
        matches!(missing, Err(BackendError::NoGroup)),
        "no group: {missing:?}"
    );
    let ids = append(backend, s, 6).await;
    backend.ensure_group(s, "g").await.expect("group");
    assert_eq!(
        backend.read_new(s, "g", "c1", 3).await.expect("c1").len(),
        3
    );
    assert_eq!(
        backend.read_new(s, "g", "c2", 2).await.expect("c2").len(),
        2
    );
    let ids_and_counts = |d: Vec<Delivery>| {
        d.iter()
            .map(|d| (d.id, d.delivery_count))
            .collect::<Vec<_>>()
    };
    // Just delivered (idle ~0), still handed back to their owner, oldest first, counted.
    let own = backend
        .read_own_pending(s, "g", "c1", 10)
        .await
        .expect("own c1");
    assert_eq!(own[0].entry.body, "m0");
    assert_eq!(
        ids_and_counts(own),
        vec![(ids[0], 2), (ids[1], 2), (ids[2], 2)]
    );
    // `count` takes the oldest; another consumer's list is its own; an unknown consumer has none.
    let own = backend
        .read_own_pending(s, "g", "c1", 2)
        .await
        .expect("own c1 again");
    assert_eq!(ids_and_counts(own), vec![(ids[0], 3), (ids[1], 3)]);
    let own = backend
        .read_own_pending(s, "g", "c2", 10)
        .await
        .expect("own c2");
    assert_eq!(ids_and_counts(own), vec![(ids[3], 2), (ids[4], 2)]);
    assert!(
        backend
            .read_own_pending(s, "g", "c3", 10)
            .await
            .expect("own c3")
            .is_empty()
    );
    // Own pending entries are not new, and the never-delivered one is not anybody's.
    let fresh = backend.read_new(s, "g", "c1", 10).await.expect("new");
    assert_eq!(ids_and_counts(fresh), vec![(ids[5], 1)]);
    // The read resets the idle time: a released entry read back by its owner is no longer
    // claimable by others.
    backend.release(s, "g", &ids[..1]).await.expect("release");
    let own = backend
        .read_own_pending(s, "g", "c1", 1)
        .await
        .expect("own after release");
    assert_eq!(ids_and_counts(own), vec![(ids[0], 4)]);
    let claimed = backend
        .claim_idle(s, "g", "c3", Duration::from_secs(60), 10)
        .await
        .expect("claim");
    assert!(claimed.is_empty(), "claimed {claimed:?}");
    // Claims continue the count the own-pending reads incremented, and move ownership.
    backend
        .release(s, "g", &ids[3..4])
        .await
        .expect("release c2's");
    let claimed = backend
        .claim_idle(s, "g", "c3", Duration::from_secs(60), 10)
        .await
        .expect("claim c2's");
    assert_eq!(ids_and_counts(claimed), vec![(ids[3], 3)]);
    let own = backend
        .read_own_pending(s, "g", "c2", 10)
        .await
        .expect("own c2 after claim");
    assert_eq!(ids_and_counts(own), vec![(ids[4], 3)]);
    // Acknowledged entries are no longer pending for anyone.
    assert_eq!(backend.ack(s, "g", &ids[..3]).await.expect("ack"), 3);
    let own = backend
        .read_own_pending(s, "g", "c1", 10)
        .await
        .expect("own c1 acked");
    assert_eq!(ids_and_counts(own), vec![(ids[5], 2)]);
    let info = backend.info(s).await.expect("info").expect("exists");
    assert_eq!(info.groups[0].pending, 3);
}

#[tokio::test]
async fn embedded_backend_honours_the_contract() {
    // Proves FileStreams' trim safety, claim counting, release and dead-lettering, and that
    // the state survives a reopen (replay of the log).
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let backend = FileStreams::open(dir.path()).expect("open");
        trim_never_removes_pending_or_undelivered_entries(&backend).await;
        claims_count_deliveries_and_release_makes_entries_claimable(&backend).await;
        own_pending_entries_are_redelivered_to_their_consumer_only_and_counted(&backend).await;
    }
    let reopened = FileStreams::open(dir.path()).expect("reopen");
    let info = reopened
        .info("dsq:trim:p0")
        .await
        .expect("info")
        .expect("exists");
    assert_eq!(info.length, 6);
    let info = reopened
        .info("dsq:claim:p0")
        .await
        .expect("info")
        .expect("exists");
    assert_eq!((info.groups[0].pending, info.dead_letters), (0, 1));
    // Own-pending reads are replayed with their counts and owners.
    let own = reopened
        .read_own_pending("dsq:own:p0", "g", "c2", 10)
        .await
        .expect("own after reopen");
    assert_eq!(
        own.iter().map(|d| d.delivery_count).collect::<Vec<_>>(),
        vec![4]
    );
}

#[tokio::test]
async fn redis_backend_honours_the_contract() {
    // Proves RedisStreams meets the same contract on a real Redis 7 (MINID trim, XPENDING +
    // XCLAIM counting, XCLAIM IDLE release, MULTI dead-lettering).
    let redis = start_redis();
    let backend = RedisStreams::connect(
        &format!("redis://127.0.0.1:{}", redis.port),
        Duration::from_secs(3),
        2, // commands of one contract check alternate between connections
    )
    .expect("connect");
    trim_never_removes_pending_or_undelivered_entries(&backend).await;
    claims_count_deliveries_and_release_makes_entries_claimable(&backend).await;
    own_pending_entries_are_redelivered_to_their_consumer_only_and_counted(&backend).await;
}
