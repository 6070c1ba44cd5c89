//! One interval's worth of everything: the deltas of every counter, the
//! histogram bucket deltas and the busiest processes. Everything downstream
//! (totals, store, control socket, /metrics) is derived from Samples.

use serde::{Deserialize, Serialize};

use crate::family::fadvise::FadviseStats;
use crate::family::mmap::MmapStats;
use crate::family::pagecache::PageCacheStats;
use crate::family::reads::ReadStats;
use crate::family::reclaim::ReclaimStats;
use crate::family::writeback::WritebackStats;

/// Version of the Sample encoding; bump on any change to these structs
/// (the store and the socket protocol check it).
pub const SAMPLE_VERSION: u32 = 2;

/// Per-process numbers of one interval (or of a merged range).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcSample {
    pub tgid: u32,
    pub comm: String,
    /// `fadvise[advice][result]` as in [`FadviseStats`].
    pub fadvise: [[u64; 2]; 7],
    pub read_calls: u64,
    pub read_bytes: u64,
    pub pc_asked: u64,
    pub pc_missed: u64,
    /// Pages this process's faults on file mappings looked up / missed.
    pub mm_asked: u64,
    pub mm_missed: u64,
    pub mm_major: u64,
    /// Pages this process dirtied; times it was throttled for it.
    pub wb_dirtied: u64,
    pub wb_throttles: u64,
    pub wb_throttle_ns: u64,
}

impl ProcSample {
    pub fn fadvise_total(&self) -> u64 {
        self.fadvise.iter().map(|r| r[0] + r[1]).sum()
    }

    pub fn merge(&mut self, o: &ProcSample) {
        for (a, b) in self.fadvise.iter_mut().zip(&o.fadvise) {
            a[0] += b[0];
            a[1] += b[1];
        }
        self.read_calls += o.read_calls;
        self.read_bytes += o.read_bytes;
        self.pc_asked += o.pc_asked;
        self.pc_missed += o.pc_missed;
        self.mm_asked += o.mm_asked;
        self.mm_missed += o.mm_missed;
        self.mm_major += o.mm_major;
        self.wb_dirtied += o.wb_dirtied;
        self.wb_throttles += o.wb_throttles;
        self.wb_throttle_ns += o.wb_throttle_ns;
        if !o.comm.is_empty() {
            self.comm.clone_from(&o.comm);
        }
    }

    /// How busy, for ranking: every event counts once.
    pub fn activity(&self) -> u64 {
        // Pages looked up by faults are left out: every exec faults in its
        // binary (~1,000 pages), which would rank every short-lived
        // process above the ones doing I/O. Faults that read are in.
        self.fadvise_total()
            + self.read_calls
            + self.pc_asked
            + self.mm_missed
            + self.wb_dirtied
            + self.wb_throttles
    }

    pub fn is_empty(&self) -> bool {
        self.activity() == 0
            && self.read_bytes == 0
            && self.pc_missed == 0
            && self.mm_asked == 0
            && self.mm_missed == 0
            && self.mm_major == 0
            && self.wb_throttle_ns == 0
    }
}

/// What `top` ranks processes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum TopBy {
    #[default]
    Activity,
    Fadvise,
    Misses,
    Reads,
    Bytes,
    /// Pages missed by faults on file mappings.
    MmapMisses,
    /// Pages dirtied.
    Dirtied,
}

impl TopBy {
    pub fn key(self, p: &ProcSample) -> u64 {
        match self {
            TopBy::Activity => p.activity(),
            TopBy::Fadvise => p.fadvise_total(),
            TopBy::Misses => p.pc_missed,
            TopBy::Reads => p.read_calls,
            TopBy::Bytes => p.read_bytes,
            TopBy::MmapMisses => p.mm_missed,
            TopBy::Dirtied => p.wb_dirtied,
        }
    }
}

/// Sorts by `by` (descending, then tgid) and keeps the first `k`.
pub fn top_k(procs: &mut Vec<ProcSample>, by: TopBy, k: usize) {
    procs.sort_by(|a, b| by.key(b).cmp(&by.key(a)).then(a.tgid.cmp(&b.tgid)));
    procs.truncate(k);
}

/// One tick. A family's section is `None` when that family was not
/// attached during the interval: unavailable, not zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Wall-clock start and end of the interval, ms since the Unix epoch.
    pub start_ms: u64,
    pub end_ms: u64,
    pub fadvise: Option<FadviseStats>,
    pub reads: Option<ReadStats>,
    pub pagecache: Option<PageCacheStats>,
    pub reclaim: Option<ReclaimStats>,
    pub mmap: Option<MmapStats>,
    pub writeback: Option<WritebackStats>,
    /// The busiest processes of the interval (at most the configured top-K).
    pub procs: Vec<ProcSample>,
    /// Distinct processes seen in the interval (before the top-K cut).
    pub procs_seen: u64,
    /// Per-process increments the kernel could not record (map full).
    pub procs_dropped: u64,
}

