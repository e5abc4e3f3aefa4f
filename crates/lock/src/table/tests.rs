//! Behaviour tests of the lock table, one rule per test. `apply` runs the full invariant check
//! after every step in these tests (`#[cfg(test)]`).

use super::*;
use crate::queue::Holder;
use LockMode::{Exclusive, Shared};

/// A table plus the next log index, with terse helpers for commands.
struct Harness {
    table: LockTable,
    index: u64,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(LockConfig::default())
    }

    fn with(config: LockConfig) -> Harness {
        Harness {
            table: LockTable::new(config).expect("valid config"),
            index: 0,
        }
    }

    fn apply(&mut self, command: LockCommand) -> ApplyOutcome {
        self.index += 1;
        self.table.apply(LogIndex(self.index), command)
    }

    fn session(&mut self) -> SessionId {
        match self.create(10_000, None).response {
            Ok(Response::SessionCreated { session, .. }) => session,
            other => panic!("session not created: {other:?}"),
        }
    }

    fn create(&mut self, ttl_ms: u64, key: Option<&str>) -> ApplyOutcome {
        self.apply(LockCommand::CreateSession {
            ttl_ms,
            idempotency_key: key.map(key_of),
        })
    }

    fn acquire(&mut self, session: SessionId, name: &str, mode: LockMode) -> ApplyOutcome {
        self.acquire_opt(session, name, mode, true)
    }

    fn try_acquire(&mut self, session: SessionId, name: &str, mode: LockMode) -> ApplyOutcome {
        self.acquire_opt(session, name, mode, false)
    }

    fn acquire_opt(
        &mut self,
        session: SessionId,
        name: &str,
        mode: LockMode,
        wait: bool,
    ) -> ApplyOutcome {
        self.tagged_acquire(session, name, mode, wait, 0)
    }

    fn tagged_acquire(
        &mut self,
        session: SessionId,
        name: &str,
        mode: LockMode,
        wait: bool,
        tag: RequestTag,
    ) -> ApplyOutcome {
        self.apply(LockCommand::Acquire {
            session,
            name: lock(name),
            mode,
            wait,
            idempotency_key: None,
            tag,
        })
    }

    fn abandon(&mut self, session: SessionId, name: &str, tag: RequestTag) -> ApplyOutcome {
        self.apply(LockCommand::Abandon {
            session,
            name: lock(name),
            tag,
        })
    }

    fn release(&mut self, session: SessionId, name: &str) -> ApplyOutcome {
        self.apply(LockCommand::Release {
            session,
            name: lock(name),
            token: None,
            idempotency_key: None,
        })
    }

    fn cancel(&mut self, session: SessionId, name: &str) -> ApplyOutcome {
        self.apply(LockCommand::CancelWait {
            session,
            name: lock(name),
        })
    }

    fn close(&mut self, session: SessionId) -> ApplyOutcome {
        self.apply(LockCommand::CloseSession {
            session,
            idempotency_key: None,
        })
    }

    fn expire(&mut self, sessions: &[SessionId]) -> ApplyOutcome {
        self.apply(LockCommand::ExpireSessions {
            sessions: sessions.to_vec(),
        })
    }

    fn holders(&self, name: &str) -> Vec<(SessionId, LockMode)> {
        let info = self.table.lock(&lock(name));
        info.holders.iter().map(|h| (h.session, h.mode)).collect()
    }

    fn waiters(&self, name: &str) -> Vec<(SessionId, LockMode)> {
        let info = self.table.lock(&lock(name));
        info.waiters.iter().map(|w| (w.session, w.mode)).collect()
    }
}

fn lock(name: &str) -> LockName {
    LockName::new(name).expect("valid test name")
}

fn key_of(key: &str) -> IdempotencyKey {
    IdempotencyKey::new(key).expect("valid test key")
}

