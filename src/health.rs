//! What `/readyz` and `/healthz` answer: the process's phase and the controller loop's
//! heartbeat, written by `main` and the controller, read by the HTTP server.
//!
//! Ready means doing its job: a standby replica waiting for the Lease, or a leader whose
//! enrollment cache has synced and whose loop is beating. Alive means not wedged: the
//! task driving the controller's streams has beaten within the liveness timeout, and no
//! reconcile (each is a task of its own) has been stuck inside one poll that long: a
//! blocked thread, a deadlock on a std lock, a spin. Awaiting is not being stuck: a slow
//! IAM call or a wait for the account's write permits returns from poll at once. A
//! reconcile that awaits something that never comes is not caught here; every IAM and
//! Kubernetes call it makes has a timeout, so that takes a lost wake-up.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How often the controller loop beats.
pub const BEAT: Duration = Duration::from_secs(1);

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Loading the integrity key, connecting.
    Starting = 0,
    /// A replica waiting for the leader Lease: ready by design.
    Standby = 1,
    /// The controller runs but its enrollment cache has not synced yet.
    Syncing = 2,
    /// Cache synced; the loop beats.
    Running = 3,
    /// The controller stopped (shutdown, lost lease).
    Stopped = 4,
}

/// Shared, cheap to clone.
#[derive(Clone)]
pub struct Health(Arc<Inner>);

struct Inner {
    epoch: Instant,
    phase: AtomicU8,
    /// Milliseconds since `epoch` of the last beat.
    beat: AtomicU64,
    timeout: Duration,
    /// Reconciles inside a poll right now: id -> when that poll began.
    polls: Mutex<HashMap<u64, Instant>>,
    next_poll: AtomicU64,
}

/// An answer of a probe: whether it passes, and a short reason for people.
#[derive(Debug, PartialEq, Eq)]
pub struct Probe {
    pub ok: bool,
    pub reason: String,
}

impl Probe {
    fn pass(reason: &str) -> Self {
        Self { ok: true, reason: reason.into() }
    }

    fn fail(reason: impl Into<String>) -> Self {
        Self { ok: false, reason: reason.into() }
    }
}

impl Health {
    /// `timeout`: how long the loop may go without a beat before the process is not alive.
    pub fn new(timeout: Duration) -> Self {
        Self(Arc::new(Inner {
            epoch: Instant::now(),
            phase: AtomicU8::new(Phase::Starting as u8),
            beat: AtomicU64::new(0),
            timeout,
            polls: Mutex::default(),
            next_poll: AtomicU64::new(0),
        }))
    }

    /// Wraps a reconcile so that a poll of it that never returns is noticed.
    pub fn watch<F: Future>(&self, future: F) -> Watched<F> {
        Watched { inner: Box::pin(future), health: self.clone() }
    }

    fn polls(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        self.0.polls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The longest poll in progress, as of `now`.
    fn longest_poll(&self, now: Instant) -> Option<Duration> {
        self.polls().values().map(|began| now.saturating_duration_since(*began)).max()
    }

    fn set(&self, phase: Phase) {
        self.0.phase.store(phase as u8, Ordering::Release);
    }

    fn phase(&self) -> Phase {
        match self.0.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Standby,
            2 => Phase::Syncing,
            3 => Phase::Running,
            _ => Phase::Stopped,
        }
    }

    pub fn starting(&self) {
        self.set(Phase::Starting);
    }

    pub fn standby(&self) {
        self.set(Phase::Standby);
    }

    /// The controller runs: from now on its loop must beat.
    pub fn syncing(&self) {
        self.beat();
        self.set(Phase::Syncing);
    }

    /// The cache has synced.
    pub fn running(&self) {
        self.beat();
        self.set(Phase::Running);
    }

    pub fn stopped(&self) {
        self.set(Phase::Stopped);
    }

