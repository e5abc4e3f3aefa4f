//! A TCP proxy between two processes of a test, which the test can break the way networks break:
//! `Cut` refuses new connections and resets established ones (a peer that is gone), `Blackhole`
//! accepts and holds connections but forwards nothing (a peer that is unreachable: packets vanish,
//! so only the caller's own timeout ends the wait). Shared by the black-box test targets.
//!
//! While a link is `Open` it can also degrade the traffic it forwards ([`Faults`]): delay with
//! jitter, and connection resets ("flaky": whatever is still in flight on the connection is
//! lost). A byte stream cannot lose a message in its middle without corrupting the stream, so
//! dropping single messages needs the proxy to see message boundaries: a link started with
//! [`Link::start_framed`] forwards whole distsync-wire frames (a little-endian `u32` length, then
//! the payload), drops a frame with a given probability, and delays each frame on its own, so a
//! frame held longer is overtaken by the next one (reordering). A plain [`Link::start`] link
//! forwards chunks as it reads them and keeps their order.

#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How a [`Link`] treats traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Bytes flow both ways (subject to the link's [`Faults`]).
    Open,
    /// New connections are closed at once; established ones are dropped.
    Cut,
    /// Connections are held open and nothing is forwarded, until the state changes (then they
    /// are dropped: the bytes "in flight" were lost).
    Blackhole,
}

/// How an `Open` link degrades what it forwards. The unit is a frame on a framed link and a
/// chunk (whatever one read returned) on a plain one. The default forwards everything at once.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Every unit is held for `delay ± jitter` (uniform) before it is forwarded.
    pub delay: Duration,
    /// See `delay`; at most `delay`.
    pub jitter: Duration,
    /// Probability that a frame is dropped (framed links only). The first frame of each
    /// direction of a connection (the wire handshake) is never dropped.
    pub drop: f64,
    /// Probability, per unit, that the connection is reset instead of forwarding it: every
    /// unit still held for that connection is lost and the dialer has to reconnect.
    pub reset: f64,
    /// Seeds the link's random choices (each connection draws from `seed` and its number).
    pub seed: u64,
}

/// What a link did since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Units forwarded.
    pub forwarded: u64,
    /// Frames dropped on purpose.
    pub dropped: u64,
    /// Connections reset on purpose.
    pub resets: u64,
}

impl std::ops::Add for LinkStats {
    type Output = LinkStats;

    fn add(self, other: LinkStats) -> LinkStats {
        LinkStats {
            forwarded: self.forwarded + other.forwarded,
            dropped: self.dropped + other.dropped,
            resets: self.resets + other.resets,
        }
    }
}

#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    resets: AtomicU64,
    connections: AtomicU64,
}

/// A directed link `client → target` through a loopback proxy.
pub struct Link {
    /// The proxy's address: dial this instead of the target.
    pub addr: String,
    state: watch::Sender<LinkState>,
    faults: watch::Sender<Faults>,
    framed: bool,
    /// Connections currently forwarding bytes; a cut or blackhole is in force once this is zero.
    forwarding: Arc<AtomicUsize>,
    counters: Arc<Counters>,
}

/// Everything one proxied connection needs from its link.
#[derive(Clone)]
struct Shared {
    target: String,
    state: watch::Receiver<LinkState>,
    faults: watch::Receiver<Faults>,
    framed: bool,
    forwarding: Arc<AtomicUsize>,
    counters: Arc<Counters>,
}

impl Link {
    /// Starts a proxy to `target` in state `Open`, forwarding a byte stream.
    pub async fn start(target: String) -> Link {
        Self::start_with(target, false).await
    }

    /// Starts a proxy to `target` in state `Open` for distsync-wire traffic: faults apply per
    /// frame, so single messages can be dropped and reordered.
    pub async fn start_framed(target: String) -> Link {
        Self::start_with(target, true).await
    }

    async fn start_with(target: String, framed: bool) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let (state, state_rx) = watch::channel(LinkState::Open);
        let (faults, faults_rx) = watch::channel(Faults::default());
        let forwarding = Arc::new(AtomicUsize::new(0));
        let counters = Arc::new(Counters::default());
        let shared = Shared {
            target,
            state: state_rx,
            faults: faults_rx,
            framed,
            forwarding: Arc::clone(&forwarding),
            counters: Arc::clone(&counters),
        };
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve_connection(inbound, shared.clone()));
            }
        });
        Link {
            addr,
            state,
            faults,
            framed,
            forwarding,
            counters,
        }
    }

    /// Puts the link in `state`; returns once no connection forwards bytes against it.
    pub async fn set(&self, state: LinkState) {
        self.state.send_replace(state);
        if state != LinkState::Open {
            while self.forwarding.load(Ordering::SeqCst) > 0 {
                tokio::task::yield_now().await;
            }
        }
    }

    /// Cuts (`true`) or heals (`false`) the link.
    pub async fn set_cut(&self, cut: bool) {
        self.set(if cut { LinkState::Cut } else { LinkState::Open })
            .await;
    }

    /// Applies `faults` from now on, to established connections too.
    ///
    /// # Panics
    /// Dropping on a plain link: it would cut a message in two.
    pub fn set_faults(&self, faults: Faults) {
        assert!(
            faults.drop == 0.0 || self.framed,
            "only a framed link can drop single messages"
        );
        assert!(faults.jitter <= faults.delay, "jitter is at most the delay");
        self.faults.send_replace(faults);
    }

    /// What the link did so far.
    pub fn stats(&self) -> LinkStats {
        LinkStats {
            forwarded: self.counters.forwarded.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            resets: self.counters.resets.load(Ordering::Relaxed),
        }
    }
}

