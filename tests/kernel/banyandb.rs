//! The BanyanDB view against the real kernel: the `banyand` workload
//! (tests/banyand.rs) does BanyanDB's I/O on a tree of BanyanDB's layout
//! and says what it did per file; iomon's numbers by engine, group and
//! class of file must equal it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::common::banyand::{Banyand, Did};
use super::common::*;
use super::load;
use iomon::banyandb::{self, field, Class, Row};
use iomon::drain::Drain;
use iomon::file_paths::FilePaths;
use iomon::probes::targets::Matcher;
use iomon::sample::Sample;

/// The class a file of the tree is, from BanyanDB's documented file names
/// (the test's own table, not iomon's layout file).
fn class_of(name: &str) -> Class {
    let index = ["meta.bin", "primary.bin", "metadata.json", "traceID.filter"];
    let index_ext = [".tfm", ".tff", ".tm", ".seg"];
    let data = ["timestamps.bin", "fv.bin", "spans.bin"];
    let data_ext = [".tf", ".t"];
    if index.contains(&name) || index_ext.iter().any(|e| name.ends_with(e)) {
        Class::Index
    } else if data.contains(&name) || data_ext.iter().any(|e| name.ends_with(e)) {
        Class::Data
    } else {
        Class::Other
    }
}

/// A tree of BanyanDB's layout under `root` (measure, stream and trace
/// roots all there), every file cold.
struct Tree {
    root: PathBuf,
    /// (path, pages), and what the test expects iomon to call it: engine,
    /// group, class ("" engine: outside every root).
    files: Vec<(PathBuf, usize, String, String, Class)>,
}

const SEG: &str = "seg-20261201";

impl Tree {
    fn new(dir: &Path) -> Tree {
        let root = dir.join("root");
        let mut t = Tree {
            root: root.clone(),
            files: Vec::new(),
        };
        let part = |engine: &str, group: &str, id: u64| {
            root.join(format!("{engine}/data/{group}/{SEG}/shard-0/{id:016x}"))
        };
        let measure = [
            ("meta.bin", 2),
            ("primary.bin", 8),
            ("metadata.json", 1),
            ("timestamps.bin", 16),
            ("fv.bin", 32),
            ("default.tf", 16),
            ("default.tfm", 2),
        ];
        for (group, ids) in [("g1", [0xa0, 0xa1]), ("g2", [0xb0, 0xb1])] {
            for id in ids {
                for (name, pages) in measure {
                    t.add(&part("measure", group, id), name, pages, "measure", group);
                }
            }
        }
        // The series index, memory-mapped.
        let sidx = root.join(format!("measure/data/g1/{SEG}/sidx"));
        t.add(&sidx, "000000000001.seg", 64, "measure", "g1");
        // What the layout does not place: under a part, an unknown name.
        t.add(
            &part("measure", "g1", 0xa0),
            "unknown.xyz",
            4,
            "measure",
            "g1",
        );
        for (name, pages) in [
            ("meta.bin", 2),
            ("primary.bin", 4),
            ("timestamps.bin", 8),
            ("default.tf", 16),
            ("default.tfm", 2),
            ("default.tff", 4),
        ] {
            t.add(&part("stream", "s1", 0xc0), name, pages, "stream", "s1");
        }
        let idx = root.join(format!("stream/data/s1/{SEG}/shard-0/idx"));
        t.add(&idx, "000000000002.seg", 32, "stream", "s1");
        for (name, pages) in [
            ("meta.bin", 2),
            ("primary.bin", 4),
            ("traceID.filter", 2),
            ("spans.bin", 24),
            ("service.t", 8),
            ("service.tm", 2),
        ] {
            t.add(&part("trace", "t1", 0xd0), name, pages, "trace", "t1");
        }
        // Outside every root.
        t.add(dir, "outside.bin", 8, "", "");
        t
    }

    fn add(&mut self, dir: &Path, name: &str, pages: usize, engine: &str, group: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(name);
        make_file(&p, pages * page_size());
        evict(&std::fs::File::open(&p).unwrap());
        let class = if engine.is_empty() {
            Class::Other
        } else {
            class_of(name)
        };
        self.files
            .push((p, pages, engine.into(), group.into(), class));
    }

