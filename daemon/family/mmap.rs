//! Page faults on file mappings: what is derived (declaration:
//! `bpf/families/mmap.toml`).
//!
//! A fault on a file mapping first tries fault-around (the kernel maps the
//! cached pages near the address); only a page it could not map goes to
//! the file's fault handler. A fault whose handler had to add the page to
//! the page cache is *major*. In pages, like buffered reads: the pages
//! faults looked up are *asked*; those the fault read in, or that
//! read-ahead brought in for them, are *missed*.

use super::{
    hit_ratio, Cell, Column, Derived, DerivedMetric, Family, ProcRows, Rows, Section, Shown,
    PER_NAME,
};
use crate::abi::mmap::{proc, stage, ASKED, FAULTS, MISSED_READAHEAD, MISSED_SYNC};
use crate::abi::MMAP;
use crate::promtext::{Kind, Out};

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
            value: |v| Cell::Count(field(v, proc::ASKED)),
        },
        Column {
            header: "MAP HIT",
            name: "mmap_hit_ratio",
            value: |v| Cell::Ratio(hit_ratio(field(v, proc::ASKED), field(v, proc::MISSED))),
        },
    ],
};

fn field(v: Option<&[u64]>, i: usize) -> u64 {
    v.and_then(|v| v.get(i).copied()).unwrap_or(0)
}

pub fn missed(s: &Section) -> Option<u64> {
    s.sum(&[MISSED_SYNC, MISSED_READAHEAD])
}

/// `None` when no fault looked up a page.
pub fn ratio(s: &Section) -> Option<f64> {
    hit_ratio(s.get(ASKED)?, missed(s)?)
}

fn rows(s: &Section) -> Rows {
    vec![
        ("hit ratio".into(), Shown::Ratio(ratio(s))),
        ("pages missed".into(), Shown::Count(missed(s))),
    ]
}

fn metrics(s: &Section) -> Vec<DerivedMetric> {
    let (Some(asked), Some(missed)) = (s.get(ASKED), missed(s)) else {
        return Vec::new();
    };
    vec![DerivedMetric {
        name: "iomon_mmap_read_pages",
        help: "Pages faults on file mappings looked up: hit = cached, miss = read in by the fault or its read-ahead.",
        values: vec![
            (vec![("result", "hit")], asked.saturating_sub(missed)),
            (vec![("result", "miss")], missed),
        ],
    }]
}

fn proc_metrics(comms: &ProcRows, o: &mut Out) {
    const NAME: &str = "iomon_process_mmap_read_pages";
    o.family(
        NAME,
        Kind::Counter,
        &format!("Pages faults on file mappings looked up: hit or miss. {PER_NAME}"),
    );
    for (c, v) in comms {
        let (asked, missed) = (field(*v, proc::ASKED), field(*v, proc::MISSED));
        o.counter(
            NAME,
            &[("comm", c), ("result", "hit")],
            asked.saturating_sub(missed),
        );
        o.counter(NAME, &[("comm", c), ("result", "miss")], missed.min(asked));
    }
}

fn tick(s: &Section, _secs: f64) -> String {
    let r = ratio(s)
        .map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "n/a".into());
    format!(
        "mmap hit {r} (asked {} missed {} major {})",
        s.get(ASKED).unwrap_or(0),
        missed(s).unwrap_or(0),
        s.get(FAULTS + stage::MAJOR).unwrap_or(0)
    )
}
