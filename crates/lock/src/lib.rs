//! Pure lock state machine: sessions, shared/exclusive modes, FIFO waiters, fencing, deadlock detection