    fn pages(&self, p: &Path) -> usize {
        self.files.iter().find(|f| f.0 == p).unwrap().1
    }

    fn part(&self, engine: &str, group: &str, id: u64) -> Vec<PathBuf> {
        let dir = self
            .root
            .join(format!("{engine}/data/{group}/{SEG}/shard-0/{id:016x}"));
        self.files
            .iter()
            .filter(|f| f.0.parent() == Some(dir.as_path()))
            .map(|f| f.0.clone())
            .collect()
    }

    fn segs(&self) -> Vec<PathBuf> {
        self.files
            .iter()
            .filter(|f| f.0.extension().is_some_and(|e| e == "seg"))
            .map(|f| f.0.clone())
            .collect()
    }

    /// (engine, group, class) of a path of the tree; a merge output is
    /// its inputs' group and class.
    fn scope(&self, p: &Path) -> (String, String, Class) {
        match self.files.iter().find(|f| f.0 == p) {
            Some(f) => (f.2.clone(), f.3.clone(), f.4),
            None => {
                let name = p.file_name().unwrap().to_str().unwrap();
                let group = p
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().to_string())
                    .skip_while(|c| c != "data")
                    .nth(1)
                    .unwrap();
                ("measure".into(), group, class_of(name))
            }
        }
    }
}

/// What the workload did, summed by (engine, group, class); and its faults
/// apart (their hit ratio is compared, not their counts).
#[derive(Default, Debug)]
struct Expect {
    reads: BTreeMap<(String, String, Class), Did>,
    faults: BTreeMap<(String, String, Class), Did>,
}

impl Expect {
    fn add(&mut self, tree: &Tree, did: BTreeMap<PathBuf, Did>, fault: bool) {
        for (p, d) in did {
            let m = if fault {
                &mut self.faults
            } else {
                &mut self.reads
            };
            m.entry(tree.scope(&p)).or_default().add(&d);
        }
    }
}

/// Ticks, lets the workload run `what`, and returns the interval's Sample
/// (two more ticks merged: nothing of it is left in the maps).
fn window(drain: &mut Drain, what: impl FnOnce()) -> Sample {
    drain.tick().unwrap();
    what();
    let mut s = Sample::default();
    for _ in 0..2 {
        s.merge(&drain.tick().unwrap(), usize::MAX);
    }
    s
}

/// The inodes of the files under `root`, as the kernel names them.
fn inodes_under(root: &Path, out: &mut std::collections::HashSet<(u32, u64)>) {
    use std::os::unix::fs::MetadataExt;
    for e in std::fs::read_dir(root).unwrap().flatten() {
        let m = e.metadata().unwrap();
        if m.is_dir() {
            inodes_under(&e.path(), out);
        } else {
            out.insert((iomon::file_paths::kernel_dev(m.dev()), m.ino()));
        }
    }
}

/// The window's rows by engine, group and class, the files named as iomond
/// names them: from the banyand process's own command line. Every file
/// under `root` must be named; the others (one outside the roots, the
/// workload's own program text it faulted in) cannot be, and are counted.
fn rows(paths: &mut FilePaths, s: &Sample, pid: u32, root: &Path) -> Vec<Row> {
    paths.learn_processes(&[pid]);
    let mut tree = std::collections::HashSet::new();
    inodes_under(root, &mut tree);
    let mut files = s.files.clone();
    let unnamed = |files: &[iomon::sample::FileSample]| {
        files
            .iter()
            .filter(|f| f.path.is_none() && tree.contains(&(f.dev, f.ino)))
            .count()
    };
    // As the daemon's loop: a step a turn; a miss starts a pass over the
    // changed directories at most every MIN_PASS_GAP.
    let deadline = std::time::Instant::now()
        + iomon::file_paths::MIN_PASS_GAP * 3
        + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        paths.resolve(&mut files, &[pid]);
        if unnamed(&files) == 0 && !paths.walking() {
            break;
        }
        if !paths.walking() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    assert_eq!(
        unnamed(&files),
        0,
        "every file under the roots named: {files:?}"
    );
    banyandb::rows(
        files
            .iter()
            .filter(|f| f.target == "banyand")
            .map(|f| (f.target.as_str(), f.kind.as_ref(), f.pages.as_slice())),
    )
}

