//! Outbound connections per peer with batching and reconnect, and the inbound accept loop.

use crate::frame::{Hello, WireError, encode_frame, read_frame, write_frame};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bytes gathered into one write before flushing; bounds latency added by batching.
const BATCH_BYTES_MAX: usize = 1 << 20;
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Messages written to a socket.
    pub sent: AtomicU64,
    /// Messages dropped: queue full, unknown peer, or lost with a broken connection.
    pub dropped: AtomicU64,
    /// Connections established (first ones and reconnects).
    pub connects: AtomicU64,
    /// Messages received.
    pub received: AtomicU64,
}

/// A message received from a peer.
#[derive(Debug)]
pub struct Inbound<M> {
    /// The sender, as named in its [`Hello`].
    pub from: u64,
    /// The message.
    pub message: M,
}

struct Peer<M> {
    addr: String,
    queue: mpsc::Sender<M>,
    task: JoinHandle<()>,
}

/// Outbound side: one queue and one connection task per peer.
pub struct PeerTransport<M> {
    self_id: u64,
    queue_capacity: usize,
    peers: BTreeMap<u64, Peer<M>>,
    stats: Arc<TransportStats>,
}

impl<M> std::fmt::Debug for PeerTransport<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTransport")
            .field("self_id", &self.self_id)
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<M: Serialize + Send + 'static> PeerTransport<M> {
    /// A transport for node `self_id`; each peer gets a queue of `queue_capacity` messages.
    pub fn new(self_id: u64, queue_capacity: usize) -> Self {
        PeerTransport {
            self_id,
            queue_capacity,
            peers: BTreeMap::new(),
            stats: Arc::new(TransportStats::default()),
        }
    }

    /// Shared counters.
    pub fn stats(&self) -> Arc<TransportStats> {
        Arc::clone(&self.stats)
    }

    /// Starts dialing `addr` for peer `id` (replacing any earlier address). Must be called
    /// inside a tokio runtime.
    pub fn add_peer(&mut self, id: u64, addr: String) {
        self.remove_peer(id);
        let (queue, receiver) = mpsc::channel(self.queue_capacity);
        let task = tokio::spawn(run_outbound(
            self.self_id,
            id,
            addr.clone(),
            receiver,
            Arc::clone(&self.stats),
        ));
        self.peers.insert(id, Peer { addr, queue, task });
    }

    /// As [`PeerTransport::add_peer`], but keeps an existing connection to the same address.
    pub fn add_peer_if_changed(&mut self, id: u64, addr: String) {
        if self.peers.get(&id).is_none_or(|peer| peer.addr != addr) {
            self.add_peer(id, addr);
        }
    }

    /// The peers being dialed.
    pub fn peer_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.peers.keys().copied()
    }

    /// Stops talking to peer `id`.
    pub fn remove_peer(&mut self, id: u64) {
        if let Some(peer) = self.peers.remove(&id) {
            peer.task.abort();
        }
    }

    /// Closes every peer's queue: each connection task writes what is queued and ends. Returns
    /// the tasks so that a node shutting down can wait (bounded) for its last words to go out;
    /// the transport sends nothing afterwards.
    pub fn close(&mut self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut self.peers)
            .into_values()
            .map(|peer| peer.task)
            .collect()
    }

    /// Whether `id` is a known peer.
    pub fn has_peer(&self, id: u64) -> bool {
        self.peers.contains_key(&id)
    }

    /// Queues `message` for `to` without waiting; drops it when the queue is full or the peer
    /// is unknown (the protocols above retransmit).
    pub fn send(&self, to: u64, message: M) {
        let delivered = self
            .peers
            .get(&to)
            .is_some_and(|peer| peer.queue.try_send(message).is_ok());
        if !delivered {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<M> Drop for PeerTransport<M> {
    fn drop(&mut self) {
        for peer in self.peers.values() {
            peer.task.abort();
        }
    }
}

async fn run_outbound<M: Serialize>(
    self_id: u64,
    peer_id: u64,
    addr: String,
    mut queue: mpsc::Receiver<M>,
    stats: Arc<TransportStats>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut buffer = Vec::with_capacity(64 * 1024);
    loop {
        let mut stream = match connect(self_id, &addr).await {
            Ok(stream) => {
                backoff = BACKOFF_MIN;
                stats.connects.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = peer_id, %addr, "connected to peer");
                stream
            }
            Err(error) => {
                tracing::trace!(peer = peer_id, %addr, %error, "dial failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        loop {
            let Some(first) = queue.recv().await else {
                return;
            };
            buffer.clear();
            let mut count = 0u64;
            let mut next = Some(first);
            while let Some(message) = next.take() {
                if let Err(error) = encode_frame(&message, &mut buffer) {
                    tracing::warn!(peer = peer_id, %error, "message not encodable; dropped");
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                } else {
                    count += 1;
                }
                if buffer.len() < BATCH_BYTES_MAX {
                    next = queue.try_recv().ok();
                }
            }
            if let Err(error) = stream.write_all(&buffer).await {
                tracing::debug!(peer = peer_id, %error, "peer connection lost");
                stats.dropped.fetch_add(count, Ordering::Relaxed);
                break;
            }
            stats.sent.fetch_add(count, Ordering::Relaxed);
        }
    }
}

async fn connect(self_id: u64, addr: &str) -> Result<TcpStream, WireError> {
    let mut stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| WireError::Handshake("connect timed out".into()))??;
    stream.set_nodelay(true)?;
    write_frame(&mut stream, &Hello::new(self_id)).await?;
    Ok(stream)
}

/// Accepts peer connections on `listener` and forwards every decoded message to `inbound`.
/// A connection that sends garbage or breaks mid-frame is closed; the node carries on.
pub async fn serve_inbound<M: DeserializeOwned + Send + 'static>(
    listener: TcpListener,
    inbound: mpsc::Sender<Inbound<M>>,
    stats: Arc<TransportStats>,
) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(BACKOFF_MIN).await;
                continue;
            }
        };
        let inbound = inbound.clone();
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            if let Err(error) = read_connection(stream, inbound, stats).await {
                tracing::debug!(%remote, %error, "peer connection closed");
            }
        });
    }
}

