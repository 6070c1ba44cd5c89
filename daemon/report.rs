//! `iomonctl banyandb`: "is the page cache working for BanyanDB?" over a
//! window of the history, in numbers and, where they make it clear, in
//! words. Built from stored Samples, by the daemon or by `iomonctl
//! --store` alike.

use serde::{Deserialize, Serialize};

use crate::banyandb::memcg::{HostMem, MemcgSample};
use crate::banyandb::{field, merge_rows, Class, Row};
use crate::family::hit_ratio;
use crate::file_paths::NamingStatus;
use crate::sample::{merge_files, FileSample, FilesBy, Sample};

/// One engine and group of a target over the window, the question's
/// numbers derived from its rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupView {
    pub target: String,
    pub engine: String,
    pub group: String,
    /// Hit ratios by class and access: buffered reads, and page faults on
    /// mappings (BanyanDB's inverted index is memory-mapped). `None`: no
    /// pages asked.
    pub index_read_hit: Option<f64>,
    pub index_fault_hit: Option<f64>,
    pub data_read_hit: Option<f64>,
    pub data_fault_hit: Option<f64>,
    /// Pages asked (reads + faults) of index and data files.
    pub index_asked: u64,
    pub data_asked: u64,
    /// DONTNEED: calls, pages covered and dropped; of the pages evicted by
    /// fadvise, those read back within the refault window.
    pub dontneed_calls: u64,
    pub dontneed_dropped: u64,
    pub dontneed_refaulted: u64,
    /// Index pages evicted by reclaim, and read back.
    pub index_reclaimed: u64,
    pub index_reclaim_refaulted: u64,
    /// All refaults of the group's files, whatever evicted them.
    pub refaulted: u64,
}

impl GroupView {
    /// The share of what DONTNEED dropped that came back.
    pub fn dontneed_back(&self) -> Option<f64> {
        (self.dontneed_dropped > 0)
            .then(|| (self.dontneed_refaulted as f64 / self.dontneed_dropped as f64).min(1.0))
    }
}

/// The answer over a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub start_ms: u64,
    pub end_ms: u64,
    /// Stored intervals in the window.
    pub intervals: u64,
    /// Families measured in the window: what is not measured is n/a.
    pub families: Vec<String>,
    /// The window's sums by target, engine, group and class.
    pub rows: Vec<Row>,
    pub groups: Vec<GroupView>,
    /// The BanyanDB processes' memory cgroups (gauges as of the window's
    /// end, refaults summed) and the host's file cache.
    pub memcg: Vec<MemcgSample>,
    pub host_mem: Option<HostMem>,
    /// The parts' files with the most misses (reads and faults) and the
    /// most refaults.
    pub top_misses: Vec<FileSample>,
    pub top_refaults: Vec<FileSample>,
    /// The refault window the daemon runs with (0: unknown, from a store).
    pub refault_window_ms: u64,
    /// How the files are being named (live daemon only).
    pub naming: Option<NamingStatus>,
    /// File-intervals outside the stored top files (their pages are in the
    /// rows, not in the top lists), and not named.
    pub files_truncated: u64,
    pub files_unresolved: u64,
    /// Per-file increments the kernel could not record, and evictions it
    /// could not remember for refaults (its maps were full).
    pub refused: u64,
    pub refault_dropped: u64,
    /// The answer in words, where the numbers make one clear.
    pub answer: Vec<String>,
}

