//! A seeded, simulated network, generic over the message type.
//!
//! Nothing here knows about Raft: the Raft simulation and the cache simulation both carry their
//! own message types over it. Time is simulated microseconds handed in by the caller; the network
//! never reads a clock. Every random choice (drop, duplicate, delay, reorder) comes from one
//! [`ChaCha8Rng`] seeded by the simulation's root seed, so a seed replays exactly.
//!
//! Faults, per directed link `(from, to)`:
//! - [`LinkFaults`]: drop, duplicate, delay range and reorder (an extra delay that lets later
//!   messages overtake), with a network-wide default and per-link overrides;
//! - cuts: a cut link loses every message sent on it and every message in flight on it when the
//!   message comes due ([`SimNetwork::partition`], [`SimNetwork::partition_bridge`],
//!   [`SimNetwork::cut_one_way`], [`SimNetwork::isolate`], [`SimNetwork::heal`]);
//! - clogs: a clogged link holds messages (a full TCP buffer) and releases them, freshly delayed,
//!   on [`SimNetwork::unclog_link`] (FoundationDB's swizzle-clog).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Identity of a simulated host.
pub type HostId = u64;

/// What the network needs to know about a message: its size and a short kind name, for counters.
pub trait SimMessage: Clone {
    /// Approximate wire size in bytes.
    fn size_bytes(&self) -> usize;
    /// A short name of the message kind, used as a counter key.
    fn kind(&self) -> &'static str;
}

/// Fault probabilities and delays of one directed link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkFaults {
    /// Probability that a message is lost.
    pub drop_probability: f64,
    /// Probability that a message is delivered twice (each copy with its own delay).
    pub duplicate_probability: f64,
    /// Minimum one-way delay.
    pub delay_min_us: u64,
    /// Maximum one-way delay (inclusive); the delay is uniform in `[min, max]`.
    pub delay_max_us: u64,
    /// Probability that a message gets `reorder_delay_max_us` of extra delay on top.
    pub reorder_probability: f64,
    /// Upper bound of the extra delay of a reordered message.
    pub reorder_delay_max_us: u64,
}

impl LinkFaults {
    /// A reliable link with a fixed small delay.
    pub fn reliable(delay_us: u64) -> Self {
        LinkFaults {
            drop_probability: 0.0,
            duplicate_probability: 0.0,
            delay_min_us: delay_us,
            delay_max_us: delay_us,
            reorder_probability: 0.0,
            reorder_delay_max_us: 0,
        }
    }
}

impl Default for LinkFaults {
    fn default() -> Self {
        LinkFaults::reliable(1_000)
    }
}

/// A message in flight.
#[derive(Clone, Debug)]
pub struct Envelope<M> {
    /// Sender.
    pub from: HostId,
    /// Recipient.
    pub to: HostId,
    /// Simulated time at which it arrives.
    pub deliver_at_us: u64,
    /// The message.
    pub message: M,
}

/// What happened to a message handed to [`SimNetwork::send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SendOutcome {
    /// In flight (possibly twice).
    Queued,
    /// Lost to a random drop.
    Dropped,
    /// Lost because the link is cut.
    Cut,
    /// Held on a clogged link until it is unclogged.
    Held,
}

/// Counters of one message kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindStats {
    /// Messages sent (before drops).
    pub messages: u64,
    /// Bytes sent (before drops).
    pub bytes: u64,
}

/// Traffic counters, for message- and byte-count criteria.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages handed to `send`.
    pub messages_sent: u64,
    /// Bytes handed to `send`.
    pub bytes_sent: u64,
    /// Messages delivered (duplicates count twice).
    pub delivered: u64,
    /// Messages lost to random drops or cuts.
    pub dropped: u64,
    /// Extra copies created by duplication.
    pub duplicated: u64,
    /// Per message kind.
    pub by_kind: BTreeMap<&'static str, KindStats>,
    /// Messages sent per directed link.
    pub by_link: BTreeMap<(HostId, HostId), KindStats>,
}

