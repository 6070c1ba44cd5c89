//! The tick as the event loop lives it: a real `iomond --dev` at a 250 ms
//! interval whose per-process map this benchmark fills with N processes
//! before every tick (0, 1,000, 10,000 entries written where the programs
//! write: the drain, the totals, the store and the pages handle N
//! processes), the tick's parts read from its tick lines; and how long
//! `/metrics` and `iomonctl snapshot` take, back to back for 10 s each (one client at a
//! time), across the tick boundaries; and, as the floor under those, the
//! same client against a server that only answers with a page of the
//! same size.
//!
//!   cargo bench --bench probes -- tick [--secs 10] [--iomond PATH]
//!
//! `--iomond` runs another build of the daemon instead (an earlier
//! revision, for before/after): its tick lines give its drain time (the
//! loop was blocked for all of it), and only `/metrics` is timed (its
//! control protocol is another version).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use iomon::probes::{PROC_COMM_LEN, PROC_VALUES_AT, PROC_VALUE_SIZE};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

const PORT: u16 = 19477;

/// What one tick line says (µs): read, store, publish, the loop's longest
/// blocked stretch, the grace period waited off the loop; an older
/// daemon's line has only its whole drain (`blocked`).
#[derive(Debug, Default, Clone, Copy)]
struct Parts {
    read: u64,
    store: u64,
    publish: u64,
    blocked: u64,
    switch: u64,
    procs: u64,
}

fn field(line: &str, before: &str, after: &str) -> Option<u64> {
    let i = line.find(before)? + before.len();
    let rest = &line[i..];
    let j = rest.find(after)?;
    rest[..j].trim().parse().ok()
}

fn parse(line: &str) -> Option<Parts> {
    let procs = field(line, "| procs ", " |").unwrap_or(0);
    if let Some(blocked) = field(line, "loop blocked ", "us") {
        return Some(Parts {
            read: field(line, "drain read ", "us")?,
            store: field(line, "store ", "us")?,
            publish: field(line, "publish ", "us")?,
            blocked,
            switch: field(line, "switch ", "us").unwrap_or(0),
            procs,
        });
    }
    // An older daemon: its drain held the loop from start to end.
    field(line, "drain ", "us").map(|d| Parts {
        blocked: d,
        read: d,
        procs,
        ..Default::default()
    })
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The daemon, its tick lines on a channel.
struct Daemon {
    child: Child,
    dir: PathBuf,
    lines: mpsc::Receiver<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(bin: &Path) -> Daemon {
    let dir = PathBuf::from(format!("/var/tmp/iomon-bench-tick-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(bin)
        .args(["--dev", "--interval", "250ms", "--metrics-listen"])
        .arg(format!("127.0.0.1:{PORT}"))
        .arg("--state-dir")
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e} (cargo build --release first)", bin.display()));
    // As the packaged unit runs it (Nice=-5): the benchmark's own client
    // threads must not starve it of CPU on a small machine.
    // SAFETY: setpriority on a process id; no memory is involved.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, child.id(), -5) };
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if l.starts_with("tick ") && tx.send(l).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("iomond.sock").exists() {
        assert!(Instant::now() < deadline, "iomond did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Daemon {
        child,
        dir,
        lines: rx,
    }
}

/// The daemon's maps by name, from its open file descriptors.
fn maps_of(pid: u32) -> Vec<(String, MapHandle)> {
    let mut out = Vec::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return out;
    };
    for e in fds.flatten() {
        let info = std::fs::read_to_string(e.path()).unwrap_or_default();
        let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(h) = MapHandle::from_map_id(id) {
            let name = h.name().to_string_lossy().into_owned();
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, h));
            }
        }
    }
    out
}