async fn serve_connection(mut inbound: TcpStream, shared: Shared) {
    let mut watched = shared.state.clone();
    if *watched.borrow_and_update() == LinkState::Open {
        shared.forwarding.fetch_add(1, Ordering::SeqCst);
        let connection = shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        let broken = match TcpStream::connect(&shared.target).await {
            Ok(mut outbound) => {
                let ended = tokio::select! {
                    ended = forward(&mut inbound, &mut outbound, &shared, connection) => Some(ended),
                    _ = watched.wait_for(|s| *s != LinkState::Open) => None,
                };
                if ended == Some(End::Reset) {
                    reset_on_drop(&inbound);
                    reset_on_drop(&outbound);
                }
                ended.is_none()
            }
            Err(_) => false,
        };
        shared.forwarding.fetch_sub(1, Ordering::SeqCst);
        if !broken {
            return;
        }
    }
    // The link is broken (before or during this connection): the target side, if any, is
    // dropped; the client side is closed for Cut, held silent for Blackhole.
    if *watched.borrow() == LinkState::Blackhole {
        let _ = watched.wait_for(|s| *s != LinkState::Blackhole).await;
    } else {
        let _ = inbound.shutdown().await;
    }
}

/// A reset, not a close: the peer learns at once that the bytes in flight are gone.
#[allow(
    deprecated,
    reason = "SO_LINGER with a zero timeout never blocks: close resets"
)]
fn reset_on_drop(stream: &TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Both sides closed their direction.
    Closed,
    /// The link reset the connection on purpose.
    Reset,
}

/// Forwards both directions until both are closed or the link resets the connection.
async fn forward(
    inbound: &mut TcpStream,
    outbound: &mut TcpStream,
    shared: &Shared,
    connection: u64,
) -> End {
    let (mut client_read, mut client_write) = inbound.split();
    let (mut target_read, mut target_write) = outbound.split();
    let up = pump(&mut client_read, &mut target_write, shared, connection * 2);
    let down = pump(
        &mut target_read,
        &mut client_write,
        shared,
        connection * 2 + 1,
    );
    match tokio::try_join!(up, down) {
        Ok(_) => End::Closed,
        Err(end) => end,
    }
}

/// A tiny xorshift64* generator: the test support needs no extra crate.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        Rng((seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15)).max(1))
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && self.unit() < probability
    }

    fn delay(&mut self, faults: &Faults) -> Duration {
        if faults.jitter.is_zero() {
            return faults.delay;
        }
        let jitter = faults.jitter.as_secs_f64();
        let offset = (self.unit() * 2.0 - 1.0) * jitter;
        Duration::from_secs_f64((faults.delay.as_secs_f64() + offset).max(0.0))
    }
}

/// Reads the next unit: one frame (length prefix included) or one chunk. `None` at the end of
/// the stream (a frame cut short by the end is forwarded as it is).
async fn read_unit<R: AsyncRead + Unpin>(reader: &mut R, framed: bool) -> Option<Vec<u8>> {
    if !framed {
        let mut chunk = vec![0u8; 16 * 1024];
        let read = reader.read(&mut chunk).await.ok()?;
        chunk.truncate(read);
        return (read > 0).then_some(chunk);
    }
    let mut frame = vec![0u8; 4];
    reader.read_exact(&mut frame).await.ok()?;
    let len = u32::from_le_bytes(frame[..4].try_into().expect("four bytes")) as usize;
    frame.resize(4 + len, 0);
    let mut filled = 4;
    while filled < frame.len() {
        match reader.read(&mut frame[filled..]).await {
            Ok(0) | Err(_) => {
                frame.truncate(filled);
                break;
            }
            Ok(read) => filled += read,
        }
    }
    Some(frame)
}

/// One direction: reads units from `from`, applies the link's faults and writes them to `to`:
/// a framed link writes each frame once its own delay is over (so frames reorder), a plain
/// link keeps chunk order (a chunk leaves no earlier than the one before it). Shuts `to` down
/// once `from` ends and every held unit went out; a reset ends it at once, losing them.
async fn pump<R, W>(from: &mut R, to: &mut W, shared: &Shared, stream: u64) -> Result<(), End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // (when to write it, or `None` for now; the unit)
    let (held, mut release) = mpsc::unbounded_channel::<(Option<Instant>, Vec<u8>)>();
    let counters = &shared.counters;
    let read = async move {
        let mut rng: Option<Rng> = None;
        let mut first = true;
        while let Some(unit) = read_unit(from, shared.framed).await {
            let faults = *shared.faults.borrow();
            let rng = rng.get_or_insert_with(|| Rng::new(faults.seed, stream));
            if rng.chance(faults.reset) {
                counters.resets.fetch_add(1, Ordering::Relaxed);
                return Err(End::Reset);
            }
            let handshake = std::mem::replace(&mut first, false);
            if shared.framed && !handshake && rng.chance(faults.drop) {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            counters.forwarded.fetch_add(1, Ordering::Relaxed);
            let delay = rng.delay(&faults);
            if delay.is_zero() {
                let _ = held.send((None, unit));
            } else if shared.framed {
                let held = held.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = held.send((None, unit));
                });
            } else {
                // One queue in read order; the writer waits out each chunk's delay in turn.
                let _ = held.send((Some(Instant::now() + delay), unit));
            }
        }
        Ok(())
    };
    let write = async move {
        while let Some((at, unit)) = release.recv().await {
            if let Some(at) = at {
                tokio::time::sleep_until(at).await;
            }
            if to.write_all(&unit).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::pin!(read, write);
    let mut reading = true;
    loop {
        tokio::select! {
            ended = &mut read, if reading => {
                ended?;
                reading = false;
            }
            // The writer ends once the reader and every delayed frame let go of the channel
            // (or the target stopped taking bytes).
            () = &mut write => return Ok(()),
        }
    }
}
