//! Property tests: the lock table against a deliberately simple reference model over random
//! command sequences, plus the deadlock-detector checks of TESTING D-03 and snapshot/replay
//! determinism.
//!
//! The model recomputes everything from scratch: holders and queue per name as plain vectors, and
//! the *full* wait-for relation (each waiter waits for every incompatible holder and every
//! incompatible waiter ahead of it) for deadlock checks. The table keeps an incremental, reduced
//! graph; agreement on every outcome is the evidence that the reduction is exact.

use distsync_lock::{
    ApplyOutcome, LockCommand, LockConfig, LockError, LockEvent, LockMode, LockName, LockTable,
    LogIndex, Response, SessionId,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const NAMES: [&str; 3] = ["a", "b", "c"];

#[derive(Clone, Debug)]
enum Op {
    Create,
    Close(usize),
    Expire(Vec<usize>),
    Acquire {
        session: usize,
        name: usize,
        exclusive: bool,
        wait: bool,
    },
    Cancel {
        session: usize,
        name: usize,
    },
    Release {
        session: usize,
        name: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let acquire = (
        0..6usize,
        0..3usize,
        any::<bool>(),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(session, name, exclusive, wait)| Op::Acquire {
            session,
            name,
            exclusive,
            wait,
        });
    prop_oneof![
        2 => Just(Op::Create),
        1 => (0..6usize).prop_map(Op::Close),
        1 => prop::collection::vec(0..6usize, 0..3).prop_map(Op::Expire),
        10 => acquire,
        2 => (0..6usize, 0..3usize).prop_map(|(session, name)| Op::Cancel { session, name }),
        5 => (0..6usize, 0..3usize).prop_map(|(session, name)| Op::Release { session, name }),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..80).prop_map(|mut ops| {
        // Start with a few sessions so most commands find one.
        let mut start = vec![Op::Create, Op::Create, Op::Create];
        start.append(&mut ops);
        start
    })
}

fn config() -> LockConfig {
    LockConfig {
        max_waiters_per_lock: 3,
        max_locks_per_session: 2,
        ..LockConfig::default()
    }
}

/// Turns ops into commands. Session slots index the sessions created so far (closed ones
/// included, to exercise SessionNotFound); a slot past the end names a session never created.
struct Driver {
    created: Vec<SessionId>,
    index: u64,
}

impl Driver {
    fn session(&self, slot: usize) -> SessionId {
        self.created
            .get(slot)
            .copied()
            .unwrap_or(SessionId(10_000 + slot as u64))
    }

    fn command(&mut self, op: &Op) -> LockCommand {
        self.index += 1;
        let name = |i: usize| LockName::new(NAMES[i]).expect("valid name");
        match op {
            Op::Create => {
                self.created.push(SessionId(self.index));
                LockCommand::CreateSession {
                    ttl_ms: 1_000,
                    idempotency_key: None,
                }
            }
            Op::Close(s) => LockCommand::CloseSession {
                session: self.session(*s),
                idempotency_key: None,
            },
            Op::Expire(slots) => LockCommand::ExpireSessions {
                sessions: slots.iter().map(|s| self.session(*s)).collect(),
            },
            Op::Acquire {
                session,
                name: n,
                exclusive,
                wait,
            } => LockCommand::Acquire {
                session: self.session(*session),
                name: name(*n),
                mode: if *exclusive {
                    LockMode::Exclusive
                } else {
                    LockMode::Shared
                },
                wait: *wait,
                idempotency_key: None,
                tag: 0,
            },
            Op::Cancel { session, name: n } => LockCommand::CancelWait {
                session: self.session(*session),
                name: name(*n),
            },
            Op::Release { session, name: n } => LockCommand::Release {
                session: self.session(*session),
                name: name(*n),
                token: None,
                idempotency_key: None,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The reference model.

type Sid = u64;

#[derive(Clone, Debug, PartialEq)]
enum Expect {
    Created(Sid),
    Closed,
    Expired(Vec<Sid>),
    Granted {
        mode: LockMode,
        new: bool,
    },
    Waiting(LockMode),
    NotGranted,
    WaitCancelled,
    NotWaiting,
    Released,
    SessionNotFound,
    NotHeld,
    WaitModeMismatch,
    TooManyWaiters,
    TooManyLocksForSession,
    /// With the full wait-for relation including the refused wait, to check the cycle against.
    Deadlock(BTreeSet<(Sid, Sid)>),
}

#[derive(Clone, Debug, Default)]
struct MLock {
    holders: Vec<(Sid, LockMode)>,
    queue: Vec<(Sid, LockMode, bool)>,
}

#[derive(Clone, Debug, Default)]
struct Model {
    sessions: BTreeSet<Sid>,
    locks: BTreeMap<String, MLock>,
    max_waiters: usize,
    max_per_session: usize,
}

fn compatible(a: LockMode, b: LockMode) -> bool {
    a == LockMode::Shared && b == LockMode::Shared
}

impl Model {
    fn new(config: &LockConfig) -> Model {
        Model {
            max_waiters: config.max_waiters_per_lock,
            max_per_session: config.max_locks_per_session,
            ..Model::default()
        }
    }

    /// Full wait-for relation over every lock.
    fn edges(&self) -> BTreeSet<(Sid, Sid)> {
        let mut edges = BTreeSet::new();
        for lock in self.locks.values() {
            for (i, (s, mode, _)) in lock.queue.iter().enumerate() {
                for (h, held) in &lock.holders {
                    if h != s && !compatible(*held, *mode) {
                        edges.insert((*s, *h));
                    }
                }
                for (ahead, ahead_mode, _) in &lock.queue[..i] {
                    if !compatible(*ahead_mode, *mode) {
                        edges.insert((*s, *ahead));
                    }
                }
            }
        }
        edges
    }

    fn on_cycle(edges: &BTreeSet<(Sid, Sid)>, start: Sid) -> bool {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start];
        while let Some(node) = stack.pop() {
            for (_, to) in edges.range((node, 0)..=(node, Sid::MAX)) {
                if *to == start {
                    return true;
                }
                if seen.insert(*to) {
                    stack.push(*to);
                }
            }
        }
        false
    }

    fn lock_count(&self, s: Sid) -> usize {
        self.locks
            .values()
            .filter(|l| l.holders.iter().any(|h| h.0 == s) || l.queue.iter().any(|w| w.0 == s))
            .count()
    }

    /// Grant from the head while grantable; returns the grants in order.
    fn settle(&mut self, name: &str, grants: &mut Vec<(Sid, String, LockMode)>) {
        let lock = self.locks.entry(name.to_string()).or_default();
        while let Some(&(s, mode, upgrade)) = lock.queue.first() {
            let ok = if upgrade {
                lock.holders.iter().all(|h| h.0 == s)
            } else {
                lock.holders.iter().all(|h| compatible(h.1, mode))
            };
            if !ok {
                break;
            }
            lock.queue.remove(0);
            lock.holders.retain(|h| h.0 != s);
            lock.holders.push((s, mode));
            grants.push((s, name.to_string(), mode));
        }
    }

    fn enqueue(&mut self, name: &str, waiter: (Sid, LockMode, bool)) -> Expect {
        let lock = self.locks.entry(name.to_string()).or_default();
        if waiter.2 {
            lock.queue.insert(0, waiter);
        } else {
            lock.queue.push(waiter);
        }
        let edges = self.edges();
        if Model::on_cycle(&edges, waiter.0) {
            self.locks
                .get_mut(name)
                .expect("just used")
                .queue
                .retain(|w| w.0 != waiter.0);
            return Expect::Deadlock(edges);
        }
        Expect::Waiting(waiter.1)
    }

    fn end(&mut self, ids: &[Sid], grants: &mut Vec<(Sid, String, LockMode)>) {
        for id in ids {
            self.sessions.remove(id);
            for lock in self.locks.values_mut() {
                lock.queue.retain(|w| w.0 != *id);
                lock.holders.retain(|h| h.0 != *id);
            }
        }
        let names: Vec<String> = self.locks.keys().cloned().collect();
        for name in names {
            self.settle(&name, grants);
        }
    }

    fn apply(
        &mut self,
        index: u64,
        command: &LockCommand,
    ) -> (Expect, Vec<(Sid, String, LockMode)>) {
        let mut grants = Vec::new();
        let expect = match command {
            LockCommand::CreateSession { .. } => {
                self.sessions.insert(index);
                Expect::Created(index)
            }
            LockCommand::CloseSession { session, .. } => {
                if !self.sessions.contains(&session.0) {
                    Expect::SessionNotFound
                } else {
                    self.end(&[session.0], &mut grants);
                    Expect::Closed
                }
            }
            LockCommand::ExpireSessions { sessions } => {
                let mut ids: Vec<Sid> = Vec::new();
                for s in sessions {
                    if self.sessions.contains(&s.0) && !ids.contains(&s.0) {
                        ids.push(s.0);
                    }
                }
                self.end(&ids, &mut grants);
                Expect::Expired(ids)
            }
            LockCommand::Acquire {
                session,
                name,
                mode,
                wait,
                ..
            } => self.acquire(session.0, name.as_str(), *mode, *wait),
            LockCommand::Abandon { .. } => unreachable!("the generator proposes no abandonment"),
            LockCommand::CancelWait { session, name } => {
                let s = session.0;
                if !self.sessions.contains(&s) {
                    Expect::SessionNotFound
                } else {
                    let lock = self.locks.entry(name.to_string()).or_default();
                    if lock.queue.iter().any(|w| w.0 == s) {
                        lock.queue.retain(|w| w.0 != s);
                        self.settle(name.as_str(), &mut grants);
                        Expect::WaitCancelled
                    } else if let Some(h) = lock.holders.iter().find(|h| h.0 == s) {
                        Expect::Granted {
                            mode: h.1,
                            new: false,
                        }
                    } else {
                        Expect::NotWaiting
                    }
                }
            }
            LockCommand::Release { session, name, .. } => {
                let s = session.0;
                if !self.sessions.contains(&s) {
                    Expect::SessionNotFound
                } else {
                    let lock = self.locks.entry(name.to_string()).or_default();
                    if !lock.holders.iter().any(|h| h.0 == s) {
                        Expect::NotHeld
                    } else {
                        lock.holders.retain(|h| h.0 != s);
                        for w in &mut lock.queue {
                            if w.0 == s {
                                w.2 = false;
                            }
                        }
                        self.settle(name.as_str(), &mut grants);
                        Expect::Released
                    }
                }
            }
        };
        (expect, grants)
    }

    fn acquire(&mut self, s: Sid, name: &str, mode: LockMode, wait: bool) -> Expect {
        if !self.sessions.contains(&s) {
            return Expect::SessionNotFound;
        }
        let lock = self.locks.entry(name.to_string()).or_default().clone();
        if let Some(&(_, held)) = lock.holders.iter().find(|h| h.0 == s) {
            if held == LockMode::Exclusive || mode == LockMode::Shared {
                return Expect::Granted {
                    mode: held,
                    new: false,
                };
            }
            if lock.queue.iter().any(|w| w.0 == s) {
                return Expect::Waiting(LockMode::Exclusive);
            }
            if lock.holders.len() == 1 {
                self.locks.get_mut(name).expect("exists").holders = vec![(s, LockMode::Exclusive)];
                return Expect::Granted {
                    mode: LockMode::Exclusive,
                    new: true,
                };
            }
            if !wait {
                return Expect::NotGranted;
            }
            if lock.queue.len() >= self.max_waiters {
                return Expect::TooManyWaiters;
            }
            return self.enqueue(name, (s, LockMode::Exclusive, true));
        }
        if let Some(&(_, waiting, _)) = lock.queue.iter().find(|w| w.0 == s) {
            return if waiting == mode {
                Expect::Waiting(mode)
            } else {
                Expect::WaitModeMismatch
            };
        }
        if self.lock_count(s) >= self.max_per_session {
            return Expect::TooManyLocksForSession;
        }
        if lock.queue.is_empty() && lock.holders.iter().all(|h| compatible(h.1, mode)) {
            self.locks
                .get_mut(name)
                .expect("exists")
                .holders
                .push((s, mode));
            return Expect::Granted { mode, new: true };
        }
        if !wait {
            return Expect::NotGranted;
        }
        if lock.queue.len() >= self.max_waiters {
            return Expect::TooManyWaiters;
        }
        self.enqueue(name, (s, mode, false))
    }
}

// ---------------------------------------------------------------------------------------------
// Comparing the table with the model.

#[derive(Default)]
struct TokenCheck {
    last_per_name: BTreeMap<String, u64>,
    last_global: u64,
}

impl TokenCheck {
    fn new_grant(&mut self, name: &str, token: u64) -> Result<(), TestCaseError> {
        let last = self.last_per_name.entry(name.to_string()).or_insert(0);
        prop_assert!(
            token > *last,
            "token {} of {} not above {}",
            token,
            name,
            last
        );
        prop_assert!(
            token > self.last_global,
            "token {} not above global {}",
            token,
            self.last_global
        );
        *last = token;
        self.last_global = token;
        Ok(())
    }
}

fn check_step(
    table: &LockTable,
    model: &Model,
    command: &LockCommand,
    outcome: &ApplyOutcome,
    expect: &Expect,
    grants: &[(Sid, String, LockMode)],
    tokens: &mut TokenCheck,
) -> Result<(), TestCaseError> {
    let context = format!("{command:?} -> {:?}, model {expect:?}", outcome.response);
    match (&outcome.response, expect) {
        (Ok(Response::SessionCreated { session, .. }), Expect::Created(id)) => {
            prop_assert_eq!(session.0, *id)
        }
        (Ok(Response::SessionClosed { .. }), Expect::Closed) => {}
        (Ok(Response::SessionsExpired { sessions }), Expect::Expired(ids)) => {
            prop_assert_eq!(&sessions.iter().map(|s| s.0).collect::<Vec<_>>(), ids)
        }
        (Ok(Response::Granted(grant)), Expect::Granted { mode, new }) => {
            prop_assert_eq!(grant.mode, *mode, "{}", context);
            if *new {
                tokens.new_grant(grant.name.as_str(), grant.token.0)?;
            }
        }
        (Ok(Response::Waiting { mode }), Expect::Waiting(m)) => prop_assert_eq!(mode, m),
        (Ok(Response::NotGranted), Expect::NotGranted)
        | (Ok(Response::WaitCancelled), Expect::WaitCancelled)
        | (Ok(Response::NotWaiting), Expect::NotWaiting)
        | (Ok(Response::Released { .. }), Expect::Released)
        | (Err(LockError::SessionNotFound(_)), Expect::SessionNotFound)
        | (Err(LockError::NotHeld { .. }), Expect::NotHeld)
        | (Err(LockError::WaitModeMismatch { .. }), Expect::WaitModeMismatch)
        | (Err(LockError::TooManyWaiters { .. }), Expect::TooManyWaiters)
        | (Err(LockError::TooManyLocksForSession { .. }), Expect::TooManyLocksForSession) => {}
        (Err(LockError::Deadlock { cycle }), Expect::Deadlock(edges)) => {
            // The refused wait really closes this cycle: it starts with the requester, has no
            // repeats, and each session waits for the next in the full relation.
            let LockCommand::Acquire { session, .. } = command else {
                return Err(TestCaseError::fail("deadlock from a non-acquire"));
            };
            prop_assert_eq!(cycle.first(), Some(session), "{}", context);
            let distinct: BTreeSet<_> = cycle.iter().collect();
            prop_assert_eq!(distinct.len(), cycle.len(), "{}", context);
            for (i, from) in cycle.iter().enumerate() {
                let to = cycle[(i + 1) % cycle.len()];
                prop_assert!(
                    edges.contains(&(from.0, to.0)),
                    "no edge {}->{}: {}",
                    from,
                    to,
                    context
                );
            }
        }
        _ => return Err(TestCaseError::fail(format!("outcome differs: {context}"))),
    }
    let event_grants: Vec<(Sid, String, LockMode)> = outcome
        .events
        .iter()
        .filter_map(|e| match e {
            LockEvent::Granted(g) => Some((g.session.0, g.name.to_string(), g.mode)),
            _ => None,
        })
        .collect();
    prop_assert_eq!(
        &event_grants,
        &grants.to_vec(),
        "grants differ: {}",
        context
    );
    for event in &outcome.events {
        if let LockEvent::Granted(g) = event {
            tokens.new_grant(g.name.as_str(), g.token.0)?;
        }
    }
    table.check_invariants();
    for name in NAMES {
        let info = table.lock(&LockName::new(name).expect("valid"));
        let exclusive = info
            .holders
            .iter()
            .filter(|h| h.mode == LockMode::Exclusive)
            .count();
        prop_assert!(
            exclusive == 0 || info.holders.len() == 1,
            "conflicting holders of {}",
            name
        );
        let empty = MLock::default();
        let m = model.locks.get(name).unwrap_or(&empty);
        let mut holders: Vec<(Sid, LockMode)> =
            info.holders.iter().map(|h| (h.session.0, h.mode)).collect();
        let mut expected_holders = m.holders.clone();
        holders.sort();
        expected_holders.sort();
        prop_assert_eq!(
            holders,
            expected_holders,
            "holders of {}: {}",
            name,
            context
        );
        let waiters: Vec<(Sid, LockMode, bool)> = info
            .waiters
            .iter()
            .map(|w| (w.session.0, w.mode, w.upgrade))
            .collect();
        prop_assert_eq!(&waiters, &m.queue, "queue of {} (FIFO): {}", name, context);
    }
    Ok(())
}

/// What `LockTable::acquire_would_queue` said about a waiting acquire of a session that neither
/// held nor waited for the lock, to be checked against the acquire's outcome.
struct QueueHint(Option<bool>);

impl QueueHint {
    fn before(table: &LockTable, command: &LockCommand) -> QueueHint {
        let LockCommand::Acquire {
            session,
            name,
            mode,
            wait: true,
            ..
        } = command
        else {
            return QueueHint(None);
        };
        let info = table.lock(name);
        let involved = info.holders.iter().any(|h| h.session == *session)
            || info.waiters.iter().any(|w| w.session == *session);
        if involved || table.session(*session).is_none() {
            // The hint is false for these by definition; the outcome may still be a wait (an
            // upgrade, a repeated acquire), so there is nothing to compare.
            assert!(
                !table.acquire_would_queue(*session, name, *mode),
                "a session that holds or waits for the lock, or has ended, is never predicted to queue"
            );
            return QueueHint(None);
        }
        QueueHint(Some(table.acquire_would_queue(*session, name, *mode)))
    }

    /// The hint is exact: an acquire predicted to queue is never granted at once, and one
    /// predicted not to is never queued or refused as a deadlock.
    fn check(&self, outcome: &ApplyOutcome) -> Result<(), TestCaseError> {
        let Some(would_queue) = self.0 else {
            return Ok(());
        };
        let waited = matches!(
            outcome.response,
            Ok(Response::Waiting { .. }) | Err(LockError::Deadlock { .. })
        );
        let granted = matches!(outcome.response, Ok(Response::Granted(_)));
        if would_queue {
            prop_assert!(
                !granted,
                "predicted to queue, granted: {:?}",
                outcome.response
            );
        } else {
            prop_assert!(
                !waited,
                "predicted to be answered at once, waited: {:?}",
                outcome.response
            );
        }
        Ok(())
    }
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let config = config();
    let mut table = LockTable::new(config.clone()).expect("valid config");
    let mut model = Model::new(&config);
    let mut driver = Driver {
        created: Vec::new(),
        index: 0,
    };
    let mut tokens = TokenCheck::default();
    for op in ops {
        let command = driver.command(op);
        let queue_hint = QueueHint::before(&table, &command);
        let outcome = table.apply(LogIndex(driver.index), command.clone());
        queue_hint.check(&outcome)?;
        let (expect, grants) = model.apply(driver.index, &command);
        check_step(
            &table,
            &model,
            &command,
            &outcome,
            &expect,
            &grants,
            &mut tokens,
        )?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Proves, over random command sequences, that the table agrees with the reference model on
    /// every response and grant (FIFO order included), never has conflicting holders, issues
    /// strictly increasing tokens per name and globally, and refuses a wait as a deadlock only
    /// with a real cycle of the full wait-for relation — and refuses every wait that closes one.
    #[test]
    fn table_matches_reference_model(ops in ops()) {
        run(&ops)?;
    }

    /// Proves snapshot/restore at any point gives identical subsequent outcomes and bytes, and
    /// that two tables fed the same commands end byte-identical.
    #[test]
    fn snapshot_restore_round_trip_gives_identical_behaviour(ops in ops(), split in any::<prop::sample::Index>()) {
        let split = split.index(ops.len() + 1);
        let mut driver = Driver { created: Vec::new(), index: 0 };
        let commands: Vec<LockCommand> = ops.iter().map(|op| driver.command(op)).collect();
        let mut original = LockTable::new(config()).expect("valid config");
        let mut twin = LockTable::new(config()).expect("valid config");
        for (i, command) in commands[..split].iter().enumerate() {
            let index = LogIndex(i as u64 + 1);
            prop_assert_eq!(original.apply(index, command.clone()), twin.apply(index, command.clone()));
        }
        let mut restored = LockTable::restore(&original.snapshot()).expect("own snapshot restores");
        prop_assert_eq!(restored.snapshot(), original.snapshot());
        for (i, command) in commands.iter().enumerate().skip(split) {
            let index = LogIndex(i as u64 + 1);
            let expected = original.apply(index, command.clone());
            prop_assert_eq!(&restored.apply(index, command.clone()), &expected);
            prop_assert_eq!(&twin.apply(index, command.clone()), &expected);
        }
        prop_assert_eq!(restored.snapshot(), original.snapshot());
        prop_assert_eq!(twin.snapshot(), original.snapshot());
    }

    /// Proves TESTING D-03 at the state machine: random acyclic wait-for graphs (chains, trees,
    /// diamonds; up to 20 sessions, mixed modes) are built with zero refusals; then one more wait
    /// is refused exactly when it closes a cycle.
    #[test]
    fn acyclic_waits_are_never_refused(
        n in 2..=20usize,
        raw_edges in prop::collection::vec((0..20usize, 0..20usize, any::<bool>()), 0..60),
        extra in (0..20usize, 0..20usize, any::<bool>()),
    ) {
        let mut table = LockTable::new(LockConfig::default()).expect("valid config");
        let mut index = 0u64;
        let mut apply = |table: &mut LockTable, command: LockCommand| {
            index += 1;
            table.apply(LogIndex(index), command)
        };
        let mut ids = Vec::new();
        for _ in 0..n {
            match apply(&mut table, LockCommand::CreateSession { ttl_ms: 1_000, idempotency_key: None }).response {
                Ok(Response::SessionCreated { session, .. }) => ids.push(session),
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            }
        }
        let lock = |j: usize| LockName::new(format!("L{j}")).expect("valid");
        for (j, id) in ids.iter().enumerate() {
            let granted = apply(&mut table, LockCommand::Acquire {
                session: *id, name: lock(j), mode: LockMode::Exclusive, wait: true, idempotency_key: None,
                tag: 0,
            });
            prop_assert!(matches!(granted.response, Ok(Response::Granted(_))));
        }
        // Rank order: every edge goes from a lower to a higher rank. Waits are issued by
        // decreasing source, so a later waiter in any queue has a lower rank than those ahead.
        let mut edges: BTreeMap<(usize, usize), bool> = BTreeMap::new();
        for (a, b, exclusive) in raw_edges {
            let (a, b) = (a % n, b % n);
            if a != b {
                edges.insert((a.min(b), a.max(b)), exclusive);
            }
        }
        let mut ordered: Vec<_> = edges.iter().collect();
        ordered.sort_by_key(|((from, to), _)| (std::cmp::Reverse(*from), *to));
        // waits_on[j] = queue of L_j as (source, mode), and the DAG adjacency for reachability.
        let mut waits_on: Vec<Vec<(usize, LockMode)>> = vec![Vec::new(); n];
        for ((from, to), exclusive) in ordered {
            let mode = if *exclusive { LockMode::Exclusive } else { LockMode::Shared };
            let outcome = apply(&mut table, LockCommand::Acquire {
                session: ids[*from], name: lock(*to), mode, wait: true, idempotency_key: None,
                tag: 0,
            });
            prop_assert_eq!(outcome.response, Ok(Response::Waiting { mode }), "acyclic wait refused");
            waits_on[*to].push((*from, mode));
        }
        prop_assert!(table.wait_for_graph().is_acyclic());
        table.check_invariants();

        // One more wait: session `hi` asks for L_lo (hi > lo). It waits for lo (the exclusive
        // holder) and every incompatible waiter queued on L_lo; a cycle closes exactly when one
        // of those reaches `hi` through the DAG's waits.
        let (x, y, exclusive) = extra;
        let (lo, hi) = ((x % n).min(y % n), (x % n).max(y % n));
        if lo == hi {
            return Ok(());
        }
        let mode = if exclusive { LockMode::Exclusive } else { LockMode::Shared };
        let mut full: BTreeSet<(usize, usize)> = BTreeSet::new();
        for (j, queue) in waits_on.iter().enumerate() {
            for (i, (s, m)) in queue.iter().enumerate() {
                full.insert((*s, j));
                for (ahead, ahead_mode) in &queue[..i] {
                    if *ahead_mode == LockMode::Exclusive || *m == LockMode::Exclusive {
                        full.insert((*s, *ahead));
                    }
                }
            }
        }
        let reaches = |from: usize, target: usize| {
            let mut seen = BTreeSet::from([from]);
            let mut stack = vec![from];
            while let Some(node) = stack.pop() {
                if node == target {
                    return true;
                }
                for (_, next) in full.range((node, 0)..=(node, usize::MAX)) {
                    if seen.insert(*next) {
                        stack.push(*next);
                    }
                }
            }
            false
        };
        let mut blockers = vec![lo];
        blockers.extend(waits_on[lo].iter().filter(|(_, m)| *m == LockMode::Exclusive || mode == LockMode::Exclusive).map(|(s, _)| *s));
        let closes_cycle = blockers.iter().any(|b| reaches(*b, hi));
        let outcome = apply(&mut table, LockCommand::Acquire {
            session: ids[hi], name: lock(lo), mode, wait: true, idempotency_key: None,
            tag: 0,
        });
        match outcome.response {
            Err(LockError::Deadlock { cycle }) => {
                prop_assert!(closes_cycle, "refused an acyclic wait");
                prop_assert_eq!(cycle[0], ids[hi]);
            }
            Ok(Response::Waiting { .. }) => prop_assert!(!closes_cycle, "missed a cycle"),
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
        table.check_invariants();
    }
}
