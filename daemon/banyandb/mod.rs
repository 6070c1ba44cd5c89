//! What iomon knows of BanyanDB, to answer "is the page cache working for
//! it?": its on-disk layout ([`layout`], declared in
//! `packaging/banyandb-layout.toml`), where a `banyand` process keeps its
//! files ([`roots`], from its own command line), its memory cgroup and the
//! DONTNEED threshold it derives from it ([`memcg`]), and the numbers of a
//! tick by engine, group and class of file ([`Row`]), summed from the
//! targets' per-file numbers once their files are named.

pub mod layout;
pub mod memcg;
pub mod roots;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use layout::{Class, Layout, Named};

/// Per-file page counts, by index (the kernel's `enum iomon_file_field`).
pub mod field {
    /// Pages the target's buffered reads asked for.
    pub const ASKED: usize = 0;
    /// ... of those, missed.
    pub const MISSED: usize = 1;
    /// Pages of the file removed from the page cache (by anyone).
    pub const EVICTED: usize = 2;
    /// Pages the target's POSIX_FADV_DONTNEED calls covered.
    pub const DONTNEED_COVERED: usize = 3;
    /// ... and dropped.
    pub const DONTNEED_DROPPED: usize = 4;
    /// Evicted, by cause: reclaim, fadvise, truncate, other (`+ cause`).
    pub const EVICTED_BY: usize = 5;
    /// The target's DONTNEED calls on it.
    pub const DONTNEED_CALLS: usize = 9;
    /// Pages the target's faults on mappings of it looked up ...
    pub const MAP_ASKED: usize = 10;
    /// ... and read in.
    pub const MAP_MISSED: usize = 11;
    /// Pages read back within the refault window after they were
    /// evicted, by the eviction's cause (`+ cause`).
    pub const REFAULT_BY: usize = 12;
    pub const NR: usize = 16;
    /// The causes, in order (`EVICTED_BY + i`, `REFAULT_BY + i`).
    pub const CAUSES: [&str; 4] = ["reclaim", "fadvise", "truncate", "other"];
    pub const RECLAIM: usize = 0;
    pub const FADVISE: usize = 1;
    /// Names, as in JSON and CSV.
    pub const NAMES: [&str; NR] = [
        "asked",
        "missed",
        "evicted",
        "dontneed_covered",
        "dontneed_dropped",
        "evicted_reclaim",
        "evicted_fadvise",
        "evicted_truncate",
        "evicted_other",
        "dontneed_calls",
        "map_asked",
        "map_missed",
        "refault_reclaim",
        "refault_fadvise",
        "refault_truncate",
        "refault_other",
    ];
}

/// What a target's file is in BanyanDB's layout (stored with the file in
/// history).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileKind {
    /// measure, stream, trace, property; "" when the file is under no
    /// BanyanDB root.
    pub engine: String,
    pub group: String,
    pub segment: String,
    pub shard: Option<u32>,
    pub part: String,
    pub kind: String,
    pub class: Option<Class>,
}

impl FileKind {
    pub fn of(n: &Named) -> FileKind {
        FileKind {
            engine: n.engine.clone(),
            group: n.group.clone().unwrap_or_default(),
            segment: n.segment.clone().unwrap_or_default(),
            shard: n.shard,
            part: n.part.clone().unwrap_or_default(),
            kind: n.kind.clone(),
            class: Some(n.class),
        }
    }

    /// The class, `other` when unknown.
    pub fn class(&self) -> Class {
        self.class.unwrap_or(Class::Other)
    }
}

/// One target's (engine, group, class) of an interval: its files' page
/// counts summed (by [`field`] index), and how many files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub target: String,
    /// "" for files under no BanyanDB root (or not named).
    pub engine: String,
    /// "" when the file has no group; [`FOLDED`] for the groups past the
    /// bound.
    pub group: String,
    pub class: Option<Class>,
    pub pages: Vec<u64>,
    pub files: u64,
}

