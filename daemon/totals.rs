//! Cumulative counters since the daemon started: the sum of every Sample.
//! They only grow while the daemon runs (Prometheus counters); any number of
//! readers see the same values and reading never changes them.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::sample::{top_k, ProcSample, Sample, TopBy};

/// Per-process totals, bounded by a maximum size and an idle TTL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcTotal {
    pub totals: ProcSample,
    pub last_seen_ms: u64,
}

#[derive(Debug, Clone)]
pub struct Totals {
    pub started_ms: u64,
    pub ticks: u64,
    /// Every Sample merged (per-process list not used here: see `procs`).
    pub sum: Sample,
    /// The most recent Sample.
    pub last: Option<Sample>,
    procs: HashMap<u32, ProcTotal>,
    max_procs: usize,
    idle_ttl_ms: u64,
    /// Per-process totals forgotten (idle or over the cap).
    pub procs_forgotten: u64,
    /// Per process name, for the metric series: the targets, then names in
    /// order of first appearance up to the cap, the rest under "other". A
    /// name that has a series keeps it, so every series only grows.
    comms: BTreeMap<String, ProcSample>,
    comm_targets: Vec<String>,
    comm_max: usize,
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
            procs_forgotten: 0,
            comms: BTreeMap::new(),
            comm_targets: Vec::new(),
            comm_max: 0,
        }
    }

    /// Per-name series: `targets` always, up to `max` names in all.
    pub fn with_series(mut self, targets: &[String], max: usize) -> Totals {
        self.comm_targets = targets.to_vec();
        self.comm_max = max;
        self
    }

    /// (name, totals) of every per-name series, "other" included.
    pub fn comm_series(&self) -> Vec<(String, ProcSample)> {
        self.comms
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn add(&mut self, s: &Sample) {
        self.ticks += 1;
        let mut without_procs = s.clone();
        without_procs.procs.clear();
        self.sum.merge(&without_procs, 0);
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
            if self.comm_max > 0 {
                let named = self.comms.len() - usize::from(self.comms.contains_key("other"));
                let key = if self.comms.contains_key(&p.comm)
                    || self.comm_targets.contains(&p.comm)
                    || named < self.comm_max
                {
                    p.comm.clone()
                } else {
                    "other".to_string()
                };
                let e = self.comms.entry(key.clone()).or_insert_with(|| ProcSample {
                    comm: key,
                    ..Default::default()
                });
                let comm = e.comm.clone();
                e.merge(p);
                e.comm = comm;
            }
        }
        self.expire(s.end_ms);
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
        self.procs_forgotten += (before - self.procs.len().min(before)) as u64;
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

    /// Totals per process name (for the per-workload metric series).
    pub fn by_comm(&self) -> HashMap<String, ProcSample> {
        let mut m: HashMap<String, ProcSample> = HashMap::new();
        for p in self.procs.values() {
            m.entry(p.totals.comm.clone())
                .or_insert_with(|| ProcSample {
                    comm: p.totals.comm.clone(),
                    ..Default::default()
                })
                .merge(&p.totals);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{self, reads};
    use crate::family::Section;

    fn proc(tgid: u32, comm: &str) -> ProcSample {
        let mut v = vec![0; abi::READS.nproc];
        v[reads::proc::CALLS] = 1;
        ProcSample {
            tgid,
            comm: comm.into(),
            families: [("reads".to_string(), v)].into(),
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
            procs: tgids.iter().map(|&t| proc(t, "x")).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn comm_series_are_capped_sticky_and_keep_targets() {
        let mut t = Totals::new(0, 100, 1_000_000).with_series(&["banyand".to_string()], 2);
        let s = |procs| Sample {
            end_ms: 1,
            procs,
            ..Default::default()
        };
        t.add(&s(vec![proc(1, "a"), proc(2, "b"), proc(3, "c")]));
        t.add(&s(vec![proc(4, "banyand"), proc(1, "a"), proc(3, "c")]));
        let m: BTreeMap<_, _> = t
            .comm_series()
            .into_iter()
            .map(|(k, v)| (k, v.get("reads", reads::proc::CALLS)))
            .collect();
        assert_eq!(m.get("a"), Some(&2));
        assert_eq!(m.get("b"), Some(&1));
        assert_eq!(m.get("other"), Some(&2), "c twice");
        assert_eq!(m.get("banyand"), Some(&1), "a target always has its series");
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
        assert!(t.procs_forgotten >= 4);
    }
}
