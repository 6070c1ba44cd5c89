//! How a Sample is stored: a tag byte (the Sample encoding), then varint
//! bincode. Values of older encodings are read through frozen copies of
//! their own types and converted; new ones are written as
//! [`SAMPLE_VERSION`](crate::sample::SAMPLE_VERSION). From encoding 3 on
//! a Sample's shape does not change per family (sections keyed by name),
//! so a new family or counter needs no new tag.

use bincode::Options;

use crate::sample::Sample;

/// A stored Sample larger than this is refused on decode.
pub const MAX_VALUE: u64 = 4 << 20;
const TAG: u8 = crate::sample::SAMPLE_VERSION as u8;
const TAG_V4: u8 = 4;
const TAG_V3: u8 = 3;
const TAG_V2: u8 = 2;
const TAG_V1: u8 = 1;

/// Varint integers: most counters of one tick are small, so a Sample is
/// about a quarter of its fixed-width size.
fn codec() -> impl Options {
    bincode::DefaultOptions::new()
        .with_varint_encoding()
        .with_little_endian()
        .with_limit(MAX_VALUE)
}

pub fn encode_sample(s: &Sample) -> Vec<u8> {
    let mut v = vec![TAG];
    v.extend(codec().serialize(s).expect("Samples always serialize"));
    v
}

pub fn decode_sample(bytes: &[u8]) -> Option<Sample> {
    match bytes.split_first() {
        Some((&TAG, rest)) => codec().deserialize(rest).ok(),
        // Encoding 4 is 5 without the families' rows, its last field: an
        // empty map (length 0, one byte) appended makes it one.
        Some((&TAG_V4, rest)) => {
            let mut v5 = Vec::with_capacity(rest.len() + 1);
            v5.extend_from_slice(rest);
            v5.push(0);
            codec().deserialize(&v5).ok()
        }
        Some((&TAG_V3, rest)) => codec()
            .deserialize::<v3::Sample>(rest)
            .ok()
            .map(Sample::from),
        Some((&TAG_V2, rest)) => codec()
            .deserialize::<v2::Sample>(rest)
            .ok()
            .map(Sample::from),
        Some((&TAG_V1, rest)) => codec()
            .deserialize::<v1::Sample>(rest)
            .ok()
            .map(v2::Sample::from)
            .map(Sample::from),
        _ => None,
    }
}