    pub fn beat(&self) {
        self.0.beat.store(self.millis(Instant::now()), Ordering::Release);
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.0.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Time since the last beat, as of `now`.
    fn silence(&self, now: Instant) -> Duration {
        Duration::from_millis(self.millis(now).saturating_sub(self.0.beat.load(Ordering::Acquire)))
    }

    /// Why the controller counts as wedged, if it does.
    fn stalled(&self, now: Instant) -> Option<String> {
        if let Some(stuck) = self.longest_poll(now).filter(|d| *d > self.0.timeout) {
            return Some(format!("a reconcile has been stuck for {} s", stuck.as_secs()));
        }
        let silence = self.silence(now);
        (matches!(self.phase(), Phase::Syncing | Phase::Running) && silence > self.0.timeout)
            .then(|| format!("the controller loop has not run for {} s", silence.as_secs()))
    }

    /// `/readyz`.
    pub fn readiness(&self, now: Instant) -> Probe {
        if let Some(why) = self.stalled(now) {
            return Probe::fail(why);
        }
        match self.phase() {
            Phase::Starting => Probe::fail("starting"),
            Phase::Standby => Probe::pass("standby: waiting for the leader lease"),
            Phase::Syncing => Probe::fail("waiting for the MfaEnrollment cache to sync"),
            Phase::Running => Probe::pass("ready"),
            Phase::Stopped => Probe::fail("the controller has stopped"),
        }
    }

    /// `/healthz`: fails only when a restart would help (the loop is wedged, or the
    /// controller stopped while the process lingers). A cache that cannot sync (RBAC, an
    /// unreachable apiserver) is a readiness problem: restarting would not fix it.
    pub fn liveness(&self, now: Instant) -> Probe {
        if let Some(why) = self.stalled(now) {
            return Probe::fail(why);
        }
        match self.phase() {
            Phase::Stopped => Probe::fail("the controller has stopped"),
            _ => Probe::pass("ok"),
        }
    }
}

/// A reconcile whose polls are timed (see [`Health::watch`]).
pub struct Watched<F> {
    inner: Pin<Box<F>>,
    health: Health,
}

impl<F: Future> Future for Watched<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let health = self.health.clone();
        let id = health.0.next_poll.fetch_add(1, Ordering::Relaxed);
        health.polls().insert(id, Instant::now());
        // Removed on return and on unwind; a poll that never returns stays listed.
        let _polling = PollEntry { health: &health, id };
        self.inner.as_mut().poll(cx)
    }
}

struct PollEntry<'a> {
    health: &'a Health,
    id: u64,
}

impl Drop for PollEntry<'_> {
    fn drop(&mut self) {
        self.health.polls().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[test]
    fn not_ready_until_the_cache_syncs_and_alive_meanwhile() {
        let health = Health::new(TIMEOUT);
        let now = Instant::now();
        assert_eq!(health.readiness(now), Probe::fail("starting"));
        health.syncing();
        let later = now + Duration::from_secs(600);
        health.beat();
        let beating = Instant::now();
        assert_eq!(health.readiness(beating), Probe::fail("waiting for the MfaEnrollment cache to sync"));
        assert!(health.liveness(beating).ok, "a restart would not make the cache sync");
        assert!(!health.liveness(later).ok, "a loop blocked while syncing is wedged too");
        health.running();
        assert!(health.readiness(Instant::now()).ok);
        assert!(health.liveness(Instant::now()).ok);
    }

    #[test]
    fn a_standby_is_ready_whatever_the_beat() {
        let health = Health::new(TIMEOUT);
        health.standby();
        let later = Instant::now() + Duration::from_secs(3600);
        assert_eq!(health.readiness(later), Probe::pass("standby: waiting for the leader lease"));
        assert!(health.liveness(later).ok);
    }

    #[test]
    fn a_silent_loop_fails_both_probes_and_a_beat_restores_them() {
        let health = Health::new(TIMEOUT);
        health.running();
        let start = Instant::now();
        assert!(health.liveness(start + Duration::from_secs(9)).ok, "within the timeout");
        let wedged = start + Duration::from_secs(12);
        let probe = health.liveness(wedged);
        assert!(!probe.ok);
        assert!(probe.reason.contains("has not run for 1"), "{}", probe.reason);
        assert!(!health.readiness(wedged).ok);
        health.beat();
        assert!(health.liveness(Instant::now()).ok);
    }

    #[test]
    fn a_poll_that_never_returns_fails_liveness_and_waiting_does_not() {
        let health = Health::new(TIMEOUT);
        health.running();
        let mut waiting = std::pin::pin!(health.watch(std::future::pending::<()>()));
        let waker = std::task::Waker::noop();
        assert!(waiting.as_mut().poll(&mut Context::from_waker(waker)).is_pending());
        let later = Instant::now() + Duration::from_secs(30);
        health.beat();
        assert_eq!(health.longest_poll(later), None, "a pending future is not in a poll");

        // A poll in progress (as a blocked thread leaves it), seen from the probe.
        health.polls().insert(u64::MAX, Instant::now());
        let probe = health.liveness(later);
        assert!(!probe.ok);
        assert!(probe.reason.starts_with("a reconcile has been stuck for"), "{}", probe.reason);
    }

    #[test]
    fn a_stopped_controller_is_neither_ready_nor_alive() {
        let health = Health::new(TIMEOUT);
        health.running();
        health.stopped();
        assert!(!health.readiness(Instant::now()).ok);
        assert!(!health.liveness(Instant::now()).ok);
    }
}
