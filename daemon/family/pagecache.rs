//! Page-cache behaviour of buffered reads, in pages: what is derived
//! (declaration: `bpf/families/pagecache.toml`).
//!
//! The kernel side counts, for each buffered read, the pages it asked for
//! (capped at end of file) and of those the pages that had to be brought in
//! from storage: by the read itself, or by read-ahead an earlier read
//! triggered (each page once). `hit ratio = 1 - missed / asked`.

use super::{Cell, Column, Derived, DerivedMetric, Family, HitMiss, ProcRows, Rows, Section};
use crate::abi::pagecache::{proc, ASKED, MISSED_READAHEAD, MISSED_SYNC, READAHEAD};
use crate::abi::PAGECACHE;
use crate::promtext::Out;

pub static HIT_MISS: HitMiss = HitMiss {
    asked: ASKED,
    missed: &[MISSED_SYNC, MISSED_READAHEAD],
    proc_asked: proc::ASKED,
    proc_missed: proc::MISSED,
    metric: "iomon_page_cache_read_pages",
    proc_metric: "iomon_process_page_cache_read_pages",
    help: "Pages buffered reads asked for: hit = found cached, miss = brought in from storage by the read or its read-ahead.",
};

pub static FAMILY: Family = Family {
    schema: &PAGECACHE,
    rows,
    derived: &[Derived {
        name: "hit_ratio",
        value: ratio,
        ratio: true,
    }],
    metrics,
    proc_metrics,
    tick,
    columns: &[
        Column {
            header: "ASKED",
            name: "pages_asked",
            value: |v| Cell::Count(HIT_MISS.of_proc(v).0),
        },
        Column {
            header: "MISSED",
            name: "pages_missed",
            value: |v| Cell::Count(HIT_MISS.of_proc(v).1),
        },
        Column {
            header: "HIT",
            name: "hit_ratio",
            value: |v| HIT_MISS.proc_ratio(v),
        },
    ],
};

/// `None` when no page was asked for: no reads, no ratio.
pub fn ratio(s: &Section) -> Option<f64> {
    HIT_MISS.ratio(s)
}

fn rows(s: &Section) -> Rows {
    HIT_MISS.rows(s)
}

fn metrics(s: &Section) -> Vec<DerivedMetric> {
    HIT_MISS.metrics(s)
}

fn proc_metrics(comms: &ProcRows, o: &mut Out) {
    HIT_MISS.proc_metrics(comms, o)
}

fn tick(s: &Section, _secs: f64) -> String {
    format!(
        "{} readahead {})",
        HIT_MISS.tick("page cache", s),
        s.get(READAHEAD).unwrap_or(0)
    )
}
