//! Memory reclaim: pages scanned and reclaimed by kswapd and by direct
//! reclaim, and direct-reclaim stalls.

use serde::{Deserialize, Serialize};

use super::{add_slice, Deltas, Family, FamilyId, Program, Series, Shown, Summary};
use crate::exposition::{Kind, Out};
use crate::probes::hist_quantile_us;
use crate::probes::{counter as c, hist as h};
use crate::sample::{ProcSample, Sample};

pub const FAMILY: Family = Family {
    id: FamilyId::Reclaim,
    default_on: true,
    about: "reclaim: pages scanned/reclaimed by kswapd and direct reclaim, reclaim stalls",
    programs: &[
        Program {
            name: "vmscan_shrink_inactive",
            event: "tracepoint:vmscan:mm_vmscan_lru_shrink_inactive",
        },
        Program {
            name: "stall_direct_begin",
            event: "tracepoint:vmscan:mm_vmscan_direct_reclaim_begin",
        },
        Program {
            name: "stall_direct_end",
            event: "tracepoint:vmscan:mm_vmscan_direct_reclaim_end",
        },
        Program {
            name: "stall_memcg_begin",
            event: "tracepoint:vmscan:mm_vmscan_memcg_reclaim_begin",
        },
        Program {
            name: "stall_memcg_end",
            event: "tracepoint:vmscan:mm_vmscan_memcg_reclaim_end",
        },
    ],
    fill: |s, d| s.reclaim = Some(ReclaimStats::from_deltas(d)),
    summary,
    series: &[
        Series {
            name: "scanned_pages",
            value: |s| {
                s.reclaim
                    .as_ref()
                    .map(|r| (r.scanned_kswapd + r.scanned_direct) as f64)
            },
            ratio: false,
        },
        Series {
            name: "reclaimed_pages",
            value: |s| {
                s.reclaim
                    .as_ref()
                    .map(|r| (r.reclaimed_kswapd + r.reclaimed_direct) as f64)
            },
            ratio: false,
        },
        Series {
            name: "reclaim_stalls",
            value: |s| {
                s.reclaim
                    .as_ref()
                    .map(|r| (r.stalls_direct + r.stalls_memcg) as f64)
            },
            ratio: false,
        },
    ],
    metrics,
    proc_metrics,
    tick,
};

fn summary(s: &Sample) -> Option<Summary> {
    let r = s.reclaim.as_ref()?;
    Some(vec![
        ("scanned kswapd", Shown::Count(r.scanned_kswapd)),
        ("reclaimed kswapd", Shown::Count(r.reclaimed_kswapd)),
        ("scanned direct", Shown::Count(r.scanned_direct)),
        ("reclaimed direct", Shown::Count(r.reclaimed_direct)),
        ("stalls global", Shown::Count(r.stalls_direct)),
        ("stalls memcg", Shown::Count(r.stalls_memcg)),
        (
            "stall p99",
            Shown::Micros(hist_quantile_us(&r.stall_hist, 0.99)),
        ),
    ])
}

fn metrics(s: &Sample, o: &mut Out) {
    let Some(r) = &s.reclaim else { return };
    o.family(
        "iomon_vmscan_scanned_pages",
        Kind::Counter,
        "Inactive LRU pages scanned by reclaim.",
    );
    o.counter(
        "iomon_vmscan_scanned_pages",
        &[("reclaimer", "kswapd")],
        r.scanned_kswapd,
    );
    o.counter(
        "iomon_vmscan_scanned_pages",
        &[("reclaimer", "direct")],
        r.scanned_direct,
    );
    o.family(
        "iomon_vmscan_reclaimed_pages",
        Kind::Counter,
        "Pages reclaimed.",
    );
    o.counter(
        "iomon_vmscan_reclaimed_pages",
        &[("reclaimer", "kswapd")],
        r.reclaimed_kswapd,
    );
    o.counter(
        "iomon_vmscan_reclaimed_pages",
        &[("reclaimer", "direct")],
        r.reclaimed_direct,
    );
    o.family(
        "iomon_direct_reclaim_stalls",
        Kind::Counter,
        "Tasks that stalled in reclaim: global direct reclaim or a memory cgroup's limit.",
    );
    o.counter(
        "iomon_direct_reclaim_stalls",
        &[("kind", "global")],
        r.stalls_direct,
    );
    o.counter(
        "iomon_direct_reclaim_stalls",
        &[("kind", "memcg")],
        r.stalls_memcg,
    );
    o.family(
        "iomon_direct_reclaim_duration_seconds",
        Kind::Histogram,
        "Time tasks spent stalled in reclaim.",
    );
    o.histogram(
        "iomon_direct_reclaim_duration_seconds",
        &[],
        &r.stall_hist,
        r.stall_ns_sum,
    );
}

fn proc_metrics(_: &Sample, _: &[(String, ProcSample)], _: &mut Out) {
    // Reclaim is not attributed to processes.
}

fn tick(s: &Sample) -> Option<String> {
    let r = s.reclaim.as_ref()?;
    Some(format!(
        "reclaim scanned {} reclaimed {} stalls {}",
        r.scanned_kswapd + r.scanned_direct,
        r.reclaimed_kswapd + r.reclaimed_direct,
        r.stalls_direct + r.stalls_memcg
    ))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReclaimStats {
    pub scanned_kswapd: u64,
    pub reclaimed_kswapd: u64,
    /// Reclaim in the allocating task: global direct reclaim and memcg
    /// limit reclaim.
    pub scanned_direct: u64,
    pub reclaimed_direct: u64,
    /// Global direct-reclaim stalls (a task waited for memory).
    pub stalls_direct: u64,
    /// Stalls on a memory cgroup's limit.
    pub stalls_memcg: u64,
    pub stall_ns_sum: u64,
    /// log2 buckets in microseconds, both kinds of stall.
    pub stall_hist: Vec<u64>,
}

impl ReclaimStats {
    pub fn from_deltas(d: &Deltas) -> Self {
        ReclaimStats {
            scanned_kswapd: d.counter(c::SCANNED_KSWAPD),
            reclaimed_kswapd: d.counter(c::RECLAIMED_KSWAPD),
            scanned_direct: d.counter(c::SCANNED_DIRECT),
            reclaimed_direct: d.counter(c::RECLAIMED_DIRECT),
            stalls_direct: d.counter(c::STALLS_DIRECT),
            stalls_memcg: d.counter(c::STALLS_MEMCG),
            stall_ns_sum: d.counter(c::STALL_NS),
            stall_hist: d.hist(h::STALL_LATENCY),
        }
    }

    pub fn merge(&mut self, o: &Self) {
        self.scanned_kswapd += o.scanned_kswapd;
        self.reclaimed_kswapd += o.reclaimed_kswapd;
        self.scanned_direct += o.scanned_direct;
        self.reclaimed_direct += o.reclaimed_direct;
        self.stalls_direct += o.stalls_direct;
        self.stalls_memcg += o.stalls_memcg;
        self.stall_ns_sum += o.stall_ns_sum;
        add_slice(&mut self.stall_hist, &o.stall_hist);
    }
}
