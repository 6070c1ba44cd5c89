//! What iomon costs: per traced event, on untraced syscalls (host tax), per
//! drain, as a running daemon, and how late a number is. Needs root (BPF)
//! and a release build; bpftrace for the comparison.
//!
//!   cargo bench --bench probes -- all                 # everything below
//!   cargo bench --bench probes -- events [--rounds 5] [--workloads a,b] [--configs none,iomon:mmap]
//!   cargo bench --bench probes -- routes [--rounds 5]  # each family's routes against each other
//!   cargo bench --bench probes -- programs            # ns inside each BPF program
//!   cargo bench --bench probes -- drain [--rounds 5]
//!   cargo bench --bench probes -- footprint [--secs 600]
//!   cargo bench --bench probes -- lag [--samples 20]
//!   cargo bench --bench probes -- tick [--secs 10] [--iomond PATH]   # the tick and requests across it
//!   cargo bench --bench probes -- export [--secs 120] [--outage 60]   # the BanyanDB exporter's RSS and CPU
//!
//! `events` runs each workload with no probes, with each iomon family
//! attached alone, with the default set, and with bpftrace doing the
//! equivalent counting on the same events: in one run, alternating, several
//! rounds; it prints medians and spreads, the ns each adds, and the ratio
//! of iomon's added ns to bpftrace's.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iomon::abi;
use iomon::drain::read_procs;
use iomon::family;
use iomon::probes::{LoadOptions, Probes, PROC_VALUE_SIZE};
use libbpf_rs::{MapCore, MapFlags};

#[path = "probes/export.rs"]
mod export;
#[allow(dead_code)]
#[path = "../tests/common/scratch_disk.rs"]
mod scratch_disk;
#[path = "probes/tick.rs"]
mod tick;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if cfg!(debug_assertions) {
        println!("probes bench: build with `cargo bench` (release); skipped in a debug build");
        return;
    }
    let opt = |name: &str, def: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(def)
    };
    let stropt = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let what = args.first().map(String::as_str).unwrap_or("all");
    let rounds = opt("--rounds", 5) as usize;
    if nix::unistd::geteuid().as_raw() != 0 {
        eprintln!("probes bench: needs root (loads BPF)");
        std::process::exit(1);
    }
    // Mounted for the classic tracepoints where missing, in a mount
    // namespace of this thread's own (bpftrace, started from it, sees it
    // too): the host's mounts stay as they are.
    let _ = iomon::probes::ensure_tracefs(Path::new(iomon::probes::TRACEFS));
    match what {
        "events" => events(rounds, stropt("--workloads"), stropt("--configs")),
        "routes" => routes(rounds),
        "programs" => programs(),
        "inprogram" => inprogram(
            rounds,
            &stropt("--workload").unwrap_or_else(|| "direct4k".into()),
            stropt("--configs"),
        ),
        "drain" => drain(rounds, &[1_000, 10_000, 50_000]),
        "footprint" => footprint(opt("--secs", 600)),
        "lag" => lag(opt("--samples", 20) as usize),
        "tick" => tick::tick(opt("--secs", 10), stropt("--iomond").map(PathBuf::from)),
        "export" => export::export(opt("--secs", 120), opt("--outage", 60)),
        "all" => {
            events(rounds, None, None);
            programs();
            drain(rounds, &[1_000, 10_000, 50_000]);
            tick::tick(opt("--secs", 10), None);
            lag(opt("--samples", 20) as usize);
            footprint(opt("--secs", 600));
        }
        other => {
            eprintln!(
                "probes bench: unknown benchmark {other}; events, routes, programs, drain, tick, footprint, lag, export or all"
            );
            std::process::exit(2);
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

// ------------------------------------------------------------------ events

const FILE_SIZE: usize = 64 << 20;

struct Workload {
    name: &'static str,
    what: &'static str,
    iters: u64,
    run: fn(&Fixture, u64),
}

struct Fixture {
    file: File,
    /// The same size, cached in 4 KiB folios (read with readahead off):
    /// fault-around maps 16 of them per fault.
    small: File,
    /// Scratch file for the write workload.
    scratch: File,
    /// A loop device over a file in memory (or `IOMON_TEST_BLOCK_DEV`),
    /// and it opened O_DIRECT: a block request per read that costs
    /// microseconds, not a disk's latency.
    disk: (scratch_disk::ScratchDisk, File),
    dir: PathBuf,
}

fn fixture() -> Fixture {
    let dir = PathBuf::from(format!("/var/tmp/iomon-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join("data");
    let mut f = File::create(&path).expect("bench file");
    let chunk = vec![1u8; 1 << 20];
    for _ in 0..FILE_SIZE / chunk.len() {
        f.write_all(&chunk).expect("write bench file");
    }
    f.sync_all().expect("sync");
    let file = File::open(&path).expect("open bench file");
    // Cache it.
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < FILE_SIZE {
        // SAFETY: buf is valid for its length.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                off as i64,
            )
        };
        assert!(n > 0);
        off += n as usize;
    }
    // The small-folio copy: written, evicted, read back page by page with
    // readahead off (POSIX_FADV_RANDOM), so every folio is one page.
    let spath = dir.join("small");
    std::fs::copy(&path, &spath).expect("copy bench file");
    let small = File::open(&spath).expect("open small");
    // SAFETY: plain syscalls on an open fd; buf is valid for 4096 bytes.
    unsafe {
        libc::fdatasync(small.as_raw_fd());
        libc::posix_fadvise(small.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        libc::posix_fadvise(small.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM);
        for off in (0..FILE_SIZE).step_by(4096) {
            libc::pread(small.as_raw_fd(), buf.as_mut_ptr().cast(), 4096, off as i64);
        }
    }
    let scratch = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.join("scratch"))
        .expect("scratch file");
    Fixture {
        file,
        small,
        scratch,
        disk: {
            use std::os::unix::fs::OpenOptionsExt;
            let d = scratch_disk::ScratchDisk::new();
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&d.path)
                .expect("open the scratch block device O_DIRECT");
            (d, f)
        },
        dir,
    }
}

const FILE_PAGES: u64 = (FILE_SIZE / 4096) as u64;

/// First touch of `pages` pages, 64 MiB at a time, each pass through a
/// fresh mapping: of `file`, read (fault-around or a fault per page), or
/// without one, anonymous memory written (a page fault per page, huge
/// pages refused).
fn touch_mapped(file: Option<&File>, pages: u64) {
    let (prot, flags, fd) = match file {
        Some(f) => (libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd()),
        None => (
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
        ),
    };
    let mut left = pages;
    while left > 0 {
        let n = left.min(FILE_PAGES);
        left -= n;
        // SAFETY: a fresh mapping, unmapped below; accesses stay inside
        // it, and only an anonymous one is written.
        unsafe {
            let len = n as usize * 4096;
            let a = libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0);
            assert_ne!(a, libc::MAP_FAILED);
            if file.is_none() {
                libc::madvise(a, len, libc::MADV_NOHUGEPAGE);
            }
            let p = a as *mut u8;
            let mut s = 0u64;
            for off in (0..len).step_by(4096) {
                match file {
                    Some(_) => s += std::ptr::read_volatile(p.add(off)) as u64,
                    None => std::ptr::write_volatile(p.add(off), 1),
                }
            }
            std::hint::black_box(s);
            libc::munmap(a, len);
        }
    }
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "getppid",
        what: "untraced syscall (host tax)",
        iters: 400_000,
        run: |_, n| {
            for _ in 0..n {
                // SAFETY: no arguments, no side effects.
                unsafe { libc::getppid() };
            }
        },
    },
    Workload {
        name: "fadvise",
        what: "posix_fadvise(NORMAL), cached file",
        iters: 200_000,
        run: |f, n| {
            for _ in 0..n {
                // SAFETY: plain syscall on an open fd.
                unsafe { libc::posix_fadvise(f.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_NORMAL) };
            }
        },
    },
    Workload {
        name: "pread1",
        what: "1-byte pread, cached file",
        iters: 200_000,
        run: |f, n| {
            let mut b = [0u8; 1];
            for _ in 0..n {
                // SAFETY: b is valid for 1 byte.
                unsafe { libc::pread(f.file.as_raw_fd(), b.as_mut_ptr().cast(), 1, 0) };
            }
        },
    },
    Workload {
        name: "read4k",
        what: "4 KiB buffered read of a cached page",
        iters: 200_000,
        run: |f, n| {
            let mut b = [0u8; 4096];
            for i in 0..n {
                let off = ((i * 4096) % FILE_SIZE as u64) as i64;
                // SAFETY: b is valid for 4096 bytes.
                unsafe { libc::pread(f.file.as_raw_fd(), b.as_mut_ptr().cast(), 4096, off) };
            }
        },
    },
    Workload {
        name: "mmap-page",
        what: "first touch of a cached page through a file mapping, large folios (per page)",
        iters: 8 * FILE_PAGES,
        run: |f, n| touch_mapped(Some(&f.file), n),
    },
    Workload {
        name: "mmap-small",
        what: "the same on a file cached in 4 KiB folios: one fault-around per 16 pages (per page)",
        iters: 8 * FILE_PAGES,
        run: |f, n| touch_mapped(Some(&f.small), n),
    },
    Workload {
        name: "anon-fault",
        what: "first write to an anonymous page, 4 KiB pages (host tax on page faults, per page)",
        iters: 8 * FILE_PAGES,
        run: |_, n| touch_mapped(None, n),
    },
    Workload {
        name: "direct4k",
        what: "4 KiB O_DIRECT read of a loop device over memory (one block request)",
        iters: 40_000,
        run: |f, n| {
            let layout = std::alloc::Layout::from_size_align(4096, 4096).expect("layout");
            // SAFETY: a non-zero size; null is checked; freed below.
            let b = unsafe { std::alloc::alloc(layout) };
            assert!(!b.is_null());
            for i in 0..n {
                let off = ((i * 4096) % FILE_SIZE as u64) as i64;
                // SAFETY: b is valid for 4096 bytes.
                unsafe { libc::pread(f.disk.1.as_raw_fd(), b.cast(), 4096, off) };
            }
            // SAFETY: allocated above with this layout.
            unsafe { std::alloc::dealloc(b, layout) };
        },
    },
    Workload {
        name: "write4k",
        what: "4 KiB buffered write to a new page (dirties one folio); truncated every 16 MiB",
        iters: 40_000,
        run: |f, n| {
            let b = [7u8; 4096];
            for i in 0..n {
                let off = (i % 4096) * 4096;
                if off == 0 {
                    // SAFETY: plain syscall on an open fd.
                    unsafe { libc::ftruncate(f.scratch.as_raw_fd(), 0) };
                }
                // SAFETY: b is valid for 4096 bytes.
                unsafe { libc::pwrite(f.scratch.as_raw_fd(), b.as_ptr().cast(), 4096, off as i64) };
            }
        },
    },
];