/// Writes `n` made-up processes (tgids from 4,000,000 up, comm
/// "bench-fill") into the per-process map the programs write to now.
fn fill(maps: &[(String, MapHandle)], n: u32) {
    if n == 0 {
        return;
    }
    let get = |name: &str| maps.iter().find(|(m, _)| m == name).map(|(_, h)| h);
    let (Some(gen), Some(a), Some(b)) = (get("maps_gen"), get("procs_a"), get("procs_b")) else {
        panic!("the daemon's maps were not found (procs_a, procs_b, maps_gen)");
    };
    let g = gen
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .ok()
        .flatten()
        .map_or(0, |v| u32::from_ne_bytes(v[..4].try_into().unwrap()));
    let map = if g & 1 == 0 { a } else { b };
    let mut val = vec![0u8; PROC_VALUE_SIZE];
    val[..10].copy_from_slice(b"bench-fill");
    const { assert!(10 <= PROC_COMM_LEN) };
    // One fadvise call each (the first per-process field of fadvise).
    let fadvise = iomon::abi::FADVISE.proc_base;
    val[PROC_VALUES_AT + 8 * fadvise..PROC_VALUES_AT + 8 * fadvise + 8]
        .copy_from_slice(&1u64.to_ne_bytes());
    let keys: Vec<u8> = (0..n).flat_map(|i| (4_000_000 + i).to_ne_bytes()).collect();
    let vals: Vec<u8> = (0..n).flat_map(|_| val.iter().copied()).collect();
    if map
        .update_batch(&keys, &vals, n, MapFlags::ANY, MapFlags::ANY)
        .is_err()
    {
        for i in 0..n {
            let _ = map.update(&(4_000_000 + i).to_ne_bytes(), &val, MapFlags::ANY);
        }
    }
}

/// Back-to-back requests for `how_long`: their latencies in ms.
fn hammer_for(how_long: Duration, mut one: impl FnMut() -> bool) -> Vec<f64> {
    let mut v = Vec::new();
    let end = Instant::now() + how_long;
    while Instant::now() < end {
        let t = Instant::now();
        if !one() {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    v
}

/// One `/metrics` request on a kept-alive connection; `gzip`: as
/// Prometheus asks for it (the page compressed once per tick).
fn metrics_once(conn: &mut Option<TcpStream>, gzip: bool) -> bool {
    get_once(conn, PORT, gzip).is_some()
}

/// One `/metrics` request to `port` on a kept-alive connection: the
/// response's length in bytes, or None (the connection is dropped).
fn get_once(conn: &mut Option<TcpStream>, port: u16, gzip: bool) -> Option<usize> {
    if conn.is_none() {
        *conn = TcpStream::connect(("127.0.0.1", port)).ok();
    }
    let s = conn.as_mut()?;
    let req: &[u8] = if gzip {
        b"GET /metrics HTTP/1.1\r\nHost: bench\r\nAccept-Encoding: gzip\r\n\r\n"
    } else {
        b"GET /metrics HTTP/1.1\r\nHost: bench\r\nAccept-Encoding: identity\r\n\r\n"
    };
    if s.write_all(req).is_err() {
        *conn = None;
        return None;
    }
    // Headers, then Content-Length bytes.
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    let mut need: Option<usize> = None;
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => {
                *conn = None;
                return None;
            }
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if need.is_none() {
            if let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..h]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                need = Some(h + 4 + len);
            }
        }
        if need.is_some_and(|n| buf.len() >= n) {
            return Some(buf.len());
        }
    }
}

/// The floor under the latencies above: a server that does nothing but
/// answer each request on its kept-alive connection with a response of
/// `len` bytes held in memory (one blocking thread, one write), timed by
/// the same client. What it takes past 3 ms is this machine's loopback
/// and scheduler, which iomond's requests pay too. Returns its port.
fn reference_server(len: usize) -> u16 {
    let l = TcpListener::bind(("127.0.0.1", 0)).expect("bind the reference server");
    let port = l.local_addr().expect("its address").port();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ";
    let body = len.saturating_sub(head.len() + 16);
    let mut page = format!("{head}{body}\r\n\r\n").into_bytes();
    page.resize(page.len() + body, b'#');
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            'requests: loop {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break 'requests,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                // One request at a time: the client waits for each answer.
                buf.clear();
                if s.write_all(&page).is_err() {
                    break;
                }
            }
        }
    });
    port
}

/// One line of request latencies (ms): count, p50, p99, max, and how many
/// over 1 and 3 ms.
fn latencies(what: &str, v: &mut [f64]) {
    let over = |ms: f64| v.iter().filter(|x| **x > ms).count();
    let (o1, o3) = (over(1.0), over(3.0));
    println!(
        "  {what:<20}{:>7} requests  p50 {:.3}  p99 {:.3}  max {:.3}  (over 1 ms: {o1}, over 3 ms: {o3})",
        v.len(),
        pct(v, 0.5),
        pct(v, 0.99),
        pct(v, 1.0),
    );
}

