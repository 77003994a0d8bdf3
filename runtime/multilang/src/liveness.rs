//! When a child is alive, and when to start it again: pure bookkeeping over instants.
//!
//! Contract: [`Heartbeat`] says when a bolt should send a heartbeat tuple (every
//! [`HEARTBEAT_EVERY`] while none is unanswered) and when a child has been silent too long:
//! any sign of life (a `sync`, an ack, a fail) restarts the count, as Storm's ShellBolt does.
//! [`Backoff`] spaces restarts of a failing child: the first after [`FIRST_DELAY`], each next
//! one twice as late up to [`MAX_DELAY`], back to the first once a child has stayed up for
//! [`STABLE_AFTER`].

use std::time::{Duration, Instant};

/// How often a bolt sends a heartbeat tuple (Storm: every second).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
pub const MAX_DELAY: Duration = Duration::from_secs(10);
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Heartbeat {
    timeout: Duration,
    last_alive: Instant,
    /// When the unanswered heartbeat was sent.
    sent: Option<Instant>,
}

impl Heartbeat {
    pub fn new(timeout: Duration, now: Instant) -> Self {
        Heartbeat { timeout, last_alive: now, sent: None }
    }

    /// The child gave a sign of life.
    pub fn alive(&mut self, now: Instant) {
        self.last_alive = now;
    }

    /// The child answered the heartbeat (`sync`).
    pub fn answered(&mut self, now: Instant) {
        self.sent = None;
        self.alive(now);
    }

    /// Whether to send a heartbeat now; if so, it counts as sent.
    pub fn due(&mut self, now: Instant) -> bool {
        let due = self.sent.is_none() && now.duration_since(self.last_alive) >= HEARTBEAT_EVERY;
        if due {
            self.sent = Some(now);
        }
        due
    }

    /// How long the child has been silent, if longer than the timeout.
    pub fn expired(&self, now: Instant) -> Option<Duration> {
        let silent = now.duration_since(self.last_alive);
        (silent > self.timeout).then_some(silent)
    }

    /// When the child will have been silent too long.
    pub fn deadline(&self) -> Instant {
        self.last_alive + self.timeout
    }
}

#[derive(Debug, Clone)]
pub struct Backoff {
    delay: Duration,
    not_before: Option<Instant>,
    started: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { delay: FIRST_DELAY, not_before: None, started: None }
    }
}

impl Backoff {
    /// A child was started.
    pub fn started(&mut self, now: Instant) {
        self.started = Some(now);
        self.not_before = None;
    }

    /// The child (or an attempt to start one) failed: the next start waits. Returns the wait.
    pub fn failed(&mut self, now: Instant) -> Duration {
        if self.started.is_some_and(|s| now.duration_since(s) >= STABLE_AFTER) {
            self.delay = FIRST_DELAY;
        }
        let wait = self.delay;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        self.not_before = Some(now + wait);
        self.started = None;
        wait
    }

    /// When the next start may happen (now if `None`).
    pub fn not_before(&self) -> Option<Instant> {
        self.not_before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_is_due_each_second_while_none_is_unanswered() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(Duration::from_secs(5), t0);
        assert!(!hb.due(t0 + Duration::from_millis(500)));
        assert!(hb.due(t0 + Duration::from_secs(1)));
        assert!(!hb.due(t0 + Duration::from_secs(2)), "one unanswered at a time");
        hb.answered(t0 + Duration::from_secs(2));
        assert!(hb.due(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn a_child_silent_past_the_timeout_has_expired_and_any_sign_of_life_resets_it() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(Duration::from_secs(5), t0);
        assert_eq!(hb.expired(t0 + Duration::from_secs(5)), None);
        assert_eq!(hb.expired(t0 + Duration::from_secs(6)), Some(Duration::from_secs(6)));
        hb.alive(t0 + Duration::from_secs(4));
        assert_eq!(hb.expired(t0 + Duration::from_secs(6)), None);
        assert_eq!(hb.deadline(), t0 + Duration::from_secs(9));
    }

    #[test]
    fn restarts_back_off_doubling_up_to_the_maximum_and_reset_after_a_stable_run() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert_eq!(b.not_before(), None);
        let waits: Vec<Duration> = (0..10).map(|_| b.failed(t0)).collect();
        assert_eq!(waits[0], FIRST_DELAY);
        assert_eq!(waits[1], FIRST_DELAY * 2);
        assert_eq!(*waits.last().unwrap(), MAX_DELAY);
        assert_eq!(b.not_before(), Some(t0 + MAX_DELAY));
        b.started(t0);
        assert_eq!(b.not_before(), None);
        assert_eq!(b.failed(t0 + Duration::from_secs(1)), MAX_DELAY, "a short run does not reset");
        b.started(t0);
        assert_eq!(b.failed(t0 + STABLE_AFTER), FIRST_DELAY);
    }
}
