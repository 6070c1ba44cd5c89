//! Page-cache behaviour of buffered reads, in pages.
//!
//! The kernel side counts, for each buffered read, the pages it asked for
//! (capped at end of file) and of those the pages that had to be brought in
//! from storage: by the read itself, or by read-ahead an earlier read
//! triggered (each page once). Read-ahead that no read has asked for yet is
//! counted apart. `hit ratio = 1 - missed / asked`.

use serde::{Deserialize, Serialize};

use super::{Deltas, Family, FamilyId, Program};
use crate::probes::counter as c;

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
};

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