/// What rendering `/metrics` took since the last tick (µs), from the
/// daemon's status; `None` when it did not render or does not answer.
fn render_us(c: &mut Option<iomon::proto::Client>, sock: &Path) -> Option<u64> {
    if c.is_none() {
        *c = iomon::proto::Client::connect(sock, Duration::from_secs(5)).ok();
    }
    match c.as_mut()?.call(&iomon::proto::Request::Status) {
        Ok(iomon::proto::Response::Status(s)) => Some(s.tick_parts.publish_us).filter(|us| *us > 0),
        _ => {
            *c = None;
            None
        }
    }
}

/// `iomon_loop_turn_seconds` from a fresh scrape: (le, cumulative count)
/// per bucket; empty from a daemon without it.
fn loop_turns() -> Vec<(String, u64)> {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", PORT)) else {
        return Vec::new();
    };
    let req = b"GET /metrics HTTP/1.1\r\nHost: bench\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n";
    let mut body = String::new();
    if s.write_all(req).is_err() || s.read_to_string(&mut body).is_err() {
        return Vec::new();
    }
    body.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("iomon_loop_turn_seconds_bucket{le=\"")?;
            let (le, n) = rest.split_once("\"} ")?;
            Some((le.to_string(), n.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// Turns between two scrapes of the histogram: how many, and how many
/// over each bound of interest.
fn turns_between(a: &[(String, u64)], b: &[(String, u64)]) -> String {
    let at = |v: &[(String, u64)], le: &str| v.iter().find(|(l, _)| l == le).map(|(_, n)| *n);
    let (Some(ta), Some(tb)) = (at(a, "+Inf"), at(b, "+Inf")) else {
        return "not exported by this daemon".into();
    };
    let over = |le: &str| {
        let under = at(b, le).unwrap_or(0) - at(a, le).unwrap_or(0);
        (tb - ta) - under
    };
    format!(
        "{} turns, over 1 ms: {}, over 3 ms: {}, over 10 ms: {}",
        tb - ta,
        over("0.001"),
        over("0.003"),
        over("0.01")
    )
}

/// The tick lines this reads, of both generations of the daemon.
fn parse_self_check() {
    let new = "tick 0.3s | x | procs 12 | drain read 310us store 45us publish 120us, loop blocked 480us at most, switch 9800us off the loop";
    let p = parse(new).expect("a tick line parses");
    assert_eq!(
        (p.read, p.store, p.publish, p.blocked, p.switch, p.procs),
        (310, 45, 120, 480, 9800, 12)
    );
    let old = "tick 0.3s | x | procs 3 | drain 14800us";
    let p = parse(old).expect("an older tick line parses");
    assert_eq!((p.blocked, p.procs), (14800, 3));
}

pub fn tick(secs: u64, iomond: Option<PathBuf>) {
    parse_self_check();
    let bin = iomond.clone().unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap();
        exe.parent().unwrap().parent().unwrap().join("iomond")
    });
    let own = iomond.is_none();
    println!(
        "\ntick: iomond --dev at 250 ms ({}), the per-process map filled with N processes before each tick",
        bin.display()
    );
    let d = start(&bin);
    let maps = maps_of(d.child.id());
    let sock = d.dir.join("iomond.sock");
    // Settle: the first ticks start the store.
    for _ in 0..4 {
        let _ = d.lines.recv_timeout(Duration::from_secs(5));
    }
    // Requests back to back across tick boundaries, the daemon idle (no
    // processes filled yet): one client at a time, `/metrics` for `secs`
    // (identity, then gzip as Prometheus asks), then `snapshot` for `secs`
    // (two clients at once on two cores would
    // time the scheduler, not the daemon).
    let turns_before = loop_turns();
    // Tick lines queue on the channel meanwhile: counted after.
    let _ = d.lines.try_iter().count();
    let mut mv = {
        let mut c = None;
        hammer_for(Duration::from_secs(secs), move || {
            metrics_once(&mut c, false)
        })
    };
    let mut gv = {
        let mut c = None;
        hammer_for(Duration::from_secs(secs), move || {
            metrics_once(&mut c, true)
        })
    };
    let snapshot_sock = sock.clone();
    let sv = own.then(|| {
        let mut c: Option<iomon::proto::Client> = None;
        hammer_for(Duration::from_secs(secs), move || {
            if c.is_none() {
                c = iomon::proto::Client::connect(&snapshot_sock, Duration::from_secs(5)).ok();
            }
            match c.as_mut().map(|c| c.call(&iomon::proto::Request::Snapshot)) {
                Some(Ok(_)) => true,
                _ => {
                    c = None;
                    false
                }
            }
        })
    });
    let ticks = d.lines.try_iter().count();
    // The same client against the reference server, with a page of the
    // daemon's size.
    let mut rv = {
        let mut c = None;
        let len = get_once(&mut c, PORT, false).unwrap_or(64 * 1024);
        let port = reference_server(len);
        let mut c = None;
        hammer_for(Duration::from_secs(secs), move || {
            get_once(&mut c, port, false).is_some()
        })
    };
    let _ = d.lines.try_iter().count();
    // The page is rendered once a tick: the next tick's has the turns
    // of the requests.
    let _ = d.lines.recv_timeout(Duration::from_secs(2));
    let turns_after = loop_turns();
    println!(
        "requests back to back, one client at a time, {secs} s each, across {ticks} ticks, the daemon idle (ms):"
    );
    latencies("/metrics", &mut mv);
    latencies("/metrics, gzip", &mut gv);
    if let Some(mut sv) = sv {
        latencies("iomonctl snapshot", &mut sv);
    }
    latencies("reference server", &mut rv);
    println!(
        "  the daemon's own loop turns meanwhile (iomon_loop_turn_seconds): {}",
        turns_between(&turns_before, &turns_after)
    );
    println!(
        "{:>7} {:>6} {:>22} {:>22} {:>11} {:>11} {:>11} {:>22}",
        "procs",
        "ticks",
        "loop blocked p50/p99",
        "read p50/p99",
        "store p50",
        "render p50/max",
        "max blocked",
        "switch (off loop) p50"
    );
    let mut status: Option<iomon::proto::Client> = None;
    let mut scrape = None;
    for n in [0u32, 1_000, 10_000] {
        let mut parts = Vec::new();
        let mut renders = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(12);
        fill(&maps, n);
        // The tick after the first fill has them; each fill waits for a tick.
        let _ = d.lines.recv_timeout(Duration::from_secs(5));
        while Instant::now() < deadline {
            fill(&maps, n);
            match d.lines.recv_timeout(Duration::from_secs(5)) {
                Ok(l) => {
                    if let Some(p) = parse(&l) {
                        parts.push(p);
                    }
                }
                Err(_) => break,
            }
            // One scrape renders the page; the daemon's status says how
            // long that took (the tick's publish part counts renders).
            if metrics_once(&mut scrape, false) {
                if let Some(us) = render_us(&mut status, &sock) {
                    renders.push(us as f64 / 1e3);
                }
            }
        }
        let col = |f: fn(&Parts) -> u64| -> Vec<f64> {
            parts.iter().map(|p| f(p) as f64 / 1e3).collect()
        };
        let (mut bl, mut rd, mut st, mut sw) = (
            col(|p| p.blocked),
            col(|p| p.read),
            col(|p| p.store),
            col(|p| p.switch),
        );
        let seen = parts.iter().map(|p| p.procs).max().unwrap_or(0);
        println!(
            "{:>7} {:>6} {:>22} {:>22} {:>11} {:>11} {:>11} {:>22}",
            format!("{n} ({seen})"),
            parts.len(),
            format!("{:.2} / {:.2} ms", pct(&mut bl, 0.5), pct(&mut bl, 0.99)),
            format!("{:.2} / {:.2} ms", pct(&mut rd, 0.5), pct(&mut rd, 0.99)),
            format!("{:.2} ms", pct(&mut st, 0.5)),
            format!(
                "{:.2} / {:.2} ms",
                pct(&mut renders, 0.5),
                pct(&mut renders, 1.0)
            ),
            format!("{:.2} ms", pct(&mut bl, 1.0)),
            if own {
                format!("{:.2} ms", pct(&mut sw, 0.5))
            } else {
                "-".into()
            },
        );
    }
}