fn row<'a>(rows: &'a [Row], k: &(String, String, Class)) -> &'a Row {
    rows.iter()
        .find(|r| r.engine == k.0 && r.group == k.1 && r.class() == k.2)
        .unwrap_or_else(|| panic!("no row for {k:?} among {rows:#?}"))
}

/// The file outside the roots, by itself: read cold, every page asked and
/// missed once.
fn outside_exact(s: &Sample, p: &Path, pages: u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap();
    let (dev, ino) = (iomon::file_paths::kernel_dev(m.dev()), m.ino());
    let f = s
        .files
        .iter()
        .find(|f| f.target == "banyand" && f.dev == dev && f.ino == ino)
        .unwrap_or_else(|| panic!("{} not among {:?}", p.display(), s.files));
    assert_eq!(
        (f.get(field::ASKED), f.get(field::MISSED)),
        (pages, pages),
        "{}: read cold once",
        p.display()
    );
}

/// iomon's rows against what the workload did: reads and DONTNEED exact,
/// faults' hit ratios within 0.03, refaults as told.
fn check(rows: &[Row], e: &Expect, refaults: &BTreeMap<(String, String, Class), u64>, what: &str) {
    for (k, d) in &e.reads {
        let r = row(rows, k);
        let got = (
            r.get(field::ASKED),
            r.get(field::MISSED),
            r.get(field::DONTNEED_CALLS),
            r.get(field::DONTNEED_COVERED),
            r.get(field::DONTNEED_DROPPED),
        );
        let want = (d.asked, d.missed, d.calls, d.covered, d.dropped);
        if k.0.is_empty() {
            // Outside every root: the workload's outside.bin (checked
            // exactly by file, `outside_exact`) and whatever else the
            // process read there (on a loaded 5.10 guest, once, a page).
            assert!(
                got.0 >= want.0 && got.1 >= want.1 && (got.2, got.3, got.4) == (want.2, want.3, want.4),
                "{what} {k:?}: (asked, missed, DONTNEED calls, covered, dropped) {got:?}, at least {want:?}"
            );
        } else {
            assert_eq!(
                got, want,
                "{what} {k:?}: (asked, missed, DONTNEED calls, covered, dropped)"
            );
        }
        let want_refault = refaults.get(k).copied().unwrap_or(0);
        // Before 5.15 an eviction's cause cannot be told: DONTNEED's are
        // `other` there.
        let cause = if super::causes_told() {
            field::FADVISE
        } else {
            field::CAUSES.len() - 1
        };
        assert_eq!(
            r.get(field::REFAULT_BY + cause),
            want_refault,
            "{what} {k:?}: refaulted after DONTNEED"
        );
        eprintln!(
            "banyandb: {what} {}/{}/{}: asked {} missed {} dontneed calls {} covered {} dropped {} refaulted {}",
            k.0, k.1, k.2.name(), got.0, got.1, got.2, got.3, got.4, want_refault
        );
    }
    for (k, d) in &e.faults {
        let r = row(rows, k);
        let want = 1.0 - d.missed as f64 / d.asked as f64;
        let got = iomon::family::hit_ratio(r.get(field::MAP_ASKED), r.get(field::MAP_MISSED))
            .expect("faults counted");
        assert!(
            (got - want).abs() <= 0.03,
            "{what} {k:?}: fault hit ratio {got:.3}, mincore says {want:.3} ({:?})",
            r.pages
        );
        eprintln!(
            "banyandb: {what} {}/{} mapped index: fault hit ratio {got:.3}, mincore {want:.3}",
            k.0, k.1
        );
    }
}

