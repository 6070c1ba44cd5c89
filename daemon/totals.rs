//! Cumulative counters since the daemon started: the sum of every Sample.
//! They only grow while the daemon runs (Prometheus counters); any number of
//! readers see the same values and reading never changes them.
//!
//! Every process the drain took adds here, before the Sample's top-K cut
//! (the cut is only for what a Sample stores and shows). What a bound
//! forces out is counted.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::sample::{top_k, ProcSample, Sample, TopBy};

/// The name of the per-name series that holds every name without its own.
pub const OTHER: &str = "other";

/// Per-process totals, bounded by a maximum size and an idle TTL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcTotal {
    pub totals: ProcSample,
    pub last_seen_ms: u64,
}

/// What bounds forced out, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncated {
    /// Processes left out of stored Samples (past the top-K of a tick;
    /// their numbers are in the totals and the per-name series).
    pub sample_procs: u64,
    /// Per-process totals forgotten (idle past the TTL, or over the cap).
    pub proc_table: u64,
    /// Names forgotten by the per-name table (over its cap).
    pub names: u64,
    /// Per-name series dropped (idle past the TTL, or displaced by a
    /// busier name); their counts stay where they were accumulated.
    pub name_series: u64,
}

#[derive(Debug, Clone)]
struct NameEntry {
    totals: ProcSample,
    last_seen_ms: u64,
    /// Activity, decayed with a 5-minute half-life: what "busiest" means.
    recent: f64,
}

/// Per process name: exact totals for every name seen (bounded), and the
/// metric series: the pinned names (targets) always, the busiest others
/// up to a cap, the rest under "other". Each tick's counts go to the
/// series the name has at that time, so every series only grows: a name
/// promoted starts its series from then (earlier counts stay in "other"),
/// a name dropped keeps what it had (its series simply ends).
#[derive(Debug, Clone, Default)]
struct Names {
    table: HashMap<String, NameEntry>,
    series: BTreeMap<String, ProcSample>,
    pinned: Vec<String>,
    /// Named series at most (pinned ones included).
    max: usize,
    cap: usize,
    idle_ttl_ms: u64,
    last_ms: u64,
}

const HALF_LIFE_MS: f64 = 300_000.0;

impl Names {
    fn add(&mut self, procs: &[ProcSample], now_ms: u64, t: &mut Truncated) {
        let decay = if self.last_ms == 0 {
            1.0
        } else {
            0.5f64.powf(now_ms.saturating_sub(self.last_ms) as f64 / HALF_LIFE_MS)
        };
        self.last_ms = now_ms;
        for e in self.table.values_mut() {
            e.recent *= decay;
        }
        let mut inc: BTreeMap<&str, ProcSample> = BTreeMap::new();
        for p in procs {
            inc.entry(p.comm.as_str()).or_default().merge(p);
        }
        for (name, d) in &inc {
            let e = self
                .table
                .entry(name.to_string())
                .or_insert_with(|| NameEntry {
                    totals: ProcSample {
                        comm: name.to_string(),
                        ..Default::default()
                    },
                    last_seen_ms: now_ms,
                    recent: 0.0,
                });
            e.totals.merge(d);
            e.totals.comm = name.to_string();
            e.last_seen_ms = now_ms;
            e.recent += d.activity() as f64;
        }
        if self.max > 0 {
            self.choose_series(now_ms, t);
            for (name, d) in inc {
                let key = if self.series.contains_key(name) {
                    name
                } else {
                    OTHER
                };
                let s = self.series.entry(key.to_string()).or_default();
                s.merge(&d);
                s.comm = key.to_string();
            }
        }
        // The table's bound: the names seen least recently go (never a
        // pinned one).
        if self.table.len() > self.cap {
            let mut by_age: Vec<(u64, String)> = self
                .table
                .iter()
                .filter(|(k, _)| !self.pinned.contains(k))
                .map(|(k, v)| (v.last_seen_ms, k.clone()))
                .collect();
            by_age.sort_unstable();
            let excess = self.table.len() - self.cap;
            for (_, k) in by_age.into_iter().take(excess) {
                self.table.remove(&k);
                t.names += 1;
            }
        }
    }

    fn is_named(&self, k: &str) -> bool {
        k != OTHER && self.series.contains_key(k)
    }