fn merge_opt<T: Clone>(a: &mut Option<T>, b: &Option<T>, f: impl FnOnce(&mut T, &T)) {
    match (a.as_mut(), b) {
        (Some(x), Some(y)) => f(x, y),
        (None, Some(y)) => *a = Some(y.clone()),
        _ => {}
    }
}

impl Sample {
    pub fn duration_ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms)
    }

    /// The interval's length in seconds, at least 1 ms (for rates).
    pub fn seconds(&self) -> f64 {
        (self.duration_ms() as f64 / 1000.0).max(0.001)
    }

    /// Adds `o` (a later interval) into `self`: counters and buckets summed,
    /// processes merged by tgid and re-cut to `top`.
    pub fn merge(&mut self, o: &Sample, top: usize) {
        if self.start_ms == 0 && self.end_ms == 0 {
            self.start_ms = o.start_ms;
        }
        self.start_ms = self.start_ms.min(o.start_ms);
        self.end_ms = self.end_ms.max(o.end_ms);
        merge_opt(&mut self.fadvise, &o.fadvise, FadviseStats::merge);
        merge_opt(&mut self.reads, &o.reads, ReadStats::merge);
        merge_opt(&mut self.pagecache, &o.pagecache, PageCacheStats::merge);
        merge_opt(&mut self.reclaim, &o.reclaim, ReclaimStats::merge);
        merge_opt(&mut self.mmap, &o.mmap, MmapStats::merge);
        merge_opt(&mut self.writeback, &o.writeback, WritebackStats::merge);
        for p in &o.procs {
            match self.procs.iter_mut().find(|q| q.tgid == p.tgid) {
                Some(q) => q.merge(p),
                None => self.procs.push(p.clone()),
            }
        }
        top_k(&mut self.procs, TopBy::Activity, top);
        self.procs_seen = self.procs_seen.max(o.procs_seen);
        self.procs_dropped += o.procs_dropped;
    }

    pub fn proc(&self, tgid: u32) -> Option<&ProcSample> {
        self.procs.iter().find(|p| p.tgid == tgid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(tgid: u32, reads: u64) -> ProcSample {
        ProcSample {
            tgid,
            comm: format!("p{tgid}"),
            read_calls: reads,
            ..Default::default()
        }
    }

    #[test]
    fn exec_faults_do_not_outrank_io() {
        // A short-lived process: its binary faulted in, nothing else.
        let exec = ProcSample {
            tgid: 1,
            mm_asked: 1100,
            ..Default::default()
        };
        let io = ProcSample {
            tgid: 2,
            fadvise: [[0, 0], [0, 0], [0, 0], [0, 0], [37, 0], [0, 0], [0, 0]],
            ..Default::default()
        };
        assert!(io.activity() > exec.activity());
        assert!(!exec.is_empty(), "still reported, just ranked low");
        let mut v = vec![exec, io];
        top_k(&mut v, TopBy::Activity, 1);
        assert_eq!(v[0].tgid, 2);
    }

    #[test]
    fn merge_sums_sections_and_keeps_unavailable_apart() {
        let mut a = Sample {
            start_ms: 1000,
            end_ms: 2000,
            pagecache: Some(PageCacheStats {
                asked: 10,
                missed_sync: 4,
                ..Default::default()
            }),
            procs: vec![proc(1, 5)],
            ..Default::default()
        };
        let b = Sample {
            start_ms: 2000,
            end_ms: 3000,
            pagecache: Some(PageCacheStats {
                asked: 30,
                missed_readahead: 2,
                ..Default::default()
            }),
            procs: vec![proc(1, 1), proc(2, 7)],
            ..Default::default()
        };
        a.merge(&b, 10);
        assert_eq!((a.start_ms, a.end_ms), (1000, 3000));
        let pc = a.pagecache.as_ref().unwrap();
        assert_eq!((pc.asked, pc.missed()), (40, 6));
        assert_eq!(a.reads, None, "a family absent from both stays unavailable");
        assert_eq!(a.proc(1).unwrap().read_calls, 6);
        assert_eq!(a.procs[0].tgid, 2, "busiest first");
    }

    #[test]
    fn top_k_cuts_and_orders() {
        let mut v = vec![proc(3, 1), proc(1, 9), proc(2, 9), proc(4, 0)];
        top_k(&mut v, TopBy::Reads, 3);
        assert_eq!(v.iter().map(|p| p.tgid).collect::<Vec<_>>(), vec![1, 2, 3]);
    }
}
