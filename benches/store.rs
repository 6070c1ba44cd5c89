//! History store benchmarks and the accelerated soak.
//!
//!   cargo bench --bench store -- all            # append, range, 30-day soak
//!   cargo bench --bench store -- soak --days 30 --cap-mib 64
//!   cargo bench --bench store -- soak --days 3 --cap-mib 16 --check   # CI's short form
//!
//! Samples are synthetic but full-sized: every family present, both
//! histograms, 20 processes with names. Time is simulated: 10-second ticks
//! appended as fast as the store takes them, flushed (and so retained and
//! size-capped) every 30 simulated ticks.

use std::path::Path;
use std::time::{Duration, Instant};

// The synthetic Samples are written in the frozen encoding-2 types and
// converted, so that the data is the same whatever the current layout.
use iomon::sample::Sample;
use iomon::store::v2::{
    FadviseStats, MmapStats, PageCacheStats, ProcSample, ReadStats, ReclaimStats, WritebackStats,
};
use iomon::store::{Store, StoreOptions, Tier, HOUR_MS};

const TICK_MS: u64 = 10_000;
const T0: u64 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS;

fn sample(i: u64) -> Sample {
    let mut f = FadviseStats { calls: [[0; 2]; 7] };
    f.calls[4][0] = 10 + i % 7;
    f.calls[0][0] = i % 3;
    let procs = (0..20)
        .map(|p| ProcSample {
            tgid: 1000 + ((i / 360 + p) % 200) as u32,
            comm: format!("worker-{}", p % 9),
            read_calls: 100 + p,
            read_bytes: 4096 * (100 + p),
            pc_asked: 50 + i % 50,
            pc_missed: i % 13,
            mm_asked: 300 + p,
            mm_missed: i % 7,
            wb_dirtied: 1000 + p,
            ..Default::default()
        })
        .collect();
    iomon::store::v2::Sample {
        start_ms: T0 + i * TICK_MS,
        end_ms: T0 + (i + 1) * TICK_MS,
        fadvise: Some(f),
        reads: Some(ReadStats {
            calls: [1000 + i % 10, 20, 3, 4, 5],
            bytes: [4_000_000, 80_000, 12_000, 16_000, 20_000],
            errors: 0,
            latency_ns_sum: 123_456_789,
            latency_hist: (0..32).map(|b| if b < 12 { 100 + b } else { 0 }).collect(),
        }),
        pagecache: Some(PageCacheStats {
            asked: 50_000 + i % 1000,
            missed_sync: 100,
            missed_readahead: 900,
            readahead: 1000,
            added: 2000,
            deleted: 1900,
            read_events: 30_000,
        }),
        reclaim: Some(ReclaimStats {
            scanned_kswapd: 5000,
            reclaimed_kswapd: 4000,
            scanned_direct: i % 100,
            reclaimed_direct: i % 50,
            stalls_direct: i % 3,
            stalls_memcg: 0,
            stall_ns_sum: 1_000_000,
            stall_hist: (0..32).map(|b| if b < 8 { 3 } else { 0 }).collect(),
        }),
        mmap: Some(MmapStats {
            fault_around: 3000 + i % 100,
            faults: 200,
            major: i % 20,
            asked: 48_000,
            missed_sync: i % 20,
            missed_readahead: 300,
            readahead: 400,
        }),
        writeback: Some(WritebackStats {
            dirtied: 25_000 + i % 1000,
            written: 24_000,
            inodes: 12,
            age_ns_sum: 30_000_000_000,
            age_hist: (0..32)
                .map(|b| if (20..25).contains(&b) { 2 } else { 0 })
                .collect(),
            throttles: i % 5,
            throttle_ns_sum: 40_000_000,
            throttle_hist: (0..32)
                .map(|b| if (10..15).contains(&b) { 1 } else { 0 })
                .collect(),
        }),
        procs,
        procs_seen: 40,
        procs_dropped: 0,
    }
    .into()
}

fn opts(cap: u64) -> StoreOptions {
    StoreOptions {
        retention_raw: Duration::from_secs(48 * 3600),
        retention_1m: Duration::from_secs(14 * 86400),
        retention_1h: Duration::from_secs(400 * 86400),
        max_bytes: cap,
        top_k: 20,
        raw_resolution_ms: TICK_MS,
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix("VmRSS:")
                        .map(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
                })
                .flatten()
        })
        .unwrap_or(0)
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            total += if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

fn append_bench() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = Store::open(&dir.path().join("db"), opts(1 << 40)).unwrap();
    const N: u64 = 20_000;
    let samples: Vec<Sample> = (0..N).map(sample).collect();
    // Flushed every 500 Samples (the daemon flushes every 5 s, i.e. every
    // Sample or two); the append figure includes the flushes.
    let t = Instant::now();
    let mut flush = Duration::ZERO;
    for (i, s) in samples.iter().enumerate() {
        st.append(s);
        if i % 500 == 499 {
            let f = Instant::now();
            st.flush(s.end_ms);
            flush += f.elapsed();
        }
    }
    st.flush(T0 + N * TICK_MS);
    let append = t.elapsed();
    let enc = iomon::store::encode_sample(&samples[0]).len();
    println!("## append");
    println!("| samples | append + flush per Sample | of which flush | encoded Sample | database file | per raw Sample |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {N} | {:.1} µs | {:.1} µs | {enc} B | {} KiB | {:.0} B |",
        append.as_secs_f64() * 1e6 / N as f64,
        flush.as_secs_f64() * 1e6 / N as f64,
        st.size_on_disk() / 1024,
        st.size_on_disk() as f64 / N as f64
    );
    println!(
        "tiers: raw {} 1m {} 1h {}",
        st.len(Tier::Raw),
        st.len(Tier::Minute),
        st.len(Tier::Hour)
    );
}

