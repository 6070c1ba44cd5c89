//! Page-cache behaviour of buffered reads, in pages.
//!
//! The kernel side counts, for each buffered read, the pages it asked for
//! (capped at end of file) and of those the pages that had to be brought in
//! from storage: by the read itself, or by read-ahead an earlier read
//! triggered (each page once). Read-ahead that no read has asked for yet is
//! counted apart. `hit ratio = 1 - missed / asked`.

use serde::{Deserialize, Serialize};

use super::{Deltas, Family, FamilyId, Program, Series, Shown, Summary};
use crate::exposition::{Kind, Out};
use crate::probes::counter as c;
use crate::sample::{ProcSample, Sample};

pub const FAMILY: Family = Family {
    id: FamilyId::Pagecache,
    default_on: true,
    about: "page cache: pages buffered reads asked for and missed, read-ahead, adds, evictions",
    programs: &[
        Program {
            name: "pc_get_pages",
            event: "tp_btf:mm_filemap_get_pages",
        },
        Program {
            name: "pc_add",
            event: "tracepoint:filemap:mm_filemap_add_to_page_cache",
        },
        Program {
            name: "pc_delete",
            event: "tracepoint:filemap:mm_filemap_delete_from_page_cache",
        },
    ],
    fill: |s, d| s.pagecache = Some(PageCacheStats::from_deltas(d)),
    summary,
    series: &[
        Series {
            name: "hit_ratio",
            value: |s| s.pagecache.as_ref()?.hit_ratio(),
            ratio: true,
        },
        Series {
            name: "pages_asked",
            value: |s| Some(s.pagecache.as_ref()?.asked as f64),
            ratio: false,
        },
        Series {
            name: "pages_missed",
            value: |s| Some(s.pagecache.as_ref()?.missed() as f64),
            ratio: false,
        },
        Series {
            name: "readahead_pages",
            value: |s| Some(s.pagecache.as_ref()?.readahead as f64),
            ratio: false,
        },
    ],
    metrics,
    proc_metrics,
    tick,
};

fn summary(s: &Sample) -> Option<Summary> {
    let p = s.pagecache.as_ref()?;
    Some(vec![
        ("hit ratio", Shown::Ratio(p.hit_ratio())),
        ("pages asked", Shown::Count(p.asked)),
        ("pages missed", Shown::Count(p.missed())),
        ("missed by read", Shown::Count(p.missed_sync)),
        ("missed via readahead", Shown::Count(p.missed_readahead)),
        ("readahead pages", Shown::Count(p.readahead)),
        ("pages added", Shown::Count(p.added)),
        ("pages evicted", Shown::Count(p.deleted)),
    ])
}

fn metrics(s: &Sample, o: &mut Out) {
    let Some(p) = &s.pagecache else { return };
    o.family("iomon_page_cache_read_pages", Kind::Counter, "Pages buffered reads asked for: hit = found cached, miss = brought in from storage by the read or its read-ahead.");
    o.counter(
        "iomon_page_cache_read_pages",
        &[("result", "hit")],
        p.hits(),
    );
    o.counter(
        "iomon_page_cache_read_pages",
        &[("result", "miss")],
        p.missed(),
    );
    o.family(
        "iomon_page_cache_readahead_pages",
        Kind::Counter,
        "Pages reads brought in beyond what they asked for (speculative read-ahead).",
    );
    o.counter("iomon_page_cache_readahead_pages", &[], p.readahead);
    o.family(
        "iomon_page_cache_readahead_used_pages",
        Kind::Counter,
        "Read-ahead pages that a later read asked for.",
    );
    o.counter(
        "iomon_page_cache_readahead_used_pages",
        &[],
        p.missed_readahead,
    );
    o.family(
        "iomon_page_cache_added_pages",
        Kind::Counter,
        "Pages added to the page cache (reads, writes, faults).",
    );
    o.counter("iomon_page_cache_added_pages", &[], p.added);
    o.family(
        "iomon_page_cache_evicted_pages",
        Kind::Counter,
        "Pages removed from the page cache (reclaim, truncate, fadvise DONTNEED).",
    );
    o.counter("iomon_page_cache_evicted_pages", &[], p.deleted);
}

