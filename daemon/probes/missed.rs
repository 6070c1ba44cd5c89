//! Events the kernel did not run a program for ([`super::ProgramStatus::missed`]):
//! a line in the log when a program's count first grows, then at most one
//! an hour per program while it keeps growing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often the loop asks the kernel (one `bpf()` call per program).
pub const CHECK_EVERY: Duration = Duration::from_secs(60);
/// At most one line per program this often.
pub const LOG_EVERY: Duration = Duration::from_secs(3600);

#[derive(Default)]
pub struct MissedWatch {
    /// (family, program) → (count when last logged, when).
    logged: HashMap<(String, String), (u64, Instant)>,
    /// When to ask the kernel next (`None`: at once).
    next_check: Option<Instant>,
}

impl MissedWatch {
    /// Whether a check is due at `now`.
    pub fn due(&mut self, now: Instant) -> bool {
        if self.next_check.is_some_and(|t| now < t) {
            return false;
        }
        self.next_check = Some(now + CHECK_EVERY);
        true
    }

    /// The lines to log for these counts (family, program, count so far).
    pub fn observe(&mut self, now: Instant, runs: &[(String, String, u64)]) -> Vec<String> {
        let mut lines = Vec::new();
        for (family, program, n) in runs {
            let key = (family.clone(), program.clone());
            let (before, at) = match self.logged.get(&key) {
                Some(&(before, at)) => (before, Some(at)),
                None => (0, None),
            };
            let recent = at.is_some_and(|at| now.duration_since(at) < LOG_EVERY);
            if *n <= before || recent {
                continue;
            }
            lines.push(format!(
                "probe family {family}: the kernel did not run {program} for {} events (a BPF program or a bpf() call was already running on that CPU, {n} since it was loaded): the family's counts are low by as many; iomonctl probes shows it per program",
                n - before
            ));
            self.logged.insert(key, (*n, now));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: u64) -> Vec<(String, String, u64)> {
        vec![("block".into(), "blk_complete".into(), n)]
    }

    #[test]
    fn logs_the_first_miss_then_at_most_hourly() {
        let mut w = MissedWatch::default();
        let t0 = Instant::now();
        assert!(w.observe(t0, &run(0)).is_empty(), "nothing missed");
        let first = w.observe(t0, &run(12));
        assert_eq!(first.len(), 1);
        assert!(first[0].contains("blk_complete for 12 events"), "{first:?}");
        assert!(
            w.observe(t0 + CHECK_EVERY, &run(20)).is_empty(),
            "within the hour"
        );
        let later = w.observe(t0 + LOG_EVERY, &run(30));
        assert_eq!(later.len(), 1);
        assert!(later[0].contains("for 18 events"), "{later:?}");
        assert!(later[0].contains("30 since"), "{later:?}");
        assert!(
            w.observe(t0 + 3 * LOG_EVERY, &run(30)).is_empty(),
            "no growth, no line"
        );
    }

    #[test]
    fn checks_once_a_minute() {
        let mut w = MissedWatch::default();
        let t0 = Instant::now();
        assert!(w.due(t0));
        assert!(!w.due(t0 + CHECK_EVERY / 2));
        assert!(w.due(t0 + CHECK_EVERY));
    }
}