/// Sample encoding 3 (sections keyed by family name, before the BanyanDB
/// view), kept to read stores written by it. Never written; never to be
/// edited.
pub mod v3 {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use crate::family::Sections;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct ProcSample {
        pub tgid: u32,
        pub comm: String,
        pub targets: u32,
        pub families: BTreeMap<String, Vec<u64>>,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct FileSample {
        pub target: String,
        pub dev: u32,
        pub ino: u64,
        pub path: Option<String>,
        pub pages: Vec<u64>,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Sample {
        pub start_ms: u64,
        pub end_ms: u64,
        pub sections: Sections,
        pub procs: Vec<ProcSample>,
        pub procs_seen: u64,
        pub proc_read_errors: u64,
        pub procs_truncated: u64,
        pub targets: BTreeMap<String, Sections>,
        pub target_slots: Vec<String>,
        pub files: Vec<FileSample>,
        pub files_truncated: u64,
        pub files_unresolved: u64,
    }

    impl From<Sample> for crate::sample::Sample {
        fn from(s: Sample) -> Self {
            crate::sample::Sample {
                start_ms: s.start_ms,
                end_ms: s.end_ms,
                sections: s.sections,
                procs: s
                    .procs
                    .into_iter()
                    .map(|p| crate::sample::ProcSample {
                        tgid: p.tgid,
                        comm: p.comm,
                        targets: p.targets,
                        families: p.families.into_iter().collect(),
                    })
                    .collect(),
                procs_seen: s.procs_seen,
                proc_read_errors: s.proc_read_errors,
                procs_truncated: s.procs_truncated,
                targets: s.targets,
                target_slots: s.target_slots,
                files: s
                    .files
                    .into_iter()
                    .map(|f| crate::sample::FileSample {
                        target: f.target,
                        dev: f.dev,
                        ino: f.ino,
                        path: f.path,
                        pages: f.pages,
                        kind: None,
                    })
                    .collect(),
                files_truncated: s.files_truncated,
                files_unresolved: s.files_unresolved,
                ..Default::default()
            }
        }
    }
}

/// Sample encoding 2 (iomon 0.1 with mmap and writeback: one struct per
/// family), kept to read stores written by it. Never written; never to be
/// edited.
pub mod v2 {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use crate::family::Section;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct FadviseStats {
        pub calls: [[u64; 2]; 7],
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct ReadStats {
        pub calls: [u64; 5],
        pub bytes: [u64; 5],
        pub errors: u64,
        pub latency_ns_sum: u64,
        pub latency_hist: Vec<u64>,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct PageCacheStats {
        pub asked: u64,
        pub missed_sync: u64,
        pub missed_readahead: u64,
        pub readahead: u64,
        pub added: u64,
        pub deleted: u64,
        pub read_events: u64,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct ReclaimStats {
        pub scanned_kswapd: u64,
        pub reclaimed_kswapd: u64,
        pub scanned_direct: u64,
        pub reclaimed_direct: u64,
        pub stalls_direct: u64,
        pub stalls_memcg: u64,
        pub stall_ns_sum: u64,
        pub stall_hist: Vec<u64>,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct MmapStats {
        pub fault_around: u64,
        pub faults: u64,
        pub major: u64,
        pub asked: u64,
        pub missed_sync: u64,
        pub missed_readahead: u64,
        pub readahead: u64,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct WritebackStats {
        pub dirtied: u64,
        pub written: u64,
        pub inodes: u64,
        pub age_ns_sum: u64,
        pub age_hist: Vec<u64>,
        pub throttles: u64,
        pub throttle_ns_sum: u64,
        pub throttle_hist: Vec<u64>,
    }

    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct ProcSample {
        pub tgid: u32,
        pub comm: String,
        pub fadvise: [[u64; 2]; 7],
        pub read_calls: u64,
        pub read_bytes: u64,
        pub pc_asked: u64,
        pub pc_missed: u64,
        pub mm_asked: u64,
        pub mm_missed: u64,
        pub mm_major: u64,
        pub wb_dirtied: u64,
        pub wb_throttles: u64,
        pub wb_throttle_ns: u64,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Sample {
        pub start_ms: u64,
        pub end_ms: u64,
        pub fadvise: Option<FadviseStats>,
        pub reads: Option<ReadStats>,
        pub pagecache: Option<PageCacheStats>,
        pub reclaim: Option<ReclaimStats>,
        pub mmap: Option<MmapStats>,
        pub writeback: Option<WritebackStats>,
        pub procs: Vec<ProcSample>,
        pub procs_seen: u64,
        pub procs_dropped: u64,
    }

    fn flat(calls: &[[u64; 2]; 7]) -> Vec<u64> {
        calls.iter().flatten().copied().collect()
    }

    fn counters(v: Vec<u64>) -> Section {
        Section {
            counters: v,
            hists: Vec::new(),
        }
    }

    /// Each family's section in the layout it had when encoding 2 was
    /// written (declarations only ever append, so these stay prefixes of
    /// the current layouts; a test checks them against the declarations).
    impl From<Sample> for crate::sample::Sample {
        fn from(s: Sample) -> Self {
            let mut sections = BTreeMap::new();
            sections.insert("core".to_string(), counters(vec![s.procs_dropped]));
            if let Some(f) = &s.fadvise {
                sections.insert("fadvise".into(), counters(flat(&f.calls)));
            }
            if let Some(r) = s.reads {
                let mut c = r.calls.to_vec();
                c.extend(r.bytes);
                c.extend([r.errors, r.latency_ns_sum]);
                sections.insert(
                    "reads".into(),
                    Section {
                        counters: c,
                        hists: vec![r.latency_hist],
                    },
                );
            }
            if let Some(p) = &s.pagecache {
                sections.insert(
                    "pagecache".into(),
                    counters(vec![
                        p.asked,
                        p.missed_sync,
                        p.missed_readahead,
                        p.readahead,
                        p.added,
                        p.deleted,
                        p.read_events,
                    ]),
                );
            }
            if let Some(r) = s.reclaim {
                sections.insert(
                    "reclaim".into(),
                    Section {
                        counters: vec![
                            r.scanned_kswapd,
                            r.scanned_direct,
                            r.reclaimed_kswapd,
                            r.reclaimed_direct,
                            r.stalls_direct,
                            r.stalls_memcg,
                            r.stall_ns_sum,
                        ],
                        hists: vec![r.stall_hist],
                    },
                );
            }
            if let Some(m) = &s.mmap {
                sections.insert(
                    "mmap".into(),
                    counters(vec![
                        m.fault_around,
                        m.faults,
                        m.major,
                        m.asked,
                        m.missed_sync,
                        m.missed_readahead,
                        m.readahead,
                    ]),
                );
            }
            if let Some(w) = s.writeback {
                sections.insert(
                    "writeback".into(),
                    Section {
                        counters: vec![
                            w.dirtied,
                            w.written,
                            w.inodes,
                            w.age_ns_sum,
                            w.throttles,
                            w.throttle_ns_sum,
                        ],
                        hists: vec![w.age_hist, w.throttle_hist],
                    },
                );
            }
            let procs = s
                .procs
                .into_iter()
                .map(|p| {
                    let mut families = crate::sample::ProcFields::default();
                    let mut put = |name: &str, v: Vec<u64>| {
                        if v.iter().any(|x| *x != 0) {
                            families.insert(name, v);
                        }
                    };
                    put("fadvise", flat(&p.fadvise));
                    put("reads", vec![p.read_calls, p.read_bytes]);
                    put("pagecache", vec![p.pc_asked, p.pc_missed]);
                    put("mmap", vec![p.mm_asked, p.mm_missed, p.mm_major]);
                    put(
                        "writeback",
                        vec![p.wb_dirtied, p.wb_throttles, p.wb_throttle_ns],
                    );
                    crate::sample::ProcSample {
                        tgid: p.tgid,
                        comm: p.comm,
                        targets: 0,
                        families,
                    }
                })
                .collect();
            crate::sample::Sample {
                start_ms: s.start_ms,
                end_ms: s.end_ms,
                sections,
                procs,
                procs_seen: s.procs_seen,
                proc_read_errors: 0,
                procs_truncated: 0,
                targets: BTreeMap::new(),
                target_slots: Vec::new(),
                files: Vec::new(),
                files_truncated: 0,
                files_unresolved: 0,
                ..Default::default()
            }
        }
    }
}

/// Sample encoding 1 (iomon 0.1: four families, no mmap/writeback), kept
/// to read stores written by it. Never written; never to be edited.
pub mod v1 {
    use serde::{Deserialize, Serialize};

    use super::v2::{FadviseStats, PageCacheStats, ReadStats, ReclaimStats};

    #[derive(Serialize, Deserialize)]
    pub struct ProcSample {
        pub tgid: u32,
        pub comm: String,
        pub fadvise: [[u64; 2]; 7],
        pub read_calls: u64,
        pub read_bytes: u64,
        pub pc_asked: u64,
        pub pc_missed: u64,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Sample {
        pub start_ms: u64,
        pub end_ms: u64,
        pub fadvise: Option<FadviseStats>,
        pub reads: Option<ReadStats>,
        pub pagecache: Option<PageCacheStats>,
        pub reclaim: Option<ReclaimStats>,
        pub procs: Vec<ProcSample>,
        pub procs_seen: u64,
        pub procs_dropped: u64,
    }

    impl From<Sample> for super::v2::Sample {
        fn from(s: Sample) -> Self {
            super::v2::Sample {
                start_ms: s.start_ms,
                end_ms: s.end_ms,
                fadvise: s.fadvise,
                reads: s.reads,
                pagecache: s.pagecache,
                reclaim: s.reclaim,
                // Families that did not exist: unavailable, not zero.
                mmap: None,
                writeback: None,
                procs: s
                    .procs
                    .into_iter()
                    .map(|p| super::v2::ProcSample {
                        tgid: p.tgid,
                        comm: p.comm,
                        fadvise: p.fadvise,
                        read_calls: p.read_calls,
                        read_bytes: p.read_bytes,
                        pc_asked: p.pc_asked,
                        pc_missed: p.pc_missed,
                        ..Default::default()
                    })
                    .collect(),
                procs_seen: s.procs_seen,
                procs_dropped: s.procs_dropped,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{self, fadvise, mmap, pagecache, reads, reclaim, writeback};

    #[test]
    fn decode_refuses_garbage_and_oversize() {
        assert!(decode_sample(&[]).is_none());
        assert!(decode_sample(&[9, 1, 2]).is_none());
        let mut big = vec![TAG];
        big.extend_from_slice(&[0xff; 64]);
        assert!(decode_sample(&big).is_none());
        let s = Sample {
            start_ms: 5,
            end_ms: 6,
            ..Default::default()
        };
        assert_eq!(decode_sample(&encode_sample(&s)), Some(s));
    }

    #[test]
    fn version_4_samples_decode_without_rows_and_rows_round_trip() {
        let mut s = Sample {
            start_ms: 5,
            end_ms: 6,
            procs_seen: 3,
            ..Default::default()
        };
        // Encoding 4: this Sample's bytes without the (empty) rows map.
        let mut v4 = encode_sample(&s);
        assert_eq!(v4.pop(), Some(0), "rows are the last field");
        v4[0] = TAG_V4;
        assert_eq!(decode_sample(&v4), Some(s.clone()));
        let row = crate::family::Section {
            counters: vec![1, 2],
            hists: vec![vec![0, 3]],
        };
        s.rows
            .entry("block".into())
            .or_default()
            .insert("vda".into(), row);
        assert_eq!(decode_sample(&encode_sample(&s)), Some(s));
    }

    fn v2_bytes(s: &v2::Sample) -> Vec<u8> {
        let mut bytes = vec![TAG_V2];
        bytes.extend(codec().serialize(s).unwrap());
        bytes
    }

    #[test]
    fn version_2_samples_decode_into_the_declared_layouts() {
        let old = v2::Sample {
            start_ms: 1,
            end_ms: 2,
            fadvise: Some(v2::FadviseStats {
                calls: [[1, 0], [0, 0], [0, 0], [0, 0], [7, 2], [0, 0], [0, 0]],
            }),
            reads: Some(v2::ReadStats {
                calls: [1, 2, 3, 4, 5],
                bytes: [10, 20, 30, 40, 50],
                errors: 6,
                latency_ns_sum: 77,
                latency_hist: vec![0, 3],
            }),
            pagecache: Some(v2::PageCacheStats {
                asked: 100,
                missed_sync: 10,
                missed_readahead: 5,
                readahead: 20,
                added: 40,
                deleted: 30,
                read_events: 9,
            }),
            reclaim: Some(v2::ReclaimStats {
                scanned_kswapd: 1,
                reclaimed_kswapd: 2,
                scanned_direct: 3,
                reclaimed_direct: 4,
                stalls_direct: 5,
                stalls_memcg: 6,
                stall_ns_sum: 7,
                stall_hist: vec![1],
            }),
            mmap: Some(v2::MmapStats {
                fault_around: 11,
                faults: 12,
                major: 13,
                asked: 14,
                missed_sync: 15,
                missed_readahead: 16,
                readahead: 17,
            }),
            writeback: Some(v2::WritebackStats {
                dirtied: 21,
                written: 22,
                inodes: 23,
                age_ns_sum: 24,
                age_hist: vec![2],
                throttles: 25,
                throttle_ns_sum: 26,
                throttle_hist: vec![3],
            }),
            procs: vec![v2::ProcSample {
                tgid: 42,
                comm: "banyand".into(),
                pc_asked: 10,
                pc_missed: 3,
                wb_throttle_ns: 8,
                ..Default::default()
            }],
            procs_seen: 1,
            procs_dropped: 4,
        };
        let s = decode_sample(&v2_bytes(&old)).expect("v2 decodes");
        let sec = |n: &str| s.section(n).unwrap();
        let f = sec("fadvise");
        assert_eq!(
            f.get(
                abi::FADVISE.counters[0].at(&[fadvise::advice::DONTNEED, fadvise::result::ERROR])
            ),
            Some(2)
        );
        assert_eq!(sec("reads").get(reads::BYTES + 2), Some(30));
        assert_eq!(sec("reads").get(reads::LATENCY_NS), Some(77));
        assert_eq!(sec("reads").hist(reads::hist::LATENCY), Some(&[0, 3][..]));
        let pc = sec("pagecache");
        assert_eq!(
            (
                pc.get(pagecache::ASKED),
                pc.get(pagecache::MISSED_READAHEAD),
                pc.get(pagecache::READ_EVENTS)
            ),
            (Some(100), Some(5), Some(9))
        );
        let r = sec("reclaim");
        assert_eq!(
            r.get(reclaim::SCANNED + reclaim::reclaimer::DIRECT),
            Some(3)
        );
        assert_eq!(
            r.get(reclaim::RECLAIMED + reclaim::reclaimer::KSWAPD),
            Some(2)
        );
        assert_eq!(r.get(reclaim::STALLS + reclaim::kind::MEMCG), Some(6));
        assert_eq!(r.get(reclaim::STALL_NS), Some(7));
        let m = sec("mmap");
        assert_eq!(m.get(mmap::FAULTS + mmap::stage::HANDLER), Some(12));
        assert_eq!(m.get(mmap::READAHEAD), Some(17));
        let w = sec("writeback");
        assert_eq!(
            (
                w.get(writeback::THROTTLE_NS),
                w.hist(writeback::hist::THROTTLE)
            ),
            (Some(26), Some(&[3][..]))
        );
        assert_eq!(s.core(abi::core::PROC_DROPPED), 4);
        assert_eq!(
            s.section("core")
                .unwrap()
                .get(abi::core::THREAD_STATE_MISSING),
            None,
            "a counter encoding 2 did not have is absent, not zero"
        );
        let p = &s.procs[0];
        assert_eq!(p.get("pagecache", pagecache::proc::MISSED), 3);
        assert_eq!(p.get("writeback", writeback::proc::THROTTLE_NS), 8);
        assert!(
            p.of("fadvise").is_none(),
            "a family that saw nothing has no entry"
        );
    }

    #[test]
    fn version_1_samples_still_decode() {
        // Bytes as iomon 0.1 wrote them: tag 1, then the v1 layout.
        let old = v1::Sample {
            start_ms: 1,
            end_ms: 10_001,
            fadvise: Some(v2::FadviseStats {
                calls: [[1, 0], [0, 0], [0, 0], [0, 0], [7, 2], [0, 0], [0, 0]],
            }),
            reads: None,
            pagecache: None,
            reclaim: None,
            procs: vec![v1::ProcSample {
                tgid: 42,
                comm: "banyand".into(),
                fadvise: [[0; 2]; 7],
                read_calls: 5,
                read_bytes: 500,
                pc_asked: 10,
                pc_missed: 3,
            }],
            procs_seen: 1,
            procs_dropped: 0,
        };
        let mut bytes = vec![TAG_V1];
        bytes.extend(codec().serialize(&old).unwrap());
        let s = decode_sample(&bytes).expect("v1 decodes");
        let f = s.section("fadvise").unwrap();
        assert_eq!(
            crate::family::fadvise::calls_of(f, fadvise::advice::DONTNEED),
            Some(9)
        );
        assert_eq!(s.procs[0].comm, "banyand");
        assert_eq!(
            (
                s.procs[0].get("pagecache", pagecache::proc::ASKED),
                s.procs[0].get("pagecache", pagecache::proc::MISSED)
            ),
            (10, 3)
        );
        assert!(s.procs[0].of("mmap").is_none());
        assert!(
            s.section("mmap").is_none() && s.section("writeback").is_none(),
            "new families unavailable, not zero"
        );
        assert_ne!(TAG, TAG_V1, "a new encoding has a new tag");
    }
}
