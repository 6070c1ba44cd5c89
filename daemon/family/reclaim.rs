//! Memory reclaim: pages scanned and reclaimed by kswapd and by direct
//! reclaim, and direct-reclaim stalls.

use serde::{Deserialize, Serialize};

use super::{add_slice, Deltas, Family, FamilyId, Program};
use crate::probes::{counter as c, hist as h};

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
};

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