fn granted(outcome: &ApplyOutcome) -> Grant {
    match &outcome.response {
        Ok(Response::Granted(grant)) => grant.clone(),
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn event_grants(outcome: &ApplyOutcome) -> Vec<(SessionId, LockMode)> {
    outcome
        .events
        .iter()
        .filter_map(|e| match e {
            LockEvent::Granted(g) => Some((g.session, g.mode)),
            _ => None,
        })
        .collect()
}

fn waiting(mode: LockMode) -> Result<Response, LockError> {
    Ok(Response::Waiting { mode })
}

#[test]
fn shared_holders_coexist() {
    // Proves several sessions are granted shared on one name at once, each with its own token.
    let mut h = Harness::new();
    let (a, b, c) = (h.session(), h.session(), h.session());
    let tokens: Vec<_> = [a, b, c]
        .into_iter()
        .map(|s| granted(&h.acquire(s, "r", Shared)).token)
        .collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(h.holders("r"), vec![(a, Shared), (b, Shared), (c, Shared)]);
}

#[test]
fn exclusive_holder_is_alone() {
    // Proves an exclusive holder blocks both modes, and an exclusive request waits for readers.
    let mut h = Harness::new();
    let (a, b, c) = (h.session(), h.session(), h.session());
    granted(&h.acquire(a, "r", Exclusive));
    assert_eq!(
        h.try_acquire(b, "r", Shared).response,
        Ok(Response::NotGranted)
    );
    assert_eq!(
        h.try_acquire(b, "r", Exclusive).response,
        Ok(Response::NotGranted)
    );
    granted(&h.acquire(c, "other", Shared));
    granted(&h.acquire(b, "other", Shared));
    assert_eq!(
        h.acquire(a, "other", Exclusive).response,
        waiting(Exclusive)
    );
    assert_eq!(h.holders("r"), vec![(a, Exclusive)]);
}

#[test]
fn shared_request_behind_waiting_exclusive_waits() {
    // Proves a writer is not starved: with readers holding and a writer queued, a new reader
    // queues behind the writer instead of joining the readers, and the writer goes first.
    let mut h = Harness::new();
    let (r1, w, r2) = (h.session(), h.session(), h.session());
    granted(&h.acquire(r1, "r", Shared));
    assert_eq!(h.acquire(w, "r", Exclusive).response, waiting(Exclusive));
    assert_eq!(h.acquire(r2, "r", Shared).response, waiting(Shared));
    let released = h.release(r1, "r");
    assert_eq!(event_grants(&released), vec![(w, Exclusive)]);
    let released = h.release(w, "r");
    assert_eq!(event_grants(&released), vec![(r2, Shared)]);
}

#[test]
fn waiters_are_granted_in_fifo_order() {
    // Proves exclusive waiters are served strictly in arrival order, one per release.
    let mut h = Harness::new();
    let sessions: Vec<_> = (0..4).map(|_| h.session()).collect();
    granted(&h.acquire(sessions[0], "r", Exclusive));
    for s in &sessions[1..] {
        assert_eq!(h.acquire(*s, "r", Exclusive).response, waiting(Exclusive));
    }
    for pair in sessions.windows(2) {
        let outcome = h.release(pair[0], "r");
        assert_eq!(event_grants(&outcome), vec![(pair[1], Exclusive)]);
    }
}

#[test]
fn release_grants_the_leading_shared_run_in_one_apply_with_increasing_tokens() {
    // Proves handoff happens in the releasing apply: all shared waiters up to the next writer are
    // granted together, with strictly increasing distinct tokens.
    let mut h = Harness::new();
    let (w, r1, r2, w2, r3) = (
        h.session(),
        h.session(),
        h.session(),
        h.session(),
        h.session(),
    );
    let first = granted(&h.acquire(w, "r", Exclusive)).token;
    h.acquire(r1, "r", Shared);
    h.acquire(r2, "r", Shared);
    h.acquire(w2, "r", Exclusive);
    h.acquire(r3, "r", Shared);
    let outcome = h.release(w, "r");
    assert_eq!(event_grants(&outcome), vec![(r1, Shared), (r2, Shared)]);
    let tokens: Vec<_> = outcome
        .events
        .iter()
        .map(|e| match e {
            LockEvent::Granted(g) => g.token,
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert!(first < tokens[0] && tokens[0] < tokens[1]);
    assert_eq!(h.waiters("r"), vec![(w2, Exclusive), (r3, Shared)]);
    let next = h.acquire(r1, "s", Exclusive);
    assert!(
        granted(&next).token > tokens[1],
        "the next entry continues above"
    );
}

#[test]
fn acquire_is_idempotent_per_session_and_name() {
    // Proves repeating an acquire returns the same grant and token, a repeated wait stays one
    // wait, and holding exclusive answers a shared request with the exclusive grant.
    let mut h = Harness::new();
    let (a, b) = (h.session(), h.session());
    let first = granted(&h.acquire(a, "r", Exclusive));
    assert_eq!(granted(&h.acquire(a, "r", Exclusive)), first);
    assert_eq!(granted(&h.acquire(a, "r", Shared)), first);
    assert_eq!(h.acquire(b, "r", Exclusive).response, waiting(Exclusive));
    assert_eq!(h.acquire(b, "r", Exclusive).response, waiting(Exclusive));
    assert_eq!(h.waiters("r"), vec![(b, Exclusive)]);
    assert_eq!(
        h.acquire(b, "r", Shared).response,
        Err(LockError::WaitModeMismatch {
            name: lock("r"),
            waiting: Exclusive
        })
    );
    assert!(h.table.wait_for_graph().find_cycle_through(b).is_none());
}

#[test]
fn release_of_a_lock_not_held_is_not_held() {
    // Proves releasing a never-held or already-released lock is NotHeld, and a waiter cannot
    // release what it only waits for.
    let mut h = Harness::new();
    let (a, b) = (h.session(), h.session());
    let not_held = |s| {
        Err(LockError::NotHeld {
            session: s,
            name: lock("r"),
        })
    };
    assert_eq!(h.release(a, "r").response, not_held(a));
    granted(&h.acquire(a, "r", Exclusive));
    h.acquire(b, "r", Exclusive);
    assert_eq!(h.release(b, "r").response, not_held(b));
    assert!(h.release(a, "r").response.is_ok());
    assert_eq!(h.release(a, "r").response, not_held(a));
}

#[test]
fn stale_release_after_regrant_is_rejected() {
    // Proves TESTING L-15: after H's session expires and G gets the lock, H's release is refused
    // (its session is gone), and a release carrying an old token of a live session is refused
    // too; G keeps the lock in both cases.
    let mut h = Harness::new();
    let (holder, next) = (h.session(), h.session());
    let old = granted(&h.acquire(holder, "r", Exclusive)).token;
    h.acquire(next, "r", Exclusive);
    let outcome = h.expire(&[holder]);
    assert_eq!(event_grants(&outcome), vec![(next, Exclusive)]);
    assert_eq!(
        h.release(holder, "r").response,
        Err(LockError::SessionNotFound(holder))
    );
    // The same session re-acquiring after its own release: a delayed release with the first
    // grant's token must not drop the second grant (it is answered as the retry it may be).
    let current = h.table.lock(&lock("r")).holders[0].token;
    h.release(next, "r");
    let again = granted(&h.acquire(next, "r", Exclusive)).token;
    let delayed = h.apply(LockCommand::Release {
        session: next,
        name: lock("r"),
        token: Some(current),
        idempotency_key: None,
    });
    assert_eq!(
        delayed.response,
        Ok(Response::Released {
            name: lock("r"),
            token: current
        })
    );
    assert!(delayed.events.is_empty(), "{:?}", delayed.events);
    assert_eq!(h.holders("r"), vec![(next, Exclusive)]);
    assert!(old < current && current < again);
    // A token the session never released is refused as stale.
    let never = h.apply(LockCommand::Release {
        session: next,
        name: lock("r"),
        token: Some(old),
        idempotency_key: None,
    });
    assert_eq!(
        never.response,
        Err(LockError::StaleFencingToken {
            name: lock("r"),
            presented: old,
            current: again
        })
    );
}

#[test]
fn a_retried_release_with_its_token_is_released_again_without_an_idempotency_key() {
    // Proves release is idempotent per (session, name, token): a retry after a lost answer is
    // `released` even once another session holds the lock, changes nothing, and the session
    // remembers its last RELEASES_REMEMBERED releases only.
    let mut h = Harness::new();
    let (a, b) = (h.session(), h.session());
    let token = granted(&h.acquire(a, "r", Exclusive)).token;
    h.acquire(b, "r", Exclusive);
    let release = LockCommand::Release {
        session: a,
        name: lock("r"),
        token: Some(token),
        idempotency_key: None,
    };
    let first = h.apply(release.clone());
    assert_eq!(event_grants(&first), vec![(b, Exclusive)]);
    let retry = h.apply(release.clone());
    assert_eq!(retry.response, first.response);
    assert!(retry.events.is_empty(), "{:?}", retry.events);
    assert_eq!(h.holders("r"), vec![(b, Exclusive)]);
    // Without a token a retry cannot be told from a mistake: not held.
    assert!(matches!(
        h.release(a, "r").response,
        Err(LockError::NotHeld { .. })
    ));
    for i in 0..crate::session::RELEASES_REMEMBERED {
        let name = format!("other-{i}");
        granted(&h.acquire(a, &name, Exclusive));
        assert!(h.release(a, &name).response.is_ok());
    }
    assert!(matches!(
        h.apply(release).response,
        Err(LockError::NotHeld { .. })
    ));
}

#[test]
fn closing_a_session_releases_its_locks_and_wakes_the_next_waiters() {
    // Proves close releases every hold, withdraws every wait, and grants the next waiters of
    // each released lock in the same apply, reporting all of it as events.
    let mut h = Harness::new();
    let (a, b, c, d) = (h.session(), h.session(), h.session(), h.session());
    granted(&h.acquire(a, "r1", Exclusive));
    granted(&h.acquire(a, "r2", Shared));
    granted(&h.acquire(d, "r3", Exclusive));
    assert_eq!(h.acquire(a, "r3", Shared).response, waiting(Shared));
    assert_eq!(h.acquire(b, "r1", Shared).response, waiting(Shared));
    assert_eq!(h.acquire(c, "r2", Exclusive).response, waiting(Exclusive));
    let outcome = h.close(a);
    assert_eq!(outcome.response, Ok(Response::SessionClosed { session: a }));
    assert!(outcome.events.contains(&LockEvent::SessionEnded {
        session: a,
        cause: SessionEndCause::Closed
    }));
    assert!(outcome.events.contains(&LockEvent::WaitCancelled {
        session: a,
        name: lock("r3"),
        cause: SessionEndCause::Closed
    }));
    assert_eq!(event_grants(&outcome), vec![(b, Shared), (c, Exclusive)]);
    assert!(h.table.session(a).is_none());
    assert_eq!(h.waiters("r3"), vec![]);
    assert_eq!(h.close(a).response, Err(LockError::SessionNotFound(a)));
    assert_eq!(
        h.acquire(a, "r9", Shared).response,
        Err(LockError::SessionNotFound(a))
    );
}

#[test]
fn expiring_a_session_releases_its_locks_and_wakes_the_next_waiter() {
    // Proves expiry behaves like close (cause Expired), ignores unknown and repeated ids, and
    // reports which sessions it expired.
    let mut h = Harness::new();
    let (a, b) = (h.session(), h.session());
    granted(&h.acquire(a, "r", Exclusive));
    h.acquire(b, "r", Exclusive);
    let outcome = h.expire(&[SessionId(999), a, a]);
    assert_eq!(
        outcome.response,
        Ok(Response::SessionsExpired { sessions: vec![a] })
    );
    assert!(outcome.events.contains(&LockEvent::Released {
        session: a,
        name: lock("r"),
        token: FencingToken(3),
        cause: SessionEndCause::Expired
    }));
    assert_eq!(event_grants(&outcome), vec![(b, Exclusive)]);
    assert_eq!(
        h.expire(&[a]).response,
        Ok(Response::SessionsExpired { sessions: vec![] })
    );
}

#[test]
fn waiter_of_an_expired_session_is_never_granted() {
    // Proves TESTING L-14: W waits behind H, W's session expires, then H releases: the lock goes
    // to the next live waiter, never to W, and W is told its session is gone.
    let mut h = Harness::new();
    let (holder, w, live) = (h.session(), h.session(), h.session());
    granted(&h.acquire(holder, "r", Exclusive));
    h.acquire(w, "r", Exclusive);
    h.acquire(live, "r", Exclusive);
    let expired = h.expire(&[w]);
    assert_eq!(event_grants(&expired), vec![]);
    let released = h.release(holder, "r");
    assert_eq!(event_grants(&released), vec![(live, Exclusive)]);
    assert_eq!(
        h.acquire(w, "r", Exclusive).response,
        Err(LockError::SessionNotFound(w))
    );
}

#[test]
fn sessions_expired_together_never_grant_each_other() {
    // Proves that when a holder and its waiter expire in one command, the waiter is withdrawn
    // before the hold is released, so nothing is granted to a session that is ending.
    let mut h = Harness::new();
    let (holder, w, live) = (h.session(), h.session(), h.session());
    granted(&h.acquire(holder, "r", Exclusive));
    h.acquire(w, "r", Exclusive);
    h.acquire(live, "r", Shared);
    let outcome = h.expire(&[holder, w]);
    assert_eq!(event_grants(&outcome), vec![(live, Shared)]);
}

#[test]
fn cancel_wait_withdraws_the_wait_and_wakes_those_behind() {
    // Proves cancelling a queued writer lets the readers behind it join the reading holders at
    // once, and a repeated cancel is harmless.
    let mut h = Harness::new();
    let (r1, w, r2) = (h.session(), h.session(), h.session());
    granted(&h.acquire(r1, "r", Shared));
    h.acquire(w, "r", Exclusive);
    h.acquire(r2, "r", Shared);
    let outcome = h.cancel(w, "r");
    assert_eq!(outcome.response, Ok(Response::WaitCancelled));
    assert_eq!(event_grants(&outcome), vec![(r2, Shared)]);
    assert_eq!(h.cancel(w, "r").response, Ok(Response::NotWaiting));
    assert!(h.table.wait_for_graph().is_empty());
}

#[test]
fn cancel_wait_after_the_grant_reports_the_grant() {
    // Proves a cancel that loses the race to a grant answers with the grant, so the shell can
    // return 200 instead of a timeout and no hold leaks silently.
    let mut h = Harness::new();
    let (a, b) = (h.session(), h.session());
    granted(&h.acquire(a, "r", Exclusive));
    h.acquire(b, "r", Exclusive);
    let grant = match h.release(a, "r").events.as_slice() {
        [LockEvent::Granted(g)] => g.clone(),
        other => panic!("expected one grant, got {other:?}"),
    };
    assert_eq!(h.cancel(b, "r").response, Ok(Response::Granted(grant)));
}

#[test]
fn two_cycle_is_refused_with_the_cycle() {
    // Proves TESTING D-01 at the state machine: A holds r1 and waits r2, B holds r2 and asks r1:
    // B's wait is refused with [B, A], nothing is queued for B, and A still waits.
    let mut h = Harness::new();
    let (a, b) = (h.session(), h.session());
    granted(&h.acquire(a, "r1", Exclusive));
    granted(&h.acquire(b, "r2", Exclusive));
    assert_eq!(h.acquire(a, "r2", Exclusive).response, waiting(Exclusive));
    assert_eq!(
        h.acquire(b, "r1", Shared).response,
        Err(LockError::Deadlock { cycle: vec![b, a] })
    );
    assert_eq!(h.waiters("r1"), vec![]);
    assert_eq!(h.waiters("r2"), vec![(a, Exclusive)]);
    // Breaking the cycle by releasing r2 grants A; B's acquire now just waits.
    h.release(b, "r2");
    assert_eq!(h.acquire(b, "r1", Shared).response, waiting(Shared));
}

#[test]
fn three_cycle_is_refused_with_the_cycle_in_wait_order() {
    // Proves TESTING D-02: A waits B, B waits C; C asking for A's lock is refused with [C, A, B].
    let mut h = Harness::new();
    let (a, b, c) = (h.session(), h.session(), h.session());
    for (s, name) in [(a, "r1"), (b, "r2"), (c, "r3")] {
        granted(&h.acquire(s, name, Exclusive));
    }
    h.acquire(a, "r2", Exclusive);
    h.acquire(b, "r3", Shared);
    assert_eq!(
        h.acquire(c, "r1", Exclusive).response,
        Err(LockError::Deadlock {
            cycle: vec![c, a, b]
        })
    );
}

#[test]
fn cycle_through_a_queued_waiter_is_refused() {
    // Proves waits on incompatible waiters ahead count: B queued behind A's queued writer on r
    // while A waits for B elsewhere closes a cycle even though B never holds r.
    let mut h = Harness::new();
    let (holder, a, b) = (h.session(), h.session(), h.session());
    granted(&h.acquire(holder, "r", Shared));
    granted(&h.acquire(b, "s", Exclusive));
    h.acquire(a, "r", Exclusive); // a waits for holder
    h.acquire(a, "s", Shared); // a waits for b
    assert_eq!(
        h.acquire(b, "r", Shared).response,
        Err(LockError::Deadlock { cycle: vec![b, a] })
    );
}

#[test]
fn try_lock_never_creates_wait_edges() {
    // Proves a try-lock that fails adds nothing to the graph or queue, so it can never be part
    // of a deadlock.
    let mut h = Harness::new();
    let (a, b) = (h.session(), h.session());
    granted(&h.acquire(a, "r1", Exclusive));
    granted(&h.acquire(b, "r2", Exclusive));
    h.acquire(a, "r2", Exclusive);
    assert_eq!(
        h.try_acquire(b, "r1", Exclusive).response,
        Ok(Response::NotGranted)
    );
    assert_eq!(h.table.wait_for_graph().edge_count(), 1);
    assert_eq!(h.waiters("r1"), vec![]);
}

#[test]
fn upgrade_by_the_sole_shared_holder_is_in_place_with_a_new_token() {
    // Proves the documented upgrade rule: the only shared holder becomes exclusive at once, with
    // a token above its shared one, even with writers queued behind it.
    let mut h = Harness::new();
    let (a, w) = (h.session(), h.session());
    let shared = granted(&h.acquire(a, "r", Shared));
    h.acquire(w, "r", Exclusive);
    let exclusive = granted(&h.acquire(a, "r", Exclusive));
    assert_eq!(exclusive.mode, Exclusive);
    assert!(exclusive.token > shared.token);
    assert_eq!(h.holders("r"), vec![(a, Exclusive)]);
    assert_eq!(h.waiters("r"), vec![(w, Exclusive)]);
}

#[test]
fn upgrade_waits_at_the_head_until_the_other_readers_release() {
    // Proves a shared holder with co-holders keeps its shared hold and waits at the head of the
    // queue (ahead of an earlier writer), then is upgraded when the others release.
    let mut h = Harness::new();
    let (a, b, w) = (h.session(), h.session(), h.session());
    granted(&h.acquire(a, "r", Shared));
    granted(&h.acquire(b, "r", Shared));
    h.acquire(w, "r", Exclusive);
    assert_eq!(
        h.try_acquire(a, "r", Exclusive).response,
        Ok(Response::NotGranted)
    );
    assert_eq!(h.acquire(a, "r", Exclusive).response, waiting(Exclusive));
    assert_eq!(h.acquire(a, "r", Exclusive).response, waiting(Exclusive));
    assert_eq!(h.waiters("r"), vec![(a, Exclusive), (w, Exclusive)]);
    assert!(h.table.lock(&lock("r")).waiters[0].upgrade);
    let outcome = h.release(b, "r");
    assert_eq!(event_grants(&outcome), vec![(a, Exclusive)]);
    assert_eq!(h.holders("r"), vec![(a, Exclusive)]);
    assert_eq!(event_grants(&h.release(a, "r")), vec![(w, Exclusive)]);
}

#[test]
fn releasing_the_shared_hold_during_an_upgrade_keeps_the_exclusive_wait_at_the_head() {
    // Proves the documented rule for releasing a shared hold while its upgrade is pending.
    let mut h = Harness::new();
    let (a, b, w) = (h.session(), h.session(), h.session());
    granted(&h.acquire(a, "r", Shared));
    granted(&h.acquire(b, "r", Shared));
    h.acquire(w, "r", Exclusive);
    h.acquire(a, "r", Exclusive);
    assert!(h.release(a, "r").response.is_ok());
    assert_eq!(h.waiters("r"), vec![(a, Exclusive), (w, Exclusive)]);
    assert!(!h.table.lock(&lock("r")).waiters[0].upgrade);
    assert_eq!(event_grants(&h.release(b, "r")), vec![(a, Exclusive)]);
}

#[test]
fn second_upgrader_is_refused_as_a_deadlock() {
    // Proves TESTING D-06: two shared holders both asking for exclusive would wait for each
    // other; the second is refused with [second, first] and the first upgrades once the second
    // releases its shared hold.
    let mut h = Harness::new();
    let (a, b) = (h.session(), h.session());
    granted(&h.acquire(a, "r", Shared));
    granted(&h.acquire(b, "r", Shared));
    assert_eq!(h.acquire(a, "r", Exclusive).response, waiting(Exclusive));
    assert_eq!(
        h.acquire(b, "r", Exclusive).response,
        Err(LockError::Deadlock { cycle: vec![b, a] })
    );
    assert_eq!(event_grants(&h.release(b, "r")), vec![(a, Exclusive)]);
}

#[test]
fn session_id_is_the_log_index_of_its_creation() {
    // Proves ids are deterministic and unique: the CreateSession entry's index.
    let mut h = Harness::new();
    h.index = 41;
    assert_eq!(
        h.create(5_000, None).response,
        Ok(Response::SessionCreated {
            session: SessionId(42),
            ttl_ms: 5_000
        })
    );
    let info = h.table.session(SessionId(42)).expect("session exists");
    assert_eq!((info.ttl_ms, info.lock_count), (5_000, 0));
    assert_eq!(h.table.sessions().count(), 1);
}

#[test]
#[should_panic(expected = "not above applied index")]
fn applying_an_index_twice_panics() {
    // Proves the shell cannot apply an entry twice or out of order unnoticed.
    let mut h = Harness::new();
    h.session();
    h.index = 0;
    h.session();
}

#[test]
fn exceeding_bounds_returns_typed_errors() {
    // Proves every bound of LockConfig is a typed error, not a panic, and leaves state intact.
    let mut h = Harness::with(LockConfig {
        max_sessions: 3,
        max_locks: 2,
        max_locks_per_session: 2,
        max_waiters_per_lock: 1,
        session_ttl_ms_min: 100,
        session_ttl_ms_max: 1_000,
        ..LockConfig::default()
    });
    assert!(matches!(
        h.create(99, None).response,
        Err(LockError::TtlOutOfRange { .. })
    ));
    let (a, b, c) = (
        h.create(100, None),
        h.create(1_000, None),
        h.create(500, None),
    );
    let ids: Vec<SessionId> = [a, b, c]
        .iter()
        .map(|o| match o.response {
            Ok(Response::SessionCreated { session, .. }) => session,
            ref other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        h.create(500, None).response,
        Err(LockError::TooManySessions { max: 3 })
    );
    granted(&h.acquire(ids[0], "r1", Exclusive));
    granted(&h.acquire(ids[0], "r2", Exclusive));
    assert_eq!(
        h.acquire(ids[1], "r3", Exclusive).response,
        Err(LockError::TooManyLocks { max: 2 })
    );
    assert_eq!(
        h.acquire(ids[0], "r3", Exclusive).response,
        Err(LockError::TooManyLocksForSession {
            session: ids[0],
            max: 2
        })
    );
    assert_eq!(
        h.acquire(ids[1], "r1", Exclusive).response,
        waiting(Exclusive)
    );
    assert_eq!(
        h.acquire(ids[2], "r1", Exclusive).response,
        Err(LockError::TooManyWaiters {
            name: lock("r1"),
            max: 1
        })
    );
}

#[test]
fn retried_command_with_an_idempotency_key_returns_the_first_outcome() {
    // Proves a retried create returns the same session (no leak), and a retried release returns
    // Released again instead of NotHeld.
    let mut h = Harness::new();
    let first = h.create(1_000, Some("create-1"));
    assert_eq!(h.create(1_000, Some("create-1")), first);
    assert_eq!(h.table.sessions().count(), 1);
    let Ok(Response::SessionCreated { session, .. }) = first.response else {
        panic!()
    };
    granted(&h.acquire(session, "r", Exclusive));
    let release = LockCommand::Release {
        session,
        name: lock("r"),
        token: None,
        idempotency_key: Some(key_of("release-1")),
    };
    let once = h.apply(release.clone());
    assert!(matches!(once.response, Ok(Response::Released { .. })));
    assert_eq!(h.apply(release).response, once.response);
}

#[test]
fn retried_acquire_that_was_waiting_reports_the_later_grant() {
    // Proves the Waiting exception: a retry of a keyed acquire that first queued sees the grant.
    let mut h = Harness::new();
    let (a, b) = (h.session(), h.session());
    granted(&h.acquire(a, "r", Exclusive));
    let acquire = LockCommand::Acquire {
        session: b,
        name: lock("r"),
        mode: Exclusive,
        wait: true,
        idempotency_key: Some(key_of("acq-1")),
        tag: 0,
    };
    assert_eq!(h.apply(acquire.clone()).response, waiting(Exclusive));
    let grant = match h.release(a, "r").events.as_slice() {
        [LockEvent::Granted(g)] => g.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        h.apply(acquire.clone()).response,
        Ok(Response::Granted(grant.clone()))
    );
    h.release(b, "r");
    // Now the remembered outcome is the grant: the retry does not acquire a second time.
    assert_eq!(h.apply(acquire).response, Ok(Response::Granted(grant)));
    assert_eq!(h.holders("r"), vec![]);
}

#[test]
fn idempotency_key_reused_for_another_command_is_refused() {
    // Proves a key names one command: using it for a different one is an error, not a replay.
    let mut h = Harness::new();
    h.create(1_000, Some("k"));
    assert_eq!(
        h.create(2_000, Some("k")).response,
        Err(LockError::IdempotencyKeyReused { key: "k".into() })
    );
}

#[test]
fn idempotency_table_is_bounded() {
    // Proves the oldest key is forgotten beyond max_idempotency_keys (a very late retry then
    // acts again).
    let mut h = Harness::with(LockConfig {
        max_idempotency_keys: 2,
        ..LockConfig::default()
    });
    let first = h.create(1_000, Some("k1"));
    h.create(1_000, Some("k2"));
    h.create(1_000, Some("k3"));
    assert_eq!(h.table.recent.len(), 2);
    assert_ne!(h.create(1_000, Some("k1")).response, first.response);
}

#[test]
fn read_api_lists_holders_by_grant_and_waiters_in_order() {
    // Proves the GET /v1/locks/{name} view: holders oldest grant first with tokens, waiters in
    // serving order, a free lock empty; held_by lists a session's grants.
    let mut h = Harness::new();
    let (a, b, c) = (h.session(), h.session(), h.session());
    let gb = granted(&h.acquire(b, "r", Shared));
    let ga = granted(&h.acquire(a, "r", Shared));
    h.acquire(c, "r", Exclusive);
    let info = h.table.lock(&lock("r"));
    assert_eq!(
        info.holders,
        vec![
            Holder {
                session: b,
                mode: Shared,
                token: gb.token
            },
            Holder {
                session: a,
                mode: Shared,
                token: ga.token
            }
        ]
    );
    assert_eq!(
        info.waiters,
        vec![Waiter {
            session: c,
            mode: Exclusive,
            upgrade: false,
            tag: 0,
        }]
    );
    assert!(h.table.lock(&lock("free")).holders.is_empty());
    assert_eq!(h.table.held_by(a), vec![ga]);
    assert_eq!(h.table.locks().count(), 1);
    assert_eq!(h.table.session(c).map(|s| s.lock_count), Some(1));
}

#[test]
fn snapshot_restores_identical_state_and_behaviour() {
    // Proves a restored table has the same bytes, the same graph, and answers the next commands
    // exactly as the original.
    let mut h = Harness::new();
    let (a, b, c) = (h.session(), h.session(), h.session());
    granted(&h.acquire(a, "r1", Exclusive));
    h.acquire(b, "r1", Shared);
    h.acquire(c, "r1", Exclusive);
    h.create(1_000, Some("key"));
    let bytes = h.table.snapshot();
    let mut restored = Harness {
        table: LockTable::restore(&bytes).expect("restores"),
        index: h.index,
    };
    assert_eq!(restored.table.snapshot(), bytes);
    assert_eq!(restored.table.wait_for_graph(), h.table.wait_for_graph());
    assert_eq!(restored.release(a, "r1"), h.release(a, "r1"));
    assert_eq!(
        restored.create(1_000, Some("key")),
        h.create(1_000, Some("key"))
    );
    assert_eq!(restored.table.snapshot(), h.table.snapshot());
}

#[test]
fn restore_rejects_garbage_and_inconsistent_snapshots() {
    // Proves restore never panics on bad bytes and refuses a decodable but inconsistent table.
    assert!(matches!(
        LockTable::restore(&[]),
        Err(LockError::CorruptSnapshot(_))
    ));
    assert!(matches!(
        LockTable::restore(&[1, 2, 3, 4]),
        Err(LockError::CorruptSnapshot(_))
    ));
    let mut h = Harness::new();
    let a = h.session();
    granted(&h.acquire(a, "r", Exclusive));
    let mut table = h.table.clone();
    table.sessions.clear(); // a holder without a session
    assert!(matches!(
        LockTable::restore(&table.snapshot()),
        Err(LockError::CorruptSnapshot(_))
    ));
    let mut bytes = h.table.snapshot();
    bytes.push(0);
    assert!(matches!(
        LockTable::restore(&bytes),
        Err(LockError::CorruptSnapshot(_))
    ));
}

#[test]
fn identical_command_streams_give_identical_outcomes_and_snapshots() {
    // Proves determinism: two tables fed the same commands agree on every outcome and byte.
    let mut x = Harness::new();
    let mut y = Harness::new();
    let script = |h: &mut Harness| {
        let (a, b, c) = (h.session(), h.session(), h.session());
        let mut outcomes = vec![
            h.acquire(a, "r1", Shared),
            h.acquire(b, "r1", Exclusive),
            h.acquire(c, "r1", Shared),
            h.acquire(c, "r2", Exclusive),
            h.acquire(a, "r2", Shared),
            h.acquire(c, "r1", Exclusive),
        ];
        outcomes.push(h.expire(&[a]));
        outcomes.push(h.close(b));
        outcomes
    };
    assert_eq!(script(&mut x), script(&mut y));
    assert_eq!(x.table.snapshot(), y.table.snapshot());
}

// ---- abandoned requests ---------------------------------------------------------------------

fn holders(h: &Harness, name: &str) -> Vec<(SessionId, LockMode, FencingToken)> {
    h.table
        .lock(&lock(name))
        .holders
        .iter()
        .map(|holder| (holder.session, holder.mode, holder.token))
        .collect()
}

#[test]
fn abandon_withdraws_the_wait_and_releases_the_grant_of_its_own_request() {
    // Proves the withdrawal of a request whose answer never reached the client: queued, its
    // wait goes; granted meanwhile, its hold goes and the next waiter is served.
    let mut h = Harness::new();
    let (a, b, c) = (h.session(), h.session(), h.session());
    granted(&h.acquire(a, "r", Exclusive));
    assert_eq!(
        h.tagged_acquire(b, "r", Exclusive, true, 7).response,
        waiting(Exclusive)
    );
    assert_eq!(h.abandon(b, "r", 7).response, Ok(Response::WaitCancelled));
    assert!(h.table.lock(&lock("r")).waiters.is_empty());

    assert_eq!(
        h.tagged_acquire(b, "r", Exclusive, true, 8).response,
        waiting(Exclusive)
    );
    assert_eq!(h.acquire(c, "r", Exclusive).response, waiting(Exclusive));
    let released = h.release(a, "r");
    assert!(matches!(released.events.as_slice(), [LockEvent::Granted(g)] if g.session == b));
    let abandoned = h.abandon(b, "r", 8);
    assert!(matches!(abandoned.response, Ok(Response::Released { .. })));
    assert!(
        matches!(abandoned.events.as_slice(), [LockEvent::Granted(g)] if g.session == c),
        "{abandoned:?}"
    );
    assert_eq!(h.table.session(b).map(|s| s.lock_count), Some(0));
}

#[test]
fn abandon_leaves_alone_what_a_retry_was_answered_with() {
    // Proves the retry promise survives a late withdrawal: once a retry of the acquire (a new
    // tag) is applied, the abandoned request's withdrawal touches neither the wait the retry
    // joined nor the hold the retry was answered with.
    let mut h = Harness::new();
    let (a, b) = (h.session(), h.session());
    granted(&h.acquire(a, "r", Exclusive));
    assert_eq!(
        h.tagged_acquire(b, "r", Exclusive, true, 7).response,
        waiting(Exclusive)
    );
    assert_eq!(
        h.tagged_acquire(b, "r", Exclusive, true, 8).response,
        waiting(Exclusive)
    );
    assert_eq!(h.abandon(b, "r", 7).response, Ok(Response::NotWaiting));
    h.release(a, "r");
    let held = holders(&h, "r");
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].0, b);
    assert_eq!(h.abandon(b, "r", 7).response, Ok(Response::NotWaiting));
    assert_eq!(holders(&h, "r"), held);

    // Granted to the first request, then repeated by a retry before the withdrawal.
    let (c, d) = (h.session(), h.session());
    let first = granted(&h.tagged_acquire(c, "s", Exclusive, true, 20));
    let again = granted(&h.tagged_acquire(c, "s", Exclusive, true, 21));
    assert_eq!(first.token, again.token);
    assert_eq!(h.abandon(c, "s", 20).response, Ok(Response::NotWaiting));
    assert_eq!(
        h.try_acquire(d, "s", Exclusive).response,
        Ok(Response::NotGranted)
    );
}

#[test]
fn abandon_leaves_a_hold_older_than_its_request() {
    // Proves a repeated acquire that is abandoned does not release the hold it found, and that
    // an untagged request is never abandoned.
    let mut h = Harness::new();
    let a = h.session();
    granted(&h.tagged_acquire(a, "r", Exclusive, true, 1));
    granted(&h.tagged_acquire(a, "r", Shared, true, 2));
    assert_eq!(h.abandon(a, "r", 2).response, Ok(Response::NotWaiting));
    granted(&h.acquire(a, "t", Exclusive));
    assert_eq!(h.abandon(a, "t", 0).response, Ok(Response::NotWaiting));
    assert_eq!(h.table.session(a).map(|s| s.lock_count), Some(2));
}

#[test]
fn abandoned_upgrade_turns_back_into_the_shared_hold() {
    // Proves an upgrade whose answer was lost is undone, not released whole: the session keeps
    // the shared hold (and token) it had, and a shared waiter behind the upgrade is served.
    let mut h = Harness::new();
    let (a, b, c) = (h.session(), h.session(), h.session());
    let shared = granted(&h.tagged_acquire(a, "r", Shared, true, 1));
    let upgraded = granted(&h.tagged_acquire(a, "r", Exclusive, true, 2));
    assert!(upgraded.token > shared.token);
    assert!(matches!(
        h.abandon(a, "r", 2).response,
        Ok(Response::Released { .. })
    ));
    assert_eq!(holders(&h, "r"), vec![(a, Shared, shared.token)]);

    // Queued behind another shared holder, granted when it leaves, then abandoned.
    granted(&h.acquire(b, "r", Shared));
    assert_eq!(
        h.tagged_acquire(a, "r", Exclusive, true, 3).response,
        waiting(Exclusive)
    );
    assert_eq!(h.acquire(c, "r", Shared).response, waiting(Shared));
    let released = h.release(b, "r");
    assert!(
        matches!(released.events.as_slice(), [LockEvent::Granted(g)] if g.session == a && g.mode == Exclusive)
    );
    let abandoned = h.abandon(a, "r", 3);
    assert!(
        matches!(abandoned.events.as_slice(), [LockEvent::Granted(g)] if g.session == c && g.mode == Shared),
        "{abandoned:?}"
    );
    let mut held = holders(&h, "r");
    held.sort();
    assert_eq!(held.len(), 2);
    assert!(held.contains(&(a, Shared, shared.token)), "{held:?}");
}