async fn read_connection<M: DeserializeOwned>(
    stream: TcpStream,
    inbound: mpsc::Sender<Inbound<M>>,
    stats: Arc<TransportStats>,
) -> Result<(), WireError> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut buffer = Vec::new();
    let hello: Hello =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame(&mut reader, &mut buffer))
            .await
            .map_err(|_| WireError::Handshake("no hello in time".into()))??
            .ok_or_else(|| WireError::Handshake("closed before hello".into()))?;
    hello.validate()?;
    while let Some(message) = read_frame(&mut reader, &mut buffer).await? {
        stats.received.fetch_add(1, Ordering::Relaxed);
        if inbound
            .send(Inbound {
                from: hello.from,
                message,
            })
            .await
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_reach_the_peer_and_survive_its_restart() {
        // Proves delivery, sender identification, and reconnection after the peer comes back.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut transport = PeerTransport::<u32>::new(9, 16);
        transport.add_peer(1, addr.to_string());
        transport.send(1, 41);
        {
            // The first incarnation of the peer reads one message, then dies with its socket.
            let (stream, _) = listener.accept().await.unwrap();
            let mut reader = BufReader::new(stream);
            let mut buffer = Vec::new();
            let hello: Hello = read_frame(&mut reader, &mut buffer).await.unwrap().unwrap();
            let first: u32 = read_frame(&mut reader, &mut buffer).await.unwrap().unwrap();
            assert_eq!((hello.from, first), (9, 41));
        }
        drop(listener);
        let listener = TcpListener::bind(addr).await.unwrap();
        let (tx, mut rx) = mpsc::channel::<Inbound<u32>>(16);
        let _server = tokio::spawn(serve_inbound(
            listener,
            tx,
            Arc::new(TransportStats::default()),
        ));
        // Keep sending until the transport notices the break and reconnects.
        let received = async {
            loop {
                transport.send(1, 42);
                tokio::select! {
                    got = rx.recv() => return got.unwrap(),
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        };
        let got = tokio::time::timeout(Duration::from_secs(10), received)
            .await
            .expect("reconnected within 10 s");
        assert_eq!((got.from, got.message), (9, 42));
    }

    #[tokio::test]
    async fn garbage_on_the_peer_port_closes_that_connection_only() {
        // Proves a malformed peer cannot take the listener down.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel::<Inbound<u32>>(16);
        let _server = tokio::spawn(serve_inbound(
            listener,
            tx,
            Arc::new(TransportStats::default()),
        ));
        let mut junk = TcpStream::connect(addr).await.unwrap();
        junk.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut transport = PeerTransport::<u32>::new(5, 16);
        transport.add_peer(1, addr.to_string());
        transport.send(1, 7);
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((got.from, got.message), (5, 7));
    }
}