/// The groups' views from the window's rows.
pub fn groups(rows: &[Row]) -> Vec<GroupView> {
    let mut out: Vec<GroupView> = Vec::new();
    for r in rows {
        let at = match out
            .iter()
            .position(|g| g.target == r.target && g.engine == r.engine && g.group == r.group)
        {
            Some(i) => i,
            None => {
                out.push(GroupView {
                    target: r.target.clone(),
                    engine: r.engine.clone(),
                    group: r.group.clone(),
                    ..Default::default()
                });
                out.len() - 1
            }
        };
        let g = &mut out[at];
        g.dontneed_calls += r.get(field::DONTNEED_CALLS);
        g.dontneed_dropped += r.get(field::DONTNEED_DROPPED);
        g.dontneed_refaulted += r.get(field::REFAULT_BY + field::FADVISE);
        g.refaulted += (0..field::CAUSES.len())
            .map(|c| r.get(field::REFAULT_BY + c))
            .sum::<u64>();
        let asked = r.get(field::ASKED) + r.get(field::MAP_ASKED);
        match r.class() {
            Class::Index => {
                g.index_asked += asked;
                g.index_reclaimed += r.get(field::EVICTED_BY + field::RECLAIM);
                g.index_reclaim_refaulted += r.get(field::REFAULT_BY + field::RECLAIM);
            }
            Class::Data => g.data_asked += asked,
            Class::Other => {}
        }
    }
    // Ratios over the class's rows (one row per class per group).
    for g in &mut out {
        let of = |class: Class, asked: usize, missed: usize| {
            let rs = rows.iter().filter(|r| {
                r.target == g.target
                    && r.engine == g.engine
                    && r.group == g.group
                    && r.class() == class
            });
            let (a, m) = rs.fold((0, 0), |(a, m), r| (a + r.get(asked), m + r.get(missed)));
            hit_ratio(a, m)
        };
        g.index_read_hit = of(Class::Index, field::ASKED, field::MISSED);
        g.index_fault_hit = of(Class::Index, field::MAP_ASKED, field::MAP_MISSED);
        g.data_read_hit = of(Class::Data, field::ASKED, field::MISSED);
        g.data_fault_hit = of(Class::Data, field::MAP_ASKED, field::MAP_MISSED);
    }
    out
}

/// `iomonctl status`'s part: how BanyanDB's files are being found and
/// named, the refault memory, the memory cgroups as of the last tick.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub naming: NamingStatus,
    /// The refault window, and the blocks of evicted pages remembered for
    /// it out of the most the kernel's map holds.
    pub refault_window_ms: u64,
    pub evicted_blocks: u64,
    pub evicted_blocks_max: u64,
    pub memcg: Vec<MemcgSample>,
}

/// How many top files each list keeps at most.
pub const MAX_TOP: usize = 1000;

/// The report over stored Samples (oldest first) of `[start, end]`,
/// optionally of one target's files only.
pub fn build(
    points: &[Sample],
    start_ms: u64,
    end_ms: u64,
    target: Option<&str>,
    n: usize,
) -> Report {
    let mine = |t: &str| target.is_none_or(|x| x == t);
    let mut r = Report {
        start_ms,
        end_ms,
        intervals: points.len() as u64,
        ..Default::default()
    };
    let mut files: Vec<FileSample> = Vec::new();
    for p in points {
        for f in p.measured() {
            if !r.families.contains(&f) {
                r.families.push(f);
            }
        }
        let rows: Vec<Row> = p
            .banyandb
            .iter()
            .filter(|x| mine(&x.target))
            .cloned()
            .collect();
        merge_rows(&mut r.rows, &rows);
        crate::banyandb::memcg::merge(&mut r.memcg, &p.memcg);
        if let Some(h) = &p.host_mem {
            r.host_mem.get_or_insert_with(Default::default).merge(h);
        }
        let kept: Vec<FileSample> = p
            .files
            .iter()
            .filter(|f| mine(&f.target))
            .cloned()
            .collect();
        merge_files(&mut files, &kept);
        r.files_truncated += p.files_truncated;
        r.files_unresolved += p.files_unresolved;
        r.refused +=
            p.core(crate::abi::core::FILE_DROPPED) + p.core(crate::abi::core::FILE_SET_DROPPED);
        r.refault_dropped += p.core(crate::abi::core::REFAULT_DROPPED);
    }
    r.families
        .sort_by_key(|f| crate::family::ALL.iter().position(|x| x.name() == f));
    r.groups = groups(&r.rows);
    let n = n.clamp(1, MAX_TOP);
    for (by, list) in [
        (FilesBy::Misses, &mut r.top_misses),
        (FilesBy::Refaults, &mut r.top_refaults),
    ] {
        let mut f: Vec<FileSample> = files.iter().filter(|f| by.key(f) > 0).cloned().collect();
        by.sort(&mut f);
        f.truncate(n);
        *list = f;
    }
    r
}