#[test]
fn bpf_banyandb_numbers_by_engine_group_and_kind_equal_the_workloads() {
    let Some(_k) = bpf_or_skip("bpf_banyandb_numbers_by_engine_group_and_kind_equal_the_workloads")
    else {
        return;
    };
    let (_p, mut drain) = load(&["fadvise", "pagecache", "mmap"], 10240);
    drain
        .apply_targets_now(vec![("banyand".into(), Matcher::Comm("banyand".into()))])
        .unwrap();
    let dir = disk_dir("banyandb");
    let tree = Tree::new(&dir);
    let root = tree.root.to_str().unwrap().to_string();
    let mut b = Banyand::start(
        &[
            "--measure-root-path",
            &root,
            "--stream-root-path",
            &root,
            "--trace-root-path",
            &root,
        ],
        None,
    );
    let mut paths = FilePaths::new(Vec::new());
    let no_refaults = BTreeMap::new();

    // Cold: a query of a part of each engine (and the files no layout
    // place names, and one outside the roots), the mapped indexes faulted.
    let mut queried: Vec<PathBuf> = tree.part("measure", "g1", 0xa0);
    queried.extend(tree.part("stream", "s1", 0xc0));
    queried.extend(tree.part("trace", "t1", 0xd0));
    queried.push(dir.join("outside.bin"));
    let mut cold = Expect::default();
    let s = window(&mut drain, || {
        for p in &queried {
            cold.add(&tree, b.run(&format!("read {}", p.display())), false);
        }
        for p in tree.segs() {
            cold.add(&tree, b.run(&format!("fault {}", p.display())), true);
        }
    });
    for d in cold.reads.values() {
        assert_eq!(d.asked, d.missed, "the workload found them cold: {cold:?}");
    }
    let r = rows(&mut paths, &s, b.pid, &tree.root);
    check(&r, &cold, &no_refaults, "cold");
    outside_exact(
        &s,
        &dir.join("outside.bin"),
        tree.pages(&dir.join("outside.bin")) as u64,
    );
    assert!(
        r.iter()
            .any(|x| x.engine == "measure" && x.group == "g1" && x.class() == Class::Other),
        "a file the layout does not place is other, not dropped"
    );
    assert!(
        r.iter()
            .any(|x| x.engine.is_empty() && x.get(field::ASKED) > 0),
        "a file outside the roots is counted, unnamed"
    );
    let st = paths.status();
    assert_eq!(st.processes, 1, "found from its command line: {st:?}");
    for e in ["measure", "stream", "trace"] {
        assert!(
            st.data_dirs.contains(&format!("{root}/{e}/data")),
            "{e}: {st:?}"
        );
    }

    // Warm: the same again, all hits.
    let mut warm = Expect::default();
    let s = window(&mut drain, || {
        for p in &queried {
            warm.add(&tree, b.run(&format!("read {}", p.display())), false);
        }
        for p in tree.segs() {
            warm.add(&tree, b.run(&format!("fault {}", p.display())), true);
        }
    });
    // Almost all hits: a host's proactive reclaim (DAMON's pageout, on
    // this CI host) may take a page the cold pass read (failed twice per
    // file: 3 pages of one, 1 page of a 64-page file). check() holds iomon
    // to what mincore saw either way; this only says the pass was warm, so
    // it bounds the whole pass (5%), not each file.
    let (missed, asked) = warm
        .reads
        .values()
        .fold((0, 0), |(m, a), d| (m + d.missed, a + d.asked));
    assert!(
        missed * 20 <= asked,
        "warm pass: {missed} of {asked} pages not cached: {warm:?}"
    );
    check(
        &rows(&mut paths, &s, b.pid, &tree.root),
        &warm,
        &no_refaults,
        "warm",
    );

    // Half evicted by DONTNEED: a second part read cold, its second halves
    // dropped; then read again: half hits, and the dropped half came back.
    let second = tree.part("measure", "g1", 0xa1);
    let mut first = Expect::default();
    let s = window(&mut drain, || {
        for p in &second {
            first.add(&tree, b.run(&format!("read {}", p.display())), false);
            let n = tree.pages(p);
            let keep = n / 2;
            first.add(
                &tree,
                b.run(&format!("drop {} {keep} {}", p.display(), n - keep)),
                false,
            );
        }
    });
    check(
        &rows(&mut paths, &s, b.pid, &tree.root),
        &first,
        &no_refaults,
        "read, half dropped",
    );
    let mut half = Expect::default();
    let mut back: BTreeMap<(String, String, Class), u64> = BTreeMap::new();
    let s = window(&mut drain, || {
        for p in &second {
            let did = b.run(&format!("read {}", p.display()));
            for d in did.values() {
                *back.entry(tree.scope(p)).or_default() += d.missed;
            }
            half.add(&tree, did, false);
        }
    });
    let r = rows(&mut paths, &s, b.pid, &tree.root);
    check(&r, &half, &back, "half-evicted");
    for (k, d) in &half.reads {
        let x = row(&r, k);
        let got = iomon::family::hit_ratio(x.get(field::ASKED), x.get(field::MISSED)).unwrap();
        let want = 1.0 - d.missed as f64 / d.asked as f64;
        assert!((got - want).abs() <= 0.03, "{k:?}: {got} vs mincore {want}");
        eprintln!(
            "banyandb: half-evicted {}/{}/{}: hit ratio {got:.3}, mincore {want:.3}",
            k.0,
            k.1,
            k.2.name()
        );
    }

    // DONTNEED of a warm part's data, then a quarter of each file read
    // back: exactly those pages are refaults after fadvise.
    let data: Vec<PathBuf> = tree
        .part("measure", "g1", 0xa0)
        .into_iter()
        .filter(|p| class_of(p.file_name().unwrap().to_str().unwrap()) == Class::Data)
        .collect();
    let mut dropped = Expect::default();
    let mut back: BTreeMap<(String, String, Class), u64> = BTreeMap::new();
    let s = window(&mut drain, || {
        for p in &data {
            let did = b.run(&format!("drop {}", p.display()));
            assert_eq!(did[p].dropped, tree.pages(p) as u64, "warm: all dropped");
            dropped.add(&tree, did, false);
        }
        for p in &data {
            let m = (tree.pages(p) / 4).max(1);
            let did = b.run(&format!("readback {} {m}", p.display()));
            assert_eq!(did[p].missed, m as u64);
            *back.entry(tree.scope(p)).or_default() += m as u64;
            dropped.add(&tree, did, false);
        }
    });
    check(
        &rows(&mut paths, &s, b.pid, &tree.root),
        &dropped,
        &back,
        "dropped, read back",
    );

    // A merge of two cold parts of g2 into a third, as BanyanDB merges:
    // inputs read with read(2) and dropped chunk by chunk and on close,
    // the output synced and dropped whole (threshold 0).
    let out = tree
        .root
        .join(format!("measure/data/g2/{SEG}/shard-0/{:016x}", 0xb2));
    std::fs::create_dir_all(&out).unwrap();
    let mut merged = Expect::default();
    let s = window(&mut drain, || {
        for p in tree.part("measure", "g2", 0xb0) {
            let name = p.file_name().unwrap();
            let other = p
                .parent()
                .unwrap()
                .with_file_name(format!("{:016x}", 0xb1))
                .join(name);
            merged.add(
                &tree,
                b.run(&format!(
                    "merge {} 0 {} {}",
                    out.join(name).display(),
                    p.display(),
                    other.display()
                )),
                false,
            );
        }
    });
    check(
        &rows(&mut paths, &s, b.pid, &tree.root),
        &merged,
        &no_refaults,
        "merge",
    );
    // The merge's output, only written then dropped, read back in part: a
    // query of a part DONTNEED dropped costs exactly those pages.
    let outputs: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let mut again = Expect::default();
    let mut back: BTreeMap<(String, String, Class), u64> = BTreeMap::new();
    let s2 = window(&mut drain, || {
        for p in &outputs {
            let pages = std::fs::metadata(p).unwrap().len() as usize / page_size();
            let m = (pages / 3).max(1);
            let did = b.run(&format!("readback {} {m}", p.display()));
            assert_eq!(did[p].missed, m as u64, "dropped whole by the merge");
            // Where DONTNEED cannot be told (before 5.15), a file only
            // written is not remembered as the target's when it goes.
            if super::causes_told() {
                *back.entry(tree.scope(p)).or_default() += m as u64;
            }
            again.add(&tree, did, false);
        }
    });
    check(
        &rows(&mut paths, &s2, b.pid, &tree.root),
        &again,
        &back,
        "merge output read back",
    );
    assert_eq!(
        s.core(iomon::abi::core::FILE_DROPPED)
            + s.core(iomon::abi::core::FILE_SET_DROPPED)
            + s.core(iomon::abi::core::REFAULT_DROPPED),
        0
    );
    eprintln!("MATRIX family=banyandb route=per-kind exact=yes");
}

