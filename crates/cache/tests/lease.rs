//! C-09 (core part): a node that cannot hear from a key's home stops serving that key once its
//! coherence lease runs out, and serves again as soon as the home answers a heartbeat; and it
//! knows when fewer than a majority of its view confirm its leases (the shell then serves
//! nothing at all).

use crate::common::{Cluster, config};
use distsync_cache::{CacheConfig, CacheNode, CoherenceMessage, Key, NodeId, OpResult, OpStep};

fn lease_config() -> CacheConfig {
    CacheConfig {
        lease_ticks: 20,
        heartbeat_interval_ticks: 5,
        ..config(8)
    }
}

#[test]
fn partitioned_node_stops_serving_hits_after_lease_and_resumes_after_heartbeat() {
    // Proves the lease rule: within lease_ticks of the last answered heartbeat a hit is served;
    // with every message lost for lease_ticks the same read waits; the next answered heartbeat
    // completes it with the line's value.
    let mut cluster = Cluster::new(1, lease_config());
    cluster.write(1, "k", "v1");
    let key = Key::from("k");
    let hit = cluster
        .nodes
        .get_mut(&NodeId(1))
        .expect("node")
        .read(key.clone());
    assert!(matches!(
        hit,
        Ok(OpStep::Done {
            result: OpResult::Read(_),
            ..
        })
    ));

    for _ in 0..25 {
        cluster.tick(1);
        cluster.drop_messages(); // partitioned: heartbeats and answers are lost
    }
    assert!(!cluster.node(1).lease_valid_for(&key));
    let step = cluster
        .nodes
        .get_mut(&NodeId(1))
        .expect("node")
        .read(key.clone())
        .expect("accepted");
    let OpStep::Pending { op, outbound } = step else {
        panic!("a node without a valid lease must not serve a hit: {step:?}");
    };
    assert!(outbound.is_empty());

    // Partition heals: the next heartbeat is answered and the waiting read completes.
    for _ in 0..5 {
        cluster.tick(1);
        cluster.run();
    }
    let OpResult::Read(data) = cluster.take_completion(op) else {
        panic!("read expected");
    };
    assert_eq!(data.value.as_deref(), Some(&b"v1"[..]));
}

#[test]
fn partitioned_sharer_is_revoked_after_its_lease_and_never_serves_stale_data() {
    // Proves revocation: N2 shares k and is cut off; N1's write completes once N2's lease has
    // surely expired (lease_ticks + lease_revoke_margin_ticks after the home last confirmed it),
    // without N2's InvalidateAck; when N2 hears from the home again it has dropped its copy and
    // reads the new value.
    let config = lease_config();
    let expiry = config.lease_ticks + config.lease_revoke_margin_ticks;
    let mut cluster = Cluster::new(2, config);
    cluster.write(1, "k", "v1");
    cluster.read(2, "k");
    assert_eq!(cluster.state(2, "k"), distsync_cache::LineState::Shared);

    let step = cluster
        .nodes
        .get_mut(&NodeId(1))
        .expect("node")
        .write(Key::from("k"), "v2".into())
        .expect("accepted");
    let op = cluster
        .queue_step(1, step)
        .expect("S -> M needs an upgrade");
    // Deliver only what does not involve N2: N2 is partitioned.
    cluster.partitioned = Some(NodeId(2));
    let mut ticks = 0;
    while !cluster.completions.iter().any(|c| c.op == op) {
        ticks += 1;
        assert!(
            ticks <= expiry + 10,
            "the writer was blocked beyond the lease expiry"
        );
        cluster.tick(1);
        cluster.tick(2);
        cluster.run();
    }
    assert!(
        ticks >= 5,
        "the write waited for N2's lease to run out ({ticks} ticks)"
    );
    assert_eq!(
        cluster.take_completion(op),
        OpResult::Written(distsync_cache::Version(2))
    );
    assert_eq!(cluster.state(1, "k"), distsync_cache::LineState::Modified);

    // Heal: N2's next answered heartbeat renews the lease and drops the revoked copy.
    cluster.partitioned = None;
    for _ in 0..10 {
        cluster.tick(2);
        cluster.run();
    }
    assert_eq!(cluster.state(2, "k"), distsync_cache::LineState::Invalid);
    let data = cluster.read(2, "k");
    assert_eq!(data.value.as_deref(), Some(&b"v2"[..]));
}

#[test]
fn read_hit_serves_only_what_read_would_finish_at_once() {
    // Proves the shell's fast path agrees with `read`: a leased line is served with its data, an
    // absent key, a lapsed lease and a key with a transaction in flight all give `None` (the
    // caller falls back to `read`), and a refused hit changes nothing.
    let mut cluster = Cluster::new(2, lease_config());
    cluster.write(1, "k", "v1");
    let key = Key::from("k");
    let node = cluster.nodes.get_mut(&NodeId(1)).expect("node");
    let data = node.read_hit(&key).expect("a leased M line is a hit");
    assert_eq!(data.value.as_deref(), Some(&b"v1"[..]));
    assert!(node.read_hit(&Key::from("absent")).is_none());

    // N2 reading k puts a transaction in flight at N2 until the home answers.
    let step = cluster
        .nodes
        .get_mut(&NodeId(2))
        .expect("node")
        .read(key.clone())
        .expect("accepted");
    assert!(matches!(step, OpStep::Pending { .. }));
    assert!(
        cluster
            .nodes
            .get_mut(&NodeId(2))
            .expect("node")
            .read_hit(&key)
            .is_none()
    );
    cluster.queue_step(2, step);
    cluster.run();
    assert!(
        cluster
            .nodes
            .get_mut(&NodeId(2))
            .expect("node")
            .read_hit(&key)
            .is_some()
    );

    for _ in 0..25 {
        cluster.tick(1);
        cluster.drop_messages();
    }
    let node = cluster.nodes.get_mut(&NodeId(1)).expect("node");
    assert!(!node.lease_valid_for(&key));
    assert!(node.read_hit(&key).is_none(), "no hit without a lease");
    assert_eq!(cluster.state(1, "k"), distsync_cache::LineState::Shared);
}

