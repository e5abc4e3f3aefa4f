//! C-01: transition-table conformance. For each stable state of node N1's line × each event,
//! the next state and the exact message trace (FIFO, reliable network) match the table in
//! `docs/cache-protocol.md`. N2 and N3 are the other caches, H is the home of every key.

use crate::common::{Cluster, config, value};
use distsync_cache::LineState::{self, Exclusive, Invalid, Modified, Shared};

#[derive(Clone, Copy, Debug)]
enum Op {
    Read(u64),
    Write(u64),
    Evict(u64),
}

fn apply(cluster: &mut Cluster, op: Op) {
    match op {
        Op::Read(id) => {
            cluster.read(id, "k");
        }
        Op::Write(id) => {
            cluster.write(id, "k", &format!("from-n{id}"));
        }
        Op::Evict(id) => cluster.evict(id, "k"),
    }
}

struct Row {
    name: &'static str,
    setup: &'static [Op],
    start: LineState,
    event: Op,
    next: LineState,
    trace: &'static [&'static str],
}

const I: &[Op] = &[];
const S: &[Op] = &[Op::Read(1), Op::Read(3)];
const E: &[Op] = &[Op::Read(1)];
const M: &[Op] = &[Op::Write(1)];

#[rustfmt::skip]
const TABLE: &[Row] = &[
    Row { name: "I + local read, no other holder -> E", setup: I, start: Invalid, event: Op::Read(1), next: Exclusive,
          trace: &["N1->H GetShared", "H backing Read", "H->N1 Grant(E)", "N1->H GrantAck"] },
    Row { name: "I + local read, another node holds E -> S", setup: &[Op::Read(2)], start: Invalid, event: Op::Read(1), next: Shared,
          trace: &["N1->H GetShared", "H->N2 Fetch(->S)", "N2->H FetchResponse(data)", "H->N1 Grant(S)", "N1->H GrantAck"] },
    Row { name: "I + local read, another node holds M -> S (owner writes back)", setup: &[Op::Write(2)], start: Invalid, event: Op::Read(1), next: Shared,
          trace: &["N1->H GetShared", "H->N2 Fetch(->S)", "N2->H FetchResponse(data,dirty)", "H backing Write", "H->N1 Grant(S)", "N1->H GrantAck"] },
    Row { name: "I + local write -> M", setup: I, start: Invalid, event: Op::Write(1), next: Modified,
          trace: &["N1->H GetModified", "H backing Read", "H->N1 Grant(M)", "N1->H GrantAck"] },
    Row { name: "I + remote GetS", setup: I, start: Invalid, event: Op::Read(2), next: Invalid,
          trace: &["N2->H GetShared", "H backing Read", "H->N2 Grant(E)", "N2->H GrantAck"] },
    Row { name: "I + remote GetM", setup: I, start: Invalid, event: Op::Write(2), next: Invalid,
          trace: &["N2->H GetModified", "H backing Read", "H->N2 Grant(M)", "N2->H GrantAck"] },
    Row { name: "I + remote Upgrade", setup: &[Op::Read(2), Op::Read(3)], start: Invalid, event: Op::Write(3), next: Invalid,
          trace: &["N3->H Upgrade", "H->N2 Invalidate", "N2->H InvalidateAck", "H backing Read", "H->N3 Grant(M)", "N3->H GrantAck"] },
    Row { name: "I + eviction", setup: I, start: Invalid, event: Op::Evict(1), next: Invalid, trace: &[] },

    Row { name: "S + local read (hit)", setup: S, start: Shared, event: Op::Read(1), next: Shared, trace: &[] },
    Row { name: "S + local write -> Upgrade, M after all InvalidateAcks", setup: S, start: Shared, event: Op::Write(1), next: Modified,
          trace: &["N1->H Upgrade", "H->N3 Invalidate", "N3->H InvalidateAck", "H backing Read", "H->N1 Grant(M)", "N1->H GrantAck"] },
    Row { name: "S + remote GetS", setup: S, start: Shared, event: Op::Read(2), next: Shared,
          trace: &["N2->H GetShared", "H backing Read", "H->N2 Grant(S)", "N2->H GrantAck"] },
    Row { name: "S + remote GetM -> I", setup: S, start: Shared, event: Op::Write(2), next: Invalid,
          trace: &["N2->H GetModified", "H->N1 Invalidate", "H->N3 Invalidate", "N1->H InvalidateAck", "N3->H InvalidateAck",
                   "H backing Read", "H->N2 Grant(M)", "N2->H GrantAck"] },
    Row { name: "S + remote Upgrade -> I", setup: S, start: Shared, event: Op::Write(3), next: Invalid,
          trace: &["N3->H Upgrade", "H->N1 Invalidate", "N1->H InvalidateAck", "H backing Read", "H->N3 Grant(M)", "N3->H GrantAck"] },
    Row { name: "S + eviction -> I with PutShared", setup: S, start: Shared, event: Op::Evict(1), next: Invalid,
          trace: &["N1->H PutShared"] },

    Row { name: "E + local read (hit)", setup: E, start: Exclusive, event: Op::Read(1), next: Exclusive, trace: &[] },
    Row { name: "E + local write -> M silently", setup: E, start: Exclusive, event: Op::Write(1), next: Modified, trace: &[] },
    Row { name: "E + remote GetS -> S", setup: E, start: Exclusive, event: Op::Read(2), next: Shared,
          trace: &["N2->H GetShared", "H->N1 Fetch(->S)", "N1->H FetchResponse(data)", "H->N2 Grant(S)", "N2->H GrantAck"] },
    Row { name: "E + remote GetM -> I", setup: E, start: Exclusive, event: Op::Write(2), next: Invalid,
          trace: &["N2->H GetModified", "H->N1 Fetch(->I)", "N1->H FetchResponse(data)", "H->N2 Grant(M)", "N2->H GrantAck"] },
    Row { name: "E + eviction -> I with PutExclusive", setup: E, start: Exclusive, event: Op::Evict(1), next: Invalid,
          trace: &["N1->H PutExclusive"] },

    Row { name: "M + local read (hit)", setup: M, start: Modified, event: Op::Read(1), next: Modified, trace: &[] },
    Row { name: "M + local write (hit)", setup: M, start: Modified, event: Op::Write(1), next: Modified, trace: &[] },
    Row { name: "M + remote GetS -> S, data written back", setup: M, start: Modified, event: Op::Read(2), next: Shared,
          trace: &["N2->H GetShared", "H->N1 Fetch(->S)", "N1->H FetchResponse(data,dirty)", "H backing Write", "H->N2 Grant(S)", "N2->H GrantAck"] },
    Row { name: "M + remote GetM -> I, data written back", setup: M, start: Modified, event: Op::Write(2), next: Invalid,
          trace: &["N2->H GetModified", "H->N1 Fetch(->I)", "N1->H FetchResponse(data,dirty)", "H backing Write", "H->N2 Grant(M)", "N2->H GrantAck"] },
    Row { name: "M + eviction -> I after write-back", setup: M, start: Modified, event: Op::Evict(1), next: Invalid,
          trace: &["N1->H PutModified", "H backing Write", "H->N1 PutAck"] },
];