/// The simulated network.
#[derive(Debug)]
pub struct SimNetwork<M> {
    rng: ChaCha8Rng,
    default_faults: LinkFaults,
    link_faults: BTreeMap<(HostId, HostId), LinkFaults>,
    /// Directed links that lose everything.
    cuts: BTreeSet<(HostId, HostId)>,
    /// Directed links that hold everything until unclogged.
    clogged: BTreeSet<(HostId, HostId)>,
    held: BTreeMap<(HostId, HostId), VecDeque<M>>,
    /// Keyed by (delivery time, sequence number) so equal times keep send order: a total,
    /// deterministic order.
    in_flight: BTreeMap<(u64, u64), Envelope<M>>,
    next_seq: u64,
    stats: NetStats,
}

impl<M: SimMessage> SimNetwork<M> {
    /// A reliable network (1 ms delay) whose random choices come from `seed`.
    pub fn new(seed: u64) -> Self {
        SimNetwork {
            rng: ChaCha8Rng::seed_from_u64(seed),
            default_faults: LinkFaults::default(),
            link_faults: BTreeMap::new(),
            cuts: BTreeSet::new(),
            clogged: BTreeSet::new(),
            held: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            next_seq: 0,
            stats: NetStats::default(),
        }
    }

    /// Sets the faults of every link without an override.
    pub fn set_default_faults(&mut self, faults: LinkFaults) {
        self.default_faults = faults;
    }

    /// The faults of links without an override.
    pub fn default_faults(&self) -> LinkFaults {
        self.default_faults
    }

    /// Overrides the faults of one directed link.
    pub fn set_link_faults(&mut self, from: HostId, to: HostId, faults: LinkFaults) {
        self.link_faults.insert((from, to), faults);
    }

    /// Removes every per-link override.
    pub fn clear_link_faults(&mut self) {
        self.link_faults.clear();
    }

    fn faults(&self, from: HostId, to: HostId) -> LinkFaults {
        self.link_faults
            .get(&(from, to))
            .copied()
            .unwrap_or(self.default_faults)
    }

    /// Sends `message` at simulated time `now_us`.
    pub fn send(&mut self, now_us: u64, from: HostId, to: HostId, message: M) -> SendOutcome {
        let size = message.size_bytes() as u64;
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += size;
        let kind = self.stats.by_kind.entry(message.kind()).or_default();
        kind.messages += 1;
        kind.bytes += size;
        let link = self.stats.by_link.entry((from, to)).or_default();
        link.messages += 1;
        link.bytes += size;

        if self.cuts.contains(&(from, to)) {
            self.stats.dropped += 1;
            return SendOutcome::Cut;
        }
        if self.clogged.contains(&(from, to)) {
            self.held.entry((from, to)).or_default().push_back(message);
            return SendOutcome::Held;
        }
        let faults = self.faults(from, to);
        if faults.drop_probability > 0.0 && self.rng.random_bool(faults.drop_probability.min(1.0)) {
            self.stats.dropped += 1;
            return SendOutcome::Dropped;
        }
        if faults.duplicate_probability > 0.0
            && self.rng.random_bool(faults.duplicate_probability.min(1.0))
        {
            self.stats.duplicated += 1;
            self.enqueue(now_us, from, to, message.clone(), faults);
        }
        self.enqueue(now_us, from, to, message, faults);
        SendOutcome::Queued
    }

    fn enqueue(&mut self, now_us: u64, from: HostId, to: HostId, message: M, faults: LinkFaults) {
        let mut delay = if faults.delay_max_us > faults.delay_min_us {
            self.rng
                .random_range(faults.delay_min_us..=faults.delay_max_us)
        } else {
            faults.delay_min_us
        };
        if faults.reorder_probability > 0.0
            && faults.reorder_delay_max_us > 0
            && self.rng.random_bool(faults.reorder_probability.min(1.0))
        {
            delay += self.rng.random_range(0..=faults.reorder_delay_max_us);
        }
        let deliver_at_us = now_us + delay;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.insert(
            (deliver_at_us, seq),
            Envelope {
                from,
                to,
                deliver_at_us,
                message,
            },
        );
    }

