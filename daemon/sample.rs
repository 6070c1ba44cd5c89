//! One interval's worth of everything: each attached family's section (its
//! counter and histogram deltas, laid out as declared), the bookkeeping
//! `core` section, and the busiest processes. Everything downstream
//! (totals, store, control socket, /metrics) is derived from Samples.
//!
//! The shape does not change per family: sections are keyed by the
//! family's stable name, so a new family or an appended counter needs no
//! new encoding (old Samples simply lack them: absent, not zero; sections
//! no family of this build knows are carried along and never shown).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::abi;
use crate::family::{self, Section, Sections};

/// Version of the Sample encoding (the store and the socket protocol check
/// it). 3 is the last bump for families: sections are keyed by name; 4
/// adds the BanyanDB view (files' kinds, rows by engine, group and class,
/// the memory cgroups); 5 families' rows (per key: a block device).
pub const SAMPLE_VERSION: u32 = 5;

/// Per-process numbers of one interval (or of a merged range): each
/// family's per-process fields, laid out as declared, for the families
/// that saw the process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcSample {
    pub tgid: u32,
    pub comm: String,
    /// The targets (bits by slot, see `Sample::targets`) the process's
    /// events were counted for.
    pub targets: u32,
    pub families: ProcFields,
}

/// A process's per-process fields, by family. In memory one flat array
/// laid out as the kernel's `struct iomon_proc`, inline (a tick takes every
/// process of the host and adds each to the totals: no allocation, and no
/// pointer to follow, per process; adding is one loop); encoded as a
/// map from the family's name to its fields, as it always was (the store
/// and the wire read and write the same bytes). A family this build does
/// not know (a newer iomon's) is carried along as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcFields {
    /// Every known family's fields at its `proc_base`, zero where absent.
    v: [u64; abi::PROC_NR],
    /// Per known family (index in `abi::SCHEMAS`): how many of its fields
    /// are present (0: the family did not see the process; fewer than
    /// declared: the data is older than the fields after).
    len: [u8; MAX_SCHEMAS],
    other: BTreeMap<String, Vec<u64>>,
}

impl Default for ProcFields {
    fn default() -> Self {
        ProcFields {
            v: [0; abi::PROC_NR],
            len: [0; MAX_SCHEMAS],
            other: BTreeMap::new(),
        }
    }
}

/// Room for this many declarations (build.rs and a test hold them to it).
const MAX_SCHEMAS: usize = 16;
const _: () = assert!(abi::SCHEMAS.len() <= MAX_SCHEMAS);

fn schema_index(name: &str) -> Option<usize> {
    abi::SCHEMAS.iter().position(|s| s.name == name)
}

impl ProcFields {
    /// From the kernel's flat vector: the families with a non-zero field.
    pub fn from_flat(flat: Vec<u64>) -> ProcFields {
        let mut v = [0; abi::PROC_NR];
        let n = flat.len().min(abi::PROC_NR);
        v[..n].copy_from_slice(&flat[..n]);
        let mut len = [0u8; MAX_SCHEMAS];
        for (i, s) in abi::SCHEMAS.iter().enumerate() {
            if s.nproc > 0
                && v[s.proc_base..s.proc_base + s.nproc]
                    .iter()
                    .any(|x| *x != 0)
            {
                len[i] = s.nproc as u8;
            }
        }
        ProcFields {
            v,
            len,
            other: BTreeMap::new(),
        }
    }

    /// One family's fields, as stored (they may be fewer than declared).
    pub fn insert(&mut self, family: &str, fields: Vec<u64>) {
        match schema_index(family) {
            Some(i) => {
                let s = abi::SCHEMAS[i];
                let n = fields.len().min(s.nproc);
                self.v[s.proc_base..s.proc_base + n].copy_from_slice(&fields[..n]);
                self.v[s.proc_base + n..s.proc_base + s.nproc].fill(0);
                self.len[i] = n as u8;
            }
            None => {
                self.other.insert(family.to_string(), fields);
            }
        }
    }

    pub fn get(&self, family: &str) -> Option<&[u64]> {
        match schema_index(family) {
            Some(i) => {
                let n = self.len[i] as usize;
                let base = abi::SCHEMAS[i].proc_base;
                (n > 0).then(|| &self.v[base..base + n])
            }
            None => self.other.get(family).map(Vec::as_slice),
        }
    }

