//! Probe families: the unit of extension (DESIGN.md). Each family module
//! names its BPF programs and where they attach, and turns its slice of the
//! kernel counters into its part of a [`Sample`](crate::sample::Sample).
//!
//! Adding a family: its programs in `bpf/iomon.bpf.c`, one module here, and
//! one line in [`ALL`].

pub mod fadvise;
pub mod mmap;
pub mod pagecache;
pub mod reads;
pub mod reclaim;
pub mod writeback;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::exposition::Out;
use crate::sample::{ProcSample, Sample};

/// A BPF program of a family and the kernel event it attaches to.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    /// Function name in `bpf/iomon.bpf.c`.
    pub name: &'static str,
    /// What it attaches to, as an operator would look it up
    /// (`tracepoint:<category>:<event>` or `tp_btf:<event>`).
    pub event: &'static str,
}

impl Program {
    /// The tracefs directory that a classic tracepoint needs, relative to the
    /// tracefs root (`events/<category>/<event>`); `None` for `tp_btf`.
    pub fn tracefs_dir(&self) -> Option<String> {
        let rest = self.event.strip_prefix("tracepoint:")?;
        let (cat, ev) = rest.split_once(':')?;
        Some(format!("events/{cat}/{ev}"))
    }
}

/// A value a family shows in `iomonctl snapshot`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shown {
    /// An event or page count: shown per second and as a total.
    Count(u64),
    /// A ratio in [0, 1]; `None` when it is undefined (nothing asked).
    Ratio(Option<f64>),
    /// A latency quantile in microseconds (histogram bucket bound).
    Micros(Option<u64>),
}

/// A family's snapshot rows: (name, value).
pub type Summary = Vec<(&'static str, Shown)>;

/// A series `iomonctl history --metric` can chart.
#[derive(Debug)]
pub struct Series {
    pub name: &'static str,
    /// `None`: the family was not attached in that interval.
    pub value: fn(&Sample) -> Option<f64>,
    /// Shown as a percentage.
    pub ratio: bool,
}

/// A probe family: attaches, fails and is switched on or off on its own.
/// Everything the rest of the daemon needs to know about a family is here:
/// its programs, how its kernel counters become its part of a [`Sample`],
/// and how that part is shown (snapshot rows, history series, Prometheus
/// metrics, the `--dev` tick line).
pub struct Family {
    pub id: FamilyId,
    pub about: &'static str,
    pub programs: &'static [Program],
    /// Fills this family's section of a Sample from one interval's deltas.
    pub fill: fn(&mut Sample, &Deltas),
    /// Rows for `iomonctl snapshot`; `None` when the section is absent.
    pub summary: fn(&Sample) -> Option<Summary>,
    pub series: &'static [Series],
    /// Writes the family's metrics; writes nothing when the section is
    /// absent (unavailable is not zero).
    pub metrics: fn(&Sample, &mut Out),
    /// Writes the family's per-process-name metrics from the sticky comm
    /// series; nothing when the section is absent.
    pub proc_metrics: fn(&Sample, &[(String, ProcSample)], &mut Out),
    /// Its part of the `--dev` tick line.
    pub tick: fn(&Sample) -> Option<String>,
    /// Attached unless the config says otherwise. Off for families whose
    /// cost lands on every process (syscall tracepoints: BENCHMARKS.md).
    pub default_on: bool,
}

/// Programs every family relies on (per-process names); attached whenever
/// any family is.
pub const CORE: &[Program] = &[Program {
    name: "proc_exec",
    event: "tp_btf:sched_process_exec",
}];

/// Every family, in display order. The registration line of a new family.
pub const ALL: &[&Family] = &[
    &fadvise::FAMILY,
    &reads::FAMILY,
    &pagecache::FAMILY,
    &reclaim::FAMILY,
    &mmap::FAMILY,
    &writeback::FAMILY,
];

impl fmt::Debug for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Family")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FamilyId {
    Fadvise,
    Reads,
    Pagecache,
    Reclaim,
    Mmap,
    Writeback,
}

impl FamilyId {
    pub fn name(self) -> &'static str {
        match self {
            FamilyId::Fadvise => "fadvise",
            FamilyId::Reads => "reads",
            FamilyId::Pagecache => "pagecache",
            FamilyId::Reclaim => "reclaim",
            FamilyId::Mmap => "mmap",
            FamilyId::Writeback => "writeback",
        }
    }

    pub fn family(self) -> &'static Family {
        ALL.iter()
            .find(|f| f.id == self)
            .expect("every FamilyId is registered in family::ALL")
    }

    pub fn from_name(name: &str) -> Option<FamilyId> {
        ALL.iter().map(|f| f.id).find(|id| id.name() == name)
    }
}

impl fmt::Display for FamilyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Kernel counter and histogram deltas of one interval, indexed as in
/// `bpf/iomon.h` (`enum iomon_counter`, `enum iomon_hist`).
pub struct Deltas<'a> {
    pub counters: &'a [u64],
    pub hists: &'a [u64],
}

impl Deltas<'_> {
    pub fn counter(&self, idx: u32) -> u64 {
        self.counters.get(idx as usize).copied().unwrap_or(0)
    }

    pub fn hist(&self, hist: u32) -> Vec<u64> {
        let n = crate::probes::HIST_BUCKETS;
        let start = hist as usize * n;
        self.hists
            .get(start..start + n)
            .map(<[u64]>::to_vec)
            .unwrap_or_else(|| vec![0; n])
    }
}

/// Adds `other` into `acc` element-wise, growing `acc` if needed.
pub fn add_slice(acc: &mut Vec<u64>, other: &[u64]) {
    if acc.len() < other.len() {
        acc.resize(other.len(), 0);
    }
    for (a, b) in acc.iter_mut().zip(other) {
        *a = a.saturating_add(*b);
    }
}