fn range_bench() {
    // 90 days of history as the daemon would leave it with default
    // retention: raw for the last 48 h, 1m for 14 d, 1h for 90 d.
    let dir = tempfile::tempdir().unwrap();
    let mut st = Store::open(&dir.path().join("db"), opts(1 << 40)).unwrap();
    let days = 90;
    let n = days * 8640;
    let t = Instant::now();
    for i in 0..n {
        st.append(&sample(i));
        if i % 1000 == 999 {
            st.flush(T0 + i * TICK_MS);
        }
    }
    let now = T0 + n * TICK_MS;
    st.flush(now);
    println!(
        "\n## range (store filled with {days} days of 10 s ticks in {:.0} s)",
        t.elapsed().as_secs_f64()
    );
    println!("| range | step | tier used | points | time (median of 5) |");
    println!("|---|---|---|---|---|");
    for (name, span, step) in [
        ("1 h", 3_600_000u64, 10_000u64),
        ("24 h", 86_400_000, 300_000),
        ("7 d", 7 * 86_400_000, 1_200_000),
        ("7 d", 7 * 86_400_000, 3_600_000),
        ("90 d", 90 * 86_400_000, 86_400_000),
    ] {
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..5 {
            let t = Instant::now();
            let r = st.range(now - span, now, Some(step)).unwrap();
            times.push(t.elapsed());
            last = Some(r);
        }
        times.sort();
        let r = last.unwrap();
        let tier = match r.resolution_ms {
            60_000 => "1m",
            3_600_000 => "1h",
            _ => "raw",
        };
        println!(
            "| {name} | {} | {tier} | {} | {:.2} ms |",
            iomon::units::format_duration(Duration::from_millis(step)),
            r.points.len(),
            times[2].as_secs_f64() * 1e3
        );
    }
}

/// Returns false if the bound was broken.
fn soak(days: u64, cap: u64, check: bool) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut st = Store::open(&path, opts(cap)).unwrap();
    let n = days * 8640;
    let margin = cap / 4 + (8 << 20);
    println!(
        "\n## soak: {days} simulated days of 10 s ticks, default retention, cap {} MiB (bound: cap + {} MiB)",
        cap >> 20,
        margin >> 20
    );
    println!("| day | raw | 1m | 1h | live data | database file | files on disk | RSS |");
    println!("|---|---|---|---|---|---|---|---|");
    let start = Instant::now();
    let mut worst_disk = 0;
    let mut rss_after_day2 = 0;
    let mut max_rss = 0;
    for i in 0..n {
        st.append(&sample(i));
        if i % 30 == 29 {
            st.flush(T0 + (i + 1) * TICK_MS);
        }
        if i % 8640 == 8639 {
            let day = (i + 1) / 8640;
            let disk = dir_bytes(&path);
            worst_disk = worst_disk.max(disk);
            let rss = rss_kib();
            if day == 2 {
                rss_after_day2 = rss;
            }
            if day > 2 {
                max_rss = max_rss.max(rss);
            }
            if day <= 3 || day % 3 == 0 || day == days {
                println!(
                    "| {day} | {} | {} | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {} MiB |",
                    st.len(Tier::Raw),
                    st.len(Tier::Minute),
                    st.len(Tier::Hour),
                    st.live_bytes() as f64 / 1048576.0,
                    st.size_on_disk() as f64 / 1048576.0,
                    disk as f64 / 1048576.0,
                    rss / 1024
                );
            }
        }
    }
    println!(
        "\nsoak took {:.0} s; worst files on disk {:.1} MiB; RSS after day 2 {} MiB, max after {} MiB",
        start.elapsed().as_secs_f64(),
        worst_disk as f64 / 1048576.0,
        rss_after_day2 / 1024,
        max_rss / 1024
    );
    let mut ok = true;
    if worst_disk > cap + margin {
        println!("FAIL: disk {worst_disk} over cap + margin {}", cap + margin);
        ok = false;
    }
    if rss_after_day2 > 0 && max_rss > rss_after_day2 + rss_after_day2 / 2 + 16 * 1024 {
        println!("FAIL: RSS grew from {rss_after_day2} KiB to {max_rss} KiB");
        ok = false;
    }
    if check && ok {
        println!("soak bound held");
    }
    ok
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let arg = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let check = args.iter().any(|a| a == "--check");
    let what = args.first().map(String::as_str).unwrap_or("all");
    let ok = match what {
        "append" => {
            append_bench();
            true
        }
        "range" => {
            range_bench();
            true
        }
        "soak" => soak(arg("--days", 30), arg("--cap-mib", 64) << 20, check),
        _ => {
            append_bench();
            range_bench();
            soak(30, 64 << 20, check)
        }
    };
    if !ok {
        std::process::exit(1);
    }
}