#[derive(Clone)]
enum Config {
    None,
    Iomon(&'static str, Vec<&'static str>, Targets),
    Bpftrace(&'static str, &'static str),
    /// One family on one route (the others excluded).
    Route(&'static str, &'static str),
    /// One family with its programs on demand attached at load, as once
    /// their sign has shown (PMD folios in the page cache for mmap, a
    /// queue that does not stamp its requests for block).
    OnDemand(&'static str),
}

impl Config {
    fn name(&self) -> String {
        match self {
            Config::None => "none".into(),
            Config::Iomon(n, _, Targets::None) => format!("iomon:{n}"),
            Config::Iomon(n, _, Targets::Default) => format!("iomon:{n}+targets"),
            Config::Iomon(n, _, Targets::Own) => format!("iomon:{n}+own"),
            Config::Route(f, r) => format!("{f}:{r}"),
            Config::OnDemand(n) => format!("iomon:{n}+demand"),
            Config::Bpftrace(n, _) => format!("bpftrace:{n}"),
        }
    }
}

/// fadvise's syscall as the tracepoints name it, and its number: arm64's
/// table calls it fadvise64_64 (223), x86_64's fadvise64 (221).
#[cfg(not(target_arch = "aarch64"))]
macro_rules! fadvise_syscall {
    (name) => {
        "fadvise64"
    };
    (nr) => {
        "221"
    };
}
#[cfg(target_arch = "aarch64")]
macro_rules! fadvise_syscall {
    (name) => {
        "fadvise64_64"
    };
    (nr) => {
        "223"
    };
}

/// bpftrace doing the counting an iomon family does, on the same events
/// (Debian 12's bpftrace 0.17: `args->`).
const BT_FADVISE: &str = concat!(
    "tracepoint:syscalls:sys_enter_",
    fadvise_syscall!(name),
    " { @a[tid] = args->advice; }\ntracepoint:syscalls:sys_exit_",
    fadvise_syscall!(name),
    " { @c[@a[tid], args->ret < 0] = count(); @p[pid, comm] = count(); delete(@a[tid]); }"
);
/// The other design: one generic tracepoint on every syscall exit,
/// filtered by syscall id. bpftrace 0.17 has no rawtracepoint probes, so
/// this is the classic `raw_syscalls:sys_exit`.
const BT_FADVISE_RAW: &str = concat!(
    "tracepoint:raw_syscalls:sys_exit /args->id == ",
    fadvise_syscall!(nr),
    "/ { @c[args->ret < 0] = count(); @p[pid, comm] = count(); }"
);
const BT_READS: &str = "tracepoint:syscalls:sys_enter_read,tracepoint:syscalls:sys_enter_pread64,tracepoint:syscalls:sys_enter_readv,tracepoint:syscalls:sys_enter_preadv,tracepoint:syscalls:sys_enter_preadv2 { @s[tid] = nsecs; }
tracepoint:syscalls:sys_exit_read,tracepoint:syscalls:sys_exit_pread64,tracepoint:syscalls:sys_exit_readv,tracepoint:syscalls:sys_exit_preadv,tracepoint:syscalls:sys_exit_preadv2 /@s[tid]/ { @calls[probe] = count(); @bytes[pid, comm] = sum(args->ret); @lat = hist((nsecs - @s[tid]) / 1000); delete(@s[tid]); }";
/// bpftrace counting what iomon's reads family counts: calls and bytes
/// by syscall, errors, latency (sum and histogram), calls and bytes per
/// process.
const BT_READS_SAME: &str = "tracepoint:syscalls:sys_enter_read,tracepoint:syscalls:sys_enter_pread64,tracepoint:syscalls:sys_enter_readv,tracepoint:syscalls:sys_enter_preadv,tracepoint:syscalls:sys_enter_preadv2 { @s[tid] = nsecs; }
tracepoint:syscalls:sys_exit_read,tracepoint:syscalls:sys_exit_pread64,tracepoint:syscalls:sys_exit_readv,tracepoint:syscalls:sys_exit_preadv,tracepoint:syscalls:sys_exit_preadv2 { @calls[probe] = count(); @pcalls[pid, comm] = count(); if (args->ret > 0) { @bytes[probe] = sum(args->ret); @pbytes[pid, comm] = sum(args->ret); } else if (args->ret < 0) { @errors = count(); } $s = @s[tid]; if ($s) { $l = nsecs - $s; @lat_ns = sum($l); @lat = hist($l / 1000); delete(@s[tid]); } }";
const BT_PAGECACHE: &str = "tracepoint:filemap:mm_filemap_get_pages { @asked[pid, comm] = sum(args->last_index - args->index + 1); }
tracepoint:filemap:mm_filemap_add_to_page_cache { @added[pid] = count(); }
tracepoint:filemap:mm_filemap_delete_from_page_cache { @deleted = count(); }";
const BT_MMAP: &str = "tracepoint:filemap:mm_filemap_map_pages { @asked[pid, comm] = sum(args->last_index - args->index + 1); }
tracepoint:filemap:mm_filemap_fault { @faults[pid, comm] = count(); }
tracepoint:filemap:mm_filemap_add_to_page_cache { @added[pid] = count(); }";
/// bpftrace counting what iomon's mmap family counts, as far as the
/// classic tracepoints show it (not the large folios a fault maps whole
/// beyond its window, nor PMD mappings: those need the page cache's
/// xarray): faults by stage; pages asked, less the overlap with the
/// thread's last lookup of the same file; pages read in by a fault, and
/// read-ahead's pages taken out of the file's window when a fault asks
/// for them (missed); major faults; asked and missed per process.
const BT_MMAP_SAME: &str = "tracepoint:filemap:mm_filemap_map_pages { @faults[\"around\"] = count(); $s = args->index; $e = args->last_index + 1; $n = $e - $s; $w = @win[tid]; if ($w.0 == args->s_dev && $w.1 == args->i_ino) { $lo = $w.2 > $s ? $w.2 : $s; $hi = $w.3 < $e ? $w.3 : $e; if ($hi > $lo) { $n = $n - ($hi - $lo); } } $r = @ra[args->s_dev, args->i_ino]; if ($r.1 > $r.0) { $rlo = $r.0 > $s ? $r.0 : $s; $rhi = $r.1 < $e ? $r.1 : $e; if ($rhi > $rlo) { @missed = sum($rhi - $rlo); @pmissed[pid, comm] = sum($rhi - $rlo); if ($s <= $r.0) { @ra[args->s_dev, args->i_ino] = ($rhi, $r.1); } else { @ra[args->s_dev, args->i_ino] = ($r.0, $s); } } } @asked = sum($n); @pasked[pid, comm] = sum($n); @win[tid] = (args->s_dev, args->i_ino, $s, $e); }
tracepoint:filemap:mm_filemap_fault { @faults[\"handler\"] = count(); $s = args->index; $e = $s + 1; $w = @win[tid]; $n = 1; if ($w.0 == args->s_dev && $w.1 == args->i_ino && $s >= $w.2 && $s < $w.3) { $n = 0; } $r = @ra[args->s_dev, args->i_ino]; if ($r.1 > $r.0) { $rlo = $r.0 > $s ? $r.0 : $s; $rhi = $r.1 < $e ? $r.1 : $e; if ($rhi > $rlo) { @missed = sum($rhi - $rlo); @pmissed[pid, comm] = sum($rhi - $rlo); if ($s <= $r.0) { @ra[args->s_dev, args->i_ino] = ($rhi, $r.1); } else { @ra[args->s_dev, args->i_ino] = ($r.0, $s); } } } @asked = sum($n); @pasked[pid, comm] = sum($n); if ($n) { @win[tid] = (args->s_dev, args->i_ino, $s, $e); } @flt[tid] = (args->s_dev, args->i_ino, $s, nsecs); }
tracepoint:filemap:mm_filemap_add_to_page_cache { $f = @flt[tid]; if ($f.3 && nsecs - $f.3 < 1000000000 && $f.0 == args->s_dev && $f.1 == args->i_ino) { if (args->index == $f.2) { @major = count(); @missed = sum(1); @pmissed[pid, comm] = sum(1); } else { $r = @ra[args->s_dev, args->i_ino]; $a = args->index; if ($r.1 > $r.0) { $lo = $r.0 < $a ? $r.0 : $a; $hi = $r.1 > $a + 1 ? $r.1 : $a + 1; @ra[args->s_dev, args->i_ino] = ($lo, $hi); } else { @ra[args->s_dev, args->i_ino] = ($a, $a + 1); } } } }";
const BT_WRITEBACK: &str =
    "tracepoint:writeback:writeback_dirty_folio { @dirtied[pid, comm] = count(); }
tracepoint:writeback:writeback_pages_written { @written = sum(args->pages); }
tracepoint:writeback:writeback_single_inode { @inodes = count(); }
tracepoint:writeback:balance_dirty_pages { @throttled[pid, comm] = count(); }";

/// biolatency's way (bcc's tracepoint mode): issue time by device and
/// sector, latency and requests by operation at completion; what each
/// process submitted, where its bio gets a request.
const BT_BLOCK: &str = "tracepoint:block:block_rq_issue { @start[args->dev, args->sector] = nsecs; }
tracepoint:block:block_rq_complete /@start[args->dev, args->sector]/ { @usecs[args->rwbs] = hist((nsecs - @start[args->dev, args->sector]) / 1000); @req[args->rwbs] = count(); delete(@start[args->dev, args->sector]); }
tracepoint:block:block_getrq { @submitted[pid, comm] = sum(args->nr_sector * 512); }";
/// bpftrace counting what iomon's block family counts (the issue's "the
/// same counting"): requests, bytes and errors by device and operation;
/// latency (sum, histogram) by device and for reads; requests without an
/// issue seen; queue time from the request's allocation (`block_getrq`,
/// keyed like the issue) to its issue; bios and bytes submitted by
/// operation and per process. Per device only (iomon also keeps the
/// host's sums in the kernel: bpftrace would add them up afterwards).
const BT_BLOCK_SAME: &str = "tracepoint:block:block_getrq { @alloc[args->dev, args->sector] = nsecs; @bios[args->rwbs] = count(); @bio_bytes[args->rwbs] = sum(args->nr_sector * 512); @proc_bytes[pid, comm, args->rwbs] = sum(args->nr_sector * 512); }
tracepoint:block:block_rq_issue { @start[args->dev, args->sector] = nsecs; $a = @alloc[args->dev, args->sector]; if ($a) { $q = nsecs - $a; @queued[args->dev] = hist($q / 1000); @queued_ns[args->dev] = sum($q); delete(@alloc[args->dev, args->sector]); } }
tracepoint:block:block_rq_complete { $s = @start[args->dev, args->sector]; @req[args->dev, args->rwbs] = count(); @bytes[args->dev, args->rwbs] = sum(args->nr_sector * 512); if (args->error) { @err[args->dev, args->rwbs] = count(); } if ($s) { $l = nsecs - $s; @lat[args->dev] = hist($l / 1000); @lat_ns[args->dev] = sum($l); if (strncmp(args->rwbs, \"R\", 1) == 0) { @rlat[args->dev] = hist($l / 1000); @rlat_ns[args->dev] = sum($l); } delete(@start[args->dev, args->sector]); } else { @unmatched[args->dev] = count(); } }";

fn configs() -> Vec<Config> {
    let mut v = vec![Config::None];
    for f in family::ALL {
        v.push(Config::Iomon(f.name(), vec![f.name()], Targets::None));
        if f.schema
            .routes
            .iter()
            .any(|r| r.programs.iter().any(|p| p.when.is_some()))
        {
            v.push(Config::OnDemand(f.name()));
        }
    }
    let default: Vec<&'static str> = family::ALL
        .iter()
        .filter(|f| f.schema.default_on)
        .map(|f| f.name())
        .collect();
    for t in [Targets::None, Targets::Default, Targets::Own] {
        v.push(Config::Iomon("default", default.clone(), t));
    }
    if Command::new("bpftrace").arg("--version").output().is_ok() {
        v.push(Config::Bpftrace("fadvise", BT_FADVISE));
        v.push(Config::Bpftrace("fadvise-raw", BT_FADVISE_RAW));
        v.push(Config::Bpftrace("reads", BT_READS));
        v.push(Config::Bpftrace("reads-same", BT_READS_SAME));
        v.push(Config::Bpftrace("pagecache", BT_PAGECACHE));
        v.push(Config::Bpftrace("mmap", BT_MMAP));
        v.push(Config::Bpftrace("mmap-same", BT_MMAP_SAME));
        v.push(Config::Bpftrace("writeback", BT_WRITEBACK));
        v.push(Config::Bpftrace("block", BT_BLOCK));
        v.push(Config::Bpftrace("block-same", BT_BLOCK_SAME));
    } else {
        eprintln!("bpftrace not found: no comparison (apt-get install bpftrace)");
    }
    v
}

enum Attached {
    None,
    Iomon(
        #[allow(dead_code)] Probes,
        #[allow(dead_code)] Option<Box<iomon::drain::Drain>>,
    ),
    Bpftrace(Child),
}

/// Targets the programs count for.
#[derive(Clone, Copy)]
enum Targets {
    /// None configured.
    None,
    /// The default config's (a name and a cgroup this process is neither
    /// of): what every event pays to be told it is no target's.
    Default,
    /// This process: its events also go to the target's slots and its
    /// per-file map.
    Own,
}

fn with_targets(p: Probes, t: Targets) -> Attached {
    use iomon::probes::targets::Matcher;
    let targets = match t {
        Targets::None => return Attached::Iomon(p, None),
        Targets::Default => iomon::config::TargetsSection::default().matchers(),
        Targets::Own => vec![("bench".to_string(), Matcher::Pid(std::process::id()))],
    };
    let mut d = iomon::drain::Drain::new(
        p.maps().expect("maps"),
        p.attached_families(),
        10240,
        iomon::drain::Strategy::Drain,
    )
    .expect("drain");
    d.apply_targets_now(targets).expect("targets");
    Attached::Iomon(p, Some(Box::new(d)))
}

fn attach(c: &Config) -> Attached {
    match c {
        Config::None => Attached::None,
        Config::Iomon(_, fams, targets) => {
            let p = Probes::load(&LoadOptions {
                enabled: fams.clone(),
                ..Default::default()
            })
            .expect("load iomon probes");
            for id in fams {
                assert!(p.attached(id), "{id} did not attach");
            }
            with_targets(p, *targets)
        }
        Config::Route(fam, route) => {
            Attached::Iomon(load_route(fam, route).expect("route loads"), None)
        }
        Config::OnDemand(fam) => {
            let p = Probes::load(&LoadOptions {
                enabled: vec![fam],
                on_demand_at_load: true,
                ..Default::default()
            })
            .expect("load iomon probes");
            assert!(p.attached(fam), "{fam} did not attach");
            Attached::Iomon(p, None)
        }
        Config::Bpftrace(_, prog) => {
            let mut child = Command::new("bpftrace")
                .arg("-e")
                .arg(prog)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn bpftrace");
            // It prints "Attaching N probes..." once attached.
            let out = child.stdout.take().expect("bpftrace stdout");
            let mut line = String::new();
            let mut r = BufReader::new(out);
            let deadline = Instant::now() + Duration::from_secs(60);
            while !line.contains("Attaching") {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
                    panic!("bpftrace did not attach: {prog}");
                }
            }
            std::thread::sleep(Duration::from_millis(500));
            // Keep draining its stdout (map dumps at exit) in the background.
            std::thread::spawn(move || for _ in r.lines() {});
            Attached::Bpftrace(child)
        }
    }
}

fn detach(a: Attached) {
    if let Attached::Bpftrace(mut c) = a {
        // bpftrace 0.17 now and then misses a SIGINT (seen once: it sat in
        // epoll_wait after one): ask again every 2 s, then kill it.
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        for _ in 0..5 {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if !matches!(c.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        eprintln!("bpftrace did not stop on SIGINT: killed");
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A family alone on one of its routes; `None` if this kernel does not
/// have that route.
fn load_route(fam: &'static str, route: &str) -> Option<Probes> {
    let f = family::by_name(fam)?;
    let exclude = f
        .schema
        .routes
        .iter()
        .filter(|r| r.name != route)
        .map(|r| format!("{fam}:{}", r.name))
        .collect();
    let p = Probes::load(&LoadOptions {
        enabled: vec![f.name()],
        exclude_routes: exclude,
        ..Default::default()
    })
    .ok()?;
    p.attached(fam).then_some(p)
}

/// Each route of a family against the others and no probes, on the same
/// workload, alternating: what each way of attaching costs per event on
/// this kernel. Only routes this kernel has are run.
fn routes(rounds: usize) {
    let f = fixture();
    for (fam, wls) in [
        ("fadvise", &["fadvise", "getppid"][..]),
        ("reads", &["pread1", "getppid"][..]),
        ("pagecache", &["read4k"][..]),
        ("mmap", &["mmap-small"][..]),
        ("writeback", &["write4k"][..]),
        ("block", &["direct4k"][..]),
    ] {
        let here: Vec<&'static str> = family::by_name(fam)
            .unwrap()
            .schema
            .routes
            .iter()
            .map(|r| r.name)
            .filter(|r| load_route(fam, r).is_some())
            .collect();
        if here.len() < 2 {
            println!(
                "\nroutes: {fam}: {} route(s) on this kernel ({}), nothing to compare",
                here.len(),
                here.join(", ")
            );
            continue;
        }
        let mut cfgs = vec![Config::None];
        cfgs.extend(here.iter().map(|r| Config::Route(fam, r)));
        let ws: Vec<&Workload> = wls
            .iter()
            .map(|n| WORKLOADS.iter().find(|w| w.name == *n).unwrap())
            .collect();
        let mut res = vec![vec![Vec::new(); ws.len()]; cfgs.len()];
        for round in 0..rounds {
            for k in 0..cfgs.len() {
                let ci = (k + round) % cfgs.len();
                let a = attach(&cfgs[ci]);
                for (wi, w) in ws.iter().enumerate() {
                    res[ci][wi].push(ns_per_call(&f, w));
                }
                detach(a);
            }
        }
        println!("\nroutes: {fam}, ns per call, median [min-max] of {rounds} rounds, +added vs none, added / first route's");
        for (wi, w) in ws.iter().enumerate() {
            let base = median(&mut res[0][wi].clone());
            let first = median(&mut res[1][wi].clone()) - base;
            println!("  {} ({})", w.name, w.what);
            for (ci, c) in cfgs.iter().enumerate() {
                let mut v = res[ci][wi].clone();
                let med = median(&mut v);
                let added = med - base;
                let ratio = if ci == 0 || first.abs() < 1e-9 {
                    String::new()
                } else {
                    format!("{:.2}", added / first)
                };
                println!(
                    "    {:<24} {:>9.1} [{:>7.0}-{:>7.0}] {:>+8.1} {:>6}",
                    c.name(),
                    med,
                    v[0],
                    v[v.len() - 1],
                    added,
                    ratio
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&f.dir);
}

fn ns_per_call(f: &Fixture, w: &Workload) -> f64 {
    (w.run)(f, w.iters / 10); // warm up
    let t = Instant::now();
    (w.run)(f, w.iters);
    t.elapsed().as_nanos() as f64 / w.iters as f64
}

fn events(rounds: usize, only: Option<String>, only_configs: Option<String>) {
    let f = fixture();
    let picked = |list: &Option<String>, name: &str| {
        list.as_ref()
            .is_none_or(|l| l.split(',').any(|x| x == name))
    };
    let wls: Vec<&Workload> = WORKLOADS.iter().filter(|w| picked(&only, w.name)).collect();
    let cfgs: Vec<Config> = configs()
        .into_iter()
        .filter(|c| matches!(c, Config::None) || picked(&only_configs, &c.name()))
        .collect();
    // results[config][workload] = ns per call, one per round
    let mut res = vec![vec![Vec::new(); wls.len()]; cfgs.len()];
    println!(
        "events: {} configs x {} workloads x {rounds} rounds, alternating",
        cfgs.len(),
        wls.len()
    );
    for round in 0..rounds {
        // Rotate the order so that no config always runs first.
        for k in 0..cfgs.len() {
            let ci = (k + round) % cfgs.len();
            let a = attach(&cfgs[ci]);
            for (wi, w) in wls.iter().enumerate() {
                res[ci][wi].push(ns_per_call(&f, w));
            }
            detach(a);
        }
        eprintln!("  round {} done", round + 1);
    }
    let base: Vec<f64> = (0..wls.len())
        .map(|wi| median(&mut res[0][wi].clone()))
        .collect();
    for w in &wls {
        println!("  {:<10} {}", w.name, w.what);
    }
    println!("\nns per call: median [min-max] over {rounds} rounds; +added vs none");
    print!("{:<22}", "config");
    for w in &wls {
        print!(" {:>26}", w.name);
    }
    println!();
    let mut added = vec![vec![0.0; wls.len()]; cfgs.len()];
    for (ci, c) in cfgs.iter().enumerate() {
        print!("{:<22}", c.name());
        for wi in 0..wls.len() {
            let mut v = res[ci][wi].clone();
            let med = median(&mut v);
            let (lo, hi) = (v[0], v[v.len() - 1]);
            added[ci][wi] = med - base[wi];
            print!(
                " {:>8.1} [{:>5.0}-{:>5.0}] {:>+6.1}",
                med,
                lo,
                hi,
                med - base[wi]
            );
        }
        println!();
    }
    println!("\niomon added / bpftrace added, same events (#22: <= 0.3 of bpftrace doing the same counting):");
    let find = |n: &str| cfgs.iter().position(|c| c.name() == n);
    for (fam, wl) in [
        ("fadvise", "fadvise"),
        ("reads", "pread1"),
        ("pagecache", "read4k"),
        ("mmap", "mmap-small"),
        ("writeback", "write4k"),
        ("block", "direct4k"),
    ] {
        let Some(wi) = wls.iter().position(|w| w.name == wl) else {
            continue;
        };
        let Some(i) = find(&format!("iomon:{fam}")) else {
            continue;
        };
        // Each bpftrace script for the family (`fam`, and variants such
        // as `fam-same`).
        for (b, c) in cfgs.iter().enumerate() {
            let name = c.name();
            let Some(v) = name.strip_prefix("bpftrace:") else {
                continue;
            };
            if v != fam && !v.strip_prefix(fam).is_some_and(|r| r.starts_with('-')) {
                continue;
            }
            println!(
                "  {fam:<10} on {wl:<10} iomon {:+7.1} ns  {name:<22} {:+7.1} ns  ratio {:.2}",
                added[i][wi],
                added[b][wi],
                added[i][wi] / added[b][wi]
            );
        }
    }
    // Events per call, counted by iomon itself, to turn ns per call into ns
    // per event where a call is not one event.
    for (id, wl) in [("mmap", "mmap-small"), ("writeback", "write4k")] {
        let Some(w) = wls.iter().find(|w| w.name == wl) else {
            continue;
        };
        let p = Probes::load(&LoadOptions {
            enabled: vec![id],
            ..Default::default()
        })
        .expect("load");
        let mut d = iomon::drain::Drain::new(
            p.maps().expect("maps"),
            vec![id],
            10240,
            iomon::drain::Strategy::Drain,
        )
        .expect("drain");
        d.tick().expect("tick");
        (w.run)(&f, w.iters);
        let s = d.tick().expect("tick");
        let sec = s.section(id).expect("attached");
        let events = match id {
            "mmap" => {
                sec.get(abi::mmap::FAULTS + abi::mmap::stage::AROUND)
                    .unwrap_or(0)
                    + sec
                        .get(abi::mmap::FAULTS + abi::mmap::stage::HANDLER)
                        .unwrap_or(0)
            }
            _ => sec.get(abi::writeback::DIRTIED).unwrap_or(0),
        };
        let per = events as f64 / w.iters as f64;
        let Some(wi) = wls.iter().position(|x| x.name == wl) else {
            continue;
        };
        if let Some(i) = find(&format!("iomon:{id}")) {
            println!(
                "  {:<10} {wl}: {per:.3} events per call (host-wide, counted by iomon) -> {:+.1} ns per event",
                id,
                added[i][wi] / per.max(1e-9)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&f.dir);
}

// ------------------------------------------------------------ in-program

/// Every BPF program's (run count, run time ns) by id, system-wide
/// (`kernel.bpf_stats_enabled` on): iomon's and bpftrace's alike.
fn all_prog_stats() -> std::collections::HashMap<u32, (u64, u64, String)> {
    let mut out = std::collections::HashMap::new();
    let mut id = 0u32;
    loop {
        let mut next = 0u32;
        // SAFETY: plain syscall wrappers; `next` and `info` are valid for
        // writing, the fd is closed below.
        unsafe {
            if libbpf_sys::bpf_prog_get_next_id(id, &mut next) != 0 {
                break;
            }
            id = next;
            let fd = libbpf_sys::bpf_prog_get_fd_by_id(id);
            if fd < 0 {
                continue;
            }
            let mut info = libbpf_sys::bpf_prog_info::default();
            let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
            if libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) == 0 {
                let name = std::ffi::CStr::from_bytes_until_nul(&info.name.map(|c| c as u8))
                    .map(|c| c.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.insert(id, (info.run_cnt, info.run_time_ns, name));
            }
            libc::close(fd);
        }
    }
    out
}

/// ns spent inside BPF programs per call of a workload, for each config
/// (the programs loaded with it: iomon's or bpftrace's), alternating over
/// `rounds`: what each tool's own code costs per event, without the
/// event's dispatch (the same for both on the same tracepoints) and
/// without the workload's noise, which on a block device is tens of
/// microseconds per call against hundreds of nanoseconds of programs.
fn inprogram(rounds: usize, workload: &str, only_configs: Option<String>) {
    let f = fixture();
    let w = WORKLOADS
        .iter()
        .find(|w| w.name == workload)
        .expect("no such workload");
    let cfgs: Vec<Config> = configs()
        .into_iter()
        .filter(|c| {
            only_configs
                .as_ref()
                .is_some_and(|l| l.split(',').any(|x| x == c.name()))
        })
        .collect();
    let was = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").expect("enable bpf_stats");
    let by_program = std::env::var_os("IOMON_BENCH_BY_PROGRAM").is_some();
    let mut res = vec![Vec::new(); cfgs.len()];
    for round in 0..rounds {
        for k in 0..cfgs.len() {
            let ci = (k + round) % cfgs.len();
            let before = all_prog_stats();
            let a = attach(&cfgs[ci]);
            (w.run)(&f, w.iters / 10);
            let start = all_prog_stats();
            (w.run)(&f, w.iters);
            let end = all_prog_stats();
            detach(a);
            let mine = || end.iter().filter(|(id, _)| !before.contains_key(id));
            let ns: u64 = mine()
                .map(|(id, (_, ns, _))| ns - start.get(id).map_or(0, |s| s.1))
                .sum();
            if by_program {
                for (id, (n, t, name)) in mine() {
                    let (n0, t0) = start.get(id).map_or((0, 0), |s| (s.0, s.1));
                    if n > &n0 {
                        eprintln!(
                            "    {:<22} {name:<24} {:>8} runs {:>8.1} ns/run {:>8.1} ns/call",
                            cfgs[ci].name(),
                            n - n0,
                            (t - t0) as f64 / (n - n0) as f64,
                            (t - t0) as f64 / w.iters as f64
                        );
                    }
                }
            }
            res[ci].push(ns as f64 / w.iters as f64);
        }
        eprintln!("  round {} done", round + 1);
    }
    let _ = std::fs::write(
        "/proc/sys/kernel/bpf_stats_enabled",
        if was.trim() == "1" { "1" } else { "0" },
    );
    println!(
        "\ninprogram: ns inside the configs' BPF programs per {workload} call, median [min-max] of {rounds} rounds"
    );
    let mut med = Vec::new();
    for (c, mut v) in cfgs.iter().zip(res) {
        let m = median(&mut v);
        println!(
            "  {:<22} {:>8.1} [{:>6.1}-{:>6.1}]",
            c.name(),
            m,
            v[0],
            v[v.len() - 1]
        );
        med.push((c.name(), m));
    }
    for (n, m) in &med {
        if let Some(fam) = n.strip_prefix("iomon:") {
            // `fam+demand`, `fam+targets`: against the family's scripts too.
            let fam = fam.split('+').next().unwrap_or(fam);
            // Against each bpftrace script for the family (`fam`, and
            // variants such as `fam-same`).
            for (x, b) in &med {
                let Some(v) = x.strip_prefix("bpftrace:") else {
                    continue;
                };
                if v == fam || v.strip_prefix(fam).is_some_and(|r| r.starts_with('-')) {
                    println!("  {n} / bpftrace:{v} = {:.2}", m / b);
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&f.dir);
}

// ---------------------------------------------------------------- programs

/// Each program's own time per run, from the kernel's BPF run stats
/// (`kernel.bpf_stats_enabled`, on for this run only): the part of the
/// per-event cost spent inside iomon's code, apart from the tracepoint's.
/// Three times: without targets, with the default config's targets (a
/// name and a cgroup this process is neither of: what every event pays to
/// be told it is no target's), and with this process a target (what a
/// target's events cost: per-process, per-file and refault bookkeeping).
/// In the last, besides the workloads, DROPBACK_PAGES pages are dropped
/// with DONTNEED and read back: the page-cache deletes and adds whose
/// evicted blocks and refault lookups a target pays for (so its delete and
/// add figures are of another mix of events than the first two columns').
fn programs() {
    let f = fixture();
    let was = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").expect("enable bpf_stats");
    // (family, program, [(runs, ns per run)] per column)
    type Row = (String, String, [(u64, f64); 3]);
    let mut rows: Vec<Row> = Vec::new();
    for (col, targets) in [Targets::None, Targets::Default, Targets::Own]
        .into_iter()
        .enumerate()
    {
        let p = Probes::load(&LoadOptions {
            enabled: family::names(),
            ..Default::default()
        })
        .expect("load");
        let attached = with_targets(p, targets);
        for w in WORKLOADS {
            (w.run)(&f, w.iters);
        }
        if matches!(targets, Targets::Own) {
            dropback(&f.small, DROPBACK_PAGES);
        }
        let Attached::Iomon(p, _drain) = &attached else {
            unreachable!("iomon attached")
        };
        for fs in p.status() {
            for ps in &fs.programs {
                let (Some(n), Some(ns)) = (ps.run_count, ps.run_time_ns) else {
                    continue;
                };
                if n == 0 {
                    continue;
                }
                // A shared event's program is listed once.
                let owner = if ps.name.starts_with("on_") {
                    "shared".to_string()
                } else {
                    fs.family.clone()
                };
                let i = match rows.iter().position(|r| r.1 == ps.name) {
                    Some(i) => i,
                    None => {
                        rows.push((owner, ps.name.clone(), [(0, 0.0); 3]));
                        rows.len() - 1
                    }
                };
                rows[i].2[col] = (n, ns as f64 / n as f64);
            }
        }
        detach(attached);
    }
    println!("\nprograms: ns per run inside each program (kernel.bpf_stats_enabled), every family attached, every workload run once");
    println!(
        "{:<10} {:<24} {:>10} {:>12} {:>20} {:>16}",
        "family", "program", "runs", "ns/run", "ns/run, targets set", "ns/run, a target"
    );
    for (fam, prog, [(n, a), (_, b), (_, c)]) in rows {
        println!("{fam:<10} {prog:<24} {n:>10} {a:>12.1} {b:>20.1} {c:>16.1}");
    }
    let _ = std::fs::write(
        "/proc/sys/kernel/bpf_stats_enabled",
        if was.trim() == "1" { "1" } else { "0" },
    );
    let _ = std::fs::remove_dir_all(&f.dir);
}

/// Pages `dropback` drops and reads back per run of `programs`.
const DROPBACK_PAGES: usize = 2_000;

/// Drops `n` cached pages of `f` with DONTNEED one at a time and reads
/// each back (`f` is advised RANDOM: exactly that page comes back).
fn dropback(f: &File, n: usize) {
    let mut b = [0u8; 4096];
    for i in 0..n {
        let off = ((i * 4096) % FILE_SIZE) as i64;
        // SAFETY: plain syscalls on an open fd; b is valid for 4096 bytes.
        unsafe {
            libc::posix_fadvise(f.as_raw_fd(), off, 4096, libc::POSIX_FADV_DONTNEED);
            libc::pread(f.as_raw_fd(), b.as_mut_ptr().cast(), 4096, off);
        }
    }
}

// ------------------------------------------------------------------- drain

/// Empties `map`, then puts `n` processes in it. (Emptied first: while the
/// flip below points the programs at it, other processes' fadvise calls
/// land in it too.)
fn fill(map: &libbpf_rs::MapHandle, n: u32) {
    let keys: Vec<Vec<u8>> = map.keys().collect();
    for k in &keys {
        let _ = map.delete(k);
    }
    let val = vec![0u8; PROC_VALUE_SIZE];
    for k in 1..=n {
        map.update(&k.to_ne_bytes(), &val, MapFlags::ANY)
            .expect("fill procs map");
    }
}

/// The drain without batch calls: walk the keys, then look up, decode and
/// delete each (3 syscalls per process). Decoded like the batch drain
/// decodes, so the two differ only in how they talk to the kernel.
fn key_by_key(map: &libbpf_rs::MapHandle) -> usize {
    let keys: Vec<Vec<u8>> = map.keys().collect();
    let mut out = Vec::with_capacity(keys.len());
    for k in &keys {
        if let Ok(Some(v)) = map.lookup(k, MapFlags::ANY) {
            let tgid = u32::from_ne_bytes(k[..4].try_into().expect("u32 key"));
            if let Some(p) = iomon::drain::decode_proc(tgid, &v) {
                out.push(p);
            }
        }
        let _ = map.delete(k);
    }
    std::hint::black_box(&out);
    out.len()
}

fn drain(rounds: usize, sizes: &[u32]) {
    let cap = 65_536;
    let p = Probes::load(&LoadOptions {
        enabled: vec!["fadvise"],
        proc_capacity: cap,
        ..Default::default()
    })
    .expect("load");
    let maps = p.maps().expect("maps");
    // Programs write to procs[0]; the benchmark fills and drains procs[1].
    let idle = &maps.procs[1];
    let barrier = iomon::drain::Barrier::new(&maps.barrier, &maps.barrier_inner).expect("barrier");
    println!("\ndrain: per-process map of {cap}, filled from userspace, {rounds} rounds (ms)");
    println!(
        "{:>8} {:>22} {:>22} {:>8} {:>22} {:>22}",
        "procs", "batch", "key-by-key", "ratio", "grace period (thread)", "count (map gauge)"
    );
    for &n in sizes {
        let (mut b, mut k, mut f, mut c) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            fill(idle, n);
            let t = Instant::now();
            let r = read_procs(idle, cap, true, None, &mut iomon::drain::Batch::Yes);
            assert!(r.error.is_none(), "batch drain: {:?}", r.error);
            let got = r.procs.len();
            b.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(got, n as usize);
            fill(idle, n);
            // What the entries gauge costs: walking the keys.
            let t = Instant::now();
            assert_eq!(iomon::drain::count_entries(idle), u64::from(n));
            c.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            assert_eq!(key_by_key(idle), n as usize);
            k.push(t.elapsed().as_secs_f64() * 1e3);
            // The grace period the drain waits for after flipping, on a
            // thread of its own (the event loop does not wait).
            f.push(barrier.wait().expect("barrier").as_secs_f64() * 1e3);
        }
        let spread = |v: &mut Vec<f64>| {
            let m = median(v);
            format!("{m:.2} [{:.2}-{:.2}]", v[0], v[v.len() - 1])
        };
        let (mb, mk) = (median(&mut b.clone()), median(&mut k.clone()));
        println!(
            "{n:>8} {:>22} {:>22} {:>7.1}x {:>22} {:>22}",
            spread(&mut b),
            spread(&mut k),
            mk / mb,
            spread(&mut f),
            spread(&mut c)
        );
    }
}

// --------------------------------------------------------------- footprint

fn daemon(dir: &Path, interval: &str, extra: &[&str]) -> Child {
    daemon_with(dir, interval, extra, "")
}

/// `daemon` with more config sections after `[daemon]`.
fn daemon_with(dir: &Path, interval: &str, extra: &[&str], toml: &str) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("iomond.toml");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\ninterval = \"{interval}\"\nstate_dir = \"{}\"\nsocket = \"{}\"\nsocket_group = \"\"\n{toml}",
            dir.display(),
            dir.join("iomond.sock").display()
        ),
    )
    .unwrap();
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("iomond");
    let c = Command::new(bin)
        .arg("--config")
        .arg(&cfg)
        .arg("--foreground")
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn target/release/iomond (cargo build --release first)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("iomond.sock").exists() {
        assert!(Instant::now() < deadline, "iomond did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    c
}

/// (RSS KiB, peak RSS KiB, CPU seconds) of a process.
fn usage(pid: u32) -> (u64, u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime, stime are fields 14, 15 (1-based) = 11, 12 after ")" and state
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    (
        kib("VmRSS:"),
        kib("VmHWM:"),
        (ticks(11) + ticks(12)) as f64 / hz,
    )
}

/// A steady fadvise + pread load (~20k calls/s) and process churn (~100
/// short-lived processes/s, each calling fadvise), until `stop`.
fn workload(
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    use std::sync::atomic::Ordering::Relaxed;
    let s1 = stop.clone();
    let steady = std::thread::spawn(move || {
        let f = File::open("/proc/self/exe").unwrap();
        let mut b = [0u8; 4096];
        while !s1.load(Relaxed) {
            for i in 0..100 {
                // SAFETY: plain syscalls on an open fd; b is 4096 bytes.
                unsafe {
                    libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_NORMAL);
                    libc::pread(f.as_raw_fd(), b.as_mut_ptr().cast(), 4096, i * 4096);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let churn = std::thread::spawn(move || {
        while !stop.load(Relaxed) {
            for _ in 0..10 {
                let _ = Command::new("dd")
                    .args([
                        "if=/proc/self/exe",
                        "of=/dev/null",
                        "bs=4k",
                        "count=1",
                        "iflag=nocache",
                        "status=none",
                    ])
                    .status();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    vec![steady, churn]
}

fn footprint(secs: u64) {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let base = PathBuf::from(format!("/var/tmp/iomon-bench-fp-{}", std::process::id()));
    let mut ds: Vec<(&str, Child)> = vec![
        ("10s", daemon(&base.join("10s"), "10s", &[])),
        ("1s", daemon(&base.join("1s"), "1s", &[])),
    ];
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let threads = workload(stop.clone());
    println!("\nfootprint: two iomond (default families) at 10s and 1s, steady fadvise+pread (~20k/s) and ~100 dd/s churn, {secs}s");
    let warm = Duration::from_secs(30.min(secs / 4));
    std::thread::sleep(warm);
    let start: Vec<_> = ds.iter().map(|(_, c)| usage(c.id())).collect();
    let t0 = Instant::now();
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); ds.len()];
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(5));
        for (i, (_, c)) in ds.iter().enumerate() {
            samples[i].push(usage(c.id()).0);
        }
    }
    let el = t0.elapsed().as_secs_f64();
    stop.store(true, Relaxed);
    for t in threads {
        let _ = t.join();
    }
    println!(
        "{:>9} {:>12} {:>12} {:>12} {:>14} {:>12}",
        "interval", "RSS median", "RSS max", "peak (HWM)", "CPU s/hour", "% of a core"
    );
    for (i, (name, c)) in ds.iter_mut().enumerate() {
        let end = usage(c.id());
        let cpu = end.2 - start[i].2;
        let mut v = samples[i].clone();
        let med = median(&mut v.iter().map(|x| *x as f64).collect::<Vec<_>>());
        v.sort();
        println!(
            "{name:>9} {:>9.1} MiB {:>9.1} MiB {:>9.1} MiB {:>14.1} {:>11.3}%",
            med / 1024.0,
            *v.last().unwrap_or(&0) as f64 / 1024.0,
            end.1 as f64 / 1024.0,
            cpu / el * 3600.0,
            cpu / el * 100.0
        );
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(&base);
}

// --------------------------------------------------------------------- lag

fn noreuse_total(sock: &Path) -> Option<u64> {
    let mut c = iomon::proto::Client::connect(sock, Duration::from_secs(5)).ok()?;
    match c.call(&iomon::proto::Request::Snapshot).ok()? {
        iomon::proto::Response::Snapshot(r) => r.totals.section("fadvise")?.get(
            abi::FADVISE.counters[0].at(&[abi::fadvise::advice::NOREUSE, abi::fadvise::result::OK]),
        ),
        _ => None,
    }
}

fn lag(samples: usize) {
    let dir = PathBuf::from(format!("/var/tmp/iomon-bench-lag-{}", std::process::id()));
    let mut d = daemon(&dir, "1s", &[]);
    let sock = dir.join("iomond.sock");
    std::thread::sleep(Duration::from_secs(2));
    let f = File::open("/proc/self/exe").unwrap();
    let mut lags = Vec::new();
    for i in 0..samples {
        // Spread the calls over the interval's phase.
        std::thread::sleep(Duration::from_millis(1000 + (i as u64 * 137) % 1000));
        let before = noreuse_total(&sock).unwrap_or(0);
        let t = Instant::now();
        for _ in 0..777 {
            // SAFETY: plain syscall on an open fd.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_NOREUSE) };
        }
        while noreuse_total(&sock).unwrap_or(0) < before + 777 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "calls never showed up"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        lags.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut v = lags.clone();
    let m = median(&mut v);
    println!(
        "\nlag: syscall -> visible in `iomonctl snapshot`, 1s interval, {samples} samples: median {m:.0} ms, min {:.0}, max {:.0} (bound: interval + drain)",
        v[0],
        v[v.len() - 1]
    );
    if let Ok(mut c) = iomon::proto::Client::connect(&sock, Duration::from_secs(5)) {
        if let Ok(iomon::proto::Response::Status(s)) = c.call(&iomon::proto::Request::Status) {
            println!("     last drain took {} us", s.last_drain_us);
        }
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = d.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
