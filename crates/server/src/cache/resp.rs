//! The Redis protocol (RESP2) on `--resp ADDR`, so any Redis client can use the cache.
//!
//! Commands: GET, SET (no options), DEL, EXISTS, PING, ECHO, INFO, and what `redis-cli` and
//! `redis-benchmark` send around them (COMMAND, CONFIG GET, CLIENT, SELECT 0, QUIT). Requests
//! are RESP arrays of bulk strings or inline commands; pipelined requests are answered in order
//! with one write per batch read. A hit is served on the connection's own task straight from the
//! node's state. A malformed frame is answered with a RESP error and the connection is closed.
//!
//! DEL and EXISTS count the keys that had a value by reading them first; with concurrent
//! writers the count is a snapshot, the delete itself is exact.

use super::busy_poll::BusyPoll;
use super::engine::{CacheEngine, CacheOp, EngineError};
use super::key::validate_key;
use super::routes::stats_of;
use bytes::{Buf as _, Bytes, BytesMut};
use distsync_cache::{CacheError, OpResult};
use std::io::Write as _;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Most arguments of one command.
const ARGS_MAX: usize = 1024;
/// Longest bulk string accepted (values are further bounded by `--value-bytes-max`).
const BULK_BYTES_MAX: usize = 8 << 20;
/// Longest inline command or header line.
const LINE_BYTES_MAX: usize = 64 * 1024;

/// Largest value a GET hit copies into its reply under the node's core lock; a larger one is
/// referenced there and copied after the lock is released, so that no write to the node waits
/// behind a long copy.
const COPY_UNDER_LOCK_BYTES_MAX: usize = 4096;
/// RESP2's null bulk string: what GET answers for an absent key.
const NIL_REPLY: &[u8] = b"$-1\r\n";

/// How a GET hit left its reply.
enum HitReply {
    /// Written into the output under the lock.
    Written,
    /// A value over [`COPY_UNDER_LOCK_BYTES_MAX`], to write once the lock is released.
    Large(Bytes),
}

/// Why a frame cannot be parsed; the connection is closed after answering it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct RespError(String);

fn protocol(message: impl Into<String>) -> RespError {
    RespError(message.into())
}

/// Finds the `\r\n` ending the line that starts at `start`; `Ok(None)` when not yet received.
fn line_end(buf: &[u8], start: usize) -> Result<Option<usize>, RespError> {
    let window = &buf[start..buf.len().min(start + LINE_BYTES_MAX + 2)];
    match window.windows(2).position(|pair| pair == b"\r\n") {
        Some(offset) => Ok(Some(start + offset)),
        None if window.len() >= LINE_BYTES_MAX + 2 => Err(protocol("line too long")),
        None => Ok(None),
    }
}

fn parse_length(text: &[u8], what: &str) -> Result<i64, RespError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| protocol(format!("invalid {what} length")))
}

/// Parses one command at the start of `buf`: its arguments and the bytes it took, or `None`
/// when the frame is not complete yet.
///
/// # Errors
/// The bytes are not a RESP2 command (bad type byte, length, or terminator).
pub fn parse_command(buf: &[u8]) -> Result<Option<(Vec<Bytes>, usize)>, RespError> {
    let mut ranges = Vec::new();
    Ok(parse_ranges(buf, &mut ranges)?.map(|used| {
        let args = ranges
            .iter()
            .map(|range| Bytes::copy_from_slice(&buf[range.clone()]))
            .collect();
        (args, used)
    }))
}

