//! The times Samples are stamped with: wall-clock milliseconds that never
//! go backwards and advance with the monotonic clock, so intervals keep
//! their true length whatever the wall clock does. A wall clock that jumps
//! ahead is followed; one set back is not (until it catches up).

use std::time::Instant;

/// Wall-clock step beyond which the timeline notices a jump.
const CLOCK_STEP_MS: u64 = 2_000;

/// What happened to the wall clock, as the timeline saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockStep {
    /// The wall clock jumped ahead by this much: the timeline follows (a
    /// gap in history, as time passed on the wall clock).
    Forward(u64),
    /// The wall clock went back by this much: the timeline does not (it
    /// never goes backwards) and runs ahead of the wall clock until it
    /// catches up.
    Back(u64),
}

#[derive(Debug)]
pub struct Timeline {
    anchor_wall: u64,
    anchor_mono: Instant,
    last: u64,
    /// How far ahead of the wall clock it was at the last call.
    gap: u64,
}

impl Timeline {
    pub fn new(wall_ms: u64) -> Timeline {
        Timeline {
            anchor_wall: wall_ms,
            anchor_mono: Instant::now(),
            last: wall_ms,
            gap: 0,
        }
    }

    /// Never earlier than `ms` from now on (the newest stored Sample).
    pub fn not_before(&mut self, ms: u64) {
        if ms > self.now_unchecked() {
            self.anchor_wall = ms;
            self.anchor_mono = Instant::now();
            self.last = self.last.max(ms);
        }
    }

    fn now_unchecked(&self) -> u64 {
        self.anchor_wall + self.anchor_mono.elapsed().as_millis() as u64
    }

    /// The time now, given the wall clock's `wall_ms`, and the step the
    /// wall clock took since the last call, if it took one.
    pub fn now(&mut self, wall_ms: u64) -> (u64, Option<ClockStep>) {
        let mono = self.now_unchecked();
        let mut step = None;
        if wall_ms >= mono {
            if wall_ms > mono + CLOCK_STEP_MS {
                step = Some(ClockStep::Forward(wall_ms - mono));
            }
            // Ahead, or caught up after a step back: follow the wall clock.
            self.anchor_wall = wall_ms;
            self.anchor_mono = Instant::now();
            self.gap = 0;
        } else {
            let gap = mono - wall_ms;
            if gap > self.gap + CLOCK_STEP_MS {
                step = Some(ClockStep::Back(gap - self.gap));
            }
            self.gap = gap;
        }
        let t = self.now_unchecked().max(self.last);
        self.last = t;
        (t, step)
    }

    /// How far the timeline is ahead of the wall clock `wall_ms` (after
    /// the wall clock was set back).
    pub fn ahead_ms(&self, wall_ms: u64) -> u64 {
        self.last.saturating_sub(wall_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_never_goes_back_and_follows_forward_steps() {
        let w0 = 1_800_000_000_000;
        let mut t = Timeline::new(w0);
        let (a, step) = t.now(w0 + 5);
        assert!(a >= w0 && step.is_none());
        // Set back an hour: time keeps going forward, the step is reported
        // once.
        let (b, step) = t.now(w0 - 3_600_000);
        assert!(b >= a);
        assert!(matches!(step, Some(ClockStep::Back(ms)) if ms >= 3_590_000));
        let (c, step) = t.now(w0 - 3_599_000);
        assert!(c >= b && step.is_none(), "reported once");
        assert!(t.ahead_ms(w0 - 3_599_000) >= 3_590_000);
        // Forward two hours: followed (a gap).
        let (d, step) = t.now(w0 + 3_600_000);
        assert_eq!(d, w0 + 3_600_000);
        assert!(matches!(step, Some(ClockStep::Forward(_))));
        // Back to true time: not followed.
        let (e, step) = t.now(w0 + 10);
        assert!(e >= d && matches!(step, Some(ClockStep::Back(_))));
        // A restart after that: the store's newest time is the floor.
        let mut r = Timeline::new(w0 + 20);
        r.not_before(e + 1);
        assert!(r.now(w0 + 30).0 > e);
    }
}
