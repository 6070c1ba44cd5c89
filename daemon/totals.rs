//! Cumulative counters since the daemon started: the sum of every Sample.
//! They only grow while the daemon runs (Prometheus counters); any number of
//! readers see the same values and reading never changes them.
//!
//! Every process the drain took adds here, before the Sample's top-K cut
//! (the cut is only for what a Sample stores and shows). What a bound
//! forces out is counted.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::family::Section;
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
    /// Adds one tick: each name's sum over the tick's processes.
    fn add(&mut self, inc: &HashMap<String, ProcSample>, now_ms: u64, t: &mut Truncated) {
        let decay = if self.last_ms == 0 {
            1.0
        } else {
            0.5f64.powf(now_ms.saturating_sub(self.last_ms) as f64 / HALF_LIFE_MS)
        };
        self.last_ms = now_ms;
        for e in self.table.values_mut() {
            e.recent *= decay;
        }
        for (name, d) in inc {
            let e = match self.table.get_mut(name.as_str()) {
                Some(e) => e,
                None => self.table.entry(name.clone()).or_insert_with(|| NameEntry {
                    totals: ProcSample {
                        comm: name.clone(),
                        ..Default::default()
                    },
                    last_seen_ms: now_ms,
                    recent: 0.0,
                }),
            };
            e.totals.merge(d);
            e.last_seen_ms = now_ms;
            e.recent += d.activity() as f64;
        }
        if self.max > 0 {
            self.choose_series(now_ms, t);
            for (name, d) in inc {
                let key = if self.series.contains_key(name.as_str()) {
                    name.as_str()
                } else {
                    OTHER
                };
                match self.series.get_mut(key) {
                    Some(s) => s.merge(d),
                    None => {
                        let mut s = d.clone();
                        s.comm = key.to_string();
                        self.series.insert(key.to_string(), s);
                    }
                }
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
        // Of the names without one, only the busiest can get one: each
        // goes into free room (at most `max`) or replaces a named series
        // (at most `max` times: once every original is replaced, the
        // weakest is a name taken before, at least as busy). So 2 * max + 1
        // candidates are enough; they are selected, not all sorted.
        let by_rank =
            |a: &(f64, &String), b: &(f64, &String)| b.0.total_cmp(&a.0).then(a.1.cmp(b.1));
        let mut ranked: Vec<(f64, &String)> = self
            .table
            .iter()
            .filter(|(k, _)| !self.series.contains_key(*k) && k.as_str() != OTHER)
            .map(|(k, e)| (e.recent, k))
            .filter(|(r, _)| *r > 0.0)
            .collect();
        let keep = 2 * self.max + 1;
        if ranked.len() > keep {
            ranked.select_nth_unstable_by(keep, by_rank);
            ranked.truncate(keep);
        }
        ranked.sort_by(by_rank);
        let candidates: Vec<(f64, String)> =
            ranked.into_iter().map(|(r, k)| (r, k.clone())).collect();
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
    /// The tick being added (see [`Totals::add_procs`]).
    pending: Pending,
    pub truncated: Truncated,
}

/// A tick's processes added so far: each per-process total is updated at
/// once (nothing shows one but their count), each name's sum waits here
/// until [`Totals::add`], so the per-name series and the host's sums move
/// together.
#[derive(Debug, Clone, Default)]
struct Pending {
    /// How many of the tick's processes were added.
    procs: usize,
    names: HashMap<String, ProcSample>,
}

/// `last_seen_ms` of a process seen in the tick being added; set to the
/// tick's end when it is.
const SEEN_NOW: u64 = u64::MAX;

/// A family's rows kept in the totals: at most this many times its
/// kernel bound (keys come and go: loop devices, hot-plugged disks).
const ROWS_KEPT: usize = 4;

/// The key the rows folded past [`ROWS_KEPT`] are summed under.
pub const ROWS_OTHER: &str = "_other";

/// Keeps each family's rows in the totals bounded: past its bound, the
/// rows the latest Sample `s` did not touch are summed under
/// [`ROWS_OTHER`] (their series end; the sum goes on).
fn fold_rows(rows: &mut BTreeMap<String, BTreeMap<String, Section>>, s: &Sample) {
    for (family, kept) in rows.iter_mut() {
        let cap = crate::abi::schema(family)
            .and_then(|f| f.rows.as_ref())
            .map_or(usize::MAX, |r| r.max as usize * ROWS_KEPT);
        if kept.len() <= cap {
            continue;
        }
        let fresh = s.rows.get(family);
        let stale: Vec<String> = kept
            .keys()
            .filter(|k| *k != ROWS_OTHER && fresh.is_none_or(|f| !f.contains_key(*k)))
            .cloned()
            .collect();
        for k in stale {
            if let Some(sec) = kept.remove(&k) {
                kept.entry(ROWS_OTHER.to_string()).or_default().merge(&sec);
            }
        }
    }
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
            pending: Pending::default(),
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
    /// The processes may have been added before, in order, as they were
    /// read ([`Totals::add_procs`]); the rest are added here.
    pub fn add(&mut self, s: &Sample) {
        self.add_read(&s.procs);
        self.ticks += 1;
        // Files are for the history (`iomonctl files --since`); the totals
        // keep their counts of what was cut and not named.
        self.sum.merge_counts(s);
        fold_rows(&mut self.sum.rows, s);
        self.names
            .add(&self.pending.names, s.end_ms, &mut self.truncated);
        // Emptied, keeping its room: a tick's names are much the last's.
        self.pending.names.clear();
        self.pending.procs = 0;
        self.expire(s.end_ms);
    }

    /// Adds those of the tick's processes read so far (`read`, in the
    /// order the tick's Sample will list them) that are not added yet: a
    /// tick of 10,000 processes is added in parts, between the event
    /// loop's turns.
    pub fn add_read(&mut self, read: &[ProcSample]) {
        let from = self.pending.procs.min(read.len());
        self.add_procs(&read[from..]);
    }

    fn add_procs(&mut self, procs: &[ProcSample]) {
        self.pending.procs += procs.len();
        for p in procs {
            let e = self.procs.entry(p.tgid).or_insert_with(|| ProcTotal {
                totals: ProcSample {
                    tgid: p.tgid,
                    ..Default::default()
                },
                last_seen_ms: SEEN_NOW,
            });
            e.totals.merge(p);
            e.last_seen_ms = SEEN_NOW;
            match self.pending.names.get_mut(p.comm.as_str()) {
                Some(n) => n.merge(p),
                None => {
                    let mut n = p.clone();
                    n.tgid = 0;
                    self.pending.names.insert(p.comm.clone(), n);
                }
            }
        }
    }

    /// How many of the tick's processes were added so far.
    pub fn procs_added(&self) -> usize {
        self.pending.procs
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
        self.procs.retain(|_, p| {
            if p.last_seen_ms == SEEN_NOW {
                p.last_seen_ms = now_ms;
            }
            now_ms.saturating_sub(p.last_seen_ms) <= ttl
        });
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

    #[test]
    fn rows_past_four_times_the_bound_fold_into_other_and_keep_every_count() {
        let max = abi::BLOCK.rows.as_ref().unwrap().max as usize;
        let mut t = Totals::new(0, 100, 60_000);
        let row = |n: u64| Section {
            counters: vec![n; abi::BLOCK.ncounters],
            hists: Vec::new(),
        };
        let n = max * ROWS_KEPT + 10;
        for i in 0..n {
            let mut s = Sample {
                start_ms: i as u64 * 1000,
                end_ms: i as u64 * 1000 + 1000,
                ..Default::default()
            };
            s.rows
                .entry("block".into())
                .or_default()
                .insert(format!("loop{i}"), row(1));
            t.add(&s);
        }
        let kept = &t.sum.rows["block"];
        assert!(kept.len() <= max * ROWS_KEPT + 1, "{}", kept.len());
        assert!(
            kept.contains_key(&format!("loop{}", n - 1)),
            "the latest stays"
        );
        let total: u64 = kept.values().map(|s| s.get(0).unwrap()).sum();
        assert_eq!(total, n as u64, "folded, never dropped");
        assert!(kept[ROWS_OTHER].get(0).unwrap() > 0);
    }

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
    fn among_many_names_the_busiest_get_the_series() {
        // 200 names, each as busy as its number: the series go to the
        // busiest, in free room and then in place of quieter ones, though
        // only 2 * max + 1 candidates are ranked each tick.
        let mut t = Totals::new(0, 1000, 1_000_000).with_series(&[], 3);
        t.add(&Sample {
            end_ms: 1000,
            procs: vec![proc(1, "early", 1)],
            ..Default::default()
        });
        let procs: Vec<ProcSample> = (0..200u32)
            .map(|i| proc(10 + i, &format!("n{i:03}"), 1 + i as u64))
            .collect();
        for tick in 0..3u64 {
            t.add(&Sample {
                end_ms: 2000 + tick * 1000,
                procs: procs.clone(),
                ..Default::default()
            });
        }
        let m = series(&t);
        let named: Vec<&String> = m.keys().filter(|k| *k != OTHER).collect();
        assert_eq!(named, ["n197", "n198", "n199"], "{m:?}");
        // Every count of the three ticks is in exactly one series; the
        // quiet name's series was replaced (and ended with its one count).
        assert_eq!(m.values().sum::<u64>(), (1..=200u64).sum::<u64>() * 3);
        assert_eq!(t.truncated.name_series, 1);
    }

    #[test]
    fn a_tick_added_in_parts_equals_it_added_at_once_and_shows_only_when_whole() {
        let procs: Vec<ProcSample> = (0..50u32)
            .map(|i| proc(100 + i, &format!("n{}", i % 7), 1 + i as u64))
            .collect();
        let tick = |end_ms| Sample {
            end_ms,
            procs: procs.clone(),
            ..sample(end_ms, &[])
        };
        let mut whole = Totals::new(0, 100, 1_000_000).with_series(&["n3".into()], 3);
        let mut parts = whole.clone();
        for end_ms in [1000, 2000] {
            whole.add(&tick(end_ms));
            let before = series(&parts);
            for end in (16..procs.len() + 16).step_by(16) {
                parts.add_read(&procs[..end.min(procs.len())]);
                assert_eq!(series(&parts), before, "series move only with the tick");
            }
            assert_eq!(parts.procs_added(), procs.len());
            parts.add(&tick(end_ms));
            assert_eq!(parts.procs_added(), 0);
        }
        assert_eq!(series(&parts), series(&whole));
        assert_eq!(parts.sum, whole.sum);
        for i in 0..7 {
            let name = format!("n{i}");
            assert_eq!(parts.name_totals(&name), whole.name_totals(&name), "{name}");
        }
        for p in &procs {
            let (a, b) = (parts.proc(p.tgid).unwrap(), whole.proc(p.tgid).unwrap());
            assert_eq!(a.totals, b.totals);
            assert_eq!((a.last_seen_ms, b.last_seen_ms), (2000, 2000));
        }
        // Part of a tick added, then the whole Sample: the rest is added.
        parts.add_read(&procs[..10]);
        whole.add(&tick(3000));
        parts.add(&tick(3000));
        assert_eq!(series(&parts), series(&whole));
        assert_eq!(
            parts.proc(100).unwrap().totals,
            whole.proc(100).unwrap().totals
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
