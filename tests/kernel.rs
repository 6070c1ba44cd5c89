//! The probes and the drain against the real kernel: this test process is
//! the workload, so the numbers it made are exact.
//!
//! Every test here loads BPF and needs root; each skips with a message
//! where BPF is refused (and fails instead under IOMON_REQUIRE_BPF=1, as in
//! CI).

mod common;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use iomon::drain::{Drain, Strategy};
use iomon::family::{self, FamilyId};
use iomon::probes::{FamilyState, LoadOptions, Probes};
use iomon::sample::{ProcSample, Sample};

const ALL_PROCS: usize = 1_000_000;

fn load(enabled: &[FamilyId], proc_capacity: u32) -> (Probes, Drain) {
    let probes = Probes::load(&LoadOptions {
        enabled: enabled.to_vec(),
        proc_capacity,
        ..Default::default()
    })
    .expect("load BPF");
    for s in probes.status() {
        if enabled.contains(&s.family) {
            assert_eq!(
                s.state,
                FamilyState::Attached,
                "{} did not attach",
                s.family
            );
        }
    }
    let attached = family::ALL
        .iter()
        .map(|f| f.id)
        .filter(|id| probes.attached(*id))
        .collect();
    let drain = Drain::new(
        probes.maps().expect("maps"),
        attached,
        proc_capacity,
        ALL_PROCS,
        Strategy::Drain,
    )
    .expect("drain");
    (probes, drain)
}

fn me() -> u32 {
    std::process::id()
}

fn own(s: &Sample) -> ProcSample {
    s.proc(me()).cloned().unwrap_or_default()
}

#[test]
fn bpf_fadvise_counts_exact_per_advice_and_result() {
    let Some(_k) = bpf_or_skip("bpf_fadvise_counts_exact_per_advice_and_result") else {
        return;
    };
    let (_p, mut drain) = load(&[FamilyId::Fadvise], 10240);
    let f = File::open("/proc/self/exe").unwrap();
    let fd = f.as_raw_fd();
    // advice a (0..=5): a+1 successful calls and 2 on a bad fd (EBADF).
    for advice in 0..=5 {
        for _ in 0..=advice {
            assert_eq!(fadvise(fd, 0, 4096, advice), 0);
        }
        for _ in 0..2 {
            assert_eq!(fadvise(-1, 0, 4096, advice), libc::EBADF);
        }
    }
    // Out-of-range advice fails with EINVAL: counted as invalid/error.
    for advice in [6, 7, 1000, -1, i32::MAX] {
        assert_eq!(fadvise(fd, 0, 0, advice), libc::EINVAL);
    }
    let s = drain.tick().unwrap();
    let mine = own(&s);
    for advice in 0..=5usize {
        assert_eq!(
            mine.fadvise[advice],
            [advice as u64 + 1, 2],
            "advice {advice}"
        );
    }
    assert_eq!(mine.fadvise[6], [0, 5], "invalid");
    let host = s.fadvise.expect("fadvise attached");
    for advice in 0..=5usize {
        assert!(
            host.calls[advice][0] > advice as u64,
            "host counts include ours"
        );
    }
    assert!(
        s.reads.is_none(),
        "a family not loaded is unavailable, not zero"
    );
}

#[test]
fn bpf_drain_loses_no_increment_across_ticks() {
    let Some(_k) = bpf_or_skip("bpf_drain_loses_no_increment_across_ticks") else {
        return;
    };
    let (_p, mut drain) = load(&[FamilyId::Fadvise], 10240);
    // The worker calls until the drain has ticked 6 times under it, and
    // counts its own calls: the per-process sum must equal that count.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let f = File::open("/proc/self/exe").unwrap();
            let mut calls = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || calls < 100_000 {
                fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_NORMAL);
                calls += 1;
            }
            calls
        })
    };
    let mut mine = 0;
    let mut host = 0;
    let mut ticks = 0;
    while !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        let s = drain.tick().unwrap();
        mine += own(&s).fadvise[0][0];
        host += s.fadvise.unwrap().calls[0][0];
        ticks += 1;
        if ticks == 6 {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let calls = worker.join().unwrap();
    let s = drain.tick().unwrap();
    mine += own(&s).fadvise[0][0];
    host += s.fadvise.unwrap().calls[0][0];
    assert!(ticks >= 6, "the workload spanned {ticks} ticks");
    assert_eq!(mine, calls, "per-process sum over {ticks} ticks");
    assert!(host >= calls, "host {host} < {calls}");
}

