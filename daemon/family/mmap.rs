//! Page faults on file mappings: what is derived (declaration:
//! `bpf/families/mmap.toml`).
//!
//! A fault on a file mapping first tries fault-around (the kernel maps the
//! cached pages near the address); only a page it could not map goes to
//! the file's fault handler. A fault whose handler had to add the page to
//! the page cache is *major*. In pages, like buffered reads: the pages
//! faults looked up are *asked*; those the fault read in, or that
//! read-ahead brought in for them, are *missed*.

use super::{Cell, Column, Derived, DerivedMetric, Family, HitMiss, ProcRows, Rows, Section};
use crate::abi::mmap::{proc, stage, ASKED, FAULTS, MISSED_READAHEAD, MISSED_SYNC};
use crate::abi::MMAP;
use crate::promtext::Out;

pub static HIT_MISS: HitMiss = HitMiss {
    asked: ASKED,
    missed: &[MISSED_SYNC, MISSED_READAHEAD],
    proc_asked: proc::ASKED,
    proc_missed: proc::MISSED,
    metric: "iomon_mmap_read_pages",
    proc_metric: "iomon_process_mmap_read_pages",
    help: "Pages faults on file mappings looked up: hit = cached, miss = read in by the fault or its read-ahead.",
};

pub static FAMILY: Family = Family {
    schema: &MMAP,
    rows,
    derived: &[Derived {
        name: "mmap_hit_ratio",
        value: ratio,
        ratio: true,
    }],
    metrics,
    proc_metrics,
    tick,
    columns: &[
        Column {
            header: "MAP ASKED",
            name: "mmap_pages_asked",
            value: |v| Cell::Count(HIT_MISS.of_proc(v).0),
        },
        Column {
            header: "MAP HIT",
            name: "mmap_hit_ratio",
            value: |v| HIT_MISS.proc_ratio(v),
        },
    ],
};

/// `None` when no fault looked up a page.
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
        "{} major {})",
        HIT_MISS.tick("mmap", s),
        s.get(FAULTS + stage::MAJOR).unwrap_or(0)
    )
}
