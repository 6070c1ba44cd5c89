//! One interval's worth of everything: each attached family's section (its
//! counter and histogram deltas, laid out as declared), the bookkeeping
//! `core` section, and the busiest processes. Everything downstream
//! (totals, store, control socket, /metrics) is derived from Samples.
//!
//! The shape does not change per family: sections are keyed by the
//! family's stable name, so a new family or an appended counter needs no
//! new encoding (old Samples simply lack them: absent, not zero; sections
//! no family of this build knows are carried along and never shown).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::abi;
use crate::family::{self, Section, Sections};

/// Version of the Sample encoding (the store and the socket protocol check
/// it). 3 is the last bump for families: sections are keyed by name.
pub const SAMPLE_VERSION: u32 = 3;

/// Per-process numbers of one interval (or of a merged range): each
/// family's per-process fields, laid out as declared, for the families
/// that saw the process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcSample {
    pub tgid: u32,
    pub comm: String,
    /// The targets (bits by slot, see `Sample::targets`) the process's
    /// events were counted for.
    pub targets: u32,
    pub families: BTreeMap<String, Vec<u64>>,
}

impl ProcSample {
    /// The process's per-process fields of a family.
    pub fn of(&self, family: &str) -> Option<&[u64]> {
        self.families.get(family).map(Vec::as_slice)
    }

    /// One per-process field element (0 when the family did not see it).
    pub fn get(&self, family: &str, element: usize) -> u64 {
        self.of(family)
            .and_then(|v| v.get(element).copied())
            .unwrap_or(0)
    }

    pub fn merge(&mut self, o: &ProcSample) {
        for (k, v) in &o.families {
            family::add_slice(self.families.entry(k.clone()).or_default(), v);
        }
        if !o.comm.is_empty() {
            self.comm.clone_from(&o.comm);
        }
        self.targets |= o.targets;
    }

    /// How busy, for ranking: every element of the fields declared as
    /// activity counts once. (Pages looked up by faults are not among
    /// them: every exec faults in its binary, ~1,000 pages, which would
    /// rank every short-lived process above the ones doing I/O.)
    pub fn activity(&self) -> u64 {
        let mut a = 0u64;
        for (name, v) in &self.families {
            let Some(s) = abi::schema(name) else { continue };
            for p in s.proc.iter().filter(|p| p.activity) {
                a = a.saturating_add(v.iter().skip(p.offset).take(p.len).sum());
            }
        }
        a
    }

    pub fn is_empty(&self) -> bool {
        self.families.values().all(|v| v.iter().all(|x| *x == 0))
    }
}

/// What `top` ranks processes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TopBy {
    #[default]
    Activity,
    /// The sum of a per-process field's elements.
    Field {
        family: &'static str,
        offset: usize,
        len: usize,
    },
}

impl TopBy {
    /// A `--by` key: "activity" or a declared rank (see
    /// [`family::ranks`]).
    pub fn parse(key: &str) -> Option<TopBy> {
        if key == "activity" {
            return Some(TopBy::Activity);
        }
        family::rank_field(key).map(|(f, p)| TopBy::Field {
            family: f.name(),
            offset: p.offset,
            len: p.len,
        })
    }

    pub fn key(self, p: &ProcSample) -> u64 {
        match self {
            TopBy::Activity => p.activity(),
            TopBy::Field {
                family,
                offset,
                len,
            } => p
                .of(family)
                .map_or(0, |v| v.iter().skip(offset).take(len).sum()),
        }
    }
}

/// Sorts by `by` (descending, then tgid) and keeps the first `k`.
pub fn top_k(procs: &mut Vec<ProcSample>, by: TopBy, k: usize) {
    procs.sort_by(|a, b| by.key(b).cmp(&by.key(a)).then(a.tgid.cmp(&b.tgid)));
    procs.truncate(k);
}