    fn choose_series(&mut self, now_ms: u64, t: &mut Truncated) {
        // Pinned names that are seen have a series.
        for p in &self.pinned {
            if self.table.contains_key(p) && !self.series.contains_key(p) {
                self.series.insert(
                    p.clone(),
                    ProcSample {
                        comm: p.clone(),
                        ..Default::default()
                    },
                );
            }
        }
        // Idle ones end.
        let idle: Vec<String> = self
            .series
            .keys()
            .filter(|k| self.is_named(k) && !self.pinned.contains(k))
            .filter(|k| {
                self.table
                    .get(*k)
                    .is_none_or(|e| now_ms.saturating_sub(e.last_seen_ms) > self.idle_ttl_ms)
            })
            .cloned()
            .collect();
        for k in idle {
            self.series.remove(&k);
            t.name_series += 1;
        }
        // The busiest names without one get one: into free room, or in
        // place of a named series less than half as busy (hysteresis: two
        // names of similar activity do not swap every tick).
        let mut candidates: Vec<(f64, String)> = self
            .table
            .iter()
            .filter(|(k, _)| !self.series.contains_key(*k) && k.as_str() != OTHER)
            .map(|(k, e)| (e.recent, k.clone()))
            .filter(|(r, _)| *r > 0.0)
            .collect();
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (recent, name) in candidates {
            let named = self.series.keys().filter(|k| self.is_named(k)).count();
            if named < self.max {
                self.series.insert(
                    name.clone(),
                    ProcSample {
                        comm: name,
                        ..Default::default()
                    },
                );
                continue;
            }
            let weakest = self
                .series
                .keys()
                .filter(|k| self.is_named(k) && !self.pinned.contains(k))
                .map(|k| (self.table.get(k).map_or(0.0, |e| e.recent), k.clone()))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            match weakest {
                Some((w, k)) if recent > 2.0 * w => {
                    self.series.remove(&k);
                    t.name_series += 1;
                    self.series.insert(
                        name.clone(),
                        ProcSample {
                            comm: name,
                            ..Default::default()
                        },
                    );
                }
                _ => break,
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Totals {
    pub started_ms: u64,
    pub ticks: u64,
    /// Every Sample merged (per-process list not used here: see `procs`).
    pub sum: Sample,
    /// The most recent Sample, as stored (cut to its top-K).
    pub last: Option<Sample>,
    procs: HashMap<u32, ProcTotal>,
    max_procs: usize,
    idle_ttl_ms: u64,
    names: Names,
    pub truncated: Truncated,
}

impl Totals {
    pub fn new(started_ms: u64, max_procs: usize, idle_ttl_ms: u64) -> Totals {
        Totals {
            started_ms,
            ticks: 0,
            sum: Sample {
                start_ms: started_ms,
                end_ms: started_ms,
                ..Default::default()
            },
            last: None,
            procs: HashMap::new(),
            max_procs: max_procs.max(1),
            idle_ttl_ms,
            names: Names {
                cap: max_procs.max(1),
                idle_ttl_ms,
                ..Default::default()
            },
            truncated: Truncated::default(),
        }
    }

    /// Per-name series: `pinned` names always, the busiest others up to
    /// `max` named series in all (0: no per-name series).
    pub fn with_series(mut self, pinned: &[String], max: usize) -> Totals {
        self.names.pinned = pinned.to_vec();
        self.names.max = max;
        self
    }

    /// Changes the pinned names and the cap (on reload); series already
    /// exported stay until they go idle.
    pub fn set_series(&mut self, pinned: &[String], max: usize) {
        self.names.pinned = pinned.to_vec();
        self.names.max = max;
    }

    /// (name, counts) of every per-name series, "other" included.
    pub fn comm_series(&self) -> Vec<(String, ProcSample)> {
        self.names
            .series
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Exact totals of a process name since start, if the table holds it.
    pub fn name_totals(&self, name: &str) -> Option<&ProcSample> {
        self.names.table.get(name).map(|e| &e.totals)
    }

    /// Adds one tick: every process the drain took (before any cut).
    pub fn add(&mut self, s: &Sample) {
        self.ticks += 1;
        // Files are for the history (`iomonctl files --since`); the totals
        // keep their counts of what was cut and not named.
        self.sum.merge_counts(s);
        for p in &s.procs {
            let e = self.procs.entry(p.tgid).or_insert_with(|| ProcTotal {
                totals: ProcSample {
                    tgid: p.tgid,
                    ..Default::default()
                },
                last_seen_ms: s.end_ms,
            });
            e.totals.merge(p);
            e.last_seen_ms = s.end_ms;
        }
        self.names.add(&s.procs, s.end_ms, &mut self.truncated);
        self.expire(s.end_ms);
    }

    /// The tick's Sample as stored, after its top-K cut (added with
    /// [`Totals::add`] before it, which does not keep it: a Sample before
    /// its cut can hold every process of the host): what `snapshot` shows
    /// as the last interval; the processes the cut left out are counted.
    pub fn set_last(&mut self, s: &Sample) {
        self.truncated.sample_procs += s.procs_truncated;
        self.last = Some(s.clone());
    }

    fn expire(&mut self, now_ms: u64) {
        let before = self.procs.len();
        let ttl = self.idle_ttl_ms;
        self.procs
            .retain(|_, p| now_ms.saturating_sub(p.last_seen_ms) <= ttl);
        if self.procs.len() > self.max_procs {
            // Forget the least recently active.
            let mut by_age: Vec<(u64, u32)> = self
                .procs
                .iter()
                .map(|(k, v)| (v.last_seen_ms, *k))
                .collect();
            by_age.sort_unstable();
            let excess = self.procs.len() - self.max_procs;
            for (_, k) in by_age.into_iter().take(excess) {
                self.procs.remove(&k);
            }
        }
        self.truncated.proc_table += (before - self.procs.len().min(before)) as u64;
    }

    pub fn procs_len(&self) -> usize {
        self.procs.len()
    }

    pub fn proc(&self, tgid: u32) -> Option<&ProcTotal> {
        self.procs.get(&tgid)
    }

    /// The `n` busiest processes since start (among those remembered).
    pub fn top(&self, by: TopBy, n: usize) -> Vec<ProcSample> {
        let mut v: Vec<ProcSample> = self.procs.values().map(|p| p.totals.clone()).collect();
        top_k(&mut v, by, n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{self, reads};
    use crate::family::Section;

    fn proc(tgid: u32, comm: &str, reads: u64) -> ProcSample {
        let mut v = vec![0; abi::READS.nproc];
        v[reads::proc::CALLS] = reads;
        ProcSample {
            tgid,
            comm: comm.into(),
            families: [("reads", v)].into_iter().collect(),
            ..Default::default()
        }
    }

    fn sample(end_ms: u64, tgids: &[u32]) -> Sample {
        let mut c = vec![0; abi::FADVISE.ncounters];
        c[abi::fadvise::advice::DONTNEED * abi::fadvise::result::N] = 2;
        Sample {
            start_ms: end_ms - 1000,
            end_ms,
            sections: [(
                "fadvise".to_string(),
                Section {
                    counters: c,
                    hists: vec![],
                },
            )]
            .into(),
            procs: tgids.iter().map(|&t| proc(t, "x", 1)).collect(),
            ..Default::default()
        }
    }

    fn series(t: &Totals) -> BTreeMap<String, u64> {
        t.comm_series()
            .into_iter()
            .map(|(k, v)| (k, v.get("reads", reads::proc::CALLS)))
            .collect()
    }

    #[test]
    fn pinned_names_always_have_a_series_and_every_count_lands_once() {
        let mut t = Totals::new(0, 100, 1_000_000).with_series(&["banyand".to_string()], 4);
        let s = |end_ms, procs| Sample {
            end_ms,
            procs,
            ..Default::default()
        };
        t.add(&s(
            1000,
            vec![proc(1, "a", 10), proc(2, "b", 1), proc(3, "c", 1)],
        ));
        t.add(&s(
            2000,
            vec![proc(4, "banyand", 5), proc(1, "a", 1), proc(3, "c", 1)],
        ));
        let m = series(&t);
        assert_eq!(m.get("banyand"), Some(&5), "a pinned name has its series");
        assert_eq!(m.get("a"), Some(&11), "the busiest other name");
        // Every count is in exactly one series.
        assert_eq!(m.values().sum::<u64>(), 10 + 1 + 1 + 5 + 1 + 1);
        // Exact per-name totals whatever the series.
        assert_eq!(
            t.name_totals("c").unwrap().get("reads", reads::proc::CALLS),
            2
        );
    }

    #[test]
    fn a_busier_name_takes_the_place_of_a_quiet_one_and_series_only_grow() {
        let mut t = Totals::new(0, 100, 1_000_000).with_series(&[], 1);
        let s = |end_ms, procs| Sample {
            end_ms,
            procs,
            ..Default::default()
        };
        t.add(&s(1000, vec![proc(1, "quiet", 1)]));
        assert_eq!(series(&t).get("quiet"), Some(&1));
        let mut before = series(&t);
        for i in 0..5 {
            t.add(&s(
                2000 + i * 1000,
                vec![proc(2, "busy", 1000), proc(1, "quiet", 1)],
            ));
            let now = series(&t);
            for (k, v) in &before {
                if let Some(n) = now.get(k) {
                    assert!(n >= v, "{k} went from {v} to {n}");
                }
            }
            before = now;
        }
        let m = series(&t);
        assert!(m.contains_key("busy") && !m.contains_key("quiet"), "{m:?}");
        assert_eq!(t.truncated.name_series, 1, "the replaced series is counted");
        assert_eq!(
            t.name_totals("busy")
                .unwrap()
                .get("reads", reads::proc::CALLS),
            5000
        );
    }

    #[test]
    fn sums_and_bounds_per_process_table() {
        let mut t = Totals::new(0, 4, 10_000);
        t.add(&sample(1000, &[1, 2]));
        t.add(&sample(2000, &[2, 3, 4, 5]));
        assert_eq!(t.ticks, 2);
        let f = t.sum.section("fadvise").unwrap();
        assert_eq!(f.get(abi::fadvise::advice::DONTNEED * 2), Some(4));
        assert_eq!(t.procs_len(), 4, "capped");
        assert!(t.proc(1).is_none(), "oldest forgotten first");
        assert_eq!(
            t.proc(2).unwrap().totals.get("reads", reads::proc::CALLS),
            2
        );
        // Idle TTL
        t.add(&sample(20_000, &[9]));
        assert_eq!(t.procs_len(), 1);
        assert!(t.truncated.proc_table >= 4);
    }
}
