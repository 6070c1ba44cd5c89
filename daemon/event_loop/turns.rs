//! How long each turn of the event loop kept it from serving clients: a
//! request that arrives during a turn waits for the rest of it. Exported
//! as `iomon_loop_turn_seconds`; the loop's own measure of what the
//! `tick` benchmark sees from outside.

use std::time::Duration;

/// Upper bounds of the buckets, seconds (the last bucket is +Inf).
const BOUNDS: [f64; 8] = [0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.1];

/// A histogram of turn times since start.
#[derive(Debug, Clone, Default)]
pub struct Turns {
    /// Per bucket (not cumulative), the last one past every bound.
    counts: [u64; BOUNDS.len() + 1],
    sum_seconds: f64,
}

impl Turns {
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BOUNDS.iter().position(|b| s <= *b).unwrap_or(BOUNDS.len());
        self.counts[i] += 1;
        self.sum_seconds += s;
    }

    /// (upper bound, count) per bucket, `None` for +Inf; and the sum.
    pub fn buckets(&self) -> (Vec<(Option<f64>, u64)>, f64) {
        let b = BOUNDS
            .iter()
            .map(|b| Some(*b))
            .chain([None])
            .zip(self.counts)
            .collect();
        (b, self.sum_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_land_in_their_buckets_bounds_included() {
        let mut t = Turns::default();
        for us in [100, 500, 501, 2_500, 3_000, 200_000] {
            t.observe(Duration::from_micros(us));
        }
        let (b, sum) = t.buckets();
        let counts: Vec<u64> = b.iter().map(|(_, n)| *n).collect();
        assert_eq!(counts, vec![2, 1, 0, 2, 0, 0, 0, 0, 1]);
        assert_eq!(b.last().unwrap().0, None);
        assert!((sum - 0.206601).abs() < 1e-9);
    }
}