/// One tick. A family's section is absent when that family was not
/// attached during the interval: unavailable, not zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Wall-clock start and end of the interval, ms since the Unix epoch.
    pub start_ms: u64,
    pub end_ms: u64,
    /// By family name, plus `core` (iomon's own bookkeeping).
    pub sections: Sections,
    /// The busiest processes of the interval (at most the configured top-K).
    pub procs: Vec<ProcSample>,
    /// Distinct processes seen in the interval (before the top-K cut).
    pub procs_seen: u64,
    /// Per-process reads from the kernel that failed in the interval (the
    /// host-wide numbers are whole; those processes are counted next tick).
    pub proc_read_errors: u64,
    /// Processes left out of `procs` by the top-K cut (their numbers are
    /// in the totals and the per-name series, which see every process).
    pub procs_truncated: u64,
    /// Each target's own sections, by target name: the events of its
    /// processes, counted in the kernel in its own slots. A target that was
    /// not active (a cgroup that did not exist) has none.
    pub targets: BTreeMap<String, Sections>,
    /// Target names by kernel slot (bit i of a process's `targets`).
    pub target_slots: Vec<String>,
}

impl Sample {
    pub fn duration_ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms)
    }

    /// The interval's length in seconds, at least 1 ms (for rates).
    pub fn seconds(&self) -> f64 {
        (self.duration_ms() as f64 / 1000.0).max(0.001)
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.get(name)
    }

    /// A `core` counter (0 when absent).
    pub fn core(&self, element: usize) -> u64 {
        self.section("core")
            .and_then(|s| s.get(element))
            .unwrap_or(0)
    }

    /// Adds `o` (a later interval) into `self`: sections summed, processes
    /// merged by tgid and re-cut to `top`.
    pub fn merge(&mut self, o: &Sample, top: usize) {
        if self.start_ms == 0 && self.end_ms == 0 {
            self.start_ms = o.start_ms;
        }
        self.start_ms = self.start_ms.min(o.start_ms);
        self.end_ms = self.end_ms.max(o.end_ms);
        for (name, s) in &o.sections {
            self.sections.entry(name.clone()).or_default().merge(s);
        }
        for (target, secs) in &o.targets {
            let mine = self.targets.entry(target.clone()).or_default();
            for (name, s) in secs {
                mine.entry(name.clone()).or_default().merge(s);
            }
        }
        // Slots name the bits of processes' masks: a merge across a change
        // of targets keeps the names the masks of the merged processes
        // had, slot by slot, where they agree.
        if self.target_slots.is_empty() {
            self.target_slots.clone_from(&o.target_slots);
        }
        for p in &o.procs {
            match self.procs.iter_mut().find(|q| q.tgid == p.tgid) {
                Some(q) => q.merge(p),
                None => self.procs.push(p.clone()),
            }
        }
        self.procs_truncated += o.procs_truncated;
        self.cut_procs(top);
        self.procs_seen = self.procs_seen.max(o.procs_seen);
        self.proc_read_errors += o.proc_read_errors;
    }

    /// Keeps the `k` busiest processes, and every process of a target
    /// whatever its rank; counts the others in `procs_truncated`.
    pub fn cut_procs(&mut self, k: usize) {
        let mut all = std::mem::take(&mut self.procs);
        top_k(&mut all, TopBy::Activity, usize::MAX);
        let mut kept = 0;
        for p in all {
            if kept < k || p.targets != 0 {
                kept += 1;
                self.procs.push(p);
            } else {
                self.procs_truncated += 1;
            }
        }
    }

    pub fn proc(&self, tgid: u32) -> Option<&ProcSample> {
        self.procs.iter().find(|p| p.tgid == tgid)
    }

    /// The bit of a target's processes in their `targets` mask.
    pub fn target_bit(&self, target: &str) -> Option<u32> {
        self.target_slots
            .iter()
            .position(|n| n == target)
            .map(|i| 1u32 << i)
    }

    /// What this Sample holds for one target: its sections in place of the
    /// host's, and only its processes.
    pub fn for_target(&self, target: &str) -> Option<Sample> {
        let sections = self.targets.get(target)?.clone();
        let bit = self.target_bit(target).unwrap_or(0);
        Some(Sample {
            sections,
            procs: self
                .procs
                .iter()
                .filter(|p| p.targets & bit != 0)
                .cloned()
                .collect(),
            targets: BTreeMap::new(),
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{fadvise, mmap, pagecache, reads};

    fn proc(tgid: u32, reads: u64) -> ProcSample {
        let mut v = vec![0; abi::READS.nproc];
        v[reads::proc::CALLS] = reads;
        ProcSample {
            tgid,
            comm: format!("p{tgid}"),
            families: [("reads".to_string(), v)].into(),
            ..Default::default()
        }
    }

    #[test]
    fn exec_faults_do_not_outrank_io() {
        // A short-lived process: its binary faulted in, nothing else.
        let mut m = vec![0; abi::MMAP.nproc];
        m[mmap::proc::ASKED] = 1100;
        let exec = ProcSample {
            tgid: 1,
            families: [("mmap".to_string(), m)].into(),
            ..Default::default()
        };
        let mut f = vec![0; abi::FADVISE.nproc];
        f[fadvise::advice::DONTNEED * fadvise::result::N] = 37;
        let io = ProcSample {
            tgid: 2,
            families: [("fadvise".to_string(), f)].into(),
            ..Default::default()
        };
        assert_eq!(io.activity(), 37);
        assert!(io.activity() > exec.activity());
        assert!(!exec.is_empty(), "still reported, just ranked low");
        let mut v = vec![exec, io];
        top_k(&mut v, TopBy::Activity, 1);
        assert_eq!(v[0].tgid, 2);
    }

    #[test]
    fn merge_sums_sections_and_keeps_unavailable_apart() {
        let pc = |asked, missed| Section {
            counters: {
                let mut c = vec![0; abi::PAGECACHE.ncounters];
                c[pagecache::ASKED] = asked;
                c[pagecache::MISSED_SYNC] = missed;
                c
            },
            hists: vec![],
        };
        let mut a = Sample {
            start_ms: 1000,
            end_ms: 2000,
            sections: [("pagecache".to_string(), pc(10, 4))].into(),
            procs: vec![proc(1, 5)],
            ..Default::default()
        };
        let b = Sample {
            start_ms: 2000,
            end_ms: 3000,
            sections: [("pagecache".to_string(), pc(30, 2))].into(),
            procs: vec![proc(1, 1), proc(2, 7)],
            ..Default::default()
        };
        a.merge(&b, 10);
        assert_eq!((a.start_ms, a.end_ms), (1000, 3000));
        let s = a.section("pagecache").unwrap();
        assert_eq!(
            (s.get(pagecache::ASKED), s.get(pagecache::MISSED_SYNC)),
            (Some(40), Some(6))
        );
        assert!(
            a.section("reads").is_none(),
            "a family absent from both stays unavailable"
        );
        assert_eq!(a.proc(1).unwrap().get("reads", reads::proc::CALLS), 6);
        assert_eq!(a.procs[0].tgid, 2, "busiest first");
    }

    #[test]
    fn the_cut_keeps_targets_and_counts_the_rest() {
        let mut s = Sample {
            procs: (1..=10).map(|t| proc(t, t as u64 * 10)).collect(),
            ..Default::default()
        };
        s.procs[0].targets = 1; // the least busy one is a target's
        s.cut_procs(3);
        let kept: Vec<u32> = s.procs.iter().map(|p| p.tgid).collect();
        assert_eq!(kept, vec![10, 9, 8, 1]);
        assert_eq!(s.procs_truncated, 6);
    }

    #[test]
    fn top_k_cuts_and_orders() {
        let by = TopBy::parse("reads").unwrap();
        let mut v = vec![proc(3, 1), proc(1, 9), proc(2, 9), proc(4, 0)];
        top_k(&mut v, by, 3);
        assert_eq!(v.iter().map(|p| p.tgid).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(TopBy::parse("nope").is_none());
    }
}