/// The group the groups past [`MAX_GROUPS`] are folded into.
pub const FOLDED: &str = "_other";
/// Groups kept apart per engine, the busiest first; the rest are summed
/// under [`FOLDED`].
pub const MAX_GROUPS: usize = 32;

impl Row {
    pub fn get(&self, i: usize) -> u64 {
        self.pages.get(i).copied().unwrap_or(0)
    }

    pub fn class(&self) -> Class {
        self.class.unwrap_or(Class::Other)
    }

    fn key(&self) -> (String, String, String, Class) {
        (
            self.target.clone(),
            self.engine.clone(),
            self.group.clone(),
            self.class(),
        )
    }

    /// Pages of reads and faults: what the file's users looked at.
    fn activity(&self) -> u64 {
        [
            field::ASKED,
            field::MAP_ASKED,
            field::EVICTED,
            field::DONTNEED_COVERED,
        ]
        .iter()
        .map(|i| self.get(*i))
        .sum()
    }
}

/// Adds `from` into `into` row by row (target, engine, group, class),
/// bounded as [`rows`] bounds a tick: a group `into` has not seen, past
/// [`MAX_GROUPS`] groups of its target and engine, is added to
/// [`FOLDED`]. A group once apart stays apart, so sums only grow (the
/// totals behind Prometheus counters).
pub fn merge_rows(into: &mut Vec<Row>, from: &[Row]) {
    for r in from {
        let mut r = r.clone();
        let known = |into: &Vec<Row>, g: &str| {
            into.iter()
                .any(|x| x.target == r.target && x.engine == r.engine && x.group == g)
        };
        if r.group != FOLDED && !known(into, &r.group) {
            let mut groups: Vec<&str> = into
                .iter()
                .filter(|x| x.target == r.target && x.engine == r.engine && x.group != FOLDED)
                .map(|x| x.group.as_str())
                .collect();
            groups.sort_unstable();
            groups.dedup();
            if groups.len() >= MAX_GROUPS {
                r.group = FOLDED.to_string();
            }
        }
        match into.iter_mut().find(|x| x.key() == r.key()) {
            Some(x) => {
                crate::family::add_slice(&mut x.pages, &r.pages);
                x.files += r.files;
            }
            None => into.push(r),
        }
    }
    into.sort_by_key(Row::key);
}