    /// (family name, fields) of every family present, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u64])> {
        let mut v: Vec<(&str, &[u64])> = abi::SCHEMAS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.len[*i] > 0)
            .map(|(i, s)| {
                (
                    s.name,
                    &self.v[s.proc_base..s.proc_base + self.len[i] as usize],
                )
            })
            .chain(self.other.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.into_iter()
    }

    pub fn len(&self) -> usize {
        self.len.iter().filter(|n| **n > 0).count() + self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `o`, field by field.
    pub fn merge(&mut self, o: &ProcFields) {
        for (i, s) in abi::SCHEMAS.iter().enumerate() {
            if o.len[i] == 0 {
                continue;
            }
            let range = s.proc_base..s.proc_base + o.len[i] as usize;
            for (a, b) in self.v[range.clone()].iter_mut().zip(&o.v[range]) {
                *a = a.saturating_add(*b);
            }
            self.len[i] = self.len[i].max(o.len[i]);
        }
        for (k, v) in &o.other {
            match self.other.get_mut(k) {
                Some(mine) => family::add_slice(mine, v),
                None => {
                    self.other.insert(k.clone(), v.clone());
                }
            }
        }
    }

    /// Every known family's fields declared as activity, summed.
    fn activity(&self) -> u64 {
        let mut a = 0u64;
        for (i, s) in abi::SCHEMAS.iter().enumerate() {
            let n = self.len[i] as usize;
            if n == 0 {
                continue;
            }
            for p in s.proc.iter().filter(|p| p.activity && p.offset < n) {
                let end = (p.offset + p.len).min(n);
                a = a.saturating_add(
                    self.v[s.proc_base + p.offset..s.proc_base + end]
                        .iter()
                        .sum(),
                );
            }
        }
        a
    }

    fn all_zero(&self) -> bool {
        self.iter().all(|(_, v)| v.iter().all(|x| *x == 0))
    }
}

impl<K: AsRef<str>> FromIterator<(K, Vec<u64>)> for ProcFields {
    fn from_iter<I: IntoIterator<Item = (K, Vec<u64>)>>(it: I) -> Self {
        let mut f = ProcFields::default();
        for (k, v) in it {
            f.insert(k.as_ref(), v);
        }
        f
    }
}

impl Serialize for ProcFields {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = ser.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for ProcFields {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ProcFields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of family names to per-process fields")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<ProcFields, A::Error> {
                let mut f = ProcFields::default();
                while let Some((k, v)) = a.next_entry::<String, Vec<u64>>()? {
                    f.insert(&k, v);
                }
                Ok(f)
            }
        }
        de.deserialize_map(V)
    }
}

impl ProcSample {
    /// The process's per-process fields of a family.
    pub fn of(&self, family: &str) -> Option<&[u64]> {
        self.families.get(family)
    }

    /// One per-process field element (0 when the family did not see it).
    pub fn get(&self, family: &str, element: usize) -> u64 {
        self.of(family)
            .and_then(|v| v.get(element).copied())
            .unwrap_or(0)
    }

    pub fn merge(&mut self, o: &ProcSample) {
        self.families.merge(&o.families);
        if !o.comm.is_empty() && self.comm != o.comm {
            self.comm.clone_from(&o.comm);
        }
        self.targets |= o.targets;
    }

    /// How busy, for ranking: every element of the fields declared as
    /// activity counts once. (Pages looked up by faults are not among
    /// them: every exec faults in its binary, ~1,000 pages, which would
    /// rank every short-lived process above the ones doing I/O.)
    pub fn activity(&self) -> u64 {
        self.families.activity()
    }

    pub fn is_empty(&self) -> bool {
        self.families.all_zero()
    }
}

/// Per-file page counts of a target (`struct iomon_file`), by index.
pub use crate::banyandb::field as file;

/// A target's file over one interval (or summed over several).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSample {
    pub target: String,
    /// The kernel's dev_t of the file's filesystem (major << 20 | minor).
    pub dev: u32,
    pub ino: u64,
    /// Where the file was found (an open file of the target, or under a
    /// data directory); `None`: not resolved.
    pub path: Option<String>,
    /// Pages, by [`file`] index.
    pub pages: Vec<u64>,
    /// What it is in BanyanDB's layout, when its path is under a BanyanDB
    /// process's roots or a data directory.
    pub kind: Option<crate::banyandb::FileKind>,
}