/// A ratio as a percentage with one decimal.
pub fn percent(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

/// A span of milliseconds in the largest whole unit (5 min, 90 s).
fn span(ms: u64) -> String {
    match ms {
        0 => "the refault window".into(),
        m if m % 3_600_000 == 0 => format!("{} h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{} min", m / 60_000),
        m if m % 1000 == 0 => format!("{} s", m / 1000),
        m => format!("{m} ms"),
    }
}

impl Report {
    /// The answer in words: one sentence per finding the numbers make
    /// clear, the most telling first; what could not be measured said so.
    pub fn words(&self) -> Vec<String> {
        let mut w = Vec::new();
        let has = |f: &str| self.families.iter().any(|x| x == f);
        let banyan_rows = self.rows.iter().any(|r| !r.engine.is_empty());
        if let Some(n) = &self.naming {
            if n.processes == 0 && !banyan_rows {
                w.push("no BanyanDB process among the targets: none runs here, or no target matches it (`iomonctl status` lists the targets and what they match; a target is e.g. banyand = { comm = \"banyand\" }, or the service's cgroup): its files cannot be named".into());
            }
            for d in &n.missing_dirs {
                w.push(format!(
                    "{d} does not exist: a BanyanDB process's flags name it"
                ));
            }
            if n.cmdline_unreadable > 0 {
                w.push(format!(
                    "{} target processes' command lines could not be read: their roots are unknown",
                    n.cmdline_unreadable
                ));
            }
        }
        if !has("pagecache") {
            w.push(
                "the pagecache family is off: reads, evictions and refaults are not measured"
                    .into(),
            );
        }
        let banyan: Vec<&GroupView> = self
            .groups
            .iter()
            .filter(|g| !g.engine.is_empty())
            .collect();
        let sum = |f: &dyn Fn(&GroupView) -> u64| banyan.iter().map(|g| f(g)).sum::<u64>();
        let class_rows = |c: Class| {
            self.rows
                .iter()
                .filter(move |r| !r.engine.is_empty() && r.class() == c)
        };
        let ratio = |c: Class, asked: usize, missed: usize| {
            let (a, m) =
                class_rows(c).fold((0, 0), |(a, m), r| (a + r.get(asked), m + r.get(missed)));
            hit_ratio(a, m)
        };
        let index_all = {
            let (a, m) = class_rows(Class::Index).fold((0, 0), |(a, m), r| {
                (
                    a + r.get(field::ASKED) + r.get(field::MAP_ASKED),
                    m + r.get(field::MISSED) + r.get(field::MAP_MISSED),
                )
            });
            hit_ratio(a, m)
        };
        if banyan.is_empty() {
            w.push("no reads, faults or evictions of BanyanDB's files in this window".into());
            return w;
        }
        let reclaimed = sum(&|g| g.index_reclaimed);
        let dropped = sum(&|g| g.dontneed_dropped);
        let back = sum(&|g| g.dontneed_refaulted);
        match index_all {
            Some(h) => {
                let parts: Vec<String> = [
                    ("reads", ratio(Class::Index, field::ASKED, field::MISSED)),
                    (
                        "faults",
                        ratio(Class::Index, field::MAP_ASKED, field::MAP_MISSED),
                    ),
                ]
                .iter()
                .filter_map(|(what, r)| r.map(|r| format!("{what} {}", percent(r))))
                .collect();
                let verdict = if h >= 0.95 && reclaimed == 0 {
                    if dropped > 0 {
                        ": DONTNEED is not hurting the index"
                    } else {
                        ": the index stays cached"
                    }
                } else if h < 0.9 {
                    ": the index misses the page cache"
                } else {
                    ""
                };
                w.push(format!(
                    "index hit ratio {} ({}){verdict}",
                    percent(h),
                    parts.join(", ")
                ));
            }
            None => w.push("no reads or faults of index files in this window".into()),
        }
        if !has("mmap") {
            w.push(
                "the mmap family is off: faults on the memory-mapped index (.seg) are not measured"
                    .into(),
            );
        }
        if reclaimed > 0 {
            let back = sum(&|g| g.index_reclaim_refaulted);
            // A conclusion only where it is more than noise: over 1 % of
            // the index pages looked at.
            let asked = sum(&|g| g.index_asked);
            let verdict = if reclaimed * 100 > asked {
                ": memory pressure, not DONTNEED, is pushing the index out"
            } else {
                ""
            };
            w.push(format!(
                "{reclaimed} index pages were evicted by reclaim ({back} read back within {}){verdict}",
                span(self.refault_window_ms)
            ));
        }
        if let Some(h) = ratio(Class::Data, field::ASKED, field::MISSED) {
            w.push(format!("data read hit ratio {}", percent(h)));
        }
        if dropped > 0 {
            let share = back as f64 / dropped as f64;
            let verdict = if share >= 0.2 {
                ": DONTNEED is dropping pages that are still wanted"
            } else {
                ""
            };
            w.push(format!(
                "{} of what DONTNEED dropped ({dropped} pages) was read back within {}{verdict}",
                percent(share.min(1.0)),
                span(self.refault_window_ms)
            ));
        } else if has("fadvise") {
            w.push("DONTNEED dropped nothing in this window".into());
        }
        for m in &self.memcg {
            let limit = m
                .max_bytes
                .map(|b| format!("memory.max {}", crate::units::format_bytes(b as f64)))
                .unwrap_or_else(|| "no memory.max".into());
            w.push(format!(
                "cgroup {}: file cache {} ({limit}), {} pages refaulted (the kernel's workingset_refault_file); DONTNEED threshold {} ({})",
                m.cgroup,
                crate::units::format_bytes(m.file_bytes as f64),
                m.refault_file,
                crate::units::format_bytes(m.threshold_bytes as f64),
                m.threshold_rule
            ));
        }
        if self.files_unresolved > 0 {
            w.push(format!(
                "{} file-intervals could not be named: their pages count as other",
                self.files_unresolved
            ));
        }
        if self.refused > 0 || self.refault_dropped > 0 {
            w.push(format!(
                "the kernel's per-file maps were full: {} per-file increments and {} evicted pages (for refaults) not recorded",
                self.refused, self.refault_dropped
            ));
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(group: &str, class: Class, set: &[(usize, u64)]) -> Row {
        let mut pages = vec![0; field::NR];
        for (i, v) in set {
            pages[*i] = *v;
        }
        Row {
            target: "banyand".into(),
            engine: "measure".into(),
            group: group.into(),
            class: Some(class),
            pages,
            files: 1,
        }
    }

    #[test]
    fn the_groups_views_and_the_words_follow_the_numbers() {
        let rows = vec![
            row(
                "sw_metric",
                Class::Index,
                &[
                    (field::ASKED, 1000),
                    (field::MISSED, 8),
                    (field::MAP_ASKED, 500),
                    (field::MAP_MISSED, 4),
                ],
            ),
            row(
                "sw_metric",
                Class::Data,
                &[
                    (field::ASKED, 1000),
                    (field::MISSED, 500),
                    (field::DONTNEED_DROPPED, 200),
                    (field::REFAULT_BY + field::FADVISE, 62),
                ],
            ),
        ];
        let g = groups(&rows);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].index_read_hit, Some(0.992));
        assert_eq!(g[0].index_fault_hit, Some(0.992));
        assert_eq!(g[0].data_read_hit, Some(0.5));
        assert_eq!(g[0].dontneed_back(), Some(0.31));
        let r = Report {
            families: vec!["fadvise".into(), "pagecache".into(), "mmap".into()],
            rows,
            groups: g,
            refault_window_ms: 300_000,
            ..Default::default()
        };
        let w = r.words();
        assert_eq!(
            w[0],
            "index hit ratio 99.2 % (reads 99.2 %, faults 99.2 %): DONTNEED is not hurting the index"
        );
        assert!(w.contains(&"31.0 % of what DONTNEED dropped (200 pages) was read back within 5 min: DONTNEED is dropping pages that are still wanted".to_string()), "{w:?}");
    }

    #[test]
    fn reclaim_of_the_index_and_what_is_not_measured_are_said() {
        let rows = vec![row(
            "g",
            Class::Index,
            &[
                (field::ASKED, 100),
                (field::MISSED, 30),
                (field::EVICTED_BY + field::RECLAIM, 40),
                (field::REFAULT_BY + field::RECLAIM, 25),
            ],
        )];
        let r = Report {
            families: vec!["pagecache".into()],
            groups: groups(&rows),
            rows,
            naming: Some(NamingStatus::default()),
            ..Default::default()
        };
        let w = r.words().join("\n");
        assert!(
            !w.contains("no BanyanDB process among the targets"),
            "the window has its numbers, whatever runs now: {w}"
        );
        assert!(
            w.contains("index hit ratio 70.0 % (reads 70.0 %): the index misses"),
            "{w}"
        );
        assert!(
            w.contains("40 index pages were evicted by reclaim (25 read back"),
            "{w}"
        );
        assert!(w.contains("the mmap family is off"), "{w}");
        assert!(
            !w.contains("DONTNEED dropped nothing"),
            "fadvise is off: {w}"
        );
    }

    #[test]
    fn an_empty_window_says_so() {
        let mut r = build(&[], 0, 1, None, 10);
        r.naming = Some(NamingStatus::default());
        assert!(r.words()[0].starts_with("no BanyanDB process among the targets"));
        assert_eq!(
            r.words().last().unwrap(),
            "no reads, faults or evictions of BanyanDB's files in this window"
        );
    }
}