/// Parses one command at the start of `buf` into the byte ranges of its arguments (`ranges` is
/// cleared first) and returns the bytes it took, or `None` when the frame is not complete yet.
/// Ranges rather than copies let the connection slice its arguments out of the read buffer
/// without allocating per request.
fn parse_ranges(buf: &[u8], ranges: &mut Vec<Range<usize>>) -> Result<Option<usize>, RespError> {
    ranges.clear();
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first != b'*' {
        // Inline command: one line of space-separated words (what `telnet` sends).
        let Some(end) = line_end(buf, 0)? else {
            return Ok(None);
        };
        let mut start = None;
        for (at, byte) in buf[..end].iter().enumerate() {
            let blank = *byte == b' ' || *byte == b'\t';
            match (blank, start) {
                (false, None) => start = Some(at),
                (true, Some(from)) => {
                    ranges.push(from..at);
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(from) = start {
            ranges.push(from..end);
        }
        return Ok(Some(end + 2));
    }
    let Some(end) = line_end(buf, 0)? else {
        return Ok(None);
    };
    let count = parse_length(&buf[1..end], "multibulk")?;
    if count <= 0 {
        return Ok(Some(end + 2));
    }
    if count as usize > ARGS_MAX {
        return Err(protocol("too many arguments"));
    }
    let mut position = end + 2;
    for _ in 0..count {
        if position >= buf.len() {
            return Ok(None);
        }
        if buf[position] != b'$' {
            return Err(protocol(format!(
                "expected '$', got '{}'",
                char::from(buf[position]).escape_default()
            )));
        }
        let Some(end) = line_end(buf, position)? else {
            return Ok(None);
        };
        let length = parse_length(&buf[position + 1..end], "bulk")?;
        if length < 0 || length as usize > BULK_BYTES_MAX {
            return Err(protocol("invalid bulk length"));
        }
        let start = end + 2;
        let stop = start + length as usize;
        if buf.len() < stop + 2 {
            return Ok(None);
        }
        if &buf[stop..stop + 2] != b"\r\n" {
            return Err(protocol("bulk string not terminated by CRLF"));
        }
        ranges.push(start..stop);
        position = stop + 2;
    }
    Ok(Some(position))
}

/// Appends `value` in decimal: replies are built per request, so no temporary `String`.
fn decimal(out: &mut Vec<u8>, value: i64) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{value}");
}

fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'$');
    decimal(out, data.len() as i64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn integer(out: &mut Vec<u8>, value: i64) {
    out.push(b':');
    decimal(out, value);
    out.extend_from_slice(b"\r\n");
}

fn error(out: &mut Vec<u8>, message: &str) {
    out.push(b'-');
    // A CR or LF would end the error line early and desynchronise the client.
    out.extend(
        message
            .bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

fn engine_error(out: &mut Vec<u8>, failure: EngineError) {
    let prefix = match &failure {
        EngineError::Refused(CacheError::ValueTooLarge { .. }) => "ERR",
        EngineError::Refused(_) => "BUSY",
        EngineError::Unavailable { .. }
        | EngineError::ShuttingDown
        | EngineError::NotInView { .. }
        | EngineError::NoQuorum { .. } => "TRYAGAIN",
    };
    error(out, &format!("{prefix} {failure}"));
}

/// One RESP event loop: a current-thread runtime of its own (one per `--resp-threads`) that
/// serves the connections [`accept_resp`] hands it. Replies are held back to the end of the
/// scheduler's round, and with a non-zero busy-poll window the thread keeps polling its sockets
/// after a request (`busy_poll.rs`); both assume the thread serves only its own connections.
#[derive(Debug, Clone)]
pub struct RespLane {
    runtime: tokio::runtime::Handle,
    engine: Arc<CacheEngine>,
    busy_poll: Arc<BusyPoll>,
    /// Connections this lane serves now.
    open: Arc<AtomicUsize>,
    /// Cleared when the lane's thread stops running [`RespLane::run`]: its runtime is gone
    /// with it, and a connection handed to it would be dropped unanswered.
    serving: Arc<AtomicBool>,
}

impl RespLane {
    /// A lane on the current-thread runtime `runtime`, whose thread must then run
    /// [`RespLane::run`].
    pub fn new(
        runtime: tokio::runtime::Handle,
        engine: Arc<CacheEngine>,
        busy_poll: Duration,
    ) -> Self {
        Self {
            runtime,
            engine,
            busy_poll: BusyPoll::new(busy_poll),
            open: Arc::new(AtomicUsize::new(0)),
            serving: Arc::new(AtomicBool::new(true)),
        }
    }

    /// How many connections this lane serves now.
    pub fn connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Keeps the lane's runtime serving, and runs its busy poller; never returns. The lane's
    /// thread blocks on this, or on a future that includes it: the runtime's connections run
    /// only while the thread is inside its `block_on`.
    ///
    /// The one way out is a panic in the future the thread blocks on (its tasks' panics stay
    /// in those tasks). Dropping this future then marks the lane as no longer serving, so
    /// [`accept_resp`] stops handing it connections.
    pub async fn run(&self) {
        let _stopped_on_drop = StopServing(Arc::clone(&self.serving));
        Arc::clone(&self.busy_poll).run().await;
        std::future::pending::<()>().await;
    }

    /// Whether the lane's thread still runs [`RespLane::run`].
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// Serves `stream` on this lane's thread.
    fn serve(&self, stream: std::net::TcpStream, remote: std::net::SocketAddr) {
        let engine = Arc::clone(&self.engine);
        let busy_poll = Arc::clone(&self.busy_poll);
        let open = OpenConnection::new(&self.open);
        self.runtime.spawn(async move {
            // Registered with the lane's own reactor, so its readiness wakes only that thread.
            let served = match TcpStream::from_std(stream) {
                Ok(stream) => serve_connection(stream, engine, busy_poll).await,
                Err(failure) => Err(failure),
            };
            drop(open);
            if let Err(failure) = served {
                tracing::debug!(%remote, error = %failure, "RESP connection closed");
            }
        });
    }
}

/// Marks a lane as no longer serving when its [`RespLane::run`] future is dropped.
struct StopServing(Arc<AtomicBool>);

impl Drop for StopServing {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
        tracing::error!("a RESP thread stopped; its connections are closed and it gets no more");
    }
}

/// One connection in a lane's count, for as long as its task lives.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(open))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts RESP connections until the task is aborted, and deals each to the serving lane
/// with the fewest open connections (ties go to the next lane in turn).
///
/// Dealt, not taken: with every lane accepting on the same socket, the lane that happened to be
/// awake took each new connection, and `redis-benchmark`'s 50 connections all landed on one of
/// two threads (docs/performance/cache.md, "2026-12-05 morning"). Counting open connections,
/// not turns, keeps the lanes even when clients close some connections and open others.
pub async fn accept_resp(listener: TcpListener, lanes: Vec<RespLane>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, lanes = lanes.len(), "RESP listener serving");
    }
    if lanes.is_empty() {
        tracing::error!("RESP listener has no lane to serve its connections");
        return;
    }
    let mut next_turn = 0;
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(failure) => {
                tracing::warn!(error = %failure, "RESP accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Some(lane) = least_busy_lane(&lanes, next_turn) else {
            // Dropping the listener makes clients' connects fail, which they notice.
            tracing::error!("no RESP thread is serving; the RESP listener closes");
            return;
        };
        next_turn = (lane + 1) % lanes.len();
        match stream.into_std() {
            Ok(stream) => lanes[lane].serve(stream, remote),
            Err(failure) => tracing::warn!(%remote, error = %failure, "RESP connection lost"),
        }
    }
}

/// The index of the serving lane with the fewest open connections, looking from `first_turn`
/// onwards so that ties rotate; `None` when no lane serves.
fn least_busy_lane(lanes: &[RespLane], first_turn: usize) -> Option<usize> {
    (0..lanes.len())
        .map(|offset| (first_turn + offset) % lanes.len())
        .filter(|&index| lanes[index].is_serving())
        .min_by_key(|&index| lanes[index].connections())
}

async fn serve_connection(
    mut stream: TcpStream,
    engine: Arc<CacheEngine>,
    busy_poll: Arc<BusyPoll>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut out = Vec::with_capacity(16 * 1024);
    let mut ranges = Vec::new();
    loop {
        let mut close = false;
        loop {
            match parse_ranges(&input, &mut ranges) {
                Ok(Some(used)) => {
                    // The arguments are read in place; whatever the node keeps (a key or value
                    // it stores) is copied out by `execute`. Slicing them as `Bytes` cost an
                    // atomic reference count per argument, a few percent of a pipelined GET.
                    let args = Args {
                        frame: &input[..used],
                        ranges: &ranges,
                    };
                    let quit = !args.is_empty() && execute(&engine, &args, &mut out).await;
                    input.advance(used);
                    if quit {
                        close = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(failure) => {
                    error(&mut out, &format!("ERR {failure}"));
                    close = true;
                    break;
                }
            }
        }
        if !out.is_empty() {
            // Let the other connections the scheduler has ready in this round be read and
            // answered first, so this thread's replies go out close together, as redis-server
            // writes its replies after processing every ready client. A client woken by the
            // first reply is still running when the next ones arrive, and those writes do not
            // wake it again; written as each batch was answered, the client went back to sleep
            // in between, and the wake-ups cost 30 % of the node's CPU in a pipelined
            // `redis-benchmark` (docs/performance/cache.md, "2026-12-04 night"). The price: a
            // reply waits for the round's other connections (a round runs at most tokio's
            // event interval of tasks), and a lone connection pays one non-blocking poll of the
            // sockets per reply.
            tokio::task::yield_now().await;
            stream.write_all(&out).await?;
            out.clear();
        }
        if close {
            return Ok(());
        }
        if stream.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
        busy_poll.on_request();
    }
}

/// A copy of an argument that the node may keep, detached from the connection's read buffer.
fn owned(arg: &[u8]) -> Bytes {
    Bytes::copy_from_slice(arg)
}

/// One command's arguments, in place in the read buffer.
struct Args<'a> {
    frame: &'a [u8],
    ranges: &'a [Range<usize>],
}

impl Args<'_> {
    fn len(&self) -> usize {
        self.ranges.len()
    }

    fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The arguments from the `first`.
    fn from(&self, first: usize) -> impl Iterator<Item = &[u8]> {
        self.ranges[first..]
            .iter()
            .map(|range| &self.frame[range.clone()])
    }
}

impl std::ops::Index<usize> for Args<'_> {
    type Output = [u8];

    fn index(&self, index: usize) -> &[u8] {
        &self.frame[self.ranges[index].clone()]
    }
}