/// The rows of an interval from its files (all of them, before any cut:
/// target, what the file is, its pages): per target and engine the
/// [`MAX_GROUPS`] busiest groups apart, the rest folded.
pub fn rows<'a>(
    files: impl Iterator<Item = (&'a str, Option<&'a FileKind>, &'a [u64])>,
) -> Vec<Row> {
    let mut by: BTreeMap<(String, String, String, Class), Row> = BTreeMap::new();
    for (target, k, pages) in files {
        let (engine, group, class) = match k {
            Some(k) => (k.engine.clone(), k.group.clone(), k.class()),
            None => (String::new(), String::new(), Class::Other),
        };
        let r = by
            .entry((target.to_string(), engine.clone(), group.clone(), class))
            .or_insert_with(|| Row {
                target: target.to_string(),
                engine,
                group,
                class: Some(class),
                pages: vec![0; field::NR],
                files: 0,
            });
        crate::family::add_slice(&mut r.pages, pages);
        r.files += 1;
    }
    let mut rows: Vec<Row> = by.into_values().collect();
    // Per target and engine, rank groups by activity; fold those past the
    // bound.
    let mut scopes: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.target.clone(), r.engine.clone()))
        .collect();
    scopes.dedup();
    for (t, e) in scopes {
        let mut groups: BTreeMap<String, u64> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.target == t && r.engine == e) {
            *groups.entry(r.group.clone()).or_default() += r.activity();
        }
        if groups.len() <= MAX_GROUPS {
            continue;
        }
        let mut ranked: Vec<(String, u64)> = groups.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let fold: Vec<String> = ranked
            .into_iter()
            .skip(MAX_GROUPS)
            .map(|(g, _)| g)
            .collect();
        for r in rows
            .iter_mut()
            .filter(|r| r.target == t && r.engine == e && fold.contains(&r.group))
        {
            r.group = FOLDED.to_string();
        }
    }
    let mut out = Vec::new();
    merge_rows(&mut out, &rows);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(engine: &str, group: &str, class: Class) -> FileKind {
        FileKind {
            engine: engine.into(),
            group: group.into(),
            class: Some(class),
            ..Default::default()
        }
    }

    #[test]
    fn rows_sum_files_by_engine_group_and_class() {
        let a = kind("measure", "g1", Class::Index);
        let b = kind("measure", "g1", Class::Data);
        let mut p1 = vec![0u64; field::NR];
        p1[field::ASKED] = 10;
        p1[field::MISSED] = 2;
        let mut p2 = p1.clone();
        p2[field::REFAULT_BY + field::FADVISE] = 4;
        let files = [
            ("banyand", Some(&a), &p1[..]),
            ("banyand", Some(&a), &p2[..]),
            ("banyand", Some(&b), &p1[..]),
            ("banyand", None, &p1[..]),
            ("other-target", Some(&a), &p1[..]),
        ];
        let r = rows(files.into_iter());
        assert_eq!(r.len(), 4, "{r:?}");
        let idx = r
            .iter()
            .find(|x| x.target == "banyand" && x.class() == Class::Index)
            .unwrap();
        assert_eq!((idx.get(field::ASKED), idx.files), (20, 2));
        assert_eq!(idx.get(field::REFAULT_BY + field::FADVISE), 4);
        assert!(r
            .iter()
            .any(|x| x.engine.is_empty() && x.class() == Class::Other));
    }

    #[test]
    fn groups_past_the_bound_are_folded_never_dropped() {
        let kinds: Vec<FileKind> = (0..MAX_GROUPS + 5)
            .map(|i| kind("stream", &format!("g{i:03}"), Class::Data))
            .collect();
        let pages: Vec<Vec<u64>> = (0..MAX_GROUPS + 5)
            .map(|i| {
                let mut p = vec![0u64; field::NR];
                p[field::ASKED] = 1000 - i as u64;
                p
            })
            .collect();
        let r = rows(
            kinds
                .iter()
                .zip(&pages)
                .map(|(k, p)| ("t", Some(k), &p[..])),
        );
        assert_eq!(r.len(), MAX_GROUPS + 1);
        let folded = r.iter().find(|x| x.group == FOLDED).unwrap();
        assert_eq!(folded.files, 5);
        let total: u64 = r.iter().map(|x| x.get(field::ASKED)).sum();
        assert_eq!(total, pages.iter().map(|p| p[field::ASKED]).sum::<u64>());
        assert!(
            r.iter().any(|x| x.group == "g000"),
            "the busiest stay apart"
        );
    }

    #[test]
    fn merged_rows_stay_bounded_and_a_group_apart_stays_apart() {
        let row = |g: &str, n: u64| Row {
            target: "t".into(),
            engine: "measure".into(),
            group: g.into(),
            class: Some(Class::Index),
            pages: {
                let mut p = vec![0; field::NR];
                p[field::ASKED] = n;
                p
            },
            files: 1,
        };
        let mut sum = Vec::new();
        let first: Vec<Row> = (0..MAX_GROUPS).map(|i| row(&format!("g{i}"), 1)).collect();
        merge_rows(&mut sum, &first);
        // Later groups, however busy, fold; known ones add up.
        merge_rows(&mut sum, &[row("late", 1000), row("g0", 5)]);
        merge_rows(&mut sum, &[row("later", 7)]);
        assert_eq!(sum.len(), MAX_GROUPS + 1);
        let get = |g: &str| {
            sum.iter()
                .find(|r| r.group == g)
                .map(|r| r.get(field::ASKED))
        };
        assert_eq!(get("g0"), Some(6));
        assert_eq!(get(FOLDED), Some(1007));
        assert_eq!(get("late"), None);
    }
}
