//! What the BanyanDB exporter costs a running daemon: two iomond side by
//! side at a 1 s interval (default families, the same steady workload as
//! `footprint`), one exporting to the tests' gRPC stand-in for BanyanDB
//! (`tests/common/banyandb_server.rs`, in this process), one not: RSS,
//! peak RSS and CPU of each, in one run. Then the exporter's catch-up: the
//! stand-in stopped for `--outage` seconds, started again, and the CPU the
//! exporting daemon spends sending the backlog, per data point.
//!
//!   cargo bench --bench probes -- export [--secs 120] [--outage 60]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../../tests/common/banyandb_server.rs"]
mod banyandb_server;

fn written(sock: &std::path::Path) -> Option<iomon::export::ExportStatus> {
    let mut c = iomon::proto::Client::connect(sock, Duration::from_secs(5)).ok()?;
    match c.call(&iomon::proto::Request::Status).ok()? {
        iomon::proto::Response::Status(r) => r.export,
        _ => None,
    }
}

/// CPU seconds of the exporter's own thread (`iomond-export`) of `pid`.
fn exporter_cpu(pid: u32) -> f64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    for t in tasks.flatten() {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        if !stat.contains("(iomond-export)") {
            continue;
        }
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        return (ticks(11) + ticks(12)) as f64 / hz;
    }
    0.0
}

pub fn export(secs: u64, outage: u64) {
    let mut server = banyandb_server::Server::start(None);
    let base = PathBuf::from(format!(
        "/var/tmp/iomon-bench-export-{}",
        std::process::id()
    ));
    let toml = format!(
        "[export.banyandb]\nendpoint = \"{}\"\nretry_max = \"2s\"\n",
        server.endpoint()
    );
    let plain = super::daemon(&base.join("plain"), "1s", &[]);
    let exporting = super::daemon_with(&base.join("export"), "1s", &[], &toml);
    let sock = base.join("export").join("iomond.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let threads = super::workload(stop.clone());
    println!(
        "\nexport: two iomond at 1s (default families), one exporting to a local gRPC stand-in for BanyanDB, steady fadvise+pread and dd churn, {secs}s"
    );
    std::thread::sleep(Duration::from_secs(20.min(secs / 4)));
    let ds = [("no export", &plain), ("export", &exporting)];
    let start: Vec<_> = ds.iter().map(|(_, c)| super::usage(c.id())).collect();
    let w0 = written(&sock).unwrap_or_default();
    let x0 = exporter_cpu(exporting.id());
    let t0 = Instant::now();
    let mut rss: Vec<Vec<f64>> = vec![Vec::new(); ds.len()];
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(5));
        for (i, (_, c)) in ds.iter().enumerate() {
            rss[i].push(super::usage(c.id()).0 as f64 / 1024.0);
        }
    }
    let el = t0.elapsed().as_secs_f64();
    let w1 = written(&sock).unwrap_or_default();
    let x1 = exporter_cpu(exporting.id());
    println!(
        "{:>10} {:>12} {:>12} {:>12} {:>12} {:>11}",
        "daemon", "RSS median", "RSS max", "peak (HWM)", "CPU s/hour", "% of a core"
    );
    let mut cpu = Vec::new();
    for (i, (name, c)) in ds.iter().enumerate() {
        let end = super::usage(c.id());
        let used = end.2 - start[i].2;
        cpu.push(used);
        let max = rss[i].iter().copied().fold(0.0, f64::max);
        println!(
            "{name:>10} {:>8.1} MiB {:>8.1} MiB {:>8.1} MiB {:>12.1} {:>10.3}%",
            super::median(&mut rss[i]),
            max,
            end.1 as f64 / 1024.0,
            used / el * 3600.0,
            used / el * 100.0
        );
    }
    let points = w1.points_written - w0.points_written;
    let samples = w1.samples_written - w0.samples_written;
    println!(
        "steady: {samples} Samples, {points} data points written in {el:.0}s; the exporting daemon's extra CPU: {:.1} µs per Sample, {:.2} µs per point (difference of the two daemons: noise included)",
        (cpu[1] - cpu[0]) / samples.max(1) as f64 * 1e6,
        (cpu[1] - cpu[0]) / points.max(1) as f64 * 1e6
    );
    println!(
        "steady: the exporter thread itself: {:.2} s CPU, {:.1} µs per Sample, {:.2} µs per point, {:.2} s/hour",
        x1 - x0,
        (x1 - x0) / samples.max(1) as f64 * 1e6,
        (x1 - x0) / points.max(1) as f64 * 1e6,
        (x1 - x0) / el * 3600.0
    );

    // Catch-up after an outage.
    server.stop();
    std::thread::sleep(Duration::from_secs(outage));
    let before = written(&sock).unwrap_or_default();
    let u0 = super::usage(exporting.id());
    let xc0 = exporter_cpu(exporting.id());
    let p0 = super::usage(plain.id());
    server.restart();
    let t = Instant::now();
    let caught = loop {
        std::thread::sleep(Duration::from_millis(200));
        let s = written(&sock).unwrap_or_default();
        if s.state == "connected" && s.behind_ms().is_some_and(|b| b <= 1000) {
            break s;
        }
        if t.elapsed() > Duration::from_secs(outage * 4 + 60) {
            println!("catch-up: not caught up in {:?}: {s:?}", t.elapsed());
            break s;
        }
    };
    let took = t.elapsed().as_secs_f64();
    let u1 = super::usage(exporting.id());
    let xc1 = exporter_cpu(exporting.id());
    let p1 = super::usage(plain.id());
    let sent = caught.points_written - before.points_written;
    let extra = (u1.2 - u0.2) - (p1.2 - p0.2);
    println!(
        "catch-up after a {outage}s outage: {sent} points in {took:.1}s (reconnect back-off included), extra CPU {:.2} µs per point (the exporter thread's own: {:.2}); peak RSS then {:.1} MiB (the other daemon {:.1} MiB)",
        extra / sent.max(1) as f64 * 1e6,
        (xc1 - xc0) / sent.max(1) as f64 * 1e6,
        u1.1 as f64 / 1024.0,
        p1.1 as f64 / 1024.0
    );
    stop.store(true, Relaxed);
    for t in threads {
        let _ = t.join();
    }
    for c in [plain, exporting] {
        let mut c = c;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(&base);
}