#[test]
fn bpf_accumulate_strategy_sums_exactly_and_switches_back() {
    let Some(_k) = bpf_or_skip("bpf_accumulate_strategy_sums_exactly_and_switches_back") else {
        return;
    };
    let (_p, mut drain) = load(&[FamilyId::Fadvise], 10240);
    let f = File::open("/proc/self/exe").unwrap();
    let mut total = 0;
    for (round, strategy) in [
        Strategy::Accumulate,
        Strategy::Accumulate,
        Strategy::Drain,
        Strategy::Drain,
    ]
    .into_iter()
    .enumerate()
    {
        drain.set_strategy(strategy);
        for _ in 0..(100 * (round + 1)) {
            fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM);
        }
        let got = own(&drain.tick().unwrap()).fadvise[1][0];
        assert_eq!(
            got,
            100 * (round as u64 + 1),
            "round {round} ({strategy:?})"
        );
        total += got;
    }
    assert_eq!(total, 1000);
}

struct PageCacheRun {
    asked: u64,
    missed: u64,
    resident_before: f64,
}

fn read_and_measure(drain: &mut Drain, f: &File, size: usize) -> PageCacheRun {
    let resident_before = resident_fraction(f, size);
    drain.tick().unwrap();
    assert_eq!(read_all(f, 1 << 20), size);
    let s = drain.tick().unwrap();
    let mine = own(&s);
    PageCacheRun {
        asked: mine.pc_asked,
        missed: mine.pc_missed,
        resident_before,
    }
}