impl FileSample {
    pub fn get(&self, i: usize) -> u64 {
        self.pages.get(i).copied().unwrap_or(0)
    }

    /// `major:minor` of its filesystem.
    pub fn device(&self) -> String {
        format!("{}:{}", self.dev >> 20, self.dev & 0xf_ffff)
    }

    pub fn merge(&mut self, o: &FileSample) {
        family::add_slice(&mut self.pages, &o.pages);
        if o.path.is_some() {
            self.path.clone_from(&o.path);
        }
        if o.kind.is_some() {
            self.kind.clone_from(&o.kind);
        }
    }
}

/// What `files` ranks a target's files by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FilesBy {
    #[default]
    Misses,
    Evicted,
    Dontneed,
    /// Pages read back soon after they were evicted.
    Refaults,
}

impl FilesBy {
    pub const ALL: [FilesBy; 4] = [
        FilesBy::Misses,
        FilesBy::Evicted,
        FilesBy::Dontneed,
        FilesBy::Refaults,
    ];

    pub fn parse(s: &str) -> Option<FilesBy> {
        match s {
            "misses" | "missed" => Some(FilesBy::Misses),
            "evicted" | "evictions" => Some(FilesBy::Evicted),
            "dontneed" => Some(FilesBy::Dontneed),
            "refaults" | "refaulted" => Some(FilesBy::Refaults),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FilesBy::Misses => "misses",
            FilesBy::Evicted => "evicted",
            FilesBy::Dontneed => "dontneed",
            FilesBy::Refaults => "refaults",
        }
    }

    /// Misses count reads' and faults' (a memory-mapped index misses by
    /// faults); refaults, whatever evicted the pages.
    pub fn key(self, f: &FileSample) -> u64 {
        match self {
            FilesBy::Misses => f.get(file::MISSED) + f.get(file::MAP_MISSED),
            FilesBy::Evicted => f.get(file::EVICTED),
            FilesBy::Dontneed => f.get(file::DONTNEED_COVERED),
            FilesBy::Refaults => (0..file::CAUSES.len())
                .map(|c| f.get(file::REFAULT_BY + c))
                .sum(),
        }
    }

    /// Sorts by this key (descending, then by file).
    pub fn sort(self, files: &mut [FileSample]) {
        files.sort_by(|a, b| {
            self.key(b)
                .cmp(&self.key(a))
                .then_with(|| (&a.target, a.dev, a.ino).cmp(&(&b.target, b.dev, b.ino)))
        });
    }
}

/// Merges files (by target and file), summing their pages.
pub fn merge_files(into: &mut Vec<FileSample>, from: &[FileSample]) {
    let mut at: std::collections::HashMap<(String, u32, u64), usize> = into
        .iter()
        .enumerate()
        .map(|(i, f)| ((f.target.clone(), f.dev, f.ino), i))
        .collect();
    for f in from {
        match at.entry((f.target.clone(), f.dev, f.ino)) {
            std::collections::hash_map::Entry::Occupied(e) => into[*e.get()].merge(f),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(into.len());
                into.push(f.clone());
            }
        }
    }
}

/// What `top` ranks processes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TopBy {
    #[default]
    Activity,
    /// The sum of a per-process field's elements.
    Field {
        family: &'static str,
        offset: usize,
        len: usize,
    },
}

impl TopBy {
    /// A `--by` key: "activity" or a declared rank (see
    /// [`family::ranks`]).
    pub fn parse(key: &str) -> Option<TopBy> {
        if key == "activity" {
            return Some(TopBy::Activity);
        }
        family::rank_field(key).map(|(f, p)| TopBy::Field {
            family: f.name(),
            offset: p.offset,
            len: p.len,
        })
    }

    pub fn key(self, p: &ProcSample) -> u64 {
        match self {
            TopBy::Activity => p.activity(),
            TopBy::Field {
                family,
                offset,
                len,
            } => p
                .of(family)
                .map_or(0, |v| v.iter().skip(offset).take(len).sum()),
        }
    }
}

/// The busiest processes over a window of history points, by `by`, and
/// the families measured in it; with a target, only its processes (each
/// point's slot names apply to that point). Shared by iomond (`top
/// --since`) and iomonctl (`top --store`).
pub fn top_over(
    points: &[Sample],
    by: TopBy,
    n: usize,
    target: Option<&str>,
) -> (Vec<ProcSample>, Vec<String>) {
    let mut merged = Sample::default();
    for p in points {
        match target {
            None => merged.merge(p, usize::MAX),
            Some(t) => {
                if let Some(p) = p.for_target(t) {
                    merged.merge(&p, usize::MAX);
                }
            }
        }
    }
    let families = merged.measured();
    let mut procs = merged.procs;
    top_k(&mut procs, by, n);
    (procs, families)
}