/// A cgroup's `memory.stat` counter.
fn memcg_stat(dir: &Path, key: &str) -> u64 {
    let text = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
    iomon::banyandb::memcg::stat_value(&text, key).unwrap_or(0)
}

/// The cgroup's own refault counter against iomon's: same direction, same
/// order of magnitude.
fn cross_check(refaulted: u64, kernel_refaults: u64, reclaimed: u64, stat: &str) {
    assert!(
        kernel_refaults > 0,
        "the cgroup's own counter moved (iomon: reclaimed {reclaimed}, refaulted {refaulted}); memory.stat: {}",
        stat.lines()
            .filter(|l| l.starts_with("workingset") || l.starts_with("file ") || l.starts_with("pgscan ") || l.starts_with("pgsteal "))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let ratio = refaulted as f64 / kernel_refaults as f64;
    assert!(
        (0.1..=10.0).contains(&ratio),
        "iomon {refaulted} vs the cgroup's {kernel_refaults}: ratio {ratio:.2}"
    );
    eprintln!(
        "MATRIX family=banyandb route=memcg reclaimed={reclaimed} refaults={refaulted} kernel_refaults={kernel_refaults}"
    );
}

#[test]
fn bpf_banyandb_under_a_memory_limit_index_is_reclaimed_and_refaults_move_with_the_cgroups() {
    let Some(_k) = bpf_or_skip(
        "bpf_banyandb_under_a_memory_limit_index_is_reclaimed_and_refaults_move_with_the_cgroups",
    ) else {
        return;
    };
    let (_p, mut drain) = load(&["fadvise", "pagecache"], 10240);
    drain
        .apply_targets_now(vec![("banyand".into(), Matcher::Comm("banyand".into()))])
        .unwrap();
    let cg = super::MemCgroup::new(48 << 20)
        .expect("this host has no memory cgroup controller to limit the workload with");
    assert!(
        cg.dir.join("memory.stat").exists(),
        "a cgroup v2 memory controller"
    );
    // The kernel's counter is the cross-check, not iomon's number. In 2 of
    // 5 full runs of the 6.12 guest it did not move at all while iomon saw
    // its 2,048 refaults; in a CI run (2026-12-03) four runs in a row, each
    // with the cgroup's workingset_nodereclaim up by 128: the kernel's
    // shrinker had freed nodes of shadow entries, and a refault whose
    // shadow entry went with them is not one to the kernel (which nodes
    // held the index's shadows was not looked at). Then the kernel's count
    // is only a lower bound (checked as that, and said). A still counter with no shadow nodes
    // freed is retried (printed), up to four runs, and fails.
    let mut attempt = 0;
    let (_dir, root, b, mut paths, s, kernel_refaults, shadows_freed) = loop {
        attempt += 1;
        let dir = disk_dir("banyandb-memcg");
        let root = dir.join("root");
        // Four parts: 2 MiB of primary index each, 48 MiB of field values.
        let mut index = Vec::new();
        let mut data = Vec::new();
        for id in 0..4u64 {
            let part = root.join(format!("measure/data/g1/{SEG}/shard-0/{id:016x}"));
            std::fs::create_dir_all(&part).unwrap();
            for (name, size, list) in [
                ("primary.bin", 2usize << 20, &mut index),
                ("fv.bin", 48 << 20, &mut data),
            ] {
                let p = part.join(name);
                make_file(&p, size);
                evict(&std::fs::File::open(&p).unwrap());
                list.push(p);
            }
        }
        let r = root.to_str().unwrap().to_string();
        let mut b = Banyand::start(&["--measure-root-path", &r], Some(&cg.dir));
        let paths = FilePaths::new(Vec::new());
        let refault_before = memcg_stat(&cg.dir, "workingset_refault_file");
        let nodes_before = memcg_stat(&cg.dir, "workingset_nodereclaim");
        // The index read once (inactive), then the data streamed through a
        // limit four times smaller, then the index again.
        let s = window(&mut drain, || {
            for p in index.iter().chain(&data).chain(&index) {
                b.run(&format!("read {}", p.display()));
            }
        });
        // The kernel flushes a cgroup's statistics lazily (on 6.12 a read of
        // memory.stat may skip the flush; a worker flushes every 2 s): once,
        // in the full 6.12 guest run, it still read the old value here, and
        // a first value that moved can be part of the window's. So read
        // until it has stayed the same for longer than the worker's period
        // (at most 8 s).
        let mut kernel_refaults = 0;
        let mut steady_since = std::time::Instant::now();
        for _ in 0..80 {
            let now = memcg_stat(&cg.dir, "workingset_refault_file") - refault_before;
            if now != kernel_refaults {
                kernel_refaults = now;
                steady_since = std::time::Instant::now();
            } else if kernel_refaults > 0
                && steady_since.elapsed() > std::time::Duration::from_millis(2500)
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let shadows_freed = memcg_stat(&cg.dir, "workingset_nodereclaim") - nodes_before;
        if kernel_refaults == 0 && shadows_freed == 0 && attempt < 4 {
            eprintln!(
                "RETRY banyandb memcg: the cgroup's workingset_refault_file did not move; memory.stat: {}",
                std::fs::read_to_string(cg.dir.join("memory.stat"))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.starts_with("workingset") || l.starts_with("file "))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            drop(b);
            continue;
        }
        break (dir, root, b, paths, s, kernel_refaults, shadows_freed);
    };
    let rows = rows(&mut paths, &s, b.pid, &root);
    let idx = row(&rows, &("measure".into(), "g1".into(), Class::Index));
    let reclaimed = idx.get(field::EVICTED_BY + field::RECLAIM);
    let refaulted: u64 = rows
        .iter()
        .map(|x| x.get(field::REFAULT_BY + field::RECLAIM))
        .sum();
    eprintln!(
        "banyandb memcg: index pages evicted by reclaim {reclaimed}, read back {}; all refaults after reclaim {refaulted}; the cgroup's workingset_refault_file moved {kernel_refaults}",
        idx.get(field::REFAULT_BY + field::RECLAIM)
    );
    assert!(reclaimed > 0, "index pages evicted by reclaim: {idx:?}");
    assert!(
        idx.get(field::REFAULT_BY + field::RECLAIM) > 0,
        "read back: {idx:?}"
    );
    // Same direction, same order of magnitude: the kernel counts a refault
    // where it kept a shadow entry of the evicted page, iomon where it
    // remembered the page within its window; both see the index come back.
    let stat = std::fs::read_to_string(cg.dir.join("memory.stat")).unwrap_or_default();
    if shadows_freed > 0 {
        // Some of the index's shadow entries may have gone with the freed
        // nodes (all of them, where it counted none): the kernel's count is
        // then at most the refaults, not the same order of magnitude. (A CI
        // run, 2026-12-05: the 6.12 guest's ratio check failed once; the
        // guest's output had not kept the numbers.)
        eprintln!(
            "banyandb memcg: the kernel freed {shadows_freed} shadow nodes of the cgroup in the window and counted {kernel_refaults} refaults: at most the refaults, the order-of-magnitude check does not apply"
        );
        assert!(
            kernel_refaults <= refaulted.saturating_mul(10),
            "the cgroup's {kernel_refaults} refaults, iomon's {refaulted}"
        );
        eprintln!(
            "MATRIX family=banyandb route=memcg reclaimed={reclaimed} refaults={refaulted} kernel_refaults=shadows-freed"
        );
    } else {
        cross_check(refaulted, kernel_refaults, reclaimed, &stat);
    }
    // What iomond reads of the cgroup: its limit and the threshold.
    let cgroup = iomon::banyandb::memcg::cgroup_of(Path::new("/proc"), b.pid)
        .expect("the workload's cgroup");
    let mut reader = iomon::banyandb::memcg::Reader::new(
        iomon::probes::targets::cgroup2_mount(),
        iomon::banyandb::memcg::cgroup1_memory_mount(),
        PathBuf::from("/proc/vmstat"),
    );
    let m = reader.cgroup(&cgroup, 75, 0).expect("read the cgroup");
    assert_eq!(m.max_bytes, Some(48 << 20));
    assert_eq!(m.threshold_bytes, 10 << 20, "{}", m.threshold_rule);
    drop(b);
}