#[test]
fn every_state_and_event_follows_the_transition_table() {
    // Proves C-01: each row sets N1's line to `start`, applies one event and compares N1's next
    // state and the whole message trace with the table, then checks single-writer and that a
    // fresh read anywhere returns the last write.
    for row in TABLE {
        let mut cluster = Cluster::new(3, config(8));
        let mut last_write = None;
        for op in row.setup {
            apply(&mut cluster, *op);
            if let Op::Write(id) = op {
                last_write = Some(format!("from-n{id}"));
            }
        }
        assert_eq!(
            cluster.state(1, "k"),
            row.start,
            "{}: start state",
            row.name
        );
        cluster.trace.clear();
        apply(&mut cluster, row.event);
        if let Op::Write(id) = row.event {
            last_write = Some(format!("from-n{id}"));
        }
        assert_eq!(cluster.state(1, "k"), row.next, "{}: next state", row.name);
        assert_eq!(cluster.trace, row.trace, "{}: trace", row.name);

        let states: Vec<LineState> = (1..=3).map(|id| cluster.state(id, "k")).collect();
        let owners = states.iter().filter(|state| state.is_owned()).count();
        let valid = states.iter().filter(|state| state.is_valid()).count();
        assert!(
            owners <= 1 && (owners == 0 || valid == 1),
            "{}: SWMR {states:?}",
            row.name
        );
        // A read on some node returns the last write.
        let reader = (1..=3)
            .find(|id| cluster.state(*id, "k") != Modified)
            .unwrap_or(1);
        let data = cluster.read(reader, "k");
        assert_eq!(value(&data), last_write, "{}: data value", row.name);
    }
}

#[test]
fn owned_line_cannot_coexist_with_a_sharer_so_upgrade_rows_for_e_and_m_are_unreachable() {
    // Proves the n/a cells of the table: making N3 a sharer while N1 owns first downgrades N1.
    for setup in [E, M] {
        let mut cluster = Cluster::new(3, config(8));
        for op in setup {
            apply(&mut cluster, *op);
        }
        apply(&mut cluster, Op::Read(3));
        assert_eq!(cluster.state(1, "k"), Shared);
        assert_eq!(cluster.state(3, "k"), Shared);
    }
}
