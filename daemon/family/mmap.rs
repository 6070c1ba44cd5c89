//! Page faults on file mappings: how often memory-mapped reads found their
//! pages cached, in faults and in pages.
//!
//! A fault on a file mapping first tries fault-around (the kernel maps the
//! cached pages near the address: `mm_filemap_map_pages`); only a page it
//! could not map goes to the file's fault handler (`mm_filemap_fault`). A
//! fault whose handler had to add the page to the page cache is *major*.
//! In pages, like buffered reads: the pages faults looked up are *asked*;
//! those the fault read in, or that read-ahead brought in for them, are
//! *missed*. `hit ratio = 1 - missed / asked`.

use serde::{Deserialize, Serialize};

use super::pagecache::hit_ratio;
use super::{Deltas, Family, FamilyId, Program, Series, Shown, Summary};
use crate::exposition::{Kind, Out};
use crate::probes::counter as c;
use crate::sample::{ProcSample, Sample};

pub const FAMILY: Family = Family {
    id: FamilyId::Mmap,
    default_on: true,
    about: "memory-mapped reads: file page faults, major vs minor, pages asked and missed",
    programs: &[
        Program {
            name: "mm_map_pages",
            event: "tp_btf:mm_filemap_map_pages",
        },
        Program {
            name: "mm_fault",
            event: "tp_btf:mm_filemap_fault",
        },
        Program {
            name: "mm_add",
            event: "tp_btf:mm_filemap_add_to_page_cache",
        },
    ],
    fill: |s, d| s.mmap = Some(MmapStats::from_deltas(d)),
    summary,
    series: &[
        Series {
            name: "mmap_hit_ratio",
            value: |s| s.mmap.as_ref()?.hit_ratio(),
            ratio: true,
        },
        Series {
            name: "mmap_pages_missed",
            value: |s| Some(s.mmap.as_ref()?.missed() as f64),
            ratio: false,
        },
        Series {
            name: "major_faults",
            value: |s| Some(s.mmap.as_ref()?.major as f64),
            ratio: false,
        },
    ],
    metrics,
    proc_metrics,
    tick,
};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmapStats {
    /// Fault-around lookups: faults on file mappings that tried the cache.
    pub fault_around: u64,
    /// Faults that reached the file's fault handler.
    pub faults: u64,
    /// Of those, faults whose page had to be read in.
    pub major: u64,
    /// Pages faults looked up.
    pub asked: u64,
    /// Asked pages the fault itself read in.
    pub missed_sync: u64,
    /// Asked pages read-ahead (of a fault or a read) had brought in.
    pub missed_readahead: u64,
    /// Pages faults read in beyond the faulting page.
    pub readahead: u64,
}

impl MmapStats {
    pub fn from_deltas(d: &Deltas) -> Self {
        MmapStats {
            fault_around: d.counter(c::MM_AROUND),
            faults: d.counter(c::MM_FAULTS),
            major: d.counter(c::MM_MAJOR),
            asked: d.counter(c::MM_ASKED),
            missed_sync: d.counter(c::MM_MISSED_SYNC),
            missed_readahead: d.counter(c::MM_MISSED_RA),
            readahead: d.counter(c::MM_READAHEAD),
        }
    }

    pub fn merge(&mut self, o: &Self) {
        self.fault_around += o.fault_around;
        self.faults += o.faults;
        self.major += o.major;
        self.asked += o.asked;
        self.missed_sync += o.missed_sync;
        self.missed_readahead += o.missed_readahead;
        self.readahead += o.readahead;
    }

    pub fn missed(&self) -> u64 {
        self.missed_sync + self.missed_readahead
    }

    /// `None` when no fault looked up a page.
    pub fn hit_ratio(&self) -> Option<f64> {
        hit_ratio(self.asked, self.missed())
    }
}

fn summary(s: &Sample) -> Option<Summary> {
    let m = s.mmap.as_ref()?;
    Some(vec![
        ("hit ratio", Shown::Ratio(m.hit_ratio())),
        ("pages asked", Shown::Count(m.asked)),
        ("pages missed", Shown::Count(m.missed())),
        ("missed by fault", Shown::Count(m.missed_sync)),
        ("missed via readahead", Shown::Count(m.missed_readahead)),
        ("readahead pages", Shown::Count(m.readahead)),
        ("fault-around lookups", Shown::Count(m.fault_around)),
        ("faults to handler", Shown::Count(m.faults)),
        ("major faults", Shown::Count(m.major)),
    ])
}

fn metrics(s: &Sample, o: &mut Out) {
    let Some(m) = &s.mmap else { return };
    o.family(
        "iomon_mmap_read_pages",
        Kind::Counter,
        "Pages faults on file mappings looked up: hit = cached, miss = read in by the fault or its read-ahead.",
    );
    o.counter(
        "iomon_mmap_read_pages",
        &[("result", "hit")],
        m.asked.saturating_sub(m.missed()),
    );
    o.counter("iomon_mmap_read_pages", &[("result", "miss")], m.missed());
    o.family(
        "iomon_mmap_readahead_pages",
        Kind::Counter,
        "Pages faults read in beyond the faulting page (mmap read-ahead).",
    );
    o.counter("iomon_mmap_readahead_pages", &[], m.readahead);
    o.family(
        "iomon_mmap_faults",
        Kind::Counter,
        "Faults on file mappings: around = tried fault-around, handler = reached the file's fault handler, major = had to read the page in.",
    );
    o.counter("iomon_mmap_faults", &[("stage", "around")], m.fault_around);
    o.counter("iomon_mmap_faults", &[("stage", "handler")], m.faults);
    o.counter("iomon_mmap_faults", &[("stage", "major")], m.major);
}

fn proc_metrics(s: &Sample, comms: &[(String, ProcSample)], o: &mut Out) {
    if s.mmap.is_none() {
        return;
    }
    o.family(
        "iomon_process_mmap_read_pages",
        Kind::Counter,
        "Pages faults on file mappings looked up, per process name.",
    );
    for (c, p) in comms {
        o.counter(
            "iomon_process_mmap_read_pages",
            &[("comm", c), ("result", "hit")],
            p.mm_asked.saturating_sub(p.mm_missed),
        );
        o.counter(
            "iomon_process_mmap_read_pages",
            &[("comm", c), ("result", "miss")],
            p.mm_missed.min(p.mm_asked),
        );
    }
    o.family(
        "iomon_process_mmap_major_faults",
        Kind::Counter,
        "Major faults on file mappings, per process name.",
    );
    for (c, p) in comms {
        o.counter(
            "iomon_process_mmap_major_faults",
            &[("comm", c)],
            p.mm_major,
        );
    }
}

fn tick(s: &Sample) -> Option<String> {
    let m = s.mmap.as_ref()?;
    let ratio = m
        .hit_ratio()
        .map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "n/a".into());
    Some(format!(
        "mmap hit {ratio} (asked {} missed {} major {})",
        m.asked,
        m.missed(),
        m.major
    ))
}