/// Sorts by `by` (descending, then tgid) and keeps the first `k`.
pub fn top_k(procs: &mut Vec<ProcSample>, by: TopBy, k: usize) {
    // Each key once (a process's activity walks its families), the
    // ranking by (key, descending; tgid, ascending).
    procs.sort_by_cached_key(|p| (std::cmp::Reverse(by.key(p)), p.tgid));
    procs.truncate(k);
}

/// One tick. A family's section is absent when that family was not
/// attached during the interval: unavailable, not zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Wall-clock start and end of the interval, ms since the Unix epoch.
    pub start_ms: u64,
    pub end_ms: u64,
    /// By family name, plus `core` (iomon's own bookkeeping).
    pub sections: Sections,
    /// The busiest processes of the interval (at most the configured top-K).
    pub procs: Vec<ProcSample>,
    /// Distinct processes seen in the interval (before the top-K cut).
    pub procs_seen: u64,
    /// Per-process reads from the kernel that failed in the interval (the
    /// host-wide numbers are whole; those processes are counted next tick).
    pub proc_read_errors: u64,
    /// Processes left out of `procs` by the top-K cut (their numbers are
    /// in the totals and the per-name series, which see every process).
    pub procs_truncated: u64,
    /// Each target's own sections, by target name: the events of its
    /// processes, counted in the kernel in its own slots. A target that was
    /// not active (a cgroup that did not exist) has none.
    pub targets: BTreeMap<String, Sections>,
    /// Target names by kernel slot (bit i of a process's `targets`).
    pub target_slots: Vec<String>,
    /// Targets' files of the interval: per target, the top files by missed,
    /// evicted and DONTNEED pages (see [`Sample::cut_files`]).
    pub files: Vec<FileSample>,
    /// Target files left out of `files` by that cut.
    pub files_truncated: u64,
    /// Target files of the interval whose path was not found.
    pub files_unresolved: u64,
    /// The targets' files by BanyanDB engine, group and class (all of the
    /// interval's, before the files' cut).
    pub banyandb: Vec<crate::banyandb::Row>,
    /// The memory cgroups of the BanyanDB processes among the targets, and
    /// the host's file cache.
    pub memcg: Vec<crate::banyandb::memcg::MemcgSample>,
    pub host_mem: Option<crate::banyandb::memcg::HostMem>,
    /// Families' numbers per key (declared `rows`: the block family's per
    /// device), by family, then key name; a key with nothing in the
    /// interval has none. The host's: no target has rows. Last, so that
    /// encoding 4 is this without it (see the store's codec).
    pub rows: BTreeMap<String, BTreeMap<String, Section>>,
}

impl Sample {
    /// The families this Sample has sections of (attached while it was
    /// counted).
    pub fn measured(&self) -> Vec<String> {
        family::ALL
            .iter()
            .filter(|f| self.section(f.name()).is_some())
            .map(|f| f.name().to_string())
            .collect()
    }
}

