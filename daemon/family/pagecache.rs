//! Page-cache behaviour of buffered reads, in pages: what is derived
//! (declaration: `bpf/families/pagecache.toml`).
//!
//! The kernel side counts, for each buffered read, the pages it asked for
//! (capped at end of file) and of those the pages that had to be brought in
//! from storage: by the read itself, or by read-ahead an earlier read
//! triggered (each page once). `hit ratio = 1 - missed / asked`.

use super::{
    hit_ratio, Cell, Column, Derived, DerivedMetric, Family, ProcRows, Rows, Section, Shown,
    PER_NAME,
};
use crate::abi::pagecache::{proc, ASKED, MISSED_READAHEAD, MISSED_SYNC, READAHEAD};
use crate::abi::PAGECACHE;
use crate::promtext::{Kind, Out};

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
            value: |v| Cell::Count(field(v, proc::ASKED)),
        },
        Column {
            header: "MISSED",
            name: "pages_missed",
            value: |v| Cell::Count(field(v, proc::MISSED)),
        },
        Column {
            header: "HIT",
            name: "hit_ratio",
            value: |v| Cell::Ratio(hit_ratio(field(v, proc::ASKED), field(v, proc::MISSED))),
        },
    ],
};

fn field(v: Option<&[u64]>, i: usize) -> u64 {
    v.and_then(|v| v.get(i).copied()).unwrap_or(0)
}

/// Pages asked for that had to be brought in.
pub fn missed(s: &Section) -> Option<u64> {
    s.sum(&[MISSED_SYNC, MISSED_READAHEAD])
}

/// `None` when no page was asked for: no reads, no ratio.
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
        name: "iomon_page_cache_read_pages",
        help: "Pages buffered reads asked for: hit = found cached, miss = brought in from storage by the read or its read-ahead.",
        values: vec![
            (vec![("result", "hit")], asked.saturating_sub(missed)),
            (vec![("result", "miss")], missed.min(asked)),
        ],
    }]
}

fn proc_metrics(comms: &ProcRows, o: &mut Out) {
    const NAME: &str = "iomon_process_page_cache_read_pages";
    o.family(
        NAME,
        Kind::Counter,
        &format!("Pages buffered reads asked for: hit or miss. {PER_NAME}"),
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
        "page cache hit {r} (asked {} missed {} readahead {})",
        s.get(ASKED).unwrap_or(0),
        missed(s).unwrap_or(0),
        s.get(READAHEAD).unwrap_or(0)
    )
}
