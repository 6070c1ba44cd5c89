//! Writeback: pages dirtied (per process), pages the flusher wrote back,
//! how long an inode's dirty data waited for it, and writers the kernel
//! paused in `balance_dirty_pages` for dirtying faster than the disk
//! takes.
//!
//! Pages written by `fsync`/`fdatasync`/`O_SYNC` are written by the
//! syncing task itself and appear in no writeback event: `written` counts
//! the flusher's (and `sync(2)`'s) writeback only.

use serde::{Deserialize, Serialize};

use super::{add_slice, Deltas, Family, FamilyId, Program, Series, Shown, Summary};
use crate::exposition::{Kind, Out};
use crate::probes::{counter as c, hist as h, hist_quantile_us};
use crate::sample::{ProcSample, Sample};

pub const FAMILY: Family = Family {
    id: FamilyId::Writeback,
    default_on: true,
    about: "writeback: pages dirtied, written back by the flusher, dirty age, writers throttled",
    programs: &[
        Program {
            name: "wb_dirty",
            event: "tp_btf:writeback_dirty_folio",
        },
        Program {
            name: "wb_written",
            event: "tp_btf:writeback_pages_written",
        },
        Program {
            name: "wb_inode",
            event: "tracepoint:writeback:writeback_single_inode",
        },
        Program {
            name: "wb_throttle",
            event: "tracepoint:writeback:balance_dirty_pages",
        },
    ],
    fill: |s, d| s.writeback = Some(WritebackStats::from_deltas(d)),
    summary,
    series: &[
        Series {
            name: "dirtied_pages",
            value: |s| Some(s.writeback.as_ref()?.dirtied as f64),
            ratio: false,
        },
        Series {
            name: "written_pages",
            value: |s| Some(s.writeback.as_ref()?.written as f64),
            ratio: false,
        },
        Series {
            name: "dirty_throttles",
            value: |s| Some(s.writeback.as_ref()?.throttles as f64),
            ratio: false,
        },
    ],
    metrics,
    proc_metrics,
    tick,
};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WritebackStats {
    /// Pages dirtied (buffered writes, writes through shared mappings).
    pub dirtied: u64,
    /// Pages the flusher (or sync(2)) wrote back.
    pub written: u64,
    /// Inodes the flusher wrote back.
    pub inodes: u64,
    /// Sum of their dirty age (time since the inode was dirtied) at
    /// writeback, ns.
    pub age_ns_sum: u64,
    /// log2 buckets in microseconds.
    pub age_hist: Vec<u64>,
    /// Writers paused by balance_dirty_pages.
    pub throttles: u64,
    pub throttle_ns_sum: u64,
    /// log2 buckets in microseconds.
    pub throttle_hist: Vec<u64>,
}

impl WritebackStats {
    pub fn from_deltas(d: &Deltas) -> Self {
        WritebackStats {
            dirtied: d.counter(c::WB_DIRTIED),
            written: d.counter(c::WB_WRITTEN),
            inodes: d.counter(c::WB_INODES),
            age_ns_sum: d.counter(c::WB_AGE_NS),
            age_hist: d.hist(h::DIRTY_AGE),
            throttles: d.counter(c::WB_THROTTLES),
            throttle_ns_sum: d.counter(c::WB_THROTTLE_NS),
            throttle_hist: d.hist(h::THROTTLE),
        }
    }

    pub fn merge(&mut self, o: &Self) {
        self.dirtied += o.dirtied;
        self.written += o.written;
        self.inodes += o.inodes;
        self.age_ns_sum += o.age_ns_sum;
        add_slice(&mut self.age_hist, &o.age_hist);
        self.throttles += o.throttles;
        self.throttle_ns_sum += o.throttle_ns_sum;
        add_slice(&mut self.throttle_hist, &o.throttle_hist);
    }
}

fn summary(s: &Sample) -> Option<Summary> {
    let w = s.writeback.as_ref()?;
    Some(vec![
        ("pages dirtied", Shown::Count(w.dirtied)),
        ("pages written (flusher)", Shown::Count(w.written)),
        ("inodes written", Shown::Count(w.inodes)),
        (
            "dirty age p50",
            Shown::Micros(hist_quantile_us(&w.age_hist, 0.5)),
        ),
        (
            "dirty age p99",
            Shown::Micros(hist_quantile_us(&w.age_hist, 0.99)),
        ),
        ("writers throttled", Shown::Count(w.throttles)),
        (
            "throttle p99",
            Shown::Micros(hist_quantile_us(&w.throttle_hist, 0.99)),
        ),
    ])
}

fn metrics(s: &Sample, o: &mut Out) {
    let Some(w) = &s.writeback else { return };
    o.family(
        "iomon_writeback_dirtied_pages",
        Kind::Counter,
        "Pages dirtied.",
    );
    o.counter("iomon_writeback_dirtied_pages", &[], w.dirtied);
    o.family(
        "iomon_writeback_written_pages",
        Kind::Counter,
        "Pages the flusher or sync(2) wrote back (fsync'd pages are not included).",
    );
    o.counter("iomon_writeback_written_pages", &[], w.written);
    o.family(
        "iomon_writeback_dirty_age_seconds",
        Kind::Histogram,
        "Age of an inode's dirty data when the flusher wrote it back.",
    );
    o.histogram(
        "iomon_writeback_dirty_age_seconds",
        &[],
        &w.age_hist,
        w.age_ns_sum,
    );
    o.family(
        "iomon_writeback_throttle_seconds",
        Kind::Histogram,
        "Pauses of writers throttled by balance_dirty_pages.",
    );
    o.histogram(
        "iomon_writeback_throttle_seconds",
        &[],
        &w.throttle_hist,
        w.throttle_ns_sum,
    );
}

fn proc_metrics(s: &Sample, comms: &[(String, ProcSample)], o: &mut Out) {
    if s.writeback.is_none() {
        return;
    }
    o.family(
        "iomon_process_writeback_dirtied_pages",
        Kind::Counter,
        "Pages dirtied, per process name.",
    );
    for (c, p) in comms {
        o.counter(
            "iomon_process_writeback_dirtied_pages",
            &[("comm", c)],
            p.wb_dirtied,
        );
    }
    o.family(
        "iomon_process_writeback_throttle_seconds",
        Kind::Counter,
        "Time writers were paused by balance_dirty_pages, per process name.",
    );
    for (c, p) in comms {
        o.counter_f64(
            "iomon_process_writeback_throttle_seconds",
            &[("comm", c)],
            p.wb_throttle_ns as f64 / 1e9,
        );
    }
}

fn tick(s: &Sample) -> Option<String> {
    let w = s.writeback.as_ref()?;
    Some(format!(
        "writeback dirtied {} written {} throttled {}",
        w.dirtied, w.written, w.throttles
    ))
}