impl Sample {
    pub fn duration_ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms)
    }

    /// The interval's length in seconds, at least 1 ms (for rates).
    pub fn seconds(&self) -> f64 {
        (self.duration_ms() as f64 / 1000.0).max(0.001)
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.get(name)
    }

    /// A `core` counter (0 when absent).
    pub fn core(&self, element: usize) -> u64 {
        self.section("core")
            .and_then(|s| s.get(element))
            .unwrap_or(0)
    }

    /// Adds `o` (a later interval) into `self`: sections summed, processes
    /// merged by tgid and re-cut to `top`.
    pub fn merge(&mut self, o: &Sample, top: usize) {
        self.merge_counts(o);
        for p in &o.procs {
            match self.procs.iter_mut().find(|q| q.tgid == p.tgid) {
                Some(q) => q.merge(p),
                None => self.procs.push(p.clone()),
            }
        }
        self.cut_procs(top);
        merge_files(&mut self.files, &o.files);
        self.cut_files(top);
    }

    /// Adds `o` without its processes and files: the interval, the
    /// sections, the targets' sections, and the counts of what was cut,
    /// not named, not read.
    pub fn merge_counts(&mut self, o: &Sample) {
        if self.start_ms == 0 && self.end_ms == 0 {
            self.start_ms = o.start_ms;
        }
        self.start_ms = self.start_ms.min(o.start_ms);
        self.end_ms = self.end_ms.max(o.end_ms);
        for (name, s) in &o.sections {
            self.sections.entry(name.clone()).or_default().merge(s);
        }
        for (target, secs) in &o.targets {
            let mine = self.targets.entry(target.clone()).or_default();
            for (name, s) in secs {
                mine.entry(name.clone()).or_default().merge(s);
            }
        }
        // Slots name the bits of processes' masks: a merge across a change
        // of targets keeps the names the masks of the merged processes
        // had, slot by slot, where they agree.
        if self.target_slots.is_empty() {
            self.target_slots.clone_from(&o.target_slots);
        }
        self.procs_truncated += o.procs_truncated;
        self.files_truncated += o.files_truncated;
        self.files_unresolved += o.files_unresolved;
        self.procs_seen = self.procs_seen.max(o.procs_seen);
        crate::banyandb::merge_rows(&mut self.banyandb, &o.banyandb);
        crate::banyandb::memcg::merge(&mut self.memcg, &o.memcg);
        if let Some(h) = &o.host_mem {
            let mine = self.host_mem.get_or_insert_with(Default::default);
            mine.merge(h);
        }
        self.proc_read_errors += o.proc_read_errors;
        for (family, rows) in &o.rows {
            let mine = self.rows.entry(family.clone()).or_default();
            for (key, s) in rows {
                mine.entry(key.clone()).or_default().merge(s);
            }
        }
    }

    /// Keeps the `k` busiest processes, and every process of a target
    /// whatever its rank; counts the others in `procs_truncated`.
    pub fn cut_procs(&mut self, k: usize) {
        let all = std::mem::take(&mut self.procs);
        // Each key once; the k best found without sorting all of them (a
        // tick can hold every process of the host), then only those sorted.
        let mut rank: Vec<(std::cmp::Reverse<u64>, u32, usize)> = all
            .iter()
            .enumerate()
            .map(|(i, p)| (std::cmp::Reverse(p.activity()), p.tgid, i))
            .collect();
        if rank.len() > k && k > 0 {
            rank.select_nth_unstable(k - 1);
        }
        rank.truncate(k);
        let mut keep = vec![false; all.len()];
        for (_, _, i) in &rank {
            keep[*i] = true;
        }
        // Every target's process stays, whatever its rank.
        let n = all.len();
        self.procs = all
            .into_iter()
            .zip(keep)
            .filter(|(p, kept)| *kept || p.targets != 0)
            .map(|(p, _)| p)
            .collect();
        self.procs_truncated += (n - self.procs.len()) as u64;
        top_k(&mut self.procs, TopBy::Activity, usize::MAX);
    }

    /// Keeps, per target, the `k` files that missed most, the `k` most
    /// evicted, the `k` most advised away (DONTNEED) and the `k` most read;
    /// counts the others in `files_truncated`.
    pub fn cut_files(&mut self, k: usize) {
        let all = std::mem::take(&mut self.files);
        let mut keep = vec![false; all.len()];
        let mut targets: Vec<&str> = all.iter().map(|f| f.target.as_str()).collect();
        targets.sort_unstable();
        targets.dedup();
        for t in targets {
            let asked = |f: &FileSample| f.get(file::ASKED) + f.get(file::MAP_ASKED);
            let keys: [&dyn Fn(&FileSample) -> u64; 5] = [
                &|f| FilesBy::Misses.key(f),
                &|f| FilesBy::Evicted.key(f),
                &|f| FilesBy::Dontneed.key(f),
                &|f| FilesBy::Refaults.key(f),
                &asked,
            ];
            for by in keys {
                let key = |i: usize| by(&all[i]);
                let mut idx: Vec<usize> = (0..all.len())
                    .filter(|i| all[*i].target == t && key(*i) > 0)
                    .collect();
                idx.sort_by(|a, b| key(*b).cmp(&key(*a)).then(a.cmp(b)));
                for i in idx.into_iter().take(k) {
                    keep[i] = true;
                }
            }
        }
        for (f, kept) in all.into_iter().zip(keep) {
            if kept {
                self.files.push(f);
            } else {
                self.files_truncated += 1;
            }
        }
    }

    pub fn proc(&self, tgid: u32) -> Option<&ProcSample> {
        self.procs.iter().find(|p| p.tgid == tgid)
    }

    /// The bit of a target's processes in their `targets` mask.
    pub fn target_bit(&self, target: &str) -> Option<u32> {
        self.target_slots
            .iter()
            .position(|n| n == target)
            .map(|i| 1u32 << i)
    }

    /// What this Sample holds for one target: its sections in place of the
    /// host's, and only its processes.
    pub fn for_target(&self, target: &str) -> Option<Sample> {
        let sections = self.targets.get(target)?.clone();
        let bit = self.target_bit(target).unwrap_or(0);
        Some(Sample {
            sections,
            procs: self
                .procs
                .iter()
                .filter(|p| p.targets & bit != 0)
                .cloned()
                .collect(),
            targets: BTreeMap::new(),
            // Rows are the host's (a device is no target's).
            rows: BTreeMap::new(),
            files: self
                .files
                .iter()
                .filter(|f| f.target == target)
                .cloned()
                .collect(),
            banyandb: self
                .banyandb
                .iter()
                .filter(|r| r.target == target)
                .cloned()
                .collect(),
            ..self.clone()
        })
    }

    /// The numbers of one row key of the families whose rows have this
    /// label (`device`: a block device by name) as a Sample of their
    /// sections alone: what `iomonctl history --device` charts. None when
    /// no such family has the key in this interval.
    pub fn for_row(&self, label: &str, key: &str) -> Option<Sample> {
        let sections: BTreeMap<String, Section> = family::with_rows(label)
            .filter_map(|f| {
                let s = self.rows.get(f.name())?.get(key)?;
                Some((f.name().to_string(), s.clone()))
            })
            .collect();
        if sections.is_empty() {
            return None;
        }
        Some(Sample {
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            sections,
            ..Sample::default()
        })
    }

    /// The row keys with this label in this interval.
    pub fn row_keys(&self, label: &str) -> Vec<&str> {
        family::with_rows(label)
            .filter_map(|f| self.rows.get(f.name()))
            .flat_map(|m| m.keys().map(String::as_str))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_devices_row_is_a_sample_of_its_families_alone() {
        let row = |n: u64| Section {
            counters: vec![n; 3],
            hists: Vec::new(),
        };
        let mut s = Sample {
            start_ms: 1_000,
            end_ms: 2_000,
            ..Sample::default()
        };
        s.sections.insert("fadvise".into(), row(7));
        s.sections.insert("block".into(), row(9));
        s.rows.insert(
            "block".into(),
            [("sda".to_string(), row(4)), ("vdb".to_string(), row(5))].into(),
        );
        let d = s.for_row("device", "vdb").expect("vdb has a row");
        assert_eq!((d.start_ms, d.end_ms), (1_000, 2_000));
        assert_eq!(d.sections.len(), 1, "only the block family: {d:?}");
        assert_eq!(d.sections["block"], row(5));
        assert!(d.rows.is_empty() && d.procs.is_empty());
        assert_eq!(s.for_row("device", "nvme0n1"), None);
        assert_eq!(s.for_row("cgroup", "sda"), None, "no family has such rows");
        assert_eq!(s.row_keys("device"), ["sda", "vdb"]);
    }

    #[test]
    fn per_process_fields_encode_as_the_map_they_always_were() {
        let old: BTreeMap<String, Vec<u64>> = [
            ("fadvise".to_string(), vec![1, 2, 3]),
            ("zzz_from_a_newer_iomon".to_string(), vec![9]),
            ("reads".to_string(), vec![4, 5]),
        ]
        .into();
        let bytes = bincode::serialize(&old).unwrap();
        let f: ProcFields = bincode::deserialize(&bytes).unwrap();
        assert_eq!(
            f.get("fadvise"),
            Some(&[1, 2, 3][..]),
            "fewer fields than declared: as stored"
        );
        assert_eq!(f.get("reads"), Some(&[4, 5][..]));
        assert_eq!(f.get("zzz_from_a_newer_iomon"), Some(&[9][..]));
        assert_eq!(f.get("mmap"), None, "absent, not zero");
        assert_eq!(
            bincode::serialize(&f).unwrap(),
            bytes,
            "the same bytes back"
        );
        let mut g = f.clone();
        g.merge(&f);
        assert_eq!(g.get("fadvise"), Some(&[2, 4, 6][..]));
        assert_eq!(g.get("zzz_from_a_newer_iomon"), Some(&[18][..]));
        // From the kernel's flat vector: only families that saw it.
        let mut flat = vec![0u64; abi::PROC_NR];
        flat[abi::READS.proc_base + abi::reads::proc::BYTES] = 7;
        let k = ProcFields::from_flat(flat);
        assert_eq!(k.len(), 1);
        assert_eq!(k.get("reads").map(|v| v[abi::reads::proc::BYTES]), Some(7));
    }
    use crate::abi::{fadvise, mmap, pagecache, reads};

    fn proc(tgid: u32, reads: u64) -> ProcSample {
        let mut v = vec![0; abi::READS.nproc];
        v[reads::proc::CALLS] = reads;
        ProcSample {
            tgid,
            comm: format!("p{tgid}"),
            families: [("reads", v)].into_iter().collect(),
            ..Default::default()
        }
    }

    #[test]
    fn exec_faults_do_not_outrank_io() {
        // A short-lived process: its binary faulted in, nothing else.
        let mut m = vec![0; abi::MMAP.nproc];
        m[mmap::proc::ASKED] = 1100;
        let exec = ProcSample {
            tgid: 1,
            families: [("mmap", m)].into_iter().collect(),
            ..Default::default()
        };
        let mut f = vec![0; abi::FADVISE.nproc];
        f[fadvise::advice::DONTNEED * fadvise::result::N] = 37;
        let io = ProcSample {
            tgid: 2,
            families: [("fadvise", f)].into_iter().collect(),
            ..Default::default()
        };
        assert_eq!(io.activity(), 37);
        assert!(io.activity() > exec.activity());
        assert!(!exec.is_empty(), "still reported, just ranked low");
        let mut v = vec![exec, io];
        top_k(&mut v, TopBy::Activity, 1);
        assert_eq!(v[0].tgid, 2);
    }

    #[test]
    fn merge_sums_sections_and_keeps_unavailable_apart() {
        let pc = |asked, missed| Section {
            counters: {
                let mut c = vec![0; abi::PAGECACHE.ncounters];
                c[pagecache::ASKED] = asked;
                c[pagecache::MISSED_SYNC] = missed;
                c
            },
            hists: vec![],
        };
        let mut a = Sample {
            start_ms: 1000,
            end_ms: 2000,
            sections: [("pagecache".to_string(), pc(10, 4))].into(),
            procs: vec![proc(1, 5)],
            ..Default::default()
        };
        let b = Sample {
            start_ms: 2000,
            end_ms: 3000,
            sections: [("pagecache".to_string(), pc(30, 2))].into(),
            procs: vec![proc(1, 1), proc(2, 7)],
            ..Default::default()
        };
        a.merge(&b, 10);
        assert_eq!((a.start_ms, a.end_ms), (1000, 3000));
        let s = a.section("pagecache").unwrap();
        assert_eq!(
            (s.get(pagecache::ASKED), s.get(pagecache::MISSED_SYNC)),
            (Some(40), Some(6))
        );
        assert!(
            a.section("reads").is_none(),
            "a family absent from both stays unavailable"
        );
        assert_eq!(a.proc(1).unwrap().get("reads", reads::proc::CALLS), 6);
        assert_eq!(a.procs[0].tgid, 2, "busiest first");
    }

    #[test]
    fn the_cut_keeps_targets_and_counts_the_rest() {
        let mut s = Sample {
            procs: (1..=10).map(|t| proc(t, t as u64 * 10)).collect(),
            ..Default::default()
        };
        s.procs[0].targets = 1; // the least busy one is a target's
        s.cut_procs(3);
        let kept: Vec<u32> = s.procs.iter().map(|p| p.tgid).collect();
        assert_eq!(kept, vec![10, 9, 8, 1]);
        assert_eq!(s.procs_truncated, 6);
    }

    #[test]
    fn top_k_cuts_and_orders() {
        let by = TopBy::parse("reads").unwrap();
        let mut v = vec![proc(3, 1), proc(1, 9), proc(2, 9), proc(4, 0)];
        top_k(&mut v, by, 3);
        assert_eq!(v.iter().map(|p| p.tgid).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(TopBy::parse("nope").is_none());
    }
}