fn proc_metrics(s: &Sample, comms: &[(String, ProcSample)], o: &mut Out) {
    if s.pagecache.is_none() {
        return;
    }
    o.family(
        "iomon_process_page_cache_read_pages",
        Kind::Counter,
        "Pages buffered reads asked for, per process name.",
    );
    for (c, p) in comms {
        o.counter(
            "iomon_process_page_cache_read_pages",
            &[("comm", c), ("result", "hit")],
            p.pc_asked.saturating_sub(p.pc_missed),
        );
        o.counter(
            "iomon_process_page_cache_read_pages",
            &[("comm", c), ("result", "miss")],
            p.pc_missed.min(p.pc_asked),
        );
    }
}

fn tick(s: &Sample) -> Option<String> {
    let p = s.pagecache.as_ref()?;
    let ratio = p
        .hit_ratio()
        .map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "n/a".into());
    Some(format!(
        "page cache hit {ratio} (asked {} missed {} readahead {})",
        p.asked,
        p.missed(),
        p.readahead
    ))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageCacheStats {
    /// Pages buffered reads asked for.
    pub asked: u64,
    /// Asked pages the read itself had to bring in.
    pub missed_sync: u64,
    /// Asked pages that read-ahead of earlier reads had brought in.
    pub missed_readahead: u64,
    /// Pages reads added beyond what they asked for (speculative read-ahead).
    pub readahead: u64,
    /// All pages added to the page cache (reads, writes, faults).
    pub added: u64,
    /// All pages removed from the page cache (reclaim, truncate, fadvise).
    pub deleted: u64,
    /// mm_filemap_get_pages events seen.
    pub read_events: u64,
}

impl PageCacheStats {
    pub fn from_deltas(d: &Deltas) -> Self {
        PageCacheStats {
            asked: d.counter(c::PC_ASKED),
            missed_sync: d.counter(c::PC_MISSED_SYNC),
            missed_readahead: d.counter(c::PC_MISSED_RA),
            readahead: d.counter(c::PC_READAHEAD),
            added: d.counter(c::PC_ADDED),
            deleted: d.counter(c::PC_DELETED),
            read_events: d.counter(c::PC_READ_EVENTS),
        }
    }

    pub fn merge(&mut self, o: &Self) {
        self.asked += o.asked;
        self.missed_sync += o.missed_sync;
        self.missed_readahead += o.missed_readahead;
        self.readahead += o.readahead;
        self.added += o.added;
        self.deleted += o.deleted;
        self.read_events += o.read_events;
    }

    pub fn missed(&self) -> u64 {
        self.missed_sync + self.missed_readahead
    }

    pub fn hits(&self) -> u64 {
        self.asked.saturating_sub(self.missed())
    }

    /// `None` when no page was asked for: no reads, no ratio.
    pub fn hit_ratio(&self) -> Option<f64> {
        hit_ratio(self.asked, self.missed())
    }

    /// Read-ahead pages not (yet) asked for by any read.
    pub fn readahead_unused(&self) -> u64 {
        self.readahead.saturating_sub(self.missed_readahead)
    }
}

/// `1 - missed / asked`, clamped to [0, 1]; `None` when nothing was asked.
pub fn hit_ratio(asked: u64, missed: u64) -> Option<f64> {
    if asked == 0 {
        return None;
    }
    Some(1.0 - (missed.min(asked) as f64 / asked as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_is_none_without_reads_and_clamped() {
        assert_eq!(hit_ratio(0, 0), None);
        assert_eq!(hit_ratio(100, 0), Some(1.0));
        assert_eq!(hit_ratio(100, 50), Some(0.5));
        assert_eq!(hit_ratio(100, 150), Some(0.0));
    }
}
