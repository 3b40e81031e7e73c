//! When the next collection is due: every interval; soon after a build ends (not more often
//! than [`AFTER_BUILD_SPACING`]); retried while builds keep the gate, and forced once they
//! have kept it for longer than [`Schedule::starve_after`].

use std::time::{Duration, Instant};

use super::policy::AFTER_BUILD_SPACING;

pub struct Schedule {
    interval: Duration,
    /// The next periodic collection.
    next: Instant,
    /// A collection asked for by a build's end.
    after_build: Option<Instant>,
    last: Option<Instant>,
    /// Since when running builds have kept every attempt out.
    deferred_since: Option<Instant>,
}

impl Schedule {
    /// The first collection is due at `now` (what an earlier daemon left over is collected
    /// at start).
    pub fn new(interval: Duration, now: Instant) -> Schedule {
        Schedule {
            interval,
            next: now,
            after_build: None,
            last: None,
            deferred_since: None,
        }
    }

    fn spacing(&self) -> Duration {
        AFTER_BUILD_SPACING.min(self.interval)
    }

    /// Deferred this long, a collection waits for the running builds and holds new ones.
    pub fn starve_after(&self) -> Duration {
        self.interval.max(Duration::from_secs(60))
    }

    pub fn due(&self) -> Instant {
        self.after_build.map_or(self.next, |a| a.min(self.next))
    }

    pub fn kicked(&mut self, now: Instant) {
        let at = self.last.map_or(now, |l| now.max(l + self.spacing()));
        self.after_build = Some(self.after_build.map_or(at, |a| a.min(at)));
    }

    /// Builds held the gate: try again when one ends (it asks), or when the periodic
    /// collection is due — not at once.
    pub fn deferred(&mut self, now: Instant) {
        self.deferred_since.get_or_insert(now);
        self.after_build = None;
        self.next = self.next.max(now + self.spacing());
    }

    pub fn starved(&self, now: Instant) -> bool {
        self.deferred_since
            .is_some_and(|d| now.duration_since(d) >= self.starve_after())
    }

    pub fn ran(&mut self, now: Instant) {
        self.last = Some(now);
        self.after_build = None;
        self.deferred_since = None;
        self.next = now + self.interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn periodic_after_builds_and_deferred() {
        let t0 = Instant::now();
        let mut s = Schedule::new(600 * S, t0);
        assert_eq!(s.due(), t0, "at start");
        s.ran(t0);
        assert_eq!(s.due(), t0 + 600 * S);
        // A build ends 3s later: due once the spacing since the last run has passed.
        s.kicked(t0 + 3 * S);
        assert_eq!(s.due(), t0 + AFTER_BUILD_SPACING);
        s.ran(t0 + AFTER_BUILD_SPACING);
        s.kicked(t0 + 100 * S);
        assert_eq!(s.due(), t0 + 100 * S, "long after the last: now");
        // Builds run: retried when one ends (or periodically), not in a loop.
        s.deferred(t0 + 100 * S);
        assert_eq!(s.due(), t0 + 610 * S);
        s.kicked(t0 + 105 * S);
        assert_eq!(s.due(), t0 + 105 * S);
        assert!(!s.starved(t0 + 200 * S));
        s.deferred(t0 + 105 * S);
        assert!(s.starved(t0 + 700 * S), "kept out for a whole interval");
        // Periodic and due while builds run: not again at once.
        s.deferred(t0 + 700 * S);
        assert_eq!(s.due(), t0 + 700 * S + AFTER_BUILD_SPACING);
        s.ran(t0 + 700 * S);
        assert!(!s.starved(t0 + 2000 * S));
        assert_eq!(s.due(), t0 + 1300 * S);
    }

    #[test]
    fn short_intervals_space_after_build_checks_by_the_interval() {
        let t0 = Instant::now();
        let mut s = Schedule::new(2 * S, t0);
        s.ran(t0);
        s.kicked(t0);
        assert_eq!(s.due(), t0 + 2 * S);
        assert_eq!(s.starve_after(), 60 * S);
    }
}