#[test]
fn a_node_has_a_quorum_only_while_a_majority_of_its_view_confirms_its_lease() {
    // Proves `has_quorum`: in a view of 3, one other member's answer (with this node) is a
    // majority; it lasts lease_ticks from the send time of the answered heartbeat; a late
    // answer to an old heartbeat does not bring it back, a fresh one does; a node outside its
    // view never has one.
    let config = lease_config();
    let members: Vec<NodeId> = [1, 2, 3].map(NodeId).to_vec();
    let home = |_: &[u8]| NodeId(2);
    let mut node = CacheNode::new(NodeId(1), config.clone(), home, members.clone()).unwrap();
    node.set_members(1, members);
    assert!(!node.has_quorum(), "nobody answered yet: 1 of 3");
    node.tick();
    node.on_message(NodeId(2), CoherenceMessage::HeartbeatAck { sent_tick: 1 });
    assert!(node.has_quorum(), "2 of 3");
    for _ in 1..config.lease_ticks {
        node.tick();
    }
    assert!(
        node.has_quorum(),
        "lease_ticks - 1 ticks after the heartbeat was sent"
    );
    node.tick();
    assert!(!node.has_quorum(), "the only confirmation ran out");
    node.on_message(NodeId(3), CoherenceMessage::HeartbeatAck { sent_tick: 1 });
    assert!(
        !node.has_quorum(),
        "an answer to a heartbeat sent too long ago"
    );
    let now = 1 + config.lease_ticks;
    node.on_message(NodeId(3), CoherenceMessage::HeartbeatAck { sent_tick: now });
    assert!(node.has_quorum(), "a fresh answer");
    node.set_members(2, [2, 3].map(NodeId).to_vec());
    assert!(!node.has_quorum(), "not a member");
}

#[test]
fn each_key_lease_follows_its_own_home_when_homes_answer_at_different_times() {
    // Proves `lease_valid_for` against a model of one lease per home, at every tick: it agrees
    // whether every home's lease is valid (the node's shortcut), one has lapsed (the shortcut
    // must not answer for the others), or none is. A shortcut that outlived its
    // shortest lease, or that survived a view change, would serve a key whose home went quiet.
    const SELF: NodeId = NodeId(1);
    const HOME_A: NodeId = NodeId(10);
    const HOME_B: NodeId = NodeId(11);
    fn home_of(key: &[u8]) -> NodeId {
        if key.starts_with(b"a") {
            HOME_A
        } else {
            HOME_B
        }
    }
    let config = lease_config();
    let lease_ticks = config.lease_ticks;
    let mut node: CacheNode<fn(&[u8]) -> NodeId> = CacheNode::new(
        SELF,
        config,
        home_of as fn(&[u8]) -> NodeId,
        vec![SELF, HOME_A, HOME_B],
    )
    .expect("valid config");
    let keys = [Key::from("a-key"), Key::from("b-key")];
    // The send tick of the newest heartbeat each member answered; HOME_B goes quiet from tick
    // 30 to tick 60, and every member from tick 90.
    let mut answered: std::collections::BTreeMap<NodeId, u64> = Default::default();
    let mut checked_all_valid = 0;
    let mut checked_one_lapsed = 0;
    for now in 1..=130u64 {
        for outbound in node.tick() {
            let distsync_cache::Outbound::Send {
                to,
                message: CoherenceMessage::Heartbeat { sent_tick },
            } = outbound
            else {
                continue;
            };
            let quiet = now >= 90 || (to == HOME_B && (30..60).contains(&now));
            if !quiet {
                node.on_message(to, CoherenceMessage::HeartbeatAck { sent_tick });
                answered.insert(to, sent_tick);
            }
        }
        if now == 70 {
            // A new view: every lease starts over, the shortcut with them.
            node.set_members(1, vec![SELF, HOME_A, HOME_B]);
            answered.clear();
        }
        let valid = |home: NodeId| {
            answered
                .get(&home)
                .is_some_and(|sent| now < sent + lease_ticks)
        };
        for key in &keys {
            assert_eq!(
                node.lease_valid_for(key),
                valid(home_of(key)),
                "tick {now}, key {key:?}"
            );
        }
        match (valid(HOME_A), valid(HOME_B)) {
            (true, true) => checked_all_valid += 1,
            (true, false) => checked_one_lapsed += 1,
            _ => {}
        }
    }
    assert!(
        checked_all_valid > 0 && checked_one_lapsed > 0,
        "both cases were checked: {checked_all_valid} ticks with every lease, \
         {checked_one_lapsed} with one lapsed"
    );
}