#[test]
fn bpf_page_cache_hit_ratio_cold_warm_half() {
    let Some(_k) = bpf_or_skip("bpf_page_cache_hit_ratio_cold_warm_half") else {
        return;
    };
    let (_p, mut drain) = load(&[FamilyId::Pagecache], 10240);
    let dir = disk_dir("pagecache");
    let path = dir.join("data");
    const SIZE: usize = 64 << 20;
    const PAGES: u64 = (SIZE / 4096) as u64;
    make_file(&path, SIZE);
    let f = File::open(&path).unwrap();

    // Cold: every page evicted.
    evict(&f);
    let cold = read_and_measure(&mut drain, &f, SIZE);
    assert!(
        cold.resident_before < 0.01,
        "eviction failed: {}",
        cold.resident_before
    );
    assert!(
        (PAGES..=PAGES + 8).contains(&cold.asked),
        "cold asked {}",
        cold.asked
    );
    let cold_ratio = 1.0 - cold.missed as f64 / cold.asked as f64;
    assert!(
        cold_ratio < 0.05,
        "cold hit ratio {cold_ratio} (missed {})",
        cold.missed
    );

    // Warm: everything cached.
    let warm = read_and_measure(&mut drain, &f, SIZE);
    assert!(warm.resident_before > 0.99);
    assert!(
        (PAGES..=PAGES + 8).contains(&warm.asked),
        "warm asked {}",
        warm.asked
    );
    let warm_ratio = 1.0 - warm.missed as f64 / warm.asked as f64;
    assert!(warm_ratio > 0.95, "warm hit ratio {warm_ratio}");

    // Half: every other 2 MiB-aligned chunk evicted.
    evict_every_other(&f, SIZE, 2 << 20);
    let half = read_and_measure(&mut drain, &f, SIZE);
    assert!(
        (0.4..=0.6).contains(&half.resident_before),
        "resident {}",
        half.resident_before
    );
    let half_ratio = 1.0 - half.missed as f64 / half.asked as f64;
    assert!(
        (half_ratio - half.resident_before).abs() <= 0.05,
        "half: hit ratio {half_ratio} vs resident fraction {} (asked {} missed {})",
        half.resident_before,
        half.asked,
        half.missed
    );
    eprintln!(
        "page cache accuracy: cold {cold_ratio:.4} (resident {:.4}), warm {warm_ratio:.4} (resident {:.4}), half {half_ratio:.4} (resident {:.4})",
        cold.resident_before, warm.resident_before, half.resident_before
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bpf_page_cache_small_read_of_cold_file_is_one_miss_plus_readahead() {
    let Some(_k) = bpf_or_skip("bpf_page_cache_small_read_of_cold_file_is_one_miss_plus_readahead")
    else {
        return;
    };
    let (_p, mut drain) = load(&[FamilyId::Pagecache], 10240);
    let dir = disk_dir("small");
    let path = dir.join("data");
    make_file(&path, 8 << 20);
    let f = File::open(&path).unwrap();
    evict(&f);
    drain.tick().unwrap();
    let mut buf = [0u8; 4096];
    // SAFETY: buf is 4096 bytes.
    let n = unsafe { libc::pread(f.as_raw_fd(), buf.as_mut_ptr().cast(), 4096, 0) };
    assert_eq!(n, 4096);
    let s = drain.tick().unwrap();
    let mine = own(&s);
    assert_eq!(mine.pc_asked, 1, "one page asked");
    assert_eq!(mine.pc_missed, 1, "and missed");
    let pc = s.pagecache.unwrap();
    assert!(
        pc.readahead > 0,
        "read-ahead is counted apart, not as misses"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A memory cgroup with a small limit: v2 memory.max or v1
/// memory.limit_in_bytes, whichever this host has.
struct MemCgroup {
    dir: std::path::PathBuf,
}

impl MemCgroup {
    fn new(limit: u64) -> Option<MemCgroup> {
        let name = format!("iomon-test-{}", std::process::id());
        let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers");
        if std::fs::read_to_string(v2)
            .map(|c| c.contains("memory"))
            .unwrap_or(false)
        {
            let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+memory");
            let dir = std::path::Path::new("/sys/fs/cgroup").join(&name);
            std::fs::create_dir_all(&dir).ok()?;
            std::fs::write(dir.join("memory.max"), limit.to_string()).ok()?;
            return Some(MemCgroup { dir });
        }
        let v1 = std::path::Path::new("/sys/fs/cgroup/memory");
        if v1.join("memory.limit_in_bytes").exists() {
            let dir = v1.join(&name);
            std::fs::create_dir_all(&dir).ok()?;
            std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string()).ok()?;
            return Some(MemCgroup { dir });
        }
        None
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn bpf_reclaim_under_memcg_pressure_counts_scanned_and_reclaimed() {
    let Some(_k) = bpf_or_skip("bpf_reclaim_under_memcg_pressure_counts_scanned_and_reclaimed")
    else {
        return;
    };
    let (_p, mut drain) = load(&[FamilyId::Reclaim], 10240);
    let cg = MemCgroup::new(32 << 20)
        .expect("this host has no memory cgroup controller to make pressure with");
    let dir = disk_dir("reclaim");
    let path = dir.join("data");
    const SIZE: usize = 192 << 20;
    make_file(&path, SIZE);
    evict(&File::open(&path).unwrap());
    drain.tick().unwrap();
    // Reading 192 MiB through a 32 MiB cgroup forces reclaim in the reader.
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && cat {} > /dev/null",
            cg.dir.display(),
            path.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let s = drain.tick().unwrap();
    let r = s.reclaim.unwrap();
    eprintln!("reclaim: {r:?}");
    let scanned = r.scanned_direct + r.scanned_kswapd;
    let reclaimed = r.reclaimed_direct + r.reclaimed_kswapd;
    assert!(
        r.scanned_direct > 0,
        "limit reclaim runs in the reader: {r:?}"
    );
    assert!(reclaimed > 0, "{r:?}");
    assert!(reclaimed <= scanned, "{r:?}");
    assert!(r.stalls_memcg + r.stalls_direct > 0, "{r:?}");
    assert_eq!(
        r.stall_hist.iter().sum::<u64>(),
        r.stalls_memcg + r.stalls_direct,
        "every stall is timed once"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `n` short-lived processes that each read a small file (and so get
/// a per-process entry), at most `n` at once.
fn spawn_readers(n: usize) {
    let batch: Vec<_> = (0..n)
        .map(|_| {
            Command::new("cat")
                .arg("/etc/hostname")
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in batch {
        c.wait().unwrap();
    }
}

#[test]
fn bpf_maps_and_tables_stay_bounded_under_a_process_storm() {
    let Some(_k) = bpf_or_skip("bpf_maps_and_tables_stay_bounded_under_a_process_storm") else {
        return;
    };
    const CAP: u32 = 256;
    let (_p, mut drain) = load(&[FamilyId::Fadvise, FamilyId::Pagecache], CAP);
    let mut totals = iomon::totals::Totals::new(iomon::now_ms(), 500, 60_000);
    // One long-lived process (this one) advising on every tick...
    let f = File::open("/proc/self/exe").unwrap();
    // ...and a storm of short-lived readers.
    const STORM: usize = 2000;
    let start = Instant::now();
    let mut spawned = 0;
    let mut max_seen = 0u64;
    let mut mine = 0;
    let mut ticks = 0;
    while spawned < STORM {
        spawn_readers(100);
        spawned += 100;
        for _ in 0..10 {
            fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
        }
        let s = drain.tick().unwrap();
        ticks += 1;
        max_seen = max_seen.max(s.procs_seen);
        mine += own(&s).fadvise[2][0];
        totals.add(&s);
        assert!(
            s.procs_seen <= u64::from(CAP),
            "{} entries in a {CAP}-entry map",
            s.procs_seen
        );
        assert!(totals.procs_len() <= 500);
        assert_eq!(
            drain.proc_state_len(),
            0,
            "drain keeps no per-process state"
        );
    }
    assert_eq!(mine, 10 * ticks, "the long-lived process is never lost");
    assert!(max_seen >= 50, "the storm reached the map: max {max_seen}");
    // Both per-process maps are empty after the drain.
    use libbpf_rs::MapCore;
    for m in &drain.maps().procs {
        assert!(m.keys().count() <= CAP as usize);
    }
    let ra = &drain.maps().all[0].1;
    assert!(ra.keys().count() <= ra.max_entries() as usize);
    eprintln!(
        "storm: {STORM} processes in {:?}, {ticks} ticks, max {max_seen} per tick, totals table {}",
        start.elapsed(),
        totals.procs_len()
    );
}

#[test]
fn bpf_accumulate_is_bounded_by_the_map() {
    let Some(_k) = bpf_or_skip("bpf_accumulate_is_bounded_by_the_map") else {
        return;
    };
    const CAP: u32 = 128;
    let (_p, mut drain) = load(&[FamilyId::Pagecache], CAP);
    drain.set_strategy(Strategy::Accumulate);
    for _ in 0..5 {
        spawn_readers(100);
        let s = drain.tick().unwrap();
        assert!(s.procs_seen <= u64::from(CAP));
        assert!(
            drain.proc_state_len() <= CAP as usize,
            "{}",
            drain.proc_state_len()
        );
    }
}

#[test]
fn bpf_every_family_attaches_on_this_kernel() {
    let Some(_k) = bpf_or_skip("bpf_every_family_attaches_on_this_kernel") else {
        return;
    };
    let all: Vec<FamilyId> = family::ALL.iter().map(|f| f.id).collect();
    let (probes, _d) = load(&all, 1024);
    for s in probes.status() {
        assert_eq!(s.state, FamilyState::Attached, "{}", s.family);
        assert!(s.programs.iter().all(|p| p.attached));
    }
}

#[test]
fn bpf_reads_counts_calls_and_bytes_per_syscall() {
    let Some(_k) = bpf_or_skip("bpf_reads_counts_calls_and_bytes_per_syscall") else {
        return;
    };
    let (_p, mut drain) = load(&[FamilyId::Reads], 10240);
    let f = File::open("/proc/self/exe").unwrap();
    let fd = f.as_raw_fd();
    let mut buf = [0u8; 1000];
    drain.tick().unwrap();
    // SAFETY: buf is valid for 1000 bytes; iovecs point into it.
    unsafe {
        for _ in 0..3 {
            assert_eq!(libc::read(fd, buf.as_mut_ptr().cast(), 100), 100);
        }
        for _ in 0..2 {
            assert_eq!(libc::pread(fd, buf.as_mut_ptr().cast(), 200, 0), 200);
        }
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: 300,
        };
        assert_eq!(libc::readv(fd, &iov, 1), 300);
        assert_eq!(libc::preadv(fd, &iov, 1, 0), 300);
        assert_eq!(libc::preadv2(fd, &iov, 1, 0, 0), 300);
        assert_eq!(libc::read(-1, buf.as_mut_ptr().cast(), 1), -1);
    }
    let s = drain.tick().unwrap();
    let mine = own(&s);
    assert_eq!(mine.read_calls, 9);
    assert_eq!(mine.read_bytes, 300 + 400 + 900);
    let r = s.reads.unwrap();
    assert!(
        r.calls[0] >= 4 && r.calls[1] >= 2 && r.calls[2] >= 1 && r.calls[3] >= 1 && r.calls[4] >= 1,
        "{r:?}"
    );
    assert!(r.errors >= 1);
    assert_eq!(
        r.latency_hist.iter().sum::<u64>(),
        r.calls.iter().sum::<u64>(),
        "every call timed once"
    );
}

/// Touches one byte of every page of `f` through a read-only shared
/// mapping; returns (asked, missed, major) of this process over that.
fn mmap_touch_and_measure(drain: &mut Drain, f: &File, size: usize) -> (u64, u64, u64) {
    drain.tick().unwrap();
    let sum = Mapping::new(f, size).touch_pages();
    assert!(sum > 0, "the file holds non-zero bytes");
    let mine = own(&drain.tick().unwrap());
    (mine.mm_asked, mine.mm_missed, mine.mm_major)
}

#[test]
fn bpf_mmap_hit_ratio_cold_warm_half() {
    let Some(_k) = bpf_or_skip("bpf_mmap_hit_ratio_cold_warm_half") else {
        return;
    };
    let (_p, mut drain) = load(&[FamilyId::Mmap], 10240);
    let dir = disk_dir("mmap");
    let path = dir.join("data");
    const SIZE: usize = 64 << 20;
    make_file(&path, SIZE);
    let f = File::open(&path).unwrap();
    let ratio = |(asked, missed, _): (u64, u64, u64)| 1.0 - missed as f64 / asked as f64;

    evict(&f);
    let cold_resident = resident_fraction(&f, SIZE);
    let cold = mmap_touch_and_measure(&mut drain, &f, SIZE);
    assert!(cold_resident < 0.01, "eviction failed: {cold_resident}");
    assert!(
        cold.0 > 0 && cold.2 > 0,
        "cold: asked {} major {}",
        cold.0,
        cold.2
    );
    assert!(
        ratio(cold) < 0.1,
        "cold mmap hit ratio {} {cold:?}",
        ratio(cold)
    );

    let warm = mmap_touch_and_measure(&mut drain, &f, SIZE);
    assert!(warm.0 > 0, "warm: nothing asked");
    assert_eq!(warm.2, 0, "warm: no major fault {warm:?}");
    assert!(
        ratio(warm) > 0.95,
        "warm mmap hit ratio {} {warm:?}",
        ratio(warm)
    );

    evict_every_other(&f, SIZE, 2 << 20);
    let half_resident = resident_fraction(&f, SIZE);
    let half = mmap_touch_and_measure(&mut drain, &f, SIZE);
    assert!(
        (0.4..=0.6).contains(&half_resident),
        "resident {half_resident}"
    );
    assert!(
        (ratio(half) - half_resident).abs() <= 0.1,
        "half: mmap hit ratio {} vs resident {half_resident} {half:?}",
        ratio(half)
    );
    eprintln!(
        "mmap accuracy: cold {:.4} {cold:?}, warm {:.4} {warm:?}, half {:.4} (resident {half_resident:.4}) {half:?}  [(asked, missed, major)]",
        ratio(cold),
        ratio(warm),
        ratio(half)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bpf_writeback_counts_dirtied_and_written_pages() {
    let Some(_k) = bpf_or_skip("bpf_writeback_counts_dirtied_and_written_pages") else {
        return;
    };
    let (_p, mut drain) = load(&[FamilyId::Writeback], 10240);
    let dir = disk_dir("writeback");
    const SIZE: usize = 64 << 20;
    const PAGES: u64 = (SIZE / 4096) as u64;
    drain.tick().unwrap();
    let path = dir.join("data");
    {
        use std::io::Write;
        let mut f = File::create(&path).unwrap();
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..SIZE / chunk.len() {
            f.write_all(&chunk).unwrap();
        }
        // Let the data age before it is written back.
        std::thread::sleep(Duration::from_millis(1500));
        // syncfs: writeback through the flusher (an fsync would write the
        // pages itself, which no writeback event shows).
        // SAFETY: plain syscall on an open fd.
        assert_eq!(unsafe { libc::syncfs(f.as_raw_fd()) }, 0);
    }
    let s = drain.tick().unwrap();
    let w = s.writeback.clone().expect("writeback attached");
    let mine = own(&s);
    assert_eq!(mine.wb_dirtied, PAGES, "pages this process dirtied");
    assert!(w.dirtied >= PAGES, "host dirtied {} < {PAGES}", w.dirtied);
    assert!(w.written >= PAGES, "written back {} < {PAGES}", w.written);
    assert!(w.inodes >= 1);
    let p99 = iomon::probes::hist_quantile_us(&w.age_hist, 0.99).unwrap_or(0);
    assert!(
        p99 >= 1_000_000,
        "dirty age p99 {p99} us, the file waited 1.5 s"
    );
    eprintln!(
        "writeback: own dirtied {} pages (wrote {PAGES}), host dirtied {} written {} inodes {} age p99 <= {} us",
        mine.wb_dirtied, w.dirtied, w.written, w.inodes, p99
    );
    let _ = std::fs::remove_dir_all(&dir);
}