/// Runs one command, appending its reply. Returns true when the connection should close.
async fn execute(engine: &Arc<CacheEngine>, args: &Args<'_>, out: &mut Vec<u8>) -> bool {
    // Command names are short; a longer word is no command, and stays unmatched (empty).
    let mut upper = [0u8; 16];
    let name = match args[0].len() {
        len @ 1..=16 => {
            upper[..len].copy_from_slice(&args[0]);
            upper[..len].make_ascii_uppercase();
            &upper[..len]
        }
        _ => &upper[..0],
    };
    let arity = |n: usize, out: &mut Vec<u8>| {
        let ok = args.len() == n;
        if !ok {
            error(
                out,
                &format!(
                    "ERR wrong number of arguments for '{}' command",
                    String::from_utf8_lossy(&args[0]).to_lowercase()
                ),
            );
        }
        ok
    };
    let valid_key = |key: &[u8], out: &mut Vec<u8>| match validate_key(key) {
        Ok(()) => true,
        Err(problem) => {
            error(out, &format!("ERR invalid key: {problem}"));
            false
        }
    };
    match name {
        b"GET" => {
            if arity(2, out) && valid_key(&args[1], out) {
                // Grown here if at all, not under the lock with a pipeline's replies in it.
                out.reserve(COPY_UNDER_LOCK_BYTES_MAX + 32);
                let hit = engine.read_hit_with(&args[1], |data| match &data.value {
                    Some(value) if value.len() > COPY_UNDER_LOCK_BYTES_MAX => {
                        HitReply::Large(value.clone())
                    }
                    Some(value) => {
                        bulk(out, value);
                        HitReply::Written
                    }
                    None => {
                        out.extend_from_slice(NIL_REPLY);
                        HitReply::Written
                    }
                });
                let found = match hit {
                    Some(HitReply::Written) => return false,
                    Some(HitReply::Large(value)) => {
                        bulk(out, &value);
                        return false;
                    }
                    None => engine.execute(CacheOp::Get(owned(&args[1]))).await,
                };
                match found {
                    Ok(OpResult::Read(data)) => match data.value {
                        Some(value) => bulk(out, &value),
                        None => out.extend_from_slice(NIL_REPLY),
                    },
                    Ok(other) => error(out, &format!("ERR a read finished as {other:?}")),
                    Err(failure) => engine_error(out, failure),
                }
            }
        }
        b"SET" => {
            if args.len() > 3 {
                error(out, "ERR syntax error (SET options are not supported)");
            } else if arity(3, out) && valid_key(&args[1], out) {
                match engine
                    .execute(CacheOp::Put(owned(&args[1]), owned(&args[2])))
                    .await
                {
                    Ok(_) => out.extend_from_slice(b"+OK\r\n"),
                    Err(failure) => engine_error(out, failure),
                }
            }
        }
        b"DEL" | b"EXISTS" => {
            if args.len() < 2 {
                arity(2, out);
                return false;
            }
            if !args.from(1).all(|key| valid_key(key, out)) {
                return false;
            }
            let mut count = 0;
            for key in args.from(1) {
                match engine.execute(CacheOp::Get(owned(key))).await {
                    Ok(OpResult::Read(data)) if data.value.is_some() => count += 1,
                    Ok(_) => {}
                    Err(failure) => {
                        engine_error(out, failure);
                        return false;
                    }
                }
                if name == b"DEL"
                    && let Err(failure) = engine.execute(CacheOp::Delete(owned(key))).await
                {
                    engine_error(out, failure);
                    return false;
                }
            }
            integer(out, count);
        }
        b"PING" => match args.len() {
            1 => out.extend_from_slice(b"+PONG\r\n"),
            2 => bulk(out, &args[1]),
            _ => {
                arity(2, out);
            }
        },
        b"ECHO" => {
            if arity(2, out) {
                bulk(out, &args[1]);
            }
        }
        b"INFO" => bulk(out, info(engine).as_bytes()),
        b"CONFIG" => {
            // redis-benchmark asks for `save` and `appendonly`; the cache has neither.
            let is_get = args.len() == 3 && args[1].eq_ignore_ascii_case(b"GET");
            if !is_get {
                error(out, "ERR only CONFIG GET is supported");
            } else if args[2].eq_ignore_ascii_case(b"save") {
                out.extend_from_slice(b"*2\r\n");
                bulk(out, b"save");
                bulk(out, b"");
            } else if args[2].eq_ignore_ascii_case(b"appendonly") {
                out.extend_from_slice(b"*2\r\n");
                bulk(out, b"appendonly");
                bulk(out, b"no");
            } else {
                out.extend_from_slice(b"*0\r\n");
            }
        }
        // redis-cli asks for command docs for its hints; it works without them.
        b"COMMAND" => out.extend_from_slice(b"*0\r\n"),
        b"CLIENT" => out.extend_from_slice(b"+OK\r\n"),
        b"SELECT" => {
            if arity(2, out) {
                if &args[1] == b"0" {
                    out.extend_from_slice(b"+OK\r\n");
                } else {
                    error(
                        out,
                        "ERR DB index is out of range (the cache has one database)",
                    );
                }
            }
        }
        b"QUIT" => {
            out.extend_from_slice(b"+OK\r\n");
            return true;
        }
        _ => error(
            out,
            &format!(
                "ERR unknown command '{}'",
                String::from_utf8_lossy(&args[0])
                    .chars()
                    .take(64)
                    .collect::<String>()
            ),
        ),
    }
    false
}