    /// When the next in-flight message comes due, if any.
    pub fn next_delivery_at(&self) -> Option<u64> {
        self.in_flight.keys().next().map(|(at, _)| *at)
    }

    /// Takes the earliest message due at or before `now_us`. A message whose link was cut while
    /// it was in flight is lost (counted as dropped) and the next one is considered.
    pub fn pop_due(&mut self, now_us: u64) -> Option<Envelope<M>> {
        loop {
            let (&key, _) = self.in_flight.iter().next()?;
            if key.0 > now_us {
                return None;
            }
            let envelope = self
                .in_flight
                .remove(&key)
                .expect("key was just read from the map");
            if self.cuts.contains(&(envelope.from, envelope.to)) {
                self.stats.dropped += 1;
                continue;
            }
            self.stats.delivered += 1;
            return Some(envelope);
        }
    }

    /// Messages in flight (not counting held ones).
    pub fn in_flight_len(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether the directed link is cut.
    pub fn is_cut(&self, from: HostId, to: HostId) -> bool {
        self.cuts.contains(&(from, to))
    }

    /// Cuts the directed link `from -> to` only (an asymmetric partition).
    pub fn cut_one_way(&mut self, from: HostId, to: HostId) {
        if from != to {
            self.cuts.insert((from, to));
        }
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&mut self, a: HostId, b: HostId) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Restores the directed link `from -> to`.
    pub fn restore_one_way(&mut self, from: HostId, to: HostId) {
        self.cuts.remove(&(from, to));
    }

    /// Symmetric partition: hosts in different groups cannot talk; a host in no group is cut
    /// from everyone.
    pub fn partition(&mut self, groups: &[Vec<HostId>], hosts: &[HostId]) {
        let group_of = |h: HostId| groups.iter().position(|g| g.contains(&h));
        for &a in hosts {
            for &b in hosts {
                if a == b {
                    continue;
                }
                match (group_of(a), group_of(b)) {
                    (Some(x), Some(y)) if x == y => {}
                    _ => self.cut_one_way(a, b),
                }
            }
        }
    }

    /// Two halves that cannot talk to each other, plus a `bridge` host that talks to both.
    pub fn partition_bridge(&mut self, left: &[HostId], right: &[HostId], bridge: HostId) {
        for &a in left {
            for &b in right {
                if a != bridge && b != bridge {
                    self.cut(a, b);
                }
            }
        }
    }

    /// Cuts `host` from every other host in `hosts`, both ways.
    pub fn isolate(&mut self, host: HostId, hosts: &[HostId]) {
        for &other in hosts {
            self.cut(host, other);
        }
    }

    /// Reconnects `host` with every other host in `hosts`, both ways.
    pub fn reconnect(&mut self, host: HostId, hosts: &[HostId]) {
        for &other in hosts {
            self.restore_one_way(host, other);
            self.restore_one_way(other, host);
        }
    }

    /// Removes every cut (clogs stay).
    pub fn heal(&mut self) {
        self.cuts.clear();
    }

    /// Holds messages on the directed link until it is unclogged.
    pub fn clog_link(&mut self, from: HostId, to: HostId) {
        if from != to {
            self.clogged.insert((from, to));
        }
    }

    /// Releases the held messages of a clogged link, each with a fresh delay from `now_us`.
    pub fn unclog_link(&mut self, now_us: u64, from: HostId, to: HostId) {
        self.clogged.remove(&(from, to));
        let faults = self.faults(from, to);
        if let Some(queue) = self.held.remove(&(from, to)) {
            for message in queue {
                self.enqueue(now_us, from, to, message, faults);
            }
        }
    }

    /// Unclogs every link.
    pub fn unclog_all(&mut self, now_us: u64) {
        let links: Vec<_> = self.clogged.iter().copied().collect();
        for (from, to) in links {
            self.unclog_link(now_us, from, to);
        }
    }

    /// Number of clogged links.
    pub fn clogged_len(&self) -> usize {
        self.clogged.len()
    }

    /// Drops every message in flight or held to or from `host` (it crashed: its sockets and
    /// their buffers are gone).
    pub fn drop_host_traffic(&mut self, host: HostId) {
        let before = self.in_flight.len();
        self.in_flight.retain(|_, e| e.from != host && e.to != host);
        let mut lost = (before - self.in_flight.len()) as u64;
        self.held.retain(|(from, to), queue| {
            let keep = *from != host && *to != host;
            if !keep {
                lost += queue.len() as u64;
            }
            keep
        });
        self.stats.dropped += lost;
    }

    /// The counters so far.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// Zeroes the counters (to measure one phase of a test).
    pub fn reset_stats(&mut self) {
        self.stats = NetStats::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Ping(u32);

    impl SimMessage for Ping {
        fn size_bytes(&self) -> usize {
            4
        }
        fn kind(&self) -> &'static str {
            "Ping"
        }
    }

    fn drain<M: SimMessage>(net: &mut SimNetwork<M>, until: u64) -> Vec<Envelope<M>> {
        let mut out = Vec::new();
        while let Some(e) = net.pop_due(until) {
            out.push(e);
        }
        out
    }

    #[test]
    fn same_seed_gives_same_delivery_schedule() {
        // Proves determinism: two networks with one seed and heavy faults deliver identically.
        let run = |seed| {
            let mut net = SimNetwork::new(seed);
            net.set_default_faults(LinkFaults {
                drop_probability: 0.3,
                duplicate_probability: 0.2,
                delay_min_us: 10,
                delay_max_us: 500,
                reorder_probability: 0.3,
                reorder_delay_max_us: 5_000,
            });
            for i in 0..200 {
                net.send(u64::from(i), 1, 2, Ping(i));
            }
            drain(&mut net, u64::MAX)
                .into_iter()
                .map(|e| (e.deliver_at_us, e.message.0))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn cut_links_lose_messages_in_flight_and_new_ones() {
        // Proves a partition drops both queued and new traffic on cut links only.
        let mut net = SimNetwork::new(1);
        net.send(0, 1, 2, Ping(1));
        net.send(0, 2, 1, Ping(2));
        net.cut_one_way(1, 2);
        assert_eq!(net.send(0, 1, 2, Ping(3)), SendOutcome::Cut);
        let got: Vec<_> = drain(&mut net, 10_000)
            .iter()
            .map(|e| e.message.0)
            .collect();
        assert_eq!(got, vec![2]);
        net.heal();
        assert_eq!(net.send(0, 1, 2, Ping(4)), SendOutcome::Queued);
    }

    #[test]
    fn bridge_host_sees_both_sides() {
        // Proves the bridge shape: halves are cut from each other, the bridge talks to all.
        let mut net: SimNetwork<Ping> = SimNetwork::new(1);
        net.partition_bridge(&[1, 2, 3], &[3, 4, 5], 3);
        assert!(net.is_cut(1, 4) && net.is_cut(5, 2));
        assert!(!net.is_cut(3, 1) && !net.is_cut(3, 5) && !net.is_cut(4, 3));
        assert!(!net.is_cut(1, 2) && !net.is_cut(4, 5));
    }

    #[test]
    fn clogged_link_holds_then_releases() {
        // Proves clog holds messages without losing them, and unclog delivers them.
        let mut net = SimNetwork::new(1);
        net.clog_link(1, 2);
        assert_eq!(net.send(0, 1, 2, Ping(1)), SendOutcome::Held);
        assert!(drain(&mut net, 1_000_000).is_empty());
        net.unclog_link(1_000_000, 1, 2);
        assert_eq!(drain(&mut net, 2_000_000).len(), 1);
    }

    #[test]
    fn crash_drops_traffic_of_the_host() {
        // Proves a crashed host's in-flight messages vanish and others stay.
        let mut net = SimNetwork::new(1);
        net.send(0, 1, 2, Ping(1));
        net.send(0, 3, 2, Ping(2));
        net.drop_host_traffic(1);
        let got: Vec<_> = drain(&mut net, 10_000)
            .iter()
            .map(|e| e.message.0)
            .collect();
        assert_eq!(got, vec![2]);
        assert_eq!(net.stats().messages_sent, 2);
    }
}