fn info(engine: &CacheEngine) -> String {
    let stats = stats_of(engine);
    format!(
        "# Server\r\nredis_version:7.0.0\r\ndistsync_version:{}\r\ndistsync_node:{}\r\n\r\n\
         # Stats\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\nevicted_keys:{}\r\n\
         invalidations_sent:{}\r\ninvalidations_received:{}\r\nwrite_backs:{}\r\n\r\n\
         # Keyspace\r\nlines:{}\r\nbytes:{}\r\npolicy:{}\r\nwrite_policy:{}\r\n",
        env!("CARGO_PKG_VERSION"),
        stats.node,
        stats.hits,
        stats.misses,
        stats.evictions,
        stats.invalidations_sent,
        stats.invalidations_received,
        stats.write_backs,
        stats.lines,
        stats.bytes,
        stats.policy,
        stats.write_policy,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node that was never started: enough for commands that do not touch the cache.
    fn idle_engine() -> Arc<CacheEngine> {
        use super::super::{BackingStore, CacheClusterSpec, EngineConfig, Membership};
        let spec: CacheClusterSpec = "c1=127.0.0.1:1/127.0.0.1:2".parse().unwrap();
        let membership = Membership::new(spec.members.clone(), &spec.members[0]).unwrap();
        let config = EngineConfig {
            name: "c1".into(),
            core: distsync_cache::CacheConfig::default(),
            tick: Duration::from_millis(10),
            op_timeout: Duration::from_secs(1),
            query_timeout: Duration::from_secs(1),
            failure_timeout: Duration::from_secs(1),
            ignore_quorum: false,
            record_transitions: false,
        };
        let backing = BackingStore::open("memory", Duration::from_secs(1)).unwrap();
        CacheEngine::new(config, membership, backing).unwrap()
    }

    /// Sends PING on `client` and waits for PONG: the connection is then served by a lane.
    fn ping(client: &mut std::net::TcpStream) {
        use std::io::{Read, Write};
        client.write_all(b"PING\r\n").unwrap();
        let mut reply = [0u8; 7];
        client.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"+PONG\r\n");
    }

    /// Two lanes on threads of their own, as `serve cache` runs them, with the acceptor on the
    /// first. With `second_dies`, the second lane's thread panics once it runs its lane, and
    /// this returns after that thread has ended.
    fn serve_on_two_lanes(second_dies: bool) -> (std::net::SocketAddr, Vec<RespLane>) {
        let engine = idle_engine();
        let runtimes: Vec<_> = (0..2)
            .map(|_| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
            })
            .collect();
        let lanes: Vec<_> = runtimes
            .iter()
            .map(|runtime| {
                RespLane::new(
                    runtime.handle().clone(),
                    Arc::clone(&engine),
                    Duration::ZERO,
                )
            })
            .collect();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut acceptor = Some((listener, lanes.clone()));
        let mut threads = Vec::new();
        for (runtime, lane) in runtimes.into_iter().zip(lanes.clone()) {
            let acceptor = acceptor.take();
            threads.push(std::thread::spawn(move || {
                runtime.block_on(async move {
                    match acceptor {
                        Some((listener, lanes)) => {
                            let listener = TcpListener::from_std(listener).unwrap();
                            tokio::join!(accept_resp(listener, lanes), lane.run());
                        }
                        None if second_dies => {
                            let dies = async {
                                tokio::task::yield_now().await;
                                panic!("the lane's thread dies (on purpose)");
                            };
                            tokio::join!(lane.run(), dies);
                        }
                        None => lane.run().await,
                    }
                });
            }));
        }
        if second_dies {
            let second = threads.pop().unwrap();
            assert!(second.join().is_err(), "the second lane's thread panicked");
        }
        (addr, lanes)
    }

    fn connect_and_ping(addr: std::net::SocketAddr, count: usize) -> Vec<std::net::TcpStream> {
        let mut clients: Vec<_> = (0..count)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        for client in &mut clients {
            ping(client);
        }
        clients
    }

    fn open_per_lane(lanes: &[RespLane]) -> Vec<usize> {
        lanes.iter().map(RespLane::connections).collect()
    }

    #[test]
    fn connections_go_to_the_lane_serving_fewest() {
        let (addr, lanes) = serve_on_two_lanes(false);
        let clients = connect_and_ping(addr, 6);
        assert_eq!(open_per_lane(&lanes), [3, 3], "connections per lane");
        // Ties rotate, so clients 0, 2 and 4 went to the first lane. Once they are closed, the
        // next three connections go there too; dealt in turn, the second lane would get two.
        let (_kept, closed): (Vec<_>, Vec<_>) = clients
            .into_iter()
            .enumerate()
            .partition(|(index, _)| index % 2 == 1);
        drop(closed);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while open_per_lane(&lanes)[0] > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "closed connections still counted"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let _more = connect_and_ping(addr, 3);
        assert_eq!(open_per_lane(&lanes), [3, 3], "connections per lane");
    }

    #[test]
    fn a_lane_whose_thread_died_gets_no_connections() {
        let (addr, lanes) = serve_on_two_lanes(true);
        assert!(lanes[0].is_serving() && !lanes[1].is_serving());
        // Every connection is answered: none was handed to the dead lane.
        let _clients = connect_and_ping(addr, 4);
        assert_eq!(open_per_lane(&lanes), [4, 0], "connections per lane");
    }

    fn parsed(input: &[u8]) -> (Vec<Bytes>, usize) {
        parse_command(input).unwrap().unwrap()
    }

    fn words(words: &[&'static [u8]]) -> Vec<Bytes> {
        words.iter().map(|w| Bytes::from_static(w)).collect()
    }

    #[test]
    fn multibulk_commands_parse_and_report_their_length() {
        // Proves argument extraction, binary-safe values and the consumed length (pipelining).
        let frame = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n*1\r\n$4\r\nPING\r\n";
        let (args, used) = parsed(frame);
        assert_eq!(args, words(&[b"SET", b"k", b"a\r\nb"]));
        assert_eq!(used, 30);
        let (args, used) = parsed(&frame[used..]);
        assert_eq!((args, used), (words(&[b"PING"]), 14));
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        // Proves every cut point of a valid frame asks for more instead of failing.
        let frame = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
        for cut in 0..frame.len() {
            assert_eq!(parse_command(&frame[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse_command(frame).unwrap().is_some());
    }

    #[test]
    fn inline_commands_split_on_spaces() {
        // Proves the telnet-style form redis-cli users type.
        let (args, used) = parse_command(b"SET  k  v\r\n").unwrap().unwrap();
        assert_eq!(
            args,
            vec![Bytes::from("SET"), Bytes::from("k"), Bytes::from("v")]
        );
        assert_eq!(used, 11);
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        // Proves each kind of garbage is refused with a protocol error.
        for bad in [
            &b"*x\r\n"[..],
            b"*1\r\n:5\r\n",
            b"*1\r\n$-5\r\n",
            b"*1\r\n$3\r\nabcde\r\n",
            b"*1\r\n$99999999999\r\n",
            b"*99999999\r\n",
            b"*1\r\n$1\r\n\xff\xff\xff",
        ] {
            let result = parse_command(bad);
            assert!(
                result.is_err() || result == Ok(None),
                "{bad:?} gave {result:?}"
            );
        }
        assert!(parse_command(b"*1\r\n$3\r\nabcde\r\n").is_err());
        let long_line = vec![b'a'; LINE_BYTES_MAX + 10];
        assert!(parse_command(&long_line).is_err());
    }

    #[test]
    fn error_lines_cannot_be_split_by_newlines_in_the_message() {
        // Proves an error quoting client input stays one RESP line.
        let mut out = Vec::new();
        error(&mut out, "ERR bad\r\nthing");
        assert_eq!(out, b"-ERR bad  thing\r\n");
    }
}
